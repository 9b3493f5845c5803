// Static files in a real quiesce: --static-max-age reaches Cache-Control, the content cache's
// bytes are read from the workers' stats and stay within --file-cache, bad values name the flag.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
    ['--static-immutable', 'assets', /--static-immutable: not a URL path of a directory/],
    ['--static-immutable', '/a/../b', /--static-immutable: not a URL path of a directory/],
  ] as const) {
    const r = await runCli(['configtest', `${flag}=${value}`]);
    assert.notEqual(r.code, 0, `${flag} ${value}`);
    assert.match(r.stderr + r.stdout, want, `${flag} ${value}`);
  }
  const ok = await runCli(['configtest', '--file-cache', '0', '--static-max-age', '1m', '--static-immutable', '/assets/', '--static-immutable', '/']);
  assert.equal(ok.code, 0, ok.stderr);
});

test('--static-immutable: files under those URL paths are immutable for a year (from the content cache and in a 304 too), the rest keeps --static-max-age', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-static-immutable-'));
  mkdirSync(join(dir, 'assets', 'js'), { recursive: true });
  mkdirSync(join(dir, 'assets-old'));
  mkdirSync(join(dir, '_next', 'static'), { recursive: true });
  writeFileSync(join(dir, 'index.html'), '<p>home</p>');
  writeFileSync(join(dir, 'assets', 'app-3f2a9c1d.js'), 'app();');
  writeFileSync(join(dir, 'assets', 'js', 'chunk-9d1e.js'), 'chunk();');
  writeFileSync(join(dir, 'assets-old', 'x.js'), 'x();');
  writeFileSync(join(dir, '_next', 'static', 'main.js'), 'main();');
  const immutable = 'public, max-age=31536000, immutable';
  const s = await startServer({ args: [dir, '--static-max-age', '60', '--static-immutable', '/assets', '--static-immutable', '/_next/static/', '--workers', '1'] });
  try {
    for (let round = 0; round < 2; round++) { // the second round from the content cache
      for (const [path, want] of [
        ['/assets/app-3f2a9c1d.js', immutable], ['/assets/js/chunk-9d1e.js', immutable], ['/_next/static/main.js', immutable],
        ['/index.html', 'public, max-age=60'], ['/', 'public, max-age=60'], ['/assets-old/x.js', 'public, max-age=60'],
      ] as const) {
        const r = await get(s.address, path);
        assert.equal(r.status, 200, path);
        assert.equal(r.headers['cache-control'], want, `${path} (round ${round})`);
      }
    }
    const first = await get(s.address, '/assets/app-3f2a9c1d.js');
    const again = await get(s.address, '/assets/app-3f2a9c1d.js', { 'if-none-match': String(first.headers.etag) });
    assert.equal(again.status, 304);
    assert.equal(again.headers['cache-control'], immutable);
    assert.equal((await stopServer(s)).code, 0);
  } finally {
    await cleanup(s);
    rmSync(dir, { recursive: true, force: true });
  }
});
