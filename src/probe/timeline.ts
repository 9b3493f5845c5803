// --timeline: a self-contained SVG of outcomes per 100 ms bucket (by send time),
// stacked by class, with a line at each command, a legend and the totals.
import { OUTCOME_KINDS, type OutcomeKind, type ProbeResult } from './types.js';

export const BUCKET_MS = 100;

export const COLORS: Record<OutcomeKind, string> = {
  ok: '#2e9e44',
  forced: '#8e44ad',
  refused: '#9e9e9e',
  ka_race: '#f39c12',
  cut: '#d62728',
  timeout: '#111111',
  other: '#e377c2',
};

/** The deploy's phases: the soak and the commit in blue and green, a worse verdict and its rollback in red. */
const PHASE_COLORS: Record<string, string> = {
  'soak-start': '#1f77b4', 'judged-ok': '#2e9e44', 'judge-abstained': '#7f7f7f', 'judged-worse': '#d62728',
  'rolled-back': '#d62728', 'committed': '#2e9e44', 'old-retired': '#8c564b',
};

/** Bottom to top: the good at the base, the failures on top where they catch the eye. */
const STACK: OutcomeKind[] = ['ok', 'forced', 'refused', 'ka_race', 'cut', 'timeout', 'other'];
const FAILING = new Set<OutcomeKind>(['cut', 'ka_race', 'timeout', 'other']);

const W = 1000;
const H = 460;
const M = { left: 64, right: 24, top: 96, bottom: 64 };

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function niceStep(max: number, ticks: number): number {
  const raw = Math.max(max, 1) / ticks;
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
}

export function bucketize(r: ProbeResult, bucketMs = BUCKET_MS): Record<OutcomeKind, number>[] {
  const last = r.outcomes.reduce((m, o) => Math.max(m, o.startMs), 0);
  const n = Math.max(1, Math.floor(last / bucketMs) + 1);
  const buckets = Array.from({ length: n }, () => Object.fromEntries(OUTCOME_KINDS.map((k) => [k, 0])) as Record<OutcomeKind, number>);
  for (const o of r.outcomes) buckets[Math.floor(o.startMs / bucketMs)]![o.kind]++;
  return buckets;
}

export function renderTimeline(r: ProbeResult, title: string): string {
  const buckets = bucketize(r);
  const spanMs = Math.max(buckets.length * BUCKET_MS, ...r.commands.map((c) => Math.max(c.started_s, c.at_s) * 1000 + BUCKET_MS));
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const x = (ms: number): number => M.left + (ms / spanMs) * pw;
  const maxTotal = Math.max(1, ...buckets.map((b) => STACK.reduce((s, k) => s + b[k], 0)));
  const yStep = niceStep(maxTotal, 5);
  const yMax = Math.ceil(maxTotal / yStep) * yStep;
  const y = (n: number): number => M.top + ph - (n / yMax) * ph;
  const bw = Math.max(1, (BUCKET_MS / spanMs) * pw - 1);
  const el: string[] = [];

  const pass = r.status === 'pass';
  el.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  el.push(`<text x="${M.left}" y="26" font-size="17" font-weight="bold">${esc(title)}</text>`);
  el.push(
    `<text x="${W - M.right}" y="26" font-size="17" font-weight="bold" text-anchor="end" fill="${pass ? COLORS.ok : COLORS.cut}">${pass ? 'PASS: nothing cut' : 'FAIL'}</text>`,
  );
  // Legend with totals.
  const totals: Record<OutcomeKind, number> = { ok: r.ok, refused: r.refused, cut: r.cut, ka_race: r.ka_race, forced: r.forced, timeout: r.timeout, other: r.other };
  let lx = M.left;
  for (const k of STACK) {
    const label = `${k} ${totals[k]}${k === 'cut' && r.cut_after_bytes > 0 ? ` (${r.cut_after_bytes} after bytes)` : ''}`;
    el.push(`<rect x="${lx}" y="42" width="12" height="12" fill="${COLORS[k]}"/>`);
    el.push(`<text x="${lx + 16}" y="52" font-size="13"${FAILING.has(k) && totals[k] > 0 ? ' font-weight="bold"' : ''}>${esc(label)}</text>`);
    lx += 24 + label.length * 7.2;
  }
  el.push(`<text x="${M.left}" y="74" font-size="12" fill="#555">sent ${r.sent}, ran ${r.duration_s} s${r.rate.asked > 0 ? `, rate asked ${r.rate.asked}/s achieved ${r.rate.achieved}/s behind ${r.rate.behind}` : ''}</text>`);

  // Grid and axes.
  for (let v = 0; v <= yMax; v += yStep) {
    el.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${y(v)}" y2="${y(v)}" stroke="#e4e4e4"/>`);
    el.push(`<text x="${M.left - 6}" y="${y(v) + 4}" font-size="11" text-anchor="end">${v}</text>`);
  }
  const xStep = niceStep(spanMs / 1000, 10);
  for (let s = 0; s * 1000 <= spanMs + 1e-6; s += xStep) {
    const sx = x(s * 1000);
    el.push(`<line x1="${sx}" x2="${sx}" y1="${M.top + ph}" y2="${M.top + ph + 5}" stroke="#333"/>`);
    el.push(`<text x="${sx}" y="${M.top + ph + 18}" font-size="11" text-anchor="middle">${Number(s.toFixed(3))}</text>`);
  }
  el.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${M.top + ph}" y2="${M.top + ph}" stroke="#333"/>`);
  el.push(`<text x="${M.left + pw / 2}" y="${H - 14}" font-size="12" text-anchor="middle" fill="#555">seconds since start: requests per ${BUCKET_MS} ms, by the time they were sent</text>`);
  el.push(`<text transform="translate(16 ${M.top + ph / 2}) rotate(-90)" font-size="12" text-anchor="middle" fill="#555">requests</text>`);

  // Stacked bars; a failing class gets at least 2 px so that a single cut shows.
  buckets.forEach((b, i) => {
    let top = y(0);
    const tip: string[] = [];
    for (const k of STACK) {
      if (b[k] === 0) continue;
      tip.push(`${k} ${b[k]}`);
      const h = Math.max((b[k] / yMax) * ph, FAILING.has(k) ? 2 : 0);
      el.push(`<rect x="${x(i * BUCKET_MS) + 0.5}" y="${top - h}" width="${bw}" height="${h}" fill="${COLORS[k]}"/>`);
      top -= h;
    }
    const bad = STACK.find((k) => FAILING.has(k) && b[k] > 0);
    if (bad) el.push(`<path d="M${x(i * BUCKET_MS) + 0.5 + bw / 2} ${M.top + ph + 24} l-4 8 h8 z" fill="${COLORS[bad]}"/>`);
    if (tip.length > 0) {
      const from = ((i * BUCKET_MS) / 1000).toFixed(1);
      el.push(`<rect x="${x(i * BUCKET_MS)}" y="${M.top}" width="${bw + 1}" height="${ph}" fill="transparent"><title>${from} s: ${tip.join(', ')}</title></rect>`);
    }
  });

  // Command lines.
  r.commands.forEach((c, i) => {
    const at = (c.started_s >= 0 ? c.started_s : c.at_s) * 1000;
    const cx = x(at);
    const how = c.started_s < 0 ? 'not run' : c.signal ? `signal ${c.signal}` : `exit ${c.exit_code}`;
    const cmd = c.command.length > 48 ? `${c.command.slice(0, 47)}…` : c.command;
    const ly = M.top + 14 + (i % 4) * 16;
    const anchor = cx > W - 300 ? 'end' : 'start';
    el.push(`<line x1="${cx}" x2="${cx}" y1="${M.top - 4}" y2="${M.top + ph}" stroke="#1f4e9e" stroke-width="1.5" stroke-dasharray="5 3"/>`);
    el.push(
      `<text x="${anchor === 'start' ? cx + 4 : cx - 4}" y="${ly}" font-size="12" fill="#1f4e9e" text-anchor="${anchor}" stroke="#fff" stroke-width="3" paint-order="stroke">${esc(`${(at / 1000).toFixed(2)} s: ${cmd} (${how})`)}</text>`,
    );
  });

  // The deploy's phases (from quiesce's admin listener): a solid line each, labelled along the bottom.
  (r.phases ?? []).forEach((p, i) => {
    const px = x(Math.max(0, p.at_s * 1000));
    const color = PHASE_COLORS[p.phase] ?? '#555';
    const anchor = px > W - 300 ? 'end' : 'start';
    const ly = M.top + ph - 8 - (i % 5) * 15;
    el.push(`<line x1="${px}" x2="${px}" y1="${M.top}" y2="${M.top + ph}" stroke="${color}" stroke-width="2" opacity="0.8"><title>${esc(`${p.at_s.toFixed(3)} s: generation ${p.generation} ${p.phase}: ${p.text}`)}</title></line>`);
    el.push(`<text x="${anchor === 'start' ? px + 4 : px - 4}" y="${ly}" font-size="11" fill="${color}" text-anchor="${anchor}" stroke="#fff" stroke-width="3" paint-order="stroke">${esc(`gen ${p.generation} ${p.phase}`)}</text>`);
  });

  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="system-ui, -apple-system, 'Segoe UI', sans-serif">\n${el.join('\n')}\n</svg>\n`;
}

/** An .html file name gets the SVG inside a page; anything else gets the SVG itself. */
export function timelineFile(svg: string, fileName: string, title: string): string {
  if (!/\.html?$/i.test(fileName)) return svg;
  return `<!doctype html>\n<html><head><meta charset="utf-8"><title>${esc(title)}</title></head><body>\n${svg}</body></html>\n`;
}
