/**
 * Two instances on one machine with the defaults (pid file, control socket, admin port), as root
 * and as an unprivileged user this test switches to (setpriv, uid/gid 65534); and the pid file's
 * safety: no unsafe directory, no symlink written through.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, FIXTURES, childPids, sleep } from './helpers/server.js';
import { asNobody as nobody, forNobody } from './helpers/unprivileged.js';
import { defaultPidfile } from '../src/master/pidfile.js';

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;
const hasSetpriv = spawnSync('setpriv', ['--version'], { stdio: 'ignore' }).status === 0;

type Instance = {
  pid: number; out: () => string; err: () => string;
  exited: Promise<number | null>;
  control: string; pidfile: string; admin: string;
  kill: () => Promise<void>;
};

/** `quiesce ARGS` in `cwd`, as root or as uid 65534; resolves once it is ready (or exited). */
async function launch(cwd: string, args: string[], asNobody = false): Promise<Instance & { ready: boolean }> {
  const env = { ...process.env };
  delete env.XDG_RUNTIME_DIR;
  const [cmd, argv] = asNobody ? nobody(process.execPath, [forNobody(CLI), ...args]) : [process.execPath, [CLI, ...args]];
  const proc = spawn(cmd, argv, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  proc.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number | null>((r) => proc.once('close', (code) => r(code)));
  let gone = false;
  void exited.then(() => { gone = true; });
  const pid = proc.pid!;
  const kill = async (): Promise<void> => {
    for (const p of [...childPids(pid), pid]) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
    await exited;
  };
  for (let i = 0; i < 750 && !gone && !/quiesce: ready /.test(out); i++) await sleep(20);
  const control = /control socket (\S+) \(pid file (\S+)\)/.exec(out);
  return {
    pid, out: () => out, err: () => err, exited, kill, ready: /quiesce: ready /.test(out),
    control: control?.[1] ?? '', pidfile: control?.[2] ?? '', admin: /admin on http:\/\/(\S+)/.exec(out)?.[1] ?? '',
  };
}

/** A verb run in `cwd` with no --pidfile, as root or as uid 65534. */
function verb(cwd: string, args: string[], asNobody = false): { code: number | null; stdout: string; stderr: string } {
  const env = { ...process.env };
  delete env.XDG_RUNTIME_DIR;
  // (nobody reaches the project through the mirror when it cannot read the checkout)
  const [cmd, argv] = asNobody ? nobody(process.execPath, [forNobody(CLI), ...args]) : [process.execPath, [CLI, ...args]];
  const r = spawnSync(cmd, argv, { cwd, env, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Two directories; each gets an instance started with only --listen; each verb reaches its own. */
async function twoInstances(asNobody: boolean): Promise<void> {
  const base = mkdtempSync(join(tmpdir(), 'quiesce-two-'));
  chmodSync(base, 0o755);
  const dirs = ['a', 'b'].map((n) => join(base, n));
  const started: Instance[] = [];
  try {
    for (const d of dirs) {
      spawnSync('mkdir', ['-p', d]);
      chmodSync(d, 0o755);
      const i = await launch(d, ['--listen', '127.0.0.1:0', '--workers', '1', '--access-log', 'off'], asNobody);
      started.push(i);
      assert.ok(i.ready, `the instance in ${d} started:\n${i.out()}\n${i.err()}`);
    }
    const [a, b] = started as [Instance, Instance];
    assert.notEqual(a.pidfile, b.pidfile);
    assert.notEqual(a.admin, b.admin, 'the second admin listener took a free port');
    const dir = isRoot && !asNobody ? '/run/quiesce' : join(tmpdir(), `quiesce-${NOBODY}`);
    for (const i of started) {
      assert.ok(i.pidfile.startsWith(`${dir}/`), `pid file ${i.pidfile} in ${dir}`);
      assert.equal(i.control, `${i.pidfile}.sock`);
      assert.equal(lstatSync(i.control).mode & 0o777, 0o600, 'the control socket is 0600');
      assert.equal(readFileSync(i.pidfile, 'utf8').trim(), String(i.pid));
    }
    if (asNobody) {
      const st = lstatSync(dir);
      assert.equal(st.uid, NOBODY);
      assert.equal(st.mode & 0o777, 0o700, 'the per-user directory is private');
    }
    for (const [i, d] of [[a, dirs[0]!], [b, dirs[1]!]] as const) {
      const st = verb(d, ['status', '--json'], asNobody);
      assert.equal(st.code, 0, st.stderr);
      assert.equal((JSON.parse(st.stdout) as { pid: number }).pid, i.pid, `the verb in ${d} reaches the instance started there`);
    }
    for (const [i, d] of [[a, dirs[0]!], [b, dirs[1]!]] as const) {
      const stop = verb(d, ['stop'], asNobody);
      assert.equal(stop.code, 0, stop.stderr);
      assert.equal(await i.exited, 0);
      assert.ok(!existsSync(i.pidfile) && !existsSync(i.control), 'a stop leaves no file');
    }
  } finally {
    for (const i of started) await i.kill();
    rmSync(base, { recursive: true, force: true });
  }
}

test('two instances started with only --listen in two directories both start; each verb reaches its own (root)', { skip: !isRoot && 'needs root' }, async () => {
  await twoInstances(false);
});

test('two instances started with only --listen in two directories both start; each verb reaches its own (uid 65534)', { skip: !(isRoot && hasSetpriv) && 'needs root and setpriv to switch to uid 65534' }, async () => {
  await twoInstances(true);
});

test('an explicit --admin or --pidfile that is taken stays an error', async () => {
  const base = mkdtempSync(join(tmpdir(), 'quiesce-taken-'));
  let first: Instance | undefined;
  try {
    const pidfile = join(base, 'q.pid');
    first = await launch(base, ['--listen', '127.0.0.1:0', '--workers', '1', '--admin', '127.0.0.1:0', '--pidfile', pidfile, '--access-log', 'off']);
    const admin = verb(base, ['--listen', '127.0.0.1:0', '--workers', '1', '--admin', first.admin, '--pidfile', join(base, 'other.pid')]);
    assert.equal(admin.code, 1);
    assert.match(admin.stderr, new RegExp(`--admin ${first.admin}: address in use`));
    const same = verb(base, ['--listen', '127.0.0.1:0', '--workers', '1', '--admin', 'off', '--pidfile', pidfile]);
    assert.equal(same.code, 1);
    assert.match(same.stderr, new RegExp(`already running as pid ${first.pid}`));
    assert.equal(verb(base, ['stop', '--pidfile', pidfile]).code, 0);
    assert.equal(await first.exited, 0);
  } finally {
    await first?.kill();
    rmSync(base, { recursive: true, force: true });
  }
});

test('a pid file directory writable by everyone without the sticky bit is refused', async () => {
  const base = mkdtempSync(join(tmpdir(), 'quiesce-unsafe-'));
  try {
    chmodSync(base, 0o777);
    const r = verb(base, ['--listen', '127.0.0.1:0', '--workers', '1', '--admin', 'off', '--pidfile', join(base, 'q.pid')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`--pidfile ${join(base, 'q.pid')}: refusing an unsafe directory: ${base} is writable by every user and has no sticky bit`));
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('symlinks planted beside the pid file in a sticky world-writable directory are never written through', async () => {
  const base = mkdtempSync(join(tmpdir(), 'quiesce-plant-'));
  const victimDir = mkdtempSync(join(tmpdir(), 'quiesce-victim-'));
  let s: (Instance & { ready: boolean }) | undefined;
  try {
    chmodSync(base, 0o1777);
    const victim = join(victimDir, 'precious');
    writeFileSync(victim, 'precious\n', { mode: 0o600 });
    const pidfile = join(base, 'q.pid');
    // the names a pid-derived temp file would take for the next few hundred pids
    const last = Number(readFileSync('/proc/sys/kernel/ns_last_pid', 'utf8'));
    for (let p = last + 1; p <= last + 300; p++) symlinkSync(victim, `${pidfile}.${p}.tmp`);
    symlinkSync(victim, `${pidfile}.sock`);
    s = await launch(base, ['--listen', '127.0.0.1:0', '--workers', '1', '--admin', 'off', '--pidfile', pidfile, '--access-log', 'off']);
    assert.ok(s.pid <= last + 300, 'the master\'s pid is among the planted names (else this run proves nothing)');
    assert.ok(s.ready, s.err());
    assert.equal(readFileSync(victim, 'utf8'), 'precious\n', 'the victim file is untouched');
    assert.equal(lstatSync(victim).mode & 0o777, 0o600);
    assert.ok(lstatSync(pidfile).isFile());
    assert.equal(readFileSync(pidfile, 'utf8').trim(), String(s.pid));
    assert.ok(lstatSync(`${pidfile}.sock`).isSocket(), 'the planted link was replaced by the socket');
    assert.equal(verb(base, ['stop', '--pidfile', pidfile]).code, 0);
    assert.equal(await s.exited, 0);
  } finally {
    await s?.kill();
    rmSync(base, { recursive: true, force: true });
    rmSync(victimDir, { recursive: true, force: true });
  }
});

test('no start failure leaves a file; a verb says what is true of a socket a killed master left', async () => {
  const base = mkdtempSync(join(tmpdir(), 'quiesce-leftover-'));
  let s: Instance | undefined;
  try {
    // the app is missing: the default pid file and socket of this directory are never made
    const missing = verb(base, [join(base, 'nope.mjs'), '--listen', '127.0.0.1:0', '--admin', 'off']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /nope\.mjs/);
    const def = defaultPidfile(base);
    assert.ok(!existsSync(def) && !existsSync(`${def}.sock`), `nothing left at ${def}`);
    // the pid file cannot be written (a directory is in its place): the control socket goes too
    const pidfile = join(base, 'taken.pid');
    spawnSync('mkdir', [pidfile]);
    const unwritable = verb(base, ['--listen', '127.0.0.1:0', '--admin', 'off', '--pidfile', pidfile]);
    assert.equal(unwritable.code, 1);
    assert.match(unwritable.stderr, new RegExp(`--pidfile ${pidfile}: cannot write it`));
    assert.ok(!existsSync(`${pidfile}.sock`), 'the control socket is removed');
    // a master killed outright leaves its socket file: the verb says nothing answers there
    const killed = join(base, 'killed.pid');
    s = await launch(base, [join(FIXTURES, 'core/pid-app.mjs'), '--listen', '127.0.0.1:0', '--workers', '1', '--admin', 'off', '--pidfile', killed]);
    assert.ok(existsSync(`${killed}.sock`));
    await s.kill();
    const st = verb(base, ['status', '--pidfile', killed]);
    assert.equal(st.code, 1);
    assert.match(st.stderr, new RegExp(`nothing answers on the control socket ${killed}\\.sock: a master that was killed left it; the pid file ${killed} names ${s.pid}, which is not running`));
  } finally {
    await s?.kill();
    rmSync(base, { recursive: true, force: true });
  }
});
