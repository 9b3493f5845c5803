// A connection that ends with its response is closed at once (src/worker/close-at-once.ts): on a
// real http.Server and https.Server with real clients, a plain socket is destroyed without the
// shutdown round (its 'finish' never comes) and its client still reads every byte and the end;
// a TLS socket sends its close_notify and is destroyed without the TCP shutdown round either.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import { readFileSync, rmSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import tls from 'node:tls';
import { closeAtOnce } from '../src/worker/close-at-once.js';
import { makeCert, noOpenssl } from './helpers/cert.js';

const BODY = Buffer.alloc(1 << 20, 'q');

type Seen = { finish: boolean; closed: Promise<void> };

/** Serve `size` bytes per request on `server`; every server-side socket is watched for 'finish' and 'close'. */
async function serve(server: http.Server, seen: Seen[]): Promise<number> {
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const size = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('size'));
    res.setHeader('content-length', size);
    res.end(BODY.subarray(0, size));
  });
  server.on(server instanceof https.Server ? 'secureConnection' : 'connection', (s: Socket) => {
    const w: Seen = { finish: false, closed: new Promise((resolve) => s.once('close', () => resolve())) };
    s.once('finish', () => { w.finish = true; });
    seen.push(w);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** One request with `Connection: close` on its own connection; every byte until the peer's end. */
function ask(sock: Socket, size: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('error', reject);
    sock.on('end', () => resolve(Buffer.concat(chunks).toString('latin1')));
    sock.write(`GET /?size=${size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  });
}

test('closeAtOnce: a plain connection ending with its response is destroyed without the shutdown round, every byte delivered', { timeout: 30_000 }, async () => {
  assert.equal(closeAtOnce(), true);
  const server = http.createServer({ keepAliveTimeout: 0 });
  const seen: Seen[] = [];
  const port = await serve(server, seen);
  try {
    for (const size of [2048, BODY.length]) {
      const sock = connect(port, '127.0.0.1');
      const text = await ask(sock, size);
      const [head, body] = [text.slice(0, text.indexOf('\r\n\r\n')), text.slice(text.indexOf('\r\n\r\n') + 4)];
      assert.match(head, /^HTTP\/1\.1 200 /);
      assert.match(head, /\r\nconnection: close/i);
      assert.equal(body.length, size, `a ${size}-byte body arrives whole before the end`);
    }
    assert.equal(seen.length, 2);
    await Promise.all(seen.map((w) => w.closed));
    assert.deepEqual(seen.map((w) => w.finish), [false, false], 'closed at once: no end() (shutdown) before the close');
  } finally {
    server.close();
  }
});

/**
 * A TCP relay in front of `port` that keeps what the server sent: the TLS records' content types
 * in order, and whether they ended on a record's boundary when the server's end came.
 */
async function relay(port: number): Promise<{ port: number; seen: Promise<{ types: number[]; whole: boolean }>; close: () => void }> {
  let done!: (r: { types: number[]; whole: boolean }) => void;
  const seen = new Promise<{ types: number[]; whole: boolean }>((resolve) => { done = resolve; });
  const front = createServer((c) => {
    const up = connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    c.pipe(up);
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
    up.on('data', (d: Buffer) => { got.push(d); c.write(d); });
    up.on('end', () => {
      const all = Buffer.concat(got);
      const types: number[] = [];
      let i = 0;
      // bounded: every step moves past a 5-byte header
      while (i + 5 <= all.length) { types.push(all[i]!); i += 5 + all.readUInt16BE(i + 3); }
      done({ types, whole: i === all.length });
      c.end();
    });
  });
  await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
  return { port: (front.address() as AddressInfo).port, seen, close: () => front.close() };
}

test('closeAtOnce: a TLS connection ending with its response sends close_notify and is closed without the TCP shutdown round, every byte delivered', { skip: noOpenssl, timeout: 30_000 }, async () => {
  closeAtOnce();
  const pair = makeCert();
  const server = https.createServer({ key: readFileSync(pair.key), cert: readFileSync(pair.cert) });
  const seen: Seen[] = [];
  try {
    const port = await serve(server, seen);
    for (const [size, maxVersion] of [[2048, 'TLSv1.3'], [BODY.length, 'TLSv1.3'], [2048, 'TLSv1.2'], [BODY.length, 'TLSv1.2']] as const) {
      const r = await relay(port);
      try {
        const sock = tls.connect({ port: r.port, host: '127.0.0.1', rejectUnauthorized: false, maxVersion });
        const text = await ask(sock, size);
        assert.match(text, /^HTTP\/1\.1 200 /);
        assert.equal(text.slice(text.indexOf('\r\n\r\n') + 4).length, size, `a ${size}-byte body arrives whole over ${maxVersion}`);
        const wire = await r.seen;
        assert.equal(wire.whole, true, "the server's bytes end on a whole TLS record");
        // TLS 1.2 shows an alert's record type (21) on the wire; 1.3 hides it inside application data (23)
        if (maxVersion === 'TLSv1.2') assert.equal(wire.types.at(-1), 21, `the last record before the FIN is the close_notify alert (types ${wire.types.slice(-4).join(',')})`);
      } finally {
        r.close();
      }
    }
    assert.equal(seen.length, 4);
    await Promise.all(seen.map((w) => w.closed));
    assert.deepEqual(seen.map((w) => w.finish), [false, false, false, false], 'closed at once: no wait for the TCP shutdown before the close');
  } finally {
    server.close();
    rmSync(pair.dir, { recursive: true, force: true });
  }
});
