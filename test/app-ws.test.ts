// A WebSocket app (package ws) attached to the worker's http.Server through `attach(server)`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import { loadApp } from '../src/worker/app.js';

const fixture = fileURLToPath(new URL('../../test/fixtures/apps/ws-attach.mjs', import.meta.url));

function opened(ws: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
}

test('attach(server) gives a ws app the server: echo works, HTTP too, onDrain closes sockets with 1001', async () => {
  const errors: unknown[] = [];
  const app = await loadApp({ kind: 'module', path: fixture }, { onError: (e) => errors.push(e) });
  assert.equal(app.kind, 'listener');
  assert.equal(typeof app.attach, 'function');
  const server = http.createServer();
  app.attach?.(server);
  server.on('request', app.listener);
  if (app.upgrade) server.on('upgrade', app.upgrade);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
  try {
    await opened(ws);
    const replies: string[] = [];
    const two = new Promise<void>((resolve) =>
      ws.on('message', (d) => {
        replies.push(String(d));
        if (replies.length === 2) resolve();
      }),
    );
    ws.send('one');
    ws.send('two');
    await two;
    assert.deepEqual(replies, ['echo: one', 'echo: two']);
    assert.equal(await (await fetch(`http://127.0.0.1:${port}/`)).text(), 'http still works');

    const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })));
    await app.onDrain?.();
    assert.deepEqual(await closed, { code: 1001, reason: 'server draining' });
  } finally {
    ws.terminate();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await app.onStop?.();
  }
  assert.deepEqual(errors, []);
});
