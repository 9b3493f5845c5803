/**
 * The drain's SYN-cookie hold (src/master/syncookies.ts): the host's cookie count read from the
 * kernel, and the hold computed from its samples. The hold's effect under load is in the drain tests.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CookieWatch, readSyncookiesSent } from '../src/master/syncookies.js';

test('the host\'s SYN cookie count is read from the kernel (TcpExt SyncookiesSent), and a file without it reads as unknown', () => {
  const n = readSyncookiesSent();
  assert.ok(typeof n === 'number' && Number.isInteger(n) && n >= 0, `read ${n}`);
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-netstat-'));
  const file = join(dir, 'netstat');
  writeFileSync(file, 'TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed\nTcpExt: 17 40 2\nIpExt: InNoRoutes\nIpExt: 0\n');
  assert.equal(readSyncookiesSent(file), 17);
  writeFileSync(file, 'IpExt: InNoRoutes\nIpExt: 0\n');
  assert.equal(readSyncookiesSent(file), undefined);
  assert.equal(readSyncookiesSent(join(dir, 'missing')), undefined);
});

test('a drain holds its gated listeners after recent cookies: as long as the oldest cookie client has waited, plus a retransmission timeout', () => {
  const counts = [5, 5, 5, 5, 9, 12];
  let i = 0;
  const w = new CookieWatch(() => counts[Math.min(i++, counts.length - 1)]);
  w.sample(0);
  w.sample(500);
  w.sample(1_000);
  // no cookie yet: no hold
  assert.equal(w.holdUntil(1_200), undefined);
  w.sample(1_500); // 5 -> 9: sent after the sample at 1,200 (holdUntil samples too)
  const hold = w.holdUntil(2_000); // 9 -> 12 since 1,500
  assert.deepEqual(hold, { since: 1_200, cookies: 7, until: 2_000 + 800 + 400 });
});

test('cookies older than the look-back are not waited for, and an unreadable count never holds', () => {
  const counts = [1, 4, 4];
  let i = 0;
  const w = new CookieWatch(() => counts[Math.min(i++, counts.length - 1)]);
  w.sample(0);
  w.sample(500);
  assert.ok(w.holdUntil(5_000));
  w.sample(20_000);
  assert.equal(w.holdUntil(20_500), undefined);
  const blind = new CookieWatch(() => undefined);
  blind.sample(0);
  assert.equal(blind.holdUntil(100), undefined);
});
