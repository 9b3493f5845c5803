/**
 * Static file handler (kinds 'site' and 'dir').
 *
 * The request target is validated and resolved first:
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
 * What a path resolves to (its realpath, checked inside the root, and stat) is cached for
 * LOOKUP_TTL_MS in a bounded LRU, misses included.
 *
 * The file is then opened without following a final symlink, and the opened file's own path (read
 * back through /proc/self/fd) is checked inside the root again: a file or directory swapped for a
 * symlink since the lookup is never followed out of the root (openInside). Files up to
 * FILE_CACHE_ENTRY_MAX are kept in the content cache (FileCache: bounded in bytes, `--file-cache`)
 * with their response headers prepared, and trusted for LOOKUP_TTL_MS: a file created, changed,
 * replaced or removed (or a precompressed sibling added) is seen within that bound. ETag,
 * Last-Modified, conditional requests (304, 412), one Range (206, 416) and HEAD are answered here
 * as `send` answers them, from the cache or the opened file (answer).
 */
import { createRequire } from 'node:module';
import { closeSync, constants as fsConstants, createReadStream, existsSync, fstatSync, openSync, readlinkSync, readSync } from 'node:fs';
import { access, readdir, realpath, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { basename, dirname, extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AppError, type RequestListener } from './app-types.js';
import { failResponse, report, type ErrorSink } from './app-guard.js';
import { markWhole } from './h2-no-trailers.js';

export type StaticOptions = {
  autoindex: boolean;
  onError: ErrorSink;
  /** The content cache's bound in bytes (0: off); default FILE_CACHE_DEFAULT. */
  fileCache?: number;
  /** Cache-Control max-age of files, in ms (whole seconds are sent); default 0. */
  maxAgeMs?: number;
  /** Directories by URL path (`/assets`, `/` for all) whose files get IMMUTABLE instead (`--static-immutable`). */
  immutable?: readonly string[];
};

/** Cache-Control of the files under a --static-immutable directory: a year (RFC 9111's longest advised), never revalidated. */
export const IMMUTABLE = 'public, max-age=31536000, immutable';

/** The content cache's default bound per worker (`--file-cache`). */
export const FILE_CACHE_DEFAULT = 64 * 1024 * 1024;

/** A static listener, with its content cache (null when off) for the worker's stats. */
export type StaticListener = RequestListener & { fileCache: FileCache | null };

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

// Content-Type comes from mime-types, conditional requests are judged by fresh and ranges parsed
// by range-parser: the very modules `send` (which node:cluster setups commonly serve files with)
// uses, so the answers agree with it.
type MimeTypes = { contentType(extOrName: string): string | false };
type Fresh = (reqHeaders: IncomingHttpHeaders, resHeaders: Record<string, string>) => boolean;
type RangeParser = (size: number, header: string, opts: { combine: boolean }) => -1 | -2 | Array<{ start: number; end: number }>;
const fromSend = createRequire(createRequire(import.meta.url).resolve('send'));
const mime = fromSend('mime-types') as MimeTypes;
const fresh = fromSend('fresh') as Fresh;
const parseRange = fromSend('range-parser') as RangeParser;

function contentTypeOf(file: string): string {
  return mime.contentType(extname(file)) || 'application/octet-stream';
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
export async function createStaticListener(root: string, opts: StaticOptions): Promise<StaticListener> {
  let rootReal: string;
  try {
    rootReal = await realpath(root);
    if (!(await stat(rootReal)).isDirectory()) throw new Error('not a directory');
    // a directory this user cannot enter would answer 404 to everything (a --user worker, a 0700 root)
    await access(rootReal, fsConstants.X_OK).catch((err: NodeJS.ErrnoException) => {
      throw new Error(`${err.code ?? err.message}: this user (uid ${process.getuid?.()}) cannot enter it`);
    });
  } catch (err) {
    throw new AppError('APP_NOT_FOUND', `static root ${root} is not a readable directory: ${(err as Error).message}`, { cause: err });
  }
  const cacheBytes = opts.fileCache ?? FILE_CACHE_DEFAULT;
  const ctx: Ctx = {
    rootReal,
    autoindex: opts.autoindex,
    onError: opts.onError,
    lookups: new LookupCache<Found>(LOOKUP_TTL_MS, LOOKUP_CACHE_MAX),
    cache: cacheBytes > 0 ? new FileCache(cacheBytes, FILE_CACHE_ENTRY_MAX, LOOKUP_TTL_MS) : null,
    cacheControl: `public, max-age=${Math.floor((opts.maxAgeMs ?? 0) / 1000)}`,
    immutable: (opts.immutable ?? []).map((p) => p.split('/').filter((s) => s !== '')),
    hits: new HitMap(LOOKUP_CACHE_MAX),
  };
  const listener: RequestListener = (req, res) => {
    if (ctx.cache !== null && (req.method === 'GET' || req.method === 'HEAD')) {
      // a request target served from the cache within the lookup window: its checks and lookups gave
      // this very entry, and would give it again until `until`
      const k = hitKey(req);
      const hit = ctx.hits.get(k);
      if (hit !== undefined) {
        const now = Date.now();
        const e = now < hit.until ? ctx.cache.get(hit.key, now).fresh : undefined;
        if (e !== undefined) return answer(ctx, req, res, e.meta, e.headers, e.body, -1);
        ctx.hits.delete(k);
      }
    }
    handle(ctx, req, res).catch((err: unknown) => {
      report(opts.onError, err, 'static');
      answerError(res, 500);
    });
  };
  return Object.assign(listener, { fileCache: ctx.cache });
}

type Found = { real: string; st: Stats } | null;
type Ctx = { rootReal: string; autoindex: boolean; onError: ErrorSink; lookups: LookupCache<Found>; cache: FileCache | null; cacheControl: string; immutable: string[][]; hits: HitMap };

/** Whether a request's path (its decoded segments) lies in one of the --static-immutable directories. */
function isImmutable(ctx: Ctx, segments: readonly string[]): boolean {
  for (const dir of ctx.immutable) {
    if (dir.length <= segments.length && dir.every((s, i) => s === segments[i])) return true;
  }
  return false;
}

/**
 * A request target (and Accept-Encoding) whose answer is the content cache's entry `key` until
 * `until`: the target's checks depend on its text alone, and `until` is the earliest expiry of the
 * lookups that led to the entry (the file, an index.html, the .br/.gz siblings) and of the entry's
 * own validation, so a hit sees no more than what the full path would within the lookup window.
 */
type Hit = { key: string; until: number };

function hitKey(req: IncomingMessage): string {
  const ae = req.headers['accept-encoding'];
  return ae === undefined ? `${req.url ?? ''}` : `${req.url ?? ''}\0${ae}`;
}

/** At most `max` hits (the oldest set go first); targets longer than LOOKUP_KEY_MAX are not kept. */
class HitMap {
  private readonly map = new Map<string, Hit>();
  constructor(private readonly max: number) {}
  get(key: string): Hit | undefined {
    return this.map.get(key);
  }
  set(key: string, hit: Hit): void {
    if (key.length > LOOKUP_KEY_MAX) return;
    this.map.delete(key);
    this.map.set(key, hit);
    if (this.map.size > this.max) {
      const oldest = this.map.keys().next();
      if (!oldest.done) this.map.delete(oldest.value);
    }
  }
  delete(key: string): void {
    this.map.delete(key);
  }
}

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

  /** When the entry of `key` expires (0 if there is none): what was looked up is trusted until then. */
  expiresAt(key: string): number {
    return this.entries.get(key)?.expires ?? 0;
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
  const p = join(ctx.rootReal, ...target.segments);
  const found = await resolveInside(ctx, p);
  if (!found) return answerError(res, 404);
  const until = ctx.lookups.expiresAt(p);

  if (found.st.isDirectory()) {
    if (!target.trailingSlash) {
      const location = `/${target.segments.map(encodeURIComponent).join('/')}${target.segments.length ? '/' : ''}${target.query}`;
      return redirect(req, res, location);
    }
    const indexPath = join(found.real, 'index.html');
    const index = await resolveInside(ctx, indexPath);
    if (index?.st.isFile()) return serveFile(ctx, req, res, index, Math.min(until, ctx.lookups.expiresAt(indexPath)), isImmutable(ctx, target.segments));
    if (ctx.autoindex) return listing(req, res, found.real, target.segments);
    return answerError(res, 404);
  }
  if (!found.st.isFile() || target.trailingSlash) return answerError(res, 404);
  return serveFile(ctx, req, res, found, until, isImmutable(ctx, target.segments));
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

/** `lookedUpUntil`: what the lookups of this request found is trusted until then (see Hit). */
async function serveFile(ctx: Ctx, req: IncomingMessage, res: ServerResponse, file: { real: string; st: Stats }, lookedUpUntil: number, immutable: boolean): Promise<void> {
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
  const type = contentTypeOf(file.real);
  // A variant removed since it was looked up: the file itself is served.
  let until = lookedUpUntil;
  for (const { suffix } of ENCODINGS) until = Math.min(until, ctx.lookups.expiresAt(file.real + suffix));
  const identity = (): void => deliver(ctx, req, res, file, { type, vary: hasVariants, encoding: null, immutable }, 0);
  deliver(ctx, req, res, served, { type, vary: hasVariants, encoding, immutable }, until, encoding === null ? undefined : identity);
}

/**
 * Larger files not cached are read and written in chunks of this size, not Node's 64 KB: each
 * chunk costs a thread-pool read and a socket write whatever its size, and 256 KB chunks serve a
 * 1 MB file with 1.8x the requests per CPU of 64 KB ones (`npm run bench:cpu` A/B). A stalled
 * download holds about two chunks (one read ahead, one in the socket's queue): 512 KB at this
 * size, hence no larger. A cached file is one shared Buffer: a stalled client holds no copy.
 */
const STREAM_CHUNK = 256 * 1024;

/**
 * Files up to this size are read whole (synchronously: for a file in the page cache an open,
 * fstat, read and close take microseconds, less than the thread-pool round trips they would
 * otherwise need; nginx and Apache serve files with blocking reads in the same way; a cold file
 * on a slow disk holds this worker's other connections for that read) even when the content
 * cache is off or cannot hold them; larger ones not cached are streamed from their fd.
 */
const SMALL_FILE_MAX = 64 * 1024;

/** The largest file the content cache keeps (and so reads whole, once per LOOKUP_TTL_MS at most). */
export const FILE_CACHE_ENTRY_MAX = 1024 * 1024;

// A symlink put in place of the file since it was resolved is not followed (ELOOP: 404).
const OPEN_FLAGS = fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0);

// ─── serving a file: opened without following a final symlink, checked inside the root ─────

/**
 * What is known of an opened file, and its answer prepared. `body` holds the whole content when
 * the file is small enough to read in one go (SMALL_FILE_MAX, or the content cache's entry
 * bound); else the file is streamed from `fd`.
 */
type Opened = { meta: FileMeta; body: Buffer | null; fd: number };
type FileMeta = { ino: number; size: number; mtimeMs: number; ctimeMs: number; etag: string; lastModified: string };

/**
 * The content cache: small files kept in memory with their response headers prepared, at most
 * `maxBytes` of content in all (least recently used go first) and `entryMax` per file. An entry
 * is trusted for LOOKUP_TTL_MS after it was (re)validated; then the file is opened and checked
 * again (same inode, size, mtime and ctime: the content is kept, else read anew).
 */
export class FileCache {
  private readonly entries = new Map<string, CacheEntry>();
  private total = 0;

  constructor(
    readonly maxBytes: number,
    readonly entryMax: number,
    private readonly ttlMs: number,
  ) {}

  /** Bytes of content held now (never above maxBytes). */
  get bytes(): number {
    return this.total;
  }

  get size(): number {
    return this.entries.size;
  }

  fits(size: number): boolean {
    return size <= this.entryMax && size <= this.maxBytes;
  }

  /** A fresh entry (validated within the TTL), or the stale one as `stale` for revalidation. */
  get(key: string, now: number): { fresh?: CacheEntry; stale?: CacheEntry } {
    const e = this.entries.get(key);
    if (e === undefined) return {};
    if (now - e.checked < this.ttlMs) {
      this.entries.delete(key);
      this.entries.set(key, e); // most recently used last
      return { fresh: e };
    }
    return { stale: e };
  }

  set(key: string, e: CacheEntry): void {
    this.delete(key);
    if (!this.fits(e.body.byteLength)) return;
    this.entries.set(key, e);
    this.total += e.body.byteLength;
    for (const [k, old] of this.entries) {
      if (this.total <= this.maxBytes) break;
      this.entries.delete(k);
      this.total -= old.body.byteLength;
    }
  }

  delete(key: string): void {
    const e = this.entries.get(key);
    if (e === undefined) return;
    this.entries.delete(key);
    this.total -= e.body.byteLength;
  }
}

type CacheEntry = { meta: FileMeta; body: Buffer; headers: Record<string, string | number>; checked: number };

/** What a response for one file carries beside the file's own validators. */
/** A file's answer beyond its own metadata: its type, whether it has encoded variants (Vary), the encoding served, whether it is IMMUTABLE. */
type Extra = { type: string; vary: boolean; encoding: Encoding | null; immutable: boolean };

/**
 * Sends a file; `onMissing` (if given) answers instead of a 404 when the file is gone. A file kept
 * in the content cache is remembered for this request target (a Hit) until `lookedUpUntil`.
 */
function deliver(ctx: Ctx, req: IncomingMessage, res: ServerResponse, file: { real: string }, extra: Extra, lookedUpUntil: number, onMissing?: () => void): void {
  const cache = ctx.cache;
  const key = cache ? `${file.real}\0${extra.type}\0${extra.encoding ?? ''}\0${extra.vary ? 'v' : ''}${extra.immutable ? 'i' : ''}` : '';
  const now = cache ? Date.now() : 0;
  const cached = cache?.get(key, now);
  if (cached?.fresh) {
    if (lookedUpUntil > now) ctx.hits.set(hitKey(req), { key, until: Math.min(lookedUpUntil, cached.fresh.checked + LOOKUP_TTL_MS) });
    return answer(ctx, req, res, cached.fresh.meta, cached.fresh.headers, cached.fresh.body, -1);
  }
  const missing = (): void => (onMissing ? onMissing() : answerError(res, 404));
  let opened: Opened | null;
  try {
    opened = openInside(ctx, file.real, cache, cached?.stale);
  } catch (err) {
    report(ctx.onError, err, 'static');
    return answerError(res, 500);
  }
  if (opened === null) {
    if (cache) cache.delete(key);
    return missing();
  }
  const headers = prepareHeaders(ctx, opened.meta, extra);
  if (cache && opened.body !== null && cache.fits(opened.body.byteLength)) {
    cache.set(key, { meta: opened.meta, body: opened.body, headers, checked: now });
    if (lookedUpUntil > now) ctx.hits.set(hitKey(req), { key, until: Math.min(lookedUpUntil, now + LOOKUP_TTL_MS) });
  }
  answer(ctx, req, res, opened.meta, headers, opened.body, opened.fd);
}

/**
 * Opens `real` without following a final symlink (O_NOFOLLOW) and checks the opened file: a
 * regular file whose own path (read back through /proc/self/fd) lies inside the root, with no dot
 * segment. So a file replaced by a symlink, or a directory on its way swapped for a symlink out of
 * the root, since the path was looked up is never served. null: missing, or refused. Small files
 * are read whole (synchronously: microseconds from the page cache, see SMALL_FILE_MAX) and
 * closed; the fd of a larger one is left open for the caller to stream and close. A `stale` cache
 * entry whose file is unchanged gives its content back without a read.
 */
function openInside(ctx: Ctx, real: string, cache: FileCache | null, stale: CacheEntry | undefined): Opened | null {
  let fd = -1;
  try {
    fd = openSync(real, OPEN_FLAGS);
    const st = fstatSync(fd);
    if (!st.isFile() || !inside(ctx.rootReal, readlinkSync(`/proc/self/fd/${fd}`))) {
      closeSync(fd);
      return null;
    }
    const meta: FileMeta = {
      ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs,
      etag: `W/"${st.size.toString(16)}-${st.mtime.getTime().toString(16)}"`, lastModified: st.mtime.toUTCString(),
    };
    if (stale && stale.meta.ino === meta.ino && stale.meta.size === meta.size && stale.meta.mtimeMs === meta.mtimeMs && stale.meta.ctimeMs === meta.ctimeMs) {
      closeSync(fd);
      return { meta: stale.meta, body: stale.body, fd: -1 };
    }
    if (st.size > SMALL_FILE_MAX && !cache?.fits(st.size)) return { meta, body: null, fd };
    let body = Buffer.allocUnsafe(st.size);
    let n = 0;
    for (let i = 0; n < body.byteLength && i < 1024; i++) {
      const got = readSync(fd, body, n, body.byteLength - n, n);
      if (got === 0) break; // shrank meanwhile
      n += got;
    }
    if (n < body.byteLength) body = body.subarray(0, n);
    closeSync(fd);
    return { meta: n === st.size ? meta : { ...meta, size: n }, body, fd: -1 };
  } catch (err) {
    if (fd >= 0) closeSync(fd);
    if (isMissing(err)) return null;
    throw err;
  }
}

/** The headers of a full 200 answer for a file (the same as `send` gives, in its order). */
function prepareHeaders(ctx: Ctx, meta: FileMeta, extra: Extra): Record<string, string | number> {
  const h: Record<string, string | number> = {
    'Accept-Ranges': 'bytes',
    'Cache-Control': extra.immutable ? IMMUTABLE : ctx.cacheControl,
    'Last-Modified': meta.lastModified,
    ETag: meta.etag,
    'Content-Type': extra.type,
  };
  if (extra.vary) h.Vary = 'Accept-Encoding';
  if (extra.encoding) h['Content-Encoding'] = extra.encoding;
  h['Content-Length'] = meta.size;
  return h;
}

/**
 * Answers a GET or HEAD for a file from its prepared headers and either its content (`body`) or
 * an open `fd` (closed here): 412 and 304 for conditional requests, 206 / 416 for one range
 * (several ranges, or a stale If-Range, get the whole file), as `send` does.
 */
function answer(ctx: Ctx, req: IncomingMessage, res: ServerResponse, meta: FileMeta, headers: Record<string, string | number>, body: Buffer | null, fd: number): void {
  markWhole(res); // a file has no trailers: over HTTP/2, no trailers round (h2-no-trailers.ts)
  if (res.destroyed || res.headersSent) return closeFd(fd);
  const h = req.headers;
  if (h['if-match'] === undefined && h['if-unmodified-since'] === undefined && h['if-none-match'] === undefined && h['if-modified-since'] === undefined && h.range === undefined) {
    res.writeHead(200, headers);
    if (req.method === 'HEAD') return (closeFd(fd), void res.end());
    if (body !== null) return void res.end(body);
    return stream(ctx, res, fd, 0, meta.size);
  }
  if (h['if-match'] || h['if-unmodified-since'] || h['if-none-match'] || h['if-modified-since']) {
    if (preconditionFailed(req, meta)) return (closeFd(fd), answerError(res, 412));
    if (fresh(h, { etag: meta.etag, 'last-modified': meta.lastModified })) {
      const out: Record<string, string | number> = {};
      for (const [k, v] of Object.entries(headers)) if (!CONTENT_FIELDS.has(k)) out[k] = v;
      res.writeHead(304, out);
      return (closeFd(fd), void res.end());
    }
  }
  let start = 0;
  let length = meta.size;
  let status = 200;
  const out: Record<string, string | number> = { ...headers };
  const range = h.range;
  if (range !== undefined && /^ *bytes=/.test(range)) {
    let ranges = parseRange(meta.size, range, { combine: true });
    if (!rangeFresh(req, meta)) ranges = -2;
    if (ranges === -1) return (closeFd(fd), answerError(res, 416, { 'Content-Range': `bytes */${meta.size}` }));
    if (ranges !== -2 && ranges.length === 1) {
      const r = ranges[0]!;
      status = 206;
      start = r.start;
      length = r.end - r.start + 1;
      delete out['Content-Length'];
      out['Content-Range'] = `bytes ${r.start}-${r.end}/${meta.size}`;
      out['Content-Length'] = length;
    }
  }
  res.writeHead(status, out);
  if (req.method === 'HEAD') return (closeFd(fd), void res.end());
  if (body !== null) return void res.end(start === 0 && length === body.byteLength ? body : body.subarray(start, start + length));
  stream(ctx, res, fd, start, length);
}

const CONTENT_FIELDS = new Set(['Content-Encoding', 'Content-Language', 'Content-Length', 'Content-Range', 'Content-Type']);

function closeFd(fd: number): void {
  if (fd >= 0) closeSync(fd);
}

/** Streams `length` bytes from `start` of an open fd to the response, STREAM_CHUNK at a time; closes the fd. */
function stream(ctx: Ctx, res: ServerResponse, fd: number, start: number, length: number): void {
  if (length === 0) return (closeFd(fd), void res.end());
  const s = createReadStream('', { fd, start, end: start + length - 1, highWaterMark: STREAM_CHUNK, autoClose: true });
  s.on('error', (err) => {
    report(ctx.onError, err, 'static');
    res.destroy();
  });
  res.on('close', () => s.destroy());
  s.pipe(res);
}

/** If-Match / If-Unmodified-Since, as `send` reads them. */
function preconditionFailed(req: IncomingMessage, meta: FileMeta): boolean {
  const match = req.headers['if-match'];
  if (match) {
    const etag = meta.etag;
    return match !== '*' && parseTokenList(match).every((m) => m !== etag && m !== `W/${etag}` && `W/${m}` !== etag);
  }
  const since = Date.parse(req.headers['if-unmodified-since'] ?? '');
  if (!Number.isNaN(since)) return Date.parse(meta.lastModified) > since;
  return false;
}

function rangeFresh(req: IncomingMessage, meta: FileMeta): boolean {
  const ifRange = String(req.headers['if-range'] ?? '');
  if (!ifRange) return true;
  if (ifRange.includes('"')) return ifRange.includes(meta.etag);
  return Date.parse(meta.lastModified) <= Date.parse(ifRange);
}

function parseTokenList(s: string): string[] {
  return s.split(',').map((t) => t.trim()).filter((t) => t !== '');
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
