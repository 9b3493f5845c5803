/**
 * The app's errors in the error log: with their stack (source-mapped when the app ships source
 * maps: the worker enables them before loading it) and the request they broke, once per distinct
 * error per interval (`RepeatLog`: the repeats in one `app-error-repeated` line).
 */
import type { IncomingMessage } from 'node:http';
import { errorMessage } from '../shared/errors.js';
import type { Fields, Level } from '../shared/log.js';
import { REPEAT_INTERVAL_MS, RepeatLog } from './repeat-log.js';

/** The error's stack as text (its own message line included), or undefined if it has none. */
export function stackOf(err: unknown): string | undefined {
  const stack = err instanceof Error ? err.stack : undefined;
  return typeof stack === 'string' && stack !== '' ? stack : undefined;
}

/** The request's method and path (its query left out: it may carry secrets). */
export function requestFields(req: IncomingMessage | undefined): Fields {
  if (!req) return {};
  return { method: req.method, path: withoutQuery(req.url ?? '') };
}

/** A request target without its query (which may carry secrets: tokens, keys). */
export function withoutQuery(url: string): string {
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

export class AppErrorLog {
  private readonly repeats: RepeatLog;

  constructor(log: (level: Level, event: string, fields: Fields) => void, intervalMs = REPEAT_INTERVAL_MS) {
    this.repeats = new RepeatLog(log, 'error', 'app-error', intervalMs);
  }

  report(err: unknown, where: string, req?: IncomingMessage): void {
    const error = errorMessage(err);
    const stack = stackOf(err);
    // distinct: where it surfaced, what it says, and the first frame that threw it
    const key = `${where}\0${error}\0${stack?.split('\n').find((l) => l.trimStart().startsWith('at ')) ?? ''}`;
    this.repeats.report(key, { where, ...requestFields(req), error, stack }, { where, error });
  }

  /** Logs the repeats of the errors whose interval ended, and forgets them. */
  sweep(now = Date.now()): void { this.repeats.sweep(now); }

  /** At exit: the repeats not logged yet. */
  flush(): void { this.repeats.flush(); }
}
