/**
 * Adoption: an app module that calls listen() itself (app.listen(3000), http.createServer(app)
 * .listen(port), fastify.listen(), serve() from @hono/node-server...) must not bind anything in a
 * worker: the master owns the sockets. While the module loads, net.Server.prototype.listen is
 * replaced by a stand-in that records the server and pretends it bound: the callback runs and
 * 'listening' is emitted on the next tick, `listening` is true and `address()` answers the port
 * that was asked for. The worker then feeds that server's 'request' (and 'upgrade') listeners.
 *
 * A listen() on an existing handle or file descriptor (`{ handle }`, `{ fd }`, a handle object)
 * is passed through untouched: that is how a worker core would use a handle from its master.
 */
import net from 'node:net';
import { createRequire } from 'node:module';
import type * as Http from 'node:http';
import type * as Tls from 'node:tls';
import type * as Https from 'node:https';
import { http } from '../shared/node-http.js';

const require = createRequire(import.meta.url);

/**
 * node:tls and node:https, for a server that is a TLS one (it has tls.Server's setSecureContext):
 * the app that made it loaded them already. A worker serving plain HTTP never loads them (with
 * node:crypto under them they cost ~1-2% of a new connection's CPU: docs/STATUS.md).
 */
function tlsModules(server: net.Server): { tls: typeof Tls; https: typeof Https } | undefined {
  if (typeof (server as { setSecureContext?: unknown }).setSecureContext !== 'function') return undefined;
  return { tls: require('node:tls') as typeof Tls, https: require('node:https') as typeof Https };
}

export type ListenCall = {
  server: net.Server;
  /** The port asked for (0 when none), or the pipe path. */
  endpoint: number | string;
  host: string | undefined;
};

type ListenFn = (this: net.Server, ...args: unknown[]) => net.Server;

const fakeState = new WeakMap<net.Server, { listening: boolean; endpoint: number | string; host: string | undefined }>();

/** Whether a server was adopted (listen() was intercepted for it). */
export function isAdopted(server: net.Server): boolean {
  return fakeState.has(server);
}

export function isHttpServer(server: net.Server): server is Http.Server {
  if (server instanceof http.Server) return true;
  const m = tlsModules(server);
  return m !== undefined && (server instanceof m.https.Server || isHttp2Secure(server, m.tls));
}

/** An http2.createSecureServer() (told by its class: node:http2 is not loaded to ask). */
function isHttp2Secure(server: net.Server, tls: typeof Tls): boolean {
  return server instanceof tls.Server && server.constructor.name === 'Http2SecureServer';
}

/**
 * The TLS an adopted server asked for: an https.Server, or an HTTP/2 secure server (whose
 * `allowHTTP1` is read from the options Node keeps on it under a symbol; undocumented, Node 20-24).
 */
export function ownTls(server: net.Server): { server: net.Server; h2: boolean; allowHTTP1: boolean } | undefined {
  const m = tlsModules(server);
  if (!m || !(server instanceof m.tls.Server)) return undefined;
  if (!isHttp2Secure(server, m.tls)) return { server, h2: false, allowHTTP1: true };
  const sym = Object.getOwnPropertySymbols(server).find((x) => x.description === 'options');
  const options = sym ? (server as unknown as Record<symbol, { allowHTTP1?: boolean } | undefined>)[sym] : undefined;
  return { server, h2: true, allowHTTP1: options?.allowHTTP1 === true };
}

function isHandleLike(v: object): boolean {
  return '_handle' in v || 'fd' in v || 'handle' in v;
}

/** Reads listen()'s overloaded arguments like net.Server#listen does. `null` = pass through. */
export function parseListenArgs(args: unknown[]): { endpoint: number | string; host: string | undefined; cb: (() => void) | undefined } | null {
  const last = args[args.length - 1];
  const cb = typeof last === 'function' ? (last as () => void) : undefined;
  const a0 = args[0];
  if (typeof a0 === 'object' && a0 !== null) {
    if (isHandleLike(a0)) return null;
    const o = a0 as { port?: unknown; host?: unknown; path?: unknown };
    if (typeof o.path === 'string' && o.port === undefined) return { endpoint: o.path, host: undefined, cb };
    return { endpoint: toPort(o.port), host: typeof o.host === 'string' ? o.host : undefined, cb };
  }
  if (typeof a0 === 'string' && !/^\s*\d+\s*$/.test(a0)) return { endpoint: a0, host: undefined, cb };
  const host = typeof args[1] === 'string' ? args[1] : undefined;
  return { endpoint: toPort(a0), host, cb };
}

function toPort(v: unknown): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : 0;
  return Number.isInteger(n) && n >= 0 && n < 65536 ? n : 0;
}

function fakeAddress(endpoint: number | string, host: string | undefined): net.AddressInfo | string {
  if (typeof endpoint === 'string') return endpoint;
  if (host === undefined || host === '' || host === '::') return { address: '::', family: 'IPv6', port: endpoint };
  if (host === 'localhost') return { address: '127.0.0.1', family: 'IPv4', port: endpoint };
  return { address: host, family: net.isIPv6(host) ? 'IPv6' : 'IPv4', port: endpoint };
}

/**
 * Makes `server` look bound without binding. Installs own-property stand-ins for `listen`
 * (a later listen() on this very server stays fake, even after the prototype was restored),
 * `listening`, `address` and `close` (close() then succeeds instead of ERR_SERVER_NOT_RUNNING).
 */
export function fakeListen(server: net.Server, endpoint: number | string, host: string | undefined, cb?: () => void): net.Server {
  const state = fakeState.get(server);
  if (state?.listening) {
    // like Node: a second listen() on a listening server is an error
    const err = Object.assign(new Error('Listen method has been called more than once without closing.'), { code: 'ERR_SERVER_ALREADY_LISTEN' });
    throw err;
  }
  if (state) {
    state.listening = true;
    state.endpoint = endpoint;
    state.host = host;
  } else {
    const s = { listening: true, endpoint, host };
    fakeState.set(server, s);
    const origClose = server.close;
    Object.defineProperties(server, {
      listening: { configurable: true, enumerable: true, get: () => s.listening },
      address: { configurable: true, writable: true, value: () => (s.listening ? fakeAddress(s.endpoint, s.host) : null) },
      listen: {
        configurable: true,
        writable: true,
        value: function (this: net.Server, ...args: unknown[]) {
          const parsed = parseListenArgs(args);
          return fakeListen(this, parsed?.endpoint ?? 0, parsed?.host, parsed?.cb);
        },
      },
      close: {
        configurable: true,
        writable: true,
        value: function (this: net.Server, closeCb?: (err?: Error) => void) {
          s.listening = false;
          // the real close() stops http.Server's connection-checking timer and emits 'close'
          // (no handle: on the next tick); only its callback would get ERR_SERVER_NOT_RUNNING
          origClose.call(this);
          if (typeof closeCb === 'function') this.once('close', () => closeCb());
          return this;
        },
      },
    });
  }
  if (cb) server.once('listening', cb);
  process.nextTick(() => server.emit('listening'));
  return server;
}

/**
 * Replaces net.Server.prototype.listen until `restore()`. Records every intercepted call.
 * Not reentrant: the caller serializes captures.
 */
export class ListenCapture {
  readonly calls: ListenCall[] = [];
  lastCallAt = 0;
  private readonly original: ListenFn;
  private waiter: (() => void) | null = null;
  private active = false;

  constructor() {
    this.original = net.Server.prototype.listen as unknown as ListenFn;
  }

  install(): void {
    if (this.active) return;
    this.active = true;
    const capture = this;
    const original = this.original;
    const stand = function (this: net.Server, ...args: unknown[]): net.Server {
      const parsed = parseListenArgs(args);
      if (parsed === null) return original.apply(this, args);
      capture.calls.push({ server: this, endpoint: parsed.endpoint, host: parsed.host });
      capture.lastCallAt = Date.now();
      const w = capture.waiter;
      capture.waiter = null;
      w?.();
      return fakeListen(this, parsed.endpoint, parsed.host, parsed.cb);
    };
    net.Server.prototype.listen = stand as unknown as typeof net.Server.prototype.listen;
  }

  restore(): void {
    if (!this.active) return;
    this.active = false;
    net.Server.prototype.listen = this.original as unknown as typeof net.Server.prototype.listen;
  }

  /** Resolves at the next intercepted listen() or after `ms`. */
  nextCall(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        resolve();
      }, ms);
      this.waiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

/** A few turns of the event loop (macrotasks), so that code after the module's top level runs. */
export async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
}

/**
 * After the import: if nothing listened yet and `waitForFirst`, wait up to `firstMs` for a first
 * listen(); once something listened, wait until no new listen() came for `quietMs` (Fastify binds
 * a second server for 'localhost' after a DNS lookup), never longer than `maxMs` in all.
 */
export async function settle(capture: ListenCapture, o: { waitForFirst: boolean; firstMs: number; quietMs: number; maxMs: number }): Promise<void> {
  const start = Date.now();
  await turns(3);
  if (capture.calls.length === 0) {
    if (!o.waitForFirst) return;
    await capture.nextCall(o.firstMs);
    if (capture.calls.length === 0) return;
  }
  for (;;) {
    const left = o.maxMs - (Date.now() - start);
    const quietLeft = o.quietMs - (Date.now() - capture.lastCallAt);
    if (left <= 0 || quietLeft <= 0) return;
    await capture.nextCall(Math.min(left, quietLeft));
  }
}

/** Which endpoints a set of calls covers, for messages: "port 3000 and port 3001". */
export function describeEndpoints(calls: ListenCall[]): string {
  const seen = [...new Set(calls.map((c) => (typeof c.endpoint === 'number' ? `port ${c.endpoint}` : `pipe ${c.endpoint}`)))];
  return seen.join(' and ');
}
