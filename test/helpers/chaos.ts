/**
 * Chaos under load (issue 14's test and `npm run bench:chaos`): while `quiesce probe` loads a
 * server running test/fixtures/core/crashy.mjs, one seeded random act every `stepMs` among
 * SIGKILL of a worker, HUP (reload), `quiesce scale N`, a request that hangs its worker and one
 * that makes its worker exit. The status is sampled every 100 ms (live workers, pids seen); the
 * master's log gives the deaths each cut is laid to. Everything is bounded: the load's duration,
 * each act, the settle after it.
 */
import { runProbe, type Outcome, type ProbeResult } from '../../src/probe/index.js';
import { alive, get, sleep, statusJson, type Server } from './server.js';

export type ChaosAct = 'kill' | 'hup' | 'scale' | 'hang' | 'poison' | 'none';

export type ChaosOptions = {
  durationS: number;
  /** New connections per second (one request each) and keep-alive clients. */
  rate: number;
  keepalive: number;
  /** CPU each probe request burns in the app (ms). */
  burnMs: number;
  stepMs: number;
  seed: number;
  /** Seconds a probe request may take before it counts as timeout. */
  timeoutS: number;
  /**
   * Kill, hang or poison only while another worker is ready: the server is never left with none
   * by the chaos itself (the test: on a loaded machine a worker's start can take seconds, and what
   * it then measures is the machine). Off (the bench): any ready worker, the last one too.
   */
  spareLast: boolean;
};

export type ChaosReport = {
  probe: ProbeResult;
  acts: Record<ChaosAct, number>;
  /** Cut and ka_race outcomes (a reused connection reset before any byte) with no worker death (crash, SIGKILL, a hung worker's kill) near them. */
  unattributed: Outcome[];
  deaths: number;
  /** Time with no live worker (ready, not hung), summed, and its longest stretch (ms, 100 ms samples). */
  zeroLiveMs: number;
  longestZeroLiveMs: number;
  /**
   * The stretches with no live worker, each laid to what ended the last live one(s) (`zeroCause`):
   * the chaos's SIGKILL, the app itself (its process.exit(), a hung loop), or quiesce (a worker it
   * retired or let go with none other ready: the one kind that must not happen).
   */
  zeroStretches: ZeroStretch[];
  /**
   * The master's own count of what crashes and kills cut (status totals.cut): the connections each
   * held, exact at an app's process.exit(), else from its last report (<= 500 ms old: an estimate).
   */
  quiesceCut: number;
  /** The chaos's own requests among what quiesce counted: the poisoned ones that ended a worker, the hung ones whose worker was killed. */
  ownCut: number;
  /** Worker pids seen in the whole run. */
  pids: Set<number>;
  /** When the load started (ms since the epoch): the probe's outcome times are relative to it. */
  startedAt: number;
  /** The status samples: [ms since startedAt, live workers, configured workers]. */
  samples: Array<[number, number, number]>;
  /** The acts as done: [ms since startedAt, act, its victim's pid or argument]. */
  actLog: Array<[number, ChaosAct, string]>;
};

export type ZeroCause = 'kill' | 'app' | 'quiesce';
export type ZeroStretch = { fromMs: number; toMs: number; cause: ZeroCause; pids: number[] };

/**
 * Why the workers live just before a stretch with none went: a SIGKILL the chaos sent ('kill'),
 * the app ending or blocking its process ('app': an exit code of its own, or found hung), else
 * quiesce's own doing ('quiesce': retired, or gone without a death the master logged). A stretch
 * is quiesce's when any of them went by its doing (had it kept that one, there was a live worker),
 * else the chaos's when any was killed, else the app's.
 */
export function zeroCause(pids: number[], log: string, killed: ReadonlySet<number>): ZeroCause {
  const causes = pids.map((pid): ZeroCause => {
    const exited = new RegExp(`\\bworker-exited pid=${pid} .*`).exec(log)?.[0] ?? '';
    if (killed.has(pid) && / signal=SIGKILL reason=crash/.test(exited)) return 'kill';
    if (new RegExp(`\\bworker-hung pid=${pid} `).test(log) || / reason=crash/.test(exited)) return 'app';
    return 'quiesce';
  });
  return causes.includes('quiesce') || causes.length === 0 ? 'quiesce' : causes.includes('kill') ? 'kill' : 'app';
}

/** mulberry32: a small seeded generator, so a failing run can be repeated. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ACTS: Array<[ChaosAct, number]> = [['kill', 0.35], ['hup', 0.15], ['scale', 0.15], ['hang', 0.1], ['poison', 0.15], ['none', 0.1]];

function pick(r: number): ChaosAct {
  let acc = 0;
  for (const [act, p] of ACTS) { acc += p; if (r < acc) return act; }
  return 'none';
}

/** Wall-clock times (ms since the epoch) of the worker deaths the master logged: unclean exits and hung kills. */
export function deathTimes(log: string): number[] {
  const out: number[] = [];
  for (const line of log.split('\n')) {
    const unclean = /\bworker-exited\b/.test(line) && (/ signal=SIG/.test(line) || / code=(?!0\b)\d+/.test(line));
    if (unclean || /\bworker-killed\b/.test(line)) {
      const at = Date.parse(line.slice(0, 24));
      if (!Number.isNaN(at)) out.push(at);
    }
  }
  return out;
}

/** Run the chaos against `s` (crashy.mjs, --worker-timeout short enough to see a hang end within the run). */
export async function runChaos(s: Server, o: ChaosOptions): Promise<ChaosReport> {
  const rnd = random(o.seed);
  const acts: Record<ChaosAct, number> = { kill: 0, hup: 0, scale: 0, hang: 0, poison: 0, none: 0 };
  const pids = new Set<number>(s.workerPids());
  const stopAt = Date.now() + o.durationS * 1000;
  let zeroLiveMs = 0;
  let longestZeroLiveMs = 0;
  let zeroSince: number | undefined;
  const samples: Array<[number, number, number]> = [];
  const stretches: Array<{ fromMs: number; toMs: number; pids: number[] }> = [];
  let liveBefore: number[] = [];
  const killed = new Set<number>();
  const actLog: Array<[number, ChaosAct, string]> = [];
  let startedAt = Date.now();

  // the status, every 100 ms: live workers and the pids seen
  const sampling = (async () => {
    let last = Date.now();
    while (Date.now() < stopAt) {
      const now = Date.now();
      try {
        const st = await statusJson(s);
        for (const w of st.workers) if (w.pid !== null) pids.add(w.pid);
        const livePids = st.workers.filter((w) => w.phase === 'ready' && w.state !== 'H' && w.pid !== null).map((w) => w.pid!);
        const live = livePids.length;
        samples.push([now - startedAt, live, st.config.workers]);
        if (live === 0) {
          if (zeroSince === undefined) stretches.push({ fromMs: last - startedAt, toMs: now - startedAt, pids: liveBefore });
          zeroSince ??= last;
          zeroLiveMs += now - last;
          longestZeroLiveMs = Math.max(longestZeroLiveMs, now - zeroSince);
          stretches.at(-1)!.toMs = now - startedAt;
        } else {
          zeroSince = undefined;
          liveBefore = livePids;
        }
      } catch { /* the admin listener answers between acts; a missed sample is skipped */ }
      last = now;
      await sleep(100);
    }
  })();

  // the acts, one every stepMs; a hang or a poison request is our own, never the probe's
  const side: Array<Promise<unknown>> = [];
  const acting = (async () => {
    let hanging: Promise<unknown> | undefined;
    // every kind once first, in a seeded order, then at random
    const first: ChaosAct[] = ['kill', 'hup', 'scale', 'hang', 'poison'];
    for (let i = first.length - 1; i > 0; i--) { const j = Math.floor(rnd() * (i + 1)); [first[i], first[j]] = [first[j]!, first[i]!]; }
    while (Date.now() + o.stepMs < stopAt) {
      await sleep(o.stepMs);
      let act = first.shift() ?? pick(rnd());
      if (act === 'hang' && hanging) act = 'none';
      // the victims: ready workers (killing one still loading says nothing of the server)
      let ready: number[] = [];
      try {
        ready = (await statusJson(s)).workers.filter((w) => w.phase === 'ready' && w.state !== 'H' && w.pid !== null).map((w) => w.pid!);
      } catch { /* no status this round: no victim */ }
      // sparing the last: nothing more while a hang is unresolved (the hung worker shows ready
      // until --worker-timeout), and never below 2 workers (scale)
      if ((act === 'kill' || act === 'hang' || act === 'poison') && (ready.length < (o.spareLast ? 2 : 1) || (o.spareLast && hanging))) act = 'none';
      acts[act]++;
      let what = '';
      if (act === 'kill') {
        const pid = ready[Math.floor(rnd() * ready.length)];
        what = String(pid);
        if (pid !== undefined) { pids.add(pid); killed.add(pid); try { process.kill(pid, 'SIGKILL'); } catch { /* gone already */ } }
      } else if (act === 'hup') {
        process.kill(s.pid, 'SIGHUP');
      } else if (act === 'scale') {
        const least = o.spareLast ? 2 : 1;
        what = String(least + Math.floor(rnd() * (4 - least)));
        side.push(s.cli('scale', what));
      } else if (act === 'hang') {
        hanging = get(s.address, '/hang').catch(() => undefined).finally(() => { hanging = undefined; });
        side.push(hanging);
      } else if (act === 'poison') {
        side.push(get(s.address, '/exit').catch(() => undefined));
      }
      actLog.push([Date.now() - startedAt, act, what]);
    }
  })();

  startedAt = Date.now();
  const probe = await runProbe({ target: s.address, path: `/?burn=${o.burnMs}`, rate: o.rate, keepalive: o.keepalive, durationS: o.durationS, timeoutS: o.timeoutS });
  await Promise.all([acting, sampling]);
  await Promise.all(side.map((p) => Promise.race([p, sleep(30_000)])));

  const log = s.err();
  const deaths = deathTimes(log);
  const zeroStretches = stretches.map((z) => ({ ...z, cause: zeroCause(z.pids, log, killed) }));
  // a cut is seen by its client when the worker's sockets close, just before the master hears of
  // the exit: laid to a death logged from 0.5 s before to 3 s after it
  const unattributed = probe.outcomes.filter((x) => (x.kind === 'cut' || x.kind === 'ka_race') && !deaths.some((d) => {
    const at = startedAt + x.endMs;
    return d >= at - 500 && d <= at + 3_000;
  }));
  const st = await statusJson(s);
  return { probe, acts, unattributed, deaths: deaths.length, zeroLiveMs, longestZeroLiveMs, zeroStretches, quiesceCut: st.totals?.cut ?? 0, ownCut: (log.match(/\bapp-exit code=3 method=GET path=\/exit /g) ?? []).length + (log.match(/\bworker-killed pid=\d+ reason=hung /g) ?? []).length, pids, startedAt, samples, actLog };
}

/** After the chaos: within `ms`, the server serves with as many ready workers as it is set to (after the scales), none starting, retiring or hung (no ghost slot); else why not. */
export async function settled(s: Server, ms: number): Promise<string | undefined> {
  const deadline = Date.now() + ms;
  let why = '';
  while (Date.now() < deadline) {
    try {
      const st = await statusJson(s);
      const ready = st.workers.filter((w) => w.phase === 'ready' && w.pid !== null && alive(w.pid));
      const workers = st.config.workers;
      if (ready.length === workers && st.workers.length === workers && st.state === 'serving') return undefined;
      why = `state ${st.state}, workers ${JSON.stringify(st.workers.map((w) => [w.pid, w.phase, w.state]))}`;
    } catch (e) { why = (e as Error).message; }
    await sleep(200);
  }
  return why;
}
