/**
 * The worker's request metrics: status class and latency of every response, counted where Node
 * already is when a response ends: `ServerResponse.prototype._finish` (Node's own, called once
 * per response when its last byte is handed to the socket, Node 0.x-24; undocumented), wrapped
 * once for the process, so that serving adds no listener, no closure and no allocation of ours
 * per request. Where Node has no `_finish` (a future Node) the `http.server.response.finish`
 * diagnostics channel is used instead: it publishes a message object per response, which cost
 * ~2.5% of a static file's new connection (`node dist/bench/cpu.js --close`, docs/STATUS.md).
 * The start time is a field of the response from its construction (`TimedResponse`, the
 * http.Server's ServerResponse class: Node builds it just before it emits 'request'): stamping
 * it in the request listener added a property to every response, a shape change and an
 * allocation each. Responses without the field (an app's own http.Server) are not counted.
 * `--metrics off` turns it all off. A response that never ends (its connection closed first) is
 * not counted. HTTP/2 responses are counted by the TLS front (`countH2`) when their stream closes
 * without a reset.
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

const BOUNDS = LATENCY_BOUNDS_MS;
const LAST = BOUNDS.length;

/** One response into `counts`: its status class (anything outside 100-599 as 5xx) and its latency's bucket. */
function count(counts: RequestCounts, status: number, ms: number): void {
  const cls = (status / 100) | 0;
  counts.codes[cls >= 1 && cls <= 5 ? cls - 1 : 4]!++;
  counts.sumMs += ms;
  let b = 0;
  while (b < LAST && ms > BOUNDS[b]!) b++;
  counts.latency[b]!++;
}

type Finishing = { _finish?: (this: Stamped) => void };
/** The counts of the live RequestMetrics (one per worker), read by the wrapped `_finish`. */
let active: RequestCounts | undefined;
let wrapped = false;

/** Wrap ServerResponse.prototype._finish once; false where Node has none. */
function wrapFinish(): boolean {
  if (wrapped) return true;
  const proto = http.ServerResponse.prototype as unknown as Finishing;
  const original = proto._finish;
  if (typeof original !== 'function') return false;
  proto._finish = function (this: Stamped): void {
    const at = this._quiesceAt;
    if (at !== undefined && active !== undefined) count(active, this.statusCode, performance.now() - at);
    original.call(this);
  };
  wrapped = true;
  return true;
}

export class RequestMetrics {
  readonly counts: RequestCounts = emptyCounts();
  private readonly onFinish?: (m: unknown) => void;

  constructor(private readonly server: Server) {
    const counts = this.counts;
    if (wrapFinish()) {
      active = counts;
      return;
    }
    this.onFinish = (m: unknown): void => {
      const msg = m as FinishMessage;
      const res = msg.response;
      const at = res._quiesceAt;
      if (at === undefined || msg.server !== this.server) return; // not ours (an app's own server)
      count(counts, res.statusCode, performance.now() - at);
    };
    diagnostics.subscribe('http.server.response.finish', this.onFinish);
  }

  /**
   * An HTTP/2 response (worker/tls.ts: the stream's 'close', a listener it has anyway): Node's
   * HTTP/2 compatibility responses publish no finish channel on Node 20, and the streams are not
   * built from a class of ours.
   */
  readonly countH2 = (status: number, ms: number): void => count(this.counts, status, ms);

  stop(): void {
    if (active === this.counts) active = undefined;
    if (this.onFinish) diagnostics.unsubscribe('http.server.response.finish', this.onFinish);
  }
}
