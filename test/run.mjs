// Runs every compiled test file with node's own test runner (Node 20 has no glob in --test), then
// checks that no process the tests started is left behind: every descendant inherits a marker in
// its environment, and any process still carrying it after the run fails the run (and is ended).
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';

const dir = new URL('../dist/test/', import.meta.url).pathname;
const only = process.argv.slice(2);
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.test.js'))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort()
  .map((f) => join(dir, f));
if (files.length === 0) {
  console.error('no test files found in dist/test');
  process.exit(1);
}
const marker = `QUIESCE_TEST_RUN=${randomUUID()}`;
const env = { ...process.env, QUIESCE_TEST_RUN: marker.split('=')[1] };
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=2', ...files], { stdio: 'inherit', env });
// the files mirrored for the unprivileged runs (test/helpers/unprivileged.ts), if any
rmSync(join(tmpdir(), `quiesce-nobody-root-${env.QUIESCE_TEST_RUN}`), { recursive: true, force: true });

function leftovers() {
  const out = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(marker)) {
        out.push({ pid: Number(pid), cmd: readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim() });
      }
    } catch { /* gone, or not ours to read */ }
  }
  return out;
}
let left = leftovers();
for (let i = 0; i < 20 && left.length > 0; i++) {
  // a process may be in its last milliseconds of exiting
  spawnSync('sleep', ['0.1']);
  left = leftovers();
}
if (left.length > 0) {
  console.error(`\nthe tests left ${left.length} process(es) behind:`);
  for (const p of left) {
    console.error(`  ${p.pid} ${p.cmd}`);
    try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
  }
  process.exit(1);
}
process.exit(r.status ?? 1);
