/**
 * Issue 17 item 12, each with a real quiesce: the welcome page links to the admin listener where it
 * really is; the access log's size is body bytes and an IPv4 client of a dual-stack socket shows as
 * IPv4; --access-log-skip-health; the admin index; the warning for an admin listener off loopback
 * without a token; a unix socket's mode; a two-parameter fetch handler is answered, not left hanging.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, cleanup, stopServer, get, waitFor, within, runCli, CLI, FIXTURES, childPids } from './helpers/server.js';

const access = (dir: string) => join(dir, 'access.log');
const lines = (file: string): string[] => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : []);
/** The access log line of a request to `path` (method included), once it is written. */
const lineOf = async (file: string, method: string, path: string): Promise<string> =>
  (await waitFor(() => lines(file).find((l) => l.includes(`"${method} ${path} HTTP/1.1"`)), 5_000, `the access line of ${method} ${path}`))!;

function head(address: string, path: string): Promise<number> {
  const m = /^(.*):(\d+)$/.exec(address)!;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: m[1]!, port: Number(m[2]), path, method: 'HEAD', agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); });
    req.on('error', reject);
    req.end();
  });
}

test('the welcome page links to the admin listener where it is; the access log: body bytes, IPv4 clients of a dual-stack socket as IPv4, health hits kept; admin / is an index', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-small-'));
  // an IPv6 socket on the v4-mapped loopback address: IPv4 clients arrive as ::ffff:127.0.0.1 (as on a dual-stack ::)
  const s = await startServer({ args: ['--listen', '[::ffff:127.0.0.1]:0', '--workers', '1', '--access-log', access(dir), '--health-path', '/healthz'] });
  try {
    const port = s.port;
    const v4 = `127.0.0.1:${port}`;
    const page = await get(v4, '/');
    assert.equal(page.status, 200);
    assert.notEqual(s.admin, '127.0.0.1:8081');
    assert.match(page.body, new RegExp(`href="http://${s.admin.replace(/\./g, '\\.')}/server-status"`), 'the card links to this instance\'s admin listener');
    assert.doesNotMatch(page.body, /8081/);
    assert.match(page.body, /<link rel="stylesheet" href="style.css">/);
    const css = await get(v4, '/style.css');
    assert.equal(css.status, 200);
    assert.equal(await head(v4, '/'), 200);
    assert.equal((await get(v4, '/healthz')).status, 200);

    const log = access(dir);
    const pageLine = await lineOf(log, 'GET', '/');
    assert.match(pageLine, /^127\.0\.0\.1 - - /, 'an IPv4 client shows as IPv4');
    assert.equal(pageLine.split('" ')[1]!.split(' ')[1], String(Buffer.byteLength(page.body)), `%b is the body's bytes: ${pageLine}`);
    const cssLine = await lineOf(log, 'GET', '/style.css');
    assert.equal(cssLine.split('" ')[1]!.split(' ')[1], css.headers['content-length'], cssLine);
    const headLine = await lineOf(log, 'HEAD', '/');
    assert.match(headLine, /" 200 - "/, `no body: "-" (${headLine})`);
    const healthLine = await lineOf(log, 'GET', '/healthz');
    assert.match(healthLine, /" 200 3 "/, healthLine);

    // the admin listener's index links its pages
    const index = await get(s.admin, '/');
    assert.equal(index.status, 200);
    for (const p of ['/server-status', '/server-status?auto', '/server-status?json', '/metrics', '/live', '/ready']) assert.ok(index.body.includes(`href="${p}"`), p);
    const withToken = await get(s.admin, '/?token=a%22b');
    assert.ok(withToken.body.includes('href="/metrics?token=a%22b"'), 'links carry a ?token= (escaped)');
    assert.doesNotMatch(s.err(), /admin-token-missing/, 'no warning on loopback');
    await stopServer(s);
  } finally {
    await cleanup(s);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--admin off: the welcome page says so; --access-log-skip-health leaves health hits out; a unix socket listener gets its mode', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-small-'));
  const sock = join(dir, 'app.sock');
  const s = await startServer({ args: ['--listen', '127.0.0.1:0', '--listen', `unix:${sock}:0660`, '--admin', 'off', '--workers', '1', '--access-log', access(dir), '--health-path', '/healthz', '--access-log-skip-health'] });
  try {
    const page = await get(s.address, '/');
    assert.match(page.body, /The admin listener is off/);
    assert.doesNotMatch(page.body, /href="http:\/\/[^"]*server-status"/);
    assert.equal(statSync(sock).mode & 0o777, 0o660, 'the socket file has the mode asked for (the test\'s umask would give 0755)');
    const overUnix = await new Promise<number>((resolve, reject) => {
      http.get({ socketPath: sock, path: '/style.css', agent: false }, (res) => { res.resume(); resolve(res.statusCode ?? 0); }).on('error', reject);
    });
    assert.equal(overUnix, 200);
    for (let i = 0; i < 3; i++) assert.equal((await get(s.address, '/healthz')).status, 200);
    assert.equal((await get(s.address, '/after-health')).status, 404);
    await lineOf(access(dir), 'GET', '/after-health'); // written after the health hits, in order
    assert.ok(!lines(access(dir)).some((l) => l.includes('/healthz')), lines(access(dir)).join('\n'));
    await stopServer(s);
  } finally {
    await cleanup(s);
    rmSync(dir, { recursive: true, force: true });
  }
  const bad = await runCli(['configtest', '--listen', `unix:${sock}:1777`]);
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /--listen "unix:.*:1777": mode 1777: only permission bits/);
});

const canUnshare = spawnSync('unshare', ['-n', 'true']).status === 0;

test('--admin on every address without --admin-token warns at start', { skip: canUnshare ? false : 'needs unshare -n (root) to bind 0.0.0.0 in a network namespace of its own' }, async () => {
  // in a network namespace of its own, 0.0.0.0 is loopback only: nothing leaves this machine
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-small-'));
  const p = spawn('unshare', ['-n', 'sh', '-c', `ip link set lo up && exec "${process.execPath}" "${CLI}" --admin 0.0.0.0:0 --listen 127.0.0.1:0 --workers 1 --access-log off --pidfile "${join(dir, 'q.pid')}"`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<void>((r) => p.once('close', () => r()));
  try {
    await waitFor(() => /quiesce: ready /.test(out) || p.exitCode !== null, 15_000, `the start:\n${out}\n${err}`);
    assert.match(out, /admin on http:\/\/0\.0\.0\.0:\d+/, out + err);
    assert.match(err, /\[warn\] master\[\d+\]: admin-token-missing address=0\.0\.0\.0:\d+ note="[^"]*answer 401 until --admin-token is set"/, err);
    process.kill(p.pid!, 'SIGTERM');
    await within(exited, 20_000, 'the master\'s exit');
  } finally {
    for (const pid of [...childPids(p.pid!), p.pid!]) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a two-parameter fetch handler taken as a Node listener: answered 500 and logged with the fix, never left hanging', async () => {
  const s = await startServer({ args: [join(FIXTURES, 'apps/fetch-two-params.mjs'), '--workers', '1'] });
  try {
    const r = await within(get(s.address, '/x'), 10_000, 'an answer');
    assert.equal(r.status, 500);
    assert.match(r.body, /returned a fetch Response from a Node listener/);
    await waitFor(() => s.err().includes('app-error'), 5_000, 'the app-error line');
    assert.match(s.err(), /app-error where=request method=GET path=\/x error="[^"]*fetch-two-params\.mjs: the default export returned a Response, but it is called as a Node listener \(req, res\) because it declares 2 parameters; a fetch handler [^"]*needs `export const kind = 'fetch'`/);
    await stopServer(s);
  } finally {
    await cleanup(s);
  }
});
