/**
 * Small file helpers shared by the file-backed devices: positional reads and
 * writes that loop over short transfers, a directory fsync, atomic
 * replacement of small metadata files, and CRC-32 for on-disk headers.
 *
 * Everything goes through node:fs/promises FileHandles, whose reads and
 * writes run on libuv's thread pool: several requests proceed in parallel.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fromSystemError } from './errors.js';

/**
 * Reads exactly `length` bytes at `position` into `buf` at `offset`.
 * Bytes past the end of the file read as zeros (a short file is a valid
 * sparse file whose tail was never written).
 */
export async function readFully(fh: FileHandle, buf: Buffer, offset: number, length: number, position: number): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, offset + done, length - done, position + done);
    if (bytesRead === 0) {
      buf.fill(0, offset + done, offset + length);
      return;
    }
    done += bytesRead;
  }
}

/** Writes all of `buf` at `position`, looping over short writes. */
export async function writeFully(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    done += bytesWritten;
  }
}

/** Writes the buffers back to back from `position` in as few system calls as the kernel allows. */
export async function writevFully(fh: FileHandle, bufs: Buffer[], position: number): Promise<void> {
  if (bufs.length === 1) return writeFully(fh, bufs[0]!, position);
  let total = 0;
  for (const b of bufs) total += b.length;
  const { bytesWritten } = await fh.writev(bufs, position);
  if (bytesWritten === total) return;
  // Short vectored write (rare: a signal or a full disk): finish piece by piece.
  let skip = bytesWritten;
  let pos = position;
  for (const b of bufs) {
    if (skip >= b.length) {
      skip -= b.length;
      pos += b.length;
      continue;
    }
    await writeFully(fh, b.subarray(skip), pos + skip);
    pos += b.length;
    skip = 0;
  }
}

/** fsync of a directory, so that a create, rename or unlink in it is durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Replaces `path` with `data` atomically and durably: written to a
 * temporary name, fsynced, renamed over the target, directory fsynced.
 * A crash leaves either the old file or the new one, never a mixture.
 */
export async function writeFileAtomic(path: string, data: Buffer): Promise<void> {
  // Unique per call: two opens of one image in this process may build its map at once.
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const fh = await open(tmp, 'w', 0o644);
    try {
      await writeFully(fh, data, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    await fsyncDir(dirname(path));
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw fromSystemError(err, `writing ${path}`);
  }
}

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

/** CRC-32 (IEEE 802.3, as zlib computes it). */
export function crc32(buf: Uint8Array, crc = 0): number {
  let c = ~crc;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** A shared, never-written buffer of zeros for zero-filling writes. */
export const ZERO_BUFFER = Buffer.alloc(1024 * 1024);
