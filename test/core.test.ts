/** The process core, for real: a master, its workers, signals, CLI verbs, bad input. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startServer, cleanup, waitExit, runCli, get, sleep, waitFor, alive, FIXTURES, ROOT } from './helpers/server.js';
import { listenBacklog } from './helpers/kernel.js';

const PID_APP = join(FIXTURES, 'core/pid-app.mjs');

test('requests reach every worker; the welcome site answers by default', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '2'] });
  try {
    assert.equal(s.workerPids().length, 2);
    const pids = new Set<string>();
    for (let round = 0; round < 10 && pids.size < 2; round++) {
      const rs = await Promise.all(Array.from({ length: 8 }, () => get(s.address, '/?burn=15')));
      for (const r of rs) { assert.equal(r.status, 200); pids.add(r.body.trim()); }
    }
    assert.deepEqual([...pids].map(Number).sort(), s.workerPids().sort());
    const stop = await s.cli('stop');
    assert.equal(stop.code, 0, stop.stderr);
    assert.match(stop.stdout, /stopped/);
    assert.equal((await waitExit(s)).code, 0);
  } finally {
    await cleanup(s);
  }
  const site = await startServer({ args: ['--workers', '1'] });
  try {
    const r = await get(site.address, '/');
    assert.equal(r.status, 200);
    assert.match(r.body, /It works!/);
    process.kill(site.pid, 'SIGTERM');
    assert.equal((await waitExit(site)).code, 0);
  } finally {
    await cleanup(site);
  }
});

test('--backlog is the listeners\' backlog once the workers serve, and after a reload (each worker listens on the fd again)', async () => {
  const s = await startServer({ args: [join(FIXTURES, 'core/pid-app.mjs'), '--workers', '2', '--backlog', '7', '--listen', '127.0.0.1:0', '--listen', '127.0.0.1:0'] });
  try {
    const ports = s.addresses.map((a) => Number(/:(\d+)$/.exec(a)?.[1]));
    assert.equal(ports.length, 2, s.out());
    for (const p of ports) assert.equal((await get(`127.0.0.1:${p}`, '/')).status, 200);
    for (const p of ports) assert.equal(listenBacklog(p), 7, `backlog of :${p} while serving`);
    // below 16 a stop under overload can cut (SYN retransmissions dropped past a short queue): said at start and at a reload
    assert.equal((s.err().match(/backlog-small backlog=7 /g) ?? []).length, 1, s.err());
    const r = await s.cli('reload');
    assert.equal(r.code, 0, r.stderr);
    for (const p of ports) assert.equal(listenBacklog(p), 7, `backlog of :${p} after a reload`);
    assert.equal((s.err().match(/backlog-small backlog=7 /g) ?? []).length, 2, s.err());
  } finally {
    await cleanup(s);
  }
});

test('static workers get the heap default, an operator heap limit caps it, app workers get none', async () => {
  const flagsOf = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a.startsWith('--initial-old-space-size'));
  const site = mkdtempSync(join(tmpdir(), 'quiesce-heap-'));
  writeFileSync(join(site, 'index.html'), 'hi\n');
  try {
    const plain = await startServer({ args: [site, '--workers', '1'] });
    try {
      assert.deepEqual(flagsOf(plain.workerPids()[0]!), ['--initial-old-space-size=64']);
    } finally {
      await cleanup(plain);
    }
    // NODE_OPTIONS reaches the workers through their environment; the default is halved to fit it
    const capped = await startServer({ args: [site, '--workers', '1'], env: { NODE_OPTIONS: '--max-old-space-size=40' } });
    try {
      assert.deepEqual(flagsOf(capped.workerPids()[0]!), ['--initial-old-space-size=20']);
      assert.equal((await get(capped.address, '/')).status, 200);
    } finally {
      await cleanup(capped);
    }
  } finally {
    rmSync(site, { recursive: true, force: true });
  }
  // an app's workers: no V8 flag (it would cost Node's code cache at every start)
  const app = await startServer({ args: [PID_APP, '--workers', '1'] });
  try {
    assert.deepEqual(flagsOf(app.workerPids()[0]!), []);
  } finally {
    await cleanup(app);
  }
});

test('a worker killed with SIGKILL is replaced and serving goes on', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '2', '--respawn-backoff', '50ms'] });
  try {
    const [victim] = s.workerPids();
    process.kill(victim!, 'SIGKILL');
    await waitFor(() => s.workerPids().length === 2 && !s.workerPids().includes(victim!), 10_000, 'a replacement worker');
    await waitFor(() => /\[info\] master\[\d+\]: state from=starting to=serving/.test(s.err()), 1000, 'log');
    await waitFor(async () => (await s.cli('status', '--json')).stdout.includes('"phase": "ready"'), 10_000, 'replacement ready');
    for (let i = 0; i < 10; i++) assert.equal((await get(s.address, '/')).status, 200);
    assert.match(s.err(), /worker-respawn/);
    process.kill(s.pid, 'SIGTERM');
    assert.equal((await waitExit(s)).code, 0);
  } finally {
    await cleanup(s);
  }
});

test('a worker killed mid-request: the log says what it held at its last report', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '1', '--respawn-backoff', '50ms'] });
  try {
    const [victim] = s.workerPids();
    const slow = get(s.address, '/?sleep=10000').then(() => 'answered', () => 'cut');
    await sleep(1200); // two stats reports (every 500 ms) include the request
    process.kill(victim!, 'SIGKILL');
    assert.equal(await slow, 'cut');
    await waitFor(() => new RegExp(`worker-exited pid=${victim} .*signal=SIGKILL .*inflight_last_report=1 connections_last_report=1`).test(s.err()), 5_000, `the exit line:\n${s.err()}`);
    process.kill(s.pid, 'SIGTERM');
    assert.equal((await waitExit(s)).code, 0);
  } finally {
    await cleanup(s);
  }
});

test('recycling after N requests loses nothing', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '2', '--max-requests-per-worker', '20'] });
  try {
    const seen = new Set<string>();
    for (let i = 0; i < 20 && seen.size < 4; i++) {
      const rs = await Promise.all(Array.from({ length: 10 }, () => get(s.address, '/')));
      for (const r of rs) { assert.equal(r.status, 200); seen.add(r.body.trim()); }
      await sleep(150); // a replacement takes a moment to load; the retiring worker serves meanwhile
    }
    assert.ok(seen.size >= 4, `workers recycled at 20-22 requests: want >= 4 pids, saw ${seen.size}`);
    assert.match(s.err(), /worker-replace .*reason=recycle/);
    process.kill(s.pid, 'SIGTERM');
    assert.equal((await waitExit(s)).code, 0);
  } finally {
    await cleanup(s);
  }
});

test('an app that cannot load stops the start with its error and a non-zero exit', async () => {
  for (const [app, want] of [['broken-syntax.mjs', /broken-syntax\.mjs.*missing \) after argument list/], ['init-throws.mjs', /database unreachable: init refused/]] as const) {
    const s = await startServer({ args: [join(FIXTURES, 'core', app)], waitReady: false });
    try {
      const r = await waitExit(s);
      assert.equal(r.code, 1, s.err());
      assert.match(s.err(), want);
      assert.doesNotMatch(s.err(), /worker-respawn/);
    } finally {
      await cleanup(s);
    }
  }
  const missing = await runCli([join(FIXTURES, 'core/nope.mjs'), '--listen', '127.0.0.1:0', '--admin', 'off']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /nope\.mjs/);
});

test('master SIGKILL: in-flight requests are answered and the workers leave within the graceful timeout', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '2', '--graceful-timeout', '5'] });
  try {
    const workers = s.workerPids();
    const inflight = Promise.all(Array.from({ length: 4 }, () => get(s.address, '/?sleep=700')));
    await sleep(200);
    process.kill(s.pid, 'SIGKILL');
    const rs = await inflight;
    for (const r of rs) assert.equal(r.status, 200);
    await waitFor(() => workers.every((p) => !alive(p)), 6_000, 'workers to exit after the master died');
  } finally {
    await cleanup(s);
  }
});

test('a process the app spawns does not inherit the listening socket: after a stop the port refuses', async () => {
  const s = await startServer({ args: [join(FIXTURES, 'core/spawns-child.mjs'), '--workers', '1'] });
  let child = 0;
  try {
    child = Number((await get(s.address, '/')).headers['x-child-pid']);
    assert.ok(child > 0 && alive(child), 'the app spawned its child');
    process.kill(s.pid, 'SIGTERM');
    assert.equal((await waitExit(s)).code, 0);
    assert.ok(alive(child), 'the child outlives quiesce (else this proves nothing)');
    const { connect } = await import('node:net');
    const m = /^(.*):(\d+)$/.exec(s.address)!;
    const outcome = await new Promise<string>((resolve) => {
      const c = connect(Number(m[2]), m[1]!);
      c.on('connect', () => { c.destroy(); resolve('connected: the child holds the listener'); });
      c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    assert.equal(outcome, 'ECONNREFUSED');
  } finally {
    if (child > 0) try { process.kill(child, 'SIGKILL'); } catch { /* gone */ }
    await cleanup(s);
  }
});

test('Ctrl-C to the whole process group is one graceful stop', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '2'], detached: true });
  try {
    const inflight = get(s.address, '/?sleep=600');
    await sleep(150);
    process.kill(-s.pid, 'SIGINT');
    await sleep(50);
    process.kill(-s.pid, 'SIGINT'); // npm forwards one Ctrl-C twice: within 1 s it is the same stop
    assert.equal((await inflight).status, 200);
    assert.equal((await waitExit(s)).code, 0);
    assert.equal((s.err().match(/state from=serving to=draining/g) ?? []).length, 1);
    assert.doesNotMatch(s.err(), /fast-stop/);
    assert.doesNotMatch(s.err(), /worker-respawn|forced n=[1-9]/);
  } finally {
    await cleanup(s);
  }
});

test('the same stop signal again after a second is a fast stop', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '1', '--graceful-timeout', '20'] });
  try {
    const slow = get(s.address, '/?sleep=10000').then((r) => r, (e: Error) => e);
    await sleep(200);
    process.kill(s.pid, 'SIGTERM');
    await sleep(1200);
    process.kill(s.pid, 'SIGTERM');
    const r = await waitExit(s, 8_000);
    assert.equal(r.code, 0);
    const res = await slow;
    assert.ok(!(res instanceof Error), String(res));
    assert.equal(res.status, 503);
    assert.equal(res.headers['quiesce-forced'], 'graceful-timeout');
    assert.match(s.err(), /fast-stop/);
  } finally {
    await cleanup(s);
  }
});

test('bad flags and config name the fault and exit 2', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--bogus'], /--bogus/],
    [['--workers', 'many'], /--workers/],
    [['--graceful-timeout', 'soon'], /--graceful-timeout/],
    [['--listen', 'example.com:80'], /--listen "example.com:80"/],
    [['--listen', '127.0.0.1:99999'], /port out of range/],
    [['--reload-strategy', 'sideways'], /--reload-strategy/],
    [['a', 'b'], /one APP at most/],
    [['--lisen', '8080'], /Unknown option '--lisen' \(did you mean --listen\?\)/],
  ];
  for (const [args, want] of cases) {
    const r = await runCli(['configtest', ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, want);
  }
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-cfg-'));
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, JSON.stringify({ workers: 2, gracefulTimeot: 5 }));
  const r1 = await runCli(['configtest', '--config', bad]);
  assert.equal(r1.code, 2);
  assert.match(r1.stderr, /bad\.json.*"gracefulTimeot" \(did you mean "gracefulTimeout"\?\)/);
  // one listen address as a string is a one-element list; errors name the key path in quiesce's words
  writeFileSync(bad, JSON.stringify({ listen: '127.0.0.1:8089' }));
  const one = await runCli(['configtest', '--config', bad]);
  assert.equal(one.code, 0, one.stderr);
  assert.match(one.stdout, /listen 127\.0\.0\.1:8089;/);
  for (const [value, want] of [[{ listen: [5] }, /"listen\.0": not an address or a listen entry, got 5/], [{ autoindex: 'yes' }, /"autoindex": not true or false, got "yes"/], [[1], /must hold an object of settings/]] as const) {
    writeFileSync(bad, JSON.stringify(value));
    const r = await runCli(['configtest', '--config', bad]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, want);
    assert.doesNotMatch(r.stderr, /Expected|Invalid type/, 'no schema library wording');
  }
  // a misspelt verb is neither run as an app nor looked for as one
  const typo = await runCli(['stpo']);
  assert.equal(typo.code, 2);
  assert.match(typo.stderr, /"stpo" is neither a verb nor a file or directory \(did you mean stop\?\); verbs: start, stop,/);
  writeFileSync(bad, '{ "workers": ');
  const r2 = await runCli(['configtest', '--config', bad]);
  assert.equal(r2.code, 2);
  assert.match(r2.stderr, /bad\.json/);
  const ok = await runCli(['configtest', PID_APP, '--workers', '3']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /configuration ok/);
});

test('port in use is one clear line and exit 1', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '1'] });
  try {
    const r = await runCli([PID_APP, '--listen', s.address, '--admin', 'off', '--pidfile', join(s.dir, 'other.pid')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`--listen ${s.address.replace(/[.[\]]/g, '\\$&')}: address in use`));
    process.kill(s.pid, 'SIGTERM');
    await waitExit(s);
  } finally {
    await cleanup(s);
  }
});

test('a pid file that cannot be placed is one clear line naming --pidfile, exit 1; a missing directory is made', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-pidfile-'));
  try {
    writeFileSync(join(dir, 'file'), '');
    const bad = join(dir, 'file', 'q.pid');
    const r = await runCli([PID_APP, '--listen', '127.0.0.1:0', '--admin', 'off', '--pidfile', bad]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`--pidfile ${bad.replace(/[.]/g, '\\.')}: cannot create its directory`));
    const made = join(dir, 'new', 'sub', 'q.pid');
    const s = await startServer({ args: [PID_APP, '--workers', '1', '--pidfile', made] });
    try {
      const st = await runCli(['status', '--pidfile', made]);
      assert.equal(st.code, 0, st.stderr);
      process.kill(s.pid, 'SIGTERM');
      assert.equal((await waitExit(s)).code, 0);
    } finally {
      await cleanup(s);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('CLI verbs against a running server and against none; a second instance on the pid file refuses', async () => {
  const none = join('/tmp', `quiesce-none-${process.pid}.pid`);
  for (const verb of ['stop', 'reload', 'restart', 'reopen-logs', 'status']) {
    const r = await runCli([verb, '--pidfile', none]);
    assert.equal(r.code, 1, `${verb}: ${r.stderr}`);
    assert.match(r.stderr, /not running/);
  }
  const s = await startServer({ args: [PID_APP, '--workers', '1'] });
  try {
    const second = await runCli([PID_APP, '--listen', '127.0.0.1:0', '--admin', 'off', '--pidfile', s.pidfile]);
    // and a stale pid file (its process gone) is taken over
    const stale = join(s.dir, 'stale.pid');
    writeFileSync(stale, '999999\n');
    const taker = await startServer({ args: [PID_APP, '--workers', '1', '--pidfile', stale] });
    assert.equal((await runCli(['status', '--pidfile', stale])).code, 0);
    process.kill(taker.pid, 'SIGTERM');
    await waitExit(taker);
    await cleanup(taker);
    assert.equal(second.code, 1);
    assert.match(second.stderr, new RegExp(`already running as pid ${s.pid}`));
    const status = await s.cli('status');
    assert.equal(status.code, 0);
    assert.match(status.stdout, /serving .*generation 1/);
    assert.equal((await s.cli('reopen-logs')).code, 0);
    const reload = await s.cli('reload');
    assert.equal(reload.code, 0, reload.stderr);
    assert.match(reload.stdout, /generation 2 serving/);
    const restart = await s.cli('restart');
    assert.equal(restart.code, 0, restart.stderr);
    assert.match(restart.stdout, /generation 3/);
    const stop = await s.cli('stop');
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal((await waitExit(s)).code, 0);
  } finally {
    await cleanup(s);
  }
});

test('configtest loads the app as a worker would and fails with the error the start gives; init() only with --init', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-configtest-'));
  try {
    const startLine = async (app: string): Promise<string> => {
      const r = await runCli([app, '--listen', '127.0.0.1:0', '--admin', 'off', '--workers', '1', '--pidfile', join(dir, 'q.pid')]);
      assert.equal(r.code, 1, r.stderr);
      const line = r.stderr.split('\n').find((l) => l.startsWith('quiesce: the app failed to load:'));
      assert.ok(line, r.stderr);
      return line;
    };
    const broken = join(FIXTURES, 'core/broken-syntax.mjs');
    const check = await runCli(['configtest', broken]);
    assert.equal(check.code, 1, check.stdout);
    assert.match(check.stderr, /broken-syntax\.mjs:\d+\)/, 'the file and line');
    assert.equal(check.stderr.trim(), await startLine(broken), 'configtest says what the start says');

    const initThrows = join(FIXTURES, 'core/init-throws.mjs');
    const noInit = await runCli(['configtest', initThrows]);
    assert.equal(noInit.code, 0, `init() is not run unless asked: ${noInit.stderr}`);
    assert.match(noInit.stdout, /loads as a listener app/);
    const withInit = await runCli(['configtest', '--init', initThrows]);
    assert.equal(withInit.code, 1);
    assert.equal(withInit.stderr.trim(), await startLine(initThrows));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('quiesce stop says what it waits for (requests, connections, by worker) as it changes, and the log says the same', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '2'] });
  try {
    const slow = Promise.all([get(s.address, '/?sleep=3000'), get(s.address, '/?sleep=3000')]);
    // both requests are in the workers' reports before the stop is asked
    await waitFor(async () => {
      const st = await s.cli('status', '--json');
      const ws = (JSON.parse(st.stdout) as { workers: Array<{ inflight: number }> }).workers;
      return ws.reduce((n, w) => n + w.inflight, 0) === 2;
    }, 10_000, 'two requests in flight in the status');
    const stop = await s.cli('stop');
    assert.equal(stop.code, 0, stop.stderr);
    const answers = await slow;
    assert.deepEqual(answers.map((a) => a.status), [200, 200]);
    const lines = stop.stderr.split('\n').filter((l) => l.startsWith('quiesce: waiting for'));
    assert.ok(lines.length >= 1, `progress lines: ${stop.stderr}`);
    assert.match(lines[0]!, /^quiesce: waiting for 2 requests in flight and 2 connections on 2 workers \(worker \d+: \d requests, \d connections; worker \d+: \d requests, \d connections\); forced in \d+ s at most$/);
    assert.equal(new Set(lines).size, lines.length, 'a line only when the figures change');
    await waitExit(s);
    assert.match(s.err(), /stop-waiting requests=2 connections=2 workers=2 per_worker=\d+:\d\/\d,\d+:\d\/\d/);
  } finally {
    await cleanup(s);
  }
});
