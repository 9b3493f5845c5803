// Static files: types, caching, ranges, HEAD, index, precompressed siblings, autoindex, 405, site.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { brotliCompressSync, gzipSync, brotliDecompressSync, gunzipSync } from 'node:zlib';
import { loadApp, AppError, type AppSpec } from '../src/worker/app.js';

let base = '';
let root = '';
const servers: http.Server[] = [];
const errors: unknown[] = [];
const JS = 'export const answer = 42;\n'.repeat(50);
/** Larger than the small-file path and than several stream chunks, not a multiple of any. */
const BIG = Buffer.from(Array.from({ length: 1_300_007 }, (_, i) => (i * 2654435761) >>> 24));

before(() => {
  base = mkdtempSync(join(tmpdir(), 'quiesce-static-'));
  root = join(base, 'root');
  mkdirSync(join(root, 'docs'), { recursive: true });
  mkdirSync(join(root, 'sub', 'deeper'), { recursive: true });
  mkdirSync(join(root, '.hidden'));
  writeFileSync(join(root, 'index.html'), '<!doctype html><title>home</title>home page\n');
  writeFileSync(join(root, 'style.css'), 'body { color: red }\n');
  writeFileSync(join(root, 'data.json'), '{"a":1}\n');
  writeFileSync(join(root, 'logo.svg'), '<svg xmlns="http://www.w3.org/2000/svg"/>\n');
  writeFileSync(join(root, 'blob.qzx'), 'unknown type\n');
  writeFileSync(join(root, 'digits.txt'), '0123456789');
  writeFileSync(join(root, 'big.bin'), BIG);
  writeFileSync(join(root, 'app.js'), JS);
  writeFileSync(join(root, 'app.js.br'), brotliCompressSync(JS));
  writeFileSync(join(root, 'app.js.gz'), gzipSync(JS));
  writeFileSync(join(root, 'only-gz.css'), 'a{}\n');
  writeFileSync(join(root, 'only-gz.css.gz'), gzipSync('a{}\n'));
  writeFileSync(join(root, 'docs', 'index.html'), 'docs index\n');
  writeFileSync(join(root, 'sub', 'file.txt'), 'sub file\n');
  writeFileSync(join(root, 'sub', 'a&b <c>.txt'), 'odd name\n');
  writeFileSync(join(root, 'sub', 'é ü.txt'), 'unicode name\n');
  writeFileSync(join(root, 'sub', '.env'), 'SECRET=1\n');
  writeFileSync(join(root, '.secret'), 'dotfile\n');
  writeFileSync(join(root, '.hidden', 'x.txt'), 'in a dot dir\n');
});

after(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
  rmSync(base, { recursive: true, force: true });
});

async function serve(spec: AppSpec): Promise<string> {
  const app = await loadApp(spec, { onError: (e) => errors.push(e) });
  assert.equal(app.kind, 'static');
  const server = http.createServer();
  server.on('request', app.listener);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

let plainUrl: Promise<string> | undefined;
const plain = (): Promise<string> => (plainUrl ??= serve({ kind: 'dir', root, autoindex: false }));

/** GET with raw bytes back (fetch would decompress a Content-Encoding body). */
function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('Content-Type by extension', async () => {
  const u = await plain();
  const expect: Record<string, RegExp> = {
    '/index.html': /^text\/html; charset=utf-8$/i,
    '/style.css': /^text\/css; charset=utf-8$/i,
    '/app.js': /^(text|application)\/javascript; charset=utf-8$/i,
    '/data.json': /^application\/json; charset=utf-8$/i,
    '/logo.svg': /^image\/svg\+xml/,
    '/digits.txt': /^text\/plain; charset=utf-8$/i,
    '/blob.qzx': /^application\/octet-stream$/,
  };
  for (const [path, type] of Object.entries(expect)) {
    const r = await get(u + path);
    assert.equal(r.status, 200, path);
    assert.match(String(r.headers['content-type']), type, path);
  }
  const css = await get(`${u}/style.css`);
  assert.equal(css.body.toString(), 'body { color: red }\n');
  assert.equal(css.headers['content-length'], String(css.body.length));
});

test('ETag / If-None-Match and Last-Modified / If-Modified-Since answer 304', async () => {
  const u = await plain();
  const first = await get(`${u}/style.css`);
  const etag = String(first.headers.etag);
  assert.match(etag, /^(W\/)?"/);
  const lastModified = String(first.headers['last-modified']);
  assert.equal(new Date(lastModified).getTime(), Math.floor(statSync(join(root, 'style.css')).mtimeMs / 1000) * 1000);
  const byTag = await get(`${u}/style.css`, { 'if-none-match': etag });
  assert.equal(byTag.status, 304);
  assert.equal(byTag.body.length, 0);
  const byDate = await get(`${u}/style.css`, { 'if-modified-since': lastModified });
  assert.equal(byDate.status, 304);
  const stale = await get(`${u}/style.css`, { 'if-none-match': '"nope"' });
  assert.equal(stale.status, 200);
});

test('Range answers 206 with Content-Range; an unsatisfiable one 416', async () => {
  const u = await plain();
  const r = await get(`${u}/digits.txt`, { range: 'bytes=2-5' });
  assert.equal(r.status, 206);
  assert.equal(r.headers['content-range'], 'bytes 2-5/10');
  assert.equal(r.body.toString(), '2345');
  const tail = await get(`${u}/digits.txt`, { range: 'bytes=-3' });
  assert.equal(tail.body.toString(), '789');
  const bad = await get(`${u}/digits.txt`, { range: 'bytes=50-60' });
  assert.equal(bad.status, 416);
  assert.equal(bad.headers['content-range'], 'bytes */10');
  assert.equal((await get(`${u}/digits.txt`)).headers['accept-ranges'], 'bytes');
});

test('a file of several stream chunks arrives byte for byte, whole and as a range across chunk ends', async () => {
  const u = await plain();
  const whole = await get(`${u}/big.bin`);
  assert.equal(whole.status, 200);
  assert.equal(whole.headers['content-length'], String(BIG.length));
  assert.ok(whole.body.equals(BIG), 'the body differs from the file');
  const r = await get(`${u}/big.bin`, { range: 'bytes=200000-800000' });
  assert.equal(r.status, 206);
  assert.equal(r.headers['content-range'], `bytes 200000-800000/${BIG.length}`);
  assert.ok(r.body.equals(BIG.subarray(200000, 800001)), 'the range differs from the file');
});

test('HEAD has the headers and no body', async () => {
  const u = await plain();
  const r = await get(`${u}/style.css`, {}, 'HEAD');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-length'], '20');
  assert.match(String(r.headers['content-type']), /text\/css/);
  assert.equal(r.body.length, 0);
});

test('index.html for directories; a directory without slash redirects 301; no listing by default', async () => {
  const u = await plain();
  const home = await get(`${u}/`);
  assert.equal(home.status, 200);
  assert.match(home.body.toString(), /home page/);
  const docs = await get(`${u}/docs/`);
  assert.equal(docs.body.toString(), 'docs index\n');
  const redirect = await get(`${u}/docs?x=1`);
  assert.equal(redirect.status, 301);
  assert.equal(redirect.headers.location, '/docs/?x=1');
  const noIndex = await get(`${u}/sub/`);
  assert.equal(noIndex.status, 404);
  assert.doesNotMatch(noIndex.body.toString(), /file\.txt/);
  const fileWithSlash = await get(`${u}/style.css/`);
  assert.equal(fileWithSlash.status, 404);
  assert.equal((await get(`${u}/missing.html`)).status, 404);
});

test('precompressed .br / .gz siblings: br preferred, q=0 honoured, Vary set', async () => {
  const u = await plain();
  const br = await get(`${u}/app.js`, { 'accept-encoding': 'gzip, deflate, br' });
  assert.equal(br.headers['content-encoding'], 'br');
  assert.equal(br.headers.vary, 'Accept-Encoding');
  assert.match(String(br.headers['content-type']), /javascript/);
  assert.equal(brotliDecompressSync(br.body).toString(), JS);
  const gz = await get(`${u}/app.js`, { 'accept-encoding': 'gzip' });
  assert.equal(gz.headers['content-encoding'], 'gzip');
  assert.equal(gunzipSync(gz.body).toString(), JS);
  const noBr = await get(`${u}/app.js`, { 'accept-encoding': 'br;q=0, gzip;q=0.5' });
  assert.equal(noBr.headers['content-encoding'], 'gzip');
  const identity = await get(`${u}/app.js`);
  assert.equal(identity.headers['content-encoding'], undefined);
  assert.equal(identity.headers.vary, 'Accept-Encoding');
  assert.equal(identity.body.toString(), JS);
  assert.notEqual(identity.headers.etag, br.headers.etag, 'each encoding has its own ETag');
  const onlyGz = await get(`${u}/only-gz.css`, { 'accept-encoding': 'br, gzip' });
  assert.equal(onlyGz.headers['content-encoding'], 'gzip');
  assert.match(String(onlyGz.headers['content-type']), /text\/css/);
  const noVariants = await get(`${u}/style.css`, { 'accept-encoding': 'br, gzip' });
  assert.equal(noVariants.headers['content-encoding'], undefined);
  assert.equal(noVariants.headers.vary, undefined);
  const ranged = await get(`${u}/app.js`, { 'accept-encoding': 'br', range: 'bytes=0-3' });
  assert.equal(ranged.status, 206);
  assert.equal(ranged.headers['content-encoding'], 'br');
});

test('dotfiles and dot directories are 404', async () => {
  const u = await plain();
  for (const p of ['/.secret', '/.hidden/x.txt', '/.hidden/', '/sub/.env', '/%2esecret']) {
    const r = await get(u + p);
    assert.equal(r.status, 404, p);
    assert.doesNotMatch(r.body.toString(), /dotfile|dot dir|SECRET/, p);
  }
});

test('methods other than GET and HEAD are 405 with Allow', async () => {
  const u = await plain();
  for (const m of ['POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']) {
    const r = await get(`${u}/style.css`, {}, m);
    assert.equal(r.status, 405, m);
    assert.equal(r.headers.allow, 'GET, HEAD', m);
  }
});

test('autoindex lists a directory without index.html: escaped, no dotfiles', async () => {
  const u = await serve({ kind: 'dir', root, autoindex: true });
  const r = await get(`${u}/sub/`);
  assert.equal(r.status, 200);
  assert.match(String(r.headers['content-type']), /^text\/html/);
  const html = r.body.toString();
  assert.match(html, /Index of \/sub\//);
  assert.match(html, /<a href="file\.txt">file\.txt<\/a>/);
  assert.match(html, /<a href="deeper\/">deeper\/<\/a>/);
  assert.match(html, /<a href="\.\.\/">/);
  assert.ok(html.includes('href="a%26b%20%3Cc%3E.txt"'), 'hrefs are percent-encoded');
  assert.ok(html.includes('a&#38;b &#60;c&#62;.txt'), 'names are HTML-escaped');
  assert.ok(!html.includes('<c>'), 'no raw markup from file names');
  assert.doesNotMatch(html, /\.env/);
  const uni = await get(`${u}/sub/${encodeURIComponent('é ü.txt')}`);
  assert.equal(uni.body.toString(), 'unicode name\n');
  // index.html still wins over the listing
  assert.match((await get(`${u}/`)).body.toString(), /home page/);
  // and dot directories stay hidden
  assert.equal((await get(`${u}/.hidden/`)).status, 404);
});

test('a missing static root is APP_NOT_FOUND', async () => {
  await assert.rejects(
    loadApp({ kind: 'dir', root: join(base, 'no-such-dir'), autoindex: false }, { onError: () => {} }),
    (err: unknown) => err instanceof AppError && err.code === 'APP_NOT_FOUND' && err.message.includes('no-such-dir'),
  );
});

test("the bundled site says It works! and links to the docs and the status page", async () => {
  const u = await serve({ kind: 'site' });
  const r = await get(`${u}/`);
  assert.equal(r.status, 200);
  const html = r.body.toString();
  assert.match(html, /It works!/);
  assert.match(html, /prefork HTTP server for Node\.js/);
  assert.match(html, /Server status.*The admin listener is off/s, 'loaded with no admin address (as --admin off): no link'); // the link itself: test/adopt-small.test.ts
  assert.match(html, /README|readme/);
  assert.doesNotMatch(html, /<script/i);
  const css = await get(`${u}/style.css`);
  assert.equal(css.status, 200);
  assert.match(String(css.headers['content-type']), /text\/css/);
  const icon = await get(`${u}/favicon.svg`);
  assert.equal(icon.status, 200);
  assert.match(String(icon.headers['content-type']), /image\/svg\+xml/);
  assert.deepEqual(errors, []);
});
