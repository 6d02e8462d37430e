import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CaptureService, type CaptureServiceOptions, type CapturedDisk, validateStart } from './capture-service.js';
import { CAPTURE_DEFAULTS } from './constants.js';
import { CaptureError, captureHttpStatus, ERROR_CODES, isCaptureError } from './errors.js';

const KiB = 1024;
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function setUp(t: { after(fn: () => void): void }, o: Partial<CaptureServiceOptions> = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'dl-capture-'));
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  const published: Array<{ path: string; disk: CapturedDisk; bytes: Buffer }> = [];
  let clock = 1_000_000;
  const make = (extra: Partial<CaptureServiceOptions> = {}) => new CaptureService({
    dataDir,
    publish: async (path, disk) => {
      published.push({ path, disk, bytes: readFileSync(path) });
      return { version: published.length };
    },
    limits: { minChunkSize: 1 * KiB, reserveBytes: 0 },
    freeSpace: async () => 1024 * 1024 * 1024,
    now: () => clock,
    ...o,
    ...extra,
  });
  return { dataDir, published, make, tick: (ms: number) => { clock += ms; } };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    assert.ok(isCaptureError(e), `expected a CaptureError, got ${String(e)}`);
    return e.code;
  }
  assert.fail('expected a refusal');
}

/** Chunks of a disk, the last one short. */
function chunksOf(disk: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < disk.length; off += size) out.push(disk.subarray(off, Math.min(disk.length, off + size)));
  return out;
}

test('chunks in any order, zeros without a body, then finish: publish sees the disk and the folder is removed', async (t) => {
  const { dataDir, published, make } = setUp(t);
  const svc = make();
  await svc.open();
  const disk = Buffer.concat([randomBytes(4 * KiB), Buffer.alloc(4 * KiB), randomBytes(4 * KiB), randomBytes(1000)]);
  const st = await svc.start({ name: 'pc-1', size: disk.length, chunkSize: 4 * KiB });
  assert.equal(st.chunks, 4);
  assert.equal(st.present, 0);
  const parts = chunksOf(disk, 4 * KiB);
  for (const i of [3, 0, 2]) await svc.putChunk(st.id, i, sha(parts[i]!), parts[i]!);
  await svc.putChunk(st.id, 1, sha(Buffer.alloc(4 * KiB)), null);
  assert.deepEqual(svc.chunkList(st.id).map((c) => c.index), [0, 1, 2, 3]);
  const done = await svc.finish(st.id, sha(disk));
  assert.equal(done.sha256, sha(disk));
  assert.deepEqual(done.published, { version: 1 });
  assert.equal(published.length, 1);
  assert.ok(published[0]!.bytes.equals(disk));
  assert.deepEqual(published[0]!.disk, { uploadId: st.id, name: 'pc-1', size: disk.length, sha256: sha(disk) });
  assert.deepEqual(readdirSync(join(dataDir, 'capture')), []);
  assert.equal(await codeOf(Promise.resolve().then(() => svc.status(st.id))), 'CAPTURE_NOT_FOUND');
  await svc.close();
});

test('refusals: wrong sha256, wrong length, zeros that are not, index out of range, finish incomplete or wrong', async (t) => {
  const { make } = setUp(t);
  const svc = make();
  await svc.open();
  const disk = randomBytes(10 * KiB);
  const st = await svc.start({ name: 'pc', size: disk.length, chunkSize: 4 * KiB });
  const [c0, c1, c2] = chunksOf(disk, 4 * KiB);
  assert.equal(await codeOf(svc.putChunk(st.id, 0, sha(c1!), c0!)), 'CAPTURE_CHECKSUM_MISMATCH');
  assert.equal(svc.status(st.id).present, 0, 'a refused chunk is not stored');
  assert.equal(await codeOf(svc.putChunk(st.id, 0, sha(c0!.subarray(1)), c0!.subarray(1))), 'CAPTURE_CHUNK_LENGTH');
  assert.equal(await codeOf(svc.putChunk(st.id, 0, sha(c0!), null)), 'CAPTURE_CHECKSUM_MISMATCH');
  assert.equal(await codeOf(svc.putChunk(st.id, 3, sha(c0!), c0!)), 'CAPTURE_BAD_REQUEST');
  assert.equal(await codeOf(svc.putChunk(st.id, -1, sha(c0!), c0!)), 'CAPTURE_BAD_REQUEST');
  assert.equal(await codeOf(svc.putChunk(st.id, 0, 'ABC', c0!)), 'CAPTURE_BAD_REQUEST');
  await svc.putChunk(st.id, 0, sha(c0!), c0!);
  await svc.putChunk(st.id, 2, sha(c2!), c2!);
  assert.equal(await codeOf(svc.finish(st.id, sha(disk))), 'CAPTURE_INCOMPLETE');
  await svc.putChunk(st.id, 1, sha(c1!), c1!);
  assert.equal(await codeOf(svc.finish(st.id, sha(Buffer.from('other')))), 'CAPTURE_WHOLE_MISMATCH');
  assert.equal(svc.status(st.id).present, 3, 'a whole mismatch keeps the upload');
  assert.equal((await svc.finish(st.id, sha(disk))).sha256, sha(disk));
  await svc.close();
});

test('start validates every field and the limits', async (t) => {
  const { make } = setUp(t);
  const svc = make({ limits: { maxSize: 1024 * KiB, maxChunkSize: 64 * KiB, minChunkSize: 1 * KiB, maxUploads: 2, reserveBytes: 0 } });
  await svc.open();
  const bad = async (req: unknown) => codeOf(svc.start(req as never));
  assert.equal(await bad(null), 'CAPTURE_BAD_REQUEST');
  assert.equal(await bad({ name: '../etc', size: 10, chunkSize: 1024 }), 'CAPTURE_BAD_REQUEST');
  assert.equal(await bad({ name: 'a', size: 1.5, chunkSize: 1024 }), 'CAPTURE_BAD_REQUEST');
  assert.equal(await bad({ name: 'a', size: '10', chunkSize: 1024 }), 'CAPTURE_BAD_REQUEST');
  assert.equal(await bad({ name: 'a', size: 10, chunkSize: 1024, sha256: 'xyz' }), 'CAPTURE_BAD_REQUEST');
  assert.equal(await bad({ name: 'a', size: 10, chunkSize: 1024, key: 'k' }), 'CAPTURE_BAD_REQUEST');
  assert.equal(await bad({ name: 'a', size: 2048 * KiB, chunkSize: 1024 }), 'CAPTURE_TOO_LARGE');
  assert.equal(await bad({ name: 'a', size: 10, chunkSize: 128 * KiB }), 'CAPTURE_CHUNK_TOO_LARGE');
  assert.equal(await bad({ name: 'a', size: 10, chunkSize: 512 }), 'CAPTURE_CHUNK_TOO_LARGE');
  await svc.start({ name: 'a', size: 10 * KiB, chunkSize: 1024 });
  await svc.start({ name: 'b', size: 10 * KiB, chunkSize: 1024 });
  assert.equal(await bad({ name: 'c', size: 10 * KiB, chunkSize: 1024 }), 'CAPTURE_TOO_MANY_UPLOADS');
  assert.throws(() => new CaptureService({ dataDir: '/nonexistent', publish: async () => null, limits: { maxUploads: 0 } }), CaptureError);
  await svc.close();
});

test('free space: open uploads\' remaining bytes are reserved', async (t) => {
  let free = 100 * KiB;
  const { make } = setUp(t, { freeSpace: async () => free });
  const svc = make();
  await svc.open();
  await svc.start({ name: 'a', size: 60 * KiB, chunkSize: 4 * KiB });
  // 100 KiB free, 60 KiB owed to the open upload: 40 KiB left.
  assert.equal(await codeOf(svc.start({ name: 'b', size: 41 * KiB, chunkSize: 4 * KiB })), 'CAPTURE_NO_SPACE');
  await svc.start({ name: 'b', size: 40 * KiB, chunkSize: 4 * KiB });
  free = 0;
  assert.equal(await codeOf(svc.start({ name: 'c', size: 1, chunkSize: 4 * KiB })), 'CAPTURE_NO_SPACE');
  await svc.close();
});

test('a resume key returns the open upload; restart replaces it; a different shape conflicts', async (t) => {
  const { make } = setUp(t);
  const svc = make();
  await svc.open();
  const req = { name: 'pc', size: 8 * KiB, chunkSize: 4 * KiB, key: 'machine-1:disk' };
  const a = await svc.start(req);
  const c0 = randomBytes(4 * KiB);
  await svc.putChunk(a.id, 0, sha(c0), c0);
  const again = await svc.start(req);
  assert.equal(again.id, a.id);
  assert.equal(again.resumed, true);
  assert.equal(again.present, 1);
  assert.equal(await codeOf(svc.start({ ...req, size: 12 * KiB })), 'CAPTURE_CONFLICT');
  const fresh = await svc.start({ ...req, restart: true });
  assert.notEqual(fresh.id, a.id);
  assert.equal(fresh.present, 0);
  assert.equal(await codeOf(Promise.resolve().then(() => svc.status(a.id))), 'CAPTURE_NOT_FOUND');
  await svc.close();
});

test('uploads survive a server restart; a torn journal line and a half-made folder are handled', async (t) => {
  const { dataDir, make } = setUp(t);
  const svc = make();
  await svc.open();
  const disk = randomBytes(12 * KiB);
  const parts = chunksOf(disk, 4 * KiB);
  const st = await svc.start({ name: 'pc', size: disk.length, chunkSize: 4 * KiB, key: 'resume-key-1' });
  await svc.putChunk(st.id, 0, sha(parts[0]!), parts[0]!);
  await svc.putChunk(st.id, 2, sha(parts[2]!), parts[2]!);
  await svc.close();
  // A crash during an append leaves a torn line; a crash during start leaves a folder without meta.json.
  appendFileSync(join(dataDir, 'capture', st.id, 'chunks.log'), '1 0123');
  mkdirSync(join(dataDir, 'capture', 'AAAAAAAAAAAAAAAAAAAAAA'));
  writeFileSync(join(dataDir, 'capture', 'AAAAAAAAAAAAAAAAAAAAAA', 'disk.raw'), 'x');

  const svc2 = make();
  await svc2.open();
  assert.deepEqual(svc2.openUploads(), [st.id]);
  assert.ok(!existsSync(join(dataDir, 'capture', 'AAAAAAAAAAAAAAAAAAAAAA')), 'the half-made folder is removed');
  assert.deepEqual(svc2.chunkList(st.id).map((c) => c.index), [0, 2]);
  assert.equal((await svc2.start({ name: 'pc', size: disk.length, chunkSize: 4 * KiB, key: 'resume-key-1' })).id, st.id);
  await svc2.putChunk(st.id, 1, sha(parts[1]!), parts[1]!);
  assert.equal((await svc2.finish(st.id, sha(disk))).sha256, sha(disk));
  await svc2.close();
});

test('finish re-reads the disk: a stored chunk whose bytes changed is dropped so it is sent again', async (t) => {
  const { dataDir, make, published } = setUp(t);
  const svc = make();
  await svc.open();
  const disk = randomBytes(8 * KiB);
  const parts = chunksOf(disk, 4 * KiB);
  const st = await svc.start({ name: 'pc', size: disk.length, chunkSize: 4 * KiB });
  for (const [i, p] of parts.entries()) await svc.putChunk(st.id, i, sha(p), p);
  // Damage the stored disk behind the service's back (a storage fault).
  const raw = join(dataDir, 'capture', st.id, 'disk.raw');
  const bytes = readFileSync(raw);
  bytes[5000] = bytes[5000]! ^ 0xff;
  writeFileSync(raw, bytes);
  assert.equal(await codeOf(svc.finish(st.id, sha(disk))), 'CAPTURE_WHOLE_MISMATCH');
  assert.deepEqual(svc.chunkList(st.id).map((c) => c.index), [0], 'chunk 1 was dropped');
  assert.equal(published.length, 0);
  await svc.putChunk(st.id, 1, sha(parts[1]!), parts[1]!);
  assert.equal((await svc.finish(st.id, sha(disk))).sha256, sha(disk));
  assert.ok(published[0]!.bytes.equals(disk));
  // The drop survives a restart too (journalled as "1 -").
  await svc.close();
});

test('a failing publish keeps the upload for a retry; one that took the file discards it', async (t) => {
  let mode: 'fail-keep' | 'fail-took' | 'ok' = 'fail-keep';
  const { dataDir, make } = setUp(t);
  const svc = make({
    publish: async (path) => {
      if (mode === 'fail-keep') throw new Error('catalogue is busy');
      if (mode === 'fail-took') { rmSync(path); throw new Error('moved then failed'); }
      return 'ok';
    },
  });
  await svc.open();
  const disk = randomBytes(4 * KiB);
  const st = await svc.start({ name: 'pc', size: disk.length, chunkSize: 4 * KiB });
  await svc.putChunk(st.id, 0, sha(disk), disk);
  assert.equal(await codeOf(svc.finish(st.id, sha(disk))), 'CAPTURE_PUBLISH_FAILED');
  assert.equal(svc.status(st.id).present, 1);
  mode = 'ok';
  assert.equal((await svc.finish(st.id, sha(disk))).published, 'ok');

  mode = 'fail-took';
  const st2 = await svc.start({ name: 'pc2', size: disk.length, chunkSize: 4 * KiB });
  await svc.putChunk(st2.id, 0, sha(disk), disk);
  assert.equal(await codeOf(svc.finish(st2.id, sha(disk))), 'CAPTURE_PUBLISH_FAILED');
  assert.equal(await codeOf(Promise.resolve().then(() => svc.status(st2.id))), 'CAPTURE_NOT_FOUND');
  assert.deepEqual(readdirSync(join(dataDir, 'capture')), []);
  await svc.close();
});

test('idle uploads are swept with their files; active ones stay', async (t) => {
  const { dataDir, make, tick } = setUp(t);
  const svc = make({ limits: { ...CAPTURE_DEFAULTS, minChunkSize: 1024, reserveBytes: 0, idleTimeoutMs: 60_000 } });
  await svc.open();
  const a = await svc.start({ name: 'a', size: 4 * KiB, chunkSize: 4 * KiB });
  const b = await svc.start({ name: 'b', size: 4 * KiB, chunkSize: 4 * KiB });
  tick(50_000);
  svc.status(b.id);
  tick(20_000);
  assert.deepEqual(await svc.sweep(), [a.id]);
  assert.deepEqual(svc.openUploads(), [b.id]);
  assert.deepEqual(readdirSync(join(dataDir, 'capture')), [b.id]);
  await svc.close();
});

test('chunk slots bound the bodies in flight', () => {
  const svc = new CaptureService({ dataDir: '/nonexistent', publish: async () => null, limits: { maxInflightChunks: 2 } });
  assert.equal(svc.tryAcquireChunkSlot(), true);
  assert.equal(svc.tryAcquireChunkSlot(), true);
  assert.equal(svc.tryAcquireChunkSlot(), false);
  svc.releaseChunkSlot();
  assert.equal(svc.tryAcquireChunkSlot(), true);
});

test('every error code maps to a 4xx or 5xx status and has a meaning', () => {
  for (const [code, meaning] of Object.entries(ERROR_CODES)) {
    const status = captureHttpStatus(new CaptureError(code as keyof typeof ERROR_CODES, 'x'));
    assert.ok(status >= 400 && status < 600, code);
    assert.ok(meaning.includes(`(${status})`), `${code}'s meaning names its status ${status}`);
  }
  assert.equal(captureHttpStatus(new Error('boom')), 500);
  assert.equal(captureHttpStatus(Object.assign(new Error('too big'), { statusCode: 413 })), 413);
  assert.throws(() => validateStart({ name: 'ok', size: 1, chunkSize: 1, restart: 'yes' }, CAPTURE_DEFAULTS), /restart/);
});
