// Static files in a real quiesce: --static-max-age reaches Cache-Control, the content cache's
// bytes are read from the workers' stats and stay within --file-cache, bad values name the flag.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanup, get, runCli, startServer, stopServer, waitFor } from './helpers/server.js';

type Slot = { pid: number | null; fileCacheBytes?: number };

test('a served directory: --static-max-age in Cache-Control, the file cache within --file-cache in the workers\' stats', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-static-process-'));
  const bound = 48 * 1024;
  for (let i = 0; i < 8; i++) writeFileSync(join(dir, `f${i}.txt`), String(i).repeat(10_000 + i * 1000));
  const s = await startServer({ args: [dir, '--file-cache', '48k', '--static-max-age', '90', '--workers', '1'] });
  try {
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 8; i++) {
        const r = await get(s.address, `/f${i}.txt`);
        assert.equal(r.status, 200);
        assert.equal(r.body, String(i).repeat(10_000 + i * 1000));
        assert.equal(r.headers['cache-control'], 'public, max-age=90');
      }
    }
    // the stats come every 500 ms: wait for a report made after the requests
    const slots = await waitFor(async () => {
      const st = JSON.parse((await get(s.admin, '/server-status?json')).body) as { workers: Slot[] };
      const live = st.workers.filter((w) => w.pid !== null);
      return live.length === 1 && (live[0]!.fileCacheBytes ?? 0) > 0 ? live : undefined;
    }, 5_000, 'a stats report with the file cache');
    const held = slots?.[0]?.fileCacheBytes ?? 0;
    assert.ok(held <= bound, `${held} bytes held, bound ${bound}`);
    assert.ok(held >= 10_000, `${held} bytes held: at least one file`);
    assert.equal((await stopServer(s)).code, 0);
  } finally {
    await cleanup(s);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad --file-cache and --static-max-age values are refused, naming the flag', async () => {
  for (const [flag, value, want] of [
    ['--file-cache', 'lots', /--file-cache: not a size \(use bytes, or 512k, 64m, 1g\), got "lots"/],
    ['--file-cache', '-1', /--file-cache: not a size/],
    ['--static-max-age', 'soon', /--static-max-age: not a duration/],
    ['--static-max-age', '400d', /--static-max-age: not a duration/],
    ['--static-max-age', String(2 * 365 * 24 * 3600), /--static-max-age: at most 1 year/],
  ] as const) {
    const r = await runCli(['configtest', `${flag}=${value}`]);
    assert.notEqual(r.code, 0, `${flag} ${value}`);
    assert.match(r.stderr + r.stdout, want, `${flag} ${value}`);
  }
  const ok = await runCli(['configtest', '--file-cache', '0', '--static-max-age', '1m']);
  assert.equal(ok.code, 0, ok.stderr);
});
