/**
 * quiesce's process model with nothing else: a parent binds, sends the listening handle to N
 * forked children, each runs `http.createServer(app).listen(handle)`; the parent then closes its
 * own copy (it never accepts). A yardstick for the per-request cost of quiesce's worker: A/B it
 * against quiesce and node:cluster with the same app (see docs/STATUS.md).
 *
 *   node dist/bench/bare-prefork.js --app MODULE [--workers 2] [--listen 127.0.0.1:0]
 * Prints `bare: listening on http://ADDR` once every child listens; exits on SIGTERM/SIGINT.
 */
import { fork } from 'node:child_process';
import net from 'node:net';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { http } from '../src/shared/node-http.js';
import { parseListen } from '../src/master/listeners.js';

type Http = typeof http;

const { values } = parseArgs({ options: { app: { type: 'string' }, workers: { type: 'string', default: '2' }, listen: { type: 'string', default: '127.0.0.1:0' } }, strict: true });
if (!values.app) throw new Error('--app MODULE is required');

if (process.env.BARE_CHILD) {
  const app = (await import(pathToFileURL(resolve(values.app)).href) as { default: Parameters<Http['createServer']>[0] }).default;
  process.on('message', (_m: unknown, handle: unknown) => {
    const server = http.createServer(app);
    server.keepAliveTimeout = 5_000;
    server.listen(handle as net.Server, 511, () => process.send?.('listening'));
  });
  process.on('SIGINT', () => { /* the parent decides */ });
  process.on('disconnect', () => process.exit(0)); // the parent is gone: leave no orphan
} else {
  const spec = parseListen(values.listen!);
  if (spec.kind !== 'tcp') throw new Error(`--listen: want HOST:PORT, got ${values.listen}`);
  const server = net.createServer();
  server.listen(spec.port, spec.host ?? undefined, () => {
    const n = Number(values.workers);
    const children = Array.from({ length: n }, () => fork(fileURLToPath(import.meta.url), process.argv.slice(2), { env: { ...process.env, BARE_CHILD: '1' } }));
    let listening = 0;
    const { address, port } = server.address() as net.AddressInfo;
    for (const c of children) {
      c.on('message', () => {
        if (++listening < n) return;
        server.close(); // the children hold the socket; the parent never accepts
        process.stdout.write(`bare: listening on http://${address.includes(':') ? `[${address}]` : address}:${port}\n`);
      });
      c.send('listen', server);
    }
    const stop = (): void => { for (const c of children) c.kill('SIGTERM'); process.exit(0); };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}
