/**
 * A pure reader of MBR and GPT partition tables (UEFI 2.10, sections 5.2 and
 * 5.3). It reads through a synchronous ByteSource (a Buffer in tests, a file
 * descriptor in inspect.ts) and never writes.
 *
 * What it checks, and why:
 * - GPT: the protective MBR (OSType 0xEE), both headers (signature, HeaderSize,
 *   HeaderCRC32 over HeaderSize bytes with the CRC field zeroed, MyLBA, the
 *   usable range) and both entry arrays (PartitionEntryArrayCRC32). The primary
 *   copy is used when valid; otherwise the backup (at the primary's
 *   AlternateLBA, or at the last LBA when the primary is unreadable), with a
 *   warning. A backup that is missing or not at the last LBA (a disk grown
 *   after partitioning) is a warning, not an error: Linux reads the primary.
 * - Entries must lie inside FirstUsableLBA..LastUsableLBA and must not
 *   overlap; a CRC-valid table that breaks this is damaged all the same.
 * - MBR: boot indicators 0x00/0x80, partitions inside the disk, no overlaps,
 *   and the extended chain (EBRs) walked with a loop guard and a limit.
 * Partition numbers are the ones Linux gives (GPT: slot index + 1; MBR: 1-4
 * primary, 5 on logical), so `nbd0p<number>` names the partition.
 */
import {
  EXT_SUPERBLOCK_OFFSET,
  EXT_SUPER_MAGIC,
  EXT_SB,
  GPT_ENTRY_MIN_SIZE,
  GPT_HEADER_MIN_SIZE,
  GPT_MAX_ENTRY_ARRAY_BYTES,
  GPT_REVISION_1_0,
  GPT_SIGNATURE,
  GPT_TYPES,
  MBR_EXTENDED_TYPES,
  MBR_MAX_LOGICAL_PARTITIONS,
  MBR_PARTITION_COUNT,
  MBR_PARTITION_RECORD_SIZE,
  MBR_PARTITION_TABLE_OFFSET,
  MBR_SIGNATURE_OFFSET,
  MBR_TYPES,
  MBR_TYPE_GPT_PROTECTIVE,
  SECTOR_SIZES,
  type PartitionKind,
} from './constants.js';
import { crc32 } from './crc32.js';
import { imagesError } from './errors.js';

/** Synchronous random access to a disk's bytes; `read` may return fewer bytes at the end. */
export interface ByteSource {
  readonly size: number;
  read(offset: number, length: number): Buffer;
}

export function bufferSource(buf: Buffer): ByteSource {
  return {
    size: buf.length,
    read: (offset, length) => buf.subarray(Math.min(offset, buf.length), Math.min(offset + length, buf.length)),
  };
}

export interface Partition {
  /** The number Linux gives the partition (`nbd0p<number>`). */
  number: number;
  /** Byte offset of the partition in the disk. */
  offset: number;
  /** Size in bytes. */
  size: number;
  firstLba: number;
  lastLba: number;
  kind: PartitionKind;
  /** GPT: the partition type GUID, upper case. */
  typeGuid?: string;
  /** GPT: UniquePartitionGUID (the PARTUUID). */
  guid?: string;
  /** GPT: the partition name (UTF-16LE in the entry). */
  name?: string;
  /** GPT: the 64-bit attribute field as 16 hex digits (a string, so inspections serialize as JSON). */
  attributes?: string;
  /** MBR: the OS type byte. */
  mbrType?: number;
  /** MBR: the boot indicator was 0x80. */
  bootable?: boolean;
  /** MBR: a logical partition inside the extended one. */
  logical?: boolean;
}

export type CopyState = 'valid' | 'damaged' | 'missing';

export interface GptInfo {
  diskGuid: string;
  primary: CopyState;
  backup: CopyState;
  /** Which copy the partitions were read from. */
  used: 'primary' | 'backup';
  firstUsableLba: number;
  lastUsableLba: number;
  /** The MBR has 0xEE plus other partitions: Linux reads the GPT, other systems may read the MBR. */
  hybridMbr: boolean;
  /** False when LBA 0 has no protective entry: Linux then ignores the GPT unless booted with `gpt`. */
  protectiveMbr: boolean;
}

export interface PartitionTable {
  scheme: 'gpt' | 'mbr';
  sectorSize: number;
  /** GPT disk GUID, or the MBR disk signature as 8 hex digits. */
  diskId: string;
  partitions: Partition[];
  gpt?: GptInfo;
  /** Things that do not stop the disk from being used but should be shown. */
  warnings: string[];
}

// ---------------------------------------------------------------------------

function readExact(src: ByteSource, offset: number, length: number, what: string): Buffer {
  if (offset + length > src.size) {
    throw imagesError('IMAGES_DISK_UNREADABLE', `the disk (${src.size} bytes) is too short for ${what} at byte ${offset}`);
  }
  const b = src.read(offset, length);
  if (b.length !== length) throw imagesError('IMAGES_DISK_UNREADABLE', `short read of ${what} at byte ${offset}`);
  return b;
}

/** A GUID as the UEFI spec stores it: the first three fields little-endian, the rest as bytes. */
export function formatGuid(b: Buffer, at = 0): string {
  const hex = (from: number, to: number, reverse: boolean): string => {
    const bytes = [...b.subarray(at + from, at + to)];
    if (reverse) bytes.reverse();
    return bytes.map((x) => x.toString(16).padStart(2, '0')).join('');
  };
  return `${hex(0, 4, true)}-${hex(4, 6, true)}-${hex(6, 8, true)}-${hex(8, 10, false)}-${hex(10, 16, false)}`.toUpperCase();
}

function safeLba(v: bigint, what: string, code: 'IMAGES_GPT_HEADER_CORRUPT' | 'IMAGES_GPT_ENTRIES_CORRUPT'): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw imagesError(code, `${what} ${v} is not a usable LBA`);
  return Number(v);
}

interface MbrRecord {
  slot: number;
  status: number;
  type: number;
  startLba: number;
  sectors: number;
}

function mbrRecords(lba0: Buffer): MbrRecord[] {
  const out: MbrRecord[] = [];
  for (let i = 0; i < MBR_PARTITION_COUNT; i++) {
    const at = MBR_PARTITION_TABLE_OFFSET + i * MBR_PARTITION_RECORD_SIZE;
    out.push({
      slot: i,
      status: lba0[at]!,
      type: lba0[at + 4]!,
      startLba: lba0.readUInt32LE(at + 8),
      sectors: lba0.readUInt32LE(at + 12),
    });
  }
  return out;
}

function hasMbrSignature(sector: Buffer): boolean {
  return sector[MBR_SIGNATURE_OFFSET] === 0x55 && sector[MBR_SIGNATURE_OFFSET + 1] === 0xaa;
}

/** True when the bytes at `offset` start an ext2/3/4 file system (superblock magic). */
export function looksLikeExtFs(src: ByteSource, offset = 0): boolean {
  const at = offset + EXT_SUPERBLOCK_OFFSET + EXT_SB.s_magic;
  if (at + 2 > src.size) return false;
  const b = src.read(at, 2);
  return b.length === 2 && b.readUInt16LE(0) === EXT_SUPER_MAGIC;
}

// --- GPT --------------------------------------------------------------------

interface GptHeader {
  myLba: number;
  alternateLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  diskGuid: string;
  entriesLba: number;
  entryCount: number;
  entrySize: number;
  entriesCrc: number;
  revision: number;
}

type Checked<T> = { ok: true; value: T } | { ok: false; reason: string };

function parseGptHeader(src: ByteSource, sectorSize: number, lba: number): Checked<GptHeader> {
  const diskLbas = Math.floor(src.size / sectorSize);
  if (lba < 1 || lba >= diskLbas) return { ok: false, reason: `LBA ${lba} is outside the disk` };
  const b = src.read(lba * sectorSize, sectorSize);
  if (b.length !== sectorSize) return { ok: false, reason: `short read at LBA ${lba}` };
  if (b.toString('latin1', 0, 8) !== GPT_SIGNATURE) return { ok: false, reason: `no "${GPT_SIGNATURE}" signature at LBA ${lba}` };
  const headerSize = b.readUInt32LE(12);
  if (headerSize < GPT_HEADER_MIN_SIZE || headerSize > sectorSize) {
    return { ok: false, reason: `HeaderSize ${headerSize} is outside ${GPT_HEADER_MIN_SIZE}..${sectorSize}` };
  }
  const stored = b.readUInt32LE(16);
  const copy = Buffer.from(b.subarray(0, headerSize));
  copy.writeUInt32LE(0, 16);
  const computed = crc32(copy);
  if (computed !== stored) {
    return { ok: false, reason: `HeaderCRC32 mismatch at LBA ${lba} (stored ${hex32(stored)}, computed ${hex32(computed)})` };
  }
  const myLba = b.readBigUInt64LE(24);
  if (myLba !== BigInt(lba)) return { ok: false, reason: `header at LBA ${lba} says MyLBA is ${myLba}` };
  const h: GptHeader = {
    revision: b.readUInt32LE(8),
    myLba: lba,
    alternateLba: safeLba(b.readBigUInt64LE(32), 'AlternateLBA', 'IMAGES_GPT_HEADER_CORRUPT'),
    firstUsableLba: safeLba(b.readBigUInt64LE(40), 'FirstUsableLBA', 'IMAGES_GPT_HEADER_CORRUPT'),
    lastUsableLba: safeLba(b.readBigUInt64LE(48), 'LastUsableLBA', 'IMAGES_GPT_HEADER_CORRUPT'),
    diskGuid: formatGuid(b, 56),
    entriesLba: safeLba(b.readBigUInt64LE(72), 'PartitionEntryLBA', 'IMAGES_GPT_HEADER_CORRUPT'),
    entryCount: b.readUInt32LE(80),
    entrySize: b.readUInt32LE(84),
    entriesCrc: b.readUInt32LE(88),
  };
  if (h.firstUsableLba > h.lastUsableLba + 1 || h.lastUsableLba >= diskLbas) {
    return { ok: false, reason: `usable range ${h.firstUsableLba}..${h.lastUsableLba} does not fit a disk of ${diskLbas} sectors` };
  }
  if (h.entrySize < GPT_ENTRY_MIN_SIZE || h.entrySize % GPT_ENTRY_MIN_SIZE !== 0 || (h.entrySize & (h.entrySize - 1)) !== 0) {
    return { ok: false, reason: `SizeOfPartitionEntry ${h.entrySize} is not 128 * 2^n` };
  }
  if (h.entryCount * h.entrySize > GPT_MAX_ENTRY_ARRAY_BYTES) {
    return { ok: false, reason: `${h.entryCount} entries of ${h.entrySize} bytes exceed the ${GPT_MAX_ENTRY_ARRAY_BYTES}-byte limit` };
  }
  const arrayEnd = (h.entriesLba + Math.ceil((h.entryCount * h.entrySize) / sectorSize)) * sectorSize;
  if (h.entriesLba < 1 || arrayEnd > diskLbas * sectorSize) {
    return { ok: false, reason: `the entry array at LBA ${h.entriesLba} runs past the end of the disk` };
  }
  return { ok: true, value: h };
}

function readGptEntries(src: ByteSource, sectorSize: number, h: GptHeader): Checked<Buffer> {
  const bytes = h.entryCount * h.entrySize;
  const arr = src.read(h.entriesLba * sectorSize, bytes);
  if (arr.length !== bytes) return { ok: false, reason: `short read of the entry array at LBA ${h.entriesLba}` };
  const computed = crc32(arr);
  if (computed !== h.entriesCrc) {
    return { ok: false, reason: `PartitionEntryArrayCRC32 mismatch (stored ${hex32(h.entriesCrc)}, computed ${hex32(computed)})` };
  }
  return { ok: true, value: arr };
}

function hex32(n: number): string {
  return '0x' + n.toString(16).padStart(8, '0');
}

function gptPartitions(arr: Buffer, h: GptHeader, sectorSize: number): Partition[] {
  const out: Partition[] = [];
  for (let i = 0; i < h.entryCount; i++) {
    const at = i * h.entrySize;
    const type = arr.subarray(at, at + 16);
    if (type.every((x) => x === 0)) continue; // unused entry (UEFI 5.3.3)
    const typeGuid = formatGuid(arr, at);
    const first = safeLba(arr.readBigUInt64LE(at + 32), `partition ${i + 1} StartingLBA`, 'IMAGES_GPT_ENTRIES_CORRUPT');
    const last = safeLba(arr.readBigUInt64LE(at + 40), `partition ${i + 1} EndingLBA`, 'IMAGES_GPT_ENTRIES_CORRUPT');
    if (first > last || first < h.firstUsableLba || last > h.lastUsableLba) {
      throw imagesError(
        'IMAGES_GPT_ENTRIES_CORRUPT',
        `GPT partition ${i + 1} spans LBA ${first}..${last}, outside the usable range ${h.firstUsableLba}..${h.lastUsableLba}`,
      );
    }
    const nameBytes = arr.subarray(at + 56, at + 128);
    let nameEnd = 0;
    while (nameEnd + 1 < nameBytes.length && (nameBytes[nameEnd] !== 0 || nameBytes[nameEnd + 1] !== 0)) nameEnd += 2;
    out.push({
      number: i + 1,
      offset: first * sectorSize,
      size: (last - first + 1) * sectorSize,
      firstLba: first,
      lastLba: last,
      kind: (GPT_TYPES as Record<string, PartitionKind>)[typeGuid] ?? 'unknown',
      typeGuid,
      guid: formatGuid(arr, at + 16),
      name: nameBytes.subarray(0, nameEnd).toString('utf16le'),
      attributes: arr.readBigUInt64LE(at + 48).toString(16).padStart(16, '0'),
    });
  }
  assertNoOverlap(out, 'IMAGES_GPT_ENTRIES_CORRUPT', 'GPT');
  return out;
}

function assertNoOverlap(parts: Partition[], code: 'IMAGES_GPT_ENTRIES_CORRUPT' | 'IMAGES_MBR_CORRUPT', scheme: string): void {
  const sorted = [...parts].sort((a, b) => a.firstLba - b.firstLba);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    if (b.firstLba <= a.lastLba) {
      throw imagesError(code, `${scheme} partitions ${a.number} (LBA ${a.firstLba}..${a.lastLba}) and ${b.number} (LBA ${b.firstLba}..${b.lastLba}) overlap`);
    }
  }
}

function readGpt(src: ByteSource, sectorSize: number, lba0: Buffer | undefined): PartitionTable {
  const warnings: string[] = [];
  const diskLbas = Math.floor(src.size / sectorSize);
  const lastLba = diskLbas - 1;
  const records = lba0 && hasMbrSignature(lba0) ? mbrRecords(lba0) : [];
  const protective = records.some((r) => r.type === MBR_TYPE_GPT_PROTECTIVE);
  const hybrid = protective && records.some((r) => r.type !== 0 && r.type !== MBR_TYPE_GPT_PROTECTIVE);
  if (!protective) {
    warnings.push('LBA 0 holds no protective MBR (type 0xEE): Linux ignores this GPT unless booted with the `gpt` option');
  }
  if (hybrid) warnings.push('hybrid MBR: the MBR lists partitions besides the protective one; Linux reads the GPT');

  const primary = parseGptHeader(src, sectorSize, 1);
  const primaryEntries = primary.ok ? readGptEntries(src, sectorSize, primary.value) : undefined;
  const backupLba = primary.ok && primary.value.alternateLba < diskLbas && primary.value.alternateLba > 1 ? primary.value.alternateLba : lastLba;
  const backup = parseGptHeader(src, sectorSize, backupLba);
  const backupEntries = backup.ok ? readGptEntries(src, sectorSize, backup.value) : undefined;

  let used: 'primary' | 'backup';
  let header: GptHeader;
  let entries: Buffer;
  if (primary.ok && primaryEntries?.ok) {
    used = 'primary';
    header = primary.value;
    entries = primaryEntries.value;
  } else if (backup.ok && backupEntries?.ok) {
    used = 'backup';
    header = backup.value;
    entries = backupEntries.value;
    const why = primary.ok ? (primaryEntries as { reason: string }).reason : primary.reason;
    warnings.push(`primary GPT damaged (${why}); the backup at LBA ${backup.value.myLba} was used. Repair with: sgdisk -e or gdisk's recovery menu`);
  } else if (primary.ok || backup.ok) {
    // A header is sound but every entry array it points to fails its CRC.
    const reasons = [primaryEntries, backupEntries].filter((x): x is { ok: false; reason: string } => !!x && !x.ok).map((x) => x.reason);
    throw imagesError('IMAGES_GPT_ENTRIES_CORRUPT', `the GPT partition entries are damaged: ${reasons.join('; ')}`);
  } else {
    throw imagesError('IMAGES_GPT_HEADER_CORRUPT', `no valid GPT header: primary: ${primary.reason}; backup: ${backup.reason}`);
  }

  const backupState: CopyState = backup.ok ? (backupEntries?.ok ? 'valid' : 'damaged') : primary.ok && primary.value.alternateLba >= diskLbas ? 'missing' : 'damaged';
  if (used === 'primary' && primary.ok) {
    if (primary.value.alternateLba >= diskLbas) {
      warnings.push(`the backup GPT header should be at LBA ${primary.value.alternateLba} but the disk ends at LBA ${lastLba}: the disk was cut short`);
    } else if (backupState !== 'valid') {
      warnings.push(`the backup GPT at LBA ${backupLba} is damaged (${backup.ok ? (backupEntries as { reason: string }).reason : backup.reason})`);
    } else if (primary.value.alternateLba !== lastLba) {
      warnings.push(`the backup GPT header is at LBA ${primary.value.alternateLba}, not at the last LBA ${lastLba}: the disk was grown after partitioning (sgdisk -e moves it)`);
    } else if (backupEntries?.ok && !backupEntries.value.equals(entries)) {
      warnings.push('the primary and backup GPT entry arrays differ');
    }
  }
  if (header.revision !== GPT_REVISION_1_0) warnings.push(`GPT revision ${hex32(header.revision)} (expected 1.0)`);

  return {
    scheme: 'gpt',
    sectorSize,
    diskId: header.diskGuid,
    partitions: gptPartitions(entries, header, sectorSize),
    gpt: {
      diskGuid: header.diskGuid,
      primary: primary.ok && primaryEntries?.ok ? 'valid' : 'damaged',
      backup: backupState,
      used,
      firstUsableLba: header.firstUsableLba,
      lastUsableLba: header.lastUsableLba,
      hybridMbr: hybrid,
      protectiveMbr: protective,
    },
    warnings,
  };
}

// --- MBR --------------------------------------------------------------------

const SECTOR = 512;

function mbrKind(type: number): PartitionKind {
  if (MBR_EXTENDED_TYPES.has(type)) return 'extended';
  return (MBR_TYPES as Record<number, PartitionKind>)[type] ?? 'unknown';
}

function checkBootFlag(r: MbrRecord, where: string): void {
  if (r.status !== 0x00 && r.status !== 0x80) {
    throw imagesError(
      'IMAGES_MBR_CORRUPT',
      `${where} has boot indicator 0x${r.status.toString(16)} (only 0x00 and 0x80 are valid); this sector may be a file system boot sector rather than an MBR`,
    );
  }
}

function readMbr(src: ByteSource, lba0: Buffer): PartitionTable {
  const diskSectors = Math.floor(src.size / SECTOR);
  const parts: Partition[] = [];
  const warnings: string[] = [];
  const records = mbrRecords(lba0);
  let extended: MbrRecord | undefined;

  const make = (number: number, start: number, sectors: number, type: number, status: number, logical: boolean): Partition => {
    const last = start + sectors - 1;
    if (start === 0 || last >= diskSectors) {
      throw imagesError('IMAGES_MBR_CORRUPT', `MBR partition ${number} spans sectors ${start}..${last}, outside the disk's ${diskSectors} sectors (was the image cut short?)`);
    }
    return {
      number,
      offset: start * SECTOR,
      size: sectors * SECTOR,
      firstLba: start,
      lastLba: last,
      kind: mbrKind(type),
      mbrType: type,
      bootable: status === 0x80,
      ...(logical ? { logical: true } : {}),
    };
  };

  for (const r of records) {
    checkBootFlag(r, `MBR entry ${r.slot + 1}`);
    if (r.type === 0 || r.sectors === 0) continue;
    parts.push(make(r.slot + 1, r.startLba, r.sectors, r.type, r.status, false));
    if (MBR_EXTENDED_TYPES.has(r.type)) {
      if (extended) throw imagesError('IMAGES_MBR_CORRUPT', 'the MBR has two extended partitions');
      extended = r;
    }
  }
  assertNoOverlap(parts, 'IMAGES_MBR_CORRUPT', 'MBR');

  if (extended) {
    const logical: Partition[] = [];
    const seen = new Set<number>();
    let ebr = extended.startLba;
    const extEnd = extended.startLba + extended.sectors - 1;
    for (let n = 0; ; n++) {
      if (n >= MBR_MAX_LOGICAL_PARTITIONS) {
        throw imagesError('IMAGES_MBR_CORRUPT', `the extended partition chain has more than ${MBR_MAX_LOGICAL_PARTITIONS} logical partitions`);
      }
      if (seen.has(ebr)) throw imagesError('IMAGES_MBR_CORRUPT', `the extended partition chain loops back to sector ${ebr}`);
      seen.add(ebr);
      const sector = readExact(src, ebr * SECTOR, SECTOR, `the EBR at sector ${ebr}`);
      if (!hasMbrSignature(sector)) throw imagesError('IMAGES_MBR_CORRUPT', `the EBR at sector ${ebr} has no 0x55AA signature`);
      const [first, link] = mbrRecords(sector) as [MbrRecord, MbrRecord];
      checkBootFlag(first, `the EBR at sector ${ebr}`);
      if (first.type !== 0 && first.sectors !== 0) {
        const p = make(5 + logical.length, ebr + first.startLba, first.sectors, first.type, first.status, true);
        if (p.firstLba <= ebr || p.lastLba > extEnd) {
          throw imagesError('IMAGES_MBR_CORRUPT', `logical partition ${p.number} (sectors ${p.firstLba}..${p.lastLba}) lies outside its extended partition`);
        }
        logical.push(p);
      }
      if (link.type === 0 || link.sectors === 0) break;
      ebr = extended.startLba + link.startLba;
      if (ebr <= extended.startLba || ebr > extEnd) {
        throw imagesError('IMAGES_MBR_CORRUPT', `the EBR chain points to sector ${ebr}, outside the extended partition`);
      }
    }
    assertNoOverlap(logical, 'IMAGES_MBR_CORRUPT', 'MBR logical');
    parts.push(...logical);
  }
  parts.sort((a, b) => a.number - b.number);
  return { scheme: 'mbr', sectorSize: SECTOR, diskId: lba0.readUInt32LE(440).toString(16).padStart(8, '0'), partitions: parts, warnings };
}

// ---------------------------------------------------------------------------

/**
 * Reads the partition table of a disk. Throws IMAGES_UNKNOWN_PARTITION_TABLE
 * when there is none (callers may then look for a bare file system with
 * looksLikeExtFs), and the MBR/GPT codes when one is there but damaged.
 */
export function readPartitionTable(src: ByteSource): PartitionTable {
  if (src.size < 2 * SECTOR) {
    throw imagesError('IMAGES_UNKNOWN_PARTITION_TABLE', `a disk of ${src.size} bytes is too small to hold a partition table`);
  }
  const lba0 = readExact(src, 0, SECTOR, 'the MBR');
  const signed = hasMbrSignature(lba0);
  const protective = signed && mbrRecords(lba0).some((r) => r.type === MBR_TYPE_GPT_PROTECTIVE);
  const sizes = SECTOR_SIZES.filter((ss) => src.size >= 3 * ss);
  const signedAt = sizes.find((ss) => src.read(ss, 8).toString('latin1') === GPT_SIGNATURE);

  if (protective) {
    if (signedAt !== undefined) return readGpt(src, signedAt, lba0);
    // The primary header is gone: the backup at the last LBA may still be there, at either sector size.
    let first: unknown;
    for (const ss of sizes) {
      try {
        return readGpt(src, ss, lba0);
      } catch (e) {
        first ??= e;
      }
    }
    throw first;
  }
  // A valid MBR without 0xEE wins over a stale GPT, as in Linux (block/partitions/efi.c, is_pmbr_valid).
  if (!signed && signedAt !== undefined) return readGpt(src, signedAt, lba0);
  if (signed) {
    const records = mbrRecords(lba0);
    if (records.every((r) => r.type === 0 || r.sectors === 0) && looksLikeExtFs(src, 0)) {
      throw imagesError('IMAGES_UNKNOWN_PARTITION_TABLE', 'no partition table: the disk is a bare ext file system');
    }
    return readMbr(src, lba0);
  }
  throw imagesError(
    'IMAGES_UNKNOWN_PARTITION_TABLE',
    looksLikeExtFs(src, 0)
      ? 'no partition table: the disk is a bare ext file system'
      : 'unknown partition table: no MBR signature (0x55AA at byte 510) and no GPT header ("EFI PART" at LBA 1)',
  );
}
