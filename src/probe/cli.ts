// `quiesce probe …`: parses argv, runs the probe, prints the summary or JSON, writes the timeline.
import { accessSync, constants as fsConstants, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { runProbe, normalizeOptions } from './engine.js';
import { formatSummary, toReport } from './report.js';
import { renderTimeline, timelineFile } from './timeline.js';
import { formatTarget, UsageError } from './target.js';
import type { ProbeOptions } from './types.js';

export const USAGE = `usage: quiesce probe --target [https://]HOST:PORT|[v6]:PORT|unix:PATH [--path P] [--rate N] [--keepalive K]
                     [--http2 [--streams N]] [--duration S] [--at T --run "COMMAND"]... [--timeout S] [--json] [--timeline FILE]
                     [--admin [https://]HOST:PORT [--admin-ca FILE]]

  --target        https://HOST:PORT speaks TLS (HTTP/1.1, or HTTP/2 with --http2; the certificate is not checked)
  --http2         HTTP/2 (over TLS with https://, else h2c: in the clear, prior knowledge): each keep-alive
                  client is a session of --streams concurrent streams (default 1);
                  REFUSED_STREAM and GOAWAY count as refused, a stream reset mid-response as cut
  --rate N        open N new connections per second, one request each (Connection: close)
  --keepalive K   K clients sending requests back to back on persistent connections
                  (neither given: --rate 100)
  --duration S    seconds of load (default 5)
  --at T --run C  run shell command C at T seconds after the start (repeatable, paired in order)
  --timeout S     seconds before a request counts as timeout (default 10)
  --json          print one JSON object instead of the table
  --timeline F    write an SVG (or .html) timeline of the outcomes to F
  --admin A       quiesce's admin listener: the reloads' phases during the run (soak start, the
                  judge's verdict, rollback or commit, old generation retired) go in the report and
                  the timeline (QUIESCE_ADMIN_TOKEN is sent if set); https://HOST:PORT for an admin
                  listener over TLS, its certificate checked (system CAs, NODE_EXTRA_CA_CERTS)
  --admin-ca F    PEM CA certificate (or the self-signed certificate itself) for an https admin listener
exit code: 0 pass, 1 fail (anything cut, ka_race, timeout or other; or no request completed at all,
           or none before the first --at: a target that was not serving proves nothing), 2 usage error`;

const OPTIONS = {
  target: { type: 'string' },
  path: { type: 'string' },
  rate: { type: 'string' },
  keepalive: { type: 'string' },
  duration: { type: 'string' },
  at: { type: 'string', multiple: true },
  run: { type: 'string', multiple: true },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
  timeline: { type: 'string' },
  admin: { type: 'string' },
  'admin-ca': { type: 'string' },
  http2: { type: 'boolean' },
  streams: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function num(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\s*[0-9]*\.?[0-9]+\s*$/.test(v)) throw new UsageError(`--${flag}: want a number, got '${v}'`);
  return Number(v);
}

/** Turns argv into probe options; throws UsageError with a one-line message naming the flag. */
export function parseProbeArgs(argv: string[]): { options: ProbeOptions; json: boolean; timeline?: string; help: boolean } {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }));
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    const m = /'(-[^']*)'/.exec(msg);
    const code = (e as { code?: string }).code; // parseArgs errors carry a code; the type does not say so
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new UsageError(`${m?.[1] ?? 'option'}: unknown option`);
    if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') throw new UsageError(`unexpected argument ${/'([^']*)'/.exec(msg)?.[1] ?? ''} (every value follows its flag)`);
    // e.g. "Option '--rate' argument is ambiguous." for --rate -5 (write --rate=-5 to pass it on)
    throw new UsageError(`${m?.[1] ?? 'arguments'}: ${msg.split('\n')[0]!}`);
  }
  if (values.help) return { options: { target: '' }, json: false, help: true };
  if (values.target === undefined) throw new UsageError('--target: missing ([https://]HOST:PORT, [v6]:PORT or unix:PATH)');
  const ats = values.at ?? [];
  const runs = values.run ?? [];
  if (ats.length !== runs.length) throw new UsageError(`--at/--run: each --at T needs one --run "COMMAND" (got ${ats.length} --at, ${runs.length} --run)`);
  const options: ProbeOptions = {
    target: values.target,
    commands: ats.map((a, i) => ({ atS: num('at', a)!, run: runs[i]! })),
  };
  if (values.path !== undefined) options.path = values.path;
  if (values.admin !== undefined) {
    if (values.admin === '') throw new UsageError('--admin: empty address (HOST:PORT of quiesce\'s admin listener)');
    options.admin = values.admin;
  }
  if (values['admin-ca'] !== undefined) {
    if (!values.admin?.startsWith('https://')) throw new UsageError('--admin-ca: only with --admin https://HOST:PORT');
    try {
      accessSync(values['admin-ca'], fsConstants.R_OK); // read at the end of the run, once
    } catch (e) {
      throw new UsageError(`--admin-ca: cannot read ${values['admin-ca']}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    options.adminCa = values['admin-ca'];
  }
  const rate = num('rate', values.rate);
  if (rate !== undefined) options.rate = rate;
  const keepalive = num('keepalive', values.keepalive);
  if (keepalive !== undefined) options.keepalive = keepalive;
  const duration = num('duration', values.duration);
  if (duration !== undefined) options.durationS = duration;
  const timeout = num('timeout', values.timeout);
  if (timeout !== undefined) options.timeoutS = timeout;
  if (values.http2) options.http2 = true;
  const streams = num('streams', values.streams);
  if (streams !== undefined) options.streams = streams;
  if (values.timeline === '') throw new UsageError('--timeline: empty file name');
  return { options, json: values.json ?? false, ...(values.timeline !== undefined ? { timeline: values.timeline } : {}), help: false };
}

export async function probeMain(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseProbeArgs>;
  let settings: ReturnType<typeof normalizeOptions>;
  try {
    parsed = parseProbeArgs(argv);
    if (parsed.help) {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    settings = normalizeOptions(parsed.options);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`quiesce probe: ${e.message}\n`);
    return 2;
  }
  let result;
  try {
    result = await runProbe(parsed.options);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`quiesce probe: ${e.message}\n`);
    return 2;
  }
  const target = formatTarget(settings.target);
  if (parsed.timeline !== undefined) {
    const title = `quiesce probe ${target} ${settings.path}`;
    try {
      writeFileSync(parsed.timeline, timelineFile(renderTimeline(result, title), parsed.timeline, title));
    } catch (e) {
      process.stderr.write(`quiesce probe: --timeline: cannot write ${parsed.timeline}: ${e instanceof Error ? e.message : String(e)}\n`);
    }
  }
  if (parsed.json) {
    process.stdout.write(`${JSON.stringify(toReport(result))}\n`);
  } else {
    const info = { target, path: settings.path, rate: settings.rate, keepalive: settings.keepalive, durationS: settings.durationMs / 1000 };
    process.stdout.write(`${formatSummary(result, info)}\n`);
    if (parsed.timeline !== undefined) process.stdout.write(`  timeline: ${parsed.timeline}\n`);
  }
  return result.status === 'pass' ? 0 : 1;
}
