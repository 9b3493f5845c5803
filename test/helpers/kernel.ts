/** What the kernel itself says about a listener, read with `ss` (iproute2), as an operator would. */
import { execFileSync } from 'node:child_process';

/** Recv-Q of the LISTEN socket on `port`: connections waiting in the accept queue. */
export function listenQueue(port: number): number {
  const out = execFileSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8' });
  let max = 0;
  for (const line of out.trim().split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[0] === 'LISTEN') max = Math.max(max, Number(f[1]));
  }
  return max;
}
