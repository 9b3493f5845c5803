/**
 * Errors with stable codes, and the exit codes that are a contract with init systems and scripts.
 * Every code here is documented in docs/ERRORS.md (a test checks it).
 */

/** Process exit codes of the `quiesce` command and of the master. */
export const EXIT = {
  OK: 0,
  /** Runtime failure: port in use, permission denied, app failed to load, verb failed. */
  RUNTIME: 1,
  /** Usage: unknown flag, bad value, bad config key. */
  USAGE: 2,
} as const;

/** Exit codes of a worker process, read by the master to decide on respawning. */
export const WORKER_EXIT = {
  /** Retired as asked. */
  OK: 0,
  /** Crashed (uncaught error after the worker was ready): respawn with backoff. */
  CRASH: 70,
  /** The app could not load or init failed: do not respawn in a loop (httpd APEXIT_CHILDFATAL). */
  FATAL: 78,
} as const;

/** Stable error codes of the CLI and the master (docs/ERRORS.md documents each; a test checks). */
export const ERROR_CODES = [
  'USAGE', 'CONFIG_INVALID', 'CONFIG_FILE', 'LISTEN_FAILED', 'ALREADY_RUNNING', 'NOT_RUNNING',
  'CONTROL_FAILED', 'APP_FAILED', 'PRIVILEGES', 'UPGRADE_FAILED',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export class QuiesceError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: number;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'QuiesceError';
    this.code = code;
    this.exitCode = code === 'USAGE' || code === 'CONFIG_INVALID' || code === 'CONFIG_FILE' ? EXIT.USAGE : EXIT.RUNTIME;
  }
}

/** A readable one-line message for any thrown value. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** How a start (and `configtest`) words an app that could not load: the worker's fatal message follows. */
export function appFailedMessage(fatal: string): string {
  return `the app failed to load: ${fatal}`;
}
