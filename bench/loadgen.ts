/**
 * Load generators for the throughput bench: wrk when it is installed (new connection per request:
 * `-H 'Connection: close'`), else autocannon in-process; and a small Node client that tallies the
 * x-pid response header (each worker's share).
 */
import { execFileSync, spawn } from 'node:child_process';
import http from 'node:http';
import { killTree, track, untrack } from './lib.js';

export type LoadResult = { rps: number; p99Ms: number; p50Ms: number; requests: number; errors: number; non2xx: number };
export type LoadOptions = { url: string; durationS: number; connections: number; threads: number; close: boolean; /** Run the tool on this CPU (taskset). */ cpu?: number };
export type LoadGen = { name: string; run: (o: LoadOptions) => Promise<LoadResult> };

/** h2load (nghttp2-client) for the HTTP/2 rows, or undefined when it is not installed. */
export function h2loadGen(): LoadGen | undefined {
  try { execFileSync('h2load', ['--version'], { stdio: 'ignore', timeout: 5_000 }); } catch { return undefined; }
  return { name: 'h2load', run: runH2load };
}

/** Run a load tool for `durationS` (killed 30 s past it), on CPU `cpu` if given (taskset); resolves with its exit code and its output (stdout, then stderr). */
function runTool(cmd: string, argv: string[], durationS: number, cpu?: number): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const p = cpu === undefined ? spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn('taskset', ['-c', String(cpu), cmd, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    track(p.pid!);
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const t = setTimeout(() => killTree(p.pid!), (durationS + 30) * 1000);
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(t);
      untrack(p.pid!);
      resolve({ code, out, err });
    });
  });
}

/** HTTP/2: `connections` sessions of 10 concurrent streams each, for the duration. No p99 (h2load gives min/max/mean). */
async function runH2load(o: LoadOptions): Promise<LoadResult> {
  const args = ['-c', String(o.connections), '-m', '10', '-t', String(o.threads), '-D', String(o.durationS), o.url];
  const { code, out, err } = await runTool('h2load', args, o.durationS, o.cpu);
  const rps = Number(/finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(out)?.[1]);
  const req = /requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  if (code !== 0 || !Number.isFinite(rps) || !req) throw new Error(`h2load ${args.join(' ')} failed (code ${code}): ${out}\n${err}`);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  const mean = /time for request:\s+\S+\s+\S+\s+(\S+)/.exec(out)?.[1];
  return { rps, p50Ms: wrkTime(mean), p99Ms: NaN, requests: Number(req[2]), errors: Number(req[3]) + Number(req[4]) + Number(req[5]), non2xx: codes ? Number(codes[3]) + Number(codes[4]) : 0 };
}

export function hasWrk(): boolean {
  try { execFileSync('wrk', ['--version'], { stdio: 'ignore', timeout: 5_000 }); return true; } catch (e) {
    // wrk --version exits 1 after printing its banner; only ENOENT means it is absent
    return (e as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

export function pickLoadGen(forced?: string): LoadGen {
  const which = forced ?? (hasWrk() ? 'wrk' : 'autocannon');
  if (which === 'wrk') return { name: 'wrk', run: runWrk };
  if (which === 'autocannon') return { name: 'autocannon', run: runAutocannon };
  throw new Error(`--loadgen: wrk or autocannon, got ${which}`);
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
function wrkTime(s: string | undefined): number {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(s ?? '');
  return m ? Number(m[1]) * UNIT_MS[m[2]!]! : NaN;
}

async function runWrk(o: LoadOptions): Promise<LoadResult> {
  const args = ['-t', String(o.threads), '-c', String(o.connections), '-d', `${o.durationS}s`, '--latency', '--timeout', '5s',
    ...(o.close ? ['-H', 'Connection: close'] : []), o.url];
  const { code, out, err } = await runTool('wrk', args, o.durationS, o.cpu);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  if (code !== 0 || !Number.isFinite(rps)) throw new Error(`wrk ${args.join(' ')} failed (code ${code}): ${out}\n${err}`);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    rps,
    p50Ms: wrkTime(/^\s+50%\s+(\S+)/m.exec(out)?.[1]),
    p99Ms: wrkTime(/^\s+99%\s+(\S+)/m.exec(out)?.[1]),
    requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? 0),
    errors: sock ? sock.slice(1).reduce((a, x) => a + Number(x), 0) : 0,
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
  };
}

async function runAutocannon(o: LoadOptions): Promise<LoadResult> {
  const { default: autocannon } = await import('autocannon');
  const r = await autocannon({ url: o.url, connections: o.connections, duration: o.durationS, headers: o.close ? { connection: 'close' } : {} });
  return { rps: r.requests.average, p50Ms: r.latency.p50, p99Ms: r.latency.p99, requests: r.requests.total, errors: r.errors + r.timeouts, non2xx: r.non2xx };
}

/**
 * Each worker's share, tallied client side from the x-pid header: `concurrency` loops sending one
 * request after another for `ms` (keep-alive agent, or a new connection per request).
 */
export async function tallyPids(port: number, close: boolean, ms: number, concurrency = 16): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  const agent = close ? undefined : new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const deadline = performance.now() + ms;
  const one = () => new Promise<void>((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', agent: agent ?? false, headers: close ? { connection: 'close' } : {} }, (res) => {
      const pid = String(res.headers['x-pid'] ?? '?');
      res.resume();
      res.on('end', () => { counts.set(pid, (counts.get(pid) ?? 0) + 1); resolve(); });
      res.on('error', () => resolve());
    });
    req.setTimeout(5_000, () => req.destroy());
    req.on('error', () => resolve());
    req.end();
  });
  await Promise.all(Array.from({ length: concurrency }, async () => {
    for (let i = 0; i < 1_000_000 && performance.now() < deadline; i++) await one();
  }));
  agent?.destroy();
  return counts;
}

/** "52% / 48%" (largest first) from per-worker counts. */
export function shareText(counts: Iterable<number>): string {
  const v = [...counts].filter((x) => x > 0).sort((a, b) => b - a);
  const total = v.reduce((a, b) => a + b, 0);
  if (total === 0) return '—';
  return v.map((x) => `${Math.round((100 * x) / total)}%`).join(' / ');
}
