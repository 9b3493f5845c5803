/** The docs name every stable code and every setting: the contract stays written down. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERROR_CODES, EXIT, WORKER_EXIT } from '../src/shared/errors.js';
import { APP_ERROR_CODES } from '../src/worker/app-types.js';
import { SETTINGS } from '../src/shared/config.js';
import { ROOT } from './helpers/server.js';

const read = (p: string) => readFileSync(join(ROOT, p), 'utf8');

test('every error code is documented in docs/ERRORS.md', () => {
  const doc = read('docs/ERRORS.md');
  for (const code of [...ERROR_CODES, ...APP_ERROR_CODES]) assert.match(doc, new RegExp(`\\| \`${code}\` \\|`), code);
  for (const n of [...Object.values(EXIT), ...Object.values(WORKER_EXIT)]) assert.match(doc, new RegExp(`\\| ${n} \\|`), `exit ${n}`);
});

test('every setting is in the README table with its flag and config key', () => {
  const readme = read('README.md');
  for (const [key, s] of Object.entries(SETTINGS)) assert.match(readme, new RegExp(`\\| \`--${s.flag}\` \\| \`${key}\` \\|`), key);
});

test('the README starts with the two commands', () => {
  const readme = read('README.md');
  assert.match(readme, /npm install && npx quiesce/);
  assert.match(readme, /^npm test/m);
});
