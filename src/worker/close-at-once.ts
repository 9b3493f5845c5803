/**
 * A connection that ends with its response (`Connection: close`, HTTP/1.0) is closed at once.
 *
 * Node's http.Server ends such a connection with `socket.destroySoon()`: `end()` (the stream's
 * end, `_final`, a shutdown request that libuv carries out on the socket's next writable event,
 * its callback back in JS, the socket's 'finish') and then `destroy()`, which closes the fd right
 * after the shutdown, without waiting for the peer. When nothing is left to write, `close()`
 * alone puts the same bytes on the wire: the FIN after what the kernel still holds, or a reset
 * if the peer sent bytes nobody read (with or without the shutdown before it). So a plain TCP
 * socket with nothing queued is destroyed at once; anything else (TLS, which owes its
 * close_notify, or a socket with writes queued) keeps Node's way. "At once" is the next tick: the
 * http.Server calls destroySoon from the response's last write callback, and a stream destroyed
 * inside its write callback builds an ERR_STREAM_DESTROYED (a stack trace) as it unwinds,
 * whether or not anyone is waiting for it (1.5% of a worker's CPU on new connections).
 */
import net from 'node:net';

type Soon = { destroySoon?: (this: net.Socket) => void };

let installed = false;

function destroyNow(socket: net.Socket): void {
  socket.destroy();
}

/** Install once per process; false where Node's socket has no destroySoon (a future Node). */
export function closeAtOnce(): boolean {
  const proto = net.Socket.prototype as net.Socket & Soon;
  const original = proto.destroySoon;
  if (typeof original !== 'function') return false;
  if (installed) return true;
  installed = true;
  proto.destroySoon = function (this: net.Socket): void {
    if (this.constructor === net.Socket && this.writable && this.writableLength === 0 && !this.connecting) {
      process.nextTick(destroyNow, this);
      return;
    }
    original.call(this);
  };
  return true;
}
