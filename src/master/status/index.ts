/**
 * The status module of the master: /server-status (HTML, ?auto, ?json) and /metrics on the admin
 * listener, all built from `master.snapshot()` when asked. Registered by one call in Master.start();
 * the master reports drain and reload durations through observeDrain()/observeReload().
 */
import type http from 'node:http';
import { hostname } from 'node:os';
import type { Master } from '../master.js';
import { text } from '../admin.js';
import { stateOf } from './state.js';
import { Metrics } from './metrics.js';
import { renderAuto } from './auto.js';
import { PAGE_CSP, renderIndex, renderPage } from './page.js';
import type { StatusSnapshot } from './types.js';

export type { StatusSnapshot, DeployEvent } from './types.js';
export { buildSnapshot, type ExitedTotals } from './snapshot.js';

const HTML_HEADERS = { 'content-security-policy': PAGE_CSP, 'x-frame-options': 'DENY', 'referrer-policy': 'no-referrer' };

export function installStatus(master: Master): void {
  const snap = (): StatusSnapshot => master.snapshot();

  master.admin.routes.set('/', (_req, res, url) => {
    send(res, renderIndex(url, hostname(), !master.admin.isLoopback), 'text/html; charset=utf-8', HTML_HEADERS);
  });
  master.admin.routes.set('/server-status', (_req, res, url) => {
    const s = snap();
    if (url.searchParams.has('json')) return send(res, JSON.stringify(s, null, 2) + '\n', 'application/json; charset=utf-8');
    if (url.searchParams.has('auto')) return text(res, 200, renderAuto(s));
    send(res, renderPage(s, url), 'text/html; charset=utf-8', HTML_HEADERS);
  });
  master.admin.routes.set('/metrics', async (_req, res) => {
    const m = await metricsOf(master);
    send(res, await m.render(snap()), m.registry.contentType);
  });
}

/** prom-client loads on the first scrape (it costs tens of ms): durations seen before are replayed. */
async function metricsOf(master: Master): Promise<Metrics> {
  const st = stateOf(master);
  if (!st.metrics) {
    const prom = await import('prom-client');
    if (!st.metrics) {
      const m = new Metrics(prom);
      for (const ms of st.pending.drain.splice(0)) m.observeDrain(ms);
      for (const ms of st.pending.reload.splice(0)) m.observeReload(ms);
      st.metrics = m;
    }
  }
  return st.metrics;
}

/** The master stopped accepting on its listeners: gate → close took `ms` (log event drain-closed). */
export function observeDrain(master: Master, ms: number): void {
  stateOf(master).observeDrain(ms);
}

/** A reload committed: request → new generation serving took `ms` (log event reloaded). */
export function observeReload(master: Master, ms: number): void {
  stateOf(master).observeReload(ms);
}

function send(res: http.ServerResponse, body: string, type: string, headers: Record<string, string> = {}): void {
  res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}
