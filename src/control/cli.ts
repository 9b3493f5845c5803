/** The command line: flags → config, verbs → the running master's control socket. */
import { parseArgs } from 'node:util';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { didYouMean } from '../shared/suggest.js';
import { NOT_SNI_PAIR, SETTINGS, defaults, loadConfigFile, merge, sniPair, validate, withAdminToken, type Config, type Key, type RawConfig } from '../shared/config.js';
import { EXIT, QuiesceError, appFailedMessage, errorMessage } from '../shared/errors.js';
import { defaultPidfile } from '../master/pidfile.js';
import { sendControl } from './client.js';
import { SIGNAL_VERBS } from '../shared/signals.js';
import type { ControlVerb } from '../shared/control-protocol.js';

const VERBS = ['start', 'stop', 'graceful-stop', 'reload', 'restart', 'reopen-logs', 'scale', 'upgrade', 'status', 'configtest', 'probe', 'help', 'version'] as const;
type CliVerb = (typeof VERBS)[number];

type ParseOptions = NonNullable<Parameters<typeof parseArgs>[0]>['options'];

function optionTable(): NonNullable<ParseOptions> {
  const opts: NonNullable<ParseOptions> = {
    config: { type: 'string', short: 'c' },
    help: { type: 'boolean', short: 'h' },
    version: { type: 'boolean', short: 'v' },
    force: { type: 'boolean' },
    json: { type: 'boolean' },
    watch: { type: 'boolean' },
    init: { type: 'boolean' },
    'no-judge': { type: 'boolean' },
    judge: { type: 'boolean' },
    node: { type: 'string' },
  };
  for (const s of Object.values(SETTINGS)) {
    opts[s.flag] = s.kind === 'bool' ? { type: 'boolean' } : s.kind === 'list' ? { type: 'string', multiple: true } : { type: 'string' };
  }
  opts.listen!.short = 'l';
  opts.workers!.short = 'w';
  return opts;
}

export function usage(): string {
  const rows = Object.values(SETTINGS).map((s) => {
    const def = s.kind === 'duration' ? `${(s.default as number) / 1000}s` : s.kind === 'size' ? `${(s.default as number) / 1024 / 1024}m` : JSON.stringify(s.default);
    return `  --${s.flag.padEnd(24)} ${s.doc} [default ${def}]`;
  });
  return [
    'usage: quiesce [APP] [flags]          serve APP (a module, or a directory of static files; default: the bundled site)',
    '       quiesce stop [--force]         graceful stop of the running instance (--force: fast stop)',
    '       quiesce graceful-stop          the same as stop',
    '       quiesce reload [--no-judge]    new code and config live, nothing refused, nothing cut; a new version worse\n' +
    '                                      than the old on live traffic is rolled back (--no-judge: not judged)',
    '       quiesce restart                hard restart: new workers at once, in-flight requests are cut',
    '       quiesce reopen-logs            reopen log files (as SIGUSR1)',
    '       quiesce scale N|+N|-N          run N workers (or N more, N fewer) without a reload (as TTIN/TTOU, one each)',
    '       quiesce upgrade [--node PATH] [--judge|--no-judge]  a new master from the quiesce and Node on disk now',
    '                                      takes over the sockets, nothing refused, rolled back on failure (as USR2;',
    '                                      --node: another Node binary; --judge: judged as a reload is, whatever',
    '                                      --reload-judge says; --no-judge: not judged)',
    '       quiesce status [--json] [--watch]  the running instance\'s workers and drains',
    '       quiesce configtest [APP] [--init]  check flags and config file, load the app as a worker would',
    '                                      (in a child process; --init also runs its init()), then exit',
    '       quiesce probe --target ADDR    load a server and classify every request (see quiesce probe --help)',
    '',
    'The instance is named by --pidfile (its control socket is PIDFILE.sock).',
    'APP may also be given as the config key "app" (the positional argument wins).',
    '',
    'flags (a config file given with --config/-c takes the same settings in camelCase; flags win):',
    '  -c, --config FILE             JSON or JS module default-exporting the settings',
    ...rows,
    '',
    'signals: ' + SIGNAL_VERBS.map((s) => `${s.signal.replace('SIG', '')}=${s.verb}`).join(' ') + '; the same stop signal again after >= 1 s = fast stop',
  ].join('\n');
}

/** Flags given on the command line, as raw settings (validated later together with the file). */
function flagsToRaw(values: Record<string, unknown>, positional: string | undefined, tokens: readonly ArgToken[]): RawConfig {
  const raw: RawConfig = {};
  for (const [key, s] of Object.entries(SETTINGS) as Array<[Key, (typeof SETTINGS)[Key]]>) {
    const v = values[s.flag];
    if (v !== undefined) raw[key] = v;
  }
  Object.assign(raw, listenTls(tokens));
  if (positional !== undefined) raw.app = positional;
  return raw;
}

type ArgToken = { kind: string; name?: string; value?: string | undefined };
/** The --tls-* flags that, given after --listen entries, are those entries' own: their setting, and their key in a config file's listen entry. */
const ENTRY_TLS = {
  'tls-cert': ['tlsCert', 'tlsCert'], 'tls-key': ['tlsKey', 'tlsKey'], 'tls-ca': ['tlsCa', 'tlsCa'],
  'tls-passphrase-file': ['tlsPassphraseFile', 'tlsPassphraseFile'], 'tls-sni': ['tlsSni', 'sni'],
} as const satisfies Record<string, readonly [Key, string]>;
type EntryTlsFlag = keyof typeof ENTRY_TLS;

/**
 * --tls-* flags given after --listen entries apply to those entries alone (the ones since the
 * previous such flags), as a config file's listen entries with TLS of their own:
 * `--listen 443 --tls-cert c.pem --tls-key k.pem --listen 80` serves 443 over TLS and 80 plain.
 * Given before any --listen they apply to every address (the settings, as before). Returns the
 * settings this changes: `listen` with such entries as objects, and the --tls-* settings from
 * the flags before the first --listen alone; nothing when no --tls-* flag follows a --listen.
 */
function listenTls(tokens: readonly ArgToken[]): RawConfig {
  const isTls = (n: string | undefined): n is EntryTlsFlag => n !== undefined && Object.hasOwn(ENTRY_TLS, n);
  const options = tokens.filter((t) => t.kind === 'option');
  const firstListen = options.findIndex((t) => t.name === 'listen');
  if (firstListen < 0 || !options.slice(firstListen).some((t) => isTls(t.name))) return {};
  type Group = { addresses: string[]; flags: Map<EntryTlsFlag, string[]> };
  const groups: Group[] = [];
  let pending: string[] = [];
  let open: Group | undefined;
  const addresses: string[] = [];
  const global: Partial<Record<EntryTlsFlag, string[]>> = {};
  for (const t of options) {
    const value = t.value ?? '';
    if (t.name === 'listen') {
      open = undefined;
      pending.push(value);
      addresses.push(value);
    } else if (isTls(t.name)) {
      if (addresses.length === 0) { (global[t.name] ??= []).push(value); continue; }
      if (!open) { open = { addresses: pending, flags: new Map() }; groups.push(open); pending = []; }
      const given = open.flags.get(t.name) ?? [];
      if (given.length > 0 && t.name !== 'tls-sni') throw new QuiesceError('USAGE', `--${t.name} given twice after --listen ${open.addresses.join(' --listen ')}`);
      open.flags.set(t.name, [...given, value]);
    }
  }
  const entryOf = new Map<string, Record<string, unknown>>();
  for (const g of groups) {
    const where = `after --listen ${g.addresses.join(' --listen ')}`;
    if (g.flags.has('tls-cert') !== g.flags.has('tls-key')) throw new QuiesceError('USAGE', `--tls-cert and --tls-key go together: give both ${where}`);
    const entry: Record<string, unknown> = {};
    for (const [flag, vals] of g.flags) {
      if (flag !== 'tls-sni') { entry[ENTRY_TLS[flag][1]] = vals[0]; continue; }
      entry.sni = vals.map((x) => {
        const pair = sniPair(x);
        if (!pair) throw new QuiesceError('USAGE', `--tls-sni ${where}: ${NOT_SNI_PAIR}, got ${JSON.stringify(x)}`);
        return { tlsCert: pair.cert, tlsKey: pair.key };
      });
    }
    for (const a of g.addresses) entryOf.set(a, { address: a, ...entry });
  }
  const raw: RawConfig = { listen: addresses.map((a) => entryOf.get(a) ?? a) };
  for (const flag of Object.keys(ENTRY_TLS) as EntryTlsFlag[]) {
    const vals = global[flag];
    raw[ENTRY_TLS[flag][0]] = vals === undefined ? undefined : flag === 'tls-sni' ? vals : vals[vals.length - 1];
  }
  return raw;
}

/** The settings from defaults, the config file and the flags, validated. */
async function loadSettings(flags: RawConfig, configPath: string | undefined): Promise<Config> {
  const file = configPath ? await loadConfigFile(configPath) : {};
  if (configPath) validate(merge(defaults(), file), `config file ${configPath}`); // name the file when it is at fault
  return validate(merge(defaults(), file, flags), 'flags');
}

/** The settings a server runs with: with the admin token read from where it was given. */
export async function loadConfig(flags: RawConfig, configPath: string | undefined): Promise<Config> {
  return withAdminToken(await loadSettings(flags, configPath));
}

export async function cliMain(argv: string[]): Promise<number> {
  const first = argv[0];
  let verb: CliVerb = 'start';
  let rest = argv;
  if (first && (VERBS as readonly string[]).includes(first)) { verb = first as CliVerb; rest = argv.slice(1); }
  // scale's count comes first and may look like a flag (-2): taken before the flags are parsed
  let scaleTo: string | undefined;
  if (verb === 'scale' && rest[0] !== undefined && !rest[0].startsWith('--')) [scaleTo, ...rest] = rest;
  if (verb === 'probe') {
    const { probeMain } = await import('../probe/index.js');
    return probeMain(rest);
  }
  try {
    let parsed;
    try {
      parsed = parseArgs({ args: negativeValues(rest, optionTable()), options: optionTable(), allowPositionals: true, strict: true, tokens: true });
    } catch (err) {
      const flag = /Unknown option '--([^']+)'/.exec(errorMessage(err))?.[1];
      const hint = flag ? didYouMean(flag, Object.keys(optionTable()), (f) => `--${f}`) : '';
      throw new QuiesceError('USAGE', `${errorMessage(err).replace(/\. To specify.*$/s, '')}${hint} (see quiesce --help)`);
    }
    const { values, positionals } = parsed;
    if (values.help || verb === 'help') { process.stdout.write(usage() + '\n'); return EXIT.OK; }
    if (values.version || verb === 'version') { process.stdout.write(version() + '\n'); return EXIT.OK; }
    if (positionals.length > 1) throw new QuiesceError('USAGE', `one APP at most, got: ${positionals.join(' ')}`);
    if (verb === 'start' && positionals[0] !== undefined) notAVerb(positionals[0]);
    if (verb === 'scale') {
      if (scaleTo === undefined || !/^[+-]?\d+$/.test(scaleTo)) throw new QuiesceError('USAGE', `scale: give a worker count N, +N or -N${scaleTo === undefined ? '' : `, got ${JSON.stringify(scaleTo)}`}`);
    }
    if (values.node !== undefined && verb !== 'upgrade') throw new QuiesceError('USAGE', '--node is an option of quiesce upgrade only');
    if (values.judge !== undefined && verb !== 'upgrade') throw new QuiesceError('USAGE', `--judge is an option of quiesce upgrade only${verb === 'reload' ? ' (a reload is judged by --reload-judge on)' : ''}`);
    if (values['no-judge'] !== undefined && verb !== 'upgrade' && verb !== 'reload') throw new QuiesceError('USAGE', '--no-judge is an option of quiesce reload and quiesce upgrade only');
    if (values.judge && values['no-judge']) throw new QuiesceError('USAGE', '--judge and --no-judge: give one of them');
    let node: string | undefined;
    if (typeof values.node === 'string') {
      const { badNode } = await import('../master/upgrade.js');
      node = resolve(values.node);
      const why = badNode(node);
      if (why) throw new QuiesceError('USAGE', `--node ${values.node}: ${why}`);
    }
    const flags = flagsToRaw(values, positionals[0], parsed.tokens);
    const configPath = values.config as string | undefined;
    switch (verb) {
      case 'start': return await runServer(flags, configPath);
      case 'configtest': return await configtest(flags, configPath, values.init === true);
      default: {
        const pidfile = await pidfileOf(flags, configPath);
        const cverb: ControlVerb = verb === 'graceful-stop' ? 'stop' : verb;
        return await runVerb(pidfile, cverb, { force: values.force === true, json: values.json === true, watch: values.watch === true, workers: scaleTo, node, judge: values['no-judge'] ? false : values.judge ? true : undefined });
      }
    }
  } catch (err) {
    // a new master of an upgrade that cannot start (a config that does not validate): the old one hears why
    if (process.env.QUIESCE_UPGRADE !== undefined) await (await import('../master/upgrade.js')).toPredecessor({ t: 'failed', reason: errorMessage(err) });
    if (err instanceof QuiesceError) {
      process.stderr.write(`quiesce: ${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(`quiesce: ${errorMessage(err)}\n`);
    return EXIT.RUNTIME;
  }
}

/**
 * `--workers -1`: parseArgs takes "-1" for a flag and calls the option ambiguous; a value that
 * looks like a negative number is the option's value, for validation to judge with the flag's name.
 */
function negativeValues(args: string[], options: ParseOptions): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const next = args[i + 1];
    const opt = a.startsWith('--') ? options?.[a.slice(2)] : undefined;
    if (opt?.type === 'string' && next !== undefined && /^-\d/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else {
      out.push(a);
    }
  }
  return out;
}

/** `quiesce stpo`: a word that is neither a verb nor a path that exists is a typo, not an app to look for. */
function notAVerb(word: string): void {
  if (!/^[a-z][a-z-]*$/i.test(word) || existsSync(word)) return;
  throw new QuiesceError('USAGE', `"${word}" is neither a verb nor a file or directory${didYouMean(word, VERBS)}; verbs: ${VERBS.join(', ')} (see quiesce --help)`);
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return `quiesce ${pkg.version} (node ${process.version})`;
}

async function pidfileOf(flags: RawConfig, configPath: string | undefined): Promise<string> {
  if (typeof flags.pidfile === 'string' && flags.pidfile) return flags.pidfile;
  if (configPath) {
    const cfg = await loadSettings(flags, configPath); // (a verb needs no admin token file)
    if (cfg.pidfile) return cfg.pidfile;
  }
  return defaultPidfile();
}

async function runServer(flags: RawConfig, configPath: string | undefined): Promise<number> {
  const cfg = await loadConfig(flags, configPath);
  const pidfile = cfg.pidfile || defaultPidfile();
  const { claimPidfile } = await import('./claim.js');
  const { UPGRADE_ENV } = await import('../master/upgrade.js');
  if (process.env[UPGRADE_ENV] === undefined) await claimPidfile(pidfile); // a new master of an upgrade takes it over when the old one lets go
  const { Master } = await import('../master/master.js');
  const master = new Master(cfg, () => loadConfig(flags, configPath), pidfile);
  if (flags.adminToken) master.log.warn('admin-token-visible', { note: 'a token on the command line shows in ps and /proc/PID/cmdline: use --admin-token-file or QUIESCE_ADMIN_TOKEN' });
  // The master must outlive its own bugs: its workers and connections depend on it.
  process.on('uncaughtException', (err) => master.log.alert('master-error', { error: errorMessage(err), stack: err.stack?.split('\n').slice(1, 4).join(' | ') }));
  process.on('unhandledRejection', (err) => master.log.alert('master-error', { error: errorMessage(err) }));
  try {
    await master.start();
  } catch (err) {
    master.log.error('start-failed', { error: errorMessage(err) });
    throw err;
  }
  return new Promise<number>(() => { /* the master exits the process itself when it stops */ });
}

async function configtest(flags: RawConfig, configPath: string | undefined, init: boolean): Promise<number> {
  const cfg = await loadConfig(flags, configPath);
  const { parseListen } = await import('../master/listeners.js');
  for (const l of cfg.listen) parseListen(l);
  if (cfg.admin !== 'off' && cfg.admin !== 'auto') parseListen(cfg.admin, process.cwd(), '--admin');
  // certificates and keys read and checked as the start would (a mismatched pair names its files)
  const { readTls } = await import('../master/tls.js');
  const tls = readTls(cfg, cfg.listen);
  const { resolveAppSpec } = await import('../worker/app-spec.js');
  const spec = resolveAppSpec(cfg.app || undefined, process.cwd(), cfg);
  let what = spec.kind === 'module' ? `app ${spec.path}` : spec.kind === 'dir' ? `static files in ${spec.root}` : 'the bundled site';
  if (spec.kind === 'module') {
    // loaded as a worker would, in a child process: the same error the start would give
    const { checkApp } = await import('./check-app.js');
    const r = await checkApp(spec, { init, timeoutMs: cfg.readyTimeout });
    if (!r.ok) throw new QuiesceError('APP_FAILED', appFailedMessage(r.message));
    what += ` loads as a ${r.kind} app${init ? ', init() ran' : ''}`;
  }
  const tlsText = tls ? `; TLS on ${tls.byText.size} listener(s): ${tls.certs.map((c) => `${c.subject} until ${c.notAfter}`).join(', ')}` : '';
  process.stdout.write(`quiesce: configuration ok (${what}; listen ${cfg.listen.join(' ')}; ${cfg.workers} workers${tlsText})\n`);
  return EXIT.OK;
}

async function runVerb(pidfile: string, verb: ControlVerb, o: { force: boolean; json: boolean; watch: boolean; workers?: string; node?: string; judge?: boolean }): Promise<number> {
  if (verb === 'status') {
    const { statusMain } = await import('./status.js');
    return statusMain(pidfile, o);
  }
  const r = await sendControl(pidfile, { verb, force: o.force, workers: o.workers, node: o.node, ...(o.judge !== undefined ? { judge: o.judge } : {}) }, (m) => process.stderr.write(`quiesce: ${m}\n`));
  (r.ok ? process.stdout : process.stderr).write(`quiesce: ${r.message}\n`);
  return r.ok ? EXIT.OK : EXIT.RUNTIME;
}
