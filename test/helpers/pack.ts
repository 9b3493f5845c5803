/**
 * The package as a user installs it: `npm pack` of this checkout, unpacked into
 * `DIR/proj/node_modules/quiesce` of a temp project. The registry is never asked: what an install
 * would fetch is linked from this checkout's node_modules by the tests that need it.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './server.js';

export function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): { status: number | null; out: string; stdout: string } {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 120_000, stdio: ['ignore', 'pipe', 'pipe'], env });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}`, stdout: r.stdout ?? '' };
}

/** A temp dir (the caller removes `dir`) with `proj/` holding package.json and the unpacked package. Throws with npm's or tar's output. */
export function packedProject(pkg: Record<string, unknown>): { dir: string; proj: string; installed: string } {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-pack-'));
  // dist is built by `npm test` (tsc) before the tests run: no prepare script here
  const pack = run('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', dir], ROOT);
  if (pack.status !== 0) throw new Error(`npm pack failed: ${pack.out}`);
  const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'));
  if (!tgz) throw new Error(`npm pack made no tarball: ${pack.out}`);
  const proj = join(dir, 'proj');
  const installed = join(proj, 'node_modules', 'quiesce');
  mkdirSync(installed, { recursive: true });
  const untar = run('tar', ['xzf', join(dir, tgz), '--strip-components=1', '-C', installed], dir);
  if (untar.status !== 0) throw new Error(`tar failed: ${untar.out}`);
  writeFileSync(join(proj, 'package.json'), JSON.stringify(pkg, null, 2));
  return { dir, proj, installed };
}
