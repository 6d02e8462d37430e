import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RangeLock } from './range-lock.js';

const tick = () => new Promise((r) => setImmediate(r));

test('disjoint ranges are held at once; overlapping ones wait, in arrival order', async () => {
  const lock = new RangeLock();
  const order: string[] = [];
  const a = await lock.acquire(0, 3);
  const b = await lock.acquire(4, 7); // disjoint: granted at once
  let c: (() => void) | undefined;
  let d: (() => void) | undefined;
  const pc = lock.acquire(2, 5).then((rel) => { order.push('c'); c = rel; });
  const pd = lock.acquire(5, 5).then((rel) => { order.push('d'); d = rel; }); // waits for b and for c (earlier, overlapping)
  const pe = lock.acquire(9, 9).then((rel) => { order.push('e'); rel(); }); // free: not held up by the waiters
  await tick();
  assert.deepEqual(order, ['e']);
  a();
  await tick();
  assert.deepEqual(order, ['e'], 'c still waits for b');
  b();
  await pc;
  await tick();
  assert.deepEqual(order, ['e', 'c'], 'd waits for c, which arrived first');
  c!();
  await pd;
  assert.deepEqual(order, ['e', 'c', 'd']);
  d!();
  await pe;
  assert.equal(lock.size, 0);
});

test('releasing twice is harmless', async () => {
  const lock = new RangeLock();
  const a = await lock.acquire(0, 0);
  const pb = lock.acquire(0, 0);
  a();
  a();
  const b = await pb;
  const pc = lock.acquire(0, 0);
  let got = false;
  void pc.then(() => { got = true; });
  await tick();
  assert.equal(got, false, 'the second release of a must not release b');
  b();
  (await pc)();
});

test('many random overlapping holders never overlap in time', async () => {
  const lock = new RangeLock();
  const held = new Int32Array(64);
  let seed = 1;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  const tasks = Array.from({ length: 300 }, async () => {
    const first = rnd(60);
    const last = first + rnd(4);
    const release = await lock.acquire(first, last);
    for (let i = first; i <= last; i++) assert.equal(held[i]++, 0, `cluster ${i} held twice`);
    await new Promise((r) => setTimeout(r, rnd(3)));
    for (let i = first; i <= last; i++) held[i]--;
    release();
  });
  await Promise.all(tasks);
});
