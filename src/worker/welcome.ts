/**
 * The bundled welcome site's front page, with its "Server status" card pointing at this instance's
 * admin listener wherever it is (the master's bound address comes in the worker's boot): another
 * port with --admin auto, a unix socket, a wildcard address reached by the page's own host name,
 * or off. The rest of the site is plain static files.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RequestListener } from './app-types.js';

/** In site/index.html the card sits between these two comments. */
const START = '<!-- admin-card -->';
const END = '<!-- /admin-card -->';

const esc = (v: string): string => v.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function card(inner: string, href?: string): string {
  return href ? `<a class="card" href="${esc(href)}">${inner}</a>` : `<div class="card">${inner}</div>`;
}
const TITLE = '<span class="title">Server status</span>';

/** A host name or address as a browser would reach it (what the Host header, or HTTP/2's :authority, named), or undefined. */
function hostOf(req: IncomingMessage): string | undefined {
  const h = req.headers.host ?? (req.headers[':authority'] as string | undefined) ?? '';
  try {
    const name = new URL(`http://${h}`).hostname;
    return /^(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])$/i.test(name) ? name : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The card for `admin`: "" when off, "unix:PATH", "HOST:PORT" or "[V6]:PORT" (as the master prints
 * it). A wildcard address (0.0.0.0, [::]) is linked on the host the page was asked on.
 */
export function adminCard(admin: string, req: IncomingMessage): string {
  if (admin === '') {
    return card(`${TITLE}<span class="text">The admin listener is off (<code>--admin off</code>): <code>quiesce status</code> shows the workers.</span>`);
  }
  if (admin.startsWith('unix:')) {
    const path = admin.slice(5);
    return card(`${TITLE}<span class="text">On the admin listener's unix socket: <code>curl --unix-socket ${esc(path)} http://localhost/server-status</code>.</span>`);
  }
  // (an HTTPS admin listener comes as https://ADDR)
  const scheme = admin.startsWith('https://') ? 'https' : 'http';
  if (scheme === 'https') admin = admin.slice('https://'.length);
  const m = /^(.*):(\d+)$/.exec(admin);
  const host = m?.[1] ?? admin;
  const port = m?.[2] ?? '';
  const wildcard = host === '0.0.0.0' || host === '[::]';
  const reach = wildcard ? hostOf(req) : host;
  const text = `<span class="text">Workers, connections and requests, on the admin address <code>${esc(admin)}</code>.</span>`;
  return card(`${TITLE}${text}`, reach ? `${scheme}://${reach}:${port}/server-status` : undefined);
}

/** The welcome site's listener: `/` and `/index.html` (GET, HEAD) rendered with the admin card, the rest from `files`. */
export function welcomeListener(siteDir: string, admin: string, files: RequestListener): RequestListener {
  const page = readFileSync(join(siteDir, 'index.html'), 'utf8');
  const a = page.indexOf(START);
  const b = page.indexOf(END);
  if (a < 0 || b < a) return files; // a site without the markers is served as it is
  const before = page.slice(0, a);
  const after = page.slice(b + END.length);
  return (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?')[0];
    if ((path !== '/' && path !== '/index.html') || (req.method !== 'GET' && req.method !== 'HEAD')) return files(req, res);
    const body = before + adminCard(admin, req) + after;
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-cache' });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
}
