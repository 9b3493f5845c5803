// Runs every compiled test file with node's own test runner (Node 20 has no glob in --test), then
// checks that no process the tests started is left behind: every descendant inherits a marker in
// its environment, and any process still carrying it after the run fails the run (and is ended).
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import { basename, join } from 'node:path';
import { randomUUID } from 'node:crypto';

const dir = new URL('../dist/test/', import.meta.url).pathname;
const only = process.argv.slice(2);
// The longest files first (their seconds of test time in a CI run on Node 20: robust 129, upgrade
// 109, tls 91, drain 66, core 37, reload 36), then the rest by name: run three at a time (most of a
// test's time is waiting on servers, signals and timers: three at a time kept this 2-CPU machine
// ~1.4 CPUs busy on average, and took the Node 20 run from ~450 s to 366-383 s, 338/338 in each
// of two runs), a long file started last would run alone at the end (alphabetically, upgrade and tls came
// last).
const LONGEST = ['robust', 'upgrade', 'tls', 'drain', 'core', 'reload'];
const rank = (f) => { const i = LONGEST.indexOf(f.replace(/\.test\.js$/, '')); return i < 0 ? LONGEST.length : i; };
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.test.js'))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0))
  .map((f) => join(dir, f));
if (files.length === 0) {
  console.error('no test files found in dist/test');
  process.exit(1);
}
const marker = `QUIESCE_TEST_RUN=${randomUUID()}`;
// every temp dir and file of the run (servers' pid files, sockets, certificates, configs) in one
// scratch dir, removed at the end whatever the tests left; sticky and open to all as /tmp is (the
// tests' unprivileged servers make their own dirs there)
const scratch = mkdtempSync(join(tmpdir(), 'quiesce-run-'));
chmodSync(scratch, 0o1777);
const env = { ...process.env, QUIESCE_TEST_RUN: marker.split('=')[1], TMPDIR: scratch };
// the usual reporter (what node --test picks: spec on a terminal or from Node 23 on, else TAP),
// and test/skips-reporter.mjs writing the skipped tests to a file, printed at the end
const major = Number(process.versions.node.split('.')[0]);
const usual = major >= 23 || process.stdout.isTTY ? 'spec' : 'tap';
const skipsFile = join(tmpdir(), `quiesce-skips-${env.QUIESCE_TEST_RUN}.jsonl`);
const reporters = [`--test-reporter=${usual}`, '--test-reporter-destination=stdout',
  `--test-reporter=${new URL('./skips-reporter.mjs', import.meta.url).href}`, `--test-reporter-destination=${skipsFile}`];
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=3', ...reporters, ...files], { stdio: 'inherit', env });
printSkips();
rmSync(scratch, { recursive: true, force: true });

/** Every skipped test with its reason, after the run's own output: a missing tool is said where it is seen. */
function printSkips() {
  let skipped = [];
  try {
    skipped = readFileSync(skipsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  } catch { /* no file: nothing was skipped, or the run failed before reporting */ }
  rmSync(skipsFile, { force: true });
  if (skipped.length === 0) return;
  const lines = skipped.map((t) => `  SKIPPED ${basename(t.file)}: ${t.name}\n          because: ${t.reason}`);
  process.stdout.write(`\n== ${skipped.length} test(s) skipped, not run:\n${lines.join('\n')}\n`);
}

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
