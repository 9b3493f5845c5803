/**
 * Issue 14: workers that cannot start, crash, hang or bloat; clients that hold the master's
 * endpoints. Real masters, real clients, real signals; every process ended by pid.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { startServer, cleanup, waitExit, get, sleep, waitFor, within, alive, FIXTURES, type Server } from './helpers/server.js';
import { ADMIN_MAX_CONNECTIONS } from '../src/master/admin.js';
import { CONTROL_MAX_CONNECTIONS } from '../src/master/control.js';

const PID_APP = join(FIXTURES, 'core/pid-app.mjs');

const fdCount = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;

/** Open `n` connections to `address` that send nothing; each resolves `closed` when the server lets it go. */
async function hold(address: string, n: number): Promise<{ sockets: net.Socket[]; closed: Promise<void>[] }> {
  const m = /^(.*):(\d+)$/.exec(address)!;
  const sockets: net.Socket[] = [];
  const closed: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    const s = net.connect(Number(m[2]), m[1]!);
    s.on('error', () => { /* reset by the server: counted by 'close' */ });
    closed.push(new Promise((r) => s.once('close', () => r())));
    sockets.push(s);
  }
  await Promise.all(sockets.map((s) => new Promise<void>((r) => { if (s.readyState === 'open') r(); else s.once('connect', () => r()).once('close', () => r()); })));
  return { sockets, closed };
}

/** The master's slots as `quiesce status --json` shows them. */
async function slots(s: Server): Promise<Array<{ pid: number | null; phase: string; state: string }>> {
  const r = await s.cli('status', '--json');
  return (JSON.parse(r.stdout) as { workers: Array<{ pid: number | null; phase: string; state: string }> }).workers;
}

/** Lower the master's open-file limit to what it holds now plus `more`: its next fork fails with EMFILE. */
function starveFds(pid: number, more: number): void {
  const n = fdCount(pid) + more;
  const r = spawnSync('prlimit', ['--pid', String(pid), `--nofile=${n}:${n}`]);
  assert.equal(r.status, 0, `prlimit: ${r.stderr}`);
}

test('a worker that cannot be forked (EMFILE) is a crash of its slot: backoff, logged, no ghost; reload and stop end', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '1', '--respawn-backoff', '50ms', '--graceful-timeout', '2', '--kill-grace', '1'] });
  try {
    const before = fdCount(s.pid);
    // a client holding far more admin connections than the cap: the master keeps at most the cap
    const held = await hold(s.admin, ADMIN_MAX_CONNECTIONS + 40);
    await sleep(300);
    assert.ok(fdCount(s.pid) <= before + ADMIN_MAX_CONNECTIONS + 2, `admin connections capped: ${fdCount(s.pid)} fds, ${before} before`);
    starveFds(s.pid, 2);
    const [victim] = s.workerPids();
    process.kill(victim!, 'SIGKILL');
    await waitFor(() => /worker-spawn-failed slot=0 generation=1 error="[^"]*EMFILE/.test(s.err()), 10_000, `worker-spawn-failed:\n${s.err()}`);
    await waitFor(() => (s.err().match(/worker-respawn slot=0/g) ?? []).length >= 2, 10_000, 'a second respawn with backoff');
    // no slot stays "starting" with no process (the ghost of issue 14)
    for (const w of await slots(s)) assert.ok(!((w.pid === -1 || w.pid === null) && w.phase === 'starting'), `ghost slot: ${JSON.stringify(w)}`);
    // a reload fails at once with the cause, and does not wait on a ghost
    const reload = await within(s.cli('reload'), 15_000, 'reload to end');
    assert.notEqual(reload.code, 0);
    assert.match(reload.stdout + reload.stderr, /could not be started: .*EMFILE/);
    // the master lets the idle admin connections go: the fds come back and the slot serves again
    await within(Promise.all(held.closed), 30_000, 'the idle admin connections to be closed by the master');
    await waitFor(async () => (await slots(s)).some((w) => w.phase === 'ready'), 20_000, 'a worker started again');
    assert.equal((await get(s.address, '/')).status, 200);
    const again = await within(s.cli('reload'), 20_000, 'reload to end');
    assert.equal(again.code, 0, again.stdout + again.stderr);
    const stop = await within(s.cli('stop'), 20_000, 'stop to end');
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal((await waitExit(s)).code, 0);
  } finally {
    await cleanup(s);
  }
});

test('a stop while no worker can be forked ends (no ghost to wait for); stop --force too', async () => {
  for (const force of [false, true]) {
    const s = await startServer({ args: [PID_APP, '--workers', '1', '--respawn-backoff', '50ms', '--graceful-timeout', '2', '--kill-grace', '1'] });
    try {
      starveFds(s.pid, 2);
      const [victim] = s.workerPids();
      process.kill(victim!, 'SIGKILL');
      // the respawn's fork is tried (and fails)
      await waitFor(() => (s.err().match(/worker-started /g) ?? []).length >= 2, 10_000, 'a respawn');
      await sleep(200);
      const stop = await within(force ? s.cli('stop', '--force') : s.cli('stop'), 20_000, `stop${force ? ' --force' : ''} to end`);
      assert.equal(stop.code, 0, stop.stdout + stop.stderr);
      assert.equal((await waitExit(s, 10_000)).code, 0);
      assert.ok(!alive(victim!));
      assert.match(s.err(), /worker-spawn-failed slot=0 generation=1 error="[^"]*EMFILE/);
    } finally {
      await cleanup(s);
    }
  }
});

test('the control socket caps its connections and lets a silent client go', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '1'] });
  try {
    const sock = s.pidfile + '.sock';
    const before = fdCount(s.pid);
    const closed: Promise<void>[] = [];
    for (let i = 0; i < 60; i++) {
      const c = net.connect(sock);
      c.on('error', () => {});
      closed.push(new Promise((r) => c.once('close', () => r())));
    }
    await sleep(500);
    assert.ok(fdCount(s.pid) <= before + CONTROL_MAX_CONNECTIONS + 2, `control connections capped: ${fdCount(s.pid)} fds, ${before} before`);
    // a verb gets through once the silent ones are let go (after 10 s each)
    await within(Promise.all(closed), 30_000, 'the silent control clients to be let go');
    const st = await s.cli('status');
    assert.equal(st.code, 0, st.stderr);
    const stop = await s.cli('stop');
    assert.equal(stop.code, 0);
    assert.equal((await waitExit(s)).code, 0);
  } finally {
    await cleanup(s);
  }
});
