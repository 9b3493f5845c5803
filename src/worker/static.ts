/**
 * Static file handler (kinds 'site' and 'dir'), built on `send`.
 *
 * Before `send` sees anything, the request target is validated and resolved here:
 * - only GET and HEAD (else 405 with Allow);
 * - the path is percent-decoded once, strictly: malformed or overlong UTF-8 (`%c0%ae`), NUL,
 *   backslashes, and `.`/`..` segments (also encoded: `%2e%2e`, `..%2f`) answer 400;
 * - any dot segment (dotfile or dot directory) answers 404;
 * - the file's realpath must lie inside the root's realpath (a symlink inside the root pointing
 *   inside is fine, one pointing outside answers 404); only regular files are served;
 * - a directory without trailing slash redirects (301), with one it serves index.html, else a
 *   listing when `autoindex`, else 404;
 * - a `.br` / `.gz` sibling is served instead when the client accepts it (br preferred), with
 *   Content-Encoding and `Vary: Accept-Encoding`.
 * `send` then does ETag, Last-Modified, conditional requests, Range and HEAD; a plain GET of a
 * small file is answered here with the same headers and fewer steps (sendSmall).
 *
 * What a path resolves to (its realpath, checked inside the root, and stat) is cached for
 * LOOKUP_TTL_MS in a bounded LRU, misses included: a file created, replaced or removed (or a
 * precompressed sibling added) is seen within that bound. The file itself is opened and
 * stat'ed again for every request, so a removed file answers 404 at once.
 */
import { createRequire } from 'node:module';
import { closeSync, constants as fsConstants, existsSync, fstatSync, openSync, readSync } from 'node:fs';
import { readdir, realpath, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { basename, dirname, extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import send from 'send';
import { AppError, type RequestListener } from './app-types.js';
import { failResponse, report, type ErrorSink } from './app-guard.js';

export type StaticOptions = { autoindex: boolean; onError: ErrorSink };

/** How long a path lookup (realpath, inside-the-root check, stat) is reused. */
export const LOOKUP_TTL_MS = 1000;
/** How many path lookups are kept at most (least recently used go first). */
export const LOOKUP_CACHE_MAX = 4096;

type Encoding = 'br' | 'gzip';
const ENCODINGS: ReadonlyArray<{ name: Encoding; suffix: string }> = [
  { name: 'br', suffix: '.br' },
  { name: 'gzip', suffix: '.gz' },
];

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  412: 'Precondition Failed',
  416: 'Range Not Satisfiable',
  500: 'Internal Server Error',
};

// `send` resolves Content-Type with mime-types, its own dependency; use the very same table for
// precompressed files (whose type is the one of the uncompressed name).
type MimeTypes = { contentType(extOrName: string): string | false };
const mime: MimeTypes | null = (() => {
  try {
    const require = createRequire(import.meta.url);
    return createRequire(require.resolve('send'))('mime-types') as MimeTypes;
  } catch {
    return null;
  }
})();

function contentTypeOf(file: string): string {
  return mime?.contentType(extname(file)) || 'application/octet-stream';
}

/** The bundled welcome site: `<package root>/site`, found by walking up from this module. */
export function locateSiteDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'site', 'index.html'))) return join(dir, 'site');
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new AppError('APP_NOT_FOUND', `the bundled welcome site (site/index.html) was not found above ${fileURLToPath(import.meta.url)}`);
}

/** A request listener serving files under `root`. Throws AppError('APP_NOT_FOUND') if root is not a directory. */
export async function createStaticListener(root: string, opts: StaticOptions): Promise<RequestListener> {
  let rootReal: string;
  try {
    rootReal = await realpath(root);
    if (!(await stat(rootReal)).isDirectory()) throw new Error('not a directory');
  } catch (err) {
    throw new AppError('APP_NOT_FOUND', `static root ${root} is not a readable directory: ${(err as Error).message}`, { cause: err });
  }
  const ctx: Ctx = { rootReal, autoindex: opts.autoindex, onError: opts.onError, lookups: new LookupCache<Found>(LOOKUP_TTL_MS, LOOKUP_CACHE_MAX) };
  return (req, res) => {
    handle(ctx, req, res).catch((err: unknown) => {
      report(opts.onError, err, 'static');
      answerError(res, 500);
    });
  };
}

type Found = { real: string; st: Stats } | null;
type Ctx = { rootReal: string; autoindex: boolean; onError: ErrorSink; lookups: LookupCache<Found> };

/**
 * A bounded LRU of promises that expire `ttlMs` after their load started. Concurrent lookups of
 * one key share one load; a load that rejects is forgotten.
 */
export class LookupCache<T> {
  private readonly entries = new Map<string, { expires: number; value: Promise<T> }>();

  constructor(
    private readonly ttlMs: number,
    private readonly max: number,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  get(key: string, load: (key: string) => Promise<T>): Promise<T> {
    const now = this.now();
    const hit = this.entries.get(key);
    if (hit !== undefined) {
      this.entries.delete(key);
      if (hit.expires > now) {
        this.entries.set(key, hit); // most recently used last
        return hit.value;
      }
    }
    const entry = { expires: now + this.ttlMs, value: load(key) };
    this.entries.set(key, entry);
    if (this.entries.size > this.max) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    entry.value.catch(() => {
      if (this.entries.get(key) === entry) this.entries.delete(key);
    });
    return entry.value;
  }
}

type Target = { segments: string[]; trailingSlash: boolean; query: string };

/** Parses and validates a request target; a number is the error status to answer. */
export function parseTarget(url: string | undefined): Target | 400 | 404 {
  let raw = url ?? '';
  const absolute = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(raw);
  if (absolute) raw = raw.slice(absolute[0].length) || '/';
  if (!raw.startsWith('/')) return 400;
  const cut = raw.search(/[?#]/);
  const path = cut < 0 ? raw : raw.slice(0, cut);
  const query = cut < 0 || raw[cut] === '#' ? '' : raw.slice(cut).replace(/#.*$/s, '');
  if (path.includes('\\')) return 400;
  let decoded: string;
  try {
    decoded = decodeURIComponent(path); // throws on malformed and overlong sequences
  } catch {
    return 400;
  }
  if (decoded.includes('\0') || decoded.includes('\\')) return 400;
  const segments = decoded.split('/').filter((s) => s !== '');
  if (segments.some((s) => s === '.' || s === '..')) return 400;
  if (segments.some((s) => s.startsWith('.'))) return 404;
  return { segments, trailingSlash: decoded.endsWith('/'), query };
}

function inside(rootReal: string, real: string): boolean {
  if (real !== rootReal && !real.startsWith(rootReal.endsWith(sep) ? rootReal : rootReal + sep)) return false;
  return !relative(rootReal, real)
    .split(sep)
    .some((s) => s.startsWith('.'));
}

/** Longer paths are looked up each time: the cache holds at most LOOKUP_CACHE_MAX short keys. */
const LOOKUP_KEY_MAX = 1024;

/** realpath + stat, or null when missing / outside the root / a dot path (cached, see LOOKUP_TTL_MS). */
function resolveInside(ctx: Ctx, p: string): Promise<Found> {
  if (p.length > LOOKUP_KEY_MAX) return lookup(ctx.rootReal, p);
  return ctx.lookups.get(p, (key) => lookup(ctx.rootReal, key));
}

async function lookup(rootReal: string, p: string): Promise<Found> {
  let real: string;
  try {
    real = await realpath(p);
  } catch (err) {
    if (isMissing(err)) return null;
    throw err;
  }
  if (!inside(rootReal, real)) return null;
  try {
    return { real, st: await stat(real) };
  } catch (err) {
    if (isMissing(err)) return null;
    throw err;
  }
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP' || code === 'ENAMETOOLONG' || code === 'EACCES' || code === 'EPERM';
}

async function handle(ctx: Ctx, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    answerError(res, 405, { Allow: 'GET, HEAD' });
    return;
  }
  const target = parseTarget(req.url);
  if (typeof target === 'number') {
    answerError(res, target);
    return;
  }
  const found = await resolveInside(ctx, join(ctx.rootReal, ...target.segments));
  if (!found) return answerError(res, 404);

  if (found.st.isDirectory()) {
    if (!target.trailingSlash) {
      const location = `/${target.segments.map(encodeURIComponent).join('/')}${target.segments.length ? '/' : ''}${target.query}`;
      return redirect(req, res, location);
    }
    const index = await resolveInside(ctx, join(found.real, 'index.html'));
    if (index?.st.isFile()) return serveFile(ctx, req, res, index);
    if (ctx.autoindex) return listing(req, res, found.real, target.segments);
    return answerError(res, 404);
  }
  if (!found.st.isFile() || target.trailingSlash) return answerError(res, 404);
  return serveFile(ctx, req, res, found);
}

/** Which encodings the Accept-Encoding header allows (q > 0, `*` counts). */
export function acceptsEncoding(header: string | string[] | undefined, enc: Encoding): boolean {
  const value = Array.isArray(header) ? header.join(',') : (header ?? '');
  let own: number | undefined;
  let star: number | undefined;
  for (const part of value.split(',')) {
    const [rawName, ...params] = part.split(';');
    const name = (rawName ?? '').trim().toLowerCase();
    if (!name) continue;
    let q = 1;
    for (const p of params) {
      const m = /^\s*q\s*=\s*([0-9.]+)\s*$/i.exec(p);
      if (m) q = Number(m[1]);
    }
    if (Number.isNaN(q)) q = 0;
    if (name === enc || (enc === 'gzip' && name === 'x-gzip')) own = Math.max(own ?? 0, q);
    else if (name === '*') star = q;
  }
  return (own ?? star ?? 0) > 0;
}

async function serveFile(ctx: Ctx, req: IncomingMessage, res: ServerResponse, file: { real: string; st: Stats }): Promise<void> {
  let served = file;
  let encoding: Encoding | null = null;
  let hasVariants = false;
  const variants = await Promise.all(ENCODINGS.map(({ suffix }) => resolveInside(ctx, file.real + suffix)));
  for (const [i, { name }] of ENCODINGS.entries()) {
    const variant = variants[i];
    if (!variant?.st.isFile()) continue;
    hasVariants = true;
    if (encoding === null && acceptsEncoding(req.headers['accept-encoding'], name)) {
      encoding = name;
      served = variant;
    }
  }
  if (res.destroyed) return;
  res.setHeader('Content-Type', contentTypeOf(file.real));
  if (hasVariants) res.setHeader('Vary', 'Accept-Encoding');
  if (encoding) res.setHeader('Content-Encoding', encoding);
  // A variant removed since it was looked up: the file itself is served.
  const identity = (): void => {
    res.removeHeader('Content-Encoding');
    deliver(ctx, req, res, file);
  };
  deliver(ctx, req, res, served, encoding === null ? undefined : identity);
}

/** Sends a file; `onMissing` (if given) answers instead of a 404 when the file is gone. */
function deliver(ctx: Ctx, req: IncomingMessage, res: ServerResponse, file: { real: string; st: Stats }, onMissing?: () => void): void {
  if (file.st.size <= SMALL_FILE_MAX && plainGet(req)) sendSmall(ctx, req, res, file.real, onMissing);
  else sendWithSend(ctx, req, res, file.real, onMissing);
}

function sendWithSend(ctx: Ctx, req: IncomingMessage, res: ServerResponse, file: string, onMissing?: () => void): void {
  // send hands all its options to fs.createReadStream: highWaterMark is the chunk size (not in its types)
  const options: send.SendOptions & { highWaterMark: number } = {
    root: dirname(file),
    index: false,
    extensions: false,
    dotfiles: 'allow', // dot paths were refused above; the realpath's own name is already checked
    highWaterMark: STREAM_CHUNK,
  };
  const stream = send(req, `/${encodeURIComponent(basename(file))}`, options);
  stream.on('error', (err: { status?: number; statusCode?: number; headers?: Record<string, string> }) => {
    const status = err.status ?? err.statusCode ?? 500;
    if (status === 404 && onMissing && !res.headersSent) return onMissing();
    if (status >= 500) report(ctx.onError, err, 'static');
    answerError(res, status, err.headers);
  });
  stream.on('directory', () => answerError(res, 404)); // replaced by a directory since we looked
  stream.pipe(res);
}

/**
 * Larger files are read and written in chunks of this size, not Node's 64 KB: each chunk costs a
 * thread-pool read and a socket write whatever its size, and 256 KB chunks serve a 1 MB file with
 * 1.8x the requests per CPU of 64 KB ones (`npm run bench:cpu` A/B; 512 KB: 1.3x more again).
 * A stalled download holds about two chunks (one read ahead, one in the socket's queue): 512 KB
 * at this size (nginx without sendfile: 64 KB), hence no larger.
 */
const STREAM_CHUNK = 256 * 1024;

/**
 * Files up to this size, asked for by a plain GET, are read whole and sent without `send` (see
 * sendSmall); larger ones, HEAD, Range and conditional requests go through `send`.
 */
const SMALL_FILE_MAX = 64 * 1024;
const CONDITIONAL_OR_RANGE = ['range', 'if-range', 'if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since'];

function plainGet(req: IncomingMessage): boolean {
  if (req.method !== 'GET') return false;
  const h = req.headers;
  for (const name of CONDITIONAL_OR_RANGE) if (h[name] !== undefined) return false;
  return true;
}

// A symlink put in place of the file since it was resolved is not followed (ELOOP: 404).
const OPEN_FLAGS = fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0);

/**
 * A plain GET of a small file, answered as `send` would (same headers: Accept-Ranges,
 * Cache-Control, Last-Modified, a weak ETag of size and mtime, Content-Length) with less work:
 * open, fstat, one read and close, done synchronously. For a file in the page cache these take
 * microseconds, less than the thread-pool round trips they would otherwise need; nginx and Apache
 * serve files with blocking reads in the same way. (A cold file on a slow disk holds this
 * worker's other connections for that read: serve such trees from a CDN or a faster disk.)
 * The file is stat'ed through its descriptor, so the headers describe the bytes sent. A file that
 * grew past SMALL_FILE_MAX meanwhile goes to `send`.
 */
function sendSmall(ctx: Ctx, req: IncomingMessage, res: ServerResponse, file: string, onMissing?: () => void): void {
  let fd = -1;
  let st: Stats;
  let body: Buffer;
  try {
    fd = openSync(file, OPEN_FLAGS);
    st = fstatSync(fd);
    if (!st.isFile()) return onMissing ? onMissing() : answerError(res, 404); // replaced by a directory since we looked
    if (st.size > SMALL_FILE_MAX) return sendWithSend(ctx, req, res, file, onMissing);
    body = Buffer.allocUnsafe(st.size);
    let n = 0;
    for (let i = 0; n < body.byteLength && i < 64; i++) {
      const got = readSync(fd, body, n, body.byteLength - n, n);
      if (got === 0) break; // shrank meanwhile
      n += got;
    }
    if (n < body.byteLength) body = body.subarray(0, n);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ENAMETOOLONG' || code === 'ELOOP') return onMissing ? onMissing() : answerError(res, 404);
    report(ctx.onError, err, 'static');
    return answerError(res, 500);
  } finally {
    if (fd >= 0) closeSync(fd);
  }
  if (res.destroyed || res.headersSent) return;
  res.setHeader('Accept-Ranges', 'bytes');
  res.setHeader('Cache-Control', 'public, max-age=0');
  res.setHeader('Last-Modified', st.mtime.toUTCString());
  res.setHeader('ETag', `W/"${st.size.toString(16)}-${st.mtime.getTime().toString(16)}"`);
  res.setHeader('Content-Length', body.byteLength);
  res.end(body);
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function listing(req: IncomingMessage, res: ServerResponse, dir: string, segments: string[]): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true });
  const rows: Array<{ name: string; isDir: boolean }> = [];
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    let isDir = e.isDirectory();
    if (e.isSymbolicLink()) {
      try {
        isDir = (await stat(join(dir, e.name))).isDirectory();
      } catch {
        continue; // dangling link
      }
    }
    rows.push({ name: e.name, isDir });
  }
  rows.sort((a, b) => (a.isDir === b.isDir ? (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) : a.isDir ? -1 : 1));
  const title = `Index of /${segments.map((s) => `${s}/`).join('')}`;
  const items = rows.map((r) => {
    const label = r.name + (r.isDir ? '/' : '');
    return `<li><a href="${escapeHtml(encodeURIComponent(r.name) + (r.isDir ? '/' : ''))}">${escapeHtml(label)}</a></li>`;
  });
  if (segments.length > 0) items.unshift('<li><a href="../">../</a></li>');
  const html =
    `<!doctype html>\n<html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>\n` +
    `<body><h1>${escapeHtml(title)}</h1>\n<ul>\n${items.join('\n')}\n</ul></body></html>\n`;
  if (res.destroyed) return;
  res.statusCode = 200;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(html));
  res.setHeader('Cache-Control', 'no-cache');
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.end(req.method === 'HEAD' ? undefined : html);
}

function redirect(req: IncomingMessage, res: ServerResponse, location: string): void {
  const body = `Moved Permanently: ${location}\n`;
  res.statusCode = 301;
  res.setHeader('Location', location);
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** Answers an error status with a short text body; destroys the response if headers are out. Never throws. */
function answerError(res: ServerResponse, status: number, headers?: Record<string, string>): void {
  failResponse(res, status, STATUS_TEXT[status] ?? `Error ${status}`, headers);
}
