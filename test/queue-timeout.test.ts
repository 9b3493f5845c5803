// --queue-timeout: requests that waited past it for a worker are answered 503 at once, not served.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import https from 'node:https';
import http2 from 'node:http2';
import { startServer, cleanup, get, sleep, statusJson, waitFor, FIXTURES } from './helpers/server.js';
import { makeCert, noOpenssl } from './helpers/cert.js';

type Answer = { status: number; headers: Record<string, string | string[] | undefined> };
/** A request on a new connection; `sent` is called once the request is on its way (its handshake done). */
type Client = (address: string, path: string, sent?: () => void) => Promise<Answer>;

const plainGet: Client = (address, path, sent) => {
  const answer = get(address, path);
  sent?.();
  return answer;
};

/** One HTTPS request on a new connection (a full handshake). */
function httpsGet(address: string, path: string, sent?: () => void): Promise<Answer> {
  const m = /^(.*):(\d+)$/.exec(address)!;
  return new Promise((resolve, reject) => {
    const req = https.get({ host: m[1], port: Number(m[2]), path, agent: false, rejectUnauthorized: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('finish', () => sent?.());
    req.on('error', reject);
  });
}

/** One HTTP/2 request on a new session. */
function h2Get(address: string, path: string, sent?: () => void): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://${address}`, { rejectUnauthorized: false });
    session.on('error', reject);
    const req = session.request({ ':path': path });
    req.on('ready', () => sent?.());
    let head: http2.IncomingHttpHeaders = {};
    req.on('response', (h) => { head = h; });
    req.resume();
    req.on('end', () => { session.close(); resolve({ status: Number(head[':status']), headers: head }); });
    req.on('error', reject);
  });
}

const APP = join(FIXTURES, 'core/crashy.mjs');

/**
 * One worker held busy for 1.5 s by a request that burns CPU; meanwhile 12 clients connect and
 * send a request each. They wait ~1.4 s for the worker: with --queue-timeout 500ms every one is
 * answered 503 (marked, with Retry-After) the moment the worker reads it; without it, every one
 * is served after the wait. Either way the burning request itself is served.
 */
async function burst(extra: string[], client: Client = plainGet): Promise<{ statuses: number[]; shed: number; busy: number; log: string; counted: number; metric: string }> {
  const s = await startServer({ args: [APP, '--workers', '1', ...extra] });
  try {
    // the others only once the burning request is on its way (a TLS handshake may take longer than the wait)
    let sent = (): void => {};
    const onItsWay = new Promise<void>((resolve) => { sent = resolve; });
    const busy = client(s.address, '/?burn=1500', sent);
    await onItsWay;
    await sleep(100);
    const answers = await Promise.all(Array.from({ length: 12 }, () => client(s.address, '/')));
    const b = await busy;
    // the worker's count reaches the status and /metrics with its next report (every 500 ms)
    const shedHeaders = answers.filter((a) => a.headers['quiesce-shed'] !== undefined).length;
    const counted = await waitFor(async () => { const n = (await statusJson(s)).totals.shed; return n >= shedHeaders ? n + 1 : 0; }, 5_000, 'the shed count reported') - 1;
    const metric = /^quiesce_shed_total \d+$/m.exec((await get(s.admin, '/metrics')).body)?.[0] ?? '';
    return {
      counted, metric,
      statuses: answers.map((a) => a.status),
      shed: answers.filter((a) => a.headers['quiesce-shed'] === 'queue-timeout' && a.headers['retry-after'] === '1').length,
      busy: b.status,
      log: s.err(),
    };
  } finally {
    await cleanup(s);
  }
}

test('--queue-timeout: requests that waited past it are answered 503 at once; without it they are served late', async () => {
  const on = await burst(['--queue-timeout', '500ms']);
  assert.equal(on.busy, 200);
  assert.deepEqual(on.statuses, Array(12).fill(503), 'every request that waited ~1.4 s is shed');
  assert.equal(on.shed, 12);
  assert.match(on.log, /queue-timeout waited_ms=\d+ limit_ms=500/, 'the shedding is logged (once per interval)');
  assert.equal(on.counted, 12, 'the status counts them (totals.shed)');
  assert.equal(on.metric, 'quiesce_shed_total 12');
  const off = await burst([]);
  assert.equal(off.busy, 200);
  assert.deepEqual(off.statuses, Array(12).fill(200), 'without the option the same requests are served');
  assert.equal(off.shed, 0);
  assert.equal(off.counted, 0);
  assert.equal(off.metric, 'quiesce_shed_total 0');
});

test('--queue-timeout: a server with time to spare sheds nothing', async () => {
  const s = await startServer({ args: [APP, '--workers', '1', '--queue-timeout', '500ms'] });
  try {
    for (let i = 0; i < 40; i++) assert.equal((await get(s.address, '/')).status, 200);
    assert.doesNotMatch(s.err(), /queue-timeout/);
  } finally {
    await cleanup(s);
  }
});

/**
 * Over TLS the request comes after a handshake the busy worker does only once it is free: the
 * wait is the ClientHello's, which the TLS front reads at the accept. HTTPS on new connections,
 * then HTTP/2 sessions of one stream each: every request that waited ~1.4 s is shed, the
 * burning one served; without the option (HTTPS) all are served.
 */
test('--queue-timeout over TLS and HTTP/2: requests whose handshake waited past it are answered 503', { skip: noOpenssl }, async () => {
  const pair = makeCert();
  try {
    const tlsArgs = ['--tls-cert', pair.cert, '--tls-key', pair.key];
    for (const [name, client] of [['https', httpsGet], ['h2', h2Get]] as const) {
      const on = await burst([...tlsArgs, '--queue-timeout', '500ms'], client);
      assert.equal(on.busy, 200, name);
      assert.deepEqual(on.statuses, Array(12).fill(503), `${name}: every request that waited ~1.4 s is shed`);
      assert.equal(on.shed, 12, `${name}: marked, with Retry-After`);
      assert.equal(on.counted, 12, `${name}: counted (totals.shed)`);
      assert.match(on.log, /queue-timeout waited_ms=\d+ limit_ms=500/, name);
    }
    const off = await burst(tlsArgs, httpsGet);
    assert.deepEqual(off.statuses, Array(12).fill(200), 'without the option the same requests are served');
    assert.equal(off.counted, 0);
  } finally {
    rmSync(pair.dir, { recursive: true, force: true });
  }
});
