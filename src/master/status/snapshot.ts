/**
 * Build the status snapshot from what the master keeps: its state, listeners, totals and the
 * figures each worker reports every 500 ms. Nothing here runs on the serving path: it runs when
 * someone asks (/server-status, /metrics, `quiesce status`), reading the kernel's accept queues
 * and /proc for RSS and CPU at that moment.
 */
import { PROTOCOLS, type Protocol } from '../../shared/ipc.js';
import { hostname } from 'node:os';
import { quiesceVersion } from '../upgrade.js';
import type { Master } from '../master.js';
import type { WorkerProc } from '../workers.js';
import type { Native } from '../../native/index.js';
import { procTcpCounts } from '../../native/index.js';
import type { Listener } from '../listeners.js';
import type { WorkerState } from '../../shared/ipc.js';
import { CpuMeter, readProc } from './proc.js';
import { stateOf } from './state.js';
import { fmtDuration } from './format.js';
import { CODE_CLASSES, figures, total } from '../../shared/request-metrics.js';
import { SCHEMA_VERSION, STATES, type GenerationView, type ListenerView, type MasterStateName, type ProgressView, type SlotView, type StatusSnapshot } from './types.js';

/** What snapshot() hands over from the master's private fields. */
/** Figures of workers that have exited, kept by the master as each one goes. */
export type ExitedTotals = { requests: number; bytesSent: number; accepted: number; completed: number; refused: number; shed: number; byProtocol?: Partial<Record<Protocol, number>> };

/** Connections and requests by protocol, when some worker serves TLS (or did). */
function protocolTotals(exited: ExitedTotals, live: readonly WorkerProc[]): StatusSnapshot['protocols'] {
  if (!exited.byProtocol && !live.some((w) => w.stats.protocols)) return undefined;
  const out = Object.fromEntries(PROTOCOLS.map((p) => [p, { connections: 0, requests: exited.byProtocol?.[p] ?? 0 }])) as NonNullable<StatusSnapshot['protocols']>;
  for (const w of live) {
    for (const p of PROTOCOLS) {
      const x = w.stats.protocols?.[p];
      if (x) { out[p].connections += x.connections; out[p].requests += x.requests; }
    }
  }
  return out;
}
export type MasterPrivate = { native: Native | undefined; exited: ExitedTotals };

const cpuMeters = new WeakMap<object, CpuMeter>();
const rateMeters = new WeakMap<object, RateMeter>();

/**
 * Responses per second per key (a generation, a worker pid): since the newest sample at least 1 s
 * old (samples are kept from earlier snapshots, one per 250 ms, for 5 s), else since the oldest
 * sample at least 200 ms old, else since the start.
 */
class RateMeter {
  private readonly samples = new Map<string, Array<{ t: number; n: number }>>();
  rate(key: string, n: number, startedAt: number, now: number): number {
    let list = this.samples.get(key);
    if (!list) { list = []; this.samples.set(key, list); }
    while (list.length > 1 && now - list[1]!.t >= 1000) list.shift(); // keep one sample >= 1 s old
    while (list.length > 0 && now - list[0]!.t > 5000) list.shift();
    const base = list[0] !== undefined && now - list[0].t >= 200 ? list[0] : { t: startedAt, n: 0 };
    const last = list.at(-1);
    if (!last || now - last.t >= 250) list.push({ t: now, n });
    return now > base.t ? round1(((n - base.n) * 1000) / (now - base.t)) : 0;
  }
  keep(keys: Set<string>): void {
    for (const key of this.samples.keys()) if (!keys.has(key)) this.samples.delete(key);
  }
}
const round1 = (x: number): number => Math.round(x * 10) / 10;

export function buildSnapshot(master: Master, priv: MasterPrivate): StatusSnapshot {
  const now = Date.now();
  const st = stateOf(master);
  const cfg = master.cfg;
  const live = [...master.workers].sort((a, b) => a.generation.n - b.generation.n || a.slot - b.slot || a.startedAt - b.startedAt);
  const serving = master.generation?.n ?? 0;

  let cpu = cpuMeters.get(master);
  if (!cpu) { cpu = new CpuMeter(); cpuMeters.set(master, cpu); }
  cpu.keep(new Set(live.map((w) => w.pid)));
  let rates = rateMeters.get(master);
  if (!rates) { rates = new RateMeter(); rateMeters.set(master, rates); }
  rates.keep(new Set([...live.map((w) => `w${w.pid}`), ...live.map((w) => `g${w.generation.n}`)]));
  const slots: SlotView[] = live.map((w) => workerSlot(w, now, cpu, rates));

  // open slots: the serving generation's slots with no process (a crash being respawned, a stop)
  if (master.generation && master.state.s !== 'starting') {
    const size = master.generation.boot.config.workers;
    for (let slot = 0; slot < size; slot++) {
      if (live.some((w) => w.generation.n === serving && w.slot === slot)) continue;
      slots.push(openSlot(slot, serving));
    }
    slots.sort((a, b) => a.generation - b.generation || a.slot - b.slot || (a.pid === null ? 1 : 0) - (b.pid === null ? 1 : 0));
  }

  const listeners = master.listeners.map((l) => listenerView(l, priv.native));
  const byState: Record<string, number> = Object.fromEntries(STATES.map((s) => [s.key, 0]));
  for (const s of slots) byState[s.state] = (byState[s.state] ?? 0) + 1;
  const busy = slots.filter((s) => s.state === 'R' || s.state === 'W' || s.state === 'K' || s.state === 'C' || s.state === 'G').length;

  const sum = (f: (w: WorkerProc) => number): number => live.reduce((a, w) => a + f(w), 0);
  const t = master.totals;
  const retired: Record<string, number> = {};
  for (const [k, v] of Object.entries(t.retired)) if (v) retired[k] = v;

  const all = master.httpTotal();
  const state = master.state.s as MasterStateName;
  const gens = generationViews(live, serving, master.state.s === 'reloading' && 'to' in master.state ? master.state.to : undefined, now);
  for (const g of gens) {
    const gen = live.find((w) => w.generation.n === g.n)?.generation ?? (master.generation?.n === g.n ? master.generation : undefined);
    if (!gen || gen.boot.config.metrics !== 'on') continue;
    const c = master.httpCounts(gen);
    g.http = { ...figures(c, rates.rate(`g${g.n}`, total(c), gen.startedAt, now)), latency: c.latency, sumMs: Math.round(c.sumMs * 1000) / 1000 };
  }
  return {
    schema: SCHEMA_VERSION,
    server: { name: 'quiesce', version: quiesceVersion(), node: process.version, hostname: hostname(), mpm: 'prefork' },
    pid: process.pid,
    state,
    phase: 'phase' in master.state ? master.state.phase : undefined,
    stateSinceMs: now - master.state.since,
    uptimeMs: now - master.startedAt,
    startedAt: new Date(master.startedAt).toISOString(),
    now: new Date(now).toISOString(),
    generation: serving,
    generations: gens.map((g) => g.n),
    generationInfo: gens,
    masters: [...master.masters, master.masterInfo()],
    drainMode: master.drainMode,
    drainModeReason: master.drainModeReason || undefined,
    config: {
      workers: cfg.workers, gracefulTimeoutMs: cfg.gracefulTimeout, drainDelayMs: cfg.drainDelay, drainCapMs: cfg.drainCap,
      idleGraceMs: cfg.idleGrace, readyTimeoutMs: cfg.readyTimeout, reloadSoakMs: cfg.reloadSoak,
    },
    listeners,
    scoreboard: slots.map((s) => s.state).join(''),
    workers: slots,
    counts: { busy, idle: byState['_'] ?? 0, processes: live.length, byState },
    totals: {
      requests: priv.exited.requests + sum((w) => w.stats.requests),
      bytesSent: priv.exited.bytesSent + sum((w) => w.stats.bytesSent),
      accepted: priv.exited.accepted + sum((w) => w.stats.accepted ?? 0),
      completed: priv.exited.completed + sum((w) => w.stats.completed ?? 0),
      refused: priv.exited.refused + sum((w) => w.stats.refused ?? 0),
      shed: priv.exited.shed + sum((w) => w.stats.shed ?? 0),
      cut: t.cut,
      forced: t.forced,
      drains: t.drains,
      reloads: t.reloads,
      reloadsFailed: t.reloadsFailed,
      upgrades: t.upgrades,
      retired,
      responses: total(all),
      responsesByClass: Object.fromEntries(CODE_CLASSES.map((k, i) => [k, all.codes[i]!])),
    },
    progress: progressViews(master, live, listeners, now),
    lastDrain: master.lastDrain,
    lastReloadMs: st.lastReloadMs,
    deploys: [...master.deploys],
    ...(master.spareWorkers.some((w) => w.alive) ? { spares: master.spareWorkers.filter((w) => w.alive).map((w) => ({ pid: w.pid, generation: w.generation.n, ready: w.phase === 'ready' })) } : {}),
    protocols: protocolTotals(priv.exited, live),
  };
}

function workerSlot(w: WorkerProc, now: number, cpu: CpuMeter, rates: RateMeter): SlotView {
  const s = w.stats;
  // the master knows some states before the worker's next report does
  let state: WorkerState = s.state;
  if (w.phase === 'starting') state = 'S';
  else if (w.phase === 'ready' && state === 'S') state = '_'; // ready, but its first report is not in yet
  else if (w.phase === 'retiring' && state !== 'G' && state !== 'I') state = 'G';
  if (w.hung) state = 'H';
  const proc = readProc(w.pid);
  const ageMs = now - w.startedAt;
  // figures are up to 500 ms old: age the durations by the report's age
  const late = s.at !== undefined ? Math.max(0, Math.min(now - s.at, 5_000)) : 0;
  return {
    slot: w.slot, pid: w.pid, generation: w.generation.n, phase: w.phase, retireReason: w.retireReason,
    state, stateMs: state === s.state && s.stateMs !== undefined ? Math.min(ageMs, s.stateMs + late) : w.phase === 'retiring' ? now - w.retireStartedAt : ageMs, ageMs,
    retiringMs: w.phase === 'retiring' ? now - w.retireStartedAt : undefined,
    requests: s.requests, bytesSent: s.bytesSent, accepted: s.accepted ?? 0, completed: s.completed ?? 0, refused: s.refused ?? 0,
    connections: s.connections, inflight: s.inflight, drained: s.drained, forced: s.forced,
    current: s.current && { ...s.current, sinceMs: s.current.sinceMs + late },
    rssBytes: proc?.rssBytes ?? null,
    cpuSeconds: proc?.cpuSeconds ?? null,
    cpuPercent: proc ? cpu.percent(w.pid, proc, ageMs, now) : null,
    fileCacheBytes: s.fileCacheBytes,
    http: s.http && figures(s.http, rates.rate(`w${w.pid}`, total(s.http), w.startedAt, now)),
  };
}

function openSlot(slot: number, generation: number): SlotView {
  return {
    slot, pid: null, generation, phase: 'open', state: '.', stateMs: 0, ageMs: 0,
    requests: 0, bytesSent: 0, accepted: 0, completed: 0, refused: 0, connections: 0, inflight: 0, drained: 0, forced: 0,
    rssBytes: null, cpuSeconds: null, cpuPercent: null,
  };
}

function listenerView(l: Listener, native: Native | undefined): ListenerView {
  const v: ListenerView = { id: l.id, address: l.address, kind: l.spec.kind, state: l.state, drainMode: l.drainMode, queued: null, backlog: null, halfOpen: null };
  if (l.state === 'closed' || l.spec.kind !== 'tcp') return v;
  try {
    if (native) {
      const q = native.acceptQueue(l.fd);
      v.queued = q.queued;
      v.backlog = q.backlog;
      v.halfOpen = native.halfOpen(l.port, l.family);
    } else {
      const c = procTcpCounts(l.port);
      v.queued = c.queued;
      v.halfOpen = c.halfOpen;
    }
  } catch { /* unknown stays null */ }
  return v;
}

function generationViews(live: WorkerProc[], serving: number, reloadingTo: number | undefined, now: number): GenerationView[] {
  const byGen = new Map<number, WorkerProc[]>();
  for (const w of live) byGen.set(w.generation.n, [...(byGen.get(w.generation.n) ?? []), w]);
  if (serving > 0 && !byGen.has(serving)) byGen.set(serving, []);
  return [...byGen.entries()].sort((a, b) => a[0] - b[0]).map(([n, ws]) => {
    const started = ws[0]?.generation.startedAt ?? now;
    return {
      n,
      current: reloadingTo !== undefined ? n === reloadingTo : n === serving,
      startedAt: new Date(started).toISOString(),
      ageMs: now - started,
      workers: ws.length,
      starting: ws.filter((w) => w.phase === 'starting').length,
      ready: ws.filter((w) => w.phase === 'ready').length,
      retiring: ws.filter((w) => w.phase === 'retiring').length,
      requests: ws.reduce((a, w) => a + w.stats.requests, 0),
      connections: ws.reduce((a, w) => a + w.stats.connections, 0),
      inflight: ws.reduce((a, w) => a + w.stats.inflight, 0),
      master: process.pid,
      node: process.version,
      quiesce: quiesceVersion(),
    };
  });
}

function progressViews(master: Master, live: WorkerProc[], listeners: ListenerView[], now: number): ProgressView[] {
  const out: ProgressView[] = [];
  const cfg = master.cfg;
  const queued = listeners.filter((l) => l.state !== 'closed').reduce((a, l) => a + (l.queued ?? 0), 0);
  const figures = (ws: WorkerProc[]) => ({
    workersLeft: ws.length,
    connectionsLeft: ws.reduce((a, w) => a + w.stats.connections, 0),
    inflightLeft: ws.reduce((a, w) => a + w.stats.inflight, 0),
  });
  const line = (p: Omit<ProgressView, 'text'>, what: string): ProgressView => ({
    ...p,
    text: `${what}: ${plural(p.connectionsLeft, 'connection')} left (${p.inflightLeft} in flight) in ${plural(p.workersLeft, 'worker')}, ` +
      `queue ${p.queued}, ${fmtDuration(p.elapsedMs)} of ${fmtDuration(p.timeoutMs)}`,
  });
  const s = master.state;
  if (s.s === 'draining') {
    out.push(line({ kind: 'drain', phase: s.phase, generations: [...new Set(live.map((w) => w.generation.n))], elapsedMs: now - s.since,
      timeoutMs: cfg.drainDelay + cfg.drainCap, queued, ...figures(live) }, s.phase === 'lame-duck' ? 'stop: lame duck' : 'stop: draining the accept queues'));
  } else if (s.s === 'stopping') {
    out.push(line({ kind: 'stop', phase: s.fast ? 'fast' : 'finishing', generations: [...new Set(live.map((w) => w.generation.n))], elapsedMs: now - s.since,
      timeoutMs: s.fast ? 0 : cfg.gracefulTimeout, queued, ...figures(live) }, s.fast ? 'fast stop' : 'stop: workers finishing'));
  } else if (s.s === 'reloading') {
    const fresh = live.filter((w) => w.generation.n === s.to);
    const starting = fresh.filter((w) => w.phase === 'starting').length;
    const p = line({ kind: 'reload', phase: starting > 0 ? 'starting' : 'soaking', generations: [s.to], elapsedMs: now - s.since,
      timeoutMs: cfg.readyTimeout + cfg.reloadSoak, queued, ...figures(fresh) }, `reload to generation ${s.to}`);
    p.text = `reload to generation ${s.to}: ${fresh.length - starting}/${fresh.length} workers ready${starting === 0 ? ', soaking' : ''}, ` +
      `queue ${queued}, ${fmtDuration(p.elapsedMs)} of ${fmtDuration(p.timeoutMs)}`;
    out.push(p);
  }
  const up = master.upgradeInProgress;
  if (up) {
    out.push({ kind: 'upgrade', phase: 'starting', generations: [], elapsedMs: now - up.since, timeoutMs: cfg.readyTimeout + cfg.reloadSoak,
      workersLeft: 0, connectionsLeft: 0, inflightLeft: 0, queued,
      text: `upgrade: new master ${up.pid} starting its workers (ready, then a ${fmtDuration(cfg.reloadSoak)} soak), ${fmtDuration(now - up.since)} so far` });
  }
  if (s.s === 'serving' || s.s === 'reloading') {
    const retiring = live.filter((w) => w.phase === 'retiring');
    const gens = [...new Set(retiring.map((w) => w.generation.n))].sort((a, b) => a - b);
    for (const g of gens) {
      const ws = retiring.filter((w) => w.generation.n === g);
      const since = Math.min(...ws.map((w) => w.retireStartedAt));
      out.push(line({ kind: 'retire', phase: 'finishing', generations: [g], elapsedMs: now - since,
        timeoutMs: ws[0]!.generation.boot.config.gracefulTimeout, queued, ...figures(ws) }, `generation ${g} retiring`));
    }
  }
  return out;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
