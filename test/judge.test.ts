/**
 * Deploys that judge themselves: under steady load, a reload to a version that answers 500 on a
 * fifth of its requests, or three times slower, is rolled back with the figures (exit 1) and no
 * request fails on the old generation; an equal version goes live; too little traffic goes live
 * with the judge abstaining. Each under both strategies. The same for `quiesce upgrade` (a new
 * master judged against the old one: its verdict rolls the upgrade back). And the request metrics
 * add up to what the probe completed, across a reload.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runProbe, type ProbeResult } from '../src/probe/index.js';
import { renderTimeline } from '../src/probe/timeline.js';
import { deployDir } from './helpers/deploy.js';
import { startServer, cleanup, stopServer, get, sleep, statusJson, alive, childPids, waitFor, runCli, type Server } from './helpers/server.js';
import { readFileSync } from 'node:fs';

function summary(p: ProbeResult): string {
  return `sent=${p.sent} ok=${p.ok} refused=${p.refused} cut=${p.cut} ka_race=${p.ka_race} forced=${p.forced} timeout=${p.timeout} other=${p.other} status=${JSON.stringify(p.ok_by_status)} gens=${JSON.stringify(p.generations)}`;
}

/** Nothing failed: every request answered, none cut, refused, raced or timed out. */
function assertNoFailure(p: ProbeResult): void {
  for (const k of ['cut', 'ka_race', 'refused', 'timeout', 'other', 'forced'] as const) assert.equal(p[k], 0, `${k}: ${summary(p)}`);
  assert.equal(p.ok, p.sent, summary(p));
}

type Run = { s: Server; code: number | null; out: string; probe: ProbeResult };

/**
 * v1 serving 2 workers under a steady load of /?sleep=20 (new connections, a keep-alive client);
 * 1 s in, `version` is deployed and reloaded with a 3 s judged soak. The server is left running.
 * Mostly new connections: keep-alive clients stay on the old generation's workers (steered one
 * response in 16), and a busy old generation wins most of the kernel's accept race (README): on
 * this shared 2-CPU machine the new generation got 5-70% of a soak's responses, so 40 responses
 * a side make the judge's evidence here (the default is 100).
 */
async function judgedReload(strategy: 'all' | 'rolling', version: string, load: { rate: number; keepalive: number }, extra: string[] = [], verb: string[] = ['reload']): Promise<Run> {
  const d = deployDir('v1.mjs');
  const s = await startServer({ args: [d.app, '--workers', '2', '--reload-soak', '3s', '--expose-generation', '--reload-strategy', strategy, '--reload-judge', 'on', '--judge-min-requests', '40', ...extra] });
  let r: { code: number | null; stdout: string; stderr: string } | undefined;
  // the load goes on until a moment after the verb answered (a loaded machine may take seconds to start generation 2)
  const done = new AbortController();
  const probe = await runProbe({
    target: s.address, path: '/?sleep=20', rate: load.rate, keepalive: load.keepalive, durationS: 90, timeoutS: 15, signal: done.signal,
    commands: [{ atS: 1, run: async () => { d.deploy(version); r = await s.cli(...verb); setTimeout(() => done.abort(), 500); } }],
  });
  assert.ok(r, `${verb[0]} ran`);
  return { s, code: r.code, out: `${r.stderr}${r.stdout}probe: ${summary(probe)}`, probe };
}

/** Light enough that a loaded 2-CPU machine's queueing does not swamp the app's own 20 ms. */
const STEADY = { rate: 80, keepalive: 1 };

for (const strategy of ['all', 'rolling'] as const) {
  test(`${strategy}: a reload to a version answering 500 on 20% of requests is rolled back with the figures; nothing failed on the old generation`, async () => {
    const { s, code, out, probe } = await judgedReload(strategy, 'judge-500.mjs', STEADY);
    try {
      assert.equal(code, 1, out);
      assert.match(out, /reload failed: generation 2 is worse: new 5xx (1\d|2\d)(\.\d+)?% vs old 0% over [\d,]+ requests \(old: [\d,]+\).*rolled back, generation 1 keeps serving/, out);
      assertNoFailure(probe);
      // the 500s all came from the new generation, the old one answered 200 to every request
      const byGen = (g: string, st: number) => probe.outcomes.filter((o) => o.generation === g && o.status === st).length;
      assert.equal(byGen('1', 500), 0, summary(probe));
      assert.ok(byGen('2', 500) > 0, summary(probe));
      assert.equal(probe.outcomes.filter((o) => o.generation === '1').length, byGen('1', 200), summary(probe));
      assert.match((await get(s.address, '/')).body, /^v1 /);
      const st = await statusJson(s);
      assert.ok(st.deploys.some((e) => e.phase === 'judged-worse' && e.generation === 2), JSON.stringify(st.deploys));
      assert.ok(st.deploys.some((e) => e.phase === 'rolled-back'), JSON.stringify(st.deploys));
      await stopServer(s);
    } finally {
      await cleanup(s);
    }
  });

  test(`${strategy}: a reload to a version 3x slower is rolled back, naming the latencies`, async () => {
    const { s, code, out, probe } = await judgedReload(strategy, 'judge-slow.mjs', STEADY);
    try {
      assert.equal(code, 1, out);
      assert.match(out, /generation 2 is worse: new p(99|50) [\d.]+ ms vs old [\d.]+ ms \([\d.]+x, limit 2x\) over [\d,]+ requests/, out);
      assertNoFailure(probe);
      assert.deepEqual(Object.keys(probe.ok_by_status), ['200'], summary(probe));
      assert.match((await get(s.address, '/')).body, /^v1 /);
      await stopServer(s);
    } finally {
      await cleanup(s);
    }
  });

  test(`${strategy}: a reload to an equal version goes live, the judge's figures in its answer`, async () => {
    const { s, code, out, probe } = await judgedReload(strategy, 'v2.mjs', STEADY);
    try {
      assert.equal(code, 0, out);
      assert.match(out, /reloaded: generation 2 serving.*judge passed: new 5xx 0% vs old 0%, p50 [\d.]+ ms vs [\d.]+ ms, p99 [\d.]+ ms vs [\d.]+ ms over [\d,]+ requests/, out);
      assertNoFailure(probe);
      assert.match((await get(s.address, '/')).body, /^v2 /);
      await stopServer(s);
    } finally {
      await cleanup(s);
    }
  });

  test(`${strategy}: a reload with too little traffic goes live and says the judge abstained; --no-judge skips it`, async () => {
    const { s, code, out, probe } = await judgedReload(strategy, 'judge-500.mjs', { rate: 3, keepalive: 0 });
    try {
      assert.equal(code, 0, out);
      assert.match(out, /judge abstained: the new generation served \d+ .*requests during the soak \(fewer than --judge-min-requests 40\)/, out);
      assertNoFailure(probe);
      // --no-judge: not judged at all, even under load that would have judged it worse
      const again = await s.cli('reload', '--no-judge');
      assert.equal(again.code, 0, again.stderr + again.stdout);
      assert.doesNotMatch(again.stderr + again.stdout, /judge/);
      await stopServer(s);
    } finally {
      await cleanup(s);
    }
  });
}

test('request metrics: the responses counted add up to the requests the probe completed, across a reload; /metrics has them by generation; the probe reports the deploy\'s phases', async () => {
  const d = deployDir('v1.mjs');
  const s = await startServer({ args: [d.app, '--workers', '2', '--reload-soak', '1s', '--expose-generation', '--reload-judge', 'on'] });
  try {
    let r: { code: number | null; stdout: string; stderr: string } | undefined;
    const done = new AbortController(); // the load goes on until 2 s after the reload answered
    const probe = await runProbe({
      target: s.address, path: '/?sleep=5', rate: 60, keepalive: 3, durationS: 90, timeoutS: 15, admin: s.admin, signal: done.signal,
      commands: [{ atS: 1, run: async () => { d.deploy('v2.mjs'); r = await s.cli('reload'); setTimeout(() => done.abort(), 2_000); } }],
    });
    assert.equal(r?.code, 0, r && r.stderr + r.stdout);
    // the deploy's phases, read from the admin listener, in order and within the run
    const phases = (probe.phases ?? []).map((p) => p.phase);
    assert.equal(probe.phases_error, undefined);
    assert.deepEqual(phases.filter((p) => p !== 'judge-abstained' && p !== 'judged-ok'), ['soak-start', 'committed', 'old-retired'], JSON.stringify(probe.phases));
    assert.ok(phases.includes('judge-abstained') || phases.includes('judged-ok'), JSON.stringify(probe.phases));
    const start = probe.phases!.find((p) => p.phase === 'soak-start')!;
    // after the reload was asked (1 s in), within the run (generation 2 may take seconds to start on a loaded machine)
    assert.ok(start.at_s > 1 && start.at_s < probe.duration_s, JSON.stringify(start));
    const svg = renderTimeline(probe, 'reload');
    assert.match(svg, /gen 2 soak-start/);
    assert.match(svg, /gen 2 committed/);
    assertNoFailure(probe);
    assert.ok(probe.generations['1']! > 0 && probe.generations['2']! > 0, summary(probe));
    // the workers report every 500 ms (and the retiring ones as they exit)
    await sleep(1_200);
    const st = await statusJson(s);
    assert.equal(st.totals.responses, probe.ok, `counted ${st.totals.responses} vs probe ${summary(probe)}`);
    assert.equal(st.totals.responsesByClass['2xx'], probe.ok);
    const g2 = st.generationInfo.find((g) => g.n === 2)!;
    assert.ok(g2.http, JSON.stringify(g2));
    assert.equal(g2.http.latency.reduce((a, b) => a + b, 0), g2.http.responses);
    assert.equal(g2.http.responses, probe.generations['2'], summary(probe));
    assert.ok(g2.http.p50Ms !== null && g2.http.p50Ms >= 5, JSON.stringify(g2.http));
    const m = (await get(s.admin, '/metrics')).body;
    const count = Number(/quiesce_http_request_duration_seconds_count\{generation="2"\} (\d+)/.exec(m)?.[1]);
    assert.equal(count, g2.http.responses, m);
    assert.match(m, /quiesce_http_requests_total\{generation="2",code_class="2xx"\} \d+/);
    assert.match(m, /quiesce_http_request_duration_seconds_bucket\{le="\+Inf",generation="2"\} \d+/);
    // ?auto and `quiesce status` show the same per generation
    assert.match((await get(s.admin, '/server-status?auto')).body, /\nGeneration2: rps=[\d.]+ ratio5xx=0 p50_ms=[\d.]+ p99_ms=[\d.]+ responses=\d+\n/);
    const table = await s.cli('status');
    assert.match(table.stdout, /\ngeneration 2 \(serving\)  [\d.]+ req\/s  5xx 0%  p50 [\d.]+ ms  p99 [\d.]+ ms  [\d,]+ responses\n/, table.stdout);
    assert.match(table.stdout, /last reload: generation 2 (committed|old-retired)/, table.stdout);
    await stopServer(s);
  } finally {
    await cleanup(s);
  }
});

// ─── quiesce upgrade, judged ───────────────────────────────────────────────────

/** A new master that took over (not the test's child): stopped through the control socket, killed (with its workers) if it lingers. */
async function stopNewMaster(s: Server): Promise<void> {
  let pid = 0;
  try { pid = Number(readFileSync(s.pidfile, 'utf8').trim()); } catch { return; }
  if (!pid || pid === s.pid) return;
  try {
    const r = await s.cli('stop');
    assert.equal(r.code, 0, r.stderr + r.stdout);
    await waitFor(() => !alive(pid), 20_000, 'the new master to exit');
  } finally {
    for (const p of [...childPids(pid), pid]) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
  }
}

test('upgrade --judge (--reload-judge off): a new master whose version answers 500 on 20% is rolled back with the figures; the old master serves on, nothing failed', async () => {
  const { s, code, out, probe } = await judgedReload('all', 'judge-500.mjs', STEADY, ['--reload-judge', 'off'], ['upgrade', '--judge']);
  try {
    console.log(`# upgrade --judge to a worse version: ${out.replace(/\n/g, ' | ')}`);
    assert.equal(code, 1, out);
    assert.match(out, new RegExp(`upgrade failed: generation 2 is worse: new 5xx (1\\d|2\\d)(\\.\\d+)?% vs old 0% over [\\d,]+ requests \\(old: [\\d,]+\\).*rolled back, master ${s.pid} keeps serving generation 1`), out);
    assertNoFailure(probe);
    const byGen = (g: string, st: number) => probe.outcomes.filter((o) => o.generation === g && o.status === st).length;
    assert.equal(byGen('1', 500), 0, summary(probe));
    assert.ok(byGen('2', 500) > 0, summary(probe));
    assert.equal(Number(readFileSync(s.pidfile, 'utf8').trim()), s.pid, 'the pid file still names the old master');
    assert.match((await get(s.address, '/')).body, /^v1 /);
    const st = await statusJson(s);
    assert.equal(st.generation, 1);
    assert.ok(st.deploys.some((e) => e.phase === 'soak-start' && e.generation === 2), JSON.stringify(st.deploys));
    assert.ok(st.deploys.some((e) => e.phase === 'rolled-back' && /is worse: new 5xx/.test(e.text)), JSON.stringify(st.deploys));
    await stopServer(s);
  } finally {
    await cleanup(s);
  }
});

test('upgrade under --reload-judge on: an equal version goes live with the judge\'s figures; with too little traffic the next upgrade goes live saying the judge abstained', async () => {
  const { s, code, out, probe } = await judgedReload('all', 'v2.mjs', STEADY, [], ['upgrade']);
  try {
    console.log(`# judged upgrade to an equal version: ${out.replace(/\n/g, ' | ')}`);
    assert.equal(code, 0, out);
    assert.match(out, /upgraded in [\d.]+ s: master \d+ .* serves generation 2; .*judge passed: new 5xx 0% vs old 0%, p50 [\d.]+ ms vs [\d.]+ ms, p99 [\d.]+ ms vs [\d.]+ ms over [\d,]+ requests/, out);
    assertNoFailure(probe);
    assert.match((await get(s.address, '/')).body, /^v2 /);
    // too little traffic (3 req/s against the minimum of 40 a side): the judge abstains, the upgrade goes on
    let r: { code: number | null; stdout: string; stderr: string } | undefined;
    const done = new AbortController();
    const thin = await runProbe({
      target: s.address, path: '/?sleep=20', rate: 3, keepalive: 0, durationS: 90, timeoutS: 15, signal: done.signal,
      commands: [{ atS: 0.5, run: async () => { r = await s.cli('upgrade'); setTimeout(() => done.abort(), 500); } }],
    });
    console.log(`# judged upgrade with too little traffic: ${(r?.stderr ?? '') + (r?.stdout ?? '')}`.replace(/\n/g, ' | ') + `probe: ${summary(thin)}`);
    assert.equal(r?.code, 0, r && r.stderr + r.stdout);
    assert.match(r!.stdout + r!.stderr, /serves generation 3; .*judge abstained: the new generation served \d+ .*requests during the soak \(fewer than --judge-min-requests 40\)/, r!.stdout + r!.stderr);
    assertNoFailure(thin);
    const st = await statusJson(s);
    assert.equal(st.generation, 3);
    // the new master's own phases (its admin listener answers status now)
    assert.deepEqual(st.deploys.filter((e) => e.generation === 3).map((e) => e.phase), ['soak-start', 'judge-abstained', 'committed'], JSON.stringify(st.deploys));
  } finally {
    await stopNewMaster(s);
    await cleanup(s);
  }
});

test('--judge is an option of quiesce upgrade only, --no-judge of reload and upgrade, and not both at once: usage errors naming the flag', async () => {
  for (const [args, want] of [
    [['reload', '--judge'], /--judge is an option of quiesce upgrade only \(a reload is judged by --reload-judge on\)/],
    [['stop', '--no-judge'], /--no-judge is an option of quiesce reload and quiesce upgrade only/],
    [['upgrade', '--judge', '--no-judge'], /--judge and --no-judge: give one of them/],
  ] as const) {
    const r = await runCli([...args, '--pidfile', '/nonexistent/q.pid']);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, want);
  }
});
