// Static files: the lookup cache (bounded, TTL) sees changes within its bound; the small-file path
// answers exactly as `send` does; a symlink swapped in is never followed out of the root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, renameSync, symlinkSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync, gunzipSync } from 'node:zlib';
import { loadApp } from '../src/worker/app.js';
import { LookupCache, LOOKUP_TTL_MS } from '../src/worker/static.js';

const SECRET = 'TOP-SECRET-OUTSIDE-THE-ROOT';
let base = '';
let root = '';
let url = '';
let server: http.Server | undefined;
const errors: unknown[] = [];

before(async () => {
  base = mkdtempSync(join(tmpdir(), 'quiesce-static-cache-'));
  root = join(base, 'root');
  mkdirSync(root);
  writeFileSync(join(base, 'outside.txt'), `${SECRET}\n`);
  const app = await loadApp({ kind: 'dir', root, autoindex: false }, { onError: (e) => errors.push(e) });
  server = http.createServer();
  server.on('request', app.listener);
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  if (server) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server?.close(() => resolve()));
  }
  rmSync(base, { recursive: true, force: true });
});

function get(path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${path}`, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

const pastTtl = (): Promise<void> => new Promise((r) => setTimeout(r, LOOKUP_TTL_MS + 150));

test('LookupCache: entries expire after the TTL, the least recently used go first, loads are shared', async () => {
  let now = 0;
  const cache = new LookupCache<string>(1000, 3, () => now);
  let loads = 0;
  const load = async (k: string): Promise<string> => `${k}#${++loads}`;
  assert.equal(await cache.get('a', load), 'a#1');
  assert.equal(await cache.get('a', load), 'a#1', 'a hit');
  now = 999;
  assert.equal(await cache.get('a', load), 'a#1', 'still within the TTL');
  now = 1000;
  assert.equal(await cache.get('a', load), 'a#2', 'expired: loaded again');
  await cache.get('b', load);
  await cache.get('c', load);
  await cache.get('a', load); // a is now the most recently used
  await cache.get('d', load); // evicts b, the least recently used
  assert.equal(cache.size, 3);
  assert.equal(await cache.get('a', load), 'a#2');
  assert.equal(await cache.get('b', load), 'b#6', 'b was evicted');
  const slow = new LookupCache<number>(1000, 10, () => now);
  let calls = 0;
  const p1 = slow.get('k', () => new Promise((r) => setTimeout(() => r(++calls), 20)));
  const p2 = slow.get('k', () => Promise.resolve(++calls));
  assert.deepEqual(await Promise.all([p1, p2]), [1, 1], 'concurrent lookups share one load');
  await assert.rejects(slow.get('bad', () => Promise.reject(new Error('EIO'))));
  assert.equal(await slow.get('bad', async () => 7), 7, 'a failed load is not kept');
});

test('a removed file answers 404 at once; a created one is served within the TTL', async () => {
  writeFileSync(join(root, 'gone.txt'), 'here for now\n');
  assert.equal((await get('/gone.txt')).status, 200);
  unlinkSync(join(root, 'gone.txt'));
  assert.equal((await get('/gone.txt')).status, 404, 'removed: 404 at once (GET)');
  assert.equal((await get('/gone.txt', {}, 'HEAD')).status, 404, 'removed: 404 at once (HEAD, through send)');

  assert.equal((await get('/new.txt')).status, 404);
  writeFileSync(join(root, 'new.txt'), 'brand new\n');
  await pastTtl();
  const created = await get('/new.txt');
  assert.equal(created.status, 200);
  assert.equal(created.body.toString(), 'brand new\n');
  assert.deepEqual(errors, []);
});

test('a replaced file is served with its new content and validators at once', async () => {
  writeFileSync(join(root, 'page.txt'), 'version one\n');
  const first = await get('/page.txt');
  assert.equal(first.body.toString(), 'version one\n');
  writeFileSync(join(root, 'page.tmp'), 'version two, longer\n');
  renameSync(join(root, 'page.tmp'), join(root, 'page.txt')); // an atomic deploy
  const second = await get('/page.txt');
  assert.equal(second.body.toString(), 'version two, longer\n');
  assert.equal(second.headers['content-length'], String('version two, longer\n'.length));
  assert.notEqual(second.headers.etag, first.headers.etag);
  mkdirSync(join(root, 'was-a-file'));
  writeFileSync(join(root, 'will-be-dir'), 'a file\n');
  assert.equal((await get('/will-be-dir')).status, 200);
  rmSync(join(root, 'will-be-dir'));
  renameSync(join(root, 'was-a-file'), join(root, 'will-be-dir'));
  assert.equal((await get('/will-be-dir')).status, 404, 'replaced by a directory: not served as a file');
});

test('a precompressed variant created later is picked up within the TTL', async () => {
  const css = 'body { margin: 0 }\n'.repeat(20);
  writeFileSync(join(root, 'late.css'), css);
  const before = await get('/late.css', { 'accept-encoding': 'gzip' });
  assert.equal(before.headers['content-encoding'], undefined);
  assert.equal(before.headers.vary, undefined);
  writeFileSync(join(root, 'late.css.gz'), gzipSync(css));
  await pastTtl();
  const after = await get('/late.css', { 'accept-encoding': 'gzip' });
  assert.equal(after.headers['content-encoding'], 'gzip');
  assert.equal(after.headers.vary, 'Accept-Encoding');
  assert.match(String(after.headers['content-type']), /^text\/css/);
  assert.equal(gunzipSync(after.body).toString(), css);
  unlinkSync(join(root, 'late.css.gz'));
  const requests: Array<Record<string, string>> = [{ 'accept-encoding': 'gzip' }, { 'accept-encoding': 'gzip', range: 'bytes=0-3' }];
  for (const headers of requests) {
    const removed = await get('/late.css', headers);
    assert.ok(removed.status === 200 || removed.status === 206, 'a variant removed within the TTL: the file itself is served');
    assert.equal(removed.headers['content-encoding'], undefined);
    assert.equal(removed.body.toString(), css.slice(0, removed.status === 206 ? 4 : undefined));
  }
});

test('a plain GET of a small file answers with the very headers send gives', async () => {
  writeFileSync(join(root, 'same.json'), '{"same":true}\n');
  const fast = await get('/same.json');
  const viaSend = await get('/same.json', { 'if-none-match': '"something else"' }); // conditional: through send
  assert.equal(fast.status, 200);
  assert.equal(viaSend.status, 200);
  for (const h of ['content-type', 'content-length', 'etag', 'last-modified', 'cache-control', 'accept-ranges']) {
    assert.ok(fast.headers[h] !== undefined, `${h} is set`);
    assert.equal(fast.headers[h], viaSend.headers[h], h);
  }
  assert.deepEqual(fast.body, viaSend.body);
  const revalidated = await get('/same.json', { 'if-none-match': String(fast.headers.etag) });
  assert.equal(revalidated.status, 304, 'the ETag of the small-file path is the one send checks');
  const big = Buffer.alloc(200 * 1024, 'b');
  writeFileSync(join(root, 'big.bin'), big);
  const large = await get('/big.bin');
  assert.equal(large.status, 200);
  assert.equal(large.headers['content-length'], String(big.length));
  assert.deepEqual(large.body, big);
  writeFileSync(join(root, 'empty.txt'), '');
  const empty = await get('/empty.txt');
  assert.equal(empty.status, 200);
  assert.equal(empty.headers['content-length'], '0');
});

test('a file swapped for a symlink out of the root is never followed, even within the TTL', async () => {
  writeFileSync(join(root, 'swap.txt'), 'innocent\n');
  assert.equal((await get('/swap.txt')).body.toString(), 'innocent\n');
  unlinkSync(join(root, 'swap.txt'));
  symlinkSync(join(base, 'outside.txt'), join(root, 'swap.txt'));
  const within = await get('/swap.txt');
  assert.equal(within.status, 404, 'the small-file path does not follow a symlink put in place of the file');
  assert.ok(!within.body.toString().includes(SECRET));
  await pastTtl();
  const variants: Array<Record<string, string>> = [{}, { 'if-none-match': '"x"' }, { range: 'bytes=0-3' }];
  for (const headers of variants) {
    const r = await get('/swap.txt', headers);
    assert.equal(r.status, 404, JSON.stringify(headers));
    assert.ok(!r.body.toString().includes(SECRET));
  }
  assert.deepEqual(errors, []);
});
