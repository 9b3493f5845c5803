/**
 * The worker process: loads the app, serves the master's listeners, and retires on the master's
 * word (or on its own when the master is gone). It ignores signals from outside: Ctrl-C reaches a
 * whole process group and systemd signals every process of a unit, but only the master decides.
 */
import { preloadOwnModules, tlsModule } from './own-modules.js';
import type * as Http from 'node:http';
import { http } from '../shared/node-http.js';
import net from 'node:net';
import { encodeWorkerRecord, survivePipeLoss, type Fields, type Level } from '../shared/log.js';
import { WORKER_EXIT, errorMessage } from '../shared/errors.js';
import { WORKER_IGNORED_SIGNALS } from '../shared/signals.js';
import { BOARD_BYTES, STATS_INTERVAL_MS, isToWorker, type WorkerStats, type ListenerBoot, type RetireReason, type ToMaster, type ToWorker, type WorkerBoot } from '../shared/ipc.js';
import { Connections } from './connections.js';
import { AccessLogPipe, bodyBytes, combined, json, type AccessEntry } from './access-log.js';
import { loadApp, type LoadedApp } from './app.js';
import { closeSync } from 'node:fs';
import { AppErrorLog, stackOf } from './app-errors.js';
import { RepeatLog } from './repeat-log.js';
import { QueueShed } from './queue-shed.js';
import { answerClientError } from './client-errors.js';
import { kernelDrained, loadNative, type Native } from '../native/index.js';
import { gateTcp } from '../native/gate.js';
import { closeAtOnce } from './close-at-once.js';
import { quickEnd } from './quick-end.js';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { RequestMetrics, TimedResponse } from './request-metrics.js';
import { getHeapStatistics } from 'node:v8';
import type { Server as TlsServer } from 'node:tls';
import type { Http2SecureServer } from 'node:http2';
import type { TlsWire } from '../shared/ipc.js';
import type { H2Listener, PacedAccept, TlsFront } from './tls.js';

/** `front`: where its connections go when it is TLS (worker/tls.ts), `paced`: its accepting there (with the native module); else the http.Server. */
type Listener = { info: ListenerBoot; server?: net.Server; front?: net.Server; paced?: PacedAccept; closed: boolean };

/** The global the master's stack capture evaluates (master/hung-stack.ts). */
export const INFLIGHT_PROBE = Symbol.for('quiesce.inflight');

/**
 * Idle keep-alive connections are closed this long after the advertised `Keep-Alive: timeout`, as
 * Node does (a client reusing a connection just before the advertised end must not meet a close).
 */
const KEEP_ALIVE_BUFFER_MS = 1_000;

/** Node's per-response copy of the keep-alive timeout, read when it writes the `Keep-Alive` header (undocumented; Node 20-24). */
type KeepAliveHeader = { _keepAliveTimeout: number };

/** A listener's fd while this worker listens on it (it came with the fork), or -1. */
function listenerFd(l: Listener): number {
  return l.server && !l.closed ? l.info.fd : -1;
}

class Worker {
  private readonly boot: WorkerBoot;
  private readonly conns = new Connections();
  private readonly appErrors = new AppErrorLog((level, event, fields) => this.log(level, event, fields));
  private readonly badRequests = new RepeatLog((level, event, fields) => this.log(level, event, fields), 'info', 'bad-request');
  private readonly shedLog = new RepeatLog((level, event, fields) => this.log(level, event, fields), 'notice', 'queue-timeout');
  private readonly listeners = new Map<number, Listener>();
  private readonly native: Native | undefined;
  private readonly accessLog: AccessLogPipe | undefined;
  private server!: Http.Server;
  /** Status classes and latencies (--metrics), sent with the stats. */
  private metrics?: RequestMetrics;
  private app!: LoadedApp;
  private ready = false;
  private retireStarted = false;
  private drained = 0;
  private recycleAt: number;
  private askedToRetire = false;
  /** The master went away while the app was loading. */
  private masterLost = false;
  /**
   * Another master holds our sockets too, so a lost master means only retire, never gate them:
   * ours has not taken over from the old one yet (WorkerBoot.successor, cleared by `sole`), or an
   * upgrade's new master is starting beside ours (`heir`).
   */
  private shared = false;
  /** A warm spare: ready, but accepting nothing until the master's `serve`. */
  private spare = false;
  private readonly generationHeader: string;
  /** Connections handed over before this worker was ready, with their listener. */
  private readonly early: Array<{ socket: net.Socket; id: number }> = [];
  /** TLS and HTTP/2 (only when a listener or the app speaks TLS). */
  private tls?: TlsFront;
  /** Whether every TCP listener has TCP_NODELAY, which the connections it accepts inherit. */
  private readonly noDelayInherited: boolean;

  constructor() {
    this.boot = JSON.parse(process.env.QUIESCE_WORKER ?? '{}') as WorkerBoot;
    const n = loadNative();
    this.native = n.ok ? n.native : undefined;
    // the listeners' fds came with the fork; Node starts with them close-on-exec (20 and 24), so
    // a process the app spawns does not hold them open past a stop (test/core.test.ts)
    this.shared = this.boot.successor === true;
    this.spare = this.boot.spare === true;
    for (const l of this.boot.listeners) this.listeners.set(l.id, { info: l, closed: false });
    this.noDelayInherited = noDelayOnListeners(this.native, this.boot.listeners);
    this.accessLog = this.boot.config.accessLog === 'off' ? undefined : new AccessLogPipe();
    this.generationHeader = String(this.boot.generation);
    const max = this.boot.config.maxRequestsPerWorker;
    this.recycleAt = max > 0 ? max + Math.floor(Math.random() * Math.ceil(max * 0.1)) : Infinity;
  }

  log(level: Level, event: string, fields?: Fields): void {
    if (!process.stderr.destroyed) process.stderr.write(encodeWorkerRecord(level, event, fields));
  }

  send(msg: ToMaster): void {
    if (process.connected) process.send!(msg);
  }

  async start(): Promise<void> {
    for (const sig of WORKER_IGNORED_SIGNALS) process.on(sig, () => { /* only the master decides */ });
    // the master reads our stdout and stderr: once it is gone there is nowhere left to log
    survivePipeLoss(process.stdout);
    survivePipeLoss(process.stderr);
    process.on('message', (m: unknown, handle: unknown) => { if (isToWorker(m)) this.onMessage(m, handle); });
    process.on('disconnect', () => this.masterGone());
    if (!process.connected) this.masterGone(); // killed before we even started: no 'disconnect' will come
    // what a hung worker was serving, read by the master through the inspector while the loop is
    // blocked (master/hung-stack.ts): the requests in flight and the oldest one
    (globalThis as Record<symbol, unknown>)[INFLIGHT_PROBE] = (): string => {
      const r = this.conns.report(this.ready);
      return JSON.stringify({ inflight: r.inflight, connections: this.conns.size, current: r.current });
    };
    // the app ended the process itself (process.exit() in a handler): say with which code and
    // during which request, synchronously (stderr is a pipe: written at once), so that the
    // master can name a crash loop's cause, and count what the exit resets: the connections open
    // now (each with a request in progress or waiting to be read, or a keep-alive client's)
    process.on('exit', (code) => {
      if (this.exiting) return;
      const r = this.ready ? this.conns.report(true) : undefined;
      this.log('error', 'app-exit', { code, method: r?.current?.method, path: r?.current?.path, connections: this.ready ? this.conns.size : 0, inflight: r?.inflight ?? 0, note: 'the process exited without being told to (process.exit() in the app?)' });
    });
    process.on('uncaughtException', (err) => this.appError('uncaughtException', err));
    process.on('unhandledRejection', (err) => this.appError('unhandledRejection', err));

    const cfg = this.boot.config;
    if (cfg.user) {
      // quiesce's own modules the app path imports on demand are loaded while still privileged:
      // installed where --user cannot read (a clone in /root), they would not load after the drop
      await preloadOwnModules(this.boot.listeners.some((l) => l.tls !== undefined) || cfg.h2c === 'on');
      try {
        const n = loadNative();
        if (!n.ok) throw new Error(`native syscalls unavailable: ${n.reason}`);
        n.native.dropPrivileges(cfg.user, cfg.group || undefined);
      } catch (err) {
        return this.fatal('PRIVILEGES', `--user ${cfg.user}: cannot drop privileges: ${errorMessage(err)}`);
      }
    }
    try {
      // the app's stacks name its own sources when it ships source maps (as --enable-source-maps)
      process.setSourceMapsEnabled(true);
      this.app = await loadApp(this.boot.appSpec, { admin: this.boot.admin, onError: (err, where, req) => this.appErrors.report(err, where, req) });
    } catch (err) {
      return this.fatal((err as { code?: string }).code ?? 'APP_LOAD_FAILED', errorMessage(err), stackOf((err as { cause?: unknown }).cause));
    }
    this.server = http.createServer({
      // set on the listeners, inherited (noDelayOnListeners): no setsockopt per connection
      noDelay: !this.noDelayInherited,
      maxHeaderSize: cfg.maxHeaderSize,
      requestTimeout: cfg.requestTimeout,
      headersTimeout: cfg.headersTimeout,
      // Node re-arms a timer on every response for this (~7% of a hello-world request): the
      // worker sweeps idle connections itself (Connections.sweepIdle) and keeps the header.
      keepAliveTimeout: 0,
      // the worker judges the headers and request timeouts in its sweep (Connections.watch: Node's
      // list of connections costs 3-4% of a request); where Node keeps its own check (a Node whose
      // list the worker does not know), once a second (its default, 30 s, lets a 60 s
      // --headers-timeout run to 90 s)
      connectionsCheckingInterval: 1_000,
      // --metrics: each response carries its start time from its construction (request-metrics.ts)
      // (typed as the base class: the server's type is Server<IncomingMessage, ServerResponse>)
      ...(cfg.metrics === 'on' ? { ServerResponse: TimedResponse as unknown as typeof Http.ServerResponse } : {}),
    });
    this.conns.watch(this.server);
    if (cfg.metrics === 'on') this.metrics = new RequestMetrics(this.server);
    this.server.on('connection', (s: net.Socket) => this.conns.add(s));
    this.server.on('request', this.requestListener());
    this.server.on('clientError', (err: Error & { code?: string; rawPacket?: Buffer; bytesParsed?: number }, socket: net.Socket) => {
      // --h2c on: HTTP/2's preface, which Node's HTTP/1 parser stops at, hands the connection to HTTP/2
      if (err.code === 'HPE_PAUSED_H2_UPGRADE' && this.tls?.takeH2c(socket, err)) return;
      answerClientError(err, socket, this.badRequests);
    });
    this.app.attach?.(this.server);
    if (this.app.upgrade) this.server.on('upgrade', this.app.upgrade);
    try {
      await this.app.init?.();
    } catch (err) {
      return this.fatal('APP_INIT_FAILED', `init() failed: ${errorMessage(err)}`, stackOf(err));
    }
    if (this.server.listenerCount('upgrade') > 0) {
      this.server.prependListener('upgrade', (req: Http.IncomingMessage, socket: net.Socket) => this.conns.upgrade(req, socket));
    }
    try {
      await this.setUpTls();
    } catch (err) {
      return this.fatal((err as { code?: string }).code ?? 'WORKER_START_FAILED', `TLS: ${errorMessage(err)}`);
    }
    // Told to retire while loading (a stop during start-up): take nothing from the listeners, but
    // serve the connections the master handed over from the kernel's queue, then retire.
    // (a warm spare listens only once promoted: 'serve')
    if (!this.retireStarted && !this.spare) this.listenAll();
    // every listener is TLS: the http.Server never listens, but tells its 'listening' listeners
    // (the app's, and Node's list of connections where the worker left it: Connections.watch);
    // with a plain one it listens (now, or once a spare is promoted), and a second 'listening'
    // would start Node's timeout check twice where Node keeps it
    if (this.tls && !this.server.listening && [...this.listeners.values()].every((l) => l.front !== undefined)) this.server.emit('listening');
    this.ready = true;
    for (const { socket, id } of this.early.splice(0)) this.dispatch(id, socket);
    this.send({ t: 'ready', pid: process.pid });
    if (this.retireStarted) { this.windDown(); return; }
    if (this.masterLost) { this.masterGone(); return; }
    const ka = cfg.keepAliveTimeout;
    const sweepMs = Math.min(1_000, Math.max(100, Math.floor(ka / 4)));
    setInterval(() => {
      this.conns.sweepIdle(ka > 0 ? ka + KEEP_ALIVE_BUFFER_MS : 0, cfg.headersTimeout);
      this.tls?.sweepIdle();
    }, sweepMs).unref();
    // QUIESCE_STATS=off stops the periodic scoreboard report (for the benchmark that prices it)
    // the report is also the heartbeat the master's watchdog waits for (--worker-timeout)
    if (process.env.QUIESCE_STATS !== 'off') setInterval(() => this.sendStats(true), STATS_INTERVAL_MS).unref();
    else setInterval(() => this.send({ t: 'beat' }), STATS_INTERVAL_MS).unref();
    this.loopDelay.enable();
  }

  private fatal(code: string, message: string, stack?: string): void {
    this.log('error', 'app-failed', { code, error: message, stack });
    this.send({ t: 'fatal', code, message });
    setImmediate(() => process.exit(WORKER_EXIT.FATAL));
  }

  /**
   * What TLS needs, asked of the master (the key material never travels in the environment):
   * a front per TLS listener, and the app's own TLS server's options when it brought one.
   */
  private async setUpTls(): Promise<void> {
    const own = this.app.ownTls;
    const listeners = [...this.listeners.values()];
    const cfg = this.boot.config;
    // --h2c on: HTTP/2 in the clear, for an app served over HTTP/2 (ours: not an adopted server of its own)
    const h2c = cfg.h2c === 'on' && cfg.http2 !== 'off' && this.app.http2 === true && !own?.h2;
    const tlsServed = own !== undefined || listeners.some((l) => l.info.tls !== undefined);
    if (cfg.h2c === 'on' && !h2c) this.log('warn', 'h2c-off', { note: 'the app does not speak HTTP/2 (Express, Koa, Fastify, an adopted server): h2c clients get 400' });
    if (!tlsServed && !h2c) return;
    const wire = tlsServed ? await this.askTls() : undefined;
    const { TlsFront, PacedAccept } = await tlsModule();
    if (process.env.QUIESCE_TLS_PACED !== 'off') this.pacedAccept = PacedAccept;
    if (own?.h2 && !own.allowHTTP1 && cfg.http2 === 'off') {
      throw Object.assign(new Error('the app serves an HTTP/2-only server (http2.createSecureServer without allowHTTP1) and --http2 is off: turn it on, or give the app allowHTTP1'), { code: 'APP_ADOPT_FAILED' });
    }
    const h2 = cfg.http2 === 'off' ? undefined
      : own?.h2 ? { server: own.server as Http2SecureServer, allowHTTP1: own.allowHTTP1 }
        : this.app.http2 ? { listener: this.h2Listener() } : undefined;
    const shedder = this.shedder;
    this.tls = new TlsFront({
      wire, h1: this.server, h2, appTls: own?.server as TlsServer | undefined,
      handshakeTimeoutMs: cfg.headersTimeout > 0 ? cfg.headersTimeout : 120_000,
      noDelay: !this.noDelayInherited,
      sessionIdleMs: cfg.keepAliveTimeout > 0 ? cfg.keepAliveTimeout + KEEP_ALIVE_BUFFER_MS : 0,
      onChange: () => this.conns.changed(),
      board: this.mapBoard(),
      countResponse: this.metrics?.countH2,
      h2c,
      release: (socket) => this.conns.release(socket),
      accepted: shedder ? (raw) => shedder.accepted(raw) : undefined,
    });
    this.conns.attach(this.tls);
    // the app asked for TLS: every listener without TLS of its own gets the app's, never plain HTTP
    for (const l of listeners) if (l.info.tls !== undefined || own) l.front = this.tls.front(l.info.tls);
    const ids = listeners.filter((l) => l.front).map((l) => l.info.id);
    this.log('info', 'tls', { listeners: ids.join(','), http2: this.tls.http2, h2c: this.tls.cleartextH2, app_tls: own !== undefined });
  }

  /** The TLS load board the master shares (master/tls.ts TlsBoard), mapped; none without it or the native module. */
  private mapBoard(): { cells: Int32Array; base: number; slots: number; me: number } | undefined {
    const b = this.boot.board;
    if (!b || !this.native) return undefined;
    try {
      const cells = this.native.mapShared(b.fd, BOARD_BYTES);
      return { cells, base: b.base, slots: b.slots, me: b.base + this.boot.slot };
    } catch (err) {
      this.log('warn', 'tls-board-failed', { error: errorMessage(err), note: 'this worker accepts TLS connections without looking at its peers' });
      return undefined;
    } finally {
      try { closeSync(b.fd); } catch { /* mapped or not, the fd is no longer needed */ }
    }
  }

  private askTls(): Promise<TlsWire> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the master did not send the TLS material')), this.boot.config.readyTimeout).unref();
      this.tlsWaiter = (w) => { clearTimeout(timer); resolve(w); };
      this.send({ t: 'tls-ask' });
    });
  }
  private tlsWaiter?: (w: TlsWire) => void;
  /** The class, once TLS is loaded (QUIESCE_TLS_PACED=off: libuv's accepting, for the benchmark that compares them). */
  private pacedAccept?: typeof PacedAccept;

  /** The request listener for HTTP/2 (the compat API): the counters, the opt-in features, the app. */
  private h2Listener(): H2Listener {
    const conns = this.conns;
    const app = this.app.listener;
    const extras = this.extras();
    const shed = this.shedder;
    // (the compat API's request and response stand in for http's: the app kinds served over
    // HTTP/2 are those known to use only what both have; see LoadedApp.http2)
    return (req, res) => {
      const r = req as unknown as Http.IncomingMessage;
      const w = res as unknown as Http.ServerResponse;
      conns.requests++;
      if (conns.requests >= this.recycleAt) this.recycle();
      if (extras !== undefined && extras(r, w)) return;
      if (shed !== undefined && shed.judge(r, w)) return;
      app(r, w);
    };
  }

  /** A connection from listener `id` (the drain, the master's hand-over): to its TLS front, or the http.Server. */
  private dispatch(id: number, socket: net.Socket): void {
    (this.listeners.get(id)?.front ?? this.server).emit('connection', socket);
  }

  /** Listen on every listener still open (a drain may have closed one already). */
  private listenAll(): void {
    for (const l of this.listeners.values()) if (!l.closed) this.listen(l);
  }

  /** The http.Server listens on the first plain listener's fd itself; plain net.Servers on the others feed it their connections; a TLS listener's front listens on its own. */
  private listen(l: Listener): void {
    // listen(2) again on the inherited fd sets its backlog: Node reads it from the second
    // argument for an { fd } handle (an options object's `backlog` is ignored there and 511 used)
    const backlog = this.boot.config.backlog;
    if (l.front && this.native && this.pacedAccept) {
      // a worker holding more TLS connections than its least loaded peer (by half as many again + 1) stops accepting (tls.ts)
      const native = this.native;
      const tls = this.tls;
      l.paced = new this.pacedAccept(l.info.fd, backlog, (fd) => native.dupCloexec(fd), l.front,
        (err) => this.log('error', 'accept-failed', { listener: l.info.id, error: errorMessage(err) }),
        () => tls?.crowded() ?? false, () => tls?.peerMark() ?? 0, !this.noDelayInherited);
      const paced = l.paced;
      tls?.onEased(() => paced.eased());
      paced.start();
      l.server = l.front;
    } else if (l.front) {
      l.front.listen({ fd: l.info.fd }, backlog);
      l.server = l.front;
    } else if (!this.server.listening) {
      this.server.listen({ fd: l.info.fd }, backlog);
      l.server = this.server;
    } else {
      const s = net.createServer((socket) => this.server.emit('connection', socket));
      s.listen({ fd: l.info.fd }, backlog);
      l.server = s;
    }
  }

  /** Close our copy of a listener (one never listened on is a bare fd), then of its gate sockets: G must outlive L. */
  private closeListener(l: Listener): void {
    if (l.closed) return;
    l.closed = true;
    // Close only the listening handle: http.Server#close() would also close idle keep-alive
    // connections at once, which races the clients' next requests (the worker closes those itself,
    // after the idle grace).
    // paced: its handles listen on duplicates, and the listener's own fd is closed here, after them
    l.paced?.stop();
    if (l.server && !l.paced) net.Server.prototype.close.call(l.server);
    const g = l.info.gate;
    for (const fd of [...(l.server && !l.paced ? [] : [l.info.fd]), ...(g ? [g.gateFd, g.plugFd] : [])]) {
      try { closeSync(fd); } catch { /* not open here */ }
    }
  }

  /**
   * The 'request' listener: the hot path. Serving, a request costs a counter and a compare on the
   * way to the app (Connections follows responses only once winding); the opt-in features (health
   * path, generation header, access log) add one call, only when configured. A method here, or a
   * closure over req and res in this function, measurably slows every request.
   */
  private requestListener(): (req: Http.IncomingMessage, res: Http.ServerResponse) => void {
    const conns = this.conns;
    const app = this.app.listener;
    const extras = this.extras();
    const shed = (this.shedder = this.queueShed());
    const keepAliveMs = this.boot.config.keepAliveTimeout;
    return (req, res) => {
      (res as unknown as KeepAliveHeader)._keepAliveTimeout = keepAliveMs; // the server's own is 0: see start()
      // HTTP/1.1 over TLS, counted here (a second 'request' listener made Node copy its listener array per request)
      const tls = this.tls;
      if (tls !== undefined && (req.socket as { encrypted?: boolean }).encrypted === true) tls.tlsH1.requests++;
      if (conns.tracking) conns.request(req, res);
      else {
        conns.requests++;
        if (conns.steering) conns.steer(res);
      }
      if (conns.requests >= this.recycleAt) this.recycle();
      if (extras !== undefined && extras(req, res)) return;
      if (shed !== undefined && shed.judge(req, res)) return;
      app(req, res);
    };
  }

  /** The --queue-timeout judge of the request listener (its count goes in the stats). */
  private shedder?: QueueShed;

  /** --queue-timeout: requests that waited past it are answered 503 (queue-shed.ts); undefined when off or TCP_INFO cannot be read. */
  private queueShed(): QueueShed | undefined {
    const limit = this.boot.config.queueTimeout;
    const native = this.native;
    if (limit <= 0 || !native) return undefined;
    return new QueueShed(limit, (fd) => native.dataAgeMs(fd), this.shedLog);
  }

  private recycle(): void {
    this.recycleAt = Infinity;
    this.askToRetire('recycle', `served ${this.conns.requests} requests`);
  }

  /** Ask the master for a graceful replacement (it starts one first), once. */
  private askToRetire(reason: 'recycle' | 'error' | 'memory', detail: string): void {
    if (this.askedToRetire || this.retireStarted) return;
    this.askedToRetire = true;
    this.send({ t: 'retire-me', reason, detail });
  }

  /** Per-request work of the opt-in features, or undefined when none is on. Returns true when it answered the request itself. */
  private extras(): ((req: Http.IncomingMessage, res: Http.ServerResponse) => boolean) | undefined {
    const cfg = this.boot.config;
    const log = this.accessLog;
    if (!cfg.exposeGeneration && !log && !cfg.healthPath) return undefined;
    const format = cfg.logFormat === 'json'
      ? (entry: AccessEntry) => json(entry, { pid: process.pid, generation: this.boot.generation })
      : combined;
    const logHealth = !cfg.accessLogSkipHealth;
    return (req, res) => {
      if (cfg.exposeGeneration) res.setHeader('x-quiesce-generation', this.generationHeader);
      const health = cfg.healthPath !== '' && req.url === cfg.healthPath;
      if (log && (logHealth || !health)) {
        const startedAt = Date.now();
        const written = req.socket.bytesWritten;
        res.once('close', () => log.write(format({ req, res, bytes: bodyBytes(req, res, written), startedAt })));
      }
      if (health) {
        const up = !this.conns.winding;
        const body = up ? 'ok\n' : 'draining\n';
        res.writeHead(up ? 200 : 503, { 'content-type': 'text/plain', 'cache-control': 'no-store', 'content-length': body.length });
        res.end(body);
        return true;
      }
      return false;
    };
  }

  private onMessage(m: ToWorker, handle: unknown): void {
    switch (m.t) {
      case 'lame-duck':
        this.conns.lameDuck();
        return;
      case 'drain-accept': {
        const r = this.drainAccept(m.id, m.max);
        const l = this.listeners.get(m.id);
        if (m.close && l) this.closeListener(l);
        this.send({ t: 'accepted', id: m.id, n: r.n, seq: m.seq });
        return;
      }
      case 'close-listeners':
        for (const id of m.ids) { const l = this.listeners.get(id); if (l) this.closeListener(l); }
        this.send({ t: 'listeners-closed', seq: m.seq });
        return;
      case 'retire':
        this.retire(m.reason);
        return;
      case 'force':
        this.force();
        return;
      case 'conn':
        // a connection the master accepted at the end of a drain; before we serve, it waits here
        if (!(handle instanceof net.Socket)) return;
        if (this.ready) this.dispatch(m.id, handle);
        else this.early.push({ socket: handle, id: m.id });
        return;
      case 'tls':
        this.tlsWaiter?.(m.tls);
        this.tlsWaiter = undefined;
        return;
      case 'status-request':
        this.sendStats();
        return;
      case 'steer':
        this.conns.steerShare(m.share);
        return;
      case 'sole':
        this.shared = false;
        return;
      case 'heir':
        this.shared = m.on;
        return;
      case 'serve':
        if (!this.spare) return;
        this.spare = false;
        this.log('info', 'spare-serving', { pid: process.pid });
        if (this.ready && !this.retireStarted) this.listenAll();
        return;
    }
  }

  /**
   * Empty (part of) the kernel's accept queue now, instead of libuv's one accept per loop turn,
   * handing each connection to the http.Server. Returns how many and whether the queue read empty.
   */
  drainAccept(id: number, max: number): { n: number; empty: boolean } {
    const l = this.listeners.get(id);
    if (!l || l.closed || !l.server || !this.native) return { n: 0, empty: true };
    const fd = listenerFd(l);
    if (fd < 0) return { n: 0, empty: true };
    let n = 0;
    for (let i = 0; i < max; i++) {
      const cfd = this.native.accept(fd);
      if (cfd === -1) return { n, empty: true };
      if (cfd === -2) continue;
      const socket = new net.Socket({ fd: cfd, readable: true, writable: true });
      (l.front ?? this.server).emit('connection', socket);
      n++;
    }
    this.drained += n;
    return { n, empty: false };
  }

  retire(reason: RetireReason): void {
    if (this.retireStarted) return;
    this.retireStarted = true;
    this.log('info', 'retiring', { reason, connections: this.conns.size, inflight: this.conns.report(this.ready).inflight, ready: this.ready });
    for (const l of this.listeners.values()) this.closeListener(l);
    this.armForce();
    // Still loading: connections handed over meanwhile wait in `early`; start() serves them once
    // the app is up and winds down then. Exiting now would cut them.
    if (this.ready) this.windDown();
    else this.sendStats();
  }

  /** The retiring proper: Connection: close, idle connections closed after the grace, onDrain(), exit when none is left. */
  private windDown(): void {
    this.conns.retire(this.boot.config.idleGrace, () => void this.exit(WORKER_EXIT.OK));
    Promise.resolve()
      .then(() => this.app?.onDrain?.())
      .catch((err: unknown) => this.appErrors.report(err, 'onDrain'));
    this.sendStats();
  }

  private forceTimer?: NodeJS.Timeout;
  /** The graceful timeout runs from the first of: told to retire, master lost while loading. */
  private armForce(): void {
    this.forceTimer ??= setTimeout(() => this.force(), this.boot.config.gracefulTimeout).unref();
  }

  private force(): void {
    // still loading at the graceful timeout: what was handed over can no longer be served
    const waiting = this.early.splice(0);
    for (const { socket } of waiting) socket.destroy();
    this.conns.forced += waiting.length;
    const n = this.conns.force() + waiting.length;
    this.log(n > 0 ? 'warn' : 'info', 'forced', { n });
    this.send({ t: 'forced', n });
    if (!this.retireStarted) this.retire('stop');
    // leave a moment for the 503s to flush, then go even if some socket is stuck
    setTimeout(() => void this.exit(WORKER_EXIT.OK), 300).unref();
  }

  private exiting = false;
  private async exit(code: number): Promise<void> {
    if (this.exiting) return;
    this.exiting = true;
    const stopTimer = setTimeout(() => process.exit(code), this.boot.config.killGrace / 2);
    try {
      await this.app?.onStop?.();
    } catch (err) {
      this.appErrors.report(err, 'onStop');
    }
    clearTimeout(stopTimer);
    this.appErrors.flush();
    this.badRequests.flush();
    this.shedLog.flush();
    this.sendStats();
    await this.accessLog?.end();
    process.exit(code);
  }

  /**
   * The master is gone (even by SIGKILL): drain our listeners ourselves, then retire. Still
   * loading the app: the listeners' queue is ours alone now, so start() listens and comes back
   * here once the app is up (forced at the graceful timeout if it never is).
   */
  private masterGone(): void {
    if (this.retireStarted) return;
    if (!this.ready) {
      if (this.masterLost) return;
      this.masterLost = true;
      this.log('warn', 'master-gone', { pid: process.pid, loading: true, listeners: this.listeners.size });
      this.armForce();
      return;
    }
    if (this.shared) {
      // the other master (the old one, or an upgrade's new one) serves these sockets on
      this.log('warn', 'master-gone', { pid: process.pid, note: 'another master holds the sockets (an upgrade): retiring without a gate' });
      this.retire('master-gone');
      return;
    }
    this.log('warn', 'master-gone', { pid: process.pid });
    const deadline = Date.now() + this.boot.config.drainCap;
    const native = this.native;
    // (a socket the service manager keeps is left as it is: retiring closes our copy, nothing is reset)
    const open = [...this.listeners.values()].filter((l) => !l.closed && l.server && !l.info.inherited);
    // every worker gates the same sockets: each step of the gate is idempotent (native/gate.ts)
    const gating = native ? Promise.all(open.map(async (l) => {
      const fd = listenerFd(l);
      if (l.info.kind !== 'tcp' || fd < 0) return;
      await gateTcp(native, this.boot.drainMode, fd, l.info.gate, (why) => this.log('warn', 'gate-failed', { error: why }));
    })) : Promise.resolve([]);
    // no gate (fallback): close in the same tick as the kernel's "drained", every moment open lets a SYN in
    const step = (): void => {
      let busy = false;
      for (const l of open) {
        if (!native || l.closed) continue;
        // all of it at once, as a worker does at the master's drain: serving a batch holds this
        // loop, and the listener must not stay open that long (the drain cap would close it full)
        const r = this.drainAccept(l.info.id, 1024);
        if (!r.empty) busy = true;
        const fd = listenerFd(l);
        if (l.info.kind === 'tcp' && fd >= 0 && !kernelDrained(native, fd, l.info.port, l.info.family)) busy = true;
      }
      if (busy && Date.now() < deadline) { setTimeout(step, 2); return; }
      if (busy) this.log('alert', 'drain-capped', { ms: this.boot.config.drainCap, note: 'master gone: listeners closed with the kernel queue not yet empty' });
      this.retire('master-gone');
    };
    void gating.then(step);
  }

  private appError(kind: string, err: unknown): void {
    // before ready there is nothing to retire from: the start failed, and the master hears it now
    // (not at --ready-timeout)
    if (!this.ready) return this.fatal('WORKER_START_FAILED', `${kind} before the worker was ready: ${errorMessage(err)}`, stackOf(err));
    this.log('error', kind, { error: errorMessage(err), stack: stackOf(err) });
    this.askToRetire('error', `${kind}: ${errorMessage(err)}`);
  }

  /**
   * The event loop's delay between two reports (the watchdog's figure, beside the heartbeat
   * itself). Its timer wakes an idle worker every `resolution` ms: at 20 ms that was ~50 wake-ups a
   * second, most of an idle worker's 0.65% of a CPU; at 100 ms any stall of 100 ms or more is
   * seen, five times finer than the watchdog's threshold (STALL_LOOP_MS, 500 ms).
   */
  private readonly loopDelay = monitorEventLoopDelay({ resolution: 100 });

  /** The longest loop delay of the last whole interval (a report asked for in between does not cut the window short). */
  private loopDelayMs = 0;
  private lastPeriodic = performance.now();

  /** Counters only, read here every 500 ms (`periodic`; and at retire, exit and when asked): nothing per request crosses IPC. */
  private sendStats(periodic = false): void {
    const c = this.conns;
    const r = c.report(this.ready, this.boot.config.statusQuery);
    const rssBytes = process.memoryUsage.rss();
    const heap = getHeapStatistics();
    if (periodic) {
      // the histogram's own timer stops sampling while the loop turns only through long slices
      // (setImmediate chains: seen on Node 20), so this report's lateness counts too
      const now = performance.now();
      const late = now - this.lastPeriodic - STATS_INTERVAL_MS;
      this.lastPeriodic = now;
      this.loopDelayMs = Math.round(Math.max(this.loopDelay.max / 1e6, late));
      this.loopDelay.reset();
    }
    const max = this.boot.config.maxMemory;
    if (max > 0 && rssBytes > max && this.ready) this.askToRetire('memory', `RSS ${Math.round(rssBytes / 1048576)} MB over --max-memory ${Math.round(max / 1048576)} MB`);
    this.send({ t: 'stats', stats: {
      requests: c.requests, bytesSent: r.bytesSent, connections: c.size, inflight: r.inflight, drained: this.drained,
      forced: c.forced, state: r.state, stateMs: r.stateMs, at: Date.now(),
      accepted: c.accepted, completed: r.completed, refused: c.refused, shed: this.shedder?.shed, current: r.current,
      fileCacheBytes: this.app?.fileCacheBytes?.(), loopDelayMs: this.loopDelayMs, rssBytes, http: this.metrics?.counts,
      heapUsedBytes: heap.used_heap_size, heapLimitBytes: heap.heap_size_limit,
      ...(this.tls ? { protocols: this.protocols(this.tls) } : {}),
    } });
  }

  /** Connections open and requests served by protocol (only when TLS is served: the plain path counts nothing more). */
  private protocols(t: TlsFront): NonNullable<WorkerStats['protocols']> {
    const c = this.conns;
    const h1 = { connections: c.size - t.open - t.tlsH1.connections, requests: c.requests - t.h2.requests - t.h2c.requests - t.tlsH1.requests };
    return { 'http/1.1': h1, 'https/1.1': { ...t.tlsH1 }, h2: { ...t.h2 }, h2c: { ...t.h2c } };
  }
}

/**
 * TCP_NODELAY on the TCP listeners themselves: every connection they accept (the worker's, the
 * drain's, the master's hand-over) inherits it (Linux), so no server need set it on each (Node's
 * `noDelay`: a setsockopt per connection, 5% of a worker's CPU per new connection), and the
 * connections of a second plain listener, which come through a net.Server that never set it,
 * get it too. False where any could not take it: then Node sets it per connection as before.
 */
function noDelayOnListeners(native: Native | undefined, listeners: readonly ListenerBoot[]): boolean {
  return native !== undefined && listeners.every((l) => l.kind !== 'tcp' || native.noDelay(l.fd));
}

export async function workerMain(): Promise<void> {
  closeAtOnce();
  quickEnd();
  await new Worker().start();
}
