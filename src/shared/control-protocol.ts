/**
 * The control socket protocol (CLI ↔ master): newline-delimited JSON over a unix socket (mode
 * 0600) beside the pid file. The client sends one request line; the master answers with zero or
 * more progress lines and exactly one result line, so a verb can wait for and report its outcome.
 */
export type ControlVerb = 'stop' | 'reload' | 'restart' | 'reopen-logs' | 'status' | 'ping' | 'scale' | 'upgrade';
/** `workers` (scale): a count `N`, or `+N` / `-N` relative to the current one; `node` (upgrade): the new master's Node binary; `judge` (reload --no-judge, upgrade --judge/--no-judge): a judged soak this time or not, whatever --reload-judge says. */
export type ControlRequest = { verb: ControlVerb; force?: boolean; workers?: string; node?: string; judge?: boolean };
export type ControlReply =
  | { type: 'progress'; message: string }
  | { type: 'result'; ok: boolean; message: string; data?: unknown };

export function controlSocketPath(pidfile: string): string {
  return `${pidfile}.sock`;
}
