/**
 * npm run bench:upgrade [-- --quick] [--runs N] [--burn MS] [--factor F] [--rate R] [--keepalive K] [--window S]
 *
 * The master upgrade under load, side by side in one run with what it replaces: N upgrades
 * (`quiesce upgrade`: a new master from the same quiesce and Node takes over the sockets) against
 * N stop-and-starts (SIGTERM, wait for the exit, a new `quiesce` on the same port) of the same
 * server, alternating. The load is an open-loop probe (`runProbe`: new connections at F times the
 * measured capacity (new connections completed per second beside the K keep-alive clients:
 * capacityUnderLoad), every request burning MS of CPU in bench/apps/hello.mjs, plus K keep-alive
 * clients back to back). Per run: S seconds of steady state, the operation (command issued → the
 * old master gone and the new one serving), S seconds more. Every request is classified by the
 * probe; "during" is what started between the command and the end of the operation.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runProbe, type Outcome } from '../src/probe/index.js';
import {
  APPS, CLI, alive, capacityUnderLoad, descendants, envLine, flags, fmt, killTree, median, percentile, quiesceCli, sleep, startCommand, startQuiesce, table, tempDir, track, untrack, runBench
} from './lib.js';

type Kind = 'upgrade' | 'stop-start' | 'reload';
const FAIL_KINDS = ['refused', 'cut', 'timeout', 'ka_race', 'forced', 'other'] as const;
const APP = join(APPS, 'hello.mjs');

type Run = {
  kind: Kind;
  failed: Record<(typeof FAIL_KINDS)[number], number>;
  ok: number;
  steady: number[];
  during: number[];
  opMs: number;
  code: number | null;
  out: string;
};

/** One server on a fixed port and pid file; `master()` is whoever the pid file names now. */
class Instance {
  readonly dir = tempDir('quiesce-bench-upgrade-');
  readonly pidfile = join(this.dir, 'quiesce.pid');
  port = 0;
  private readonly started: number[] = [];

  master(): number {
    try { return Number(readFileSync(this.pidfile, 'utf8').trim()) || 0; } catch { return 0; }
  }

  async start(): Promise<void> {
    const listen = this.port ? `127.0.0.1:${this.port}` : '127.0.0.1:0';
    const r = await startCommand('quiesce', `exec ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} ${JSON.stringify(APP)} --listen ${listen} --admin 127.0.0.1:0 ` +
      `--workers 2 --access-log off --reload-soak 500ms --pidfile ${JSON.stringify(this.pidfile)}`, /quiesce: ready /);
    this.port = r.port;
    this.started.push(r.pid);
  }

  /** Graceful stop of the current master; resolves once it is gone. */
  async stop(): Promise<void> {
    const pid = this.master();
    if (!pid) return;
    try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
    const deadline = Date.now() + 40_000;
    while (alive(pid) && Date.now() < deadline) await sleep(10);
  }

  /** Everything this instance ever started, by pid. */
  end(): void {
    for (const p of [...this.started, this.master()]) if (p) { killTree(p); untrack(p); }
  }
}

async function oneRun(kind: Kind, inst: Instance, o: { rate: number; keepalive: number; burnMs: number; windowS: number }): Promise<Run> {
  const ac = new AbortController();
  let opStartAbs = NaN;
  let opEndAbs = NaN;
  let code: number | null = 0;
  let out = '';
  const result = await runProbe({
    target: `127.0.0.1:${inst.port}`, path: `/?burn=${o.burnMs}`, rate: o.rate, keepalive: o.keepalive,
    durationS: 120, timeoutS: 10, commandTimeoutS: 100, signal: ac.signal,
    commands: [{
      atS: o.windowS,
      run: async function operation() {
        const old = inst.master();
        opStartAbs = performance.now();
        if (kind === 'upgrade') {
          const r = await quiesceCli(['upgrade', '--pidfile', inst.pidfile], 90_000);
          code = r.code;
          out = (r.stdout + r.stderr).trim().split('\n').pop() ?? '';
          const deadline = performance.now() + 60_000;
          while (alive(old) && performance.now() < deadline) await sleep(10);
          const next = inst.master();
          if (next && next !== old) track(next);
        } else if (kind === 'reload') {
          const before = descendants(old);
          const r = await quiesceCli(['reload', '--pidfile', inst.pidfile], 90_000);
          code = r.code;
          out = (r.stdout + r.stderr).trim().split('\n').pop() ?? '';
          const deadline = performance.now() + 60_000;
          while (before.some((p) => alive(p)) && performance.now() < deadline) await sleep(10);
        } else {
          await inst.stop();
          await inst.start();
        }
        if (kind !== 'reload') untrack(old);
        opEndAbs = performance.now();
        await sleep(o.windowS * 1000);
        ac.abort();
      },
    }],
  });
  const cmd = result.commands[0];
  const opStart = cmd ? cmd.started_s * 1000 : NaN;
  const opEnd = opStart + (opEndAbs - opStartAbs);
  const oks = result.outcomes.filter((x: Outcome) => x.kind === 'ok');
  return {
    kind,
    failed: { refused: result.refused, cut: result.cut, timeout: result.timeout, ka_race: result.ka_race, forced: result.forced, other: result.other },
    ok: result.ok,
    steady: oks.filter((x) => x.startMs < opStart || x.startMs > opEnd).map((x) => x.endMs - x.startMs),
    during: oks.filter((x) => x.startMs >= opStart && x.startMs <= opEnd).map((x) => x.endMs - x.startMs),
    opMs: opEndAbs - opStartAbs, code, out,
  };
}

/** New-connection requests/s a fresh server completes beside `keepalive` clients (the load's shape: see capacityUnderLoad). */
async function capacity(burnMs: number, keepalive: number): Promise<number> {
  const s = await startQuiesce({ app: APP });
  try {
    return await capacityUnderLoad(`127.0.0.1:${s.port}`, burnMs, keepalive);
  } finally {
    await s.kill();
  }
}

async function main(): Promise<void> {
  const f = flags(process.argv.slice(2), { 'with-reload': 'bool', quick: 'bool', runs: 'num', burn: 'num', factor: 'num', rate: 'num', keepalive: 'num', window: 'num', help: 'bool' });
  if (f.help) { process.stdout.write('usage: npm run bench:upgrade -- [--quick] [--runs N] [--burn MS] [--factor F] [--rate R] [--keepalive K] [--window S] [--with-reload]\n'); return; }
  const runs = Math.round((f.runs as number | undefined) ?? (f.quick ? 3 : 20));
  const burnMs = (f.burn as number | undefined) ?? 3;
  const factor = (f.factor as number | undefined) ?? 1.1;
  const keepalive = Math.round((f.keepalive as number | undefined) ?? 4);
  const windowS = (f.window as number | undefined) ?? 1;
  const log = (m: string) => process.stderr.write(`bench:upgrade: ${m}\n`);
  const t0 = performance.now();
  let rate = f.rate as number | undefined;
  let cap = '';
  if (rate === undefined) {
    const c = Math.max(await capacity(burnMs, keepalive), await capacity(burnMs, keepalive)); // best of 2: the machine is noisy
    rate = Math.round(factor * c);
    cap = ` (= ${factor}x the measured capacity beside the keep-alive clients, best of 2: ${fmt(c)} req/s)`;
    log(`capacity ${fmt(c)} req/s of new connections at ${burnMs} ms CPU per request beside ${keepalive} keep-alive clients; probe rate ${rate}/s`);
  }
  const up = new Instance();
  const ss = new Instance();
  // --with-reload: a row of reloads of a third server, the same work without a new master
  const rl = f['with-reload'] ? new Instance() : undefined;
  const all: Run[] = [];
  try {
    for (const inst of [up, ss, rl]) await inst?.start();
    for (let i = 0; i < runs; i++) {
      const kinds: Array<[Kind, Instance]> = [['upgrade', up], ['stop-start', ss], ...(rl ? [['reload', rl] as [Kind, Instance]] : [])];
      const order = kinds.map((_, j) => kinds[(i + j) % kinds.length]!);
      for (const [kind, inst] of order) {
        const r = await oneRun(kind, inst, { rate, keepalive, burnMs, windowS });
        all.push(r);
        log(`${i + 1}/${runs} ${kind}: ok ${r.ok} ${JSON.stringify(r.failed)} ${fmt(r.opMs)} ms, p99 steady ${fmt(percentile(r.steady, 99), 1)} during ${fmt(percentile(r.during, 99), 1)} ms${r.code !== 0 ? ` (exit ${r.code}: ${r.out})` : ''}`);
      }
    }
  } finally {
    for (const inst of [up, ss, rl]) { await inst?.stop(); inst?.end(); }
  }
  report(all, { runs, rate, cap, keepalive, burnMs, windowS, t0 });
}

function report(runs: Run[], o: { runs: number; rate: number; cap: string; keepalive: number; burnMs: number; windowS: number; t0: number }): void {
  const out: string[] = [];
  out.push(`## upgrade vs stop-and-start under load (${new Date().toISOString()})`, '');
  out.push(`app: bench/apps/hello.mjs, ${o.burnMs} ms CPU per request, 2 workers; probe: new connection per request at ${o.rate}/s${o.cap} + ${o.keepalive} keep-alive clients; ` +
    `${o.windowS} s of steady state before and after each operation; ${o.runs} of each, alternating; ${envLine()}`, '');
  const header = ['operation', 'runs', 'refused', 'cut', 'timeout', 'other failures', 'runs with failures', 'ok', 'p99 steady', 'p99 during', 'p99 ratio', 'duration (median / max)', 'failed exits'];
  const rows: string[][] = [];
  const sums: Partial<Record<Kind, { failed: number; ratio: number; refused: number }>> = {};
  for (const k of ['upgrade', 'stop-start', 'reload'] as Kind[]) {
    const rs = runs.filter((r) => r.kind === k);
    if (rs.length === 0) continue;
    const total = (x: (typeof FAIL_KINDS)[number]) => rs.reduce((a, r) => a + r.failed[x], 0);
    const per = rs.map((r) => FAIL_KINDS.reduce((a, x) => a + r.failed[x], 0));
    const steady = rs.flatMap((r) => r.steady);
    const during = rs.flatMap((r) => r.during);
    const ratio = percentile(during, 99) / percentile(steady, 99);
    sums[k] = { failed: per.reduce((a, b) => a + b, 0), ratio, refused: total('refused') };
    rows.push([k === 'upgrade' ? 'quiesce upgrade' : k === 'reload' ? 'quiesce reload (same server, no new master)' : 'stop + start', String(rs.length), String(total('refused')), String(total('cut')), String(total('timeout')),
      String(total('ka_race') + total('forced') + total('other')), String(per.filter((x) => x > 0).length), String(rs.reduce((a, r) => a + r.ok, 0)),
      `${fmt(percentile(steady, 99), 1)} ms`, `${fmt(percentile(during, 99), 1)} ms`, `${ratio.toFixed(2)}x`,
      `${fmt(median(rs.map((r) => r.opMs)))} / ${fmt(Math.max(...rs.map((r) => r.opMs)))} ms`, String(rs.filter((r) => r.code !== 0).length)]);
  }
  out.push(table(header, rows), '');
  const u = sums.upgrade;
  out.push('targets (shown, not enforced):');
  if (u) {
    out.push(`- 0 refused, 0 cut, 0 timeout in all ${o.runs} upgrades: ${u.failed === 0 ? 'met' : 'MISSED'} (${u.failed} failed requests)`);
    out.push(`- p99 during an upgrade under 2x steady state: ${u.ratio < 2 ? 'met' : 'MISSED'} (${u.ratio.toFixed(2)}x)`);
  }
  if (sums['stop-start']) out.push(`- the stop-and-start control refuses: ${sums['stop-start'].refused > 0 ? 'yes' : 'NO (the control shows nothing)'} (${sums['stop-start'].refused})`);
  out.push('', 'notes:');
  out.push('- failures as the probe classifies them (src/probe); a request counts as timeout after 10 s. "other failures" = ka_race + forced + other.');
  out.push('- duration: upgrade = `quiesce upgrade` issued → the old master gone (new master ready, soaked 500 ms, old workers retired); stop + start = SIGTERM → a new master ready on the same port; reload = `quiesce reload` issued → the old generation\'s workers gone.');
  out.push('- "during": requests started within the operation; "steady": the windows before and after it.');
  out.push(`- bench took ${Math.round((performance.now() - o.t0) / 1000)} s`);
  process.stdout.write(out.join('\n') + '\n');
}

runBench('bench:upgrade', main);
