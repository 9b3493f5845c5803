/**
 * HTTP at its edges, from a client on a raw socket: the status each malformed, oversized or slow
 * request gets, one rate-limited log line for it, and a request that is still arriving (a client
 * pausing inside its headers) never taken for an idle connection: not by the keep-alive sweep,
 * not at a stop; at the graceful timeout it is forced (answered 503 and counted), not cut.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, cleanup, stopServer, waitExit, raw, rawConnection, sleep, waitFor, FIXTURES } from './helpers/server.js';

const PID_APP = join(FIXTURES, 'core/pid-app.mjs');

const statusOf = (out: string): number => Number(/^HTTP\/1\.1 (\d{3}) /.exec(out)?.[1] ?? 0);

test('each bad request gets its own status (400, 408, 414, 431) and one bad-request line per kind per 10 s, the repeats counted', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '1', '--max-header-size', '2048', '--headers-timeout', '1s'] });
  try {
    const [w] = s.workerPids();
    const cases: Array<[string, number]> = [
      ['GARBAGE\r\n\r\n', 400],
      ['GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n', 400],
      ['GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc', 400], // smuggling
      [`GET / HTTP/1.1\r\nX-Big: ${'a'.repeat(4096)}\r\n\r\n`, 431],
      [`GET /${'a'.repeat(100_000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 414],
    ];
    for (const [bad, status] of cases) assert.equal(statusOf(await raw(s.address, bad)), status, JSON.stringify(bad.slice(0, 40)));
    // a request whose headers stop coming: 408 at --headers-timeout, one line for it (not two)
    const slow = rawConnection(s.address, 10_000);
    slow.socket.write('GET / HTTP/1.1\r\nHo');
    const r = await slow.done;
    assert.equal(r.how, 'end', JSON.stringify(r));
    assert.equal(statusOf(r.data), 408, r.data);
    await waitFor(() => /bad-request .*status=408/.test(s.err()), 5_000, 'the 408 logged');
    assert.equal(s.err().match(/bad-request .*status=408/g)?.length, 1, s.err());
    // the same garbage 30 times: one line, then the repeats counted in one line (at the latest at exit)
    for (let i = 0; i < 30; i++) assert.equal(statusOf(await raw(s.address, 'BOGUS / HTTP/1.1\r\n\r\n')), 400);
    assert.equal((await raw(s.address, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).includes(' 200 '), true);
    assert.deepEqual(s.workerPids(), [w], 'no worker crashed');
    await stopServer(s);
    const lines = s.err().split('\n').filter((l) => /bad-request/.test(l));
    const methodLines = lines.filter((l) => /bad-request .*error=HPE_INVALID_METHOD/.test(l));
    assert.equal(methodLines.length, 1, lines.join('\n'));
    const repeated = lines.find((l) => /bad-request-repeated .*error=HPE_INVALID_METHOD/.test(l));
    assert.match(repeated ?? '', / times=30 /, lines.join('\n')); // GARBAGE (1) + BOGUS (30): 30 repeats
    assert.ok(lines.length <= 12, `at most a line and a repeats line per kind:\n${lines.join('\n')}`);
  } finally {
    await cleanup(s);
  }
});

test('a client pausing inside its headers is not idle: the keep-alive sweep leaves it, a stop waits for it and answers it', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '1', '--keepalive-timeout', '1s', '--idle-grace', '300ms'] });
  try {
    // longer than the keep-alive timeout and its sweep (1 s + 1 s + up to 250 ms), then the rest
    const c = rawConnection(s.address, 15_000);
    c.socket.write('GET / HTTP/1.1\r\nHo');
    await sleep(3_000);
    assert.equal(c.socket.destroyed, false, 'the sweep closed a connection with a request arriving');
    c.socket.write('st: x\r\nConnection: close\r\n\r\n');
    const r = await c.done;
    assert.equal(statusOf(r.data), 200, JSON.stringify(r));

    // at a stop: the idle grace (300 ms) passes while the headers are still coming
    const d = rawConnection(s.address, 15_000);
    d.socket.write('GET / HTTP/1.1\r\nHo');
    await sleep(200);
    process.kill(s.pid, 'SIGTERM');
    await waitFor(() => /retiring/.test(s.err()), 5_000, 'the worker retiring');
    await sleep(1_000);
    d.socket.write('st: x\r\n\r\n');
    const e = await d.done;
    assert.equal(statusOf(e.data), 200, `cut at the stop: ${JSON.stringify(e)}`);
    assert.match(e.data, /connection: close/i);
    assert.equal((await waitExit(s)).code, 0);
    assert.match(s.err(), /stopped .*forced=0 /);
  } finally {
    await cleanup(s);
  }
});

test('a request still arriving when the graceful timeout ends is forced: answered 503 and counted, not cut', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '1', '--graceful-timeout', '1500ms', '--idle-grace', '200ms'] });
  try {
    const c = rawConnection(s.address, 15_000);
    c.socket.write('GET / HTTP/1.1\r\nHo');
    await sleep(200);
    process.kill(s.pid, 'SIGTERM');
    const r = await c.done;
    assert.equal(statusOf(r.data), 503, JSON.stringify(r));
    assert.match(r.data, /quiesce-forced: graceful-timeout/i);
    assert.equal((await waitExit(s)).code, 0);
    assert.match(s.err(), /stopped .*forced=1 /);
  } finally {
    await cleanup(s);
  }
});
