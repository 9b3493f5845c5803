/**
 * HTTP/2 in the clear (--h2c on): prior-knowledge clients (a balancer speaking h2c to its backends)
 * get HTTP/2 on a plain listener, told from HTTP/1.1 by the connection preface, while HTTP/1.1 on
 * the same port is unchanged; off by default. Its sessions keep the promise as HTTP/2 over TLS
 * does: through a stop and a reload every stream ends ok or refused (GOAWAY / REFUSED_STREAM),
 * none cut. Clients are Node's own http2 and http, and the probe.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import http2 from 'node:http2';
import net from 'node:net';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { runProbe } from '../src/probe/index.js';
import { startServer, cleanup, waitExit, waitFor, get, statusJson, runCli, freePort, connects, FIXTURES } from './helpers/server.js';
import { assertNothingCut, summary } from './helpers/outcomes.js';
import { assertH2ThroughReload, assertH2ThroughStop } from './helpers/h2-load.js';
import { skipFor, testDir, WHO } from './helpers/unprivileged.js';

const PID_APP = join(FIXTURES, 'core/pid-app.mjs');
/** HTTP/2's connection preface, as a client with prior knowledge opens with it. */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const noHaproxy = spawnSync('haproxy', ['-v']).status === 0 ? false : 'haproxy is not installed';

/** HOST and PORT of a HOST:PORT address. */
function hostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  return { host: address.slice(0, i), port: Number(address.slice(i + 1)) };
}

/** One HTTP/2 request in the clear with prior knowledge: its status, body and the session's protocol. */
function h2cGet(address: string, path = '/'): Promise<{ status: number; body: string; alpn: string | undefined }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${address}`);
    session.once('error', reject);
    const req = session.request({ ':path': path });
    let status = 0;
    let body = '';
    req.once('response', (h) => { status = Number(h[':status']); });
    req.setEncoding('utf8');
    req.on('data', (d: string) => { body += d; });
    req.once('error', reject);
    req.once('end', () => { const alpn = session.alpnProtocol; session.close(); resolve({ status, body, alpn }); });
    req.end();
  });
}

/**
 * A proxy to `address` that passes the client's first 16 bytes, then the rest 50 ms later: the
 * preface reaches the server in two reads. Resolves its own address and a closer.
 */
function splittingProxy(address: string): Promise<{ address: string; close: () => void }> {
  const { host, port } = hostPort(address);
  const socks = new Set<net.Socket>();
  const proxy = net.createServer((c) => {
    const up = net.connect({ host, port });
    socks.add(c).add(up);
    let first = true;
    c.on('data', (d: Buffer) => {
      if (!first) { up.write(d); return; }
      first = false;
      up.write(d.subarray(0, 16));
      c.pause();
      setTimeout(() => { up.write(d.subarray(16)); c.resume(); }, 50);
    });
    up.pipe(c);
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
  });
  return new Promise((resolve) => proxy.listen(0, '127.0.0.1', () => resolve({
    address: `127.0.0.1:${(proxy.address() as net.AddressInfo).port}`,
    close: () => { for (const x of socks) x.destroy(); proxy.close(); },
  })));
}

/** The first bytes the server answers to HTTP/2's preface (and an empty SETTINGS frame). */
function prefaceAnswer(address: string): Promise<string> {
  const { host, port } = hostPort(address);
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port }, () => s.write(Buffer.concat([PREFACE, h2Frame(4, 0, 0)])));
    let got = '';
    s.setTimeout(5_000, () => s.destroy(new Error('no answer to the preface within 5 s')));
    s.on('data', (d: Buffer) => { got += d.toString('latin1'); });
    s.once('close', () => resolve(got));
    s.once('error', reject);
  });
}


/** An HTTP/2 frame: type, flags, stream id and payload. */
function h2Frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}

/** A GET request's header block (HPACK: :method GET, :scheme http, :path and :authority as literals). */
function getBlock(path: string): Buffer {
  return Buffer.concat([Buffer.from([0x82, 0x86, 0x44, path.length]), Buffer.from(path), Buffer.from([0x41, 9]), Buffer.from('localhost')]);
}

/**
 * A client written frame by frame, that does not answer PINGs: it opens stream 1 (a response
 * streaming for 600 ms), runs `wind` once the response has begun, and on the session's first
 * GOAWAY opens stream 3, as a client does that sent it before it read the GOAWAY. What it saw:
 * whether stream 1 ended in full, the first GOAWAY's last stream id, and how long after sending
 * stream 3 it knew 3 was not processed (a GOAWAY naming a lower last stream, or REFUSED_STREAM).
 */
function openStreamAtGoaway(address: string, wind: () => void): Promise<{ firstEnded: boolean; firstLastId: number; refusedAfterMs: number | undefined; answered3: boolean }> {
  const { host, port } = hostPort(address);
  return new Promise((resolve, reject) => {
    const c = net.connect({ host, port });
    let buf = Buffer.alloc(0);
    let firstEnded = false;
    let firstLastId = -1;
    let sent3At = 0;
    let refusedAfterMs: number | undefined;
    let answered3 = false;
    let winding = false;
    const done = (): void => { clearTimeout(timer); c.destroy(); resolve({ firstEnded, firstLastId, refusedAfterMs, answered3 }); };
    const timer = setTimeout(done, 5_000);
    c.once('error', reject);
    c.once('close', done);
    c.write(Buffer.concat([PREFACE, h2Frame(4, 0, 0), h2Frame(1, 5, 1, getBlock('/?stream=600'))]));
    const refused = (): void => { if (sent3At > 0 && refusedAfterMs === undefined) refusedAfterMs = Date.now() - sent3At; };
    c.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const [type, flags] = [buf[3]!, buf[4]!];
        const id = buf.readUInt32BE(5) & 0x7fffffff;
        const payload = buf.subarray(9, 9 + len);
        buf = buf.subarray(9 + len);
        if (type === 4 && !(flags & 1)) c.write(h2Frame(4, 1, 0)); // SETTINGS: ack (PINGs go unanswered)
        if (type === 1 && id === 1 && !winding) { winding = true; wind(); }
        if (type === 1 && id === 3) answered3 = true;
        if (type === 0 && id === 1 && (flags & 1)) firstEnded = true;
        if (type === 3 && id === 3 && payload.readUInt32BE(0) === 7) refused();
        if (type === 7) {
          const last = payload.readUInt32BE(0) & 0x7fffffff;
          if (firstLastId < 0) {
            firstLastId = last;
            sent3At = Date.now();
            c.write(h2Frame(1, 5, 3, getBlock('/')));
          }
          if (last < 3) refused();
        }
      }
    });
  });
}

test('--h2c on: HTTP/2 with prior knowledge and HTTP/1.1 on the same plain port, counted apart by protocol; off by default the preface is answered 400', async () => {
  const s = await startServer({ args: [PID_APP, '--h2c', 'on'] });
  try {
    const h2 = await h2cGet(s.address, '/a');
    assert.equal(h2.status, 200);
    assert.match(h2.body, /^\d+\n$/);
    assert.equal(h2.alpn, 'h2c', 'Node\'s client names a session in the clear h2c');
    // a preface that reaches the server in two reads
    const proxy = await splittingProxy(s.address);
    try {
      assert.equal((await h2cGet(proxy.address, '/b')).status, 200);
    } finally {
      proxy.close();
    }
    const h1 = await get(s.address, '/c');
    assert.equal(h1.status, 200);
    assert.equal(h1.version, '1.1');
    // the probe's h2c sessions: many streams each
    const probe = await runProbe({ target: s.address, http2: true, keepalive: 2, streams: 8, path: '/', durationS: 0.6, timeoutS: 10 });
    assert.equal(probe.ok, probe.sent, summary(probe));
    assert.ok(probe.ok > 20, summary(probe));
    // and `quiesce probe --http2` with a HOST:PORT target (no https://) speaks h2c
    const cli = await runCli(['probe', '--target', s.address, '--http2', '--keepalive', '1', '--duration', '0.3', '--json']);
    assert.equal(cli.code, 0, cli.stderr);
    const viaCli = JSON.parse(cli.stdout) as { ok: number; sent: number };
    assert.ok(viaCli.ok > 0 && viaCli.ok === viaCli.sent, cli.stdout);
    const h2cRequests = probe.ok + viaCli.ok + 2;
    // (the workers report every 500 ms)
    await waitFor(async () => ((await statusJson(s)).protocols?.h2c.requests ?? 0) >= h2cRequests, 3_000, 'the h2c requests in the status', 150).catch(() => undefined);
    const st = await statusJson(s);
    assert.equal(st.protocols?.h2c.requests, h2cRequests, JSON.stringify(st.protocols));
    assert.equal(st.protocols?.['http/1.1'].requests, 1, JSON.stringify(st.protocols));
    // the bytes the h2c sessions sent are counted (each response at least a HEADERS and a DATA frame, 9 bytes of frame header each, and the body; the one HTTP/1.1 response is ~150 bytes)
    assert.ok(st.totals.bytesSent >= h2cRequests * 25, `bytes sent ${st.totals.bytesSent} for ${h2cRequests} h2c responses`);
    assert.match(s.err(), /tls listeners=.* h2c=true/);
  } finally {
    await cleanup(s);
  }
  const off = await startServer({ args: [PID_APP, '--workers', '1'] });
  try {
    assert.match(await prefaceAnswer(off.address), /^HTTP\/1\.1 400 /);
    assert.equal((await get(off.address)).status, 200);
  } finally {
    await cleanup(off);
  }
});

test('--h2c on with an app that does not speak HTTP/2 (Express) says so and serves HTTP/1.1; --h2c on with --http2 off, or a bad value, is refused naming the flags', async () => {
  const s = await startServer({ args: [join(FIXTURES, 'apps/express-export.mjs'), '--h2c', 'on', '--workers', '1'] });
  try {
    assert.match(s.err(), /h2c-off .*does not speak HTTP\/2/);
    const h1 = await get(s.address);
    assert.equal(h1.status, 200);
    assert.match(h1.body, /hello from express/);
    assert.match(await prefaceAnswer(s.address), /^HTTP\/1\.1 400 /);
  } finally {
    await cleanup(s);
  }
  const both = await runCli([PID_APP, '--h2c', 'on', '--http2', 'off', '--listen', '127.0.0.1:0']);
  assert.equal(both.code, 2, both.stderr);
  assert.match(both.stderr, /--h2c on is HTTP\/2, which --http2 off turns off/);
  const bad = await runCli([PID_APP, '--h2c', 'maybe', '--listen', '127.0.0.1:0']);
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /--h2c/);
});

for (const who of WHO) {
  test(`h2c as ${who}: 6 sessions x 16 concurrent streams through a stop: every stream ok or refused (GOAWAY / REFUSED_STREAM), none cut`, { skip: skipFor(who) }, async () => {
    const s = await startServer({ args: [PID_APP, '--h2c', 'on'], user: who === 'nobody' ? 'nobody' : undefined });
    try {
      await assertH2ThroughStop(s, s.address, `h2c (${who})`);
    } finally {
      await cleanup(s);
    }
  });
}

test('a stream a client sent before it read the GOAWAY of a stop is known refused at once (a client that does not answer PINGs too), and the stream in flight ends in full', async () => {
  const s = await startServer({ args: [PID_APP, '--h2c', 'on', '--workers', '1'] });
  let stopping: Promise<unknown> | undefined;
  try {
    const r = await openStreamAtGoaway(s.address, () => { stopping = s.cli('stop'); });
    assert.ok(r.firstEnded, `stream 1 (in flight at the stop) ended in full: ${JSON.stringify(r)}`);
    assert.ok(!r.answered3, `stream 3 (after the GOAWAY) was not served: ${JSON.stringify(r)}`);
    // (two GOAWAYs, the highest stream id first, then the real one after a PING round trip,
    // kept stream 3 waiting for the PING's answer, here 1 s: nghttp2 ignores new streams once
    // any GOAWAY is sent)
    assert.ok(r.refusedAfterMs !== undefined && r.refusedAfterMs < 300, `stream 3 known refused within 300 ms: ${JSON.stringify(r)}`);
    await stopping;
    await waitExit(s, 10_000);
  } finally {
    await cleanup(s);
  }
});

test('h2c: 6 sessions x 16 concurrent streams through a reload: every stream ok or refused, none cut; the new generation serves after it', async () => {
  const s = await startServer({ args: [PID_APP, '--h2c', 'on', '--reload-soak', '300ms', '--expose-generation'] });
  try {
    await assertH2ThroughReload(s, s.address, 'h2c');
  } finally {
    await cleanup(s);
  }
});

test('behind HAProxy speaking h2c to it (server ... proto h2, retry-on conn-failure empty-response): reloads under load answer every client request in full, responses streaming through the reload too; none refused or failed (sessions ended at once instead: cut)', { skip: noHaproxy }, async () => {
  const s = await startServer({ args: [PID_APP, '--h2c', 'on', '--reload-soak', '300ms', '--expose-generation'] });
  const port = await freePort();
  const cfg = join(testDir('quiesce-haproxy-', 'root'), 'haproxy.cfg');
  writeFileSync(cfg, [
    'defaults', '  mode http', '  timeout connect 2s', '  timeout client 30s', '  timeout server 30s',
    '  retries 3', '  retry-on conn-failure empty-response',
    'frontend f', `  bind 127.0.0.1:${port}`, '  default_backend b',
    'backend b', `  server q ${s.address} proto h2`, '',
  ].join('\n'));
  const haproxy = spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  let errors = '';
  haproxy.stderr!.on('data', (d: Buffer) => { errors += d.toString(); });
  try {
    await waitFor(() => connects(port), 10_000, `haproxy to accept on 127.0.0.1:${port}`, 100);
    for (let i = 0; i < 2; i++) {
      let reload = '';
      const probe = await runProbe({
        target: `127.0.0.1:${port}`, path: '/?stream=40', rate: 150, keepalive: 12, durationS: 2.5, timeoutS: 15,
        commands: [{ atS: 0.7, run: async () => { const r = await s.cli('reload'); reload = `${r.code} ${r.stdout}${r.stderr}`; } }],
      });
      console.log(`# behind HAProxy (h2c), reload ${i + 1}: ${summary(probe)}; generations ${JSON.stringify(probe.generations)}`);
      assert.match(reload, /^0 quiesce: reloaded/);
      assert.equal(probe.ok, probe.sent, `every client request answered 200 through the reload: ${summary(probe)}\n${errors}`);
      // HAProxy moved to the new generation: in the probe, or (its workers still loading on a busy
      // machine when the probe ended) a request through it soon after
      if ((probe.generations[String(i + 2)] ?? 0) === 0) {
        await waitFor(async () => (await get(`127.0.0.1:${port}`)).headers['x-quiesce-generation'] === String(i + 2) || undefined,
          10_000, `generation ${i + 2} serving through HAProxy (the probe saw ${JSON.stringify(probe.generations)})`, 100);
      }
    }
    const st = await statusJson(s);
    assert.ok((st.protocols?.h2c.requests ?? 0) > 0, `HAProxy spoke h2c: ${JSON.stringify(st.protocols)}`);
    assert.equal(st.protocols?.['http/1.1'].requests, 0, `and no HTTP/1.1: ${JSON.stringify(st.protocols)}`);
  } finally {
    haproxy.kill('SIGKILL');
    await new Promise((r) => (haproxy.exitCode !== null || haproxy.signalCode !== null ? r(undefined) : haproxy.once('exit', r)));
    await cleanup(s);
  }
});
