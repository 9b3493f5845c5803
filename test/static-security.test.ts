// Static files must not leak anything outside the root: raw request lines over `net` (clients
// would normalize these paths), symlinks escaping the root, malformed URLs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadApp } from '../src/worker/app.js';

const SECRET = 'TOP-SECRET-OUTSIDE-THE-ROOT';
let base = '';
let port = 0;
let server: http.Server | undefined;
const errors: unknown[] = [];

before(async () => {
  base = mkdtempSync(join(tmpdir(), 'quiesce-static-sec-'));
  const root = join(base, 'root');
  mkdirSync(join(root, 'sub'), { recursive: true });
  mkdirSync(join(root, 'evil.example'));
  mkdirSync(join(base, 'outside-dir'));
  writeFileSync(join(base, 'outside.txt'), `${SECRET}\n`);
  writeFileSync(join(base, 'outside-dir', 'secret.txt'), `${SECRET}\n`);
  writeFileSync(join(root, 'index.html'), 'inside\n');
  writeFileSync(join(root, 'sub', 'file.txt'), 'sub file\n');
  writeFileSync(join(root, '.env'), `${SECRET}\n`);
  symlinkSync(join(base, 'outside.txt'), join(root, 'link-out.txt'));
  symlinkSync('../outside.txt', join(root, 'sub', 'rel-out.txt'));
  symlinkSync(join(base, 'outside-dir'), join(root, 'dir-out'));
  symlinkSync('sub/file.txt', join(root, 'link-in.txt'));
  symlinkSync('sub', join(root, 'dir-in'));
  symlinkSync('.env', join(root, 'env-link.txt'));
  const app = await loadApp({ kind: 'dir', root, autoindex: true }, { onError: (e) => errors.push(e) });
  server = http.createServer();
  server.on('request', app.listener);
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

after(async () => {
  if (server) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server?.close(() => resolve()));
  }
  rmSync(base, { recursive: true, force: true });
});

/** Sends a request line exactly as given and reads the whole answer. */
function raw(target: string, method = 'GET'): Promise<{ status: number; head: string; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const cut = text.indexOf('\r\n\r\n');
      const head = cut < 0 ? text : text.slice(0, cut);
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      resolve({ status, head, body: cut < 0 ? '' : text.slice(cut + 4) });
    });
    socket.write(`${method} ${target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
  });
}

const TRAVERSALS = [
  '/../outside.txt',
  '/../../outside.txt',
  '/sub/../../outside.txt',
  '/%2e%2e/outside.txt',
  '/%2E%2E/outside.txt',
  '/.%2e/outside.txt',
  '/%2e./outside.txt',
  '/..%2foutside.txt',
  '/..%2Foutside.txt',
  '/%2e%2e%2foutside.txt',
  '/sub/..%2f..%2foutside.txt',
  '/sub/%2e%2e/%2e%2e/outside.txt',
  '/..\\outside.txt',
  '/..%5coutside.txt',
  '/sub\\..\\..\\outside.txt',
  '/%5c..%5coutside.txt',
  '/index.html%00',
  '/index.html%00.txt',
  '/%00/../outside.txt',
  '/%c0%ae%c0%ae/outside.txt',
  '/%c0%ae%c0%ae%c0%afoutside.txt',
  '/%e0%80%ae%e0%80%ae/outside.txt',
  '/%c1%9c..%c1%9coutside.txt',
  '/%25%32%65%25%32%65/outside.txt',
  '//../outside.txt',
  '/./../outside.txt',
  'http://localhost/../outside.txt',
  'http://localhost/%2e%2e/outside.txt',
  '../outside.txt',
  '*',
];

test('no traversal out of the root, however the path is spelled', async () => {
  for (const target of TRAVERSALS) {
    const r = await raw(target);
    assert.ok(r.status === 400 || r.status === 403 || r.status === 404, `${target} answered ${r.status}`);
    assert.ok(!r.body.includes(SECRET), `${target} leaked the secret`);
  }
  assert.equal((await raw('/%2e%2e/outside.txt')).status, 400, 'an encoded ".." is a bad request');
  assert.equal((await raw('/%c0%ae%c0%ae/outside.txt')).status, 400, 'overlong UTF-8 is a bad request');
  assert.equal((await raw('/index.html%00')).status, 400, 'NUL is a bad request');
  assert.equal((await raw('/..%5coutside.txt')).status, 400, 'a backslash is a bad request');
  // double encoding decodes once only: a file literally named "%2e%2e" does not exist
  assert.equal((await raw('/%25%32%65%25%32%65/outside.txt')).status, 404);
});

test('malformed percent-encoding is 400; the server keeps serving', async () => {
  for (const target of ['/%', '/%zz', '/a%2', '/%ff', '/%e2%82']) {
    const r = await raw(target);
    assert.equal(r.status, 400, target);
  }
  const ok = await raw('/');
  assert.equal(ok.status, 200);
  assert.equal(ok.body, 'inside\n');
});

test('symlinks: pointing inside the root is fine, escaping it (file or directory) is 404', async () => {
  assert.equal((await raw('/link-in.txt')).body, 'sub file\n');
  assert.equal((await raw('/dir-in/file.txt')).body, 'sub file\n');
  for (const target of ['/link-out.txt', '/sub/rel-out.txt', '/dir-out/secret.txt', '/dir-out/', '/dir-out', '/env-link.txt']) {
    const r = await raw(target);
    assert.equal(r.status, 404, target);
    assert.ok(!r.body.includes(SECRET), `${target} leaked the secret`);
  }
});

test('autoindex never lists dotfiles nor serves them', async () => {
  const r = await raw('/sub/');
  assert.equal(r.status, 200);
  const top = await raw('/.env');
  assert.equal(top.status, 404);
  assert.ok(!top.body.includes(SECRET));
});

test('a redirect never leaves the site (no //host open redirect)', async () => {
  const r = await raw('//evil.example');
  assert.equal(r.status, 301);
  assert.match(r.head, /\r\nLocation: \/evil\.example\/\r\n/i);
  const abs = await raw('http://localhost/sub');
  assert.match(abs.head, /\r\nLocation: \/sub\/\r\n/i);
  assert.deepEqual(errors, []);
});
