// Collects outcomes and turns them into the report: counts, latency, generations.
import type { CommandResult, Outcome, ProbeCounts, ProbeResult } from './types.js';

export const GENERATION_HEADER = 'x-quiesce-generation';

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)]!;
}

const round2 = (x: number | null): number | null => (x === null ? null : Math.round(x * 100) / 100);

function bump(o: Record<string, number>, key: string): void {
  o[key] = (o[key] ?? 0) + 1;
}

export function countOutcomes(outcomes: readonly Outcome[]): ProbeCounts & {
  ok_by_status: Record<string, number>;
  other_by_code: Record<string, number>;
  generations: Record<string, number>;
} {
  const c = { ok: 0, refused: 0, cut: 0, cut_after_bytes: 0, ka_race: 0, forced: 0, timeout: 0, other: 0 };
  const ok_by_status: Record<string, number> = {};
  const other_by_code: Record<string, number> = {};
  const generations: Record<string, number> = {};
  for (const o of outcomes) {
    c[o.kind]++;
    if (o.kind === 'cut' && o.bytes > 0) c.cut_after_bytes++;
    if (o.kind === 'ok') {
      bump(ok_by_status, String(o.status));
      if (o.generation !== undefined) bump(generations, o.generation);
    }
    if (o.kind === 'other') bump(other_by_code, o.code ?? 'unknown');
  }
  return { ...c, ok_by_status, other_by_code, generations };
}

export interface RunFacts {
  rate: { asked: number; sent: number; behind: number; windowMs: number };
  commands: CommandResult[];
  durationMs: number;
}

/**
 * Why a run fails: anything cut, ka_race, timeout or other; and a run that proves nothing: no
 * request completed at all (a dead target), or none before the first command (the command then
 * met a server that was not serving). A forced response is a completed one.
 */
export function failReasons(c: ProbeCounts, outcomes: readonly Outcome[], commands: readonly CommandResult[]): string[] {
  const reasons: string[] = [];
  for (const k of ['cut', 'ka_race', 'timeout', 'other'] as const) if (c[k] > 0) reasons.push(`${c[k]} ${k}`);
  const completed = (o: Outcome): boolean => o.kind === 'ok' || o.kind === 'forced';
  if (c.ok + c.forced === 0) {
    reasons.push(`no request completed (of ${outcomes.length} sent${c.refused > 0 ? `, ${c.refused} refused` : ''}): is the target serving?`);
  } else if (commands.length > 0) {
    const firstAtMs = Math.min(...commands.map((x) => x.at_s)) * 1000;
    if (!outcomes.some((o) => completed(o) && o.endMs <= firstAtMs)) {
      reasons.push(`no request completed before the first command (at ${firstAtMs / 1000} s): the target was not serving when it ran`);
    }
  }
  return reasons;
}

export function buildResult(outcomes: Outcome[], facts: RunFacts): ProbeResult {
  const c = countOutcomes(outcomes);
  const reasons = failReasons(c, outcomes, facts.commands);
  const lat = outcomes
    .filter((o) => o.kind === 'ok')
    .map((o) => o.endMs - o.startMs)
    .sort((a, b) => a - b);
  const { asked, sent, behind, windowMs } = facts.rate;
  return {
    ok: c.ok,
    refused: c.refused,
    cut: c.cut,
    cut_after_bytes: c.cut_after_bytes,
    ka_race: c.ka_race,
    forced: c.forced,
    timeout: c.timeout,
    other: c.other,
    ok_by_status: c.ok_by_status,
    other_by_code: c.other_by_code,
    status: reasons.length === 0 ? 'pass' : 'fail',
    reasons,
    sent: outcomes.length,
    latency_ms: {
      p50: round2(percentile(lat, 0.5)),
      p90: round2(percentile(lat, 0.9)),
      p99: round2(percentile(lat, 0.99)),
      max: round2(lat.length ? lat[lat.length - 1]! : null),
    },
    rate: {
      asked,
      achieved: asked > 0 && windowMs > 0 ? Math.round((sent / (windowMs / 1000)) * 10) / 10 : 0,
      behind,
    },
    commands: facts.commands,
    duration_s: Math.round(facts.durationMs) / 1000,
    generations: c.generations,
    outcomes,
  };
}
