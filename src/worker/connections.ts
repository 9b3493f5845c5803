/**
 * Connection tracking in a worker. Node's net.Server does not count sockets injected with
 * emit('connection') (the drain's accept4 path) nor upgraded ones, so the worker tracks every
 * connection itself: in-flight requests, idle time, upgrades. Retiring is driven from here:
 * Connection: close on every response, idle keep-alive connections closed only after an idle
 * grace, and the end of the last connection reported once.
 *
 * Two modes, so that serving pays nothing for the drain:
 * - plain (serving): a request costs one counter, a connection two and a 'close' listener (for
 *   the exact bytes sent, the open count and a response cut by its connection's close). The
 *   connections themselves are read from the http.Server's own list when asked (every 500 ms for
 *   the status, each idle sweep, or at a switch), and a record (`Conn`) is made only for those
 *   still open then; Node's http.Server keeps the response being written on
 *   `socket._httpMessage` (undocumented, in Node since 0.x).
 * - tracked (lame duck, retiring, forced): every connection has its record from its start and
 *   every response is followed to its 'close'. The switch adopts the connections open and the
 *   responses in flight at that moment.
 * Storing each response on its long-lived connection and listening for its 'close' cost 3-5% of
 * a hello-world worker's throughput, and a record in a Map for every new connection ~2% of a
 * connection-per-request one (docs/STATUS.md).
 */
import type { Socket } from 'node:net';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { WorkerState } from '../shared/ipc.js';
import { followable, midRequest, rawAnswer, receiving, watchHead } from './client-errors.js';
import { withoutQuery } from './app-errors.js';

/** http.Server's socket: the response being written on it, if any (Node internal, see above). */
type HttpSocket = Socket & { _httpMessage?: ServerResponse | null };

type Conn = {
  socket: HttpSocket;
  /** Tracked mode: responses in flight on this connection, oldest first (more than one only when pipelined). */
  inflight: ServerResponse[];
  idleSince: number;
  upgraded: boolean;
  idleTimer?: NodeJS.Timeout;
  /** A response went out with Connection: close: the socket is closing (scoreboard C). */
  closing: boolean;
  /** socket.bytesWritten already added to bytesSent. */
  counted: number;
  /** The current response as last seen, and since when (for the scoreboard's "current request"). */
  seen: ServerResponse | undefined;
  since: number;
  /** socket.bytesRead at the last idle sweep, and when a sweep last saw the connection active. */
  lastRead: number;
  activeAt: number;
  /** Its request was past --headers-timeout or --request-timeout and answered so (sweepIdle). */
  timedOut?: boolean;
};

/**
 * What the http.Server does at its 'listening' to keep its own list of connections (Node internal,
 * Node 18-24): a native ordered set of their parsers that each one leaves and joins again at every
 * request's start and end (four tree operations and two clock reads per request), read once a
 * second for its headers and request timeouts and by `closeIdleConnections()`. That list cost
 * 3.3% of a worker's CPU per hello-world request in keep-alive, 4.3% over TLS
 * (`bench:cpu --a/--b`, 6 and 5 pairs, every pair over): the worker does without it (`watch`),
 * keeps its open connections in a Set, and judges the two timeouts in its sweep instead
 * (`sweepIdle`), from what each connection's parser tells (client-errors.ts `receiving`).
 */
const NODE_TRACKING = 'setupConnectionsTracking';
type Tracking = (this: Server) => void;

/** What Node's check gives a request past --headers-timeout or --request-timeout (its `onRequestTimeout`): the server's 'clientError'. */
function requestTimeout(): Error {
  return Object.assign(new Error('Request timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' });
}

/** The response an untracked connection is writing now. */
/** A request's target as the status pages show it: its path, its query only when asked (it may carry secrets), 64 characters at most. */
function shownPath(url: string | undefined, withQuery: boolean): string {
  if (url === undefined) return '-';
  return (withQuery ? url : withoutQuery(url)).slice(0, 64);
}

function current(conn: Conn): ServerResponse | undefined {
  return conn.socket._httpMessage ?? undefined;
}

export const FORCED_HEADER = 'quiesce-forced';

/**
 * Connections this class does not see itself, counted in its `size` and winding with it: TLS
 * handshakes in progress and HTTP/2 sessions (worker/tls.ts). It tells `changed()` when one ends.
 */
export interface Others {
  readonly open: number;
  /** Requests (streams) in flight. */
  readonly inflight: number;
  /** Bytes sent on them since the start (HTTP/2 sessions: what Connections does not see). */
  readonly bytesSent: number;
  /**
   * Lame duck (`retiring` false: those open now are asked to go, as every response carries
   * Connection: close) or retiring (all of them, and those that come after): wind down (HTTP/2:
   * GOAWAY), the idle grace for those that have not asked anything yet.
   */
  wind(idleGraceMs: number, retiring: boolean): void;
  /** Graceful timeout: end what is left; returns how many requests were forced. */
  force(): number;
  /**
   * An HTTP/1.1 connection over TLS (one the front handed to the http.Server) closed: told from
   * this class's own 'close' listener, so that such a connection carries one listener of ours.
   */
  h1Closed(): void;
}

/** A response's connection, kept on the response itself: no hashing of a new object per request. */
const CONN = Symbol('quiesce.conn');
type Tracked = ServerResponse & { [CONN]?: Conn };

export class Connections {
  /** Records: tracked, every open connection; plain, those open at the last walk, and upgraded ones. */
  private readonly conns = new Map<Socket, Conn>();
  /**
   * The http.Server watched, and Node's own tracking of its connections while taken off it
   * (watch): then the sweep judges --headers-timeout and --request-timeout.
   */
  private server?: Server;
  private nodeTracking?: Tracking;
  /** Every open HTTP/1 connection (plain mode walks it). */
  private readonly open = new Set<Socket>();
  private closed = 0;
  /** Tracked mode: responses in flight on a connection without a record (none expected; kept exact). */
  private readonly orphans = new Set<ServerResponse>();
  /** Tracked mode: responses in flight. */
  private inflightCount = 0;
  /** Every response is followed (lame duck, retiring): see the header. */
  private tracked = false;
  /** Responses that closed before they were written in full (their connection closed). */
  private aborted = 0;
  /** One listener for every response's 'close' (no closure per request: this is the hot path). */
  private readonly onResponseClose: (this: ServerResponse) => void;
  private readonly onSocketClose: (this: Socket) => void;
  private retiring = false;
  private idleGraceMs = 1000;
  private onEmpty?: () => void;
  requests = 0;
  bytesSent = 0;
  forced = 0;
  accepted = 0;
  refused = 0;
  private lame = false;
  private others?: Others;
  private shown: { state: WorkerState; since: number } = { state: '_', since: Date.now() };

  constructor() {
    const self = this;
    this.onResponseClose = function (this: ServerResponse) { self.responseClosed(this); };
    this.onSocketClose = function (this: Socket) { self.socketClosed(this); };
  }

  /**
   * Follow this http.Server's connections (call once, before it listens): Node's own list of them
   * is taken off (NODE_TRACKING), and the sweep judges its timeouts, read from the server's
   * `headersTimeout` and `requestTimeout` as Node's check reads them. Node's list comes back at
   * the first connection whose request cannot be followed (a parser we do not know), or when Node
   * has no such step (a future Node): then its check judges them, as before.
   */
  watch(server: Server): void {
    this.server = server;
    const tracking = server.listeners('listening').find((f) => f.name === NODE_TRACKING) as Tracking | undefined;
    if (tracking === undefined) return;
    server.removeListener('listening', tracking);
    this.nodeTracking = tracking;
  }

  /**
   * Node's list of connections and its timeout check, back on the server (a connection we cannot
   * follow), at once: a server whose listeners are all TLS never listens (the worker tells its
   * 'listening' once, before it serves), and one that does has listened by now.
   */
  private giveBackTimeouts(): void {
    const server = this.server;
    const tracking = this.nodeTracking;
    this.nodeTracking = undefined;
    if (server !== undefined && tracking !== undefined) tracking.call(server);
  }

  /** Count and wind `others` with these connections (TLS handshakes, HTTP/2 sessions). */
  attach(others: Others): void {
    this.others = others;
  }

  /** One of `others` ended. */
  changed(): void {
    this.checkEmpty();
  }

  /** Open connections. */
  get size(): number { return this.accepted - this.closed + (this.others?.open ?? 0); }
  /** Tracked mode: call request() for every request; otherwise count it in `requests` alone. */
  get tracking(): boolean { return this.tracked; }
  get isRetiring(): boolean { return this.retiring; }
  /** Lame duck or retiring: every response from now on carries Connection: close. */
  get winding(): boolean { return this.retiring || this.lame; }

  /** A new connection (the http.Server's 'connection' event, after Node's own listener). */
  add(socket: HttpSocket): void {
    this.accepted++;
    socket.on('close', this.onSocketClose);
    watchHead(socket);
    if (this.nodeTracking !== undefined && !followable(socket)) this.giveBackTimeouts();
    this.open.add(socket);
    if (this.tracked) {
      const conn = this.know(socket);
      if (this.retiring) this.scheduleIdleClose(conn);
    }
  }

  /** The connection's record, made on first sight. */
  private know(socket: Socket): Conn {
    let conn = this.conns.get(socket);
    if (!conn) {
      const now = Date.now();
      conn = { socket, inflight: [], idleSince: now, upgraded: false, closing: false, counted: 0, seen: undefined, since: now, lastRead: 0, activeAt: now };
      this.conns.set(socket, conn);
    }
    return conn;
  }

  /** Every open connection's record, made for those that have none yet (plain mode). */
  private walk(): IterableIterator<Conn> {
    if (!this.tracked) for (const socket of this.open) this.know(socket);
    return this.conns.values();
  }

  private socketClosed(socket: Socket): void {
    this.closed++;
    if ((socket as Socket & { encrypted?: boolean }).encrypted === true) this.others?.h1Closed();
    this.open.delete(socket);
    const conn = this.forget(socket);
    this.bytesSent += socket.bytesWritten - (conn?.counted ?? 0);
    if (conn && this.tracked) {
      for (const res of conn.inflight) (res as Tracked)[CONN] = undefined; // their 'close' counts nothing more
      this.inflightCount -= conn.inflight.length;
      this.aborted += conn.inflight.length;
      conn.inflight.length = 0;
    } else if (!conn?.upgraded) {
      const res = (socket as HttpSocket)._httpMessage;
      if (res && !res.writableFinished) this.aborted++;
    }
    this.checkEmpty();
  }

  /** Tracked mode: a request started on its connection. Call before the app's listener runs. */
  request(req: IncomingMessage, res: ServerResponse): void {
    this.requests++;
    this.follow(this.conns.get(req.socket as Socket), res);
  }

  private follow(conn: Conn | undefined, res: ServerResponse): void {
    this.inflightCount++;
    if (this.winding && !res.headersSent) res.shouldKeepAlive = false;
    if (conn) {
      (res as Tracked)[CONN] = conn;
      if (conn.idleTimer) clearTimeout(conn.idleTimer);
      if (conn.inflight.length === 0) conn.since = Date.now();
      conn.inflight.push(res);
    } else {
      this.orphans.add(res);
    }
    res.on('close', this.onResponseClose);
  }

  /**
   * Follow every response from now on (lame duck, retiring, forced): adopt the ones in flight,
   * and give each idle connection its idle grace from now. Winding, follow() gives every response
   * whose headers are not out yet Connection: close: the adopted ones here, later ones as they come
   * (the switch happens once, and the worker only winds down after it).
   */
  private track(): void {
    if (this.tracked) return;
    const all = [...this.walk()];
    this.tracked = true;
    const now = Date.now();
    for (const conn of all) {
      const res = current(conn);
      if (res && !conn.upgraded) this.follow(conn, res);
      else conn.idleSince = now;
    }
  }

  private responseClosed(res: ServerResponse): void {
    const conn = (res as Tracked)[CONN];
    if (!conn) {
      if (this.orphans.delete(res)) this.inflightCount--;
      return;
    }
    (res as Tracked)[CONN] = undefined;
    this.inflightCount--;
    const i = conn.inflight.indexOf(res);
    if (i >= 0) conn.inflight.splice(i, 1);
    if (!res.writableFinished) this.aborted++;
    if (res.statusCode === 503 && this.winding && !res.hasHeader(FORCED_HEADER)) this.refused++;
    if (!res.shouldKeepAlive) conn.closing = true;
    if (conn.inflight.length === 0) {
      conn.idleSince = Date.now();
      if (this.retiring) this.scheduleIdleClose(conn);
    }
  }

  /**
   * Idle timeouts, read every sweep instead of a timer re-armed on every response (Node's
   * keep-alive timer costs ~7% of a hello-world request): a connection that read nothing since the
   * last sweep and has no response in flight is idle since that sweep; it is closed once idle for
   * `keepAliveMs` (`firstRequestMs` before its first request). 0 = never. Never closes earlier than
   * the limit; at most one sweep later. With Node's list of connections taken off (watch), the
   * same walk judges the headers and request timeouts (pastTimeout).
   */
  sweepIdle(keepAliveMs: number, firstRequestMs: number): void {
    const now = Date.now();
    const server = this.server;
    const timeouts = this.nodeTracking !== undefined && server !== undefined && (server.headersTimeout > 0 || server.requestTimeout > 0);
    for (const conn of this.walk()) {
      if (timeouts && !conn.timedOut && !conn.upgraded && this.pastTimeout(conn, server)) continue;
      const read = conn.socket.bytesRead;
      // a request partly received (a client pausing inside its headers) is not idle: the headers
      // timeout judges it (pastTimeout, or Node's check)
      if (read !== conn.lastRead || conn.upgraded || conn.inflight.length > 0 || current(conn) || midRequest(conn.socket)) {
        conn.lastRead = read;
        conn.activeAt = now;
        continue;
      }
      const limit = read === 0 ? firstRequestMs : keepAliveMs;
      if (limit > 0 && now - conn.activeAt >= limit) conn.socket.destroy();
    }
  }

  /**
   * Node's headers and request timeouts, judged as its check does (which the worker took off:
   * watch): a request whose head is still coming past `headersTimeout`, or any part of it past
   * `requestTimeout` (ms since its first byte; 0 = no limit), gets the server's 'clientError'
   * (ERR_HTTP_REQUEST_TIMEOUT: 408, client-errors.ts), once. Found at most one sweep (<= 1 s)
   * late, as Node's check, once a second, finds it.
   */
  private pastTimeout(conn: Conn, server: Server): boolean {
    const r = receiving(conn.socket);
    if (r === undefined) return false;
    const headers = server.headersTimeout;
    const request = server.requestTimeout;
    if (!((r.head && headers > 0 && r.ms > headers) || (request > 0 && r.ms > request))) return false;
    conn.timedOut = true;
    server.emit('clientError', requestTimeout(), conn.socket);
    return true;
  }

  /** The connection leaves HTTP/1 for a session counted elsewhere (h2c: the TLS front's sessions): forgotten here, as if never accepted. */
  release(socket: Socket): void {
    socket.removeListener('close', this.onSocketClose);
    this.accepted--;
    this.open.delete(socket);
    this.forget(socket);
  }

  /** Drop the connection's record, if it has one (its idle timer with it); returns it. */
  private forget(socket: Socket): Conn | undefined {
    const conn = this.conns.get(socket);
    if (conn) {
      clearTimeout(conn.idleTimer);
      this.conns.delete(socket);
    }
    return conn;
  }

  /** The app took over the socket (WebSocket, CONNECT): it leaves HTTP, we keep counting it. */
  upgrade(req: IncomingMessage, socket: Duplex): void {
    if ((socket as Socket).destroyed) return;
    const conn = this.know(socket as Socket);
    conn.upgraded = true;
    clearTimeout(conn.idleTimer);
    void req;
  }

  /**
   * Start retiring: every response not yet started carries Connection: close; connections idle for
   * the idle grace are closed (a request arriving meanwhile is answered, with Connection: close).
   * `onEmpty` runs once, when the last connection is gone.
   */
  retire(idleGraceMs: number, onEmpty: () => void): void {
    this.idleGraceMs = idleGraceMs;
    this.onEmpty = onEmpty;
    if (this.retiring) return;
    this.retiring = true;
    this.track();
    for (const conn of this.conns.values()) this.scheduleIdleClose(conn);
    this.others?.wind(idleGraceMs, true);
    this.checkEmpty();
  }

  /** Lame duck: Connection: close on every response from now on, without retiring. */
  lameDuck(): void {
    this.lame = true;
    this.track();
    this.others?.wind(this.idleGraceMs, false);
  }

  /** Plain mode: a share of responses gets Connection: close (a reload's soak, on the old generation). */
  steering = false;
  private steerEvery = 0;
  private steerCount = 0;

  /**
   * During a reload's soak the old generation closes one keep-alive connection in `1/share`
   * responses (Connection: close, sent with the response: the client does not reuse it, nothing
   * races), so that its clients reconnect and the kernel spreads them over both generations.
   */
  steerShare(share: number): void {
    this.steerEvery = share > 0 ? Math.max(1, Math.round(1 / share)) : 0;
    this.steering = this.steerEvery > 0;
  }

  /** Plain mode, while steering: called for every request (the request listener checks `steering`). */
  steer(res: ServerResponse): void {
    if (++this.steerCount < this.steerEvery) return;
    this.steerCount = 0;
    if (!res.headersSent) res.shouldKeepAlive = false;
  }

  private scheduleIdleClose(conn: Conn, wait = Math.max(0, conn.idleSince + this.idleGraceMs - Date.now())): void {
    if (conn.upgraded || conn.inflight.length > 0) return;
    clearTimeout(conn.idleTimer);
    conn.idleTimer = setTimeout(() => {
      // Timers run before the loop reads its sockets: a worker kept busy past the grace (a long
      // synchronous handler, a starved CPU) would close a connection whose request already waits
      // in the kernel, unread. The poll phase reads it before setImmediate runs: judge it then.
      setImmediate(() => {
        if (conn.inflight.length > 0 || conn.upgraded || conn.socket.destroyed) return;
        // a pipelined request queued before the switch, now being answered: follow it instead
        const res = current(conn);
        if (res) this.follow(conn, res);
        // a request partly received: closing now would cut it; it is answered (with Connection:
        // close) once its headers are in, or ended by --headers-timeout or the graceful timeout
        else if (midRequest(conn.socket)) this.scheduleIdleClose(conn, this.idleGraceMs);
        else conn.socket.destroy();
      });
    }, wait);
    conn.idleTimer.unref();
  }

  private checkEmpty(): void {
    if (this.retiring && this.size === 0 && this.onEmpty) {
      const cb = this.onEmpty;
      this.onEmpty = undefined;
      cb();
    }
  }

  /**
   * Graceful timeout passed: a request that has not started its response gets a 503 carrying the
   * quiesce-forced header; one already streaming, and every upgraded connection, is ended. Each
   * counts as forced. Idle connections are closed uncounted. Returns the number forced.
   */
  force(): number {
    this.track();
    let n = 0;
    for (const conn of this.conns.values()) {
      clearTimeout(conn.idleTimer);
      if (conn.upgraded) {
        n++;
        conn.socket.destroy();
        continue;
      }
      if (conn.inflight.length === 0) {
        // a request still arriving (its headers not all in) is forced too: answered, not cut
        if (midRequest(conn.socket) && conn.socket.writable) {
          n++;
          rawAnswer(conn.socket, 503, `${FORCED_HEADER}: graceful-timeout\r\n`);
          setTimeout(() => conn.socket.destroy(), 200).unref();
        } else {
          conn.socket.destroy();
        }
        continue;
      }
      for (const res of [...conn.inflight]) {
        n++;
        if (!res.headersSent) {
          res.shouldKeepAlive = false;
          res.writeHead(503, { [FORCED_HEADER]: 'graceful-timeout', 'content-type': 'text/plain', connection: 'close' });
          res.end('503 Service Unavailable: the server stopped before this request finished\n');
        } else {
          conn.socket.destroy();
          break;
        }
      }
      // a response we just ended may not flush on a stalled socket: do not wait for it forever
      setTimeout(() => conn.socket.destroy(), 200).unref();
    }
    if (this.others) n += this.others.force();
    this.forced += n;
    return n;
  }

  /** Add what the socket wrote since the last count (no double count). */
  private countBytes(conn: Conn): void {
    const w = conn.socket.bytesWritten;
    if (w > conn.counted) { this.bytesSent += w - conn.counted; conn.counted = w; }
  }

  /**
   * What the stats report every 500 ms (and at retire and exit), from one walk over the
   * connections; `ready` false (still loading) reports state S.
   * - bytesSent: exact up to now: what every open connection wrote since it was last counted, plus
   *   what closed ones wrote (counted here and at each close, not per response: a socket's
   *   bytesWritten copies its write queue, too dear for the hot path).
   * - state: the scoreboard state, the busiest connection winning (as Apache's slot shows its one
   *   connection): W a request in progress (or an upgraded connection), R a connection that has not
   *   sent its first request yet, C closing, K idle keep-alive, _ no connection. Retiring: G while
   *   a request runs, I when only idle connections wait for their close. stateMs: how long it has
   *   been the same.
   * - current: the longest-running request. Untracked, a request's start is when a report first
   *   saw it running: its age is known to within 500 ms.
   */
  report(ready: boolean, withQuery = false): {
    inflight: number; completed: number; bytesSent: number; state: WorkerState; stateMs: number | undefined;
    current: { method: string; path: string; sinceMs: number } | undefined;
  } {
    const now = Date.now();
    let running = this.orphans.size;
    let upgraded = false;
    let reading = false;
    let closing = false;
    let best: ServerResponse | undefined;
    let since = Infinity;
    for (const conn of this.walk()) {
      this.countBytes(conn);
      if (conn.upgraded) { upgraded = true; continue; }
      const res = this.tracked ? conn.inflight[0] : current(conn);
      if (!this.tracked && res !== conn.seen) { conn.seen = res; conn.since = now; }
      if (res) {
        running++;
        if (!best || conn.since < since) { best = res; since = conn.since; }
      } else if (conn.closing || conn.socket.writableEnded) closing = true;
      else if (conn.socket.bytesWritten === 0) reading = true;
    }
    if (!best) for (const res of this.orphans) { best = res; break; }
    const inflight = (this.tracked ? this.inflightCount : running) + (this.others?.inflight ?? 0);
    const busy = inflight > 0 || upgraded;
    let state: WorkerState = 'S';
    if (ready) {
      state = this.retiring
        ? (busy || this.size === 0 ? 'G' : 'I')
        : busy ? 'W' : reading ? 'R' : closing ? 'C' : this.size > 0 ? 'K' : '_';
      if (state !== this.shown.state) this.shown = { state, since: now };
    }
    const req = best?.req;
    return {
      inflight, completed: this.requests - inflight - this.aborted, bytesSent: this.bytesSent + (this.others?.bytesSent ?? 0), state,
      stateMs: ready ? now - this.shown.since : undefined,
      current: best ? { method: req?.method ?? '-', path: shownPath(req?.url, withQuery), sinceMs: since === Infinity ? 0 : now - since } : undefined,
    };
  }
}
