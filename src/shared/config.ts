/**
 * Configuration: one table of settings with defaults and units, validated once with zod, then
 * frozen. Flags win over the config file. A reload re-reads the config file (flags given on the
 * command line at start stay applied on top); see `reload` in the table for what it applies.
 */
import { availableParallelism } from 'node:os';
import { readFileSync, existsSync } from 'node:fs';
import { extname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { QuiesceError, errorMessage } from './errors.js';

type Kind = 'string' | 'int' | 'duration' | 'bool' | 'list';

type Setting = {
  flag: string;
  kind: Kind;
  default: unknown;
  /** Shown in --help and the README. */
  doc: string;
  /** Whether a reload applies a change of this setting (else it needs a restart). */
  reload: boolean;
};

/** Durations are milliseconds inside; flags and files take seconds (`25`, `1.5`) or `500ms`/`2s`/`1m`. */
export const SETTINGS = {
  listen: { flag: 'listen', kind: 'list', default: ['8080'], reload: true,
    doc: 'address to serve: HOST:PORT, [V6]:PORT, a bare PORT (all interfaces, dual-stack) or a unix socket path; repeatable' },
  admin: { flag: 'admin', kind: 'string', default: '127.0.0.1:8081', reload: false,
    doc: 'admin listener of the master (/live, /ready, /server-status, /metrics); "off" to disable' },
  workers: { flag: 'workers', kind: 'int', default: 0, reload: true,
    doc: 'worker processes; 0 = CPU count, respecting cgroup CPU limits' },
  gracefulTimeout: { flag: 'graceful-timeout', kind: 'duration', default: 25_000, reload: true,
    doc: 'how long a retiring worker may finish its requests before they are forced (s)' },
  drainDelay: { flag: 'drain-delay', kind: 'duration', default: 0, reload: true,
    doc: 'lame-duck time at a stop: /ready answers 503 while everything is still served (s)' },
  drainCap: { flag: 'drain-cap', kind: 'duration', default: 2_000, reload: true,
    doc: 'longest the accept queue drain may take before listeners are closed anyway (s)' },
  idleGrace: { flag: 'idle-grace', kind: 'duration', default: 1_000, reload: true,
    doc: 'a retiring worker closes an idle keep-alive connection only after it was idle this long (s)' },
  readyTimeout: { flag: 'ready-timeout', kind: 'duration', default: 30_000, reload: true,
    doc: 'how long a new worker may take to load the app and run init() (s)' },
  killGrace: { flag: 'kill-grace', kind: 'duration', default: 5_000, reload: true,
    doc: 'after forcing, how long before a worker that has not exited gets SIGKILL (s)' },
  respawnBackoff: { flag: 'respawn-backoff', kind: 'duration', default: 100, reload: true,
    doc: 'first delay before respawning a crashed worker; doubles per crash up to 10 s (s)' },
  reloadSoak: { flag: 'reload-soak', kind: 'duration', default: 2_000, reload: true,
    doc: 'both generations serve this long after a reload; a new worker crashing meanwhile rolls back (s)' },
  reloadStrategy: { flag: 'reload-strategy', kind: 'string', default: 'all', reload: true,
    doc: '"all": start the whole new generation first; "rolling": replace workers one by one' },
  backlog: { flag: 'backlog', kind: 'int', default: 511, reload: false,
    doc: 'listen backlog (as nginx), capped by net.core.somaxconn' },
  keepAliveTimeout: { flag: 'keepalive-timeout', kind: 'duration', default: 5_000, reload: true,
    doc: 'idle keep-alive connections are closed after this (s)' },
  headersTimeout: { flag: 'headers-timeout', kind: 'duration', default: 60_000, reload: true,
    doc: 'time to receive the request headers (s)' },
  requestTimeout: { flag: 'request-timeout', kind: 'duration', default: 300_000, reload: true,
    doc: 'time to receive the whole request (s)' },
  maxHeaderSize: { flag: 'max-header-size', kind: 'int', default: 16_384, reload: true,
    doc: 'largest request header block in bytes' },
  maxRequestsPerWorker: { flag: 'max-requests-per-worker', kind: 'int', default: 0, reload: true,
    doc: 'retire a worker after this many requests (with up to 10% jitter); 0 = never' },
  pidfile: { flag: 'pidfile', kind: 'string', default: '', reload: false,
    doc: 'pid file naming the instance; its control socket is PIDFILE.sock (default: $XDG_RUNTIME_DIR or /tmp, quiesce.pid)' },
  accessLog: { flag: 'access-log', kind: 'string', default: '-', reload: true,
    doc: 'access log file, "-" for stdout, "off" to disable' },
  errorLog: { flag: 'error-log', kind: 'string', default: '-', reload: true,
    doc: 'error log file, "-" for stderr' },
  logFormat: { flag: 'log-format', kind: 'string', default: 'combined', reload: true,
    doc: 'access log format: "combined" (Combined Log Format) or "json"' },
  user: { flag: 'user', kind: 'string', default: '', reload: false,
    doc: 'workers drop privileges to this user (the master binds as root)' },
  group: { flag: 'group', kind: 'string', default: '', reload: false,
    doc: 'workers drop privileges to this group (default: the user\'s group)' },
  healthPath: { flag: 'health-path', kind: 'string', default: '', reload: true,
    doc: 'a path on the main listeners answering 200, and 503 while the server drains' },
  exposeGeneration: { flag: 'expose-generation', kind: 'bool', default: false, reload: true,
    doc: 'add an x-quiesce-generation response header' },
  autoindex: { flag: 'autoindex', kind: 'bool', default: false, reload: true,
    doc: 'list directories when serving static files' },
  adminToken: { flag: 'admin-token', kind: 'string', default: '', reload: true,
    doc: 'token required for the admin pages (but /live and /ready) when the admin listener is off loopback' },
} as const satisfies Record<string, Setting>;

export type Key = keyof typeof SETTINGS;

const duration = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `not a duration: ${JSON.stringify(v)} (use seconds, or 500ms, 2s, 1m)` });
    return z.NEVER;
  }
  return ms;
});
const int = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isInteger(n) || n < 0) {
    ctx.addIssue({ code: 'custom', message: `not a whole number >= 0: ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return n;
});

export const configSchema = z.strictObject({
  listen: z.array(z.string().min(1)).min(1, 'at least one listen address'),
  admin: z.string().min(1),
  workers: int.pipe(z.number().max(512)),
  gracefulTimeout: duration,
  drainDelay: duration,
  drainCap: duration,
  idleGrace: duration,
  readyTimeout: duration.pipe(z.number().min(1)),
  killGrace: duration,
  respawnBackoff: duration,
  reloadSoak: duration,
  reloadStrategy: z.enum(['all', 'rolling']),
  backlog: int.pipe(z.number().min(1)),
  keepAliveTimeout: duration,
  headersTimeout: duration,
  requestTimeout: duration,
  maxHeaderSize: int.pipe(z.number().min(1024)),
  maxRequestsPerWorker: int,
  pidfile: z.string(),
  accessLog: z.string(),
  errorLog: z.string(),
  logFormat: z.enum(['combined', 'json']),
  user: z.string(),
  group: z.string(),
  healthPath: z.string().refine((p) => p === '' || p.startsWith('/'), 'must start with /'),
  exposeGeneration: z.boolean(),
  autoindex: z.boolean(),
  adminToken: z.string(),
  /** The positional argument: an app module, a directory, or '' for the bundled site. */
  app: z.string(),
});

export type Config = Readonly<z.output<typeof configSchema>> & { readonly listen: readonly string[] };
/** Raw, unvalidated settings as they come from flags or a file. */
export type RawConfig = Partial<Record<Key | 'app', unknown>>;

export function parseDuration(v: number | string): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? Math.round(v * 1000) : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$/.exec(v);
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return Math.round(unit === 'ms' ? n : unit === 'm' ? n * 60_000 : n * 1000);
}

export function defaults(): RawConfig {
  const out: RawConfig = { app: '' };
  for (const [key, s] of Object.entries(SETTINGS) as Array<[Key, Setting]>) {
    out[key] = s.kind === 'duration' ? (s.default as number) / 1000 : s.default;
  }
  return out;
}

/** Validate merged settings; throws QuiesceError naming the key (and its source) at fault. */
export function validate(raw: RawConfig, source: string): Config {
  const r = configSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const key = issue.path.join('.');
    const setting = (SETTINGS as Record<string, Setting>)[String(issue.path[0])];
    const name = issue.code === 'unrecognized_keys'
      ? `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}`
      : setting && source === 'flags' ? `--${setting.flag}` : `"${key}"`;
    throw new QuiesceError('CONFIG_INVALID', `${source}: ${name}: ${issue.code === 'unrecognized_keys' ? 'not a setting of quiesce' : issue.message}`);
  }
  const cfg = r.data;
  if (cfg.workers === 0) cfg.workers = cpuCount();
  return Object.freeze(cfg);
}

/** CPU count, respecting a cgroup v2 CPU quota (containers) and the affinity mask. */
export function cpuCount(): number {
  let n = availableParallelism();
  try {
    const [quota, period] = readFileSync('/sys/fs/cgroup/cpu.max', 'utf8').trim().split(/\s+/);
    if (quota && period && quota !== 'max') n = Math.min(n, Math.max(1, Math.ceil(Number(quota) / Number(period))));
  } catch {
    // no cgroup v2 CPU controller visible: the affinity count stands
  }
  return Math.max(1, n);
}

/** Load a config file: .json, or a JS module (.js/.mjs/.cjs) default-exporting an object. */
export async function loadConfigFile(path: string): Promise<RawConfig> {
  const abs = resolve(path);
  if (!existsSync(abs)) throw new QuiesceError('CONFIG_FILE', `--config ${path}: no such file`);
  const ext = extname(abs);
  try {
    if (ext === '.json') return JSON.parse(readFileSync(abs, 'utf8')) as RawConfig;
    // cache-busting query so that a reload re-reads the file
    const mod = (await import(`${pathToFileURL(abs).href}?t=${Date.now()}`)) as { default?: unknown };
    const value = typeof mod.default === 'function' ? await (mod.default as () => unknown)() : mod.default;
    if (!value || typeof value !== 'object') throw new Error('must default-export an object of settings');
    return value as RawConfig;
  } catch (err) {
    if (err instanceof QuiesceError) throw err;
    const hint = /\.[cm]?ts$/.test(ext) ? ' (TypeScript config files need a Node that strips types, >= 22.18; else use .json or .js)' : '';
    throw new QuiesceError('CONFIG_FILE', `--config ${path}: ${errorMessage(err)}${hint}`);
  }
}

/** Merge: defaults, then the file, then flags. */
export function merge(...layers: RawConfig[]): RawConfig {
  const out: RawConfig = {};
  for (const layer of layers) for (const [k, v] of Object.entries(layer)) if (v !== undefined) out[k as Key] = v;
  return out;
}
