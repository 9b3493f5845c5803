/** `quiesce status`: a compact table of the running instance (the status issue extends it). */
import { sendControl } from './client.js';
import { EXIT } from '../shared/errors.js';

type Snapshot = {
  pid: number; state: string; generation: number; drainMode: string; uptimeMs: number;
  listeners: Array<{ address: string; state: string; queued: number | null }>;
  workers: Array<{ slot: number; pid: number; generation: number; phase: string; state: string; requests: number; connections: number; inflight: number }>;
  totals: { requests: number; forced: number; cut: number };
};

export async function statusMain(pidfile: string, o: { json: boolean; watch: boolean }): Promise<number> {
  const r = await sendControl(pidfile, { verb: 'status' });
  if (o.json) { process.stdout.write(JSON.stringify(r.data, null, 2) + '\n'); return EXIT.OK; }
  process.stdout.write(render(r.data as Snapshot));
  return EXIT.OK;
}

export function render(s: Snapshot): string {
  const lines = [
    `quiesce pid ${s.pid}: ${s.state}, generation ${s.generation}, drain mode ${s.drainMode}, up ${Math.round(s.uptimeMs / 1000)}s`,
    `requests ${s.totals.requests}  forced ${s.totals.forced}  cut ${s.totals.cut}`,
    ...s.listeners.map((l) => `listener ${l.address}  ${l.state}${l.queued !== null ? `  queue ${l.queued}` : ''}`),
    'SLOT  PID      GEN  PHASE     ST  REQS      CONNS  INFLIGHT',
    ...s.workers.map((w) => `${String(w.slot).padEnd(5)} ${String(w.pid).padEnd(8)} ${String(w.generation).padEnd(4)} ${w.phase.padEnd(9)} ${w.state.padEnd(3)} ${String(w.requests).padEnd(9)} ${String(w.connections).padEnd(6)} ${w.inflight}`),
  ];
  return lines.join('\n') + '\n';
}
