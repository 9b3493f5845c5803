/**
 * npm run bench:metrics [-- --pairs N] [--duration S]
 *
 * What the request metrics (--metrics on) add to a request's CPU, in two measures that a loaded
 * machine disturbs far less than a throughput ratio (bench:cpu's A/B of --metrics on and off
 * swings +-4% per round at a load average of 10, where the metrics are well under 1%):
 *
 * 1. The work added per response, in-process: a response built from `TimedResponse` instead of
 *    Node's `ServerResponse` (its start read from the clock) and the `http.server.response.finish`
 *    channel's publish with our subscriber (the end read, the count), 30 responses per event-loop
 *    turn (what a hello-world worker serves per turn under wrk -c 50). Each side in a fresh
 *    process, pinned to CPU 1, CPU time (not wall time) per response; sides interleaved, N pairs.
 * 2. A hello-world request's whole CPU in a quiesce worker (--workers 1 --metrics on, pinned to
 *    CPU 1, wrk -c 50 on CPU 0): the worker's CPU time (/proc/PID/stat) over the requests served.
 *
 * The share is (1) / (2). Needs wrk and taskset.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import diagnostics from 'node:diagnostics_channel';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { http } from '../src/shared/node-http.js';
import { TimedResponse, RequestMetrics } from '../src/worker/request-metrics.js';
import { APPS, childPids, cleanupAll, envLine, flags, fmt, startQuiesce, table } from './lib.js';
import { hasWrk, pickLoadGen } from './loadgen.js';

const PER_TURN = 30;
const TURNS = 20_000;

/** In a child: CPU ns per response of one side, the best of 5 runs (the first ones warm the JIT). */
async function child(side: 'on' | 'off'): Promise<void> {
  const server = http.createServer();
  const Res = side === 'on' ? TimedResponse : http.ServerResponse;
  if (side === 'on') new RequestMetrics(server);
  const ch = diagnostics.channel('http.server.response.finish');
  const req = new http.IncomingMessage(null as unknown as import('node:net').Socket);
  const turn = (): void => {
    for (let i = 0; i < PER_TURN; i++) {
      const res = new Res(req);
      res.statusCode = 200;
      // as Node's resOnFinish: a publish only when someone listens
      if (ch.hasSubscribers) ch.publish({ request: req, response: res, socket: null, server });
    }
  };
  let best = Infinity;
  for (let run = 0; run < 5; run++) {
    const c0 = process.cpuUsage();
    for (let t = 0; t < TURNS; t++) { turn(); await new Promise((r) => setImmediate(r)); }
    const c = process.cpuUsage(c0);
    best = Math.min(best, ((c.user + c.system) * 1000) / (TURNS * PER_TURN));
  }
  process.stdout.write(`${best}\n`);
}

function median(xs: number[]): number {
  const a = [...xs].sort((x, y) => x - y);
  return a[Math.floor(a.length / 2)]!;
}

/** CPU ticks (user + system) of a process so far. */
function ticks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]);
}

async function main(): Promise<void> {
  const f = flags(process.argv.slice(2), { pairs: 'num', duration: 'num', child: 'str', help: 'bool' });
  if (f.help) { process.stdout.write('usage: npm run bench:metrics -- [--pairs N] [--duration S]\n'); return; }
  if (f.child !== undefined) {
    if (f.child !== 'on' && f.child !== 'off') throw new Error(`--child: on or off, got ${String(f.child)}`);
    return child(f.child);
  }
  if (spawnSync('taskset', ['-V'], { stdio: 'ignore' }).status !== 0 || !hasWrk()) {
    process.stdout.write('bench:metrics needs taskset (util-linux) and wrk: skipped\n');
    return;
  }
  const pairs = Math.max(1, Math.round((f.pairs as number | undefined) ?? 5));
  const durationS = Math.max(1, Math.round((f.duration as number | undefined) ?? 6));
  const self = fileURLToPath(import.meta.url);
  const side = (s: 'on' | 'off'): number => {
    const r = spawnSync('taskset', ['-c', '1', process.execPath, self, '--child', s], { encoding: 'utf8', timeout: 120_000 });
    const ns = Number(r.stdout.trim());
    if (r.status !== 0 || !Number.isFinite(ns)) throw new Error(`--child ${s} failed: ${r.stderr}`);
    return ns;
  };
  const on: number[] = [];
  const off: number[] = [];
  const added: number[] = [];
  for (let p = 0; p < pairs; p++) {
    const a = side('off');
    const b = side('on');
    off.push(a); on.push(b); added.push(b - a);
    process.stderr.write(`bench:metrics: pair ${p + 1}: off ${a.toFixed(0)} ns, on ${b.toFixed(0)} ns per response\n`);
  }
  const clk = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
  const q = await startQuiesce({ app: join(APPS, 'hello.mjs'), workers: 1, extra: ['--metrics', 'on'] });
  let perRequestNs: number;
  try {
    const w = childPids(q.pid)[0];
    if (w === undefined) throw new Error('no worker');
    spawnSync('taskset', ['-a', '-pc', '1', String(w)], { stdio: 'ignore' });
    const wrk = pickLoadGen('wrk');
    const load = (d: number) => wrk.run({ url: `http://${q.address}/`, durationS: d, connections: 50, threads: 1, close: false, cpu: 0 });
    await load(1); // warm-up
    const t0 = ticks(w);
    const r = await load(durationS);
    perRequestNs = (((ticks(w) - t0) / clk) * 1e9) / Math.max(1, r.requests);
    process.stderr.write(`bench:metrics: hello worker: ${r.requests} requests, ${((ticks(w) - t0) / clk).toFixed(2)} s of CPU\n`);
  } finally {
    await q.kill();
  }
  const add = median(added);
  process.stdout.write(`## The request metrics' cost per request (${new Date().toISOString()})\n\n`);
  process.stdout.write(`${pairs} pair(s) of fresh processes on CPU 1, ${PER_TURN} responses per loop turn; a hello-world worker on CPU 1 under wrk -c 50 for ${durationS}s; ${envLine()}\n\n`);
  process.stdout.write(table(['measure', 'value'], [
    ['work per response, metrics off (median)', `${fmt(median(off))} ns`],
    ['work per response, metrics on (median)', `${fmt(median(on))} ns`],
    ['added by the metrics (median of pairs)', `${fmt(add)} ns`],
    ['a hello-world request, whole worker CPU', `${fmt(perRequestNs / 1000, 1)} µs`],
    ['share of a hello-world request', `${fmt((add / perRequestNs) * 100, 2)}%`],
  ]) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:metrics failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exitCode = 1;
}).finally(cleanupAll);
