/** The test runner itself (test/run.mjs): a test skipped for a missing tool is said at the end of the run. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './helpers/server.js';

test('npm test without chromium says the browser test was skipped and why, after the run', () => {
  const r = spawnSync(process.execPath, [join(ROOT, 'test/run.mjs'), 'status-browser'], {
    cwd: ROOT, encoding: 'utf8', timeout: 120_000,
    // (without NODE_TEST_CONTEXT, which makes a node --test inside a test file report to its parent)
    env: { ...process.env, NODE_TEST_CONTEXT: undefined, QUIESCE_TEST_CHROMIUM: '/nonexistent/chromium' },
  });
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  const tail = r.stdout.slice(r.stdout.lastIndexOf('\n== '));
  const because = ' {10}because: \\/nonexistent\\/chromium is not installed \\(apt-get install chromium, as \\.ci\\/run does\\)\\n';
  const skipped = '  SKIPPED status-browser\\.test\\.js: the status page in chromium[^\\n]*\\n' + because;
  // the file's two browser tests, each named with the reason
  assert.match(tail, new RegExp(`^\\n== 2 test\\(s\\) skipped, not run:\\n${skipped}${skipped}$`), r.stdout);
});
