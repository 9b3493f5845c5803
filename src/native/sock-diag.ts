/**
 * sock_diag netlink messages, built and parsed in Buffers (no FFI here).
 * Request: struct nlmsghdr (16 bytes) + struct inet_diag_req_v2 (56 bytes).
 * Reply records: struct nlmsghdr + struct inet_diag_msg {u8 family, u8 state, u8 timer,
 * u8 retrans, struct inet_diag_sockid id {be16 sport, be16 dport, be32 src[4], ...}, ...}.
 */

export const AF_NETLINK = 16;
export const NETLINK_SOCK_DIAG = 4;
export const TCP_SYN_RECV = 3;
export const TCP_LISTEN = 10;

const SOCK_DIAG_BY_FAMILY = 20;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLM_F_REQUEST = 0x1;
const NLM_F_DUMP = 0x300; // NLM_F_ROOT | NLM_F_MATCH
const NLMSG_HDRLEN = 16;
const INET_DIAG_REQ_V2_LEN = 56;
const IPPROTO_TCP = 6;

/** A dump request for every TCP socket of `family` whose state bit is set in `states`. */
export function diagRequest(family: number, states: number, seq: number): Buffer {
  const req = Buffer.alloc(NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN);
  req.writeUInt32LE(req.length, 0); // nlmsg_len (host order; little-endian assumed, see index.ts)
  req.writeUInt16LE(SOCK_DIAG_BY_FAMILY, 4); // nlmsg_type
  req.writeUInt16LE(NLM_F_REQUEST | NLM_F_DUMP, 6); // nlmsg_flags
  req.writeUInt32LE(seq, 8); // nlmsg_seq; nlmsg_pid 0 = the kernel
  req.writeUInt8(family, 16); // sdiag_family
  req.writeUInt8(IPPROTO_TCP, 17); // sdiag_protocol
  // idiag_ext 0, pad 0
  req.writeUInt32LE(states, 20); // idiag_states; the sockid stays zero (ignored by a dump)
  return req;
}

export type DiagChunk = {
  /** records of the dump in this chunk with the wanted state and local port */
  count: number;
  /** NLMSG_DONE seen: the dump is over */
  done: boolean;
  /** errno from an NLMSG_ERROR (positive), 0 if none */
  errno: number;
};

/**
 * Scan one recv()'d chunk of a dump reply; messages of another sequence number are skipped. With
 * `addr` (4 or 16 bytes, network order), only sockets bound to that local address count.
 */
export function scanDiagChunk(buf: Buffer, len: number, seq: number, state: number, port: number, addr?: Buffer): DiagChunk {
  const chunk: DiagChunk = { count: 0, done: false, errno: 0 };
  let off = 0;
  while (off + NLMSG_HDRLEN <= len) {
    const msgLen = buf.readUInt32LE(off);
    if (msgLen < NLMSG_HDRLEN || off + msgLen > len) break; // malformed or truncated: stop here
    const type = buf.readUInt16LE(off + 4);
    if (buf.readUInt32LE(off + 8) === seq) {
      if (type === NLMSG_DONE) {
        chunk.done = true;
      } else if (type === NLMSG_ERROR) {
        chunk.errno = -buf.readInt32LE(off + NLMSG_HDRLEN);
        chunk.done = true;
      } else if (type === SOCK_DIAG_BY_FAMILY && msgLen >= NLMSG_HDRLEN + 8) {
        const body = off + NLMSG_HDRLEN;
        if (buf.readUInt8(body + 1) === state && buf.readUInt16BE(body + 4) === port &&
          (addr === undefined || buf.compare(addr, 0, addr.length, body + 8, body + 8 + addr.length) === 0)) chunk.count++;
      }
    }
    off += (msgLen + 3) & ~3; // NLMSG_ALIGN
  }
  return chunk;
}
