/**
 * Running quiesce as an unprivileged user from a test that runs as root (as CI does): the user
 * `nobody` (65534), entered with util-linux's `setpriv`, no capabilities left. What depends on
 * privilege (the drain's gate above all: SO_ATTACH_FILTER needs CAP_NET_ADMIN) is tested both ways.
 *
 * `nobody` must be able to read the project: when the checkout lies under a directory it cannot
 * enter (a clone in /root), the files a run needs are mirrored once per test run into a
 * world-readable temp directory (hard links where the file system allows), removed by
 * test/run.mjs at the end. QUIESCE_TEST_MIRROR=1 forces the mirror (to test it here).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './server.js';

export const NOBODY = { uid: 65534, gid: 65534 };

/**
 * Who a privilege-dependent test runs as: 'root' is the test runner itself (root in CI; run by a
 * normal user, that user), 'nobody' the master started through setpriv (needs a root runner).
 */
export type Who = 'root' | 'nobody';
export const WHO: readonly Who[] = ['root', 'nobody'];

/**
 * Why a test for `who` cannot run here: nobody needs a root runner with setpriv; `needsRoot` a root
 * runner itself. QUIESCE_TEST_ONLY_AS=root|nobody runs one side only (CI's second pass, on another
 * Node: what privilege changes is the kernel's part, checked on the first).
 */
export function skipFor(who: Who, needsRoot?: string): string | false {
  const only = process.env.QUIESCE_TEST_ONLY_AS;
  if (only !== undefined && only !== '' && only !== who) return `only the ${only} variants run in this pass (QUIESCE_TEST_ONLY_AS=${only})`;
  if (who === 'nobody') return cannotDropPrivileges() ?? false;
  return needsRoot !== undefined && process.getuid?.() !== 0 ? `needs root: ${needsRoot}` : false;
}

/** Why the unprivileged runs cannot happen here (not root, no setpriv), or undefined when they can. */
export function cannotDropPrivileges(): string | undefined {
  if (process.getuid?.() !== 0) return 'the tests run unprivileged already (these runs need root to drop privileges)';
  if (spawnSync('setpriv', ['--version']).status !== 0) return 'setpriv (util-linux) is not installed';
  return undefined;
}

/** The command line that runs `cmd args` as nobody, without groups or capabilities. */
export function asNobody(cmd: string, args: string[]): [string, string[]] {
  return ['setpriv', [`--reuid=${NOBODY.uid}`, `--regid=${NOBODY.gid}`, '--clear-groups', '--inh-caps=-all', cmd, ...args]];
}

/** A fresh temp directory nobody owns (for a pid file, a unix socket). */
export function nobodyDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-nobody-'));
  chownSync(dir, NOBODY.uid, NOBODY.gid);
  return dir;
}

/** The directories testDir made, removed when the test file's process ends. */
const made: string[] = [];

/**
 * A fresh temp directory `who`'s server can use (nobody's own for nobody), removed when the test
 * file's process ends (its servers are gone by then; cleanup() may remove it sooner): a test file
 * run alone, outside test/run.mjs's scratch dir, leaves nothing in /tmp.
 */
export function testDir(prefix: string, who: Who = 'root'): string {
  const dir = who === 'nobody' ? nobodyDir() : mkdtempSync(join(tmpdir(), prefix));
  if (made.push(dir) === 1) process.once('exit', () => { for (const d of made) rmSync(d, { recursive: true, force: true }); });
  return dir;
}

let root: string | undefined;

/** Where nobody finds the project: ROOT itself when it can read it, else this run's mirror. */
export function nobodyRoot(): string {
  if (root !== undefined) return root;
  const [cmd, args] = asNobody(process.execPath, ['-e', `require('node:fs').accessSync(${JSON.stringify(join(ROOT, 'dist/src/cli.js'))}, 4)`]);
  const node = spawnSync(...asNobody(process.execPath, ['-e', '0']));
  if (node.status !== 0) throw new Error(`nobody cannot run ${process.execPath} (a directory above it is not world-executable): ${node.stderr}`);
  if (process.env.QUIESCE_TEST_MIRROR !== '1' && spawnSync(cmd, args).status === 0) return (root = ROOT);
  root = mirrorPath();
  if (existsSync(join(root, '.complete'))) return root;
  const tmp = mkdtempSync(`${root}.tmp-`);
  for (const part of ['package.json', 'dist', 'site', 'test/fixtures', 'node_modules']) {
    const to = join(tmp, part);
    spawnSync('mkdir', ['-p', join(to, '..')]);
    // hard links are instant on one file system; a copy elsewhere
    if (spawnSync('cp', ['-al', join(ROOT, part), to]).status !== 0 && spawnSync('cp', ['-a', join(ROOT, part), to]).status !== 0) {
      throw new Error(`cannot mirror ${part} for nobody into ${tmp}`);
    }
  }
  writeFileSync(join(tmp, '.complete'), '');
  chmodSync(tmp, 0o755); // the rest keeps the checkout's modes (a hard link shares them)
  try {
    renameSync(tmp, root);
  } catch {
    rmSync(tmp, { recursive: true, force: true }); // another test file made it meanwhile
  }
  return root;
}

/** This test run's mirror (test/run.mjs removes it). */
export function mirrorPath(): string {
  return join(tmpdir(), `quiesce-nobody-root-${process.env.QUIESCE_TEST_RUN ?? process.pid}`);
}

/** A path under ROOT as nobody reaches it. */
export function forNobody(path: string): string {
  return path.startsWith(ROOT) ? join(nobodyRoot(), path.slice(ROOT.length)) : path;
}
