/**
 * Zero-downtime reload: new code and config go live with nothing refused and nothing cut, judged
 * by the probe under continuous load; a bad deploy never makes things worse.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdtempSync, symlinkSync, renameSync, writeFileSync, rmSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { runProbe, type ProbeResult } from '../src/probe/index.js';
import { deployDir, F } from './helpers/deploy.js';
import { startServer, cleanup, stopServer, waitExit, get, sleep, waitFor, within, statusJson, CLI, FIXTURES } from './helpers/server.js';

function summary(p: ProbeResult): string {
  return `sent=${p.sent} ok=${p.ok} refused=${p.refused} cut=${p.cut} ka_race=${p.ka_race} forced=${p.forced} timeout=${p.timeout} other=${p.other} status=${JSON.stringify(p.ok_by_status)} gens=${JSON.stringify(p.generations)}`;
}

function assertPerfect(p: ProbeResult): void {
  for (const k of ['cut', 'ka_race', 'refused', 'timeout', 'other', 'forced'] as const) assert.equal(p[k], 0, `${k}: ${summary(p)}`);
  assert.deepEqual(Object.keys(p.ok_by_status), ['200'], summary(p));
  assert.equal(p.ok, p.sent, summary(p));
}

test('3 reloads in a row under load: 0 cut, 0 refused, all 200, the generation moves forward; killing workers instead cuts', async () => {
  const d = deployDir('v1.mjs');
  const s = await startServer({ args: [d.app, '--workers', '2', '--reload-soak', '400ms', '--expose-generation'] });
  try {
    const results: string[] = [];
    const done = new AbortController(); // the load goes on until a moment after the third reload
    const reload = async () => {
      const r = await s.cli('reload');
      results.push(`${r.code} ${r.stdout.trim()} ${r.stderr.trim()}`);
      if (results.length === 3) setTimeout(() => done.abort(), 2000); // time for generation 4 to answer, even on a loaded machine
    };
    const probe = await runProbe({
      target: s.address, path: '/?burn=2', rate: 250, keepalive: 6, durationS: 30, timeoutS: 15, signal: done.signal,
      commands: [{ atS: 1, run: () => { d.deploy('v2.mjs'); return reload(); } }, { atS: 3, run: reload }, { atS: 5, run: reload }],
    });
    assert.equal(results.length, 3, results.join('\n'));
    for (const r of results) assert.match(r, /^0 quiesce: reloaded/, results.join('\n'));
    assertPerfect(probe);
    // each reload says the generation it made; a reload asked while another waits joins it (a slow
    // machine: the third joined the queued second once, so generations 1-3), which is as good
    const made = [...new Set(results.map((r) => Number(/generation (\d+) serving/.exec(r)?.[1])))].sort((a, b) => a - b);
    assert.ok(made.length >= 2 && made.every((g) => g > 1), results.join('\n'));
    const gens = Object.keys(probe.generations).map(Number).sort((a, b) => a - b);
    assert.deepEqual(gens, [1, ...made], summary(probe));
    assert.match((await get(s.address, '/')).body, /^v2 /);
    // the control: workers that exit without retiring (SIGKILL) under the same load cut connections
    const control = await runProbe({
      target: s.address, path: '/?burn=2', rate: 250, keepalive: 6, durationS: 2.5, timeoutS: 15,
      commands: [{ atS: 1, run: () => { for (const pid of s.workerPids()) process.kill(pid, 'SIGKILL'); } }],
    });
    assert.ok(control.cut + control.ka_race > 0, `killing workers must show cuts: ${summary(control)}`);
    await stopServer(s);
  } finally {
    await cleanup(s);
  }
});

test('a reload to a broken version or one crashing in the soak rolls back: 0 failed requests, the CLI says why', async () => {
  const d = deployDir('v1.mjs');
  const s = await startServer({ args: [d.app, '--workers', '2', '--reload-soak', '1s'] });
  try {
    const outcomes: Array<{ code: number | null; out: string }> = [];
    const probe = await runProbe({
      target: s.address, rate: 150, keepalive: 4, durationS: 5, timeoutS: 15,
      commands: [
        { atS: 0.5, run: async () => { d.deploy('broken.mjs'); const r = await s.cli('reload'); outcomes.push({ code: r.code, out: r.stderr + r.stdout }); } },
        { atS: 2.2, run: async () => { d.deploy('crash-soon.mjs'); const r = await s.cli('reload'); outcomes.push({ code: r.code, out: r.stderr + r.stdout }); } },
      ],
    });
    assert.equal(outcomes.length, 2);
    assert.equal(outcomes[0]!.code, 1, outcomes[0]!.out);
    assert.match(outcomes[0]!.out, /reload failed: .*app failed to load.*broken\.mjs.*rolled back, generation 1 keeps serving/);
    assert.equal(outcomes[1]!.code, 1, outcomes[1]!.out);
    assert.match(outcomes[1]!.out, /reload failed: .*crash-soon: boom after start during the soak; rolled back/);
    assertPerfect(probe);
    assert.match((await get(s.address, '/')).body, /^v1 /);
    await stopServer(s);
  } finally {
    await cleanup(s);
  }
});

test('a respawned worker loads its own generation\'s code, not what was deployed later', async () => {
  const d = deployDir('v1.mjs');
  const s = await startServer({ args: [d.app, '--workers', '1', '--respawn-backoff', '50ms'] });
  try {
    d.deploy('v2.mjs'); // deployed, not reloaded
    const [w] = s.workerPids();
    process.kill(w!, 'SIGKILL');
    await waitFor(() => s.workerPids().length === 1 && s.workerPids()[0] !== w, 10_000, 'respawn');
    const body = await waitFor(async () => { try { return (await get(s.address, '/')).body; } catch { return ''; } }, 10_000, 'respawned worker answers');
    assert.match(body, /^v1 /);
    await stopServer(s);
  } finally {
    await cleanup(s);
  }
});

test('reload adds and removes listeners: the new one serves, the removed one drains with 0 cut', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-cfg-'));
  const cfg = join(dir, 'quiesce.json');
  const a = join(dir, 'a.sock');
  const b = join(dir, 'b.sock');
  writeFileSync(cfg, JSON.stringify({ listen: [a], app: F('v1.mjs'), workers: 2, reloadSoak: '300ms' }));
  const s = await startServer({ args: ['--config', cfg] });
  try {
    writeFileSync(cfg, JSON.stringify({ listen: [b], app: F('v1.mjs'), workers: 2, reloadSoak: '300ms' }));
    let reloadOut = '';
    const done = new AbortController(); // the load goes on until a moment after the reload finished
    const probe = await runProbe({
      target: `unix:${a}`, path: '/?burn=3', rate: 500, durationS: 20, timeoutS: 15, signal: done.signal,
      commands: [{ atS: 1, run: async () => {
        const r = await s.cli('reload');
        reloadOut = `${r.code} ${r.stdout}${r.stderr}`;
        setTimeout(() => done.abort(), 700);
      } }],
    });
    assert.match(reloadOut, /^0 .*opened .*b\.sock.*closed .*a\.sock/s);
    assert.equal(probe.cut, 0, summary(probe));
    assert.equal(probe.timeout + probe.other + probe.ka_race, 0, summary(probe));
    assert.ok(probe.refused > 0, `the removed listener refuses afterwards: ${summary(probe)}`);
    const after = await runProbe({ target: `unix:${b}`, rate: 50, durationS: 0.5 });
    assert.equal(after.ok, after.sent, summary(after));
    await stopServer(s);
  } finally {
    await cleanup(s);
  }
});

/** A verb run as its own process, its progress (stderr) readable while it runs. */
function liveCli(s: { pidfile: string }, verb: string): { stderr: () => string; done: Promise<{ code: number | null; stdout: string; stderr: string }>; pid: number } {
  const p = spawn(process.execPath, [CLI, verb, '--pidfile', s.pidfile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => p.on('close', (code) => resolve({ code, stdout, stderr })));
  return { stderr: () => stderr, done, pid: p.pid! };
}

// Each request is sent once the previous one is seen where it should be (its progress line), and
// each generation's init() is held until the test lets it go: no order rests on timing. (It used to
// send three verbs 150 ms apart: a slow start of the second CLI let the third arrive first, and
// the third got "queued behind it".)
test('a reload asked during a reload is queued once, later ones join it until it starts; one asked after it started queues anew', async () => {
  const hold = mkdtempSync(join(tmpdir(), 'quiesce-hold-'));
  for (const g of [2, 3]) writeFileSync(join(hold, `hold-g${g}`), '');
  const s = await startServer({ args: [F('held.mjs'), '--workers', '1', '--reload-soak', '100ms', '--ready-timeout', '90s'], env: { HOLD_DIR: hold } });
  const clis: Array<ReturnType<typeof liveCli>> = [];
  const cli = (): ReturnType<typeof liveCli> => { const c = liveCli(s, 'reload'); clis.push(c); return c; };
  const sees = async (c: ReturnType<typeof liveCli>, re: RegExp, what: string): Promise<void> => {
    try {
      await waitFor(() => re.test(c.stderr()), 30_000, what);
    } catch (err) {
      throw new Error(`${(err as Error).message}; its stderr: ${c.stderr()}`);
    }
  };
  try {
    const r1 = cli();
    await sees(r1, /starting generation 2/, 'reload 1 running');
    const r2 = cli();
    await sees(r2, /this one is queued behind it/, 'reload 2 queued');
    const r3 = cli();
    await sees(r3, /already queued behind the running one: joined it/, 'reload 3 joining reload 2');
    rmSync(join(hold, 'hold-g2')); // reload 1 completes; reload 2 starts, held in generation 3's init()
    await sees(r2, /starting generation 3/, 'reload 2 running');
    const r4 = cli();
    await sees(r4, /this one is queued behind it/, 'reload 4 queued anew, not joined to the running reload 2');
    rmSync(join(hold, 'hold-g3'));
    const [o1, o2, o3, o4] = await Promise.all(clis.map((c) => within(c.done, 60_000, 'a reload verb to finish')));
    for (const r of [o1, o2, o3, o4]) assert.equal(r!.code, 0, r!.stderr);
    assert.match(o1!.stdout, /generation 2 serving/);
    assert.match(o2!.stdout, /generation 3 serving/);
    assert.match(o3!.stdout, /generation 3 serving/);
    assert.match(o4!.stdout, /generation 4 serving/);
    await stopServer(s);
  } finally {
    for (const c of clis) { try { process.kill(c.pid, 'SIGKILL'); } catch { /* exited */ } }
    await cleanup(s);
    rmSync(hold, { recursive: true, force: true });
  }
});

test('a long request in the old generation finishes; an SSE stream ends through onDrain()', async () => {
  const s = await startServer({ args: [F('sse.mjs'), '--workers', '1', '--reload-soak', '200ms'] });
  try {
    const long = get(s.address, '/?sleep=2500');
    const sse = get(s.address, '/events');
    await sleep(300);
    const r = await s.cli('reload');
    assert.equal(r.code, 0, r.stderr);
    const [l, e] = await Promise.all([long, sse]);
    assert.equal(l.status, 200);
    assert.match(l.body, /^sse-app /);
    assert.equal(e.status, 200);
    assert.match(e.body, /event: bye\ndata: server retiring/);
    await stopServer(s);
  } finally {
    await cleanup(s);
  }
});

test('--reload-strategy rolling: never more than workers + 1 processes, 0 failed under load', async () => {
  const s = await startServer({ args: [F('v1.mjs'), '--workers', '3', '--reload-strategy', 'rolling', '--reload-soak', '300ms', '--idle-grace', '200ms', '--expose-generation'] });
  try {
    let most = 0;
    let reloadOut = '';
    const sampler = setInterval(() => { most = Math.max(most, s.workerPids().length); }, 20);
    const done = new AbortController();
    const probe = await runProbe({
      target: s.address, path: '/?burn=1', rate: 150, keepalive: 4, durationS: 30, timeoutS: 15, signal: done.signal,
      commands: [{ atS: 0.5, run: async () => {
        const r = await s.cli('reload');
        reloadOut = `${r.code} ${r.stderr}${r.stdout}`;
        setTimeout(() => done.abort(), 700);
      } }],
    });
    clearInterval(sampler);
    assert.match(reloadOut, /^0 .*rolling: 3\/3 workers of generation 2 ready.*reloaded: generation 2 serving \(3 workers\), generation 1 retiring \(3 workers\)/s);
    assertPerfect(probe);
    assert.ok(most <= 4, `at most 3 + 1 workers at once, saw ${most}`);
    assert.ok((probe.generations['2'] ?? 0) > 0, summary(probe));
    await waitFor(async () => (await get(s.address, '/')).headers['x-quiesce-generation'] === '2', 5_000, 'generation 2 only');
    await stopServer(s);
  } finally {
    await cleanup(s);
  }
});

test('at most two generations: a reload waits for the previous generation to finish; a bad config fails; a stop during a reload wins', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-cfg-'));
  const cfg = join(dir, 'quiesce.json');
  // a request held until the test creates a file keeps generation 1 retiring as long as needed
  // (it was a 2.5 s sleep: two CLI starts on a loaded machine outlasted it)
  const HOLD = join(FIXTURES, 'status/hold-app.mjs');
  const release = join(dir, 'release');
  writeFileSync(cfg, JSON.stringify({ app: HOLD, workers: 1, reloadSoak: '100ms', gracefulTimeout: 60 }));
  const s = await startServer({ args: ['--config', cfg, '--listen', '127.0.0.1:0'] });
  const clis: Array<ReturnType<typeof liveCli>> = [];
  try {
    const long = get(s.address, `/?hold=${encodeURIComponent(release)}`);
    long.catch(() => undefined); // awaited below; a failing assertion must not leave it unhandled
    await waitFor(async () => (await statusJson(s)).workers.some((w) => w.state === 'W'), 10_000, 'the held request in flight');
    const r1 = await s.cli('reload');
    assert.equal(r1.code, 0, r1.stderr);
    const r2 = liveCli(s, 'reload');
    clis.push(r2);
    let released = false;
    let doneBeforeRelease = false;
    void r2.done.then(() => { doneBeforeRelease = !released; });
    await waitFor(() => /waiting for 1 retiring worker\(s\) of generation 1 to finish first/.test(r2.stderr()), 30_000, 'the second reload to wait for generation 1');
    released = true;
    writeFileSync(release, '');
    const o2 = await within(r2.done, 60_000, 'the second reload');
    assert.equal(o2.code, 0, o2.stderr);
    assert.ok(!doneBeforeRelease, 'the second reload waited for generation 1\'s held request');
    assert.equal((await long).status, 200);
    writeFileSync(cfg, JSON.stringify({ app: F('v1.mjs'), workers: 'lots' }));
    const bad = await s.cli('reload');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /reload failed: config: .*quiesce\.json.*"workers"/);
    assert.equal((await get(s.address, '/')).status, 200);
    writeFileSync(cfg, JSON.stringify({ app: F('v1.mjs'), workers: 1, reloadSoak: '3s' }));
    const reloads = (s.err().match(/to=reloading/g) ?? []).length;
    const during = s.cli('reload');
    // the stop must come while this reload runs (a CLI slow to start on a loaded machine came after it)
    await waitFor(() => (s.err().match(/to=reloading/g) ?? []).length > reloads, 10_000, 'the reload to begin');
    await sleep(300);
    process.kill(s.pid, 'SIGTERM');
    const r3 = await during;
    assert.equal(r3.code, 1);
    assert.match(r3.stderr, /interrupted by a stop/);
    assert.equal((await waitExit(s, 15_000)).code, 0);
  } finally {
    for (const c of clis) { try { process.kill(c.pid, 'SIGKILL'); } catch { /* exited */ } }
    await cleanup(s);
  }
});
