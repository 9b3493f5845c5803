/**
 * The app's errors in the error log: with their stack (source-mapped when the app ships source
 * maps: the worker enables them before loading it) and the request they broke, once per distinct
 * error per interval, so that a handler failing on every request cannot flood the log: the
 * repeats are counted and logged as one `app-error-repeated` line at the interval's end.
 */
import type { IncomingMessage } from 'node:http';
import { errorMessage } from '../shared/errors.js';
import type { Fields, Level } from '../shared/log.js';

/** How long a distinct error is logged once. */
export const APP_ERROR_INTERVAL_MS = 10_000;
/** Distinct errors remembered per interval; past it, further new ones are logged without counting. */
const MAX_KEYS = 1_000;

type Seen = { where: string; error: string; at: number; repeats: number };

/** The error's stack as text (its own message line included), or undefined if it has none. */
export function stackOf(err: unknown): string | undefined {
  const stack = err instanceof Error ? err.stack : undefined;
  return typeof stack === 'string' && stack !== '' ? stack : undefined;
}

/** The request's method and path (its query left out: it may carry secrets). */
export function requestFields(req: IncomingMessage | undefined): Fields {
  if (!req) return {};
  const url = req.url ?? '';
  const q = url.indexOf('?');
  return { method: req.method, path: q < 0 ? url : url.slice(0, q) };
}

export class AppErrorLog {
  private readonly seen = new Map<string, Seen>();
  private timer?: NodeJS.Timeout;

  constructor(private readonly log: (level: Level, event: string, fields: Fields) => void, private readonly intervalMs = APP_ERROR_INTERVAL_MS) {}

  report(err: unknown, where: string, req?: IncomingMessage): void {
    const error = errorMessage(err);
    const stack = stackOf(err);
    // distinct: where it surfaced, what it says, and the first frame that threw it
    const key = `${where}\0${error}\0${stack?.split('\n').find((l) => l.trimStart().startsWith('at ')) ?? ''}`;
    const now = Date.now();
    const prev = this.seen.get(key);
    if (prev && now - prev.at < this.intervalMs) {
      prev.repeats++;
      return;
    }
    if (prev) this.repeated(prev);
    if (this.seen.size < MAX_KEYS || prev) this.seen.set(key, { where, error, at: now, repeats: 0 });
    this.log('error', 'app-error', { where, ...requestFields(req), error, stack });
    this.timer ??= setInterval(() => this.sweep(), this.intervalMs).unref();
  }

  /** Logs the repeats of the errors whose interval ended, and forgets them. */
  sweep(now = Date.now()): void {
    for (const [key, s] of this.seen) {
      if (now - s.at < this.intervalMs) continue;
      this.repeated(s);
      this.seen.delete(key);
    }
    if (this.seen.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** At exit: the repeats not logged yet. */
  flush(): void {
    for (const s of this.seen.values()) this.repeated(s);
    this.seen.clear();
  }

  private repeated(s: Seen): void {
    if (s.repeats > 0) this.log('error', 'app-error-repeated', { where: s.where, error: s.error, times: s.repeats, within_s: this.intervalMs / 1000 });
    s.repeats = 0;
  }
}
