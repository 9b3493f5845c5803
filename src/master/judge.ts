/**
 * The reload judge: compares the new generation with the old one on each one's own traffic during
 * the soak (responses counted by the workers, docs/ARCHITECTURE.md "Request metrics") and says
 * whether the new one is worse. Pure: the master gathers the counts and acts on the verdict.
 */
import { fmtInt, fmtLatency } from './status/format.js';
import { pct, quantileMs, ratio5xx, total, type RequestCounts } from '../shared/request-metrics.js';

/** Latencies (p50, p99) closer than this are never judged worse, whatever their ratio (a cold worker's JIT, timer granularity). */
export const P99_FLOOR_MS = 5;

/** Responses each side needs before its p99 is judged (10 responses make the tail). */
export const P99_MIN_RESPONSES = 1000;

export type JudgeLimits = { max5xxRatio: number; maxP99Ratio: number; minRequests: number };

export type Side = { responses: number; ratio5xx: number; p50Ms: number | null; p99Ms: number | null };

export type Verdict = {
  verdict: 'pass' | 'fail' | 'abstain';
  /** One line with the figures: "new 5xx 19.8% vs old 0.1% over 1,204 requests". */
  message: string;
  old: Side;
  new: Side;
};

const n = fmtInt;
const ms = fmtLatency;

function side(c: RequestCounts): Side {
  return { responses: total(c), ratio5xx: ratio5xx(c), p50Ms: quantileMs(c, 0.5), p99Ms: quantileMs(c, 0.99) };
}

/** `old`: the old generation's responses during the soak; `fresh`: the new generation's. */
export function judge(old: RequestCounts, fresh: RequestCounts, limits: JudgeLimits): Verdict {
  const o = side(old);
  const f = side(fresh);
  const base = { old: o, new: f };
  const few = [f.responses < limits.minRequests ? `the new generation served ${n(f.responses)}` : '', o.responses < limits.minRequests ? `the old generation served ${n(o.responses)}` : '']
    .filter(Boolean);
  if (few.length > 0) {
    return { ...base, verdict: 'abstain', message: `judge abstained: ${few.join(' and ')} requests during the soak (fewer than --judge-min-requests ${limits.minRequests})` };
  }
  const over = `over ${n(f.responses)} requests (old: ${n(o.responses)})`;
  if (f.ratio5xx > o.ratio5xx + limits.max5xxRatio) {
    return { ...base, verdict: 'fail', message: `new 5xx ${pct(f.ratio5xx)} vs old ${pct(o.ratio5xx)} ${over}, limit +${pct(limits.max5xxRatio)}` };
  }
  // the median is held to the ratio always; the p99 only from P99_MIN_RESPONSES on each side: the
  // p99 of a few hundred responses is their two or three slowest, one hiccup of a loaded machine
  const tail = f.responses >= P99_MIN_RESPONSES && o.responses >= P99_MIN_RESPONSES;
  for (const [q, nq, oq] of [['p99', tail ? f.p99Ms : null, o.p99Ms], ['p50', f.p50Ms, o.p50Ms]] as const) {
    if (nq !== null && oq !== null && nq > oq * limits.maxP99Ratio && nq - oq > P99_FLOOR_MS) {
      return { ...base, verdict: 'fail', message: `new ${q} ${ms(nq)} vs old ${ms(oq)} (${(nq / Math.max(oq, 0.001)).toFixed(1)}x, limit ${limits.maxP99Ratio}x) ${over}` };
    }
  }
  return { ...base, verdict: 'pass', message: `judge passed: new 5xx ${pct(f.ratio5xx)} vs old ${pct(o.ratio5xx)}, p50 ${ms(f.p50Ms)} vs ${ms(o.p50Ms)}, p99 ${ms(f.p99Ms)} vs ${ms(o.p99Ms)} ${over}` };
}
