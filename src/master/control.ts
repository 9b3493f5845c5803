/** The master's end of the control socket (see shared/control-protocol.ts). */
import net from 'node:net';
import { unlinkSync, existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { ControlReply, ControlRequest } from '../shared/control-protocol.js';
import { QuiesceError } from '../shared/errors.js';

const MAX_REQUEST_BYTES = 64 * 1024;
/**
 * How long the control socket and the admin listener wait on a silent client (no request line, no
 * complete request, or nothing between requests) before letting it go: 10 s.
 * QUIESCE_CLIENT_IDLE_MS (ms, 100-10000) shortens it, for the tests that wait for it.
 */
export const CLIENT_IDLE_MS = ((): number => {
  const v = Number(process.env.QUIESCE_CLIENT_IDLE_MS);
  return Number.isInteger(v) && v >= 100 && v <= 10_000 ? v : 10_000;
})();
/** Connections past this are closed at accept (each verb is one short connection; a stop's clients wait on theirs). */
export const CONTROL_MAX_CONNECTIONS = 32;

export type ControlHandler = (req: ControlRequest, progress: (message: string) => void) => Promise<Extract<ControlReply, { type: 'result' }>>;

export class ControlServer {
  private server?: net.Server;
  private readonly clients = new Set<net.Socket>();
  constructor(readonly path: string, private readonly handler: ControlHandler) {}

  async listen(): Promise<void> {
    if (existsSync(this.path)) unlinkSync(this.path); // the pid file check found no live master
    const server = net.createServer((socket) => this.serve(socket));
    server.maxConnections = CONTROL_MAX_CONNECTIONS;
    const old = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err) => reject(new QuiesceError('CONTROL_FAILED', `control socket ${this.path}: ${err.message}`)));
        server.listen(this.path, resolve);
      });
    } finally {
      process.umask(old);
    }
    // made 0600 by the umask above; no chmod after the fact: chmod follows a symlink put in its place
    server.on('error', () => { /* an accept that failed (EMFILE): that client was shed */ });
    this.server = server;
  }

  private serve(socket: net.Socket): void {
    this.clients.add(socket);
    socket.on('close', () => this.clients.delete(socket));
    socket.on('error', () => { /* a client that went away */ });
    const write = (r: ControlReply) => { if (!socket.destroyed) socket.write(JSON.stringify(r) + '\n'); };
    // a client that never sends its request line is let go; the answer itself may take long (a stop)
    socket.setTimeout(CLIENT_IDLE_MS, () => socket.destroy());
    // nor one whose request line grows without end (a request is a few dozen bytes)
    let received = 0;
    const cap = (chunk: Buffer): void => {
      received += chunk.length;
      if (received <= MAX_REQUEST_BYTES) return;
      socket.off('data', cap);
      rl.close();
      socket.pause(); // read no more; the timeout above ends it if the client does not
      write({ type: 'result', ok: false, message: `control request over ${MAX_REQUEST_BYTES} bytes` });
      socket.end();
    };
    socket.on('data', cap);
    const rl = createInterface({ input: socket });
    rl.once('line', (line) => {
      rl.close();
      socket.off('data', cap);
      socket.setTimeout(0);
      let req: ControlRequest;
      try {
        req = JSON.parse(line) as ControlRequest;
      } catch {
        write({ type: 'result', ok: false, message: 'bad control request' });
        socket.end();
        return;
      }
      this.handler(req, (message) => write({ type: 'progress', message }))
        .then((r) => { write(r); socket.end(); })
        .catch((err: unknown) => { write({ type: 'result', ok: false, message: (err as Error).message }); socket.end(); });
    });
  }

  /** Accepting: listening, and not released. */
  get listening(): boolean { return this.server?.listening === true; }

  /**
   * Stop accepting and remove the path, keeping the clients connected (an upgrade: the new master
   * binds the same path and answers from then on; `quiesce upgrade` still waits here for its answer).
   */
  release(): void {
    this.server?.close();
    this.server = undefined;
    try { unlinkSync(this.path); } catch { /* gone */ }
  }

  close(): void {
    const released = this.server === undefined;
    this.server?.close();
    for (const c of this.clients) c.end();
    if (released) return; // the path is another master's now
    try { unlinkSync(this.path); } catch { /* gone */ }
  }
}
