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
 * of a session (at a lame duck or a retirement): GOAWAY with the last stream it will serve, then a
 * PING whose answer proves the client read it; then close(): the streams in flight finish, the
 * client's streams after the GOAWAY are refused (REFUSED_STREAM, which clients retry), and the
 * session ends when its last stream does. A session that has not opened a stream yet (its
 * handshake just ended) is given the idle grace for its first one, as an idle keep-alive
 * connection is. A lame duck asks the sessions open at its start to go (their clients come back on
 * new connections, which serve until the retirement); retiring, every session goes, those whose
 * handshake ends after it too, once their first stream is in.
 */
import tls from 'node:tls';
import http2 from 'node:http2';
import type * as Http from 'node:http';
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { TlsWire } from '../shared/ipc.js';
import type { Others } from './connections.js';
import { FORCED_HEADER } from './connections.js';

export type H2Listener = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void;

/** Per protocol: open connections (sessions for h2) and requests since the start. */
export type ProtocolCounts = { connections: number; requests: number };

export type TlsFrontOptions = {
  wire: TlsWire;
  /** The worker's http.Server: HTTP/1.1 over TLS goes there. */
  h1: Http.Server;
  /** HTTP/2: our handler for its requests, or the app's own HTTP/2 server; undefined = HTTP/1.1 only. */
  h2?: { listener: H2Listener } | { server: http2.Http2SecureServer; allowHTTP1: boolean };
  /** The app's own TLS server (adopted): its options serve the listeners without TLS of their own. */
  appTls?: tls.Server;
  handshakeTimeoutMs: number;
  /** An HTTP/2 session with no frame for this long gets the graceful close (GOAWAY; its streams go on); 0 = never. */
  sessionIdleMs: number;
  /** A handshake or a session ended: Connections checks whether the worker is empty. */
  onChange: () => void;
  /** --metrics: an HTTP/2 response finished (its stream closed without a reset, headers sent): its status and ms since its request's headers. */
  countResponse?: (status: number, ms: number) => void;
};

/** The options an adopted TLS server was made with, as tls.Server#setSecureContext keeps them on the server. */
const COPIED = ['key', 'cert', 'ca', 'pfx', 'passphrase', 'minVersion', 'maxVersion', 'secureProtocol', 'crl', 'sigalgs', 'ciphers', 'ecdhCurve', 'dhparam', 'honorCipherOrder', 'secureOptions', 'sessionIdContext', 'requestCert', 'rejectUnauthorized'] as const;

function optionsOf(server: tls.Server): tls.TlsOptions {
  const src = server as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of COPIED) if (src[k] !== undefined) out[k] = src[k];
  return out as tls.TlsOptions;
}

export class TlsFront implements Others {
  private readonly fronts = new Map<number | 'app', tls.Server>();
  private readonly h2server?: http2.Http2SecureServer;
  private handshakes = 0;
  private readonly sessions = new Map<http2.ServerHttp2Session, { streams: Set<http2.ServerHttp2Stream>; seen: number; shut: boolean; timer?: NodeJS.Timeout }>();
  private streams = 0;
  /** Lame duck: the sessions open at its start were asked to go; retiring: every session, new ones included. */
  private winding: 'no' | 'lame' | 'retiring' = 'no';
  private graceMs = 1000;
  readonly tlsH1: ProtocolCounts = { connections: 0, requests: 0 };
  readonly h2: ProtocolCounts = { connections: 0, requests: 0 };

  constructor(private readonly o: TlsFrontOptions) {
    const h2 = o.h2;
    if (h2 && 'listener' in h2) {
      this.h2server = http2.createSecureServer({ allowHTTP1: false });
      this.h2server.on('request', h2.listener);
    } else if (h2) {
      this.h2server = h2.server;
    }
    this.h2server?.on('session', (s: http2.ServerHttp2Session) => this.session(s));
    this.h2server?.on('stream', (stream: http2.ServerHttp2Stream) => this.stream(stream));
  }

  /** Whether HTTP/2 is offered. */
  get http2(): boolean { return this.h2server !== undefined; }

  /** The front serving context `ctx` of the generation's material, or the app's own TLS when undefined. */
  front(ctx: number | undefined): tls.Server {
    const key = ctx ?? 'app';
    let f = this.fronts.get(key);
    if (f) return f;
    const own = ctx === undefined ? undefined : this.o.wire.contexts[ctx];
    const base: tls.TlsOptions = own
      ? { cert: own.cert, key: own.key, ...(own.ca ? { ca: own.ca, requestCert: true, rejectUnauthorized: true } : {}) }
      : this.o.appTls ? optionsOf(this.o.appTls) : {};
    const h2 = this.o.h2;
    const onlyH2 = h2 !== undefined && 'server' in h2 && !h2.allowHTTP1;
    f = tls.createServer({
      minVersion: 'TLSv1.2',
      ...base,
      ticketKeys: Buffer.from(this.o.wire.ticketKeys, 'base64'),
      ALPNProtocols: onlyH2 ? ['h2'] : this.h2server ? ['h2', 'http/1.1'] : ['http/1.1'],
      handshakeTimeout: this.o.handshakeTimeoutMs,
    });
    f.on('connection', () => { this.handshakes++; });
    f.on('secureConnection', (s: tls.TLSSocket) => this.secured(s));
    f.on('tlsClientError', () => { this.handshakes--; this.o.onChange(); });
    this.fronts.set(key, f);
    return f;
  }

  private secured(s: tls.TLSSocket): void {
    // hand it on first, then stop counting its handshake: the worker is never seen empty between
    if (s.alpnProtocol === 'h2' && this.h2server) this.h2server.emit('secureConnection', s);
    else {
      this.tlsH1.connections++;
      s.once('close', () => { this.tlsH1.connections--; });
      this.o.h1.emit('connection', s);
    }
    this.handshakes--;
    this.o.onChange();
  }

  private session(s: http2.ServerHttp2Session): void {
    const rec = { streams: new Set<http2.ServerHttp2Stream>(), seen: 0, shut: false, timer: undefined as NodeJS.Timeout | undefined };
    this.sessions.set(s, rec);
    this.h2.connections++;
    s.on('error', () => { /* a client gone mid-session: its streams are closed with it */ });
    // the keep-alive timeout of HTTP/2: an idle session is let go of the graceful way
    if (this.o.sessionIdleMs > 0) s.setTimeout(this.o.sessionIdleMs, () => this.shut(s));
    s.once('close', () => {
      clearTimeout(rec.timer);
      this.sessions.delete(s);
      this.h2.connections--;
      this.o.onChange();
    });
    if (this.winding === 'retiring') this.windSession(s);
  }

  private stream(stream: http2.ServerHttp2Stream): void {
    const rec = this.sessions.get(stream.session as http2.ServerHttp2Session);
    this.streams++;
    this.h2.requests++;
    rec?.streams.add(stream);
    if (rec) rec.seen++;
    const count = this.o.countResponse;
    const at = count ? performance.now() : 0;
    stream.once('close', () => {
      this.streams--;
      rec?.streams.delete(stream);
      // a complete response (a reset one, or one never answered, is not counted: as HTTP/1's 'finish')
      if (count && stream.rstCode === http2.constants.NGHTTP2_NO_ERROR && stream.headersSent) count(Number(stream.sentHeaders[':status']), performance.now() - at);
    });
    // winding: the session's first stream is served, and GOAWAY names it the last one
    if (rec && this.winding === 'retiring' && !rec.shut) setImmediate(() => this.shut(stream.session as http2.ServerHttp2Session));
  }

  /** GOAWAY (the last stream id it processed), a PING round trip so the client has read it, then close(): streams in flight finish. */
  private shut(s: http2.ServerHttp2Session): void {
    const rec = this.sessions.get(s);
    if (!rec || rec.shut || s.closed || s.destroyed) return;
    rec.shut = true;
    clearTimeout(rec.timer);
    s.goaway(http2.constants.NGHTTP2_NO_ERROR);
    let done = false;
    const close = (): void => { if (!done) { done = true; if (!s.closed && !s.destroyed) s.close(); } };
    const timer = setTimeout(close, 1000).unref();
    const pinged = s.ping(() => { clearTimeout(timer); close(); });
    if (!pinged) { clearTimeout(timer); close(); }
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
  get inflight(): number { return this.streams; }

  wind(idleGraceMs: number, retiring: boolean): void {
    this.graceMs = idleGraceMs;
    if (this.winding === 'retiring' || (this.winding === 'lame' && !retiring)) return;
    this.winding = retiring ? 'retiring' : 'lame';
    for (const s of this.sessions.keys()) this.windSession(s);
  }

  /** Graceful timeout: streams not answered yet get the forced 503, streaming ones are cancelled; each counts. Handshakes still running count too (the exit ends them). */
  force(): number {
    let n = this.handshakes;
    for (const [s, rec] of this.sessions) {
      for (const stream of rec.streams) {
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
    for (const f of this.fronts.values()) if (f.listening) (f as net.Server).close();
  }
}
