/** What an operator touches: logs and their reopening, privileges, health and readiness, hostile input. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync, renameSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import http from 'node:http';
import { startServer, cleanup, stopServer, waitExit, get, raw, sleep, waitFor, FIXTURES } from './helpers/server.js';
import { cannotDropPrivileges, forNobody } from './helpers/unprivileged.js';

const CHATTY = join(FIXTURES, 'core/chatty.mjs');
const PID_APP = join(FIXTURES, 'core/pid-app.mjs');
const APP_OUTPUT = join(FIXTURES, 'core/app-output.mjs');

test('access log in Combined Log Format and JSON, reopened on USR1 and by reopen-logs; app output on stdout/stderr, not in the error log', async () => {
  const s0 = await startServer({ args: [CHATTY, '--workers', '1'] });
  const dir = s0.dir;
  await stopServer(s0);
  const access = join(dir, 'access.log');
  const errors = join(dir, 'error.log');
  const s = await startServer({ args: [CHATTY, '--workers', '1', '--access-log', access, '--error-log', errors] });
  try {
    await get(s.address, '/first?x=1', { 'user-agent': 'test-agent/1', referer: 'http://ref.example/' });
    const line = await waitFor(() => (existsSync(access) ? readFileSync(access, 'utf8') : ''), 5_000, 'access log line');
    assert.match(line, /^127\.0\.0\.1 - - \[\d\d\/\w{3}\/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET \/first\?x=1 HTTP\/1\.1" 200 \d+ "http:\/\/ref\.example\/" "test-agent\/1"\n$/);
    await waitFor(() => s.err().includes('hello stderr'), 5_000, 'app output on stderr');
    assert.match(s.out(), /^hello stdout \/first\?x=1$/m);
    assert.match(s.err(), /^hello stderr \/first\?x=1$/m);
    assert.doesNotMatch(readFileSync(errors, 'utf8'), /hello/, 'the error log file is quiesce\'s own');
    // logrotate: move the files away, signal, and the next lines go to new files
    renameSync(access, `${access}.1`);
    renameSync(errors, `${errors}.1`);
    process.kill(s.pid, 'SIGUSR1');
    await waitFor(() => existsSync(errors), 5_000, 'a new error log after USR1');
    await get(s.address, '/second');
    await waitFor(() => existsSync(access) && readFileSync(access, 'utf8').includes('/second'), 5_000, 'a new access log');
    assert.doesNotMatch(readFileSync(`${access}.1`, 'utf8'), /second/);
    renameSync(access, `${access}.2`);
    const r = await s.cli('reopen-logs');
    assert.equal(r.code, 0);
    await get(s.address, '/third');
    await waitFor(() => existsSync(access) && readFileSync(access, 'utf8').includes('/third'), 5_000, 'reopen-logs verb');
    await stopServer(s);
  } finally {
    await cleanup(s);
  }
  const j = await startServer({ args: [CHATTY, '--workers', '1', '--access-log', access, '--log-format', 'json'] });
  try {
    await get(j.address, '/json');
    const entry = await waitFor(() => readFileSync(access, 'utf8').split('\n').find((l) => l.includes('"/json"')) ?? '', 5_000, 'json line');
    const o = JSON.parse(entry) as Record<string, unknown>;
    assert.equal(o.method, 'GET');
    assert.equal(o.url, '/json');
    assert.equal(o.status, 200);
    assert.equal(o.generation, 1);
    await stopServer(j);
  } finally {
    await cleanup(j);
  }
});

test('app output passes through as written (JSON lines, a stack in one block); --app-output tagged; --error-log-format json and --log-level', async () => {
  const s = await startServer({ args: [APP_OUTPUT, '--workers', '1'] });
  try {
    await get(s.address, '/a');
    await waitFor(() => s.out().includes('second half /a') && s.err().includes('stack for /a'), 5_000, 'the app output');
    const json = s.out().split('\n').find((l) => l.includes('"level":30'));
    assert.ok(json, s.out());
    assert.deepEqual(JSON.parse(json), { level: 30, msg: 'json "quoted"', url: '/a' }, 'the JSON line is the app\'s, unchanged');
    assert.match(s.out(), /^first half second half \/a$/m, 'a line written in two parts is one line');
    // the stack is one block: its message line directly followed by its frames
    assert.match(s.err(), /^Error: stack for \/a\n(    at .*\n)+/m);
    await stopServer(s);
  } finally {
    await cleanup(s);
  }
  const logDir = mkdtempSync(join(tmpdir(), 'quiesce-test-log-'));
  const log = join(logDir, 'error.log');
  const t = await startServer({ args: [APP_OUTPUT, '--workers', '1', '--app-output', 'tagged', '--error-log', log, '--error-log-format', 'json', '--log-level', 'notice'] });
  try {
    const [w] = t.workerPids();
    await get(t.address, '/b');
    await get(t.address, '/throw');
    await waitFor(() => t.err().includes('stack for /b') && readFileSync(log, 'utf8').includes('app-error'), 5_000, 'tagged output and the app-error record');
    assert.match(t.out(), new RegExp(`^\\[${w} g1\\] \\{"level":30,`, 'm'));
    assert.match(t.err(), new RegExp(`^\\[${w} g1\\] Error: stack for /b\\n\\[${w} g1\\]     at `, 'm'));
    await stopServer(t);
    const records = readFileSync(log, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(records.some((r) => r.event === 'ready' && r.level === 'notice' && String(r.who).startsWith('master[')), 'the master\'s notice');
    const appError = records.find((r) => r.event === 'app-error');
    assert.equal(appError?.who, `worker[${w} g1]`, 'a worker\'s record, named by the master');
    assert.equal(appError?.level, 'error');
    assert.ok(!records.some((r) => r.level === 'info' || r.level === 'debug'), 'nothing below --log-level notice');
  } finally {
    await cleanup(t);
    rmSync(logDir, { recursive: true, force: true });
  }
});

test('access log lines from several workers arrive whole, batched and in full at stop', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '2'] });
  const access = join(s.dir, 'access.log');
  await stopServer(s);
  const q = await startServer({ args: [PID_APP, '--workers', '2', '--access-log', access] });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const N = 400;
  const pad = 'x'.repeat(3000); // ~1.2 MB of lines: batches fill, reads end inside lines
  try {
    for (let wave = 0; wave < N / 40; wave++) {
      await Promise.all(Array.from({ length: 40 }, (_, k) => new Promise<void>((resolve, reject) => {
        const m = /^(.*):(\d+)$/.exec(q.address)!;
        http.get({ host: m[1], port: Number(m[2]), path: `/line/${wave * 40 + k}?pad=${pad}`, agent }, (res) => {
          res.resume();
          res.on('end', () => resolve());
        }).on('error', reject);
      })));
    }
    agent.destroy();
    await stopServer(q); // the last batches are written at the workers' exit
    const lines = readFileSync(access, 'utf8').split('\n');
    assert.equal(lines.pop(), '');
    const seen = new Set<number>();
    for (const line of lines) {
      const m = /^127\.0\.0\.1 - - \[[^\]]+\] "GET \/line\/(\d+)\?pad=x{3000} HTTP\/1\.1" 200 \d+ "-" "-"$/.exec(line);
      assert.ok(m, `a broken line: ${line.slice(0, 80)}…${line.slice(-40)}`);
      seen.add(Number(m[1]));
    }
    assert.equal(lines.length, N);
    assert.equal(seen.size, N);
  } finally {
    agent.destroy();
    await cleanup(q);
  }
});
test('--user: the master binds as root, workers run as the user', { skip: cannotDropPrivileges() }, async () => {
  // the app must be readable by the user (a checkout under /root is not: its mirror is)
  const s = await startServer({ args: [forNobody(CHATTY), '--workers', '1', '--user', 'nobody'] });
  try {
    const r = await get(s.address, '/');
    assert.match(r.body, /^uid=65534 /);
    const [w] = s.workerPids();
    const status = readFileSync(`/proc/${w}/status`, 'utf8');
    assert.match(status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m);
    assert.match(readFileSync(`/proc/${s.pid}/status`, 'utf8'), /^Uid:\s+0\s/m);
    await stopServer(s);
  } finally {
    await cleanup(s);
  }
});

test('malformed and hostile requests get 400 and never crash a worker', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '1', '--max-header-size', '2048'] });
  try {
    const [w] = s.workerPids();
    for (const bad of ['GARBAGE\r\n\r\n', 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n', `GET / HTTP/1.1\r\nX-Big: ${'a'.repeat(4096)}\r\n\r\n`, 'GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc']) {
      const out = await raw(s.address, bad);
      assert.match(out, /^HTTP\/1\.1 4\d\d /, JSON.stringify(bad.slice(0, 40)));
    }
    assert.equal((await get(s.address, '/')).status, 200);
    assert.deepEqual(s.workerPids(), [w]);
    await stopServer(s);
  } finally {
    await cleanup(s);
  }
});

test('lame duck: /ready and --health-path answer 503 during --drain-delay while requests are still served with Connection: close', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '1', '--drain-delay', '1.5', '--health-path', '/healthz'] });
  try {
    assert.equal((await get(s.admin, '/ready')).status, 200);
    assert.equal((await get(s.admin, '/live')).status, 200);
    assert.equal((await get(s.address, '/healthz')).status, 200);
    process.kill(s.pid, 'SIGTERM');
    await sleep(300);
    assert.equal((await get(s.admin, '/ready')).status, 503);
    assert.equal((await get(s.admin, '/live')).status, 200);
    assert.equal((await get(s.address, '/healthz')).status, 503);
    const r = await raw(s.address, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n'); // keep-alive asked, close given
    assert.match(r, /^HTTP\/1\.1 200 /);
    assert.match(r, /\r\nConnection: close\r\n/i);
    await waitExit(s, 10_000);
    assert.match(s.err(), /lame-duck ms=1500/);
  } finally {
    await cleanup(s);
  }
});

/** utime + stime of a process, in clock ticks (100 per second on Linux). */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

test('stdout and stderr closed by their reader (EPIPE): the master keeps serving, idles, and stops cleanly', async () => {
  // access log and error log both on the std streams (the defaults), as under `quiesce | head`
  const s = await startServer({ args: [PID_APP, '--workers', '1', '--access-log', '-'] });
  try {
    s.proc.stdout!.destroy();
    s.proc.stderr!.destroy();
    for (let i = 0; i < 20; i++) assert.equal((await get(s.address)).status, 200); // access lines to the dead stdout
    process.kill(s.pid, 'SIGUSR1'); // a notice to the dead stderr
    await sleep(200);
    const t0 = cpuTicks(s.pid);
    await sleep(1000);
    const used = cpuTicks(s.pid) - t0;
    assert.ok(used < 30, `the master used ${used} ticks of CPU in 1 s with nothing to do (a log error loop?)`);
    assert.equal((await get(s.address)).status, 200);
    const r = await s.cli('stop');
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await waitExit(s)).code, 0);
  } finally {
    await cleanup(s);
  }
});

test('the control socket: a garbage line and an endless one get a clear refusal; the master carries on', async () => {
  const s = await startServer({ args: [PID_APP, '--workers', '1'] });
  try {
    const ask = (data: string | Buffer): Promise<string> => new Promise((resolve, reject) => {
      const c = net.connect(`${s.pidfile}.sock`);
      let out = '';
      // the answer is one line: once it is in, the client is done (an endless line's sender is
      // not read on, so the connection would otherwise last until the master's idle timeout)
      c.on('data', (d) => { out += d.toString(); if (out.includes('\n')) c.destroy(); });
      c.on('close', () => resolve(out));
      c.on('error', (e: NodeJS.ErrnoException) => (e.code === 'EPIPE' || e.code === 'ECONNRESET' ? resolve(out) : reject(e)));
      c.setTimeout(15_000, () => c.destroy());
      c.write(data);
    });
    assert.match(await ask('not json\n'), /"ok":false.*bad control request/);
    assert.match(await ask(Buffer.alloc(1 << 20, 'x')), /"ok":false.*control request over 65536 bytes/);
    const r = await s.cli('status');
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await get(s.address)).status, 200);
  } finally {
    await stopServer(s);
    await cleanup(s);
  }
});
