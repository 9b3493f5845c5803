/**
 * Configuration: one table of settings with defaults and units, validated once with valibot (a small
 * schema library: the master stays lean), then
 * frozen. Flags win over the config file. A reload re-reads the config file (flags given on the
 * command line at start stay applied on top); see `reload` in the table for what it applies.
 */
import { availableParallelism } from 'node:os';
import { readFileSync, existsSync } from 'node:fs';
import { extname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as v from 'valibot';
import { QuiesceError, errorMessage } from './errors.js';
import { LEVELS } from './log.js';
import { didYouMean } from './suggest.js';

type Kind = 'string' | 'int' | 'duration' | 'size' | 'bool' | 'list';

type Setting = {
  flag: string;
  kind: Kind;
  default: unknown;
  /** Shown in --help and the README. */
  doc: string;
  /** Whether a reload applies a change of this setting (else it needs a restart). */
  reload: boolean;
};

/**
 * Durations are milliseconds inside; flags and files take seconds (`25`, `1.5`) or `500ms`/`2s`/`1m`.
 * Sizes are bytes inside; flags and files take bytes (`65536`) or `512k`/`64m`/`1g` (powers of 1024).
 */
export const SETTINGS = {
  listen: { flag: 'listen', kind: 'list', default: ['8080'], reload: true,
    doc: 'address to serve: HOST:PORT, [V6]:PORT, a bare PORT (all interfaces, dual-stack) or a unix socket path (unix:PATH, with :0660 at the end for its permissions); repeatable' },
  admin: { flag: 'admin', kind: 'string', default: 'auto', reload: false,
    doc: 'admin listener of the master (/live, /ready, /server-status, /metrics); "auto": 127.0.0.1:8081, or a free loopback port when taken; "off" to disable' },
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
  workerTimeout: { flag: 'worker-timeout', kind: 'duration', default: 30_000, reload: true,
    doc: 'a ready worker whose event loop has not answered for this long, or answered only late (held up 500 ms or more in every report), is hung: replaced, then killed, its stack logged when it can be read; 0 = never (s)' },
  maxMemory: { flag: 'max-memory', kind: 'size', default: 0, reload: true,
    doc: 'a worker whose RSS (resident memory: heap, buffers and native) passes this retires gracefully, its replacement started first (512m, 1g); 0 = no limit' },
  respawnBackoff: { flag: 'respawn-backoff', kind: 'duration', default: 100, reload: true,
    doc: 'first delay before respawning a crashed worker; doubles per crash up to 10 s (s)' },
  reloadSoak: { flag: 'reload-soak', kind: 'duration', default: 2_000, reload: true,
    doc: 'both generations serve this long after a reload; a new worker crashing meanwhile rolls back (s)' },
  spareWorker: { flag: 'spare-worker', kind: 'string', default: 'off', reload: true,
    doc: 'warm spares: N more workers (0-4) loaded and ready that accept nothing until a worker dies, hangs or is replaced, then one takes its place at once (no wait for an app to load) and a new spare starts; each costs one idle process; "on" = 1, "off" = 0' },
  reloadStrategy: { flag: 'reload-strategy', kind: 'string', default: 'all', reload: true,
    doc: '"all": start the whole new generation first; "rolling": replace workers one by one' },
  reloadJudge: { flag: 'reload-judge', kind: 'string', default: 'off', reload: true,
    doc: 'judge the new generation on its own traffic during the reload soak and roll it back when its 5xx rate or p99 latency is worse than the old one\'s (needs --metrics on); "on" or "off" (off by default: judged reloads showed cuts under load, docs/STATUS.md); `quiesce reload --no-judge` skips it for one reload; upgrades (quiesce upgrade, USR2) are judged by it too, `quiesce upgrade --judge`/`--no-judge` for one upgrade' },
  judgeMax5xxRatio: { flag: 'judge-max-5xx-ratio', kind: 'string', default: 0.01, reload: true,
    doc: 'the judge rolls back a new generation whose 5xx share exceeds the old one\'s by more than this (0.01: one percentage point)' },
  judgeMaxP99Ratio: { flag: 'judge-max-p99-ratio', kind: 'string', default: 2, reload: true,
    doc: 'the judge rolls back a new generation whose median latency (and, from 1,000 responses on each side, p99) is more than this many times the old one\'s, and more than 5 ms slower' },
  judgeMinRequests: { flag: 'judge-min-requests', kind: 'int', default: 100, reload: true,
    doc: 'responses each generation must serve during the soak for the judge to compare them; with fewer it abstains (says so) and the reload goes on' },
  metrics: { flag: 'metrics', kind: 'string', default: 'on', reload: true,
    doc: 'count every response by status class and latency for /metrics, status and the reload judge: "on" or "off"' },
  backlog: { flag: 'backlog', kind: 'int', default: 511, reload: false,
    doc: 'listen backlog (as nginx), capped by net.core.somaxconn; below 16 is warned about (`backlog-small`): under overload a stop can then cut' },
  keepAliveTimeout: { flag: 'keepalive-timeout', kind: 'duration', default: 5_000, reload: true,
    doc: 'idle keep-alive connections are closed after this plus 1 s, as Node does; sent as `Keep-Alive: timeout` (s)' },
  headersTimeout: { flag: 'headers-timeout', kind: 'duration', default: 60_000, reload: true,
    doc: 'time to receive the request headers: a request whose headers are not all in gets 408, a connection that sends nothing is closed (s)' },
  requestTimeout: { flag: 'request-timeout', kind: 'duration', default: 300_000, reload: true,
    doc: 'time to receive the whole request (s)' },
  queueTimeout: { flag: 'queue-timeout', kind: 'duration', default: 0, reload: true,
    doc: 'a request that waited this long before a worker read it (in the accept queue and behind other requests) is answered 503 with Retry-After at once, not served: under overload the queue stays short instead of growing until clients give up (as HAProxy\'s timeout queue); 0 = never (s)' },
  maxHeaderSize: { flag: 'max-header-size', kind: 'int', default: 16_384, reload: true,
    doc: 'largest request header block in bytes' },
  maxRequestsPerWorker: { flag: 'max-requests-per-worker', kind: 'int', default: 0, reload: true,
    doc: 'retire a worker after this many requests (with up to 10% jitter); 0 = never' },
  pidfile: { flag: 'pidfile', kind: 'string', default: '', reload: false,
    doc: 'pid file naming the instance; its control socket is PIDFILE.sock (default: named after the working directory, in /run/quiesce for root, else $XDG_RUNTIME_DIR/quiesce or TMPDIR/quiesce-UID)' },
  accessLog: { flag: 'access-log', kind: 'string', default: '-', reload: true,
    doc: 'access log file, "-" for stdout, "off" to disable' },
  accessLogSkipHealth: { flag: 'access-log-skip-health', kind: 'bool', default: false, reload: true,
    doc: 'leave requests for --health-path out of the access log' },
  errorLog: { flag: 'error-log', kind: 'string', default: '-', reload: true,
    doc: 'error log file, "-" for stderr' },
  logFormat: { flag: 'log-format', kind: 'string', default: 'combined', reload: true,
    doc: 'access log format: "combined" (Combined Log Format) or "json"' },
  errorLogFormat: { flag: 'error-log-format', kind: 'string', default: 'text', reload: true,
    doc: 'error log format: "text" (TIME [level] who: event key=value) or "json" (one object per line)' },
  logLevel: { flag: 'log-level', kind: 'string', default: 'info', reload: true,
    doc: 'least severe error log level written: debug, info, notice, warn, error or alert' },
  appOutput: { flag: 'app-output', kind: 'string', default: 'raw', reload: true,
    doc: 'the app\'s stdout/stderr, passed to quiesce\'s own: "raw" as written, or "tagged" with "[PID gGEN] " before each line' },
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
  fileCache: { flag: 'file-cache', kind: 'size', default: 64 * 1024 * 1024, reload: true,
    doc: 'static files: content cache per worker in bytes (512k, 64m); files up to 1 MB kept with their headers for 1 s; 0 = off' },
  staticMaxAge: { flag: 'static-max-age', kind: 'duration', default: 0, reload: true,
    doc: 'static files: Cache-Control max-age (s; at most 1 year)' },
  staticImmutable: { flag: 'static-immutable', kind: 'list', default: [], reload: true,
    doc: 'static files: a directory by its URL path (/assets) whose files never change under their name (hashed names): Cache-Control "public, max-age=31536000, immutable" for them; repeatable' },
  adminToken: { flag: 'admin-token', kind: 'string', default: '', reload: true,
    doc: 'token for the admin pages: required for all but /live, /ready and the index / off loopback (started without one there, it warns: admin-token-missing), and for /server-status on loopback too once set (on the command line it shows in ps: prefer --admin-token-file or QUIESCE_ADMIN_TOKEN)' },
  adminTokenFile: { flag: 'admin-token-file', kind: 'string', default: '', reload: true,
    doc: 'file holding the admin token, read at start and at each reload (or the QUIESCE_ADMIN_TOKEN environment variable); never passed to workers' },
  adminTlsCert: { flag: 'admin-tls-cert', kind: 'string', default: '', reload: true,
    doc: 'PEM certificate (its chain after it): the admin listener speaks HTTPS; read by the master at start and at each reload (a renewed one goes live; turning HTTPS on or off takes a restart)' },
  adminTlsKey: { flag: 'admin-tls-key', kind: 'string', default: '', reload: true,
    doc: 'PEM private key of --admin-tls-cert (both or neither); an encrypted one takes its passphrase as --tls-key does' },
  statusQuery: { flag: 'status-query', kind: 'bool', default: false, reload: true,
    doc: 'show requests in flight with their query strings on the status pages (default: paths only; a query may carry secrets)' },
  tlsCert: { flag: 'tls-cert', kind: 'string', default: '', reload: true,
    doc: 'PEM certificate (its chain after it) for TLS on every --listen address, or, given after --listen entries, on those alone (as the other --tls-* flags; a config file\'s listen entry may have its own); read by the master at start and at each reload' },
  tlsKey: { flag: 'tls-key', kind: 'string', default: '', reload: true,
    doc: 'PEM private key of --tls-cert; encrypted keys take their passphrase from --tls-passphrase-file or QUIESCE_TLS_PASSPHRASE' },
  tlsSni: { flag: 'tls-sni', kind: 'list', default: [], reload: true,
    doc: 'one more certificate for the listeners that use --tls-cert, as CERT,KEY (PEM files; an encrypted key takes its passphrase as --tls-key does): served to a client asking (SNI) for one of the DNS names it carries (subjectAltName, else its CN); repeatable' },
  tlsCa: { flag: 'tls-ca', kind: 'string', default: '', reload: true,
    doc: 'PEM CA certificates: clients must present a certificate they signed (mutual TLS)' },
  tlsPassphraseFile: { flag: 'tls-passphrase-file', kind: 'string', default: '', reload: true,
    doc: 'file holding the passphrase of an encrypted --tls-key (or the QUIESCE_TLS_PASSPHRASE environment variable; never on the command line)' },
  http2: { flag: 'http2', kind: 'string', default: 'on', reload: true,
    doc: 'HTTP/2 over TLS, chosen by ALPN (h2, else http/1.1), for the apps that speak it (Node listeners, fetch handlers, http2 servers); "off": HTTP/1.1 only' },
  h2c: { flag: 'h2c', kind: 'string', default: 'off', reload: true,
    doc: '"on": the listeners without TLS also speak HTTP/2 in the clear to clients that know it beforehand (prior knowledge, RFC 9113 3.3: a balancer or proxy speaking h2c to its backends), told from HTTP/1.1 by the connection preface, for the apps that speak HTTP/2; HTTP/1.1 on the same port is unchanged (no Upgrade: h2c)' },
} as const satisfies Record<string, Setting>;

/** The most warm spares --spare-worker takes. */
export const MAX_SPARES = 4;

export type Key = keyof typeof SETTINGS;
/** Every key a config file may have: the settings and `app`. */
export const CONFIG_KEYS: readonly string[] = [...Object.keys(SETTINGS), 'app'];

/** The message of an issue with what was received: `at least 1, got 0`. */
const got = (want: string) => (i: { received: string }) => `${want}, got ${i.received}`;
const oneOf = <const T extends readonly [string, ...string[]]>(options: T) =>
  v.picklist(options, got(`one of ${options.map((o) => JSON.stringify(o)).join(', ')}`));
/** A number or numeric text, converted by `parse`; `undefined` from it is an issue saying `want`. */
function numeric(parse: (v: number | string) => number | undefined, want: string) {
  return v.pipe(
    v.union([v.number(), v.string()], got(want)),
    v.rawTransform<number | string, number>(({ dataset, addIssue, NEVER }) => {
      const n = parse(dataset.value);
      if (n === undefined) {
        addIssue({ message: `${want}, got ${JSON.stringify(dataset.value)}` });
        return NEVER;
      }
      return n;
    }),
  );
}
const duration = numeric(parseDuration, 'not a duration (use seconds, or 500ms, 2s, 1m)');
const size = numeric(parseSize, 'not a size (use bytes, or 512k, 64m, 1g)');
const int = numeric((x) => {
  const n = typeof x === 'number' ? x : Number(x);
  return Number.isInteger(n) && n >= 0 ? n : undefined;
}, 'not a whole number >= 0');
const str = v.string(got('not text'));
const bool = v.boolean(got('not true or false'));
const address = v.pipe(str, v.minLength(1, 'empty address'));
/** One more certificate of a listen entry, served to clients asking for one of its names (SNI). */
const sniEntry = v.strictObject({
  tlsCert: str,
  tlsKey: str,
  tlsPassphraseFile: v.optional(str),
}, (i) => `not a certificate entry (tlsCert, tlsKey, tlsPassphraseFile), got ${i.received}`);
/**
 * A config file's listen entry with TLS of its own: `{ "address": "443", "tlsCert": "…", "tlsKey": "…" }`;
 * `"tls": false` keeps it plain under --tls-cert. `sni`: more certificates, each chosen for the
 * DNS names it carries (subjectAltName, else its CN) when a client asks for one; tlsCert/tlsKey
 * (or the --tls-* flags') is the default.
 */
const listenEntry = v.strictObject({
  address,
  tlsCert: v.optional(str),
  tlsKey: v.optional(str),
  tlsCa: v.optional(str),
  tlsPassphraseFile: v.optional(str),
  tls: v.optional(bool),
  sni: v.optional(v.array(sniEntry, got('not a list of certificate entries'))),
}, (i) => `not a listen entry (address, tlsCert, tlsKey, tlsCa, tlsPassphraseFile, tls, sni), got ${i.received}`);
export type ListenEntry = v.InferOutput<typeof listenEntry>;
/** TLS files of one listener, as given (paths): from its own listen entry or the --tls-* flags; `sni`: its entry's more certificates. */
export type TlsFiles = { cert: string; key: string; ca: string; passphraseFile: string; source: string; sni?: Array<{ cert: string; key: string; passphraseFile: string }> };

/** What a --tls-sni item that is not CERT,KEY is told. */
export const NOT_SNI_PAIR = 'not CERT,KEY (a certificate file and its key file, comma-separated)';

/** A --tls-sni item: its certificate and key files, or undefined when it is not CERT,KEY. */
export function sniPair(x: string): { cert: string; key: string } | undefined {
  const i = x.lastIndexOf(',');
  const cert = x.slice(0, i).trim();
  const key = x.slice(i + 1).trim();
  return i > 0 && cert !== '' && key !== '' ? { cert, key } : undefined;
}

/** A list setting, where one item may be given alone as a string ("a" is ["a"]). */
function oneOrList<T extends v.GenericSchema<unknown>>(item: T, message: v.ErrorMessage<v.ArrayIssue>) {
  return v.pipe(v.unknown(), v.transform((x) => (typeof x === 'string' ? [x] : x)), v.array(item, message));
}

/** A directory by its URL path for --static-immutable: starts with /, no empty, . or .. segment except a trailing slash. */
function isUrlDir(p: string): boolean {
  if (!p.startsWith('/') || p.includes('\0') || p.includes('\\')) return false;
  const segs = p.slice(1).replace(/\/$/, '').split('/');
  return p === '/' || segs.every((s) => s !== '' && s !== '.' && s !== '..');
}

export const configSchema = v.strictObject({
  // one address may be given as a string: "127.0.0.1:8080" is ["127.0.0.1:8080"]
  listen: v.pipe(
    oneOrList(v.union([address, listenEntry], got('not an address or a listen entry')), got('not an address or a list of addresses')),
    v.minLength(1, 'at least one listen address'),
  ),
  admin: address,
  workers: v.pipe(int, v.maxValue(512, got('at most 512'))),
  gracefulTimeout: duration,
  drainDelay: duration,
  drainCap: duration,
  idleGrace: duration,
  readyTimeout: v.pipe(duration, v.minValue(1, got('more than 0 ms'))),
  killGrace: duration,
  workerTimeout: v.pipe(duration, v.check((ms) => ms === 0 || ms >= 1_000, 'at least 1 s, or 0 to turn the watchdog off')),
  maxMemory: v.pipe(size, v.check((b) => b === 0 || b >= 16 * 1024 * 1024, 'at least 16m (a worker starts at ~50 MB), or 0 for no limit')),
  respawnBackoff: duration,
  reloadSoak: duration,
  spareWorker: numeric((x) => {
    if (x === 'on') return 1;
    if (x === 'off') return 0;
    const n = typeof x === 'number' ? x : Number(x);
    return Number.isInteger(n) && n >= 0 && n <= MAX_SPARES ? n : undefined;
  }, `"on", "off" or a count of spares from 0 to ${MAX_SPARES}`),
  reloadStrategy: oneOf(['all', 'rolling']),
  reloadJudge: oneOf(['on', 'off']),
  judgeMax5xxRatio: numeric((x) => { const n = Number(x); return Number.isFinite(n) && n >= 0 && n <= 1 ? n : undefined; }, 'not a share between 0 and 1 (0.01 = one percentage point)'),
  judgeMaxP99Ratio: numeric((x) => { const n = Number(x); return Number.isFinite(n) && n >= 1 ? n : undefined; }, 'not a ratio of at least 1 (2 = twice as slow)'),
  judgeMinRequests: v.pipe(int, v.minValue(1, got('at least 1'))),
  metrics: oneOf(['on', 'off']),
  backlog: v.pipe(int, v.minValue(1, got('at least 1'))),
  keepAliveTimeout: duration,
  headersTimeout: duration,
  requestTimeout: duration,
  queueTimeout: v.pipe(duration, v.check((ms) => ms === 0 || ms >= 100, 'at least 100 ms, or 0 for none')),
  maxHeaderSize: v.pipe(int, v.minValue(1024, got('at least 1024'))),
  maxRequestsPerWorker: int,
  pidfile: str,
  accessLog: str,
  accessLogSkipHealth: bool,
  errorLog: str,
  logFormat: oneOf(['combined', 'json']),
  errorLogFormat: oneOf(['text', 'json']),
  logLevel: oneOf(LEVELS),
  appOutput: oneOf(['raw', 'tagged']),
  user: str,
  group: str,
  healthPath: v.pipe(str, v.check((p) => p === '' || p.startsWith('/'), 'must start with /')),
  exposeGeneration: bool,
  autoindex: bool,
  fileCache: size,
  staticMaxAge: v.pipe(duration, v.maxValue(365 * 24 * 3600 * 1000, got('at most 1 year'))),
  staticImmutable: oneOrList(v.pipe(str, v.check(isUrlDir, 'not a URL path of a directory: /assets (no . or .. segments)')), got('not a URL path or a list of them')),
  adminToken: str,
  adminTokenFile: str,
  adminTlsCert: str,
  adminTlsKey: str,
  statusQuery: bool,
  tlsCert: str,
  tlsKey: str,
  tlsSni: oneOrList(v.pipe(str, v.check((x) => sniPair(x) !== undefined, NOT_SNI_PAIR)), got('not CERT,KEY or a list of them')),
  tlsCa: str,
  tlsPassphraseFile: str,
  http2: oneOf(['on', 'off']),
  h2c: oneOf(['on', 'off']),
  /** The positional argument: an app module, a directory, or '' for the bundled site. */
  app: str,
});

export type Config = Readonly<Omit<v.InferOutput<typeof configSchema>, 'listen'>> & {
  readonly listen: readonly string[];
  /** Listen entries of a config file given as objects with TLS of their own (or `tls: false`), by address. */
  readonly listenTls?: Readonly<Record<string, ListenEntry>>;
};
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

/** Bytes from a number or `512k` / `64m` / `1g` (powers of 1024, an optional trailing b); undefined when not a size. */
export function parseSize(v: number | string): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmg]?)b?\s*$/i.exec(v);
  if (!m) return undefined;
  const n = Math.round(Number(m[1]) * 1024 ** ' kmg'.indexOf((m[2] || ' ').toLowerCase()));
  return Number.isSafeInteger(n) ? n : undefined;
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
  const r = v.safeParse(configSchema, raw);
  if (!r.success) {
    const issue = r.issues[0];
    const top = String(issue.path?.[0]?.key ?? '');
    if (issue.type === 'strict_object') {
      const unknown = r.issues.filter((i) => i.type === 'strict_object').map((i) => String(i.path?.[0]?.key));
      const named = unknown.map((k) => `${JSON.stringify(k)}${didYouMean(k, CONFIG_KEYS, (s) => JSON.stringify(s))}`);
      throw new QuiesceError('CONFIG_INVALID', `${source}: unknown key${unknown.length > 1 ? 's' : ''} ${named.join(', ')}: not a setting of quiesce`);
    }
    const setting = (SETTINGS as Record<string, Setting>)[top];
    const name = setting && source === 'flags' ? `--${setting.flag}` : `"${issue.path?.map((p) => String(p.key)).join('.') ?? top}"`;
    throw new QuiesceError('CONFIG_INVALID', `${source}: ${name}: ${issue.message}`);
  }
  const { listen: entries, ...rest } = r.output;
  const own = entries.filter((e): e is ListenEntry => typeof e !== 'string');
  const cfg: Omit<v.InferOutput<typeof configSchema>, 'listen'> & { listen: string[]; listenTls?: Record<string, ListenEntry> } = {
    ...rest, listen: entries.map((e) => (typeof e === 'string' ? e : e.address)),
  };
  if (own.length > 0) cfg.listenTls = Object.fromEntries(own.map((e) => [e.address, e]));
  crossCheck(cfg, source);
  if (cfg.workers === 0) cfg.workers = cpuCount();
  return Object.freeze(cfg);
}

/**
 * The admin token from where it was given: --admin-token, --admin-token-file (read now: at start
 * and at each reload), or the QUIESCE_ADMIN_TOKEN environment variable.
 */
export function withAdminToken(cfg: Config, env: NodeJS.ProcessEnv = process.env): Config {
  if (cfg.adminToken && cfg.adminTokenFile) throw new QuiesceError('CONFIG_INVALID', '--admin-token and --admin-token-file: give one of them');
  let token = cfg.adminToken || (env.QUIESCE_ADMIN_TOKEN ?? '');
  if (cfg.adminTokenFile) {
    try {
      token = readFileSync(cfg.adminTokenFile, 'utf8').trim();
    } catch (err) {
      throw new QuiesceError('CONFIG_INVALID', `--admin-token-file ${cfg.adminTokenFile}: ${errorMessage(err)}`);
    }
    if (token === '') throw new QuiesceError('CONFIG_INVALID', `--admin-token-file ${cfg.adminTokenFile}: the file is empty`);
  }
  return Object.freeze({ ...cfg, adminToken: token });
}

/** The rules between settings, checked at parse time (a worker would fail on them at its start, every one of them). */
function crossCheck(cfg: Omit<v.InferOutput<typeof configSchema>, 'listen'> & { listenTls?: Record<string, ListenEntry> }, source: string): void {
  const name = (k: Key) => (source === 'flags' ? `--${SETTINGS[k].flag}` : `"${k}"`);
  const secs = (ms: number) => `${ms / 1000} s`;
  // Node's http.createServer refuses it (ERR_OUT_OF_RANGE): 0 turns the request timeout off
  if (cfg.requestTimeout > 0 && cfg.headersTimeout > cfg.requestTimeout) {
    throw new QuiesceError('CONFIG_INVALID', `${source}: ${name('requestTimeout')} (${secs(cfg.requestTimeout)}) must be at least ${name('headersTimeout')} (${secs(cfg.headersTimeout)}), or 0 for none`);
  }
  if ((cfg.adminTlsCert === '') !== (cfg.adminTlsKey === '')) {
    throw new QuiesceError('CONFIG_INVALID', `${source}: ${name('adminTlsCert')} and ${name('adminTlsKey')} go together: give both`);
  }
  if ((cfg.tlsCert === '') !== (cfg.tlsKey === '')) {
    throw new QuiesceError('CONFIG_INVALID', `${source}: ${name('tlsCert')} and ${name('tlsKey')} go together: give both`);
  }
  if (cfg.h2c === 'on' && cfg.http2 === 'off') {
    throw new QuiesceError('CONFIG_INVALID', `${source}: ${name('h2c')} on is HTTP/2, which ${name('http2')} off turns off: give one of them`);
  }
  if (cfg.tlsSni.length > 0 && cfg.tlsCert === '') {
    throw new QuiesceError('CONFIG_INVALID', `${source}: ${name('tlsSni')} certificates need a default one: give ${name('tlsCert')} and ${name('tlsKey')} too`);
  }
  for (const e of Object.values(cfg.listenTls ?? {})) {
    if ((e.tlsCert === undefined) !== (e.tlsKey === undefined)) {
      throw new QuiesceError('CONFIG_INVALID', `${source}: listen entry ${JSON.stringify(e.address)}: tlsCert and tlsKey go together: give both`);
    }
    if (e.sni?.length && (e.tls === false || (e.tlsCert === undefined && cfg.tlsCert === ''))) {
      throw new QuiesceError('CONFIG_INVALID', `${source}: listen entry ${JSON.stringify(e.address)}: "sni" certificates need a default one (tlsCert and tlsKey, or --tls-cert/--tls-key)`);
    }
  }
  if (cfg.group !== '' && cfg.user === '') {
    throw new QuiesceError('CONFIG_INVALID', `${source}: ${name('group')} needs ${name('user')} (workers drop privileges to a user and, optionally, a group)`);
  }
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
    if (ext === '.json') {
      const value: unknown = JSON.parse(readFileSync(abs, 'utf8'));
      if (!value || typeof value !== 'object' || Array.isArray(value)) throw new Error('must hold an object of settings ({ "listen": "8080", … })');
      return value as RawConfig;
    }
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

/**
 * The TLS files of the listener given as `address` in --listen/"listen", or undefined for plain
 * HTTP: its own listen entry's, else the --tls-* flags' (which apply to every address that has
 * none of its own, unless the entry says `tls: false`).
 */
export function tlsFilesOf(cfg: Config, address: string): TlsFiles | undefined {
  const e = cfg.listenTls?.[address];
  const passphraseFile = e?.tlsPassphraseFile ?? cfg.tlsPassphraseFile;
  const sni = e?.sni?.length ? { sni: e.sni.map((x) => ({ cert: x.tlsCert, key: x.tlsKey, passphraseFile: x.tlsPassphraseFile ?? passphraseFile })) } : {};
  if (e?.tlsCert !== undefined && e.tlsKey !== undefined) {
    return { cert: e.tlsCert, key: e.tlsKey, ca: e.tlsCa ?? cfg.tlsCa, passphraseFile, source: `listen entry ${JSON.stringify(address)}`, ...sni };
  }
  if (e?.tls === false || cfg.tlsCert === '') return undefined;
  // the entry's own "sni" list, else --tls-sni's
  const flagSni = !e?.sni?.length && cfg.tlsSni.length > 0
    ? { sni: cfg.tlsSni.map((x) => ({ ...sniPair(x)!, passphraseFile })) }
    : sni;
  return { cert: cfg.tlsCert, key: cfg.tlsKey, ca: e?.tlsCa ?? cfg.tlsCa, passphraseFile: cfg.tlsPassphraseFile, source: e?.sni?.length ? `--tls-cert/--tls-key with listen entry ${JSON.stringify(address)}` : '--tls-cert/--tls-key', ...flagSni };
}

/** Merge: defaults, then the file, then flags. */
export function merge(...layers: RawConfig[]): RawConfig {
  const out: RawConfig = {};
  for (const layer of layers) for (const [k, v] of Object.entries(layer)) if (v !== undefined) out[k as Key] = v;
  return out;
}
