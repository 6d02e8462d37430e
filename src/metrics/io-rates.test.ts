import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IoRates, type IoCounters } from './io-rates.js';

const MAC = '52:54:00:00:00:0a';
const EXPORT_A = `52540000000a-${'1'.repeat(32)}`;
const EXPORT_B = `52540000000a-${'2'.repeat(32)}`;

function counters(bytesRead: number, bytesWritten: number, reads = 0, writes = 0): IoCounters {
  return { bytesRead, bytesWritten, reads, writes };
}

test('rates are the counter growth over the window, per export and per MAC', () => {
  let t = 0;
  const map = new Map<string, IoCounters>();
  map.set(EXPORT_A, counters(0, 0));
  const rates = new IoRates(() => map, { intervalMs: 0, windowMs: 3000, now: () => t });
  assert.equal(rates.forExport(EXPORT_A), null, 'one sample is no rate');
  for (let s = 1; s <= 6; s++) {
    t = s * 1000;
    map.set(EXPORT_A, counters(s * 1_000_000, s * 250_000, s * 10, s * 5));
    rates.sample();
  }
  const r = rates.forExport(EXPORT_A)!;
  assert.equal(r.windowMs, 3000);
  assert.equal(r.readBytesPerSecond, 1_000_000);
  assert.equal(r.writeBytesPerSecond, 250_000);
  assert.equal(r.readsPerSecond, 10);
  assert.equal(r.writesPerSecond, 5);

  // A burst then silence: the rate falls back to zero once the window has passed.
  map.set(EXPORT_A, counters(6_000_000 + 9_000_000, 1_500_000, 60, 30));
  t = 7000;
  rates.sample();
  assert.equal(rates.forExport(EXPORT_A)!.readBytesPerSecond, (15_000_000 - 4_000_000) / 3);
  for (const s of [8000, 9000, 10000]) {
    t = s;
    rates.sample();
  }
  assert.equal(rates.forExport(EXPORT_A)!.readBytesPerSecond, 0);

  // A second export of the same client (a new boot) adds up under its MAC.
  map.set(EXPORT_B, counters(0, 0));
  t = 11000;
  rates.sample();
  map.set(EXPORT_B, counters(2000, 4000));
  t = 12000;
  rates.sample();
  const m = rates.forMac(MAC)!;
  assert.equal(m.readBytesPerSecond, 2000);
  assert.equal(m.writeBytesPerSecond, 4000);
  assert.equal(rates.forMac('52:54:00:00:00:0b'), null);

  // Gone from the source: forgotten.
  map.delete(EXPORT_A);
  rates.sample();
  assert.equal(rates.forExport(EXPORT_A), null);
  rates.close();
});

test('a counter going down restarts the history; bad options are refused; the timer samples', async () => {
  let t = 0;
  const map = new Map<string, IoCounters>([['disk', counters(100, 0)]]);
  const rates = new IoRates(() => map, { intervalMs: 0, now: () => t });
  t = 1000;
  map.set('disk', counters(50, 0));
  rates.sample();
  assert.equal(rates.forExport('disk'), null);
  rates.close();
  assert.throws(() => new IoRates(() => map, { intervalMs: -1 }), RangeError);
  assert.throws(() => new IoRates(() => map, { windowMs: 0 }), RangeError);

  let calls = 0;
  const live = new IoRates(() => (calls++, map), { intervalMs: 20 });
  for (let i = 0; i < 250 && calls < 4; i++) await new Promise((r) => setTimeout(r, 20));
  live.close();
  const after = calls;
  assert.ok(after >= 4, `the timer sampled (${after} times)`);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(calls, after, 'close() stops sampling');
});
