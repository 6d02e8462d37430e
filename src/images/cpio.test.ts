/**
 * The incremental cpio decoder: archives written by GNU cpio (-H newc) from a
 * real tree, our writer checked by GNU cpio, every fixture split at every
 * offset and fed byte by byte, concatenated archives, foreign data after a
 * trailer, and damaged archives.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requirePeers } from '../../test/helpers/peers.js';
import { isDisklessError } from '../lib/errors.js';
import { CpioDecoder, writeCpio, type CpioEntry } from './cpio.js';
import { run } from './exec.js';
import { materialize } from './test-support.js';

function decode(chunks: Buffer[], capture?: (n: string) => boolean): { entries: CpioEntry[]; decoder: CpioDecoder } {
  const entries: CpioEntry[] = [];
  const decoder = new CpioDecoder({ onEntry: (e) => entries.push(e), capture });
  for (const c of chunks) decoder.push(c);
  return { entries, decoder };
}

const SAMPLE = writeCpio([
  { name: '.' },
  { name: 'bin', type: 'symlink', data: 'usr/bin' },
  { name: 'usr' },
  { name: 'usr/bin' },
  { name: 'usr/bin/busybox', data: Buffer.alloc(1001, 0x42), mode: 0o100755 },
  { name: 'conf/modules', data: 'nbd\next4\n' },
  { name: 'empty', data: '' },
  { name: 'odd-name-length-x', data: 'abc' },
]);

const summary = (es: CpioEntry[]): unknown[] => es.map((e) => [e.name, e.type, e.size, e.linkTarget ?? null, e.content?.toString('utf8') ?? null]);

test('decodes our newc writer: names, types, sizes, symlink targets, captured content', () => {
  const { entries, decoder } = decode([SAMPLE], (n) => n === 'conf/modules');
  decoder.end();
  assert.deepEqual(summary(entries), [
    ['', 'directory', 0, null, null],
    ['bin', 'symlink', 7, 'usr/bin', null],
    ['usr', 'directory', 0, null, null],
    ['usr/bin', 'directory', 0, null, null],
    ['usr/bin/busybox', 'file', 1001, null, null],
    ['conf/modules', 'file', 9, null, 'nbd\next4\n'],
    ['empty', 'file', 0, null, null],
    ['odd-name-length-x', 'file', 3, null, null],
  ]);
  assert.equal(decoder.archives, 1);
  assert.equal(decoder.complete, true);
});

test('split at every offset and fed byte by byte, the result is the same', () => {
  const whole = summary(decode([SAMPLE]).entries);
  for (let i = 0; i <= SAMPLE.length; i++) {
    const { entries, decoder } = decode([SAMPLE.subarray(0, i), SAMPLE.subarray(i)]);
    decoder.end();
    assert.deepEqual(summary(entries), whole, `split at ${i}`);
  }
  const bytes = [...SAMPLE].map((b) => Buffer.from([b]));
  assert.deepEqual(summary(decode(bytes).entries), whole);
});

test('concatenated archives with zero padding; foreign data after a trailer is located exactly', () => {
  const a = writeCpio([{ name: 'kernel/x86/microcode/AuthenticAMD.bin', data: 'ucode' }]);
  const b = writeCpio([{ name: 'init', data: '#!/bin/sh\n' }]);
  const pad = Buffer.alloc(512 - (a.length % 512));
  const foreign = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]);
  const stream = Buffer.concat([a, pad, b, Buffer.alloc(8), foreign]);
  for (let i = 0; i <= stream.length; i += 7) {
    const { entries, decoder } = decode([stream.subarray(0, i), stream.subarray(i)]);
    assert.deepEqual(entries.map((e) => e.name), ['kernel/x86/microcode/AuthenticAMD.bin', 'init'], `split at ${i}`);
    assert.equal(decoder.archives, 2);
    assert.equal(decoder.stopped, true);
    assert.equal(decoder.foreignOffset, stream.length - foreign.length);
  }
  // Foreign data at the very start (an initramfs that is only compressed).
  const { decoder } = decode([foreign]);
  assert.equal(decoder.foreignOffset, 0);
  assert.equal(decoder.entries, 0);
});

function assertCorrupt(chunks: Buffer[], re: RegExp): void {
  assert.throws(
    () => {
      const { decoder } = decode(chunks);
      decoder.end();
    },
    (e: unknown) => isDisklessError(e, 'IMAGES_INITRAMFS_CORRUPT') && re.test((e as Error).message),
  );
}

test('damaged archives are IMAGES_INITRAMFS_CORRUPT', () => {
  assertCorrupt([SAMPLE.subarray(0, SAMPLE.length - 130)], /ends inside an entry/);
  const badHex = Buffer.from(SAMPLE);
  badHex.write('zz', 6 + 6 * 8, 'latin1'); // filesize of the first entry
  assertCorrupt([badHex], /not hexadecimal/);
  const noNul = Buffer.from(SAMPLE);
  noNul[110 + 1] = 0x41; // the first name is "." + NUL: overwrite the NUL
  assertCorrupt([noNul], /not NUL-terminated/);
  // The second entry, "bin": 110 + 4 name bytes, so two bytes of padding follow the name.
  const second = SAMPLE.indexOf('070701', 1, 'latin1');
  const badPad = Buffer.from(SAMPLE);
  badPad[second + 114] = 1;
  assertCorrupt([badPad], /non-zero padding/);
  // An entry whose magic is wrong (inside an archive, not after a trailer).
  const badMagic = Buffer.from(SAMPLE);
  badMagic.write('070707', second, 'latin1');
  assertCorrupt([badMagic], /bad magic "070707"/);
  assertCorrupt([Buffer.alloc(64)], /no cpio archive/);
  const huge = Buffer.from(SAMPLE);
  huge.write('00002000', 6 + 11 * 8, 'latin1'); // namesize 8192 > PATH_MAX
  assertCorrupt([huge], /name size 8192/);
});

test('GNU cpio: its newc archive decodes to the same tree; it lists our writer\'s archive', async (t) => {
  if (!requirePeers(t, 'cpio')) return;
  const dir = await mkdtemp(join(tmpdir(), 'diskless-cpio-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await materialize(join(dir, 'tree'), {
    'usr/sbin/nbd-client': Buffer.alloc(4097, 1),
    'scripts/local-top/nbd': '#!/bin/sh\n',
    sbin: { symlink: 'usr/sbin' },
    'lib/modules/6.1.0-1-amd64/kernel/drivers/block/nbd.ko': Buffer.alloc(33, 2),
    'a/very/deep/dir': { dir: true },
  });
  const names = (await run('sh', ['-c', 'cd "$1" && find . | sort', 'sh', join(dir, 'tree')])).stdout.toString();
  const archive = (await run('sh', ['-c', 'cd "$1" && find . | sort | cpio -o -H newc --quiet', 'sh', join(dir, 'tree')])).stdout;
  const { entries, decoder } = decode([archive]);
  decoder.end();
  const expected = names.trim().split('\n').map((n) => n.replace(/^\.\/?/, ''));
  assert.deepEqual(entries.map((e) => e.name), expected);
  assert.equal(entries.find((e) => e.name === 'sbin')?.linkTarget, 'usr/sbin');
  assert.equal(entries.find((e) => e.name === 'usr/sbin/nbd-client')?.size, 4097);

  const listed = (await run('cpio', ['-t', '--quiet'], { stdin: SAMPLE })).stdout.toString().trim().split('\n');
  assert.deepEqual(listed, ['.', 'bin', 'usr', 'usr/bin', 'usr/bin/busybox', 'conf/modules', 'empty', 'odd-name-length-x']);
});
