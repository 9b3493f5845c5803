/**
 * npm run bench:reload [-- --quick] [--reloads N] [--rate R] [--keepalive K] [--window S]
 *
 * Reload under load, side by side in one run: quiesce (`quiesce reload`) against pm2 cluster mode
 * (`pm2 start app -i 2`, `pm2 reload`), same self-listening app (bench/apps/listen-app.cjs calls
 * listen(PORT) itself; quiesce adopts that call). pm2 runs from node_modules with a private
 * PM2_HOME in a temp dir (it never touches the user's pm2), its God process in the foreground
 * (`--no-daemon`) as our child, and is always ended with `pm2 kill`.
 *
 * Each reload is one probe run (open-loop new connections at R/s plus K keep-alive clients): S
 * seconds of steady state, the reload (command issued → command returned and every process of the
 * old generation gone), S seconds more. Reloads alternate between the two servers. Latency windows
 * come from the probe's outcomes by start time; memory is the summed RSS of the server's process
 * tree (quiesce master + workers; pm2 daemon + workers) sampled every 100 ms.
 */
import { execFileSync, spawn } from 'node:child_process';
import net from 'node:net';
import { join } from 'node:path';
import { runProbe, type Outcome } from '../src/probe/index.js';
import {
  APPS, ROOT, alive, descendants, envLine, flags, fmt, freePort, killTree, median, onExit, percentile, quiesceCli, runCmd, sleep,
  startQuiesce, table, tempDir, track, treeRssKiB, untrack, type Running, runBench
} from './lib.js';

type Kind = 'quiesce' | 'pm2';
const APP = join(APPS, 'listen-app.cjs');
const PM2 = join(ROOT, 'node_modules/.bin/pm2');
const FAIL_KINDS = ['cut', 'refused', 'timeout', 'other', 'ka_race', 'forced'] as const;

type Server = {
  kind: Kind;
  port: number;
  /** Root of the process tree whose RSS is summed (quiesce master, pm2 daemon). */
  root: () => number;
  workers: () => number[];
  reload: () => Promise<{ code: number | null; out: string }>;
  stop: () => Promise<void>;
};

type ReloadRun = {
  kind: Kind;
  failed: Record<(typeof FAIL_KINDS)[number], number>;
  ok: number;
  steady: number[];
  during: number[];
  reloadMs: number;
  cmdMs: number;
  peakRssKiB: number;
  steadyRssKiB: number;
  exitCode: number | null;
  cmdOut: string;
};

async function waitHttp(port: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const c = net.connect(port, '127.0.0.1');
      c.once('connect', () => { c.destroy(); r(true); });
      c.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${ms} ms`);
    await sleep(50);
  }
}

async function startQ(note: string[]): Promise<Server> {
  let s: Running;
  try {
    s = await startQuiesce({ app: APP, env: { PORT: String(await freePort()) } });
    note.push('quiesce runs the same self-listening listen-app.cjs (its listen(PORT) call is adopted).');
  } catch (e) {
    process.stderr.write(`bench:reload: quiesce did not adopt listen-app.cjs (${e instanceof Error ? e.message.split('\n')[0] : e}); using hello.mjs (default export)\n`);
    s = await startQuiesce({ app: join(APPS, 'hello.mjs') });
    note.push('quiesce could NOT run listen-app.cjs: it serves bench/apps/hello.mjs (a default-exported handler) instead.');
  }
  return {
    kind: 'quiesce',
    port: s.port,
    root: () => s.pid,
    workers: () => descendants(s.pid),
    reload: async () => { const r = await quiesceCli(['reload', '--pidfile', s.pidfile], 90_000); return { code: r.code, out: (r.stdout + r.stderr).trim() }; },
    stop: async () => {
      try { process.kill(s.pid, 'SIGTERM'); } catch { /* gone */ }
      await Promise.race([s.exited, sleep(10_000)]);
      await s.kill();
    },
  };
}

async function startPm2(): Promise<Server> {
  const home = tempDir('quiesce-bench-pm2-');
  const port = await freePort();
  const env = { ...process.env, PM2_HOME: home, PORT: String(port), PM2_DISCRETE_MODE: 'true' };
  // --no-daemon: pm2's God process stays our child (same code as the daemon, which would otherwise
  // detach to pid 1), so it is ended and reaped by pid; `pm2 reload`/`pm2 kill` reach it through
  // PM2_HOME's sockets like any daemon.
  const god = spawn(PM2, ['start', APP, '-i', '2', '--name', 'qbench', '--no-daemon'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  track(god.pid!);
  let out = '';
  const keep = (d: Buffer) => { out = (out + d.toString()).slice(-20_000); };
  god.stdout.on('data', keep);
  god.stderr.on('data', keep);
  const exited = new Promise<void>((r) => god.once('exit', () => r()));
  let stopped = false;
  // pm2 kill on any exit, unless stop() did it (a `pm2 kill` with no daemon starts one to stop it);
  // the registry then kills the God tree by pid if it is still there
  onExit(() => {
    if (stopped || !alive(god.pid!)) return;
    try { execFileSync(PM2, ['kill'], { env, stdio: 'ignore', timeout: 15_000 }); } catch { /* killed by pid below */ }
  });
  try {
    await waitHttp(port, 20_000);
  } catch (e) {
    throw new Error(`pm2 start failed: ${e instanceof Error ? e.message : e}\n${out}`);
  }
  return {
    kind: 'pm2',
    port,
    root: () => god.pid!,
    workers: () => descendants(god.pid!),
    reload: async () => { const x = await runCmd(PM2, ['reload', 'qbench'], 90_000, env); return { code: x.code, out: (x.stdout + x.stderr).replace(/\x1b\[[0-9;]*m/g, '').trim().split('\n').slice(-3).join(' | ') }; },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await runCmd(PM2, ['kill'], 30_000, env);
      await Promise.race([exited, sleep(10_000)]);
      if (alive(god.pid!)) killTree(god.pid!);
      await exited;
      untrack(god.pid!);
    },
  };
}

async function oneReload(s: Server, rate: number, keepalive: number, windowS: number): Promise<ReloadRun> {
  const ac = new AbortController();
  const samples: Array<{ t: number; kib: number }> = [];
  const sampler = setInterval(() => { samples.push({ t: performance.now(), kib: treeRssKiB(s.root()) }); }, 100);
  let cmdStartProbe = NaN;
  let endProbe = NaN;
  let cmdStartAbs = NaN;
  let endAbs = NaN;
  let cmdMs = NaN;
  let code: number | null = null;
  let cmdOut = '';
  const result = await runProbe({
    target: `127.0.0.1:${s.port}`,
    rate,
    keepalive,
    durationS: 120,
    timeoutS: 3,
    commandTimeoutS: 100,
    signal: ac.signal,
    commands: [{
      atS: windowS,
      run: async function reload() {
        const t0 = performance.now();
        cmdStartAbs = t0;
        const old = s.workers();
        const r = await s.reload();
        code = r.code;
        cmdOut = r.out;
        cmdMs = performance.now() - t0;
        // the overlap ends when every process of the old generation is gone
        const deadline = performance.now() + 60_000;
        while (old.some((p) => alive(p)) && performance.now() < deadline) await sleep(20);
        endAbs = performance.now();
        await sleep(windowS * 1000);
        ac.abort();
      },
    }],
  });
  clearInterval(sampler);
  const cmd = result.commands[0];
  if (cmd) { cmdStartProbe = cmd.started_s * 1000; endProbe = cmdStartProbe + (endAbs - cmdStartAbs); }
  const oks = result.outcomes.filter((o: Outcome) => o.kind === 'ok');
  const steady = oks.filter((o) => o.startMs < cmdStartProbe || o.startMs > endProbe).map((o) => o.endMs - o.startMs);
  const during = oks.filter((o) => o.startMs >= cmdStartProbe && o.startMs <= endProbe).map((o) => o.endMs - o.startMs);
  const inWin = samples.filter((x) => x.t >= cmdStartAbs && x.t <= endAbs).map((x) => x.kib);
  const before = samples.filter((x) => x.t < cmdStartAbs).map((x) => x.kib);
  return {
    kind: s.kind,
    failed: { cut: result.cut, refused: result.refused, timeout: result.timeout, other: result.other, ka_race: result.ka_race, forced: result.forced },
    ok: result.ok, steady, during, reloadMs: endAbs - cmdStartAbs, cmdMs,
    peakRssKiB: Math.max(0, ...inWin), steadyRssKiB: median(before), exitCode: code, cmdOut,
  };
}

async function main(): Promise<void> {
  const f = flags(process.argv.slice(2), { quick: 'bool', reloads: 'num', rate: 'num', keepalive: 'num', window: 'num', help: 'bool' });
  if (f.help) { process.stdout.write('usage: npm run bench:reload -- [--quick] [--reloads N] [--rate R] [--keepalive K] [--window S]\n'); return; }
  const quick = f.quick === true;
  const reloads = Math.round((f.reloads as number | undefined) ?? (quick ? 3 : 20));
  const rate = (f.rate as number | undefined) ?? 200;
  const keepalive = Math.round((f.keepalive as number | undefined) ?? 4);
  const windowS = (f.window as number | undefined) ?? 0.75;
  const log = (m: string) => process.stderr.write(`bench:reload: ${m}\n`);
  const t0 = performance.now();
  const notes: string[] = [];

  const servers: Server[] = [];
  try {
    servers.push(await startQ(notes));
    servers.push(await startPm2());
    await sleep(500);
    const runs: ReloadRun[] = [];
    for (let i = 0; i < reloads; i++) {
      const order = i % 2 === 0 ? servers : [...servers].reverse();
      for (const s of order) {
        const r = await oneReload(s, rate, keepalive, windowS);
        runs.push(r);
        const failed = FAIL_KINDS.reduce((a, k) => a + r.failed[k], 0);
        log(`reload ${i + 1}/${reloads} ${s.kind}: ok ${r.ok} failed ${failed} ${JSON.stringify(r.failed)} reload ${fmt(r.reloadMs)} ms (command ${fmt(r.cmdMs)} ms, code ${r.exitCode})` +
          ` p99 steady ${fmt(percentile(r.steady, 99), 1)} during ${fmt(percentile(r.during, 99), 1)} ms, peak RSS ${fmt(r.peakRssKiB / 1024, 1)} MB`);
        if (r.exitCode !== 0) notes.push(`${s.kind} reload ${i + 1} exited ${r.exitCode}: ${r.cmdOut}`);
      }
    }
    report(runs, { reloads, rate, keepalive, windowS, notes, t0 });
  } finally {
    for (const s of servers) await s.stop();
  }
}

function report(runs: ReloadRun[], o: { reloads: number; rate: number; keepalive: number; windowS: number; notes: string[]; t0: number }): void {
  const out: string[] = [];
  out.push(`## reload under load: quiesce vs pm2 cluster mode (${new Date().toISOString()})`, '');
  out.push(`app: bench/apps/listen-app.cjs (calls listen(PORT) itself), 2 workers each; probe: ${o.rate} new connections/s + ${o.keepalive} keep-alive clients back to back; ` +
    `per reload ${o.windowS} s steady state before and after; ${o.reloads} reloads per server, alternating; ${envLine()}`, '');
  const header = ['server', 'reloads', 'failed total (reloads with failures)', 'failed per reload (max)', 'by kind', 'ok', 'p50 steady', 'p99 steady', 'p50 during reload', 'p99 during reload', 'p99 ratio', 'reload time (median)', 'RSS steady (median)', 'peak RSS during overlap (max)'];
  const rows: string[][] = [];
  const sums: Record<string, { failed: number; ratio: number }> = {};
  for (const k of ['quiesce', 'pm2'] as Kind[]) {
    const rs = runs.filter((r) => r.kind === k);
    if (rs.length === 0) continue;
    const per = rs.map((r) => FAIL_KINDS.reduce((a, x) => a + r.failed[x], 0));
    const total = per.reduce((a, b) => a + b, 0);
    const byKind = FAIL_KINDS.map((x) => [x, rs.reduce((a, r) => a + r.failed[x], 0)] as const).filter(([, n]) => n > 0).map(([x, n]) => `${x} ${n}`).join(', ') || '—';
    const steady = rs.flatMap((r) => r.steady);
    const during = rs.flatMap((r) => r.during);
    const ratio = percentile(during, 99) / percentile(steady, 99);
    sums[k] = { failed: total, ratio };
    rows.push([k === 'pm2' ? 'pm2 cluster mode' : 'quiesce', String(rs.length), `${total} (${per.filter((x) => x > 0).length})`, String(Math.max(...per)), byKind,
      String(rs.reduce((a, r) => a + r.ok, 0)),
      `${fmt(percentile(steady, 50), 2)} ms`, `${fmt(percentile(steady, 99), 2)} ms`, `${fmt(percentile(during, 50), 2)} ms`, `${fmt(percentile(during, 99), 2)} ms`,
      `${ratio.toFixed(2)}x`, `${fmt(median(rs.map((r) => r.reloadMs)))} ms`,
      `${fmt(median(rs.map((r) => r.steadyRssKiB)) / 1024, 1)} MB`, `${fmt(Math.max(...rs.map((r) => r.peakRssKiB)) / 1024, 1)} MB`]);
  }
  out.push(table(header, rows), '');
  const q = sums.quiesce;
  out.push('targets (shown, not enforced):');
  if (q) {
    out.push(`- quiesce 0 failed requests in all ${o.reloads} reloads: ${q.failed === 0 ? 'met' : 'MISSED'} (${q.failed})`);
    out.push(`- quiesce p99 during a reload under 2x steady state: ${q.ratio < 2 ? 'met' : 'MISSED'} (${q.ratio.toFixed(2)}x)`);
  }
  out.push('', 'notes:');
  out.push('- failed = cut + refused + timeout + other + ka_race + forced, as classified by the probe (src/probe); a request counts as timeout after 3 s.');
  out.push('- pm2 runs with a private PM2_HOME and its God process in the foreground (`pm2 start … -i 2 --no-daemon`, same code as the daemon); reloads use `pm2 reload qbench`.');
  out.push('- "during reload": requests started between the reload command and the exit of the last process of the old generation (quiesce: ready + 2 s soak + retire; pm2: its reload command, one worker after the other); "steady": the windows before and after.');
  out.push('- RSS: sum of VmRSS over the process tree (quiesce: master + workers; pm2: God daemon + workers), sampled every 100 ms.');
  out.push('- under pm2 (pm_id set) the app installs the graceful SIGINT handler pm2 recommends (server.close(), exit); pm2 reload waits for the new worker\'s listen, then sends SIGINT to the old one.');
  for (const n of o.notes) out.push(`- ${n}`);
  out.push(`- bench took ${Math.round((performance.now() - o.t0) / 1000)} s`);
  process.stdout.write(out.join('\n') + '\n');
}

runBench('bench:reload', main);
