/** The pid file names the instance: written atomically, refused when a live master holds it, taken over when stale. */
import { readFileSync, writeFileSync, renameSync, unlinkSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { QuiesceError } from '../shared/errors.js';

export function defaultPidfile(): string {
  return join(process.env.XDG_RUNTIME_DIR || tmpdir(), 'quiesce.pid');
}

export function readPid(path: string): number | undefined {
  try {
    const n = Number(readFileSync(path, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid file's directory (the control socket lives beside it), made if missing; a failure names --pidfile. */
export function makePidfileDir(path: string): void {
  try {
    mkdirSync(dirname(path), { recursive: true });
  } catch (err) {
    throw new QuiesceError('CONTROL_FAILED', `--pidfile ${path}: cannot create its directory: ${(err as Error).message}`);
  }
}

/** Written atomically; its directory exists (makePidfileDir, before the control socket). */
export function writePidfile(path: string, pid = process.pid): void {
  const tmp = `${path}.${pid}.tmp`;
  writeFileSync(tmp, `${pid}\n`, { mode: 0o644 });
  renameSync(tmp, path);
}

/** Remove the pid file only if it still names us (a new instance may have taken it over). */
export function removePidfile(path: string, pid = process.pid): void {
  if (readPid(path) === pid) {
    try { unlinkSync(path); } catch { /* gone already */ }
  }
}
