// src/native against real loopback sockets: every check here can fail on a real kernel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import koffi from 'koffi';
import { loadNative, NativeError, procTcpCounts, type Native } from '../src/native/index.js';
import { SELECT_LISTENER, closeGate, closedProgram, makeGateSockets, plugProgram } from '../src/native/gate.js';

const loaded = loadNative();
function native(): Native {
  if (!loaded.ok) assert.fail(`native layer unavailable: ${loaded.reason}`);
  return loaded.native;
}

/** Node's internal TCP handle from lib/net.js createServerHandle (undocumented, Node 20). */
type TcpHandle = { fd: number; getsockname(out: { port?: number }): number; close(cb?: () => void): void };
const createServerHandle = (net as unknown as {
  _createServerHandle(address: string, port: number, addressType: 4 | 6): TcpHandle | number;
})._createServerHandle;

/** Cleanup actions run in reverse order, whatever happened. */
class Scope {
  private readonly closers: (() => void)[] = [];
  defer(fn: () => void): void {
    this.closers.push(fn);
  }
  close(): void {
    for (const fn of this.closers.reverse()) {
      try {
        fn();
      } catch {
        // best effort: the socket may already be gone
      }
    }
  }
}

/**
 * A listening socket libuv never watches, so nobody accepts from it but us: Node binds the
 * handle, `native.listen` makes it listen without uv_listen.
 */
function rawListener(scope: Scope, host: string): { fd: number; port: number; close(): void } {
  const handle = createServerHandle(host, 0, net.isIPv6(host) ? 6 : 4);
  if (typeof handle === 'number') assert.fail(`bind ${host} failed: ${handle}`);
  let open = true;
  const close = (): void => {
    if (open) handle.close();
    open = false;
  };
  scope.defer(close);
  native().listen(handle.fd, 128);
  const out: { port?: number } = {};
  assert.equal(handle.getsockname(out), 0);
  assert.ok(out.port !== undefined && out.port > 0);
  return { fd: handle.fd, port: out.port, close };
}

function client(scope: Scope, port: number, host: string): net.Socket {
  const socket = net.connect({ port, host });
  socket.on('error', () => {}); // each test looks at the outcome it cares about
  scope.defer(() => socket.destroy());
  return socket;
}

async function connected(scope: Scope, port: number, host: string): Promise<net.Socket> {
  const socket = client(scope, port, host);
  await once(socket, 'connect');
  return socket;
}

async function waitFor(pred: () => boolean, ms = 1000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) return false;
    await sleep(5);
  }
  return true;
}

function acceptAll(fd: number): { fds: number[]; last: number } {
  const fds: number[] = [];
  for (;;) {
    const conn = native().accept(fd);
    if (conn === -2) continue;
    if (conn < 0) return { fds, last: conn };
    fds.push(conn);
  }
}

test('loadNative loads once and says ok', () => {
  assert.equal(loaded.ok, true, loaded.ok ? '' : loaded.reason);
  assert.equal(loadNative(), loaded);
});

for (const host of ['127.0.0.1', '::1']) {
  test(`acceptQueue counts what nobody accepted, accept empties it (${host})`, async () => {
    const scope = new Scope();
    try {
      const l = rawListener(scope, host);
      assert.deepEqual(native().acceptQueue(l.fd), { queued: 0, backlog: 128 });
      const n = 5;
      await Promise.all(Array.from({ length: n }, () => connected(scope, l.port, host)));
      assert.ok(await waitFor(() => native().acceptQueue(l.fd).queued === n), 'queue never reached n');
      assert.deepEqual(native().acceptQueue(l.fd), { queued: n, backlog: 128 });
      assert.equal(procTcpCounts(l.port).queued, n, '/proc/net/tcp rx_queue of the LISTEN row');
      assert.equal(procTcpCounts(l.port).halfOpen, 0);

      const { fds, last } = acceptAll(l.fd);
      for (const fd of fds) scope.defer(() => native().close(fd));
      assert.equal(fds.length, n);
      assert.equal(last, -1, 'an empty queue reads as -1 (EAGAIN)');
      assert.equal(native().accept(l.fd), -1);
      assert.equal(native().acceptQueue(l.fd).queued, 0);
      assert.equal(procTcpCounts(l.port).queued, 0);
    } finally {
      scope.close();
    }
  });

  test(`gate drops new SYNs, queued connections are still served, ungate reopens (${host})`, async () => {
    const scope = new Scope();
    try {
      const l = rawListener(scope, host);
      const queued = await Promise.all(Array.from({ length: 3 }, () => connected(scope, l.port, host)));
      assert.ok(await waitFor(() => native().acceptQueue(l.fd).queued === 3));

      native().gate(l.fd);
      const late = client(scope, l.port, host);
      let lateConnected = false;
      late.on('connect', () => (lateConnected = true));
      await sleep(300);
      assert.equal(lateConnected, false, 'a connect after the gate must stay pending');
      assert.equal(native().acceptQueue(l.fd).queued, 3);
      assert.equal(native().halfOpen(l.port), 0, 'the SYN was dropped before any handshake began');
      late.destroy();

      // What was queued before the gate is accepted and served as usual.
      const { fds, last } = acceptAll(l.fd);
      assert.equal(fds.length, 3);
      assert.equal(last, -1);
      for (const fd of fds) {
        const conn = new net.Socket({ fd, readable: true, writable: true });
        scope.defer(() => conn.destroy());
        conn.end('served\n');
      }
      const replies = await Promise.all(queued.map(async (socket) => {
        let data = '';
        socket.setEncoding('utf8').on('data', (chunk: string) => (data += chunk));
        await once(socket, 'end');
        return data;
      }));
      assert.deepEqual(replies, ['served\n', 'served\n', 'served\n']);

      native().ungate(l.fd);
      await connected(scope, l.port, host);
      assert.ok(await waitFor(() => native().acceptQueue(l.fd).queued === 1));
      const again = acceptAll(l.fd);
      for (const fd of again.fds) native().close(fd);
      assert.equal(again.fds.length, 1);
    } finally {
      scope.close();
    }
  });
}

test('passAll lets every connection through, ungate without a filter is no error', async () => {
  const scope = new Scope();
  try {
    const l = rawListener(scope, '127.0.0.1');
    native().ungate(l.fd);
    native().passAll(l.fd);
    await Promise.all([1, 2].map(() => connected(scope, l.port, '127.0.0.1')));
    assert.ok(await waitFor(() => native().acceptQueue(l.fd).queued === 2));
    native().ungate(l.fd);
    native().ungate(l.fd);
  } finally {
    scope.close();
  }
});

test('a client gated out, then the listener closed, is refused on its SYN retransmit', async (t) => {
  const scope = new Scope();
  try {
    const l = rawListener(scope, '127.0.0.1');
    native().gate(l.fd);
    const start = Date.now();
    const late = client(scope, l.port, '127.0.0.1');
    const outcome = new Promise<string>((resolve) => {
      late.once('connect', () => resolve('connected'));
      late.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    await sleep(100);
    l.close();
    const result = await Promise.race([outcome, sleep(4000).then(() => 'timeout')]);
    assert.equal(result, 'ECONNREFUSED');
    t.diagnostic(`refused after ${Date.now() - start} ms (one SYN retransmit)`);
  } finally {
    scope.close();
  }
});

/** A test-only filter keeping handshakes half-open: drop pure ACKs (ACK set, SYN/FIN/RST clear, no payload). */
function dropFinalAcks(fd: number): void {
  const lib = koffi.load('libc.so.6');
  const filter = koffi.struct({ code: 'uint16_t', jt: 'uint8_t', jf: 'uint8_t', k: 'uint32_t' });
  const fprog = koffi.struct({ len: 'uint16_t', filter: koffi.pointer(filter) });
  const setsockopt = lib.func('setsockopt', 'int', ['int', 'int', 'int', koffi.pointer(fprog), 'uint32_t']);
  const program = [
    { code: 0x30, jt: 0, jf: 0, k: 13 }, // ldb [13]       flags
    { code: 0x54, jt: 0, jf: 0, k: 0x17 }, // and #ACK|RST|SYN|FIN
    { code: 0x15, jt: 0, jf: 7, k: 0x10 }, // jeq #ACK, else accept
    { code: 0x30, jt: 0, jf: 0, k: 12 }, // ldb [12]       data offset << 4
    { code: 0x74, jt: 0, jf: 0, k: 2 }, // rsh #2
    { code: 0x54, jt: 0, jf: 0, k: 0x3c }, // and #0x3c      header length in bytes
    { code: 0x07, jt: 0, jf: 0, k: 0 }, // tax
    { code: 0x80, jt: 0, jf: 0, k: 0 }, // ld len         segment length
    { code: 0x1d, jt: 0, jf: 1, k: 0 }, // jeq x          no payload?
    { code: 0x06, jt: 0, jf: 0, k: 0 }, // ret #0         drop
    { code: 0x06, jt: 0, jf: 0, k: 0xffffffff }, // ret #-1  accept
  ];
  const rc = setsockopt(fd, 1, 26, { len: program.length, filter: program }, fprog.size) as number;
  assert.equal(rc, 0, `SO_ATTACH_FILTER errno ${koffi.errno()}`);
}

const halfOpenCases: { bind: string; connect: string; family: 4 | 6 }[] = [
  { bind: '127.0.0.1', connect: '127.0.0.1', family: 4 },
  { bind: '::1', connect: '::1', family: 6 },
  // a handshake takes its listener's family: IPv4 clients of a dual-stack socket count as IPv6
  { bind: '::ffff:127.0.0.1', connect: '127.0.0.1', family: 6 },
];
for (const c of halfOpenCases) {
  test(`halfOpen counts handshakes in SYN_RECV (listen ${c.bind}, connect ${c.connect})`, async (t) => {
    const scope = new Scope();
    try {
      const l = rawListener(scope, c.bind);
      assert.equal(native().halfOpen(l.port), 0);
      assert.equal(procTcpCounts(l.port).halfOpen, 0);

      dropFinalAcks(l.fd);
      const m = 4;
      // The client side completes (it got the SYN-ACK); the server side never sees the ACK.
      await Promise.all(Array.from({ length: m }, () => connected(scope, l.port, c.connect)));
      assert.ok(await waitFor(() => native().halfOpen(l.port) === m), `halfOpen ${native().halfOpen(l.port)}, want ${m}`);
      assert.equal(native().halfOpen(l.port, c.family), m);
      assert.equal(native().halfOpen(l.port, c.family === 4 ? 6 : 4), 0);
      assert.deepEqual(procTcpCounts(l.port), { queued: 0, halfOpen: m });
      assert.equal(native().acceptQueue(l.fd).queued, 0);
      assert.equal(native().halfOpen(l.port + 1 === 65536 ? 1 : l.port + 1), 0, 'another port');

      if (c.family === 4 && c.bind === '127.0.0.1') {
        const timeIt = (n: number, fn: () => void): string => {
          const start = process.hrtime.bigint();
          for (let i = 0; i < n; i++) fn();
          return (Number(process.hrtime.bigint() - start) / n / 1000).toFixed(1);
        };
        t.diagnostic(`halfOpen cost: ${timeIt(200, () => native().halfOpen(l.port))} us (IPv4+IPv6), ` +
          `${timeIt(200, () => native().halfOpen(l.port, 4))} us (IPv4 only), ` +
          `/proc/net/tcp{,6}: ${timeIt(20, () => procTcpCounts(l.port))} us`);
      }
    } finally {
      scope.close();
    }
  });
}

test('dupCloexec: a close-on-exec duplicate keeps the listener alive; close releases it', async () => {
  const scope = new Scope();
  try {
    const l = rawListener(scope, '127.0.0.1');
    const dup = native().dupCloexec(l.fd);
    let dupOpen = true;
    scope.defer(() => dupOpen && native().close(dup));
    assert.notEqual(dup, l.fd);
    const flags = /flags:\s*([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${dup}`, 'utf8'))?.[1];
    assert.ok(flags !== undefined);
    assert.ok((Number.parseInt(flags, 8) & 0o2000000) !== 0, `O_CLOEXEC missing in flags ${flags}`);

    l.close(); // Node's handle is gone; the duplicate still holds the listening socket
    await connected(scope, l.port, '127.0.0.1');
    assert.ok(await waitFor(() => native().acceptQueue(dup).queued === 1));
    const { fds } = acceptAll(dup);
    for (const fd of fds) native().close(fd);
    assert.equal(fds.length, 1);

    native().close(dup);
    dupOpen = false;
    assert.throws(() => native().close(dup), (err: unknown) => err instanceof NativeError && err.code === 'EBADF');
    const refused = client(scope, l.port, '127.0.0.1');
    const [err] = (await once(refused, 'error')) as [NodeJS.ErrnoException];
    assert.equal(err.code, 'ECONNREFUSED');
  } finally {
    scope.close();
  }
});

test('failures throw NativeError with errno, code and syscall', async () => {
  const scope = new Scope();
  try {
    const isCode = (code: string) => (err: unknown): boolean =>
      err instanceof NativeError && err.code === code && err.errno > 0 && err.syscall.length > 0;
    assert.throws(() => native().gate(-1), isCode('EBADF'));
    assert.throws(() => native().ungate(-1), isCode('EBADF'));
    assert.throws(() => native().acceptQueue(-1), isCode('EBADF'));
    assert.throws(() => native().accept(-1), isCode('EBADF'));
    assert.throws(() => native().listen(-1, 1), isCode('EBADF'));
    assert.throws(() => native().dupCloexec(-1), isCode('EBADF'));
    assert.throws(() => native().close(-1), isCode('EBADF'));
    const gate = (() => {
      try {
        native().gate(-1);
      } catch (err) {
        return err;
      }
      return undefined;
    })();
    assert.ok(gate instanceof NativeError);
    assert.equal(gate.errno, 9);
    assert.match(gate.message, /SO_ATTACH_FILTER.*EBADF/);

    const l = rawListener(scope, '127.0.0.1');
    const socket = await connected(scope, l.port, '127.0.0.1');
    const clientFd = (socket as unknown as { _handle: { fd: number } })._handle.fd;
    assert.throws(() => native().acceptQueue(clientFd), isCode('EINVAL'), 'not a listening socket');

    const bound = createServerHandle('127.0.0.1', 0, 4);
    if (typeof bound === 'number') assert.fail('bind failed');
    scope.defer(() => bound.close());
    assert.throws(() => native().accept(bound.fd), isCode('EINVAL'), 'accept on a socket that is not listening');
    assert.throws(() => native().dropPrivileges('no-such-user-quiesce'), isCode('ENOENT'));
  } finally {
    scope.close();
  }
});

test('dropPrivileges switches uid, gid and groups for good (child process, needs root)', async (t) => {
  if (process.getuid?.() !== 0) {
    t.skip('not root');
    return;
  }
  const moduleUrl = new URL('../src/native/index.js', import.meta.url).href;
  const run = (args: string): Promise<{ uid: number; gid: number; groups: number[]; regain: string }> =>
    new Promise((resolve, reject) => {
      const code = `import { loadNative } from ${JSON.stringify(moduleUrl)};
        const r = loadNative(); if (!r.ok) throw new Error(r.reason);
        r.native.dropPrivileges(${args});
        let regain = 'regained';
        try { process.setuid(0); } catch (err) { regain = err.code; }
        console.log(JSON.stringify({ uid: process.getuid(), gid: process.getgid(), groups: process.getgroups(), regain }));`;
      execFile(process.execPath, ['--input-type=module', '-e', code], { timeout: 10_000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${err.message}\n${stderr}`));
        else resolve(JSON.parse(stdout) as { uid: number; gid: number; groups: number[]; regain: string });
      });
    });
  const [byName, byIds] = await Promise.all([run(`'nobody'`), run(`'65534', '65533'`)]);
  assert.deepEqual(byName, { uid: 65534, gid: 65534, groups: [65534], regain: 'EPERM' });
  assert.deepEqual(byIds, { uid: 65534, gid: 65533, groups: [65533], regain: 'EPERM' });
});

// The reuseport gate (src/native/gate.ts), on a listener made as quiesce makes it: the client
// families a listener of each kind serves (a dual-stack `::` one gets IPv4 and IPv6 packets, which
// the group's program reads at different header offsets).
for (const [host, family, clientHost] of [['127.0.0.1', 4, '127.0.0.1'], ['::1', 6, '::1'], ['::', 6, '127.0.0.1'], ['::', 6, '::1']] as const) {
  test(`reuseport gate: a SYN after it stays out, the queue is kept, a same-user co-listener gets nothing, refused once closed (${host}, client ${clientHost})`, async () => {
    const scope = new Scope();
    try {
      const n = native();
      const fd = n.bindTcp(host, 0, family, true);
      const g = makeGateSockets(n, fd, host, n.localPort(fd), family);
      let closed = false;
      scope.defer(() => { if (!closed) n.close(fd); n.close(g.gateFd); n.close(g.plugFd); });
      n.listen(fd, 128);
      n.reuseportProgram(fd, SELECT_LISTENER);
      // serving: another socket of this user joins the group and gets nothing
      const other = n.bindTcp(host, g.port, family, true);
      scope.defer(() => n.close(other));
      n.listen(other, 16);
      await Promise.all(Array.from({ length: 8 }, () => connected(scope, g.port, clientHost)));
      assert.ok(await waitFor(() => n.acceptQueue(fd).queued === 8), `L queue ${n.acceptQueue(fd).queued}`);
      assert.equal(n.acceptQueue(other).queued, 0, 'the co-listener got a connection');

      await closeGate(n, g);
      assert.equal(n.acceptQueue(g.gateFd).queued, 1, 'the plug fills the gate socket');
      const late = client(scope, g.port, clientHost);
      const outcome = new Promise<string>((resolve) => {
        late.once('connect', () => resolve('connected'));
        late.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      });
      await sleep(200);
      assert.equal(n.acceptQueue(fd).queued, 8, 'the queue is kept, nothing new entered it');
      assert.equal(n.acceptQueue(other).queued, 0);
      assert.equal(n.halfOpen(g.port, family), 0, 'the SYN was dropped before any handshake began');
      const { fds } = acceptAll(fd);
      for (const c of fds) n.close(c);
      assert.equal(fds.length, 8);
      n.close(other);
      n.close(fd);
      closed = true;
      n.close(g.gateFd);
      n.close(g.plugFd);
      const result = await Promise.race([outcome, sleep(4000).then(() => 'timeout')]);
      assert.equal(result, 'ECONNREFUSED');
    } finally {
      scope.close();
    }
  });
}

test('closedProgram and plugProgram are the classic BPF the kernel accepts (an unknown opcode is refused)', () => {
  const n = native();
  const fd = n.bindTcp('127.0.0.1', 0, 4, true);
  try {
    n.listen(fd, 1);
    n.reuseportProgram(fd, plugProgram(40000, 1));
    n.reuseportProgram(fd, closedProgram(1));
    assert.throws(() => n.reuseportProgram(fd, [{ code: 0xffff, jt: 0, jf: 0, k: 0 }]), (e: unknown) => e instanceof NativeError && e.code === 'EINVAL');
  } finally {
    n.close(fd);
  }
});

/** TCP_NODELAY of a connected socket, read with getsockopt (test-only). */
function noDelayOf(fd: number): number {
  const lib = koffi.load('libc.so.6');
  const getsockopt = lib.func('getsockopt', 'int', ['int', 'int', 'int', koffi.out(koffi.pointer('int')), koffi.inout(koffi.pointer('uint32_t'))]);
  const value = [0];
  const len = [4];
  assert.equal(getsockopt(fd, 6, 1, value, len), 0, `getsockopt(TCP_NODELAY) errno ${koffi.errno()}`);
  return value[0]!;
}

for (const onListener of [true, false]) {
  test(`noDelay(listening fd): the connections it accepts ${onListener ? 'inherit TCP_NODELAY' : 'do not have it without (control)'}`, async () => {
    // a net.Server that sets nothing per connection (noDelay false, Node's default for net)
    const server = net.createServer({ noDelay: false });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
    if (onListener) assert.equal(native().noDelay(fd), true);
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    try {
      const [socket] = await accepted;
      const sfd = (socket as unknown as { _handle: { fd: number } })._handle.fd;
      assert.equal(noDelayOf(sfd), onListener ? 1 : 0);
      socket.destroy();
    } finally {
      client.destroy();
      server.close();
    }
  });
}
