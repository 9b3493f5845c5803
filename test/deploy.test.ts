/**
 * docs/deploy/: every snippet is checked against quiesce itself. Its quiesce arguments pass
 * `quiesce configtest` (a real CLI, an app in a temp dir); its stop timeout is above the longest
 * graceful stop those arguments allow, computed from the defaults in SETTINGS; its health checks
 * name the paths and ports quiesce serves; and it is parsed by its own tool where the tool is here
 * (systemd-analyze verify, nginx -t, haproxy -c), YAML by the yaml package.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { SETTINGS, parseDuration } from '../src/shared/config.js';
import { CLI, ROOT, runCli } from './helpers/server.js';

const DEPLOY = join(ROOT, 'docs/deploy');
const read = (name: string) => readFileSync(join(DEPLOY, name), 'utf8');
/** false when `tool` is on PATH, else the reason its check is skipped (listed at the end of npm test). */
const toolMissing = (tool: string): false | string => (spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0 ? false : `${tool} is not installed here`);

/** The value of `--flag` in args (the last one), or undefined. */
function flag(args: readonly string[], name: string): string | undefined {
  const i = args.lastIndexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

/** Seconds a graceful stop may take with these arguments: drain delay + drain cap + graceful timeout + 1 s (the master's force) + kill grace. */
function longestStopS(args: readonly string[]): number {
  const ms = (key: 'drainDelay' | 'drainCap' | 'gracefulTimeout' | 'killGrace'): number => {
    const given = flag(args, SETTINGS[key].flag);
    const v = given === undefined ? SETTINGS[key].default : parseDuration(given);
    assert.ok(v !== undefined, `--${SETTINGS[key].flag} ${given}`);
    return v;
  };
  return (ms('drainDelay') + ms('drainCap') + ms('gracefulTimeout') + 1_000 + ms('killGrace')) / 1000;
}

/** `quiesce configtest ARGS` where app.mjs exists; asserts it passes. */
async function configtest(args: readonly string[], where: string): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-deploy-'));
  try {
    writeFileSync(join(dir, 'app.mjs'), "export default (req, res) => res.end('ok');\n");
    const r = await runCli(['configtest', ...args], dir);
    assert.equal(r.code, 0, `${where}: quiesce configtest ${args.join(' ')}:\n${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /configuration ok \(app \S+app\.mjs loads as a listener app/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The quiesce command a balancer's snippet documents in its `# quiesce: quiesce ARGS` comment. */
function documentedArgs(text: string, name: string): string[] {
  const m = /^# quiesce: quiesce (.+)$/m.exec(text);
  assert.ok(m, `${name} names the quiesce command it fronts`);
  return m[1]!.trim().split(/\s+/);
}

const portOf = (listen: string | undefined): number => Number(/(\d+)$/.exec(listen ?? '')?.[1]);

test('the systemd unit: quiesce flags pass configtest, TimeoutStopSec is above the longest stop, reload through quiesce, systemd-analyze verify is clean', async (t) => {
  const unit = read('quiesce.service');
  const key = (k: string): string[] => [...unit.matchAll(new RegExp(`^${k}=(.*)$`, 'gm'))].map((m) => m[1]!);
  const exec = key('ExecStart')[0]!;
  const bin = '/srv/myapp/node_modules/.bin/quiesce';
  assert.ok(exec.startsWith(`${bin} `), exec);
  const args = exec.slice(bin.length).trim().split(/\s+/);
  await configtest(args, 'ExecStart');
  assert.match(key('Type')[0]!, /^notify$/); // quiesce speaks sd_notify (src/master/systemd.ts)
  // the new master of an upgrade sends MAINPID= before it is the main process (src/master/systemd.ts mainPid)
  assert.equal(key('NotifyAccess')[0], 'all');
  assert.deepEqual(key('KillSignal'), ['SIGTERM']);
  assert.deepEqual(key('KillMode'), ['mixed']);
  const reload = key('ExecReload')[0]!;
  assert.ok(reload === `${bin} reload --pidfile ${flag(args, 'pidfile')}` || reload === '/bin/kill -HUP $MAINPID', reload);
  assert.ok(Number(key('TimeoutStopSec')[0]) > longestStopS(args), `TimeoutStopSec ${key('TimeoutStopSec')[0]} > ${longestStopS(args)} s`);
  assert.equal(longestStopS(args), 33, 'the unit\'s comment says 33 s with the defaults');
  assert.match(unit, /= 33 s with the defaults/);
  assert.equal(flag(args, 'pidfile'), '/run/myapp/quiesce.pid');
  assert.deepEqual(key('RuntimeDirectory'), ['myapp']);

  await t.test('systemd-analyze verify', { skip: toolMissing('systemd-analyze') }, () => {
    // /srv/myapp stands for a temp dir whose node_modules/.bin/quiesce is this checkout's CLI
    const dir = mkdtempSync(join(tmpdir(), 'quiesce-unit-'));
    try {
      mkdirSync(join(dir, 'node_modules/.bin'), { recursive: true });
      symlinkSync(CLI, join(dir, 'node_modules/.bin/quiesce'));
      chmodSync(CLI, 0o755);
      const file = join(dir, 'myapp.service');
      writeFileSync(file, unit.replaceAll('/srv/myapp', dir));
      const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr.trim(), '', `systemd-analyze verify warns:\n${r.stderr}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test('the Dockerfile and compose.yaml: quiesce under tini, its CMD passes configtest, STOPSIGNAL SIGTERM, compose waits longer than the longest stop', async () => {
  const file = read('Dockerfile');
  const json = (instr: string): string[] => JSON.parse(new RegExp(`^${instr} (\\[.*\\])$`, 'm').exec(file)?.[1] ?? 'null') as string[];
  assert.deepEqual(json('ENTRYPOINT'), ['/usr/bin/tini', '--', '/app/node_modules/.bin/quiesce']);
  const cmd = json('CMD');
  await configtest(cmd, 'CMD');
  assert.match(file, /^STOPSIGNAL SIGTERM$/m);
  assert.match(file, /^WORKDIR \/app$/m);
  assert.match(file, /^HEALTHCHECK .*http:\/\/127\.0\.0\.1:8081\/ready/m, 'the default admin address, from inside');
  assert.equal(SETTINGS.admin.default, 'auto'); // auto: 127.0.0.1:8081 first

  const docs = parseAllDocuments(read('compose.yaml'));
  assert.equal(docs.length, 1);
  assert.deepEqual(docs[0]!.errors, []);
  const compose = docs[0]!.toJS() as { services: Record<string, { stop_grace_period: string; ports: string[] }> };
  const app = compose.services.app!;
  assert.ok(parseDuration(app.stop_grace_period)! / 1000 > longestStopS(cmd), `stop_grace_period ${app.stop_grace_period}`);
  assert.equal(portOf(app.ports[0]), portOf(flag(cmd, 'listen')));
});

type Container = {
  args: string[];
  ports: Array<{ containerPort: number }>;
  readinessProbe: { httpGet: { path: string; port: number } };
  livenessProbe: { httpGet: { path: string; port: number } };
  lifecycle?: unknown;
  env: Array<{ name: string }>;
};

test('the Kubernetes Deployment: args pass configtest, readiness on /ready and liveness on /live of the admin listener, a lame duck and no preStop, terminationGracePeriodSeconds above the longest stop', async () => {
  const docs = parseAllDocuments(read('kubernetes.yaml'));
  for (const d of docs) assert.deepEqual(d.errors, []);
  const objs = docs.map((d) => d.toJS() as { kind: string; spec: Record<string, unknown> });
  assert.deepEqual(objs.map((o) => o.kind), ['Deployment', 'Service']);
  const pod = (objs[0]!.spec as { template: { spec: { terminationGracePeriodSeconds: number; containers: Container[] } } }).template.spec;
  const c = pod.containers[0]!;
  await configtest(c.args, 'args');
  const admin = flag(c.args, 'admin');
  assert.match(admin ?? '', /^0\.0\.0\.0:\d+$/, 'the kubelet reaches the admin listener on the pod\'s address');
  assert.deepEqual(c.readinessProbe.httpGet, { path: '/ready', port: portOf(admin) });
  assert.deepEqual(c.livenessProbe.httpGet, { path: '/live', port: portOf(admin) });
  assert.equal(flag(c.args, 'admin-token'), '$(ADMIN_TOKEN)');
  assert.ok(c.env.some((e) => e.name === 'ADMIN_TOKEN'));
  assert.ok(parseDuration(flag(c.args, 'drain-delay') ?? '0')! > 0, 'a lame duck');
  assert.equal(c.lifecycle, undefined, 'no preStop hook');
  assert.deepEqual(c.ports.map((p) => p.containerPort).sort(), [portOf(flag(c.args, 'listen')), portOf(admin)].sort());
  assert.ok(pod.terminationGracePeriodSeconds > longestStopS(c.args), `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} > ${longestStopS(c.args)}`);
  assert.equal(longestStopS(c.args), 38, 'the file\'s comment says 38 s');
  assert.match(read('kubernetes.yaml'), /= 38 s/);
  const svc = objs[1]!.spec as { ports: Array<{ targetPort: number }> };
  assert.equal(svc.ports[0]!.targetPort, portOf(flag(c.args, 'listen')));
});

test('nginx: the command it fronts passes configtest, its upstreams are on that port, its keep-alive ends before quiesce\'s; nginx -t accepts it', async (t) => {
  const conf = read('nginx.conf');
  const args = documentedArgs(conf, 'nginx.conf');
  await configtest(args, 'nginx.conf');
  const servers = [...conf.matchAll(/^\s*server (\S+):(\d+) /gm)];
  assert.ok(servers.length >= 2, 'several instances');
  for (const s of servers) assert.equal(Number(s[2]), portOf(flag(args, 'listen')));
  const nginxKa = parseDuration(/keepalive_timeout (\d+s);/.exec(conf)![1]!)!;
  const quiesceKa = parseDuration(flag(args, 'keepalive-timeout') ?? String(SETTINGS.keepAliveTimeout.default) + 'ms')!;
  assert.ok(nginxKa < quiesceKa, `nginx's upstream keepalive_timeout ${nginxKa} ms < quiesce's ${quiesceKa} ms`);
  assert.match(conf, /proxy_next_upstream error timeout;/);

  await t.test('nginx -t', { skip: toolMissing('nginx') }, () => {
    // the file is for the http {} context: included in a minimal main config of a temp prefix
    const dir = mkdtempSync(join(tmpdir(), 'quiesce-nginx-'));
    try {
      const main = join(dir, 'nginx.conf');
      writeFileSync(main, `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents {}\nhttp {\n  access_log off;\n  include ${join(DEPLOY, 'nginx.conf')};\n}\n`);
      const r = spawnSync('nginx', ['-t', '-p', dir, '-c', main], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /syntax is ok/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test('HAProxy: the command it fronts passes configtest, its check is on --health-path and takes a server out within the lame duck, retries and redispatch are on', async (t) => {
  const cfg = read('haproxy.cfg');
  const args = documentedArgs(cfg, 'haproxy.cfg');
  await configtest(args, 'haproxy.cfg');
  assert.equal(/option httpchk GET (\S+)/.exec(cfg)?.[1], flag(args, 'health-path'));
  assert.match(cfg, /http-check expect status 200/);
  const inter = parseDuration(/default-server inter (\S+)/.exec(cfg)![1]!)!;
  const fall = Number(/ fall (\d+)/.exec(cfg)![1]);
  assert.ok(parseDuration(flag(args, 'drain-delay') ?? '0')! > inter * fall, `--drain-delay above inter × fall (${inter * fall} ms)`);
  const servers = [...cfg.matchAll(/^\s*server \S+ (\S+):(\d+) check$/gm)];
  assert.ok(servers.length >= 2, 'several instances');
  for (const s of servers) assert.equal(Number(s[2]), portOf(flag(args, 'listen')));
  assert.match(cfg, /^\s*retries \d+$/m);
  assert.match(cfg, /^\s*option redispatch$/m);

  await t.test('haproxy -c', { skip: toolMissing('haproxy') }, () => {
    const r = spawnSync('haproxy', ['-c', '-f', join(DEPLOY, 'haproxy.cfg')], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  });
});
