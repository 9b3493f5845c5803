/**
 * The error log: one line per event, `TIME [level] who: event key=value …`. Event names are stable
 * (operators grep for them; docs/ARCHITECTURE.md lists them). The destination is a file or stderr,
 * reopened on USR1 (`quiesce reopen-logs`).
 */
import { closeSync, openSync, writeSync } from 'node:fs';

export type Level = 'debug' | 'info' | 'notice' | 'warn' | 'error' | 'alert';
export type Fields = Record<string, string | number | boolean | undefined | null>;

function fmtValue(v: string | number | boolean): string {
  const s = String(v);
  return /^[\w.:/@+,-]*$/.test(s) && s !== '' ? s : JSON.stringify(s);
}

export function formatLine(level: Level, who: string, event: string, fields: Fields = {}): string {
  let line = `${new Date().toISOString()} [${level}] ${who}: ${event}`;
  for (const [k, v] of Object.entries(fields)) if (v !== undefined && v !== null) line += ` ${k}=${fmtValue(v)}`;
  return line + '\n';
}

/**
 * A sink for whole lines that can be pointed at a file or a std stream and reopened. A file is
 * written with write(2) on an O_APPEND descriptor, in the caller's turn: no stream buffering, no
 * thread-pool hop per batch (the access log's batches arrive from every worker, all the time). A
 * local log file takes such a write in microseconds, as nginx's and Apache's workers assume.
 */
/**
 * Keeps a std stream whose reader went away (a closed pipe: EPIPE) from killing or spinning the
 * process: the stream is destroyed and an unhandled 'error' would be an uncaughtException, logged
 * to the same dead stream, in a loop. Writers check `stream.destroyed`. `then` hears the first error.
 */
export function survivePipeLoss(stream: NodeJS.WriteStream, then?: (err: Error) => void): void {
  let told = false;
  stream.on('error', (err: Error) => {
    if (!told) then?.(err);
    told = true;
  });
}

export class LineSink {
  private fd = -1;
  private failed = false;
  /** `std` is where lines go for target "-"; once its reader is gone they are dropped (`onStdGone` hears it once). */
  constructor(private target: string, private readonly std: NodeJS.WriteStream, onStdGone?: (err: Error) => void) {
    this.fd = this.open(target);
    survivePipeLoss(std, onStdGone);
  }
  private open(target: string): number {
    if (target === '-' || target === '') return -1;
    try {
      return openSync(target, 'a');
    } catch (err) {
      this.complain(target, err);
      return -1;
    }
  }
  private complain(file: string, err: unknown): void {
    if (!this.std.destroyed) this.std.write(formatLine('error', 'master', 'log-write-failed', { file, error: (err as Error).message }));
  }
  /** Writes `data` now; a Buffer may be reused by the caller once this returns. */
  write(data: string | Buffer): void {
    if (this.fd < 0) {
      // a std stream may queue what it cannot write at once: give it its own copy
      if ((this.target === '-' || this.target === '') && !this.std.destroyed) this.std.write(typeof data === 'string' ? data : Buffer.from(data));
      return;
    }
    try {
      const buf = typeof data === 'string' ? Buffer.from(data) : data;
      for (let off = 0, n = 0; off < buf.length && n < 64; n++) off += writeSync(this.fd, buf, off);
      this.failed = false;
    } catch (err) {
      if (!this.failed) this.complain(this.target, err); // once per run of failures, not per line
      this.failed = true;
    }
  }
  /** Point at a (possibly new) target: the next write goes there; the old file is closed. */
  reopen(target = this.target): void {
    const old = this.fd;
    this.target = target;
    this.fd = this.open(target);
    if (old >= 0) closeSync(old);
  }
  close(): Promise<void> {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
    return Promise.resolve();
  }
}

export class Logger {
  constructor(private readonly sink: LineSink, private readonly who: string) {}
  log(level: Level, event: string, fields?: Fields): void {
    this.sink.write(formatLine(level, this.who, event, fields));
  }
  info(event: string, fields?: Fields): void { this.log('info', event, fields); }
  notice(event: string, fields?: Fields): void { this.log('notice', event, fields); }
  warn(event: string, fields?: Fields): void { this.log('warn', event, fields); }
  error(event: string, fields?: Fields): void { this.log('error', event, fields); }
  alert(event: string, fields?: Fields): void { this.log('alert', event, fields); }
}
