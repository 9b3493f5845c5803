// Shared types of the probe: what it is asked, what each request became, what it reports.

/** The seven classes every request falls into (see README words: ok, refused, cut, ka_race, forced, timeout, other). */
export type OutcomeKind = 'ok' | 'refused' | 'cut' | 'ka_race' | 'forced' | 'timeout' | 'other';

export const OUTCOME_KINDS: readonly OutcomeKind[] = ['ok', 'refused', 'cut', 'ka_race', 'forced', 'timeout', 'other'];

export type Target =
  /** `tls`: https:// (HTTP/1.1 over TLS, or HTTP/2 with ProbeOptions.http2); the certificate is not verified. */
  | { kind: 'tcp'; host: string; port: number; family: 4 | 6; tls?: boolean }
  | { kind: 'unix'; path: string };

/** A command run at a time after the start: a shell line, or (programmatic use) a function. */
export interface ProbeCommand {
  /** Seconds after the start of the load. */
  atS: number;
  run: string | (() => unknown);
}

export interface ProbeOptions {
  /** "HOST:PORT", "[v6]:PORT" or "unix:PATH" (or an already parsed Target). */
  target: string | Target;
  /** Request path, default "/". */
  path?: string;
  /** New connections per second, one `Connection: close` request each (open loop). 0 or absent: off. */
  rate?: number;
  /** Number of keep-alive clients sending back to back. 0 or absent: off. */
  keepalive?: number;
  /** Seconds of load, default 5. */
  durationS?: number;
  /** Seconds one request may take before it counts as timeout, default 10. */
  timeoutS?: number;
  commands?: ProbeCommand[];
  /** Seconds a command may run before it is killed, default 30. */
  commandTimeoutS?: number;
  /** Hard cap on sockets open at once, default 1000. */
  maxSockets?: number;
  /** Hard cap on requests in one run, default 500000. */
  maxRequests?: number;
  /** Ends the load early (in-flight requests still get their outcome). */
  signal?: AbortSignal;
  /**
   * quiesce's admin listener (HOST:PORT, http:// or https://): at the end the probe reads its /server-status?json and
   * puts the reloads' phases that fell in the run (soak start, the judge's verdict, rollback or
   * commit, the old generation gone) in the report and the timeline. QUIESCE_ADMIN_TOKEN if set.
   */
  admin?: string;
  /** PEM CA certificate(s) to check an https:// admin listener's certificate with (else the system's CAs and NODE_EXTRA_CA_CERTS). */
  adminCa?: string;
  /**
   * HTTP/2 (an https:// target): each keep-alive client is a session carrying `streams`
   * concurrent streams back to back; --rate opens a session per request.
   */
  http2?: boolean;
  /** HTTP/2: concurrent streams per keep-alive client's session, default 1. */
  streams?: number;
}

/** What happened to one request. Times are milliseconds since the start of the load. */
export interface Outcome {
  kind: OutcomeKind;
  mode: 'rate' | 'keepalive';
  startMs: number;
  endMs: number;
  /** Response bytes received (head and body). */
  bytes: number;
  /** Sent on a connection that had already carried a request. */
  reused: boolean;
  status?: number;
  /** Error code for refused, cut and other (ECONNRESET, EOF, ENOENT, EPARSE…). */
  code?: string;
  /** Value of the x-quiesce-generation response header, if any. */
  generation?: string;
  /** For a timeout: whether the TCP handshake had completed (false: the SYNs went unanswered). */
  established?: boolean;
}

export interface CommandResult {
  at_s: number;
  command: string;
  started_s: number;
  ended_s: number;
  exit_code: number | null;
  signal: string | null;
  stdout_tail: string;
  stderr_tail: string;
  error?: string;
}

export interface ProbeCounts {
  ok: number;
  refused: number;
  cut: number;
  cut_after_bytes: number;
  ka_race: number;
  forced: number;
  timeout: number;
  other: number;
}

/** The JSON printed by `quiesce probe --json`. */
export interface ProbeReport extends ProbeCounts {
  ok_by_status: Record<string, number>;
  other_by_code: Record<string, number>;
  status: 'pass' | 'fail';
  /** Why the run failed, one reason each (empty when it passed). */
  reasons: string[];
  sent: number;
  latency_ms: { p50: number | null; p90: number | null; p99: number | null; max: number | null };
  rate: { asked: number; achieved: number; behind: number };
  commands: CommandResult[];
  duration_s: number;
  /** Count of ok responses per x-quiesce-generation value. */
  generations: Record<string, number>;
  /** With `admin`: the deploy's phases during the run, from the admin listener (seconds since the start). */
  phases?: DeployPhase[];
  /** With `admin`: why the phases could not be read. */
  phases_error?: string;
}

export interface DeployPhase {
  at_s: number;
  generation: number;
  phase: string;
  text: string;
}

export interface ProbeResult extends ProbeReport {
  outcomes: Outcome[];
}
