/**
 * /server-status?auto: mod_status' machine-readable form, `Key: value` lines (the first line is the
 * host name, as Apache prints it), with mod_status' keys first and quiesce's own after them.
 */
import { fmtUptime } from './format.js';
import type { StatusSnapshot } from './types.js';

export function renderAuto(s: StatusSnapshot): string {
  const up = Math.max(1, Math.floor(s.uptimeMs / 1000));
  const t = s.totals;
  const cpuSeconds = s.workers.reduce((a, w) => a + (w.cpuSeconds ?? 0), 0);
  const lines: Array<[string, string | number]> = [
    ['ServerVersion', `quiesce/${s.server.version} (node ${s.server.node})`],
    ['ServerMPM', s.server.mpm],
    ['CurrentTime', s.now],
    ['RestartTime', s.startedAt],
    ['ParentServerConfigGeneration', s.generation],
    ['ParentServerMPMGeneration', Math.max(0, s.generation - 1)],
    ['ServerUptimeSeconds', up],
    ['ServerUptime', fmtUptime(s.uptimeMs)],
    ['Total Accesses', t.requests],
    ['Total kBytes', Math.floor(t.bytesSent / 1024)],
    ['CPUTotal', round(cpuSeconds, 2)],
    ['CPULoad', round((cpuSeconds / up) * 100, 4)],
    ['Uptime', up],
    ['ReqPerSec', round(t.requests / up, 4)],
    ['BytesPerSec', round(t.bytesSent / up, 2)],
    ['BytesPerReq', round(t.requests ? t.bytesSent / t.requests : 0, 2)],
    ['BusyWorkers', s.counts.busy],
    ['IdleWorkers', s.counts.idle],
    ['Processes', s.counts.processes],
    // quiesce
    ['State', s.state + (s.phase ? ` ${s.phase}` : '')],
    ['Generation', s.generation],
    ['Generations', s.generations.join(' ')],
    ['DrainMode', s.drainMode],
    ...(s.drainModeReason ? [['DrainModeReason', oneLine(s.drainModeReason)] as [string, string]] : []),
    ['ListenQueue', s.listeners.reduce((a, l) => a + (l.queued ?? 0), 0)],
    ...s.listeners.map((l, i) => [`Listener${i}`, `${l.address} ${l.state} queue=${l.queued ?? '-'} backlog=${l.backlog ?? '-'}`] as [string, string]),
    ['Accepted', t.accepted],
    ['Completed', t.completed],
    ['Refused', t.refused],
    ['Shed', t.shed],
    ['Cut', t.cut],
    ['Forced', t.forced],
    ['Drains', t.drains],
    ['Reloads', t.reloads],
    ['ReloadsFailed', t.reloadsFailed],
    ['Retired', Object.entries(t.retired).map(([k, v]) => `${k}=${v}`).join(' ')],
    ...s.progress.map((p) => ['Progress', oneLine(p.text)] as [string, string]),
    // per generation, the request metrics: GenerationN: rps=12.3 ratio5xx=0.001 p50_ms=12 p99_ms=30 responses=1204
    ...s.generationInfo.flatMap((g) => (g.http ? [[`Generation${g.n}`,
      `rps=${g.http.rps} ratio5xx=${Number(g.http.ratio5xx.toFixed(4))} p50_ms=${g.http.p50Ms ?? '-'} p99_ms=${g.http.p99Ms ?? '-'} responses=${g.http.responses}`] as [string, string]] : [])),
    ...Object.entries(s.protocols ?? {}).map(([p, x]) => [`Protocol ${p}`, `connections=${x.connections} requests=${x.requests}`] as [string, string]),
    ...(s.lastDrain ? [['LastDrain', `ms=${s.lastDrain.gateToCloseMs} queued_at_gate=${s.lastDrain.queuedAtGate} accepted=${s.lastDrain.acceptedInDrain} left_at_close=${s.lastDrain.leftAtClose}`] as [string, string]] : []),
    ['Scoreboard', s.scoreboard],
  ];
  return `${s.server.hostname}\n${lines.map(([k, v]) => `${k}: ${v}`).join('\n')}\n`;
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ');
}
