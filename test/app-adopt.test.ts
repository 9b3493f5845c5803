// Adoption: app modules that call listen() themselves are served through the worker's server,
// and nothing binds the ports they asked for.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import { loadApp, AppError, type LoadedApp } from '../src/worker/app.js';

const fixtures = fileURLToPath(new URL('../../test/fixtures/apps/', import.meta.url));
const fixture = (name: string): string => `${fixtures}${name}`;
const originalListen = net.Server.prototype.listen;

type Served = { base: string; port: number; errors: unknown[]; app: LoadedApp; close(): Promise<void> };
const open: Served[] = [];
after(async () => {
  await Promise.all(open.map((s) => s.close()));
});

async function serveFixture(name: string): Promise<Served> {
  const errors: unknown[] = [];
  const app = await loadApp({ kind: 'module', path: fixture(name) }, { onError: (err) => errors.push(err) });
  assert.equal(net.Server.prototype.listen, originalListen, 'listen() is restored after loading');
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

/** Whether this process can bind host:port right now (so nobody else holds it). */
function canBind(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

async function loadError(name: string): Promise<AppError> {
  try {
    await loadApp({ kind: 'module', path: fixture(name) }, { onError: () => {}, adoptWaitMs: 300 });
  } catch (err) {
    assert.ok(err instanceof AppError, `expected an AppError, got ${String(err)}`);
    assert.equal(net.Server.prototype.listen, originalListen, 'listen() is restored after a failed load');
    return err;
  }
  assert.fail(`loading ${name} should have failed`);
}

test('Express calling app.listen(3000) is adopted: served through our server, port 3000 never bound', async (t) => {
  const freeBefore = await canBind(3000, '127.0.0.1');
  const s = await serveFixture('express-listen.mjs');
  assert.equal(s.app.kind, 'adopted');
  const r = (await (await fetch(`${s.base}/`)).json()) as { adopted: boolean; localPort: number };
  assert.deepEqual(r, { adopted: true, localPort: s.port });
  const seen = (globalThis as { __expressListen?: { address: AddressInfo; listening: boolean } }).__expressListen;
  assert.ok(seen, "the app's listen callback ran");
  assert.equal(seen.address.port, 3000, 'address() reports the port the app asked for');
  assert.equal(seen.listening, true);
  if (freeBefore) assert.equal(await canBind(3000, '127.0.0.1'), true, 'port 3000 is still free: the app bound nothing');
  else t.diagnostic('port 3000 was busy before the test: the "never bound" check was skipped');
});

test("Fastify calling fastify.listen() itself is adopted (and its second 'localhost' server too)", async () => {
  const free4 = await canBind(3001, '127.0.0.1');
  const free6 = await canBind(3001, '::1');
  const s = await serveFixture('fastify-listen.mjs');
  assert.equal(s.app.kind, 'adopted');
  const r = (await (await fetch(`${s.base}/`)).json()) as { hello: string; localPort: number };
  assert.deepEqual(r, { hello: 'adopted fastify', localPort: s.port });
  const seen = (globalThis as { __fastifyListen?: { err: string | null; address: string } }).__fastifyListen;
  assert.ok(seen, "fastify's listen callback ran");
  assert.equal(seen.err, null);
  assert.match(seen.address, /:3001$/);
  if (free4) assert.equal(await canBind(3001, '127.0.0.1'), true, '127.0.0.1:3001 was not bound');
  if (free6) assert.equal(await canBind(3001, '::1'), true, '[::1]:3001 was not bound');
});

test("@hono/node-server's serve() is adopted", async () => {
  const s = await serveFixture('hono-serve.mjs');
  assert.equal(s.app.kind, 'adopted');
  assert.equal(await (await fetch(`${s.base}/`)).text(), 'hono via serve()');
});

test('an adopted server with a ws upgrade listener serves WebSockets; onStop closes it', async () => {
  const s = await serveFixture('http-listen-ws.mjs');
  assert.equal(s.app.kind, 'adopted');
  assert.equal(typeof s.app.upgrade, 'function');
  assert.equal(await (await fetch(`${s.base}/`)).text(), 'adopted http server');
  const ws = new WebSocket(`ws://127.0.0.1:${s.port}/`);
  try {
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const reply = new Promise<string>((resolve) => ws.once('message', (d) => resolve(String(d))));
    ws.send('hi');
    assert.equal(await reply, 'adopted echo: hi');
  } finally {
    ws.terminate();
  }
  await s.close();
  assert.equal((globalThis as { __adoptedClosed?: boolean }).__adoptedClosed, true, "the adopted server's 'close' fired");
});

test('an app both exported and listened on: the export serves, upgrades go to its ws server', async () => {
  const s = await serveFixture('export-and-listen-ws.mjs');
  assert.equal(s.app.kind, 'listener');
  assert.equal(await (await fetch(`${s.base}/`)).text(), 'exported express');
  assert.equal(typeof s.app.upgrade, 'function');
  const ws = new WebSocket(`ws://127.0.0.1:${s.port}/`);
  try {
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const reply = new Promise<string>((resolve) => ws.once('message', (d) => resolve(String(d))));
    ws.send('x');
    assert.equal(await reply, 'merged echo: x');
  } finally {
    ws.terminate();
  }
});

test('a listen() that comes a little after loading is still adopted', async () => {
  const t0 = Date.now();
  const s = await serveFixture('late-listen.mjs');
  assert.ok(Date.now() - t0 < 2500);
  assert.equal(await (await fetch(`${s.base}/`)).text(), 'late but adopted');
});

test('listening on two ports is APP_ADOPT_FAILED naming both and what to export', async () => {
  const err = await loadError('listen-two-ports.mjs');
  assert.equal(err.code, 'APP_ADOPT_FAILED');
  assert.match(err.message, /port 3003 and port 3004/);
  assert.match(err.message, /export default a request listener/);
  assert.ok(err.message.includes(fixture('listen-two-ports.mjs')));
});

test('listening with a plain net.Server is APP_ADOPT_FAILED', async () => {
  const err = await loadError('listen-net.mjs');
  assert.equal(err.code, 'APP_ADOPT_FAILED');
  assert.match(err.message, /net\.Server that is not an HTTP server/);
});

test('listen() outside of a load binds for real again', async () => {
  assert.equal(net.Server.prototype.listen, originalListen);
  const srv = http.createServer((_req, res) => res.end('real'));
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  try {
    const port = (srv.address() as AddressInfo).port;
    assert.equal(await (await fetch(`http://127.0.0.1:${port}/`)).text(), 'real');
  } finally {
    await new Promise<void>((resolve) => srv.close(() => resolve()));
  }
});
