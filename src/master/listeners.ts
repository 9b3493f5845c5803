/**
 * The master's listening sockets. The master binds each one itself and keeps its handle for its
 * whole life (a reload never closes it); workers inherit the socket at their fork and accept from
 * the same kernel queue. The master never accepts app traffic: its handle is bound and put in LISTEN
 * state with listen(2) directly (native), so libuv never watches it here.
 */
import net from 'node:net';
import { closeSync, existsSync, fstatSync, unlinkSync, statSync, readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { errnoName } from '../native/errors.js';
import { QuiesceError, errorMessage } from '../shared/errors.js';
import type { ListenerInfo } from '../shared/ipc.js';
import { NativeError, type Native } from '../native/index.js';
import { SELECT_LISTENER, makeGateSockets, type GateSockets, type TcpDrainMode } from '../native/gate.js';

/** A bound libuv handle (TCPWrap or PipeWrap). Node keeps these internal; we use fd, close and getsockname. */
export type ServerHandle = { fd: number; close(cb?: () => void): void; getsockname?(out: Record<string, unknown>): number };

type CreateServerHandle = (address: string | null, port: number, addressType: number, fd?: number, flags?: number) => ServerHandle | number;
// net._createServerHandle is what node:cluster's primary uses to bind a handle without listening on it.
const createServerHandle = (net as unknown as { _createServerHandle: CreateServerHandle })._createServerHandle;

export type ListenSpec =
  | { kind: 'tcp'; host: string | null; port: number; family: 4 | 6 | 0; text: string }
  /** `mode`: the socket file's permissions (`unix:/run/app.sock:0660`), else what the umask gives. */
  | { kind: 'unix'; path: string; mode?: number; text: string };

export type ListenerState = 'open' | 'gated' | 'closed';

/**
 * How a listener is gated at a stop: a TCP mechanism (native/gate.ts) or, for a unix socket,
 * unlinking its path; 'inherited': a socket the service manager passed and keeps (systemd socket
 * activation), never gated: closing our copies resets nothing, its queue waits for the next instance.
 */
export type ListenerDrainMode = TcpDrainMode | 'unlink' | 'inherited';

export type Listener = {
  id: number;
  spec: ListenSpec;
  handle: ServerHandle;
  fd: number;
  /** Actual port (for port 0) or 0 for unix sockets. */
  port: number;
  /** "127.0.0.1:8080", "[::]:8080", "/run/app.sock" */
  address: string;
  state: ListenerState;
  /** The address family of the socket (a dual-stack listener is an IPv6 socket); 4 for unix. */
  family: 4 | 6;
  /** The reuseport gate's sockets (TCP listeners made in reuseport drain mode). */
  gate?: GateSockets;
  /** Its gate: set at bind from the master's mode, and to what took effect at a stop. */
  drainMode: ListenerDrainMode;
  /** Passed by the service manager (socket activation): its LISTEN_FDNAMES name. */
  inherited?: string;
  /** Handed over by the previous master at an upgrade: listening already, its queue carried over. */
  handed?: true;
};

/** Parse one --listen value (or the `flag` it came from: --admin); throws QuiesceError('USAGE') naming it. */
export function parseListen(text: string, cwd = process.cwd(), flag = '--listen'): ListenSpec {
  const bad = (why: string) => new QuiesceError('USAGE', `${flag} ${JSON.stringify(text)}: ${why}`);
  if (text.startsWith('unix:') || text.startsWith('/') || text.startsWith('./') || text.startsWith('../')) {
    let p = text.startsWith('unix:') ? text.slice(5) : text;
    // a trailing :MODE (3 or 4 octal digits) sets the socket file's permissions
    const m = /:([0-7]{3,4})$/.exec(p);
    const mode = m ? parseInt(m[1]!, 8) : undefined;
    if (m) p = p.slice(0, m.index);
    if (!p) throw bad('empty unix socket path');
    if (mode !== undefined && mode > 0o777) throw bad(`mode ${m![1]}: only permission bits (at most 0777)`);
    return { kind: 'unix', path: isAbsolute(p) ? p : resolve(cwd, p), mode, text };
  }
  const port = (s: string): number => {
    if (!/^\d+$/.test(s)) throw bad(`not a port: ${JSON.stringify(s)}`);
    const n = Number(s);
    if (n > 65535) throw bad('port out of range (0-65535)');
    return n;
  };
  if (/^\d+$/.test(text)) return { kind: 'tcp', host: null, port: port(text), family: 0, text };
  const v6 = /^\[([^\]]+)\]:(\d*)$/.exec(text);
  if (v6) {
    if (net.isIPv6(v6[1]!) === false) throw bad(`not an IPv6 address: ${v6[1]}`);
    return { kind: 'tcp', host: v6[1]!, port: port(v6[2]!), family: 6, text };
  }
  const i = text.lastIndexOf(':');
  if (i <= 0) throw bad('expected HOST:PORT, [V6]:PORT, PORT or a unix socket path');
  const host = text.slice(0, i);
  if (host.includes(':')) throw bad('an IPv6 address needs brackets: [::1]:8080');
  const family = net.isIPv4(host) ? 4 : 0;
  if (family === 0 && host !== 'localhost') throw bad(`not an IP address: ${host} (names other than localhost are not resolved)`);
  return { kind: 'tcp', host: host === 'localhost' ? '127.0.0.1' : host, port: port(text.slice(i + 1)), family: 4, text };
}

/**
 * Bind one listener; it listens once its workers are forked (startListening). Throws naming it.
 * In reuseport drain mode (with the native module) a TCP listener is made with SO_REUSEPORT,
 * beside its gate sockets (native/gate.ts); otherwise by Node, as node:cluster does.
 */
export function bindListener(id: number, spec: ListenSpec, mode: TcpDrainMode, native?: Native): Listener {
  const reuseport = mode === 'reuseport' ? native : undefined;
  let handle: ServerHandle | number;
  let gate: GateSockets | undefined;
  if (spec.kind === 'unix') {
    if (existsSync(spec.path)) {
      if (!statSync(spec.path).isSocket()) throw new QuiesceError('LISTEN_FAILED', `--listen ${spec.text}: ${spec.path} exists and is not a socket`);
      // A leftover socket file of a process that is gone: connect() would be refused. A live one
      // answers: in use. (Checked synchronously through the kernel's own bookkeeping.)
      if (unixSocketInUse(spec.path)) throw new QuiesceError('LISTEN_FAILED', `--listen ${spec.text}: address in use (another server listens on ${spec.path})`);
      unlinkSync(spec.path);
    }
    handle = bindUnix(spec.path, spec.mode);
  } else if (reuseport) {
    const { fd, host, family } = bindReusePort(reuseport, spec);
    try {
      gate = makeGateSockets(reuseport, fd, host, reuseport.localPort(fd), family);
    } catch (err) {
      closeSync(fd);
      throw new QuiesceError('LISTEN_FAILED', `--listen ${spec.text}: the drain gate's sockets: ${errorMessage(err)}`);
    }
    // Node wraps the bound socket in its own handle (an fd it is given, as for systemd's sockets)
    handle = createServerHandle(null, 0, 0, fd);
    if (typeof handle === 'number') {
      for (const x of [fd, gate.gateFd, gate.plugFd]) closeSync(x);
      throw new QuiesceError('LISTEN_FAILED', `--listen ${spec.text}: ${errnoName(-handle)}`);
    }
  } else {
    handle = createServerHandle(spec.host, spec.port, spec.family === 6 ? 6 : 4);
  }
  if (typeof handle === 'number') throw new QuiesceError('LISTEN_FAILED', `--listen ${spec.text}: ${bindError(errnoName(-handle))}`); // libuv reports -errno
  let port = 0;
  let fam: 4 | 6 = 4;
  let address = spec.kind === 'unix' ? spec.path : spec.text;
  if (spec.kind === 'tcp') {
    // libuv delays EADDRINUSE from bind() to listen(): an unbound socket shows here, and listen()
    // on it would quietly bind a random port.
    const out: Record<string, unknown> = {};
    const err = handle.getsockname?.(out) ?? 0;
    if (err !== 0 || !out.port || (spec.port !== 0 && out.port !== spec.port)) {
      handle.close();
      throw new QuiesceError('LISTEN_FAILED', `--listen ${spec.text}: address in use`);
    }
    port = Number(out.port);
    const host = String(out.address);
    fam = out.family === 'IPv6' || host.includes(':') ? 6 : 4;
    address = fam === 6 ? `[${host}]:${port}` : `${host}:${port}`;
  }
  return { id, spec, handle, fd: handle.fd, port, address, state: 'open', family: fam, gate, drainMode: spec.kind === 'unix' ? 'unlink' : mode };
}

/**
 * Bind a unix socket; with `mode`, the file is created with exactly those permissions: the umask
 * is set to their complement around bind(2) (synchronous, and the master runs no other file
 * creation meanwhile), so the path never exists with other permissions, and no chmod follows.
 */
function bindUnix(path: string, mode: number | undefined): ServerHandle | number {
  if (mode === undefined) return createServerHandle(path, -1, -1);
  const umask = process.umask(0o777 & ~mode);
  try {
    return createServerHandle(path, -1, -1);
  } finally {
    process.umask(umask);
  }
}

function bindError(code: string): string {
  return code === 'EADDRINUSE' ? 'address in use' : code === 'EACCES' ? 'permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)' : code === 'EADDRNOTAVAIL' ? 'address not available on this machine' : code;
}

/** A TCP socket bound with SO_REUSEPORT where Node would bind it: a bare port on `::` (dual-stack), else `0.0.0.0`. */
function bindReusePort(native: Native, spec: Extract<ListenSpec, { kind: 'tcp' }>): { fd: number; host: string; family: 4 | 6 } {
  const attempt = (host: string, family: 4 | 6) => ({ fd: native.bindTcp(host, spec.port, family, true), host, family });
  try {
    if (spec.host !== null) return attempt(spec.host, spec.family === 6 ? 6 : 4);
    try {
      return attempt('::', 6);
    } catch (err) {
      if (!(err instanceof NativeError) || (err.code !== 'EAFNOSUPPORT' && err.code !== 'EADDRNOTAVAIL')) throw err;
      return attempt('0.0.0.0', 4); // no IPv6 on this machine
    }
  } catch (err) {
    throw new QuiesceError('LISTEN_FAILED', `--listen ${spec.text}: ${err instanceof NativeError ? bindError(err.code) : errorMessage(err)}`);
  }
}

/**
 * Put bound listeners in LISTEN state from the master (native `listen(2)` on the fd: libuv never
 * watches it, so the master never accepts), once the workers that will serve them are forked and
 * hold their fds: the kernel queues no connection that only the master holds, so a master killed
 * before its fork leaves nothing to reset (clients are refused until then). Without the native
 * module the workers' own listen() does it when they are ready. Throws naming the listener.
 */
export function startListening(listeners: Listener[], backlog: number, native: Native | undefined): void {
  if (!native) return;
  for (const l of listeners) {
    // systemd listens on it already, with the unit's backlog; a previous master, with its own
    if (l.inherited !== undefined || l.handed) continue;
    try {
      native.listen(l.fd, backlog);
      if (l.gate) native.reuseportProgram(l.fd, SELECT_LISTENER);
    } catch (err) {
      throw new QuiesceError('LISTEN_FAILED', `--listen ${l.spec.text}: ${errorMessage(err)}`);
    }
    // SO_REUSEPORT must not make a second server a silent co-listener: a socket of this user that
    // listened on the address before us put ours in its group. (One that joins later gets nothing.)
    if (l.gate && listenersAt(native, l.gate) > 1) {
      throw new QuiesceError('LISTEN_FAILED', `--listen ${l.spec.text}: address in use (another process of this user listens on it with SO_REUSEPORT)`);
    }
  }
}

function listenersAt(native: Native, g: GateSockets): number {
  try {
    return native.listeners(g.host, g.port, g.family);
  } catch {
    return 1; // sock_diag unavailable: the check is skipped
  }
}

/** Whether a unix socket path has a live listener: read the kernel's table of bound unix sockets. */
function unixSocketInUse(path: string): boolean {
  try {
    const table = readProcNetUnix();
    return table.some((row) => row.path === path && row.listening);
  } catch {
    return false;
  }
}

function readProcNetUnix(): Array<{ path: string; listening: boolean; inode: string }> {
  const rows = readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1);
  const out: Array<{ path: string; listening: boolean; inode: string }> = [];
  for (const row of rows) {
    const f = row.trim().split(/\s+/);
    if (f.length < 8) continue;
    // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = __SO_ACCEPTCON (listening)
    out.push({ path: f[7]!, listening: f[3] === '00010000', inode: f[6]! });
  }
  return out;
}

export function info(l: Listener): ListenerInfo {
  return { id: l.id, kind: l.spec.kind, address: l.address, port: l.port, path: l.spec.kind === 'unix' ? l.spec.path : '', family: l.family, inherited: l.inherited !== undefined };
}

/** The URL-ish form printed at start and in status. */
export function describe(l: Listener, tls = false): string {
  return l.spec.kind === 'unix' ? `unix:${l.address}${tls ? ' (TLS)' : ''}` : `${tls ? 'https' : 'http'}://${l.address}`;
}

/**
 * A listening socket passed by the service manager (`fd`, named `name`): wrapped in a libuv
 * handle as Node does for `listen({ fd })`, its address read back, any socket filter or reuseport
 * program a previous instance left on it detached. Throws naming the fd.
 */
export function adoptListener(id: number, fd: number, name: string, native: Native | undefined): Listener {
  const bad = (why: string) => new QuiesceError('LISTEN_FAILED', `systemd socket fd ${fd}${name ? ` (${name})` : ''}: ${why}`);
  let handle: ServerHandle | number;
  try {
    handle = createServerHandle(null, 0, 0, fd);
  } catch (err) {
    throw bad(`not a stream socket: ${errorMessage(err)}`);
  }
  if (typeof handle === 'number') throw bad(errnoName(-handle));
  const out: Record<string, unknown> = {};
  if (handle.constructor.name === 'Pipe') {
    const path = unixPathOf(fd);
    if (!path) throw bad('not a listening unix socket with a path');
    return { id, spec: { kind: 'unix', path, text: path }, handle, fd, port: 0, address: path, state: 'open', family: 4, drainMode: 'inherited', inherited: name || 'unnamed' };
  }
  if ((handle.getsockname?.(out) ?? -1) !== 0 || !out.port) throw bad('not a bound TCP socket');
  if (native) {
    // a filter or a reuseport program left by an instance killed during its stop would keep SYNs out
    try {
      native.ungate(fd);
      native.detachReuseportProgram(fd);
    } catch (err) {
      throw bad(`cannot detach a filter left on it: ${errorMessage(err)}`);
    }
  }
  const port = Number(out.port);
  const host = String(out.address);
  const family: 4 | 6 = out.family === 'IPv6' || host.includes(':') ? 6 : 4;
  const address = family === 6 ? `[${host}]:${port}` : `${host}:${port}`;
  return { id, spec: { kind: 'tcp', host, port, family, text: address }, handle, fd, port, address, state: 'open', family, drainMode: 'inherited', inherited: name || 'unnamed' };
}

/**
 * A listening socket handed over by the previous master at an upgrade (master/upgrade.ts): its
 * fd (and its gate's) inherited at the exec, wrapped in a libuv handle, its `--listen` entry and
 * drain mode as the previous master had them. Nothing on it changes: the reuseport program or
 * filter stays, the queue is the same. Throws naming the entry.
 */
export function adoptHanded(id: number, h: { text: string; fd: number; drainMode: ListenerDrainMode; inherited?: string; gate?: GateSockets }): Listener {
  const spec = parseListen(h.text);
  const handle = createServerHandle(null, 0, 0, h.fd);
  if (typeof handle === 'number') throw new QuiesceError('LISTEN_FAILED', `--listen ${h.text}: the socket handed over (fd ${h.fd}): ${errnoName(-handle)}`);
  if (spec.kind === 'unix') {
    return { id, spec, handle, fd: h.fd, port: 0, address: spec.path, state: 'open', family: 4, drainMode: h.drainMode, inherited: h.inherited, handed: true };
  }
  const out: Record<string, unknown> = {};
  if ((handle.getsockname?.(out) ?? -1) !== 0 || !out.port) throw new QuiesceError('LISTEN_FAILED', `--listen ${h.text}: the socket handed over (fd ${h.fd}) is not a bound TCP socket`);
  const port = Number(out.port);
  const host = String(out.address);
  const family: 4 | 6 = out.family === 'IPv6' || host.includes(':') ? 6 : 4;
  return { id, spec, handle, fd: h.fd, port, address: family === 6 ? `[${host}]:${port}` : `${host}:${port}`, state: 'open', family, gate: h.gate, drainMode: h.drainMode, inherited: h.inherited, handed: true };
}

/**
 * Let go of our copies of a listener whose socket another master holds (after an upgrade):
 * closing a fd that is not the last one changes nothing in the kernel, and the unix socket's
 * path stays (the new master serves it).
 */
export function releaseHandle(l: Listener): void {
  if (l.state === 'closed') return;
  l.state = 'closed';
  l.handle.close();
  if (l.gate) for (const fd of [l.gate.gateFd, l.gate.plugFd]) closeSync(fd);
}

/** The TCP gate a listener gets: its own mode, or the fallback for one that has none (a unix socket, a socket systemd keeps). */
export function tcpDrainMode(l: Listener): TcpDrainMode {
  return l.drainMode === 'unlink' || l.drainMode === 'inherited' ? 'fallback' : l.drainMode;
}

/** Whether a --listen address names this (inherited) listener: the same unix path, or the same port on the same or any address. */
export function listenMatches(spec: ListenSpec, l: Listener): boolean {
  if (spec.kind === 'unix' || l.spec.kind === 'unix') return spec.kind === 'unix' && l.spec.kind === 'unix' && spec.path === l.spec.path;
  if (spec.port !== l.port) return false;
  const any = (h: string | null) => h === null || h === '::' || h === '0.0.0.0';
  return any(spec.host) ? any(l.spec.host) : spec.host === l.spec.host;
}

/** The path of a listening unix socket fd (its inode looked up in /proc/net/unix). */
function unixPathOf(fd: number): string | undefined {
  try {
    const inode = String(fstatSync(fd).ino);
    return readProcNetUnix().find((row) => row.inode === inode && row.listening)?.path;
  } catch {
    return undefined;
  }
}

/** Close the listener (libuv closes the fd at once), then its gate sockets: G outlives L, or L would get SYNs again. */
export function closeHandle(l: Listener): void {
  if (l.state === 'closed') return;
  l.state = 'closed';
  l.handle.close();
  if (l.gate) for (const fd of [l.gate.gateFd, l.gate.plugFd]) closeSync(fd);
  if (l.spec.kind === 'unix' && !l.inherited) { // the service manager's path stays
    try { unlinkSync(l.spec.path); } catch { /* unlinked at the gate already */ }
  }
}
