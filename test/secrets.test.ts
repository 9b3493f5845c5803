/**
 * Secrets stay where they belong: a request's query (an api_key) is not shown on the status pages
 * unless asked; the admin token, once set, guards /server-status on loopback too; it can come from
 * a file or the environment instead of the command line (where ps shows it), and never reaches a
 * worker (the app's process, maybe another user's) through its environment or its boot.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, cleanup, stopServer, get, runCli, waitFor, FIXTURES } from './helpers/server.js';

const PID_APP = join(FIXTURES, 'core/pid-app.mjs');
const SECRET = 'Zq9-not-to-be-seen-7Kx';

type Status = { workers: Array<{ current?: { path: string } }> };

/** Starts a request that takes 3 s, and reads the status JSON while it runs. */
async function statusDuringRequest(s: Awaited<ReturnType<typeof startServer>>, headers: Record<string, string> = {}): Promise<string> {
  const slow = get(s.address, `/slow?sleep=3000&api_key=${SECRET}`);
  try {
    return await waitFor<string>(async () => {
      const r = await get(s.admin, '/server-status?json', headers);
      assert.equal(r.status, 200, r.body);
      const st = JSON.parse(r.body) as Status;
      return st.workers.some((w) => w.current?.path.startsWith("/slow")) ? r.body : "";
    }, 5_000, 'the slow request on the status page');
  } finally {
    await slow;
  }
}

test('a request in flight shows on /server-status without its query; --status-query shows it', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '1'] });
  try {
    const body = await statusDuringRequest(s);
    assert.match(body, /"path": ?"\/slow"/);
    assert.ok(!body.includes(SECRET), 'the query reached the status page');
    const html = await get(s.admin, '/server-status');
    assert.ok(!html.body.includes(SECRET));
    await stopServer(s);
  } finally {
    await cleanup(s);
  }
  const q = await startServer({ args: [PID_APP, '--workers', '1', '--status-query'] });
  try {
    assert.ok((await statusDuringRequest(q)).includes(`api_key=${SECRET}`), 'asked for, the query is shown');
    await stopServer(q);
  } finally {
    await cleanup(q);
  }
});

for (const how of ['file', 'env'] as const) {
  test(`the admin token from ${how === 'file' ? '--admin-token-file' : 'QUIESCE_ADMIN_TOKEN'}: /server-status needs it on loopback, /metrics and /live do not; no worker sees it; ps does not show it`, async () => {
    const tokenDir = mkdtempSync(join(tmpdir(), 'quiesce-token-'));
    const tokenFile = join(tokenDir, 'token');
    writeFileSync(tokenFile, `${SECRET}\n`, { mode: 0o600 });
    const s = how === 'file'
      ? await startServer({ args: [PID_APP, '--workers', '1', '--admin-token-file', tokenFile] })
      : await startServer({ args: [PID_APP, '--workers', '1'], env: { QUIESCE_ADMIN_TOKEN: SECRET } });
    try {
      assert.equal((await get(s.admin, '/server-status?json')).status, 401);
      assert.equal((await get(s.admin, '/server-status?json', { authorization: 'Bearer wrong' })).status, 401);
      assert.match(await statusDuringRequest(s, { authorization: `Bearer ${SECRET}` }), /"path": ?"\/slow"/);
      assert.equal((await get(s.admin, '/metrics')).status, 200, 'metrics show no request: open on loopback');
      assert.equal((await get(s.admin, '/live')).status, 200);
      assert.ok(!readFileSync(`/proc/${s.pid}/cmdline`, 'utf8').includes(SECRET));
      const workers = s.workerPids();
      assert.ok(workers.length > 0);
      for (const w of workers) {
        const env = readFileSync(`/proc/${w}/environ`, 'utf8');
        assert.ok(!env.includes(SECRET), `worker ${w} has the token in its environment`);
        assert.ok(!readFileSync(`/proc/${w}/cmdline`, 'utf8').includes(SECRET));
      }
      await stopServer(s);
      assert.doesNotMatch(s.err(), /admin-token-visible/);
    } finally {
      await cleanup(s);
      rmSync(tokenDir, { recursive: true, force: true });
    }
  });
}

test('--admin-token on the command line works, and the start warns that ps shows it; a bad token source is refused by name', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '1', '--admin-token', SECRET] });
  try {
    assert.match(s.err(), /\[warn\] .*admin-token-visible/);
    assert.equal((await get(s.admin, '/server-status?json')).status, 401);
    assert.equal((await get(s.admin, `/server-status?json&token=${SECRET}`)).status, 200);
    for (const w of s.workerPids()) assert.ok(!readFileSync(`/proc/${w}/environ`, 'utf8').includes(SECRET), 'the boot carries no token');
    await stopServer(s);
  } finally {
    await cleanup(s);
  }
  const both = await runCli(['configtest', PID_APP, '--admin-token', 'x', '--admin-token-file', '/etc/hostname']);
  assert.equal(both.code, 2, both.stderr);
  assert.match(both.stderr, /--admin-token and --admin-token-file: give one/);
  const missing = await runCli(['configtest', PID_APP, '--admin-token-file', '/nonexistent/token']);
  assert.equal(missing.code, 2, missing.stderr);
  assert.match(missing.stderr, /--admin-token-file \/nonexistent\/token: ENOENT/);
});
