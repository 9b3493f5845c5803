/**
 * Start a real quiesce master for a test: port 0, its own pid file, output captured. Every
 * process started here is ended by pid in `stop()`/`kill()`, and `cleanup()` checks none is left.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import http from 'node:http';
import net from 'node:net';
import { asNobody, forNobody, testDir } from './unprivileged.js';
import type { StatusSnapshot } from '../../src/master/status/types.js';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const CLI = join(ROOT, 'dist/src/cli.js');
export const FIXTURES = join(ROOT, 'test/fixtures');

export type Server = {
  proc: ChildProcess;
  pid: number;
  dir: string;
  pidfile: string;
  /** "127.0.0.1:PORT" (first listener), and all of them */
  address: string;
  addresses: string[];
  port: number;
  admin: string;
  out: () => string;
  err: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Run a CLI verb against this instance. */
  cli: (...args: string[]) => Promise<{ code: number | null; stdout: string; stderr: string }>;
  workerPids: () => number[];
  kill: () => Promise<void>;
};

/** `user: 'nobody'`: the master itself runs unprivileged (helpers/unprivileged.ts; the test must run as root). */
export type StartOptions = { args?: string[]; cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv; detached?: boolean; waitReady?: boolean; user?: 'nobody' };

export async function startServer(opts: StartOptions = {}): Promise<Server> {
  const nobody = opts.user === 'nobody';
  const dir = testDir('quiesce-test-', nobody ? 'nobody' : 'root');
  const pidfile = join(dir, 'quiesce.pid');
  let args = [CLI, '--pidfile', pidfile, '--admin', '127.0.0.1:0', '--access-log', 'off', ...(opts.args ?? [])];
  if (!args.includes('--listen') && !args.includes('--config')) args.push('--listen', '127.0.0.1:0');
  if (!args.includes('--workers')) args.push('--workers', '2');
  let cmd = process.execPath;
  if (nobody) [cmd, args] = asNobody(cmd, args.map(forNobody));
  const proc = spawn(cmd, args, { cwd: nobody ? forNobody(opts.cwd ?? ROOT) : opts.cwd ?? ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env }, detached: opts.detached ?? false });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  proc.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  // 'close', not 'exit': the master's last log lines may still be in its pipes at 'exit'
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('close', (code: number | null, signal: NodeJS.Signals | null) => resolve({ code, signal })));
  const server: Server = {
    proc, pid: proc.pid!, dir, pidfile, address: '', addresses: [], port: 0, admin: '',
    out: () => out, err: () => err, exited,
    cli: (...a: string[]) => runCli([...a, '--pidfile', pidfile]),
    workerPids: () => childPids(proc.pid!),
    kill: async () => {
      for (const pid of [...childPids(proc.pid!), proc.pid!]) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
      await exited;
    },
  };
  if (opts.waitReady === false) return server;
  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  let done = false;
  void exited.then(() => { done = true; });
  while (!/quiesce: ready /.test(out)) {
    if (done) throw new Error(`quiesce exited before ready:\n${out}\n${err}`);
    if (Date.now() > deadline) { await server.kill(); throw new Error(`quiesce not ready in time:\n${out}\n${err}`); }
    await sleep(20);
  }
  server.addresses = [...out.matchAll(/listening on (?:https?:\/\/|unix:)(\S+)/g)].map((m) => m[1]!);
  server.address = server.addresses[0]!;
  server.port = Number(/:(\d+)$/.exec(server.address)?.[1] ?? 0);
  server.admin = /admin on https?:\/\/(\S+)/.exec(out)?.[1] ?? '';
  return server;
}

/** Remove the temp dir; anything the test left alive is killed by pid (a failing assertion may have skipped the stop). */
export async function cleanup(s: Server): Promise<void> {
  const left = childPids(s.pid);
  if (s.proc.exitCode === null && s.proc.signalCode === null) await s.kill();
  for (const pid of left) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  rmSync(s.dir, { recursive: true, force: true });
}

export function runCli(args: string[], cwd = ROOT): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const t = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('exit', (code) => { clearTimeout(t); resolve({ code, stdout, stderr }); });
  });
}

/** Children of a pid, from /proc (workers of a master). */
import { readdirSync, readFileSync } from 'node:fs';
export function childPids(ppid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === ppid) out.push(Number(d));
    } catch { /* gone */ }
  }
  return out;
}

export function alive(pid: number): boolean {
  try { process.kill(pid, 0); } catch { return false; }
  try { return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z '); } catch { return false; }
}

/** A loopback port free a moment ago (for a program that cannot say which port it took). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer().once('error', reject);
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address() as net.AddressInfo; srv.close(() => resolve(port)); });
  });
}

/** Whether `port` on 127.0.0.1 accepts a connection now. */
export function connects(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect({ host: '127.0.0.1', port }, () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `fn` every `everyMs` until it returns a truthy value, at most `ms`. */
export async function waitFor<T>(fn: () => T | Promise<T>, ms: number, what: string, everyMs = 25): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** `p`, or a rejection naming `what` after `ms`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => { t = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms); });
  return Promise.race([p, late]).finally(() => clearTimeout(t));
}

/** One request on a new connection; resolves status, headers and body, or rejects with the socket error. */
export function get(address: string, path = '/', headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; version: string }> {
  const m = /^(.*):(\d+)$/.exec(address)!;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]), path, agent: false, headers: { connection: 'close', ...headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, version: res.httpVersion }));
      res.on('error', reject);
    });
    req.setTimeout(30_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** The admin listener's /server-status?json. */
export async function statusJson(s: Server): Promise<StatusSnapshot> {
  return JSON.parse((await get(s.admin, '/server-status?json')).body) as StatusSnapshot;
}

/** Wait for the master to exit, at most `ms`; fails (after killing it) when it does not. */
/** A raw connection to `address`: what it reads, until the server ends it (or `ms` pass). */
export function rawConnection(address: string, ms = 5_000): { socket: net.Socket; done: Promise<{ data: string; how: 'end' | 'reset' | 'timeout' }> } {
  const m = /^\[?(.*?)\]?:(\d+)$/.exec(address)!;
  const socket = net.connect(Number(m[2]), m[1]!);
  let data = '';
  socket.on('data', (d) => { data += d.toString(); });
  const done = new Promise<{ data: string; how: 'end' | 'reset' | 'timeout' }>((resolve) => {
    socket.on('end', () => resolve({ data, how: 'end' }));
    socket.on('error', () => resolve({ data, how: 'reset' }));
    socket.setTimeout(ms, () => { socket.destroy(); resolve({ data, how: 'timeout' }); });
  });
  return { socket, done };
}

/** Send raw bytes on a new connection and read until the server closes. */
export async function raw(address: string, data: string, ms = 5_000): Promise<string> {
  const c = rawConnection(address, ms);
  c.socket.write(data);
  return (await c.done).data;
}

export async function waitExit(s: Server, ms = 20_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let t: NodeJS.Timeout | undefined;
  const r = await Promise.race([s.exited, new Promise<null>((res) => { t = setTimeout(() => res(null), ms); })]);
  clearTimeout(t);
  if (!r) { await s.kill(); throw new Error(`server pid ${s.pid} did not exit within ${ms} ms`); }
  return r;
}

/** Graceful stop by SIGTERM, and wait for the exit. */
export async function stopServer(s: Server, ms = 20_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  process.kill(s.pid, 'SIGTERM');
  return waitExit(s, ms);
}
