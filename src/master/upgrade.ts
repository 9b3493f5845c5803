/**
 * The master upgrade (`quiesce upgrade`, USR2): the running master starts a new master from the
 * quiesce and the Node found on disk now, with the same arguments, and hands it every listening
 * socket without closing one, so the kernel queues carry over and nothing is refused.
 *
 * The sockets are inherited at the exec (the spawn's stdio, as systemd's socket activation passes
 * them), not sent over a unix socket afterwards: the new master holds them from its first
 * instruction, there is no second protocol (SCM_RIGHTS) to speak, and a new master that never
 * starts holds nothing. The QUIESCE_UPGRADE environment variable names each fd with its --listen
 * entry, its gate sockets and its drain mode; an IPC channel (the spawn's 'ipc' stdio) carries the
 * hand-over messages:
 *
 *   new → old: `up` (sockets adopted, workers starting) · `judge {generation, first, upToMs}` (a
 *              judged soak: send your generation's request counts now; `first`: the soak begins,
 *              steer; `upToMs`: how long the soak may still last) · `progress {text}` (for the
 *              verb's client) · `ready {judge?}` (workers ready, soak passed; the judge's verdict,
 *              or why it did not judge) ·
 *              `failed {reason}` · `took-over` (control socket, pid file and admin are its own)
 *   old → new: `counts {generation, counts}` (the answer to `judge`: null with --metrics off) ·
 *              `release {totals}` (the old master let go of its control socket, pid file and
 *              admin listener) · `abort {reason}` (roll back: retire the workers, exit)
 *
 * Until it takes over, the new master's workers must not gate the shared sockets if their master
 * goes (the old generation still serves them): their boot says `successor`, cleared by `sole`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import type { GateSockets } from '../native/gate.js';
import type { RequestCounts } from '../shared/request-metrics.js';
import type { ListenerDrainMode } from './listeners.js';
import { SYSTEMD_ENV } from './systemd.js';

export const UPGRADE_ENV = 'QUIESCE_UPGRADE';

/** One master as `quiesce status` shows it: who served, on which Node and quiesce, from when. */
export type MasterInfo = { pid: number; startedAt: string; node: string; quiesce: string; until?: string; generations: number[] };

/** A listener as the new master gets it: fds numbered in the new master. */
export type HandedListener = { text: string; fd: number; drainMode: ListenerDrainMode; inherited?: string; gate?: GateSockets };

/** The counters the old master hands over (its exited and live workers' figures at the release). */
export type HandedTotals = {
  requests: number; bytesSent: number; accepted: number; completed: number; refused: number; shed?: number;
  forced: number; cut: number; drains: number; reloads: number; reloadsFailed: number; upgrades: number;
};

/** What the new master reads from QUIESCE_UPGRADE. */
export type Handover = {
  from: number;
  /** The generation the old master serves: the new one continues the count. */
  generation: number;
  listeners: HandedListener[];
  /** The admin listener's fd (accepted from only after the release), or absent when off. */
  adminFd?: number;
  /** The admin listener's address as printed ("127.0.0.1:8081"), "" when off. */
  admin: string;
  /** The masters before this one, oldest first (the old master last). */
  masters: MasterInfo[];
  /**
   * Present when the old master answers `judge` (an older quiesce does not: the new master then
   * cannot judge); `asked`: `quiesce upgrade --judge` (true) or `--no-judge` (false), null for
   * the --reload-judge setting.
   */
  judge?: { asked: boolean | null };
};

export type FromSuccessor =
  | { t: 'up'; pid: number; node: string; quiesce: string }
  | { t: 'judge'; generation: number; first: boolean; upToMs: number }
  | { t: 'progress'; text: string }
  | { t: 'ready'; generation: number; workers: number; judge?: { verdict?: 'pass' | 'abstain' | 'fail'; message: string } }
  | { t: 'failed'; reason: string }
  | { t: 'took-over' };

export type ToSuccessor =
  | { t: 'counts'; generation: number; counts: RequestCounts | null }
  | { t: 'release'; totals: HandedTotals }
  | { t: 'abort'; reason: string };

/** The first fd of the hand-over in the new master: 0-2 stdio, 3 the IPC channel. */
const FD0 = 4;

let pkgVersion: string | undefined;
/** This quiesce's version (package.json). */
export function quiesceVersion(): string {
  if (pkgVersion === undefined) {
    try {
      pkgVersion = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
    } catch {
      pkgVersion = 'unknown';
    }
  }
  return pkgVersion;
}

/** Why `path` cannot be the new master's Node, or '' when it can. */
export function badNode(path: string): string {
  try {
    if (!statSync(path).isFile()) return `${path} is not a file`;
    accessSync(path, constants.X_OK);
    return '';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? `${path} does not exist` : code === 'EACCES' ? `${path} is not executable` : `${path}: ${(err as Error).message}`;
  }
}

export type SpawnSuccessor = {
  node: string;
  listeners: Array<{ text: string; fd: number; drainMode: ListenerDrainMode; inherited?: string; gate?: GateSockets }>;
  adminFd?: number;
  admin: string;
  generation: number;
  masters: MasterInfo[];
  judge: Handover['judge'];
};

/**
 * Start the new master: the same script path (the quiesce on disk now) and arguments, `node`
 * (the Node on disk now, or --node), every socket in its stdio from fd 4 on. The systemd
 * variables that name this process (LISTEN_*, WATCHDOG_PID) are not passed: the new master is
 * told who it is by MAINPID, and its sockets come from the hand-over.
 */
export function spawnSuccessor(o: SpawnSuccessor): ChildProcess {
  const fds: number[] = [];
  const at = (fd: number): number => { fds.push(fd); return FD0 + fds.length - 1; };
  const listeners: HandedListener[] = o.listeners.map((l) => {
    const fd = at(l.fd);
    const gate = l.gate ? { ...l.gate, fd, gateFd: at(l.gate.gateFd), plugFd: at(l.gate.plugFd) } : undefined;
    return { text: l.text, fd, drainMode: l.drainMode, inherited: l.inherited, gate };
  });
  const adminFd = o.adminFd !== undefined ? at(o.adminFd) : undefined;
  const handover: Handover = { from: process.pid, generation: o.generation, listeners, adminFd, admin: o.admin, masters: o.masters, judge: o.judge };
  const env: NodeJS.ProcessEnv = { ...process.env, [UPGRADE_ENV]: JSON.stringify(handover) };
  for (const k of SYSTEMD_ENV) if (k !== 'NOTIFY_SOCKET' && k !== 'WATCHDOG_USEC') delete env[k];
  return spawn(o.node, [...process.execArgv, process.argv[1]!, ...process.argv.slice(2)], {
    cwd: process.cwd(), env, stdio: ['inherit', 'inherit', 'inherit', 'ipc', ...fds],
  });
}

/** In a new master: the hand-over it was started with (and the variable removed, so no worker sees it). */
export function readHandover(env: NodeJS.ProcessEnv = process.env): Handover | undefined {
  const text = env[UPGRADE_ENV];
  if (text === undefined) return undefined;
  delete env[UPGRADE_ENV];
  if (typeof process.send !== 'function') throw new Error(`${UPGRADE_ENV} is set but there is no channel to the old master: only a master starts a new one`);
  return JSON.parse(text) as Handover;
}

/** To the old master, over the spawn's channel (a no-op once it is gone). */
export function toPredecessor(m: FromSuccessor): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve();
    process.send(m, undefined, {}, () => resolve());
  });
}

/** What a wait on the other master can end with, besides one of its messages. */
export type LinkEnd = { t: 'gone'; detail: string } | { t: 'timeout' } | { t: 'interrupted'; reason: string };

/**
 * One end of the masters' channel as a queue of messages: `next(ms)` takes the next one, or says
 * the other side is gone, the wait timed out, or `interrupt()` was called (a stop came).
 */
export class Inbox<M extends { t: string }> {
  private readonly queue: Array<M | LinkEnd> = [];
  private waiter?: (m: M | LinkEnd) => void;
  private last?: LinkEnd;
  private callOff!: (reason: string) => void;
  /**
   * Resolves with the reason once the link is called off (interrupted, or a message `fatal`
   * names), for waits on something else to race with; not when the other side is only gone.
   */
  readonly calledOff = new Promise<string>((resolve) => { this.callOff = resolve; });
  /** The other side went away (its channel closed). */
  get gone(): boolean { return this.last?.t === 'gone'; }

  constructor(private readonly fatal: (m: M) => string | undefined = () => undefined) {}

  push(m: M | LinkEnd): void {
    if (this.last) return;
    if (m.t === 'gone' || m.t === 'interrupted') {
      this.last = m as LinkEnd;
      if (m.t === 'interrupted') this.callOff(endReason(m as LinkEnd));
    } else {
      const why = this.fatal(m as M);
      if (why !== undefined) this.callOff(why);
    }
    const w = this.waiter;
    this.waiter = undefined;
    if (w) w(m);
    else this.queue.push(m);
  }

  interrupt(reason: string): void { this.push({ t: 'interrupted', reason }); }

  next(ms: number): Promise<M | LinkEnd> {
    const first = this.queue.shift();
    if (first !== undefined) return Promise.resolve(first);
    if (this.last) return Promise.resolve(this.last);
    return new Promise((resolve) => {
      const mine = (m: M | LinkEnd): void => { clearTimeout(timer); resolve(m); };
      const timer = setTimeout(() => { if (this.waiter === mine) this.waiter = undefined; resolve({ t: 'timeout' }); }, Math.max(0, ms));
      this.waiter = mine;
    });
  }
}

/** Why a link ended, in words. */
export function endReason(m: LinkEnd): string {
  return m.t === 'gone' ? m.detail : m.t === 'interrupted' ? m.reason : 'timed out';
}

/** The old master's end: the new master's messages and its exit. */
export function successorInbox(child: ChildProcess): { inbox: Inbox<FromSuccessor>; exited: Promise<void> } {
  const inbox = new Inbox<FromSuccessor>((m) => (m.t === 'failed' ? m.reason : undefined));
  child.on('message', (m: FromSuccessor) => inbox.push(m));
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      inbox.push({ t: 'gone', detail: `the new master exited (code ${code}, signal ${signal})` });
      resolve();
    });
    // a spawn that failed (EACCES, ENOEXEC) emits 'error' and never 'exit'
    child.on('error', (err) => {
      inbox.push({ t: 'gone', detail: `the new master could not be started: ${err.message}` });
      if (child.pid === undefined) resolve();
    });
  });
  return { inbox, exited };
}

/** The new master's end: the old master's messages, and its going away. */
export function predecessorInbox(): Inbox<ToSuccessor> {
  const inbox = new Inbox<ToSuccessor>((m) => (m.t === 'abort' ? m.reason : undefined));
  const onMessage = (m: ToSuccessor): void => inbox.push(m);
  process.on('message', onMessage);
  process.once('disconnect', () => { process.off('message', onMessage); inbox.push({ t: 'gone', detail: 'the old master is gone' }); });
  return inbox;
}

/** Why a wait on the other master did not get what it waited for, in words (`late`: the timeout's). */
export function unexpected(m: FromSuccessor | ToSuccessor | LinkEnd, late: string): string {
  switch (m.t) {
    case 'failed': case 'abort': return m.reason;
    case 'timeout': return late;
    case 'gone': case 'interrupted': return endReason(m);
    default: return `unexpected message ${JSON.stringify(m.t)} from the other master`;
  }
}
