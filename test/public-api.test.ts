/**
 * The public entry as a user gets it: the package is packed (`npm pack`), unpacked into a temp
 * project's node_modules, and a sample app and config are type-checked against its .d.ts files
 * (strict, no skipLibCheck) and imported at run time. The temp project gets the repo's
 * @types/node (the only types the entry needs) instead of a registry install.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ConfigFile } from '../src/index.js';
import type { Key } from '../src/shared/config.js';
import { ROOT } from './helpers/server.js';
import { packedProject, run } from './helpers/pack.js';

// ConfigFile has exactly the settings' keys and `app`: each line fails to compile when they differ.
const fileKeys: Record<keyof ConfigFile, true> = {} as Record<Key | 'app', true>;
const settingKeys: Record<Key | 'app', true> = {} as Record<keyof ConfigFile, true>;
void fileKeys;
void settingKeys;

const TSCONFIG = JSON.stringify({
  compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, types: ['node'] },
  include: ['*.ts'],
});

const APP = `
import { defineApp, type AppModule, type AppHooks } from 'quiesce';
import type { Server } from 'node:http';

let pool: string[] = [];
export default defineApp({
  async fetch(request) {
    return new Response(new URL(request.url).pathname + String(pool.length));
  },
  async init() { pool = ['db']; },
  onDrain() {},
  attach(server: Server) { server.headersTimeout = 1000; },
});
export const onStop: AppHooks['onStop'] = async () => { pool = []; };
const listenerModule = { default: defineApp((req, res) => { res.end(req.url); }), kind: 'listener' } satisfies AppModule;
void listenerModule;
`;

const CONFIG = `
import { defineConfig } from 'quiesce';
export default defineConfig({ listen: ['127.0.0.1:8080'], workers: 2, drainDelay: '5s', gracefulTimeout: 20, reloadStrategy: 'rolling', app: 'app.js' });
export const later = defineConfig(async () => ({ accessLog: 'off' }));
`;

// Each line must be refused by the types: a wrong kind, a misspelt key, a bad duration, a fetch handler returning a string.
const BAD = `
import { defineApp, defineConfig } from 'quiesce';
defineConfig({ reloadStrategy: 'sometimes' });
defineConfig({ listn: ['8080'] });
defineConfig({ drainDelay: '5 seconds' });
defineApp({ fetch: () => 'hello' });
`;

test('the packed package: its types check a sample app and config, refuse wrong ones, and it imports at run time', () => {
  const { dir, proj } = packedProject({ name: 'sample', private: true, type: 'module' });
  try {
    mkdirSync(join(proj, 'node_modules', '@types'), { recursive: true });
    symlinkSync(realpathSync(join(ROOT, 'node_modules/@types/node')), join(proj, 'node_modules/@types/node'));
    symlinkSync(realpathSync(join(ROOT, 'node_modules/undici-types')), join(proj, 'node_modules/undici-types'));
    writeFileSync(join(proj, 'tsconfig.json'), TSCONFIG);
    writeFileSync(join(proj, 'app.ts'), APP);
    writeFileSync(join(proj, 'quiesce.config.ts'), CONFIG);
    const tsc = join(ROOT, 'node_modules/.bin/tsc');
    const good = run(tsc, ['-p', '.'], proj);
    assert.equal(good.status, 0, `the sample app and config should type-check:\n${good.out}`);

    writeFileSync(join(proj, 'bad.ts'), BAD);
    const bad = run(tsc, ['-p', '.'], proj);
    assert.notEqual(bad.status, 0, 'the wrong app and config should not type-check');
    for (const line of [3, 4, 5, 6]) assert.match(bad.out, new RegExp(`bad\\.ts\\(${line},`), `line ${line} of bad.ts is refused:\n${bad.out}`);

    const imported = run(process.execPath, ['--input-type=module', '-e',
      "const q = await import('quiesce'); const app = { fetch() {} }; console.log(q.defineApp(app) === app, q.defineConfig({ workers: 1 }).workers);"], proj);
    assert.equal(imported.status, 0, imported.out);
    assert.equal(imported.out.trim(), 'true 1');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
