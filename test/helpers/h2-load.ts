/** HTTP/2 load through a stop or a reload, for TLS (`https://ADDR`) and h2c (`ADDR`) targets alike. */
import assert from 'node:assert/strict';
import { runProbe, type ProbeResult } from '../../src/probe/index.js';
import { assertNothingCut, summary } from './outcomes.js';
import { waitExit, type Server } from './server.js';

/** 6 sessions of 16 concurrent streams (each answered after 20 ms) on `target`, `run` at `atS`. */
export function h2Through(target: string, atS: number, run: () => unknown, durationS = atS + 1.5, signal?: AbortSignal): Promise<ProbeResult> {
  return runProbe({ target, http2: true, keepalive: 6, streams: 16, path: '/?sleep=20', durationS, timeoutS: 15, commands: [{ atS, run }], ...(signal ? { signal } : {}) });
}

/**
 * `quiesce reload` of `s` (started with --expose-generation) under that load, which goes on until
 * 1.5 s after the reload finished: it went live, no stream was cut, and generation 2 served.
 */
export async function assertH2ThroughReload(s: Server, target: string, what: string): Promise<void> {
  let reload = '';
  const done = new AbortController();
  const probe = await h2Through(target, 0.8, async () => {
    const r = await s.cli('reload');
    reload = `${r.code} ${r.stdout}${r.stderr}`;
    setTimeout(() => done.abort(), 1500);
  }, 20, done.signal);
  console.log(`# ${what} through a reload: ${summary(probe)}; generations ${JSON.stringify(probe.generations)}`);
  assert.match(reload, /^0 quiesce: reloaded/);
  assertNothingCut(probe);
  assert.ok((probe.generations['2'] ?? 0) > 0, `generation 2 served: ${JSON.stringify(probe.generations)}`);
}

/** A SIGTERM to `s` under that load: no stream cut, some served, the master exits 0 saying cut=0. */
export async function assertH2ThroughStop(s: Server, target: string, what: string): Promise<void> {
  const probe = await h2Through(target, 1.0, () => process.kill(s.pid, 'SIGTERM'));
  console.log(`# ${what} through a stop: ${summary(probe)}`);
  assertNothingCut(probe);
  // (a floor, not a rate: at load 17 the sessions took most of the second before the stop: 96 ok)
  assert.ok(probe.ok > 30, `streams served before and through the stop: ${summary(probe)}`);
  assert.equal((await waitExit(s)).code, 0);
  assert.match(s.err(), /cut=0/);
}
