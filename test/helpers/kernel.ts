/** What the kernel itself says about a listener, read with `ss` (iproute2), as an operator would. */
import { execFileSync } from 'node:child_process';

/** The largest of column `col` (1: Recv-Q, 2: Send-Q) over the LISTEN sockets on `port`. */
function listenColumn(port: number, col: 1 | 2): number {
  const out = execFileSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8' });
  let max = 0;
  for (const line of out.trim().split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[0] === 'LISTEN') max = Math.max(max, Number(f[col]));
  }
  return max;
}

/** Recv-Q of the LISTEN socket on `port`: connections waiting in the accept queue. */
export function listenQueue(port: number): number {
  return listenColumn(port, 1);
}

/** Send-Q of the LISTEN socket on `port`: its backlog (the accept queue's limit). */
export function listenBacklog(port: number): number {
  return listenColumn(port, 2);
}
