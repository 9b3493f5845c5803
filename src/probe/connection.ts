// One raw client socket that carries requests one at a time and reports, for each,
// exactly what came back: a complete response, or an error/EOF with the byte count.
import { createConnection, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { ResponseParser, type ParsedResponse } from './parser.js';
import type { Target } from './types.js';

export type Exchange =
  | { type: 'response'; response: ParsedResponse; bytes: number; reusable: boolean }
  /** Reset, EOF or parse error before the response was complete. code: ECONNRESET, EOF, EPARSE_*, ECONNREFUSED… */
  | { type: 'failed'; code: string; bytes: number; established: boolean }
  | { type: 'timeout'; bytes: number; established: boolean };

/** Counts open sockets so that the engine can hold a hard cap. */
export class SocketGauge {
  open = 0;
  constructor(readonly max: number) {}
  get full(): boolean {
    return this.open >= this.max;
  }
}

interface Pending {
  parser: ResponseParser;
  resolve: (e: Exchange) => void;
  timer: NodeJS.Timeout;
}

/** TLS client options for a target (net's `family` and `noDelay` pass through to the socket; tls' types omit them). The certificate is not checked: the probe measures, it does not trust. */
export function tlsOptions(target: Extract<Target, { kind: 'tcp' }>, alpn: string): ConnectionOptions {
  return { host: target.host, port: target.port, family: target.family, noDelay: true, rejectUnauthorized: false, ALPNProtocols: [alpn] } as ConnectionOptions;
}

export class Connection {
  /** Requests written on this socket so far. */
  requests = 0;
  private readonly socket: Socket;
  private established = false;
  private closed = false;
  private pending: Pending | null = null;

  constructor(target: Target, gauge: SocketGauge) {
    // TLS: 'connect' is the TCP handshake's end (established); the request is written once the
    // TLS handshake is done, so a reset during it is a cut too
    this.socket =
      target.kind === 'unix'
        ? createConnection({ path: target.path })
        : target.tls
          ? tlsConnect(tlsOptions(target, 'http/1.1'))
          : createConnection({ host: target.host, port: target.port, family: target.family, noDelay: true });
    gauge.open++;
    this.socket.once('close', () => {
      gauge.open--;
      this.closed = true;
      this.settle({ type: 'failed', code: 'EOF', bytes: this.pending?.parser.bytes ?? 0, established: this.established });
    });
    this.socket.once('connect', () => (this.established = true));
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.on('end', () => this.onEnd());
    this.socket.on('error', (err: NodeJS.ErrnoException) => {
      this.closed = true;
      this.settle({ type: 'failed', code: err.code ?? 'ERROR', bytes: this.pending?.parser.bytes ?? 0, established: this.established });
    });
  }

  /** False once the peer closed or the socket failed: a new connection is needed. */
  get usable(): boolean {
    return !this.closed && !this.socket.destroyed && this.socket.writable;
  }

  /** Writes one request and waits for its outcome. Only one at a time. */
  exchange(request: Buffer, method: string, timeoutMs: number): Promise<Exchange> {
    if (this.pending) throw new Error('exchange already in progress');
    this.requests++;
    return new Promise<Exchange>((resolve) => {
      const parser = new ResponseParser(method);
      const timer = setTimeout(() => {
        this.settle({ type: 'timeout', bytes: parser.bytes, established: this.established });
        this.destroy();
      }, timeoutMs);
      this.pending = { parser, resolve, timer };
      this.socket.write(request);
    });
  }

  destroy(): void {
    this.closed = true;
    this.socket.destroy();
  }

  private settle(e: Exchange): void {
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    clearTimeout(p.timer);
    p.resolve(e);
  }

  private onData(chunk: Buffer): void {
    const p = this.pending;
    if (!p) {
      this.destroy(); // bytes nobody asked for: this connection cannot be trusted any more
      return;
    }
    const r = p.parser.push(chunk);
    if (r.state === 'complete') {
      const reusable = r.response.reusable && r.extraBytes === 0;
      if (!reusable) this.destroy();
      this.settle({ type: 'response', response: r.response, bytes: p.parser.bytes, reusable });
    } else if (r.state === 'error') {
      this.destroy();
      this.settle({ type: 'failed', code: r.code, bytes: p.parser.bytes, established: true });
    }
  }

  private onEnd(): void {
    this.closed = true;
    const p = this.pending;
    if (!p) {
      this.socket.destroy();
      return;
    }
    const r = p.parser.end();
    this.socket.destroy();
    if (r.state === 'complete') this.settle({ type: 'response', response: r.response, bytes: p.parser.bytes, reusable: false });
    else this.settle({ type: 'failed', code: r.state === 'error' ? r.code : 'EOF', bytes: p.parser.bytes, established: true });
  }
}
