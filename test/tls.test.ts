/**
 * TLS and HTTP/2 listeners keep the promise: HTTPS and HTTP/2 answered (ALPN chooses), a stop
 * under load over TLS cuts nothing while an https.Server + close() on the same load cuts, HTTP/2
 * sessions with many streams go through a stop and a reload with every stream ok or refused, a
 * renewed certificate goes live with a reload (a mismatched key rolls back), a resumed session
 * works on any worker, and an app that brings its own https server is served over TLS with its
 * own certificate. Certificates are made here with openssl.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import tls from 'node:tls';
import https from 'node:https';
import { runProbe, type ProbeResult } from '../src/probe/index.js';
import { startServer, cleanup, waitExit, waitFor, within, get, statusJson, sleep, FIXTURES, type Server } from './helpers/server.js';
import { listenQueue } from './helpers/kernel.js';
import { assertNothingCut, summary } from './helpers/outcomes.js';
import { asNobody, forNobody, nobodyDir, skipFor, WHO, type Who } from './helpers/unprivileged.js';

const PID_APP = join(FIXTURES, 'core/pid-app.mjs');
const noOpenssl = spawnSync('openssl', ['version']).status === 0 ? false : 'openssl is not installed';
const noCurl = spawnSync('curl', ['--version']).status === 0 ? false : 'curl is not installed';

type Pair = { cert: string; key: string; dir: string };

/** A self-signed P-256 certificate for 127.0.0.1/localhost, in a directory `who`'s master can read. */
function makeCert(who: Who = 'root', cn = 'quiesce-test'): Pair {
  const dir = who === 'nobody' ? nobodyDir() : mkdtempSync(join(tmpdir(), 'quiesce-tls-'));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
    '-days', '2', '-subj', `/CN=${cn}`, '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  chmodSync(key, 0o644);
  return { cert, key, dir };
}

const tlsArgs = (p: Pair) => ['--tls-cert', p.cert, '--tls-key', p.key];

/** One TLS handshake: the certificate's CN, the ALPN protocol, whether the session was resumed. */
function handshake(address: string, o: { alpn?: string[]; session?: Buffer } = {}): Promise<{ cn: string; alpn: string | false; reused: boolean; session?: Buffer }> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host, port, rejectUnauthorized: false, ALPNProtocols: o.alpn ?? ['http/1.1'], session: o.session });
    let session: Buffer | undefined;
    s.on('session', (b: Buffer) => { session = b; });
    s.once('secureConnect', () => {
      const cn = String(s.getPeerCertificate().subject?.CN ?? '');
      const alpn = s.alpnProtocol ?? false;
      const reused = s.isSessionReused();
      // TLS 1.3 sends its ticket after the handshake: one request's round trip brings it
      s.write('GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
      s.on('data', () => {});
      s.once('close', () => resolve({ cn, alpn, reused, session }));
    });
    s.once('error', reject);
  });
}

function curl(args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync('curl', ['-sk', '--max-time', '5', ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/**
 * Over capacity with a full TLS handshake per request, plus keep-alive clients: 2 workers at 25 ms
 * of CPU per request serve ~80/s, below what even a client slowed by a loaded machine sends (the
 * TLS client work is the probe's own: 250/s asked, 60-150/s reached in a loaded full suite).
 */
const LOAD = { path: '/?burn=25', rate: 250, keepalive: 4, durationS: 4, timeoutS: 20 };

async function stopUnderLoad(target: string, pid: number, port: number): Promise<{ probe: ProbeResult; queued: number }> {
  let queued = -1;
  const probe = await runProbe({ target, ...LOAD, commands: [{ atS: 1.3, run: () => { queued = listenQueue(port); process.kill(pid, 'SIGTERM'); } }] });
  return { probe, queued };
}

test('HTTPS and HTTP/2 answered on a TLS listener; ALPN picks h2 for curl --http2, HTTP/1.1 for an HTTP/1.1-only client; plain HTTP is not served there', { skip: noOpenssl || noCurl }, async () => {
  const p = makeCert();
  const s = await startServer({ args: [PID_APP, ...tlsArgs(p)] });
  try {
    assert.match(s.out(), /listening on https:\/\//);
    const url = `https://${s.address}/`;
    const h2 = curl(['--http2', '-w', ' %{http_version}', url]);
    assert.match(h2.out, /^\d+\n 2$/, h2.err);
    const h1 = curl(['--http1.1', '-w', ' %{http_version}', url]);
    assert.match(h1.out, /^\d+\n 1\.1$/, h1.err);
    // Node's https client offers no ALPN at all: HTTP/1.1
    const viaNode = await new Promise<string>((resolve, reject) => {
      https.get(url, { rejectUnauthorized: false }, (res) => { let b = ''; res.on('data', (d) => { b += d; }); res.on('end', () => resolve(`${res.httpVersion} ${b.trim()}`)); }).on('error', reject);
    });
    assert.match(viaNode, /^1\.1 \d+$/);
    assert.equal((await handshake(s.address, { alpn: ['h2', 'http/1.1'] })).alpn, 'h2');
    assert.equal((await handshake(s.address, { alpn: ['http/1.1'] })).alpn, 'http/1.1');
    const plain = curl(['-w', '%{http_code}', `http://${s.address}/`]);
    assert.doesNotMatch(plain.out, /^200/, 'plain HTTP must not be answered on a TLS listener');
    // requests by protocol on the status page and /metrics (one h2 request by curl, two HTTP/1.1 over TLS)
    const st = await waitFor(async () => { const j = await statusJson(s); return (j.protocols?.h2.requests ?? 0) >= 1 && (j.protocols?.['https/1.1'].requests ?? 0) >= 2 ? j : undefined; }, 5000, 'requests by protocol in the status');
    assert.equal(st?.protocols?.['http/1.1'].requests, 0);
    const metrics = (await get(s.admin, '/metrics')).body;
    assert.match(metrics, /quiesce_requests_by_protocol_total\{protocol="h2"\} [1-9]/);
  } finally {
    await cleanup(s);
  }
});

test('--http2 off: curl --http2 gets HTTP/1.1; an Express app gets HTTP/1.1 over TLS, a Hono app HTTP/2', { skip: noOpenssl || noCurl }, async () => {
  const p = makeCert();
  for (const [app, extra, want] of [[PID_APP, ['--http2', 'off'], '1.1'], [join(FIXTURES, 'apps/express-export.mjs'), [], '1.1'], [join(FIXTURES, 'apps/hono.mjs'), [], '2']] as const) {
    const s = await startServer({ args: [app, ...tlsArgs(p), ...extra, '--workers', '1'] });
    try {
      const r = curl(['--http2', '-w', ' %{http_version}', `https://${s.address}/`]);
      assert.match(r.out, new RegExp(` ${want.replace('.', '\\.')}$`), `${app} ${extra.join(' ')}: ${r.out} ${r.err}`);
      if (app.endsWith('hono.mjs')) assert.match(r.out, /^hello from hono/);
      if (app.endsWith('express-export.mjs')) assert.match(r.out, /^hello from express/);
    } finally {
      await cleanup(s);
    }
  }
});

for (const who of WHO) {
  test(`stop under load over TLS as ${who} (a full handshake per request, and keep-alive clients): 0 cut, 0 timeout; an https.Server + close() on the same load cuts`, { skip: noOpenssl || skipFor(who) }, async () => {
    const p = makeCert(who);
    const s = await startServer({ args: [PID_APP, ...tlsArgs(p)], user: who === 'nobody' ? 'nobody' : undefined });
    try {
      const { probe, queued } = await stopUnderLoad(`https://${s.address}`, s.pid, s.port);
      assert.equal((await waitExit(s)).code, 0);
      // a worker accepts all that waits whenever its loop turns, and the handshakes then wait in
      // the worker: what the stop had to finish is the kernel queue (at the SIGTERM, at the
      // gate: the master's figure) and the connections the workers held when told to retire
      // (handshakes in progress included)
      const atGate = Number(/drain-closed .*queued_at_gate=(\d+)/.exec(s.err())?.[1] ?? 0);
      const held = [...s.err().matchAll(/retiring reason=stop connections=(\d+)/g)].reduce((a, m) => a + Number(m[1]), 0);
      console.log(`# quiesce over TLS (${who}): queued at stop ${queued}, at the gate ${atGate}, held by the workers ${held}; ${summary(probe)}`);
      assert.ok(Math.max(queued, atGate) + held >= 10, `the stop must find connections to finish to prove anything: Recv-Q ${queued}, at the gate ${atGate}, in the workers ${held}`);
      assertNothingCut(probe);
      assert.ok(probe.refused > 0, `clients after the gate are refused: ${summary(probe)}`);
    } finally {
      await cleanup(s);
    }
    // the control: the same load on an https.Server + close(), as the same user
    const script = join(FIXTURES, 'tls/https-close.mjs');
    const [cmd, args] = who === 'nobody' ? asNobody(process.execPath, [forNobody(script), p.cert, p.key]) : [process.execPath, [script, p.cert, p.key]];
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const port = await new Promise<number>((resolve, reject) => {
        createInterface({ input: c.stdout! }).once('line', (l) => resolve(Number(/listening on (\d+)/.exec(l)?.[1])));
        c.once('exit', () => reject(new Error('control server exited')));
      });
      const { probe, queued } = await stopUnderLoad(`https://127.0.0.1:${port}`, c.pid!, port);
      console.log(`# control https.Server + close() (${who}): queued at stop ${queued}; ${summary(probe)}`);
      // what the kernel holds at a plain close is reset: the control must show it as cut. (Node 24
      // in CI once accepted all of a slower probe's connections in time: nothing queued, nothing
      // cut; the quiesce side above is held to having had connections to finish either way.)
      if (queued >= 5) assert.ok(probe.cut > 0, `https.Server + close() must cut what the kernel held (${queued}): ${summary(probe)}`);
    } finally {
      c.kill('SIGKILL');
    }
  });
}

/** HTTP/2 sessions with many streams each, `at` a stop or a reload. */
async function h2Through(s: Server, atS: number, run: () => unknown, durationS = atS + 1.5): Promise<ProbeResult> {
  return runProbe({ target: `https://${s.address}`, http2: true, keepalive: 6, streams: 16, path: '/?sleep=20', durationS, timeoutS: 15, commands: [{ atS, run }] });
}

for (const who of WHO) {
  test(`HTTP/2 as ${who}: 6 sessions x 16 concurrent streams through a stop: every stream ok or refused (GOAWAY / REFUSED_STREAM), none cut`, { skip: noOpenssl || skipFor(who) }, async () => {
    const p = makeCert(who);
    const s = await startServer({ args: [PID_APP, ...tlsArgs(p)], user: who === 'nobody' ? 'nobody' : undefined });
    try {
      const probe = await h2Through(s, 1.0, () => process.kill(s.pid, 'SIGTERM'));
      console.log(`# h2 through a stop (${who}): ${summary(probe)}`);
      assertNothingCut(probe);
      // (a floor, not a rate: at load 17 the sessions took most of the second before the stop: 96 ok)
      assert.ok(probe.ok > 30, `streams served before and through the stop: ${summary(probe)}`);
      assert.equal((await waitExit(s)).code, 0);
      assert.match(s.err(), /cut=0/);
    } finally {
      await cleanup(s);
    }
  });
}

test('HTTP/2 through a stop with a lame duck (--drain-delay 1): sessions get GOAWAY while the listener still takes new ones; none cut', { skip: noOpenssl }, async () => {
  const p = makeCert();
  const s = await startServer({ args: [PID_APP, ...tlsArgs(p), '--drain-delay', '1'] });
  try {
    const probe = await h2Through(s, 0.8, () => process.kill(s.pid, 'SIGTERM'), 3.5);
    console.log(`# h2 through a lame duck and a stop: ${summary(probe)}`);
    assertNothingCut(probe);
    assert.ok(probe.ok > 100, summary(probe));
    assert.equal((await waitExit(s)).code, 0);
  } finally {
    await cleanup(s);
  }
});

test('HTTP/2: 6 sessions x 16 concurrent streams through a reload: every stream ok or refused (GOAWAY / REFUSED_STREAM), none cut; the new generation serves after it', { skip: noOpenssl }, async () => {
  const p = makeCert();
  const s = await startServer({ args: [PID_APP, ...tlsArgs(p), '--reload-soak', '300ms', '--expose-generation'] });
  try {
    let reload = '';
    const done = new AbortController(); // the load goes on until 1.5 s after the reload finished
    const probe = await runProbe({
      target: `https://${s.address}`, http2: true, keepalive: 6, streams: 16, path: '/?sleep=20', durationS: 20, timeoutS: 15, signal: done.signal,
      commands: [{ atS: 0.8, run: async () => { const r = await s.cli('reload'); reload = `${r.code} ${r.stdout}${r.stderr}`; setTimeout(() => done.abort(), 1500); } }],
    });
    console.log(`# h2 through a reload: ${summary(probe)}; generations ${JSON.stringify(probe.generations)}`);
    assert.match(reload, /^0 quiesce: reloaded/);
    assertNothingCut(probe);
    assert.ok((probe.generations['2'] ?? 0) > 0, `generation 2 served: ${JSON.stringify(probe.generations)}`);
  } finally {
    await cleanup(s);
  }
});

test('a reload with a new certificate: new handshakes present it, none refused under load; a reload with a mismatched key rolls back, the old certificate still served', { skip: noOpenssl }, async () => {
  const a = makeCert('root', 'first');
  const b = makeCert('root', 'second');
  const other = makeCert('root', 'other');
  const live = mkdtempSync(join(tmpdir(), 'quiesce-tls-live-'));
  const cert = join(live, 'cert.pem');
  const key = join(live, 'key.pem');
  copyFileSync(a.cert, cert);
  copyFileSync(a.key, key);
  const s = await startServer({ args: [PID_APP, '--tls-cert', cert, '--tls-key', key, '--reload-soak', '300ms'] });
  try {
    assert.equal((await handshake(s.address)).cn, 'first');
    let reload = '';
    const probe = await runProbe({
      target: `https://${s.address}`, rate: 100, keepalive: 4, path: '/?burn=1', durationS: 2.5, timeoutS: 10,
      commands: [{ atS: 0.8, run: async () => { copyFileSync(b.cert, cert); copyFileSync(b.key, key); const r = await s.cli('reload'); reload = `${r.code} ${r.stdout}${r.stderr}`; } }],
    });
    assert.match(reload, /^0 quiesce: reloaded/);
    assertNothingCut(probe);
    assert.equal(probe.refused, 0, summary(probe));
    assert.equal((await handshake(s.address)).cn, 'second');
    // a key that is not the certificate's: the reload fails naming it, generation 2 keeps serving
    copyFileSync(other.key, key);
    const bad = await s.cli('reload');
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr + bad.stdout, /reload failed: tls: .*the key .*key\.pem does not belong to the certificate .*cert\.pem/);
    assert.equal((await handshake(s.address)).cn, 'second');
    assert.match(s.err(), /tls-certificate generation=2 .*subject="CN=second"/);
  } finally {
    await cleanup(s);
  }
});

test('a start with a missing key file or a mismatched pair fails naming the file; --tls-cert without --tls-key is refused', { skip: noOpenssl }, async () => {
  const a = makeCert();
  const b = makeCert();
  const { runCli } = await import('./helpers/server.js');
  const missing = await runCli([PID_APP, '--listen', '127.0.0.1:0', '--admin', 'off', '--tls-cert', a.cert, '--tls-key', join(a.dir, 'nope.pem'), '--pidfile', join(a.dir, 'q.pid')]);
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /--tls-cert\/--tls-key: key .*nope\.pem: ENOENT/);
  const mismatch = await runCli([PID_APP, '--listen', '127.0.0.1:0', '--admin', 'off', '--tls-cert', a.cert, '--tls-key', b.key, '--pidfile', join(a.dir, 'q.pid')]);
  assert.notEqual(mismatch.code, 0);
  assert.match(mismatch.stderr, /does not belong to the certificate/);
  const checked = await runCli(['configtest', PID_APP, '--tls-cert', a.cert, '--tls-key', b.key]);
  assert.notEqual(checked.code, 0);
  assert.match(checked.stderr, /does not belong to the certificate/);
  const good = await runCli(['configtest', PID_APP, '--tls-cert', a.cert, '--tls-key', a.key]);
  assert.equal(good.code, 0, good.stderr);
  assert.match(good.stdout, /TLS on 1 listener\(s\): CN=quiesce-test until/);
  // an encrypted key: its passphrase from a file, never the command line
  const enc = join(a.dir, 'enc.pem');
  const pass = join(a.dir, 'pass');
  writeFileSync(pass, 'open sesame\n');
  assert.equal(spawnSync('openssl', ['pkcs8', '-topk8', '-v2', 'aes-256-cbc', '-in', a.key, '-out', enc, '-passout', `file:${pass}`]).status, 0);
  const locked = await runCli(['configtest', PID_APP, '--tls-cert', a.cert, '--tls-key', enc]);
  assert.notEqual(locked.code, 0);
  assert.match(locked.stderr, /key .*enc\.pem: not a usable private key: .*--tls-passphrase-file or QUIESCE_TLS_PASSPHRASE/);
  const unlocked = await runCli(['configtest', PID_APP, '--tls-cert', a.cert, '--tls-key', enc, '--tls-passphrase-file', pass]);
  assert.equal(unlocked.code, 0, unlocked.stderr);
  const half = await runCli([PID_APP, '--tls-cert', a.cert, '--pidfile', join(a.dir, 'q.pid')]);
  assert.notEqual(half.code, 0);
  assert.match(half.stderr, /--tls-cert and --tls-key go together/);
});

test('a session resumed on another worker: the generation shares its ticket keys', { skip: noOpenssl }, async () => {
  const p = makeCert();
  const s = await startServer({ args: [PID_APP, ...tlsArgs(p), '--workers', '2'] });
  try {
    const first = await handshake(s.address);
    assert.ok(first.session, 'a session ticket');
    const pids = new Set<string>();
    let reused = 0;
    // each resumed connection asks which worker serves it; both must resume
    for (let i = 0; i < 30 && (pids.size < 2 || reused < 10); i++) {
      const r = await new Promise<{ reused: boolean; pid: string }>((resolve, reject) => {
        const sock = tls.connect({ host: '127.0.0.1', port: s.port, rejectUnauthorized: false, session: first.session, ALPNProtocols: ['http/1.1'] });
        let body = '';
        let resumed = false;
        sock.once('secureConnect', () => { resumed = sock.isSessionReused(); sock.write('GET /?sleep=30 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'); });
        sock.on('data', (d: Buffer) => { body += d.toString(); });
        sock.once('close', () => resolve({ reused: resumed, pid: /\r\n\r\n(\d+)/.exec(body)?.[1] ?? '' }));
        sock.once('error', reject);
      });
      assert.ok(r.reused, `connection ${i} was not resumed (served by ${r.pid})`);
      reused++;
      pids.add(r.pid);
    }
    assert.equal(pids.size, 2, `resumed sessions on both workers: ${[...pids].join(',')}`);
  } finally {
    await cleanup(s);
  }
});

test('an app calling listen() on its own https.Server is served over TLS with its own certificate; its own http2.createSecureServer too (h2 and HTTP/1.1)', { skip: noOpenssl || noCurl }, async () => {
  const p = makeCert('root', 'the-apps-own');
  const env = { TLS_APP_CERT: p.cert, TLS_APP_KEY: p.key };
  const s = await startServer({ args: [join(FIXTURES, 'tls/https-listen.mjs')], env });
  try {
    assert.equal((await handshake(s.address)).cn, 'the-apps-own');
    const r = curl([`https://${s.address}/`]);
    assert.equal(r.out, 'app-tls true 1.1\n', r.err);
    assert.doesNotMatch(curl(['-w', '%{http_code}', `http://${s.address}/`]).out, /^200/, 'never plain HTTP where the app asked for TLS');
  } finally {
    await cleanup(s);
  }
  const h = await startServer({ args: [join(FIXTURES, 'tls/h2-secure-listen.mjs')], env });
  try {
    assert.equal((await handshake(h.address, { alpn: ['h2'] })).cn, 'the-apps-own');
    assert.equal(curl(['--http2', `https://${h.address}/`]).out, 'h2-app 2.0\n');
    assert.equal(curl(['--http1.1', `https://${h.address}/`]).out, 'h2-app 1.1\n');
    // its sessions drain as ours do: a stop under HTTP/2 load cuts nothing
    const probe = await h2Through(h, 0.8, () => process.kill(h.pid, 'SIGTERM'));
    assertNothingCut(probe);
    assert.equal((await waitExit(h)).code, 0);
  } finally {
    await cleanup(h);
  }
});

test('a config file listen entry with TLS of its own beside a plain one; "tls": false keeps an entry plain under --tls-cert', { skip: noOpenssl || noCurl }, async () => {
  const p = makeCert();
  const cfg = join(p.dir, 'q.json');
  writeFileSync(cfg, JSON.stringify({ app: PID_APP, listen: ['127.0.0.1:0', { address: '127.0.0.2:0', tlsCert: p.cert, tlsKey: p.key }] }));
  const s = await startServer({ args: ['--config', cfg] });
  try {
    assert.equal(s.addresses.length, 2);
    assert.match(s.out(), /listening on http:\/\/127\.0\.0\.1:\d+\n.*listening on https:\/\/127\.0\.0\.2:\d+/s);
    assert.match(curl([`http://${s.addresses[0]}/`]).out, /^\d+\n$/);
    assert.match(curl([`https://${s.addresses[1]}/`]).out, /^\d+\n$/);
  } finally {
    await cleanup(s);
  }
  writeFileSync(cfg, JSON.stringify({ app: PID_APP, tlsCert: p.cert, tlsKey: p.key, listen: [{ address: '127.0.0.1:0', tls: false }, '127.0.0.2:0'] }));
  const t = await startServer({ args: ['--config', cfg] });
  try {
    assert.match(t.out(), /listening on http:\/\/127\.0\.0\.1:\d+\n.*listening on https:\/\/127\.0\.0\.2:\d+/s);
  } finally {
    await cleanup(t);
  }
  await sleep(0);
});

test('an idle HTTP/2 session is let go of after --keepalive-timeout (+1 s) with a GOAWAY, as an idle keep-alive connection is closed', { skip: noOpenssl }, async () => {
  const p = makeCert();
  const s = await startServer({ args: [PID_APP, ...tlsArgs(p), '--keepalive-timeout', '1', '--workers', '1'] });
  const { connect } = await import('node:http2');
  const session = connect(`https://${s.address}`, { rejectUnauthorized: false });
  try {
    const goaway = new Promise<number>((resolve) => session.once('goaway', (code: number) => resolve(code)));
    const closed = new Promise<void>((resolve) => session.once('close', () => resolve()));
    session.on('error', () => {});
    const body = await new Promise<string>((resolve, reject) => {
      const req = session.request({ ':path': '/' });
      let b = '';
      req.on('data', (d: Buffer) => { b += d.toString(); });
      req.on('end', () => resolve(b));
      req.on('error', reject);
      req.end();
    });
    assert.match(body, /^\d+\n$/);
    const t0 = Date.now();
    assert.equal(await within(goaway, 6000, 'the GOAWAY of an idle session'), 0);
    await within(closed, 3000, 'the session to close');
    assert.ok(Date.now() - t0 >= 1500, `not before the timeout: ${Date.now() - t0} ms`);
  } finally {
    session.destroy();
    await cleanup(s);
  }
});

test('an encrypted key with its passphrase in QUIESCE_TLS_PASSPHRASE: served; no worker has the passphrase or the key in its environment', { skip: noOpenssl || noCurl }, async () => {
  const p = makeCert();
  const enc = join(p.dir, 'enc.pem');
  const PASS = 'a-passphrase-no-worker-may-see';
  assert.equal(spawnSync('openssl', ['pkcs8', '-topk8', '-v2', 'aes-256-cbc', '-in', p.key, '-out', enc, '-passout', `pass:${PASS}`]).status, 0);
  const s = await startServer({ args: [PID_APP, '--tls-cert', p.cert, '--tls-key', enc], env: { QUIESCE_TLS_PASSPHRASE: PASS } });
  try {
    assert.match(curl([`https://${s.address}/`]).out, /^\d+\n$/);
    const workers = s.workerPids();
    assert.ok(workers.length > 0);
    for (const w of workers) {
      const env = readFileSync(`/proc/${w}/environ`, 'utf8');
      assert.ok(!env.includes(PASS), `worker ${w} has the passphrase in its environment`);
      assert.ok(!env.includes('PRIVATE KEY'), `worker ${w} has a key in its environment`);
    }
  } finally {
    await cleanup(s);
  }
});


test('request metrics count HTTP/2 responses (status class and latency) as they count HTTP/1.1 over TLS', { skip: noOpenssl || noCurl }, async () => {
  const p = makeCert();
  // every fifth response is a 500, each after 5 ms
  const s = await startServer({ args: [join(FIXTURES, 'reload/judge-500.mjs'), '--workers', '1', ...tlsArgs(p)] });
  try {
    const probe = await runProbe({ target: `https://${s.address}`, http2: true, keepalive: 2, streams: 4, path: '/?sleep=5', durationS: 1.5, timeoutS: 15 });
    assert.equal(probe.ok, probe.sent, summary(probe));
    assert.ok((probe.ok_by_status['500'] ?? 0) > 0 && (probe.ok_by_status['200'] ?? 0) > 0, summary(probe));
    const h1 = curl(['--http1.1', '-o', '/dev/null', '-w', '%{http_code} %{http_version}', `https://${s.address}/`]);
    assert.match(h1.out, /^(200|500) 1\.1$/, h1.err);
    const h1Is500 = h1.out.startsWith('500') ? 1 : 0;
    // the worker reports every 500 ms
    await sleep(1_200);
    const st = await statusJson(s);
    assert.equal(st.protocols?.h2.requests, probe.sent, JSON.stringify(st.protocols));
    assert.equal(st.totals.responses, probe.ok + 1, `counted ${JSON.stringify(st.totals.responsesByClass)} vs ${summary(probe)} and one HTTPS/1.1`);
    assert.equal(st.totals.responsesByClass['5xx'], (probe.ok_by_status['500'] ?? 0) + h1Is500, JSON.stringify(st.totals.responsesByClass));
    assert.equal(st.totals.responsesByClass['2xx'], (probe.ok_by_status['200'] ?? 0) + 1 - h1Is500, JSON.stringify(st.totals.responsesByClass));
    const g = st.generationInfo.find((x) => x.n === 1)!;
    assert.ok(g.http && g.http.p50Ms !== null && g.http.p50Ms >= 5, JSON.stringify(g.http));
    assert.equal(g.http.latency.reduce((a, b) => a + b, 0), g.http.responses);
  } finally {
    await cleanup(s);
  }
});
