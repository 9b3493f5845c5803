/**
 * Chaos under load (issue 14): worker SIGKILLs, HUPs, `quiesce scale`, a hung worker and a
 * poisoned path, at random (seeded) under `quiesce probe` load, bounded to ~20 s. Afterwards: no
 * orphan process, no ghost slot, the server serves, and every request the probe sent is ok,
 * refused, or cut by a worker death the master logged (and counted). `npm run bench:chaos` runs
 * the same for 5 minutes and prints the figures.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, cleanup, waitExit, get, alive, FIXTURES } from './helpers/server.js';
import { runChaos, settled } from './helpers/chaos.js';

const CRASHY = join(FIXTURES, 'core/crashy.mjs');
const SEED = Number(process.env.QUIESCE_CHAOS_SEED ?? 14);

test(`chaos under load (seed ${SEED}): kills, reloads, scales, a hung worker, a poisoned path; no orphan, no ghost slot, every failed request laid to a worker death`, async () => {
  const s = await startServer({ args: [CRASHY, '--workers', '2', '--worker-timeout', '3', '--ready-timeout', '10', '--reload-soak', '300ms'] });
  try {
    const r = await runChaos(s, { durationS: 12, rate: 80, keepalive: 3, burnMs: 1, stepMs: 800, seed: SEED, timeoutS: 20, spareLast: true });
    const p = r.probe;
    const summary = JSON.stringify({ sent: p.sent, ok: p.ok, refused: p.refused, cut: p.cut, ka_race: p.ka_race, timeout: p.timeout, other: p.other, forced: p.forced, acts: r.acts, deaths: r.deaths, zeroLiveMs: r.zeroLiveMs, zero: r.zeroStretches, quiesceCut: r.quiesceCut });
    // the chaos did act, and kill workers
    assert.ok(r.acts.hup + r.acts.scale > 0 && r.deaths > 0, summary);
    // nothing hung for the client (20 s: a SYN at a held gate retransmits at 1, 3 and 7 s, and a
    // worker's start on a loaded machine takes seconds), nothing unexplained
    assert.equal(p.timeout, 0, summary);
    assert.equal(p.other, 0, summary);
    assert.equal(p.ok + p.refused + p.cut + p.ka_race + p.forced, p.sent, summary);
    assert.ok(p.ok > p.sent * 0.8, summary);
    // quiesce never leaves itself without a live worker by its own act (retiring one, holding back a respawn)
    assert.deepEqual(r.zeroStretches.filter((z) => z.cause === 'quiesce'), [], `no live worker by quiesce's doing: ${summary}`);
    assert.deepEqual(r.unattributed.map((x) => `${x.kind} ${x.mode} ${x.startMs}-${x.endMs} ${x.code ?? ''}`), [], `failed with no worker death near it: ${summary}`);
    // no ghost slot: it settles to its worker count, all ready; and it serves
    assert.equal(await settled(s, 20_000), undefined, summary);
    for (let i = 0; i < 4; i++) assert.equal((await get(s.address, '/')).status, 200);
    const stop = await s.cli('stop');
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal((await waitExit(s)).code, 0);
    // no orphan: every worker ever seen is gone with its master
    const left = [...r.pids].filter(alive);
    assert.deepEqual(left, [], `worker processes left after the stop: ${left.join(' ')}`);
  } finally {
    await cleanup(s);
  }
});
