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
import send from 'send';
import { createStaticListener, FileCache, LookupCache, LOOKUP_TTL_MS } from '../src/worker/static.js';

/** The content cache's bound in this file's server: small, so that the bound test fills it. */
const CACHE_BOUND = 300 * 1024;

const SECRET = 'TOP-SECRET-OUTSIDE-THE-ROOT';
let base = '';
let root = '';
let url = '';
let nocacheUrl = '';
let server: http.Server | undefined;
let nocache: http.Server | undefined;
let fileCache: FileCache | null = null;
const errors: unknown[] = [];

before(async () => {
  base = mkdtempSync(join(tmpdir(), 'quiesce-static-cache-'));
  root = join(base, 'root');
  mkdirSync(root);
  writeFileSync(join(base, 'outside.txt'), `${SECRET}\n`);
  const listener = await createStaticListener(root, { autoindex: false, onError: (e) => errors.push(e), fileCache: CACHE_BOUND });
  fileCache = listener.fileCache;
  server = http.createServer(listener);
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  nocache = http.createServer(await createStaticListener(root, { autoindex: false, onError: (e) => errors.push(e), fileCache: 0 }));
  await new Promise<void>((resolve) => nocache?.listen(0, '127.0.0.1', resolve));
  nocacheUrl = `http://127.0.0.1:${(nocache.address() as AddressInfo).port}`;
});

after(async () => {
  for (const srv of [server, nocache]) {
    if (!srv) continue;
    srv.closeAllConnections();
    await new Promise<void>((resolve) => srv.close(() => resolve()));
  }
  rmSync(base, { recursive: true, force: true });
});

function get(path: string, headers: Record<string, string> = {}, method = 'GET', at = url): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${at}${path}`, { method, headers, agent: false }, (res) => {
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

test('a removed file answers 404 within the TTL (at once without the content cache); a created one is served within the TTL', async () => {
  writeFileSync(join(root, 'gone.txt'), 'here for now\n');
  assert.equal((await get('/gone.txt')).status, 200);
  assert.equal((await get('/gone.txt', {}, 'GET', nocacheUrl)).status, 200);
  unlinkSync(join(root, 'gone.txt'));
  assert.equal((await get('/gone.txt', {}, 'GET', nocacheUrl)).status, 404, 'removed: 404 at once without the content cache (GET)');
  assert.equal((await get('/gone.txt', {}, 'HEAD', nocacheUrl)).status, 404, 'removed: 404 at once without the content cache (HEAD)');
  await pastTtl();
  assert.equal((await get('/gone.txt')).status, 404, 'removed: 404 within the TTL (GET)');
  assert.equal((await get('/gone.txt', {}, 'HEAD')).status, 404, 'removed: 404 within the TTL (HEAD)');

  assert.equal((await get('/new.txt')).status, 404);
  writeFileSync(join(root, 'new.txt'), 'brand new\n');
  await pastTtl();
  const created = await get('/new.txt');
  assert.equal(created.status, 200);
  assert.equal(created.body.toString(), 'brand new\n');
  assert.deepEqual(errors, []);
});

test('a replaced or changed file is served with its new content and validators within the TTL', async () => {
  writeFileSync(join(root, 'page.txt'), 'version one\n');
  const first = await get('/page.txt');
  assert.equal(first.body.toString(), 'version one\n');
  writeFileSync(join(root, 'page.tmp'), 'version two, longer\n');
  renameSync(join(root, 'page.tmp'), join(root, 'page.txt')); // an atomic deploy
  await pastTtl();
  const second = await get('/page.txt');
  assert.equal(second.body.toString(), 'version two, longer\n');
  assert.equal(second.headers['content-length'], String('version two, longer\n'.length));
  assert.notEqual(second.headers.etag, first.headers.etag);
  writeFileSync(join(root, 'page.txt'), 'version three, in place\n'); // changed in place, same inode
  await pastTtl();
  const third = await get('/page.txt');
  assert.equal(third.body.toString(), 'version three, in place\n');
  assert.notEqual(third.headers.etag, second.headers.etag);
  mkdirSync(join(root, 'was-a-file'));
  writeFileSync(join(root, 'will-be-dir'), 'a file\n');
  assert.equal((await get('/will-be-dir')).status, 200);
  assert.equal((await get('/will-be-dir', {}, 'GET', nocacheUrl)).status, 200);
  rmSync(join(root, 'will-be-dir'));
  renameSync(join(root, 'was-a-file'), join(root, 'will-be-dir'));
  assert.equal((await get('/will-be-dir', {}, 'GET', nocacheUrl)).status, 404, 'replaced by a directory within the TTL: not served as a file');
  await pastTtl();
  assert.equal((await get('/will-be-dir')).status, 301, 'replaced by a directory: redirected to it after the TTL');
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
  await pastTtl();
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
  assert.ok(within.status === 404 || within.body.toString() === 'innocent\n', 'within the TTL: the cached content or 404');
  assert.ok(!within.body.toString().includes(SECRET));
  const direct = await get('/swap.txt', {}, 'GET', nocacheUrl);
  assert.equal(direct.status, 404, 'without the content cache: the symlink put in place of the file is not followed');
  await pastTtl();
  const variants: Array<Record<string, string>> = [{}, { 'if-none-match': '"x"' }, { range: 'bytes=0-3' }];
  for (const headers of variants) {
    const r = await get('/swap.txt', headers);
    assert.equal(r.status, 404, JSON.stringify(headers));
    assert.ok(!r.body.toString().includes(SECRET));
  }
  assert.deepEqual(errors, []);
});

test('issue 14.8: a file or directory swapped for a symlink out of the root within the lookup window is never served, whatever the request', async () => {
  const outsideDir = join(base, 'outside-dir');
  mkdirSync(outsideDir);
  const bigSecret = Buffer.alloc(150 * 1024, `${SECRET}\n`);
  writeFileSync(join(outsideDir, 'f.txt'), `${SECRET}\n`);
  writeFileSync(join(outsideDir, 'big.bin'), bigSecret);
  const small = 'small and innocent\n';
  const big = Buffer.alloc(200 * 1024, 'innocent big\n'); // past 64 KB: once through send
  const requests: Array<[string, Record<string, string>, string]> = [
    ['range', { range: 'bytes=0-40' }, 'GET'],
    ['plain', {}, 'GET'],
    ['if-none-match', { 'if-none-match': '"nope"' }, 'GET'],
    ['if-modified-since', { 'if-modified-since': new Date(0).toUTCString() }, 'GET'],
    ['head', {}, 'HEAD'],
  ];
  const cases: Array<{ at: string; name: string }> = [
    { at: url, name: 'with the content cache' },
    { at: nocacheUrl, name: 'without the content cache' },
  ];
  for (const { at, name } of cases) {
    for (const [label, headers, method] of requests) {
      for (const [file, content] of [['s.txt', small], ['b.bin', big]] as const) {
        const tag = `${name}, ${label}, ${file}`;
        // a file replaced by a symlink
        const dir = join(root, `race-${label}`);
        rmSync(dir, { recursive: true, force: true });
        mkdirSync(dir);
        writeFileSync(join(dir, file), content);
        const path = `/race-${label}/${file}`;
        assert.equal((await get(path, headers, method, at)).status < 400, true, `${tag}: served before the swap`);
        unlinkSync(join(dir, file));
        symlinkSync(join(outsideDir, file === 's.txt' ? 'f.txt' : 'big.bin'), join(dir, file));
        const swapped = await get(path, headers, method, at);
        assert.ok(!swapped.body.toString().includes(SECRET), `${tag}: the file outside the root was served`);
        assert.ok(swapped.status === 404 || Number(swapped.headers['content-length']) <= Buffer.byteLength(content), `${tag}: ${swapped.status}, length ${swapped.headers['content-length']}`);
        if (at === nocacheUrl) assert.equal(swapped.status, 404, `${tag}: refused at once without the content cache`);
        // a directory on the way replaced by a symlink to a directory outside
        const sub = join(root, `race-dir-${label}`);
        rmSync(sub, { recursive: true, force: true });
        mkdirSync(sub);
        writeFileSync(join(sub, file === 's.txt' ? 'f.txt' : 'big.bin'), content);
        const subPath = `/race-dir-${label}/${file === 's.txt' ? 'f.txt' : 'big.bin'}`;
        assert.equal((await get(subPath, headers, method, at)).status < 400, true, `${tag}: served before the directory swap`);
        rmSync(sub, { recursive: true });
        symlinkSync(outsideDir, sub);
        const dirSwapped = await get(subPath, headers, method, at);
        assert.ok(!dirSwapped.body.toString().includes(SECRET), `${tag}: served through a directory swapped for a symlink`);
        assert.ok(dirSwapped.status === 404 || Number(dirSwapped.headers['content-length']) <= Buffer.byteLength(content), `${tag} (directory): ${dirSwapped.status}, length ${dirSwapped.headers['content-length']}`);
        if (at === nocacheUrl) assert.equal(dirSwapped.status, 404, `${tag}: refused at once through a swapped directory without the content cache`);
      }
    }
  }
  assert.deepEqual(errors, []);
});

test('the content cache answers GET, HEAD, 304, 412, Range and 416 byte for byte as the uncached path and send do', async () => {
  const sendServer = http.createServer((req, res) => {
    send(req, new URL(req.url ?? '/', 'http://x').pathname, { root }).pipe(res);
  });
  await new Promise<void>((resolve) => sendServer.listen(0, '127.0.0.1', resolve));
  const sendUrl = `http://127.0.0.1:${(sendServer.address() as AddressInfo).port}`;
  try {
    const content = Buffer.alloc(5000);
    for (let i = 0; i < content.length; i++) content[i] = (i * 131) & 0xff;
    writeFileSync(join(root, 'agree.bin'), content);
    const big = Buffer.alloc(1_300_000);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) >>> 3;
    writeFileSync(join(root, 'agree-big.bin'), big); // past the cache's entry bound: streamed from its fd
    for (const file of ['/agree.bin', '/agree-big.bin']) {
      const first = await get(file);
      const etag = String(first.headers.etag);
      const lm = String(first.headers['last-modified']);
      const cases: Array<[Record<string, string>, string]> = [
        [{}, 'GET'], [{}, 'HEAD'],
        [{ 'if-none-match': etag }, 'GET'], [{ 'if-none-match': '"other"' }, 'GET'], [{ 'if-modified-since': lm }, 'HEAD'],
        [{ 'if-match': '"other"' }, 'GET'], [{ 'if-match': etag }, 'GET'], [{ 'if-unmodified-since': new Date(0).toUTCString() }, 'GET'],
        [{ range: 'bytes=0-0' }, 'GET'], [{ range: 'bytes=100-299' }, 'GET'], [{ range: 'bytes=-10' }, 'GET'], [{ range: 'bytes=4990-' }, 'GET'],
        [{ range: 'bytes=262000-262200' }, 'GET'], [{ range: 'bytes=99999999-' }, 'GET'], [{ range: 'bytes=0-1,5-6' }, 'GET'], [{ range: 'items=0-1' }, 'GET'],
        [{ range: 'bytes=10-20', 'if-range': etag }, 'GET'], [{ range: 'bytes=10-20', 'if-range': '"stale"' }, 'GET'], [{ range: 'bytes=10-20', 'if-range': lm }, 'HEAD'],
      ];
      for (const [headers, method] of cases) {
        const tag = `${file} ${method} ${JSON.stringify(headers)}`;
        const cached = await get(file, headers, method);
        const again = await get(file, headers, method); // a hit for sure
        const uncached = await get(file, headers, method, nocacheUrl);
        const viaSend = await get(file, headers, method, sendUrl);
        for (const r of [cached, again, uncached]) {
          assert.equal(r.status, viaSend.status, `${tag}: status`);
          assert.deepEqual(r.body, r.status >= 400 ? r.body : viaSend.body, `${tag}: body`);
          for (const h of ['content-type', 'content-length', 'content-range', 'etag', 'last-modified', 'cache-control', 'accept-ranges']) {
            if (r.status >= 400 && h !== 'content-range') continue; // error pages are ours
            assert.equal(r.headers[h], viaSend.headers[h], `${tag}: ${h}`);
          }
        }
      }
    }
  } finally {
    sendServer.closeAllConnections();
    await new Promise<void>((resolve) => sendServer.close(() => resolve()));
  }
  assert.deepEqual(errors, []);
});

test('the content cache never holds more than its byte bound, and serves files past it from disk', async () => {
  assert.ok(fileCache, 'the cache is on');
  mkdirSync(join(root, 'fill'));
  const sizes = [10_000, 90_000, 120_000, 200_000, 50_000, 299_000, 301_000, 1_000];
  for (let round = 0; round < 3; round++) {
    for (const [i, size] of sizes.entries()) {
      const content = Buffer.alloc(size, String.fromCharCode(97 + i));
      if (round === 0) writeFileSync(join(root, 'fill', `${i}.bin`), content);
      const r = await get(`/fill/${i}.bin`);
      assert.equal(r.status, 200);
      assert.deepEqual(r.body, content, `file ${i} (${size} bytes) byte for byte`);
      assert.ok(fileCache.bytes <= CACHE_BOUND, `after file ${i}: ${fileCache.bytes} bytes held, bound ${CACHE_BOUND}`);
    }
  }
  assert.ok(fileCache.bytes > 0, 'the cache holds something');
  assert.ok(fileCache.size >= 1);
});
