/**
 * The error log: one line per event, `TIME [level] who: event key=value …`. Event names are stable
 * (operators grep for them; docs/ARCHITECTURE.md lists them). The destination is a file or stderr,
 * reopened on USR1 (`quiesce reopen-logs`).
 */
import { createWriteStream, type WriteStream } from 'node:fs';

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

/** A sink for whole lines that can be pointed at a file or a std stream and reopened. */
export class LineSink {
  private stream: WriteStream | NodeJS.WriteStream;
  constructor(private target: string, private readonly std: NodeJS.WriteStream) {
    this.stream = this.open(target);
  }
  private open(target: string): WriteStream | NodeJS.WriteStream {
    if (target === '-' || target === '') return this.std;
    const s = createWriteStream(target, { flags: 'a' });
    s.on('error', (err) => this.std.write(formatLine('error', 'master', 'log-write-failed', { file: target, error: err.message })));
    return s;
  }
  write(data: string | Buffer): void {
    this.stream.write(data);
  }
  /** Point at a (possibly new) target; the old file stream is ended after pending writes. */
  reopen(target = this.target): void {
    const old = this.stream;
    this.target = target;
    this.stream = this.open(target);
    if (old !== this.std && old !== this.stream) (old as WriteStream).end();
  }
  close(): Promise<void> {
    const s = this.stream;
    if (s === this.std) return Promise.resolve();
    return new Promise((r) => (s as WriteStream).end(r));
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
