// Runs the --at T --run COMMAND steps: a shell line (or a function) at its time,
// recording exit code, output tails and times. Each is bounded by a timeout.
import { spawn } from 'node:child_process';
import type { Clock } from './clock.js';
import type { CommandResult, ProbeCommand } from './types.js';

const TAIL = 2000;

function tail(s: string): string {
  return s.length > TAIL ? s.slice(-TAIL) : s;
}

/** Keeps only the last bytes of a stream. */
class Tail {
  private s = '';
  add(chunk: Buffer): void {
    this.s = tail(this.s + chunk.toString('utf8'));
  }
  toString(): string {
    return this.s;
  }
}

function describe(run: ProbeCommand['run']): string {
  return typeof run === 'string' ? run : `<function ${run.name || 'anonymous'}>`;
}

function runShell(line: string, timeoutMs: number): Promise<Omit<CommandResult, 'at_s' | 'command' | 'started_s' | 'ended_s'>> {
  return new Promise((resolve) => {
    const out = new Tail();
    const err = new Tail();
    // Its own process group, so that a timeout kills the shell and what it started, and nothing else.
    const child = spawn('/bin/sh', ['-c', line], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    child.stdout.on('data', (c: Buffer) => out.add(c));
    child.stderr.on('data', (c: Buffer) => err.add(c));
    let error: string | undefined;
    const timer = setTimeout(() => {
      error = `timed out after ${timeoutMs / 1000} s, killed`;
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          child.kill('SIGKILL');
        }
      }
    }, timeoutMs);
    child.on('error', (e) => (error = e.message));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        exit_code: code,
        signal,
        stdout_tail: out.toString(),
        stderr_tail: err.toString(),
        ...(error !== undefined ? { error } : {}),
      });
    });
  });
}

async function runFunction(fn: () => unknown, timeoutMs: number): Promise<Omit<CommandResult, 'at_s' | 'command' | 'started_s' | 'ended_s'>> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs / 1000} s`)), timeoutMs);
  });
  try {
    const v = await Promise.race([Promise.resolve().then(fn), timeout]);
    return { exit_code: 0, signal: null, stdout_tail: v === undefined ? '' : tail(String(v)), stderr_tail: '' };
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    return { exit_code: 1, signal: null, stdout_tail: '', stderr_tail: tail(msg), error: msg };
  } finally {
    clearTimeout(timer);
  }
}

/** Waits until the command's time (unless aborted first), then runs it. */
export async function runCommandAt(
  cmd: ProbeCommand,
  clock: Clock,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<CommandResult> {
  const base = { at_s: cmd.atS, command: describe(cmd.run) };
  const waited = await clock.sleepUntil(cmd.atS * 1000, signal);
  if (!waited) {
    return { ...base, started_s: -1, ended_s: -1, exit_code: null, signal: null, stdout_tail: '', stderr_tail: '', error: 'not run: the probe was stopped first' };
  }
  const started = clock.now();
  const r = typeof cmd.run === 'string' ? await runShell(cmd.run, timeoutMs) : await runFunction(cmd.run, timeoutMs);
  const round = (ms: number): number => Math.round(ms) / 1000;
  return { ...base, started_s: round(started), ended_s: round(clock.now()), ...r };
}
