/**
 * Shared pieces of the benchmarks: starting quiesce and the node:cluster baseline on port 0, a
 * registry of every process started (all ended by pid on exit, SIGINT, SIGTERM or a crash),
 * /proc readings (RSS, process trees), statistics and markdown tables.
 */
import { spawn, spawnSync, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { availableParallelism, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runProbe } from '../src/probe/index.js';

/** The repository root (this file runs from dist/bench/). */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CLI = join(ROOT, 'dist/src/cli.js');
export const CLUSTER = join(ROOT, 'dist/bench/cluster-server.js');
export const APPS = join(ROOT, 'bench/apps');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ─── process registry ────────────────────────────────────────────────────────

const roots = new Set<number>();
const tempDirs = new Set<string>();
const exitHooks: Array<() => void> = [];

/** Remember a process we started: it and its descendants are killed (by pid) when we exit. */
export function track(pid: number): void { roots.add(pid); }
export function untrack(pid: number): void { roots.delete(pid); }
export function onExit(fn: () => void): void { exitHooks.push(fn); }

export function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(d);
  return d;
}

/** The static rows' site, in a new temp dir: `/2k.txt`, `/64k.bin` and `/1m.bin` (bytes that do not compress). Returns its path. */
export function benchSite(prefix: string): string {
  const www = join(tempDir(prefix), 'www');
  mkdirSync(www);
  writeFileSync(join(www, '2k.txt'), 'x'.repeat(2047) + '\n');
  const mb = Buffer.alloc(1 << 20);
  for (let i = 0; i < mb.length; i++) mb[i] = (i * 2654435761) >>> 24;
  writeFileSync(join(www, '1m.bin'), mb);
  writeFileSync(join(www, '64k.bin'), mb.subarray(0, 64 * 1024));
  return www;
}

/**
 * Kill a process and everything below it, by pid: the descendants are listed first, then the
 * parent is killed before them, so that a supervisor (nginx's master, quiesce's) cannot replace
 * a child it saw die (killing nginx's workers first left the ones its master respawned behind).
 */
export function killTree(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  const all = [pid, ...descendants(pid)];
  for (const p of all) { try { process.kill(p, signal); } catch { /* gone */ } }
}

let cleaned = false;
export function cleanupAll(): void {
  if (cleaned) return;
  cleaned = true;
  for (const fn of exitHooks) { try { fn(); } catch { /* best effort */ } }
  for (const pid of roots) killTree(pid);
  roots.clear();
  for (const d of tempDirs) { try { rmSync(d, { recursive: true, force: true }); } catch { /* best effort */ } }
}

process.on('exit', cleanupAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    process.stderr.write(`\nbench: ${sig}, ending the processes it started\n`);
    cleanupAll();
    process.exit(130);
  });
}
process.on('uncaughtException', (err) => {
  process.stderr.write(`bench: ${err.stack ?? String(err)}\n`);
  cleanupAll();
  process.exit(1);
});
process.on('unhandledRejection', (err) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.stack : String(err)}\n`);
  cleanupAll();
  process.exit(1);
});

// ─── /proc ───────────────────────────────────────────────────────────────────

function ppidOf(pid: string): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch { return undefined; }
}

/** All live descendants of a pid (children, grandchildren…). */
export function descendants(root: number): number[] {
  const kids = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const pp = ppidOf(d);
    if (pp === undefined) continue;
    const list = kids.get(pp) ?? [];
    list.push(Number(d));
    kids.set(pp, list);
  }
  const out: number[] = [];
  const stack = [...(kids.get(root) ?? [])];
  while (stack.length > 0 && out.length < 10_000) {
    const p = stack.pop()!;
    out.push(p);
    stack.push(...(kids.get(p) ?? []));
  }
  return out;
}

export function childPids(ppid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) if (/^\d+$/.test(d) && ppidOf(d) === ppid) out.push(Number(d));
  return out;
}

/** Pin a process, all its threads, to `cpu` (taskset -a). */
export function pin(pid: number, cpu: number): void {
  const r = spawnSync('taskset', ['-a', '-pc', String(cpu), String(pid)], { stdio: 'ignore', timeout: 5_000 });
  if (r.status !== 0) throw new Error(`taskset -a -pc ${cpu} ${pid} failed`);
}

/** Pin a process and its descendants (a master and its workers), all their threads, to `cpu`; bounded to 4 levels. */
export function pinTree(pid: number, cpu: number, depth = 0): void {
  pin(pid, cpu);
  if (depth < 4) for (const c of childPids(pid)) pinTree(c, cpu, depth + 1);
}

/** Whether processes can be pinned apart: 2 CPUs or more and taskset (util-linux). */
export function canPin(): boolean {
  return availableParallelism() >= 2 && spawnSync('taskset', ['-V'], { stdio: 'ignore' }).status === 0;
}

/** VmRSS of a process in KiB (0 when gone). */
export function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch { return 0; }
}

/** RssAnon of a process in KiB (0 when gone). */
export function rssAnonKiB(pid: number): number {
  try {
    const m = /RssAnon:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch { return 0; }
}

/** VmRSS of an idle bare `node` process (for scale), KiB. */
export async function bareNodeRssKiB(): Promise<number> {
  const p = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 3000)'], { stdio: 'ignore' });
  track(p.pid!);
  await sleep(1000);
  const kib = rssKiB(p.pid!);
  killTree(p.pid!);
  untrack(p.pid!);
  return kib;
}

/** Sum of VmRSS of a process and its descendants, KiB. */
export function treeRssKiB(pid: number): number {
  return [pid, ...descendants(pid)].reduce((a, p) => a + rssKiB(p), 0);
}

export function alive(pid: number): boolean {
  try { process.kill(pid, 0); } catch { return false; }
  try { return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z '); } catch { return false; }
}

/** Recv-Q (accept queue length) of the LISTEN socket on a port, from `ss -ltn`. */
export function ssRecvQ(port: number): number | undefined {
  try {
    const out = execFileSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8', timeout: 2_000 });
    const line = out.split('\n').find((l) => l.startsWith('LISTEN'));
    return line ? Number(line.trim().split(/\s+/)[1]) : undefined;
  } catch { return undefined; }
}

/** Handshakes in progress (SYN_RECV) on a local port, from `ss -tn state syn-recv`. */
export function ssSynRecv(port: number): number | undefined {
  try {
    const out = execFileSync('ss', ['-tnH', 'state', 'syn-recv', `sport = :${port}`], { encoding: 'utf8', timeout: 2_000 });
    return out.split('\n').filter((l) => l.trim() !== '').length;
  } catch { return undefined; }
}

// ─── servers ─────────────────────────────────────────────────────────────────

export type Running = {
  name: string;
  proc: ChildProcess;
  pid: number;
  port: number;
  address: string;
  dir: string;
  pidfile: string;
  out: () => string;
  err: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  /** Kill the whole tree by pid (SIGKILL) and wait for the root. */
  kill: () => Promise<void>;
};

/** Spawn `argv` (program first), tracked, its output kept: a Running whose address is not known yet. */
function spawnServer(name: string, argv: string[], dir: string, pidfile: string, cwd: string, env?: NodeJS.ProcessEnv): Running {
  const proc = spawn(argv[0]!, argv.slice(1), { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  track(proc.pid!);
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => { out += d.toString(); if (out.length > 1_000_000) out = out.slice(-100_000); });
  proc.stderr!.on('data', (d: Buffer) => { err += d.toString(); if (err.length > 1_000_000) err = err.slice(-100_000); });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((r) =>
    proc.once('exit', (code, signal) => { r({ code, signal, at: performance.now() }); }));
  return {
    name, proc, pid: proc.pid!, port: 0, address: '', dir, pidfile, out: () => out, err: () => err, exited,
    kill: async () => {
      if (proc.exitCode === null && proc.signalCode === null) killTree(proc.pid!);
      await exited;
      for (const p of descendants(proc.pid!)) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
      untrack(proc.pid!);
    },
  };
}

/** Start `argv` (program first) and wait for `ready` in its stdout; `addr` captures its address. */
function launch(name: string, argv: string[], dir: string, pidfile: string, ready: RegExp, addr: RegExp, env?: NodeJS.ProcessEnv, timeoutMs = 20_000): Promise<Running> {
  const r = spawnServer(name, argv, dir, pidfile, ROOT, env);
  return (async () => {
    const deadline = Date.now() + timeoutMs;
    let done = false;
    void r.exited.then(() => { done = true; });
    for (;;) {
      const out = r.out();
      const m = ready.test(out) ? addr.exec(out) : null;
      if (m) { r.address = m[1]!; break; }
      if (done) throw new Error(`${name} exited before it was ready:\n${out}\n${r.err()}`);
      if (Date.now() > deadline) { await r.kill(); throw new Error(`${name} not ready within ${timeoutMs} ms:\n${out}\n${r.err()}`); }
      await sleep(15);
    }
    r.port = Number(/:(\d+)$/.exec(r.address)![1]);
    return r;
  })();
}

export type QuiesceOptions = { app: string; workers?: number; accessLog?: string; /** A file, or true: error.log in the instance's temp dir (`errorLogFile(r)`). */
  errorLog?: string | true; extra?: string[]; env?: NodeJS.ProcessEnv;
  /** Run the master itself as nobody (65534, through setpriv: the bench must run as root). */
  user?: 'nobody' };

/** `quiesce APP --listen 127.0.0.1:0 --admin 127.0.0.1:0 --workers N --pidfile P`; resolves once ready. */
export async function startQuiesce(o: QuiesceOptions): Promise<Running> {
  const dir = tempDir('quiesce-bench-');
  const pidfile = join(dir, 'quiesce.pid');
  if (o.user) chownSync(dir, 65534, 65534);
  const run = (args: string[]): string[] => (o.user ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', process.execPath, ...args] : [process.execPath, ...args]);
  const args = [CLI, o.app, '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--workers', String(o.workers ?? 2),
    '--pidfile', pidfile, '--access-log', o.accessLog ?? 'off', ...(o.errorLog ? ['--error-log', o.errorLog === true ? join(dir, 'error.log') : o.errorLog] : []), ...(o.extra ?? [])];
  try {
    return await launch('quiesce', run(args), dir, pidfile, /quiesce: ready /, /listening on https?:\/\/(\S+)/, o.env);
  } catch (e) {
    // others rebuild dist/ in the same tree: a start may read a half-written file. Retry once.
    process.stderr.write(`bench: quiesce failed to start, retrying once in 2 s: ${e instanceof Error ? e.message.split('\n').slice(0, 3).join(' ') : e}\n`);
    await sleep(2000);
    rmSync(pidfile, { force: true });
    return launch('quiesce', run(args), dir, pidfile, /quiesce: ready /, /listening on https?:\/\/(\S+)/, o.env);
  }
}

/** Any server command (run by bash), ready once its output matches `ready`; its address is the first http(s)://ADDR it prints. */
export function startCommand(name: string, command: string, ready: RegExp): Promise<Running> {
  const dir = tempDir('cmd-bench-');
  return launch(name, ['bash', '-c', command], dir, '', ready, /https?:\/\/(\S+)/);
}

export const errorLogFile = (r: Running): string => join(r.dir, 'error.log');

/** The nginx binary (Debian's package puts it in /usr/sbin), or undefined when there is none. */
export function nginxBinary(): string | undefined {
  for (const p of ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx']) if (existsSync(p)) return p;
  try {
    return execFileSync('bash', ['-c', 'command -v nginx'], { encoding: 'utf8', timeout: 2_000 }).trim() || undefined;
  } catch { return undefined; }
}

/** A loopback port free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(port, '127.0.0.1');
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}

/**
 * nginx serving `root` with its own config in a temp dir: N workers, `sendfile on`, access log off,
 * keep-alive without a request limit (as quiesce), in the foreground; resolves once it accepts.
 */
/**
 * nginx serving `root`; with `tls`, over TLS on that certificate (HTTP/2 too with `http2`; without
 * `tls`, `http2` is h2c with prior knowledge on that port, as `listen … http2` is in nginx 1.22), and
 * `hello` answers every request with the bench app's body from nginx itself (`return 200`): the
 * TLS rows compare the protocol work, nginx has no Node app to run.
 */
export async function startNginx(o: { root: string; workers?: number; timeoutMs?: number; tls?: TlsPair; http2?: boolean; hello?: boolean }): Promise<Running> {
  const bin = nginxBinary();
  if (!bin) throw new Error('no nginx binary');
  const dir = tempDir('nginx-bench-');
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, [
    ...(process.getuid?.() === 0 ? [`user ${userInfo().username};`] : []), // the temp dirs are 0700: workers read as us
    `worker_processes ${o.workers ?? 2};`, 'daemon off;', 'master_process on;', `pid ${join(dir, 'nginx.pid')};`, 'error_log stderr warn;',
    'events { worker_connections 4096; }',
    'http {',
    '  access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000; keepalive_timeout 65;',
    `  client_body_temp_path ${dir}/b; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f; uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s;`,
    '  types { text/plain txt; text/html html; application/octet-stream bin; }',
    '  default_type application/octet-stream;',
    o.tls
      ? `  server { listen 127.0.0.1:${port} ssl${o.http2 ? ' http2' : ''}; ssl_certificate ${o.tls.cert}; ssl_certificate_key ${o.tls.key}; ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:1m; root ${o.root};` +
        `${o.hello ? ' location / { default_type text/plain; add_header x-pid $pid; return 200 "hello world\\n"; }' : ''} }`
      : `  server { listen 127.0.0.1:${port}${o.http2 ? ' http2' : ''}; root ${o.root};${o.hello ? ' location / { default_type text/plain; add_header x-pid $pid; return 200 "hello world\\n"; }' : ''} }`,
    '}', ''].join('\n'));
  const r = spawnServer('nginx', [bin, '-e', 'stderr', '-p', dir, '-c', conf], dir, join(dir, 'nginx.pid'), dir);
  r.port = port;
  r.address = `127.0.0.1:${port}`;
  const deadline = Date.now() + (o.timeoutMs ?? 10_000);
  let done = false;
  void r.exited.then(() => { done = true; });
  while (!(await canConnect(port))) {
    if (done) throw new Error(`nginx exited before it was ready:\n${r.err()}`);
    if (Date.now() > deadline) { await r.kill(); throw new Error(`nginx not ready within ${o.timeoutMs ?? 10_000} ms:\n${r.err()}`); }
    await sleep(20);
  }
  // the master binds before it forks: wait for its workers too
  for (let i = 0; i < 250 && childPids(r.pid).length < (o.workers ?? 2); i++) await sleep(20);
  return r;
}

export type ClusterOptions = { app?: string; static?: string; sched: 'rr' | 'none'; workers?: number; accessLog?: string; closeOnTerm?: boolean;
  /** https.createServer on this pair (http2.createSecureServer with allowHTTP1 when `http2`); without a pair, `http2`: http2.createServer (h2c). */
  tls?: TlsPair; http2?: boolean };

/** A certificate and its key (PEM files). */
export type TlsPair = { cert: string; key: string };

/** A self-signed ECDSA P-256 certificate for 127.0.0.1 in a temp dir (openssl), for the TLS rows. */
export function benchCert(): TlsPair {
  const dir = tempDir('tls-bench-');
  const pair = { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') };
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', pair.key, '-out', pair.cert,
    '-days', '2', '-subj', '/CN=bench', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore', timeout: 20_000 });
  chmodSync(dir, 0o755);
  chmodSync(pair.key, 0o644); // nginx's workers read it as another user
  return pair;
}

export async function startCluster(o: ClusterOptions): Promise<Running> {
  const dir = tempDir('cluster-bench-');
  const args = [CLUSTER, ...(o.app ? ['--app', o.app] : []), ...(o.static ? ['--static', o.static] : []), '--sched', o.sched,
    '--workers', String(o.workers ?? 2), '--listen', '127.0.0.1:0', ...(o.accessLog ? ['--access-log', o.accessLog] : []),
    ...(o.closeOnTerm ? ['--close-on-term'] : []), ...(o.tls ? ['--tls-cert', o.tls.cert, '--tls-key', o.tls.key] : []), ...(o.http2 ? ['--http2'] : [])];
  return launch(`cluster-${o.sched}`, [process.execPath, ...args], dir, '', /cluster: listening /, /cluster: listening on https?:\/\/(\S+)/);
}

/**
 * The floor of a Node static server, for the static rows' yardstick column: bench/bare-prefork.js
 * (a parent that hands its listening socket to N forked children, each a bare http.Server: the
 * process model of quiesce with nothing else) running bench/apps/memory-static.mjs over `root`.
 */
export async function startBareStatic(root: string, workers = 2): Promise<Running> {
  const dir = tempDir('bare-bench-');
  const args = [join(ROOT, 'dist/bench/bare-prefork.js'), '--app', join(APPS, 'memory-static.mjs'), '--workers', String(workers), '--listen', '127.0.0.1:0'];
  return launch('bare', [process.execPath, ...args], dir, '', /bare: listening /, /bare: listening on https?:\/\/(\S+)/, { ...process.env, BENCH_ROOT: root });
}

/** Run the quiesce CLI (a verb against an instance); bounded in time. */
export function quiesceCli(args: string[], timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  return runCmd(process.execPath, [CLI, ...args], timeoutMs);
}

export function runCmd(cmd: string, args: string[], timeoutMs = 60_000, env?: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    track(p.pid!);
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const t = setTimeout(() => killTree(p.pid!), timeoutMs);
    p.on('error', (e) => { stderr += e.message; });
    p.on('close', (code) => { clearTimeout(t); untrack(p.pid!); resolve({ code, stdout, stderr, ms: performance.now() - t0 }); });
  });
}

export type WorkerStat = { pid: number; generation: number; requests: number };

export async function quiesceWorkers(s: Running): Promise<WorkerStat[]> {
  const r = await quiesceCli(['status', '--json', '--pidfile', s.pidfile], 15_000);
  if (r.code !== 0) throw new Error(`quiesce status failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { workers: WorkerStat[] }).workers;
}

// ─── numbers and tables ──────────────────────────────────────────────────────

export function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** Nearest-rank percentile (p in 0..100). */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const v = [...xs].sort((a, b) => a - b);
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))]!;
}

export function fmt(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return '—';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function table(header: string[], rows: string[][]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => (c ?? '').padEnd(w[i]!)).join(' | ') + ' |';
  return [line(header), '|' + w.map((x) => '-'.repeat(x + 2)).join('|') + '|', ...rows.map(line)].join('\n');
}

/** Tiny flag parser: `--name value`, `--flag`; unknown flags are an error. */
export function flags(argv: string[], spec: Record<string, 'bool' | 'num' | 'str'>): Record<string, string | number | boolean | undefined> {
  const out: Record<string, string | number | boolean | undefined> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const m = /^--([\w-]+)(?:=(.*))?$/.exec(a);
    if (!m || !(m[1]! in spec)) throw new Error(`unknown argument ${a}; flags: ${Object.keys(spec).map((k) => '--' + k).join(' ')}`);
    const kind = spec[m[1]!]!;
    if (kind === 'bool') { out[m[1]!] = true; continue; }
    const v = m[2] ?? argv[++i];
    if (v === undefined) throw new Error(`${a} wants a value`);
    if (kind === 'num') {
      const n = Number(v);
      if (!Number.isFinite(n) || n <= 0) throw new Error(`${a}: want a positive number, got ${v}`);
      out[m[1]!] = n;
    } else out[m[1]!] = v;
  }
  return out;
}

export function envLine(): string {
  let cpu = '';
  try { cpu = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? ''; } catch { /* */ }
  let load = '';
  try { load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '); } catch { /* */ }
  return `node ${process.version}, ${cpu || 'cpu ?'}, ${readdirSync('/sys/devices/system/cpu').filter((d) => /^cpu\d+$/.test(d)).length} cpus, load avg ${load}`;
}

/** Run a benchmark's main: exit 0 when it finished, 1 with the stack when it failed; every process it started is ended either way. */
export function runBench(name: string, main: () => Promise<void>): void {
  main().then(() => { cleanupAll(); process.exit(0); }, (e: unknown) => {
    process.stderr.write(`${name}: failed: ${e instanceof Error ? e.stack : String(e)}\n`);
    cleanupAll();
    process.exit(1);
  });
}

/**
 * What a server completes per second of new-connection requests burning `burnMs` ms of CPU each,
 * beside `keepalive` clients sending back to back (they take their share whatever the rate): the
 * load pushed past it for 4 s (new connections at several times its pace), the new-connection
 * requests answered (not 5xx: a shed 503 is not capacity) between 1 s and 4 s. Not all the ok ones of the run (those still queued at
 * its end, up to the probe's 1,000 sockets, finish later), and not a measure without the
 * keep-alive clients: that came out 1.5x-2x what the server completes under the benches' load,
 * so a "0.7x" or "1.1x" load was far above it from the first second.
 */
export async function capacityUnderLoad(target: string, burnMs: number, keepalive: number): Promise<number> {
  const p = await runProbe({ target, path: `/?burn=${burnMs}`, rate: Math.ceil(4000 / burnMs), keepalive, durationS: 4, timeoutS: 10 });
  return p.outcomes.filter((x) => x.kind === 'ok' && (x.status ?? 0) < 500 && x.mode === 'rate' && x.endMs >= 1000 && x.endMs <= 4000).length / 3;
}
