// runProbe: checks the options, runs the load and the commands, and builds the result.
import { setMaxListeners } from 'node:events';
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { get as httpsGet } from 'node:https';
import { http } from '../shared/node-http.js';
import { classify } from './classify.js';
import { Clock } from './clock.js';
import { runCommandAt } from './commands.js';
import { SocketGauge } from './connection.js';
import { keepAliveClient, runRate, type LoadContext } from './load.js';
import { h2Client } from './h2.js';
import { buildResult, GENERATION_HEADER } from './tally.js';
import { hostHeader, parseTarget, resolveTarget, UsageError } from './target.js';
import type { DeployPhase, Outcome, ProbeCommand, ProbeOptions, ProbeResult, Target } from './types.js';

export const DEFAULTS = { path: '/', rate: 100, durationS: 5, timeoutS: 10, commandTimeoutS: 30, maxSockets: 1000, maxRequests: 500_000 };
const MAX = { rate: 50_000, keepalive: 1000, durationS: 3600, timeoutS: 3600 };

function check(ok: boolean, message: string): void {
  if (!ok) throw new UsageError(message);
}

function checkNumber(flag: string, v: number, min: number, max: number, integer = false): void {
  const good = Number.isFinite(v) && v >= min && v <= max && (!integer || Number.isInteger(v));
  check(good, `${flag}: want ${integer ? 'an integer' : 'a number'} from ${min} to ${max}, got ${v}`);
}

interface Settings {
  target: Target;
  path: string;
  rate: number;
  keepalive: number;
  durationMs: number;
  timeoutMs: number;
  commandTimeoutMs: number;
  commands: ProbeCommand[];
  maxSockets: number;
  maxRequests: number;
  http2: boolean;
  streams: number;
}

/** Validates options; throws UsageError naming the CLI flag at fault. */
export function normalizeOptions(opts: ProbeOptions): Settings {
  const target = typeof opts.target === 'string' ? parseTarget(opts.target) : opts.target;
  const path = opts.path ?? DEFAULTS.path;
  check(/^\/[\x21-\x7e]*$/.test(path), `--path: want a path starting with '/' without spaces or control characters, got '${path}'`);
  const neither = !opts.rate && !opts.keepalive;
  const rate = neither ? DEFAULTS.rate : (opts.rate ?? 0);
  const keepalive = opts.keepalive ?? 0;
  checkNumber('--rate', rate, 0, MAX.rate);
  checkNumber('--keepalive', keepalive, 0, MAX.keepalive, true);
  const durationS = opts.durationS ?? DEFAULTS.durationS;
  const timeoutS = opts.timeoutS ?? DEFAULTS.timeoutS;
  checkNumber('--duration', durationS, 0.001, MAX.durationS);
  checkNumber('--timeout', timeoutS, 0.001, MAX.timeoutS);
  const commandTimeoutS = opts.commandTimeoutS ?? DEFAULTS.commandTimeoutS;
  checkNumber('commandTimeoutS', commandTimeoutS, 0.001, MAX.timeoutS);
  const maxSockets = opts.maxSockets ?? DEFAULTS.maxSockets;
  checkNumber('maxSockets', maxSockets, keepalive + 1, 100_000, true);
  const maxRequests = opts.maxRequests ?? DEFAULTS.maxRequests;
  checkNumber('maxRequests', maxRequests, 1, 10_000_000, true);
  const streams = opts.streams ?? 1;
  checkNumber('--streams', streams, 1, 1000, true);
  check(!opts.http2 || target.kind === 'tcp', '--http2: needs a TCP target (https://HOST:PORT over TLS, HOST:PORT for h2c)');
  const commands = opts.commands ?? [];
  for (const c of commands) {
    checkNumber('--at', c.atS, 0, durationS);
    check(typeof c.run === 'function' || c.run.trim() !== '', '--run: empty command');
  }
  return {
    target,
    path,
    rate,
    keepalive,
    durationMs: durationS * 1000,
    timeoutMs: timeoutS * 1000,
    commandTimeoutMs: commandTimeoutS * 1000,
    commands,
    maxSockets,
    maxRequests,
    http2: opts.http2 === true,
    streams,
  };
}

function request(path: string, host: string, connection: 'close' | 'keep-alive'): Buffer {
  return Buffer.from(
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: quiesce-probe\r\nAccept: */*\r\nConnection: ${connection}\r\n\r\n`,
    'latin1',
  );
}

export async function runProbe(opts: ProbeOptions): Promise<ProbeResult> {
  const s = normalizeOptions(opts);
  const target = await resolveTarget(s.target);
  const clock = new Clock();
  const startedWall = Date.now();
  const stop = new AbortController();
  // every keep-alive client (each HTTP/2 stream loop) may wait on it at once
  setMaxListeners(s.keepalive * s.streams + s.commands.length + 16, stop.signal);
  const userSignal = opts.signal ?? new AbortController().signal;
  let stoppedAt = s.durationMs;
  const halt = (): void => {
    if (!stop.signal.aborted) stoppedAt = Math.min(stoppedAt, clock.now());
    stop.abort();
  };
  const timer = setTimeout(halt, s.durationMs);
  userSignal.addEventListener('abort', halt, { once: true });
  if (userSignal.aborted) halt();

  const outcomes: Outcome[] = [];
  let budget = s.maxRequests;
  const ctx: LoadContext = {
    target,
    clock,
    timeoutMs: s.timeoutMs,
    stop: stop.signal,
    requestClose: request(s.path, hostHeader(target), 'close'),
    requestKeepAlive: request(s.path, hostHeader(target), 'keep-alive'),
    path: s.path,
    http2: s.http2,
    takeBudget: () => budget-- > 0,
    record(e, mode, startMs, reused) {
      const c = classify(e, reused);
      const o: Outcome = { kind: c.kind, mode, startMs, endMs: clock.now(), bytes: e.bytes, reused };
      if (c.status !== undefined) o.status = c.status;
      if (c.code !== undefined) o.code = c.code;
      if (e.type === 'timeout') o.established = e.established;
      const gen = e.type === 'response' ? e.response.headers.get(GENERATION_HEADER) : undefined;
      if (gen !== undefined) o.generation = gen;
      outcomes.push(o);
      return c;
    },
  };

  try {
    const commands = Promise.all(s.commands.map((c) => runCommandAt(c, clock, s.commandTimeoutMs, userSignal)));
    // Keep-alive sockets are held apart so that the rate loop's cap never starves the clients.
    const rateGauge = new SocketGauge(s.maxSockets - s.keepalive);
    const kaGauge = new SocketGauge(s.keepalive);
    const [rateStats] = await Promise.all([
      s.rate > 0 ? runRate(ctx, s.rate, s.durationMs, rateGauge) : Promise.resolve({ sent: 0, behind: 0 }),
      Promise.all(Array.from({ length: s.keepalive }, () => (s.http2 ? h2Client(ctx, s.streams, kaGauge) : keepAliveClient(ctx, kaGauge)))),
    ]);
    const commandResults = await commands;
    const result = buildResult(outcomes, {
      rate: { asked: s.rate, sent: rateStats.sent, behind: rateStats.behind, windowMs: stoppedAt },
      commands: commandResults,
      durationMs: clock.now(),
    });
    if (opts.admin !== undefined) Object.assign(result, await deployPhases(opts.admin, startedWall, Date.now(), opts.adminCa));
    return result;
  } finally {
    clearTimeout(timer);
    userSignal.removeEventListener('abort', halt);
  }
}

/** The reloads' phases between `from` and `to` (wall clock), read from quiesce's admin listener. */
async function deployPhases(admin: string, from: number, to: number, adminCa?: string): Promise<{ phases: DeployPhase[] } | { phases_error: string }> {
  try {
    const snap = JSON.parse(await adminGet(admin, '/server-status?json', adminCa)) as { deploys?: Array<{ at: string; generation: number; phase: string; text: string }> };
    const phases = (snap.deploys ?? [])
      .map((d) => ({ at: Date.parse(d.at), d }))
      .filter(({ at }) => at >= from - 1_000 && at <= to + 1_000)
      .map(({ at, d }) => ({ at_s: Math.round(at - from) / 1000, generation: d.generation, phase: d.phase, text: d.text }));
    return { phases };
  } catch (e) {
    return { phases_error: `${admin}: ${e instanceof Error ? e.message : String(e)}` };
  }
}

/**
 * GET `path` from quiesce's admin listener: `HOST:PORT` or `http://HOST:PORT` in plain HTTP,
 * `https://HOST:PORT` over TLS with its certificate checked (it receives the token): against the
 * system's CAs and NODE_EXTRA_CA_CERTS, or against `caFile` (a self-signed admin certificate).
 * QUIESCE_ADMIN_TOKEN is sent if set. 5 s at most; anything but 200 is an error naming the status.
 */
function adminGet(admin: string, path: string, caFile?: string): Promise<string> {
  const m = /^(https?):\/\/(.+?)\/?$/.exec(admin);
  const secure = m?.[1] === 'https';
  const base = `${m ? m[1] : 'http'}://${m ? m[2] : admin}`;
  const token = process.env.QUIESCE_ADMIN_TOKEN;
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  const ca = caFile !== undefined ? readFileSync(caFile) : undefined;
  return new Promise((resolve, reject) => {
    const onResponse = (res: IncomingMessage): void => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`HTTP ${res.statusCode}`))));
      res.on('error', reject);
    };
    const url = new URL(path, base);
    const req = secure ? httpsGet(url, { headers, timeout: 5_000, ...(ca ? { ca } : {}) }, onResponse) : http.get(url, { headers, timeout: 5_000 }, onResponse);
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', reject);
  });
}
