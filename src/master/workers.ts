/**
 * A worker process as the master sees it: one record per process, with its slot, generation and
 * figures (the scoreboard's worker part), and promises for the moments the lifecycle waits on.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { closeSync } from 'node:fs';
import { Socket, type OnReadOpts, type SocketConstructorOpts } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';
import { isToMaster, type ToMaster, type ToWorker, type WorkerBoot, type WorkerStats, type RetireReason, type TlsWire } from '../shared/ipc.js';
import type { Listener } from './listeners.js';
import { info } from './listeners.js';
import { loadNative } from '../native/index.js';
import { ACCESS_LOG_FD } from '../worker/access-log.js';
import type { OutputRelay } from './app-output.js';
import { SYSTEMD_ENV } from './systemd.js';
import { errorMessage } from '../shared/errors.js';
import type { RequestCounts } from '../shared/request-metrics.js';

export type WorkerPhase = 'starting' | 'ready' | 'retiring' | 'exited';

export type Generation = {
  n: number;
  boot: Omit<WorkerBoot, 'slot' | 'generation' | 'listeners'>;
  startedAt: number;
  /** Request metrics of its workers that have exited (the live ones report their own). */
  exitedHttp: RequestCounts;
  /** Its TLS material (master/tls.ts): certificates read at its start, ticket keys of its own. */
  tls: TlsWire;
  /** --listen text → context in `tls`, for the TLS listeners. */
  tlsByText: ReadonlyMap<string, number>;
  /** Its half of the TLS load board (master/tls.ts), when it serves TLS and the native module is there. */
  board?: { fd: number; base: number; slots: number };
};

const CLI = fileURLToPath(new URL('../cli.js', import.meta.url));
/** A worker's fds: 0-2 stdio, 3 IPC, the access log channel, then the listeners, then their gate sockets. */
const LISTENER_FD0 = ACCESS_LOG_FD + 1;

/**
 * V8 heap sizing for workers: an old generation of this many MB before its first full collection.
 * Without it V8 may fit the old generation's limit tightly to the small heap it sees at start
 * (the worker's start is short and mostly module loading); a worker streaming large bodies then
 * runs incremental marking back to back (measured: static 1 MB files at ~0.6x of a node:cluster
 * worker that happened not to get the tight limit). Given to the workers that serve files; Node's
 * own flags and NODE_OPTIONS win: see workerExecArgv.
 */
export const WORKER_INITIAL_OLD_SPACE_MB = 64;

/**
 * The master's own node flags, plus, for workers that serve files (`staticFiles`), the heap default
 * unless the operator set an initial heap size (node flags or NODE_OPTIONS); a
 * --max-old-space-size below twice the default halves it. An app's workers get Node's own heap
 * sizing, as under node:cluster: any V8 flag changes V8's flag hash, so Node's code cache for its
 * own modules is refused and every builtin the worker loads is compiled again (measured: a worker
 * start ~257 ms of CPU with the flag, ~224 ms without; a reload or upgrade starts every worker).
 */
export function workerExecArgv(staticFiles: boolean, execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ''): string[] {
  if (!staticFiles) return [...execArgv];
  const flags = [...execArgv, ...nodeOptions.split(/\s+/)].map((a) => a.replace(/_/g, '-'));
  if (flags.some((a) => /^--initial-(old-space|heap)-size(=|$)/.test(a))) return [...execArgv];
  let mb = WORKER_INITIAL_OLD_SPACE_MB;
  for (const a of flags) {
    const m = /^--max-old-space-size=(\d+)$/.exec(a);
    if (m) mb = Math.min(mb, Math.floor(Number(m[1]) / 2));
  }
  return mb >= 1 ? [...execArgv, `--initial-old-space-size=${mb}`] : [...execArgv];
}

/**
 * One worker's access-log stream, cut at line ends: a read may end inside a line (a batch split
 * by the socket), and another worker's lines must not land in the middle of it. The part after
 * the last newline waits for the next read. `push`'s chunk is only valid during the call.
 */
export class LogLines {
  private carry: Buffer | undefined;
  constructor(private readonly sink: (data: Buffer) => void) {}
  push(chunk: Buffer): void {
    const nl = chunk.lastIndexOf(10);
    if (nl < 0) {
      this.carry = this.carry ? Buffer.concat([this.carry, chunk]) : Buffer.from(chunk);
      return;
    }
    const whole = chunk.subarray(0, nl + 1);
    this.sink(this.carry ? Buffer.concat([this.carry, whole]) : whole);
    this.carry = nl + 1 < chunk.length ? Buffer.from(chunk.subarray(nl + 1)) : undefined;
  }
  end(): void {
    if (this.carry) this.sink(Buffer.concat([this.carry, Buffer.from('\n')]));
    this.carry = undefined;
  }
}

/** One read buffer for every worker's access-log socket: each read is passed on before the next. */
const LOG_READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/**
 * The access-log channel of a new worker: a socketpair whose master end is read into
 * LOG_READ_BUFFER (no allocation per read: the master reads every logged request), or, without
 * the native module, an ordinary stdio pipe.
 */
function logChannel(): { childFd: number; masterFd: number } | undefined {
  const n = loadNative();
  if (!n.ok) return undefined;
  try {
    const [masterFd, childFd] = n.native.socketpair();
    return { masterFd, childFd };
  } catch {
    return undefined;
  }
}

/**
 * The worker's environment: the master's, less the admin token, the TLS key's passphrase (the
 * master decrypts the key: workers get it over IPC) and systemd's variables (only the master
 * speaks to systemd), plus its boot.
 */
function workerEnv(boot: WorkerBoot): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, QUIESCE_ROLE: 'worker', QUIESCE_WORKER: JSON.stringify(boot) };
  for (const k of ['QUIESCE_ADMIN_TOKEN', 'QUIESCE_TLS_PASSPHRASE', ...SYSTEMD_ENV]) delete env[k];
  return env;
}

/**
 * A report whose loop delay is this long or more (ms) says the worker's loop is held up: a GC
 * thrashing near the heap limit, a handler working in long synchronous slices. Half a second, in
 * every report for --worker-timeout, is far past what a serving loop shows (tens of ms under load).
 */
export const STALL_LOOP_MS = 500;

/** The slot of a warm spare until it is promoted (it has no board cell). */
export const SPARE_SLOT = -1;

export class WorkerProc {
  readonly pid: number;
  /** Undefined when the fork itself failed (spawnError says why): the record is born exited. */
  readonly child: ChildProcess | undefined;
  /** Why the process could not be started (EMFILE, EAGAIN, ENOMEM...): a crash of its slot. */
  spawnError?: string;
  /** When its last message arrived (the stats report every 500 ms is the heartbeat: --worker-timeout). */
  lastHeard = Date.now();
  /** Its event loop was silent past --worker-timeout: being replaced, then killed. */
  hung = false;
  /**
   * Since when every report has said its loop was held up STALL_LOOP_MS or more (undefined: the
   * last one did not): a loop that answers, but only late, for --worker-timeout is hung too.
   */
  stalledSince?: number;
  /** Where its inspector listens, once a hung worker opened it (hung-stack.ts). */
  inspectorUrl?: string;
  /** What it said last about its own end: an uncaught error, or the app-exit record (code, request). */
  lastWords?: string;
  /** What it held when the app ended its process (the app-exit record): exact, where a report is up to 500 ms old. */
  heldAtExit?: { connections: number; inflight: number };
  phase: WorkerPhase = 'starting';
  /** It reported ready once. */
  wasReady = false;
  /** When it reported ready (0: never). */
  readyAt = 0;
  /** Connections the master handed it at the end of drains (drain.ts). */
  handedOver = 0;
  retireReason?: RetireReason;
  retireStartedAt = 0;
  readonly startedAt = Date.now();
  stats: WorkerStats = { requests: 0, bytesSent: 0, connections: 0, inflight: 0, drained: 0, forced: 0, state: 'S' };
  fatal?: { code: string; message: string };
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  readonly ready: Promise<boolean>;
  readonly exited: Promise<void>;
  /** Resolves with a description when the worker crashes: an uncaught error it reported, or its exit. */
  readonly failed: Promise<string>;
  private readonly waiters = new Map<number, (m: ToMaster) => void>();
  private timers: NodeJS.Timeout[] = [];

  constructor(
    /** Its place in the generation (a warm spare has none, SPARE_SLOT, until promoted into one). */
    public slot: number,
    readonly generation: Generation,
    listeners: Listener[],
    relay: (w: WorkerProc, stream: 'stdout' | 'stderr') => OutputRelay,
    onAccessLog: (chunk: Buffer) => void,
    onMessage: (w: WorkerProc, m: ToMaster) => void,
    /** A warm spare (WorkerBoot.spare): it accepts nothing until `serve`. */
    spare = false,
  ) {
    // the listening sockets go in the stdio, after the log channel: the worker holds them from its
    // first instruction, whenever the master dies (a handle sent over IPC waited ~200 ms for the
    // worker to boot and read it: a master killed meanwhile reset every queued connection)
    // then each reuseport listener's gate and plug sockets (the workers gate it themselves if the master dies)
    const fds = listeners.map((l) => l.fd);
    const boot: WorkerBoot = {
      ...generation.boot, slot, generation: generation.n, ...(spare ? { spare: true } : {}),
      listeners: listeners.map((l, i) => {
        const gate = l.gate && { ...l.gate, fd: LISTENER_FD0 + i, gateFd: LISTENER_FD0 + fds.push(l.gate.gateFd) - 1, plugFd: LISTENER_FD0 + fds.push(l.gate.plugFd) - 1 };
        return { ...info(l), fd: LISTENER_FD0 + i, gate, tls: generation.tlsByText.get(l.spec.text) };
      }),
    };
    // and last the TLS load board, when the generation has one (and this slot a cell on it)
    const board = generation.board;
    if (board && slot >= 0 && slot < board.slots) boot.board = { ...board, fd: LISTENER_FD0 + fds.push(board.fd) - 1 };
    const log = logChannel();
    let child: ChildProcess | undefined;
    try {
      child = fork(CLI, [], {
        // the inspector is not started by this: on SIGUSR1 (a hung worker's stack, hung-stack.ts)
        // it takes a free loopback port instead of 9229, which another process may hold
        execArgv: [...workerExecArgv(boot.appSpec.kind !== 'module'), '--inspect-port=127.0.0.1:0'],
        env: workerEnv(boot),
        stdio: ['ignore', 'pipe', 'pipe', 'ipc', log ? log.childFd : 'pipe', ...fds],
        serialization: 'json',
      });
    } catch (err) {
      // a synchronous spawn error (Node throws for most; EMFILE/ENFILE/EAGAIN/EACCES come as 'error' below)
      this.spawnError = errorMessage(err);
    } finally {
      if (log) closeSync(log.childFd); // the worker has its copy as fd 4
    }
    this.child = child;
    this.pid = child?.pid ?? -1;
    for (const stream of ['stdout', 'stderr'] as const) {
      const s = child?.[stream];
      if (!s) continue;
      const r = relay(this, stream);
      s.on('data', (chunk: Buffer) => r.push(chunk)).on('end', () => r.flush());
    }
    const lines = new LogLines(onAccessLog);
    if (log) {
      // Node's Socket takes `onread` with an fd too; its types list it for connect() only.
      const opts: SocketConstructorOpts & { onread: OnReadOpts } = {
        fd: log.masterFd, readable: true, writable: false,
        onread: { buffer: LOG_READ_BUFFER, callback: (n: number, buf: Uint8Array) => { lines.push(Buffer.from(buf.buffer, buf.byteOffset, n)); return true; } },
      };
      const reader = new Socket(opts);
      reader.on('error', () => { /* the worker is gone: its exit is handled */ });
      reader.on('end', () => lines.end());
    } else {
      (child?.stdio[4] as Readable | null | undefined)?.on('data', (chunk: Buffer) => lines.push(chunk)).on('end', () => lines.end());
    }
    let readyNow: (ok: boolean) => void = () => {};
    let failNow: (why: string) => void = () => {};
    this.ready = new Promise((resolve) => { readyNow = resolve; });
    this.failed = new Promise((resolve) => { failNow = resolve; });
    this.exited = new Promise((resolve) => {
      let done = false;
      const died = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (done) return;
        done = true;
        this.exitCode = code;
        this.exitSignal = signal;
        this.phase = 'exited';
        for (const t of this.timers) clearTimeout(t);
        for (const w of this.waiters.values()) w({ t: 'listeners-closed', seq: -1 });
        for (const w of this.flushWaiters.splice(0)) w();
        this.waiters.clear();
        readyNow(false);
        failNow(this.spawnError ? `worker could not be started: ${this.spawnError}` : `worker ${this.pid} exited (code ${code}, signal ${signal})`);
        resolve();
      };
      if (!child) { setImmediate(() => died(null, null)); return; }
      child.once('exit', died);
      // a process that never started emits 'error' and no 'exit' (Node, for EMFILE, ENFILE, EAGAIN,
      // EACCES, ENOENT): without this its record stayed 'starting' with pid -1 forever, and every
      // later reload and stop waited for it
      child.on('error', (err) => {
        if (child.pid !== undefined) return; // a send to a dead child: its exit follows
        this.spawnError = errorMessage(err);
        died(null, null);
      });
    });
    child?.on('message', (m: unknown) => {
      if (!isToMaster(m)) return;
      this.lastHeard = Date.now();
      if (m.t === 'ready') { this.phase = this.phase === 'starting' ? 'ready' : this.phase; this.wasReady = true; this.readyAt ||= Date.now(); readyNow(true); }
      if (m.t === 'fatal') this.fatal = { code: m.code, message: m.message };
      if (m.t === 'stats') {
        this.stats = m.stats;
        const delay = m.stats.loopDelayMs ?? 0;
        if (delay < STALL_LOOP_MS) this.stalledSince = undefined;
        else this.stalledSince ??= Date.now() - delay;
        for (const w of this.statsWaiters.splice(0)) w();
      }
      if (m.t === 'tls-ask') this.send({ t: 'tls', tls: generation.tls });
      if (m.t === 'retire-me' && m.reason === 'error') { this.lastWords = m.detail; failNow(`worker ${this.pid} failed: ${m.detail}`); }
      if ('seq' in m) { const w = this.waiters.get(m.seq); if (w) { this.waiters.delete(m.seq); w(m); } }
      onMessage(this, m);
    });
  }

  get alive(): boolean { return this.phase !== 'exited'; }

  send(m: ToWorker, handle?: unknown): boolean {
    if (!this.alive || !this.child?.connected) return false;
    try {
      // child_process types want a net.Socket/Server; a raw bound handle is what it sends ('net.Native').
      this.child.send(m, handle as never, (err) => this.sent(err));
      this.unsent++;
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Messages carrying a handle wait in Node's queue until the worker acknowledged the previous
   * one, while messages without one go at once: a `retire` must not overtake the connections
   * handed over before it. Resolves when everything sent so far has been written.
   */
  flushed(): Promise<void> {
    if (this.unsent === 0 || !this.alive) return Promise.resolve();
    return new Promise((resolve) => this.flushWaiters.push(resolve));
  }
  private unsent = 0;
  private flushWaiters: Array<() => void> = [];
  private sent(err: Error | null): void {
    void err; // a send that failed belongs to a worker on its way out; its exit is handled
    this.unsent--;
    if (this.unsent === 0) for (const w of this.flushWaiters.splice(0)) w();
  }

  private statsWaiters: Array<() => void> = [];
  /** Ask for a stats report now; resolves when the next one arrives (the caller bounds the wait). */
  askStats(): Promise<void> {
    return new Promise((resolve) => {
      this.statsWaiters.push(resolve);
      if (!this.send({ t: 'status-request', seq: 0 })) resolve();
    });
  }

  private seq = 0;
  /** Send a message that the worker answers with the same seq; resolves undefined after `ms`. */
  ask<T extends ToMaster>(make: (seq: number) => ToWorker, ms: number): Promise<T | undefined> {
    const seq = ++this.seq;
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.waiters.delete(seq); resolve(undefined); }, ms);
      this.waiters.set(seq, (m) => { clearTimeout(timer); resolve((m as { seq?: number }).seq === -1 ? undefined : (m as T)); });
      if (!this.send(make(seq))) { clearTimeout(timer); this.waiters.delete(seq); resolve(undefined); }
    });
  }

  /** Retire, escalating along the table: graceful → force (IPC, the worker ends what is left) → SIGKILL. */
  retire(reason: RetireReason, escalation: ReadonlyArray<{ afterMs: number; action: 'force' | 'kill' }>): void {
    if (this.phase === 'retiring' || this.phase === 'exited') return;
    this.phase = 'retiring';
    this.retireReason = reason;
    this.retireStartedAt = Date.now();
    this.send({ t: 'retire', reason });
    for (const step of escalation) {
      this.timers.push(setTimeout(() => {
        if (!this.alive) return;
        if (step.action === 'force') this.send({ t: 'force' });
        else this.child?.kill('SIGKILL');
      }, step.afterMs));
    }
  }

  kill(): void {
    if (this.alive) this.child?.kill('SIGKILL');
  }
}
