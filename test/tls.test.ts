/**
 * TLS and HTTP/2 listeners keep the promise: HTTPS and HTTP/2 answered (ALPN chooses), a stop
 * under load over TLS cuts nothing while an https.Server + close() on the same load cuts, HTTP/2
 * sessions with many streams go through a stop and a reload with every stream ok or refused, a
 * renewed certificate goes live with a reload (a mismatched key rolls back), a resumed session
 * works on any worker, and an app that brings its own https server is served over TLS with its
 * own certificate. Certificates are made with openssl (test/helpers/cert.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import tls from 'node:tls';
import https from 'node:https';
import http from 'node:http';
import http2 from 'node:http2';
import { runProbe, type ProbeResult } from '../src/probe/index.js';
import { startServer, stopServer, cleanup, waitExit, waitFor, within, get, statusJson, sleep, FIXTURES, type Server } from './helpers/server.js';
import { listenQueue } from './helpers/kernel.js';
import { assertNothingCut, summary } from './helpers/outcomes.js';
import { assertH2ThroughReload, assertH2ThroughStop, h2Through } from './helpers/h2-load.js';
import { asNobody, forNobody, skipFor, WHO } from './helpers/unprivileged.js';
import { makeCert, noOpenssl, type CertPair } from './helpers/cert.js';

const PID_APP = join(FIXTURES, 'core/pid-app.mjs');
const noCurl = spawnSync('curl', ['--version']).status === 0 ? false : 'curl is not installed';
const noH2load = spawnSync('h2load', ['--version']).status === 0 ? false : 'h2load is not installed (Debian: nghttp2-client)';
const noNghttp = spawnSync('nghttp', ['--version']).status === 0 ? false : 'nghttp is not installed (Debian: nghttp2-client)';

const tlsArgs = (p: CertPair) => ['--tls-cert', p.cert, '--tls-key', p.key];

/** One TLS handshake: the certificate's CN, the ALPN protocol, whether the session was resumed. */
function handshake(address: string, o: { alpn?: string[]; session?: Buffer; servername?: string } = {}): Promise<{ cn: string; alpn: string | false; reused: boolean; session?: Buffer }> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host, port, rejectUnauthorized: false, ALPNProtocols: o.alpn ?? ['http/1.1'], session: o.session, ...(o.servername ? { servername: o.servername } : {}) });
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
      https.get(url, { rejectUnauthorized: false, agent: false }, (res) => { let b = ''; res.on('data', (d) => { b += d; }); res.on('end', () => resolve(`${res.httpVersion} ${b.trim()}`)); }).on('error', reject);
    });
    assert.match(viaNode, /^1\.1 \d+$/);
    assert.equal((await handshake(s.address, { alpn: ['h2', 'http/1.1'] })).alpn, 'h2');
    assert.equal((await handshake(s.address, { alpn: ['http/1.1'] })).alpn, 'http/1.1');
    const plain = curl(['-w', '%{http_code}', `http://${s.address}/`]);
    assert.doesNotMatch(plain.out, /^200/, 'plain HTTP must not be answered on a TLS listener');
    // requests by protocol on the status page and /metrics (one h2 request by curl, two HTTP/1.1 over TLS)
    const st = await waitFor(async () => { const j = await statusJson(s); return (j.protocols?.h2.requests ?? 0) >= 1 && (j.protocols?.['https/1.1'].requests ?? 0) >= 2 ? j : undefined; }, 5000, 'requests by protocol in the status');
    assert.equal(st?.protocols?.['http/1.1'].requests, 0);
    // and the HTTP/1.1 connections over TLS, all closed by now, are no longer counted open (nor on the load board)
    await waitFor(async () => (await statusJson(s)).protocols?.['https/1.1'].connections === 0 || undefined, 5000, 'no HTTP/1.1 connection over TLS open');
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

for (const who of WHO) {
  test(`HTTP/2 as ${who}: 6 sessions x 16 concurrent streams through a stop: every stream ok or refused (GOAWAY / REFUSED_STREAM), none cut`, { skip: noOpenssl || skipFor(who) }, async () => {
    const p = makeCert(who);
    const s = await startServer({ args: [PID_APP, ...tlsArgs(p)], user: who === 'nobody' ? 'nobody' : undefined });
    try {
      await assertH2ThroughStop(s, `https://${s.address}`, `h2 (${who})`);
    } finally {
      await cleanup(s);
    }
  });
}

test('HTTP/2 through a stop with a lame duck (--drain-delay 1): sessions get GOAWAY while the listener still takes new ones; none cut', { skip: noOpenssl }, async () => {
  const p = makeCert();
  const s = await startServer({ args: [PID_APP, ...tlsArgs(p), '--drain-delay', '1'] });
  try {
    const probe = await h2Through(`https://${s.address}`, 0.8, () => process.kill(s.pid, 'SIGTERM'), 3.5);
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
    await assertH2ThroughReload(s, `https://${s.address}`, 'h2');
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
  // (the --tls-* flags before --listen: they apply to every address)
  const missing = await runCli([PID_APP, '--tls-cert', a.cert, '--tls-key', join(a.dir, 'nope.pem'), '--listen', '127.0.0.1:0', '--admin', 'off', '--pidfile', join(a.dir, 'q.pid')]);
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /--tls-cert\/--tls-key: key .*nope\.pem: ENOENT/);
  const mismatch = await runCli([PID_APP, '--tls-cert', a.cert, '--tls-key', b.key, '--listen', '127.0.0.1:0', '--admin', 'off', '--pidfile', join(a.dir, 'q.pid')]);
  assert.notEqual(mismatch.code, 0);
  assert.match(mismatch.stderr, /does not belong to the certificate/);
  const checked = await runCli(['configtest', PID_APP, '--tls-cert', a.cert, '--tls-key', b.key]);
  assert.notEqual(checked.code, 0);
  assert.match(checked.stderr, /does not belong to the certificate/);
  // a certificate file that is no certificate, or a chain with a damaged second one: named, refused
  const junk = join(a.dir, 'junk.pem');
  writeFileSync(junk, 'not a certificate\n');
  const notPem = await runCli(['configtest', PID_APP, '--tls-cert', junk, '--tls-key', a.key]);
  assert.notEqual(notPem.code, 0);
  assert.match(notPem.stderr, /certificate .*junk\.pem: not a PEM certificate/);
  const chain = join(a.dir, 'chain.pem');
  writeFileSync(chain, readFileSync(a.cert, 'utf8') + '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
  const badChain = await runCli(['configtest', PID_APP, '--tls-cert', chain, '--tls-key', a.key]);
  assert.notEqual(badChain.code, 0);
  assert.match(badChain.stderr, /certificate .*chain\.pem: certificate 2 of the file is not a PEM certificate/);
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

/** One connection resuming `session` (a request answered with the worker's pid): whether it was resumed, by whom, and the ticket it got. */
function resume(port: number, session: Buffer): Promise<{ reused: boolean; pid: string; ticket?: Buffer }> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, session, ALPNProtocols: ['http/1.1'] });
    let body = '';
    let resumed = false;
    let ticket: Buffer | undefined;
    sock.on('session', (b: Buffer) => { ticket = b; });
    sock.once('secureConnect', () => { resumed = sock.isSessionReused(); sock.write('GET /?sleep=30 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'); });
    sock.on('data', (d: Buffer) => { body += d.toString(); });
    sock.once('close', () => resolve({ reused: resumed, pid: /\r\n\r\n(\d+)/.exec(body)?.[1] ?? '', ticket }));
    sock.once('error', reject);
  });
}

/** Resume `session` until both workers did (30 tries at most): every one must be resumed and answered. */
async function resumedOnBoth(port: number, session: Buffer, what: string): Promise<void> {
  const pids = new Set<string>();
  let reused = 0;
  for (let i = 0; i < 30 && (pids.size < 2 || reused < 6); i++) {
    const r = await resume(port, session);
    assert.ok(r.reused, `${what}: connection ${i} was not resumed (served by ${r.pid})`);
    assert.match(r.pid, /^\d+$/, `${what}: connection ${i} answered`);
    reused++;
    pids.add(r.pid);
  }
  assert.equal(pids.size, 2, `${what}: resumed sessions on both workers: ${[...pids].join(',')}`);
}

test('a session resumed on either worker, after a reload too; ticket keys rotate on their period: an old ticket gets a full handshake (served), a new one resumes anywhere', { skip: noOpenssl }, async () => {
  const p = makeCert();
  const PERIOD = 6000;
  const s = await startServer({ args: [PID_APP, ...tlsArgs(p), '--workers', '2', '--reload-soak', '200ms'], env: { QUIESCE_TLS_TICKET_PERIOD_MS: String(PERIOD) } });
  const untilNextPeriod = async (): Promise<void> => { await sleep(PERIOD - (Date.now() % PERIOD) + 300); };
  try {
    // right after a boundary: a whole period for what must happen within one
    await untilNextPeriod();
    const started = Date.now();
    const first = await handshake(s.address);
    assert.ok(first.session, 'a session ticket');
    await resumedOnBoth(s.port, first.session, 'within a period');
    const r = await s.cli('reload');
    assert.match(`${r.code} ${r.stdout}`, /^0 quiesce: reloaded/);
    await resumedOnBoth(s.port, first.session, 'after a reload (the new generation)');
    // (under a loaded machine all this may outlast the period: then the rotation part still holds below)
    console.log(`# resumption within a period and across a reload took ${Date.now() - started} ms of the ${PERIOD} ms period`);
    await untilNextPeriod();
    const old = await resume(s.port, first.session);
    assert.equal(old.reused, false, 'a ticket of the previous period is no longer accepted (Node holds one key set)');
    assert.match(old.pid, /^\d+$/, 'the full handshake instead is served');
    const fresh = await handshake(s.address);
    assert.equal(fresh.reused, false);
    assert.ok(fresh.session, 'a ticket of the new period');
    await resumedOnBoth(s.port, fresh.session, 'the new period\'s ticket');
  } finally {
    await cleanup(s);
  }
});

// (as nobody too: the board is a memfd the master makes and each worker maps, no privilege asked)
for (const who of WHO) test(`HTTP/2 sessions opened in a burst spread over the workers as ${who} (a worker holding more than its least loaded peer, by half as many again + 1, stops accepting: the load board)`, { skip: noOpenssl || noH2load || skipFor(who) }, async () => {
  const p = makeCert(who);
  const s = await startServer({ args: [PID_APP, ...tlsArgs(p), '--workers', '2'], user: who === 'nobody' ? 'nobody' : undefined });
  try {
    // per worker, in the status's (stable) order
    const served = async (): Promise<number[]> => (await statusJson(s)).workers.map((w) => w.requests);
    const bursts: string[] = [];
    const BURSTS = 8;
    let before = [0, 0];
    for (let b = 0; b < BURSTS; b++) {
      // h2load opens its 10 sessions at once (one request each, held 200 ms: they overlap)
      const r = spawnSync('h2load', ['-c10', '-n10', '-m1', `https://127.0.0.1:${s.port}/?sleep=200`], { encoding: 'utf8', timeout: 20_000 });
      assert.match(r.stdout, /10 succeeded/, r.stdout + r.stderr);
      // the workers' stats reach the master every 500 ms
      const after = await waitFor(async () => { const a = await served(); return a.reduce((x, y) => x + y, 0) === (b + 1) * 10 ? a : undefined; }, 5_000, 'the requests counted') as number[];
      bursts.push(after.map((n, k) => n - (before[k] ?? 0)).join('/'));
      before = after;
    }
    console.log(`# ${BURSTS} bursts of 10 HTTP/2 sessions, per worker (${who}): ${bursts.join(' ')}`);
    assert.doesNotMatch(s.err() + s.out(), /tls-board-failed/, 'the board was made and mapped');
    // libuv's own accepting (QUIESCE_TLS_PACED=off, or QUIESCE_NATIVE=off) split 6 bursts as
    // 5/5 3/7 4/6 4/6 3/7 1/9, 7/3 3/7 4/6 10/0 7/3 7/3, 8/2 4/6 6/4 2/8 0/10 5/5 here: 20-28 off
    // balance in all. With the board most bursts are 5/5 or 4/6, but on a loaded machine (a peer
    // not run for long) one may still go 9/1 or 10/0: at most one such burst, and less than libuv's
    // imbalance at most (3 a burst).
    const off = bursts.map((x) => Math.abs(Number(x.split('/')[0]) - Number(x.split('/')[1])));
    const lopsided = bursts.filter((x) => x.split('/').some((n) => Number(n) < 2)).length;
    assert.ok(lopsided <= 1, `${lopsided} bursts all but on one worker: ${bursts.join(' ')}`);
    assert.ok(off.reduce((a, b) => a + b, 0) <= 3 * BURSTS, `off balance ${off.reduce((a, b) => a + b, 0)} in ${BURSTS} bursts (at most ${3 * BURSTS}): ${bursts.join(" ")}`);
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
    const probe = await h2Through(`https://${h.address}`, 0.8, () => process.kill(h.pid, 'SIGTERM'));
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

test('SNI: a listen entry with more certificates ("sni") serves each to clients asking for one of its DNS names, the default otherwise; a bad one fails the start naming its file', { skip: noOpenssl }, async () => {
  const def = makeCert('root', 'default');
  const a = makeCert('root', 'a.test', 'DNS:a.test');
  const wild = makeCert('root', 'wild', 'DNS:*.b.test');
  const cfg = join(def.dir, 'q.json');
  const entry = { address: '127.0.0.1:0', tlsCert: def.cert, tlsKey: def.key, sni: [{ tlsCert: a.cert, tlsKey: a.key }, { tlsCert: wild.cert, tlsKey: wild.key }] };
  writeFileSync(cfg, JSON.stringify({ app: PID_APP, listen: [entry] }));
  const s = await startServer({ args: ['--config', cfg] });
  try {
    assert.equal((await handshake(s.address, { servername: 'a.test' })).cn, 'a.test');
    assert.equal((await handshake(s.address, { servername: 'x.b.test' })).cn, 'wild');
    assert.equal((await handshake(s.address, { servername: 'other.test' })).cn, 'default');
    assert.equal((await handshake(s.address)).cn, 'default', 'no SNI (an IP address): the default');
    const h2 = await handshake(s.address, { servername: 'a.test', alpn: ['h2'] });
    assert.deepEqual([h2.cn, h2.alpn], ['a.test', 'h2'], 'ALPN still chooses with an SNI certificate');
    assert.match(s.err() + s.out(), /tls-certificate .*sni a\.test.*subject="CN=a\.test"/);
  } finally {
    await cleanup(s);
  }
  // a key that is not the certificate's: the start fails, naming both files
  writeFileSync(cfg, JSON.stringify({ app: PID_APP, listen: [{ ...entry, sni: [{ tlsCert: a.cert, tlsKey: wild.key }] }] }));
  const t = await startServer({ args: ['--config', cfg], waitReady: false });
  const exit = await waitExit(t);
  assert.notEqual(exit.code, 0);
  assert.match(t.err(), new RegExp(`sni.*the key ${wild.key.replace(/[.]/g, '\\.')} does not belong to the certificate ${a.cert.replace(/[.]/g, '\\.')}`));
});

test('--tls-* flags after --listen entries are theirs alone: TLS on those, plain HTTP on the others; a pair split or given twice there is refused naming the --listen', { skip: noOpenssl }, async () => {
  const one = makeCert('root', 'one');
  const sock = join(one.dir, 'plain.sock');
  const s = await startServer({ args: [PID_APP, '--listen', '127.0.0.1:0', ...tlsArgs(one), '--listen', `unix:${sock}`] });
  try {
    assert.match(s.address, /^127\.0\.0\.1:\d+$/);
    assert.equal((await handshake(s.address)).cn, 'one', 'the address before the flags speaks TLS');
    const plain = await new Promise<string>((resolve, reject) => {
      const r = http.get({ socketPath: sock, path: '/' }, (res) => { let b = ''; res.on('data', (d: Buffer) => { b += d.toString(); }); res.on('end', () => resolve(`${res.statusCode} ${b}`)); });
      r.on('error', reject);
    });
    assert.match(plain, /^200 /, 'the address after them is plain HTTP');
  } finally {
    await cleanup(s);
  }
  const { runCli } = await import('./helpers/server.js');
  const split = await runCli(['configtest', '--listen', '127.0.0.1:8443', '--tls-cert', one.cert, '--listen', '127.0.0.1:8080', '--tls-key', one.key]);
  assert.equal(split.code, 2, split.stderr);
  assert.match(split.stderr, /--tls-cert and --tls-key go together: give both after --listen 127\.0\.0\.1:8443/);
  const twice = await runCli(['configtest', '--listen', '127.0.0.1:8443', ...tlsArgs(one), '--tls-cert', one.cert]);
  assert.equal(twice.code, 2, twice.stderr);
  assert.match(twice.stderr, /--tls-cert given twice after --listen 127\.0\.0\.1:8443/);
});

test('SNI from the command line: --tls-sni CERT,KEY (repeatable) adds certificates to the --tls-cert listeners; a malformed one or one without --tls-cert is refused naming the flag', { skip: noOpenssl }, async () => {
  const def = makeCert('root', 'default');
  const a = makeCert('root', 'a.test', 'DNS:a.test');
  const wild = makeCert('root', 'wild', 'DNS:*.b.test');
  const s = await startServer({ args: [PID_APP, ...tlsArgs(def), '--tls-sni', `${a.cert},${a.key}`, '--tls-sni', `${wild.cert},${wild.key}`] });
  try {
    assert.equal((await handshake(s.address, { servername: 'a.test' })).cn, 'a.test');
    assert.equal((await handshake(s.address, { servername: 'x.b.test' })).cn, 'wild');
    assert.equal((await handshake(s.address, { servername: 'other.test' })).cn, 'default');
    assert.match(s.err() + s.out(), /tls-certificate .*sni \*\.b\.test.*subject="CN=wild"/);
  } finally {
    await cleanup(s);
  }
  const { runCli } = await import('./helpers/server.js');
  const bad = await runCli(['configtest', ...tlsArgs(def), '--tls-sni', a.cert]);
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /--tls-sni: not CERT,KEY/);
  const alone = await runCli(['configtest', '--tls-sni', `${a.cert},${a.key}`]);
  assert.equal(alone.code, 2, alone.stderr);
  assert.match(alone.stderr, /--tls-sni certificates need a default one: give --tls-cert and --tls-key too/);
});

test('--admin-tls-cert/--admin-tls-key: the admin listener speaks HTTPS with its own certificate (plain HTTP is not answered there), the welcome page links to it as https; one without the other is refused', { skip: noOpenssl }, async () => {
  const app = makeCert('root', 'app');
  const adm = makeCert('root', 'admin');
  const httpsGet = (url: string): Promise<string> => new Promise((resolve, reject) => {
    https.get(url, { rejectUnauthorized: false }, (res) => { let b = ''; res.on('data', (d: Buffer) => { b += d.toString(); }); res.on('end', () => resolve(`${res.statusCode} ${b}`)); }).on('error', reject);
  });
  // no app: the welcome site, whose page links to the admin listener
  const s = await startServer({ args: [...tlsArgs(app), '--admin-tls-cert', adm.cert, '--admin-tls-key', adm.key] });
  try {
    assert.match(s.out(), /admin on https:\/\/127\.0\.0\.1:\d+/);
    assert.equal((await handshake(s.admin)).cn, 'admin', 'the admin certificate');
    assert.equal((await handshake(s.address)).cn, 'app', 'the app listener keeps its own');
    assert.equal(await httpsGet(`https://${s.admin}/live`), '200 ok\n');
    // quiesce probe --admin https://: the deploy phases read over TLS, the certificate checked
    const probe = (adminCa?: string) => runProbe({ target: `https://${s.address}`, durationS: 0.3, rate: 10, admin: `https://${s.admin}`, ...(adminCa ? { adminCa } : {}) });
    const trusted = await probe(adm.cert);
    assert.ok(Array.isArray(trusted.phases), `phases read: ${trusted.phases_error}`);
    assert.equal(trusted.phases_error, undefined);
    const untrusted = await probe();
    assert.equal(untrusted.phases, undefined);
    assert.match(untrusted.phases_error ?? '', /self.signed certificate/i, 'an unknown certificate is not trusted with the token');
    // a renewed admin certificate goes live with a reload
    const renewed = makeCert('root', 'admin-renewed');
    copyFileSync(renewed.cert, adm.cert);
    copyFileSync(renewed.key, adm.key);
    const r = await s.cli('reload');
    assert.match(`${r.code} ${r.stdout}`, /^0 quiesce: reloaded/);
    assert.equal((await handshake(s.admin)).cn, 'admin-renewed', 'the admin certificate after the reload');
    // a key that is not the certificate's rolls the reload back; the admin listener keeps its certificate
    copyFileSync(app.key, adm.key);
    const bad = await s.cli('reload');
    assert.notEqual(bad.code, 0);
    assert.match(bad.stdout + bad.stderr, /--admin-tls-cert\/--admin-tls-key: the key .* does not belong/);
    assert.equal((await handshake(s.admin)).cn, 'admin-renewed');
    assert.ok((await httpsGet(`https://${s.address}/`)).includes(`https://${s.admin}/server-status`), 'the welcome page links to https://ADMIN');
    await assert.rejects(get(s.admin, '/live'), 'plain HTTP to the HTTPS admin listener gets no answer');
  } finally {
    await cleanup(s);
  }
  const t = await startServer({ args: [PID_APP, '--admin-tls-cert', adm.cert], waitReady: false });
  assert.notEqual((await waitExit(t)).code, 0);
  assert.match(t.err(), /--admin-tls-cert and --admin-tls-key go together/);
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
    // the bytes the sessions sent are counted (HTTP/2 frames before TLS: each response a HEADERS and a DATA frame at least, 9 bytes of frame header each, and the body)
    assert.ok(st.totals.bytesSent >= probe.ok * 25, `bytes sent ${st.totals.bytesSent} for ${probe.ok} h2 responses`);
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

/** One HTTP/2 request: its status, headers, body and trailers (none: {}). */
function h2get(address: string, path: string, headers: http2.OutgoingHttpHeaders = {}): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string; trailers: http2.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const client = http2.connect(`https://${address}`, { rejectUnauthorized: false });
    client.on('error', reject);
    const req = client.request({ ':path': path, ...headers });
    let body = '';
    let head: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    req.setEncoding('utf8');
    req.on('response', (h) => { head = h; });
    req.on('data', (d: string) => { body += d; });
    req.on('trailers', (t) => { trailers = t; });
    req.on('end', () => { client.close(); resolve({ status: Number(head[':status']), headers: head, body, trailers }); });
    req.on('error', reject);
  });
}

/** A response's DATA frames (dataFrames) end it on the last one, none of them empty. */
function assertEndsOnData(data: Array<{ length: number; flags: number }>, what: string): void {
  assert.ok(data.length > 0 && data.every((d) => d.length > 0), `${what}: an empty DATA frame: ${JSON.stringify(data)}`);
  assert.equal(data.at(-1)!.flags & 1, 1, `${what}: END_STREAM on the last DATA frame`);
}

/** The DATA frames a response came in, as nghttp saw them: length and flags (1: END_STREAM). */
function dataFrames(address: string, path: string): Array<{ length: number; flags: number }> {
  const r = spawnSync('nghttp', ['-nv', `https://${address}${path}`], { encoding: 'utf8', timeout: 10_000, maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, r.stderr);
  return [...r.stdout.matchAll(/recv DATA frame <length=(\d+), flags=0x(\w+)/g)].map((m) => ({ length: Number(m[1]), flags: parseInt(m[2]!, 16) }));
}

test('HTTP/2: a response given whole in one end(), a static file (cached, streamed, a range, a 304: static files are served over HTTP/2) or a fetch Response, ends with its last DATA frame, no empty trailing frame; trailers set before end(), or while streaming, are still sent', { skip: noOpenssl || noNghttp }, async () => {
  const pair = makeCert();
  const s = await startServer({ args: [join(FIXTURES, 'tls/trailers-app.mjs'), '--workers', '1', ...tlsArgs(pair)] });
  try {
    // the frames as the client saw them: END_STREAM on the body's frame
    assert.deepEqual(dataFrames(s.address, '/whole'), [{ length: 'whole body\n'.length, flags: 1 }]);
    const whole = await h2get(s.address, '/whole');
    assert.deepEqual([whole.status, whole.body, whole.trailers], [200, 'whole body\n', {}]);
    const before = await h2get(s.address, '/trailers');
    assert.equal(before.body, 'with a trailer\n');
    assert.equal(before.trailers['x-check'], 'before-end');
    const streamed = await h2get(s.address, '/stream');
    assert.equal(streamed.body, 'part 1\npart 2\n');
    assert.equal(streamed.trailers['x-check'], 'streamed');
    const late = await h2get(s.address, '/late');
    assert.equal(late.body, 'late trailer\n');
    assert.equal(late.trailers['x-check'], undefined);
    assert.equal((await stopServer(s)).code, 0);
  } finally {
    await cleanup(s);
  }
  // static files over HTTP/2 (from the cache, streamed from the file, a range, a 304): written
  // with writeHead() first, marked whole, so no trailing frame either
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-h2-static-'));
  writeFileSync(join(dir, 'f.txt'), 'x'.repeat(100_000));
  writeFileSync(join(dir, 'big.txt'), 'y'.repeat(2_000_000));
  const st = await startServer({ args: [dir, '--workers', '1', ...tlsArgs(pair)] });
  try {
    for (const [path, size] of [['/f.txt', 100_000], ['/big.txt', 2_000_000]] as const) {
      const data = dataFrames(st.address, path);
      assert.equal(data.reduce((n, d) => n + d.length, 0), size, path);
      assertEndsOnData(data, path);
      const g = await h2get(st.address, path);
      assert.equal(g.status, 200);
      assert.equal(g.body.length, size, path);
      assert.equal(g.headers['content-length'], String(size));
    }
    const range = await h2get(st.address, '/big.txt', { range: 'bytes=10-19' });
    assert.deepEqual([range.status, range.body, range.headers['content-range']], [206, 'y'.repeat(10), 'bytes 10-19/2000000']);
    const etag = String((await h2get(st.address, '/f.txt')).headers.etag);
    const again = await h2get(st.address, '/f.txt', { 'if-none-match': etag });
    assert.deepEqual([again.status, again.body], [304, '']);
    assert.equal((await stopServer(st)).code, 0);
  } finally {
    await cleanup(st);
    rmSync(dir, { recursive: true, force: true });
  }
  // a fetch handler's Response (Hono), written by the fetch bridge with writeHead() first: marked whole too
  const h = await startServer({ args: [join(FIXTURES, 'apps/hono.mjs'), '--workers', '1', ...tlsArgs(pair)] });
  try {
    assertEndsOnData(dataFrames(h.address, '/'), 'hono');
    assert.match((await h2get(h.address, '/')).body, /^hello from hono/);
    assert.equal((await stopServer(h)).code, 0);
  } finally {
    await cleanup(h);
  }
});
