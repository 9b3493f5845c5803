// Self-signed certificates for the TLS tests, made with openssl (Debian's, installed by .ci/run).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nobodyDir, type Who } from './unprivileged.js';

/** A skip reason when openssl is missing, else false. */
export const noOpenssl: string | false = spawnSync('openssl', ['version']).status === 0 ? false : 'openssl is not installed';

export type CertPair = { cert: string; key: string; dir: string };

/** The directories made here, removed when the test file's process ends (its servers are gone by then). */
const made: string[] = [];
process.once('exit', () => { for (const d of made) rmSync(d, { recursive: true, force: true }); });

/** A self-signed P-256 certificate for 127.0.0.1/localhost, in a directory `who`'s master can read. */
export function makeCert(who: Who = 'root', cn = 'quiesce-test', san = 'DNS:localhost,IP:127.0.0.1'): CertPair {
  const dir = who === 'nobody' ? nobodyDir() : mkdtempSync(join(tmpdir(), 'quiesce-tls-'));
  made.push(dir);
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
    '-days', '2', '-subj', `/CN=${cn}`, '-addext', `subjectAltName=${san}`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  chmodSync(key, 0o644);
  return { cert, key, dir };
}
