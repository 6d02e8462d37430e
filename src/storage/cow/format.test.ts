import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeHeader, encodeHeader, HEADER_SIZE, isValidClusterSize, MAX_IDENTITY_BYTES, newHeader, storedIdentity } from './format.js';
import { isDisklessError } from '../../lib/errors.js';

test('a header encodes and decodes to itself', () => {
  const h = newHeader(10 * 1024 * 1024 * 1024 + 512, 65536, 'image:debian-12@7', 1_700_000_000_000);
  assert.equal(h.clusters, 163841);
  assert.equal(h.mapLength, 11 * 4096); // 163841 clusters / 16384 per page, rounded up
  const buf = encodeHeader(h);
  assert.equal(buf.length, HEADER_SIZE);
  assert.equal(buf.toString('latin1', 0, 8), 'DLCOWMAP');
  assert.deepEqual(decodeHeader(buf, 'x'), h);
});

test('damage is refused: magic, checksum, version, flags, sizes', () => {
  const good = encodeHeader(newHeader(1 << 20, 4096, 'b', 0));
  const cases: [string, (b: Buffer) => void, string][] = [
    ['magic', (b) => { b[0] = 0x58; }, 'STORAGE_OVERLAY_CORRUPT'],
    ['checksum', (b) => { b[70]! ^= 1; }, 'STORAGE_OVERLAY_CORRUPT'],
    ['version', (b) => { b.writeUInt32LE(9, 8); }, 'STORAGE_OVERLAY_VERSION'],
    ['short', () => undefined, 'STORAGE_OVERLAY_CORRUPT'],
  ];
  for (const [name, damage, code] of cases) {
    const b = name === 'short' ? Buffer.from(good.subarray(0, 100)) : Buffer.from(good);
    damage(b);
    assert.throws(() => decodeHeader(b, name), (e) => isDisklessError(e, code), name);
  }
});

test('cluster sizes: powers of two from 4 KiB to 1 MiB', () => {
  assert.deepEqual([4096, 16384, 1 << 20].map(isValidClusterSize), [true, true, true]);
  assert.deepEqual([2048, 12288, 2 << 20, 4096.5].map(isValidClusterSize), [false, false, false, false]);
});

test('long identities are stored as a digest', () => {
  assert.equal(storedIdentity(undefined), '');
  assert.equal(storedIdentity('short'), 'short');
  const long = 'x'.repeat(MAX_IDENTITY_BYTES + 1);
  assert.match(storedIdentity(long), /^sha256:[0-9a-f]{64}$/);
  assert.equal(storedIdentity(long), storedIdentity(long));
  assert.doesNotThrow(() => encodeHeader(newHeader(4096, 4096, long, 0)));
});
