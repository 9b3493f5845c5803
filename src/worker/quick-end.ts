/**
 * A request nobody listened to ends with its response.
 *
 * When a response finishes and its request was never read, Node's http.Server calls the request's
 * `_dump()` (undocumented, Node 0.x-24), which drives the request's stream to its end the long
 * way: `resume()`, a tick, the flowing machinery, a tick, 'end', a destroy, a tick, 'close'. For
 * a request with no body (a GET) that nobody listens to, none of it does anything: the parser has
 * read the whole request already. It cost 6% of a worker's CPU per hello-world request in
 * keep-alive (`bench:cpu --a/--b`, 5 pairs, every pair over).
 *
 * Here, such a request is marked ended and closed at once, as Node 24.12's own
 * `optimizeEmptyRequests` server option marks a request without body headers when it arrives
 * (`_dumpAndCloseReadable`, used when Node has it): `readableEnded` and `destroyed` are true, and
 * no 'end' or 'close' event is emitted. That option is opt-in because an app waiting for a GET's
 * 'end' before it answers would wait forever; here nothing changes until the response has
 * finished, and only for a request that is complete (the parser read all of it), has nothing
 * buffered, was never read and has no listener at all. Every other request takes Node's way. The
 * one difference an app can see: a listener it adds to such a request after the response
 * finished is not called (Node would call a 'close' listener added within the next ticks).
 */
import type { IncomingMessage } from 'node:http';
import { http } from '../shared/node-http.js';

/** The parts of Node's IncomingMessage and its stream state read here (undocumented but stable: the names Node's own code uses). */
type Dumpable = IncomingMessage & {
  _dump?: (this: Dumpable) => void;
  _dumped?: boolean;
  _consuming?: boolean;
  _eventsCount?: number;
  _dumpAndCloseReadable?: (this: Dumpable) => void;
  _readableState?: { length: number; ended: boolean; endEmitted: boolean; destroyed: boolean; closed: boolean; closeEmitted: boolean };
};

let installed = false;

/** Node 24's `_dumpAndCloseReadable`, for a Node without it. */
function closeReadable(req: Dumpable): void {
  req._dumped = true;
  const st = req._readableState!;
  st.ended = true;
  st.endEmitted = true;
  st.destroyed = true;
  st.closed = true;
  st.closeEmitted = true;
}

/** Whether `req` can be ended at once: all of it read by the parser, nothing buffered, never read, no listener. */
function untouched(req: Dumpable): boolean {
  const st = req._readableState;
  return req.complete && req._dumped !== true && req._consuming !== true && req._eventsCount === 0 && st !== undefined && st.length === 0;
}

/** Install once per process; false where Node's request has no `_dump` (a future Node: its own way stays). */
export function quickEnd(): boolean {
  const proto = http.IncomingMessage.prototype as Dumpable;
  const original = proto._dump;
  if (typeof original !== 'function') return false;
  if (installed) return true;
  installed = true;
  const helper = typeof proto._dumpAndCloseReadable === 'function' ? proto._dumpAndCloseReadable : undefined;
  proto._dump = function (this: Dumpable): void {
    if (untouched(this)) {
      if (helper !== undefined) helper.call(this);
      else closeReadable(this);
      // a Node whose stream state did not take it (other field names): its own way
      if (this.readableEnded && this.destroyed) return;
      this._dumped = false;
    }
    original.call(this);
  };
  return true;
}
