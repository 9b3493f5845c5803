/**
 * The no-cut close of listening sockets (docs/ARCHITECTURE.md, "The drain protocol").
 *
 * On Linux the last close() of a listener resets every connection in its accept queue and every
 * handshake in progress. So: (1) gate — new SYNs are dropped (new clients retransmit and then get
 * ECONNREFUSED) while handshakes in progress still complete: by the listener's reuseport group
 * (no privilege needed) or a socket filter (native/gate.ts); a unix socket path is unlinked;
 * (2) drain — each worker takes its share of the kernel queue (levelled by load) and closes
 * its own fd in the same tick; the master takes the rest and hands it over, until the kernel
 * itself says no handshake is in progress and the queue is empty; (3) close — the master re-checks
 * a moment later (a late syncookie handshake) and closes last.
 */
import { unlinkSync } from 'node:fs';
import net from 'node:net';
import { kernelDrained, procTcpCounts, type Native } from '../native/index.js';
import { gateTcp } from '../native/gate.js';
import type { Logger } from '../shared/log.js';
import { errorMessage } from '../shared/errors.js';
import type { ToMaster } from '../shared/ipc.js';
import { closeHandle, tcpDrainMode, type Listener } from './listeners.js';
import type { CookieWatch } from './syncookies.js';
import type { WorkerProc } from './workers.js';

export type DrainReport = {
  /** The mechanisms that gated the listeners: reuseport, filter, unlink, fallback (comma-joined). */
  mode: string;
  queuedAtGate: number;
  acceptedInDrain: number;
  /** Connections the kernel still held when the last fd was closed, reset by it (must be 0). */
  leftAtClose: number;
  /** Connections the master accepted with no live worker to hand them to, closed unanswered (must be 0). */
  lost: number;
  handedOverByMaster: number;
  rounds: number;
  gateToCloseMs: number;
  perWorker: Record<number, number>;
  /** Each worker's requests in flight when the drain began (its last stats): what weighs its share. */
  inflightAtGate: Record<number, number>;
  /** When each worker answered its drain message, ms after the gate (a busy one reads it late: the master took its share meanwhile). */
  ackMs: Record<number, number>;
  cappedOut: boolean;
  /** How long the gated listeners waited for late SYN-cookie handshakes (0: no cookies lately). */
  cookieHoldMs: number;
};

/** A worker answers its one drain message when it reads it; a stuck one is waited for up to the drain cap. */
const WORKER_ACK_MS = 30_000;
const BATCH_MAX = 512;
const UNIX_BATCH = 64;
/** Before the master's own close: wait a couple of loopback RTTs for a late syncookie handshake. */
const LAST_CHECK_DELAY_MS = 3;

export type DrainDeps = {
  native: Native | undefined; log: Logger; capMs: number;
  /** The host's recent SYN cookies: their clients can come back after the queue is empty (syncookies.ts). */
  cookies?: CookieWatch;
};

/** Gate, drain and close the given listeners, using the given (live) workers that hold them. */
export async function drainAndClose(listeners: Listener[], workers: WorkerProc[], deps: DrainDeps): Promise<DrainReport> {
  const { native, log } = deps;
  const started = Date.now();
  const report: DrainReport = {
    mode: '', queuedAtGate: 0, acceptedInDrain: 0, leftAtClose: 0, lost: 0,
    handedOverByMaster: 0, rounds: 0, gateToCloseMs: 0, perWorker: {}, inflightAtGate: {}, ackMs: {}, cappedOut: false, cookieHoldMs: 0,
  };
  // a socket the service manager keeps is not gated or drained: workers and master let go of it,
  // which resets nothing, and its queue waits for the next instance
  const kept = listeners.filter((l) => l.state !== 'closed' && l.drainMode === 'inherited');
  const open = listeners.filter((l) => l.state !== 'closed' && l.drainMode !== 'inherited');
  if (kept.length > 0) await releaseKept(kept, workers, log);
  if (open.length === 0) return report;

  // 1. gate
  for (const l of open) {
    if (l.spec.kind === 'unix') {
      try { unlinkSync(l.spec.path); } catch { /* already gone */ }
    } else if (native) {
      l.drainMode = await gateTcp(native, tcpDrainMode(l), l.fd, l.gate,
        (why) => log.alert('gate-failed', { listener: l.address, mode: l.drainMode, error: why, note: 'falling back to listen(fd, 0)' }));
      report.queuedAtGate += native.acceptQueue(l.fd).queued;
    }
    l.state = 'gated';
  }
  report.mode = [...new Set(open.map((l) => (native || l.spec.kind === 'unix' ? l.drainMode : 'fallback')))].join(',');
  log.notice('drain-gate', { listeners: open.length, queued: report.queuedAtGate, mode: report.mode });

  if (native) {
    // 2. one message to each worker: accept your share of the queue now and, in the same tick,
    //    close your own fd (closing a fd that is not the last one leaves the queue alone). A busy
    //    worker holds the listener only until it reads this one message, not until it has served
    //    what it accepted.
    const acks = askWorkersToDrain(open, workers, native, report, started);
    let acked = false;
    void acks.then(() => { acked = true; });
    // 3. the master, never busy and owner of the last fd, takes the rest (handshakes completing
    //    after the gate, what no worker took) and hands each connection to the least busy worker;
    //    it closes when every worker has let go and the kernel reports nothing half-open (first),
    //    then nothing queued. Behind a gate it re-checks once more a moment later (a late
    //    syncookie handshake); without one (fallback) it closes in the same tick as the check,
    //    since every moment open lets another SYN in.
    const deadline = started + deps.capMs;
    const ungated = open.some((l) => l.drainMode === 'fallback');
    // behind a gate, clients the host answered with SYN cookies lately may still come back (their
    // ACK dropped while the queue was full): the gated listeners wait for them, up to the cap
    const hold = !ungated && open.some((l) => l.spec.kind === 'tcp') ? deps.cookies?.holdUntil(Date.now()) : undefined;
    const holdUntil = hold ? Math.min(hold.until, deadline) : 0;
    if (hold) {
      report.cookieHoldMs = Math.max(0, holdUntil - Date.now());
      log.notice('drain-cookie-hold', { cookies: hold.cookies, since_ms: Date.now() - hold.since, ms: report.cookieHoldMs, note: 'SYN cookies sent lately on this host: their clients may still come back; the gated listeners wait for them' });
    }
    for (;;) {
      for (const l of open) handOver(l, native, workers, report);
      if (acked && Date.now() >= holdUntil && open.every((l) => settled(l, native))) {
        if (!ungated) {
          await sleep(LAST_CHECK_DELAY_MS);
          for (const l of open) handOver(l, native, workers, report);
        }
        break;
      }
      if (Date.now() >= deadline) { report.cappedOut = true; break; }
      report.rounds++;
      await sleep(1);
    }
    if (report.cappedOut) log.alert('drain-capped', { ms: deps.capMs, workers_acked: acked });
    // connections handed over are on their way; whatever the caller sends next (retire) must follow them
    const flushing = Promise.all(workers.map((w) => w.flushed()));
    for (const l of open) {
      // what the kernel holds at the last close is reset: the queue, and handshakes still in progress
      if (l.spec.kind === 'tcp') report.leftAtClose += native.acceptQueue(l.fd).queued + (l.drainMode === 'fallback' ? native.halfOpen(l.port, l.family) : 0);
      closeHandle(l);
    }
    report.gateToCloseMs = Date.now() - started;
    await flushing;
  } else {
    // no native module: no gate, no drain: workers close, the master counts what the kernel holds
    // at its close (those are reset) and closes
    await closeInWorkers(open, workers);
    for (const l of open) {
      if (l.spec.kind === 'tcp') {
        const c = procTcpCounts(l.port);
        report.leftAtClose += c.queued + c.halfOpen;
      }
      closeHandle(l);
    }
  }
  report.gateToCloseMs ||= Date.now() - started;
  const level = report.leftAtClose + report.lost > 0 ? 'alert' : 'notice';
  log.log(level, 'drain-closed', {
    ms: report.gateToCloseMs, queued_at_gate: report.queuedAtGate, accepted_in_drain: report.acceptedInDrain,
    handed_over: report.handedOverByMaster, left_at_close: report.leftAtClose, lost: report.lost || undefined, rounds: report.rounds, mode: report.mode,
    cookie_hold_ms: report.cookieHoldMs || undefined,
    per_worker: pidList(report.perWorker),
    inflight_at_gate: pidList(report.inflightAtGate),
    ack_ms: pidList(report.ackMs),
  });
  if (open.some((l) => l.drainMode === 'fallback')) {
    log.alert('drain-fallback', { left_at_close: report.leftAtClose, native: native !== undefined, note: 'no gate: connections the kernel held at close were reset (counted as cut)' });
  }
  return report;
}

/** Every live worker closes its copy of the kept listeners, then the master closes its own. */
async function releaseKept(kept: Listener[], workers: WorkerProc[], log: Logger): Promise<void> {
  await closeInWorkers(kept, workers);
  for (const l of kept) closeHandle(l);
  log.notice('drain-kept', { listeners: kept.map((l) => l.address).join(','), note: 'passed by the service manager, which keeps them: not gated, their queue waits for the next instance' });
}

/** Every live worker closes its copy of these listeners (without taking their queue). */
async function closeInWorkers(listeners: Listener[], workers: WorkerProc[]): Promise<void> {
  const ids = listeners.map((l) => l.id);
  await Promise.all(workers.filter((w) => w.alive).map((w) => w.ask((seq) => ({ t: 'close-listeners', ids, seq }), 2_000)));
}

/** TCP: half-open handshakes first, then the queue, in this order so that nothing slips in between. Unix: the path is gone; handOver() emptied the queue. */
function settled(l: Listener, native: Native): boolean {
  return l.spec.kind === 'unix' || kernelDrained(native, l.fd, l.port, l.family);
}

/**
 * Shares of `queued` new connections that bring every worker's load (its requests in flight plus
 * its share) as near one level as whole connections go: the least loaded fill up first, a worker
 * already above the level gets none. (The first cut weighted shares by 1/(1+inflight): 1 request
 * in flight against 0 halved a worker's share of a 500-deep queue.)
 */
export function levelShares(queued: number, loads: readonly number[]): number[] {
  const order = loads.map((_, i) => i).sort((a, b) => loads[a]! - loads[b]!);
  let level = 0;
  let sum = 0;
  for (let k = 0; k < order.length; k++) {
    sum += loads[order[k]!]!;
    level = (queued + sum) / (k + 1);
    const next = order[k + 1];
    if (next === undefined || level <= loads[next]!) break;
  }
  return loads.map((l) => Math.max(0, Math.floor(level - l)));
}

/** Each live worker gets its share of each listener's queue (levelShares, by its requests in flight) and closes its fd. */
async function askWorkersToDrain(open: Listener[], workers: WorkerProc[], native: Native, report: DrainReport, started: number): Promise<void> {
  const live = workers.filter((w) => w.alive);
  if (live.length === 0) return;
  for (const w of live) report.inflightAtGate[w.pid] = w.stats.inflight;
  const loads = live.map((w) => w.stats.inflight);
  const asks: Array<Promise<void>> = [];
  for (const l of open) {
    // a unix socket has no queue figure: a fixed batch each, the master takes the rest
    const queued = l.spec.kind === 'tcp' ? native.acceptQueue(l.fd).queued : UNIX_BATCH * live.length;
    const shares = levelShares(queued, loads);
    live.forEach((w, i) => {
      const max = Math.min(BATCH_MAX, shares[i]!);
      asks.push(w.ask<Extract<ToMaster, { t: 'accepted' }>>((seq) => ({ t: 'drain-accept', id: l.id, max, close: true, seq }), WORKER_ACK_MS).then((r) => {
        if (!r) return;
        report.acceptedInDrain += r.n;
        report.perWorker[w.pid] = (report.perWorker[w.pid] ?? 0) + r.n;
        report.ackMs[w.pid] = Date.now() - started;
      }));
    });
  }
  await Promise.all(asks);
}

/** Accept what is queued now and pass each connection to the least busy worker (report.handedOverByMaster). */
function handOver(l: Listener, native: Native, workers: WorkerProc[], report: DrainReport): void {
  for (let i = 0; i < 10_000; i++) {
    const fd = native.accept(l.fd);
    if (fd === -1) break;
    if (fd === -2) continue;
    const load = (x: WorkerProc) => x.stats.inflight + (report.perWorker[x.pid] ?? 0);
    const live = workers.filter((x) => x.alive);
    const ready = live.filter((x) => x.phase !== 'starting');
    const w = (ready.length > 0 ? ready : live).sort((a, b) => load(a) - load(b))[0];
    // readable: false, so that the master never reads the request bytes the worker must see
    const socket = new net.Socket({ fd, readable: false, writable: false });
    if (!w || !w.send({ t: 'conn', id: l.id }, socket)) {
      socket.destroy(); // no worker to serve it: reset, and counted
      report.lost++;
      continue;
    }
    report.perWorker[w.pid] = (report.perWorker[w.pid] ?? 0) + 1;
    report.handedOverByMaster++;
    w.handedOver++;
  }
}

/** `PID:n,PID:n` for the log, or undefined when empty. */
function pidList(byPid: Record<number, number>): string | undefined {
  return Object.entries(byPid).map(([pid, n]) => `${pid}:${n}`).join(',') || undefined;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
