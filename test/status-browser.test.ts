/**
 * /server-status in a real browser (Debian's chromium through playwright-core): the page shows the
 * states this test creates — a slow request as W, a reload's new generation beside the old one
 * finishing as G, a stop's drain as G with its progress. Screenshots go to test-artifacts/.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startServer, cleanup, get, sleep, waitFor, statusJson, FIXTURES, ROOT, type Server } from './helpers/server.js';
import { runProbe } from '../src/probe/index.js';

const HOLD_APP = join(FIXTURES, 'status/hold-app.mjs');
/** Debian's chromium; QUIESCE_TEST_CHROMIUM names another binary (test/suite.test.ts names a missing one). */
const CHROMIUM = process.env.QUIESCE_TEST_CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = join(ROOT, 'test-artifacts');

const json = statusJson;

/** Load the page and return what a reader sees: the raw scoreboard, the state badge, the generation card, the workers table. */
async function look(page: Page, s: Server, shot: string): Promise<{ scoreboard: string; state: string; generation: string; table: string; body: string }> {
  const res = await page.goto(`http://${s.admin}/server-status?refresh=30`);
  assert.equal(res?.status(), 200);
  await page.screenshot({ path: join(ARTIFACTS, shot), fullPage: true });
  const card = (label: string) => page.locator('.card', { has: page.locator('.label', { hasText: new RegExp(`^${label}$`) }) }).locator('.value').innerText();
  return {
    scoreboard: await page.locator('h2 code.raw').innerText(),
    state: await card('State'),
    generation: await card('Generation'),
    table: await page.locator('table.workers').innerText(),
    body: await page.locator('body').innerText(),
  };
}

test('the status page in chromium: W for a slow request, the new generation after a reload, G during a stop', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (apt-get install chromium, as .ci/run does)` }, async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'quiesce-chromium-'));
  const s = await startServer({ args: [HOLD_APP, '--workers', '2', '--reload-soak', '200ms', '--graceful-timeout', '15', '--status-query'] /* requests are told apart by their ?hold= */ });
  let ctx: BrowserContext | undefined;
  try {
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 900 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const page = ctx.pages()[0] ?? await ctx.newPage();

    // 1. a slow request in flight: W, with the request in the table
    // requests the app holds until the test releases them (a file appears)
    const release = (name: string) => writeFileSync(join(s.dir, name), '');
    const holdPath = (name: string) => `/?hold=${encodeURIComponent(join(s.dir, name))}`;
    const first = get(s.address, holdPath('release-1'));
    first.catch(() => undefined); // awaited below; a failing assertion must not turn it into an unhandled rejection
    await waitFor(async () => (await json(s)).scoreboard.includes('W'), 3000, 'a W in the scoreboard');
    const busy = await look(page, s, 'status-busy.png');
    assert.match(busy.scoreboard, /^(W_|_W)$/);
    assert.match(busy.state, /^serving/);
    assert.equal(busy.generation, '1');
    assert.match(busy.table, /GET \/\?hold=%2F/);
    assert.match(await page.locator('meta[http-equiv="refresh"]').getAttribute('content') ?? '', /^30$/);

    // 2. `quiesce reload`: generation 2 serves, generation 1's busy worker finishes as G
    const r = await s.cli('reload');
    assert.equal(r.code, 0, r.stderr);
    await waitFor(async () => (await json(s)).scoreboard === 'G__', 3000, 'the idle worker of generation 1 to exit');
    const reloaded = await look(page, s, 'status-reload.png');
    assert.equal(reloaded.generation, '2');
    assert.equal(reloaded.scoreboard, 'G__');
    assert.match(reloaded.body, /gen 1\s*retiring/);
    assert.match(reloaded.body, /gen 2\s*serving/);
    assert.match(reloaded.body, /Retiring\s+finishing · generation 1/);

    // 3. a stop with a slow request still running on generation 2: the drain shows G and its progress
    const second = get(s.address, holdPath('release-2'));
    second.catch(() => undefined);
    const busy2 = (await waitFor(async () => (await json(s)).workers.find((w) => w.generation === 2 && w.state === 'W'), 3000, 'a W in generation 2'))!;
    const stop = s.cli('stop');
    stop.catch(() => undefined);
    await waitFor(async () => (await json(s)).state === 'stopping', 3000, 'the stop to reach its workers');
    await sleep(600); // a stats report or two: the workers say G themselves
    const draining = await look(page, s, 'status-drain.png');
    assert.match(draining.state, /^stopping/);
    // generation 1's and generation 2's busy workers finish as G; generation 2's idle one has gone: an open slot
    assert.match(draining.scoreboard, /^G(G\.|\.G)$/);
    assert.match(draining.table, new RegExp(`\\b${busy2.pid}\\s+G\\b`));
    assert.match(draining.body, /Stopping: workers finishing/);
    assert.match(draining.body, /2\s*connections left/);

    release('release-1');
    release('release-2');
    assert.equal((await first).status, 200);
    assert.equal((await second).status, 200);
    assert.equal((await stop).code, 0);
    await s.exited;
  } finally {
    await ctx?.close().catch(() => undefined);
    rmSync(profile, { recursive: true, force: true });
    await cleanup(s);
  }
});

test('the status page in chromium during a judged soak: both generations with their req/s, 5xx share, p50 and p99, and the reload\'s phases', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (apt-get install chromium, as .ci/run does)` }, async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'quiesce-chromium-'));
  // a long soak: on a loaded machine generation 2 may take seconds to start, and more to win some of the accept race
  const s = await startServer({ args: [join(FIXTURES, 'reload/v1.mjs'), '--workers', '2', '--reload-soak', '8s', '--reload-judge', 'on'] });
  let ctx: BrowserContext | undefined;
  const load = new AbortController();
  try {
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM, headless: true, viewport: { width: 1280, height: 1000 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const page = ctx.pages()[0] ?? await ctx.newPage();
    const probe = runProbe({ target: s.address, path: '/?sleep=5', rate: 80, durationS: 40, timeoutS: 10, signal: load.signal });
    await sleep(500);
    const reload = s.cli('reload');
    reload.catch(() => undefined);
    // both generations serving and counted, mid-soak
    await waitFor(async () => {
      const st = await json(s);
      // (every worker of both ready: on a slow machine one of generation 2 answered before its peer was up)
      return st.state === 'reloading' && st.generationInfo.length === 2 && st.generationInfo.every((g) => (g.http?.responses ?? 0) > 0 && g.ready === 2);
    }, 15_000, 'both generations answering during the soak, each with its 2 workers ready');
    await page.goto(`http://${s.admin}/server-status`);
    await page.screenshot({ path: join(ARTIFACTS, 'status-soak.png'), fullPage: true });
    const gens = page.locator('section.panel', { has: page.locator('h2', { hasText: /^Generations$/ }) });
    const rows = await gens.locator('tbody tr').allInnerTexts();
    assert.equal(rows.length, 2, rows.join('\n'));
    for (const [i, row] of rows.entries()) {
      // Gen, tag, ready, retiring, requests, conns, in flight, req/s, 5xx, p50, p99, age
      assert.match(row, new RegExp(`^${i + 1}\\s+(serving|starting)\\s+2 / 2\\s+0\\s+[\\d,]+\\s+\\d+\\s+\\d+\\s+[\\d.]+\\s+0%\\s+[\\d.]+ ms\\s+[\\d.]+ ms\\s+`), rows.join('\n'));
    }
    assert.match(await gens.innerText(), /gen 2 soak-start generation 2 soaking 8s beside generation 1, judged/);
    const r = await reload;
    assert.equal(r.code, 0, r.stderr);
    load.abort();
    const p = await probe;
    assert.equal(p.ok, p.sent, `sent ${p.sent} ok ${p.ok}`);
    await page.goto(`http://${s.admin}/server-status`);
    assert.match(await gens.innerText(), /gen 2 (judged-ok|judge-abstained)/);
    assert.match(await gens.innerText(), /gen 2 committed generation 2 serving; generation 1 retiring/);
  } finally {
    load.abort();
    await ctx?.close().catch(() => undefined);
    rmSync(profile, { recursive: true, force: true });
    await cleanup(s);
  }
});
