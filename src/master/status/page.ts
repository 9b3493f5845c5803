/**
 * /server-status as HTML, in the spirit of mod_status: the scoreboard as a row of characters and
 * as a table, generations, listeners with their accept queues, and the progress of a drain or a
 * reload. No JavaScript: `?refresh=N` adds <meta http-equiv="refresh">. Every value is escaped;
 * the response carries a CSP that allows nothing but the inline style.
 */
import { fmtBytes, fmtDuration, fmtInt, fmtLatency } from './format.js';
import { pct } from '../../shared/request-metrics.js';
import { STATES, type ProgressView, type SlotView, type StatusSnapshot } from './types.js';

export const PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const esc = (v: unknown): string => String(v)
  .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');

/** State key → CSS class suffix (keys like `_` and `.` are not valid in class names). */
const CLS: Record<string, string> = { _: 'wait', S: 'start', R: 'read', W: 'write', K: 'ka', C: 'close', G: 'grace', I: 'idle', H: 'hung', '.': 'open' };
const NAME: Record<string, string> = Object.fromEntries(STATES.map((s) => [s.key, s.doc]));

/** Seconds for ?refresh=N (1 … 3600), or undefined. */
export function refreshOf(url: URL): number | undefined {
  const v = url.searchParams.get('refresh');
  if (v === null) return undefined;
  const n = v === '' ? 5 : Math.floor(Number(v));
  return Number.isFinite(n) && n >= 1 ? Math.min(n, 3600) : undefined;
}

/** Links of a page reached with `?token=`: each carries the token (escaped for an attribute). */
function linker(url: URL): (path: string, query?: Record<string, string | number | undefined>) => string {
  const token = url.searchParams.get('token');
  return (path, query = {}) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, String(v));
    if (token) q.set('token', token);
    const qs = q.toString().replace(/=(?=&|$)/g, '');
    return esc(qs ? `${path}?${qs}` : path);
  };
}

/** The admin listener's `/`: what each page is, linked. */
export function renderIndex(url: URL, hostname: string, offLoopback: boolean): string {
  const href = linker(url);
  const pages: Array<[string, string, string]> = [
    ['/server-status', href('/server-status'), 'workers, generations, listeners, drains and reloads (HTML; <code>?refresh=N</code>)'],
    ['/server-status?auto', href('/server-status', { auto: '' }), 'the same as key: value lines, as mod_status'],
    ['/server-status?json', href('/server-status', { json: '' }), 'the same as JSON (docs/STATUS-SCHEMA.md)'],
    ['/metrics', href('/metrics'), 'Prometheus metrics'],
    ['/live', href('/live'), '200 while the master runs (liveness)'],
    ['/ready', href('/ready'), '200 while serving or reloading, 503 from the start of a stop (readiness)'],
  ];
  const rows = pages.map(([name, link, what]) => `<tr><td><a href="${link}"><code>${esc(name)}</code></a></td><td>${what}</td></tr>`).join('\n');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Admin · ${esc(hostname)} · quiesce</title>
<style>${CSS}</style>
</head>
<body>
<header><div class="title"><span class="logo" aria-hidden="true">q</span><div><h1>Admin <span class="host">${esc(hostname)}</span></h1>
<div class="meta">quiesce's admin listener</div></div></div></header>
<main><div class="panel"><table class="pages"><tbody>
${rows}
</tbody></table>${offLoopback ? '\n<p class="summary">Off loopback every page but /live and /ready needs the admin token (<code>Authorization: Bearer TOKEN</code> or <code>?token=</code>).</p>' : ''}</div></main>
</body>
</html>
`;
}

export function renderPage(s: StatusSnapshot, url: URL): string {
  const refresh = refreshOf(url);
  const href = linker(url);
  const t = s.totals;
  const upS = Math.max(1, s.uptimeMs / 1000);
  const conns = s.generationInfo.reduce((a, g) => a + g.connections, 0);
  const inflight = s.generationInfo.reduce((a, g) => a + g.inflight, 0);
  const retiringGens = s.generationInfo.filter((g) => g.retiring > 0).map((g) => g.n);
  const queued = s.listeners.reduce((a, l) => a + (l.queued ?? 0), 0);

  const card = (label: string, value: string, sub = '', cls = ''): string =>
    `<div class="card${cls ? ` ${cls}` : ''}"><div class="label">${esc(label)}</div><div class="value">${value}</div>${sub ? `<div class="sub">${sub}</div>` : ''}</div>`;

  const cards = [
    card('State', `<span class="badge st-${esc(s.state)}">${esc(s.state)}${s.phase ? ` · ${esc(s.phase)}` : ''}</span>`, `for ${esc(fmtDuration(s.stateSinceMs))}`),
    card('Generation', esc(s.generation), retiringGens.length ? `retiring: ${esc(retiringGens.join(', '))}` : `${esc(s.generations.length)} live`),
    card('Uptime', esc(fmtDuration(s.uptimeMs)), `since ${esc(s.uptimeMs < 86_400_000 ? s.startedAt.slice(11, 19) : s.startedAt.slice(0, 10))} UTC`),
    card('Requests', esc(fmtInt(t.requests)), `${esc((t.requests / upS).toFixed(2))}/s · ${esc(fmtBytes(t.bytesSent))} sent`),
    card('Connections', esc(fmtInt(conns)), `${esc(inflight)} in flight · queue ${esc(queued)}`),
    card('Cut', esc(fmtInt(t.cut)), t.cut === 0 ? 'nothing reset at close' : 'connections reset at a listener close', t.cut === 0 ? 'good' : 'bad'),
    card('Forced', esc(fmtInt(t.forced)), 'ended by the graceful timeout', t.forced === 0 ? '' : 'warn'),
    card('Drain mode', esc(s.drainMode), esc(s.drainModeReason ?? ''), s.drainMode === 'fallback' ? 'warn' : ''),
  ].join('');

  const progress = s.progress.map((p) => progressBlock(p)).join('');

  // the scoreboard: one character per slot, grouped by generation
  const byGen = new Map<number, SlotView[]>();
  for (const w of s.workers) byGen.set(w.generation, [...(byGen.get(w.generation) ?? []), w]);
  const board = [...byGen.entries()].map(([g, ws]) => {
    const info = s.generationInfo.find((x) => x.n === g);
    const tag = info ? genTag(s, info) : '';
    const cells = ws.map((w) => `<span class="cell k-${CLS[w.state] ?? 'open'}" title="${esc(`slot ${w.slot}${w.pid ? ` · pid ${w.pid}` : ''} · ${NAME[w.state] ?? w.state}`)}">${esc(w.state)}</span>`).join('');
    return `<div class="genrow"><div class="gen">gen ${esc(g)}${tag ? ` <span class="tag gt-${esc(tag)}">${esc(tag)}</span>` : ''}</div><div class="cells">${cells}</div></div>`;
  }).join('');
  const legend = STATES.map((st) => `<span class="key"><span class="cell small k-${CLS[st.key]}">${esc(st.key)}</span>${esc(st.doc)}</span>`).join('');

  const rows = s.workers.map((w) => {
    const cur = w.current ? `<code title="${esc(`${w.current.method} ${w.current.path}`)}">${esc(w.current.method)} ${esc(w.current.path)}</code> <span class="dim">${esc(fmtDuration(w.current.sinceMs))}</span>` : '<span class="dim">–</span>';
    const dash = '<span class="dim">–</span>';
    return `<tr${w.pid === null ? ' class="openrow"' : ''}>` +
      `<td class="num">${esc(w.slot)}</td><td class="num">${esc(w.generation)}</td><td class="num">${w.pid === null ? dash : esc(w.pid)}</td>` +
      `<td><span class="cell small k-${CLS[w.state] ?? 'open'}">${esc(w.state)}</span>${w.pid === null ? '' : ` <span class="dim">${esc(fmtDuration(w.stateMs))}</span>`}</td>` +
      `<td>${esc(w.phase)}${w.retireReason ? ` <span class="dim"${w.retiringMs !== undefined ? ` title="for ${esc(fmtDuration(w.retiringMs))}"` : ''}>· ${esc(w.retireReason)}</span>` : ''}</td>` +
      `<td class="num">${esc(fmtInt(w.requests))}</td><td class="num">${esc(fmtBytes(w.bytesSent))}</td>` +
      `<td class="num">${esc(w.connections)}<span class="dim"> / ${esc(w.inflight)}</span></td><td class="req">${cur}</td>` +
      `<td class="num">${w.rssBytes === null ? dash : esc(fmtBytes(w.rssBytes))}</td>` +
      `<td class="num">${w.cpuPercent === null ? dash : `${esc(w.cpuPercent.toFixed(1))}%`}${w.cpuSeconds === null ? '' : ` <span class="dim">${esc(w.cpuSeconds.toFixed(2))} s</span>`}</td>` +
      `<td class="num">${w.pid === null ? dash : esc(fmtDuration(w.ageMs))}</td></tr>`;
  }).join('');

  const gens = s.generationInfo.map((g) => `<tr><td class="num">${esc(g.n)}</td>` +
    `<td>${genTag(s, g) ? `<span class="badge gt-${esc(genTag(s, g))}">${esc(genTag(s, g))}</span>` : '<span class="dim">–</span>'}</td>` +
    `<td class="num">${esc(g.ready)}<span class="dim"> / ${esc(g.workers)}</span></td><td class="num">${esc(g.retiring)}</td>` +
    `<td class="num">${esc(fmtInt(g.requests))}</td><td class="num">${esc(g.connections)}</td><td class="num">${esc(g.inflight)}</td>` +
    (g.http ? `<td class="num">${esc(g.http.rps)}</td><td class="num${g.http.ratio5xx > 0 ? ' bad' : ''}">${esc(pct(g.http.ratio5xx))}</td>` +
      `<td class="num">${esc(fmtLatency(g.http.p50Ms))}</td><td class="num">${esc(fmtLatency(g.http.p99Ms))}</td>` : '<td class="dim" colspan="4">metrics off</td>') +
    `<td class="num">${esc(fmtDuration(g.ageMs))}</td></tr>`).join('');
  // the latest reloads' phases (soak, the judge's verdict, rollback or commit, the old generation gone)
  const deploys = s.deploys.slice(-8).map((e) => `<li class="dp-${esc(e.phase)}"><span class="dim">${esc(e.at.slice(11, 23))}</span> ` +
    `<b>gen ${esc(e.generation)} ${esc(e.phase)}</b> ${esc(e.text)}</li>`).join('');

  const listeners = s.listeners.map((l) => `<tr><td><code>${esc(l.address)}</code></td><td>${esc(l.kind)}</td>` +
    `<td><span class="badge ls-${esc(l.state)}">${esc(l.state)}</span></td>` +
    `<td class="num">${l.queued === null ? '<span class="dim">–</span>' : esc(l.queued)}${l.backlog !== null ? ` <span class="dim">/ ${esc(l.backlog)}</span>` : ''}</td>` +
    `<td class="num">${l.halfOpen === null ? '<span class="dim">–</span>' : esc(l.halfOpen)}</td></tr>`).join('');

  const retired = Object.entries(t.retired);
  const d = s.lastDrain;
  const facts = (pairs: Array<[string, string]>): string => `<dl class="facts">${pairs.map(([k, v]) => `<div><dt>${esc(k)}</dt><dd>${v}</dd></div>`).join('')}</dl>`;

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
${refresh ? `<meta http-equiv="refresh" content="${esc(refresh)}">\n` : ''}<title>Server status · ${esc(s.server.hostname)} · quiesce</title>
<style>${CSS}</style>
</head>
<body>
<header>
  <div class="title"><span class="logo" aria-hidden="true">q</span><div><h1>Server status <span class="host">${esc(s.server.hostname)}</span></h1>
  <div class="meta">quiesce ${esc(s.server.version)} · node ${esc(s.server.node)} · ${esc(s.server.mpm)} · master pid ${esc(s.pid)} · ${esc(s.now.replace('T', ' ').replace(/\.\d+Z$/, ' UTC'))}</div></div></div>
  <nav>${refresh ? `<span class="live">refreshing every ${esc(refresh)} s</span>` : ''}
    <span class="group">refresh ${[1, 2, 5, 10].map((n) => `<a href="${href('/server-status', { refresh: n })}"${n === refresh ? ' class="on"' : ''}>${n}s</a>`).join('')}<a href="${href('/server-status')}"${refresh ? '' : ' class="on"'}>off</a></span>
    <span class="group"><a href="${href('/server-status', { auto: '' })}">?auto</a><a href="${href('/server-status', { json: '' })}">?json</a><a href="${href('/metrics')}">/metrics</a></span></nav>
</header>
<main>
<section class="cards">${cards}</section>
${progress ? `<section class="progress-list" aria-label="in progress">${progress}</section>` : ''}
<section class="panel">
  <h2>Scoreboard <code class="raw" title="the scoreboard as mod_status prints it">${esc(s.scoreboard)}</code></h2>
  <div class="board">${board || '<span class="dim">no worker</span>'}</div>
  <div class="legend">${legend}</div>
  <p class="summary">${esc(s.counts.busy)} busy · ${esc(s.counts.idle)} idle · ${esc(s.counts.processes)} process${s.counts.processes === 1 ? '' : 'es'}</p>
</section>
<section class="panel">
  <h2>Workers</h2>
  <div class="scroll"><table class="workers">
    <thead><tr><th class="num">Slot</th><th class="num">Gen</th><th class="num">PID</th><th>State</th><th>Phase</th><th class="num">Requests</th><th class="num">Sent</th><th class="num" title="open connections / requests in flight">Conns</th><th>Current request</th><th class="num">RSS</th><th class="num" title="since the last look, and in total">CPU</th><th class="num">Age</th></tr></thead>
    <tbody>${rows || '<tr><td colspan="12" class="dim">no worker</td></tr>'}</tbody>
  </table></div>
</section>
<div class="twocol">
<section class="panel">
  <h2>Generations</h2>
  <div class="scroll"><table><thead><tr><th>Gen</th><th></th><th class="num">Ready</th><th class="num">Retiring</th><th class="num">Requests</th><th class="num">Conns</th><th class="num">In flight</th><th class="num" title="responses per second, over the last second or more">Req/s</th><th class="num">5xx</th><th class="num" title="latency, request headers to response end">p50</th><th class="num">p99</th><th class="num">Age</th></tr></thead>
  <tbody>${gens || '<tr><td colspan="12" class="dim">none</td></tr>'}</tbody></table></div>
  ${deploys ? `<h2 class="sub2">Last reloads</h2><ol class="deploys">${deploys}</ol>` : ''}
</section>
<section class="panel">
  <h2>Listeners</h2>
  <div class="scroll"><table><thead><tr><th>Address</th><th>Kind</th><th>State</th><th class="num">Queue</th><th class="num">Half-open</th></tr></thead>
  <tbody>${listeners || '<tr><td colspan="5" class="dim">none</td></tr>'}</tbody></table></div>
</section>
</div>
<div class="twocol">
<section class="panel">
  <h2>Since the start</h2>
  ${facts([
    ['Accepted', esc(fmtInt(t.accepted))], ['Requests', esc(fmtInt(t.requests))], ['Completed', esc(fmtInt(t.completed))],
    ['Refused by design', esc(fmtInt(t.refused))], ['Shed (--queue-timeout)', esc(fmtInt(t.shed))], ['Cut', `<span class="${t.cut === 0 ? 'ok' : 'bad'}">${esc(fmtInt(t.cut))}</span>`],
    ['Forced', esc(fmtInt(t.forced))], ['Reloads', `${esc(t.reloads)}${t.reloadsFailed ? ` <span class="bad">(${esc(t.reloadsFailed)} failed)</span>` : ''}`],
    ['Last reload', s.lastReloadMs === undefined ? '<span class="dim">–</span>' : esc(fmtDuration(s.lastReloadMs))],
    ['Drains', esc(t.drains)],
    ...(s.protocols ? [['By protocol', Object.entries(s.protocols).map(([p, x]) => `${esc(p)} ${esc(fmtInt(x.requests))} requests, ${esc(fmtInt(x.connections))} open`).join(' · ')] as [string, string]] : []),
    ['Workers retired', retired.length ? retired.map(([k, v]) => `${esc(k)} ${esc(v)}`).join(' · ') : '<span class="dim">none</span>'],
  ])}
</section>
<section class="panel">
  <h2>Last drain</h2>
  ${d ? facts([
    ['Mode', esc(d.mode)], ['Gate → close', esc(fmtDuration(d.gateToCloseMs))], ['Queued at the gate', esc(d.queuedAtGate)],
    ['Accepted in the drain', esc(d.acceptedInDrain)], ['Handed over by the master', esc(d.handedOverByMaster)],
    ['Left at close', `<span class="${d.leftAtClose === 0 ? 'ok' : 'bad'}">${esc(d.leftAtClose)}</span>`], ['Rounds', esc(d.rounds)],
    ['Capped out', d.cappedOut ? '<span class="bad">yes</span>' : 'no'],
  ]) : '<p class="dim">No drain yet: listeners are drained at a stop, or when a reload removes one.</p>'}
</section>
</div>
</main>
<footer>Scoreboard keys as in Apache mod_status. Machine-readable: <a href="${href('/server-status', { auto: '' })}">?auto</a>, <a href="${href('/server-status', { json: '' })}">?json</a>, <a href="${href('/metrics')}">/metrics</a>.</footer>
</body>
</html>
`;
}

/** What a generation is doing, in one word (shown beside it). */
function genTag(s: StatusSnapshot, g: StatusSnapshot['generationInfo'][number]): string {
  if (s.state === 'draining' || s.state === 'stopping') return 'stopping';
  if (g.current) return s.state === 'reloading' ? 'starting' : 'serving';
  if (g.retiring > 0) return 'retiring';
  if (s.state === 'reloading' && g.n === s.generation) return 'serving';
  return g.starting > 0 ? 'starting' : '';
}

function progressBlock(p: ProgressView): string {
  const pct = p.timeoutMs > 0 ? Math.min(100, (p.elapsedMs / p.timeoutMs) * 100) : 100;
  const title: Record<ProgressView['kind'], string> = { drain: 'Stopping: draining', stop: 'Stopping: workers finishing', reload: 'Reloading', retire: 'Retiring', upgrade: 'Upgrading: a new master starts' };
  const gens = p.generations.length ? ` · generation ${p.generations.join(', ')}` : '';
  return `<div class="progress k-${esc(p.kind)}">
  <div class="ptitle"><strong>${esc(title[p.kind])}</strong> <span class="dim">${esc(p.phase)}${esc(gens)}</span><span class="elapsed">${esc(fmtDuration(p.elapsedMs))} <span class="dim">of ${esc(fmtDuration(p.timeoutMs))}</span></span></div>
  <div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow="${esc(Math.round(pct))}"><span style="width:${esc(pct.toFixed(1))}%"></span></div>
  <div class="pfigs"><span><b>${esc(p.connectionsLeft)}</b> connection${p.connectionsLeft === 1 ? '' : 's'} left</span><span><b>${esc(p.inflightLeft)}</b> in flight</span><span><b>${esc(p.workersLeft)}</b> worker${p.workersLeft === 1 ? '' : 's'}</span><span><b>${esc(p.queued)}</b> queued</span></div>
</div>`;
}

const CSS = `
:root{--bg:#f6f7f9;--panel:#fff;--ink:#1d2330;--dim:#6b7385;--line:#e3e6ec;--accent:#3558d6;
--ok:#1f8a4c;--bad:#c62828;--warn:#b26a00;font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#12151b;--panel:#1a1f28;--ink:#e6e9ef;--dim:#8d95a6;--line:#2a303c;--accent:#7d99ff}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font-size:14px;line-height:1.45}
code,.cell,.raw{font-family:ui-monospace,"SF Mono","JetBrains Mono",Menlo,Consolas,"DejaVu Sans Mono",monospace}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
header{display:flex;flex-wrap:wrap;gap:12px 24px;align-items:center;justify-content:space-between;padding:18px 28px;background:var(--panel);border-bottom:1px solid var(--line)}
.title{display:flex;gap:14px;align-items:center}
.logo{display:inline-grid;place-items:center;width:38px;height:38px;border-radius:10px;background:linear-gradient(135deg,#3558d6,#7b1fa2);color:#fff;font-weight:700;font-size:22px}
h1{margin:0;font-size:20px;font-weight:650}.host{font-weight:400;color:var(--dim);margin-left:6px}
.meta{color:var(--dim);font-size:12.5px}
nav{display:flex;gap:14px;align-items:center;flex-wrap:wrap;font-size:13px}
nav .group{display:inline-flex;align-items:center;gap:2px;color:var(--dim)}
nav .group a{padding:3px 8px;border-radius:6px;border:1px solid var(--line);margin-left:4px}
nav a.on{background:var(--accent);color:#fff;border-color:var(--accent)}
.live{color:var(--ok);font-weight:600}.live::before{content:"● "}
main{padding:22px 28px;display:flex;flex-direction:column;gap:18px;max-width:1400px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(130px,1fr));gap:12px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:12px;padding:12px 14px}
.card .label{font-size:11.5px;text-transform:uppercase;letter-spacing:.06em;color:var(--dim)}
.card .value{font-size:22px;font-weight:650;margin-top:2px;font-variant-numeric:tabular-nums}
.card .sub{font-size:12px;color:var(--dim);margin-top:2px;overflow-wrap:anywhere}
.card.good{border-color:#bfe3cc}.card.good .value{color:var(--ok)}
.card.bad{border-color:#f0b8b8;background:#fff5f5}.card.bad .value{color:var(--bad)}
.card.warn .value{color:var(--warn)}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-size:14px;font-weight:600;background:#eef0f4;color:#404756}
.card .badge{font-size:17px}
.st-serving,.ls-open{background:#e3f5ea;color:#1f7a45}.st-reloading{background:#e4ebff;color:#2f4fc4}
.st-draining,.ls-gated{background:#fff1d6;color:#955800}.st-stopping{background:#ffe3e0;color:#b3261e}
.st-starting,.st-stopped,.ls-closed{background:#eceef2;color:#5b6272}
.gt-serving{background:#e3f5ea;color:#1f7a45}.gt-starting{background:#e4ebff;color:#2f4fc4}.gt-retiring{background:#f3e5f8;color:#7b1fa2}.gt-stopping{background:#ffe3e0;color:#b3261e}
.panel{background:var(--panel);border:1px solid var(--line);border-radius:12px;padding:14px 18px}
h2{margin:0 0 12px;font-size:15px;font-weight:650;display:flex;align-items:center;gap:12px;flex-wrap:wrap}
.raw{font-size:13px;font-weight:500;background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:2px 8px;letter-spacing:.15em}
.board{display:flex;flex-direction:column;gap:8px}
.genrow{display:flex;align-items:center;gap:12px}
.gen{min-width:130px;color:var(--dim);font-size:13px}
.tag{font-size:11px;padding:1px 7px;border-radius:999px;background:var(--bg);border:1px solid var(--line);margin-left:4px}
.tag.gt-serving,.tag.gt-starting,.tag.gt-retiring,.tag.gt-stopping{border-color:transparent}
.cells{display:flex;flex-wrap:wrap;gap:4px}
.cell{display:inline-grid;place-items:center;width:30px;height:30px;border-radius:7px;font-weight:700;font-size:16px;border:1px solid transparent}
.cell.small{width:22px;height:22px;font-size:13px;border-radius:5px;vertical-align:middle}
.k-wait{background:#e9f6ee;color:#1f7a45;border-color:#c9e8d4}.k-start{background:#e4ebff;color:#2f4fc4}
.k-read{background:#fff4d6;color:#8a5a00}.k-write{background:#1f8a4c;color:#fff}
.k-ka{background:#dff3f1;color:#00695c}.k-close{background:#ffe9d6;color:#b34700}
.k-grace{background:#7b1fa2;color:#fff}.k-hung{background:#b71c1c;color:#fff}.k-idle{background:#fbe3ee;color:#ad1457}
.k-open{background:transparent;color:#a3a9b6;border:1px dashed #c9ced8}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;margin-top:14px;font-size:12px;color:var(--dim)}
.legend .key{display:inline-flex;align-items:center;gap:6px}
.summary{margin:10px 0 0;color:var(--dim);font-size:12.5px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th{font-size:11px;text-transform:uppercase;letter-spacing:.05em;color:var(--dim);text-align:left;font-weight:600;padding:6px 9px;border-bottom:1px solid var(--line);white-space:nowrap}
td{padding:7px 9px;border-bottom:1px solid var(--line);white-space:nowrap}
tbody tr:last-child td{border-bottom:none}
tbody tr:hover{background:var(--bg)}
th.num,.num{text-align:right}
.req code{font-size:12.5px;max-width:220px;overflow:hidden;text-overflow:ellipsis;display:inline-block;vertical-align:bottom}
.openrow td{color:var(--dim)}
.dim{color:var(--dim)}.ok{color:var(--ok);font-weight:600}.bad{color:var(--bad);font-weight:700}
.twocol{display:grid;grid-template-columns:minmax(0,1.2fr) minmax(0,1fr);gap:18px}
@media (max-width:1000px){.twocol{grid-template-columns:minmax(0,1fr)}}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px 18px;margin:0}
.facts div{border-left:3px solid var(--line);padding-left:10px}
.facts dt{font-size:11.5px;color:var(--dim);text-transform:uppercase;letter-spacing:.05em}
.facts dd{margin:0;font-size:15px;font-weight:600;font-variant-numeric:tabular-nums}
.progress-list{display:flex;flex-direction:column;gap:10px}
.progress{background:var(--panel);border:1px solid var(--line);border-left:4px solid #e09b00;border-radius:12px;padding:12px 16px}
.progress.k-reload{border-left-color:#3558d6}.progress.k-retire{border-left-color:#7b1fa2}.progress.k-stop{border-left-color:#c62828}
.ptitle{display:flex;gap:10px;align-items:baseline}.ptitle .elapsed{margin-left:auto;font-variant-numeric:tabular-nums}
.bar{height:8px;border-radius:99px;background:var(--bg);border:1px solid var(--line);overflow:hidden;margin:8px 0}
.bar span{display:block;height:100%;background:linear-gradient(90deg,#e09b00,#f3c14b)}
.k-reload .bar span{background:linear-gradient(90deg,#3558d6,#7d99ff)}.k-retire .bar span{background:linear-gradient(90deg,#7b1fa2,#b55bd6)}
.sub2{margin:16px 0 6px;font-size:13px}.deploys{margin:0;padding-left:18px;font-size:12.5px}.deploys li{margin:2px 0}
.dp-judged-worse b,.dp-rolled-back b{color:var(--bad)}.dp-judged-ok b,.dp-committed b{color:var(--ok)}
.pfigs{display:flex;gap:20px;flex-wrap:wrap;color:var(--dim);font-size:13px}.pfigs b{color:var(--ink)}
footer{padding:0 28px 26px;color:var(--dim);font-size:12px}
`;
