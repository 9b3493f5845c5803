// The worker's connection tracking (src/worker/connections.ts) on a real http.Server with real
// sockets, wired as the worker wires it, in both of its ways of finding the open connections while
// serving: the http.Server's own list, and its own Set (what it falls back to on a Node without
// that list). Counts, the idle sweep, and retiring.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { Connections } from '../src/worker/connections.js';
import { sleep, waitFor, within } from './helpers/server.js';

type Rig = { conns: Connections; port: number; release: () => void; close: () => Promise<void> };

/** A server wired like the worker's; `/hold` answers only when release() is called. */
async function rig(list: 'node' | 'own'): Promise<Rig> {
  const conns = new Connections();
  const server = http.createServer({ keepAliveTimeout: 0 });
  conns.watch(list === 'node' ? server : {}); // an object without the list: the fallback
  server.on('connection', (s: Socket) => conns.add(s));
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
    port: (server.address() as AddressInfo).port,
    release: () => { for (const res of held.splice(0)) { res.setHeader('content-length', '5'); res.end('held\n'); } },
    close: () => { server.closeAllConnections(); return new Promise((resolve) => server.close(() => resolve())); },
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

for (const list of ['node', 'own'] as const) {
  test(`${list} list: open connections, a request in flight, the state and the exact bytes sent`, { timeout: 15_000 }, async () => {
    const r = await rig(list);
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

  test(`${list} list: the idle sweep closes a connection idle past the limit, never one with a request in flight`, { timeout: 15_000 }, async () => {
    const r = await rig(list);
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

  test(`${list} list: retiring answers what is in flight with Connection: close, closes idle connections after the grace, then reports empty once`, { timeout: 15_000 }, async () => {
    const r = await rig(list);
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
}
