/**
 * npm run bench:chaos [-- --seconds S] [--factor F] [--burn MS] [--seed N] [--step MS] [--queue-timeout D] [--spare N|on|off]
 *
 * Chaos under load for S seconds (default 300): quiesce running test/fixtures/core/crashy.mjs with
 * 2 workers, --worker-timeout 3 and --queue-timeout D (default 5s, half the probe's timeout: what
 * the chaos left waiting is answered 503 before its client gives up; 0 turns it off) and
 * --spare-worker N (default 2: a loaded spare takes a dead or hung worker's slot at once, the
 * second one a second death while the first one's successor loads), loaded by the probe at F (default 0.7) times its measured
 * capacity (a new connection per request, each burning MS of CPU, plus 4 keep-alive clients),
 * while one seeded random act every `step` ms kills a ready worker (the last one too), reloads,
 * scales between 1 and 3 workers, hangs a worker or sends it a request that makes it exit (the
 * engine is test/helpers/chaos.ts, the one test/chaos.test.ts runs for 12 s). Prints what the
 * clients saw, how many of the failures were laid to a worker death, the time with no live
 * worker, the stop at the end and the processes left behind. Targets (issue 14): 0 timeout, 0 s
 * with zero live workers outside a stop, every cut laid to a killed worker.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runProbe } from '../src/probe/index.js';
import { startServer, cleanup, waitExit, FIXTURES, alive, type Server } from '../test/helpers/server.js';
import { runChaos, settled, type ZeroCause } from '../test/helpers/chaos.js';
import { capacityUnderLoad, envLine, flags, fmt, table, track, untrack } from './lib.js';

const f = flags(process.argv.slice(2), { seconds: 'num', factor: 'num', burn: 'num', seed: 'num', step: 'num', dump: 'str', 'queue-timeout': 'str', spare: 'str' });
const seconds = (f.seconds as number | undefined) ?? 300;
const factor = (f.factor as number | undefined) ?? 0.7;
const burnMs = (f.burn as number | undefined) ?? 3;
const seed = (f.seed as number | undefined) ?? 14;
const stepMs = (f.step as number | undefined) ?? 1000;
/** The server's --queue-timeout: half the probe's 10 s timeout, so that a request the chaos left waiting is answered 503 before its client gives up ("0": off). */
const queueTimeout = (f['queue-timeout'] as string | undefined) ?? '5s';
/** The server's --spare-worker (default 2: a killed or hung worker's slot is taken at once by a loaded spare; with one, a second death within a worker's start left none live for 0.2-0.5 s). */
const spare = String((f.spare as string | number | undefined) ?? 2);
/** Keep-alive clients beside the new connections, in the capacity's measure and the chaos. */
const KEEPALIVE = 4;
const log = (m: string): void => { process.stderr.write(`bench:chaos: ${m}\n`); };

/** The load's shape (new connections beside the keep-alive clients) pushed past what the server can do: see capacityUnderLoad. */
const capacity = (s: Server): Promise<number> => capacityUnderLoad(s.address, burnMs, KEEPALIVE);

const s = await startServer({ args: [join(FIXTURES, 'core/crashy.mjs'), '--workers', '2', '--worker-timeout', '3', '--reload-soak', '500ms', '--queue-timeout', queueTimeout, '--spare-worker', spare] });
track(s.pid);
try {
  const caps = [await capacity(s), await capacity(s)];
  // the lower of the two: on a shared machine they swung 2x, and 0.7x of the higher was a collapse
  const capacityNow = Math.min(...caps);
  const rate = Math.max(1, Math.round(capacityNow * factor));
  log(`capacity ${caps.map((c) => fmt(c)).join(', ')} req/s (the lower of 2 taken); chaos for ${seconds} s at ${rate}/s (${factor}x) + ${KEEPALIVE} keep-alive clients, an act every ${stepMs} ms, seed ${seed}`);
  const r = await runChaos(s, { durationS: seconds, rate, keepalive: KEEPALIVE, burnMs, stepMs, seed, timeoutS: 10, spareLast: false });
  if (typeof f.dump === 'string') {
    // for a look afterwards: every outcome that was not ok, the samples, the acts and the master's log
    writeFileSync(f.dump, JSON.stringify({ startedAt: r.startedAt, rate, samples: r.samples, acts: r.actLog, failed: r.probe.outcomes.filter((x) => x.kind !== 'ok'), okLatency: r.probe.outcomes.filter((x) => x.kind === 'ok').map((x) => [x.startMs, x.endMs - x.startMs, x.mode]), zero: r.zeroStretches, log: s.err() }));
    log(`outcomes, samples, acts and the master's log in ${f.dump}`);
  }
  const noGhost = await settled(s, 30_000);
  const t0 = Date.now();
  const stop = await s.cli('stop');
  await waitExit(s, 60_000);
  const stopMs = Date.now() - t0;
  const left = [...r.pids].filter(alive);
  const p = r.probe;
  const failed = p.cut + p.ka_race;
  // (the samples are 100 ms apart: a stretch is measured from the last sample with a live worker)
  const zeroRow = (cause: ZeroCause): string => {
    const ms = r.zeroStretches.filter((z) => z.cause === cause).map((z) => z.toMs - z.fromMs).sort((a, b) => a - b);
    if (ms.length === 0) return '0';
    return `${fmt(ms.reduce((a, b) => a + b, 0) / 1000, 1)}; ${ms.length}, ${fmt(ms[ms.length >> 1]!)} and ${fmt(ms.at(-1)!)}`;
  };
  process.stdout.write(`\n${envLine()}\nchaos ${seconds} s, seed ${seed}, --queue-timeout ${queueTimeout}, --spare-worker ${spare}, ${rate} req/s new connections (${factor}x capacity ${fmt(capacityNow)}/s, the lower of ${caps.map((c) => fmt(c)).join(' and ')}, ${burnMs} ms CPU each) + ${KEEPALIVE} keep-alive; acts: ${Object.entries(r.acts).map(([k, n]) => `${k} ${n}`).join(', ')}\n\n`);
  process.stdout.write(table(['figure', 'value', 'target'], [
    ['requests sent', fmt(p.sent), ''],
    [`ok (of them 503 from --queue-timeout ${queueTimeout})`, `${fmt(p.ok)} (${fmt(p.outcomes.filter((x) => x.kind === 'ok' && x.status === 503).length)})`, ''],
    ['refused', fmt(p.refused), ''],
    ['cut (of them after response bytes)', `${fmt(p.cut)} (${fmt(p.cut_after_bytes)})`, 'each laid to a killed worker'],
    ['ka_race', fmt(p.ka_race), 'each laid to a killed worker'],
    ['timeout (10 s): connected and waiting / SYNs unanswered', `${fmt(p.timeout)}: ${fmt(p.outcomes.filter((x) => x.kind === 'timeout' && x.established).length)} / ${fmt(p.outcomes.filter((x) => x.kind === 'timeout' && !x.established).length)}`, '0'],
    ['other', fmt(p.other), '0'],
    ['cut + ka_race laid to a worker death (within 0.5 s before, 3 s after)', `${fmt(failed - r.unattributed.length)} of ${fmt(failed)}`, 'all'],
    ['worker deaths (crashes, SIGKILLs, hung kills)', fmt(r.deaths), ''],
    ['quiesce\'s own cut count vs the probe\'s cut + ka_race + the chaos\'s own requests cut (poison, hang)', `${fmt(r.quiesceCut)} vs ${fmt(failed + r.ownCut)} (${fmt(failed)} + ${fmt(r.ownCut)}): ${fmt((100 * r.quiesceCut) / Math.max(1, failed + r.ownCut))}%`, ''],
    ['time with zero live workers (s), longest stretch (s)', `${fmt(r.zeroLiveMs / 1000, 1)}, ${fmt(r.longestZeroLiveMs / 1000, 1)}`, ''],
    ['  of it: the chaos SIGKILLed the last live one (s; stretches, median and longest ms)', zeroRow('kill'), 'a worker\'s start'],
    ['  of it: the app ended or hung the last live one (s; stretches, median and longest ms)', zeroRow('app'), 'a worker\'s start'],
    ['  of it: quiesce let the last live one go (s; stretches, median and longest ms)', zeroRow('quiesce'), '0'],
    ['settled after the chaos (workers as set, all ready)', noGhost === undefined ? 'yes' : `no: ${noGhost}`, 'yes'],
    ['stop at the end (ms)', `${fmt(stopMs)} (${stop.code === 0 ? 'ok' : `exit ${stop.code}`})`, ''],
    ['worker processes left after the stop', fmt(left.length), '0'],
  ]));
  process.stdout.write('\n');
} finally {
  untrack(s.pid);
  await cleanup(s);
}
