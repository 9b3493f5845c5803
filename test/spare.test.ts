// --spare-worker on: a loaded worker that accepts nothing until a worker dies, hangs or is replaced,
// then takes its slot at once (no wait for an app to load).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, cleanup, waitExit, get, statusJson, waitFor, alive, sleep, FIXTURES, type Server } from './helpers/server.js';

const APP = join(FIXTURES, 'core/crashy.mjs');

/** The pid that answered (crashy.mjs answers "PID RSS"). */
async function answeredBy(s: Server, path = '/'): Promise<number> {
  const r = await get(s.address, path);
  assert.equal(r.status, 200, `GET ${path}: ${r.status} ${r.body}`);
  return Number(r.body.split(' ')[0]);
}

/** The pids of the ready spares, once there are `n` (of generation `gen` when given). */
async function readySpares(s: Server, n = 1, gen?: number): Promise<number[]> {
  return (await waitFor(async () => {
    const sp = ((await statusJson(s)).spares ?? []).filter((x) => x.ready && (gen === undefined || x.generation === gen));
    return sp.length >= n ? sp.map((x) => x.pid) : undefined;
  }, 20_000, `${n} ready spare(s)`))!;
}
async function readySpare(s: Server, gen?: number): Promise<number> {
  return (await readySpares(s, 1, gen))[0]!;
}

test('the spare accepts nothing, then takes the slot of a worker SIGKILLed at once; a new spare follows', async () => {
  const s = await startServer({ args: [APP, '--workers', '1', '--spare-worker', 'on', '--respawn-backoff', '50ms'] });
  try {
    const spare = await readySpare(s);
    const st = await statusJson(s);
    const worker = st.workers.find((w) => w.pid !== null && w.pid !== spare)!.pid!;
    assert.equal(st.workers.length, 1, 'the spare is not a slot');
    // 30 new connections: every one answered by the worker, none by the spare
    const by = new Set<number>();
    for (let i = 0; i < 30; i++) by.add(await answeredBy(s));
    assert.deepEqual([...by], [worker]);
    process.kill(worker, 'SIGKILL');
    // the first request after the kill is answered by the spare: no new process had to load the app
    await waitFor(() => !alive(worker), 5_000, 'the worker gone');
    assert.equal(await answeredBy(s), spare, 'the spare took the slot');
    assert.match(s.err(), new RegExp(`spare-promoted pid=${spare} slot=0`));
    // and a new spare is loaded for the next one
    const next = await readySpare(s);
    assert.notEqual(next, spare);
    assert.equal((await statusJson(s)).workers.filter((w) => w.pid !== null).length, 1);
  } finally {
    await cleanup(s);
  }
});

test('--spare-worker 2: a second death while the first spare\'s successor loads is taken by the second spare', async () => {
  const s = await startServer({ args: [APP, '--workers', '1', '--spare-worker', '2', '--respawn-backoff', '50ms'] });
  try {
    const spares = await readySpares(s, 2);
    assert.equal(spares.length, 2);
    const worker = s.workerPids().find((p) => !spares.includes(p))!;
    process.kill(worker, 'SIGKILL');
    await waitFor(() => !alive(worker), 5_000, 'the worker gone');
    const first = await answeredBy(s);
    assert.ok(spares.includes(first), 'a spare took the slot');
    // at once, before a new spare can have loaded: the other one takes it again
    process.kill(first, 'SIGKILL');
    await waitFor(() => !alive(first), 5_000, 'the promoted spare gone');
    const second = await answeredBy(s);
    assert.deepEqual([first, second].sort(), [...spares].sort(), 'the second spare took the slot');
    assert.equal((s.err().match(/spare-promoted /g) ?? []).length, 2);
    // and the count is made up again
    const after = await readySpares(s, 2);
    assert.ok(!after.includes(first) && !after.includes(second));
  } finally {
    await cleanup(s);
  }
});

test('a hung worker is replaced by the spare; a stop takes the spare with it and cuts nothing', async () => {
  const s = await startServer({ args: [APP, '--workers', '1', '--spare-worker', 'on', '--worker-timeout', '1'] });
  try {
    const spare = await readySpare(s);
    void get(s.address, '/hang').catch(() => undefined); // its worker spins for ever
    await waitFor(() => /worker-hung /.test(s.err()), 10_000, 'the hang detected');
    assert.equal(await answeredBy(s), spare, 'the spare serves in the hung worker\'s place');
    const next = await readySpare(s);
    await s.cli('stop');
    await waitExit(s, 20_000);
    assert.ok(!alive(next) && !alive(spare), 'no worker left after the stop');
    // the stop cut nothing more than the hung worker's kill did (its /hang request: counted when
    // its stack, read through the inspector as nobody, shows it in flight)
    const killed = Number(/worker-killed pid=\d+ reason=hung cut=(\d+)/.exec(s.err())?.[1] ?? NaN);
    assert.match(s.err(), new RegExp(` stopped .*cut=${killed} `));
  } finally {
    await cleanup(s);
  }
});

test('a reload gives the new generation its own spare, started with its soak; the old one goes', async () => {
  const s = await startServer({ args: [APP, '--workers', '1', '--spare-worker', 'on', '--reload-soak', '500ms'] });
  try {
    const first = await readySpare(s);
    const r = await s.cli('reload');
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const second = await readySpare(s, 2);
    assert.notEqual(second, first);
    // started beside the soak, before the commit (loaded by then, unless the machine is slow)
    const log = s.err();
    const started = log.indexOf(`spare-started pid=${second} generation=2`);
    assert.ok(started >= 0 && started < log.indexOf('reloaded generation=2'), 'the new spare starts before the commit');
    await waitFor(() => !alive(first), 5_000, 'the old spare gone');
    await sleep(100);
    assert.equal((await statusJson(s)).generation, 2);
  } finally {
    await cleanup(s);
  }
});

test('without --spare-worker there is no spare', async () => {
  const s = await startServer({ args: [APP, '--workers', '1'] });
  try {
    await sleep(300);
    assert.equal((await statusJson(s)).spares, undefined);
    assert.equal(s.workerPids().length, 1);
  } finally {
    await cleanup(s);
  }
});

test('a scale down that keeps a silent (hung, not yet found) worker retires the others only once a worker in the kept slot answers', async () => {
  const s = await startServer({ args: [APP, '--workers', '2', '--spare-worker', 'on', '--worker-timeout', '2'] });
  let stopped = 0;
  try {
    const spare = await readySpare(s);
    const st = await statusJson(s);
    const kept = st.workers.find((w) => w.slot === 0)!.pid!;
    const going = st.workers.find((w) => w.slot === 1)!.pid!;
    // slot 0 goes silent as a hung worker does (SIGSTOP: no heartbeat, accepts nothing)
    process.kill(kept, 'SIGSTOP');
    stopped = kept;
    await sleep(1_600); // silent past 1.2 s (3 reports missed), not yet past --worker-timeout 2
    const r = await s.cli('scale', '1');
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // (the master's log lines may reach us after the CLI's answer)
    await waitFor(() => s.err().includes(`worker-exited pid=${going} slot=1`), 10_000, `slot 1 retired:\n${s.err()}`);
    const log = s.err();
    const promoted = log.indexOf(`spare-promoted pid=${spare} slot=0`);
    const retired = log.indexOf(`worker-exited pid=${going} slot=1`);
    assert.ok(promoted >= 0, `the watchdog put the spare in the silent worker's slot:\n${log}`);
    assert.ok(retired < 0 || retired > promoted, `slot 1 served until the spare in slot 0 did:\n${log}`);
    assert.equal(await answeredBy(s), spare);
  } finally {
    if (stopped) try { process.kill(stopped, 'SIGCONT'); } catch { /* gone */ }
    await cleanup(s);
  }
});

test('the only worker silent (SIGSTOP) for 1.5 s: a spare serves in its slot long before --worker-timeout, which then kills the silent one', async () => {
  const s = await startServer({ args: [APP, '--workers', '1', '--spare-worker', 'on', '--worker-timeout', '6'] });
  let stopped = 0;
  try {
    const spare = await readySpare(s);
    const worker = (await statusJson(s)).workers[0]!.pid!;
    process.kill(worker, 'SIGSTOP');
    stopped = worker;
    const t0 = Date.now();
    // waits in the kernel's queue until someone accepts it: the spare, once the silence is seen
    assert.equal(await answeredBy(s), spare);
    const took = Date.now() - t0;
    assert.ok(took < 4_000, `answered after ${took} ms (the watchdog alone takes --worker-timeout, 6 s)`);
    await waitFor(() => s.err().includes(`worker-silent pid=${worker} slot=0`), 5_000, 'worker-silent logged');
    await waitFor(() => !alive(worker), 15_000, 'the silent worker killed at --worker-timeout');
    assert.match(s.err(), new RegExp(`worker-hung pid=${worker} `));
    assert.equal(await answeredBy(s), spare);
  } finally {
    if (stopped) try { process.kill(stopped, 'SIGCONT'); } catch { /* gone */ }
    await cleanup(s);
  }
});
