/**
 * The status snapshot: one flat, serialisable record of the master and its scoreboard, the single
 * source of /server-status (HTML, ?auto, ?json), /metrics and `quiesce status`. The schema is
 * documented field by field in docs/STATUS-SCHEMA.md; bump SCHEMA_VERSION on an incompatible change.
 */
import type { Protocol } from '../../shared/ipc.js';
import type { WorkerState } from '../../shared/ipc.js';
import type { DrainReport } from '../drain.js';
import type { TcpDrainMode } from '../../native/gate.js';
import type { ListenerDrainMode } from '../listeners.js';
import type { HttpFigures } from '../../shared/request-metrics.js';

export const SCHEMA_VERSION = 1;

/** Every scoreboard key, in display order, with its meaning (mod_status' words where they exist). */
export const STATES: ReadonlyArray<{ key: WorkerState; name: string; doc: string }> = [
  { key: '_', name: 'waiting', doc: 'Waiting for a connection' },
  { key: 'S', name: 'starting', doc: 'Starting up (loading the app)' },
  { key: 'R', name: 'reading', doc: 'Reading a request (a connection with no request yet)' },
  { key: 'W', name: 'writing', doc: 'Sending a reply (a request in progress)' },
  { key: 'K', name: 'keepalive', doc: 'Keep-alive (idle connections)' },
  { key: 'C', name: 'closing', doc: 'Closing connection' },
  { key: 'G', name: 'graceful', doc: 'Gracefully finishing (retiring, requests still running)' },
  { key: 'I', name: 'idlecleanup', doc: 'Idle cleanup (retiring, closing idle keep-alive connections)' },
  { key: 'H', name: 'hung', doc: 'Hung (event loop silent past --worker-timeout: replaced, then killed)' },
  { key: '.', name: 'open', doc: 'Open slot with no current process' },
];

export type MasterStateName = 'starting' | 'serving' | 'reloading' | 'draining' | 'stopping' | 'stopped';

/** One scoreboard slot: a worker process, or an open slot of the serving generation (`pid: null`, state `.`). */
export type SlotView = {
  slot: number;
  pid: number | null;
  generation: number;
  /** The master's view: starting → ready → retiring; `open` for an open slot. */
  phase: 'starting' | 'ready' | 'retiring' | 'exited' | 'open';
  retireReason?: string;
  /** Scoreboard key. */
  state: WorkerState;
  /** Time in this state (ms). */
  stateMs: number;
  /** Process age (ms); 0 for an open slot. */
  ageMs: number;
  /** Since the master told it to retire (ms). */
  retiringMs?: number;
  requests: number;
  bytesSent: number;
  accepted: number;
  completed: number;
  refused: number;
  connections: number;
  inflight: number;
  drained: number;
  forced: number;
  /** The oldest request in progress: method, path (cut to 64 characters), age. */
  current?: { method: string; path: string; sinceMs: number };
  /** Resident set size, from /proc/PID/statm (null off Linux or when the process is gone). */
  rssBytes: number | null;
  /** User + system CPU time since the process started, from /proc/PID/stat. */
  cpuSeconds: number | null;
  /** CPU use since the previous snapshot (or over its life for the first one), 100 = one core. */
  cpuPercent: number | null;
  /** Static files: bytes held by the worker's content cache (--file-cache); absent for apps. */
  fileCacheBytes?: number;
  /** This worker's responses: by status class, rate, 5xx share, p50/p99 (absent with --metrics off). */
  http?: HttpFigures;
};

export type ListenerView = {
  id: number;
  address: string;
  kind: 'tcp' | 'unix';
  state: 'open' | 'gated' | 'closed';
  /** How this listener is gated at a stop: the master's TCP mode, or `unlink` for a unix socket. */
  drainMode: ListenerDrainMode;
  /** Connections waiting in the kernel's accept queue (null when unknown: unix sockets, closed). */
  queued: number | null;
  /** The accept queue's limit (listen backlog, capped by somaxconn), when known. */
  backlog: number | null;
  /** Handshakes in progress (SYN_RECV) on the port, when known. */
  halfOpen: number | null;
};

export type GenerationView = {
  n: number;
  /** The generation new connections go to once the current reload, if any, commits. */
  current: boolean;
  startedAt: string;
  ageMs: number;
  workers: number;
  starting: number;
  ready: number;
  retiring: number;
  requests: number;
  connections: number;
  inflight: number;
  /**
   * Responses by status class, rate, 5xx share, p50/p99 (absent with --metrics off), and the raw
   * histogram: `latency[b]` responses in bucket b (upper bounds in docs/STATUS-SCHEMA.md), `sumMs`.
   */
  http?: HttpFigures & { latency: number[]; sumMs: number };
  /** The master that runs it, and the Node and quiesce versions its workers run (every master runs its own). */
  master: number;
  node: string;
  quiesce: string;
};

/** A master of this server: the current one, and those it took over from (upgrades), with the versions each ran. */
export type MasterView = {
  pid: number;
  startedAt: string;
  node: string;
  quiesce: string;
  /** When it handed over to the next master (absent for the current one). */
  until?: string;
  /** The generations it started. */
  generations: number[];
};

/** Something the operator is waiting for: a stop's drain, a reload, a generation retiring. */
export type ProgressView = {
  kind: 'drain' | 'stop' | 'reload' | 'retire' | 'upgrade';
  /** drain: lame-duck | drain; stop: finishing; reload: starting | soaking; retire: finishing. */
  phase: string;
  /** The generation(s) concerned (retire: the retiring one; reload: the new one). */
  generations: number[];
  elapsedMs: number;
  /** The bound this step runs against (drain: --drain-delay + --drain-cap; stop and retire: --graceful-timeout; reload: --ready-timeout + --reload-soak). */
  timeoutMs: number;
  workersLeft: number;
  connectionsLeft: number;
  inflightLeft: number;
  /** Sum of the accept queues of the listeners still open or gated. */
  queued: number;
  /** One line, for terminals and the page. */
  text: string;
};

export type Totals = {
  /** Requests received (every worker since the start, exited ones included). */
  requests: number;
  bytesSent: number;
  /** Connections accepted by the workers. */
  accepted: number;
  /** Responses sent in full. */
  completed: number;
  /** 503s answered by design while lame-duck or retiring (the health path). */
  refused: number;
  /** Requests answered 503 by --queue-timeout: they waited past it for a worker (always 0 without it). */
  shed: number;
  /** Connections the kernel still held when a listener's last fd closed: reset, lost. Must stay 0. */
  cut: number;
  /** Requests ended by the graceful timeout (a 503 or a closed stream). */
  forced: number;
  drains: number;
  reloads: number;
  reloadsFailed: number;
  /** Master upgrades (`quiesce upgrade`, USR2) this server went through. */
  upgrades: number;
  /** Workers that exited, by reason (crash for those not told to). */
  retired: Record<string, number>;
  /** Responses counted by the request metrics since the start, every generation (0 with --metrics off), and by status class. */
  responses: number;
  responsesByClass: Record<string, number>;
};

/** A phase of a reload, for the status page and the probe's timeline. */
export type DeployEvent = {
  at: string;
  /** The new generation. */
  generation: number;
  phase: 'soak-start' | 'judged-ok' | 'judged-worse' | 'judge-abstained' | 'rolled-back' | 'committed' | 'old-retired';
  text: string;
};

export type StatusSnapshot = {
  schema: number;
  server: { name: 'quiesce'; version: string; node: string; hostname: string; mpm: 'prefork' };
  pid: number;
  state: MasterStateName;
  phase?: string;
  stateSinceMs: number;
  uptimeMs: number;
  startedAt: string;
  now: string;
  /** The serving generation. */
  generation: number;
  /** Generations with live workers, ascending. */
  generations: number[];
  generationInfo: GenerationView[];
  /** Every master of this server, oldest first; the last is this one. */
  masters: MasterView[];
  /** How TCP listeners are gated at a stop, and why that mechanism (docs/STATUS-SCHEMA.md). */
  drainMode: TcpDrainMode;
  drainModeReason?: string;
  config: { workers: number; gracefulTimeoutMs: number; drainDelayMs: number; drainCapMs: number; idleGraceMs: number; readyTimeoutMs: number; reloadSoakMs: number };
  listeners: ListenerView[];
  /** One character per entry of `workers`. */
  scoreboard: string;
  workers: SlotView[];
  counts: { busy: number; idle: number; processes: number; byState: Record<string, number> };
  totals: Totals;
  progress: ProgressView[];
  lastDrain?: DrainReport;
  lastReloadMs?: number;
  /** The latest reloads' phases, oldest first (at most 32). */
  deploys: DeployEvent[];
  /** With TLS served: connections open now and requests since the start, by protocol (exited workers' requests included). */
  protocols?: Record<Protocol, { connections: number; requests: number }>;
  /** The warm spares (--spare-worker N): loaded, accepting nothing until one takes a slot; absent when there is none. */
  spares?: Array<{ pid: number; generation: number; ready: boolean }>;
};
