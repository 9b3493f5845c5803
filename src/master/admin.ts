/**
 * The admin listener, served by the master itself (never app traffic): /live, /ready, and the
 * routes other modules add (the index `/`, server-status, metrics). Bound off loopback, every route
 * but /live, /ready and the index requires the admin token.
 */
import type * as Http from 'node:http';
import { http } from '../shared/node-http.js';
import { createHash, timingSafeEqual } from 'node:crypto';
import { QuiesceError } from '../shared/errors.js';
import { parseListen } from './listeners.js';
import { CLIENT_IDLE_MS } from './control.js';

/** The default --admin: ADMIN_AUTO_FIRST, or a free loopback port when that is taken. */
export const ADMIN_AUTO = 'auto';
export const ADMIN_AUTO_FIRST = '127.0.0.1:8081';

/** Answered off loopback without the token: the probes, and the index (it shows nothing but the pages' names). */
const OPEN_ROUTES = new Set(['/live', '/ready', '/']);
/**
 * What one client may hold of the master (issue 14: 100 idle connections under `ulimit -n 80` took
 * the fds the next fork needed): connections past ADMIN_MAX_CONNECTIONS are closed at accept, and
 * a connection is let go after ADMIN_IDLE_MS without a complete request or between requests.
 */
export const ADMIN_MAX_CONNECTIONS = 64;
export const ADMIN_IDLE_MS = CLIENT_IDLE_MS;

export type AdminRoute = (req: Http.IncomingMessage, res: Http.ServerResponse, url: URL) => void | Promise<void>;

/** Admin pages that show requests (their paths): behind the token on loopback too, once one is set. */
const SHOWS_REQUESTS = new Set(['/server-status']);

/** A comparison that takes as long whatever the first differing byte (the token is a secret). */
function sameSecret(got: string, want: string): boolean {
  const a = createHash('sha256').update(got).digest();
  const b = createHash('sha256').update(want).digest();
  return timingSafeEqual(a, b);
}

export class AdminServer {
  readonly routes = new Map<string, AdminRoute>();
  private server?: Http.Server;
  address = '';

  constructor(private readonly isReady: () => boolean, private readonly token: () => string) {
    this.routes.set('/live', (_req, res) => text(res, 200, 'ok\n'));
    this.routes.set('/ready', (_req, res) => {
      const ok = this.isReady();
      text(res, ok ? 200 : 503, ok ? 'ready\n' : 'not ready\n');
    });
  }

  /**
   * `auto` (the default): 127.0.0.1:8081, or a free port on 127.0.0.1 when another instance has it
   * (two instances on one machine both start; each prints where its admin listener is). An
   * address given with --admin that is taken stays an error.
   */
  async listenAuto(spec: string): Promise<void> {
    if (spec !== ADMIN_AUTO) return this.listen(spec);
    try {
      await this.listen(ADMIN_AUTO_FIRST);
    } catch (err) {
      if (!(err instanceof QuiesceError && err.code === 'LISTEN_FAILED' && /address in use/.test(err.message))) throw err;
      await this.listen('127.0.0.1:0');
    }
  }

  async listen(spec: string): Promise<void> {
    const l = parseListen(spec, process.cwd(), '--admin');
    await this.serve(spec, (server, done) => {
      if (l.kind === 'unix') server.listen(l.path, done);
      else server.listen({ host: l.host ?? undefined, port: l.port }, done);
    });
  }

  /** --admin-tls-cert/--admin-tls-key (master/tls.ts readAdminTls): the listener speaks HTTPS. Set before it listens. */
  tls?: { cert: string; key: string };

  /**
   * A reload's certificate and key, served from the next handshake on. Turning HTTPS on or off
   * would take a new listening socket: false then, and nothing changes.
   */
  renew(tls: { cert: string; key: string } | undefined): boolean {
    if ((tls === undefined) !== (this.tls === undefined)) return false;
    if (tls && this.server) (this.server as unknown as { setSecureContext(o: object): void }).setSecureContext({ ...tls, minVersion: 'TLSv1.2' }); // an https.Server: tls.Server's method
    this.tls = tls;
    return true;
  }

  /** The scheme the admin listener speaks. */
  get scheme(): 'http' | 'https' { return this.tls ? 'https' : 'http'; }

  private async serve(spec: string, listen: (server: Http.Server, done: () => void) => void): Promise<void> {
    const handler = (req: Http.IncomingMessage, res: Http.ServerResponse): void => void this.handle(req, res);
    // (an https.Server is an http.Server to everything below: the same options, routes and limits)
    const server: Http.Server = this.tls ? (await import('node:https')).createServer({ ...this.tls, minVersion: 'TLSv1.2' }, handler) : http.createServer(handler);
    server.keepAliveTimeout = 2_000;
    server.maxConnections = ADMIN_MAX_CONNECTIONS;
    server.headersTimeout = ADMIN_IDLE_MS;
    server.requestTimeout = ADMIN_IDLE_MS;
    server.setTimeout(ADMIN_IDLE_MS, (socket) => socket.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(new QuiesceError('LISTEN_FAILED', `--admin ${spec}: ${err.code === 'EADDRINUSE' ? 'address in use' : err.message}`)));
      listen(server, resolve);
    });
    const a = server.address();
    this.address = typeof a === 'string' ? `unix:${a}` : a ? (a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`) : spec;
    this.isLoopback = typeof a === 'string' || (a !== null && (/^(?:::ffff:)?127\./.test(a.address) || a.address === '::1'));
    // after listening, an accept that fails (EMFILE: libuv then accepts and closes to shed the
    // client) is not the master's end
    server.on('error', () => { /* accept errors: the client was shed */ });
    this.server = server;
  }

  /** The listening socket's fd (handed to a new master at an upgrade), if listening. */
  fd(): number | undefined {
    const h = (this.server as unknown as { _handle?: { fd?: number } } | undefined)?._handle; // Node's own handle: where the fd is
    return typeof h?.fd === 'number' && h.fd >= 0 ? h.fd : undefined;
  }

  /** Serve on a listening socket handed over by the previous master (an upgrade). */
  async listenFd(fd: number): Promise<void> {
    await this.serve(`fd ${fd}`, (server, done) => server.listen({ fd }, done));
  }

  /** Bound to loopback or a unix socket: no token is asked. */
  isLoopback = true;

  private async handle(req: Http.IncomingMessage, res: Http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const route = this.routes.get(url.pathname);
    if (!route) return text(res, 404, 'not found\n');
    const want = this.token();
    // off loopback every page but /live, /ready and the index needs the token; on loopback, once a
    // token is set, the pages that show requests (/server-status) need it too
    if (!OPEN_ROUTES.has(url.pathname) && (!this.isLoopback || (want !== '' && SHOWS_REQUESTS.has(url.pathname)))) {
      const got = (req.headers.authorization ?? '').replace(/^Bearer\s+/i, '') || url.searchParams.get('token') || '';
      if (!want || !sameSecret(got, want)) return text(res, 401, want ? 'admin token required\n' : 'admin pages are off: set --admin-token-file (or --admin-token) to reach them off loopback\n');
    }
    try {
      await route(req, res, url);
    } catch (err) {
      if (!res.headersSent) text(res, 500, `error: ${(err as Error).message}\n`);
      else res.destroy();
    }
  }

  close(): Promise<void> {
    const s = this.server;
    if (!s) return Promise.resolve();
    s.closeAllConnections();
    return new Promise((r) => s.close(() => r()));
  }
}

export function text(res: Http.ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
