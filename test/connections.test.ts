// The worker's connection tracking (src/worker/connections.ts) on a real http.Server with real
// sockets, wired as the worker wires it, both with Node's own list of connections taken off (the
// sweep judges the headers and request timeouts) and with it kept (what a Node whose list the
// worker does not know gets: Node's check judges them). Counts, the idle sweep, the timeouts, and
// retiring.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { Connections } from '../src/worker/connections.js';
import { rawAnswer } from '../src/worker/client-errors.js';
import { sleep, waitFor, within } from './helpers/server.js';

type Rig = { conns: Connections; server: http.Server; port: number; release: () => void; close: () => Promise<void> };
type Timeouts = 'ours' | 'node';

/**
 * A server wired like the worker's; `/hold` answers only when release() is called. 'node': Node's
 * own connection tracking is kept on it under another name, so Connections does not find it (as
 * on a Node it does not know). Headers timeout 500 ms, request timeout 1 s; Node checks every 100 ms.
 */
async function rig(timeouts: Timeouts, unknownParser = false): Promise<Rig> {
  const conns = new Connections();
  const server = http.createServer({ keepAliveTimeout: 0, headersTimeout: 500, requestTimeout: 1_000, connectionsCheckingInterval: 100 });
  if (timeouts === 'node') {
    const tracking = server.listeners('listening').find((f) => f.name === 'setupConnectionsTracking');
    assert.ok(tracking, "this Node's http.Server tracks its connections at 'listening'");
    server.removeListener('listening', tracking as () => void);
    server.on('listening', function kept(this: http.Server) { (tracking as (this: http.Server) => void).call(this); });
  }
  conns.watch(server);
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => { sockets.add(s); s.once('close', () => sockets.delete(s)); });
  // a parser as a Node the worker does not know would have, while Connections.add looks at it:
  // no duration() (Node 20), callbacks it does not know (Node 24: watchHead leaves them alone);
  // put back after (parsers are pooled)
  type Slots = Record<string | number, unknown>;
  let known: (() => void) | undefined;
  if (unknownParser) server.on('connection', (s: Socket) => {
    const p = (s as Socket & { parser?: Slots }).parser!;
    if (typeof p.headersCompleted === 'function') {
      p.duration = undefined;
      known = () => { delete p.duration; };
    } else {
      const complete = p[2] as (...args: unknown[]) => unknown;
      p[2] = function unknown(this: unknown, ...args: unknown[]) { return complete.apply(this, args); };
      p[0] = () => undefined;
      known = () => { p[2] = complete; };
    }
  });
  server.on('connection', (s: Socket) => conns.add(s));
  if (unknownParser) server.on('connection', () => { known?.(); known = undefined; });
  // as the worker's (client-errors.ts answerClientError, without its log)
  server.on('clientError', (err: Error & { code?: string }, socket: Socket) => {
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' && socket.writable) rawAnswer(socket, 408);
    else socket.destroy();
  });
  const held: http.ServerResponse[] = [];
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (conns.tracking) conns.request(req, res);
    else conns.requests++;
    if (req.url === '/hold') { held.push(res); return; }
    res.setHeader('content-length', '3');
    res.end('ok\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    conns,
    server,
    port: (server.address() as AddressInfo).port,
    release: () => { for (const res of held.splice(0)) { res.setHeader('content-length', '5'); res.end('held\n'); } },
    close: () => { for (const s of sockets) s.destroy(); return new Promise((resolve) => server.close(() => resolve())); },
  };
}

/** A keep-alive client on one connection: `ask(path)` resolves the response head; `received` counts every byte. */
type Client = { ask: (path: string) => Promise<string>; received: () => number; closed: Promise<void>; socket: Socket };
async function client(port: number): Promise<Client> {
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
  let buf = '';
  let bytes = 0;
  let waiting: ((head: string) => void) | undefined;
  socket.on('data', (d: Buffer) => {
    bytes += d.length;
    buf += d.toString('latin1');
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0 || !waiting) return;
    const head = buf.slice(0, end);
    const len = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
    if (buf.length < end + 4 + len) return;
    buf = buf.slice(end + 4 + len);
    const w = waiting;
    waiting = undefined;
    w(head);
  });
  socket.on('error', () => { /* judged by the test */ });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return {
    ask: (path) => new Promise((resolve) => { waiting = resolve; socket.write(`GET ${path} HTTP/1.1\r\nhost: x\r\n\r\n`); }),
    received: () => bytes,
    closed,
    socket,
  };
}

/** Two connections: one idle after a request, one waiting on /hold (`held`: its answer's head). */
async function idleAndBusy(r: Rig): Promise<{ idle: Client; busy: Client; held: Promise<string> }> {
  const idle = await client(r.port);
  await idle.ask('/');
  const busy = await client(r.port);
  const held = busy.ask('/hold');
  await waitFor(() => r.conns.requests === 2, 2_000, 'two requests');
  return { idle, busy, held };
}

/** A connection that writes what it is given and records when its first answer byte came, and all it read until its close. */
type Raw = { socket: Socket; answeredAt: () => number; text: () => string; closed: Promise<void> };
async function raw(port: number): Promise<Raw> {
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
  let at = 0;
  let text = '';
  socket.on('data', (d: Buffer) => { if (at === 0) at = Date.now(); text += d.toString('latin1'); });
  socket.on('error', () => { /* judged by the test */ });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { socket, answeredAt: () => at, text: () => text, closed };
}

for (const timeouts of ['node', 'ours'] as const) {
  test(`${timeouts} timeouts: open connections, a request in flight, the state and the exact bytes sent`, { timeout: 15_000 }, async () => {
    const r = await rig(timeouts);
    try {
      const cs = await Promise.all([client(r.port), client(r.port), client(r.port)]);
      await cs[0]!.ask('/');
      await cs[1]!.ask('/');
      const held = cs[2]!.ask('/hold');
      await waitFor(() => r.conns.requests === 3, 2_000, 'three requests');
      let rep = r.conns.report(true);
      assert.equal(r.conns.size, 3);
      assert.equal(rep.inflight, 1);
      assert.equal(rep.state, 'W');
      assert.equal(rep.current?.path, '/hold');
      r.release();
      await within(held, 2_000, 'answer to /hold');
      rep = r.conns.report(true);
      assert.equal(rep.inflight, 0);
      assert.equal(rep.completed, 3);
      assert.equal(rep.state, 'K');
      // bytes: what the clients received, counted at the report for open connections and at the
      // close for closed ones (one closes before the next report, one after)
      cs[0]!.socket.end();
      await within(cs[0]!.closed, 2_000, 'close');
      await waitFor(() => r.conns.size === 2, 2_000, 'the close counted');
      const sent = cs.reduce((a, c) => a + c.received(), 0);
      assert.equal(r.conns.report(true).bytesSent, sent);
      for (const c of cs.slice(1)) c.socket.end();
      await within(Promise.all(cs.map((c) => c.closed)), 2_000, 'close of all');
      await waitFor(() => r.conns.size === 0, 2_000, 'every close counted');
      rep = r.conns.report(true);
      assert.equal(rep.bytesSent, sent);
      assert.equal(rep.state, '_');
    } finally {
      await r.close();
    }
  });

  test(`${timeouts} timeouts: the idle sweep closes a connection idle past the limit, never one with a request in flight`, { timeout: 15_000 }, async () => {
    const r = await rig(timeouts);
    try {
      const { idle, busy, held } = await idleAndBusy(r);
      const started = Date.now();
      let closedAt = 0;
      void idle.closed.then(() => { closedAt = Date.now(); });
      for (let i = 0; i < 40 && closedAt === 0; i++) {
        r.conns.sweepIdle(300, 300);
        await sleep(50);
      }
      assert.ok(closedAt > 0, 'the idle connection was closed');
      assert.ok(closedAt - started >= 300, `closed after ${closedAt - started} ms, before its limit`);
      assert.ok(!busy.socket.destroyed, 'the connection with a request in flight stays');
      r.release();
      assert.match(await within(held, 2_000, 'answer to /hold'), /^HTTP\/1\.1 200/);
    } finally {
      await r.close();
    }
  });

  test(`${timeouts} timeouts: retiring answers what is in flight with Connection: close, closes idle connections after the grace, then reports empty once`, { timeout: 15_000 }, async () => {
    const r = await rig(timeouts);
    try {
      const { idle, busy, held } = await idleAndBusy(r);
      let empty = 0;
      const t0 = Date.now();
      r.conns.retire(200, () => { empty++; });
      assert.equal(r.conns.tracking, true);
      await within(idle.closed, 2_000, 'close of the idle connection');
      assert.ok(Date.now() - t0 >= 150, 'the idle connection had its grace');
      assert.equal(empty, 0, 'not empty while a request runs');
      r.release();
      assert.match(await within(held, 2_000, 'answer to /hold'), /\r\nConnection: close/i);
      await within(busy.closed, 2_000, 'close of the busy connection');
      await waitFor(() => empty > 0, 2_000, 'the empty report');
      await sleep(50);
      assert.equal(empty, 1);
      assert.equal(r.conns.size, 0);
    } finally {
      await r.close();
    }
  });

  test(`${timeouts} timeouts: a head or a body that stops coming gets 408 past its timeout; a slow answer and an idle connection do not`, { timeout: 15_000 }, async () => {
    const r = await rig(timeouts);
    const sweep = setInterval(() => r.conns.sweepIdle(10_000, 10_000), 100);
    try {
      const listed = Object.getOwnPropertySymbols(r.server).some((x) => x.description === 'http.server.connections' && (r.server as unknown as Record<symbol, unknown>)[x] != null);
      assert.equal(listed, timeouts === 'node', "Node's own list of connections is there only when kept");
      const idle = await client(r.port);
      await idle.ask('/');
      const slow = await client(r.port);
      const held = slow.ask('/hold');
      const head = await raw(r.port);
      const body = await raw(r.port);
      const t0 = Date.now();
      head.socket.write('GET / HTTP/1.1\r\nhost: x\r\n');
      body.socket.write('POST /hold HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc');
      await within(Promise.all([head.closed, body.closed]), 5_000, 'the two stalled requests answered and closed');
      assert.match(head.text(), /^HTTP\/1\.1 408 /, 'the stalled head');
      assert.match(body.text(), /^HTTP\/1\.1 408 /, 'the stalled body');
      const headMs = head.answeredAt() - t0;
      const bodyMs = body.answeredAt() - t0;
      assert.ok(headMs >= 500 && headMs < 2_500, `head answered after ${headMs} ms (headers timeout 500 ms)`);
      assert.ok(bodyMs >= 1_000 && bodyMs < 3_000, `body answered after ${bodyMs} ms (request timeout 1 s; its head was in)`);
      assert.ok(!idle.socket.destroyed, 'the idle keep-alive connection stays (the sweep\'s keep-alive limit judges it)');
      assert.ok(!slow.socket.destroyed, 'the connection waiting for its answer stays');
      r.release();
      assert.match(await within(held, 2_000, 'answer to /hold'), /^HTTP\/1\.1 200/);
    } finally {
      clearInterval(sweep);
      await r.close();
    }
  });
}

test("a connection whose parser it cannot follow (a Node it does not know) gives Node its list of connections back: Node's check judges the timeouts", { timeout: 15_000 }, async () => {
  const r = await rig('ours', true);
  const listed = () => Object.getOwnPropertySymbols(r.server).some((x) => x.description === 'http.server.connections' && (r.server as unknown as Record<symbol, unknown>)[x] != null);
  try {
    assert.equal(listed(), false, 'taken off at first');
    const first = await client(r.port);
    await first.ask('/');
    assert.equal(listed(), true, 'back at the first connection it cannot follow');
    const head = await raw(r.port);
    const t0 = Date.now();
    head.socket.write('GET / HTTP/1.1\r\nhost: x\r\n');
    await within(head.closed, 5_000, 'the stalled head answered and closed');
    assert.match(head.text(), /^HTTP\/1\.1 408 /);
    const ms = head.answeredAt() - t0;
    assert.ok(ms >= 500 && ms < 2_500, `answered after ${ms} ms (headers timeout 500 ms)`);
  } finally {
    await r.close();
  }
});
