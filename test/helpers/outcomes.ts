/** What the load tests say and assert of a probe run: one line of figures, and "nothing cut". */
import assert from 'node:assert/strict';
import type { ProbeResult } from '../../src/probe/index.js';

export function summary(p: ProbeResult): string {
  return `sent=${p.sent} ok=${p.ok} refused=${p.refused} cut=${p.cut} ka_race=${p.ka_race} timeout=${p.timeout} other=${p.other} ${JSON.stringify(p.other_by_code)}${failures(p)}`;
}

/** The first few failed requests, each with its times and code, so that a red run tells what happened. */
function failures(p: ProbeResult): string {
  const bad = (p.outcomes ?? []).filter((o) => o.kind !== 'ok' && o.kind !== 'refused');
  if (bad.length === 0) return '';
  const shown = bad.slice(0, 5).map((o) => `${o.kind} ${o.code ?? ''} start=${o.startMs.toFixed(0)}ms end=${o.endMs.toFixed(0)}ms bytes=${o.bytes}${o.reused ? ' reused' : ''}`);
  return ` failed: ${shown.join('; ')}${bad.length > 5 ? ` (+${bad.length - 5} more)` : ''}`;
}

/** Every request ended ok or refused: nothing cut, raced, timed out, forced or otherwise failed. */
export function assertNothingCut(p: ProbeResult): void {
  assert.equal(p.cut, 0, summary(p));
  assert.equal(p.ka_race, 0, summary(p));
  assert.equal(p.timeout, 0, summary(p));
  assert.equal(p.other, 0, summary(p));
  assert.equal(p.forced, 0, summary(p));
  assert.equal(p.ok + p.refused, p.sent, summary(p));
}
