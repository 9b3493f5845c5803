/**
 * A log event that a client or an app can trigger at will, logged once per distinct key per
 * interval: the repeats are counted and logged as one `<event>-repeated` line at the interval's
 * end, so that a handler failing on every request or a client sending garbage in a loop cannot
 * flood the log. Used for `app-error` and `bad-request`.
 */
import type { Fields, Level } from '../shared/log.js';

/** How long a distinct event is logged once. */
export const REPEAT_INTERVAL_MS = 10_000;
/** Distinct keys remembered per interval; past it, further new ones are logged without counting. */
const MAX_KEYS = 1_000;

type Seen = { summary: Fields; at: number; repeats: number };

export class RepeatLog {
  private readonly seen = new Map<string, Seen>();
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly log: (level: Level, event: string, fields: Fields) => void,
    private readonly level: Level,
    private readonly event: string,
    private readonly intervalMs = REPEAT_INTERVAL_MS,
  ) {}

  /** Logs `fields` unless `key` was logged within the interval; `summary` names it in the repeats line. */
  report(key: string, fields: Fields, summary: Fields): void {
    const now = Date.now();
    const prev = this.seen.get(key);
    if (prev && now - prev.at < this.intervalMs) {
      prev.repeats++;
      return;
    }
    if (prev) this.repeated(prev);
    if (this.seen.size < MAX_KEYS || prev) this.seen.set(key, { summary, at: now, repeats: 0 });
    this.log(this.level, this.event, fields);
    this.timer ??= setInterval(() => this.sweep(), this.intervalMs).unref();
  }

  /** Logs the repeats of the keys whose interval ended, and forgets them. */
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
    if (s.repeats > 0) this.log(this.level, `${this.event}-repeated`, { ...s.summary, times: s.repeats, within_s: this.intervalMs / 1000 });
    s.repeats = 0;
  }
}
