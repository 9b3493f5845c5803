/**
 * The no-cut close of listening sockets (docs/ARCHITECTURE.md, "The drain protocol").
 *
 * On Linux the last close() of a listener resets every connection in its accept queue and every
 * handshake in progress. So: (1) gate — a socket filter drops new SYNs (new clients retransmit and
 * then get ECONNREFUSED) while handshakes in progress still complete; a unix socket path is
 * unlinked; (2) drain — the workers empty the kernel queue in bounded batches, spread by load,
 * until the kernel itself says no handshake is in progress and the queue is empty; (3) close —
 * workers close their fds, the master re-checks the queue (accepting and handing over anything a
 * late syncookie handshake put there) and closes last.
 */
import { unlinkSync } from 'node:fs';
import net from 'node:net';
import type { Native } from '../native/index.js';
import { procTcpCounts } from '../native/index.js';
import type { Logger } from '../shared/log.js';
import { errorMessage } from '../shared/errors.js';
import type { ToMaster } from '../shared/ipc.js';
import { closeHandle, family, type Listener } from './listeners.js';
import type { WorkerProc } from './workers.js';

export type DrainReport = {
  mode: 'gate' | 'fallback';
  queuedAtGate: number;
  acceptedInDrain: number;
  /** Connections the kernel still held when the last fd was closed (lost: must be 0). */
  leftAtClose: number;
  handedOverByMaster: number;
  rounds: number;
  gateToCloseMs: number;
  perWorker: Record<number, number>;
  cappedOut: boolean;
};

const ROUND_REPLY_MS = 250;
const BATCH_MAX = 512;
/** Before the master's own close: wait a couple of loopback RTTs for a late syncookie handshake. */
const LAST_CHECK_DELAY_MS = 3;

export type DrainDeps = { native: Native | undefined; log: Logger; capMs: number };

/** Gate, drain and close the given listeners, using the given (live) workers that hold them. */
export async function drainAndClose(listeners: Listener[], workers: WorkerProc[], deps: DrainDeps): Promise<DrainReport> {
  const { native, log } = deps;
  const started = Date.now();
  const report: DrainReport = {
    mode: native ? 'gate' : 'fallback', queuedAtGate: 0, acceptedInDrain: 0, leftAtClose: 0,
    handedOverByMaster: 0, rounds: 0, gateToCloseMs: 0, perWorker: {}, cappedOut: false,
  };
  const open = listeners.filter((l) => l.state !== 'closed');

  // 1. gate
  for (const l of open) {
    if (l.spec.kind === 'unix') {
      try { unlinkSync(l.spec.path); } catch { /* already gone */ }
      l.state = 'gated';
    } else if (native) {
      try {
        native.gate(l.fd);
        l.state = 'gated';
        report.queuedAtGate += native.acceptQueue(l.fd).queued;
      } catch (err) {
        log.alert('gate-failed', { listener: l.address, error: errorMessage(err) });
      }
    }
  }
  log.notice('drain-gate', { listeners: open.length, queued: report.queuedAtGate, mode: report.mode });

  // 2. drain
  if (native) {
    const deadline = started + deps.capMs;
    const pending = new Set(open);
    while (pending.size > 0) {
      for (const l of [...pending]) if (await settled(l, native, workers)) pending.delete(l);
      if (pending.size === 0) break;
      if (Date.now() >= deadline) { report.cappedOut = true; break; }
      report.rounds++;
      await acceptRound([...pending], workers, native, report);
    }
    if (report.cappedOut) log.alert('drain-capped', { ms: deps.capMs, pending: [...pending].map((l) => l.address).join(',') });
  }

  // 3. close: workers first, then the master (owner of the last fd)
  const ids = open.map((l) => l.id);
  await Promise.all(workers.filter((w) => w.alive).map((w) => w.ask((seq) => ({ t: 'close-listeners', ids, seq }), 2_000)));
  if (native) await new Promise((r) => setTimeout(r, LAST_CHECK_DELAY_MS));
  for (const l of open) {
    if (native && l.spec.kind === 'tcp') report.handedOverByMaster += handOver(l, native, workers);
    const left = l.spec.kind === 'tcp' ? (native ? native.acceptQueue(l.fd).queued : procTcpCounts(l.port).queued) : 0;
    report.leftAtClose += left;
    closeHandle(l);
  }
  report.gateToCloseMs = Date.now() - started;
  const level = report.leftAtClose > 0 ? 'alert' : 'notice';
  log.log(level, 'drain-closed', {
    ms: report.gateToCloseMs, queued_at_gate: report.queuedAtGate, accepted_in_drain: report.acceptedInDrain,
    handed_over: report.handedOverByMaster, left_at_close: report.leftAtClose, rounds: report.rounds, mode: report.mode,
    per_worker: Object.entries(report.perWorker).map(([pid, n]) => `${pid}:${n}`).join(',') || undefined,
  });
  if (!native) log.alert('drain-fallback', { left_at_close: report.leftAtClose, note: 'no socket filter: connections the kernel held at close were reset' });
  return report;
}

/** Half-open handshakes first, then the queue: in this order, so nothing can slip in between. */
async function settled(l: Listener, native: Native, workers: WorkerProc[]): Promise<boolean> {
  if (l.spec.kind === 'tcp') return native.halfOpen(l.port, family(l)) === 0 && native.acceptQueue(l.fd).queued === 0;
  // unix: no queue figure; the path is gone, so the queue is empty once every worker found it empty
  const replies = await Promise.all(workers.filter((w) => w.alive).map((w) => w.ask<Extract<ToMaster, { t: 'accepted' }>>((seq) => ({ t: 'drain-accept', id: l.id, max: BATCH_MAX, seq }), ROUND_REPLY_MS)));
  return replies.every((r) => r !== undefined && r.empty && r.n === 0);
}

/** One round: each worker accepts a batch sized by the queue and by how idle it is. */
async function acceptRound(pending: Listener[], workers: WorkerProc[], native: Native, report: DrainReport): Promise<void> {
  const live = workers.filter((w) => w.alive);
  if (live.length === 0) { await new Promise((r) => setTimeout(r, 5)); return; }
  const asks: Array<Promise<void>> = [];
  for (const l of pending) {
    const queued = l.spec.kind === 'tcp' ? native.acceptQueue(l.fd).queued : BATCH_MAX;
    if (queued === 0) { asks.push(new Promise((r) => setTimeout(r, 1))); continue; }
    const weights = live.map((w) => 1 / (1 + w.stats.inflight));
    const total = weights.reduce((a, b) => a + b, 0);
    live.forEach((w, i) => {
      const max = Math.min(BATCH_MAX, Math.max(1, Math.ceil((queued * weights[i]!) / total)));
      asks.push(w.ask<Extract<ToMaster, { t: 'accepted' }>>((seq) => ({ t: 'drain-accept', id: l.id, max, seq }), ROUND_REPLY_MS).then((r) => {
        if (!r) return;
        report.acceptedInDrain += r.n;
        report.perWorker[w.pid] = (report.perWorker[w.pid] ?? 0) + r.n;
      }));
    });
  }
  await Promise.all(asks);
}

/** Accept what is still queued (a late handshake) and pass each connection to the least busy worker. */
function handOver(l: Listener, native: Native, workers: WorkerProc[]): number {
  let n = 0;
  for (let i = 0; i < 10_000; i++) {
    const fd = native.accept(l.fd);
    if (fd === -1) break;
    if (fd === -2) continue;
    const w = workers.filter((x) => x.alive).sort((a, b) => a.stats.inflight - b.stats.inflight)[0];
    const socket = new net.Socket({ fd, readable: true, writable: true });
    if (!w || !w.send({ t: 'conn', id: l.id }, socket)) socket.destroy();
    else n++;
  }
  return n;
}
