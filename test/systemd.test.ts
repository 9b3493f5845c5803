/**
 * systemd without systemd: the notification protocol heard on a real unix datagram socket
 * (NOTIFY_SOCKET), and socket activation with a socket this test keeps, as a socket unit does
 * (LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES through a shell that execs quiesce with the fd as its 3),
 * and under Debian's systemd-socket-activate.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProbe } from '../src/probe/index.js';
import { loadNative } from '../src/native/index.js';
import { CLI, FIXTURES, childPids, get, sleep, startServer, cleanup, waitFor } from './helpers/server.js';
import { NotifySocket } from './helpers/notify-socket.js';

const PID_APP = join(FIXTURES, 'core/pid-app.mjs');
const native = loadNative();

test('sd_notify: READY at start, RELOADING (with MONOTONIC_USEC) then READY at a reload, WATCHDOG while serving, STOPPING at a stop; no worker sees the socket', { skip: !native.ok && 'needs the native module' }, async () => {
  const ns = new NotifySocket();
  const s = await startServer({ args: [PID_APP, '--workers', '1', '--reload-soak', '200ms'], env: { NOTIFY_SOCKET: ns.path, WATCHDOG_USEC: '400000' } });
  try {
    await waitFor(() => ns.read().some((m) => /^READY=1$/m.test(m)), 5_000, 'READY=1');
    const first = ns.messages.find((m) => /^READY=1$/m.test(m))!;
    assert.match(first, /^STATUS=serving generation 1: 1 workers, 127\.0\.0\.1:\d+$/m);
    await waitFor(() => ns.read().filter((m) => m === 'WATCHDOG=1').length >= 2, 5_000, 'two WATCHDOG=1 (every 200 ms)');
    for (const w of s.workerPids()) {
      const env = readFileSync(`/proc/${w}/environ`, 'utf8').split('\0');
      assert.ok(!env.some((e) => /^(NOTIFY_SOCKET|WATCHDOG_USEC)=/.test(e)), `worker ${w} has systemd's variables`);
    }
    const before = process.hrtime.bigint() / 1000n;
    const r = await s.cli('reload');
    assert.equal(r.code, 0, r.stderr);
    const reloading = ns.read().find((m) => /^RELOADING=1$/m.test(m));
    assert.ok(reloading, ns.messages.join(' | '));
    const usec = BigInt(/^MONOTONIC_USEC=(\d+)$/m.exec(reloading)?.[1] ?? '0');
    assert.ok(usec >= before && usec <= process.hrtime.bigint() / 1000n, `MONOTONIC_USEC ${usec} is CLOCK_MONOTONIC now`);
    await waitFor(() => ns.read().filter((m) => /^READY=1$/m.test(m)).length >= 2, 5_000, 'READY=1 after the reload');
    process.kill(s.pid, 'SIGTERM');
    await s.exited;
    const order = ns.read().filter((m) => m !== 'WATCHDOG=1' && !/^STATUS=/.test(m)).map((m) => m.split('\n')[0]);
    assert.deepEqual(order, ['READY=1', 'RELOADING=1', 'READY=1', 'STOPPING=1'], ns.messages.join(' | '));
    assert.ok(ns.messages.some((m) => /^STATUS=stopping: /.test(m)), 'the stop says what it waits for');
  } finally {
    await cleanup(s);
    ns.close();
  }
});

type Activated = { proc: ChildProcess; pid: number; out: () => string; err: () => string; exited: Promise<number | null> };

/** quiesce started as systemd starts a socket-activated service: the kept socket is its fd 3. */
async function activated(fd: number, args: string[]): Promise<Activated> {
  const proc = spawn('sh', ['-c', 'LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web exec "$0" "$@"', process.execPath, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe', fd] });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  proc.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number | null>((r) => proc.once('close', (code) => r(code)));
  let gone = false;
  void exited.then(() => { gone = true; });
  for (let i = 0; i < 500 && !gone && !/quiesce: ready /.test(out); i++) await sleep(20);
  assert.match(out, /quiesce: ready /, `${out}\n${err}`);
  return { proc, pid: proc.pid!, out: () => out, err: () => err, exited };
}

async function kill(a: Activated | undefined): Promise<void> {
  if (!a) return;
  for (const p of [...childPids(a.pid), a.pid]) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
  await a.exited;
}

test('socket activation: the passed socket serves; a stop and a new start under load refuse and cut nothing, the kept socket holding the queue in between', { skip: !native.ok && 'needs the native module' }, async () => {
  assert.ok(native.ok);
  const n = native.native;
  const fd = n.bindTcp('127.0.0.1', 0, 4, false);
  n.listen(fd, 511); // the socket unit's: it stays open in this process across both instances
  const port = n.localPort(fd);
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-activated-'));
  const common = [PID_APP, '--workers', '2', '--admin', 'off', '--access-log', 'off', '--pidfile', join(dir, 'q.pid')];
  let a: Activated | undefined;
  let b: Activated | undefined;
  try {
    a = await activated(fd, common);
    assert.match(a.out(), new RegExp(`listening on http://127\\.0\\.0\\.1:${port}\\n`));
    assert.doesNotMatch(a.out(), /:8080/, 'the default address is not added to the unit\'s sockets');
    assert.match(a.err(), /socket-activation listeners="?127\.0\.0\.1:\d+\(web\)/);
    assert.equal((await get(`127.0.0.1:${port}`, '/')).status, 200);
    const first = a;
    const probe = await runProbe({
      target: `127.0.0.1:${port}`, path: '/?sleep=5', rate: 150, keepalive: 4, durationS: 4, timeoutS: 20,
      commands: [{ atS: 1, run: async () => {
        process.kill(first.pid, 'SIGTERM');
        assert.equal(await first.exited, 0);
        await sleep(300); // nobody serves: new connections wait in the kept socket's queue
        b = await activated(fd, common);
      } }],
    });
    const summary = JSON.stringify({ sent: probe.sent, ok: probe.ok, refused: probe.refused, cut: probe.cut, ka_race: probe.ka_race, timeout: probe.timeout, other: probe.other });
    console.log(`# stop and start on a kept socket: ${summary}`);
    for (const k of ['cut', 'refused', 'timeout', 'other', 'ka_race'] as const) assert.equal(probe[k], 0, `${k}: ${summary}`);
    assert.equal(probe.ok, probe.sent, summary);
    assert.match(first.err(), /drain-kept listeners=127\.0\.0\.1:\d+/);
    assert.doesNotMatch(first.err(), /drain-gate|drain-closed/, 'a kept socket is not gated');
    process.kill(b!.pid, 'SIGTERM');
    assert.equal(await b!.exited, 0);
  } finally {
    await kill(a);
    await kill(b);
    n.close(fd);
    rmSync(dir, { recursive: true, force: true });
  }
});

const hasActivate = spawnSync('systemd-socket-activate', ['--version'], { stdio: 'ignore' }).status === 0;

test('under systemd-socket-activate: the connection that started quiesce is served on the passed socket, named', { skip: !hasActivate && 'systemd-socket-activate (Debian package systemd) is not installed' }, async () => {
  assert.ok(native.ok);
  // a free port: bound and closed again (loopback, this machine)
  const probeFd = native.native.bindTcp('127.0.0.1', 0, 4, false);
  const port = native.native.localPort(probeFd);
  native.native.close(probeFd);
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-activated-'));
  const proc = spawn('systemd-socket-activate', ['-l', `127.0.0.1:${port}`, '--fdname=site', process.execPath, CLI, PID_APP, '--workers', '1', '--admin', 'off', '--pidfile', join(dir, 'q.pid')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  proc.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | null>((r) => proc.once('close', (code) => r(code)));
  try {
    await waitFor(() => /Listening on/.test(out), 5_000, 'systemd-socket-activate listening');
    const r = await get(`127.0.0.1:${port}`, '/'); // starts quiesce, waits in the queue meanwhile
    assert.equal(r.status, 200, out);
    assert.match(out, /socket-activation listeners="?127\.0\.0\.1:\d+\(site\)/);
    process.kill(proc.pid!, 'SIGTERM'); // exec'd: this pid is quiesce's master now
    assert.equal(await exited, 0, out);
  } finally {
    for (const p of [...childPids(proc.pid!), proc.pid!]) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
});
