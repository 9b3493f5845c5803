/**
 * The few Linux syscalls Node lacks for a drain that cuts no connection (see DRAIN.md), through
 * koffi and libc. Loaded on demand: `loadNative()` never throws, it says why when unavailable.
 */
import { createRequire } from 'node:module';
import { endianness } from 'node:os';
import { NativeError } from './errors.js';
import { procTcpCounts } from './proc-tcp.js';
import { AF_NETLINK, NETLINK_SOCK_DIAG, TCP_LISTEN as TCP_STATE_LISTEN, TCP_SYN_RECV, diagRequest, scanDiagChunk } from './sock-diag.js';

export { NativeError, errnoName } from './errors.js';
export { procTcpCounts } from './proc-tcp.js';

export type Native = {
  /** Attach the SYN-drop gate to a listening TCP socket. Throws NativeError (with errno) on failure. */
  gate(fd: number): void;
  /** Attach a pass-all filter (used at start to test that filters work). */
  passAll(fd: number): void;
  /** Detach any socket filter (SO_DETACH_FILTER); ENOENT (no filter) is not an error. */
  ungate(fd: number): void;
  /** Current accept-queue length and backlog of a LISTEN TCP socket (TCP_INFO). */
  acceptQueue(fd: number): { queued: number; backlog: number };
  /**
   * accept4 non-blocking + cloexec: the new fd, -1 when the queue is empty (EAGAIN), -2 for
   * "try again" (ECONNABORTED, EINTR, network errors accept(2) says to treat like EAGAIN).
   * Throws NativeError on anything else (EMFILE, EBADF, EINVAL…).
   */
  accept(fd: number): number;
  /** listen(fd, backlog) */
  listen(fd: number, backlog: number): void;
  /** fcntl(fd, F_DUPFD_CLOEXEC, 0): a duplicate that exec'd children do not inherit. */
  dupCloexec(fd: number): number;
  close(fd: number): void;
  /** socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC): two connected stream sockets. */
  socketpair(): [number, number];
  /**
   * Number of TCP handshakes in progress (SYN_RECV) whose local port is `port`, IPv4 and IPv6,
   * from sock_diag netlink; from /proc/net/tcp{,6} if netlink fails. Each family costs one walk
   * of the kernel's whole established hash (~0.15-0.3 ms at 262144 buckets), so pass the
   * listener's own family when known: a handshake carries the family of its listening socket,
   * so 4 for an AF_INET listener, 6 for any AF_INET6 one, dual-stack `::` included (its IPv4
   * handshakes are listed as AF_INET6). Without `family` both are asked.
   */
  halfOpen(port: number, family?: 4 | 6): number;
  /** initgroups + setgid + setuid to `user` (name or numeric id), group default: the user's. */
  dropPrivileges(user: string, group?: string): void;
  /**
   * A non-blocking, close-on-exec TCP socket with SO_REUSEADDR, bound to `host`:`port` (an IP
   * literal; IPv6 sockets are dual-stack), with SO_REUSEPORT when `reusePort`. Not listening.
   * Throws NativeError (EADDRINUSE, EACCES, EADDRNOTAVAIL, EAFNOSUPPORT…).
   */
  bindTcp(host: string, port: number, family: 4 | 6, reusePort: boolean): number;
  /** Start a non-blocking connect(2) of `fd` to `host`:`port`; one already under way or done is fine. */
  connect(fd: number, host: string, port: number, family: 4 | 6): void;
  /** The local port a socket is bound to (getsockname). */
  localPort(fd: number): number;
  /** The TCP state of a socket (TCP_INFO tcpi_state: 1 established, 2 SYN sent, 10 listen). */
  tcpState(fd: number): number;
  /**
   * Milliseconds since the last data arrived on a connected TCP socket (TCP_INFO
   * tcpi_last_data_recv), or -1 when it cannot be read (not TCP, closed). For a request read now,
   * how long it waited for us: in the kernel's accept queue and in this process.
   */
  dataAgeMs(fd: number): number;
  /**
   * TCP_NODELAY on a listening socket: the connections it accepts inherit it (Linux), so nothing
   * needs setting per connection. False when it cannot be set.
   */
  noDelay(fd: number): boolean;
  /** Attach a classic BPF program to the SO_REUSEPORT group of `fd` (SO_ATTACH_REUSEPORT_CBPF, no privilege needed). */
  reuseportProgram(fd: number, program: readonly SockFilter[]): void;
  /** Listening TCP sockets bound to exactly `host`:`port` (sock_diag): the members of its reuseport group and any other. */
  listeners(host: string, port: number, family: 4 | 6): number;
  /** Detach the program of `fd`'s reuseport group (SO_DETACH_REUSEPORT_BPF); none attached is not an error. */
  detachReuseportProgram(fd: number): void;
  /**
   * One datagram to the unix socket at `path` (`@name`: the abstract namespace), from a fresh
   * SOCK_DGRAM socket: systemd's notification protocol (sd_notify(3)) without libsystemd.
   */
  sendDatagram(path: string, message: string): void;
  /** memfd_create(name, MFD_CLOEXEC) sized to `bytes` (zeroed): memory to share with workers through their stdio. */
  memfd(name: string, bytes: number): number;
  /** mmap(MAP_SHARED) of the first `bytes` of `fd`, as 32-bit integers every process mapping it sees (the mapping lives as long as the process). */
  mapShared(fd: number, bytes: number): Int32Array;
};

/** One classic BPF instruction (struct sock_filter). */
export type SockFilter = { code: number; jt: number; jf: number; k: number };

export type LoadResult = { ok: true; native: Native } | { ok: false; reason: string };

let loaded: LoadResult | undefined;

/** Load libc through koffi once; later calls return the same result. Never throws. QUIESCE_NATIVE=off: as if koffi were missing (tests). */
export function loadNative(): LoadResult {
  if (loaded === undefined && process.env.QUIESCE_NATIVE === 'off') loaded = { ok: false, reason: 'QUIESCE_NATIVE=off' };
  if (loaded === undefined) {
    try {
      loaded = { ok: true, native: bind() };
    } catch (err) {
      loaded = { ok: false, reason: err instanceof Error ? err.message : String(err) };
    }
  }
  return loaded;
}

// Linux constants (same on every Linux architecture koffi supports, unless noted).
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20; // not on ppc64/mips (18/4102): only used for a safety timeout
const SO_REUSEADDR = 2;
const SO_REUSEPORT = 15;
const SO_ATTACH_FILTER = 26;
const SO_ATTACH_REUSEPORT_CBPF = 51;
const IPPROTO_IPV6 = 41;
const IPV6_V6ONLY = 26;
const SO_DETACH_FILTER = 27;
const SO_DETACH_REUSEPORT_BPF = 68;
const SOCK_DGRAM = 2;
const MSG_NOSIGNAL = 0x4000;
const IPPROTO_TCP = 6;
const TCP_INFO = 11;
const TCP_NODELAY = 1;
/** struct tcp_info: offset of tcpi_last_data_recv (after 8 bytes of u8 fields and 11 u32s). */
const TCPI_LAST_DATA_RECV = 52;
const TCP_LISTEN = 10;
const F_DUPFD_CLOEXEC = 1030;
const SOCK_STREAM = 1;
const SOCK_RAW = 3;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const AF_UNIX = 1;
const AF_INET = 2;
const AF_INET6 = 10;

/** classic BPF opcodes */
const BPF_LD_B_ABS = 0x30;
const BPF_ALU_AND_K = 0x54;
const BPF_JMP_JEQ_K = 0x15;
const BPF_RET_K = 0x06;

/** Drop TCP segments with SYN set and ACK clear (new connections); accept everything else. */
const GATE_PROGRAM: readonly SockFilter[] = [
  { code: BPF_LD_B_ABS, jt: 0, jf: 0, k: 13 }, // A = TCP flags byte
  { code: BPF_ALU_AND_K, jt: 0, jf: 0, k: 0x12 }, // A &= SYN|ACK
  { code: BPF_JMP_JEQ_K, jt: 0, jf: 1, k: 0x02 }, // SYN alone?
  { code: BPF_RET_K, jt: 0, jf: 0, k: 0 }, //   yes: drop
  { code: BPF_RET_K, jt: 0, jf: 0, k: 0xffffffff }, // no: keep whole packet
];
const PASS_ALL_PROGRAM: readonly SockFilter[] = [{ code: BPF_RET_K, jt: 0, jf: 0, k: 0xffffffff }];

/** accept4 errors that mean "this one is gone, try the next" (accept(2), "Error handling"). */
const ACCEPT_RETRY = new Set(['ECONNABORTED', 'EINTR', 'EPROTO', 'ENETDOWN', 'ENOPROTOOPT', 'EHOSTDOWN',
  'ENONET', 'EHOSTUNREACH', 'EOPNOTSUPP', 'ENETUNREACH']);

type KoffiModule = typeof import('koffi');
/** A C pointer argument: a Buffer/typed array, or a value koffi.as() marshals, or NULL. */
type Ptr = Buffer | Int32Array | Uint32Array | ReturnType<KoffiModule['as']> | null;
/** What libc pointer-returning functions give back in koffi 3 */
type CPointer = bigint | null;

type Libc = {
  setsockopt(fd: number, level: number, name: number, value: Ptr, len: number): number;
  getsockopt(fd: number, level: number, name: number, value: Ptr, len: Ptr): number;
  accept4(fd: number, addr: null, addrlen: null, flags: number): number;
  listen(fd: number, backlog: number): number;
  fcntl(fd: number, cmd: number, argType: 'int', arg: number): number;
  close(fd: number): number;
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  connect(fd: number, addr: Buffer, len: number): number;
  getsockname(fd: number, addr: Buffer, len: Uint32Array): number;
  inet_pton(family: number, src: string, dst: Buffer): number;
  socketpair(domain: number, type: number, protocol: number, sv: Int32Array): number;
  send(fd: number, buf: Buffer, len: number, flags: number): number | bigint;
  recv(fd: number, buf: Buffer, len: number, flags: number): number | bigint;
  sendto(fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrlen: number): number | bigint;
  getpwnam(name: string): CPointer;
  getpwuid(uid: number): CPointer;
  getgrnam(name: string): CPointer;
  getgrgid(gid: number): CPointer;
  initgroups(user: string, gid: number): number;
  setgroups(size: number, list: Ptr): number;
  setgid(gid: number): number;
  setuid(uid: number): number;
  getuid(): number;
  memfd_create(name: string, flags: number): number;
  ftruncate(fd: number, length: number): number;
  mmap(addr: null, length: number, prot: number, flags: number, fd: number, offset: number): CPointer;
};

function bind(): Native {
  if (process.platform !== 'linux') throw new Error(`no native drain support on ${process.platform} (Linux only)`);
  const require = createRequire(import.meta.url);
  let koffi: KoffiModule;
  try {
    koffi = require('koffi') as KoffiModule;
  } catch (err) {
    throw new Error(`koffi unavailable (its prebuilt binary comes in an optional dependency): ${(err as Error).message}`);
  }
  let lib: ReturnType<KoffiModule['load']>;
  try {
    lib = koffi.load('libc.so.6');
  } catch (err) {
    try {
      lib = koffi.load(null); // musl: libc is part of the process image
    } catch {
      throw new Error(`cannot load libc.so.6: ${(err as Error).message}`);
    }
  }

  const sockFilter = koffi.struct({ code: 'uint16_t', jt: 'uint8_t', jf: 'uint8_t', k: 'uint32_t' });
  const sockFprog = koffi.struct({ len: 'uint16_t', filter: koffi.pointer(sockFilter) });
  const timeval = koffi.struct({ tv_sec: 'long', tv_usec: 'long' });
  const passwd = koffi.struct({ pw_name: 'str', pw_passwd: 'str', pw_uid: 'uint32_t', pw_gid: 'uint32_t' });
  const group = koffi.struct({ gr_name: 'str', gr_passwd: 'str', gr_gid: 'uint32_t' });
  if (sockFilter.size !== 8) throw new Error(`unexpected sizeof(struct sock_filter) ${sockFilter.size}`);

  // The casts give koffi's untyped functions the C signatures declared next to them.
  const c = {
    setsockopt: lib.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)'),
    getsockopt: lib.func('int getsockopt(int fd, int level, int name, void *value, void *len)'),
    accept4: lib.func('int accept4(int fd, void *addr, void *addrlen, int flags)'),
    listen: lib.func('int listen(int fd, int backlog)'),
    fcntl: lib.func('int fcntl(int fd, int cmd, ...)'),
    close: lib.func('int close(int fd)'),
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    bind: lib.func('int bind(int fd, const void *addr, uint32_t len)'),
    connect: lib.func('int connect(int fd, const void *addr, uint32_t len)'),
    getsockname: lib.func('int getsockname(int fd, void *addr, void *len)'),
    inet_pton: lib.func('int inet_pton(int family, const char *src, void *dst)'),
    socketpair: lib.func('int socketpair(int domain, int type, int protocol, int *sv)'),
    send: lib.func('long send(int fd, const void *buf, size_t len, int flags)'),
    recv: lib.func('long recv(int fd, void *buf, size_t len, int flags)'),
    sendto: lib.func('long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)'),
    getpwnam: lib.func('void *getpwnam(const char *name)'),
    getpwuid: lib.func('void *getpwuid(uint32_t uid)'),
    getgrnam: lib.func('void *getgrnam(const char *name)'),
    getgrgid: lib.func('void *getgrgid(uint32_t gid)'),
    initgroups: lib.func('int initgroups(const char *user, uint32_t gid)'),
    setgroups: lib.func('int setgroups(size_t size, const uint32_t *list)'),
    setgid: lib.func('int setgid(uint32_t gid)'),
    setuid: lib.func('int setuid(uint32_t uid)'),
    getuid: lib.func('uint32_t getuid()'),
    memfd_create: lib.func('int memfd_create(const char *name, unsigned int flags)'),
    ftruncate: lib.func('int ftruncate(int fd, long length)'),
    mmap: lib.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)'),
  } as Libc;

  const fail = (syscall: string, detail?: string): NativeError => new NativeError(syscall, koffi.errno(), detail);

  const attach = (fd: number, program: readonly SockFilter[]): void => {
    const prog = koffi.as({ len: program.length, filter: program }, koffi.pointer(sockFprog));
    if (c.setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, prog, sockFprog.size) !== 0) {
      throw fail('setsockopt(SO_ATTACH_FILTER)', `fd ${fd}`);
    }
  };

  const tcpInfo = Buffer.alloc(256);
  const tcpInfoLen = new Uint32Array(1);
  const one = new Int32Array([1]);

  const diag = {
    usable: endianness() === 'LE', // the messages are built little-endian (host order on x86/arm)
    seq: 0,
    reply: Buffer.allocUnsafe(64 * 1024), // a dump chunk is at most ~32 KiB: never truncated
    timeout: koffi.as({ tv_sec: 1, tv_usec: 0 }, koffi.pointer(timeval)),
  };

  /** Sockets of `port` in `state` by sock_diag (bound to `addr` when given), one short-lived netlink socket per call. */
  const countNetlink = (port: number, families: readonly number[], state: number, addr?: Buffer): number => {
    const nl = c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0) {
      diag.usable = false; // no sock_diag here (seccomp, old kernel): do not ask again
      throw fail('socket(AF_NETLINK)');
    }
    try {
      // A safety net: the kernel answers a dump at once, never leave the event loop stuck.
      if (c.setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, diag.timeout, timeval.size) !== 0) {
        throw fail('setsockopt(SO_RCVTIMEO)');
      }
      let count = 0;
      for (const family of families) {
        diag.seq = (diag.seq + 1) >>> 0;
        const req = diagRequest(family, 1 << state, diag.seq);
        if (Number(c.send(nl, req, req.length, 0)) !== req.length) throw fail('send(sock_diag)');
        for (;;) {
          const n = Number(c.recv(nl, diag.reply, diag.reply.length, 0));
          if (n < 0) {
            if (koffi.errno() === 4) continue; // EINTR
            throw fail('recv(sock_diag)');
          }
          const chunk = scanDiagChunk(diag.reply, n, diag.seq, state, port, addr);
          count += chunk.count;
          // ENOENT for AF_INET6: IPv6 (its diag module) absent, so nothing half-open there
          if (chunk.errno !== 0 && !(family === AF_INET6 && chunk.errno === 2)) {
            throw new NativeError('sock_diag', chunk.errno);
          }
          if (chunk.done) break;
        }
      }
      return count;
    } finally {
      c.close(nl);
    }
  };

  /** The address bytes of an IP literal (network order), for sockaddrs and sock_diag. */
  const ipBytes = (host: string, family: 4 | 6): Buffer => {
    const out = Buffer.alloc(family === 4 ? 4 : 16);
    if (c.inet_pton(family === 4 ? AF_INET : AF_INET6, host, out) !== 1) {
      throw new NativeError('inet_pton', 22, `not an IPv${family} address: ${JSON.stringify(host)}`);
    }
    return out;
  };

  /** struct sockaddr_in (16 bytes) or sockaddr_in6 (28 bytes); sa_family in host order (little-endian, see diag). */
  const sockaddr = (host: string, port: number, family: 4 | 6): Buffer => {
    const ip = ipBytes(host, family);
    const sa = Buffer.alloc(family === 4 ? 16 : 28);
    sa.writeUInt16LE(family === 4 ? AF_INET : AF_INET6, 0);
    sa.writeUInt16BE(port, 2);
    ip.copy(sa, family === 4 ? 4 : 8);
    return sa;
  };

  const setInt = (fd: number, level: number, name: number, value: number, what: string): void => {
    if (c.setsockopt(fd, level, name, new Int32Array([value]), 4) !== 0) throw fail(`setsockopt(${what})`, `fd ${fd}`);
  };

  const lookupUser = (user: string): { name: string | null; uid: number; gid: number | null } => {
    const numeric = /^\d+$/.test(user);
    koffi.errno(0);
    const p = numeric ? c.getpwuid(Number(user)) : c.getpwnam(user);
    if (p === null) {
      if (numeric) return { name: null, uid: Number(user), gid: null };
      throw new NativeError('getpwnam', koffi.errno() || 2, `no user ${JSON.stringify(user)}`);
    }
    const pw = koffi.decode(p, passwd) as { pw_name: string; pw_uid: number; pw_gid: number };
    return { name: pw.pw_name, uid: pw.pw_uid, gid: pw.pw_gid };
  };

  const lookupGroup = (name: string): number => {
    if (/^\d+$/.test(name)) return Number(name);
    koffi.errno(0);
    const p = c.getgrnam(name);
    if (p === null) throw new NativeError('getgrnam', koffi.errno() || 2, `no group ${JSON.stringify(name)}`);
    return (koffi.decode(p, group) as { gr_gid: number }).gr_gid;
  };

  return {
    gate: (fd) => attach(fd, GATE_PROGRAM),
    passAll: (fd) => attach(fd, PASS_ALL_PROGRAM),

    detachReuseportProgram(fd) {
      if (c.setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, new Int32Array(1), 4) !== 0) {
        const err = fail('setsockopt(SO_DETACH_REUSEPORT_BPF)', `fd ${fd}`);
        if (err.code !== 'ENOENT' && err.code !== 'EINVAL') throw err; // none attached, or not in a group
      }
    },

    sendDatagram(path, message) {
      // struct sockaddr_un: sa_family (host order), then the path; '@' is a leading NUL (abstract)
      const name = Buffer.from(path.startsWith('@') ? `\0${path.slice(1)}` : path);
      if (name.length > 107) throw new NativeError('sendto', 36, `socket path too long: ${path}`); // ENAMETOOLONG
      const sa = Buffer.alloc(110);
      sa.writeUInt16LE(AF_UNIX, 0);
      name.copy(sa, 2);
      const len = 2 + name.length + (path.startsWith('@') ? 0 : 1);
      const fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (fd < 0) throw fail('socket(AF_UNIX, SOCK_DGRAM)');
      try {
        const buf = Buffer.from(message);
        if (Number(c.sendto(fd, buf, buf.length, MSG_NOSIGNAL, sa, len)) < 0) throw fail('sendto', path);
      } finally {
        c.close(fd);
      }
    },

    ungate(fd) {
      if (c.setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, new Int32Array(1), 4) !== 0) {
        const err = fail('setsockopt(SO_DETACH_FILTER)', `fd ${fd}`);
        if (err.code !== 'ENOENT') throw err;
      }
    },

    acceptQueue(fd) {
      tcpInfoLen[0] = tcpInfo.length;
      if (c.getsockopt(fd, IPPROTO_TCP, TCP_INFO, tcpInfo, tcpInfoLen) !== 0) {
        throw fail('getsockopt(TCP_INFO)', `fd ${fd}`);
      }
      if ((tcpInfoLen[0] ?? 0) < 32 || tcpInfo.readUInt8(0) !== TCP_LISTEN) {
        throw new NativeError('getsockopt(TCP_INFO)', 22, `fd ${fd} is not a listening TCP socket`);
      }
      // On a LISTEN socket tcpi_unacked is sk_ack_backlog, tcpi_sacked sk_max_ack_backlog.
      return { queued: tcpInfo.readUInt32LE(24), backlog: tcpInfo.readUInt32LE(28) };
    },

    accept(fd) {
      const conn = c.accept4(fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (conn >= 0) return conn;
      const err = fail('accept4', `fd ${fd}`);
      if (err.code === 'EAGAIN') return -1; // EWOULDBLOCK is the same number on Linux
      if (ACCEPT_RETRY.has(err.code)) return -2;
      throw err;
    },

    listen(fd, backlog) {
      if (c.listen(fd, backlog) !== 0) throw fail('listen', `fd ${fd}`);
    },

    memfd(name, bytes) {
      const fd = c.memfd_create(name, 1 /* MFD_CLOEXEC */);
      if (fd < 0) throw fail('memfd_create', name);
      if (c.ftruncate(fd, bytes) !== 0) { const err = fail('ftruncate', `memfd ${name}`); c.close(fd); throw err; }
      return fd;
    },

    mapShared(fd, bytes) {
      const p = c.mmap(null, bytes, 3 /* PROT_READ | PROT_WRITE */, 1 /* MAP_SHARED */, fd, 0);
      if (p === null || p === -1n || p === 0xffffffffffffffffn) throw fail('mmap', `fd ${fd}`);
      return new Int32Array(koffi.view(p, bytes));
    },

    dupCloexec(fd) {
      const dup = c.fcntl(fd, F_DUPFD_CLOEXEC, 'int', 0);
      if (dup < 0) throw fail('fcntl(F_DUPFD_CLOEXEC)', `fd ${fd}`);
      return dup;
    },

    close(fd) {
      // After EINTR Linux has closed the fd already: retrying could close someone else's.
      if (c.close(fd) !== 0 && koffi.errno() !== 4) throw fail('close', `fd ${fd}`);
    },

    socketpair() {
      const sv = new Int32Array(2);
      if (c.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) !== 0) throw fail('socketpair');
      return [sv[0]!, sv[1]!];
    },

    halfOpen(port, family) {
      if (diag.usable) {
        try {
          return countNetlink(port, family === 4 ? [AF_INET] : family === 6 ? [AF_INET6] : [AF_INET, AF_INET6], TCP_SYN_RECV);
        } catch {
          // fall through to /proc for this call (and for good if netlink itself is missing)
        }
      }
      return procTcpCounts(port).halfOpen;
    },

    dropPrivileges(user, groupName) {
      const pw = lookupUser(user);
      const gid = groupName !== undefined ? lookupGroup(groupName) : pw.gid;
      if (gid === null) {
        throw new NativeError('getpwuid', 2, `uid ${user} has no passwd entry: give a group`);
      }
      if (pw.name !== null) {
        if (c.initgroups(pw.name, gid) !== 0) throw fail('initgroups', pw.name);
      } else if (c.setgroups(1, new Uint32Array([gid])) !== 0) {
        throw fail('setgroups', String(gid));
      }
      if (c.setgid(gid) !== 0) throw fail('setgid', String(gid));
      if (c.setuid(pw.uid) !== 0) throw fail('setuid', String(pw.uid));
      if (c.getuid() !== pw.uid) throw new NativeError('setuid', 1, `still uid ${c.getuid()}`);
    },

    bindTcp(host, port, family, reusePort) {
      const fd = c.socket(family === 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) throw fail('socket', `IPv${family}`);
      try {
        setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, 'SO_REUSEADDR'); // as Node's own listeners (TIME_WAIT)
        if (reusePort) setInt(fd, SOL_SOCKET, SO_REUSEPORT, 1, 'SO_REUSEPORT');
        if (family === 6) setInt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0, 'IPV6_V6ONLY'); // dual-stack, as Node's
        const sa = sockaddr(host, port, family);
        if (c.bind(fd, sa, sa.length) !== 0) throw fail('bind', `${family === 6 ? `[${host}]` : host}:${port}`);
        return fd;
      } catch (err) {
        c.close(fd);
        throw err;
      }
    },

    connect(fd, host, port, family) {
      const sa = sockaddr(host, port, family);
      if (c.connect(fd, sa, sa.length) === 0) return;
      const err = fail('connect', `${host}:${port}`);
      if (err.code !== 'EINPROGRESS' && err.code !== 'EALREADY' && err.code !== 'EISCONN') throw err;
    },

    localPort(fd) {
      const sa = Buffer.alloc(28);
      const len = new Uint32Array([sa.length]);
      if (c.getsockname(fd, sa, len) !== 0) throw fail('getsockname', `fd ${fd}`);
      return sa.readUInt16BE(2);
    },

    tcpState(fd) {
      tcpInfoLen[0] = tcpInfo.length;
      if (c.getsockopt(fd, IPPROTO_TCP, TCP_INFO, tcpInfo, tcpInfoLen) !== 0) throw fail('getsockopt(TCP_INFO)', `fd ${fd}`);
      return tcpInfo.readUInt8(0);
    },

    noDelay(fd) {
      return c.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4) === 0;
    },

    dataAgeMs(fd) {
      tcpInfoLen[0] = tcpInfo.length;
      if (c.getsockopt(fd, IPPROTO_TCP, TCP_INFO, tcpInfo, tcpInfoLen) !== 0 || (tcpInfoLen[0] ?? 0) < 56) return -1;
      return tcpInfo.readUInt32LE(TCPI_LAST_DATA_RECV);
    },

    reuseportProgram(fd, program) {
      const prog = koffi.as({ len: program.length, filter: program }, koffi.pointer(sockFprog));
      if (c.setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, prog, sockFprog.size) !== 0) {
        throw fail('setsockopt(SO_ATTACH_REUSEPORT_CBPF)', `fd ${fd}`);
      }
    },

    listeners(host, port, family) {
      if (!diag.usable) throw new NativeError('sock_diag', 95, 'netlink sock_diag unavailable');
      return countNetlink(port, [family === 4 ? AF_INET : AF_INET6], TCP_STATE_LISTEN, ipBytes(host, family));
    },
  };
}

/**
 * The kernel's word that a gated TCP listener is drained: no handshake of its port in progress
 * (checked first, so that nothing can enter the queue between the two reads), then an empty
 * accept queue. `family` is the listener socket's (a dual-stack listener is IPv6).
 */
export function kernelDrained(native: Native, fd: number, port: number, family: 4 | 6): boolean {
  return native.halfOpen(port, family) === 0 && native.acceptQueue(fd).queued === 0;
}
