import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { mkdtemp, open, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32, readFully, writeFileAtomic, writevFully } from './file-io.js';

test('crc32 matches zlib', () => {
  for (const s of ['', 'a', '123456789', 'x'.repeat(10000)]) assert.equal(crc32(Buffer.from(s)), zlibCrc32(Buffer.from(s)));
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
});

test('readFully reads zeros past the end; writevFully writes pieces back to back; writeFileAtomic leaves no temporary', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'diskless-io-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'f');
  const fh = await open(path, 'w+');
  await writevFully(fh, [Buffer.from('abc'), Buffer.from('def'), Buffer.alloc(0), Buffer.from('g')], 2);
  const buf = Buffer.alloc(12, 0xff);
  await readFully(fh, buf, 1, 11, 0);
  await fh.close();
  assert.deepEqual(buf, Buffer.from([0xff, 0, 0, ...Buffer.from('abcdefg'), 0, 0]));
  await writeFileAtomic(join(dir, 'meta'), Buffer.from('one'));
  await writeFileAtomic(join(dir, 'meta'), Buffer.from('two'));
  assert.equal(await readFile(join(dir, 'meta'), 'utf8'), 'two');
  assert.deepEqual((await readdir(dir)).sort(), ['f', 'meta']);
});
