/**
 * `--queue-timeout`: a request that waited longer than the limit before the worker read it is
 * answered 503 with Retry-After at once instead of being served (HAProxy's `timeout queue`).
 * Under overload (a worker killed, hung or scaled away, a burst above capacity) the kernel's
 * accept queue and the worker's own backlog grow until clients give up; every request served
 * after its client left is work lost while newer requests wait behind it. Answering the old ones
 * in microseconds empties the queue, and the clients learn it at once (a 503 they may retry)
 * instead of at their own timeout.
 *
 * The wait is read from the kernel: TCP_INFO's tcpi_last_data_recv, the milliseconds since the
 * connection last received data. For a request read now, that is how long its bytes waited: in
 * the accept queue, then unread in this process. A request whose body is still arriving has a
 * young last segment and is never shed.
 *
 * Over TLS the request itself comes only after the handshake, which the worker does once it is
 * free: the wait is the ClientHello's. The TLS front reports each connection it accepts
 * (`accepted`: TCP_INFO then, the ClientHello's age), and the connection's first request (or an
 * HTTP/2 session's first stream) is judged by the time since its ClientHello arrived. HTTP/2
 * streams go through the same judge as HTTP/1.1 requests (a 503 on the stream; the session
 * stays).
 *
 * Cost (only with the option on): one getsockopt (~2 µs) for the first request of each connection
 * (where a queue's wait lands: the accept queue) and for one keep-alive request in SAMPLE_EVERY;
 * one that waited half the limit puts the worker on watch, measuring every request for WATCH_MS.
 * A TLS connection adds one getsockopt at its accept.
 */
import type * as Http from 'node:http';
import type { Socket } from 'node:net';
import type { RepeatLog } from './repeat-log.js';

/** While not on watch, the share of requests measured (a power of two). */
const SAMPLE_EVERY = 16;
/** How long a request that waited half the limit keeps every request measured. */
const WATCH_MS = 1_000;

/** The response header that marks a shed request (for clients, logs and tests). */
export const SHED_HEADER = 'quiesce-shed';

/** A TLS socket's `_parent` is the TCP socket its server accepted (Node's own field, Node 20-24; null on a plain one). */
type FdSocket = { _handle?: { fd?: number } | null; _parent?: Socket | null };

export class QueueShed {
  /** Requests answered 503 since the start. */
  shed = 0;
  private n = 0;
  private watchUntil = 0;

  constructor(
    private readonly limitMs: number,
    /** ms since the socket's last data arrived, -1 when unknown (native dataAgeMs). */
    private readonly dataAgeMs: (fd: number) => number,
    private readonly log: RepeatLog,
  ) {}

  /** TLS connections accepted whose first request is not judged yet (their TCP socket): when their ClientHello arrived (Date.now() ms). */
  private readonly hello = new WeakMap<Socket, number>();

  /** A TLS connection accepted (before its handshake): when its first bytes (the ClientHello) arrived. */
  accepted(raw: Socket): void {
    const fd = (raw as unknown as FdSocket)._handle?.fd;
    if (typeof fd !== 'number' || fd < 0) return;
    const age = this.dataAgeMs(fd);
    if (age < 0) return;
    this.hello.set(raw, Date.now() - age);
  }

  /** Answers `res` with the 503 and returns true when the request waited past the limit. */
  judge(req: Http.IncomingMessage, res: Http.ServerResponse): boolean {
    const socket = req.socket as unknown as FdSocket;
    const raw = socket._parent;
    const helloAt = raw ? this.hello.get(raw) : undefined;
    // a TLS connection's first request, a connection's first (nothing written on it yet), a sample of the others, or all while on watch
    if (helloAt === undefined && (++this.n & (SAMPLE_EVERY - 1)) !== 0 && this.watchUntil === 0 && req.socket.bytesWritten !== 0) return false;
    const now = Date.now();
    if (this.watchUntil !== 0 && now > this.watchUntil) this.watchUntil = 0;
    const fd = socket._handle?.fd;
    if (typeof fd !== 'number' || fd < 0) return false;
    let waited = this.dataAgeMs(fd);
    if (raw && helloAt !== undefined) {
      this.hello.delete(raw);
      waited = Math.max(waited, now - helloAt);
    }
    if (waited < this.limitMs / 2) return false;
    this.watchUntil = now + WATCH_MS;
    if (waited < this.limitMs) return false;
    this.shed++;
    res.shouldKeepAlive = false;
    res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1', 'cache-control': 'no-store', [SHED_HEADER]: 'queue-timeout' });
    res.end(`503 Service Unavailable: this request waited ${waited} ms for a worker (--queue-timeout ${this.limitMs} ms)\n`);
    this.log.report('queue-timeout', { waited_ms: waited, limit_ms: this.limitMs, method: req.method ?? '', shed_total: this.shed }, { limit_ms: this.limitMs });
    return true;
  }
}
