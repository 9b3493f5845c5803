/**
 * A connection that ends with its response (`Connection: close`, HTTP/1.0) is closed at once.
 *
 * Node's http.Server ends such a connection with `socket.destroySoon()`: `end()` (the stream's
 * end, `_final`, a shutdown request that libuv carries out on the socket's next writable event,
 * its callback back in JS, the socket's 'finish') and then `destroy()`, which closes the fd right
 * after the shutdown, without waiting for the peer. When nothing is left to write, `close()`
 * alone puts the same bytes on the wire: the FIN after what the kernel still holds, or a reset
 * if the peer sent bytes nobody read (with or without the shutdown before it). So:
 * - a plain TCP socket with nothing queued is destroyed at once;
 * - a TLS socket with nothing queued is ended (`end()`: its `_final` runs within the call, and
 *   TLS's shutdown writes the close_notify alert to the TCP socket there and then, before it asks
 *   libuv for the TCP shutdown) and destroyed at once if that alert went all the way to the
 *   kernel (the TCP handle has nothing queued): the close cancels the shutdown request still
 *   pending, and its FIN follows the alert. 2.4% of a worker's CPU per new TLS connection
 *   (docs/STATUS.md). If the alert is still queued, Node's way: the destroy waits for 'finish';
 * - anything else (writes queued, a TLS socket over something other than a TCP handle, a Node
 *   without these fields) keeps Node's way.
 * "At once" is the next tick: the http.Server calls destroySoon from the response's last write
 * callback, and a stream destroyed inside its write callback builds an ERR_STREAM_DESTROYED (a
 * stack trace) as it unwinds, whether or not anyone is waiting for it (1.5% of a worker's CPU on
 * new connections). Closed at once, a socket never emits 'finish'.
 */
import net from 'node:net';

type Soon = { destroySoon?: (this: net.Socket) => void };

let installed = false;

/** What closeTls reads of a TLS socket: its writable state (Node's own, Node 14-24) and its TCP handle (TLSWrap's `_parent`). */
type TlsInside = net.Socket & {
  encrypted?: boolean;
  _writableState?: { finalCalled?: boolean };
  _handle?: { _parent?: { writeQueueSize?: number } } | null;
};

function destroyNow(socket: net.Socket): void {
  socket.destroy();
}

/** After end(): destroy now if the close_notify reached the kernel, else once 'finish' comes (Node's destroySoon). */
function closeTls(socket: TlsInside): void {
  if (socket.destroyed) return;
  if (socket.writableFinished || (socket._writableState?.finalCalled === true && socket._handle?._parent?.writeQueueSize === 0)) socket.destroy();
  else socket.once('finish', socket.destroy);
}

/** Install once per process; false where Node's socket has no destroySoon (a future Node). */
export function closeAtOnce(): boolean {
  const proto = net.Socket.prototype as net.Socket & Soon;
  const original = proto.destroySoon;
  if (typeof original !== 'function') return false;
  if (installed) return true;
  installed = true;
  proto.destroySoon = function (this: TlsInside): void {
    if (this.writable && this.writableLength === 0 && !this.connecting) {
      if (this.constructor === net.Socket) {
        process.nextTick(destroyNow, this);
        return;
      }
      if (this.encrypted === true) {
        this.end();
        process.nextTick(closeTls, this);
        return;
      }
    }
    original.call(this);
  };
  return true;
}
