/**
 * The master's lifecycle state: one type, one owner (the Master), transitions in one place.
 *
 *   starting ─► serving ◄─► reloading
 *                  │
 *                  ▼
 *              draining (lame-duck → gate/drain → close) ─► stopping ─► stopped
 *
 * A fast stop (second signal, `stop --force`) jumps from any state to stopping{fast}.
 */
export type MasterState =
  | { s: 'starting'; since: number }
  | { s: 'serving'; since: number }
  | { s: 'reloading'; since: number; to: number }
  | { s: 'draining'; since: number; phase: 'lame-duck' | 'drain' }
  | { s: 'stopping'; since: number; fast: boolean }
  | { s: 'stopped'; since: number };

const ALLOWED: Record<MasterState['s'], ReadonlyArray<MasterState['s']>> = {
  starting: ['serving', 'draining', 'stopping', 'stopped'],
  serving: ['reloading', 'draining', 'stopping'],
  reloading: ['serving', 'draining', 'stopping'],
  draining: ['draining', 'stopping'],
  stopping: ['stopping', 'stopped'],
  stopped: [],
};

export function canMove(from: MasterState['s'], to: MasterState['s']): boolean {
  return ALLOWED[from].includes(to);
}

/** Escalation for a retiring worker, from the moment it is told to retire. */
export type EscalationStep = { afterMs: number; action: 'force' | 'kill' };
export function escalation(gracefulTimeoutMs: number, killGraceMs: number): EscalationStep[] {
  // The worker forces itself at the graceful timeout; the master's force is the backstop (for a
  // worker whose loop is blocked it never runs); SIGKILL at the graceful timeout + the kill grace,
  // so that a stop with a hung worker ends within those two (plus the drain).
  return [
    { afterMs: gracefulTimeoutMs + Math.min(1_000, killGraceMs / 2), action: 'force' },
    { afterMs: gracefulTimeoutMs + killGraceMs, action: 'kill' },
  ];
}

/** Respawn delay after `crashes` consecutive crashes of a slot: doubling, capped at 10 s. */
export function backoffMs(firstMs: number, crashes: number): number {
  return Math.min(10_000, firstMs * 2 ** Math.max(0, crashes - 1));
}
