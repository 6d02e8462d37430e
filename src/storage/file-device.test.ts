import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileDevice, ZERO_MAP_BLOCK_SIZE } from './file-device.js';
import { isDisklessError } from '../lib/errors.js';
import { below, prng, randomBytes } from '../../test/helpers/prng.js';

const KiB = 1024;

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'diskless-file-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** An image with data, zero blocks and an unaligned tail: [data 8K][zeros 16K][data 4K][zeros 5000]. */
function sampleImage(): Buffer {
  const img = Buffer.alloc(28 * KiB + 5000);
  randomBytes(prng(1), 8 * KiB).copy(img, 0);
  randomBytes(prng(2), 4 * KiB).copy(img, 24 * KiB);
  img[24 * KiB] = 1; // surely non-zero
  return img;
}

async function oldMtime(path: string): Promise<bigint> {
  const old = new Date(Date.now() - 86400_000);
  await utimes(path, old, old);
  return (await stat(path, { bigint: true })).mtimeNs;
}

test('read-only: reads into the caller buffer, refuses writes with EPERM, never changes bytes or mtime', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'base.img');
  const img = sampleImage();
  await writeFile(path, img);
  const mtime = await oldMtime(path);
  const d = await FileDevice.open(path, { readOnly: true });
  assert.equal(d.size, img.length);
  assert.equal(d.capabilities.readOnly, true);
  assert.equal(d.capabilities.extents, false, 'no allocation map: extents only say data');
  assert.equal(d.capabilities.trim, false);
  assert.match(d.identity!, /^file:/);
  const into = Buffer.alloc(10 * KiB, 0xee);
  assert.equal(await d.read(7 * KiB, 2 * KiB, into), into);
  assert.deepEqual(into.subarray(0, 2 * KiB), img.subarray(7 * KiB, 9 * KiB));
  assert.deepEqual(into.subarray(2 * KiB), Buffer.alloc(8 * KiB, 0xee));
  assert.deepEqual(await d.read(0, img.length), img);
  for (const p of [d.write(0, Buffer.alloc(1)), d.zero(0, 10), d.trim(0, 10)]) {
    await assert.rejects(p, (e) => isDisklessError(e, 'STORAGE_READ_ONLY') && e.errno === 'EPERM');
  }
  await d.flush();
  await d.cache(0, img.length);
  assert.deepEqual(await d.extents(100, 1000), [{ offset: 100, length: 1000, hole: false, zero: false }]);
  await d.close();
  assert.deepEqual(await readFile(path), img);
  assert.equal((await stat(path, { bigint: true })).mtimeNs, mtime);
  await assert.rejects(d.read(0, 1), (e) => isDisklessError(e, 'STORAGE_CLOSED'));
});

test('read-write: write, zero and FUA reach the file; FAST_ZERO is refused with ENOTSUP', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'disk.img');
  const img = sampleImage();
  await writeFile(path, img);
  const d = await FileDevice.open(path, { readOnly: false });
  assert.equal(d.identity, undefined, 'a writable file has no fixed identity');
  const r = prng(5);
  for (let i = 0; i < 300; i++) {
    const off = below(r, img.length);
    const len = Math.min(img.length - off, 1 + below(r, 9000));
    if (r() < 0.7) {
      const data = randomBytes(r, len);
      await d.write(off, data, { fua: r() < 0.2 });
      data.copy(img, off);
    } else {
      await d.zero(off, len, { mayTrim: r() < 0.5 });
      img.fill(0, off, off + len);
    }
  }
  await assert.rejects(d.zero(0, 4096, { fast: true }), (e) => isDisklessError(e, 'STORAGE_FAST_ZERO_UNSUPPORTED') && e.errno === 'ENOTSUP');
  await d.flush();
  assert.deepEqual(await d.read(0, img.length), img);
  await d.close();
  assert.deepEqual(await readFile(path), img);
});

test('zero map: built once into the sidecar, reported as zero (not hole), reused while the image is unchanged', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'base.img');
  const sidecar = join(dir, 'base.img.zeromap');
  const img = sampleImage();
  await writeFile(path, img);
  const mtime = await oldMtime(path);
  const expected = [
    { offset: 0, length: 8 * KiB, hole: false, zero: false },
    { offset: 8 * KiB, length: 16 * KiB, hole: false, zero: true },
    { offset: 24 * KiB, length: 4 * KiB, hole: false, zero: false },
    { offset: 28 * KiB, length: 5000, hole: false, zero: true },
  ];
  const d = await FileDevice.open(path, { readOnly: true, allocationMap: sidecar });
  assert.equal(d.capabilities.extents, true);
  assert.deepEqual(await d.extents(0, d.size), expected);
  assert.deepEqual(await d.extents(10 * KiB, 20 * KiB), [
    { offset: 10 * KiB, length: 14 * KiB, hole: false, zero: true },
    { offset: 24 * KiB, length: 4 * KiB, hole: false, zero: false },
    { offset: 28 * KiB, length: 2 * KiB, hole: false, zero: true },
  ]);
  await d.close();
  const side1 = await stat(sidecar, { bigint: true });
  // Reopening loads the sidecar rather than rescanning (it is not rewritten).
  const d2 = await FileDevice.open(path, { readOnly: true, allocationMap: sidecar });
  assert.deepEqual(await d2.extents(0, d2.size), expected);
  await d2.close();
  assert.equal((await stat(sidecar, { bigint: true })).mtimeNs, side1.mtimeNs);
  assert.equal((await stat(path, { bigint: true })).mtimeNs, mtime, 'building the map does not touch the image');
  assert.deepEqual(await readFile(path), img);
});

test('zero map: a stale or damaged sidecar is rebuilt, never trusted', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'base.img');
  const sidecar = join(dir, 'map');
  const img = sampleImage();
  await writeFile(path, img);
  await (await FileDevice.open(path, { readOnly: true, allocationMap: sidecar })).close();
  // The image changes (a block that was zero now has data): the sidecar no longer matches.
  img[10 * KiB] = 7;
  await writeFile(path, img);
  await utimes(path, new Date(), new Date(Date.now() + 5000));
  const d = await FileDevice.open(path, { readOnly: true, allocationMap: sidecar });
  const ext = await d.extents(8 * KiB, 4 * KiB);
  assert.deepEqual(ext, [{ offset: 8 * KiB, length: 4 * KiB, hole: false, zero: false }]);
  await d.close();
  // A damaged sidecar (checksum) is rebuilt too.
  const bytes = await readFile(sidecar);
  bytes[bytes.length - 10]! ^= 0xff;
  await writeFile(sidecar, bytes);
  const d2 = await FileDevice.open(path, { readOnly: true, allocationMap: sidecar });
  assert.deepEqual(await d2.extents(8 * KiB, 4 * KiB), ext);
  await d2.close();
  await assert.rejects(FileDevice.open(path, { readOnly: false, allocationMap: sidecar }), (e) => isDisklessError(e, 'STORAGE_INVALID_ARGUMENT'));
});

test('zero map extents are truthful on random images (zero only where the bytes are zero)', async (t) => {
  const dir = await tempDir(t);
  const r = prng(77);
  for (let round = 0; round < 5; round++) {
    const size = 1 + below(r, 600 * KiB);
    const img = Buffer.alloc(size);
    for (let k = 0; k < 20; k++) {
      const off = below(r, size);
      randomBytes(r, Math.min(size - off, below(r, 3 * ZERO_MAP_BLOCK_SIZE))).copy(img, off);
    }
    const path = join(dir, `img${round}`);
    await writeFile(path, img);
    const d = await FileDevice.open(path, { readOnly: true, allocationMap: path + '.map' });
    for (let q = 0; q < 20; q++) {
      const off = below(r, size);
      const len = 1 + below(r, size - off);
      const ext = await d.extents(off, len);
      let pos = off;
      for (const e of ext) {
        assert.equal(e.offset, pos);
        if (e.zero) assert.ok(img.subarray(e.offset, e.offset + e.length).every((b) => b === 0));
        pos += e.length;
      }
      assert.equal(pos, off + len);
      // Precise at block granularity: every all-zero whole block inside the range is reported zero.
      for (let b = Math.ceil(off / ZERO_MAP_BLOCK_SIZE); (b + 1) * ZERO_MAP_BLOCK_SIZE <= off + len; b++) {
        const s = b * ZERO_MAP_BLOCK_SIZE;
        if (img.subarray(s, s + ZERO_MAP_BLOCK_SIZE).every((x) => x === 0)) {
          assert.ok(ext.some((e) => e.zero && e.offset <= s && e.offset + e.length >= s + ZERO_MAP_BLOCK_SIZE), `block ${b}`);
        }
      }
    }
    await d.close();
  }
});

test('missing files and bad ranges give storage codes', async (t) => {
  const dir = await tempDir(t);
  await assert.rejects(FileDevice.open(join(dir, 'nope'), { readOnly: true }), (e) => isDisklessError(e, 'STORAGE_FILE_NOT_FOUND'));
  const path = join(dir, 'x');
  await writeFile(path, Buffer.alloc(8192));
  const d = await FileDevice.open(path, { readOnly: false, identity: 'ignored for writable files' });
  t.after(() => d.close());
  for (const p of [d.read(8000, 193), d.write(8192, Buffer.alloc(1)), d.extents(-1, 1), d.zero(0, 8193)]) {
    await assert.rejects(p, (e) => isDisklessError(e, 'STORAGE_OUT_OF_RANGE') && e.errno === 'EINVAL');
  }
  await assert.rejects(d.read(0, 100, Buffer.alloc(10)), (e) => isDisklessError(e, 'STORAGE_INVALID_ARGUMENT'));
});

test('the identity of a read-only image follows the caller or the file', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'x');
  await writeFile(path, Buffer.alloc(4096, 1));
  const a = await FileDevice.open(path, { readOnly: true, identity: 'image-7@3' });
  assert.equal(a.identity, 'image-7@3');
  await a.close();
  const b = await FileDevice.open(path, { readOnly: true });
  await b.close();
  await writeFile(path, Buffer.alloc(4096, 2));
  await utimes(path, new Date(), new Date(Date.now() + 10_000));
  const c = await FileDevice.open(path, { readOnly: true });
  await c.close();
  assert.notEqual(b.identity, c.identity, 'a changed file has another identity');
});
