// loadApp with exported apps: Express, Koa, Fastify, Hono, fetch handlers, CJS, hooks, errors.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { loadApp, AppError, resolveAppSpec, type LoadedApp } from '../src/worker/app.js';

const fixtures = fileURLToPath(new URL('../../test/fixtures/apps/', import.meta.url));
const fixture = (name: string): string => `${fixtures}${name}`;

type Served = { base: string; port: number; errors: Array<{ err: unknown; where: string }>; app: LoadedApp; close(): Promise<void> };
const open: Served[] = [];
after(async () => {
  await Promise.all(open.map((s) => s.close()));
});

/** Loads a fixture and serves it the way the worker core does, on 127.0.0.1:0. */
async function serveFixture(name: string): Promise<Served> {
  const errors: Array<{ err: unknown; where: string }> = [];
  const app = await loadApp({ kind: 'module', path: fixture(name) }, { onError: (err, where) => errors.push({ err, where }) });
  await app.init?.();
  const server = http.createServer();
  app.attach?.(server);
  server.on('request', app.listener);
  if (app.upgrade) server.on('upgrade', app.upgrade);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closed = false;
  const s: Served = {
    base: `http://127.0.0.1:${port}`,
    port,
    errors,
    app,
    close: async () => {
      if (closed) return;
      closed = true;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await app.onStop?.();
    },
  };
  open.push(s);
  return s;
}

async function loadError(name: string): Promise<AppError> {
  try {
    await loadApp({ kind: 'module', path: fixture(name) }, { onError: () => {}, adoptWaitMs: 200 });
  } catch (err) {
    assert.ok(err instanceof AppError, `expected an AppError, got ${String(err)}`);
    return err;
  }
  assert.fail(`loading ${name} should have failed`);
}

test('an exported Express app serves, including its own 500s and JSON bodies', async () => {
  const s = await serveFixture('express-export.mjs');
  assert.equal(s.app.kind, 'listener');
  const r = await fetch(`${s.base}/`);
  assert.equal(r.status, 200);
  assert.equal(await r.text(), 'hello from express');
  const port = (await (await fetch(`${s.base}/port`)).json()) as { localPort: number };
  assert.equal(port.localPort, s.port, 'the request came in on our own server');
  const j = await fetch(`${s.base}/json`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' });
  assert.deepEqual(await j.json(), { got: { a: 1 } });
  const boom = await fetch(`${s.base}/boom`);
  assert.equal(boom.status, 500);
  assert.equal(await boom.text(), 'express caught: route error');
  assert.equal(s.errors.length, 0, 'Express handled its own route error');
});

test('a Koa instance and a Koa callback are listeners', async () => {
  const k = await serveFixture('koa-instance.mjs');
  assert.equal(k.app.kind, 'listener');
  assert.deepEqual(await (await fetch(`${k.base}/x`)).json(), { hello: 'koa', path: '/x' });
  const teapot = await fetch(`${k.base}/boom`);
  assert.equal(teapot.status, 418);
  await teapot.arrayBuffer();
  const c = await serveFixture('koa-callback.mjs');
  assert.equal(await (await fetch(`${c.base}/`)).text(), 'koa callback');
});

test('an exported Fastify instance: ready() in init, routed without binding, close() on stop', async () => {
  const s = await serveFixture('fastify-export.mjs');
  assert.equal(s.app.kind, 'fastify');
  assert.deepEqual(await (await fetch(`${s.base}/`)).json(), { hello: 'fastify' });
  const e = await fetch(`${s.base}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"n":2}' });
  assert.deepEqual(await e.json(), { body: { n: 2 } });
  const nf = await fetch(`${s.base}/nope`);
  assert.equal(nf.status, 404);
  await nf.arrayBuffer();
  const mod = (await import(fixture('fastify-export.mjs'))) as { default: { server: http.Server } };
  assert.equal(mod.default.server.listening, false, "Fastify's own server never bound");
  await s.close();
  assert.equal((globalThis as { __fastifyClosed?: boolean }).__fastifyClosed, true, 'onStop ran fastify.close() and its onClose hooks');
});

test("a Fastify app's 'upgrade' listeners (added while booting) are known when loadApp resolves", async () => {
  const s = await serveFixture('fastify-ws.mjs');
  assert.equal(typeof s.app.upgrade, 'function');
  assert.equal(await (await fetch(`${s.base}/`)).text(), 'fastify with upgrades');
  const reply = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(s.port, '127.0.0.1', () => {
      socket.write('GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: x-test\r\n\r\n');
    });
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (text += d));
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
  });
  assert.match(reply, /^HTTP\/1\.1 101 /);
  assert.match(reply, /upgraded \/up\n$/);
  const plain = await serveFixture('fastify-export.mjs');
  assert.equal(plain.app.upgrade, undefined, 'no upgrade handler when the app has none');
});

test('a Hono app (export default app) goes through the fetch bridge', async () => {
  const s = await serveFixture('hono.mjs');
  assert.equal(s.app.kind, 'fetch');
  assert.equal(await (await fetch(`${s.base}/`)).text(), 'hello from hono');
  assert.deepEqual(await (await fetch(`${s.base}/user/42?q=x%20y`)).json(), { id: '42', q: 'x y' });
  const e = await fetch(`${s.base}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"ok":true}' });
  assert.deepEqual(await e.json(), { got: { ok: true } });
  const c = await fetch(`${s.base}/cookies`);
  assert.deepEqual(c.headers.getSetCookie(), ['a=1; Path=/', 'b=2; Path=/']);
  await c.text();
});

/** Raw HTTP/1.1 request with http.request so that we control chunking and timing. */
function request(
  port: number,
  opts: { method?: string; path: string; headers?: Record<string, string>; body?: string[]; gapMs?: number },
): Promise<{ status: number; headers: http.IncomingHttpHeaders; chunks: Array<{ at: number; data: string }>; body: string }> {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const req = http.request({ host: '127.0.0.1', port, method: opts.method ?? 'GET', path: opts.path, headers: opts.headers, agent: false }, (res) => {
      const chunks: Array<{ at: number; data: string }> = [];
      res.setEncoding('utf8');
      res.on('data', (d: string) => chunks.push({ at: Date.now() - start, data: d }));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, chunks, body: chunks.map((c) => c.data).join('') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    void (async () => {
      for (const part of opts.body ?? []) {
        req.write(part);
        if (opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
      }
      req.end();
    })();
  });
}

test('a fetch handler streams its response body chunk by chunk', async () => {
  const s = await serveFixture('fetch-stream.mjs');
  assert.equal(s.app.kind, 'fetch');
  const r = await request(s.port, { path: '/stream' });
  assert.equal(r.status, 200);
  assert.equal(r.headers['transfer-encoding'], 'chunked');
  assert.equal(r.body, 'chunk0\nchunk1\nchunk2\nchunk3\nchunk4\n');
  assert.ok(r.chunks.length >= 3, `expected the body in several pieces, got ${r.chunks.length}`);
  const spread = (r.chunks.at(-1)?.at ?? 0) - (r.chunks[0]?.at ?? 0);
  assert.ok(spread >= 40, `chunks arrived over ${spread} ms: streamed, not buffered`);
});

test('a fetch handler gets the request body as a stream, before the client finished sending', async () => {
  const s = await serveFixture('fetch-stream.mjs');
  const parts = ['alpha-', 'beta-', 'gamma-', 'delta'];
  const echo = await request(s.port, { method: 'POST', path: '/echo', headers: { 'content-type': 'text/x-test' }, body: parts, gapMs: 60 });
  assert.equal(echo.status, 200);
  assert.equal(echo.body, parts.join(''));
  assert.equal(echo.headers['content-type'], 'text/x-test');
  assert.equal(echo.headers['x-method'], 'POST');
  // The echo streams: its first bytes came back while the client still had ~180 ms of body to send.
  const firstAt = echo.chunks[0]?.at ?? Infinity;
  const lastAt = echo.chunks.at(-1)?.at ?? 0;
  assert.ok(lastAt - firstAt >= 100, `the echo arrived in pieces over ${lastAt - firstAt} ms`);
  const counted = await request(s.port, { method: 'POST', path: '/count', body: parts, gapMs: 30 });
  const c = JSON.parse(counted.body) as { chunks: number; bytes: number };
  assert.equal(c.bytes, parts.join('').length);
  assert.ok(c.chunks >= 2, `the handler read ${c.chunks} chunks: not buffered whole`);
  // a large body with backpressure
  const big = 'x'.repeat(4 * 1024 * 1024);
  const b = await fetch(`${s.base}/count`, { method: 'POST', body: big });
  assert.deepEqual(((await b.json()) as { bytes: number }).bytes, big.length);
});

test("a fetch handler's Request signal aborts when the client goes away", async () => {
  const s = await serveFixture('fetch-stream.mjs');
  const g = globalThis as { __fetchAborted?: number };
  const before = g.__fetchAborted ?? 0;
  const ac = new AbortController();
  const pending = fetch(`${s.base}/hang`, { signal: ac.signal }).catch((e: unknown) => e);
  await new Promise((r) => setTimeout(r, 100));
  ac.abort();
  await pending;
  const deadline = Date.now() + 2000;
  while ((g.__fetchAborted ?? 0) === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(g.__fetchAborted, before + 1);
  assert.equal(s.errors.length, 0, 'an aborted request is no error');
});

test('an endless response body is cancelled when the client goes away', async () => {
  const s = await serveFixture('fetch-stream.mjs');
  const g = globalThis as { __foreverCancelled?: number };
  await new Promise<void>((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: s.port, path: '/forever', agent: false }, (res) => {
      assert.equal(res.headers['content-type'], 'text/event-stream');
      let ticks = 0;
      res.on('data', (d: Buffer) => {
        ticks += String(d).split('tick').length - 1;
        if (ticks >= 3) {
          req.destroy();
          resolve();
        }
      });
    });
    req.on('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNRESET' ? undefined : reject(e)));
  });
  const deadline = Date.now() + 2000;
  while (!g.__foreverCancelled && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(g.__foreverCancelled, 1, 'the response stream was cancelled');
  assert.deepEqual(s.errors, []);
});

test('fetch handler errors answer 500 and are reported; the URL keeps host and query', async () => {
  const s = await serveFixture('fetch-stream.mjs');
  const ok = await fetch(`${s.base}/plain?a=1`);
  assert.equal(await ok.text(), `GET /plain?a=1 host=127.0.0.1:${s.port}`);
  const thrown = await fetch(`${s.base}/throw`);
  assert.equal(thrown.status, 500);
  await thrown.text();
  const bad = await fetch(`${s.base}/bad`);
  assert.equal(bad.status, 500);
  await bad.text();
  assert.equal(s.errors.length, 2);
  assert.match(String((s.errors[0]?.err as Error).message), /fetch handler threw/);
  assert.match(String((s.errors[1]?.err as Error).message), /instead of a Response/);
  const head = await fetch(`${s.base}/plain`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), '');
});

test('a body the fetch handler ignores or reads in part does not stall the keep-alive connection', async () => {
  const s = await serveFixture('fetch-stream.mjs');
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const big = Buffer.alloc(3 * 1024 * 1024, 97);
  const call = (method: string, path: string, body?: Buffer): Promise<{ status: number; body: string; reused: boolean }> =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: s.port, method, path, agent }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, reused: req.reusedSocket }));
      });
      req.on('error', reject);
      req.end(body);
    });
  try {
    const ignored = await call('POST', '/ignore-body', big);
    assert.equal(ignored.body, 'ignored the body');
    const after1 = await call('GET', '/plain');
    assert.equal(after1.body, `GET /plain host=127.0.0.1:${s.port}`);
    const partial = await call('POST', '/read-one', big);
    assert.match(partial.body, /^read \d+ bytes, then answered$/);
    const after2 = await call('GET', '/plain');
    assert.equal(after2.status, 200);
    assert.ok(after2.reused, 'the same keep-alive connection served the next request');
  } finally {
    agent.destroy();
  }
  assert.deepEqual(s.errors, []);
});

test('a one-chunk fetch response gets a Content-Length, a streamed one is chunked', async () => {
  const s = await serveFixture('hono.mjs');
  const r = await request(s.port, { path: '/' });
  assert.equal(r.headers['content-length'], String('hello from hono'.length));
  assert.equal(r.headers['transfer-encoding'], undefined);
  const f = await serveFixture('fetch-stream.mjs');
  const st = await request(f.port, { path: '/stream' });
  assert.equal(st.headers['content-length'], undefined);
});

test('`export const kind` overrides the parameter count; an ambiguous function is refused', async () => {
  const s = await serveFixture('kind-override.mjs');
  assert.equal(s.app.kind, 'fetch');
  assert.equal(await (await fetch(`${s.base}/`)).text(), 'override ok, got a Request');
  const err = await loadError('ambiguous.mjs');
  assert.equal(err.code, 'APP_BAD_EXPORT');
  assert.match(err.message, /export const kind/);
});

test('a CommonJS listener and an exported http.Server', async () => {
  const c = await serveFixture('cjs-listener.cjs');
  assert.equal(await (await fetch(`${c.base}/a?b`)).text(), 'cjs GET /a?b');
  const s = await serveFixture('export-server.mjs');
  assert.equal(await (await fetch(`${s.base}/z`)).text(), 'exported server /z');
});

test('a listener throwing synchronously answers 500, is reported, and the next request works', async () => {
  const s = await serveFixture('throwing-listener.mjs');
  const agent = new http.Agent({ keepAlive: true });
  try {
    const get = (path: string): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> =>
      new Promise((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port: s.port, path, agent }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (d: string) => (body += d));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
          })
          .on('error', reject);
      });
    const r1 = await get('/throw');
    assert.equal(r1.status, 500);
    assert.equal(r1.headers['x-half-done'], undefined, 'headers set before the throw are dropped');
    const r2 = await get('/');
    assert.equal(r2.status, 200);
    assert.equal(r2.body, 'still serving');
    const r3 = await get('/reject');
    assert.equal(r3.status, 500);
    assert.equal((await get('/')).body, 'still serving');
  } finally {
    agent.destroy();
  }
  assert.deepEqual(
    s.errors.map((e) => [e.where, (e.err as Error).message]),
    [
      ['request', 'listener threw synchronously'],
      ['request', 'listener rejected'],
    ],
  );
});

test('init, onDrain, onStop and attach exports are surfaced', async () => {
  const s = await serveFixture('hooks.mjs');
  const mod = (await import(fixture('hooks.mjs'))) as { calls: string[] };
  assert.deepEqual(mod.calls, ['init', 'attach:Server']);
  assert.equal(typeof s.app.onDrain, 'function');
  await s.app.onDrain?.();
  assert.equal(await (await fetch(`${s.base}/`)).text(), 'calls=init,attach:Server,onDrain');
  await s.close();
  assert.deepEqual(mod.calls, ['init', 'attach:Server', 'onDrain', 'onStop']);
});

test('a defineApp() object carries its hooks as methods, called on the object (the package imports itself by name)', async () => {
  const s = await serveFixture('define-app.mjs');
  const mod = (await import(fixture('define-app.mjs'))) as { calls: string[] };
  assert.equal(s.app.kind, 'fetch');
  assert.deepEqual(mod.calls, ['init:bound', 'attach:Server']);
  await s.app.onDrain?.();
  assert.equal(await (await fetch(`${s.base}/x`)).text(), 'calls=init:bound,attach:Server,onDrain path=/x');
  await s.close();
  assert.deepEqual(mod.calls, ['init:bound', 'attach:Server', 'onDrain', 'onStop']);
});

test('load failures: syntax error, top-level throw, missing package', async () => {
  const syntax = await loadError('syntax-error.mjs');
  assert.equal(syntax.code, 'APP_LOAD_FAILED');
  assert.ok(syntax.message.includes(fixture('syntax-error.mjs')), syntax.message);
  assert.match(syntax.message, /missing \) after argument list/);
  assert.ok(syntax.message.includes(`(at ${fixture('syntax-error.mjs')}:3)`), `the message says where: ${syntax.message}`);
  const thrown = await loadError('throws-top-level.mjs');
  assert.equal(thrown.code, 'APP_LOAD_FAILED');
  assert.match(thrown.message, /database url missing at top level/);
  assert.ok(thrown.message.includes(fixture('throws-top-level.mjs')));
  assert.ok(thrown.message.includes(`(at ${fixture('throws-top-level.mjs')}:2:7)`), `the message says where it threw: ${thrown.message}`);
  assert.ok(thrown.cause instanceof Error);
  const missing = await loadError('missing-dep.mjs');
  assert.equal(missing.code, 'APP_LOAD_FAILED');
  assert.match(missing.message, /quiesce-fixture-no-such-package/);
});

test('exporting nothing usable is APP_BAD_EXPORT saying what to export', async () => {
  const t0 = Date.now();
  const none = await loadError('exports-nothing.mjs');
  assert.equal(none.code, 'APP_BAD_EXPORT');
  assert.match(none.message, /export default a request listener/);
  assert.match(none.message, /fetch/);
  assert.ok(Date.now() - t0 < 2000, 'the wait for a listen() call is bounded');
  const bad = await loadError('bad-default.mjs');
  assert.equal(bad.code, 'APP_BAD_EXPORT');
  assert.match(bad.message, /default export \(an object of class Object\) is not usable/);
});

test('resolveAppSpec: none → site, directory → dir, file → module (realpath), else APP_NOT_FOUND', () => {
  const statics = { autoindex: true, fileCache: 1024, staticMaxAge: 60_000 };
  assert.deepEqual(resolveAppSpec(undefined, '/', statics), { kind: 'site', fileCache: 1024, staticMaxAge: 60_000 });
  assert.deepEqual(resolveAppSpec('.', fixtures, statics), { kind: 'dir', root: fixtures.replace(/\/$/, ''), ...statics });
  assert.deepEqual(resolveAppSpec('hono.mjs', fixtures, statics), { kind: 'module', path: fixture('hono.mjs') });
  assert.throws(
    () => resolveAppSpec('no-such-app.js', fixtures, statics),
    (err: unknown) => err instanceof AppError && err.code === 'APP_NOT_FOUND' && err.message.includes(`${fixtures}no-such-app.js`),
  );
  assert.throws(() => resolveAppSpec('/dev/null', '/', statics), (err: unknown) => err instanceof AppError && err.code === 'APP_NOT_FOUND');
});

test('the master and a plain app worker load no undici (nor its http2, zlib) (an ESM import of node:http would on Node >= 22)', async () => {
  const { execFileSync } = await import('node:child_process');
  const script = `
    await import(${JSON.stringify(fileURLToPath(new URL('../src/master/master.js', import.meta.url)))});
    await import(${JSON.stringify(fileURLToPath(new URL('../src/worker/worker.js', import.meta.url)))});
    const heavy = process.moduleLoadList.filter((m) => /\\b(http2|zlib)\\b|undici/.test(m));
    process.stdout.write(JSON.stringify(heavy));`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
  assert.deepEqual(JSON.parse(out), [], `on ${process.version}`);
});
