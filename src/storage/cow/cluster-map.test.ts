import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterMap, ClusterState, CLUSTERS_PER_PAGE, MAP_PAGE_SIZE } from './cluster-map.js';

test('entries are 2 bits, packed four to a byte, low bits first (the on-disk layout)', () => {
  const m = new ClusterMap(10);
  m.set(0, ClusterState.DATA);
  m.set(1, ClusterState.ZERO);
  m.set(2, ClusterState.HOLE);
  m.set(5, ClusterState.DATA);
  assert.equal(m.bytes[0], 1 | (2 << 2) | (3 << 4));
  assert.equal(m.bytes[1], 1 << 2);
  assert.equal(m.bytes.length, MAP_PAGE_SIZE);
  assert.equal(m.dataClusters, 2);
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((i) => m.get(i)), [1, 2, 3, 0, 0, 1]);
});

test('setRange agrees with set, counts DATA, and marks the pages it changes', () => {
  const n = CLUSTERS_PER_PAGE * 3 + 7;
  const a = new ClusterMap(n);
  const b = new ClusterMap(n);
  let seed = 3;
  const rnd = (k: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % k);
  for (let i = 0; i < 400; i++) {
    const first = rnd(n);
    const last = Math.min(n - 1, first + rnd(i % 10 === 0 ? CLUSTERS_PER_PAGE * 2 : 40));
    const s = rnd(4) as ClusterState;
    a.setRange(first, last, s);
    for (let c = first; c <= last; c++) b.set(c, s);
  }
  assert.deepEqual(a.bytes, b.bytes);
  let data = 0;
  for (let c = 0; c < n; c++) if (a.get(c) === ClusterState.DATA) data++;
  assert.equal(a.dataClusters, data);
  assert.equal(b.dataClusters, data);
  a.takeDirty();
  a.setRange(CLUSTERS_PER_PAGE - 2, CLUSTERS_PER_PAGE + 1, a.get(CLUSTERS_PER_PAGE - 2) === 1 ? 2 : 1);
  assert.deepEqual(a.takeDirty().map((p) => p.page), [0, 1]);
});

test('takeDirty copies the pages (later changes do not alter a taken copy) and clears the set; redirty restores it', () => {
  const m = new ClusterMap(CLUSTERS_PER_PAGE * 2);
  m.set(CLUSTERS_PER_PAGE + 4, ClusterState.DATA);
  const copies = m.takeDirty();
  assert.deepEqual(copies.map((p) => p.page), [1]);
  m.set(CLUSTERS_PER_PAGE + 4, ClusterState.HOLE);
  assert.equal(copies[0]!.bytes[1], 1, 'the copy keeps the value at the time it was taken');
  assert.equal(m.dirtyPages, 1);
  m.takeDirty();
  assert.equal(m.dirtyPages, 0);
  m.redirty([0, 1]);
  assert.equal(m.dirtyPages, 2);
  m.set(7, ClusterState.BASE); // no change: stays clean
  m.takeDirty();
  m.set(7, ClusterState.BASE);
  assert.equal(m.dirtyPages, 0);
});

test('loading bytes counts DATA entries and ignores the padding past the last cluster', () => {
  const bytes = Buffer.alloc(MAP_PAGE_SIZE, 0x55); // every entry DATA, padding included
  const m = new ClusterMap(10, bytes);
  assert.equal(m.dataClusters, 10);
  assert.throws(() => new ClusterMap(10, Buffer.alloc(100)));
});
