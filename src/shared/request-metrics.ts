/**
 * Request metrics: responses by status class and a latency histogram with fixed log-scale
 * buckets. Workers count (worker/request-metrics.ts) and send the cumulative counts with their
 * stats; the master adds them up per generation and per worker. Fixed buckets make the merge a sum
 * and the quantiles an interpolation inside one bucket. See docs/ARCHITECTURE.md, "Request metrics".
 */

/**
 * Upper bounds of the latency buckets, in seconds (1, 1.5, 2, 2.5, 3, 4, 5, 7 per decade from 0.1 ms to
 * 7 s, then 10-60 s); a last bucket holds everything slower (Prometheus' +Inf).
 */
export const LATENCY_BOUNDS_S: readonly number[] = (() => {
  const out: number[] = [];
  for (let e = -4; e <= 0; e++) for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 7]) out.push(Number((m * 10 ** e).toPrecision(2)));
  out.push(10, 15, 20, 30, 60);
  return out;
})();
/** The same bounds in milliseconds, as the worker compares them. */
export const LATENCY_BOUNDS_MS: readonly number[] = LATENCY_BOUNDS_S.map((s) => Number((s * 1000).toPrecision(2)));
/** Buckets: one per bound, then the overflow. */
export const LATENCY_BUCKETS = LATENCY_BOUNDS_S.length + 1;
/** Status classes counted: 1xx..5xx (index 0..4); anything outside 100-599 counts as 5xx. */
export const CODE_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;

/** Cumulative counts: `codes[i]` responses of class i+1, `latency[b]` responses in bucket b, `sumMs` their latencies added up. */
export type RequestCounts = { codes: number[]; latency: number[]; sumMs: number };

export function emptyCounts(): RequestCounts {
  return { codes: new Array<number>(CODE_CLASSES.length).fill(0), latency: new Array<number>(LATENCY_BUCKETS).fill(0), sumMs: 0 };
}

/** a += b (b may be missing: a worker that reported none). */
export function addCounts(a: RequestCounts, b: RequestCounts | undefined): RequestCounts {
  if (!b) return a;
  for (let i = 0; i < a.codes.length; i++) a.codes[i]! += b.codes[i] ?? 0;
  for (let i = 0; i < a.latency.length; i++) a.latency[i]! += b.latency[i] ?? 0;
  a.sumMs += b.sumMs ?? 0;
  return a;
}

/** a - b: what happened between two cumulative readings (never below 0: a worker gone since is in neither). */
export function diffCounts(a: RequestCounts, b: RequestCounts): RequestCounts {
  return {
    codes: a.codes.map((x, i) => Math.max(0, x - (b.codes[i] ?? 0))),
    latency: a.latency.map((x, i) => Math.max(0, x - (b.latency[i] ?? 0))),
    sumMs: Math.max(0, a.sumMs - b.sumMs),
  };
}

export function total(c: RequestCounts): number {
  return c.codes.reduce((a, b) => a + b, 0);
}

/** Share of 5xx among the responses, 0 when there are none. */
export function ratio5xx(c: RequestCounts): number {
  const n = total(c);
  return n === 0 ? 0 : c.codes[4]! / n;
}

/**
 * The q-quantile of the latency in ms, interpolated linearly inside its bucket (the overflow
 * bucket answers its lower bound); null with no responses.
 */
export function quantileMs(c: RequestCounts, q: number): number | null {
  const n = c.latency.reduce((a, b) => a + b, 0);
  if (n === 0) return null;
  const rank = q * n;
  let below = 0;
  for (let b = 0; b < c.latency.length; b++) {
    const inB = c.latency[b]!;
    if (inB > 0 && below + inB >= rank) {
      const lo = b === 0 ? 0 : LATENCY_BOUNDS_MS[b - 1]!;
      const hi = LATENCY_BOUNDS_MS[b];
      if (hi === undefined) return lo;
      return lo + ((hi - lo) * Math.max(0, rank - below)) / inB;
    }
    below += inB;
  }
  return LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.length - 1]!;
}

/** Per generation, as status shows it. */
export type HttpFigures = {
  /** Responses (every status class) counted since the generation started. */
  responses: number;
  /** Responses per second over the last few seconds (the master's own window), 0 when idle. */
  rps: number;
  /** 5xx share, 0..1. */
  ratio5xx: number;
  p50Ms: number | null;
  p99Ms: number | null;
  /** Responses by class: { '1xx': n, ... }. */
  codes: Record<string, number>;
};

export function figures(c: RequestCounts, rps: number): HttpFigures {
  return {
    responses: total(c), rps, ratio5xx: ratio5xx(c), p50Ms: round(quantileMs(c, 0.5)), p99Ms: round(quantileMs(c, 0.99)),
    codes: Object.fromEntries(CODE_CLASSES.map((k, i) => [k, c.codes[i]!])),
  };
}

function round(ms: number | null): number | null {
  return ms === null ? null : Math.round(ms * 100) / 100;
}

/** "19.8%", "0.1%", "0%". */
export function pct(x: number): string {
  return `${Number((x * 100).toFixed(x < 0.001 && x > 0 ? 2 : 1))}%`;
}
