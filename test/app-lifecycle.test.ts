/** The app contract inside real workers: async errors retire a worker gracefully; WebSockets drain. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import WebSocket from 'ws';
import { startServer, cleanup, stopServer, waitExit, get, sleep, waitFor, FIXTURES } from './helpers/server.js';

test('an async throw retires the worker: a replacement starts first, a parallel slow request on it completes', async () => {
  const s = await startServer({ args: [join(FIXTURES, 'core/async-throw.mjs'), '--workers', '1'] });
  try {
    const [w] = s.workerPids();
    const slow = get(s.address, '/slow');
    await sleep(100);
    assert.equal((await get(s.address, '/throw')).status, 200);
    const r = await slow;
    assert.equal(r.status, 200);
    assert.equal(r.body.trim(), String(w));
    await waitFor(() => s.workerPids().length === 1 && s.workerPids()[0] !== w, 10_000, 'the replacement');
    assert.notEqual((await get(s.address, '/')).body.trim(), String(w));
    // the log lines travel through the worker's pipe and the master's log: they may trail the
    // process table by a few ms, so wait for them rather than read them once
    await waitFor(() => /uncaughtException error="async boom"/.test(s.err()), 5_000, 'the uncaughtException logged');
    await waitFor(() => new RegExp(`worker-replace pid=${w} reason=error`).test(s.err()), 5_000, 'the worker-replace logged');
    // an unhandled rejection is the same
    const [w2] = s.workerPids();
    await get(s.address, '/reject');
    await waitFor(() => s.workerPids().length === 1 && s.workerPids()[0] !== w2, 10_000, 'the second replacement');
    await waitFor(() => /unhandledRejection error="rejected boom"/.test(s.err()), 5_000, 'the unhandledRejection logged');
    await waitFor(() => new RegExp(`worker-replace pid=${w2} reason=error detail="unhandledRejection: rejected boom"`).test(s.err()), 5_000, 'its worker-replace logged');
    await stopServer(s);
  } finally {
    await cleanup(s);
  }
});

test('a throwing handler: logged with its source-mapped stack and the request, once per distinct error per interval, the repeats counted', async () => {
  const app = join(FIXTURES, 'core/sourcemap/throws.mjs'); // compiled from throws.mts with its map
  const logDir = mkdtempSync(join(tmpdir(), 'quiesce-test-log-'));
  const log = join(logDir, 'error.log');
  const s = await startServer({ args: [app, '--workers', '1', '--error-log', log, '--error-log-format', 'json'] });
  try {
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => get(s.address, `/boom?secret=${i}`)));
    assert.deepEqual([...new Set(answers.map((a) => a.status))], [500]);
    assert.equal((await get(s.address, '/')).status, 200);
    await stopServer(s);
    const records = readFileSync(log, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const errors = records.filter((r) => r.event === 'app-error');
    const repeats = records.filter((r) => r.event === 'app-error-repeated');
    assert.ok(errors.length >= 1 && errors.length <= 2, `20 throws within ms of each other are logged once (twice if they straddle an interval):\n${JSON.stringify(errors)}`);
    const first = errors[0]!;
    assert.equal(first.where, 'request');
    assert.equal(first.method, 'GET');
    assert.equal(first.path, '/boom', 'the path, without its query');
    assert.equal(first.error, 'handler boom');
    assert.match(String(first.stack), /^Error: handler boom\n\s+at app \(.*throws\.mts:14:11\)/, 'the stack points into the TypeScript source');
    assert.ok(!JSON.stringify(records).includes('secret'), 'the query stays out of the log');
    const counted = repeats.reduce((n, r) => n + Number(r.times), 0);
    assert.equal(errors.length + counted, 20, `every throw is logged or counted: ${JSON.stringify(repeats)}`);
  } finally {
    await cleanup(s);
    rmSync(logDir, { recursive: true, force: true });
  }
});

function openWs(url: string): Promise<{ ws: WebSocket; closed: Promise<{ code: number; reason: string }> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const closed = new Promise<{ code: number; reason: string }>((res) => ws.on('close', (code, reason) => res({ code, reason: reason.toString() })));
    ws.on('error', () => { /* the close event tells */ });
    ws.once('open', () => resolve({ ws, closed }));
    ws.once('unexpected-response', () => reject(new Error('upgrade refused')));
  });
}

test('WebSockets: a stop waits for them and onDrain() ends them cleanly; without onDrain the graceful timeout forces them', async () => {
  const s = await startServer({ args: [join(FIXTURES, 'apps/ws-attach.mjs'), '--workers', '1'] });
  try {
    const { ws, closed } = await openWs(`ws://${s.address}/ws`);
    const echo = new Promise<string>((res) => ws.once('message', (m) => res(m.toString())));
    ws.send('hi');
    assert.equal(await echo, 'echo: hi');
    await stopServer(s);
    const c = await closed;
    assert.equal(c.code, 1001);
    assert.equal(c.reason, 'server draining');
  } finally {
    await cleanup(s);
  }
  const n = await startServer({ args: [join(FIXTURES, 'core/ws-no-drain.mjs'), '--workers', '1', '--graceful-timeout', '1'] });
  try {
    const { closed } = await openWs(`ws://${n.address}/`);
    const t0 = Date.now();
    process.kill(n.pid, 'SIGTERM');
    await sleep(500);
    assert.ok(n.proc.exitCode === null, 'the upgraded connection keeps the worker until the graceful timeout');
    const c = await closed;
    assert.ok(Date.now() - t0 >= 900, 'ended at the graceful timeout, not before');
    assert.equal(c.code, 1006); // ended, not closed cleanly
    await waitExit(n, 10_000);
    assert.match(n.err(), /stopped forced=1 /);
  } finally {
    await cleanup(n);
  }
});
