import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Capabilities, Extent } from '../../storage/block-device.js';
import { TRANSMISSION_FLAGS as T, flagNames } from './constants.js';
import { blockSizeFor, planRead, toDescriptors, transmissionFlagsFor } from './session.js';

const all: Capabilities = { readOnly: false, flush: true, fua: true, trim: true, writeZeroes: true, fastZero: true, extents: true, cache: true, multiConn: true };
const none: Capabilities = { readOnly: false, flush: false, fua: false, trim: false, writeZeroes: false, fastZero: false, extents: false, cache: false, multiConn: false };

test('transmission flags follow the capabilities', () => {
  assert.equal(transmissionFlagsFor(none, false), T.NBD_FLAG_HAS_FLAGS);
  assert.equal(transmissionFlagsFor(none, true), T.NBD_FLAG_HAS_FLAGS | T.NBD_FLAG_SEND_DF);
  assert.deepEqual(flagNames(T, transmissionFlagsFor(all, false)), [
    'NBD_FLAG_HAS_FLAGS', 'NBD_FLAG_SEND_FLUSH', 'NBD_FLAG_SEND_FUA', 'NBD_FLAG_SEND_TRIM', 'NBD_FLAG_SEND_WRITE_ZEROES',
    'NBD_FLAG_CAN_MULTI_CONN', 'NBD_FLAG_SEND_CACHE', 'NBD_FLAG_SEND_FAST_ZERO',
  ]);
  // Read-only: no write-side features.
  assert.deepEqual(flagNames(T, transmissionFlagsFor({ ...all, readOnly: true, multiConn: false, cache: false }, false)), ['NBD_FLAG_HAS_FLAGS', 'NBD_FLAG_READ_ONLY', 'NBD_FLAG_SEND_FLUSH']);
  // FUA emulated with flush; no FUA without either.
  assert.ok(transmissionFlagsFor({ ...none, flush: true }, false) & T.NBD_FLAG_SEND_FUA);
  assert.ok(transmissionFlagsFor({ ...none, fua: true }, false) & T.NBD_FLAG_SEND_FUA);
  // Fast zero only with write zeroes (proto.md: MUST be 0 without SEND_WRITE_ZEROES).
  assert.equal(transmissionFlagsFor({ ...none, fastZero: true }, false) & T.NBD_FLAG_SEND_FAST_ZERO, 0);
  assert.equal(transmissionFlagsFor({ ...none, writeZeroes: true }, false) & T.NBD_FLAG_SEND_FAST_ZERO, 0);
  assert.equal(transmissionFlagsFor({ ...all, multiConn: false }, false) & T.NBD_FLAG_CAN_MULTI_CONN, 0);
});

test('block size constraints: preferred is a power of two from 512 to the maximum payload', () => {
  const dev = (pbs: number) => ({ preferredBlockSize: pbs }) as never;
  assert.deepEqual(blockSizeFor(dev(4096), 1 << 25), { minimum: 1, preferred: 4096, maximum: 1 << 25 });
  assert.equal(blockSizeFor(dev(1), 1 << 25).preferred, 512);
  assert.equal(blockSizeFor(dev(3000), 1 << 25).preferred, 4096);
  assert.equal(blockSizeFor(dev(1 << 20), 65536).preferred, 65536);
  assert.equal(blockSizeFor(dev(1 << 20), 100000).preferred, 65536);
});

const ext = (offset: number, length: number, kind: 'data' | 'zero' | 'hole'): Extent => ({ offset, length, hole: kind === 'hole', zero: kind !== 'data' });
const K = 1024;

test('planRead: zero runs of at least minHole become holes, cut to 512-byte boundaries', () => {
  const extents = [ext(0, 8 * K, 'data'), ext(8 * K, 100 * K + 100, 'hole'), ext(108 * K + 100, 20 * K, 'data')];
  assert.deepEqual(planRead(extents, 0, 128 * K, 64 * K), [
    { offset: 0, length: 8 * K, hole: false },
    { offset: 8 * K, length: 100 * K, hole: true },
    { offset: 108 * K, length: 20 * K, hole: false },
  ]);
  // A zero run shorter than minHole stays data.
  assert.deepEqual(planRead(extents, 0, 128 * K, 101 * K), [{ offset: 0, length: 128 * K, hole: false }]);
  // Adjacent hole and zero extents merge; request edges need no alignment.
  assert.deepEqual(planRead([ext(0, 10, 'hole'), ext(10, 100 * K, 'zero')], 3, 64 * K, 64 * K), [{ offset: 3, length: 64 * K, hole: true }]);
  // All data.
  assert.deepEqual(planRead([ext(0, 1 << 20, 'data')], 4096, 65536, 4096), [{ offset: 4096, length: 65536, hole: false }]);
});

test('planRead: extents that stop short, leave gaps or are nonsense leave the rest as data', () => {
  assert.deepEqual(planRead([ext(0, 64 * K, 'hole')], 0, 128 * K, 16 * K), [
    { offset: 0, length: 64 * K, hole: true },
    { offset: 64 * K, length: 64 * K, hole: false },
  ]);
  assert.deepEqual(planRead([ext(0, 16 * K, 'data'), ext(32 * K, 96 * K, 'hole')], 0, 128 * K, 16 * K), [{ offset: 0, length: 128 * K, hole: false }]);
  assert.deepEqual(planRead([{ offset: 0, length: -5, hole: true, zero: true }], 0, 128 * K, 16 * K), [{ offset: 0, length: 128 * K, hole: false }]);
  assert.deepEqual(planRead([{ offset: NaN, length: 5, hole: true, zero: true }], 0, 128 * K, 16 * K), [{ offset: 0, length: 128 * K, hole: false }]);
  assert.deepEqual(planRead([], 0, 128 * K, 16 * K), [{ offset: 0, length: 128 * K, hole: false }]);
  // Hole without zero (contents undefined) is read as data.
  assert.deepEqual(planRead([{ offset: 0, length: 128 * K, hole: true, zero: false }], 0, 128 * K, 16 * K), [{ offset: 0, length: 128 * K, hole: false }]);
});

test('toDescriptors: clipped, merged, capped, stopping at gaps', () => {
  const extents = [ext(0, 4096, 'data'), ext(4096, 4096, 'data'), ext(8192, 8192, 'hole'), ext(16384, 4096, 'zero')];
  assert.deepEqual(toDescriptors(extents, 100, 20000, 100), [
    { length: 8092, flags: 0 },
    { length: 8192, flags: 3 },
    { length: 3716, flags: 2 },
  ]);
  assert.deepEqual(toDescriptors(extents, 100, 20000, 1), [{ length: 8092, flags: 0 }]);
  assert.deepEqual(toDescriptors(extents, 9000, 10, 10), [{ length: 10, flags: 3 }]);
  assert.deepEqual(toDescriptors([ext(0, 10, 'data'), ext(20, 10, 'hole')], 0, 30, 10), [{ length: 10, flags: 0 }]);
  assert.deepEqual(toDescriptors([ext(50, 10, 'data')], 0, 30, 10), []);
});
