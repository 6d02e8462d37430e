import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryDevice } from './memory-device.js';
import { isDisklessError } from '../lib/errors.js';
import type { Extent } from './block-device.js';

const KiB = 1024;

function fill(length: number, byte: number): Buffer {
  return Buffer.alloc(length, byte);
}

test('a new device is one hole that reads as zeros', async () => {
  const d = new MemoryDevice(1024 * KiB);
  assert.deepEqual(await d.extents(0, d.size), [{ offset: 0, length: d.size, hole: true, zero: true }]);
  assert.deepEqual(await d.read(1000, 5000), Buffer.alloc(5000));
  assert.equal(d.allocatedBytes(), 0);
});

test('capabilities: everything but readOnly; multiConn true by default and as given', () => {
  const d = new MemoryDevice(4096);
  assert.deepEqual({ ...d.capabilities }, {
    readOnly: false, flush: true, fua: true, trim: true, writeZeroes: true, fastZero: true, extents: true, cache: true, multiConn: true,
  });
  assert.equal(new MemoryDevice(4096, { readOnly: true }).capabilities.readOnly, true);
  assert.equal(new MemoryDevice(4096, { multiConn: false }).capabilities.multiConn, false);
  assert.equal(d.preferredBlockSize, 4096);
  assert.equal(new MemoryDevice(4096, { preferredBlockSize: 512 }).preferredBlockSize, 512);
  assert.throws(() => new MemoryDevice(4096, { preferredBlockSize: 3000 }), (e) => isDisklessError(e, 'STORAGE_INVALID_ARGUMENT'));
  assert.throws(() => new MemoryDevice(-1), (e) => isDisklessError(e, 'STORAGE_INVALID_ARGUMENT'));
});

test('write, zero, trim and zero-with-mayTrim give data, zero, hole, hole across chunk boundaries', async () => {
  const d = new MemoryDevice(256 * KiB);
  await d.write(60 * KiB, fill(10 * KiB, 0xab)); // crosses the 64 KiB chunk boundary
  await d.zero(100 * KiB, 8 * KiB);
  await d.trim(62 * KiB, 1 * KiB);
  await d.write(200 * KiB, fill(4 * KiB, 1));
  await d.zero(201 * KiB, 1 * KiB, { mayTrim: true });
  const ext = await d.extents(0, d.size);
  const expect: Extent[] = [
    { offset: 0, length: 60 * KiB, hole: true, zero: true },
    { offset: 60 * KiB, length: 2 * KiB, hole: false, zero: false },
    { offset: 62 * KiB, length: 1 * KiB, hole: true, zero: true },
    { offset: 63 * KiB, length: 7 * KiB, hole: false, zero: false },
    { offset: 70 * KiB, length: 30 * KiB, hole: true, zero: true },
    { offset: 100 * KiB, length: 8 * KiB, hole: false, zero: true },
    { offset: 108 * KiB, length: 92 * KiB, hole: true, zero: true },
    { offset: 200 * KiB, length: 1 * KiB, hole: false, zero: false },
    { offset: 201 * KiB, length: 1 * KiB, hole: true, zero: true },
    { offset: 202 * KiB, length: 2 * KiB, hole: false, zero: false },
    { offset: 204 * KiB, length: 52 * KiB, hole: true, zero: true },
  ];
  assert.deepEqual(ext, expect);
  const all = await d.read(0, d.size);
  const want = Buffer.alloc(d.size);
  want.fill(0xab, 60 * KiB, 70 * KiB);
  want.fill(0, 62 * KiB, 63 * KiB);
  want.fill(1, 200 * KiB, 204 * KiB);
  want.fill(0, 201 * KiB, 202 * KiB);
  assert.deepEqual(all, want);
});

test('extents of a sub-range are clipped to it', async () => {
  const d = new MemoryDevice(64 * KiB);
  await d.write(4096, fill(4096, 7));
  assert.deepEqual(await d.extents(6000, 10000), [
    { offset: 6000, length: 2192, hole: false, zero: false },
    { offset: 8192, length: 7808, hole: true, zero: true },
  ]);
});

test('initial data is reported as data and read back; the rest is a hole', async () => {
  const data = Buffer.from('hello, world');
  const d = new MemoryDevice(8192, { data });
  assert.deepEqual(await d.read(0, 12), data);
  assert.deepEqual(await d.extents(0, 8192), [
    { offset: 0, length: 12, hole: false, zero: false },
    { offset: 12, length: 8180, hole: true, zero: true },
  ]);
  data.fill(0); // the device keeps its own copy
  assert.deepEqual(await d.read(0, 5), Buffer.from('hello'));
  assert.throws(() => new MemoryDevice(4, { data }), (e) => isDisklessError(e, 'STORAGE_INVALID_ARGUMENT'));
});

test('read into a caller buffer fills it from its start and returns it', async () => {
  const d = new MemoryDevice(8192, { data: fill(8192, 9) });
  const into = fill(100, 0xff);
  const out = await d.read(10, 50, into);
  assert.equal(out, into);
  assert.deepEqual(into.subarray(0, 50), fill(50, 9));
  assert.deepEqual(into.subarray(50), fill(50, 0xff));
  await assert.rejects(d.read(0, 200, into), (e) => isDisklessError(e, 'STORAGE_INVALID_ARGUMENT'));
});

test('a read-only device refuses write, trim and zero with EPERM but reads and flushes', async () => {
  const d = new MemoryDevice(8192, { readOnly: true, data: fill(10, 3) });
  for (const p of [d.write(0, fill(1, 1)), d.trim(0, 1), d.zero(0, 1)]) {
    await assert.rejects(p, (e) => isDisklessError(e, 'STORAGE_READ_ONLY') && e.errno === 'EPERM');
  }
  await d.flush();
  assert.deepEqual(await d.read(0, 10), fill(10, 3));
});

test('out-of-range and malformed requests fail with STORAGE_OUT_OF_RANGE / EINVAL', async () => {
  const d = new MemoryDevice(8192);
  const bad = [
    d.read(8000, 193), d.read(-1, 1), d.read(0.5, 1), d.write(8192, fill(1, 0)), d.trim(0, 8193),
    d.zero(Number.MAX_SAFE_INTEGER, 1), d.extents(8193, 0), d.cache(0, 9000), d.read(0, Number.NaN),
  ];
  for (const p of bad) await assert.rejects(p, (e) => isDisklessError(e, 'STORAGE_OUT_OF_RANGE') && e.errno === 'EINVAL');
  // The last byte and empty requests at the end are fine.
  await d.write(8191, fill(1, 1));
  assert.deepEqual(await d.read(8192, 0), Buffer.alloc(0));
});

test('a closed device refuses requests with ESHUTDOWN', async () => {
  const d = new MemoryDevice(8192);
  await d.close();
  await assert.rejects(d.read(0, 1), (e) => isDisklessError(e, 'STORAGE_CLOSED') && e.errno === 'ESHUTDOWN');
  await assert.rejects(d.flush(), (e) => isDisklessError(e, 'STORAGE_CLOSED'));
});

test('fully trimmed chunks are freed', async () => {
  const d = new MemoryDevice(1024 * KiB);
  await d.write(0, fill(256 * KiB, 5));
  assert.equal(d.allocatedBytes(), 256 * KiB);
  await d.trim(0, 256 * KiB);
  assert.equal(d.allocatedBytes(), 0);
  assert.deepEqual(await d.read(0, 256 * KiB), Buffer.alloc(256 * KiB));
});

/** Deterministic PRNG (mulberry32) so failures reproduce. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('random operations agree with a flat byte model (contents and per-byte state)', async () => {
  const size = 300 * KiB + 123;
  const d = new MemoryDevice(size);
  const bytes = Buffer.alloc(size);
  const state = new Uint8Array(size); // 0 hole, 1 zero, 2 data
  const r = rng(1234);
  for (let i = 0; i < 1500; i++) {
    const offset = Math.floor(r() * size);
    const length = Math.min(size - offset, Math.floor(r() * 80 * KiB));
    const op = Math.floor(r() * 4);
    if (op === 0) {
      const data = Buffer.alloc(length, (i % 255) + 1);
      await d.write(offset, data);
      data.copy(bytes, offset);
      state.fill(2, offset, offset + length);
    } else if (op === 1) {
      await d.trim(offset, length);
      bytes.fill(0, offset, offset + length);
      state.fill(0, offset, offset + length);
    } else if (op === 2) {
      const mayTrim = r() < 0.5;
      await d.zero(offset, length, { mayTrim });
      bytes.fill(0, offset, offset + length);
      state.fill(mayTrim ? 0 : 1, offset, offset + length);
    } else {
      assert.deepEqual(await d.read(offset, length), bytes.subarray(offset, offset + length), `op ${i}`);
    }
    if (i % 100 === 0) {
      const ext = await d.extents(0, size);
      let pos = 0;
      for (const e of ext) {
        assert.equal(e.offset, pos);
        assert.ok(e.length > 0);
        const s = e.zero ? (e.hole ? 0 : 1) : 2;
        for (let k = e.offset; k < e.offset + e.length; k++) if (state[k] !== s) assert.fail(`byte ${k}: state ${state[k]} reported ${s}`);
        pos += e.length;
      }
      assert.equal(pos, size);
    }
  }
  assert.deepEqual(await d.read(0, size), bytes);
});
