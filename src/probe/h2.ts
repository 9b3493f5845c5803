// HTTP/2 load (--http2: over TLS with an https:// target, in the clear with prior knowledge, h2c, with HOST:PORT): sessions carrying concurrent streams, each stream
// classified as a request is. A stream the server refused (REFUSED_STREAM: sent after its GOAWAY)
// or one the session could no longer open (GOAWAY received) is refused; a stream reset, or its
// session gone, before its response was complete is cut (H2_RESET).
import http2 from 'node:http2';
import { connect as tlsConnect } from 'node:tls';
import { createConnection, type Socket } from 'node:net';
import { tlsOptions, type Exchange, type SocketGauge } from './connection.js';
import type { LoadContext } from './load.js';
import type { Target } from './types.js';

const { NGHTTP2_REFUSED_STREAM, NGHTTP2_CANCEL } = http2.constants;
const BACKOFF_MIN_MS = 10;
const BACKOFF_MAX_MS = 200;

/** One session and what the classification needs of it. */
class Session {
  readonly s: http2.ClientHttp2Session;
  /** The TCP handshake completed (a failure after it is a cut, before it a refusal). */
  established = false;
  error?: string;
  streams = 0;
  constructor(target: Extract<Target, { kind: 'tcp' }>, gauge: SocketGauge) {
    const scheme = target.tls ? 'https' : 'http';
    const authority = target.family === 6 ? `${scheme}://[${target.host}]:${target.port}` : `${scheme}://${target.host}:${target.port}`;
    gauge.open++;
    this.s = http2.connect(authority, {
      createConnection: () => {
        const sock = target.tls ? tlsConnect(tlsOptions(target, 'h2')) : createConnection({ host: target.host, port: target.port, family: target.family, noDelay: true });
        sock.once('connect', () => { this.established = true; });
        return sock as unknown as Socket;
      },
    });
    this.s.on('error', (err: NodeJS.ErrnoException) => { this.error ??= err.code ?? 'ERROR'; });
    this.s.once('close', () => { gauge.open--; });
  }
  get usable(): boolean { return !this.s.closed && !this.s.destroyed; }
}

function stream(sess: Session, path: string, timeoutMs: number): Promise<Exchange> {
  return new Promise((resolve) => {
    let req: http2.ClientHttp2Stream;
    try {
      req = sess.s.request({ ':method': 'GET', ':path': path, 'user-agent': 'quiesce-probe' });
    } catch {
      // the session had its GOAWAY already: nothing was sent
      resolve({ type: 'failed', code: 'GOAWAY', bytes: 0, established: false });
      return;
    }
    sess.streams++;
    let done = false;
    let bytes = 0;
    let status = 0;
    let errCode: string | undefined;
    const headers = new Map<string, string>();
    const finish = (e: Exchange): void => { if (!done) { done = true; clearTimeout(timer); resolve(e); } };
    const timer = setTimeout(() => { finish({ type: 'timeout', bytes, established: sess.established }); req.close(NGHTTP2_CANCEL); }, timeoutMs);
    req.on('response', (h) => {
      status = Number(h[':status']);
      for (const [k, v] of Object.entries(h)) if (!k.startsWith(':') && v !== undefined) headers.set(k, Array.isArray(v) ? v.join(', ') : String(v));
    });
    req.on('data', (c: Buffer) => { bytes += c.length; });
    req.on('end', () => {
      if (status > 0) finish({ type: 'response', response: { status, version: '1.1', headers, bodyBytes: bytes, reusable: true }, bytes, reusable: true });
    });
    // a stream waiting for its session's connect is cancelled when the connect fails: the cause says why
    req.on('error', (err: NodeJS.ErrnoException) => { errCode ??= (err.cause as NodeJS.ErrnoException | undefined)?.code ?? err.code; });
    req.on('close', () => {
      if (req.rstCode === NGHTTP2_REFUSED_STREAM) return finish({ type: 'failed', code: 'REFUSED_STREAM', bytes, established: false });
      if (errCode === 'ERR_HTTP2_GOAWAY_SESSION') return finish({ type: 'failed', code: 'GOAWAY', bytes, established: false });
      if (!sess.established) return finish({ type: 'failed', code: errCode ?? sess.error ?? 'ECONNREFUSED', bytes, established: false });
      finish({ type: 'failed', code: 'H2_RESET', bytes, established: true });
    });
    req.end();
  });
}

/** One HTTP/2 client: a session with `streams` concurrent streams back to back, a new session whenever it ends. */
export async function h2Client(ctx: LoadContext, streams: number, gauge: SocketGauge): Promise<void> {
  if (ctx.target.kind !== 'tcp') return;
  const target = ctx.target;
  let sess: Session | null = null;
  const current = (): Session => {
    if (sess === null || !sess.usable) sess = new Session(target, gauge);
    return sess;
  };
  const loop = async (): Promise<void> => {
    let backoff = 0;
    while (!ctx.stop.aborted && ctx.takeBudget()) {
      const s = current();
      const reused = s.streams > 0;
      const start = ctx.clock.now();
      const e = await stream(s, ctx.path, ctx.timeoutMs);
      const c = ctx.record(e, 'keepalive', start, reused);
      if (c.kind === 'refused' && e.type === 'failed' && !s.established) {
        backoff = Math.min(Math.max(BACKOFF_MIN_MS, backoff * 2), BACKOFF_MAX_MS);
        await ctx.clock.sleepUntil(ctx.clock.now() + backoff, ctx.stop);
      } else {
        backoff = 0;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: streams }, loop));
  } finally {
    (sess as Session | null)?.s.destroy();
  }
}

/** --rate over HTTP/2: a new session (a full TLS handshake) per request. */
export async function h2OneShot(ctx: LoadContext, gauge: SocketGauge): Promise<void> {
  if (ctx.target.kind !== 'tcp') return;
  const start = ctx.clock.now();
  const s = new Session(ctx.target, gauge);
  const e = await stream(s, ctx.path, ctx.timeoutMs);
  s.s.close();
  ctx.record(e, 'rate', start, false);
}
