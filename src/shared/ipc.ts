/**
 * The master <-> worker protocol, over the child_process IPC channel. Every message has a `t`.
 * The listening sockets are inherited at the fork (WorkerBoot.listeners); a connection the master
 * accepted at the end of a drain travels with a `conn` message.
 * See docs/ARCHITECTURE.md, "IPC messages".
 */
import type { Config } from './config.js';
import type { GateSockets, TcpDrainMode } from '../native/gate.js';
import type { RequestCounts } from './request-metrics.js';

/** What a worker is told at fork, in the QUIESCE_WORKER environment variable (JSON). */
export type WorkerBoot = {
  slot: number;
  generation: number;
  /** The real path of the app at the moment the generation started (deploys swap symlinks). */
  appSpec: AppSpecWire;
  config: Config;
  /**
   * The listeners, each open in the worker from its first instruction as `fd` (the master puts
   * them in its stdio at the fork): a master killed at any moment after the fork leaves the
   * listening sockets, and the connections queued on them, with the workers.
   */
  listeners: ListenerBoot[];
  /** How TCP listeners are gated at a stop (the worker gates them itself if the master dies). */
  drainMode: TcpDrainMode;
  /** The admin listener's bound address as the master prints it ("127.0.0.1:8081", "unix:PATH"; "https://127.0.0.1:8081" when it speaks HTTPS), "" when off. */
  admin: string;
  /**
   * The worker's master is a new master in an upgrade that has not taken over yet: the old one
   * still serves the same sockets, so a worker losing its master only retires (no gate), until
   * `sole` says its master holds them alone.
   */
  successor?: boolean;
  /**
   * A warm spare (`--spare-worker on`): it loads the app and reports ready but accepts nothing
   * until `serve` (the master promotes it into the slot of a worker that died or hung).
   */
  spare?: boolean;
  /**
   * The TLS load board (master/tls.ts TlsBoard): shared memory open as `fd`, one 32-bit cell per
   * worker of the generation from `base` (`slots` of them); this worker's is `base + slot`.
   */
  board?: { fd: number; base: number; slots: number };
};

/** Cells per generation on the TLS load board (two generations at most run at once: two halves). */
export const BOARD_SLOTS = 1024;
/** The board's size in bytes. */
export const BOARD_BYTES = 2 * BOARD_SLOTS * 4;

/** One certificate chain and its (unencrypted) key, PEM; `ca`: clients must present a certificate it signed. */
export type TlsContextWire = {
  cert: string; key: string; ca?: string;
  /** More certificates (a listen entry's `sni`), each served to clients asking for one of its DNS names. */
  sni?: Array<{ names: string[]; cert: string; key: string }>;
};
/** A generation's TLS material: contexts (ListenerBoot.tls indexes them), shared session ticket keys (base64, 48 bytes). */
/**
 * A generation's TLS material. `ticketSecret` (base64, made once per master, so that every worker of
 * every generation agrees) derives the session ticket keys of each period of `ticketPeriodMs`
 * (worker/tls.ts ticketKeysAt): all workers rotate at the same instants without a message.
 */
export type TlsWire = { contexts: TlsContextWire[]; ticketSecret: string; ticketPeriodMs: number; http2: boolean };

export type AppSpecWire =
  | { kind: 'site'; fileCache?: number; staticMaxAge?: number; staticImmutable?: readonly string[] }
  | { kind: 'dir'; root: string; autoindex: boolean; fileCache?: number; staticMaxAge?: number; staticImmutable?: readonly string[] }
  | { kind: 'module'; path: string };

/** `inherited`: passed by the service manager, which keeps it (never gated; its queue waits for the next instance). */
export type ListenerInfo = { id: number; kind: 'tcp' | 'unix'; address: string; port: number; path: string; family: 4 | 6; inherited?: boolean };

/**
 * A listener as the worker gets it: `fd` is its number in the worker (stdio slot 5 onwards), and
 * `gate` its reuseport gate's sockets, numbered in the worker too (after every listener).
 */
export type ListenerBoot = ListenerInfo & {
  fd: number; gate?: GateSockets;
  /** A TLS listener: its context in the TlsWire the worker asks for (`tls-ask`: key material never goes in the environment). */
  tls?: number;
};

export type ToWorker =
  /** Lame duck: keep serving, but every response carries Connection: close. */
  | { t: 'lame-duck' }
  /** Accept up to `max` connections from the kernel queue of listener `id` right now; with `close`, then close that listener in the same tick. */
  | { t: 'drain-accept'; id: number; max: number; close?: boolean; seq: number }
  /** Close these listeners (the master keeps its own fd). */
  | { t: 'close-listeners'; ids: number[]; seq: number }
  /** Retire: stop accepting, finish every connection, exit. */
  | { t: 'retire'; reason: RetireReason }
  /** Graceful timeout passed: end what is left, count it, exit. */
  | { t: 'force' }
  | { t: 'status-request'; seq: number }
  /**
   * During a reload's soak, to the old generation: give this share (0..1) of responses
   * `Connection: close`, so that keep-alive clients reconnect and the kernel spreads them over
   * both generations (0 stops it).
   */
  | { t: 'steer'; share: number }
  /** A connection the master accepted itself at the very end of a drain; the socket comes along. */
  | { t: 'conn'; id: number }
  /** The master took over from the old one (an upgrade committed): gate the sockets if it goes. */
  | { t: 'sole' }
  /**
   * An upgrade's new master holds these sockets too (on: from its start; off: it went, the upgrade
   * rolled back): if this master goes meanwhile, retire without gating them, the new one serves them.
   */
  | { t: 'heir'; on: boolean }
  /** The answer to `tls-ask`: the generation's TLS material (no contexts when only the app brings TLS). */
  | { t: 'tls'; tls: TlsWire }
  /** To a warm spare: start accepting on the listeners (it takes a slot). */
  | { t: 'serve' };

export type RetireReason = 'stop' | 'reload' | 'recycle' | 'error' | 'rollback' | 'restart' | 'master-gone' | 'scale-down' | 'memory' | 'hung' | 'upgrade';

/** A worker sends its WorkerStats this often; the master's views of them are this old at most. */
export const STATS_INTERVAL_MS = 500;

export type ToMaster =
  | { t: 'ready'; pid: number }
  /** The worker serves TLS: send it the generation's TLS material. */
  | { t: 'tls-ask' }
  /** The app could not load or init threw: do not respawn (the error is shown to the operator). */
  | { t: 'fatal'; code: string; message: string }
  /** The worker wants to retire (max requests, uncaught error): start a replacement first. */
  | { t: 'retire-me'; reason: RetireReason; detail: string }
  | { t: 'accepted'; id: number; n: number; seq: number }
  | { t: 'listeners-closed'; seq: number }
  | { t: 'forced'; n: number }
  | { t: 'stats'; stats: WorkerStats }
  /** The event loop is alive (sent instead of stats when QUIESCE_STATS=off; stats are the heartbeat otherwise). */
  | { t: 'beat' };

/**
 * Flat, serialisable per-worker figures (the scoreboard slot's worker-side part), sent every
 * 500 ms. Counters are cumulative since the worker started. See docs/STATUS-SCHEMA.md.
 */
export type WorkerStats = {
  requests: number;
  /** Bytes written to client sockets (headers and bodies), counted when a response or a connection closes. */
  bytesSent: number;
  connections: number;
  inflight: number;
  /** Connections emptied from the kernel queue by drain-accept. */
  drained: number;
  forced: number;
  state: WorkerState;
  /** How long the worker has shown `state` (ms, at the 500 ms resolution of the reports). */
  stateMs?: number;
  /** The worker's clock (Date.now()) when it made this report: the master ages stateMs and current by it. */
  at?: number;
  /** Connections accepted (every path: libuv, drain-accept, handed over by the master). */
  accepted?: number;
  /** Responses sent in full. */
  completed?: number;
  /** Responses refused by design: 503 answered while lame-duck or retiring (the health path), forced ones excluded. */
  refused?: number;
  /** Requests answered 503 by --queue-timeout (they waited past it for a worker). */
  shed?: number;
  current?: { method: string; path: string; sinceMs: number };
  /** Static files: bytes of content held by the worker's file cache (never above --file-cache). */
  fileCacheBytes?: number;
  /** The longest event-loop delay since the previous report (ms, monitorEventLoopDelay at 100 ms resolution). */
  loopDelayMs?: number;
  /** The worker's resident memory (RSS, bytes) at this report. */
  rssBytes?: number;
  /** Responses by status class and latency bucket, cumulative (absent with --metrics off). */
  http?: RequestCounts;
  /** V8's heap in use and its limit (bytes): a heap near its limit thrashes in GC before V8 aborts. */
  heapUsedBytes?: number;
  heapLimitBytes?: number;
  /** With TLS served: connections open now and requests since the start, by protocol (HTTP/1.1 in the clear, over TLS, HTTP/2). */
  protocols?: Record<Protocol, { connections: number; requests: number }>;
};

export const PROTOCOLS = ['http/1.1', 'https/1.1', 'h2', 'h2c'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

/**
 * mod_status keys: _ waiting, S starting, R reading (a connection with no request yet), W writing
 * (a request in progress), K keep-alive, C closing, G gracefully finishing, I idle cleanup
 * (retiring, only idle connections left), H hung (its event loop silent past --worker-timeout: being
 * replaced, then killed; set by the master), and . an open slot (no process).
 */
export type WorkerState = '_' | 'S' | 'R' | 'W' | 'K' | 'C' | 'G' | 'I' | 'H' | '.';

export function isToMaster(m: unknown): m is ToMaster {
  return typeof m === 'object' && m !== null && typeof (m as { t?: unknown }).t === 'string';
}
export function isToWorker(m: unknown): m is ToWorker {
  return isToMaster(m);
}
