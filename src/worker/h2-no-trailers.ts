/**
 * An HTTP/2 response that is whole when its headers go out is sent without a trailers round.
 *
 * Node's compatibility API (the `(req, res)` of `http2.createSecureServer`) starts every response
 * with `stream.respond(headers, { waitForTrailers: true })`, in case the app adds trailers later:
 * once the body is out, nghttp2 calls back into JS ('wantTrailers'), the compat layer calls
 * `sendTrailers({})`, and with none to send an empty DATA frame carries the END_STREAM. For the
 * common response, headers and body given in one `end()` with no trailer set, that round buys
 * nothing: here its `respond()` goes out without `waitForTrailers`, and the END_STREAM rides on
 * the last DATA frame (valid HTTP/2 either way; one frame fewer). Per CPU, with Node's own
 * `http2.createSecureServer` serving hello-world to h2load (`npm run bench:cpu` A/B, this switch
 * alone): 1.21x.
 *
 * Kept as Node does it: a response whose headers go out before its `end()` (a `writeHead()` or a
 * `write()` first: a stream), one with trailers set before its `end()`, and every `respond()` an
 * app calls itself on a stream. Quiesce's own writers that never send trailers (static files, the
 * fetch bridge) mark their streams whole (`markWhole`) and skip the round however they write.
 * What changes: trailers set after `end()` on a response that had none are not sent (Node's
 * compatibility API would send them if set before the body was flushed); HTTP/1.1's
 * ServerResponse never sends those either.
 *
 * No runtime import of node:http2 here: the static handler and the fetch bridge call markWhole in
 * workers that never load HTTP/2.
 */
import type http2 from 'node:http2';

type Respond = (this: http2.ServerHttp2Stream, headers?: http2.OutgoingHttpHeaders, options?: http2.ServerStreamResponseOptions) => void;
type Marked = { [kWhole]?: true };
type WithTrailers = http2.Http2ServerResponse & { [kTrailers]?: true };

/** On a stream: its response never has trailers (set by quiesce's own writers). */
const kWhole = Symbol('quiesce.whole');
/** On a compat response: the app set trailers (they are sent the way Node sends them). */
const kTrailers = Symbol('quiesce.trailers');

/** The compat response whose end() is running (its respond(), if any, happens inside). */
let ending: http2.Http2ServerResponse | undefined;
let responsesPatched = false;
const streamsPatched = new WeakSet<object>();

/** Patch the compat response class once per process: its end() and its trailer setters. False where it lacks one of them (a future Node). */
function patchResponses(Response: typeof http2.Http2ServerResponse): boolean {
  if (responsesPatched) return true;
  const proto = Response?.prototype as (http2.Http2ServerResponse & Record<string, unknown>) | undefined;
  if (!proto || typeof proto.end !== 'function' || typeof proto.setTrailer !== 'function' || typeof proto.addTrailers !== 'function') return false;
  responsesPatched = true;
  const { end, setTrailer, addTrailers } = proto;
  type End = (this: http2.Http2ServerResponse, chunk?: unknown, encoding?: unknown, cb?: unknown) => http2.Http2ServerResponse;
  const original = end as unknown as End;
  // (fixed parameters, not a rest array: one allocation fewer per response; the compat end() sorts them out as before)
  const wrapped: End = function (this: WithTrailers, chunk, encoding, cb) {
    if (this.headersSent || this[kTrailers] === true) return original.call(this, chunk, encoding, cb);
    const outer = ending;
    ending = this;
    try {
      return original.call(this, chunk, encoding, cb);
    } finally {
      ending = outer;
    }
  };
  proto.end = wrapped as unknown as typeof proto.end;
  proto.setTrailer = function (this: WithTrailers, name: string, value: string) {
    this[kTrailers] = true;
    return setTrailer.call(this, name, value);
  };
  proto.addTrailers = function (this: WithTrailers, headers: http2.OutgoingHttpHeaders) {
    this[kTrailers] = true;
    return addTrailers.call(this, headers);
  };
  return true;
}

/**
 * Install on the class of `stream` (a server stream; once per class) and on the compat response
 * class `Response` (`http2.Http2ServerResponse`): a whole response's respond() drops
 * `waitForTrailers`. Returns whether it is in place.
 */
export function skipTrailersRound(stream: http2.ServerHttp2Stream, Response: typeof http2.Http2ServerResponse): boolean {
  const proto = Object.getPrototypeOf(stream) as { respond?: Respond };
  if (streamsPatched.has(proto)) return true;
  const respond = proto.respond;
  if (typeof respond !== 'function' || !patchResponses(Response)) return false;
  streamsPatched.add(proto);
  proto.respond = function (this: http2.ServerHttp2Stream & Marked, headers, options) {
    // (the options object is the compat layer's own, made for this call: changed in place)
    if (options?.waitForTrailers === true && (this[kWhole] === true || (ending !== undefined && ending.stream === this))) options.waitForTrailers = false;
    respond.call(this, headers, options);
  };
  return true;
}

/** Quiesce's own writer answering `res` never sends trailers: an HTTP/2 response (the one with a `stream`) skips the round however it is written. No-op for HTTP/1. */
export function markWhole(res: object): void {
  const stream = (res as { stream?: Marked }).stream;
  if (stream !== undefined && stream !== null) stream[kWhole] = true;
}
