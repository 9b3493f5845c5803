/**
 * What the status module keeps per master, beside what the master records itself: the figures of
 * workers that have exited (so totals survive reloads and recycling), CPU samples, and the drain
 * and reload durations for the histograms. Keyed by the Master object, no module-level figures.
 */
import type { WorkerProc } from '../workers.js';
import type { Metrics } from './metrics.js';

export type Exited = { bytesSent: number; accepted: number; completed: number; refused: number };

export class StatusState {
  /** Figures of workers that have exited (requests are kept by the master itself). */
  readonly exited: Exited = { bytesSent: 0, accepted: 0, completed: 0, refused: 0 };
  private readonly seen = new WeakSet<WorkerProc>();
  /** Durations observed before /metrics was first asked for (prom-client loads on first use). */
  readonly pending: { drain: number[]; reload: number[] } = { drain: [], reload: [] };
  metrics?: Metrics;
  lastReloadMs?: number;

  /** Follow new workers so their last figures are added to `exited` when they go. */
  track(workers: Iterable<WorkerProc>): void {
    for (const w of workers) {
      if (this.seen.has(w)) continue;
      this.seen.add(w);
      void w.exited.then(() => {
        const s = w.stats;
        this.exited.bytesSent += s.bytesSent;
        this.exited.accepted += s.accepted ?? 0;
        this.exited.completed += s.completed ?? 0;
        this.exited.refused += s.refused ?? 0;
      });
    }
  }

  observeDrain(ms: number): void {
    if (this.metrics) this.metrics.observeDrain(ms);
    else this.pending.drain.push(ms);
  }

  observeReload(ms: number): void {
    this.lastReloadMs = ms;
    if (this.metrics) this.metrics.observeReload(ms);
    else this.pending.reload.push(ms);
  }
}

const states = new WeakMap<object, StatusState>();

export function stateOf(master: object): StatusState {
  let s = states.get(master);
  if (!s) { s = new StatusState(); states.set(master, s); }
  return s;
}
