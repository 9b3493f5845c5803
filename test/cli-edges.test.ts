/**
 * The command line at its edges: values that parseArgs misreads, an address given to the wrong
 * flag's words, a pid file where nothing can be made, a control socket that answers nonsense or
 * hangs up, a static root the workers' user cannot enter. Each gets one clear line naming what is
 * at fault, a non-zero exit, and never a stack or a spin.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, FIXTURES } from './helpers/server.js';
import { cannotDropPrivileges, forNobody } from './helpers/unprivileged.js';

const PID_APP = join(FIXTURES, 'core/pid-app.mjs');

/** `quiesce ARGS`, killed after 15 s (a spin shows as code null). */
function cli(args: string[], bin = CLI): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { timeout: 15_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, out: stdout + stderr });
    });
  });
}

const noStack = (out: string) => assert.doesNotMatch(out, /^\s+at /m, `a stack reached the user:\n${out}`);

test('a negative number is a value of its flag; an address is judged under the flag that gave it', async () => {
  const w = await cli(['configtest', PID_APP, '--workers', '-1']);
  assert.equal(w.code, 2, w.out);
  assert.match(w.out, /--workers: not a whole number >= 0, got "-1"/);
  const g = await cli(['configtest', PID_APP, '--graceful-timeout', '-5']);
  assert.match(g.out, /--graceful-timeout: not a duration/);
  const a = await cli(['configtest', PID_APP, '--admin', '127.0.0.1:70000']);
  assert.equal(a.code, 2, a.out);
  assert.match(a.out, /^quiesce: --admin "127\.0\.0\.1:70000": port out of range/m);
  for (const r of [w, g, a]) noStack(r.out);
});

test('a pid file where no directory can be made fails at once (Node\'s recursive mkdir spins on /proc)', async () => {
  const r = await cli([PID_APP, '--listen', '127.0.0.1:0', '--admin', 'off', '--workers', '1', '--pidfile', '/proc/nope/x.pid']);
  assert.equal(r.code, 1, r.out);
  assert.match(r.out, /--pidfile \/proc\/nope\/x\.pid: cannot create its directory/);
  noStack(r.out);
});

test('a control socket that answers nonsense, or hangs up, gives one clear line and exit 1 for every verb', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-cli-'));
  const pidfile = join(dir, 'q.pid');
  writeFileSync(pidfile, `${process.pid}\n`);
  let mode: 'garbage' | 'hangup' = 'garbage';
  const server = net.createServer((c) => {
    c.on('error', () => { /* the client may go first */ });
    if (mode === 'garbage') c.end('not json\n');
    else setTimeout(() => c.destroy(), 20); // unread request: the client sees a reset or an end
  });
  await new Promise<void>((r) => server.listen(`${pidfile}.sock`, r));
  try {
    for (const m of ['garbage', 'hangup'] as const) {
      mode = m;
      for (const verb of ['status', 'reload', 'stop']) {
        const r = await cli([verb, '--pidfile', pidfile]);
        assert.equal(r.code, 1, `${m} ${verb}: ${r.out}`);
        assert.match(r.out, m === 'garbage' ? /not a quiesce master's answer: "not json"/ : /^quiesce: (the server closed the control connection|control socket)/m, `${m} ${verb}`);
        noStack(r.out);
      }
    }
  } finally {
    server.close(); // (its callback may never come: it waits for the connections' count, and the loop can empty first)
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a static root the workers\' user cannot enter fails the start, naming it (it answered 404 to everything)', { skip: cannotDropPrivileges() }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-cli-'));
  try {
    const site = join(dir, 'site');
    (await import('node:fs')).mkdirSync(site);
    writeFileSync(join(site, 'index.html'), 'hi\n');
    chmodSync(dir, 0o755);
    chmodSync(site, 0o700); // root's
    // quiesce itself from where nobody can read it (its workers import modules after dropping privileges)
    const r = await cli([site, '--user', 'nobody', '--listen', '127.0.0.1:0', '--admin', 'off', '--workers', '1', '--pidfile', join(dir, 'q.pid')], forNobody(CLI));
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /static root .*site is not a readable directory: EACCES: this user \(uid 65534\) cannot enter it/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--user workers serve a static directory when quiesce itself is installed where that user cannot read (its own modules load before the drop)', { skip: cannotDropPrivileges() }, async () => {
  const { mkdirSync } = await import('node:fs');
  const { execFileSync } = await import('node:child_process');
  const { spawn } = await import('node:child_process');
  const { get, sleep } = await import('./helpers/server.js');
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-cli-')); // 0700, root's: nobody cannot enter it
  const site = mkdtempSync(join(tmpdir(), 'quiesce-site-'));
  const ROOT_DIR = join(CLI, '../../..');
  let proc: ReturnType<typeof spawn> | undefined;
  try {
    const q = join(dir, 'quiesce');
    mkdirSync(q);
    // a copy (hard links: quick) of the installed package, inside a directory only root can enter
    for (const part of ['package.json', 'dist', 'node_modules']) execFileSync('cp', ['-al', join(ROOT_DIR, part), join(q, part)]);
    chmodSync(site, 0o755);
    writeFileSync(join(site, 'index.html'), 'hello from the site\n');
    proc = spawn(process.execPath, [join(q, 'dist/src/cli.js'), site, '--user', 'nobody', '--listen', '127.0.0.1:0', '--admin', 'off', '--workers', '1', '--pidfile', join(dir, 'q.pid')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    proc.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    for (let i = 0; i < 300 && !/quiesce: ready /.test(out) && proc.exitCode === null; i++) await sleep(50);
    assert.match(out, /quiesce: ready /);
    const address = /listening on http:\/\/(\S+)/.exec(out)![1]!;
    const r = await get(address, '/');
    assert.equal(r.status, 200, out);
    assert.equal(r.body, 'hello from the site\n');
    proc.kill('SIGTERM');
    for (let i = 0; i < 200 && proc.exitCode === null; i++) await sleep(50);
    assert.equal(proc.exitCode, 0, out);
  } finally {
    if (proc && proc.exitCode === null) proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    rmSync(site, { recursive: true, force: true });
  }
});
