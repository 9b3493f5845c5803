/**
 * The public entry (`import { defineApp, defineConfig } from 'quiesce'`): the types of an app
 * module, its hooks and the config file, and two identity helpers that give them to an editor.
 * Nothing here runs in the server: it imports no module at run time, so an app or a config file
 * that imports it costs nothing. Keep it self-contained (its .d.ts must not need a dependency's
 * types); `test/public-api.test.ts` checks that `ConfigFile` has exactly the settings' keys.
 */
import type { IncomingMessage, ServerResponse, Server } from 'node:http';

/** A Node request listener, as `http.createServer(listener)` takes it (an Express app is one). */
export type RequestListener = (req: IncomingMessage, res: ServerResponse) => unknown;

/** The second argument of a fetch handler: the Node request and response behind the Request. */
export type NodeBindings = { incoming: IncomingMessage; outgoing: ServerResponse };

/** A fetch-style handler: a Request in, a Response (or a promise of one) out. */
export type FetchHandler = (request: Request, env: NodeBindings) => Response | Promise<Response>;

/**
 * The hooks an app module may export by name (`export async function init() {…}`), or carry on
 * the object given to `defineApp()`. A named export wins over the object's method.
 */
export interface AppHooks {
  /** Awaited before the worker takes traffic; a throw fails the start (or rolls a reload back). */
  init?(): void | Promise<void>;
  /** The worker started retiring (stop, reload, recycling): close WebSockets, SSE streams, timers. */
  onDrain?(): void | Promise<void>;
  /** The worker's last connection closed, before it exits: close pools. */
  onStop?(): void | Promise<void>;
  /** Gets the worker's http.Server once, before it listens (e.g. to add an 'upgrade' handler). */
  attach?(server: Server): void;
}

/** A fetch app: an object with a `fetch` method (a Hono app is one), with optional hooks. */
export interface FetchApp extends AppHooks {
  fetch: FetchHandler;
}

/**
 * What an app module may export (checked when a worker loads it; see the README): a default
 * export that is a request listener, a fetch handler, a `{ fetch }` object, a Koa or Fastify
 * instance or an http.Server, or a named `fetch`; the hooks by name; and `kind` to say how a
 * function default export is called when its parameter count does not tell.
 */
export interface AppModule extends AppHooks {
  default?: RequestListener | FetchHandler | FetchApp | Server | object;
  fetch?: FetchHandler;
  kind?: 'fetch' | 'listener';
}

/**
 * Types an app for the editor; returns it unchanged. `export default defineApp({ fetch(request) {…}, init() {…} })`,
 * or `export default defineApp((req, res) => {…})` for a Node listener.
 */
export function defineApp<T extends FetchApp | RequestListener>(app: T): T {
  return app;
}

/** A duration: seconds as a number (`1.5`), or text with a unit (`"500ms"`, `"2s"`, `"1m"`). */
export type Duration = number | `${number}` | `${number}ms` | `${number}s` | `${number}m`;

/**
 * The config file (`--config FILE`: `.json`, or a JS module default-exporting this object, or a
 * function returning it). Every key is optional; flags given at start win over the file. The
 * meaning and default of each key is in the README's settings table.
 */
export interface ConfigFile {
  /** The app: a module, a directory of static files, or "" for the bundled site (the positional APP argument wins). */
  app?: string;
  /** One address, or a list. */
  listen?: string | ListenEntry | Array<string | ListenEntry>;
  admin?: string;
  workers?: number;
  gracefulTimeout?: Duration;
  drainDelay?: Duration;
  drainCap?: Duration;
  idleGrace?: Duration;
  readyTimeout?: Duration;
  killGrace?: Duration;
  /** A ready worker whose event loop has not answered for this long is replaced and killed; 0 = never. */
  workerTimeout?: Duration;
  /** RSS above which a worker retires gracefully (its replacement first): bytes or "512m", "1g"; 0 = no limit. */
  maxMemory?: number | string;
  respawnBackoff?: Duration;
  reloadSoak?: Duration;
  reloadStrategy?: 'all' | 'rolling';
  /** Judge the new generation during the soak; roll back a worse one. */
  reloadJudge?: 'on' | 'off';
  /** Allowed rise of the 5xx share, new over old (0.01: one percentage point). */
  judgeMax5xxRatio?: number;
  /** Allowed p99 latency ratio, new over old. */
  judgeMaxP99Ratio?: number;
  /** Responses each generation must serve in the soak, else the judge abstains. */
  judgeMinRequests?: number;
  /** Per-response status class and latency counts. */
  metrics?: 'on' | 'off';
  backlog?: number;
  keepAliveTimeout?: Duration;
  headersTimeout?: Duration;
  requestTimeout?: Duration;
  queueTimeout?: Duration;
  /** Warm spares: a count (0-4), or 'on' (1) / 'off' (0). */
  spareWorker?: 'on' | 'off' | number;
  maxHeaderSize?: number;
  maxRequestsPerWorker?: number;
  pidfile?: string;
  accessLog?: string;
  /** Leave requests for `healthPath` out of the access log. */
  accessLogSkipHealth?: boolean;
  errorLog?: string;
  logFormat?: 'combined' | 'json';
  errorLogFormat?: 'text' | 'json';
  logLevel?: 'debug' | 'info' | 'notice' | 'warn' | 'error' | 'alert';
  appOutput?: 'raw' | 'tagged';
  user?: string;
  group?: string;
  healthPath?: string;
  exposeGeneration?: boolean;
  autoindex?: boolean;
  /** Bytes of small static files each worker keeps in memory: a number of bytes or "512k", "64m", "1g"; 0 turns it off. */
  fileCache?: number | string;
  /** Cache-Control max-age of static files (at most 1 year). */
  staticMaxAge?: Duration;
  /** Directories by URL path (`/assets`) whose files never change under their name (hashed names): served with `Cache-Control: public, max-age=31536000, immutable`. */
  staticImmutable?: string | string[];
  /** Prefer `adminTokenFile` or QUIESCE_ADMIN_TOKEN: a token on the command line shows in ps. */
  adminToken?: string;
  adminTokenFile?: string;
  /** The admin listener over HTTPS: its certificate and key (both or neither). */
  adminTlsCert?: string;
  adminTlsKey?: string;
  statusQuery?: boolean;
  /** PEM certificate chain for TLS on every listen address without TLS of its own. */
  tlsCert?: string;
  /** PEM private key of tlsCert. */
  tlsKey?: string;
  /** More certificates for the listeners that use tlsCert, each "CERT,KEY", chosen by the DNS names it carries (SNI). */
  tlsSni?: string | string[];
  /** PEM CA certificates: clients must present a certificate they signed (mutual TLS). */
  tlsCa?: string;
  /** File holding the passphrase of an encrypted tlsKey (or QUIESCE_TLS_PASSPHRASE). */
  tlsPassphraseFile?: string;
  /** HTTP/2 over TLS by ALPN: "on" (default) or "off". */
  http2?: 'on' | 'off';
  /** "on": the listeners without TLS also speak HTTP/2 in the clear to clients with prior knowledge (h2c), told from HTTP/1.1 by its preface. Default "off". */
  h2c?: 'on' | 'off';
}

/** A listen address with TLS of its own (or `tls: false`: plain HTTP even with tlsCert set). */
export type ListenEntry = { address: string; tlsCert?: string; tlsKey?: string; tlsCa?: string; tlsPassphraseFile?: string; tls?: boolean; sni?: Array<{ tlsCert: string; tlsKey: string; tlsPassphraseFile?: string }> };

/** Types a config file for the editor; returns it unchanged: `export default defineConfig({ listen: ['8080'] })`. */
export function defineConfig<T extends ConfigFile | (() => ConfigFile | Promise<ConfigFile>)>(config: T): T {
  return config;
}
