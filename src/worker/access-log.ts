/**
 * Access log lines, formatted in the worker and written in batches to a pipe the master reads
 * (fd 4). Only the master opens log files, so they stay reopenable after workers drop privileges
 * and a USR1 reopen needs no worker at all.
 */
import { Socket } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';

export const ACCESS_LOG_FD = 4;
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

let clfSecond = -1;
let clfCached = '';
/** `10/Oct/2000:13:55:36 +0000`, computed once per second. */
function clfTime(now: number): string {
  const sec = Math.floor(now / 1000);
  if (sec !== clfSecond) {
    const d = new Date(sec * 1000);
    const p = (n: number) => String(n).padStart(2, '0');
    clfCached = `${p(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
    clfSecond = sec;
  }
  return clfCached;
}

function q(s: string | undefined): string {
  return s === undefined ? '-' : s.replace(/[\\"\x00-\x1f\x7f]/g, (c) => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0'));
}

/** `bytes`: the body bytes sent (see bodyBytes). */
export type AccessEntry = { req: IncomingMessage; res: ServerResponse; bytes: number; startedAt: number };

/** Node's header block of a response once written (undocumented, Node 20-24): latin1, so its length is its bytes. */
type WrittenHeader = { _header?: string | null };

/**
 * The body bytes of a response (Combined Log Format's `%b`), from what its socket wrote since the
 * request began (`before`, its socket's bytesWritten then): minus the header block, as nginx's `$body_bytes_sent` counts it (chunk
 * framing included). Nothing per write is counted on the way.
 */
export function bodyBytes(req: IncomingMessage, res: ServerResponse, before: number): number {
  const sent = req.socket.bytesWritten - before; // (res.socket is detached once the response finished)
  const header = (res as unknown as WrittenHeader)._header;
  return Math.max(0, sent - (typeof header === 'string' ? header.length : 0));
}

/** The client's address; an IPv4 client of a dual-stack listener shows as 127.0.0.1, not ::ffff:127.0.0.1. */
export function clientAddress(req: IncomingMessage): string | undefined {
  const a = req.socket.remoteAddress;
  return a !== undefined && a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

export function combined({ req, res, bytes }: AccessEntry): string {
  const host = clientAddress(req) ?? '-';
  const line = `${req.method ?? '-'} ${req.url ?? '-'} HTTP/${req.httpVersion}`;
  return `${host} - - [${clfTime(Date.now())}] "${q(line)}" ${res.statusCode} ${bytes > 0 ? bytes : '-'} "${q(req.headers.referer)}" "${q(req.headers['user-agent'])}"\n`;
}

export function json({ req, res, bytes, startedAt }: AccessEntry, extra: Record<string, number>): string {
  return JSON.stringify({
    time: new Date().toISOString(),
    remote: clientAddress(req) ?? null,
    method: req.method,
    url: req.url,
    protocol: `HTTP/${req.httpVersion}`,
    status: res.statusCode,
    bytes,
    referer: req.headers.referer ?? null,
    user_agent: req.headers['user-agent'] ?? null,
    duration_ms: Date.now() - startedAt,
    ...extra,
  }) + '\n';
}

/**
 * Buffers lines and writes them to the master in batches, as nginx's `access_log … buffer= flush=`:
 * when FLUSH_BYTES are waiting or FLUSH_MS after the first waiting line, and at exit. Fewer,
 * larger writes cost the master fewer wake-ups and reads per logged request.
 */
export const FLUSH_BYTES = 32 * 1024;
export const FLUSH_MS = 50;

export class AccessLogPipe {
  private readonly out: Socket;
  private buf: string[] = [];
  private bytes = 0;
  private timer: NodeJS.Timeout | undefined;
  constructor(fd = ACCESS_LOG_FD) {
    this.out = new Socket({ fd, readable: false, writable: true });
    this.out.on('error', () => { /* master gone: nothing to log to */ });
    this.out.unref();
  }
  write(line: string): void {
    this.buf.push(line);
    this.bytes += line.length;
    if (this.bytes >= FLUSH_BYTES) this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), FLUSH_MS);
      this.timer.unref();
    }
  }
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.buf.length === 0) return;
    const data = this.buf.join('');
    this.buf = [];
    this.bytes = 0;
    this.out.write(data);
  }
  end(): Promise<void> {
    this.flush();
    return new Promise((r) => this.out.end(r));
  }
}
