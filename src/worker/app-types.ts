/**
 * Types shared by the app loader modules (re-exported from ./app.js, which is the public entry).
 */
import type { IncomingMessage, ServerResponse, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Server as NetServer } from 'node:net';

export type RequestListener = (req: IncomingMessage, res: ServerResponse) => void;
export type UpgradeListener = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

export type LoadedApp = {
  kind: 'static' | 'listener' | 'fetch' | 'fastify' | 'adopted';
  /**
   * Handles every request on the worker's http.Server. Never throws: a synchronous throw (or a
   * rejected promise returned by a listener) answers 500, or destroys the response when headers
   * were already sent, and is reported through `onError`.
   */
  listener: RequestListener;
  /** Static files: bytes held by the content cache now (for the worker's stats). */
  fileCacheBytes?: () => number;
  /** 'upgrade' handler if the app has one (known when loadApp resolves). */
  upgrade?: UpgradeListener;
  /** Awaited before the worker reports ready. */
  init?: () => Promise<void>;
  /** The worker started retiring: the app closes WebSockets, SSE streams, timers. */
  onDrain?: () => Promise<void> | void;
  /** Before exit: close pools. */
  onStop?: () => Promise<void> | void;
  /** Gets the worker's http.Server (e.g. to add an 'upgrade' handler for ws). */
  attach?: (server: Server) => void;
  /**
   * Served over HTTP/2 too (Node's compat API): static files, listeners and fetch handlers. Express, Koa,
   * Fastify and adopted http.Servers use http1-only parts of Node's request and response: they
   * get HTTP/1.1 over TLS.
   */
  http2?: boolean;
  /**
   * The app's own TLS server (it called listen() on an https.Server or an
   * http2.createSecureServer): served with its options, never as plain HTTP. `h2`: an HTTP/2
   * server, whose sessions it serves itself; `allowHTTP1`: it also takes HTTP/1.1.
   */
  ownTls?: { server: NetServer; h2: boolean; allowHTTP1: boolean };
};

/** How static files are served: `--autoindex`, `--file-cache` (bytes), `--static-max-age` (ms), `--static-immutable` (URL paths of directories). */
export type StaticSettings = { autoindex: boolean; fileCache?: number; staticMaxAge?: number; staticImmutable?: readonly string[] };

export type AppSpec =
  | ({ kind: 'site' } & Omit<StaticSettings, 'autoindex'>)
  | ({ kind: 'dir'; root: string } & StaticSettings)
  | { kind: 'module'; path: string /* absolute real path */ };

export type LoadOptions = {
  /** Where the master's admin listener is ("127.0.0.1:8081", "unix:PATH", "" when off): the welcome page links to it. */
  admin?: string;
  /** An app error: where it surfaced, and the request it broke when there is one. */
  onError: (err: unknown, where: string, req?: IncomingMessage) => void;
  /**
   * How long to wait, after the module was imported, for a first listen() call when the module
   * exports nothing usable (adoption). Default 2000 ms.
   */
  adoptWaitMs?: number;
};

/** Stable codes of app loading failures; with APP_INIT_FAILED (init() threw) they are a worker's `fatal` codes. */
export const APP_ERROR_CODES = ['APP_NOT_FOUND', 'APP_LOAD_FAILED', 'APP_BAD_EXPORT', 'APP_ADOPT_FAILED', 'APP_INIT_FAILED'] as const;
export type AppErrorCode = (typeof APP_ERROR_CODES)[number];

export class AppError extends Error {
  readonly code: AppErrorCode;
  constructor(code: AppErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AppError';
    this.code = code;
  }
}
