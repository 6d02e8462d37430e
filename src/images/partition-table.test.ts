/**
 * The partition table reader against tables written by sfdisk (util-linux)
 * at test time, compared with sfdisk's own JSON dump; then the same tables
 * damaged byte by byte. CRCs in the hand-made tables are computed with
 * node:zlib's crc32, an implementation independent of ours.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as zlib from 'node:zlib';
import { requirePeers } from '../../test/helpers/peers.js';
import { isDisklessError } from '../lib/errors.js';
import { crc32 } from './crc32.js';
import { run } from './exec.js';
import { bufferSource, formatGuid, readPartitionTable, type PartitionTable } from './partition-table.js';

const MiB = 1024 * 1024;
const zcrc = (b: Buffer): number => (zlib as unknown as { crc32(b: Buffer): number }).crc32(b);

async function sfdiskDisk(t: { after(fn: () => Promise<void>): void }, size: number, script: string): Promise<{ buf: Buffer; json: SfdiskJson }> {
  const dir = await mkdtemp(join(tmpdir(), 'diskless-pt-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'disk.raw');
  await run('truncate', ['-s', String(size), path]);
  await run('sfdisk', ['-q', path], { stdin: script });
  const json = JSON.parse((await run('sfdisk', ['-J', path])).stdout.toString('utf8')) as { partitiontable: SfdiskJson };
  return { buf: await readFile(path), json: json.partitiontable };
}

interface SfdiskJson {
  label: string;
  id: string;
  sectorsize?: number;
  partitions: { node: string; start: number; size: number; type: string; uuid?: string; name?: string; bootable?: boolean }[];
}

const GPT_SCRIPT = [
  'label: gpt',
  'start=2048, size=8192, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system"',
  'start=10240, size=4096, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, name="swap"',
  'start=14336, size=16384, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"',
  'start=30720, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="data ü"',
  '',
].join('\n');

function assertMatchesSfdisk(pt: PartitionTable, json: SfdiskJson): void {
  assert.equal(pt.partitions.length, json.partitions.length);
  for (const [i, p] of pt.partitions.entries()) {
    const s = json.partitions[i]!;
    assert.equal(p.number, Number(/(\d+)$/.exec(s.node)![1]), s.node);
    assert.equal(p.firstLba, s.start);
    assert.equal(p.lastLba - p.firstLba + 1, s.size);
    assert.equal(p.offset, s.start * 512);
    assert.equal(p.size, s.size * 512);
    if (pt.scheme === 'gpt') {
      assert.equal(p.typeGuid, s.type.toUpperCase());
      assert.equal(p.guid, s.uuid!.toUpperCase());
      assert.equal(p.name, s.name ?? '');
    } else {
      assert.equal(p.mbrType, parseInt(s.type, 16));
      assert.equal(p.bootable, s.bootable === true);
    }
  }
}

test('GPT written by sfdisk: partitions, types, names, GUIDs and both copies valid', async (t) => {
  if (!requirePeers(t, 'sfdisk')) return;
  const { buf, json } = await sfdiskDisk(t, 32 * MiB, GPT_SCRIPT);
  const pt = readPartitionTable(bufferSource(buf));
  assert.equal(pt.scheme, 'gpt');
  assert.equal(pt.sectorSize, 512);
  assert.equal(pt.diskId, json.id.toUpperCase());
  assertMatchesSfdisk(pt, json);
  assert.deepEqual(pt.partitions.map((p) => p.kind), ['efi-system', 'linux-swap', 'linux-root-x86-64', 'linux-filesystem']);
  assert.deepEqual(pt.gpt && { p: pt.gpt.primary, b: pt.gpt.backup, u: pt.gpt.used, pm: pt.gpt.protectiveMbr, h: pt.gpt.hybridMbr }, {
    p: 'valid',
    b: 'valid',
    u: 'primary',
    pm: true,
    h: false,
  });
  assert.deepEqual(pt.warnings, []);
});

test('MBR with an extended partition: primaries 1-2, logicals from 5, boot flag', async (t) => {
  if (!requirePeers(t, 'sfdisk')) return;
  const script = 'label: dos\nstart=2048, size=4096, type=83, bootable\nstart=6144, type=5\nstart=8192, size=2048, type=82\nstart=12288, size=4096, type=83\nstart=18432, type=8e\n';
  const { buf, json } = await sfdiskDisk(t, 16 * MiB, script);
  const pt = readPartitionTable(bufferSource(buf));
  assert.equal(pt.scheme, 'mbr');
  assert.equal(`0x${pt.diskId}`, json.id);
  assertMatchesSfdisk(pt, json);
  assert.deepEqual(pt.partitions.map((p) => [p.number, p.kind, p.logical ?? false]), [
    [1, 'linux-filesystem', false],
    [2, 'extended', false],
    [5, 'linux-swap', true],
    [6, 'linux-filesystem', true],
    [7, 'linux-lvm', true],
  ]);
});

// --- damage -------------------------------------------------------------------------

async function gptDisk(t: { after(fn: () => Promise<void>): void }): Promise<Buffer> {
  return (await sfdiskDisk(t, 32 * MiB, GPT_SCRIPT)).buf;
}
const lastLbaOffset = (buf: Buffer): number => buf.length - 512;

function assertCode(fn: () => unknown, code: string, re?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isDisklessError(e, code), `expected ${code}, got ${(e as Error).message} (${(e as { code?: string }).code})`);
    if (re) assert.match((e as Error).message, re);
    return true;
  });
}

test('primary header CRC damaged: the backup is used, with a warning', async (t) => {
  if (!requirePeers(t, 'sfdisk')) return;
  const buf = await gptDisk(t);
  const good = readPartitionTable(bufferSource(buf));
  buf[512 + 60] ^= 0xff; // a byte of the disk GUID, inside the CRC'd header
  const pt = readPartitionTable(bufferSource(buf));
  assert.equal(pt.gpt?.used, 'backup');
  assert.equal(pt.gpt?.primary, 'damaged');
  assert.equal(pt.gpt?.backup, 'valid');
  assert.deepEqual(pt.partitions, good.partitions);
  assert.match(pt.warnings.join('\n'), /primary GPT damaged \(HeaderCRC32 mismatch/);
});

test('primary entry array damaged: its CRC fails and the backup array is used', async (t) => {
  if (!requirePeers(t, 'sfdisk')) return;
  const buf = await gptDisk(t);
  const good = readPartitionTable(bufferSource(buf));
  buf[1024 + 128 + 40] ^= 0x01; // partition 2's EndingLBA in the primary array
  const pt = readPartitionTable(bufferSource(buf));
  assert.equal(pt.gpt?.used, 'backup');
  assert.deepEqual(pt.partitions, good.partitions);
  assert.match(pt.warnings.join('\n'), /PartitionEntryArrayCRC32 mismatch/);
});

test('backup damaged only: the primary is used and the backup reported damaged', async (t) => {
  if (!requirePeers(t, 'sfdisk')) return;
  const buf = await gptDisk(t);
  buf[lastLbaOffset(buf) + 70] ^= 0xff;
  const pt = readPartitionTable(bufferSource(buf));
  assert.equal(pt.gpt?.used, 'primary');
  assert.equal(pt.gpt?.backup, 'damaged');
  assert.match(pt.warnings.join('\n'), /backup GPT at LBA \d+ is damaged/);
});

test('both headers damaged: IMAGES_GPT_HEADER_CORRUPT naming both', async (t) => {
  if (!requirePeers(t, 'sfdisk')) return;
  const buf = await gptDisk(t);
  buf.write('EFI FART', 512, 'latin1');
  buf[lastLbaOffset(buf) + 20] ^= 0xff; // the backup's HeaderCRC32 itself
  assertCode(() => readPartitionTable(bufferSource(buf)), 'IMAGES_GPT_HEADER_CORRUPT', /primary: no "EFI PART" signature.*backup: HeaderCRC32 mismatch/s);
});

test('both entry arrays damaged: IMAGES_GPT_ENTRIES_CORRUPT', async (t) => {
  if (!requirePeers(t, 'sfdisk')) return;
  const buf = await gptDisk(t);
  const backupEntries = Number(buf.readBigUInt64LE(lastLbaOffset(buf) + 72)) * 512;
  buf[1024 + 5] ^= 0xff;
  buf[backupEntries + 5] ^= 0xff;
  assertCode(() => readPartitionTable(bufferSource(buf)), 'IMAGES_GPT_ENTRIES_CORRUPT', /PartitionEntryArrayCRC32 mismatch/);
});

/** Rewrites the primary header's and array's CRCs after an edit (with zlib's crc32). */
function resealPrimary(buf: Buffer): void {
  const count = buf.readUInt32LE(512 + 80);
  const size = buf.readUInt32LE(512 + 84);
  buf.writeUInt32LE(zcrc(buf.subarray(1024, 1024 + count * size)), 512 + 88);
  buf.writeUInt32LE(0, 512 + 16);
  buf.writeUInt32LE(zcrc(buf.subarray(512, 512 + buf.readUInt32LE(512 + 12))), 512 + 16);
}

test('CRC-valid entries that overlap or leave the usable range are damaged all the same', async (t) => {
  if (!requirePeers(t, 'sfdisk')) return;
  const base = await gptDisk(t);
  const overlap = Buffer.from(base);
  overlap.writeBigUInt64LE(12000n, 1024 + 128 * 2 + 32); // partition 3 now starts inside partition 2
  resealPrimary(overlap);
  // The backup still holds the good table, but the primary is CRC-valid: it is the one read.
  assertCode(() => readPartitionTable(bufferSource(overlap)), 'IMAGES_GPT_ENTRIES_CORRUPT', /partitions 2 .* and 3 .* overlap/);
  const outside = Buffer.from(base);
  outside.writeBigUInt64LE(BigInt(outside.length / 512 + 10), 1024 + 128 * 3 + 40);
  resealPrimary(outside);
  assertCode(() => readPartitionTable(bufferSource(outside)), 'IMAGES_GPT_ENTRIES_CORRUPT', /outside the usable range/);
});

test('a disk cut short (backup gone, usable range past the end) is refused; a grown disk is read with a warning', async (t) => {
  if (!requirePeers(t, 'sfdisk')) return;
  const buf = await gptDisk(t);
  assertCode(() => readPartitionTable(bufferSource(buf.subarray(0, buf.length - MiB))), 'IMAGES_GPT_HEADER_CORRUPT', /usable range/);
  const grown = Buffer.concat([buf, Buffer.alloc(4 * MiB)]);
  const pt = readPartitionTable(bufferSource(grown));
  assert.equal(pt.gpt?.used, 'primary');
  assert.equal(pt.gpt?.backup, 'valid');
  assert.match(pt.warnings.join('\n'), /not at the last LBA .*grown/);
});

test('hybrid MBR and a missing protective MBR are read as GPT with warnings', async (t) => {
  if (!requirePeers(t, 'sfdisk')) return;
  const buf = await gptDisk(t);
  const hybrid = Buffer.from(buf);
  // A second MBR record (slot 2) describing partition 1 as FAT32.
  hybrid[446 + 16 + 4] = 0x0c;
  hybrid.writeUInt32LE(2048, 446 + 16 + 8);
  hybrid.writeUInt32LE(8192, 446 + 16 + 12);
  const h = readPartitionTable(bufferSource(hybrid));
  assert.equal(h.gpt?.hybridMbr, true);
  assert.match(h.warnings.join('\n'), /hybrid MBR/);
  const bare = Buffer.from(buf);
  bare.fill(0, 0, 512);
  const b = readPartitionTable(bufferSource(bare));
  assert.equal(b.scheme, 'gpt');
  assert.equal(b.gpt?.protectiveMbr, false);
  assert.match(b.warnings.join('\n'), /no protective MBR.*`gpt` option/);
});

test('a valid MBR wins over a stale GPT signature, as in Linux', async (t) => {
  if (!requirePeers(t, 'sfdisk')) return;
  const { buf } = await sfdiskDisk(t, 16 * MiB, 'label: dos\nstart=2048, type=83\n');
  buf.write('EFI PART', 512, 'latin1');
  const pt = readPartitionTable(bufferSource(buf));
  assert.equal(pt.scheme, 'mbr');
});

test('damaged MBRs: bad boot flag, partition past the end, overlap, EBR loop', async (t) => {
  if (!requirePeers(t, 'sfdisk')) return;
  const { buf } = await sfdiskDisk(t, 16 * MiB, 'label: dos\nstart=2048, size=4096, type=83\nstart=6144, type=5\nstart=8192, size=2048, type=83\nstart=12288, size=2048, type=83\n');
  assert.equal(readPartitionTable(bufferSource(buf)).partitions.length, 4);

  const flag = Buffer.from(buf);
  flag[446] = 0x12;
  assertCode(() => readPartitionTable(bufferSource(flag)), 'IMAGES_MBR_CORRUPT', /boot indicator 0x12/);

  const past = Buffer.from(buf);
  past.writeUInt32LE(40000, 446 + 12);
  assertCode(() => readPartitionTable(bufferSource(past)), 'IMAGES_MBR_CORRUPT', /outside the disk/);

  const overlap = Buffer.from(buf);
  overlap.writeUInt32LE(5000, 446 + 12); // partition 1 runs into the extended one
  assertCode(() => readPartitionTable(bufferSource(overlap)), 'IMAGES_MBR_CORRUPT', /overlap/);

  const loop = Buffer.from(buf);
  // Make the second EBR's link entry point at the second EBR itself.
  const ext = 6144;
  const firstEbr = ext * 512;
  const secondRel = loop.readUInt32LE(firstEbr + 446 + 16 + 8);
  const secondEbr = (ext + secondRel) * 512;
  loop.writeUInt32LE(secondRel, secondEbr + 446 + 16 + 8); // links to itself
  loop[secondEbr + 446 + 16 + 4] = 0x05;
  loop.writeUInt32LE(2048, secondEbr + 446 + 16 + 12);
  assertCode(() => readPartitionTable(bufferSource(loop)), 'IMAGES_MBR_CORRUPT', /loops back/);
});

test('no table: zeros are an unknown partition table; a bare ext4 says so', async (t) => {
  assertCode(() => readPartitionTable(bufferSource(Buffer.alloc(MiB))), 'IMAGES_UNKNOWN_PARTITION_TABLE', /unknown partition table: no MBR signature/);
  assertCode(() => readPartitionTable(bufferSource(Buffer.alloc(100))), 'IMAGES_UNKNOWN_PARTITION_TABLE', /too small/);
  if (!requirePeers(t, 'mkfs.ext4')) return;
  const dir = await mkdtemp(join(tmpdir(), 'diskless-pt-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const p = join(dir, 'fs.raw');
  await run('truncate', ['-s', String(8 * MiB), p]);
  await run('mkfs.ext4', ['-q', '-F', p]);
  const fsBytes = await readFile(p);
  assertCode(() => readPartitionTable(bufferSource(fsBytes)), 'IMAGES_UNKNOWN_PARTITION_TABLE', /bare ext file system/);
});

// --- GPT with 4096-byte sectors, built here (sfdisk cannot make one on a file) ------

function guidBytes(guid: string): Buffer {
  const h = guid.replace(/-/g, '');
  const b = Buffer.from(h, 'hex');
  // First three fields little-endian (UEFI Appendix A).
  return Buffer.concat([Buffer.from(b.subarray(0, 4)).reverse(), Buffer.from(b.subarray(4, 6)).reverse(), Buffer.from(b.subarray(6, 8)).reverse(), b.subarray(8)]);
}

function gpt4k(totalLbas: number): Buffer {
  const ss = 4096;
  const buf = Buffer.alloc(totalLbas * ss);
  // protective MBR
  buf[446 + 4] = 0xee;
  buf.writeUInt32LE(1, 446 + 8);
  buf.writeUInt32LE(totalLbas - 1, 446 + 12);
  buf[510] = 0x55;
  buf[511] = 0xaa;
  const entries = Buffer.alloc(128 * 128);
  guidBytes('0FC63DAF-8483-4772-8E79-3D69D8477DE4').copy(entries, 0);
  guidBytes('11111111-2222-3333-4444-555555555555').copy(entries, 16);
  entries.writeBigUInt64LE(256n, 32);
  entries.writeBigUInt64LE(BigInt(totalLbas - 10), 40);
  entries.write('root', 56, 'utf16le');
  const entryLbas = entries.length / ss;
  const header = (my: number, alt: number, entriesLba: number): Buffer => {
    const h = Buffer.alloc(92);
    h.write('EFI PART', 0, 'latin1');
    h.writeUInt32LE(0x10000, 8);
    h.writeUInt32LE(92, 12);
    h.writeBigUInt64LE(BigInt(my), 24);
    h.writeBigUInt64LE(BigInt(alt), 32);
    h.writeBigUInt64LE(BigInt(2 + entryLbas), 40);
    h.writeBigUInt64LE(BigInt(totalLbas - 2 - entryLbas), 48);
    guidBytes('AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE').copy(h, 56);
    h.writeBigUInt64LE(BigInt(entriesLba), 72);
    h.writeUInt32LE(128, 80);
    h.writeUInt32LE(128, 84);
    h.writeUInt32LE(zcrc(entries), 88);
    h.writeUInt32LE(zcrc(h), 16);
    return h;
  };
  header(1, totalLbas - 1, 2).copy(buf, ss);
  entries.copy(buf, 2 * ss);
  header(totalLbas - 1, 1, totalLbas - 1 - entryLbas).copy(buf, (totalLbas - 1) * ss);
  entries.copy(buf, (totalLbas - 1 - entryLbas) * ss);
  return buf;
}

test('GPT with 4096-byte logical sectors', () => {
  const pt = readPartitionTable(bufferSource(gpt4k(1024)));
  assert.equal(pt.sectorSize, 4096);
  assert.equal(pt.diskId, 'AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE');
  assert.deepEqual(pt.partitions.map((p) => [p.number, p.offset, p.size, p.kind, p.guid, p.name]), [
    [1, 256 * 4096, (1024 - 10 - 256 + 1) * 4096, 'linux-filesystem', '11111111-2222-3333-4444-555555555555', 'root'],
  ]);
  assert.deepEqual(pt.warnings, []);
  // Its primary header damaged: the 4K backup is found at the last 4K sector.
  const d = gpt4k(1024);
  d[4096 + 30] ^= 1;
  const b = readPartitionTable(bufferSource(d));
  assert.equal(b.gpt?.used, 'backup');
  assert.equal(b.sectorSize, 4096);
});

test('crc32 agrees with zlib; GUIDs are mixed-endian', () => {
  const data = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 131 + 7) & 0xff));
  assert.equal(crc32(data), zcrc(data));
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926); // the CRC-32 check value
  assert.equal(formatGuid(guidBytes('C12A7328-F81F-11D2-BA4B-00A0C93EC93B')), 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B');
});
