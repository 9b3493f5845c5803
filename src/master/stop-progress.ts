/**
 * What a stop waits for, as it changes: the requests in flight and the connections open, per
 * worker, from the workers' 500 ms reports. Sent to the `quiesce stop` clients as progress lines
 * and logged as `stop-waiting`.
 */
import type { Fields } from '../shared/log.js';
import type { WorkerStats } from '../shared/ipc.js';

export type Waiting = { text: string; fields: Fields };

/** The wait, worded; the same text for the same figures (callers report it when it changes). */
export function describeWaiting(workers: ReadonlyArray<{ pid: number; stats: WorkerStats }>, forceInMs: number): Waiting {
  const requests = workers.reduce((n, w) => n + w.stats.inflight, 0);
  const connections = workers.reduce((n, w) => n + w.stats.connections, 0);
  const per = workers.map((w) => `${w.pid}:${w.stats.inflight}/${w.stats.connections}`).join(',');
  const each = workers.map((w) => `worker ${w.pid}: ${w.stats.inflight} requests, ${w.stats.connections} connections`).join('; ');
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
  const text = `waiting for ${plural(requests, 'request')} in flight and ${plural(connections, 'connection')} on ${plural(workers.length, 'worker')}` +
    (workers.length > 0 ? ` (${each})` : '') + (forceInMs > 0 ? `; forced in ${Math.ceil(forceInMs / 1000)} s at most` : '');
  return { text, fields: { requests, connections, workers: workers.length, per_worker: per } };
}
