/**
 * What the status module keeps per master, beside what the master records itself: the drain and
 * reload durations for the histograms. Keyed by the Master object, no module-level figures.
 */
import type { Metrics } from './metrics.js';

export class StatusState {
  /** Durations observed before /metrics was first asked for (prom-client loads on first use). */
  readonly pending: { drain: number[]; reload: number[] } = { drain: [], reload: [] };
  metrics?: Metrics;
  lastReloadMs?: number;

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
