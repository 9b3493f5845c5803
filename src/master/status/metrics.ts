/**
 * /metrics: Prometheus text exposition built with prom-client from the master's snapshot, in a
 * registry of our own. Every gauge and counter is filled by its collect() from the snapshot taken
 * for that scrape (not prom-client's cluster aggregator, which assumes node:cluster); the drain and
 * reload durations are histograms the master feeds as they happen. Names are prefixed quiesce_.
 */
import type * as Prom from 'prom-client';
import { STATES, type StatusSnapshot } from './types.js';
import { LATENCY_BOUNDS_S } from '../../shared/request-metrics.js';

/** A histogram's lines (cumulative buckets, +Inf, sum, count) from bucket counts. */
function histogramValues(generation: string, counts: number[], sumMs: number): Array<{ metricName: string; labels: Record<string, string | number>; value: number }> {
  const name = 'quiesce_http_request_duration_seconds';
  const out: Array<{ metricName: string; labels: Record<string, string | number>; value: number }> = [];
  let acc = 0;
  for (let b = 0; b < counts.length; b++) {
    acc += counts[b]!;
    out.push({ metricName: `${name}_bucket`, labels: { le: b < LATENCY_BOUNDS_S.length ? LATENCY_BOUNDS_S[b]! : '+Inf', generation }, value: acc });
  }
  out.push({ metricName: `${name}_sum`, labels: { generation }, value: sumMs / 1000 });
  out.push({ metricName: `${name}_count`, labels: { generation }, value: acc });
  return out;
}

const MASTER_STATES = ['starting', 'serving', 'reloading', 'draining', 'stopping', 'stopped'] as const;

export class Metrics {
  readonly registry: Prom.Registry;
  private readonly drain: Prom.Histogram;
  private readonly reload: Prom.Histogram;
  private snap?: StatusSnapshot;

  constructor(prom: typeof Prom) {
    const registry = new prom.Registry();
    this.registry = registry;
    const snap = (): StatusSnapshot => {
      if (!this.snap) throw new Error('metrics: no snapshot for this scrape');
      return this.snap;
    };
    const gauge = (name: string, help: string, labelNames: string[], fill: (g: Prom.Gauge, s: StatusSnapshot) => void): void => {
      new prom.Gauge({ name, help, labelNames, registers: [registry], collect() { this.reset(); fill(this, snap()); } });
    };
    const counter = (name: string, help: string, labelNames: string[], fill: (c: Prom.Counter, s: StatusSnapshot) => void): void => {
      new prom.Counter({ name, help, labelNames, registers: [registry], collect() { this.reset(); fill(this, snap()); } });
    };

    gauge('quiesce_info', 'Constant 1, labelled with the version and the drain mode.', ['version', 'node', 'drain_mode'],
      (g, s) => g.set({ version: s.server.version, node: s.server.node, drain_mode: s.drainMode }, 1));
    gauge('quiesce_master_state', 'The master\'s lifecycle state: 1 for the current one.', ['state'],
      (g, s) => { for (const st of MASTER_STATES) g.set({ state: st }, s.state === st ? 1 : 0); });
    gauge('quiesce_uptime_seconds', 'Seconds since the master started.', [], (g, s) => g.set(s.uptimeMs / 1000));
    gauge('quiesce_generation', 'The serving generation (1 at start, +1 per reload or restart).', [], (g, s) => g.set(s.generation));
    gauge('quiesce_workers_configured', 'Worker processes the serving generation runs (--workers, changed by quiesce scale and TTIN/TTOU).', [], (g, s) => g.set(s.config.workers));
    gauge('quiesce_workers', 'Worker slots by scoreboard state (_ S R W K C G I H .) and generation.', ['state', 'generation'], (g, s) => {
      for (const gen of new Set(s.workers.map((w) => w.generation))) {
        for (const st of STATES) g.set({ state: st.key, generation: String(gen) }, s.workers.filter((w) => w.generation === gen && w.state === st.key).length);
      }
    });
    gauge('quiesce_connections', 'Open client connections, by generation.', ['generation'],
      (g, s) => { for (const x of s.generationInfo) g.set({ generation: String(x.n) }, x.connections); });
    gauge('quiesce_requests_in_flight', 'Requests in progress, by generation.', ['generation'],
      (g, s) => { for (const x of s.generationInfo) g.set({ generation: String(x.n) }, x.inflight); });
    gauge('quiesce_listen_queue', 'Connections waiting in the kernel accept queue of each listener.', ['listener'],
      (g, s) => { for (const l of s.listeners) if (l.queued !== null) g.set({ listener: l.address }, l.queued); });
    gauge('quiesce_listen_queue_limit', 'The accept queue limit (backlog) of each listener.', ['listener'],
      (g, s) => { for (const l of s.listeners) if (l.backlog !== null) g.set({ listener: l.address }, l.backlog); });
    gauge('quiesce_listener_state', 'Listener state (open, gated, closed): 1 for the current one.', ['listener', 'state'],
      (g, s) => { for (const l of s.listeners) for (const st of ['open', 'gated', 'closed']) g.set({ listener: l.address, state: st }, l.state === st ? 1 : 0); });
    gauge('quiesce_worker_resident_memory_bytes', 'Resident set size of each worker process.', ['slot', 'generation', 'pid'], (g, s) => {
      for (const w of s.workers) if (w.pid !== null && w.rssBytes !== null) g.set({ slot: String(w.slot), generation: String(w.generation), pid: String(w.pid) }, w.rssBytes);
    });
    gauge('quiesce_drain_in_progress_seconds', 'Elapsed time of the drain, stop, reload or retirement under way (absent when none).', ['kind'],
      (g, s) => { for (const p of s.progress) g.set({ kind: p.kind }, p.elapsedMs / 1000); });

    gauge('quiesce_connections_by_protocol', 'Open client connections by protocol (HTTP/2: sessions), when TLS is served.', ['protocol'],
      (g, s) => { for (const [p, x] of Object.entries(s.protocols ?? {})) g.set({ protocol: p }, x.connections); });
    counter('quiesce_requests_by_protocol_total', 'Requests by protocol since the start, when TLS is served.', ['protocol'],
      (c, s) => { for (const [p, x] of Object.entries(s.protocols ?? {})) c.inc({ protocol: p }, x.requests); });
    counter('quiesce_requests_total', 'Requests received by the workers since the start.', [], (c, s) => c.inc(s.totals.requests));
    counter('quiesce_sent_bytes_total', 'Bytes written to clients since the start.', [], (c, s) => c.inc(s.totals.bytesSent));
    counter('quiesce_connections_accepted_total', 'Connections accepted by the workers since the start.', [], (c, s) => c.inc(s.totals.accepted));
    counter('quiesce_responses_completed_total', 'Responses sent in full since the start.', [], (c, s) => c.inc(s.totals.completed));
    counter('quiesce_refused_total', 'Requests refused by design (503 on the health path while draining).', [], (c, s) => c.inc(s.totals.refused));
    counter('quiesce_shed_total', 'Requests answered 503 by --queue-timeout: they waited past it for a worker.', [], (c, s) => c.inc(s.totals.shed));
    counter('quiesce_cut_total', 'Connections the kernel still held when a listener closed (reset and lost). Must stay 0.', [], (c, s) => c.inc(s.totals.cut));
    counter('quiesce_forced_total', 'Requests ended by the graceful timeout.', [], (c, s) => c.inc(s.totals.forced));
    counter('quiesce_drains_total', 'Completed drains of the listeners (graceful stops).', [], (c, s) => c.inc(s.totals.drains));
    counter('quiesce_reloads_total', 'Reloads, by result.', ['result'], (c, s) => {
      c.inc({ result: 'ok' }, s.totals.reloads);
      c.inc({ result: 'failed' }, s.totals.reloadsFailed);
    });
    counter('quiesce_workers_retired_total', 'Worker processes that exited, by reason (crash when not told to).', ['reason'],
      (c, s) => { for (const [reason, n] of Object.entries(s.totals.retired)) c.inc({ reason }, n); });
    counter('quiesce_worker_cpu_seconds_total', 'User and system CPU time of each worker process.', ['slot', 'generation', 'pid'], (c, s) => {
      for (const w of s.workers) if (w.pid !== null && w.cpuSeconds !== null) c.inc({ slot: String(w.slot), generation: String(w.generation), pid: String(w.pid) }, w.cpuSeconds);
    });

    counter('quiesce_http_requests_total', 'Responses sent, by generation and status class (1xx-5xx), since each generation started.', ['generation', 'code_class'], (c, s) => {
      for (const g of s.generationInfo) if (g.http) for (const [cls, n] of Object.entries(g.http.codes)) c.inc({ generation: String(g.n), code_class: cls }, n);
    });
    // the workers' buckets, merged by the master: prom-client's Histogram only observes values one
    // by one, so this one is a metric of our own that prom-client's registry renders
    const duration = {
      name: 'quiesce_http_request_duration_seconds',
      help: 'Time from a request\'s headers to its response\'s end, by generation (fixed log-scale buckets).',
      type: 'histogram',
    };
    registry.registerMetric({
      ...duration,
      get: async () => ({
        ...duration, aggregator: 'sum' as Prom.Aggregator,
        values: snap().generationInfo.flatMap((g) => (g.http ? histogramValues(String(g.n), g.http.latency, g.http.sumMs) : [])),
      }),
      reset: () => {},
    } as unknown as Prom.Metric); // (the registry reads name, help, type and get(); the interface wants a class)

    this.drain = new prom.Histogram({
      name: 'quiesce_drain_duration_seconds', help: 'Time from the gate to the close of the listeners, per drain.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30], registers: [registry],
    });
    this.reload = new prom.Histogram({
      name: 'quiesce_reload_duration_seconds', help: 'Time from a reload request to the new generation serving.',
      buckets: [0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 120], registers: [registry],
    });
  }

  observeDrain(ms: number): void { this.drain.observe(ms / 1000); }
  observeReload(ms: number): void { this.reload.observe(ms / 1000); }

  private queue: Promise<unknown> = Promise.resolve();

  /** The exposition text for this snapshot. Scrapes run one at a time: collect() reads `snap`. */
  render(s: StatusSnapshot): Promise<string> {
    const run = this.queue.then(async () => {
      this.snap = s;
      try {
        return await this.registry.metrics();
      } finally {
        this.snap = undefined;
      }
    });
    this.queue = run.catch(() => undefined);
    return run;
  }
}
