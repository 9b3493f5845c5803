/**
 * quiesce used from a project of its own, as the README's "In your own project" tells it: the
 * packed package in the project's node_modules with its command in node_modules/.bin (what
 * `npm install quiesce` makes; the dependencies are linked from this checkout, the registry is
 * never asked), `npx quiesce`, and package.json scripts whose verbs find the instance from a
 * subdirectory, while `npx quiesce status` there does not (the default pid file is per directory).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, childPids, get, waitFor, within } from './helpers/server.js';
import { packedProject, run } from './helpers/pack.js';

/** npm without the network: offline, no update check, no audit or fund requests. */
const NPM_ENV = { ...process.env, npm_config_offline: 'true', npm_config_update_notifier: 'false', npm_config_audit: 'false', npm_config_fund: 'false' };

/** Every descendant of `pid`, deepest first. */
function descendants(pid: number): number[] {
  return childPids(pid).flatMap((c) => [...descendants(c), c]);
}

test('in a project of its own: npx quiesce --help; npm start; npm run status from a subdirectory reaches it, npx quiesce status there does not; npm stop', async () => {
  const { dir, proj, installed } = packedProject({
    name: 'myapp', private: true, type: 'module',
    scripts: { start: 'quiesce app.mjs --listen 127.0.0.1:0 --admin 127.0.0.1:0 --workers 1 --access-log off', status: 'quiesce status', stop: 'quiesce stop' },
  });
  // what `npm install quiesce` adds besides the package: its dependencies and the command
  for (const name of readdirSync(join(ROOT, 'node_modules'))) {
    if (!name.startsWith('.') && name !== 'quiesce') symlinkSync(join(ROOT, 'node_modules', name), join(proj, 'node_modules', name));
  }
  mkdirSync(join(proj, 'node_modules/.bin'));
  symlinkSync('../quiesce/dist/src/cli.js', join(proj, 'node_modules/.bin/quiesce'));
  chmodSync(join(installed, 'dist/src/cli.js'), 0o755); // as npm makes a bin executable
  writeFileSync(join(proj, 'app.mjs'), "export default (req, res) => res.end('my app\\n');\n");
  const sub = join(proj, 'src');
  mkdirSync(sub);

  const help = run('npx', ['quiesce', '--help'], proj, NPM_ENV);
  assert.equal(help.status, 0, help.out);
  assert.match(help.stdout, /^usage: quiesce \[APP\]/);

  const start = spawn('npm', ['start'], { cwd: proj, env: NPM_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  start.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  start.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | null>((r) => start.once('close', (code) => r(code)));
  try {
    await waitFor(() => /quiesce: ready pid=\d+/.test(out) || start.exitCode !== null, 30_000, 'npm start');
    const pid = /quiesce: ready pid=(\d+)/.exec(out)?.[1];
    assert.ok(pid, out);
    assert.match(out, new RegExp(`control socket \\S*/quiesce-proj-[0-9a-f]{8}\\.pid\\.sock`), 'the pid file is named after the project directory');
    const address = /listening on http:\/\/(\S+)/.exec(out)![1]!;
    assert.equal((await get(address, '/')).body, 'my app\n');

    const scripted = run('npm', ['run', '--silent', 'status'], sub, NPM_ENV);
    assert.equal(scripted.status, 0, `npm run status from a subdirectory runs at the project root: ${scripted.out}`);
    assert.match(scripted.stdout, new RegExp(`\\b${pid}\\b`));
    const atRoot = run('npx', ['quiesce', 'status'], proj, NPM_ENV);
    assert.equal(atRoot.status, 0, atRoot.out);
    assert.match(atRoot.stdout, new RegExp(`\\b${pid}\\b`));
    const inSub = run('npx', ['quiesce', 'status'], sub, NPM_ENV);
    assert.equal(inSub.status, 1, inSub.out);
    assert.match(inSub.out, /quiesce-src-[0-9a-f]{8}\.pid.*not running|not running.*quiesce-src-[0-9a-f]{8}\.pid/s, 'a subdirectory names another instance');

    const stop = run('npm', ['stop'], sub, NPM_ENV);
    assert.equal(stop.status, 0, stop.out);
    assert.match(stop.out, /quiesce: stopped/);
    assert.equal(await within(exited, 20_000, 'npm start to end'), 0, out);
  } finally {
    for (const p of [...descendants(start.pid!), start.pid!]) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
});
