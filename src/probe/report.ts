// The human summary table and the --json object.
import type { ProbeReport, ProbeResult } from './types.js';

/** The --json object: the result without the per-request outcomes. */
export function toReport(r: ProbeResult): ProbeReport {
  const { outcomes: _outcomes, ...report } = r;
  return report;
}

export interface RunInfo {
  target: string;
  path: string;
  rate: number;
  keepalive: number;
  durationS: number;
}

function pairs(o: Record<string, number>): string {
  return Object.entries(o)
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ');
}

function lastLine(s: string): string {
  const lines = s.trim().split('\n');
  return lines[lines.length - 1]!.slice(0, 160);
}

export function formatSummary(r: ProbeResult, info: RunInfo): string {
  const load = [
    info.rate > 0 ? `rate ${info.rate}/s new connections` : '',
    info.keepalive > 0 ? `${info.keepalive} keep-alive clients` : '',
  ].filter(Boolean);
  const out: string[] = [`quiesce probe ${info.target} ${info.path}  (${info.durationS} s: ${load.join(' + ')})`, ''];
  const row = (name: string, n: number, note = ''): void => {
    out.push(`  ${name.padEnd(10)}${String(n).padStart(9)}${note ? `   ${note}` : ''}`);
  };
  row('ok', r.ok, pairs(r.ok_by_status));
  row('refused', r.refused);
  row('cut', r.cut, r.cut > 0 ? `after bytes: ${r.cut_after_bytes}` : '');
  row('ka_race', r.ka_race, r.ka_race > 0 ? 'reused keep-alive connection closed under the request' : '');
  row('forced', r.forced, r.forced > 0 ? 'ended by the graceful timeout (quiesce-forced)' : '');
  row('timeout', r.timeout);
  row('other', r.other, pairs(r.other_by_code));
  out.push(`  ${'-'.repeat(19)}`);
  row('sent', r.sent);
  out.push('');
  const l = r.latency_ms;
  if (l.p50 !== null) out.push(`  latency of ok (ms): p50 ${l.p50}  p90 ${l.p90}  p99 ${l.p99}  max ${l.max}`);
  if (r.rate.asked > 0) {
    const warn = r.rate.behind > 0 ? `  BEHIND: ${r.rate.behind} connections not opened on time` : '';
    out.push(`  rate: asked ${r.rate.asked}/s, achieved ${r.rate.achieved}/s, behind ${r.rate.behind}${warn}`);
  }
  if (Object.keys(r.generations).length > 0) out.push(`  ok by generation: ${pairs(r.generations)}`);
  if (r.commands.length > 0) {
    out.push('  commands:');
    for (const c of r.commands) {
      const when = c.started_s < 0 ? 'not run' : `${c.started_s.toFixed(3)}-${c.ended_s.toFixed(3)} s`;
      const how = c.error ?? (c.signal ? `signal ${c.signal}` : `exit ${c.exit_code}`);
      out.push(`    at ${c.at_s} s (${when}) ${how}: ${c.command}`);
      if (c.stdout_tail.trim()) out.push(`      stdout: ${lastLine(c.stdout_tail)}`);
      if (c.stderr_tail.trim()) out.push(`      stderr: ${lastLine(c.stderr_tail)}`);
    }
  }
  if (r.phases && r.phases.length > 0) {
    out.push('  deploy phases (from the admin listener):');
    for (const p of r.phases) out.push(`    ${p.at_s.toFixed(3).padStart(8)} s  generation ${p.generation} ${p.phase}: ${p.text}`);
  }
  if (r.phases_error) out.push(`  deploy phases: not read (${r.phases_error})`);
  out.push('', `  status: ${r.status.toUpperCase()}  (nothing cut: ${r.cut === 0 ? 'yes' : 'NO'}; ran ${r.duration_s} s)`);
  for (const why of r.reasons) out.push(`  fail: ${why}`);
  return out.join('\n');
}
