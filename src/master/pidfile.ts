/**
 * The pid file names the instance: written atomically, refused when a live master holds it, taken
 * over when stale. Its control socket is beside it (`PIDFILE.sock`).
 *
 * Where: by default in a directory only this user can write: `/run/quiesce/` for root,
 * `$XDG_RUNTIME_DIR/quiesce/` else, or `TMPDIR/quiesce-UID/` (made 0700 and checked to be ours)
 * when there is no runtime directory; the file is named after the working directory
 * (`quiesce-NAME-HASH.pid`), so two instances started from two directories get two pid files and
 * the verbs run in a directory reach the instance started there. Any pid file directory writable
 * by others without the sticky bit, or owned by another user, is refused; temp files are created
 * with O_CREAT|O_EXCL|O_NOFOLLOW under an unpredictable name, so a planted symlink is never
 * written through.
 */
import { closeSync, constants, existsSync, lstatSync, mkdirSync, openSync, readSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { QuiesceError } from '../shared/errors.js';

const uid = (): number => process.getuid?.() ?? -1;

/** The default pid file's directory for this user (see the module comment). */
export function defaultRuntimeDir(): string {
  if (uid() === 0) return '/run/quiesce';
  const xdg = process.env.XDG_RUNTIME_DIR;
  if (xdg) return join(xdg, 'quiesce');
  return join(tmpdir(), `quiesce-${uid()}`);
}

/** The default pid file of an instance started in `cwd`. */
export function defaultPidfile(cwd = process.cwd()): string {
  const abs = resolve(cwd);
  const name = basename(abs).replace(/[^\w.-]+/g, '_').slice(0, 24) || 'root';
  const hash = createHash('sha256').update(abs).digest('hex').slice(0, 8);
  return join(defaultRuntimeDir(), `quiesce-${name}-${hash}.pid`);
}

export function readPid(path: string): number | undefined {
  let fd = -1;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    const buf = Buffer.alloc(32);
    const n = Number(buf.subarray(0, readSync(fd, buf, 0, buf.length, 0)).toString('utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  } finally {
    if (fd >= 0) closeSync(fd);
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

/**
 * Why a pid file directory is unsafe to write in, or '' when it is safe: others could replace or
 * plant files there (world-writable without the sticky bit), or it belongs to another user.
 */
export function unsafeDirReason(dir: string): string {
  const st = statSync(dir);
  if (!st.isDirectory()) return `${dir} is not a directory`;
  if ((st.mode & 0o002) !== 0 && (st.mode & 0o1000) === 0) return `${dir} is writable by every user and has no sticky bit`;
  if (st.uid !== uid() && st.uid !== 0) return `${dir} belongs to uid ${st.uid}, not to this user (uid ${uid()})`;
  return '';
}

/**
 * The pid file's directory (the control socket lives beside it), made if missing and checked; a
 * failure names --pidfile. The default directory is made 0700 (0755 for root's /run/quiesce) and
 * must be a real directory of ours that no one else can write.
 */
/**
 * mkdir -p, one level at a time: Node's `mkdirSync(…, { recursive: true })` loops forever where the
 * kernel answers ENOENT for a directory that cannot be made under one that exists (`/proc/nope`).
 */
function mkdirs(dir: string, mode: number): void {
  const missing: string[] = [];
  for (let d = dir; missing.length < 256 && !existsSync(d); d = dirname(d)) {
    missing.push(d);
    if (dirname(d) === d) break;
  }
  for (const d of missing.reverse()) {
    try {
      mkdirSync(d, { mode });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  if (!statSync(dir).isDirectory()) throw new Error(`${dir} is not a directory`);
}

export function makePidfileDir(path: string): void {
  const dir = dirname(path);
  const isDefault = dir === defaultRuntimeDir();
  try {
    mkdirs(dir, isDefault && uid() !== 0 ? 0o700 : 0o755);
  } catch (err) {
    throw new QuiesceError('CONTROL_FAILED', `--pidfile ${path}: cannot create its directory: ${(err as Error).message}`);
  }
  let why = '';
  if (isDefault) {
    const st = lstatSync(dir);
    if (!st.isDirectory()) why = `${dir} is not a directory (a symlink?)`;
    else if (st.uid !== uid()) why = `${dir} belongs to uid ${st.uid}, not to this user (uid ${uid()})`;
    else if ((st.mode & 0o022) !== 0) why = `${dir} is writable by others (mode ${(st.mode & 0o7777).toString(8)})`;
  }
  why ||= unsafeDirReason(dir);
  if (why) throw new QuiesceError('CONTROL_FAILED', `--pidfile ${path}: refusing an unsafe directory: ${why}; use a directory only this user can write`);
}

/**
 * Written atomically: a temp file beside it (O_CREAT|O_EXCL|O_NOFOLLOW, a random name: nothing
 * planted there is followed), then renamed over the pid file (rename replaces a link, never
 * writes through it). Its directory was checked by makePidfileDir().
 */
export function writePidfile(path: string, pid = process.pid): void {
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
    try {
      writeSync(fd, `${pid}\n`);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    try { unlinkSync(tmp); } catch { /* not made, or gone */ }
    throw new QuiesceError('CONTROL_FAILED', `--pidfile ${path}: cannot write it: ${(err as Error).message}`);
  }
}

/** Remove the pid file only if it still names us (a new instance may have taken it over). */
export function removePidfile(path: string, pid = process.pid): void {
  if (readPid(path) === pid) {
    try { unlinkSync(path); } catch { /* gone already */ }
  }
}
