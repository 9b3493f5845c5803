/**
 * The error log: one line per event, `TIME [level] who: event key=value …`. Event names are stable
 * (operators grep for them; docs/ARCHITECTURE.md lists them). The destination is a file or stderr,
 * reopened on USR1 (`quiesce reopen-logs`).
 */
import { closeSync, openSync, writeSync } from 'node:fs';

/** Levels from the least to the most severe; `--log-level` keeps a level and those after it. */
export const LEVELS = ['debug', 'info', 'notice', 'warn', 'error', 'alert'] as const;
export type Level = (typeof LEVELS)[number];
export type Fields = Record<string, string | number | boolean | undefined | null>;
export type LogFormat = 'text' | 'json';

/** One event of the error log, before it is formatted. */
export type LogRecord = { time: string; level: Level; who: string; event: string; fields: Fields };

function fmtValue(v: string | number | boolean): string {
  const s = String(v);
  return /^[\w.:/@+,-]*$/.test(s) && s !== '' ? s : JSON.stringify(s);
}

export function formatLine(level: Level, who: string, event: string, fields: Fields = {}): string {
  return formatRecord({ time: new Date().toISOString(), level, who, event, fields }, 'text');
}

/**
 * `text`: `TIME [level] who: event key=value …`; `json`: one object per line with `time`, `level`,
 * `who`, `event` and the fields (a field named like one of those four is put under `field_NAME`).
 */
export function formatRecord(r: LogRecord, format: LogFormat): string {
  if (format === 'json') {
    const o: Record<string, unknown> = { time: r.time, level: r.level, who: r.who, event: r.event };
    for (const [k, v] of Object.entries(r.fields)) if (v !== undefined && v !== null) o[k in o ? `field_${k}` : k] = v;
    return JSON.stringify(o) + '\n';
  }
  let line = `${r.time} [${r.level}] ${r.who}: ${r.event}`;
  for (const [k, v] of Object.entries(r.fields)) if (v !== undefined && v !== null) line += ` ${k}=${fmtValue(v)}`;
  return line + '\n';
}

/**
 * A worker's own log events reach the master on the worker's stderr, beside the app's output,
 * each as one line: this marker (an ASCII record separator, which no text log starts with) and
 * the record as JSON. The master decodes them and formats them its way; every other line is the
 * app's, passed through as written.
 */
export const WORKER_RECORD_MARK = '\x1eqlog';

export function encodeWorkerRecord(level: Level, event: string, fields: Fields = {}): string {
  return `${WORKER_RECORD_MARK}${JSON.stringify({ time: new Date().toISOString(), level, event, fields })}\n`;
}

/** The record of a worker's log line (without its newline), or null when the line is the app's. */
export function decodeWorkerRecord(line: string, who: string): LogRecord | null {
  if (!line.startsWith(WORKER_RECORD_MARK)) return null;
  try {
    const o = JSON.parse(line.slice(WORKER_RECORD_MARK.length)) as Partial<LogRecord>;
    if (typeof o.event !== 'string' || !(LEVELS as readonly unknown[]).includes(o.level)) return null;
    return { time: typeof o.time === 'string' ? o.time : new Date().toISOString(), level: o.level as Level, who, event: o.event, fields: o.fields ?? {} };
  } catch {
    return null;
  }
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
  private min = LEVELS.indexOf('info');
  private format: LogFormat = 'text';
  constructor(private readonly sink: LineSink, private readonly who: string) {}
  /** `--log-level` and `--error-log-format` (at start and at each reload). */
  configure(o: { logLevel: Level; errorLogFormat: LogFormat }): void {
    this.min = LEVELS.indexOf(o.logLevel);
    this.format = o.errorLogFormat;
  }
  log(level: Level, event: string, fields: Fields = {}): void {
    this.record({ time: new Date().toISOString(), level, who: this.who, event, fields });
  }
  /** Writes a record made elsewhere (a worker's), if its level is kept. */
  record(r: LogRecord): void {
    if (LEVELS.indexOf(r.level) >= this.min) this.sink.write(formatRecord(r, this.format));
  }
  info(event: string, fields?: Fields): void { this.log('info', event, fields); }
  notice(event: string, fields?: Fields): void { this.log('notice', event, fields); }
  warn(event: string, fields?: Fields): void { this.log('warn', event, fields); }
  error(event: string, fields?: Fields): void { this.log('error', event, fields); }
  alert(event: string, fields?: Fields): void { this.log('alert', event, fields); }
}
