/** Small formatters shared by the status page, ?auto and `quiesce status`. */
import { pct, type HttpFigures } from '../../shared/request-metrics.js';

/** 850 ms, 12.3 s, 4 min 03 s, 2 h 05 min, 3 d 04 h */
export function fmtDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.floor(s)} s`;
  const pad = (n: number) => String(n).padStart(2, '0');
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${pad(Math.floor(s % 60))} s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${pad(m % 60)} min`;
  return `${Math.floor(h / 24)} d ${pad(h % 24)} h`;
}

/** Compact: 850ms, 12.3s, 4m03s, 2h05m, 3d04h (terminal tables) */
export function fmtShortDuration(ms: number): string {
  return fmtDuration(ms).replace(/ (ms|s|min|h|d)\b/g, (_, u: string) => (u === 'min' ? 'm' : u)).replace(/ /g, '');
}

/** 512 B, 1.5 kB, 12 MB (powers of 1024, as mod_status) */
export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '-';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${v} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** 1,234,567. Not toLocaleString: that pages Node's ICU data into the master (~5 MB of RSS). */
export function fmtInt(n: number): string {
  const s = String(Math.trunc(n));
  return s.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** mod_status' long uptime form: "1 day 2 hours 3 minutes 4 seconds" */
export function fmtUptime(ms: number): string {
  let s = Math.floor(ms / 1000);
  const parts: string[] = [];
  for (const [unit, size] of [['day', 86400], ['hour', 3600], ['minute', 60]] as const) {
    const n = Math.floor(s / size);
    s -= n * size;
    if (n > 0) parts.push(`${n} ${unit}${n === 1 ? '' : 's'}`);
  }
  parts.push(`${s} second${s === 1 ? '' : 's'}`);
  return parts.join(' ');
}

/** 0.42 ms, 8.1 ms, 35 ms, "-" when unknown */
export function fmtLatency(ms: number | null): string {
  if (ms === null) return '-';
  return `${ms < 1 ? ms.toFixed(2) : ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
}

/** A generation's (or worker's) responses in one line: "12.3 req/s · 5xx 0.1% · p50 12 ms · p99 30 ms". */
export function fmtHttp(h: HttpFigures, sep = ' · '): string {
  return [`${h.rps} req/s`, `5xx ${pct(h.ratio5xx)}`, `p50 ${fmtLatency(h.p50Ms)}`, `p99 ${fmtLatency(h.p99Ms)}`].join(sep);
}
