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
 * `send` then does Content-Type, ETag, Last-Modified, conditional requests, Range and HEAD.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { readdir, realpath, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { basename, dirname, extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import send from 'send';
import { AppError, type RequestListener } from './app-types.js';
import { failResponse, report, type ErrorSink } from './app-guard.js';

export type StaticOptions = { autoindex: boolean; onError: ErrorSink };

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
  const ctx: Ctx = { rootReal, autoindex: opts.autoindex, onError: opts.onError };
  return (req, res) => {
    handle(ctx, req, res).catch((err: unknown) => {
      report(opts.onError, err, 'static');
      answerError(res, 500);
    });
  };
}

type Ctx = { rootReal: string; autoindex: boolean; onError: ErrorSink };

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

/** realpath + stat, or null when missing / outside the root / a dot path. */
async function resolveInside(ctx: Ctx, p: string): Promise<{ real: string; st: Stats } | null> {
  let real: string;
  try {
    real = await realpath(p);
  } catch (err) {
    if (isMissing(err)) return null;
    throw err;
  }
  if (!inside(ctx.rootReal, real)) return null;
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
    if (index?.st.isFile()) return serveFile(ctx, req, res, index.real);
    if (ctx.autoindex) return listing(req, res, found.real, target.segments);
    return answerError(res, 404);
  }
  if (!found.st.isFile() || target.trailingSlash) return answerError(res, 404);
  return serveFile(ctx, req, res, found.real);
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

async function serveFile(ctx: Ctx, req: IncomingMessage, res: ServerResponse, file: string): Promise<void> {
  let served = file;
  let encoding: Encoding | null = null;
  let hasVariants = false;
  for (const { name, suffix } of ENCODINGS) {
    const variant = await resolveInside(ctx, file + suffix);
    if (!variant?.st.isFile()) continue;
    hasVariants = true;
    if (encoding === null && acceptsEncoding(req.headers['accept-encoding'], name)) {
      encoding = name;
      served = variant.real;
    }
  }
  if (res.destroyed) return;
  res.setHeader('Content-Type', contentTypeOf(file));
  if (hasVariants) res.setHeader('Vary', 'Accept-Encoding');
  if (encoding) res.setHeader('Content-Encoding', encoding);

  const stream = send(req, `/${encodeURIComponent(basename(served))}`, {
    root: dirname(served),
    index: false,
    extensions: false,
    dotfiles: 'allow', // dot paths were refused above; the realpath's own name is already checked
  });
  stream.on('error', (err: { status?: number; statusCode?: number; headers?: Record<string, string> }) => {
    const status = err.status ?? err.statusCode ?? 500;
    if (status >= 500) report(ctx.onError, err, 'static');
    answerError(res, status, err.headers);
  });
  stream.on('directory', () => answerError(res, 404)); // replaced by a directory since we looked
  stream.pipe(res);
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
