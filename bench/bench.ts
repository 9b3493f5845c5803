/**
 * npm run bench [-- --quick] [--rounds N] [--duration S] [--connections C] [--threads T] [--loadgen wrk|autocannon] [--only ID,ID]
 *
 * Throughput and latency of quiesce against node:cluster (round-robin and SCHED_NONE), same app,
 * 2 workers each, and for the static rows against nginx too (Debian's, its own config in a temp
 * dir: 2 workers, sendfile on, access log off; rows skipped with a note when there is no nginx
 * binary), measured side by side in one run: every scenario starts its servers, then
 * runs interleaved rounds (5 by default; the order rotates each round) and keeps the medians. The
 * machine is shared and noisy: the ratios are what to read, not the absolute numbers. A ratio
 * against the better of two node:cluster rows leans below 1.0x when all three are equal (the larger
 * of two noisy medians); more rounds shrink that lean. Targets are shown, not
 * enforced; the exit code is non-zero only when the bench itself fails.
 *
 * --pin: the load generator on CPU 0 and every process of every server (master, workers,
 * node:cluster's primary, nginx's master) on CPU 1, so that a server's throughput is what one CPU
 * gives it, not what the load generator (one wrk thread takes 65-90% of a core here) and the
 * machine's other work leave it: how the TLS rows resolve a few percent (docs/STATUS.md).
 */
import { dirname, join } from 'node:path';
import {
  APPS, bareNodeRssKiB, benchCert, benchSite, canPin, pinTree, rssAnonKiB, envLine, flags, fmt, median, nginxBinary, quiesceWorkers, rssKiB, sleep, startBareStatic, startCluster, startNginx, startQuiesce, table,
  type Running, type WorkerStat, runBench
} from './lib.js';
import { h2loadGen, pickLoadGen, shareText, tallyPids, type LoadResult } from './loadgen.js';

type Scenario = {
  id: string;
  label: string;
  app?: string;
  static?: boolean;
  path: string;
  close: boolean;
  log: boolean;
  /** Which target the row is held to. */
  target: 'ka' | 'close' | 'same';
  /** Static rows: the least ratio to nginx wanted (issue 18), if any. */
  vsNginx?: number;
  share?: boolean;
  /** Over TLS (one ECDSA P-256 certificate for all): HTTP/1.1 (wrk), or HTTP/2 (h2load); h2c: HTTP/2 in the clear with prior knowledge (h2load; quiesce --h2c on). node:cluster runs https.createServer (http2.createSecureServer for h2, http2.createServer for h2c), nginx answers from its config. */
  tls?: 'h1' | 'h2' | 'h2c';
};

const SCENARIOS: Scenario[] = [
  { id: 'ka', label: 'hello, keep-alive', app: 'hello.mjs', path: '/', close: false, log: false, target: 'ka', share: true },
  { id: 'close', label: 'hello, new connection per request', app: 'hello.mjs', path: '/', close: true, log: false, target: 'close', share: true },
  { id: 'ka-log', label: 'hello, keep-alive, access log on', app: 'hello.mjs', path: '/', close: false, log: true, target: 'ka' },
  { id: 'close-log', label: 'hello, new connection, access log on', app: 'hello.mjs', path: '/', close: true, log: true, target: 'close' },
  { id: 'static-2k', label: 'static file 2 KB, keep-alive', static: true, path: '/2k.txt', close: false, log: false, target: 'same', vsNginx: 0.85 },
  { id: 'static-2k-close', label: 'static file 2 KB, new connection per request', static: true, path: '/2k.txt', close: true, log: false, target: 'same', vsNginx: 0.6 },
  { id: 'static-64k', label: 'static file 64 KB, keep-alive', static: true, path: '/64k.bin', close: false, log: false, target: 'same' },
  { id: 'static-1m', label: 'static file 1 MB, keep-alive', static: true, path: '/1m.bin', close: false, log: false, target: 'same', vsNginx: 0.8 },
  { id: 'express', label: 'Express app, keep-alive', app: 'express.mjs', path: '/', close: false, log: false, target: 'same' },
  { id: 'hono', label: 'Hono app, keep-alive', app: 'hono.mjs', path: '/', close: false, log: false, target: 'same' },
  { id: 'tls-ka', label: 'hello over TLS, keep-alive', app: 'hello.mjs', path: '/', close: false, log: false, target: 'same', tls: 'h1' },
  { id: 'tls-close', label: 'hello over TLS, new connection per request (every other one resumed)', app: 'hello.mjs', path: '/', close: true, log: false, target: 'same', tls: 'h1' },
  { id: 'h2', label: 'hello over HTTP/2 (10 streams per session)', app: 'hello.mjs', path: '/', close: false, log: false, target: 'same', tls: 'h2' },
  { id: 'h2c', label: 'hello over HTTP/2 in the clear, h2c (10 streams per session)', app: 'hello.mjs', path: '/', close: false, log: false, target: 'same', tls: 'h2c' },
];

const SERVERS = ['quiesce', 'cluster-RR', 'cluster-NONE'] as const;
type ServerName = (typeof SERVERS)[number] | 'nginx' | 'bare';

async function main(): Promise<void> {
  const f = flags(process.argv.slice(2), { quick: 'bool', rounds: 'num', duration: 'num', connections: 'num', threads: 'num', loadgen: 'str', only: 'str', pin: 'bool', help: 'bool' });
  if (f.help) { process.stdout.write('usage: npm run bench -- [--quick] [--rounds N] [--duration S] [--connections C] [--threads T] [--loadgen wrk|autocannon] [--only ID,…] [--pin]\n'); return; }
  const quick = f.quick === true;
  const rounds = Math.round((f.rounds as number | undefined) ?? (quick ? 1 : 5));
  const durationS = Math.max(1, Math.round((f.duration as number | undefined) ?? (quick ? 1 : 2))); // wrk takes whole seconds
  const warmupS = quick ? 0 : 1; // --quick: no warm-up (a smoke run)
  const connections = Math.round((f.connections as number | undefined) ?? 50);
  const threads = Math.round((f.threads as number | undefined) ?? 1);
  const shareMs = quick ? 700 : 1000;
  const gen = pickLoadGen(f.loadgen as string | undefined);
  const only = typeof f.only === 'string' ? new Set(f.only.split(',')) : undefined;
  /** --pin: the CPU the load generator runs on (the servers on CPU 1). */
  const loadCpu = f.pin === true ? 0 : undefined;
  if (loadCpu !== undefined && !canPin()) throw new Error('--pin needs 2 CPUs and taskset (util-linux)');
  const scenarios = SCENARIOS.filter((s) => !only || only.has(s.id));
  if (scenarios.length === 0 && !only?.has('stats')) throw new Error(`--only: none of ${SCENARIOS.map((s) => s.id).join(',')},stats`);

  const www = benchSite('quiesce-bench-data-');
  const cert = scenarios.some((s) => s.tls && s.tls !== 'h2c') ? benchCert() : undefined;
  const h2gen = h2loadGen();
  if (!h2gen && scenarios.some((s) => s.tls === 'h2' || s.tls === 'h2c')) process.stderr.write('bench: no h2load (apt-get install nghttp2-client): the HTTP/2 rows are skipped\n');
  const work = dirname(www);
  const nginx = nginxBinary();
  if (!nginx && scenarios.some((s) => s.static)) process.stderr.write('bench: no nginx binary found (apt-get install nginx): the static rows run without nginx\n');

  const log = (m: string) => process.stderr.write(`bench: ${m}\n`);
  log(`${gen.name}, ${connections} connections, ${threads} thread(s), ${rounds} round(s) of ${durationS}s per server and scenario, warm-up ${warmupS ? `${warmupS}s` : 'none'}`);

  type Row = { s: Scenario; names: readonly ServerName[]; res: Record<ServerName, LoadResult[]>; rssKiB: number; anonKiB: number; rrPrimaryKiB: number; logBytes?: Record<(typeof SERVERS)[number], number>; qShare?: string; tally?: Record<ServerName, string> };
  const rows: Row[] = [];
  const t0 = performance.now();

  for (const s of scenarios) {
    const h2 = s.tls === 'h2' || s.tls === 'h2c';
    if (h2 && !h2gen) continue;
    const g = h2 ? h2gen! : gen;
    log(`${s.id}: starting servers`);
    const app = s.app ? join(APPS, s.app) : www;
    const logFile = (n: string) => (s.log ? join(work, `${s.id}-${n}-access.log`) : undefined);
    const started: Running[] = [];
    // static rows: bare Node (a prefork http.Server answering from memory) as the floor of any Node server
    const names: readonly ServerName[] = [...SERVERS, ...((s.static || s.tls) && nginx ? ['nginx' as const] : []), ...(s.static ? ['bare' as const] : [])];
    const tls = s.tls === 'h2c' ? { http2: true } : s.tls ? { tls: cert!, http2: s.tls === 'h2' } : {};
    let servers: Partial<Record<ServerName, Running>>;
    try {
      const [q, rr, none, ngx, bareNode] = await Promise.all([
        startQuiesce({ app, accessLog: logFile('quiesce'), extra: s.tls === 'h2c' ? ['--h2c', 'on'] : s.tls ? ['--tls-cert', cert!.cert, '--tls-key', cert!.key] : [] }).then((x) => (started.push(x), x)),
        startCluster({ ...(s.static ? { static: www } : { app }), sched: 'rr', accessLog: logFile('rr'), ...tls }).then((x) => (started.push(x), x)),
        startCluster({ ...(s.static ? { static: www } : { app }), sched: 'none', accessLog: logFile('none'), ...tls }).then((x) => (started.push(x), x)),
        names.includes('nginx') ? startNginx({ root: www, ...tls, hello: s.tls !== undefined }).then((x) => (started.push(x), x)) : undefined,
        names.includes('bare') ? startBareStatic(www).then((x) => (started.push(x), x)) : undefined,
      ]);
      servers = { quiesce: q, 'cluster-RR': rr, 'cluster-NONE': none, ...(ngx ? { nginx: ngx } : {}), ...(bareNode ? { bare: bareNode } : {}) };
      if (loadCpu !== undefined) for (const r of Object.values(servers)) pinTree(r.pid, 1);
    } catch (e) {
      for (const r of started) await r.kill();
      throw e;
    }
    const q = servers.quiesce!;
    const rrServer = servers['cluster-RR']!;
    let rss = rssKiB(q.pid);
    let anon = rssAnonKiB(q.pid);
    let rrPrimary = rssKiB(rrServer.pid);
    const sampler = setInterval(() => {
      rss = Math.max(rss, rssKiB(q.pid));
      anon = Math.max(anon, rssAnonKiB(q.pid));
      rrPrimary = Math.max(rrPrimary, rssKiB(rrServer.pid));
    }, 100);
    try {
      const url = (n: ServerName) => `${s.tls && s.tls !== 'h2c' ? 'https' : 'http'}://127.0.0.1:${servers[n]!.port}${s.path}`;
      // h2load: fewer sessions, each with 10 streams
      const conns = h2 ? Math.max(1, Math.round(connections / 5)) : connections;
      if (warmupS > 0) for (const n of names) await g.run({ url: url(n), durationS: warmupS, connections: conns, threads, close: s.close, cpu: loadCpu });
      const before = s.share ? await quiesceWorkers(q) : [];
      const res = { quiesce: [], 'cluster-RR': [], 'cluster-NONE': [], nginx: [], bare: [] } as Record<ServerName, LoadResult[]>;
      for (let r = 0; r < rounds; r++) {
        const order = names.map((_, i) => names[(i + r) % names.length]!);
        for (const n of order) {
          const x = await g.run({ url: url(n), durationS, connections: conns, threads, close: s.close, cpu: loadCpu });
          res[n].push(x);
          await sleep(50);
        }
      }
      const row: Row = { s, names, res, rssKiB: 0, anonKiB: 0, rrPrimaryKiB: 0 };
      if (s.share) {
        const after = await quiesceWorkers(q);
        row.qShare = shareText(after.map((w: WorkerStat) => w.requests - (before.find((b) => b.pid === w.pid)?.requests ?? 0)));
        row.tally = {} as Record<ServerName, string>;
        for (const n of SERVERS) row.tally[n] = shareText((await tallyPids(servers[n]!.port, s.close, shareMs)).values());
      }
      row.rssKiB = Math.max(rss, rssKiB(q.pid));
      row.anonKiB = anon;
      row.rrPrimaryKiB = rrPrimary;
      if (s.log) {
        await sleep(300); // let the last lines reach the files
        const { statSync } = await import('node:fs');
        const size = (n: string) => { try { return statSync(logFile(n)!).size; } catch { return 0; } };
        row.logBytes = { quiesce: size('quiesce'), 'cluster-RR': size('rr'), 'cluster-NONE': size('none') };
      }
      rows.push(row);
      const m = (n: ServerName) => fmt(median(res[n].map((x) => x.rps)));
      log(`${s.id}: quiesce ${m('quiesce')}  RR ${m('cluster-RR')}  NONE ${m('cluster-NONE')}${names.includes('nginx') ? `  nginx ${m('nginx')}` : ''}${names.includes('bare') ? `  bare ${m('bare')}` : ''} req/s`);
    } finally {
      clearInterval(sampler);
      for (const n of names) await servers[n]!.kill();
    }
  }

  // ─── the price of the scoreboard: quiesce with and without its periodic status report ──────
  let statsLine = '';
  if (!only || only.has('stats')) {
    const statsRounds = quick ? 2 : 5;
    log(`stats: quiesce with and without the scoreboard report, ${statsRounds} interleaved rounds`);
    const app = join(APPS, 'hello.mjs');
    const on = await startQuiesce({ app });
    const off = await startQuiesce({ app, env: { QUIESCE_STATS: 'off' } });
    try {
      const res: Record<'on' | 'off', number[]> = { on: [], off: [] };
      for (let r = 0; r < statsRounds; r++) {
        for (const [k, srv] of (r % 2 ? [['off', off], ['on', on]] : [['on', on], ['off', off]]) as Array<['on' | 'off', Running]>) {
          res[k].push((await gen.run({ url: `http://127.0.0.1:${srv.port}/`, durationS, connections, threads, close: false })).rps);
          await sleep(50);
        }
      }
      const ratio = median(res.on) / median(res.off);
      statsLine = `- scoreboard cost: quiesce with its status report ${fmt(median(res.on))} req/s vs without (QUIESCE_STATS=off) ${fmt(median(res.off))} req/s, ` +
        `median of ${statsRounds} interleaved rounds, keep-alive: **${ratio.toFixed(3)}x** — target within 5% of off: ${ratio >= 0.95 ? 'met' : 'MISSED'}.`;
    } finally {
      await on.kill();
      await off.kill();
    }
  }

  // ─── the table ──────────────────────────────────────────────────────────────
  const out: string[] = [];
  out.push(`## quiesce vs node:cluster: throughput and latency (${new Date().toISOString()})`, '');
  out.push(`load generator: **${gen.name}**${gen.name === 'wrk' ? ` (-t ${threads} -c ${connections}; new connection per request: -H 'Connection: close')` : ` (${connections} connections)`}; ` +
    `2 workers each; ${rounds} interleaved round(s) of ${durationS}s per server, medians; loopback${loadCpu !== undefined ? '; pinned: the load generator on CPU 0, every server process on CPU 1' : ''}; ${envLine()}`, '');
  const header = ['scenario', 'quiesce req/s', 'cluster-RR req/s', 'cluster-NONE req/s', 'ratio vs better cluster', 'per-round ratios min–max', 'nginx req/s', 'ratio vs nginx (per round)',
    'bare Node from memory req/s', 'bare Node vs nginx', 'p99 quiesce (h2: mean)', 'p99 RR', 'p99 NONE', 'quiesce master RSS', 'target'];
  const body: string[][] = [];
  const notes: string[] = [];
  let maxRss = 0;
  let maxAnon = 0;
  let maxRR = 0;
  for (const r of rows) {
    const rps = (n: ServerName) => median(r.res[n].map((x) => x.rps));
    const p99 = (n: ServerName) => median(r.res[n].map((x) => (Number.isNaN(x.p99Ms) ? x.p50Ms : x.p99Ms)));
    const better = Math.max(rps('cluster-RR'), rps('cluster-NONE'));
    const ratio = rps('quiesce') / better;
    const ratioRR = rps('quiesce') / rps('cluster-RR');
    // the same ratio within each round (the three servers ran back to back): its spread is the noise
    const key = r.s.target === 'close' ? (i: number) => r.res['cluster-RR'][i]!.rps : (i: number) => Math.max(r.res['cluster-RR'][i]!.rps, r.res['cluster-NONE'][i]!.rps);
    const perRound = r.res.quiesce.map((x, i) => x.rps / key(i));
    const spread = `${Math.min(...perRound).toFixed(2)}–${Math.max(...perRound).toFixed(2)}x${r.s.target === 'close' ? ' RR' : ''}`;
    let target: string;
    if (r.s.target === 'close') target = `>= 1.6x RR: ${ratioRR >= 1.6 ? 'met' : 'MISSED'} (${ratioRR.toFixed(2)}x RR)`;
    else target = `>= 1.0x better cluster: ${ratio >= 1.0 ? 'met' : 'MISSED'}`;
    const withNginx = r.names.includes('nginx');
    const withBare = r.names.includes('bare');
    const vsNginx = withNginx ? rps('quiesce') / rps('nginx') : NaN;
    const perRoundNginx = withNginx ? r.res.quiesce.map((x, i) => x.rps / r.res.nginx[i]!.rps) : [];
    if (r.s.vsNginx !== undefined) target += withNginx ? `; >= ${r.s.vsNginx}x nginx: ${vsNginx >= r.s.vsNginx ? 'met' : 'MISSED'}` : '; nginx: not run';
    maxRss = Math.max(maxRss, r.rssKiB);
    maxAnon = Math.max(maxAnon, r.anonKiB);
    maxRR = Math.max(maxRR, r.rrPrimaryKiB);
    if (r.logBytes) {
      notes.push(`${r.s.label}: access log written over all runs of the row: ` + SERVERS.map((n) => `${n} ${fmt(r.logBytes![n] / 1e6, 1)} MB`).join(', '));
    }
    body.push([r.s.label, fmt(rps('quiesce')), fmt(rps('cluster-RR')), fmt(rps('cluster-NONE')), `${ratio.toFixed(2)}x`, spread,
      withNginx ? fmt(rps('nginx')) : '—', withNginx ? `**${vsNginx.toFixed(2)}x** (${Math.min(...perRoundNginx).toFixed(2)}–${Math.max(...perRoundNginx).toFixed(2)})` : '—',
      withBare ? fmt(rps('bare')) : '—', withBare && withNginx ? `${(rps('bare') / rps('nginx')).toFixed(2)}x (quiesce ${(rps('quiesce') / rps('bare')).toFixed(2)}x bare)` : '—',
      ms(p99('quiesce')), ms(p99('cluster-RR')), ms(p99('cluster-NONE')), `${(r.rssKiB / 1024).toFixed(1)} MB`, target]);
    for (const n of r.names) {
      const errs = r.res[n].reduce((a, x) => a + x.errors, 0);
      const non2xx = r.res[n].reduce((a, x) => a + x.non2xx, 0);
      if (errs || non2xx) notes.push(`${r.s.label}: ${n} had ${errs} socket errors and ${non2xx} non-2xx/3xx responses in the measured runs`);
    }
  }
  for (const r of rows.filter((x) => x.tally)) {
    body.push([`worker share, ${r.s.close ? 'new connection' : 'keep-alive'} (client tally of x-pid)`, r.tally!.quiesce, r.tally!['cluster-RR'], r.tally!['cluster-NONE'], '—', '', '', '', '', '', '', '', '', '', '']);
    body.push([`worker share, ${r.s.close ? 'new connection' : 'keep-alive'} (quiesce status workers[].requests over the ${gen.name} runs)`, r.qShare ?? '—', '', '', '—', '', '', '', '', '', '', '', '', '', '']);
  }
  out.push(table(header, body), '');
  const bare = await bareNodeRssKiB();
  out.push(`- quiesce master RSS (VmRSS, peak sampled every 100 ms): max ${(maxRss / 1024).toFixed(1)} MB — target < 60 MB: ${maxRss / 1024 < 60 ? 'met' : 'MISSED'}. ` +
    `For scale: its anonymous part (RssAnon) peaked at ${(maxAnon / 1024).toFixed(1)} MB; an idle bare \`node -e\` process is ${(bare / 1024).toFixed(1)} MB; the node:cluster RR primary peaked at ${(maxRR / 1024).toFixed(1)} MB.`);
  if (statsLine) out.push(statsLine);
  out.push('- the access log rows write Combined Log Format to a file in a temp dir: quiesce through its master, node:cluster with a write stream per worker.');
  out.push('- static rows: quiesce serves the directory itself (`quiesce DIR`), node:cluster serves it with `send`' +
    (nginx ? `, nginx (${nginx}) with its own config: 2 workers, sendfile on, tcp_nopush on, access log off, no keep-alive request limit` : '; no nginx binary was found: its columns are empty') +
    '. Framework rows: the same module default-exporting the app.');
  if (rows.some((r) => r.s.tls)) {
    out.push('- TLS rows: one self-signed ECDSA P-256 certificate for every server; quiesce with --tls-cert/--tls-key (ALPN h2 and http/1.1), node:cluster workers with https.createServer ' +
      '(http2.createSecureServer with allowHTTP1 for the HTTP/2 row), nginx with `listen ssl` (and `http2`) answering the same body from its config (`return 200`: no app runs there, the ratio prices the protocol work alone). ' +
      `HTTP/1.1 rows by ${gen.name} (new connection: Connection: close; wrk resumes the TLS session on every other one, a full handshake on the rest, alike for every server); HTTP/2 by h2load (${Math.max(1, Math.round(connections / 5))} sessions x 10 streams; its latency column is the mean). ` +
      'The h2c row: no TLS; quiesce with --h2c on, node:cluster workers with http2.createServer, nginx with `listen … http2` (h2c with prior knowledge, as h2load speaks it to an http:// URL).');
  }
  for (const n of notes) out.push(`- ${n}`);
  out.push(`- bench took ${Math.round((performance.now() - t0) / 1000)} s`);
  process.stdout.write(out.join('\n') + '\n');
}

function ms(x: number): string {
  return Number.isFinite(x) ? `${x < 10 ? x.toFixed(2) : x.toFixed(1)} ms` : '—';
}

runBench('bench', main);
