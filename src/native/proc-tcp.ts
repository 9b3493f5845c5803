import { readFileSync } from 'node:fs';

const TCP_LISTEN = '0A';
const TCP_SYN_RECV = '03';

/**
 * Without koffi: accept-queue length and half-open count for a local port, parsed from
 * /proc/net/tcp and /proc/net/tcp6. `queued` sums the rx_queue of the LISTEN rows of that port
 * (the kernel prints sk_ack_backlog there), `halfOpen` counts its SYN_RECV (state 03) rows.
 * Slow with many sockets (tens of ms at ~10k rows): a fallback, not the hot path.
 * Throws if /proc/net/tcp cannot be read; a missing /proc/net/tcp6 (IPv6 off) counts as empty.
 */
export function procTcpCounts(port: number): { queued: number; halfOpen: number } {
  const counts = { queued: 0, halfOpen: 0 };
  const needle = `:${port.toString(16).toUpperCase().padStart(4, '0')} `;
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'latin1');
    } catch (err) {
      if (file.endsWith('6') && (err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    countRows(text, needle, counts);
  }
  return counts;
}

/** Rows look like: `  0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 ...` */
function countRows(text: string, needle: string, counts: { queued: number; halfOpen: number }): void {
  let at = text.indexOf(needle);
  while (at !== -1) {
    const lineStart = text.lastIndexOf('\n', at) + 1;
    let lineEnd = text.indexOf('\n', at);
    if (lineEnd === -1) lineEnd = text.length;
    const fields = text.slice(lineStart, lineEnd).trim().split(/\s+/);
    // fields: sl, local_address, rem_address, st, tx_queue:rx_queue, ...
    const local = fields[1];
    if (local !== undefined && local.endsWith(needle.trimEnd())) {
      const state = fields[3];
      if (state === TCP_SYN_RECV) {
        counts.halfOpen++;
      } else if (state === TCP_LISTEN) {
        const rx = fields[4]?.split(':')[1];
        if (rx !== undefined) counts.queued += Number.parseInt(rx, 16);
      }
    }
    at = text.indexOf(needle, lineEnd);
  }
}
