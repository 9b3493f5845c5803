// The probe judged against real servers built to misbehave (test/fixtures/probe-server.ts),
// each a child process on 127.0.0.1 port 0 or a unix socket. Counts are asserted exactly
// where the fixture makes them deterministic; nothing here asserts on timing.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { runCli, runProbe, startFixture, stopAllFixtures, type ProbeResult } from './fixtures/probe-helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'quiesce-probe-test-'));
after(async () => {
  await stopAllFixtures();
  rmSync(dir, { recursive: true, force: true });
});

/** Every request has exactly one outcome. */
function assertAccounted(r: ProbeResult): void {
  assert.equal(r.ok + r.refused + r.cut + r.ka_race + r.forced + r.timeout + r.other, r.sent);
  assert.equal(r.outcomes.length, r.sent);
  assert.ok(r.sent > 0, 'sent something');
}

/** Asked slots are either sent or reported behind: never silently fewer. */
function rateSlots(r: ProbeResult): number {
  return r.outcomes.filter((o) => o.mode === 'rate').length + r.rate.behind;
}

const JSON_KEYS = [
  'ok', 'refused', 'cut', 'cut_after_bytes', 'ka_race', 'forced', 'timeout', 'other',
  'ok_by_status', 'other_by_code', 'status', 'reasons', 'sent', 'latency_ms', 'rate', 'commands', 'duration_s', 'generations',
].sort();

describe('probe against real servers', () => {
  test('well-behaved server, rate and keep-alive together, through the CLI: all ok, pass, exit 0', async () => {
    const f = await startFixture('good');
    try {
      const timeline = join(dir, 'good.html');
      const r = await runCli(['--target', f.target, '--rate', '50', '--keepalive', '3', '--duration', '1', '--json', '--timeline', timeline]);
      assert.equal(r.code, 0, r.stderr);
      const j = JSON.parse(r.stdout) as ProbeResult;
      assert.deepEqual(Object.keys(j).sort(), JSON_KEYS);
      assert.equal(j.status, 'pass');
      assert.ok(j.ok > 50, `ok ${j.ok}`);
      assert.deepEqual([j.refused, j.cut, j.cut_after_bytes, j.ka_race, j.forced, j.timeout, j.other], [0, 0, 0, 0, 0, 0, 0]);
      assert.equal(j.sent, j.ok);
      assert.deepEqual(j.ok_by_status, { '200': j.ok });
      assert.deepEqual(j.generations, { '7': j.ok });
      assert.equal(j.rate.asked, 50);
      assert.ok(j.latency_ms.p50 !== null && j.latency_ms.max !== null && j.latency_ms.p50 <= j.latency_ms.max);
      const html = readFileSync(timeline, 'utf8');
      assert.match(html, /^<!doctype html>/);
      assert.match(html, /<svg [^>]*>[\s\S]*ok \d+[\s\S]*<\/svg>/);
    } finally {
      await f.stop();
    }
  });

  test('chunked responses over a unix socket: all ok', async () => {
    const f = await startFixture('good', join(dir, 'good.sock'));
    try {
      const r = await runProbe({ target: f.target, path: '/chunked', keepalive: 2, rate: 20, durationS: 0.5 });
      assertAccounted(r);
      assert.equal(r.ok, r.sent);
      assert.equal(r.status, 'pass');
      assert.equal(rateSlots(r), 10);
    } finally {
      await f.stop();
    }
  });

  test('unix socket path that does not exist: refused (ENOENT), fail: nothing completed', async () => {
    const r = await runProbe({ target: `unix:${join(dir, 'missing.sock')}`, rate: 20, keepalive: 1, durationS: 0.5 });
    assertAccounted(r);
    assert.equal(r.refused, r.sent);
    assert.ok(r.outcomes.every((o) => o.code === 'ENOENT'));
    assert.equal(r.status, 'fail');
    assert.match(r.reasons.join('\n'), /^no request completed \(of \d+ sent, \d+ refused\)/);
  });

  test('closed port: refused, and through the CLI a FAIL with its reason (a dead target proves nothing)', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const a = s.address();
        s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
      });
    });
    const r = await runProbe({ target: `127.0.0.1:${port}`, rate: 20, keepalive: 2, durationS: 0.5 });
    assertAccounted(r);
    assert.equal(r.refused, r.sent);
    assert.ok(r.outcomes.every((o) => o.code === 'ECONNREFUSED'));
    assert.equal(r.status, 'fail');
    assert.equal(rateSlots(r), 10);
    const cli = await runCli(['--target', `127.0.0.1:${port}`, '--rate', '20', '--duration', '0.5']);
    assert.equal(cli.code, 1, cli.stdout + cli.stderr);
    assert.match(cli.stdout, /status: FAIL/);
    assert.match(cli.stdout, /fail: no request completed \(of \d+ sent, \d+ refused\): is the target serving\?/);
  });

  test('reset in the middle of the response body: cut after bytes, every one', async () => {
    const f = await startFixture('reset-mid');
    try {
      const r = await runProbe({ target: f.target, rate: 20, durationS: 0.5 });
      assertAccounted(r);
      assert.equal(r.cut, r.sent);
      assert.equal(r.cut_after_bytes, r.sent);
      const sentBytes = 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789'.length;
      assert.ok(r.outcomes.every((o) => o.bytes === sentBytes), 'head and 10 body bytes arrived, no more');
      assert.equal(r.status, 'fail');
    } finally {
      await f.stop();
    }
  });

  test('accepts, reads, closes without answering: cut with no bytes, on fresh connections never ka_race', async () => {
    const f = await startFixture('close-silent');
    try {
      const r = await runProbe({ target: f.target, rate: 20, keepalive: 2, durationS: 0.5 });
      assertAccounted(r);
      assert.equal(r.cut, r.sent);
      assert.equal(r.cut_after_bytes, 0);
      assert.equal(r.ka_race, 0);
      assert.equal(r.status, 'fail');
    } finally {
      await f.stop();
    }
  });

  test('never answers: timeout, every one', async () => {
    const f = await startFixture('silent');
    try {
      const r = await runProbe({ target: f.target, rate: 10, keepalive: 1, durationS: 0.5, timeoutS: 0.3 });
      assertAccounted(r);
      assert.equal(r.timeout, r.sent);
      assert.equal(rateSlots(r), 5);
      assert.equal(r.status, 'fail');
    } finally {
      await f.stop();
    }
  });

  test('socket cap reached: the slots not opened are reported as behind, never silently dropped', async () => {
    const f = await startFixture('silent');
    try {
      const r = await runProbe({ target: f.target, rate: 40, durationS: 0.5, timeoutS: 0.3, maxSockets: 3 });
      assertAccounted(r);
      assert.equal(r.timeout, r.sent);
      assert.ok(r.rate.behind > 0, `behind ${r.rate.behind}`);
      assert.equal(r.sent + r.rate.behind, 20);
      assert.ok(r.rate.achieved < 40, `achieved ${r.rate.achieved}`);
    } finally {
      await f.stop();
    }
  });

  test('503 with quiesce-forced: forced, counted apart from ok, pass', async () => {
    const f = await startFixture('forced');
    try {
      const r = await runProbe({ target: f.target, rate: 20, keepalive: 2, durationS: 0.5 });
      assertAccounted(r);
      assert.equal(r.forced, r.sent);
      assert.equal(r.ok, 0);
      assert.deepEqual(r.ok_by_status, {});
      assert.equal(r.status, 'pass');
    } finally {
      await f.stop();
    }
  });

  test('keep-alive connections closed by the server after their 3rd response: ka_race, not cut', async () => {
    const f = await startFixture('ka-close');
    try {
      const clients = 4;
      const r = await runProbe({ target: f.target, keepalive: clients, durationS: 1 });
      assertAccounted(r);
      assert.ok(r.ka_race > 0, 'ka_race > 0');
      assert.deepEqual([r.cut, r.timeout, r.other, r.refused], [0, 0, 0, 0]);
      assert.equal(r.ok + r.ka_race, r.sent);
      // Each connection: 3 ok, then the 4th request meets the close. Per client, at most 3 ok are
      // left over at the end without their ka_race.
      const rest = r.ok - 3 * r.ka_race;
      assert.ok(rest >= 0 && rest <= 3 * clients, `ok ${r.ok} vs ka_race ${r.ka_race}`);
      assert.ok(r.outcomes.every((o) => o.kind === 'ok' || (o.kind === 'ka_race' && o.reused && o.bytes === 0)));
      assert.equal(r.status, 'fail');
    } finally {
      await f.stop();
    }
  });

  test('plain server.close() of a busy server under load, via --at/--run kill: cut > 0, then refused; exit 1', async () => {
    const f = await startFixture('busy-close');
    try {
      const timeline = join(dir, 'busy.svg');
      const r = await runCli([
        '--target', f.target, '--rate', '100', '--duration', '1.2', '--timeout', '5',
        '--at', '0.4', '--run', `kill -TERM ${f.pid}`, '--json', '--timeline', timeline,
      ]);
      assert.equal(r.code, 1, r.stderr);
      const j = JSON.parse(r.stdout) as ProbeResult;
      assert.ok(j.cut > 0, `cut ${j.cut}: the accept queue was reset`);
      assert.ok(j.refused > 0, `refused ${j.refused}: nothing listens after close`);
      assert.ok(j.ok > 0, `ok ${j.ok}`);
      assert.equal(j.timeout, 0);
      assert.equal(j.status, 'fail');
      assert.equal(j.commands.length, 1);
      assert.equal(j.commands[0]!.exit_code, 0);
      assert.equal(j.commands[0]!.command, `kill -TERM ${f.pid}`);
      const svg = readFileSync(timeline, 'utf8');
      assert.match(svg, /^<svg /);
      assert.match(svg, new RegExp(`kill -TERM ${f.pid} \\(exit 0\\)`));
    } finally {
      await f.stop();
    }
  });
});

describe('probe runs and stops by itself', () => {
  test('commands: shell exit code and output tail, functions, and a command that runs too long is killed', async () => {
    const f = await startFixture('good');
    try {
      const r = await runProbe({
        target: f.target,
        rate: 10,
        durationS: 0.4,
        commandTimeoutS: 0.5,
        commands: [
          { atS: 0.1, run: 'echo out; echo err >&2; exit 3' },
          { atS: 0.2, run: () => 'from a function' },
          { atS: 0.2, run: 'sleep 30' },
        ],
      });
      const [shell, fn, slow] = r.commands;
      assert.deepEqual([shell!.exit_code, shell!.stdout_tail, shell!.stderr_tail], [3, 'out\n', 'err\n']);
      assert.ok(shell!.started_s >= 0.1);
      assert.deepEqual([fn!.exit_code, fn!.stdout_tail], [0, 'from a function']);
      assert.equal(slow!.signal, 'SIGKILL');
      assert.match(slow!.error ?? '', /timed out/);
      assert.equal(r.status, 'pass');
    } finally {
      await f.stop();
    }
  });

  test('an abort signal ends the load early', async () => {
    const f = await startFixture('good');
    try {
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 200);
      const r = await runProbe({ target: f.target, rate: 50, keepalive: 1, durationS: 30, signal: ac.signal });
      assert.ok(r.duration_s < 10, `ran ${r.duration_s} s`);
      assert.equal(r.ok, r.sent);
      assert.ok(rateSlots(r) < 1500);
    } finally {
      await f.stop();
    }
  });

  test('CLI usage errors exit 2 with one line naming the flag', async () => {
    const cases: [string[], string][] = [
      [['--rate', '5'], '--target'],
      [['--target', 'nope'], '--target'],
      [['--target', '127.0.0.1:1', '--rate', 'abc'], '--rate'],
      [['--target', '127.0.0.1:1', '--bogus'], '--bogus'],
      [['--target', '127.0.0.1:1', '--at', '1'], '--at/--run'],
      [['--target', 'no.such.host.invalid:80'], '--target'],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli(args)));
    results.forEach((r, i) => {
      const [args, flag] = cases[i]!;
      assert.equal(r.code, 2, args.join(' '));
      assert.equal(r.stdout, '');
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.ok(r.stderr.startsWith(`quiesce probe: ${flag}`), r.stderr);
    });
  });
});
