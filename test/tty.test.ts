/**
 * A foreground server on a real terminal (a pty made by util-linux `script`): `kill -HUP` reloads,
 * while the terminal is there; closing the terminal (its `script` killed: the pty hangs up and the
 * kernel sends SIGHUP) stops it gracefully instead of reloading it into an orphan.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, FIXTURES, alive, childPids, waitFor } from './helpers/server.js';

const hasScript = spawnSync('script', ['--version'], { stdio: 'ignore' }).status === 0;

test('closing the terminal stops a foreground server gracefully; kill -HUP with the terminal there reloads', { skip: !hasScript && 'needs util-linux script for a pty' }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-tty-'));
  const pidfile = join(dir, 'q.pid');
  const log = join(dir, 'error.log');
  const cmd = [process.execPath, CLI, join(FIXTURES, 'core/pid-app.mjs'), '--listen', '127.0.0.1:0', '--admin', 'off', '--workers', '1', '--pidfile', pidfile, '--error-log', log]
    .map((a) => `'${a}'`).join(' ');
  // stdin stays an open pipe: script keeps the pty until it is killed
  const term = spawn('script', ['-qfec', `exec ${cmd}`, join(dir, 'typescript')], { stdio: ['pipe', 'ignore', 'ignore'] });
  let master = 0;
  try {
    master = await waitFor(() => (existsSync(pidfile) ? Number(readFileSync(pidfile, 'utf8')) : 0), 15_000, 'the pid file');
    await waitFor(() => readFileSync(log, 'utf8').includes(' ready '), 15_000, 'ready');
    process.kill(master, 'SIGHUP');
    await waitFor(() => readFileSync(log, 'utf8').includes('reloaded generation=2'), 20_000, 'the reload of a kill -HUP');
    term.kill('SIGKILL'); // the terminal goes away
    await waitFor(() => !alive(master), 20_000, 'the master to stop');
    const text = readFileSync(log, 'utf8');
    assert.match(text, /terminal-gone/);
    assert.match(text, /signal signal=SIGHUP verb=stop/);
    assert.match(text, /\[notice\] master\[\d+\]: stopped forced=0/);
    assert.equal(text.match(/reloaded generation=/g)?.length, 1, 'no reload when the terminal closed');
    assert.ok(!existsSync(pidfile), 'a graceful stop removed its pid file');
  } finally {
    for (const pid of master ? [...childPids(master), master] : []) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    try { term.kill('SIGKILL'); } catch { /* gone */ }
    rmSync(dir, { recursive: true, force: true });
  }
});
