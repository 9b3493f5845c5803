/**
 * A configuration that cannot work fails where it is given (configtest, start, a reload), naming
 * the settings at fault; a worker that fails before it is ready is heard at once, not at
 * --ready-timeout.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { runCli, FIXTURES } from './helpers/server.js';

const PID_APP = join(FIXTURES, 'core/pid-app.mjs');

test('--request-timeout below --headers-timeout, and --group without --user, are refused by configtest and by a start, naming both settings', async () => {
  const flags = await runCli(['configtest', PID_APP, '--request-timeout', '10', '--headers-timeout', '20']);
  assert.equal(flags.code, 2, flags.stderr); // a configuration error, as a usage error
  assert.match(flags.stderr, /--request-timeout \(10 s\) must be at least --headers-timeout \(20 s\), or 0 for none/);
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-rules-'));
  try {
    const file = join(dir, 'q.json');
    writeFileSync(file, JSON.stringify({ requestTimeout: 5, headersTimeout: 6 }));
    const fromFile = await runCli(['configtest', PID_APP, '--config', file]);
    assert.equal(fromFile.code, 2, fromFile.stderr);
    assert.match(fromFile.stderr, /config file .*q\.json: "requestTimeout" \(5 s\) must be at least "headersTimeout" \(6 s\)/);
    const off = await runCli(['configtest', PID_APP, '--request-timeout', '0', '--headers-timeout', '20']);
    assert.equal(off.code, 0, `0 turns the request timeout off: ${off.stderr}`);
    const start = await runCli([PID_APP, '--listen', '127.0.0.1:0', '--admin', 'off', '--pidfile', join(dir, 'q.pid'), '--request-timeout', '10', '--headers-timeout', '20']);
    assert.equal(start.code, 2, start.stdout + start.stderr);
    assert.match(start.stderr, /--request-timeout \(10 s\) must be at least --headers-timeout/);
    assert.doesNotMatch(start.stdout + start.stderr, /worker-started/, 'refused before any worker');
    const group = await runCli(['configtest', PID_APP, '--group', 'nogroup']);
    assert.equal(group.code, 2, group.stderr);
    assert.match(group.stderr, /--group needs --user/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a worker that fails on its own before it is ready fails the start with its error, not a ready timeout', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-rules-'));
  try {
    const r = await runCli([join(FIXTURES, 'core/init-async-throw.mjs'), '--listen', '127.0.0.1:0', '--admin', 'off', '--workers', '1', '--ready-timeout', '50', '--pidfile', join(dir, 'q.pid')]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /pool connection lost during init/);
    assert.doesNotMatch(r.stderr, /not ready within/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--spare-worker takes on, off or a count from 0 to 4, and names itself when given anything else', async () => {
  for (const ok of ['on', 'off', '0', '2', '4']) {
    const r = await runCli(['configtest', PID_APP, '--spare-worker', ok]);
    assert.equal(r.code, 0, `--spare-worker ${ok}: ${r.stderr}`);
  }
  for (const bad of ['5', 'yes', '-1', '1.5']) {
    const r = await runCli(['configtest', PID_APP, '--spare-worker', bad]);
    assert.equal(r.code, 2, `--spare-worker ${bad}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /--spare-worker.*"on", "off" or a count of spares from 0 to 4/);
  }
});
