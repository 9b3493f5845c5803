/**
 * One table for the signals the master acts on, shared with the CLI (`quiesce stop` sends the same
 * verb over the control socket as SIGTERM does through the signal). Signal handlers only record the
 * verb; the master's one loop acts on it (see master/lifecycle.ts).
 */
export type Verb = 'stop' | 'fast-stop' | 'reload' | 'restart' | 'reopen-logs' | 'scale-up' | 'scale-down' | 'upgrade';

export const SIGNAL_VERBS: ReadonlyArray<{ signal: NodeJS.Signals; verb: Verb; note: string }> = [
  { signal: 'SIGTERM', verb: 'stop', note: 'graceful stop (systemd, Kubernetes)' },
  { signal: 'SIGINT', verb: 'stop', note: 'graceful stop (Ctrl-C)' },
  { signal: 'SIGQUIT', verb: 'stop', note: 'graceful stop (nginx)' },
  { signal: 'SIGWINCH', verb: 'stop', note: 'graceful stop (httpd graceful-stop)' },
  { signal: 'SIGHUP', verb: 'reload', note: 'graceful reload' },
  { signal: 'SIGUSR1', verb: 'reopen-logs', note: 'reopen log files (logrotate)' },
  { signal: 'SIGTTIN', verb: 'scale-up', note: 'one worker more (gunicorn, unicorn)' },
  { signal: 'SIGTTOU', verb: 'scale-down', note: 'one worker less (never below 1)' },
  { signal: 'SIGUSR2', verb: 'upgrade', note: 'upgrade: a new master from the quiesce and Node on disk takes over the sockets (nginx, unicorn)' },
];

/** Signals a worker ignores: it acts only on its master's messages. */
export const WORKER_IGNORED_SIGNALS: ReadonlyArray<NodeJS.Signals> = [
  'SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGWINCH', 'SIGHUP', 'SIGUSR2', 'SIGTTIN', 'SIGTTOU',
];

/** The same stop signal again at least this long after the first turns the stop into a fast stop. */
export const REPEAT_SIGNAL_MS = 1000;
