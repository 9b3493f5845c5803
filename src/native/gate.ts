/**
 * The gate that needs no privilege: a SO_REUSEPORT group steered by classic BPF programs
 * (SO_ATTACH_REUSEPORT_CBPF, allowed to any user; SO_ATTACH_FILTER on TCP needs CAP_NET_ADMIN
 * since Linux 5d39580f68e6). Each TCP listener L is made with three sockets (see `GateSockets`):
 *
 * - serving: the group's program returns 0, so L (index 0) gets every SYN and a same-user socket
 *   that joins the group later gets none;
 * - closing (`closeGate`): the gate socket G, bound beside L since the start, listens with
 *   backlog 0 and joins the group; the plug S, a client socket bound to a port p since the start,
 *   connects while the program sends "a SYN from port p" to G: G's accept queue now holds S and is
 *   full, and the kernel drops every SYN that reaches a listener whose queue is full before it
 *   makes a half-open request (tcp_conn_request: sk_acceptq_is_full → drop). Then the program
 *   sends every SYN (SYN set, ACK clear) to G: no new connection can reach L, new clients
 *   retransmit and are refused once G is closed, while the final ACKs of handshakes in progress
 *   and late syncookie ACKs still go to L. L is drained and closed with nothing in it; G (holding
 *   only S) and S are closed after it.
 *
 * Every step is idempotent (the program is the same whoever attaches it, S is connected at most
 * once), so workers that lost their master can all run it at once on their inherited copies.
 * The packet data a reuseport program sees starts after the TCP header, so it reads the headers
 * through SKF_NET_OFF: IPv4 (header length from IHL) and IPv6 (40 bytes) both, since a dual-stack
 * listener gets both families.
 */
import type { Native, SockFilter } from './index.js';

const SKF_NET_OFF = -0x100000 >>> 0;
const LD_B_ABS = 0x30;
const LD_B_IND = 0x50;
const LD_H_IND = 0x48;
const LDX_IMM = 0x01;
const ALU_AND_K = 0x54;
const ALU_LSH_K = 0x64;
const ALU_RSH_K = 0x74;
const MISC_TAX = 0x07;
const JEQ_K = 0x15;
const RET_K = 0x06;

const op = (code: number, k = 0, jt = 0, jf = 0): SockFilter => ({ code, jt, jf, k });

/** X = the IP header's length (IPv4: IHL * 4; otherwise the 40 bytes of IPv6's fixed header). */
const IP_HEADER_TO_X: readonly SockFilter[] = [
  op(LD_B_ABS, SKF_NET_OFF), // A = first byte of the IP header
  op(ALU_AND_K, 0x0f),
  op(ALU_LSH_K, 2),
  op(MISC_TAX), // X = IHL * 4
  op(LD_B_ABS, SKF_NET_OFF),
  op(ALU_RSH_K, 4), // A = IP version
  op(JEQ_K, 4, 1, 0), // IPv4: keep X
  op(LDX_IMM, 40), // IPv6
];

/** Serving: every connection to L (index 0). */
export const SELECT_LISTENER: readonly SockFilter[] = [op(RET_K, 0)];

/** Plugging G: the SYN from the plug's port `p` goes to G (index `g`), everything else to L. */
export function plugProgram(p: number, g: number): SockFilter[] {
  return [
    ...IP_HEADER_TO_X,
    op(LD_H_IND, (SKF_NET_OFF + 0) >>> 0), // A = TCP source port
    op(JEQ_K, p, 0, 1),
    op(RET_K, g),
    op(RET_K, 0),
  ];
}

/** Closed: every SYN (SYN set, ACK clear) to G, whose full queue drops it; anything else to L. */
export function closedProgram(g: number): SockFilter[] {
  return [
    ...IP_HEADER_TO_X,
    op(LD_B_IND, (SKF_NET_OFF + 13) >>> 0), // A = TCP flags
    op(ALU_AND_K, 0x12), // SYN | ACK
    op(JEQ_K, 0x02, 0, 1), // SYN alone?
    op(RET_K, g),
    op(RET_K, 0),
  ];
}

/**
 * One TCP listener's sockets for the reuseport gate, all made by the master at bind (the same
 * user must make every member of a group) and inherited by the workers.
 */
export type GateSockets = {
  /** the listener L */
  fd: number;
  /** the gate G: bound beside L with SO_REUSEPORT, listens only when the gate closes */
  gateFd: number;
  /** the plug S: a client socket bound to `plugPort` on `plugHost` */
  plugFd: number;
  plugPort: number;
  /** where S connects to reach the listener (L's address, or loopback for a wildcard one) */
  plugHost: string;
  plugFamily: 4 | 6;
  /** L's bound address and port, to count the group's members */
  host: string;
  port: number;
  family: 4 | 6;
};

/** Make G and S for a listener bound at `host`:`port` (L made already with SO_REUSEPORT). Throws NativeError. */
export function makeGateSockets(native: Native, fd: number, host: string, port: number, family: 4 | 6): GateSockets {
  const wildcard = host === '0.0.0.0' || host === '::';
  // a dual-stack wildcard listener is reached over IPv4 loopback, which every machine has
  const plugFamily: 4 | 6 = wildcard ? 4 : family;
  const plugHost = wildcard ? '127.0.0.1' : host;
  const gateFd = native.bindTcp(host, port, family, true);
  try {
    const plugFd = native.bindTcp(plugHost, 0, plugFamily, false);
    return { fd, gateFd, plugFd, plugPort: native.localPort(plugFd), plugHost, plugFamily, host, port, family };
  } catch (err) {
    native.close(gateFd);
    throw err;
  }
}

/** How long the plug may take to land in G's queue (a loopback handshake: well under a millisecond). */
const PLUG_WAIT_MS = 500;

/**
 * Close the gate: from its return on, no new connection can enter L's queue (see the header).
 * Throws when the plug did not land in time (or a call failed): the
 * group is then put back to "everything to L" so that nothing is left in G to reset.
 */
export async function closeGate(native: Native, g: GateSockets): Promise<void> {
  native.listen(g.gateFd, 0);
  // G joined the group last: its index is the number of members before it (1 unless another
  // listener of this user joined the group meanwhile)
  const members = native.listeners(g.host, g.port, g.family);
  const index = Math.max(1, members - 1);
  native.reuseportProgram(g.fd, plugProgram(g.plugPort, index));
  native.connect(g.plugFd, g.plugHost, g.port, g.plugFamily);
  const until = Date.now() + PLUG_WAIT_MS;
  while (native.acceptQueue(g.gateFd).queued < 1) {
    if (Date.now() >= until) {
      native.reuseportProgram(g.fd, SELECT_LISTENER);
      throw new Error(`the gate's plug did not reach the gate socket within ${PLUG_WAIT_MS} ms (group of ${members})`);
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  native.reuseportProgram(g.fd, closedProgram(index));
}

/**
 * Close the gate while serving, to be opened again (`openGate`): only the reversible gates. The
 * fallback's listen(fd, 0) is not one (it lets a SYN in whenever the queue empties): throws.
 */
export async function holdGate(native: Native, mode: TcpDrainMode, fd: number, gate: GateSockets | undefined): Promise<void> {
  if (mode === 'reuseport' && gate) return closeGate(native, gate);
  if (mode === 'filter') return native.gate(fd);
  throw new Error(`no reversible gate in ${mode} mode`);
}

/**
 * Open again a gate closed by `gateTcp` while the master serves (no worker was alive): every SYN
 * to L again (reuseport), or the filter detached. G keeps listening with S in its queue, so the
 * next close (`closeGate` again, at a stop or when no worker is left again) needs no new plug: S
 * is connected already and the queue reads full at once. The fallback has no gate to hold.
 */
export function openGate(native: Native, mode: TcpDrainMode, fd: number, gate: GateSockets | undefined): void {
  if (mode === 'reuseport' && gate) native.reuseportProgram(fd, SELECT_LISTENER);
  else if (mode === 'filter') native.ungate(fd);
}

/** Close G and S after L (their owner's copies; the sockets go when their last holder closes them). */
export function releaseGate(native: Native, g: GateSockets): void {
  for (const fd of [g.gateFd, g.plugFd]) {
    try { native.close(fd); } catch { /* closed already */ }
  }
}

/** How a TCP listener is gated at a stop (docs/ARCHITECTURE.md, "The drain protocol"). */
export type TcpDrainMode = 'reuseport' | 'filter' | 'fallback';

/**
 * Stop new connections from entering a TCP listener's queue, by `mode`: the reuseport group's
 * gate, the SYN-drop socket filter (needs CAP_NET_ADMIN), or, where neither works, the cheapest
 * stop there is: listen(fd, 0) keeps the queue and drops SYNs while it holds anything, but lets
 * one in each time it empties (a race the drain narrows, never closes). Returns the mode that
 * took effect: a gate that fails falls back, and `onFail` says why.
 */
export async function gateTcp(native: Native, mode: TcpDrainMode, fd: number, gate: GateSockets | undefined, onFail: (why: string) => void): Promise<TcpDrainMode> {
  try {
    if (mode === 'reuseport' && gate) {
      await closeGate(native, gate);
      return 'reuseport';
    }
    if (mode === 'filter') {
      native.gate(fd);
      return 'filter';
    }
  } catch (err) {
    onFail(err instanceof Error ? err.message : String(err));
  }
  try {
    native.listen(fd, 0);
  } catch (err) {
    onFail(err instanceof Error ? err.message : String(err));
  }
  return 'fallback';
}
