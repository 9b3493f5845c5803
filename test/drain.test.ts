/**
 * The promise: a graceful stop under load cuts nothing. Every connection that reached the server
 * runs to completion or is refused. Judged by the probe, with the kernel's own queue figure read
 * before the stop, against a control (plain server.close()) on the same load that must show cuts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { connect, type Socket } from 'node:net';
import { writeFileSync } from 'node:fs';
import { runProbe, type ProbeResult } from '../src/probe/index.js';
import { levelShares } from '../src/master/drain.js';
import { startServer, cleanup, waitExit, waitFor, alive, get, sleep, FIXTURES } from './helpers/server.js';
import { listenQueue } from './helpers/kernel.js';
import { assertNothingCut, summary } from './helpers/outcomes.js';
import { asNobody, forNobody, skipFor, testDir, WHO, type Who } from './helpers/unprivileged.js';

/**
 * Every drain test runs as root and as an unprivileged user (nobody, entered by the test: the
 * master itself is unprivileged), whose socket filter the kernel refuses since 5d39580f68e6: the
 * reuseport gate must hold for both.
 */
const user = (who: Who): 'nobody' | undefined => (who === 'nobody' ? 'nobody' : undefined);
/** A fresh directory the server of `who` can make a unix socket in. */
function sockDir(who: Who): string {
  return testDir('quiesce-unix-', who);
}

const PID_APP = join(FIXTURES, 'core/pid-app.mjs');

/** An answer to the drain message this much later than a peer's is a busy worker's (both read it within a few ms when idle). */
const LATE_ACK_MS = 10;

/** `PID:n,PID:n` of a drain-closed field, by pid. */
function byPid(line: string, field: string): Map<string, number> {
  const v = new RegExp(`\\b${field}=(\\S+)`).exec(line)?.[1] ?? '';
  return new Map(v.split(',').filter(Boolean).map((x) => [x.split(':')[0]!, Number(x.split(':')[1])] as [string, number]));
}

/**
 * The split of the drained connections (each worker's own batch plus what the master handed it)
 * is even, unless the worker that took less had cause: more requests in flight at the gate (the
 * shares level the loads) or a later answer to its drain message (busy with a burst it had
 * accepted, it read the message late: the master handed its share to the other meanwhile).
 */
function assertLevelSplit(line: string, acceptedInDrain: number): void {
  const taken = byPid(line, 'per_worker');
  const inflight = byPid(line, 'inflight_at_gate');
  const ack = byPid(line, 'ack_ms');
  const drained = [...taken.values()].reduce((a, b) => a + b, 0);
  assert.ok(drained >= acceptedInDrain, `per-worker figures cover the drain: ${line}`);
  if (drained < 16) return;
  const [most, mostN] = [...taken].sort((a, b) => b[1] - a[1])[0]!;
  if (mostN <= drained * 0.8) return;
  const cause = [...inflight.keys()].filter((p) => p !== most)
    .some((p) => (inflight.get(p) ?? 0) > (inflight.get(most) ?? 0) || (ack.get(p) ?? Infinity) >= (ack.get(most) ?? 0) + LATE_ACK_MS);
  assert.ok(cause, `one worker took most of the queue without cause (no peer busier at the gate or later to answer): ${line}`);
}
/** Work per request: a few ms of CPU, so that the load below is above what 2 workers serve. */
const BURN = '/?burn=4';
const RATE = 900;

/** Load `target`; at `atS` record the kernel's queue and send SIGTERM to `pid`. */
async function stopUnderLoad(target: string, pid: number, port: number, o: { rate?: number; keepalive?: number; path?: string; atS?: number; durationS?: number; signal?: NodeJS.Signals } = {}): Promise<{ probe: ProbeResult; queued: number }> {
  let queued = -1;
  const probe = await runProbe({
    target, path: o.path ?? BURN, rate: o.rate ?? RATE, keepalive: o.keepalive ?? 0, durationS: o.durationS ?? 2.5, timeoutS: 15,
    commands: [{ atS: o.atS ?? 1.2, run: () => { queued = port > 0 ? listenQueue(port) : 0; process.kill(pid, o.signal ?? 'SIGTERM'); } }],
  });
  return { probe, queued };
}

/**
 * The control: the same load against a plain server.close() (as `who`, listening on `host`,
 * loaded through `clientHost`) must show cuts, or the test sees nothing.
 */
async function control(who: Who, host = '127.0.0.1', clientHost = host, o: { rate?: number } = {}): Promise<void> {
  const script = join(FIXTURES, 'core/plain-close.mjs');
  const [cmd, args] = who === 'nobody' ? asNobody(process.execPath, [forNobody(script), host]) : [process.execPath, [script, host]];
  const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      createInterface({ input: c.stdout! }).once('line', (l) => resolve(Number(/listening on (\d+)/.exec(l)?.[1])));
      c.once('exit', () => reject(new Error('control server exited')));
    });
    const { probe, queued } = await stopUnderLoad(clientHost.includes(':') ? `[${clientHost}]:${port}` : `${clientHost}:${port}`, c.pid!, port, o);
    assert.ok(queued >= 5, `control: Recv-Q ${queued}`);
    console.log(`# control (${who}, ${host}): queued at stop ${queued}; ${summary(probe)}`);
    assert.ok(probe.cut > 0, `plain server.close() must cut: ${summary(probe)}`);
  } finally {
    c.kill('SIGKILL');
  }
}

test("the drain's shares level the workers' loads: the least loaded fill up first, none goes to a worker above the level", () => {
  assert.deepEqual(levelShares(500, [0, 0]), [250, 250]);
  assert.deepEqual(levelShares(500, [0, 1]), [250, 249]); // (1/(1+inflight) weights gave 333 and 166)
  assert.deepEqual(levelShares(100, [300, 0]), [0, 100]);
  assert.deepEqual(levelShares(10, [0, 4, 30]), [7, 3, 0]);
  assert.deepEqual(levelShares(0, [2, 0]), [0, 0]);
  assert.deepEqual(levelShares(7, []), []);
});

for (const [who, mode] of [['root', 'reuseport'], ['nobody', 'reuseport'], ['root', 'filter']] as const) {
  test(`stop under load as ${who} (${mode} gate): 0 cut with a full kernel queue, while plain server.close() on the same load cuts`, { skip: skipFor(who, mode === 'filter' ? 'the socket filter needs CAP_NET_ADMIN' : undefined) }, async () => {
    const s = await startServer({ args: [PID_APP, '--workers', '2'], user: user(who), env: mode === 'filter' ? { QUIESCE_DRAIN_MODE: 'filter' } : {} });
    try {
      assert.match(s.out(), new RegExp(`drain-mode=${mode}\\b`), s.err());
      const { probe, queued } = await stopUnderLoad(s.address, s.pid, s.port);
      assert.ok(queued >= 20, `the kernel queue must hold connections at the stop to prove anything: Recv-Q ${queued}`);
      assertNothingCut(probe);
      assert.ok(probe.refused > 0, `clients after the gate are refused: ${summary(probe)}`);
      assert.equal((await waitExit(s)).code, 0);
      console.log(`# quiesce (${who}, ${mode}): queued at stop ${queued}; ${summary(probe)}; ${/drain-closed .*/.exec(s.err())?.[0]}`);
      const closed = /drain-closed .*accepted_in_drain=(\d+).*left_at_close=(\d+).*mode=(\w+).*$/m.exec(s.err());
      assert.ok(closed, s.err());
      assert.equal(closed[2], '0');
      assert.equal(closed[3], mode);
      assertLevelSplit(closed[0], Number(closed[1]));
    } finally {
      await cleanup(s);
    }
    if (mode !== 'filter') await control(who);
  });
}

for (const who of WHO) test(`keep-alive clients during a stop as ${who}: 0 cut, 0 ka_race`, { skip: skipFor(who) }, async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '2', '--idle-grace', '300ms'], user: user(who) });
  try {
    const { probe } = await stopUnderLoad(s.address, s.pid, s.port, { rate: 150, keepalive: 16, path: '/?burn=1', atS: 1.0, durationS: 2.2 });
    assertNothingCut(probe);
    assert.ok(probe.ok > 100, summary(probe));
    assert.equal((await waitExit(s)).code, 0);
  } finally {
    await cleanup(s);
  }
});

test('a keep-alive request already running when the stop begins is answered with Connection: close, and its connection ends with it', async () => {
  // Serving, a worker does not follow each response (Connections' plain mode): the stop must adopt
  // the ones in flight, or this response goes out keep-alive and the connection waits out the idle grace.
  const s = await startServer({ args: [join(FIXTURES, 'status/hold-app.mjs'), '--workers', '1', '--idle-grace', '5s'] });
  const sock = connect(s.port, '127.0.0.1');
  try {
    let data = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => { data += d; });
    const ended = new Promise<number>((resolve) => sock.once('end', () => resolve(Date.now())));
    sock.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    await waitFor(() => /\r\n\r\n\d+\n$/.test(data), 5000, 'the first response');
    assert.doesNotMatch(data, /connection: close/i, 'the first response keeps the connection');
    data = '';
    const release = join(s.dir, 'release');
    sock.write(`GET /?hold=${encodeURIComponent(release)} HTTP/1.1\r\nhost: x\r\n\r\n`);
    await waitFor(async () => (JSON.parse((await get(s.admin, '/server-status?json')).body) as { scoreboard: string }).scoreboard === 'W', 5000, 'the held request to reach the app');
    process.kill(s.pid, 'SIGTERM');
    await waitFor(() => /retiring/.test(s.err()), 5000, 'the worker to start retiring');
    writeFileSync(release, '');
    await waitFor(() => /\r\n\r\n\d+\n$/.test(data), 5000, 'the held response');
    const answeredAt = Date.now();
    assert.match(data, /^HTTP\/1\.1 200 /);
    assert.match(data, /\r\nconnection: close\r\n/i, data);
    const endedAt = await Promise.race([ended, sleep(4000).then(() => Infinity)]);
    assert.ok(endedAt - answeredAt < 2000, `the connection ended ${endedAt - answeredAt} ms after its response (idle grace 5 s)`);
    assert.equal((await waitExit(s)).code, 0);
  } finally {
    sock.destroy();
    await cleanup(s);
  }
});

for (const [name, listen, target, controlHost, controlClient] of [
  ['IPv6 [::1]', '[::1]:0', (a: string) => a, '::1', '::1'],
  ['a bare port (dual-stack ::), reached over IPv4', '0', (a: string) => `127.0.0.1:${/:(\d+)$/.exec(a)![1]}`, '::', '127.0.0.1'],
] as const) {
  for (const who of WHO) test(`stop under load on ${name} as ${who}: 0 cut`, { skip: skipFor(who) }, async () => {
    const s = await startServer({ args: [PID_APP, '--workers', '2', '--listen', listen], user: user(who) });
    try {
      const { probe, queued } = await stopUnderLoad(target(s.address), s.pid, s.port, { rate: 700 });
      assert.ok(queued >= 5, `Recv-Q ${queued}`);
      assert.match(s.out(), /drain-mode=reuseport\b/);
      assertNothingCut(probe);
      assert.ok(probe.refused > 0, summary(probe));
      assert.equal((await waitExit(s)).code, 0);
    } finally {
      await cleanup(s);
    }
    await control(who, controlHost, controlClient, { rate: 700 });
  });
}

for (const who of WHO) test(`stop under load on a unix socket as ${who}: 0 cut, late clients get ENOENT`, { skip: skipFor(who) }, async () => {
  const path = join(sockDir(who), 'app.sock');
  const s = await startServer({ args: [PID_APP, '--workers', '2', '--listen', path], user: user(who) });
  try {
    const { probe } = await stopUnderLoad(`unix:${path}`, s.pid, 0, { rate: 500 });
    assertNothingCut(probe);
    assert.ok(probe.refused > 0, summary(probe));
    assert.equal((await waitExit(s)).code, 0);
  } finally {
    await cleanup(s);
  }
});

for (const who of WHO) test(`K slow requests past --graceful-timeout are forced as ${who}: K on the client and in the log`, { skip: skipFor(who) }, async () => {
  const K = 3;
  const s = await startServer({ args: [PID_APP, '--workers', '2', '--graceful-timeout', '1'], user: user(who) });
  try {
    const slow = Array.from({ length: K }, () => get(s.address, '/?sleep=8000'));
    await sleep(300);
    process.kill(s.pid, 'SIGTERM');
    const rs = await Promise.all(slow);
    for (const r of rs) {
      assert.equal(r.status, 503);
      assert.equal(r.headers['quiesce-forced'], 'graceful-timeout');
    }
    assert.equal((await waitExit(s)).code, 0);
    assert.match(s.err(), new RegExp(`stopped forced=${K} `));
  } finally {
    await cleanup(s);
  }
});

for (const who of WHO) {
  for (const [name, env] of [['listen(fd, 0) and a drain', { QUIESCE_DRAIN_MODE: 'fallback' }], ['no native module, a plain close', { QUIESCE_NATIVE: 'off' }]] as const) {
    test(`fallback (${name}) as ${who}: says so at start, and counts what it cut`, { skip: skipFor(who) }, async () => {
      const s = await startServer({ args: [PID_APP, '--workers', '2'], env, user: user(who) });
      try {
        assert.match(s.out(), /drain-mode=fallback/);
        assert.match(s.err(), /\[alert\] .*drain-mode mode=fallback/);
        const { probe } = await stopUnderLoad(s.address, s.pid, s.port);
        await waitExit(s);
        console.log(`# fallback (${name}, ${who}): ${summary(probe)}; ${/drain-closed .*/.exec(s.err())?.[0]}`);
        const m = /drain-fallback left_at_close=(\d+)/.exec(s.err());
        assert.ok(m, s.err());
        const cut = Number(/stopped .*cut=(\d+)/.exec(s.err())?.[1]);
        assert.equal(cut, Number(m[1]), 'the cut counter counts what the kernel held at close');
        if ('QUIESCE_NATIVE' in env) {
          // loss is never silent: whatever the clients saw cut, the log counted at close
          if (probe.cut > 0) assert.ok(cut > 0, `cut ${probe.cut} but the log says cut=0`);
        } else {
          // the drain narrows the race (a plain close cuts the whole queue, ~500 here) but cannot
          // close it: a SYN can slip in between the kernel's "empty" and the close. Alone it cuts 0
          // or 1; in a loaded suite the master was once preempted in that gap and 90 slipped in,
          // so the bound is a fifth of what a plain close cuts, not the quiet-machine figure
          // (seen once at 328: the drain ran to its cap and handed-over connections were reset
          // seconds later; the master's drain and exit lines say more next time: docs/STATUS.md)
          assert.ok(probe.cut <= 100, `the fallback's drain cut ${probe.cut}:\n${s.err().split('\n').filter((l) => /drain|worker-exited|retiring|lost|stopped/.test(l)).join('\n')}`);
          assert.ok(cut <= probe.cut, `the log counted ${cut}, more than the clients saw (${probe.cut})`);
        }
      } finally {
        await cleanup(s);
      }
    });
  }
}

/**
 * One raw HTTP/1.1 request with Connection: close over a fresh connection to `path`, counted at
 * its close in `tally`: refused (never connected), left (`gone(c)`: the test closed it), ok (a
 * complete 200 "ok"), or cut.
 */
function rawClient(path: string | { port: number; host: string }, tally: { ok: number; refused: number; cut: number; left: number; connected?: number }, made?: (c: Socket) => void, gone?: (c: Socket) => boolean): Promise<void> {
  return new Promise<void>((resolve) => {
    const c = typeof path === 'string' ? connect(path) : connect(path.port, path.host);
    made?.(c);
    let data = '';
    let up = false;
    c.setTimeout(20_000, () => c.destroy(new Error('timeout')));
    c.on('connect', () => { up = true; tally.connected = (tally.connected ?? 0) + 1; c.write('GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'); });
    c.on('data', (d: Buffer) => { data += d.toString(); });
    c.on('error', () => { /* judged at close */ });
    c.on('close', () => {
      if (!up) tally.refused++;
      else if (gone?.(c)) tally.left++;
      else if (/^HTTP\/1\.1 200 [^]*\r\n\r\nok\n$/.test(data)) tally.ok++;
      else tally.cut++;
      resolve();
    });
  });
}

/**
 * A stop while the workers are still loading the app, with requests already queued: the master
 * hands the queue over, and each worker serves what it got once its app is up, then exits. A unix
 * socket, so the address is known before quiesce says it is ready. Each raw client counts as ok
 * (a complete response), refused (never connected) or cut.
 */
async function stopDuringStart(who: Who, opts: { n: number; args?: string[]; initMs: number; signal?: NodeJS.Signals; leave?: number; atFork?: boolean }): Promise<{ ok: number; refused: number; cut: number; left: number; err: string; code: number | null; workersLeft: number[]; stopMs: number }> {
  const { existsSync } = await import('node:fs');
  const path = join(sockDir(who), 'app.sock');
  const s = await startServer({ args: [join(FIXTURES, 'core/slow-init.mjs'), '--workers', '2', '--listen', path, ...(opts.args ?? [])], env: { INIT_MS: String(opts.initMs) }, waitReady: false, user: user(who) });
  try {
    await waitFor(() => existsSync(path), 10_000, 'the master binds the unix socket');
    // the socket listens once the workers are forked (they hold it from then on)
    await waitFor(() => (s.err().match(/worker-started /g) ?? []).length >= 2, 5_000, 'both workers forked');
    await sleep(30);
    const tally: { ok: number; refused: number; cut: number; left: number; connected?: number } = { ok: 0, refused: 0, cut: 0, left: 0 };
    const leavers: Socket[] = [];
    const clients = Array.from({ length: opts.n }, (_, i) => rawClient(path, tally, (c) => { if (i < (opts.leave ?? 0)) leavers.push(c); }, (c) => leavers.includes(c)));
    await waitFor(() => tally.connected === opts.n, 5_000, 'every client connected (queued in the kernel)');
    // the workers are inside init() (atFork: maybe still booting Node itself)
    if (!opts.atFork) await sleep(300);
    assert.ok(!/quiesce: ready /.test(s.out()), `the stop must come while the workers start: ${s.out()}`);
    // clients that give up while queued: the workers get their connections (read only once served)
    for (const c of leavers) c.destroy();
    if (leavers.length > 0) await sleep(200);
    const workers = s.workerPids();
    const stopAt = Date.now();
    process.kill(s.pid, opts.signal ?? 'SIGTERM');
    await Promise.all(clients);
    const { code } = await waitExit(s);
    const stopMs = Date.now() - stopAt;
    const gone = await waitFor(() => workers.every((p) => !alive(p)), 10_000, 'the workers exit').catch(() => false);
    const workersLeft = gone ? [] : workers.filter(alive);
    for (const pid of workersLeft) process.kill(pid, 'SIGKILL'); // an orphan fails the test, and is not left behind
    return { ok: tally.ok, refused: tally.refused, cut: tally.cut, left: tally.left, err: s.err(), code, workersLeft, stopMs };
  } finally {
    await cleanup(s);
  }
}

for (const who of WHO) test(`a stop while the workers start as ${who}: requests queued meanwhile are answered, none cut`, { skip: skipFor(who) }, async () => {
  const r = await stopDuringStart(who, { n: 20, initMs: 2000 });
  assert.deepEqual({ ok: r.ok, refused: r.refused, cut: r.cut }, { ok: 20, refused: 0, cut: 0 }, r.err);
  assert.equal(r.code, 0);
  assert.match(r.err, /stopped forced=0 /);
});

for (const who of WHO) test(`a stop while the workers start as ${who}, some queued clients gone meanwhile: the rest answered, the workers exit without waiting for the gone ones`, { skip: skipFor(who) }, async () => {
  const r = await stopDuringStart(who, { n: 12, leave: 4, initMs: 2000, args: ['--graceful-timeout', '15'] });
  assert.deepEqual({ ok: r.ok, refused: r.refused, cut: r.cut, left: r.left }, { ok: 8, refused: 0, cut: 0, left: 4 }, r.err);
  assert.equal(r.code, 0);
  assert.match(r.err, /stopped forced=0 /);
  // a closed connection counted open would hold its worker until the graceful timeout (15 s)
  assert.ok(r.stopMs < 10_000, `the stop took ${r.stopMs} ms`);
});

for (const who of WHO) test(`a stop while the workers start as ${who}, past --graceful-timeout: what waited is forced and counted`, { skip: skipFor(who) }, async () => {
  const r = await stopDuringStart(who, { n: 6, initMs: 4000, args: ['--graceful-timeout', '1'] });
  assert.equal(r.ok + r.cut, 6, r.err);
  assert.match(r.err, /stopped forced=6 /, r.err);
});

for (const who of WHO) test(`the master SIGKILLed as soon as it has forked the workers, as ${who}: they serve what was queued, then exit`, { skip: skipFor(who) }, async () => {
  const r = await stopDuringStart(who, { n: 20, initMs: 1000, signal: 'SIGKILL', atFork: true });
  assert.deepEqual({ ok: r.ok, refused: r.refused, cut: r.cut }, { ok: 20, refused: 0, cut: 0 }, r.err);
  assert.deepEqual(r.workersLeft, [], 'no orphan');
});

for (const who of WHO) test(`the master SIGKILLed right after it binds, before or while it forks, as ${who}: every client is answered or refused, none cut`, { skip: skipFor(who) }, async () => {
  const { existsSync } = await import('node:fs');
  const path = join(sockDir(who), 'app.sock');
  const s = await startServer({ args: [join(FIXTURES, 'core/slow-init.mjs'), '--workers', '2', '--listen', path], env: { INIT_MS: '300' }, waitReady: false, user: user(who) });
  let workers: number[] = [];
  try {
    // freeze the master as soon as its socket exists: before its fork, or just after
    await waitFor(() => existsSync(path), 10_000, 'the master binds the unix socket', 1);
    process.kill(s.pid, 'SIGSTOP');
    const tally = { ok: 0, refused: 0, cut: 0, left: 0 };
    const clients = Array.from({ length: 10 }, () => rawClient(path, tally));
    await sleep(200);
    workers = s.workerPids();
    process.kill(s.pid, 'SIGKILL');
    await Promise.all(clients);
    assert.equal(tally.cut, 0, `cut: ${JSON.stringify(tally)}\n${s.err()}`);
    assert.equal(tally.ok + tally.refused, 10, JSON.stringify(tally));
    await waitFor(() => workers.every((p) => !alive(p)), 10_000, 'the workers exit after serving');
  } finally {
    for (const p of workers) if (alive(p)) process.kill(p, 'SIGKILL');
    await cleanup(s);
  }
});

for (const who of WHO) test(`the master SIGKILLed while the workers start, as ${who}: they serve what was queued, then exit`, { skip: skipFor(who) }, async () => {
  const r = await stopDuringStart(who, { n: 20, initMs: 2000, signal: 'SIGKILL' });
  assert.deepEqual({ ok: r.ok, refused: r.refused, cut: r.cut }, { ok: 20, refused: 0, cut: 0 }, r.err);
  assert.deepEqual(r.workersLeft, [], 'no orphan');
});

for (const who of WHO) test(`the master SIGKILLed under load, as ${who}: the workers gate and drain the listener themselves, 0 cut`, { skip: skipFor(who) }, async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '2'], user: user(who) });
  const workers = s.workerPids();
  try {
    const { probe, queued } = await stopUnderLoad(s.address, s.pid, s.port, { signal: 'SIGKILL' });
    assert.ok(queued >= 20, `Recv-Q ${queued}`);
    console.log(`# master SIGKILL (${who}): queued ${queued}; ${summary(probe)}`);
    assertNothingCut(probe);
    await waitFor(() => workers.every((p) => !alive(p)), 15_000, 'the workers exit after draining');
    // the listener went with them: a client now is refused (the probe's own refusals depend on
    // how fast it still sends on a loaded machine: 345 requests in 2.5 s once, none refused)
    const outcome = await new Promise<string>((resolve) => {
      const c = connect(s.port, '127.0.0.1');
      c.on('connect', () => { c.destroy(); resolve('connected'); });
      c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    assert.equal(outcome, 'ECONNREFUSED', summary(probe));
  } finally {
    for (const p of workers) if (alive(p)) process.kill(p, 'SIGKILL');
    await cleanup(s);
  }
});

/** Start the intruder (as `who`) on `port`; resolves its port and a reader of its output. */
async function intruder(who: Who, port: number): Promise<{ port: number; out: () => string; stop: () => void }> {
  const script = join(FIXTURES, 'core/reuseport-intruder.mjs');
  const [cmd, args] = who === 'nobody' ? asNobody(process.execPath, [forNobody(script), String(port)]) : [process.execPath, [script, String(port)]];
  const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  c.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  const stop = () => { c.kill('SIGKILL'); };
  try {
    const p = await waitFor(() => Number(/listening on (\d+)/.exec(out)?.[1] ?? 0), 5000, "the intruder listens");
    return { port: p, out: () => out, stop };
  } catch (err) {
    stop();
    throw err;
  }
}

for (const who of WHO) test(`SO_REUSEPORT makes no co-listener, as ${who}: a socket of the same user that joins gets no connection; one that was there first stops the start`, { skip: skipFor(who) }, async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '2'], user: user(who) });
  let late: Awaited<ReturnType<typeof intruder>> | undefined;
  try {
    late = await intruder(who, s.port);
    const answers = await Promise.all(Array.from({ length: 40 }, () => get(s.address, '/')));
    assert.ok(answers.every((r) => r.status === 200), 'quiesce answers them all');
    await sleep(100);
    assert.doesNotMatch(late.out(), /got/, 'the late co-listener got a connection');
    process.kill(s.pid, 'SIGTERM');
    assert.equal((await waitExit(s)).code, 0);
    assert.match(s.err(), /drain-closed .*left_at_close=0 .*mode=reuseport/);
  } finally {
    late?.stop();
    await cleanup(s);
  }
  const first = await intruder(who, 0);
  try {
    const refused = await startServer({ args: [PID_APP, '--workers', '1', '--listen', `127.0.0.1:${first.port}`], user: user(who) }).then(
      async (x) => { await cleanup(x); return 'started'; },
      (err: Error) => err.message);
    assert.match(refused, /--listen 127\.0\.0\.1:\d+: address in use \(another process of this user listens on it with SO_REUSEPORT\)/);
  } finally {
    first.stop();
  }
});

for (const who of WHO) test(`a stop with no live worker (in respawn backoff), as ${who}: what is queued is served by a worker started for it`, { skip: skipFor(who) }, async () => {
  const s = await startServer({ args: [join(FIXTURES, 'core/slow-init.mjs'), '--workers', '1', '--respawn-backoff', '20s'], env: { INIT_MS: '300' }, user: user(who) });
  try {
    const [w] = s.workerPids();
    // the worker stopped: the clients queue in the kernel; then it dies with them queued (while no
    // worker is alive the gate keeps new ones out, so they must be in before the crash)
    process.kill(w!, 'SIGSTOP');
    const tally = { ok: 0, refused: 0, cut: 0, left: 0, connected: 0 };
    const clients = Array.from({ length: 5 }, () => rawClient({ port: s.port, host: '127.0.0.1' }, tally));
    await waitFor(() => tally.connected === 5, 5000, 'the clients are queued in the kernel');
    process.kill(w!, 'SIGKILL');
    // the last live worker is respawned within 1 s whatever --respawn-backoff says: stop in that window
    await waitFor(() => /worker-respawn /.test(s.err()), 5000, 'the crash is seen', 5);
    process.kill(s.pid, 'SIGTERM');
    await Promise.all(clients);
    assert.deepEqual({ ok: tally.ok, cut: tally.cut }, { ok: 5, cut: 0 }, s.err());
    assert.equal((await waitExit(s)).code, 0);
    const err = s.err();
    const respawned = err.indexOf('worker-started', err.indexOf('worker-respawn '));
    // (a loaded machine may let the 1 s pass before the signal: then the respawned worker drained)
    if (respawned < 0 || respawned > err.indexOf('signal=SIGTERM')) assert.match(err, /drain-worker /);
    assert.match(err, /stopped .*cut=0 /);
  } finally {
    await cleanup(s);
  }
});
