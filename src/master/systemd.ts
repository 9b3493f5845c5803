/**
 * systemd, without libsystemd: the notification protocol (sd_notify(3): one datagram of
 * `KEY=VALUE` lines to the unix socket named by NOTIFY_SOCKET, sent through the native layer since
 * Node has no unix datagram sockets) and socket activation (sd_listen_fds(3): LISTEN_PID,
 * LISTEN_FDS, LISTEN_FDNAMES; the sockets are fds 3 onwards). Only the master speaks to systemd:
 * none of these variables reaches a worker.
 */
import type { Native } from '../native/index.js';
import type { Logger } from '../shared/log.js';
import { errorMessage } from '../shared/errors.js';

/** The environment variables of both protocols, removed from a worker's environment. */
export const SYSTEMD_ENV = ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID', 'LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'] as const;

/** sd_listen_fds(3)'s first fd. */
const LISTEN_FDS_START = 3;

/** The sockets passed to this process (when LISTEN_PID is ours), each with its name ('' if unnamed). */
export function listenFds(env: NodeJS.ProcessEnv = process.env, pid = process.pid): Array<{ fd: number; name: string }> {
  if (env.LISTEN_PID === undefined || Number(env.LISTEN_PID) !== pid) return [];
  const n = Number(env.LISTEN_FDS ?? 0);
  if (!Number.isInteger(n) || n <= 0 || n > 1024) return [];
  const names = (env.LISTEN_FDNAMES ?? '').split(':');
  return Array.from({ length: n }, (_, i) => ({ fd: LISTEN_FDS_START + i, name: names[i] ?? '' }));
}

export class Notifier {
  private readonly socket: string | undefined;
  private readonly watchdogMs: number;
  private timer?: NodeJS.Timeout;
  private warned = false;

  constructor(private readonly native: Native | undefined, private readonly log: Logger, env: NodeJS.ProcessEnv = process.env) {
    this.socket = env.NOTIFY_SOCKET || undefined;
    const usec = Number(env.WATCHDOG_USEC ?? 0);
    const forUs = env.WATCHDOG_PID === undefined || Number(env.WATCHDOG_PID) === process.pid;
    this.watchdogMs = this.socket && forUs && Number.isFinite(usec) && usec > 0 ? usec / 1000 : 0;
  }

  get enabled(): boolean { return this.socket !== undefined; }

  /** The first generation is ready, or a reload ended (committed or rolled back). */
  ready(status: string): void { this.send({ READY: '1', STATUS: status }); }

  /** A reload begins (Type=notify-reload wants the monotonic time with it). */
  reloading(status: string): void {
    this.send({ RELOADING: '1', MONOTONIC_USEC: String(process.hrtime.bigint() / 1000n), STATUS: status });
  }

  /**
   * A new master took over at an upgrade: it is the service's main process from now on, ready
   * (sent by the new master itself, so the unit needs NotifyAccess=all: it is not MAINPID yet).
   */
  mainPid(status: string): void { this.send({ MAINPID: String(process.pid), READY: '1', STATUS: status }); }

  stopping(status: string): void { this.send({ STOPPING: '1', STATUS: status }); }

  status(status: string): void { this.send({ STATUS: status }); }

  /**
   * WATCHDOG=1 at half the interval systemd asked for, from a timer of the master's own loop: a
   * loop that stops running stops them, and systemd acts (`healthy` can veto one).
   */
  startWatchdog(healthy: () => boolean): void {
    if (this.watchdogMs <= 0 || this.timer) return;
    this.timer = setInterval(() => { if (healthy()) this.send({ WATCHDOG: '1' }); }, Math.max(100, this.watchdogMs / 2));
    this.timer.unref();
  }

  stopWatchdog(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private send(fields: Record<string, string>): void {
    if (!this.socket) return;
    if (!this.native) {
      if (!this.warned) this.log.warn('systemd-notify-unavailable', { note: 'NOTIFY_SOCKET is set but the native module is not loaded: systemd hears nothing' });
      this.warned = true;
      return;
    }
    // one line per field; STATUS is free text: a newline in it would start a field of its own
    const text = Object.entries(fields).map(([k, v]) => `${k}=${v.replace(/\n/g, ' ')}`).join('\n');
    try {
      this.native.sendDatagram(this.socket, text);
    } catch (err) {
      if (!this.warned) this.log.warn('systemd-notify-failed', { socket: this.socket, error: errorMessage(err) });
      this.warned = true;
    }
  }
}
