/**
 * A worker's stdout and stderr, relayed to the master's own: the app's output passes through as
 * it was written (bytes unchanged, a JSON log line stays parseable), whole lines at a time so that
 * lines of two workers never interleave mid-line, and what arrived in one read (a multi-line
 * `console.error(err)`, written by one write(2)) goes out in one write. On stderr, the worker's own
 * log records (`encodeWorkerRecord`) are picked out and handed to the error log instead.
 */
import { decodeWorkerRecord, type LogRecord } from '../shared/log.js';

/** A partial line is held this long for its end (a progress bar, a prompt) before it is let out as it is. */
const PARTIAL_MS = 250;
/** A line longer than this goes out in pieces. */
const MAX_HELD = 64 * 1024;

export type RelayTarget = {
  /** Writes the app's bytes to the master's stream (stdout or stderr). */
  write: (data: Buffer) => void;
  /** A log record of the worker (stderr only). */
  record: (r: LogRecord) => void;
  /** "raw", or "tagged": this text goes before every line of the app. */
  tag: () => string;
};

export class OutputRelay {
  private held: Buffer = Buffer.alloc(0);
  private timer?: NodeJS.Timeout;

  constructor(private readonly who: string, private readonly target: RelayTarget, private readonly records: boolean) {}

  push(chunk: Buffer): void {
    const data = this.held.length > 0 ? Buffer.concat([this.held, chunk]) : chunk;
    const end = data.lastIndexOf(0x0a) + 1;
    if (end > 0) this.emit(data.subarray(0, end));
    this.held = Buffer.from(data.subarray(end));
    if (this.held.length >= MAX_HELD) this.flush();
    clearTimeout(this.timer);
    if (this.held.length > 0) this.timer = setTimeout(() => this.flush(), PARTIAL_MS).unref();
  }

  /** Lets out what is held (the stream ended, or a partial line waited long enough). */
  flush(): void {
    clearTimeout(this.timer);
    if (this.held.length > 0) this.emit(this.held);
    this.held = Buffer.alloc(0);
  }

  /** `data` is whole lines (or a partial line let out): the app's runs of lines go out in one write each. */
  private emit(data: Buffer): void {
    const tag = this.target.tag();
    if (!this.records && tag === '') {
      this.target.write(data);
      return;
    }
    let run: Buffer[] = [];
    const out = () => {
      if (run.length > 0) this.target.write(run.length === 1 ? (run[0] as Buffer) : Buffer.concat(run));
      run = [];
    };
    for (let start = 0; start < data.length; ) {
      const nl = data.indexOf(0x0a, start);
      const end = nl < 0 ? data.length : nl + 1;
      const line = data.subarray(start, end);
      start = end;
      const rec = this.records && line[0] === 0x1e ? decodeWorkerRecord(line.toString('utf8').replace(/\n$/, ''), this.who) : null;
      if (rec) {
        out();
        this.target.record(rec);
      } else {
        if (tag !== '') run.push(Buffer.from(tag));
        run.push(line);
      }
    }
    out();
  }
}
