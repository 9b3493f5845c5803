/**
 * The receiving end of systemd's notification socket, for tests: a unix datagram socket bound to
 * a path (Node has none; koffi and libc, as the native layer does), read without blocking.
 */
import koffi from 'koffi';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_DONTWAIT = 0x40;

type Libc = {
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  recv(fd: number, buf: Buffer, len: number, flags: number): number | bigint;
  close(fd: number): number;
};

let libc: Libc | undefined;
function c(): Libc {
  if (libc) return libc;
  const lib = koffi.load('libc.so.6');
  libc = {
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    bind: lib.func('int bind(int fd, const void *addr, uint32_t len)'),
    recv: lib.func('long recv(int fd, void *buf, size_t len, int flags)'),
    close: lib.func('int close(int fd)'),
  } as Libc;
  return libc;
}

export class NotifySocket {
  readonly dir = mkdtempSync(join(tmpdir(), 'quiesce-notify-'));
  readonly path = join(this.dir, 'notify');
  private readonly fd: number;
  /** Every message received so far, in order. */
  readonly messages: string[] = [];

  constructor() {
    this.fd = c().socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (this.fd < 0) throw new Error('socket(AF_UNIX, SOCK_DGRAM) failed');
    const sa = Buffer.alloc(110);
    sa.writeUInt16LE(AF_UNIX, 0);
    Buffer.from(this.path).copy(sa, 2);
    if (c().bind(this.fd, sa, 2 + Buffer.byteLength(this.path) + 1) !== 0) throw new Error(`bind ${this.path} failed`);
  }

  /** Reads what has arrived (at most 1,000 datagrams a call) and returns all messages so far. */
  read(): string[] {
    const buf = Buffer.alloc(4096);
    for (let i = 0; i < 1_000; i++) {
      const n = Number(c().recv(this.fd, buf, buf.length, MSG_DONTWAIT));
      if (n < 0) break;
      this.messages.push(buf.toString('utf8', 0, n));
    }
    return this.messages;
  }

  close(): void {
    c().close(this.fd);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
