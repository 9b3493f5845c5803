/**
 * Loading an app module (AppSpec kind 'module') and turning its exports into a LoadedApp.
 *
 * What the default export may be, checked in this order:
 * 1. a Fastify instance (has ready(), routing() and .server): loading awaits ready() (so that
 *    'upgrade' listeners its plugins add are known), requests go to fastify.routing(); onStop
 *    calls fastify.close() (its onClose hooks run). Its own server never binds.
 * 2. a Koa instance (an object with callback() and use()): its callback() is the listener.
 * 3. an object with a fetch(request) method (a Hono app, `{ fetch }`): fetch handler (served by
 *    ./fetch-bridge.js, which makes the worker's global Response a lightweight one, as
 *    @hono/node-server does).
 * 4. an http.Server (e.g. `export default http.createServer(app)`): its 'request' listeners serve.
 * 5. a function: a Node listener `(req, res)` when it declares 2+ parameters (Express apps do),
 *    a fetch handler `(request) => Response` when it declares exactly 1. Override with a named
 *    export `export const kind = 'fetch' | 'listener'` (needed for 0 declared parameters, e.g.
 *    `(...args) => ...`).
 * Without a default export, a named `fetch` function is a fetch handler.
 * Otherwise, if the module called listen() on exactly one HTTP server (possibly several times
 * on the same port, as Fastify does for 'localhost'), that server is adopted.
 * Named exports `init`, `onDrain`, `onStop`, `attach` are surfaced as such; a plain-object default
 * export (`defineApp({ fetch, init })`) may carry them as methods (a named export wins).
 */
import { fetchBridgeModule } from './own-modules.js';
import type * as Http from 'node:http';
import { http } from '../shared/node-http.js';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { spawnSync } from 'node:child_process';
import { AppError, type LoadedApp, type LoadOptions, type UpgradeListener } from './app-types.js';
import { guardListener, guardUpgrade, refuseResponse, type ErrorSink } from './app-guard.js';
import { ListenCapture, settle, isHttpServer, ownTls, describeEndpoints, fakeListen, isAdopted, parseListenArgs, type ListenCall } from './app-adopt.js';
import type { FetchHandler } from './fetch-bridge.js';

const WHAT_TO_EXPORT =
  'export default a request listener `(req, res) => {}` (an Express app, `koa.callback()`), ' +
  'a fetch handler (`{ fetch(request) }`, a Hono app), a Fastify instance or an http.Server, ' +
  'or call listen() on a single HTTP server';

type Hooks = Pick<LoadedApp, 'init' | 'onDrain' | 'onStop' | 'attach'>;
type Namespace = Record<string, unknown>;

/** The duck type of a Fastify instance (fastify v4/v5). */
type FastifyLike = {
  ready(): PromiseLike<unknown>;
  routing(req: Http.IncomingMessage, res: Http.ServerResponse): void;
  server: Http.Server;
  close(): PromiseLike<unknown>;
};

export function isFastify(x: unknown): x is FastifyLike {
  if (typeof x !== 'object' && typeof x !== 'function') return false;
  if (x === null) return false;
  const f = x as Partial<FastifyLike>;
  return typeof f.ready === 'function' && typeof f.routing === 'function' && typeof f.server === 'object' && f.server !== null;
}

function isKoa(x: unknown): x is { callback(): (req: Http.IncomingMessage, res: Http.ServerResponse) => unknown } {
  if (typeof x !== 'object' || x === null) return false;
  const k = x as { callback?: unknown; use?: unknown };
  return typeof k.callback === 'function' && typeof k.use === 'function';
}

function hasFetch(x: unknown): x is { fetch: FetchHandler } {
  return (typeof x === 'object' || typeof x === 'function') && x !== null && typeof (x as { fetch?: unknown }).fetch === 'function';
}

// Module loads patch a process-wide prototype: one at a time.
let queue: Promise<unknown> = Promise.resolve();

export function loadModuleApp(path: string, opts: LoadOptions): Promise<LoadedApp> {
  const run = queue.then(() => loadSerial(path, opts));
  queue = run.catch(() => {});
  return run;
}

async function loadSerial(path: string, opts: LoadOptions): Promise<LoadedApp> {
  const capture = new ListenCapture();
  let ns: Namespace;
  let handler: Handler | null;
  capture.install();
  try {
    try {
      ns = (await import(pathToFileURL(path).href)) as Namespace;
    } catch (err) {
      throw loadFailed(path, err);
    }
    handler = findHandler(ns, path);
    const usable = handler !== null && handler.kind !== 'unusable';
    const firstMs = opts.adoptWaitMs ?? 2000;
    await settle(capture, { waitForFirst: !usable, firstMs, quietMs: 100, maxMs: Math.max(firstMs, 250) });
  } finally {
    capture.restore();
  }
  const hooks = namedHooks(ns, path);
  if (handler !== null && handler.kind !== 'unusable') {
    // Fastify is made ready here rather than in init(): its plugins (e.g. @fastify/websocket)
    // add 'upgrade' listeners while booting, and the worker reads `upgrade` right after loading.
    if (handler.kind === 'fastify') await fastifyReady(handler.app, path);
    const loaded = await build(handler, hooks, opts.onError);
    if (capture.calls.length > 0) {
      // The module exported an app and also listened (`server.listen(3000); export default app`):
      // the export serves requests; WebSocket upgrades go to the server it listened on, if that
      // server has 'upgrade' listeners (e.g. `new WebSocketServer({ server })`).
      const upgradeServer = singleHttpServer(capture.calls);
      const forward = !loaded.upgrade && upgradeServer !== null && upgradeServer.listenerCount('upgrade') > 0;
      if (forward) loaded.upgrade = upgradeVia(upgradeServer, opts.onError);
      process.emitWarning(
        `${path}: listen() on ${describeEndpoints(capture.calls)} was not bound: the module's default export serves requests` +
          (forward ? ', upgrades go to the server it listened on' : ''),
        { code: 'QUIESCE_LISTEN_IGNORED' },
      );
    }
    return loaded;
  }
  return adopt(capture.calls, hooks, path, opts.onError, handler?.kind === 'unusable' ? handler.why : undefined);
}

function loadFailed(path: string, err: unknown): AppError {
  const e = err as { message?: unknown; name?: unknown } | null;
  let msg = typeof e?.message === 'string' ? e.message : String(err);
  const where = e?.name === 'SyntaxError' ? syntaxErrorLocation(path) : thrownAt(err);
  if (where && !msg.includes(where)) msg = `${msg} (at ${where})`;
  let hint = '';
  if (/\.[mc]?ts$/.test(path)) hint = ' (compile TypeScript to JavaScript first, or run Node with type stripping)';
  return new AppError('APP_LOAD_FAILED', `could not load app ${path}: ${msg}${hint}`, { cause: err });
}

/** The file:line:column of the first frame of a thrown error's stack in a file (source-mapped if the app has maps). */
function thrownAt(err: unknown): string | null {
  const stack = err instanceof Error && typeof err.stack === 'string' ? err.stack : '';
  for (const line of stack.split('\n')) {
    const m = /^\s+at (?:.*\()?((?:file:\/\/|\/)[^()]+?:\d+:\d+)\)?$/.exec(line);
    if (!m) continue;
    const loc = m[1] as string;
    return loc.startsWith('file://') ? `${fileURLToPath(loc.replace(/:\d+:\d+$/, ''))}${/:\d+:\d+$/.exec(loc)?.[0]}` : loc;
  }
  return null;
}

/**
 * Node 20 gives an ES module's SyntaxError no file:line (only its uncaught-error printer shows
 * it): ask `node --check`, which prints "file:///…/app.mjs:4" first. Only on this failure path.
 */
function syntaxErrorLocation(path: string): string | null {
  try {
    const r = spawnSync(process.execPath, ['--check', path], { encoding: 'utf8', timeout: 5000 });
    const first = (r.stderr ?? '').split('\n')[0]?.trim() ?? '';
    if (!/:\d+$/.test(first)) return null;
    return first.startsWith('file://') ? `${fileURLToPath(first.replace(/:\d+$/, ''))}${/:\d+$/.exec(first)?.[0]}` : first;
  } catch {
    return null;
  }
}

type Handler =
  | { kind: 'unusable'; why: string }
  | { kind: 'fastify'; app: FastifyLike }
  /** `why`: how a function default export came to be taken as a listener (said when it returns a Response). */
  | { kind: 'listener'; fn: (req: Http.IncomingMessage, res: Http.ServerResponse) => unknown; why?: string; h1Only?: boolean }
  | { kind: 'fetch'; fn: FetchHandler }
  | { kind: 'server'; server: Http.Server };

/** What the module's exports offer; null when there is no default export (nor named fetch). */
function findHandler(ns: Namespace, path: string): Handler | null {
  const def = ns.default;
  const override = ns.kind;
  if (override !== undefined && override !== 'fetch' && override !== 'listener') {
    throw new AppError('APP_BAD_EXPORT', `${path}: \`export const kind\` must be 'fetch' or 'listener', not ${JSON.stringify(override)}`);
  }
  if (def === undefined || def === null) {
    if (typeof ns.fetch === 'function') return { kind: 'fetch', fn: ns.fetch as FetchHandler };
    return null;
  }
  if (isFastify(def)) return { kind: 'fastify', app: def };
  if (isKoa(def)) return { kind: 'listener', fn: def.callback(), h1Only: true };
  if (typeof def === 'function') {
    const fn = def as (...args: unknown[]) => unknown;
    const kind = override ?? (fn.length >= 2 ? 'listener' : fn.length === 1 ? 'fetch' : undefined);
    if (kind === 'listener') {
      const why = override ? "of `export const kind = 'listener'`" : `it declares ${fn.length} parameters`;
      return { kind: 'listener', fn, h1Only: isExpressLike(fn), why: `${path}: the default export returned a Response, but it is called as a Node listener (req, res) because ${why}; ` +
        "a fetch handler `(request, env) => Response` needs `export const kind = 'fetch'` (or declare only `(request)`)" };
    }
    if (kind === 'fetch') return { kind: 'fetch', fn: fn as FetchHandler };
    if (hasFetch(def)) return { kind: 'fetch', fn: def.fetch.bind(def) };
    return {
      kind: 'unusable',
      why:
        `${path}: the default export is a function declaring ${fn.length} parameters, so it is neither a request listener ` +
        "(req, res) nor a fetch handler (request); add `export const kind = 'listener'` or `export const kind = 'fetch'`",
    };
  }
  if (hasFetch(def)) return { kind: 'fetch', fn: def.fetch.bind(def) };
  if (def instanceof net.Server && isHttpServer(def)) return { kind: 'server', server: def };
  return { kind: 'unusable', why: `${path}: the default export (${describe(def)}) is not usable; ${WHAT_TO_EXPORT}` };
}

/** An Express (or Connect-like) app: a function with use/handle/set. Express 4 uses http1-only parts of Node's request and response. */
function isExpressLike(fn: object): boolean {
  const f = fn as { use?: unknown; handle?: unknown; set?: unknown };
  return typeof f.use === 'function' && typeof f.handle === 'function' && typeof f.set === 'function';
}

function describe(v: unknown): string {
  if (typeof v === 'object' && v !== null) return `an object of class ${v.constructor?.name ?? 'Object'}`;
  return `a ${typeof v}`;
}

/** A plain object (`{ fetch, init }`, what `defineApp()` returns), not a class instance such as a Hono or Koa app. */
function isPlainObject(x: unknown): x is Record<string, unknown> {
  if (typeof x !== 'object' || x === null) return false;
  const proto: unknown = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

/**
 * The hooks: named exports, else methods of a plain-object default export (`defineApp({ fetch, init })`),
 * called on that object. Only a plain object's: an Express app (a function) has an unrelated `init`.
 */
function namedHooks(ns: Namespace, path: string): Hooks {
  const hooks: Hooks = {};
  const def = isPlainObject(ns.default) ? ns.default : undefined;
  for (const name of ['init', 'onDrain', 'onStop', 'attach'] as const) {
    const named = ns[name];
    const v = named ?? def?.[name];
    if (v === undefined) continue;
    const what = named !== undefined ? `the export \`${name}\`` : `the default export's \`${name}\``;
    if (typeof v !== 'function') throw new AppError('APP_BAD_EXPORT', `${path}: ${what} must be a function, not ${describe(v)}`);
    // The contract types are what the docs ask of users; the values are unchecked user functions.
    (hooks as Record<string, unknown>)[name] = named !== undefined ? v : (v as (...a: unknown[]) => unknown).bind(def);
  }
  return hooks;
}

async function fastifyReady(app: FastifyLike, path: string): Promise<void> {
  try {
    await app.ready();
  } catch (err) {
    throw new AppError('APP_LOAD_FAILED', `could not load app ${path}: fastify.ready() failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }
}

/** Runs the user's hook, then the framework's, and rethrows the first error after both ran. */
function chain(first: (() => unknown) | undefined, second: (() => unknown) | undefined): (() => Promise<void>) | undefined {
  if (!first && !second) return undefined;
  return async () => {
    let error: unknown;
    let failed = false;
    for (const f of [first, second]) {
      if (!f) continue;
      try {
        await f();
      } catch (err) {
        if (!failed) error = err;
        failed = true;
      }
    }
    if (failed) throw error;
  };
}

function upgradeVia(server: net.Server, onError: ErrorSink): UpgradeListener {
  return guardUpgrade((req: Http.IncomingMessage, socket: Duplex, head: Buffer) => {
    if (server.listenerCount('upgrade') === 0) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    server.emit('upgrade', req, socket, head);
  }, onError);
}

/** Keeps an app's own server from ever binding, even if the app calls listen() on it later. */
function neverBind(server: net.Server): void {
  if (isAdopted(server)) return;
  Object.defineProperty(server, 'listen', {
    configurable: true,
    writable: true,
    value: function (this: net.Server, ...args: unknown[]) {
      const parsed = parseListenArgs(args);
      return fakeListen(this, parsed?.endpoint ?? 0, parsed?.host, parsed?.cb);
    },
  });
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
}

async function build(h: Exclude<Handler, { kind: 'unusable' }>, hooks: Hooks, onError: ErrorSink): Promise<LoadedApp> {
  switch (h.kind) {
    case 'listener':
      return { kind: 'listener', listener: guardListener(h.why ? refuseResponse(h.fn, h.why, onError) : h.fn, onError), http2: h.h1Only !== true, ...hooks };
    case 'fetch': {
      // the fetch bridge (and the undici Response it loads) only in a worker that serves a fetch app
      const { fetchListener } = await fetchBridgeModule();
      return { kind: 'fetch', listener: fetchListener(h.fn, onError), http2: true, ...hooks };
    }
    case 'server': {
      neverBind(h.server);
      return serverApp('adopted', h.server, hooks, onError);
    }
    case 'fastify': {
      const app = h.app;
      neverBind(app.server);
      const loaded: LoadedApp = {
        kind: 'fastify',
        listener: guardListener((req, res) => app.routing(req, res), onError),
        ...hooks,
        init: async () => {
          await app.ready(); // already ready (see loadSerial): resolves at once
          await hooks.init?.();
        },
        onStop: chain(hooks.onStop, () => app.close()),
      };
      if (app.server.listenerCount('upgrade') > 0) loaded.upgrade = upgradeVia(app.server, onError);
      return loaded;
    }
  }
}

/** Serves through a server's own 'request' (and 'upgrade') listeners. */
function serverApp(kind: 'listener' | 'adopted', server: Http.Server, hooks: Hooks, onError: ErrorSink): LoadedApp {
  const loaded: LoadedApp = {
    kind,
    listener: guardListener((req, res) => server.emit('request', req, res), onError),
    ...hooks,
    onStop: chain(hooks.onStop, () => closeServer(server)),
  };
  const own = ownTls(server);
  if (own) loaded.ownTls = own;
  if (server.listenerCount('upgrade') > 0) loaded.upgrade = upgradeVia(server, onError);
  return loaded;
}

/** The one HTTP server the calls listened on (on one endpoint), or null. */
function singleHttpServer(calls: ListenCall[]): Http.Server | null {
  if (calls.length === 0 || calls.some((c) => !isHttpServer(c.server))) return null;
  if (new Set(calls.map((c) => c.endpoint)).size > 1) return null;
  return (calls[0] as ListenCall).server as Http.Server;
}

function adopt(calls: ListenCall[], hooks: Hooks, path: string, onError: ErrorSink, unusable: string | undefined): LoadedApp {
  if (calls.length === 0) {
    throw new AppError('APP_BAD_EXPORT', unusable ?? `${path} exports nothing to serve and called no listen(): ${WHAT_TO_EXPORT}`);
  }
  const notHttp = calls.find((c) => !isHttpServer(c.server));
  if (notHttp) {
    throw new AppError(
      'APP_ADOPT_FAILED',
      `${path} called listen() on a ${notHttp.server.constructor === net.Server ? 'net.Server' : (notHttp.server.constructor?.name ?? 'net.Server')} that is not an HTTP server (${describeEndpoints([notHttp])}), ` +
        `which quiesce cannot serve; instead ${WHAT_TO_EXPORT}`,
    );
  }
  const endpoints = new Set(calls.map((c) => c.endpoint));
  if (endpoints.size > 1) {
    throw new AppError(
      'APP_ADOPT_FAILED',
      `${path} listens on ${describeEndpoints(calls)}: quiesce serves one app on the addresses it is given; ` +
        `instead of calling listen(), ${WHAT_TO_EXPORT.replace(/, or call listen\(\).*$/, '')}`,
    );
  }
  // Several servers on one port: Fastify's extra servers for 'localhost' share the first one's handler.
  const primary = (calls[0] as ListenCall).server as Http.Server;
  return serverApp('adopted', primary, hooks, onError);
}
