/**
 * A deploy directory for reload tests: `current.mjs` → a version from test/fixtures/reload,
 * swapped atomically (a symlink renamed over it) as a deploy tool does.
 */
import { join } from 'node:path';
import { mkdtempSync, symlinkSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { FIXTURES } from './server.js';

export const F = (name: string): string => join(FIXTURES, 'reload', name);

export function deployDir(version: string): { dir: string; app: string; deploy: (v: string) => void } {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-deploy-'));
  const app = join(dir, 'current.mjs');
  const deploy = (v: string): void => {
    const tmp = join(dir, `next-${Date.now()}.mjs`);
    symlinkSync(F(v), tmp);
    renameSync(tmp, app);
  };
  deploy(version);
  return { dir, app, deploy };
}
