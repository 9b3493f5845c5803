/**
 * The worker's request metrics: status class and latency of every response, counted where Node
 * already is when a response finishes (the `http.server.response.finish` diagnostics channel,
 * published from Node's own 'finish' handler), so that serving adds no listener and no closure of
 * ours per request. The start time is a field of the response from its construction
 * (`TimedResponse`, the http.Server's ServerResponse class: Node builds it just before it emits
 * 'request'): stamping it in the request listener added a property to every response, a shape
 * change and an allocation each (measured ~2% of a hello-world request, against ~1% now). Priced
 * with `npm run bench:cpu` (docs/STATUS.md); `--metrics off` turns it off.
 * A response that never finishes (its connection closed first) is not counted.
 */
import diagnostics from 'node:diagnostics_channel';
import type { ServerResponse, IncomingMessage, Server } from 'node:http';
import { http } from '../shared/node-http.js';
import { performance } from 'node:perf_hooks';
import { LATENCY_BOUNDS_MS, emptyCounts, type RequestCounts } from '../shared/request-metrics.js';

/** A response that knows when its request began (an app may change its prototype, as Express does: the field stays). */
export class TimedResponse extends http.ServerResponse {
  _quiesceAt = performance.now();
}
type Stamped = ServerResponse & { _quiesceAt?: number };

type FinishMessage = { request: IncomingMessage; response: Stamped; server: Server };

export class RequestMetrics {
  readonly counts: RequestCounts = emptyCounts();
  private readonly onFinish: (m: unknown) => void;

  constructor(private readonly server: Server) {
    const counts = this.counts;
    const codes = counts.codes;
    const latency = counts.latency;
    const bounds = LATENCY_BOUNDS_MS;
    const last = bounds.length;
    this.onFinish = (m: unknown): void => {
      const msg = m as FinishMessage;
      const res = msg.response;
      const at = res._quiesceAt;
      if (at === undefined || msg.server !== this.server) return; // not ours (an app's own server)
      const cls = (res.statusCode / 100) | 0;
      codes[cls >= 1 && cls <= 5 ? cls - 1 : 4]!++;
      const ms = performance.now() - at;
      counts.sumMs += ms;
      let b = 0;
      while (b < last && ms > bounds[b]!) b++;
      latency[b]!++;
    };
    diagnostics.subscribe('http.server.response.finish', this.onFinish);
  }

  stop(): void {
    diagnostics.unsubscribe('http.server.response.finish', this.onFinish);
  }
}
