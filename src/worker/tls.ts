/**
 * TLS and HTTP/2 in a worker. Imported only by a worker with a TLS listener or an app that brought
 * its own TLS server: the plain HTTP path loads none of it and pays nothing for it.
 *
 * Each TLS listener gets a front: a `tls.Server` listening on the inherited fd (and fed the
 * connections the drain accepts), with the generation's context and session ticket keys. Once a
 * handshake is done, ALPN decides: `http/1.1` (or no ALPN) goes to the worker's one http.Server as
 * any connection does, so Connections tracks it like a cleartext one; `h2` goes to an HTTP/2
 * server that never listens (ours, or the app's own `http2.createSecureServer`).
 *
 * What Connections cannot see is counted here, in its `size`: handshakes in progress (a connection
 * accepted before the gate finishes its handshake and is served) and HTTP/2 sessions. The drain
 * of a session (at a lame duck or a retirement): close(), whose GOAWAY names the last stream it
 * will serve: the streams in flight finish, a client's stream after it is refused (above the
 * GOAWAY's last stream id: not processed, which clients retry), and the session ends when its
 * last stream does (shut). A session that has not opened a stream yet (its
 * handshake just ended) is given the idle grace for its first one, as an idle keep-alive
 * connection is. A lame duck asks the sessions open at its start to go (their clients come back on
 * new connections, which serve until the retirement); retiring, every session goes, those whose
 * handshake ends after it too, once their first stream is in.
 */
import tls from 'node:tls';
import http2 from 'node:http2';
import { hkdfSync } from 'node:crypto';
import type * as Http from 'node:http';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { TlsWire } from '../shared/ipc.js';
import type { Others } from './connections.js';
import { FORCED_HEADER } from './connections.js';
import { skipTrailersRound } from './h2-no-trailers.js';

export type H2Listener = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void;

/** Per protocol: open connections (sessions for h2) and requests since the start. */
export type ProtocolCounts = { connections: number; requests: number };

export type TlsFrontOptions = {
  /** The generation's TLS material; undefined when no listener speaks TLS (h2c alone). */
  wire: TlsWire | undefined;
  /** The worker's http.Server: HTTP/1.1 over TLS goes there. */
  h1: Http.Server;
  /** HTTP/2: our handler for its requests, or the app's own HTTP/2 server; undefined = HTTP/1.1 only. */
  h2?: { listener: H2Listener } | { server: http2.Http2SecureServer; allowHTTP1: boolean };
  /** The app's own TLS server (adopted): its options serve the listeners without TLS of their own. */
  appTls?: tls.Server;
  handshakeTimeoutMs: number;
  /** Set TCP_NODELAY on each connection (false: the listeners have it, and their connections inherit it). */
  noDelay: boolean;
  /** An HTTP/2 session with no frame for this long gets the graceful close (GOAWAY; its streams go on); 0 = never. */
  sessionIdleMs: number;
  /** A handshake or a session ended: Connections checks whether the worker is empty. */
  onChange: () => void;
  /** --queue-timeout: each connection as it is accepted, before its handshake (QueueShed.accepted). */
  accepted?: (raw: net.Socket) => void;
  /** The TLS load board mapped (master/tls.ts TlsBoard): every worker's cell, ours, and the generation's range. */
  board?: { cells: Int32Array; base: number; slots: number; me: number };
  /** --h2c on: the listeners without TLS take HTTP/2 with prior knowledge (takeH2c); needs our own HTTP/2 listener (`h2.listener`). */
  h2c?: boolean;
  /** A connection leaves the http.Server for an h2c session: Connections forgets it (Connections.release). */
  release?: (socket: net.Socket) => void;
  /** --metrics: an HTTP/2 response finished (its stream closed without a reset, headers sent): its status and ms since its request's headers. */
  countResponse?: (status: number, ms: number) => void;
};

/** How long a crowded worker waits for its peers to take their share before it accepts anyway (a peer busy for longer cannot take it). */
const CROWDED_WAIT_MS = 20;
/** A crowded worker whose peers' cells did not move for this long takes them for stuck (hung, stopped)… */
const STUCK_MS = 250;
/** …and accepts this long without looking at the board. */
const CROWDED_IGNORE_MS = 1000;
/** A listening handle that could not be made (no fd left): the next try. */
const RETRY_MS = 10;

/** The options an adopted TLS server was made with, as tls.Server#setSecureContext keeps them on the server. */
const COPIED = ['key', 'cert', 'ca', 'pfx', 'passphrase', 'minVersion', 'maxVersion', 'secureProtocol', 'crl', 'sigalgs', 'ciphers', 'ecdhCurve', 'dhparam', 'honorCipherOrder', 'secureOptions', 'sessionIdContext', 'requestCert', 'rejectUnauthorized'] as const;

function optionsOf(server: tls.Server): tls.TlsOptions {
  const src = server as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of COPIED) if (src[k] !== undefined) out[k] = src[k];
  return out as tls.TlsOptions;
}

/** The session ticket keys (48 bytes: name, HMAC and AES keys) of period `period`, derived from the master's secret: the same in every worker. */
export function ticketKeysAt(secret: string, period: number): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(secret, 'base64'), Buffer.alloc(0), `quiesce session tickets ${period}`, 48));
}

/** HTTP/2's connection preface: Node's HTTP/1 parser stops once it has read all of it (HPE_PAUSED_H2_UPGRADE). */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/** The events node:http listens for on a connection's socket (its listeners are internal: all of them go, ours were let go first). */
const HTTP1_SOCKET_EVENTS = ['data', 'end', 'close', 'drain', 'error', 'timeout', 'pause', 'resume'] as const;
/** What takeH2c needs of Node's HTTP/1 parser on the socket (node:http's own, undocumented; Node 20-24). */
type ParserOfSocket = { _consumed?: boolean; unconsume?: () => void; remove?: () => void };
type Http1Socket = net.Socket & { parser?: ParserOfSocket | null; _handle?: { _consumed?: boolean } | null; encrypted?: boolean };

/** An HTTP/2 session's record (its protocol's counts: h2 or h2c): its streams in flight (each with its start, performance.now() with --metrics, else 0), how many it opened, since when it is idle (sweepIdle), and its socket (the bytes it sent). */
type SessionRec = { front: TlsFront; counts: ProtocolCounts; streams: Map<http2.ServerHttp2Stream, number>; seen: number; shut: boolean; timer?: NodeJS.Timeout; seenAtSweep: number; activeAt: number; socket: net.Socket | undefined };
const kRec = Symbol('quiesce.session');
/** A session we follow, with its record. */
type TrackedSession = http2.ServerHttp2Session & { [kRec]?: SessionRec };
type Destroy = (this: http2.ServerHttp2Stream, err: Error | null, cb: (err: Error | null) => void) => void;
/** Server streams' prototypes whose `_destroy` tells the front of their session (hookStreamEnd). */
const hooked = new WeakSet<object>();

/**
 * The end of every HTTP/2 server stream, without a listener per stream: its class's `_destroy`
 * (which every stream goes through once, before its 'close') is wrapped once, and tells the front
 * following its session. A 'close' listener per stream meant the listener added, and Node
 * copying the stream's listener array at each 'close' emit (the compat API has one too): ~0.5 µs
 * of a ~20 µs request in a cpu-prof, though A/B per CPU gave only 1.007-1.010x (within noise).
 * False where the stream has no `_destroy` (a future Node): then the caller listens for 'close'.
 */
function hookStreamEnd(stream: http2.ServerHttp2Stream): boolean {
  const proto = Object.getPrototypeOf(stream) as { _destroy?: Destroy };
  if (hooked.has(proto)) return true;
  const original = proto._destroy;
  if (typeof original !== 'function') return false;
  hooked.add(proto);
  proto._destroy = function (this: http2.ServerHttp2Stream, err, cb) {
    // the session first: Node's _destroy lets go of it; rstCode and headersSent are final after it
    const session = this.session as TrackedSession | undefined;
    original.call(this, err, cb);
    const rec = session?.[kRec];
    if (rec !== undefined) rec.front.streamEnded(this, rec);
  };
  return true;
}

export class TlsFront implements Others {
  private readonly fronts = new Map<number | 'app', tls.Server>();
  private readonly h2server?: http2.Http2SecureServer;
  /** --h2c on: the cleartext HTTP/2 server the preface's connections go to (never listens). */
  private readonly h2cServer?: http2.Http2Server;
  private handshakes = 0;
  private readonly sessions = new Map<http2.ServerHttp2Session, SessionRec>();
  /** The socket being handed to an HTTP/2 server: its 'session' event comes within the hand-over, and takes it. */
  private handing?: net.Socket;
  /** What the sessions closed so far sent (their sockets' bytesWritten: HTTP/2 frames, before TLS, as HTTP/1.1 over TLS counts). */
  private closedBytes = 0;
  /** Whether streams' ends are hooked (hookStreamEnd, at the first stream); where not, each stream gets a 'close' listener. */
  private endHooked?: boolean;
  /** Lame duck: the sessions open at its start were asked to go; retiring: every session, new ones included. */
  private winding: 'no' | 'lame' | 'retiring' = 'no';
  private graceMs = 1000;
  readonly tlsH1: ProtocolCounts = { connections: 0, requests: 0 };
  readonly h2: ProtocolCounts = { connections: 0, requests: 0 };
  readonly h2c: ProtocolCounts = { connections: 0, requests: 0 };
  /** Writing our load on the board (until retiring: then -1, and peers no longer count us). */
  private posting: boolean;
  /** Told when our count falls (a connection or handshake of ours ended): a stepped-back PacedAccept looks again (eased). */
  private readonly easing = new Set<() => void>();
  /** The session ticket keys of the current period (none without TLS), and the rotation's timer. */
  private ticketKeys?: Buffer;
  private rotation?: NodeJS.Timeout;

  constructor(private readonly o: TlsFrontOptions) {
    if (o.wire) this.rotateTickets();
    this.posting = o.board !== undefined;
    this.post();
    const h2 = o.h2;
    if (h2 && 'listener' in h2) {
      // ours: each stream is followed from the request listener (a second 'stream' listener beside
      // the compat API's made Node copy the listener array at every stream)
      const listener = h2.listener;
      const onRequest = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): void => {
        this.stream(req.stream);
        listener(req, res);
      };
      if (o.wire) this.h2server = http2.createSecureServer({ allowHTTP1: false }).on('request', onRequest);
      if (o.h2c) {
        this.h2cServer = http2.createServer().on('request', onRequest);
        this.h2cServer.on('session', (s: http2.ServerHttp2Session) => this.session(s, this.h2c));
      }
    } else if (h2) {
      this.h2server = h2.server;
      this.h2server.on('stream', (stream: http2.ServerHttp2Stream) => this.stream(stream));
    }
    this.h2server?.on('session', (s: http2.ServerHttp2Session) => this.session(s, this.h2));
  }

  /** Whether h2c is served (--h2c on, and an app that speaks HTTP/2). */
  get cleartextH2(): boolean { return this.h2cServer !== undefined; }

  /**
   * h2c: a connection of the http.Server whose first bytes were HTTP/2's preface (`err`, the
   * parser's HPE_PAUSED_H2_UPGRADE, after all 24 bytes of it) leaves HTTP/1 as Node's own upgrade
   * path lets a socket go: the parser stops reading it and leaves the server's list of
   * connections, node:http's listeners go, and the preface with what followed it in the same read
   * goes back in front of the socket, where the new session reads it first (Node's http2 reads a
   * socket's buffered bytes at its start). False (nothing touched: the caller answers the bad
   * request it is then) when h2c is off, over TLS, or this Node lacks a part of it.
   */
  takeH2c(socket: net.Socket, err: { rawPacket?: unknown; bytesParsed?: unknown }): boolean {
    const s = socket as Http1Socket;
    const parser = s.parser;
    const raw = err.rawPacket;
    const at = err.bytesParsed;
    if (this.h2cServer === undefined || s.encrypted === true || s.destroyed || !Buffer.isBuffer(raw) || typeof at !== 'number' || at > raw.length
      || !parser || typeof parser.remove !== 'function' || (parser._consumed === true && typeof parser.unconsume !== 'function')) return false;
    this.o.release?.(socket);
    if (parser._consumed === true) { parser.unconsume!(); parser._consumed = false; }
    parser.remove();
    s.parser = null;
    for (const ev of HTTP1_SOCKET_EVENTS) socket.removeAllListeners(ev);
    if (s._handle) s._handle._consumed = false;
    // neither flowing nor paused (as node:http leaves an upgraded socket): the bytes wait in its buffer
    (socket as { readableFlowing: boolean | null }).readableFlowing = null;
    socket.unshift(Buffer.concat([PREFACE, raw.subarray(at)]));
    this.handTo(this.h2cServer, 'connection', socket);
    return true;
  }

  /** Whether HTTP/2 is offered. */
  get http2(): boolean { return this.h2server !== undefined; }

  /** The front serving context `ctx` of the generation's material, or the app's own TLS when undefined. */
  front(ctx: number | undefined): tls.Server {
    const key = ctx ?? 'app';
    let f = this.fronts.get(key);
    if (f) return f;
    const own = ctx === undefined ? undefined : this.o.wire?.contexts[ctx];
    const base: tls.TlsOptions = own
      ? { cert: own.cert, key: own.key, ...(own.ca ? { ca: own.ca, requestCert: true, rejectUnauthorized: true } : {}) }
      : this.o.appTls ? optionsOf(this.o.appTls) : {};
    const h2 = this.o.h2;
    const onlyH2 = h2 !== undefined && 'server' in h2 && !h2.allowHTTP1;
    f = tls.createServer({
      // as https.Server: a response written behind the session tickets must not wait for their ACK
      // (set on each connection, unless the listener's is inherited)
      noDelay: this.o.noDelay,
      minVersion: 'TLSv1.2',
      ...base,
      ticketKeys: this.ticketKeys,
      ALPNProtocols: onlyH2 ? ['h2'] : this.h2server ? ['h2', 'http/1.1'] : ['http/1.1'],
      handshakeTimeout: this.o.handshakeTimeoutMs,
    });
    // more certificates, each for the names it carries (a client's SNI; Node matches *.example.com too)
    for (const m of own?.sni ?? []) {
      for (const name of m.names) f.addContext(name, { cert: m.cert, key: m.key, minVersion: 'TLSv1.2', ...(own?.ca ? { ca: own.ca } : {}) });
    }
    const accepted = this.o.accepted;
    f.on('connection', (raw: net.Socket) => {
      this.handshakes++;
      this.post();
      if (accepted !== undefined) accepted(raw);
    });
    f.on('secureConnection', (s: tls.TLSSocket) => this.secured(s));
    f.on('tlsClientError', () => { this.handshakes--; this.post(); this.eased(); this.o.onChange(); });
    this.fronts.set(key, f);
    return f;
  }

  private secured(s: tls.TLSSocket): void {
    // hand it on first, then stop counting its handshake: the worker is never seen empty between
    if (s.alpnProtocol === 'h2' && this.h2server) this.handTo(this.h2server, 'secureConnection', s);
    else {
      // its end is told by Connections' own 'close' listener (h1Closed): a second listener, a
      // `once` at that, cost every connection its wrapper and a search of the listeners at the close
      this.tlsH1.connections++;
      this.o.h1.emit('connection', s);
    }
    this.handshakes--;
    this.post();
    this.o.onChange();
  }

  /** An HTTP/1.1 connection of ours ended (Connections, see Others). */
  h1Closed(): void {
    this.tlsH1.connections--;
    this.post();
    this.eased();
  }

  /** Hand `socket` to an HTTP/2 server (which makes its session within this call: session() takes the socket). */
  private handTo(server: net.Server, event: 'connection' | 'secureConnection', socket: net.Socket): void {
    this.handing = socket;
    try { server.emit(event, socket); } finally { this.handing = undefined; }
  }

  /**
   * The ticket keys of the period we are in, set on every front; and a timer for the next period's
   * (every worker derives the same keys from the master's secret, so all switch together).
   */
  private rotateTickets(): Buffer {
    const { ticketSecret, ticketPeriodMs } = this.o.wire!;
    const now = Date.now();
    const period = Math.floor(now / ticketPeriodMs);
    this.ticketKeys = ticketKeysAt(ticketSecret, period);
    for (const f of this.fronts?.values() ?? []) f.setTicketKeys(this.ticketKeys);
    // a few ms past the boundary: a worker whose clock reads a little early still lands in the new period
    this.rotation = setTimeout(() => this.rotateTickets(), (period + 1) * ticketPeriodMs - now + 5).unref();
    return this.ticketKeys;
  }

  /** Our load on the board: TLS connections held (handshakes, sessions, HTTP/1.1 over TLS). */
  private post(): void {
    const b = this.o.board;
    if (b && this.posting) b.cells[b.me] = this.handshakes + this.sessions.size + this.tlsH1.connections;
  }

  /** Call `fn` whenever our count falls (PacedAccept.eased). */
  onEased(fn: () => void): void { this.easing.add(fn); }

  private eased(): void {
    for (const fn of this.easing) fn();
  }

  /** A mark of the peers' cells (see PacedAccept): changes when any of them does. */
  peerMark(): number {
    const b = this.o.board;
    if (!b) return 0;
    let mark = 0;
    for (let i = b.base; i < b.base + b.slots; i++) if (i !== b.me) mark = (mark * 31 + (b.cells[i] ?? 0)) | 0;
    return mark;
  }

  /**
   * Whether we hold more than the least loaded peer of the generation, by half as many again plus
   * one (so that it, not we, should take the next connection): 2 against 0, 5 against 2 or 8
   * against 4 are too many, one fewer is spread enough (a burst of 10 ends 6/4 at worst). At the
   * counts of a busy handshake row (~25 each, connections ending every ms) a margin of 1 was
   * crossed all the time by connections ending alone, and each step back (a listening handle
   * closed and made again) cost: that row read 0.93-0.96x of libuv's own accepting, 0.99x with
   * this margin.
   */
  crowded(): boolean {
    const b = this.o.board;
    if (!b || !this.posting) return false;
    const own = b.cells[b.me] ?? 0;
    let min = Infinity;
    for (let i = b.base; i < b.base + b.slots; i++) {
      const v = b.cells[i] ?? -1;
      if (i !== b.me && v >= 0 && v < min) min = v;
    }
    return own > min + 1 + (min >> 1);
  }

  private session(s: http2.ServerHttp2Session, counts: ProtocolCounts): void {
    const rec: SessionRec = { front: this, counts, streams: new Map(), seen: 0, shut: false, timer: undefined, seenAtSweep: 0, activeAt: Date.now(), socket: this.handing };
    this.sessions.set(s, rec);
    (s as TrackedSession)[kRec] = rec;
    counts.connections++;
    s.on('error', () => { /* a client gone mid-session: its streams are closed with it */ });
    s.once('close', () => {
      clearTimeout(rec.timer);
      this.sessions.delete(s);
      this.closedBytes += rec.socket?.bytesWritten ?? 0;
      counts.connections--;
      this.post();
      this.eased();
      this.o.onChange();
    });
    if (this.winding === 'retiring') this.windSession(s);
  }

  private stream(stream: http2.ServerHttp2Stream): void {
    const rec = (stream.session as TrackedSession | undefined)?.[kRec];
    if (rec === undefined) { this.h2.requests++; return; } // (its session is gone already)
    rec.counts.requests++;
    rec.streams.set(stream, this.o.countResponse ? performance.now() : 0);
    rec.seen++;
    if (this.endHooked === undefined) {
      // at the first stream: its class is Node's server stream
      this.endHooked = hookStreamEnd(stream);
      skipTrailersRound(stream, http2.Http2ServerResponse);
    }
    if (!this.endHooked) stream.once('close', () => this.streamEnded(stream, rec));
    // winding: the session's first stream is served, and GOAWAY names it the last one
    if (this.winding === 'retiring' && !rec.shut) setImmediate(() => this.shut(stream.session as http2.ServerHttp2Session));
  }

  /** A stream of session `rec` ended (hookStreamEnd): no longer in flight; with --metrics, its response counted. */
  streamEnded(stream: http2.ServerHttp2Stream, rec: SessionRec): void {
    const at = rec.streams.get(stream);
    if (at === undefined) return;
    rec.streams.delete(stream);
    const count = this.o.countResponse;
    // a complete response (a reset one, or one never answered, is not counted: as HTTP/1's 'finish')
    if (count && stream.rstCode === http2.constants.NGHTTP2_NO_ERROR && stream.headersSent) count(Number(stream.sentHeaders[':status']), performance.now() - at);
  }

  /**
   * The keep-alive timeout of HTTP/2: a session with no stream in flight and none begun for
   * `sessionIdleMs` is let go of the graceful way (shut). Called by the worker's idle sweep, as
   * Connections.sweepIdle is: Node's session timeout (setTimeout) re-arms a timer at every frame,
   * ~5% of an HTTP/2 request. A session is found idle within one sweep of its limit.
   */
  sweepIdle(): void {
    const limit = this.o.sessionIdleMs;
    if (limit <= 0) return;
    const now = Date.now();
    for (const [s, rec] of this.sessions) {
      if (rec.shut) continue;
      if (rec.streams.size > 0 || rec.seen !== rec.seenAtSweep) {
        rec.seenAtSweep = rec.seen;
        rec.activeAt = now;
      } else if (now - rec.activeAt >= limit) {
        this.shut(s);
      }
    }
  }

  /**
   * The graceful shutdown of a session: close(), whose GOAWAY names the last stream processed; the
   * streams in flight finish, and a stream the client sent before it read the GOAWAY is known to
   * it as not processed (above that id: refused, which clients retry) as soon as it reads it.
   * Not RFC 9113 6.8's two GOAWAYs (the highest stream id first, then the real one after a PING
   * round trip): Node's HTTP/2 (nghttp2) ignores every new stream once any GOAWAY is sent, so the
   * first one's promise to process those on their way was not kept, and they waited the round
   * trip (a second when the client did not answer the PING) to be refused all the same. Only
   * nghttp2's shutdown notice keeps streams coming, and Node does not expose it.
   */
  private shut(s: http2.ServerHttp2Session): void {
    const rec = this.sessions.get(s);
    if (!rec || rec.shut || s.closed || s.destroyed) return;
    rec.shut = true;
    clearTimeout(rec.timer);
    s.close();
  }

  private windSession(s: http2.ServerHttp2Session): void {
    const rec = this.sessions.get(s);
    if (!rec || rec.shut) return;
    if (rec.seen > 0) { this.shut(s); return; }
    // no stream yet (its handshake just ended): the idle grace for its first request
    rec.timer = setTimeout(() => this.shut(s), this.graceMs).unref();
  }

  // ─── Others (Connections) ────────────────────────────────────────────────

  get open(): number { return this.handshakes + this.sessions.size; }
  /** Streams in flight: those of every session's record (read with the stats and at winding, not per request). */
  get inflight(): number {
    let n = 0;
    for (const rec of this.sessions.values()) n += rec.streams.size;
    return n;
  }

  /** Bytes the HTTP/2 sessions sent, closed and open (read with the stats, not per request). */
  get bytesSent(): number {
    let n = this.closedBytes;
    for (const rec of this.sessions.values()) n += rec.socket?.bytesWritten ?? 0;
    return n;
  }

  wind(idleGraceMs: number, retiring: boolean): void {
    this.graceMs = idleGraceMs;
    if (this.winding === 'retiring' || (this.winding === 'lame' && !retiring)) return;
    this.winding = retiring ? 'retiring' : 'lame';
    // retiring: no longer a peer to leave connections to
    if (retiring && this.o.board && this.posting) { this.o.board.cells[this.o.board.me] = -1; this.posting = false; }
    for (const s of this.sessions.keys()) this.windSession(s);
  }

  /** Graceful timeout: streams not answered yet get the forced 503, streaming ones are cancelled; each counts. Handshakes still running count too (the exit ends them). */
  force(): number {
    let n = this.handshakes;
    for (const [s, rec] of this.sessions) {
      for (const stream of rec.streams.keys()) {
        n++;
        if (stream.destroyed) continue;
        if (!stream.headersSent) {
          try {
            stream.respond({ ':status': 503, [FORCED_HEADER]: 'graceful-timeout', 'content-type': 'text/plain' });
            stream.end('503 Service Unavailable: the server stopped before this request finished\n');
          } catch { stream.close(http2.constants.NGHTTP2_CANCEL); }
        } else {
          stream.close(http2.constants.NGHTTP2_CANCEL);
        }
      }
      if (!s.closed) s.close();
      setTimeout(() => { if (!s.destroyed) s.destroy(); }, 200).unref();
    }
    return n;
  }

  /** Stop the fronts' listening handles (their fds belong to the worker's listeners). */
  closeAll(): void {
    clearTimeout(this.rotation);
    for (const f of this.fronts.values()) if (f.listening) (f as net.Server).close();
  }
}

/**
 * A TLS listener's accepting, spread over the workers. libuv accepts everything queued at each
 * wake-up: with costly handshakes or long HTTP/2 sessions, the first worker to wake took a whole
 * burst while its peers, woken by the same event, found the queue empty (10 h2load sessions all on
 * one worker). Here a worker stops accepting as soon as it holds more TLS connections than its
 * least loaded peer by half as many again plus one (TlsFront.crowded; the load board,
 * master/tls.ts TlsBoard): the listening handle is closed in
 * that connection's callback (which ends libuv's accept loop), and a new one opened once the peers
 * took their share (or CROWDED_WAIT_MS passed: they are busy). Each handle listens on a duplicate
 * of the listener's fd, so closing it never touches the kernel's queue (the worker's own fd, the
 * one the drain accepts from and closes, stays open throughout). A cycle costs ~80 µs of CPU
 * (a loaded machine), so it happens only when crowded, not at every accept.
 */
export class PacedAccept {
  private server?: net.Server;
  private next?: NodeJS.Immediate;
  private stopped = false;
  /** Accepts since the start (for the tests and the log). */
  accepted = 0;

  constructor(
    private readonly fd: number,
    private readonly backlog: number,
    /** fcntl(F_DUPFD_CLOEXEC) */
    private readonly dup: (fd: number) => number,
    /** Where each connection goes: the listener's TLS front. */
    private readonly to: net.Server,
    private readonly onError: (err: Error) => void,
    /** Whether this worker holds more than its share (the board): then it waits for its peers to take the next. */
    private readonly crowded: () => boolean = () => false,
    /** A mark of the peers' cells on the board: it changes when any of them accepts or finishes a connection. */
    private readonly peers: () => number = () => 0,
    /** Set TCP_NODELAY on each connection (false: inherited from the listener). */
    private readonly noDelay = true,
  ) {}
  private peersAt = 0;
  /** Since when it waits for a peer (0: it does not); until when it ignores the board. */
  private waitingSince = 0;
  private ignoreUntil = 0;

  start(): void {
    if (this.stopped || this.server) return;
    const s = net.createServer({ noDelay: this.noDelay });
    s.on('connection', (socket: net.Socket) => {
      this.accepted++;
      // the front counts its handshake at once (the board with it): then, crowded, stop here
      this.to.emit('connection', socket);
      if (this.server === s && !this.ignoring() && this.crowded()) this.pause();
    });
    s.on('error', (err: Error) => { this.onError(err); this.retry(s); });
    let fd: number;
    try {
      fd = this.dup(this.fd);
    } catch {
      // out of fds (EMFILE): as libuv does then, try again shortly; the queue waits meanwhile
      this.retry(s);
      return;
    }
    this.server = s;
    // (the backlog as the second argument: for an { fd } handle Node ignores the options' one and uses 511)
    s.listen({ fd }, this.backlog);
  }

  /** Whether it accepts without looking at the board now (a stuck peer: resume); no clock read per connection when not (`now`: a time the caller read already). */
  private ignoring(now?: number): boolean {
    if (this.ignoreUntil === 0) return false;
    if ((now ?? Date.now()) < this.ignoreUntil) return true;
    this.ignoreUntil = 0;
    return false;
  }

  private retry(s: net.Server): void {
    if (this.server === s) { s.close(); this.server = undefined; }
    if (this.stopped || this.wait) return;
    this.wait = setTimeout(() => { this.wait = undefined; this.start(); }, RETRY_MS);
  }

  private pause(): void {
    this.server?.close();
    this.server = undefined;
    this.next = setImmediate(() => { this.next = undefined; this.resume(); });
  }

  /**
   * Our own count fell (a connection of ours ended: TlsFront.onEased): stepped back and no longer
   * crowded, listen again now. With connections that end within a few ms (a new connection per
   * request), this, not the look every ms, ends most steps back.
   */
  eased(): void {
    if (this.stopped || this.server || this.next || this.wait === undefined || this.waitingSince === 0 || this.crowded()) return;
    clearTimeout(this.wait);
    this.wait = undefined;
    this.waitingSince = 0;
    this.start();
  }

  /** Listen again, unless we are crowded: then look again in a ms (or sooner: eased), for CROWDED_WAIT_MS at most. */
  private resume(): void {
    if (this.stopped) return;
    const now = Date.now();
    if (!this.ignoring(now) && this.crowded()) {
      if (this.waitingSince === 0) { this.waitingSince = now; this.peersAt = this.peers(); }
      const waited = now - this.waitingSince;
      const moved = this.peers() !== this.peersAt;
      // the peers did not take their share within CROWDED_WAIT_MS. Busy (their counts moved: they
      // accept or finish, only slowly, as at a burst of costly handshakes): take one, and wait
      // again. Nothing moved for STUCK_MS (a hung or stopped peer; a descheduled one moves within
      // that): accept without looking for CROWDED_IGNORE_MS.
      if (waited < CROWDED_WAIT_MS || (!moved && waited < STUCK_MS)) {
        this.wait = setTimeout(() => { this.wait = undefined; this.resume(); }, 1);
        return;
      }
      this.waits++;
      if (!moved) this.ignoreUntil = now + CROWDED_IGNORE_MS;
    }
    this.waitingSince = 0;
    this.start();
  }
  private wait?: NodeJS.Timeout;
  /** Times the peers did not take their share within CROWDED_WAIT_MS. */
  waits = 0;

  /** No more accepting here (the caller closes the listener's own fd after). */
  stop(): void {
    this.stopped = true;
    if (this.next) clearImmediate(this.next);
    clearTimeout(this.wait);
    this.server?.close();
    this.server = undefined;
  }
}
