// A request nobody listened to ends with its response (src/worker/quick-end.ts): on a real
// http.Server with real sockets, a complete request with no body, never read and without a
// listener, is already ended and destroyed when its response finishes (Node's own way gets there
// ticks later), and the keep-alive connection goes on. Every other request keeps Node's way: one
// with a listener gets its 'end' and 'close', one whose body is unread (buffered, or past the
// high-water mark so that Node stopped reading the socket) or not all in yet is dumped as Node
// dumps it, and the next request on the same connection is answered.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { quickEnd } from '../src/worker/quick-end.js';
import { waitFor, within } from './helpers/server.js';

type Seen = { url: string; destroyed: boolean; ended: boolean; events: string[] };

/** A server answering every request at once without reading it; `/listen` listens for its request's 'end' and 'close'. The request's state is taken when its response finishes. */
async function serve(seen: Seen[]): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer({ keepAliveTimeout: 0 }, (req, res) => {
    const s: Seen = { url: req.url ?? '', destroyed: false, ended: false, events: [] };
    seen.push(s);
    if (req.url === '/listen') {
      req.on('end', () => s.events.push('end'));
      req.on('close', () => s.events.push('close'));
    }
    res.on('finish', () => { s.destroyed = req.destroyed; s.ended = req.readableEnded; });
    res.setHeader('content-type', 'text/plain');
    res.end(`${req.method} ${req.url}\n`);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

/** Everything read on `sock` until `n` responses (counted by their status lines) are in; its listeners go with the answer. */
function responses(sock: Socket, n: number): Promise<string> {
  let text = '';
  let settle: ((err?: Error) => void) | undefined;
  const onData = (c: Buffer): void => {
    text += c.toString('latin1');
    if ((text.match(/HTTP\/1\.1 200 /g) ?? []).length >= n && text.endsWith('\n')) settle?.();
  };
  const onError = (err: Error): void => settle?.(err);
  const onClose = (): void => settle?.(new Error(`connection closed after: ${text}`));
  const got = new Promise<string>((resolve, reject) => {
    settle = (err) => {
      sock.off('data', onData).off('error', onError).off('close', onClose);
      if (err) reject(err); else resolve(text);
    };
  });
  sock.on('data', onData).on('error', onError).on('close', onClose);
  return within(got, 5_000, `${n} responses`);
}

/** quickEnd installed, a server (serve) and one connection to it for `body`; the connection and the server are closed after it, failed or not. */
async function withConnection(body: (sock: Socket, seen: Seen[]) => Promise<void>): Promise<void> {
  assert.equal(quickEnd(), true);
  const seen: Seen[] = [];
  const { server, port } = await serve(seen);
  let sock: Socket | undefined;
  try {
    sock = await new Promise<Socket>((resolve, reject) => { const s = connect(port, '127.0.0.1', () => resolve(s)); sock = s; s.on('error', reject); });
    await body(sock, seen);
  } finally {
    sock?.destroy();
    server.close();
  }
}

test('quickEnd: a complete request nobody listens to is ended and destroyed when its response finishes; keep-alive and pipelining go on', async () => {
  await withConnection(async (sock, seen) => {
    // one at a time, then two pipelined in one write
    for (const path of ['/a', '/b']) {
      const got = responses(sock, 1);
      sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
      assert.match(await got, new RegExp(`GET ${path}\\n$`));
    }
    const both = responses(sock, 2);
    sock.write('GET /c HTTP/1.1\r\nHost: x\r\n\r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(await both, /GET \/c\n[\s\S]*GET \/d\n$/);
    sock.destroy();
    await waitFor(() => seen.length === 4 && seen.every((s) => s.url !== ''), 2_000, 'four requests seen');
    for (const s of seen) assert.deepEqual([s.url, s.destroyed, s.ended], [s.url, true, true], `${s.url}: ended and destroyed as its response finished`);
  });
});

test("quickEnd: a request with a listener, an unread body, or a body not all in keeps Node's way, and the connection goes on", async () => {
  await withConnection(async (sock, seen) => {
    const ask = async (raw: string, path: string): Promise<void> => {
      const got = responses(sock, 1);
      sock.write(raw);
      assert.match(await got, new RegExp(`${path}\\n$`), path);
    };
    // a listener: Node's 'end' and 'close' come
    await ask('GET /listen HTTP/1.1\r\nHost: x\r\n\r\n', '/listen');
    // a small body nobody read (buffered in the request), then a large one (past the high-water
    // mark: Node stops reading the socket until the request is dumped), each followed by a GET
    await ask(`POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n${'s'.repeat(100)}`, '/small');
    await ask('GET /after-small HTTP/1.1\r\nHost: x\r\n\r\n', '/after-small');
    const big = 256 * 1024;
    const gotBig = responses(sock, 2);
    sock.write(`POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: ${big}\r\n\r\n`);
    sock.write('b'.repeat(big));
    sock.write('GET /after-big HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(await gotBig, /POST \/big\n[\s\S]*GET \/after-big\n$/);
    // answered before its body is all in: the rest comes after the response
    const gotPartial = responses(sock, 1);
    sock.write(`POST /partial HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345`);
    assert.match(await gotPartial, /POST \/partial\n$/);
    sock.write('67890');
    await ask('GET /after-partial HTTP/1.1\r\nHost: x\r\n\r\n', '/after-partial');
    sock.destroy();
    const by = (url: string): Seen => { const s = seen.find((x) => x.url === url); assert.ok(s, url); return s; };
    await waitFor(() => by('/listen').events.length === 2, 2_000, "the listened request's 'end' and 'close'");
    assert.deepEqual(by('/listen').events, ['end', 'close']);
    for (const url of ['/listen', '/small', '/big', '/partial']) assert.equal(by(url).destroyed, false, `${url}: Node's way (not destroyed as its response finished)`);
    for (const url of ['/after-small', '/after-big', '/after-partial']) assert.equal(by(url).destroyed, true, `${url}: ended at once`);
  });
});
