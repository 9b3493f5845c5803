/**
 * SYN cookies and the drain.
 *
 * A listener whose half-open queue is full (more handshakes in progress than its backlog, as when
 * its accept queue has been full for a while) answers new SYNs with a cookie
 * (`net.ipv4.tcp_syncookies=1`, the default) and keeps no record of them: the client holds an
 * established connection the server knows nothing of until the client's ACK, carrying its
 * request, is accepted into the queue. While the accept queue is full that ACK is dropped, and the
 * client sends it again with backoff (its retransmission timeout: 200 ms at least, then 400, 800…).
 * After the gate has emptied the queue such a client gets in at its next retransmission, which
 * can come long after the drain found nothing half-open (there is nothing to find) and nothing
 * queued: closing the listener before it resets the client (a cut; measured: 41-189 cuts per stop
 * with `--backlog 8` under overload, 0 with this hold).
 *
 * The kernel counts the cookies it sent per network namespace only (`TcpExt SyncookiesSent` in
 * /proc/net/netstat, readable by any user). The master samples it (`sample`, every watch tick) and
 * a drain after cookies keeps its gated listeners open (`holdUntil`) for as long as the oldest such
 * client can take to come back: the time it has waited up to the gate again (the backoff doubles),
 * plus a retransmission timeout. Cookies sent by another listener of the host make a stop wait the
 * same, up to the drain cap: slower, never wrong.
 */
import { readFileSync } from 'node:fs';

/** Cookies older than this before the gate are not waited for (their clients are in, or gone). */
const LOOKBACK_MS = 10_000;
/** A client's retransmission timeout after its wait (TCP_RTO_MIN is 200 ms), with room for a slow RTT. */
const RTO_MARGIN_MS = 400;

/** The host's (network namespace's) count of SYN cookies sent, or undefined where it cannot be read. */
export function readSyncookiesSent(file = '/proc/net/netstat'): number | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'latin1');
  } catch {
    return undefined;
  }
  // pairs of lines: "TcpExt: Name Name …" then "TcpExt: 1 2 …"
  const lines = text.split('\n');
  for (let i = 0; i + 1 < lines.length; i++) {
    if (!lines[i]!.startsWith('TcpExt:') || !lines[i + 1]!.startsWith('TcpExt:')) continue;
    const names = lines[i]!.trim().split(/\s+/);
    const k = names.indexOf('SyncookiesSent');
    if (k < 0) return undefined;
    const v = Number(lines[i + 1]!.trim().split(/\s+/)[k]);
    return Number.isFinite(v) ? v : undefined;
  }
  return undefined;
}

export type CookieHold = {
  /** When the gated listeners may close (ms since the epoch). */
  until: number;
  /** Cookies the host sent in the look-back before the gate. */
  cookies: number;
  /** The earliest moment the first of them may have been sent. */
  since: number;
};

/** The times the host's cookie count moved, from samples of it. */
export class CookieWatch {
  private last: number | undefined;
  private lastAt = 0;
  /** Each rise seen: the sample before it (the earliest the cookies may date from) and how many. */
  private rises: Array<{ from: number; n: number }> = [];

  constructor(private readonly read: () => number | undefined = readSyncookiesSent) {}

  /** Read the count now; remember a rise since the previous sample. */
  sample(now = Date.now()): void {
    const v = this.read();
    if (v === undefined) return;
    if (this.last !== undefined && v > this.last) this.rises.push({ from: this.lastAt, n: v - this.last });
    this.last = v;
    this.lastAt = now;
    while (this.rises.length > 0 && this.rises[0]!.from < now - LOOKBACK_MS) this.rises.shift();
  }

  /**
   * For a drain gated at `gateAt` (after a last sample taken at the gate): until when its listeners
   * stay open for late cookie handshakes, or undefined when the host sent none lately.
   */
  holdUntil(gateAt: number): CookieHold | undefined {
    this.sample(gateAt); // (which also forgets rises older than the look-back)
    if (this.rises.length === 0) return undefined;
    const since = this.rises[0]!.from; // the oldest: they are kept in order
    return { until: gateAt + (gateAt - since) + RTO_MARGIN_MS, cookies: this.rises.reduce((a, r) => a + r.n, 0), since };
  }
}
