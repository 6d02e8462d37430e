import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CowOverlay, DEFAULT_CLUSTER_SIZE } from './overlay.js';
import { MemoryDevice } from '../memory-device.js';
import { FileDevice } from '../file-device.js';
import { isDisklessError } from '../../lib/errors.js';
import type { BlockDevice, Extent } from '../block-device.js';
import { HEADER_SIZE, MAP_FILE } from './format.js';
import { nodeFs, type OverlayFs } from './io.js';
import { below, prng, randomBytes } from '../../../test/helpers/prng.js';

const KiB = 1024;
const MiB = 1024 * KiB;

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'diskless-cow-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A base with a recognisable pattern in its first part and a hole after it. */
function patternBase(size: number, patterned: number, seed = 7): { base: MemoryDevice; bytes: Buffer } {
  const bytes = randomBytes(prng(seed), patterned);
  return { base: new MemoryDevice(size, { readOnly: true, data: bytes, identity: 'base-1' }), bytes };
}

/** Wraps a device and counts reads, so tests can show which layer a read touched. */
class CountingDevice implements BlockDevice {
  reads = 0;
  readBytes = 0;
  constructor(private readonly inner: BlockDevice) {}
  get size() { return this.inner.size; }
  get preferredBlockSize() { return this.inner.preferredBlockSize; }
  get capabilities() { return this.inner.capabilities; }
  get identity() { return this.inner.identity; }
  read(o: number, l: number, into?: Buffer) { this.reads++; this.readBytes += l; return this.inner.read(o, l, into); }
  write(o: number, d: Buffer) { return this.inner.write(o, d); }
  flush() { return this.inner.flush(); }
  trim(o: number, l: number) { return this.inner.trim(o, l); }
  zero(o: number, l: number) { return this.inner.zero(o, l); }
  extents(o: number, l: number) { return this.inner.extents(o, l); }
  cache(o: number, l: number) { return this.inner.cache(o, l); }
  close() { return this.inner.close(); }
}

test('a new overlay reads the base and reports its extents; capabilities as documented', async (t) => {
  const dir = await tempDir(t);
  const { base, bytes } = patternBase(4 * MiB, 1 * MiB);
  const ov = await CowOverlay.open({ base, dir });
  t.after(() => ov.close());
  assert.equal(ov.size, base.size);
  assert.equal(ov.clusterSize, DEFAULT_CLUSTER_SIZE);
  assert.equal(ov.preferredBlockSize, DEFAULT_CLUSTER_SIZE);
  assert.deepEqual({ ...ov.capabilities }, {
    readOnly: false, flush: true, fua: true, trim: true, writeZeroes: true, fastZero: true, extents: true, cache: true, multiConn: true,
  });
  assert.deepEqual(await ov.read(0, 1 * MiB), bytes);
  assert.deepEqual(await ov.read(1 * MiB, 4096), Buffer.alloc(4096));
  assert.deepEqual(await ov.extents(0, ov.size), [
    { offset: 0, length: 1 * MiB, hole: false, zero: false },
    { offset: 1 * MiB, length: 3 * MiB, hole: true, zero: true },
  ]);
  assert.equal(ov.allocatedBytes(), 0);
});

test('unaligned writes across cluster boundaries: read-modify-write keeps the base bytes around them', async (t) => {
  const dir = await tempDir(t);
  const { base, bytes } = patternBase(1 * MiB, 1 * MiB);
  const ov = await CowOverlay.open({ base, dir, clusterSize: 4096 });
  t.after(() => ov.close());
  const want = Buffer.from(bytes);
  const cases: [number, number][] = [[100, 50], [4000, 200], [8192, 4096], [12000, 20000], [40959, 2], [1 * MiB - 10, 10]];
  let n = 1;
  for (const [off, len] of cases) {
    const data = Buffer.alloc(len, n++);
    await ov.write(off, data);
    data.copy(want, off);
  }
  assert.deepEqual(await ov.read(0, ov.size), want);
  // Clusters touched: 0, 0-1, 2, 2-7, 9-10, 255.
  assert.equal(ov.allocatedBytes(), 4096 * (1 + 1 + 6 + 2 + 1));
  const ext = await ov.extents(0, 64 * KiB);
  assert.ok(ext.every((e) => !e.zero && !e.hole));
});

test('write-zeroes and trim of whole clusters read zeros without touching base or data file; extents say zero/hole', async (t) => {
  const dir = await tempDir(t);
  const { base: inner } = patternBase(1 * MiB, 1 * MiB);
  const base = new CountingDevice(inner);
  const ov = await CowOverlay.open({ base, dir, clusterSize: 16 * KiB });
  t.after(() => ov.close());
  await ov.zero(0, 64 * KiB); // NO_HOLE: allocated zeros
  await ov.zero(64 * KiB, 64 * KiB, { mayTrim: true });
  await ov.trim(128 * KiB, 64 * KiB);
  await ov.zero(192 * KiB, 64 * KiB, { fast: true }); // whole clusters: fast is fine
  base.reads = 0;
  assert.deepEqual(await ov.read(0, 256 * KiB), Buffer.alloc(256 * KiB));
  assert.equal(base.reads, 0, 'zero clusters must not be read from the base');
  assert.deepEqual(await ov.extents(0, 320 * KiB), [
    { offset: 0, length: 64 * KiB, hole: false, zero: true },
    { offset: 64 * KiB, length: 128 * KiB, hole: true, zero: true },
    { offset: 192 * KiB, length: 64 * KiB, hole: false, zero: true },
    { offset: 256 * KiB, length: 64 * KiB, hole: false, zero: false },
  ]);
  assert.equal(ov.allocatedBytes(), 0);
});

test('trim leaves the partial clusters at its ends unchanged; zero clears them', async (t) => {
  const dir = await tempDir(t);
  const { base, bytes } = patternBase(1 * MiB, 1 * MiB);
  const ov = await CowOverlay.open({ base, dir, clusterSize: 64 * KiB });
  t.after(() => ov.close());
  await ov.trim(10 * KiB, 200 * KiB); // whole clusters 1 and 2 (64K..192K)
  const want = Buffer.from(bytes);
  want.fill(0, 64 * KiB, 192 * KiB);
  assert.deepEqual(await ov.read(0, 256 * KiB), want.subarray(0, 256 * KiB));
  assert.equal(ov.allocatedBytes(), 0, 'a trim never allocates');
  await ov.zero(300 * KiB, 100 * KiB); // partial 256K-320K, whole 320K-384K, partial 384K-448K
  want.fill(0, 300 * KiB, 400 * KiB);
  assert.deepEqual(await ov.read(0, 512 * KiB), want.subarray(0, 512 * KiB));
  assert.equal(ov.allocatedBytes(), 2 * 64 * KiB);
});

test('FAST_ZERO is refused without effect only when part of a base cluster with data must be rewritten', async (t) => {
  const dir = await tempDir(t);
  const { base, bytes } = patternBase(1 * MiB, 512 * KiB);
  const ov = await CowOverlay.open({ base, dir, clusterSize: 64 * KiB });
  t.after(() => ov.close());
  await assert.rejects(ov.zero(10 * KiB, 100 * KiB, { fast: true }), (e) => isDisklessError(e, 'STORAGE_FAST_ZERO_UNSUPPORTED') && e.errno === 'ENOTSUP');
  assert.deepEqual(await ov.read(0, 512 * KiB), bytes, 'a refused fast zero changes nothing');
  // Partial clusters over the base's hole are already zero: fast is fine.
  await ov.zero(600 * KiB, 100 * KiB, { fast: true });
  // Partial clusters already written are zeroed in place: fast is fine.
  await ov.write(0, Buffer.alloc(128 * KiB, 1));
  await ov.zero(10 * KiB, 100 * KiB, { fast: true });
  const got = await ov.read(0, 128 * KiB);
  const want = Buffer.alloc(128 * KiB, 1);
  want.fill(0, 10 * KiB, 110 * KiB);
  assert.deepEqual(got, want);
  assert.equal(ov.allocatedBytes(), 128 * KiB);
});

test('the last cluster may be short; ranges ending at the end of the disk cover it', async (t) => {
  const dir = await tempDir(t);
  const size = 1 * MiB + 5000;
  const { base, bytes } = patternBase(size, size);
  const ov = await CowOverlay.open({ base, dir, clusterSize: 64 * KiB });
  t.after(() => ov.close());
  await ov.write(size - 100, Buffer.alloc(100, 9));
  const want = Buffer.from(bytes);
  want.fill(9, size - 100);
  assert.deepEqual(await ov.read(0, size), want);
  await ov.trim(1 * MiB, 5000);
  want.fill(0, 1 * MiB);
  assert.deepEqual(await ov.read(0, size), want);
  assert.deepEqual((await ov.extents(1 * MiB, 5000))[0], { offset: 1 * MiB, length: 5000, hole: true, zero: true });
});

test('concurrent overlapping writes land in arrival order; writes to other clusters run in parallel', async (t) => {
  const dir = await tempDir(t);
  const { base } = patternBase(4 * MiB, 4 * MiB);
  const ov = await CowOverlay.open({ base, dir, clusterSize: 64 * KiB });
  t.after(() => ov.close());
  const writes: Promise<void>[] = [];
  for (let i = 1; i <= 20; i++) writes.push(ov.write(1000 + i * 10, Buffer.alloc(70 * KiB, i)));
  for (let i = 0; i < 20; i++) writes.push(ov.write(2 * MiB + i * 64 * KiB + 100, Buffer.alloc(100, 200 + i)));
  await Promise.all(writes);
  // Byte 1000 + 10k + 5 was last covered by write k.
  const head = await ov.read(1000, 200);
  for (let k = 1; k < 20; k++) assert.equal(head[10 * k + 5], k);
  const at = await ov.read(1000 + 200, 70 * KiB);
  assert.deepEqual(at, Buffer.alloc(70 * KiB, 20), 'the last write to arrive wins');
  for (let i = 0; i < 20; i++) assert.deepEqual(await ov.read(2 * MiB + i * 64 * KiB + 100, 100), Buffer.alloc(100, 200 + i));
});

test('reopen after close gives the same bytes, extents and allocation; the map is on disk', async (t) => {
  const dir = await tempDir(t);
  const { base } = patternBase(2 * MiB, 1 * MiB);
  const r = prng(99);
  let ov = await CowOverlay.open({ base, dir, clusterSize: 4096 });
  for (let i = 0; i < 200; i++) {
    const off = below(r, 2 * MiB - 10 * KiB);
    const op = below(r, 4);
    if (op === 0) await ov.trim(off, below(r, 40 * KiB));
    else if (op === 1) await ov.zero(off, below(r, 40 * KiB), { mayTrim: r() < 0.5 });
    else await ov.write(off, randomBytes(r, 1 + below(r, 10 * KiB)));
  }
  const bytes = await ov.read(0, ov.size);
  const ext = await ov.extents(0, ov.size);
  const allocated = ov.allocatedBytes();
  await ov.close();
  await assert.rejects(ov.read(0, 1), (e) => isDisklessError(e, 'STORAGE_CLOSED'));
  ov = await CowOverlay.open({ base, dir, clusterSize: 64 * KiB }); // an existing overlay keeps its cluster size
  t.after(() => ov.close());
  assert.equal(ov.clusterSize, 4096);
  assert.deepEqual(await ov.read(0, ov.size), bytes);
  assert.deepEqual(await ov.extents(0, ov.size), ext);
  assert.equal(ov.allocatedBytes(), allocated);
});

test('flush puts the map on disk before resolving (read back from the file)', async (t) => {
  const dir = await tempDir(t);
  const { base } = patternBase(1 * MiB, 0);
  const ov = await CowOverlay.open({ base, dir, clusterSize: 4096 });
  t.after(() => ov.close());
  await ov.write(5 * 4096, Buffer.alloc(4096, 1));
  await ov.zero(6 * 4096, 4096);
  await ov.trim(7 * 4096, 4096);
  const before = await readFile(join(dir, MAP_FILE));
  assert.equal(before[HEADER_SIZE + 1], 0, 'nothing is written to the map before a flush');
  await ov.write(8 * 4096, Buffer.alloc(4096, 1), { fua: true });
  const after = await readFile(join(dir, MAP_FILE));
  // Clusters 4..7 are byte 1: 4 BASE(0), 5 DATA(1), 6 ZERO(2), 7 HOLE(3); cluster 8 is DATA in byte 2.
  assert.equal(after[HEADER_SIZE + 1], (0 << 0) | (1 << 2) | (2 << 4) | (3 << 6));
  assert.equal(after[HEADER_SIZE + 2], 1);
});

test('two overlays on one base are isolated', async (t) => {
  const { base, bytes } = patternBase(1 * MiB, 1 * MiB);
  const a = await CowOverlay.open({ base, dir: await tempDir(t), clusterSize: 4096 });
  const b = await CowOverlay.open({ base, dir: await tempDir(t), clusterSize: 4096 });
  t.after(async () => { await a.close(); await b.close(); });
  await Promise.all([a.write(1000, Buffer.alloc(10000, 0xaa)), b.write(1000, Buffer.alloc(10000, 0xbb))]);
  await b.trim(64 * KiB, 64 * KiB);
  assert.deepEqual(await a.read(1000, 10000), Buffer.alloc(10000, 0xaa));
  assert.deepEqual(await b.read(1000, 10000), Buffer.alloc(10000, 0xbb));
  assert.deepEqual(await a.read(64 * KiB, 64 * KiB), bytes.subarray(64 * KiB, 128 * KiB));
  assert.deepEqual(await b.read(64 * KiB, 64 * KiB), Buffer.alloc(64 * KiB));
  assert.deepEqual(await base.read(0, base.size), bytes);
});

test('a raw base file is untouched (bytes and mtime) after heavy overlay writes', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'base.img');
  const content = randomBytes(prng(3), 4 * MiB);
  await writeFile(path, content);
  const old = new Date(Date.now() - 3600_000);
  await utimes(path, old, old);
  const before = await stat(path, { bigint: true });
  const base = await FileDevice.open(path, { readOnly: true });
  const ov = await CowOverlay.open({ base, dir: join(dir, 'ov'), clusterSize: 16 * KiB });
  const r = prng(4);
  for (let i = 0; i < 500; i++) {
    const off = below(r, 4 * MiB - 70 * KiB);
    const op = below(r, 5);
    if (op === 0) await ov.trim(off, below(r, 64 * KiB));
    else if (op === 1) await ov.zero(off, below(r, 64 * KiB), { mayTrim: r() < 0.5 });
    else await ov.write(off, randomBytes(r, 1 + below(r, 64 * KiB)), { fua: r() < 0.1 });
  }
  await ov.flush();
  await ov.close();
  await base.close();
  const after = await stat(path, { bigint: true });
  assert.equal(after.mtimeNs, before.mtimeNs);
  assert.equal(after.size, before.size);
  assert.deepEqual(await readFile(path), content);
});

test('a base of another size or identity is refused with STORAGE_BASE_MISMATCH', async (t) => {
  const dir = await tempDir(t);
  const ov = await CowOverlay.open({ base: new MemoryDevice(1 * MiB, { identity: 'v1' }), dir });
  await ov.write(0, Buffer.alloc(10, 1));
  await ov.close();
  for (const base of [new MemoryDevice(2 * MiB, { identity: 'v1' }), new MemoryDevice(1 * MiB, { identity: 'v2' }), new MemoryDevice(1 * MiB, {})]) {
    await assert.rejects(CowOverlay.open({ base, dir }), (e) => isDisklessError(e, 'STORAGE_BASE_MISMATCH'));
  }
  // The refusals released the directory: the right base still opens it.
  const again = await CowOverlay.open({ base: new MemoryDevice(1 * MiB, { identity: 'v1' }), dir });
  assert.deepEqual(await again.read(0, 10), Buffer.alloc(10, 1));
  await again.close();
});

test('one instance per directory: a second open and a destroy while open are refused; destroy then open is fresh', async (t) => {
  const dir = await tempDir(t);
  const base = new MemoryDevice(1 * MiB, { identity: 'b' });
  const ov = await CowOverlay.open({ base, dir });
  await ov.write(0, Buffer.alloc(100, 5));
  await assert.rejects(CowOverlay.open({ base, dir }), (e) => isDisklessError(e, 'STORAGE_OVERLAY_IN_USE'));
  await assert.rejects(CowOverlay.destroy(dir), (e) => isDisklessError(e, 'STORAGE_OVERLAY_IN_USE'));
  await ov.close();
  await CowOverlay.destroy(dir);
  await assert.rejects(stat(dir), { code: 'ENOENT' });
  await CowOverlay.destroy(dir); // nothing there: fine
  const fresh = await CowOverlay.open({ base, dir });
  assert.deepEqual(await fresh.read(0, 100), Buffer.alloc(100));
  assert.equal(fresh.allocatedBytes(), 0);
  await fresh.close();
});

test('a lock file left by a live process refuses the open; one left by a dead process is taken over', async (t) => {
  const dir = await tempDir(t);
  const base = new MemoryDevice(1 * MiB);
  await (await CowOverlay.open({ base, dir })).close();
  await writeFile(join(dir, 'overlay.lock'), `${process.ppid}\n`); // alive and not us
  await assert.rejects(CowOverlay.open({ base, dir }), (e) => isDisklessError(e, 'STORAGE_OVERLAY_IN_USE'));
  await writeFile(join(dir, 'overlay.lock'), '2147483646\n'); // no such process
  const ov = await CowOverlay.open({ base, dir });
  await ov.close();
});

test('damaged or unknown headers are refused with a storage code', async (t) => {
  const dir = await tempDir(t);
  const base = new MemoryDevice(1 * MiB, { identity: 'x' });
  await (await CowOverlay.open({ base, dir })).close();
  const path = join(dir, MAP_FILE);
  const good = await readFile(path);
  const flipped = Buffer.from(good);
  flipped[30]! ^= 1;
  await writeFile(path, flipped);
  await assert.rejects(CowOverlay.open({ base, dir }), (e) => isDisklessError(e, 'STORAGE_OVERLAY_CORRUPT'));
  const newer = Buffer.from(good);
  newer.writeUInt32LE(2, 8);
  await writeFile(path, newer);
  await assert.rejects(CowOverlay.open({ base, dir }), (e) => isDisklessError(e, 'STORAGE_OVERLAY_VERSION'));
  await writeFile(path, good.subarray(0, 5000));
  await assert.rejects(CowOverlay.open({ base, dir }), (e) => isDisklessError(e, 'STORAGE_OVERLAY_CORRUPT'));
  await writeFile(path, good);
  await rm(join(dir, 'overlay.data'));
  await assert.rejects(CowOverlay.open({ base, dir }), (e) => isDisklessError(e, 'STORAGE_OVERLAY_CORRUPT'));
});

test('bad cluster sizes and out-of-range requests are refused', async (t) => {
  const dir = await tempDir(t);
  const base = new MemoryDevice(1 * MiB);
  for (const clusterSize of [1024, 3 * 4096, 2 * MiB]) {
    await assert.rejects(CowOverlay.open({ base, dir, clusterSize }), (e) => isDisklessError(e, 'STORAGE_BAD_CLUSTER_SIZE'));
  }
  const ov = await CowOverlay.open({ base, dir });
  t.after(() => ov.close());
  for (const p of [ov.read(1 * MiB, 1), ov.write(1 * MiB - 1, Buffer.alloc(2)), ov.trim(-1, 1), ov.zero(0, 1 * MiB + 1), ov.extents(0, 2 * MiB)]) {
    await assert.rejects(p, (e) => isDisklessError(e, 'STORAGE_OUT_OF_RANGE') && e.errno === 'EINVAL');
  }
});

test('the in-memory map is 2 bits per cluster: 16 KiB per GiB at the default cluster, 4 KiB at 64 KiB', async (t) => {
  const GiB = 1024 * MiB;
  const base = new MemoryDevice(100 * GiB);
  const small = await CowOverlay.open({ base, dir: await tempDir(t) });
  assert.equal(small.clusterSize, 16 * KiB);
  assert.equal(small.mapBytes(), 100 * 16 * KiB);
  await small.close();
  const dir = await tempDir(t);
  const ov = await CowOverlay.open({ base, dir, clusterSize: 64 * KiB });
  t.after(() => ov.close());
  assert.equal(ov.mapBytes(), 100 * 4096);
  await ov.write(99 * GiB, Buffer.alloc(4096, 1), { fua: true });
  assert.deepEqual(await ov.read(99 * GiB, 4096), Buffer.alloc(4096, 1));
  assert.equal(ov.allocatedBytes(), 64 * KiB);
  const ext = await ov.extents(0, ov.size);
  assert.equal(ext.length, 3);
});

test('a failed flush makes the overlay refuse writes and flushes (EIO) but keep serving reads', async (t) => {
  const dir = await tempDir(t);
  let failSync = false;
  const fs: OverlayFs = {
    ...nodeFs,
    async open(path, mode) {
      const f = await nodeFs.open(path, mode);
      return {
        read: (...a) => f.read(...a), writev: (...a) => f.writev(...a), truncate: (n) => f.truncate(n), size: () => f.size(), close: () => f.close(),
        datasync: () => (failSync ? Promise.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })) : f.datasync()),
      };
    },
  };
  const base = new MemoryDevice(1 * MiB);
  const ov = await CowOverlay.open({ base, dir, fs, clusterSize: 4096 });
  t.after(() => ov.close().catch(() => undefined));
  await ov.write(0, Buffer.alloc(4096, 1));
  failSync = true;
  await assert.rejects(ov.flush(), (e) => isDisklessError(e, 'STORAGE_IO') && e.errno === 'EIO');
  failSync = false;
  await assert.rejects(ov.write(0, Buffer.alloc(1)), (e) => isDisklessError(e, 'STORAGE_IO'));
  await assert.rejects(ov.flush(), (e) => isDisklessError(e, 'STORAGE_IO'));
  assert.deepEqual(await ov.read(0, 4096), Buffer.alloc(4096, 1));
});

/**
 * Model-based test: thousands of random requests, unaligned and across
 * cluster boundaries, some concurrent, against MemoryDevice as the model;
 * the overlay is closed and reopened now and then.
 */
for (const clusterSize of [4096, 64 * KiB]) {
  test(`random requests agree with the MemoryDevice model (cluster ${clusterSize / KiB} KiB)`, async (t) => {
    const dir = await tempDir(t);
    const size = 3 * MiB + 12345;
    const r = prng(20240 + clusterSize);
    const baseBytes = randomBytes(r, 2 * MiB);
    const base = new MemoryDevice(size, { readOnly: true, data: baseBytes, identity: 'model-base' });
    const model = new MemoryDevice(size, { data: baseBytes });
    let ov = await CowOverlay.open({ base, dir, clusterSize });
    const C = clusterSize;
    const pick = (): [number, number] => {
      // Bias towards cluster boundaries, where the interesting cases are.
      const near = r() < 0.5;
      let off = near ? below(r, Math.floor(size / C)) * C + below(r, 1025) - 512 : below(r, size);
      off = Math.max(0, Math.min(size - 1, off));
      const maxLen = r() < 0.8 ? 3 * C : 300 * KiB;
      const len = Math.min(size - off, 1 + below(r, maxLen));
      return [off, len];
    };
    let ops = 0;
    for (let round = 0; round < 500; round++) {
      // A batch of up to 4 concurrent write-like requests, applied to the
      // model in issue order (the overlay orders overlapping requests FIFO).
      const batch: Promise<void>[] = [];
      const n = 1 + below(r, 4);
      for (let k = 0; k < n; k++, ops++) {
        const [off, len] = pick();
        const op = below(r, 10);
        if (op < 5) {
          const data = randomBytes(r, len);
          batch.push(ov.write(off, data, { fua: r() < 0.05 }));
          await model.write(off, data);
        } else if (op < 7) {
          const mayTrim = r() < 0.5;
          const fast = r() < 0.3;
          // A refused fast zero must change nothing: apply to the model only if it succeeded.
          const snapshot = fast ? await model.read(off, len) : undefined;
          await model.zero(off, len, { mayTrim });
          batch.push(ov.zero(off, len, { mayTrim, fast }).catch(async (e) => {
            assert.ok(fast && isDisklessError(e, 'STORAGE_FAST_ZERO_UNSUPPORTED'), `unexpected ${e}`);
            await model.write(off, snapshot!);
          }));
        } else if (op < 9) {
          batch.push(ov.trim(off, len));
          // Trim changes whole clusters only.
          const from = Math.ceil(off / C) * C;
          const to = off + len === size ? size : Math.floor((off + len) / C) * C;
          if (to > from) await model.trim(from, to - from);
        } else {
          batch.push(ov.flush());
        }
      }
      await Promise.all(batch);
      const [off, len] = pick();
      assert.deepEqual(await ov.read(off, len), await model.read(off, len), `read ${off}+${len} after ${ops} ops`);
      if (round % 25 === 0) await checkExtents(ov, model, 0, size);
      if (round % 100 === 99) {
        await ov.close();
        ov = await CowOverlay.open({ base, dir });
      }
    }
    assert.deepEqual(await ov.read(0, size), await model.read(0, size));
    await checkExtents(ov, model, 0, size);
    await ov.close();
  });
}

/** Extents must be contiguous, cover the range, and be truthful: zero (and hole) only where the model reads zeros. */
async function checkExtents(dev: BlockDevice, model: BlockDevice, offset: number, length: number): Promise<void> {
  const ext: Extent[] = await dev.extents(offset, length);
  let pos = offset;
  for (const e of ext) {
    assert.equal(e.offset, pos, 'extents are contiguous');
    assert.ok(e.length > 0);
    if (e.hole) assert.ok(e.zero, 'a hole reads zeros');
    if (e.zero) assert.deepEqual(await model.read(e.offset, e.length), Buffer.alloc(e.length), `extent ${e.offset}+${e.length} claims zero`);
    pos += e.length;
  }
  assert.equal(pos, offset + length, 'extents cover the range');
}

test('once its I/O gate closes, the overlay declines the synchronous paths and serves through the thread pool, bytes unchanged', async (t) => {
  const dir = await tempDir(t);
  const { base, bytes } = patternBase(4 * MiB, MiB);
  // Every synchronous call counts as slow and the first one closes the gate for a minute.
  const ov = await CowOverlay.open({ base, dir, syncIo: { maxBytes: MiB, slowMs: -1, slowMsPerMiB: 0, slowStreak: 1, backoffMs: 60_000 } });
  t.after(() => ov.close());
  // A whole cluster: no read-modify-write, so no base read (the base has no synchronous path).
  const a = Buffer.alloc(DEFAULT_CLUSTER_SIZE, 0xa1);
  const b = Buffer.alloc(6000, 0xb2);
  assert.equal(ov.tryWriteSync(0, a), true, 'open until a call was slow');
  assert.equal(ov.tryWriteSync(20_000, b), false, 'closed: the write is left to write()');
  assert.equal(ov.tryReadSync(0, 4096, Buffer.alloc(4096)), false, 'closed: the read is left to read()');
  await ov.write(20_000, b);
  const expected = Buffer.from(bytes.subarray(0, 64 * KiB));
  a.copy(expected, 0);
  b.copy(expected, 20_000);
  assert.ok((await ov.read(0, 64 * KiB)).equals(expected));
});
