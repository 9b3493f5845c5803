/**
 * npm run bench:cpu [-- --pairs N] [--rounds N] [--duration S] [--only ID,ID] [--vs nginx]
 * npm run bench:cpu -- --a 'COMMAND A' --b 'COMMAND B' [--path /] [--close] [--https | --h2] [--ready REGEX] [...]
 *
 * CPU cost per request of quiesce against node:cluster SCHED_NONE, side by side: one worker each,
 * both workers pinned to CPU 1, both loaded at the same time by their own wrk on CPU 0 (with the
 * two parents). Each worker's requests per CPU tick in a round (utime + stime of /proc/PID/stat
 * before and after it, all its threads) gives its cost per request; their ratio is the figure,
 * and whatever slows this shared machine slows both alike: +-2-3% per round where the
 * interleaved throughput rounds of `npm run bench` swing +-10%. (The CPU is not split evenly:
 * V8's GC helper threads get their own share, so requests served alone would misjudge a worker
 * that collects more; the stderr lines show A's share of CPU 1 per round.)
 * Fresh process pairs are started for each pair (JIT outcomes differ per process); the table shows
 * the median and quartiles of all rounds. Round-robin node:cluster is left out: its primary
 * accepts every connection on CPU 0, where this measure does not charge it. Needs wrk, taskset
 * and 2 CPUs.
 *
 * With --a and --b, any two server commands (run by bash, each starting ONE worker and printing
 * its http://ADDR; ready when the output matches --ready, by default quiesce's "ready" line or a
 * "listening on" line of bench/bare-prefork.js or bench/cluster-server.js) are compared the same
 * way: how the costs in docs/STATUS.md were found, with env switches in a scratch build. --https
 * loads both over TLS (wrk: a new connection resumes the previous one's TLS session every other
 * time, a full handshake the rest, measured with `isSessionReused()` on quiesce and node:cluster
 * alike), --h2
 * over HTTP/2 (h2load, 10 sessions of 10 streams).
 *
 * The TLS rows (tls-ka, tls-close: https.createServer under node:cluster; h2: h2load against
 * http2.createSecureServer) run only when named in --only.
 *
 * With --vs nginx, the static rows compare quiesce with nginx (1 worker, the config of `npm run
 * bench`) instead of node:cluster.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { APPS, benchCert, benchSite, canPin, childPids, cleanupAll, pin, envLine, flags, fmt, nginxBinary, startCluster, startCommand, startNginx, startQuiesce, table, type Running } from './lib.js';
import { h2loadGen, hasWrk, pickLoadGen } from './loadgen.js';

type Row = { id: string; label: string; app?: string; static?: boolean; path: string; close: boolean; tls?: boolean; h2?: boolean };
type Pair = { a: Running; b: Running };

const DEFAULT_READY = 'quiesce: ready |(bare|cluster): listening on ';
const ROWS: Row[] = [
  { id: 'ka', label: 'hello, keep-alive', app: 'hello.mjs', path: '/', close: false },
  { id: 'close', label: 'hello, new connection per request', app: 'hello.mjs', path: '/', close: true },
  { id: 'static-2k', label: 'static file 2 KB, keep-alive', static: true, path: '/2k.txt', close: false },
  { id: 'static-2k-close', label: 'static file 2 KB, new connection per request', static: true, path: '/2k.txt', close: true },
  { id: 'static-64k', label: 'static file 64 KB, keep-alive', static: true, path: '/64k.bin', close: false },
  { id: 'static-1m', label: 'static file 1 MB, keep-alive', static: true, path: '/1m.bin', close: false },
  { id: 'express', label: 'Express app, keep-alive', app: 'express.mjs', path: '/', close: false },
  { id: 'hono', label: 'Hono app, keep-alive', app: 'hono.mjs', path: '/', close: false },
  // HTTP/1.1 over TLS (an ECDSA P-256 certificate, as npm run bench): node:cluster runs https.createServer
  { id: 'tls-ka', label: 'hello over TLS, keep-alive', app: 'hello.mjs', path: '/', close: false, tls: true },
  { id: 'tls-close', label: 'hello over TLS, new connection per request (every other one resumed)', app: 'hello.mjs', path: '/', close: true, tls: true },
  // HTTP/2 over TLS, h2load: 10 sessions of 10 concurrent streams; node:cluster runs http2.createSecureServer
  { id: 'h2', label: 'hello over HTTP/2 (h2load, 10 sessions x 10 streams)', app: 'hello.mjs', path: '/', close: false, tls: true, h2: true },
];

/** The one worker of a server started with --workers 1, pinned (all its threads) to `cpu`; the parent to `parentCpu`. Returns the worker's pid. */
function pinServer(s: Running, cpu: number, parentCpu: number): number {
  const workers = childPids(s.pid);
  if (workers.length !== 1) throw new Error(`${s.name}: want 1 worker, found ${workers.length}`);
  pin(s.pid, parentCpu);
  pin(workers[0]!, cpu);
  return workers[0]!;
}

/** CPU time of a process, all its threads (utime + stime of /proc/PID/stat), in clock ticks. */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

function quartiles(xs: number[]): [number, number, number] {
  const a = [...xs].sort((x, y) => x - y);
  const at = (q: number) => a[Math.min(a.length - 1, Math.max(0, Math.round(q * (a.length - 1))))]!;
  return [at(0.25), at(0.5), at(0.75)];
}

async function main(): Promise<void> {
  const f = flags(process.argv.slice(2), { pairs: 'num', rounds: 'num', duration: 'num', only: 'str', a: 'str', b: 'str', path: 'str', close: 'bool', https: 'bool', h2: 'bool', ready: 'str', vs: 'str', help: 'bool' });
  if (f.help) { process.stdout.write('usage: npm run bench:cpu -- [--pairs N] [--rounds N] [--duration S] [--only ID,…] [--vs nginx] | [--a CMD --b CMD [--path P] [--close | --https | --h2] [--ready REGEX]]\n'); return; }
  if (f.vs !== undefined && f.vs !== 'nginx') throw new Error(`--vs: only nginx, got ${String(f.vs)}`);
  const vsNginx = f.vs === 'nginx';
  if (vsNginx && !nginxBinary()) {
    process.stdout.write('bench:cpu --vs nginx: no nginx binary found (apt-get install nginx): skipped\n');
    return;
  }
  if ((f.a === undefined) !== (f.b === undefined)) throw new Error('--a and --b go together');
  if (!canPin() || !hasWrk()) {
    process.stdout.write('bench:cpu needs 2 CPUs, taskset (util-linux) and wrk: skipped\n');
    return;
  }
  const pairs = Math.max(1, Math.round((f.pairs as number | undefined) ?? 3));
  const rounds = Math.max(1, Math.round((f.rounds as number | undefined) ?? 6));
  const durationS = Math.max(1, Math.round((f.duration as number | undefined) ?? 3));
  const only = typeof f.only === 'string' ? new Set(f.only.split(',')) : undefined;
  const custom = typeof f.a === 'string' && typeof f.b === 'string' ? { a: f.a, b: f.b, ready: new RegExp(typeof f.ready === 'string' ? f.ready : DEFAULT_READY) } : undefined;
  const rows = custom
    ? [{ id: 'ab', label: `A / B: ${typeof f.path === 'string' ? f.path : '/'}${f.h2 === true ? ', HTTP/2 (h2load)' : f.close === true ? ', new connection per request' : ', keep-alive'}`, path: typeof f.path === 'string' ? f.path : '/', close: f.close === true, h2: f.h2 === true }]
    : ROWS.filter((r) => (!only ? !r.tls : only.has(r.id)) && (!vsNginx || r.static));
  if (rows.length === 0) throw new Error(`--only: none of ${ROWS.map((r) => r.id).join(',')}`);
  const wrk = pickLoadGen('wrk');
  const wantsH2 = rows.some((r) => 'h2' in r && r.h2 === true);
  const h2load = wantsH2 ? h2loadGen() : undefined; // looked for only when an HTTP/2 row is asked for
  if (wantsH2 && h2load === undefined) throw new Error('the HTTP/2 row needs h2load (Debian: nghttp2-client)');
  const www = benchSite('quiesce-bench-cpu-');
  const cert = rows.some((r) => 'tls' in r && r.tls === true) ? benchCert() : undefined;

  const body: string[][] = [];
  for (const row of rows) {
    const ratios: number[] = [];
    const perPair: string[] = [];
    for (let p = 0; p < pairs; p++) {
      const app = 'app' in row && row.app ? join(APPS, row.app) : www;
      const tls = 'tls' in row && row.tls === true ? cert : undefined;
      const scheme = (custom && (f.https === true || f.h2 === true)) || tls ? 'https' : 'http';
      const { a: q, b: c }: Pair = custom
        ? { a: await startCommand('A', custom.a, custom.ready), b: await startCommand('B', custom.b, custom.ready) }
        : await Promise.all([
          startQuiesce({ app, workers: 1, extra: tls ? ['--tls-cert', tls.cert, '--tls-key', tls.key] : [] }),
          vsNginx ? startNginx({ root: www, workers: 1 }) : startCluster({ ...('static' in row && row.static ? { static: www } : { app }), sched: 'none', workers: 1, ...(tls ? { tls } : {}), ...('h2' in row && row.h2 ? { http2: true } : {}) }),
        ]).then(([a, b]) => ({ a, b }));
      try {
        const [qpid, cpid] = [pinServer(q, 1, 0), pinServer(c, 1, 0)];
        const gen = 'h2' in row && row.h2 && h2load !== undefined ? h2load : wrk;
        const load = (s: Running, d: number) => gen.run({ url: `${scheme}://${s.address}${row.path}`, durationS: d, connections: gen === wrk ? 50 : 10, threads: 1, close: row.close, cpu: 0 });
        await Promise.all([load(q, 1), load(c, 1)]); // warm-up
        const mine: number[] = [];
        const split: number[] = [];
        for (let r = 0; r < rounds; r++) {
          const [qAt, cAt] = [cpuTicks(qpid), cpuTicks(cpid)];
          const [a, b] = await Promise.all([load(q, durationS), load(c, durationS)]);
          const [ta, tb] = [cpuTicks(qpid) - qAt, cpuTicks(cpid) - cAt];
          // requests per CPU tick of each worker (all its threads: V8's GC helpers get their own
          // share of the CPU, so the two need not split it evenly)
          if (b.requests > 0 && ta > 0 && tb > 0) mine.push((a.requests / ta) / (b.requests / tb));
          split.push(ta / (ta + tb));
        }
        ratios.push(...mine);
        perPair.push(fmt(quartiles(mine)[1], 3));
        process.stderr.write(`bench:cpu: ${row.id} pair ${p + 1}: ${mine.map((x) => x.toFixed(3)).join(' ')} (A's share of the CPU: ${split.map((x) => x.toFixed(2)).join(' ')})\n`);
      } finally {
        await Promise.all([q.kill(), c.kill()]);
      }
    }
    const [q1, med, q3] = quartiles(ratios);
    body.push([row.label, `${fmt(med, 3)}x`, `${fmt(q1, 3)}–${fmt(q3, 3)}x`, perPair.join(' / ')]);
  }
  const other = vsNginx ? 'nginx' : 'cluster-NONE';
  const what = custom ? `A (${custom.a}) vs B (${custom.b})` : vsNginx ? 'quiesce vs nginx' : 'quiesce vs node:cluster SCHED_NONE';
  process.stdout.write(`## ${what}: requests per CPU, side by side (${new Date().toISOString()})\n\n`);
  process.stdout.write(`1 worker each, both on CPU 1, loaded at once by wrk -c 50 on CPU 0; ${pairs} fresh pair(s) x ${rounds} round(s) of ${durationS}s; ${envLine()}\n\n`);
  process.stdout.write(table(['scenario', custom ? 'A / B (median of rounds)' : `quiesce / ${other} (median of rounds)`, 'quartiles', 'median per pair'], body) + '\n');
  process.stdout.write(`\n- A ratio above 1 means ${custom ? 'A' : 'quiesce'} serves more requests with the same CPU. This is the worker's cost alone: the parents run on CPU 0, uncharged.\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:cpu failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exitCode = 1;
}).finally(cleanupAll);
