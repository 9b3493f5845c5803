/**
 * The node:cluster baseline of the benchmarks: a primary forks N workers that serve the same app
 * module as quiesce (or the same directory of static files, with the `send` package).
 *
 *   node dist/bench/cluster-server.js (--app MODULE | --static DIR) [--workers 2] [--sched rr|none]
 *        [--listen 127.0.0.1:0] [--access-log FILE] [--close-on-term]
 *
 * --sched rr: node's default round-robin (the primary accepts and passes each connection on);
 * --sched none: SCHED_NONE (the workers share the listening socket and accept themselves).
 * --close-on-term: on SIGTERM the primary passes SIGTERM to every worker, each does
 * `server.close()` and exits once its connections are done (the common "graceful" recipe);
 * without it a worker exits at once on SIGTERM. The primary exits when its last worker has.
 * Prints `cluster: listening on http://ADDR` once every worker listens.
 */
import cluster from 'node:cluster';
import http from 'node:http';
import https from 'node:https';
import http2 from 'node:http2';
import { createWriteStream, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { combined } from '../src/worker/access-log.js';
import { parseListen } from '../src/master/listeners.js';

const { values } = parseArgs({
  options: {
    app: { type: 'string' },
    static: { type: 'string' },
    workers: { type: 'string', default: '2' },
    sched: { type: 'string', default: 'rr' },
    listen: { type: 'string', default: '127.0.0.1:0' },
    'access-log': { type: 'string' },
    'close-on-term': { type: 'boolean', default: false },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    http2: { type: 'boolean', default: false },
  },
  strict: true,
});

const spec = parseListen(values.listen!);
if (spec.kind !== 'tcp') throw new Error(`--listen: want HOST:PORT, got ${values.listen}`);
const host = spec.host ?? undefined;
const port = spec.port;

if (cluster.isPrimary) {
  if (values.sched !== 'rr' && values.sched !== 'none') throw new Error('--sched: rr or none');
  // Must be set before the first fork.
  cluster.schedulingPolicy = values.sched === 'none' ? cluster.SCHED_NONE : cluster.SCHED_RR;
  const n = Number(values.workers);
  let listening = 0;
  let stopping = false;
  for (let i = 0; i < n; i++) cluster.fork();
  cluster.on('listening', (_w, address) => {
    if (++listening === n) {
      const h = address.address?.includes(':') ? `[${address.address}]` : address.address ?? host ?? '0.0.0.0';
      process.stdout.write(`cluster: listening on ${values['tls-cert'] ? 'https' : 'http'}://${h}:${address.port} (sched ${values.sched}, ${n} workers)\n`);
    }
  });
  cluster.on('exit', (w, code, signal) => {
    if (!stopping) process.stderr.write(`cluster: worker ${w.process.pid} exited (code ${code}, signal ${signal})\n`);
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
  });
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const handler = await loadHandler();
  const log = values['access-log'] ? createWriteStream(values['access-log'], { flags: 'a' }) : undefined;
  const listener = log ? withAccessLog(handler, log) : handler;
  const tls = values['tls-cert'] ? { cert: readFileSync(values['tls-cert']), key: readFileSync(values['tls-key'] ?? '') } : undefined;
  // TLS: https.createServer, or http2.createSecureServer taking HTTP/1.1 too (--http2); in the
  // clear with --http2: http2.createServer (h2c, prior knowledge)
  const server = !tls ? (values.http2 ? http2.createServer(listener as unknown as Parameters<typeof http2.createServer>[1]) : http.createServer(listener))
    : values.http2 ? http2.createSecureServer({ ...tls, allowHTTP1: true }, listener as unknown as Parameters<typeof http2.createSecureServer>[1])
      : https.createServer(tls, listener);
  // Same connection timeouts as quiesce's defaults (keep-alive 5 s).
  if ('keepAliveTimeout' in server) server.keepAliveTimeout = 5_000;
  server.listen(port, host);
  process.on('SIGTERM', () => {
    if (!values['close-on-term']) process.exit(0);
    server.close(() => process.exit(0));
  });
  process.on('SIGINT', () => { /* the primary decides */ });
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

async function loadHandler(): Promise<Handler> {
  if (values.static) {
    const { default: send } = await import('send');
    const root = resolve(values.static);
    return (req, res) => {
      const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
      send(req, path, { root })
        .on('error', (err: { status?: number }) => { res.statusCode = err.status ?? 500; res.end(); })
        .pipe(res);
    };
  }
  if (!values.app) throw new Error('--app MODULE or --static DIR');
  const mod = (await import(pathToFileURL(resolve(values.app)).href)) as { default?: unknown };
  const app = mod.default as { fetch?: unknown } | Handler | undefined;
  if (app && typeof app === 'object' && typeof app.fetch === 'function') {
    const { getRequestListener } = await import('@hono/node-server');
    return getRequestListener(app.fetch as Parameters<typeof getRequestListener>[0]) as unknown as Handler;
  }
  if (typeof app === 'function') return app as Handler;
  throw new Error(`${values.app}: default export is neither a request listener nor a fetch app`);
}

/** Combined Log Format, one line per response, with quiesce's own formatter (same work per line). */
function withAccessLog(handler: Handler, out: NodeJS.WritableStream): Handler {
  return (req, res) => {
    res.once('finish', () => {
      out.write(combined({ req, res, bytes: Number(res.getHeader('content-length') ?? 0), startedAt: 0 }));
    });
    handler(req, res);
  };
}
