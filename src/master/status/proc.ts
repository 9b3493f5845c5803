/**
 * RSS and CPU time of a process, read by the master from /proc (no extra process, no IPC):
 * /proc/PID/stat fields 14-15 (utime, stime in clock ticks) and /proc/PID/statm field 2 (resident
 * pages). Off Linux, or when the process is gone, the figures are null.
 */
import { readFileSync } from 'node:fs';

/** USER_HZ: the unit of /proc times. 100 on every Linux architecture Node runs on (sysconf(_SC_CLK_TCK)). */
const CLK_TCK = 100;

let pageSize: number | undefined;

/** The page size, found once by comparing our own statm with process.memoryUsage.rss(). */
function page(): number {
  if (pageSize === undefined) {
    pageSize = 4096;
    try {
      const pages = Number(readFileSync('/proc/self/statm', 'utf8').split(' ')[1]);
      const rss = process.memoryUsage.rss();
      if (pages > 0) {
        const guess = 2 ** Math.round(Math.log2(rss / pages));
        if (guess >= 4096 && guess <= 65536) pageSize = guess;
      }
    } catch { /* not Linux: the figures will be null anyway */ }
  }
  return pageSize;
}

export type ProcSample = { rssBytes: number; cpuSeconds: number; startTicks: number };

export function readProc(pid: number): ProcSample | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name (field 2) is in parentheses and may hold spaces: split after the last ')'
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // f[0] is field 3 (state): utime = field 14 → f[11], stime = field 15 → f[12], starttime = field 22 → f[19]
    const ticks = Number(f[11]) + Number(f[12]);
    const statm = readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ');
    const resident = Number(statm[1]);
    if (!Number.isFinite(ticks) || !Number.isFinite(resident)) return null;
    return { rssBytes: resident * page(), cpuSeconds: ticks / CLK_TCK, startTicks: Number(f[19]) };
  } catch {
    return null;
  }
}

/** CPU percentages between successive snapshots, per pid (a pid reused by a new process starts over). */
export class CpuMeter {
  private readonly last = new Map<number, { cpu: number; at: number; start: number; percent: number }>();

  /** `ageMs`: the process's age, used for the first sample (its average over its life). */
  percent(pid: number, s: ProcSample, ageMs: number, now: number): number {
    const prev = this.last.get(pid);
    if (prev && prev.start === s.startTicks) {
      // snapshots closer than 250 ms apart show the previous figure (ticks are 10 ms)
      if (now - prev.at < 250) return prev.percent;
      const percent = round1(((s.cpuSeconds - prev.cpu) * 1000 * 100) / (now - prev.at));
      this.last.set(pid, { cpu: s.cpuSeconds, at: now, start: s.startTicks, percent });
      return percent;
    }
    const percent = ageMs > 0 ? round1((s.cpuSeconds * 1000 * 100) / ageMs) : 0;
    this.last.set(pid, { cpu: s.cpuSeconds, at: now, start: s.startTicks, percent });
    return percent;
  }

  /** Forget pids that are no longer workers. */
  keep(pids: ReadonlySet<number>): void {
    for (const pid of this.last.keys()) if (!pids.has(pid)) this.last.delete(pid);
  }
}

function round1(x: number): number {
  return Math.max(0, Math.round(x * 10) / 10);
}
