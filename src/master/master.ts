/**
 * The master: owns the listening sockets, the pool of workers and the lifecycle state. Signals and
 * control-socket verbs only record a request; `act()` carries requests out one at a time.
 */
import { LineSink, Logger, type Level } from '../shared/log.js';
import { EXIT, QuiesceError, WORKER_EXIT, errorMessage, appFailedMessage } from '../shared/errors.js';
import { SIGNAL_VERBS, REPEAT_SIGNAL_MS, type Verb } from '../shared/signals.js';
import { controlSocketPath, type ControlReply, type ControlRequest } from '../shared/control-protocol.js';
import { SETTINGS, type Config, type Key } from '../shared/config.js';
import type { AppSpecWire, Protocol, RetireReason, ToMaster } from '../shared/ipc.js';
import { STATS_INTERVAL_MS } from '../shared/ipc.js';

/**
 * During a judged soak, one response in this many on the old generation carries Connection: close:
 * its keep-alive clients reconnect within a few dozen requests and the kernel spreads them over
 * both generations (docs/ARCHITECTURE.md, "The judged soak").
 */
const STEER_SHARE = 1 / 16;
/** A judged soak short of responses may last up to this many times --reload-soak (see judgedSoak). */
const JUDGE_SOAK_STRETCH = 4;
/** In a judged upgrade, how long the new master waits for the old one's request counts (it asks its workers first: <= 1 s). */
const JUDGE_ASK_MS = 5_000;
import { loadNative, type Native } from '../native/index.js';
import { SELECT_LISTENER, gateTcp, holdGate, openGate, type TcpDrainMode } from '../native/gate.js';
import { adoptHanded, adoptListener, bindListener, closeHandle, describe, listenMatches, parseListen, releaseHandle, startListening, tcpDrainMode, type Listener } from './listeners.js';
import { badNode, predecessorInbox, unexpected, quiesceVersion, readHandover, spawnSuccessor, successorInbox, toPredecessor, type FromSuccessor, type HandedTotals, type Handover, type Inbox, type LinkEnd, type MasterInfo, type ToSuccessor } from './upgrade.js';
import { Notifier, listenFds } from './systemd.js';
import { SPARE_SLOT, WorkerProc, type Generation } from './workers.js';
import { TlsBoard, newTicketSecret, readAdminTls, readTls, ticketPeriodMs, type GenerationTls } from './tls.js';
import { drainAndClose, type DrainReport } from './drain.js';
import { CookieWatch } from './syncookies.js';
import { AdminServer } from './admin.js';
import { ControlServer } from './control.js';
import { writePidfile, removePidfile, makePidfileDir } from './pidfile.js';
import { backoffMs, canMove, escalation, type MasterState } from './lifecycle.js';
import { resolveAppSpec } from '../worker/app-spec.js';
import { buildSnapshot, installStatus, observeDrain, observeReload, type StatusSnapshot, type ExitedTotals, type DeployEvent } from './status/index.js';
import { OutputRelay } from './app-output.js';
import { describeWaiting } from './stop-progress.js';
import { hasControllingTty } from './tty.js';
import { judge, type Verdict } from './judge.js';
import { addCounts, diffCounts, emptyCounts, total, type RequestCounts } from '../shared/request-metrics.js';
import { readdirSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { captureStack } from './hung-stack.js';

type Result = Extract<ControlReply, { type: 'result' }>;

/** Past a worker's escalation (graceful timeout, kill grace), how long more a lifecycle wait may last. */
const EXIT_SLACK_MS = 3_000;
/** How often the watchdog looks at the workers' heartbeats. */
const WATCH_MS = 500;
const mb = (bytes: number | undefined): number | undefined => (bytes === undefined ? undefined : Math.round(bytes / 1048576));
/** The most workers --workers and quiesce scale allow. */
const MAX_WORKERS = 512;
/**
 * The last live worker's slot starts at most once this often, whatever its backoff: one that
 * served this long or more is respawned at once (its app loads, and each moment without a
 * worker is a moment of clients held at the gate: a SYN dropped there waits 1 s, then 3 s), one
 * that died sooner (or loading its app) after the rest of the second, so that an app that dies
 * as soon as it is up costs a worker's start a second, not a CPU.
 */
const LAST_WORKER_BACKOFF_MS = 1_000;
/** A worker is answering when heard from within this (it reports every 500 ms: three reports missed). */
const HEARD_WITHIN_MS = 1_500;
/** The least --backlog with which a stop under overload was measured to cut nothing (SYN cookies: docs/STATUS.md). */
const SAFE_BACKLOG = 16;
/** Signals that end a worker from outside (quiesce's own kills are of retiring or hung workers, which are not respawned this way). */
const OUTSIDE_KILLS: ReadonlySet<NodeJS.Signals> = new Set(['SIGKILL', 'SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT']);
/** Crashes in a row for which an outside kill of the last live worker is respawned at once. */
const OUTSIDE_KILLS_AT_ONCE = 3;
/** Consecutive crashes of a slot (each living under 10 s) that make a crash loop, logged once. */
const CRASH_LOOP_AFTER = 3;
/** At an upgrade, how long the new master may take to start (Node, the drain mode's checks) on top of --ready-timeout and --reload-soak. */
const SUCCESSOR_START_MS = 15_000;
export type ConfigLoader = () => Promise<Config>;

/** A worker that serves new connections: ready, not found hung. */
const serves = (w: WorkerProc): boolean => w.phase === 'ready' && !w.hung;

/** The nice value a hung worker gets (the lowest priority). */
const NICE_HUNG = 19;
/** Set a process's nice value; false when it could not be (gone, or not allowed). */
function renice(pid: number, nice: number): boolean {
  try { setPriority(pid, nice); return true; } catch { return false; }
}

export type Totals = {
  requests: number;
  forced: number;
  /** Connections the kernel still held when a listener's last fd was closed: must stay 0. */
  cut: number;
  drains: number;
  reloads: number;
  reloadsFailed: number;
  /** Upgrades this server went through (carried from master to master). */
  upgrades: number;
  retired: Partial<Record<RetireReason | 'crash', number>>;
};

export class Master {
  state: MasterState = { s: 'starting', since: Date.now() };
  readonly startedAt = Date.now();
  readonly workers = new Set<WorkerProc>();
  listeners: Listener[] = [];
  generation!: Generation;
  drainMode: TcpDrainMode = 'fallback';
  drainModeReason = '';
  lastDrain?: DrainReport;
  readonly totals: Totals = { requests: 0, forced: 0, cut: 0, drains: 0, reloads: 0, reloadsFailed: 0, upgrades: 0, retired: {} };
  readonly admin: AdminServer;
  private control?: ControlServer;
  private native: Native | undefined;
  /** The TLS load board, made with the first generation that serves TLS (master/tls.ts). */
  private tlsBoard?: TlsBoard;
  /** Session ticket keys derive from it, per period (master/tls.ts): the same in every generation, so resumption survives a reload. */
  private readonly ticketSecret = newTicketSecret();
  private readonly errorSink: LineSink;
  private readonly accessSink: LineSink;
  readonly log: Logger;
  private nextGeneration = 1;
  private readonly crashes = new Map<number, { n: number }>();
  private stopWaiters: Array<(r: Result) => void> = [];
  private stopSignal?: { signal: string; at: number };
  /** A reload waiting on `running` that has not started: later reload requests join it. */
  private queuedReload?: Promise<Result>;
  /** Reloads and restarts on `running`, running or waiting. */
  private onChain = 0;
  private running: Promise<unknown> = Promise.resolve();
  /** Figures of workers that have exited (the live ones report their own): totals survive reloads. */
  private readonly ofExited: ExitedTotals = { requests: 0, bytesSent: 0, accepted: 0, completed: 0, refused: 0, shed: 0 };

  constructor(public cfg: Config, private readonly loadConfig: ConfigLoader, readonly pidfile: string) {
    this.errorSink = new LineSink(cfg.errorLog, process.stderr);
    this.accessSink = new LineSink(cfg.accessLog === 'off' ? '-' : cfg.accessLog, process.stdout,
      (err) => this.log.error('log-write-failed', { file: '-', error: err.message, note: 'stdout is closed: access lines for it are dropped' }));
    this.log = new Logger(this.errorSink, `master[${process.pid}]`);
    this.log.configure(cfg);
    this.admin = new AdminServer(() => this.state.s === 'serving' || this.state.s === 'reloading', () => this.cfg.adminToken);
  }

  private enter(next: MasterState): void {
    if (!canMove(this.state.s, next.s)) throw new Error(`lifecycle: ${this.state.s} → ${next.s} is not a transition`);
    this.log.info('state', { from: this.state.s, to: next.s, ...('phase' in next ? { phase: next.phase } : {}) });
    this.state = next;
    if (next.s === 'serving') this.startSpares();
  }

  // ─── start ────────────────────────────────────────────────────────────────

  async start(): Promise<void> {
    // a missing app fails here, before any socket or file is made
    // a new master started by an upgrade: the old one's sockets, handed over at the exec
    const handover = readHandover();
    const inbox = handover ? predecessorInbox() : undefined;
    this.handover = handover;
    this.predecessor = inbox;
    if (handover) {
      this.masters.push(...handover.masters);
      this.admin.address = handover.admin; // for the workers' boot (the welcome page); listened on at the take-over
      this.nextGeneration = handover.generation + 1;
      this.log.notice('upgrade-started', { from: handover.from, node: process.version, quiesce: quiesceVersion(), listeners: handover.listeners.length });
      await toPredecessor({ t: 'up', pid: process.pid, node: process.version, quiesce: quiesceVersion() });
    }
    // the old master is told why a new one failed before it took over, then the error is thrown
    const tell = async (err: unknown): Promise<never> => {
      if (handover) await toPredecessor({ t: 'failed', reason: errorMessage(err) });
      throw err;
    };
    let appSpec: AppSpecWire;
    try {
      appSpec = resolveAppSpec(this.cfg.app || undefined, process.cwd(), this.cfg);
    } catch (err) {
      return tell(err);
    }
    await this.pickDrainMode();
    const n = loadNative();
    this.systemd = new Notifier(n.ok ? n.native : undefined, this.log);
    if (handover) {
      try {
        this.listeners = handover.listeners.map((h, i) => adoptHanded(i, h));
      } catch (err) {
        return tell(err);
      }
    } else {
      // sockets passed by systemd (socket activation) serve first; --listen adds what they lack
      this.listeners = listenFds().map(({ fd, name }, i) => adoptListener(i, fd, name, n.ok ? n.native : undefined));
      if (this.listeners.length > 0) this.log.notice('socket-activation', { listeners: this.listeners.map((l) => `${l.address}${l.inherited !== 'unnamed' ? `(${l.inherited})` : ''}`).join(',') });
    }
    const passed = this.listeners.filter((l) => l.inherited !== undefined);
    this.nextListenerId = this.listeners.length;
    const toBind = this.toBind(this.cfg, passed).filter((text) => !this.listeners.some((l) => l.spec.text === text));
    let tls: ReturnType<typeof readTls>;
    try {
      // certificates and keys are checked before anything is bound: a bad pair fails the start here
      tls = readTls(this.cfg, [...this.listeners.map((l) => l.spec.text), ...toBind]);
      for (const text of toBind) this.listeners.push(this.bind(this.nextListenerId++, text));
    } catch (err) {
      for (const l of this.listeners) this.dropListener(l);
      return tell(err);
    }
    installStatus(this);
    if (!handover) {
      await this.ownEndpoints();
    }
    for (const { signal, verb } of SIGNAL_VERBS) process.on(signal, () => this.onSignal(signal, verb));

    this.generation = this.newGeneration(this.cfg, appSpec, tls);
    const started = this.spawnGeneration(this.generation, this.cfg.workers);
    const abort = async (err: unknown): Promise<never> => {
      if (handover) {
        // the old master serves the same sockets: the workers that serve already finish what they hold
        this.log.error('upgrade-aborted', { reason: errorMessage(err) });
        for (const w of started) if (w.phase === 'ready') this.retire(w, 'rollback'); else w.kill();
        await this.exitedWithin(started, 'upgrade rollback');
        await toPredecessor({ t: 'failed', reason: errorMessage(err) });
      } else {
        for (const w of started) w.kill();
        await Promise.all(started.map((w) => w.exited));
      }
      this.shutdownSockets();
      throw err;
    };
    try {
      startListening(this.listeners, this.cfg.backlog, this.native);
    } catch (err) {
      return abort(err as QuiesceError);
    }
    const failure = await this.awaitReady(started, this.cfg.readyTimeout, inbox);
    if (this.state.s !== 'starting') return; // stopped while starting: the stop owns the workers
    if (failure) return abort(new QuiesceError('APP_FAILED', failure));
    if (handover && inbox) {
      const why = await this.takeOver(handover, inbox, started);
      if (why) return abort(new QuiesceError('UPGRADE_FAILED', why));
    }
    this.enter({ s: 'serving', since: Date.now() });
    setInterval(() => this.watch(), WATCH_MS).unref();
    for (const l of this.listeners) process.stdout.write(`quiesce: listening on ${describe(l, this.generation.tlsByText.has(l.spec.text))}\n`);
    if (this.admin.address) process.stdout.write(`quiesce: admin on ${this.admin.scheme}://${this.admin.address}\n`);
    if (handover) process.stdout.write(`quiesce: took over from pid ${handover.from} (node ${process.version}, quiesce ${quiesceVersion()})\n`);
    process.stdout.write(`quiesce: control socket ${controlSocketPath(this.pidfile)} (pid file ${this.pidfile})\n`);
    process.stdout.write(`quiesce: ready pid=${process.pid} generation=${this.generation.n} workers=${this.cfg.workers} drain-mode=${this.drainMode}\n`);
    this.log.notice('ready', { generation: this.generation.n, workers: this.cfg.workers, drain_mode: this.drainMode, listeners: this.listeners.map((l) => l.address).join(',') });
    if (handover) this.systemd.mainPid(this.statusLine());
    else this.systemd.ready(this.statusLine());
    this.systemd.startWatchdog(() => this.state.s !== 'stopped');
  }

  private nextListenerId = 0;
  private systemd!: Notifier;

  // ─── upgrade ──────────────────────────────────────────────────────────────

  /** A new master before it took over: what the old one handed it. */
  private handover?: Handover;
  /** The masters that served before this one (upgrades), oldest first. */
  readonly masters: MasterInfo[] = [];
  /** Every generation this master started. */
  private readonly generationsRun: number[] = [];
  /** An old master during an upgrade: its new master's channel. */
  private upgrading?: { pid: number; since: number; inbox: Inbox<FromSuccessor>; settled: Promise<unknown>; released: boolean };
  /** The upgrade in progress (status): the new master's pid and since when. */
  get upgradeInProgress(): { pid: number; since: number } | undefined {
    return this.upgrading && { pid: this.upgrading.pid, since: this.upgrading.since };
  }
  /** A new master before it took over: the old master's channel. */
  private predecessor?: Inbox<ToSuccessor>;
  /** An old master whose new master took over: it only retires its workers, then exits. */
  private handedTo?: number;

  /** The admin listener, the control socket and the pid file: at start, or for a new master once the old one let go of them. */
  private async ownEndpoints(adminFd?: number): Promise<void> {
    this.admin.tls = readAdminTls(this.cfg);
    if (adminFd !== undefined) await this.admin.listenFd(adminFd);
    else if (this.cfg.admin !== 'off') await this.admin.listenAuto(this.cfg.admin);
    this.warnSettings();
    makePidfileDir(this.pidfile);
    this.control = new ControlServer(controlSocketPath(this.pidfile), (req, progress) => this.onControl(req, progress));
    try {
      await this.control.listen();
      writePidfile(this.pidfile);
    } catch (err) {
      this.shutdownSockets(); // no start failure leaves a socket file or pid file behind
      throw err;
    }
  }

  /** A listener at a start that failed: ours is closed; one handed over by the old master is only let go of (it still serves it). */
  private dropListener(l: Listener): void {
    if (l.handed) releaseHandle(l);
    else closeHandle(l);
  }

  /** This master as `quiesce status` lists it. */
  masterInfo(until?: number): MasterInfo {
    return { pid: process.pid, startedAt: new Date(this.startedAt).toISOString(), node: process.version, quiesce: quiesceVersion(), until: until === undefined ? undefined : new Date(until).toISOString(), generations: [...this.generationsRun] };
  }

  /**
   * A new master whose workers are ready: soak them, tell the old master, and once it let go of
   * its control socket, pid file and admin listener, take them. Returns why it could not.
   */
  private async takeOver(h: Handover, inbox: Inbox<ToSuccessor>, started: WorkerProc[]): Promise<string | undefined> {
    const gen = this.generation;
    const judging = await this.upgradeJudge(h, inbox, started);
    if (typeof judging === 'string') return judging;
    const tell = (text: string): Promise<void> => toPredecessor({ t: 'progress', text });
    this.deployEvent(gen.n, 'soak-start', `generation ${gen.n} (new master ${process.pid}) soaking ${this.cfg.reloadSoak / 1000}s beside generation ${h.generation}${judging.evidence ? ', judged' : ''}`);
    const { failure, verdict } = await this.judgedSoak({
      what: 'upgrade', gen: gen.n, against: h.generation, fresh: started, cfg: this.cfg, stopped: () => false, link: inbox,
      evidence: judging.evidence, progress: (text) => void tell(text),
    });
    if (failure) return `generation ${gen.n}: ${failure}`;
    if (verdict?.verdict === 'fail') {
      this.deployEvent(gen.n, 'rolled-back', verdict.message);
      return `generation ${gen.n} is worse: ${verdict.message}`;
    }
    const judged = verdict ? { verdict: verdict.verdict, message: verdict.message } : judging.not ? { message: judging.not } : undefined;
    await toPredecessor({ t: 'ready', generation: gen.n, workers: started.length, judge: judged });
    const m = await inbox.next(this.cfg.readyTimeout + EXIT_SLACK_MS);
    // the old master died (even by SIGKILL) before it let go: its workers retire without gating
    // (they were told `heir`), and this master takes the endpoints it left behind
    const orphaned = m.t === 'gone';
    if (m.t !== 'release' && !orphaned) return unexpected(m, 'the old master did not let go in time');
    if (orphaned) this.log.warn('upgrade-predecessor-gone', { from: h.from, note: 'the old master died before it let go: taking over on our own; its counters are lost' });
    try {
      await this.ownEndpoints(h.adminFd);
    } catch (err) {
      return `taking over: ${errorMessage(err)}`;
    }
    const t: HandedTotals = m.t === 'release' ? m.totals : { requests: 0, bytesSent: 0, accepted: 0, completed: 0, refused: 0, forced: 0, cut: 0, drains: 0, reloads: 0, reloadsFailed: 0, upgrades: 0 };
    Object.assign(this.ofExited, {
      requests: this.ofExited.requests + t.requests, bytesSent: this.ofExited.bytesSent + t.bytesSent, accepted: this.ofExited.accepted + t.accepted,
      completed: this.ofExited.completed + t.completed, refused: this.ofExited.refused + t.refused, shed: this.ofExited.shed + (t.shed ?? 0),
    });
    this.totals.forced += t.forced;
    this.totals.cut += t.cut;
    this.totals.drains += t.drains;
    this.totals.reloads += t.reloads;
    this.totals.reloadsFailed += t.reloadsFailed;
    this.totals.upgrades = t.upgrades + 1;
    // the sockets are ours alone now: a worker losing this master gates them again
    this.handover = undefined;
    this.generation.boot = { ...this.generation.boot, successor: undefined };
    for (const w of this.workers) w.send({ t: 'sole' });
    for (const l of this.listeners) delete l.handed;
    this.log.notice('upgrade-took-over', { from: h.from, generation: this.generation.n, node: process.version, quiesce: quiesceVersion(), predecessor: orphaned ? 'gone' : undefined });
    this.deployEvent(this.generation.n, 'committed', `generation ${this.generation.n} serving (master ${process.pid} took over from ${h.from}${orphaned ? ', which was gone' : ''}); generation ${h.generation} retiring`);
    await toPredecessor({ t: 'took-over' });
    return undefined;
  }

  /**
   * A new master: whether its soak is judged (`quiesce upgrade --judge`/`--no-judge`, else
   * --reload-judge), and if so the evidence: its own generation's counts against the old
   * master's, asked over the channel (`judge` → `counts`; the first ask starts the old master's
   * steering and marks the soak's start). `not`: why an asked-for judge does not judge. A string:
   * the old master did not answer (the upgrade fails).
   */
  private async upgradeJudge(h: Handover, inbox: Inbox<ToSuccessor>, started: WorkerProc[]): Promise<{ evidence?: () => Promise<Evidence | string>; not?: string } | string> {
    const wanted = h.judge?.asked ?? this.cfg.reloadJudge === 'on';
    if (!wanted) return {};
    if (!h.judge) return { not: 'not judged: the old master\'s quiesce cannot report its request counts' };
    if (this.cfg.metrics !== 'on') return { not: 'not judged: the judge needs --metrics on in both masters' };
    const gen = this.generation;
    const until = Date.now() + JUDGE_SOAK_STRETCH * this.cfg.reloadSoak;
    const ask = async (first: boolean): Promise<RequestCounts | null | string> => {
      await toPredecessor({ t: 'judge', generation: gen.n, first, upToMs: Math.max(0, until - Date.now()) + JUDGE_ASK_MS });
      const m = await inbox.next(JUDGE_ASK_MS);
      return m.t === 'counts' ? m.counts : unexpected(m, 'the old master did not send its request counts in time');
    };
    // an old master gone (killed mid-upgrade) has no counts to give: the judge abstains, the
    // upgrade goes on (takeOver takes over on its own)
    const goneNote = { not: 'not judged: the old master is gone' };
    const atStart = await ask(true);
    if (inbox.gone) return goneNote;
    if (typeof atStart === 'string') return atStart;
    if (atStart === null) return { not: 'not judged: the judge needs --metrics on in both masters' };
    return {
      evidence: async () => {
        await this.freshStats(started);
        const now = await ask(false);
        // gone meanwhile: no old figures, so the judge finds too few and abstains
        if (inbox.gone) return { old: diffCounts(atStart, atStart), fresh: this.httpCounts(gen) };
        return typeof now === 'string' ? now : { old: diffCounts(now ?? atStart, atStart), fresh: this.httpCounts(gen) };
      },
    };
  }

  /** The counters handed to a new master (the live workers' figures as last reported). */
  private handedTotals(): HandedTotals {
    const live = [...this.workers];
    const sum = (f: (w: WorkerProc) => number): number => live.reduce((a, w) => a + f(w), 0);
    return {
      requests: this.ofExited.requests + sum((w) => w.stats.requests), bytesSent: this.ofExited.bytesSent + sum((w) => w.stats.bytesSent),
      accepted: this.ofExited.accepted + sum((w) => w.stats.accepted ?? 0), completed: this.ofExited.completed + sum((w) => w.stats.completed ?? 0),
      refused: this.ofExited.refused + sum((w) => w.stats.refused ?? 0), shed: this.ofExited.shed + sum((w) => w.stats.shed ?? 0),
      forced: this.totals.forced, cut: this.totals.cut, drains: this.totals.drains, reloads: this.totals.reloads, reloadsFailed: this.totals.reloadsFailed, upgrades: this.totals.upgrades,
    };
  }

  /**
   * `quiesce upgrade` / USR2, in the old master: start a new master (the quiesce and Node on disk
   * now, or `node`), hand it every socket, wait until its workers are ready and soaked, let go of
   * the control socket, pid file and admin listener, then retire this master's workers and exit.
   * Any failure before the new master took over rolls back: it retires its workers and exits,
   * this master never stopped serving.
   */
  private async upgrade(progress: (m: string) => void, node = process.execPath, judge?: boolean): Promise<Result> {
    const fail = (message: string): Result => ({ type: 'result', ok: false, message });
    if (this.state.s !== 'serving') return fail(`cannot upgrade while ${this.state.s}`);
    const bad = badNode(node);
    if (bad) return fail(`upgrade: --node ${bad}`);
    const t0 = Date.now();
    const listeners = this.listeners.filter((l) => l.state !== 'closed');
    let child;
    try {
      child = spawnSuccessor({
        node, generation: this.generation.n,
        listeners: listeners.map((l) => ({ text: l.spec.text, fd: l.fd, drainMode: l.drainMode, inherited: l.inherited, gate: l.gate })),
        adminFd: this.admin.fd(), admin: this.admin.address,
        masters: [...this.masters, this.masterInfo(Date.now())],
        judge: { asked: judge ?? null },
      });
    } catch (err) {
      return fail(`upgrade: the new master could not be started: ${errorMessage(err)}`);
    }
    const { inbox, exited } = successorInbox(child);
    let settle!: () => void;
    const upgrading = { pid: child.pid ?? 0, since: t0, inbox, settled: new Promise<void>((r) => { settle = r; }), released: false };
    this.upgrading = upgrading;
    // the new master holds every socket from now: should this master die meanwhile, its workers
    // retire without gating them (the new one takes over on its own), instead of stalling it
    const heir = (on: boolean): void => { for (const w of this.workers) if (w.alive) w.send({ t: 'heir', on }); };
    heir(true);
    this.log.notice('upgrade', { pid: child.pid, node, listeners: listeners.length });
    this.systemd.reloading(`upgrading: new master ${child.pid} starting (generation ${this.generation.n} serving)`);
    progress(`new master pid ${child.pid} starting (${node})`);
    // a judged soak: the new master asks this one's counts; this generation's keep-alive clients are steered meanwhile
    const serving = (): WorkerProc[] => [...this.workers].filter((w) => w.generation === this.generation);
    let judgedGen: number | undefined;
    const rollback = async (why: string): Promise<Result> => {
      if (judgedGen !== undefined) {
        this.steer(serving(), 0);
        this.deployEvent(judgedGen, 'rolled-back', why);
      }
      if (child.exitCode === null && child.signalCode === null) {
        // it retires its workers (they finish what they hold) and exits; killed if it takes too long
        if (child.connected) child.send({ t: 'abort', reason: why } satisfies ToSuccessor);
        const bound = this.cfg.gracefulTimeout + this.cfg.killGrace + EXIT_SLACK_MS;
        const timer = setTimeout(() => child.kill('SIGKILL'), bound);
        await exited;
        clearTimeout(timer);
      }
      if (this.control && !this.control.listening) {
        // it failed after this master let go of the control socket: take it back
        try { await this.control.listen(); writePidfile(this.pidfile); } catch (err) { this.log.error('upgrade-rollback-control', { error: errorMessage(err) }); }
      }
      this.upgrading = undefined;
      heir(false);
      settle();
      if (this.state.s === 'serving') this.systemd.ready(this.statusLine());
      this.log.error('upgrade-failed', { pid: child.pid, reason: why });
      return fail(`upgrade failed: ${why}; rolled back, master ${process.pid} keeps serving generation ${this.generation.n}`);
    };
    let deadline = t0 + this.cfg.readyTimeout + this.cfg.reloadSoak + SUCCESSOR_START_MS;
    let m: FromSuccessor | LinkEnd = { t: 'timeout' };
    let up: Extract<FromSuccessor, { t: 'up' }> | undefined;
    for (let i = 0; i < 10_000; i++) {
      m = await inbox.next(deadline - Date.now());
      if (m.t === 'progress') progress(m.text);
      else if (m.t === 'judge') {
        if (m.first) {
          judgedGen = m.generation;
          this.steer(serving(), STEER_SHARE);
          this.deployEvent(m.generation, 'soak-start', `generation ${m.generation} (new master ${child.pid}) soaking beside generation ${this.generation.n}, judged`);
          progress(`generation ${m.generation} ready; soaking ${this.cfg.reloadSoak / 1000}s, judged on its own traffic against generation ${this.generation.n}`);
        }
        // the judge's soak may outlast the usual bound: up to 4x --reload-soak while short of responses
        deadline = Math.max(deadline, Date.now() + m.upToMs + EXIT_SLACK_MS);
        await this.freshStats(serving());
        if (child.connected) child.send({ t: 'counts', generation: this.generation.n, counts: this.cfg.metrics === 'on' ? this.httpCounts(this.generation) : null } satisfies ToSuccessor);
      } else if (m.t === 'up') {
        up = m;
        progress(`new master pid ${m.pid} up (node ${m.node}, quiesce ${m.quiesce}): starting ${this.cfg.workers} workers`);
      } else break;
    }
    if (judgedGen !== undefined) this.steer(serving(), 0);
    if (m.t !== 'ready') return rollback(unexpected(m, `the new master was not ready within ${Math.round((deadline - t0) / 1000)} s (--ready-timeout + --reload-soak + ${SUCCESSOR_START_MS / 1000} s${judgedGen !== undefined ? ', the judge\'s soak' : ''})`));
    const verdict = m.judge;
    if (verdict?.verdict && judgedGen !== undefined) this.deployEvent(judgedGen, verdictPhase(verdict.verdict), verdict.message);
    // (the verdict itself reached the client as the new master's progress)
    if (verdict && !verdict.verdict) progress(verdict.message);
    else if (!verdict && judge === true) progress('not judged: the new master\'s quiesce does not judge upgrades');
    progress(`new master pid ${child.pid}: generation ${m.generation} ready (${m.workers} workers), soak passed; handing over`);
    // the control socket's path is the new master's from now: new clients reach it
    upgrading.released = true;
    this.control?.release();
    child.send({ t: 'release', totals: this.handedTotals() } satisfies ToSuccessor);
    const done = await inbox.next(EXIT_SLACK_MS * 3);
    if (done.t !== 'took-over') return rollback(unexpected(done, 'the new master did not take over in time'));
    // committed: this master retires
    this.upgrading = undefined;
    settle();
    this.handedTo = child.pid;
    child.disconnect();
    this.systemd.stopWatchdog();
    const ms = Date.now() - t0;
    this.log.notice('upgraded', { to: child.pid, node: up?.node, quiesce: up?.quiesce, generation: m.generation, ms });
    this.enter({ s: 'stopping', since: Date.now(), fast: false });
    const ws = [...this.workers];
    for (const w of ws) this.retire(w, 'upgrade');
    void this.dropSpares();
    for (const l of this.listeners) releaseHandle(l);
    await this.admin.close();
    this.stopDeadline(this.cfg.gracefulTimeout + this.cfg.killGrace);
    if (this.workers.size === 0) void this.finish();
    return {
      type: 'result', ok: true,
      message: `upgraded in ${(ms / 1000).toFixed(1)} s: master ${child.pid} (node ${up?.node ?? '?'}, quiesce ${up?.quiesce ?? '?'}) serves generation ${m.generation}; master ${process.pid} retires its ${ws.length} workers${verdict ? `; ${verdict.message}` : ''}`,
      data: { pid: child.pid, generation: m.generation, node: up?.node, quiesce: up?.quiesce, ms, judge: verdict },
    };
  }

  /**
   * The --listen addresses to bind, given the sockets systemd passed: an address one of them
   * already serves is not bound again, and the default address is not added to them (with
   * socket activation, the unit's sockets are the listeners unless --listen asks for more).
   */
  private toBind(cfg: Config, passed: readonly Listener[]): string[] {
    if (passed.length === 0) return [...cfg.listen];
    const isDefault = cfg.listen.length === SETTINGS.listen.default.length && cfg.listen.every((t, i) => t === SETTINGS.listen.default[i]);
    if (isDefault) return [];
    return cfg.listen.filter((text) => !passed.some((l) => listenMatches(parseListen(text), l)));
  }

  /**
   * Settings that work but hurt, said at start and at each reload: an admin listener off loopback
   * without --admin-token (it answers 401 on every page but /live, /ready and /); a --backlog
   * below 16, where the kernel drops a burst of SYN retransmissions larger than the queue even
   * with the listener open, so a stop under overload can cut (docs/STATUS.md, the SYN-cookie hold).
   */
  private warnSettings(): void {
    if (this.admin.address && !this.admin.isLoopback && !this.cfg.adminToken) {
      this.log.warn('admin-token-missing', { address: this.admin.address, note: 'the admin listener is off loopback: its pages (but /live, /ready and /) answer 401 until --admin-token is set' });
    }
    if (this.cfg.backlog < SAFE_BACKLOG) {
      this.log.warn('backlog-small', { backlog: this.cfg.backlog, note: `under overload the kernel drops SYN retransmissions past a queue this short, and a stop can then cut connections; ${SAFE_BACKLOG} or more keeps the no-cut promise` });
    }
  }

  private bind(id: number, text: string): Listener {
    return bindListener(id, parseListen(text), this.drainMode, this.native);
  }

  /**
   * Pick how TCP listeners are gated at a stop, each mechanism tested for real on a throwaway
   * listener first: the reuseport group's gate (no privilege needed), else the SYN-drop socket
   * filter (CAP_NET_ADMIN since Linux 5d39580f68e6), else the fallback (listen(fd, 0) and a drain
   * that narrows the race without closing it; with no native module at all, a plain close).
   * QUIESCE_DRAIN_MODE=reuseport|filter|fallback asks for one (tests, benchmarks).
   */
  private async pickDrainMode(): Promise<void> {
    const n = loadNative();
    const asked = process.env.QUIESCE_DRAIN_MODE;
    const why: string[] = [];
    let mode: TcpDrainMode = 'fallback';
    if (!n.ok) {
      why.push(n.reason);
    } else {
      const known = asked === 'reuseport' || asked === 'filter' || asked === 'fallback';
      const order: TcpDrainMode[] = known ? [asked] : ['reuseport', 'filter', 'fallback'];
      for (const m of order) {
        const problem = await selfTest(n.native, m);
        // (the fallback still drains with the native calls; without them there is only the plain close)
        if (problem === undefined) { mode = m; this.native = n.native; break; }
        why.push(`${m}: ${problem}`);
      }
      if (asked && !known) why.unshift(`QUIESCE_DRAIN_MODE=${asked} is not a mode (reuseport, filter, fallback)`);
      if (asked === mode) why.unshift(`QUIESCE_DRAIN_MODE=${asked}`);
    }
    this.drainMode = mode;
    this.drainModeReason = mode === 'reuseport' && why.length === 0 ? 'reuseport group gate, needs no privilege' : why.join('; ');
    const fields = { mode, reason: this.drainModeReason };
    if (mode === 'fallback') this.log.alert('drain-mode', { ...fields, note: 'no gate: a stop under load may reset connections; counted as cut in the log' });
    else this.log.notice('drain-mode', fields);
  }

  /** The admin listener's certificate after a reload; HTTPS turned on or off there is logged as needing a restart. */
  private renewAdminTls(adminTls: ReturnType<typeof readAdminTls>): void {
    if (!this.admin.address || this.admin.renew(adminTls)) return;
    this.log.warn('reload-needs-restart', { settings: '--admin-tls-cert, --admin-tls-key', note: `the admin listener stays ${this.admin.scheme}` });
  }

  private newGeneration(cfg: Config, appSpec: AppSpecWire, tls: GenerationTls | undefined): Generation {
    const n = this.nextGeneration++;
    this.generationsRun.push(n);
    for (const c of tls?.certs ?? []) this.log.notice('tls-certificate', { generation: n, listeners: c.listeners, subject: c.subject, not_after: c.notAfter, sha256: c.fingerprint });
    // the admin token stays with the master: a worker runs the app (and maybe as another user)
    return {
      n, startedAt: Date.now(), exitedHttp: emptyCounts(), boot: { appSpec, config: { ...cfg, adminToken: '', adminTokenFile: '' }, drainMode: this.drainMode, admin: `${this.admin.tls ? 'https://' : ''}${this.admin.address}`, successor: this.handover ? true : undefined },
      // (an app that brings its own TLS server still gets the generation's ticket keys)
      tls: { ...(tls?.wire ?? { contexts: [], http2: cfg.http2 === 'on' }), ticketSecret: this.ticketSecret, ticketPeriodMs: ticketPeriodMs() },
      tlsByText: tls?.byText ?? new Map(),
      board: tls ? this.boardHalf(n, cfg.workers) : undefined,
    };
  }

  /** A generation's half of the TLS load board; none without the native module (TLS workers then accept as libuv does). */
  private boardHalf(n: number, workers: number): Generation['board'] {
    if (!this.native) return undefined;
    try {
      this.tlsBoard ??= TlsBoard.open(this.native);
      return this.tlsBoard.half(n, workers);
    } catch (err) {
      this.log.warn('tls-board-failed', { error: errorMessage(err), note: 'TLS connections are not balanced over the workers' });
      return undefined;
    }
  }

  private spawnGeneration(gen: Generation, count: number): WorkerProc[] {
    const out: WorkerProc[] = [];
    for (let slot = 0; slot < count; slot++) out.push(this.spawn(slot, gen));
    return out;
  }

  private spawn(slot: number, gen: Generation): WorkerProc {
    const w = this.fork(slot, gen, false);
    this.workers.add(w);
    this.log.info('worker-started', { pid: w.pid, slot, generation: gen.n });
    return w;
  }

  /** A worker process (a spare is not among this.workers until promoted: its exit goes to onSpareExit until then). */
  private fork(slot: number, gen: Generation, spare: boolean): WorkerProc {
    const open = this.listeners.filter((l) => l.state !== 'closed');
    const w = new WorkerProc(slot, gen, open,
      (wp, stream) => this.workerOutput(wp, stream),
      (chunk) => this.accessSink.write(chunk),
      (wp, m) => this.onWorkerMessage(wp, m), spare);
    void w.exited.then(() => (this.workers.has(w) ? this.onWorkerExit(w) : this.onSpareExit(w)));
    // (a worker started during an upgrade learns it too: see upgrade())
    if (this.upgrading) w.send({ t: 'heir', on: true });
    return w;
  }

  // ─── the warm spares (--spare-worker N) ───────────────────────────────────

  /**
   * The warm spares: N workers of the serving generation, loaded and ready, that accept nothing.
   * When a worker dies, hangs or asks to be replaced, a spare takes its slot at once (`serve`: it
   * starts accepting) instead of the slot waiting for a new process to load the app (~0.2-1 s,
   * with no worker at all when it was the last one); a new spare is then started at once (one that
   * dies before it is promoted is started again after a backoff: onSpareExit). Two spares cover a
   * second death while the first one's successor still loads (bench:chaos: every stretch with no
   * live worker left by one spare was that). They hold the listeners' fds as every worker does, so
   * they are gone before a drain closes them (dropSpares), and a reload's new generation gets its own.
   */
  private spares: WorkerProc[] = [];
  /** The warm spares, for the status. */
  get spareWorkers(): readonly WorkerProc[] { return this.spares; }
  private spareCrashes = 0;
  private spareTimer?: NodeJS.Timeout;

  /**
   * Bring the spares to the serving generation's count (now, or after `delayMs`): an older
   * generation's (a reload's commit) go, replaced by the reload's pending spares when there are
   * some, else by new ones; extra ones (a reload lowered the count) go.
   */
  private startSpares(delayMs = 0): void {
    clearTimeout(this.spareTimer);
    this.spareTimer = undefined;
    if (delayMs > 0) { this.spareTimer = setTimeout(() => this.startSpares(), delayMs).unref(); return; }
    if (this.state.s !== 'serving') return; // (a reload's pending spares wait for its commit)
    const gen = this.generation;
    const mine = (w: WorkerProc) => w.alive && w.generation === gen;
    const going = [...this.spares.filter((w) => !mine(w)), ...this.pendingSpares.filter((w) => !mine(w))];
    this.spares = [...this.spares.filter(mine), ...this.pendingSpares.filter(mine)];
    this.pendingSpares = [];
    going.push(...this.spares.splice(gen.boot.config.spareWorker));
    for (const w of going) w.kill();
    while (this.spares.length < gen.boot.config.spareWorker) this.spares.push(this.forkSpare(gen));
  }

  /** A new spare of `gen`; one that does not load within --ready-timeout is killed (and started again after the backoff: onSpareExit). */
  private forkSpare(gen: Generation): WorkerProc {
    const w = this.fork(SPARE_SLOT, gen, true);
    this.log.info('spare-started', { pid: w.pid, generation: gen.n });
    void this.awaitReady([w], gen.boot.config.readyTimeout).then((failure) => {
      if (failure && w.alive && (this.spares.includes(w) || this.pendingSpares.includes(w))) { w.fatal ??= { code: 'READY_TIMEOUT', message: failure }; w.kill(); }
    });
    return w;
  }

  /**
   * A reload's new generation is ready: its spares start now, beside the soak, so that they are
   * loaded when the generation commits (started at the commit, one was still loading when two new
   * workers died within 130 ms of it in bench:chaos). Killed at a rollback or a stop.
   */
  private pendingSpares: WorkerProc[] = [];
  private startPendingSpares(gen: Generation): void {
    this.killPendingSpares();
    for (let i = 0; i < gen.boot.config.spareWorker; i++) this.pendingSpares.push(this.forkSpare(gen));
  }
  private killPendingSpares(): void {
    for (const w of this.pendingSpares) w.kill();
    this.pendingSpares = [];
  }

  /** The spares go (a stop, an upgrade's): killed, they hold no connection. Resolves once they exited (1 s at most). */
  private async dropSpares(): Promise<void> {
    clearTimeout(this.spareTimer);
    this.spareTimer = undefined;
    const gone = [...this.spares, ...this.pendingSpares].filter((x) => x.alive);
    this.spares = [];
    this.pendingSpares = [];
    for (const x of gone) x.kill();
    if (gone.length > 0) await Promise.race([Promise.all(gone.map((x) => x.exited)), sleep(1_000)]);
  }

  /** A spare, ready and of the serving generation, takes `slot` and starts accepting; undefined when there is none such. */
  private promoteSpare(slot: number, stopping = false): WorkerProc | undefined {
    if (this.state.s !== 'serving' && this.state.s !== 'reloading' && !stopping) return undefined;
    const w = this.spares.find((x) => x.alive && x.phase === 'ready' && !x.hung && x.generation === this.generation);
    if (!w) return undefined;
    this.takeSpare(w);
    w.slot = slot;
    this.workers.add(w);
    w.send({ t: 'serve' });
    this.log.notice('spare-promoted', { pid: w.pid, slot, generation: w.generation.n, spares_left: this.spares.length });
    this.syncHold();
    return w;
  }

  /** `w` leaves the spares; false when it was not one. */
  private takeSpare(w: WorkerProc): boolean {
    const had = this.spares.includes(w);
    if (had) this.spares = this.spares.filter((x) => x !== w);
    return had;
  }

  private onSpareExit(w: WorkerProc): void {
    if (!this.takeSpare(w)) return; // dropped: killed on purpose
    this.spareCrashes = Date.now() - w.startedAt > 10_000 ? 1 : this.spareCrashes + 1;
    const delay = backoffMs(this.cfg.respawnBackoff, this.spareCrashes);
    this.log.warn('spare-exited', { pid: w.pid, code: w.exitCode, signal: w.exitSignal, error: w.fatal?.message ?? w.spawnError, respawn_ms: delay });
    this.startSpares(delay);
  }

  /** Wait until all are ready; returns a failure description, or undefined when all are ready. */
  private async awaitReady(ws: WorkerProc[], timeoutMs: number, link?: Inbox<ToSuccessor>): Promise<string | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<string>((r) => { timer = setTimeout(() => r(`not ready within --ready-timeout ${timeoutMs / 1000}s`), timeoutMs); });
    const firstFailure = new Promise<string>((resolve) => {
      let ready = 0;
      for (const w of ws) {
        void w.ready.then((ok) => {
          if (!ok) resolve(w.fatal ? appFailedMessage(w.fatal.message) : w.spawnError ? `a worker could not be started: ${w.spawnError}` : `worker ${w.pid} exited before it was ready (code ${w.exitCode}, signal ${w.exitSignal})`);
          else if (++ready === ws.length) resolve('');
        });
      }
    });
    // a new master in an upgrade: the old one may call it off meanwhile (its death does not: the
    // new master then takes over on its own, see takeOver)
    const r = await Promise.race([firstFailure, timeout, ...(link ? [link.calledOff] : [])]);
    clearTimeout(timer);
    return r || undefined;
  }

  // ─── workers ──────────────────────────────────────────────────────────────

  /** The app's output to the master's own stdout/stderr as written; the worker's log records to the error log. */
  private workerOutput(w: WorkerProc, stream: 'stdout' | 'stderr'): OutputRelay {
    const std = process[stream];
    return new OutputRelay(`worker[${w.pid} g${w.generation.n}]`, {
      write: (data) => {
        // the inspector a hung worker was asked to open (hung-stack.ts) says where, on its stderr
        if (w.hung && stream === 'stderr' && /^(Debugger listening on|For help, see: )/m.test(data.toString())) {
          w.inspectorUrl ??= /Debugger listening on (ws:\/\/\S+)/.exec(data.toString())?.[1];
          return;
        }
        if (!std.destroyed) std.write(data);
      },
      record: (r) => {
        if (r.event === 'app-exit') {
          w.lastWords = `process.exit(${String(r.fields.code)})${r.fields.path ? ` during ${String(r.fields.method)} ${String(r.fields.path)}` : ''}`;
          w.heldAtExit = { connections: Number(r.fields.connections) || 0, inflight: Number(r.fields.inflight) || 0 };
        }
        this.log.record(r);
      },
      tag: () => (this.cfg.appOutput === 'tagged' ? `[${w.pid} g${w.generation.n}] ` : ''),
    }, stream === 'stderr');
  }

  private onWorkerMessage(w: WorkerProc, m: ToMaster): void {
    if (m.t === 'ready') this.syncHold();
    if (m.t === 'retire-me') {
      if (this.workers.has(w)) void this.replace(w, m.reason, m.detail);
      else if (this.takeSpare(w)) { w.kill(); this.startSpares(); } // a spare past --max-memory, or that failed: a fresh one
    }
    else if (m.t === 'forced' && m.n > 0) this.totals.forced += m.n;
  }

  private onWorkerExit(w: WorkerProc): void {
    this.workers.delete(w);
    const board = w.generation.board;
    if (board && this.tlsBoard && w.slot < board.slots && ![...this.workers].some((o) => o.generation === w.generation && o.slot === w.slot)) this.tlsBoard.clear(board.base + w.slot);
    const st = w.stats;
    this.ofExited.requests += st.requests;
    this.ofExited.bytesSent += st.bytesSent;
    this.ofExited.accepted += st.accepted ?? 0;
    this.ofExited.completed += st.completed ?? 0;
    this.ofExited.refused += st.refused ?? 0;
    this.ofExited.shed += st.shed ?? 0;
    addCounts(w.generation.exitedHttp, st.http);
    addCounts(this.exitedHttp, st.http);
    if (st.protocols) {
      const by = (this.ofExited.byProtocol ??= {});
      for (const [p, x] of Object.entries(st.protocols) as Array<[Protocol, { requests: number }]>) by[p] = (by[p] ?? 0) + x.requests;
    }
    const clean = w.exitCode === WORKER_EXIT.OK && w.retireReason !== undefined;
    const level: Level = clean ? 'info' : 'warn';
    if (w.spawnError) this.log.error('worker-spawn-failed', { slot: w.slot, generation: w.generation.n, error: w.spawnError, open_fds: openFds() });
    // not a clean exit: the connections it held were reset (each with a request in progress or
    // waiting to be read, or a keep-alive client's, whose next request meets the reset): counted
    // as cut, from what the app's exit said at that instant, else from its last report (<= 500 ms
    // old: an estimate, see docs/STATUS.md for how it compares with what clients saw); and its
    // heap then (a V8 abort at the heap limit exits 134 after a GC thrash the watchdog may have seen)
    const at = w.heldAtExit;
    const cut = at ? Math.max(at.connections, at.inflight) : Math.max(st.connections, st.inflight);
    const held = clean ? {} : {
      cut: w.hung ? undefined : cut, counted_from: w.hung ? undefined : at ? 'app-exit' : 'last_report',
      inflight_last_report: st.inflight, connections_last_report: st.connections, heap_used_mb: mb(st.heapUsedBytes), heap_limit_mb: mb(st.heapLimitBytes),
    };
    // (a hung worker's were counted at its kill)
    if (!clean && !w.hung) this.totals.cut += cut;
    this.log.log(level, 'worker-exited', { pid: w.pid, slot: w.slot, generation: w.generation.n, code: w.exitCode, signal: w.exitSignal, reason: w.retireReason ?? 'crash', requests: st.requests, forced: st.forced, ...held });
    const reason = w.retireReason ?? 'crash';
    this.totals.retired[reason] = (this.totals.retired[reason] ?? 0) + 1;
    if (!clean && w.handedOver > 0 && !w.wasReady) {
      // connections a drain handed it while it loaded the app, never served: reset by its exit
      this.totals.cut += w.handedOver;
      this.log.alert('drain-lost', { pid: w.pid, connections: w.handedOver, note: 'handed over during a drain to a worker that died before it was ready' });
    }
    if (this.state.s === 'stopping' || this.state.s === 'draining') {
      if (this.workers.size === 0 && this.state.s === 'stopping') void this.finish();
      return;
    }
    this.syncHold();
    // exited without being told to retire: a crash (or an app that no longer loads): respawn with backoff
    const serving = this.state.s === 'serving' || this.state.s === 'reloading';
    if (serving && w.retireReason === undefined && w.generation === this.generation) {
      // the spare takes the slot, and the next spare starts now: it serves nothing until needed, so
      // the crash backoff (which the slot's own respawn keeps, for a spare not there) cannot help
      if (this.promoteSpare(w.slot)) this.startSpares();
      this.respawnLater(w);
    }
  }

  // ─── scale ────────────────────────────────────────────────────────────────

  /**
   * `quiesce scale N|+N|-N`, TTIN (+1), TTOU (-1): the serving generation runs N workers from now
   * on, without a reload. Up: the missing slots start (a slot waiting out its backoff starts now).
   * Down: the workers of the highest slots retire gracefully (nothing cut). The count holds until
   * a reload, which applies the configured --workers again.
   */
  private async scale(spec: string, progress: (m: string) => void): Promise<Result> {
    const fail = (message: string): Result => ({ type: 'result', ok: false, message });
    if (this.state.s !== 'serving') return fail(`cannot scale while ${this.state.s}`);
    const m = /^([+-]?)(\d+)$/.exec(spec.trim());
    if (!m) return fail(`scale: ${JSON.stringify(spec)} is not a worker count (N, +N or -N)`);
    const from = this.generation.boot.config.workers;
    const k = Number(m[2]);
    const n = m[1] === '+' ? from + k : m[1] === '-' ? from - k : k;
    if (n < 1 || n > MAX_WORKERS) return fail(`scale: ${n} workers: the count must be between 1 and ${MAX_WORKERS} (now ${from})`);
    const cfg: Config = Object.freeze({ ...this.generation.boot.config, workers: n });
    this.cfg = cfg;
    this.generation.boot = { ...this.generation.boot, config: cfg };
    this.log.notice('scaled', { from, to: n, generation: this.generation.n });
    const current = [...this.workers].filter((w) => w.generation === this.generation && w.alive && w.phase !== 'retiring');
    const going = current.filter((w) => w.slot >= n);
    const kept = current.filter((w) => w.slot < n);
    const fresh: WorkerProc[] = [];
    for (let slot = 0; slot < n; slot++) if (!kept.some((w) => w.slot === slot)) fresh.push(this.spawn(slot, this.generation));
    // the ones going serve on until one it keeps is ready (a slot in its backoff was just started)
    if (going.some(serves)) await this.keepOneServing(going, progress);
    for (const w of going) this.retire(w, 'scale-down');
    if (fresh.length > 0) {
      progress(`starting ${fresh.length} worker(s)`);
      const failure = await this.awaitReady(fresh, cfg.readyTimeout);
      if (failure) return fail(`scaled to ${n} workers, but ${failure} (its slot is respawned with backoff)`);
    }
    return { type: 'result', ok: true, message: `scaled: ${from} → ${n} workers (generation ${this.generation.n})`, data: { from, to: n } };
  }

  /**
   * Before quiesce retires ready workers by its own act (a scale down: `going`; a rollback: the
   * new generation's), the serving generation must have one of its own serving and heard from
   * lately: when none is (its slots crashed meanwhile and wait out their backoff, still load, or
   * the one kept is silent: hung, not yet found by the watchdog), the empty slots start now, a
   * silent one is left to the watchdog (which puts a spare or a new worker in its slot), and this
   * resolves once one of its workers serves and answers (bounded by --worker-timeout +
   * --ready-timeout). Never none serving by quiesce's doing: the chaos bench found a rollback
   * that retired the last live workers while the old generation's slots waited out a 6 s
   * backoff, and a scale down that retired the two live workers and kept a hung one.
   */
  private async keepOneServing(going: readonly WorkerProc[], progress?: (m: string) => void): Promise<void> {
    const gen = this.generation;
    const mine = () => [...this.workers].filter((w) => w.generation === gen && w.alive && w.phase !== 'retiring' && !going.includes(w));
    const answering = (w: WorkerProc) => serves(w) && Date.now() - w.lastHeard < HEARD_WITHIN_MS;
    if (mine().some(answering)) return;
    const kept = mine();
    for (let slot = 0; slot < gen.boot.config.workers; slot++) if (!kept.some((w) => w.slot === slot)) this.spawn(slot, gen);
    progress?.(`waiting for a worker of generation ${gen.n} to serve before retiring the others`);
    const limit = gen.boot.config.workerTimeout + this.cfg.readyTimeout;
    const end = Date.now() + limit;
    const stopping = () => this.state.s === 'draining' || this.state.s === 'stopping' || this.state.s === 'stopped';
    while (Date.now() < end && !mine().some(answering) && !stopping()) await sleep(50);
  }

  private respawnLater(w: WorkerProc): void {
    const c = this.crashes.get(w.slot) ?? { n: 0 };
    if (Date.now() - w.startedAt > 10_000) { c.n = 0; this.crashLoop = false; }
    c.n++;
    this.crashes.set(w.slot, c);
    // the last live worker is never held back long: a crash storm must not leave none (issue 14).
    // Live: ready and not hung (one still starting serves nobody yet, and may never)
    const lastLive = ![...this.workers].some(serves);
    const backoff = backoffMs(this.cfg.respawnBackoff, c.n);
    const served = w.readyAt > 0 ? Date.now() - w.readyAt : 0;
    // killed from outside (a signal quiesce did not send: an operator, the OOM killer, a chaos
    // test) rather than dying of what it served: the hold against a poisoned crash loop does not
    // apply, the last live worker's slot starts again at once (for a few kills in a row)
    const killed = w.exitSignal !== null && OUTSIDE_KILLS.has(w.exitSignal) && c.n <= OUTSIDE_KILLS_AT_ONCE;
    const delay = !lastLive ? backoff : killed ? 0 : Math.min(backoff, Math.max(0, LAST_WORKER_BACKOFF_MS - served));
    this.log.warn('worker-respawn', { slot: w.slot, generation: w.generation.n, delay_ms: delay, crashes: c.n, last_live: lastLive, served_ms: served, signal: w.exitSignal ?? undefined });
    if (c.n >= CRASH_LOOP_AFTER && !this.crashLoop) {
      this.crashLoop = true;
      this.log.error('crash-loop', {
        slot: w.slot, generation: w.generation.n, crashes: c.n,
        cause: w.spawnError ? `could not be started: ${w.spawnError}` : w.lastWords ?? `exit code ${w.exitCode}, signal ${w.exitSignal}`,
        last_request: w.stats.current ? `${w.stats.current.method} ${w.stats.current.path}` : undefined,
        note: 'logged once per loop; a worker living 10 s ends it',
      });
    }
    setTimeout(() => {
      if (this.state.s !== 'serving' && this.state.s !== 'reloading') return;
      if (w.generation !== this.generation || w.slot >= this.generation.boot.config.workers) return;
      // (the spare took the slot, or it was filled otherwise)
      if ([...this.workers].some((x) => x.slot === w.slot && x.generation === w.generation && x.phase !== 'retiring')) return;
      this.spawn(w.slot, w.generation);
    }, delay).unref();
  }
  /** A crash loop was logged and no worker has lived 10 s since. */
  private crashLoop = false;

  /**
   * While no worker serves (all crashed, in backoff or loading), new connections are kept out at
   * the gate (reversible: reuseport and filter modes) instead of queueing for a worker that may
   * take them to its death: their SYNs are dropped and retransmitted (1 s, 3 s, ...), and get in
   * once a worker is ready and the gate opens. What the queue already held stays for the next
   * worker. The drain owns the gates from a stop on.
   */
  private syncHold(): void {
    this.holding = this.holding.then(async () => {
      const serving = this.state.s === 'serving' || this.state.s === 'reloading';
      if (!serving || !this.native) return;
      const want = ![...this.workers].some((x) => x.phase === 'ready');
      if (want === (this.heldSince > 0)) return;
      const native = this.native;
      // (a socket systemd keeps is not held: its queue is the service manager's to keep)
      const tcp = this.listeners.filter((l) => l.state === 'open' && l.spec.kind === 'tcp' && l.drainMode !== 'inherited');
      if (want) {
        for (const l of tcp) {
          try {
            await holdGate(native, tcpDrainMode(l), l.fd, l.gate);
          } catch (err) {
            this.log.warn('gate-hold-failed', { listener: l.address, error: errorMessage(err), note: 'new connections queue for the next worker' });
          }
        }
        // a stop may have begun meanwhile: its drain gated the listeners for good, nothing to open
        this.heldSince = Date.now();
        this.log.warn('gate-held', { listeners: tcp.map((l) => l.address).join(','), note: 'no worker serves: new connections wait at the gate' });
      } else {
        for (const l of tcp) openGate(native, tcpDrainMode(l), l.fd, l.gate);
        this.log.notice('gate-opened', { held_ms: Date.now() - this.heldSince });
        this.heldSince = 0;
      }
    }).catch((err: unknown) => this.log.error('gate-hold-failed', { error: errorMessage(err) }));
  }
  private holding: Promise<void> = Promise.resolve();
  private heldSince = 0;

  // ─── watchdog ─────────────────────────────────────────────────────────────

  private lastWatch = Date.now();
  /**
   * Every WATCH_MS: a ready worker not heard from (its 500 ms report is the heartbeat, sent from
   * its event loop) for longer than its generation's --worker-timeout is hung; so is one whose
   * every report for that long said its loop was held up STALL_LOOP_MS (500 ms) or more (`stalledSince`: a GC
   * thrashing near the heap limit answers, late, until V8 aborts it). A master that was itself
   * held up (its own timer late by a second: paused, swapped) judges nobody on that round.
   */
  /** The host's SYN cookies, sampled every watch tick: a drain after some waits for their clients. */
  private readonly cookies = new CookieWatch();

  private watch(): void {
    const now = Date.now();
    const late = now - this.lastWatch - WATCH_MS;
    this.lastWatch = now;
    this.cookies.sample(now);
    if (late > 1_000) { for (const w of this.workers) w.lastHeard = Math.max(w.lastHeard, now - WATCH_MS); return; }
    if (this.state.s !== 'serving' && this.state.s !== 'reloading') return;
    for (const w of this.workers) {
      const limit = w.generation.boot.config.workerTimeout;
      // a retiring worker too: one blocked in a handler holds what it accepted (new connections
      // included) until the graceful timeout, as long as a hung serving one would
      if (limit <= 0 || (w.phase !== 'ready' && w.phase !== 'retiring') || w.hung) continue;
      if (now - w.lastHeard > limit) void this.onHung(w, 'silent');
      else if (w.stalledSince !== undefined && now - w.stalledSince > limit) void this.onHung(w, 'loop-delay');
    }
    this.coverSilence(now);
  }

  /**
   * No serving worker answers (each silent past HEARD_WITHIN_MS: hung or held up, not yet past
   * --worker-timeout): a ready spare takes the slot of the one silent longest now, and that one
   * retires (gracefully if its loop comes back; killed by the watchdog at --worker-timeout if
   * not). Meanwhile new connections would only queue in the kernel behind it: bench:chaos saw 56
   * requests time out behind a single hung worker in the 3 s its watchdog took, the accept queue
   * full. Only with the watchdog on and a spare ready; one worker per watch tick.
   */
  private coverSilence(now: number): void {
    const serving = [...this.workers].filter(serves);
    if (serving.length === 0 || serving.some((w) => now - w.lastHeard < HEARD_WITHIN_MS)) return;
    const w = serving.filter((x) => x.generation === this.generation && x.generation.boot.config.workerTimeout > 0)
      .reduce<WorkerProc | undefined>((a, x) => (a === undefined || x.lastHeard < a.lastHeard ? x : a), undefined);
    if (!w) return;
    const next = this.promoteSpare(w.slot);
    if (!next) return;
    this.log.warn('worker-silent', { pid: w.pid, slot: w.slot, generation: w.generation.n, silent_ms: now - w.lastHeard, spare: next.pid, note: 'no worker answers: a spare serves in its slot, it retires (killed at --worker-timeout if still silent)' });
    this.startSpares();
    this.retire(w, 'hung');
  }

  /**
   * A hung worker: shown as such (H, retiring with reason hung), new connections go to the others
   * (or wait at the gate if it was the only one), a replacement is started and, once it is ready,
   * the hung one is killed. What it held in flight at its last report is reset by the kill: counted
   * as cut, with this cause. If its loop came back meanwhile (a long synchronous job), it retires
   * gracefully instead.
   */
  private async onHung(w: WorkerProc, cause: 'silent' | 'loop-delay'): Promise<void> {
    const now = Date.now();
    const wasServing = w.phase === 'ready';
    const retireReason = w.retireReason;
    w.hung = true;
    w.phase = 'retiring';
    w.retireReason = 'hung';
    if (wasServing) w.retireStartedAt = now;
    const st = w.stats;
    const limit = w.generation.boot.config.workerTimeout;
    // a blocked loop is mostly a busy one: at the lowest priority it takes only the CPU nobody
    // else wants while its replacement starts and the others serve (it spun a whole CPU until its
    // kill; on a small machine under load that was a third of the capacity gone for seconds)
    const niced = renice(w.pid, NICE_HUNG);
    this.log.error('worker-hung', {
      pid: w.pid, slot: w.slot, generation: w.generation.n, silent_ms: now - w.lastHeard, worker_timeout_ms: limit, cause,
      stalled_ms: w.stalledSince === undefined ? undefined : now - w.stalledSince,
      loop_delay_ms: st.loopDelayMs, inflight_last_report: st.inflight, connections_last_report: st.connections,
      heap_used_mb: mb(st.heapUsedBytes), heap_limit_mb: mb(st.heapLimitBytes),
      request: st.current ? `${st.current.method} ${st.current.path}` : undefined,
      request_ms: st.current?.sinceMs, nice: niced ? NICE_HUNG : undefined,
    });
    this.syncHold();
    // (during a reload too: the serving generation keeps its capacity until the commit)
    if (wasServing && w.generation === this.generation && (this.state.s === 'serving' || this.state.s === 'reloading')) {
      const next = this.promoteSpare(w.slot) ?? this.spawn(w.slot, w.generation);
      this.startSpares();
      const failure = await this.awaitReady([next], this.cfg.readyTimeout);
      if (failure) this.log.error('worker-replace-failed', { pid: w.pid, reason: 'hung', error: failure });
    }
    if (!w.alive) return;
    if (Date.now() - w.lastHeard < limit && w.stalledSince === undefined) {
      // it answered again: not hung after all, a long job; let it finish gracefully
      w.hung = false;
      if (niced) renice(w.pid, getPriority()); // back to ours, where allowed (lowering a nice value may need privilege)
      this.log.warn('worker-unhung', { pid: w.pid, note: 'its event loop answered again: retired gracefully' });
      if (!wasServing) { w.retireReason = retireReason; return; } // retiring already: it goes on
      w.phase = 'ready';
      w.retireReason = undefined;
      this.retire(w, 'hung');
      return;
    }
    const seen = await captureStack(w, this.log);
    if (seen) this.log.error('worker-hung-stack', { pid: w.pid, request: seen.request ?? (st.current ? `${st.current.method} ${st.current.path}` : undefined), stack: seen.stack });
    this.killHung(w, seen);
  }

  /**
   * Kill a hung worker. Its requests in flight are cut: counted as read through the inspector
   * (`inflight`), else as its last report had them (a request that blocked the loop before the
   * next report is not in it: the log says which figure it is).
   */
  private killHung(w: WorkerProc, seen?: { inflight?: number; connections?: number }): void {
    if (!w.alive) return;
    // what the kill resets: its open connections (the requests in flight among them)
    const read = seen?.inflight !== undefined;
    const cut = read ? Math.max(seen.inflight ?? 0, seen.connections ?? 0) : Math.max(w.stats.inflight, w.stats.connections);
    this.totals.cut += cut;
    this.log.alert('worker-killed', { pid: w.pid, reason: 'hung', cut, counted_from: read ? 'inspector' : 'last_report', connections_last_report: w.stats.connections });
    w.kill();
  }

  /** A worker asked to retire (recycling, an uncaught error): start its replacement first. */
  private async replace(w: WorkerProc, reason: RetireReason, detail: string): Promise<void> {
    if (w.phase !== 'ready' || w.generation !== this.generation || this.state.s !== 'serving') return;
    this.log.notice('worker-replace', { pid: w.pid, reason, detail });
    const next = this.promoteSpare(w.slot) ?? this.spawn(w.slot, w.generation);
    this.startSpares();
    await this.awaitReady([next], this.cfg.readyTimeout);
    this.retire(w, reason);
  }

  private retire(w: WorkerProc, reason: RetireReason): void {
    w.retire(reason, escalation(w.generation.boot.config.gracefulTimeout, w.generation.boot.config.killGrace));
  }

  // ─── verbs ────────────────────────────────────────────────────────────────

  /** Whether the master had a controlling terminal at start (see tty.ts). */
  private readonly hadTty = hasControllingTty();
  private onSignal(signal: NodeJS.Signals, verb: Verb): void {
    if (signal === 'SIGHUP' && this.hadTty && !hasControllingTty()) {
      this.log.notice('terminal-gone', { note: 'SIGHUP with the controlling terminal closed: a graceful stop, not a reload' });
      verb = 'stop';
    }
    this.log.notice('signal', { signal, verb });
    if (verb === 'stop') {
      const now = Date.now();
      if (this.stopSignal) {
        if (now - this.stopSignal.at < REPEAT_SIGNAL_MS) return; // npm forwards one Ctrl-C twice
        void this.request('fast-stop');
        return;
      }
      this.stopSignal = { signal, at: now };
    }
    void this.request(verb);
  }

  private async onControl(req: ControlRequest, progress: (m: string) => void): Promise<Result> {
    switch (req.verb) {
      case 'ping': return { type: 'result', ok: true, message: 'pong', data: { pid: process.pid } };
      case 'status': return { type: 'result', ok: true, message: this.state.s, data: this.snapshot() };
      case 'stop': return this.request(req.force ? 'fast-stop' : 'stop', progress);
      case 'reload': return this.request('reload', progress, '', req.judge);
      case 'restart': return this.request('restart', progress);
      case 'reopen-logs': return this.request('reopen-logs', progress);
      case 'scale': return this.request('scale', progress, req.workers ?? '');
      case 'upgrade': return this.request('upgrade', progress, req.node ?? '', req.judge);
      default: return { type: 'result', ok: false, message: `unknown verb ${JSON.stringify((req as { verb: unknown }).verb)}` };
    }
  }

  /**
   * Carry out a verb. Reloads and restarts run one at a time on `running`; a reload asked while one
   * runs or waits is queued once, and later ones join the queued one until it starts: from then on
   * it may have read its config already, so a reload asked later queues anew.
   */
  request(verb: Verb | 'scale', progress: (m: string) => void = () => {}, workers = '', judge?: boolean): Promise<Result> {
    // a new master before it took over acts on a stop only (it calls the upgrade off: stop())
    if (this.handover && verb !== 'stop' && verb !== 'fast-stop') return Promise.resolve({ type: 'result', ok: false, message: 'this master is taking over in an upgrade: ask the serving master' });
    const stopping = this.state.s === 'draining' || this.state.s === 'stopping' || this.state.s === 'stopped';
    switch (verb) {
      case 'reopen-logs':
        this.reopenLogs();
        return Promise.resolve({ type: 'result', ok: true, message: 'logs reopened' });
      case 'stop':
      case 'fast-stop':
        return this.stop(verb === 'fast-stop', progress);
      case 'scale':
      case 'scale-up':
      case 'scale-down': {
        // one at a time with reloads: a scale asked during a reload waits for it
        const spec = verb === 'scale' ? workers : verb === 'scale-up' ? '+1' : '-1';
        const run = this.running.then(() => this.scale(spec, progress));
        this.running = run.catch(() => undefined);
        return run;
      }
      case 'upgrade': {
        // one at a time with reloads: an upgrade asked during a reload waits for it
        if (stopping) return Promise.resolve({ type: 'result', ok: false, message: 'cannot upgrade: the server is stopping' });
        if (this.upgrading) return Promise.resolve({ type: 'result', ok: false, message: `an upgrade is already in progress (new master ${this.upgrading.pid})` });
        const run = this.running.then(() => this.upgrade(progress, workers || undefined, judge));
        this.running = run.catch(() => undefined);
        return run;
      }
      case 'reload':
      case 'restart': {
        if (stopping) return Promise.resolve({ type: 'result', ok: false, message: `cannot ${verb}: the server is stopping` });
        // busy, not the state: a reload is in 'serving' while it reads its config, and between two queued runs
        const queued = verb === 'reload' && this.onChain > 0;
        if (queued) {
          if (this.queuedReload) { progress('a reload is already queued behind the running one: joined it'); return this.queuedReload; }
          progress('a reload is running: this one is queued behind it');
        }
        this.onChain++;
        const run: Promise<Result> = this.running.then(async () => {
          if (this.queuedReload === run) this.queuedReload = undefined; // it starts: no longer joinable
          try {
            return await this.notified(verb, () => (verb === 'reload' ? this.reload(progress, judge === false) : this.restart(progress)));
          } finally {
            this.onChain--;
          }
        });
        if (queued) this.queuedReload = run;
        this.running = run.catch(() => undefined);
        return run;
      }
    }
  }

  /** A reload or restart, told to systemd: RELOADING=1 first, READY=1 once it ended either way (unless a stop came). */
  private async notified(verb: 'reload' | 'restart', run: () => Promise<Result>): Promise<Result> {
    this.systemd.reloading(`${verb === 'reload' ? 'reloading' : 'restarting workers'} (generation ${this.generation.n} serving)`);
    try {
      return await run();
    } finally {
      if (this.state.s === 'serving') this.systemd.ready(this.statusLine());
    }
  }

  /** One line for systemd's STATUS=: what serves now. */
  private statusLine(): string {
    const live = [...this.workers].filter((w) => w.alive && w.generation.n === this.generation.n).length;
    return `serving generation ${this.generation.n}: ${live} workers, ${this.listeners.filter((l) => l.state !== 'closed').map((l) => l.address).join(' ')}`;
  }

  private reopenLogs(): void {
    this.errorSink.reopen();
    this.accessSink.reopen();
    this.log.notice('logs-reopened');
  }

  // ─── stop ─────────────────────────────────────────────────────────────────

  private readonly stopProgress = new Set<(m: string) => void>();
  private stop(fast: boolean, progress: (m: string) => void = () => {}): Promise<Result> {
    if (this.handover && this.predecessor) {
      // a new master that has not taken over: a stop calls the upgrade off (the old master serves on)
      this.predecessor.interrupt('the new master was told to stop before it took over');
      return Promise.resolve({ type: 'result', ok: false, message: 'an upgrade in progress was called off; the old master serves on' });
    }
    this.stopProgress.add(progress);
    const done = new Promise<Result>((r) => this.stopWaiters.push(r));
    const u = this.upgrading;
    if (u && this.state.s === 'serving') {
      // a stop during an upgrade wins: the new master goes first (before it took over), then the stop runs
      if (!u.released) u.inbox.interrupt('a stop was asked: the stop wins');
      progress(`an upgrade is in progress (new master ${u.pid}): ${u.released ? 'waiting for its outcome' : 'calling it off'} first`);
      void u.settled.then(() => { if (this.state.s === 'serving') void this.gracefulStop(fast); });
      return done;
    }
    if (this.state.s === 'stopping' || this.state.s === 'stopped') {
      if (fast && this.state.s === 'stopping' && !this.state.fast) this.forceAll();
      return done;
    }
    if (this.state.s === 'draining') {
      if (fast) this.forceAll();
      return done;
    }
    void this.gracefulStop(fast);
    return done;
  }

  private fastRequested = false;
  private forceAll(): void {
    this.fastRequested = true;
    this.log.warn('fast-stop', { workers: this.workers.size });
    for (const w of this.workers) {
      w.retire('stop', escalation(0, this.cfg.killGrace));
      w.send({ t: 'force' });
    }
    this.stopDeadline(this.cfg.killGrace);
  }

  /**
   * The stop's last bound: `ms` (the escalation's own course) plus EXIT_SLACK_MS from now, any
   * worker still there is killed and the master finishes anyway (a worker SIGKILLed that does not
   * exit, a record that never gets its exit event: nothing may hold a stop forever). An earlier
   * deadline wins over a later one.
   */
  private stopDeadline(ms: number): void {
    const at = Date.now() + ms + EXIT_SLACK_MS;
    if (this.deadlineAt !== undefined && this.deadlineAt <= at) return;
    this.deadlineAt = at;
    clearTimeout(this.deadlineTimer);
    this.deadlineTimer = setTimeout(() => {
      // still draining (a forced stop during a long drain): the drain is capped, and the stop sets its own deadline after it
      if (this.state.s !== 'stopping') { this.deadlineAt = undefined; return; }
      const left = [...this.workers];
      this.log.alert('stop-deadline', { ms: ms + EXIT_SLACK_MS, workers: left.length, pids: left.map((w) => w.pid).join(',') || undefined, note: 'finishing without waiting any longer' });
      for (const w of left) w.kill();
      void this.finish();
    }, at - Date.now());
  }
  private deadlineAt?: number;
  private deadlineTimer?: NodeJS.Timeout;

  /**
   * Wait for workers told to retire to exit, at most until their escalation has run its course
   * (graceful timeout + kill grace) plus EXIT_SLACK_MS: a reload must not wait forever on one.
   */
  private async exitedWithin(ws: WorkerProc[], what: string): Promise<void> {
    const ms = Math.max(0, ...ws.map((w) => w.generation.boot.config.gracefulTimeout + w.generation.boot.config.killGrace)) + EXIT_SLACK_MS;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(ws.map((w) => w.exited)), new Promise((r) => { timer = setTimeout(r, ms); })]);
    clearTimeout(timer);
    const left = ws.filter((w) => w.alive);
    if (left.length > 0) {
      this.log.alert('wait-capped', { waiting_for: what, ms, pids: left.map((w) => w.pid).join(','), note: 'retiring workers did not exit in time: killed, not waited for' });
      for (const w of left) w.kill();
    }
  }

  private async gracefulStop(fast: boolean): Promise<void> {
    const t0 = Date.now();
    this.enter({ s: 'draining', since: t0, phase: 'lame-duck' });
    this.systemd.stopping(`stopping: draining generation ${this.generation.n}`);
    // a hung worker serves nothing more and would hold the drain (it never answers): killed now
    for (const w of this.workers) if (w.hung) this.killHung(w);
    const live = () => [...this.workers].filter((w) => w.alive && !w.hung);
    // the warm spares accept nothing: they go before the drain closes the listeners whose fds they
    // hold, but when no worker is left to serve the queue one of them does (loaded already)
    if (live().length === 0) this.promoteSpare(0, true);
    await this.dropSpares();
    if (fast) {
      this.fastRequested = true;
    } else {
      for (const w of live()) w.send({ t: 'lame-duck' });
      if (this.cfg.drainDelay > 0) {
        this.log.notice('lame-duck', { ms: this.cfg.drainDelay });
        for (const p of this.stopProgress) p(`lame duck for ${this.cfg.drainDelay / 1000} s: /ready answers 503, everything is still served`);
        const until = Date.now() + this.cfg.drainDelay;
        while (Date.now() < until && !this.fastRequested) await sleep(Math.min(50, until - Date.now()));
      }
    }
    this.enter({ s: 'draining', since: t0, phase: 'drain' });
    let drainers = live();
    if (drainers.length === 0 && this.listeners.some((l) => l.state !== 'closed')) {
      // every worker crashed or waits out its backoff: what is queued still gets served, by a
      // worker started for it (connections handed over while it loads wait for its app)
      drainers = [this.spawn(0, this.generation)];
      this.log.warn('drain-worker', { pid: drainers[0]!.pid, note: 'no live worker at the stop: one started to serve the queue' });
    }
    const gateAt = Date.now();
    const report = await this.drain(this.listeners, drainers, this.fastRequested ? 0 : this.cfg.drainCap);
    this.lastDrain = report;
    this.totals.drains++;
    observeDrain(this, report.gateToCloseMs);
    this.enter({ s: 'stopping', since: Date.now(), fast: this.fastRequested });
    const ws = live();
    this.log.notice('stop-finishing', {
      workers: ws.length,
      connections: ws.reduce((a, w) => a + w.stats.connections, 0),
      inflight: ws.reduce((a, w) => a + w.stats.inflight, 0),
      graceful_timeout_ms: this.cfg.gracefulTimeout,
    });
    for (const w of ws) {
      if (this.fastRequested) { this.forceAll(); break; }
      // the graceful timeout runs from the gate, so that the drain (up to --drain-cap when a worker
      // does not answer) does not add to the stop's bound: --graceful-timeout + --kill-grace
      w.retire('stop', escalation(Math.max(0, this.cfg.gracefulTimeout - (Date.now() - gateAt)), this.cfg.killGrace));
    }
    if (this.workers.size === 0) return this.finish();
    this.stopDeadline(Math.max(0, this.cfg.gracefulTimeout - (Date.now() - gateAt)) + this.cfg.killGrace);
    this.reportStopWait(Date.now() + this.cfg.gracefulTimeout);
  }

  /** While the workers finish: what the stop waits for, to the stop's clients and the log, whenever it changes. */
  private reportStopWait(forceAt: number): void {
    let last = '';
    const tick = (): void => {
      if (this.state.s !== 'stopping') return clearInterval(timer);
      const w = describeWaiting([...this.workers].filter((x) => x.alive), this.fastRequested ? 0 : forceAt - Date.now());
      const figures = JSON.stringify(w.fields);
      if (figures === last) return;
      last = figures;
      this.log.info('stop-waiting', w.fields);
      this.systemd.status(`stopping: ${w.text}`);
      for (const p of this.stopProgress) p(w.text);
    };
    const timer = setInterval(tick, STATS_INTERVAL_MS);
    tick();
  }

  /** Gate, drain and close listeners (drain.ts); what the kernel reset or no worker could take is counted as cut. */
  private async drain(listeners: Listener[], workers: WorkerProc[], capMs: number): Promise<DrainReport> {
    const report = await drainAndClose(listeners, workers, { native: this.native, log: this.log, capMs, cookies: this.cookies });
    this.totals.cut += report.leftAtClose + report.lost;
    return report;
  }

  private finishing = false;
  private async finish(): Promise<void> {
    if (this.finishing) return;
    this.finishing = true;
    clearTimeout(this.deadlineTimer);
    await this.dropSpares(); // (gone at the stop's start already; a stop that began otherwise, as an upgrade's)
    const finishMs = this.state.s === 'stopping' ? Date.now() - this.state.since : undefined;
    this.enter({ s: 'stopped', since: Date.now() });
    const d = this.lastDrain;
    const message = this.handedTo !== undefined ? `upgraded: master ${this.handedTo} serves; this master's workers finished` : `stopped: ${d ? `drain ${d.gateToCloseMs} ms (${d.mode}), ${d.acceptedInDrain} accepted from the queue, ${d.leftAtClose} left at close, ` : ''}${this.totals.forced} forced, ${this.totals.cut} cut`;
    this.log.log(this.totals.cut > 0 ? 'alert' : 'notice', 'stopped', {
      forced: this.totals.forced, left_at_close: d?.leftAtClose ?? 0, cut: this.totals.cut,
      finish_ms: finishMs,
      uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
    });
    for (const l of this.listeners) closeHandle(l); // (released already after an upgrade: a no-op)
    removePidfile(this.pidfile);
    for (const w of this.stopWaiters) w({ type: 'result', ok: true, message, data: { forced: this.totals.forced, drain: d } });
    await sleep(10); // the replies reach the control clients before the socket goes
    this.control?.close();
    await this.admin.close();
    await this.accessSink.close();
    await this.errorSink.close();
    // let the control socket replies flush before exiting
    setTimeout(() => process.exit(EXIT.OK), 20);
  }

  private shutdownSockets(): void {
    for (const l of this.listeners) this.dropListener(l);
    this.control?.close();
    removePidfile(this.pidfile);
  }

  // ─── reload ───────────────────────────────────────────────────────────────

  private async reload(progress: (m: string) => void, noJudge = false): Promise<Result> {
    if (this.state.s !== 'serving') return { type: 'result', ok: false, message: `cannot reload while ${this.state.s}` };
    const t0 = Date.now();
    const old = [...this.workers].filter((w) => w.alive && w.phase !== 'retiring');
    let cfg: Config;
    let appSpec: AppSpecWire;
    try {
      cfg = await this.loadConfig();
      appSpec = resolveAppSpec(cfg.app || undefined, process.cwd(), cfg);
    } catch (err) {
      return this.reloadFailed(`config: ${errorMessage(err)}`);
    }
    const restartOnly = (Object.keys(SETTINGS) as Key[]).filter((k) => !SETTINGS[k].reload && JSON.stringify(cfg[k]) !== JSON.stringify(this.cfg[k]));
    if (restartOnly.length > 0) {
      const names = restartOnly.map((k) => `--${SETTINGS[k].flag}`).join(', ');
      progress(`${names} changed: a reload does not apply ${restartOnly.length > 1 ? 'these' : 'this'}; it takes a stop and start`);
      this.log.warn('reload-needs-restart', { settings: names });
      cfg = Object.freeze({ ...cfg, ...Object.fromEntries(restartOnly.map((k) => [k, this.cfg[k]])) });
    }
    // listeners: keep those still configured, bind the new ones, drain the removed ones at the end
    // (the sockets systemd passed stay whatever the config says: the unit owns them)
    const passed = this.listeners.filter((l) => l.state !== 'closed' && l.inherited !== undefined);
    const wanted = [...passed.map((l) => l.spec.text), ...this.toBind(cfg, passed)];
    const keep = this.listeners.filter((l) => l.state !== 'closed' && wanted.includes(l.spec.text));
    const removed = this.listeners.filter((l) => l.state !== 'closed' && !wanted.includes(l.spec.text));
    const added: Listener[] = [];
    try {
      for (const text of wanted) {
        if (keep.some((l) => l.spec.text === text)) continue;
        added.push(this.bind(this.nextListenerId++, text));
      }
    } catch (err) {
      for (const l of added) closeHandle(l);
      return this.reloadFailed(errorMessage(err));
    }
    // certificates and keys are read anew (a renewed certificate goes live); a bad pair rolls back now
    let tls: GenerationTls | undefined;
    let adminTls: ReturnType<typeof readAdminTls>;
    try {
      tls = readTls(cfg, wanted);
      adminTls = readAdminTls(cfg);
    } catch (err) {
      for (const l of added) closeHandle(l);
      return this.reloadFailed(`tls: ${errorMessage(err)}`);
    }
    const gen = this.newGeneration(cfg, appSpec, tls);
    this.enter({ s: 'reloading', since: t0, to: gen.n });
    // at most two generations alive: let the previous reload's retiring workers finish first
    const lingering = [...this.workers].filter((w) => w.phase === 'retiring');
    if (lingering.length > 0) {
      progress(`waiting for ${lingering.length} retiring worker(s) of generation ${[...new Set(lingering.map((w) => w.generation.n))].join(', ')} to finish first`);
      await this.exitedWithin(lingering, 'reload');
      if (this.interrupted()) return this.reloadFailed('interrupted by a stop');
    }
    progress(`starting generation ${gen.n} (${cfg.workers} workers)`);
    const prevListeners = this.listeners;
    this.listeners = [...keep, ...added];
    // rolling: one canary first (then one in, one out); all: the whole new generation first
    const rolling = cfg.reloadStrategy === 'rolling';
    const fresh = this.spawnGeneration(gen, rolling ? Math.min(1, cfg.workers) : cfg.workers);
    const rollback = async (why: string, verdict?: Verdict): Promise<Result> => {
      this.listeners = prevListeners;
      this.killPendingSpares();
      const ready = fresh.filter((w) => w.alive && w.phase === 'ready');
      if (added.length > 0) await this.drain(added, ready, this.cfg.drainCap);
      if (ready.length > 0 && !this.interrupted()) await this.keepOneServing(fresh, progress);
      for (const w of fresh) if (w.phase === 'ready') this.retire(w, 'rollback'); else w.kill();
      if (!this.interrupted()) this.enter({ s: 'serving', since: Date.now() });
      const r = this.reloadFailed(`${why}; rolled back, generation ${this.generation.n} keeps serving`);
      return verdict ? { ...r, data: { verdict } } : r;
    };
    let failure: string | undefined;
    try {
      startListening(added, this.cfg.backlog, this.native);
    } catch (err) {
      failure = errorMessage(err);
    }
    failure ??= await this.awaitReady(fresh, cfg.readyTimeout);
    if (this.interrupted()) return this.reloadFailed('interrupted by a stop');
    if (failure) return rollback(`generation ${gen.n}: ${failure}`);
    this.startPendingSpares(gen);
    const judged = cfg.reloadJudge === 'on' && !noJudge && cfg.metrics === 'on' && this.cfg.metrics === 'on';
    if (cfg.reloadJudge === 'on' && !noJudge && !judged) progress('not judged: the judge needs --metrics on in both generations');
    progress(`generation ${gen.n} ready; soaking ${cfg.reloadSoak / 1000}s${judged ? ', judged on its own traffic against generation ' + this.generation.n : ''}`);
    this.deployEvent(gen.n, 'soak-start', `generation ${gen.n} soaking ${cfg.reloadSoak / 1000}s beside generation ${this.generation.n}${judged ? ', judged' : ''}`);
    const oldGen = this.generation;
    const oldAtStart = judged ? this.httpCounts(oldGen) : undefined;
    if (judged) this.steer(old, STEER_SHARE);
    const both = [...old, ...fresh];
    const { failure: soakFailure, verdict } = await this.judgedSoak({
      what: 'reload', gen: gen.n, against: oldGen.n, fresh, cfg, progress, stopped: () => this.interrupted(),
      evidence: judged ? async () => {
        await this.freshStats(both);
        return { old: diffCounts(this.httpCounts(oldGen), oldAtStart!), fresh: this.httpCounts(gen) };
      } : undefined,
    });
    if (judged) this.steer(old, 0);
    if (this.interrupted()) return this.reloadFailed('interrupted by a stop');
    if (soakFailure) {
      this.deployEvent(gen.n, 'rolled-back', soakFailure);
      return rollback(`generation ${gen.n}: ${soakFailure}`);
    }
    if (verdict?.verdict === 'fail') {
      this.deployEvent(gen.n, 'rolled-back', verdict.message);
      return rollback(`generation ${gen.n} is worse: ${verdict.message}`, verdict);
    }

    // commit
    const from = this.generation.n;
    this.generation = gen;
    this.cfg = cfg;
    this.renewAdminTls(adminTls);
    this.errorSink.reopen(cfg.errorLog);
    this.log.configure(cfg);
    this.accessSink.reopen(cfg.accessLog === 'off' ? '-' : cfg.accessLog);
    this.warnSettings();
    if (removed.length > 0) await this.drain(removed, old, cfg.drainCap);
    const oldCount = old.length;
    if (rolling) {
      const problem = await this.roll(gen, old, fresh, progress);
      if (problem) this.log.error('reload-rolling-incomplete', { generation: gen.n, reason: problem });
    }
    // every worker of an older generation, not only those at the start: a slot of the old
    // generation that crashed meanwhile was respawned in its generation (it serves if the reload
    // fails) and would otherwise serve on beside the new one for ever
    const older = [...this.workers].filter((w) => w.generation !== gen && w.alive && w.phase !== 'retiring');
    for (const w of older) this.retire(w, 'reload');
    this.deployEvent(gen.n, 'committed', `generation ${gen.n} serving; generation ${from} retiring`);
    void Promise.all(older.map((w) => w.exited)).then(() => this.deployEvent(gen.n, 'old-retired', `generation ${from}'s workers have all exited`));
    this.totals.reloads++;
    if (this.interrupted()) return { type: 'result', ok: true, message: `reloaded to generation ${gen.n}, then stopped` };
    observeReload(this, Date.now() - t0);
    this.enter({ s: 'serving', since: Date.now() });
    const message = `reloaded: generation ${gen.n} serving (${fresh.length} workers), generation ${from} retiring (${oldCount} workers)` +
      `${added.length ? `, opened ${added.map((l) => l.address).join(' ')}` : ''}${removed.length ? `, closed ${removed.map((l) => l.address).join(' ')}` : ''}`;
    this.log.notice('reloaded', { generation: gen.n, from, workers: fresh.length, ms: Date.now() - t0 });
    for (const l of added) process.stdout.write(`quiesce: listening on ${describe(l)}\n`);
    return { type: 'result', ok: true, message: verdict ? `${message}; ${verdict.message}` : message, data: { generation: gen.n, verdict } };
  }

  /** Request metrics of every worker that has exited, all generations. */
  private readonly exitedHttp = emptyCounts();
  /** Every response counted since the start, all generations (live workers as of their last report). */
  httpTotal(): RequestCounts {
    const c = addCounts(emptyCounts(), this.exitedHttp);
    for (const w of this.workers) addCounts(c, w.stats.http);
    return c;
  }

  /** The requests a generation's workers answered (live ones as of their last report, plus those exited). */
  httpCounts(gen: Generation): RequestCounts {
    const c = addCounts(emptyCounts(), gen.exitedHttp);
    for (const w of this.workers) if (w.generation === gen) addCounts(c, w.stats.http);
    return c;
  }

  /**
   * The soak (`--reload-soak`; a new worker failing fails it), then, with `evidence` (both sides'
   * counts as of now: the old side's since the soak began), the judge. The soak is over but a side
   * has answered fewer than --judge-min-requests: the busiest workers win the kernel's accept race
   * (README, "The judged soak"), so a new generation beside a busy old one can see little traffic.
   * Soak on, up to JUDGE_SOAK_STRETCH times --reload-soak in all, while both sides' pace would
   * reach the minimum by then; else judge now (it abstains). Shared by the reload (both
   * generations in this master) and the upgrade (the new master, the old master's counts asked
   * over the channel `link`); `evidence` answers a string when it cannot be had (the old master).
   */
  private async judgedSoak(o: {
    what: 'reload' | 'upgrade'; gen: number; against: number; fresh: WorkerProc[]; cfg: Config; progress: (m: string) => void;
    stopped: () => boolean; link?: Inbox<ToSuccessor>; evidence?: () => Promise<Evidence | string>;
  }): Promise<{ failure?: string; verdict?: Verdict }> {
    const { cfg, progress } = o;
    const t0 = Date.now();
    const failure = await this.soak(o.fresh, cfg.reloadSoak, o.link);
    if (failure || !o.evidence || o.stopped()) return { failure };
    let e = await o.evidence();
    const until = t0 + JUDGE_SOAK_STRETCH * cfg.reloadSoak;
    let told = false;
    for (let i = 0; i < 1_000 && typeof e !== 'string' && Date.now() < until && !o.stopped(); i++) {
      const counts = [total(e.fresh), total(e.old)];
      const short = counts.some((n) => n < cfg.judgeMinRequests);
      const reachable = counts.every((n) => n >= cfg.judgeMinRequests || (n / Math.max(1, Date.now() - t0)) * (until - t0) >= cfg.judgeMinRequests);
      if (!short || !reachable) break;
      if (!told) {
        progress(`judge: ${counts[0]} responses from generation ${o.gen} and ${counts[1]} from generation ${o.against} so far, fewer than --judge-min-requests ${cfg.judgeMinRequests}: soaking on, up to ${(JUDGE_SOAK_STRETCH * cfg.reloadSoak) / 1000}s in all`);
        told = true;
      }
      const failed = await this.soak(o.fresh, STATS_INTERVAL_MS, o.link);
      if (failed) return { failure: failed };
      e = await o.evidence();
    }
    if (typeof e === 'string') return { failure: e };
    if (o.stopped()) return {};
    const verdict = judge(e.old, e.fresh, { max5xxRatio: cfg.judgeMax5xxRatio, maxP99Ratio: cfg.judgeMaxP99Ratio, minRequests: cfg.judgeMinRequests });
    this.log.log(verdict.verdict === 'fail' ? 'error' : 'notice', `${o.what}-judged`, {
      generation: o.gen, against: o.against, verdict: verdict.verdict, new_requests: verdict.new.responses, old_requests: verdict.old.responses,
      new_5xx: verdict.new.ratio5xx, old_5xx: verdict.old.ratio5xx, new_p99_ms: verdict.new.p99Ms, old_p99_ms: verdict.old.p99Ms, message: verdict.message,
    });
    this.deployEvent(o.gen, verdictPhase(verdict.verdict), verdict.message);
    progress(verdict.message);
    return { verdict };
  }

  /** Ask these workers for their stats now and wait for them (bounded): the judge reads what happened up to this moment. */
  private async freshStats(ws: WorkerProc[]): Promise<void> {
    const live = ws.filter((w) => w.alive && w.phase === 'ready');
    await Promise.race([
      Promise.all(live.map((w) => w.askStats())),
      new Promise((r) => setTimeout(r, 2 * STATS_INTERVAL_MS)),
    ]);
  }

  /** The old generation closes a share of its keep-alive connections with a response during the soak (0 stops it). */
  private steer(ws: WorkerProc[], share: number): void {
    for (const w of ws) if (w.alive && w.phase === 'ready') w.send({ t: 'steer', share });
  }

  /** The deploy's phases, newest last (at most 32), for status and the probe's timeline. */
  readonly deploys: DeployEvent[] = [];
  private deployEvent(generation: number, phase: DeployEvent['phase'], text: string): void {
    this.deploys.push({ at: new Date().toISOString(), generation, phase, text });
    if (this.deploys.length > 32) this.deploys.shift();
  }

  /**
   * Rolling replacement after the canary: retire one old worker, wait for it to exit, start one
   * new one, wait until it is ready; at most workers + 1 processes at any time. Returns a problem
   * description if a new worker did not become ready (its slot is left to the respawn logic).
   */
  private async roll(gen: Generation, old: WorkerProc[], fresh: WorkerProc[], progress: (m: string) => void): Promise<string | undefined> {
    const want = gen.boot.config.workers;
    let problem: string | undefined;
    for (let slot = 1; slot < Math.max(want, old.length + 1); slot++) {
      const out = old.shift();
      if (out) {
        this.retire(out, 'reload');
        await this.exitedWithin([out], 'rolling reload');
      }
      if (slot >= want || this.state.s !== 'reloading') continue;
      const w = this.spawn(slot, gen);
      fresh.push(w);
      const failure = await this.awaitReady([w], gen.boot.config.readyTimeout);
      if (failure) problem ??= `slot ${slot}: ${failure}`;
      else progress(`rolling: ${slot + 1}/${want} workers of generation ${gen.n} ready`);
    }
    return problem;
  }

  /** A stop began while a reload awaited something: the stop owns the workers now. */
  private interrupted(): boolean {
    return this.state.s !== 'reloading';
  }

  private reloadFailed(why: string): Result {
    this.totals.reloadsFailed++;
    this.log.error('reload-failed', { reason: why });
    return { type: 'result', ok: false, message: `reload failed: ${why}` };
  }

  /** Both generations serve; a new worker exiting meanwhile is a failure. */
  private async soak(fresh: WorkerProc[], ms: number, link?: Inbox<ToSuccessor>): Promise<string | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      ...(link ? [link.calledOff] : []),
      new Promise<undefined>((res) => { timer = setTimeout(() => res(undefined), ms); }),
      ...fresh.map((w) => w.failed.then((why) => `${why} during the soak`)),
    ]);
    clearTimeout(timer);
    return r;
  }

  /** Hard restart: a new generation at once; the old one's connections are closed (in-flight requests are cut). */
  private async restart(progress: (m: string) => void): Promise<Result> {
    if (this.state.s !== 'serving') return { type: 'result', ok: false, message: `cannot restart while ${this.state.s}` };
    let cfg: Config;
    let tls: GenerationTls | undefined;
    let adminTls: ReturnType<typeof readAdminTls>;
    try {
      cfg = await this.loadConfig();
      tls = readTls(cfg, this.listeners.filter((l) => l.state !== 'closed').map((l) => l.spec.text));
      adminTls = readAdminTls(cfg);
    } catch (err) {
      return { type: 'result', ok: false, message: `restart failed: ${errorMessage(err)}` };
    }
    const old = [...this.workers];
    const gen = this.newGeneration(cfg, resolveAppSpec(cfg.app || undefined, process.cwd(), cfg), tls);
    for (const w of old) { w.retire('restart', escalation(0, cfg.killGrace)); w.send({ t: 'force' }); }
    const fresh = this.spawnGeneration(gen, cfg.workers);
    this.generation = gen;
    this.cfg = cfg;
    this.renewAdminTls(adminTls);
    progress(`generation ${gen.n} starting; old connections closed`);
    const failure = await this.awaitReady(fresh, cfg.readyTimeout);
    if (failure) return { type: 'result', ok: false, message: `restart: generation ${gen.n}: ${failure}` };
    return { type: 'result', ok: true, message: `restarted: generation ${gen.n} serving` };
  }

  // ─── status ───────────────────────────────────────────────────────────────

  /** The scoreboard and the master's figures: see src/master/status and docs/STATUS-SCHEMA.md. */
  snapshot(): StatusSnapshot {
    return buildSnapshot(this, { native: this.native, exited: this.ofExited });
  }
}

/** Both sides of a judged soak: the old generation's responses since the soak began, the new one's. */
type Evidence = { old: RequestCounts; fresh: RequestCounts };

/** A verdict as a deploy phase. */
function verdictPhase(v: Verdict['verdict']): DeployEvent['phase'] {
  return v === 'fail' ? 'judged-worse' : v === 'abstain' ? 'judge-abstained' : 'judged-ok';
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The master's open file descriptors (a failed fork's usual cause is EMFILE); undefined off Linux. */
function openFds(): number | undefined {
  try { return readdirSync('/proc/self/fd').length; } catch { return undefined; }
}

/**
 * Gate a throwaway loopback listener the way `mode` would at a stop, then try a new connection:
 * it must not enter the queue. Returns what went wrong, or undefined when the mode works here.
 */
async function selfTest(native: Native, mode: TcpDrainMode): Promise<string | undefined> {
  let probe: Listener | undefined;
  let client = -1;
  try {
    probe = bindListener(-1, { kind: 'tcp', host: '127.0.0.1', port: 0, family: 4, text: '127.0.0.1:0' }, mode, native);
    native.listen(probe.fd, 8);
    native.acceptQueue(probe.fd);
    native.halfOpen(probe.port, 4);
    if (mode === 'fallback') return undefined; // listen(fd, 0) has no effect to check before a queue exists
    if (mode === 'reuseport') native.reuseportProgram(probe.fd, SELECT_LISTENER);
    let failure: string | undefined;
    if (await gateTcp(native, mode, probe.fd, probe.gate, (w) => { failure = w; }) !== mode) return failure ?? 'gate failed';
    client = native.bindTcp('127.0.0.1', 0, 4, false);
    native.connect(client, '127.0.0.1', probe.port, 4);
    await sleep(5); // on loopback a SYN that passes is queued within microseconds
    const queued = native.acceptQueue(probe.fd).queued;
    if (queued !== 0 || native.tcpState(client) !== 2 /* still SYN_SENT */) return `a connection got through the closed gate (queued ${queued})`;
    return undefined;
  } catch (err) {
    return errorMessage(err);
  } finally {
    if (client >= 0) native.close(client);
    if (probe) closeHandle(probe);
  }
}
