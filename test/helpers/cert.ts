// Self-signed certificates for the TLS tests, made with openssl (Debian's, installed by .ci/run).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import { testDir, type Who } from './unprivileged.js';

/** A skip reason when openssl is missing, else false. */
export const noOpenssl: string | false = spawnSync('openssl', ['version']).status === 0 ? false : 'openssl is not installed';

export type CertPair = { cert: string; key: string; dir: string };

/** A self-signed P-256 certificate for 127.0.0.1/localhost, in a directory `who`'s master can read. */
export function makeCert(who: Who = 'root', cn = 'quiesce-test', san = 'DNS:localhost,IP:127.0.0.1'): CertPair {
  const dir = testDir('quiesce-tls-', who);
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
    '-days', '2', '-subj', `/CN=${cn}`, '-addext', `subjectAltName=${san}`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  chmodSync(key, 0o644);
  return { cert, key, dir };
}
