/**
 * `quiesce status`: the running instance in a compact table (the scoreboard, the workers, what a
 * drain or a reload is doing right now). `--json` prints the snapshot (docs/STATUS-SCHEMA.md);
 * `--watch` redraws it live until the server stops or Ctrl-C (with --json: one object per line).
 */
import { sendControl } from './client.js';
import { EXIT, QuiesceError } from '../shared/errors.js';
import { fmtBytes, fmtHttp, fmtInt, fmtShortDuration } from '../master/status/format.js';
import type { StatusSnapshot } from '../master/status/types.js';

/** Redraw period of --watch; faster while something is in progress. */
const WATCH_MS = 1000;
const WATCH_BUSY_MS = 250;
/** A master that does not answer a status request within this is reported, not waited for forever. */
const ASK_TIMEOUT_MS = 5000;

type Options = { json: boolean; watch: boolean };

async function ask(pidfile: string): Promise<StatusSnapshot> {
  const r = await sendControl(pidfile, { verb: 'status' }, () => {}, ASK_TIMEOUT_MS);
  if (!r.ok || typeof r.data !== 'object' || r.data === null) throw new QuiesceError('CONTROL_FAILED', `status: ${r.message}`);
  return r.data as StatusSnapshot;
}

export async function statusMain(pidfile: string, o: Options): Promise<number> {
  if (!o.watch) {
    const s = await ask(pidfile);
    process.stdout.write(o.json ? JSON.stringify(s, null, 2) + '\n' : render(s, { color: useColor() }));
    return EXIT.OK;
  }
  return watch(pidfile, o);
}

async function watch(pidfile: string, o: Options): Promise<number> {
  const tty = process.stdout.isTTY === true && !o.json;
  let stop = false;
  let wake: (() => void) | undefined;
  const onSignal = (): void => { stop = true; wake?.(); };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  if (tty) process.stdout.write('\x1b[?25l'); // hide the cursor while redrawing
  let frames = 0;
  try {
    while (!stop) {
      let s: StatusSnapshot;
      try {
        s = await ask(pidfile);
      } catch (err) {
        // the server went away while we watched: that is how a watch of a stop ends
        if (frames > 0 && err instanceof QuiesceError && (err.code === 'NOT_RUNNING' || err.code === 'CONTROL_FAILED')) {
          if (!o.json) process.stdout.write('quiesce: the server stopped\n');
          return EXIT.OK;
        }
        throw err;
      }
      frames++;
      if (o.json) process.stdout.write(JSON.stringify(s) + '\n');
      else if (tty) process.stdout.write(`\x1b[H\x1b[2J${render(s, { color: useColor() })}\x1b[2m(watching; Ctrl-C to quit)\x1b[0m\n`);
      else process.stdout.write(`${render(s, { color: false })}\n`);
      if (s.state === 'stopped') {
        if (!o.json) process.stdout.write('quiesce: the server stopped\n');
        return EXIT.OK;
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, s.progress.length > 0 || s.state !== 'serving' ? WATCH_BUSY_MS : WATCH_MS);
        wake = () => { clearTimeout(t); resolve(); };
      });
    }
    return EXIT.OK;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (tty) process.stdout.write('\x1b[?25h');
  }
}

function useColor(): boolean {
  return process.stdout.isTTY === true && !process.env.NO_COLOR && process.env.TERM !== 'dumb';
}

const STATE_COLOR: Record<string, string> = { W: '32;1', R: '33', K: '36', C: '33', G: '35;1', I: '35', S: '34', _: '2', '.': '2' };

/** The table, as printed by `quiesce status`. */
export function render(s: StatusSnapshot, o: { color: boolean } = { color: false }): string {
  const c = (code: string, text: string): string => (o.color ? `\x1b[${code}m${text}\x1b[0m` : text);
  const t = s.totals;
  const board = s.workers.map((w) => c(STATE_COLOR[w.state] ?? '0', w.state)).join('');
  const retiring = s.generationInfo.filter((g) => g.retiring > 0).map((g) => g.n);
  const out: string[] = [];
  out.push(`${c('1', `quiesce pid ${s.pid}`)}: ${c(s.state === 'serving' ? '32;1' : '33;1', s.state)}${s.phase ? ` (${s.phase})` : ''} ${fmtShortDuration(s.stateSinceMs)}` +
    `, generation ${s.generation}${retiring.length ? ` (retiring ${retiring.join(',')})` : ''}, up ${fmtShortDuration(s.uptimeMs)}, drain mode ${s.drainMode}` +
    (s.drainModeReason ? ` (${s.drainModeReason})` : ''));
  out.push(`requests ${t.requests}  sent ${fmtBytes(t.bytesSent)}  accepted ${t.accepted}  completed ${t.completed}  refused ${t.refused}  ` +
    `${c(t.cut === 0 ? '32' : '31;1', `cut ${t.cut}`)}  forced ${t.forced}  reloads ${t.reloads}${t.reloadsFailed ? ` (${t.reloadsFailed} failed)` : ''}${t.upgrades ? `  upgrades ${t.upgrades}` : ''}`);
  // every master of the server (upgrades): when it started, what it ran
  for (const m of s.masters ?? []) {
    out.push(`master ${m.pid}  node ${m.node}  quiesce ${m.quiesce}  started ${m.startedAt}${m.until ? `  handed over ${m.until}` : '  (serving)'}  generations ${m.generations.join(',')}`);
  }
  for (const l of s.listeners) {
    out.push(`listener ${l.address}  ${l.state}${l.queued !== null ? `  queue ${l.queued}${l.backlog !== null ? `/${l.backlog}` : ''}` : ''}${l.halfOpen ? `  half-open ${l.halfOpen}` : ''}`);
  }
  // per generation: its responses' rate, 5xx share and latency (what the reload judge compares)
  for (const g of s.generationInfo) {
    if (!g.http) continue;
    const tag = g.retiring > 0 ? 'retiring' : g.current ? (s.state === 'reloading' ? 'new' : 'serving') : 'serving';
    out.push(`generation ${g.n} (${tag})  ${fmtHttp(g.http, '  ')}  ${fmtInt(g.http.responses)} responses`);
  }
  for (const p of s.progress) out.push(c('33;1', `» ${p.text}`));
  const last = s.deploys.at(-1);
  if (last) out.push(`last reload: generation ${last.generation} ${last.phase} ${last.at.slice(11, 19)}: ${last.text}`);
  out.push(`scoreboard ${board}   (${s.counts.busy} busy, ${s.counts.idle} idle)`);
  const head = ['SLOT', 'PID', 'GEN', 'ST', 'PHASE', 'IN-STATE', 'REQS', 'SENT', 'CONNS', 'INFL', 'RSS', 'CPU%', 'CURRENT'];
  const rows = s.workers.map((w) => [
    String(w.slot), w.pid === null ? '-' : String(w.pid), String(w.generation), w.state,
    w.phase + (w.retireReason ? `:${w.retireReason}` : ''), w.pid === null ? '-' : fmtShortDuration(w.stateMs),
    String(w.requests), fmtBytes(w.bytesSent), String(w.connections), String(w.inflight),
    fmtBytes(w.rssBytes), w.cpuPercent === null ? '-' : w.cpuPercent.toFixed(1),
    w.current ? `${w.current.method} ${w.current.path} (${fmtShortDuration(w.current.sinceMs)})` : '',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[], color = false): string => r.map((v, i) => {
    const cell = i === r.length - 1 ? v : v.padEnd(widths[i]!);
    return color && i === 3 ? c(STATE_COLOR[v] ?? '0', cell) : cell;
  }).join('  ').trimEnd();
  out.push(c('2', line(head)));
  for (const r of rows) out.push(line(r, true));
  if (s.lastDrain) {
    const d = s.lastDrain;
    out.push(`last drain: ${d.gateToCloseMs} ms, ${d.queuedAtGate} queued at the gate, ${d.acceptedInDrain} accepted, ${d.leftAtClose} left at close`);
  }
  return out.join('\n') + '\n';
}
