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

/**
 * Largest write system call the file devices make; longer writes are cut
 * into calls of this size. Why: the kernel sizes the page cache folios it
 * allocates for a buffered write by the length of the call, and a 1 MiB
 * call into a part of the file not yet in the page cache asks for 1 MiB
 * folios, which a guest whose free memory is handed back to its host in
 * large blocks pays for dearly (1.7-2.5 ms of system time per MiB on an
 * earlier bench VM, against 0.15-0.4 ms in 256 KiB calls); small calls
 * cost a system call each. Measured on the 2-core bench VM (kernel 6.18,
 * fio 1 MiB sequential writes at qd 8 through a fresh overlay, 5 s, runs
 * alternated, server CPU per GB including start-up): 64 KiB calls
 * 3.2-3.8 GB/s at 0.29-0.34 s/GB, 128 KiB 3.2-3.7 GB/s, 256 KiB 3.5-4.4
 * GB/s at 0.25-0.32 s/GB, 512 KiB 2.7-4.2 GB/s at 0.27-0.42 s/GB.
 */
export const MAX_WRITE_CALL = 256 * 1024;

/**
 * The buffers of one write cut into groups of at most MAX_WRITE_CALL bytes,
 * each a vectored write at its own position (buffers are split with
 * subarray, never copied).
 */
export function writeCalls(bufs: readonly Buffer[], position: number): { bufs: Buffer[]; position: number; bytes: number }[] {
  const calls: { bufs: Buffer[]; position: number; bytes: number }[] = [];
  let call = { bufs: [] as Buffer[], position, bytes: 0 };
  let pos = position;
  for (const whole of bufs) {
    for (let from = 0; from < whole.length; ) {
      if (call.bytes === MAX_WRITE_CALL) {
        calls.push(call);
        call = { bufs: [], position: pos, bytes: 0 };
      }
      const n = Math.min(whole.length - from, MAX_WRITE_CALL - call.bytes);
      call.bufs.push(n === whole.length ? whole : whole.subarray(from, from + n));
      call.bytes += n;
      from += n;
      pos += n;
    }
  }
  if (call.bytes > 0) calls.push(call);
  return calls;
}

/** Writes all of `buf` at `position`, looping over short writes, in calls of at most MAX_WRITE_CALL bytes. */
export async function writeFully(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, Math.min(buf.length - done, MAX_WRITE_CALL), position + done);
    done += bytesWritten;
  }
}

/** Writes the buffers back to back from `position` in as few system calls as writeCalls() allows. */
export async function writevFully(fh: FileHandle, bufs: Buffer[], position: number): Promise<void> {
  for (const call of writeCalls(bufs, position)) {
    if (call.bufs.length === 1) {
      await writeFully(fh, call.bufs[0]!, call.position);
      continue;
    }
    const { bytesWritten } = await fh.writev(call.bufs, call.position);
    if (bytesWritten === call.bytes) continue;
    // Short vectored write (rare: a signal or a full disk): finish piece by piece.
    let skip = bytesWritten;
    let pos = call.position;
    for (const b of call.bufs) {
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
