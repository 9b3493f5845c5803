/** The scoreboard for real: ?auto, ?json, /metrics, the admin token, `quiesce status` (table, --json, --watch). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { startServer, cleanup, runCli, get, sleep, waitFor, CLI, ROOT, FIXTURES, type Server } from './helpers/server.js';
import type { StatusSnapshot } from '../src/master/status/types.js';

const HOLD_APP = join(FIXTURES, 'status/hold-app.mjs');

/** A request that the app holds until `release()`: `path` for the request line, as the status shows it. */
function held(s: Server, name: string): { path: string; release: () => void } {
  const file = join(s.dir, name);
  return { path: `/?hold=${encodeURIComponent(file)}`, release: () => writeFileSync(file, '') };
}

async function json(s: Server): Promise<StatusSnapshot> {
  const r = await get(s.admin, '/server-status?json');
  assert.equal(r.status, 200, r.body);
  assert.match(String(r.headers['content-type']), /^application\/json/);
  return JSON.parse(r.body) as StatusSnapshot;
}

/** `Key: value` lines of ?auto (the first line is the host name, as in mod_status). */
function parseAuto(body: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of body.split('\n').slice(1)) {
    const i = line.indexOf(': ');
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 2));
    else if (line.endsWith(':')) m.set(line.slice(0, -1), '');
  }
  return m;
}

/** Prometheus text: `name{labels}` → value (comments skipped). */
function parseMetrics(body: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of body.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}

/** One request over a raw socket; resolves the exact number of bytes the server sent. */
function rawGet(address: string, path: string): Promise<number> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port }, () => sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
    let n = 0;
    sock.on('data', (d: Buffer) => { n += d.length; });
    sock.on('end', () => resolve(n));
    sock.on('error', reject);
  });
}

test('?auto, ?json and /metrics show the requests, bytes and a slow request in flight; totals survive a reload', async () => {
  const s = await startServer({ args: [HOLD_APP, '--workers', '2', '--reload-soak', '200ms', '--graceful-timeout', '10', '--status-query'] /* requests are told apart by their ?hold= */ });
  try {
    let sent = 0;
    for (let i = 0; i < 5; i++) sent += await rawGet(s.address, '/');
    const hold = held(s, 'release-1');
    const slow = get(s.address, hold.path);
    slow.catch(() => undefined); // awaited below; a failing assertion must not turn it into an unhandled rejection
    const j: StatusSnapshot = await waitFor(async () => {
      const x = await json(s);
      return x.totals.requests === 6 && x.totals.bytesSent === sent && x.scoreboard.includes('W') ? x : undefined;
    }, 3000, 'the workers to report 6 requests and a W') as StatusSnapshot;

    // ?json: one slot per worker, the slow request as the busy one's current request
    assert.equal(j.schema, 1);
    assert.equal(j.state, 'serving');
    assert.equal(j.generation, 1);
    assert.equal(j.pid, s.pid);
    assert.deepEqual(j.workers.map((w) => w.pid).sort(), s.workerPids().sort());
    assert.equal(j.scoreboard.length, 2);
    const busy = j.workers.find((w) => w.state === 'W')!;
    assert.equal(busy.current?.method, 'GET');
    assert.equal(busy.current?.path, hold.path.slice(0, 64));
    assert.equal(busy.inflight, 1);
    assert.equal(j.workers.find((w) => w !== busy)!.state, '_');
    assert.equal(j.totals.completed, 5);
    assert.equal(j.totals.accepted, 6);
    assert.equal(j.totals.cut, 0);
    for (const w of j.workers) {
      assert.ok(w.rssBytes !== null && w.rssBytes > 10 * 1024 * 1024, `rss of ${w.pid}: ${w.rssBytes}`);
      assert.ok(w.cpuSeconds !== null && w.cpuSeconds > 0, `cpu of ${w.pid}: ${w.cpuSeconds}`);
    }
    assert.equal(j.listeners.length, 1);
    assert.equal(j.listeners[0]!.address, s.address);
    assert.equal(j.listeners[0]!.state, 'open');
    if (j.drainMode !== 'fallback') assert.equal(j.listeners[0]!.queued, 0);

    // ?auto: mod_status keys and ours
    const autoRes = await get(s.admin, '/server-status?auto');
    assert.match(String(autoRes.headers['content-type']), /^text\/plain/);
    const a = parseAuto(autoRes.body);
    assert.equal(a.get('Total Accesses'), '6');
    assert.equal(a.get('Total kBytes'), String(Math.floor(sent / 1024)));
    assert.equal(a.get('BusyWorkers'), '1');
    assert.equal(a.get('IdleWorkers'), '1');
    assert.match(a.get('Scoreboard')!, /^[W_]{2}$/);
    assert.ok(a.get('Scoreboard')!.includes('W'));
    assert.equal(a.get('Generation'), '1');
    assert.equal(a.get('State'), 'serving');
    assert.equal(a.get('DrainMode'), j.drainMode);
    assert.equal(a.get('Cut'), '0');
    assert.equal(a.get('Forced'), '0');
    assert.match(a.get('ListenQueue')!, /^\d+$/);
    assert.ok(Number(a.get('Uptime')) >= 1);

    // /metrics
    const mRes = await get(s.admin, '/metrics');
    assert.equal(mRes.status, 200);
    assert.match(String(mRes.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    let m = parseMetrics(mRes.body);
    assert.equal(m.get('quiesce_requests_total'), 6);
    assert.equal(m.get('quiesce_sent_bytes_total'), sent);
    assert.equal(m.get('quiesce_workers{state="W",generation="1"}'), 1);
    assert.equal(m.get('quiesce_workers{state="_",generation="1"}'), 1);
    assert.equal(m.get('quiesce_cut_total'), 0);
    assert.equal(m.get('quiesce_forced_total'), 0);
    assert.equal(m.get('quiesce_generation'), 1);
    assert.equal(m.get('quiesce_master_state{state="serving"}'), 1);
    assert.equal(m.get('quiesce_reload_duration_seconds_count'), 0);
    assert.equal(m.get('quiesce_requests_in_flight{generation="1"}'), 1);
    assert.ok(m.has(`quiesce_listen_queue{listener="${s.address}"}`) || j.drainMode === 'fallback');

    // a reload: generation 2 serves, the old busy worker retires as G, totals keep the exited workers' figures
    const r = await s.cli('reload');
    assert.equal(r.code, 0, r.stderr);
    const after = await json(s);
    assert.equal(after.generation, 2);
    assert.deepEqual(after.generations, [1, 2]);
    assert.equal(after.workers.find((w) => w.pid === busy.pid)?.state, 'G');
    assert.ok(after.progress.some((p) => p.kind === 'retire' && p.generations[0] === 1 && p.inflightLeft === 1), JSON.stringify(after.progress));
    hold.release();
    assert.equal((await slow).status, 200);
    const done = await waitFor(async () => { const x = await json(s); return x.generations.join() === '2' ? x : undefined; }, 5000, 'generation 1 to exit') as StatusSnapshot;
    assert.equal(done.totals.requests, 6);
    assert.equal(done.totals.completed, 6);
    assert.ok(done.totals.bytesSent > sent, 'the slow response counts too, after its worker exited');
    assert.equal(done.totals.retired.reload, 2);
    assert.equal(done.totals.reloads, 1);
    assert.ok(done.lastReloadMs !== undefined && done.lastReloadMs > 0);
    m = parseMetrics((await get(s.admin, '/metrics')).body);
    assert.equal(m.get('quiesce_generation'), 2);
    assert.equal(m.get('quiesce_reload_duration_seconds_count'), 1);
    assert.equal(m.get('quiesce_reloads_total{result="ok"}'), 1);
    assert.equal(m.get('quiesce_workers_retired_total{reason="reload"}'), 2);
    assert.equal(m.get('quiesce_requests_total'), 6);
    assert.equal(m.get('quiesce_workers{state="_",generation="2"}'), 2);

    const stop = await s.cli('stop');
    assert.equal(stop.code, 0, stop.stderr);
    await s.exited;
  } finally {
    await cleanup(s);
  }
});

test('off loopback the admin pages need the token; /live does not', async () => {
  const s = await startServer({ args: [HOLD_APP, '--workers', '1', '--admin', '0.0.0.0:0', '--admin-token', 'T'] });
  try {
    assert.match(s.admin, /^0\.0\.0\.0:\d+$/);
    const admin = `127.0.0.1:${s.admin.split(':')[1]}`;
    for (const path of ['/server-status', '/server-status?json', '/server-status?auto', '/metrics']) {
      assert.equal((await get(admin, path)).status, 401, path);
      assert.equal((await get(admin, path, { authorization: 'Bearer wrong' })).status, 401, path);
      const ok = await get(admin, path, { authorization: 'Bearer T' });
      assert.equal(ok.status, 200, path);
    }
    assert.equal((await get(admin, '/server-status?token=T')).status, 200);
    assert.equal((await get(admin, '/live')).status, 200);
    assert.equal((await get(admin, '/ready')).status, 200);
    const page = await get(admin, '/server-status?token=T&refresh=3');
    assert.match(page.body, /<meta http-equiv="refresh" content="3">/);
    assert.match(String(page.headers['content-security-policy']), /default-src 'none'/);
    process.kill(s.pid, 'SIGTERM');
    await s.exited;
  } finally {
    await cleanup(s);
  }
});

test('quiesce status: a table with the pids, --json, --watch through a stop, and a clear error with no server', async () => {
  const none = await runCli(['status', '--pidfile', join(ROOT, 'test-artifacts', 'no-such-instance.pid')]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /quiesce: quiesce is not running \(no control socket .*no-such-instance\.pid\.sock\)/);
  assert.equal(none.stdout, '');
  const noneJson = await runCli(['status', '--json', '--pidfile', join(ROOT, 'test-artifacts', 'no-such-instance.pid')]);
  assert.equal(noneJson.code, 1);

  const s = await startServer({ args: [HOLD_APP, '--workers', '2', '--graceful-timeout', '10'] });
  let watcher: ReturnType<typeof spawn> | undefined;
  try {
    const t = await s.cli('status');
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, new RegExp(`^quiesce pid ${s.pid}: serving`));
    for (const pid of s.workerPids()) assert.match(t.stdout, new RegExp(`\\b${pid}\\b`));
    assert.match(t.stdout, /^scoreboard [_R]{2} /m);
    assert.match(t.stdout, /cut 0/);

    const j = await s.cli('status', '--json');
    assert.equal(j.code, 0, j.stderr);
    const snap = JSON.parse(j.stdout) as StatusSnapshot;
    assert.equal(snap.pid, s.pid);
    assert.deepEqual(snap.workers.map((w) => w.pid).sort(), s.workerPids().sort());

    // Ctrl-C ends a watch at once
    const quit = spawn(process.execPath, [CLI, 'status', '--watch', '--pidfile', s.pidfile], { stdio: ['ignore', 'pipe', 'pipe'] });
    let quitOut = '';
    quit.stdout.on('data', (d: Buffer) => { quitOut += d.toString(); });
    await waitFor(() => quitOut.includes('scoreboard'), 5000, 'a first frame');
    quit.kill('SIGINT');
    const quitCode = await new Promise<number | null>((r) => quit.once('exit', (c) => r(c)));
    assert.equal(quitCode, 0);

    // --watch follows a stop with a request in flight, shows its progress, and ends with the server
    watcher = spawn(process.execPath, [CLI, 'status', '--watch', '--pidfile', s.pidfile], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    watcher.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    const watchExit = new Promise<number | null>((r) => watcher!.once('exit', (c) => r(c)));
    await waitFor(() => out.includes('scoreboard'), 5000, 'a first frame');
    const hold = held(s, 'release-2');
    const slow = get(s.address, hold.path);
    slow.catch(() => undefined);
    await waitFor(() => /^scoreboard .*W/m.test(out), 5000, 'the watch to show the request');
    const stop = s.cli('stop');
    stop.catch(() => undefined);
    await waitFor(() => /^» stop: workers finishing/m.test(out), 8000, 'the watch to show the stop');
    hold.release();
    const code = await Promise.race([watchExit, sleep(12_000).then(() => 'timeout' as const)]);
    assert.equal(code, 0, `watch did not end with the server: ${out.slice(-2000)}`);
    // (the idle worker may not have exited yet when the frame is drawn: on a loaded machine it is still there)
    assert.match(out, /^» stop: workers finishing: 1 connection left \(1 in flight\) in (1 worker|2 workers), queue 0, /m);
    assert.match(out, /^scoreboard .*G/m);
    assert.match(out, /quiesce: the server stopped\n$/);
    assert.equal((await slow).status, 200);
    assert.equal((await stop).code, 0);
  } finally {
    if (watcher && watcher.exitCode === null) watcher.kill('SIGKILL');
    await cleanup(s);
  }
});
