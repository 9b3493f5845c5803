// The two load shapes: an open loop of new connections at a fixed rate, and
// keep-alive clients sending back to back. Both stop when `stop` aborts.
import { classify, type Classified } from './classify.js';
import type { Clock } from './clock.js';
import { Connection, type Exchange, type SocketGauge } from './connection.js';
import type { Target } from './types.js';
import { h2OneShot } from './h2.js';

/** A due slot later than this is not sent in a burst: it is skipped and counted as behind. */
const LATE_MS = 50;
const BACKOFF_MIN_MS = 10;
const BACKOFF_MAX_MS = 200;

export interface LoadContext {
  target: Target;
  clock: Clock;
  timeoutMs: number;
  stop: AbortSignal;
  requestClose: Buffer;
  requestKeepAlive: Buffer;
  /** The request path (HTTP/2 builds its own requests). */
  path: string;
  /** HTTP/2 over TLS instead of HTTP/1.1. */
  http2: boolean;
  /** Takes one request from the run's budget; false when it is spent. */
  takeBudget(): boolean;
  record(e: Exchange, mode: 'rate' | 'keepalive', startMs: number, reused: boolean): Classified;
}

export interface RateStats {
  sent: number;
  behind: number;
}

/** Opens one new connection per slot, slots evenly spread, never waiting on earlier ones. */
export async function runRate(ctx: LoadContext, rate: number, durationMs: number, gauge: SocketGauge): Promise<RateStats> {
  const interval = 1000 / rate;
  const slots = Math.ceil((durationMs * rate) / 1000 - 1e-9);
  const inflight = new Set<Promise<void>>();
  let sent = 0;
  let behind = 0;
  for (let slot = 0; slot < slots && !ctx.stop.aborted; ) {
    const due = slot * interval;
    const now = ctx.clock.now();
    if (due > now) {
      await ctx.clock.sleepUntil(due, ctx.stop);
      continue;
    }
    slot++;
    if (now - due > LATE_MS || gauge.full || !ctx.takeBudget()) {
      behind++;
      continue;
    }
    sent++;
    const p = oneShot(ctx, gauge);
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
  }
  await Promise.all(inflight);
  return { sent, behind };
}

async function oneShot(ctx: LoadContext, gauge: SocketGauge): Promise<void> {
  if (ctx.http2) return h2OneShot(ctx, gauge);
  const start = ctx.clock.now();
  const conn = new Connection(ctx.target, gauge);
  const e = await conn.exchange(ctx.requestClose, 'GET', ctx.timeoutMs);
  conn.destroy();
  ctx.record(e, 'rate', start, false);
}

/** One keep-alive client: requests back to back, reconnecting whenever the connection ends. */
export async function keepAliveClient(ctx: LoadContext, gauge: SocketGauge): Promise<void> {
  let conn: Connection | null = null;
  let backoff = 0;
  try {
    while (!ctx.stop.aborted && ctx.takeBudget()) {
      if (conn === null || !conn.usable) {
        conn?.destroy();
        conn = new Connection(ctx.target, gauge);
      }
      const reused = conn.requests > 0;
      const start = ctx.clock.now();
      const e = await conn.exchange(ctx.requestKeepAlive, 'GET', ctx.timeoutMs);
      const c = ctx.record(e, 'keepalive', start, reused);
      if (e.type !== 'response' || !e.reusable) {
        conn.destroy();
        conn = null;
      }
      // Nothing listens (or the connect itself failed): do not spin on reconnects.
      if (c.kind === 'refused' || (c.kind === 'other' && e.type === 'failed' && !e.established)) {
        backoff = Math.min(Math.max(BACKOFF_MIN_MS, backoff * 2), BACKOFF_MAX_MS);
        await ctx.clock.sleepUntil(ctx.clock.now() + backoff, ctx.stop);
      } else {
        backoff = 0;
      }
    }
  } finally {
    conn?.destroy();
  }
}
