// Milliseconds since the start of the load, and sleeps measured against it.
import { performance } from 'node:perf_hooks';

export class Clock {
  private readonly t0 = performance.now();

  now(): number {
    return performance.now() - this.t0;
  }

  /** Resolves true at (not before) the given time, or false as soon as the signal aborts. */
  sleepUntil(ms: number, signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout;
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        resolve(ok);
      };
      const onAbort = (): void => done(false);
      // Timers may fire a fraction of a millisecond early against performance.now(): re-arm.
      const arm = (): void => {
        const left = ms - this.now();
        if (left <= 0) done(true);
        else timer = setTimeout(arm, Math.ceil(left));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      arm();
    });
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
