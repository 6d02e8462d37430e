/**
 * A BlockDevice over a raw image file: a read-only golden image version
 * (the base under every client's overlay) or a read-write file for ad-hoc
 * exports.
 *
 * Reads go straight into the caller's buffer (FileHandle.read), with no
 * copy; tryReadSync does it on the event loop while the page cache answers
 * at once (sync-io.ts). A read-only device opens the file O_RDONLY and never writes, syncs
 * or truncates it, so its bytes and mtime are untouched however it is used.
 *
 * Allocation (extents). Node has no SEEK_DATA/SEEK_HOLE and no fallocate,
 * so the real hole layout of the file cannot be asked for. What the device
 * reports instead, always truthfully:
 * - without an allocation map: the whole file as data (hole and zero
 *   clear; NBD base:allocation says clear bits are always safe);
 * - read-only with `allocationMap` (a sidecar path chosen by the caller,
 *   e.g. beside the image version): a zero map, one bit per 4 KiB block,
 *   built by scanning the file once and kept in the sidecar. Blocks of all
 *   zeros are reported `zero` (reads return zeros, so copies and overlays
 *   may skip them) but not `hole`, since whether the file system allocated
 *   them is unknown. The sidecar records the image's size, inode and mtime
 *   (nanoseconds); a sidecar that does not match is rebuilt, never trusted.
 *   The map costs 32 KiB of memory per GiB of image, once per image version
 *   (all clients share the base device).
 *
 * Writes (read-write only) go to the file in place. TRIM is not offered
 * (no hole punching in Node; NBD lets a server omit it). WRITE_ZEROES writes
 * zeros, so a FAST_ZERO request is refused with ENOTSUP as NBD asks.
 */
import { open as openFile, readFile, stat, type FileHandle } from 'node:fs/promises';
import type { BlockDevice, Capabilities, Extent, WriteOptions, ZeroOptions } from './block-device.js';
import { assertRange, fromSystemError, storageError } from './errors.js';
import { crc32, readFully, writeFileAtomic, writeFully, ZERO_BUFFER } from './file-io.js';
import { MAX_EXTENTS_PER_CALL } from './extents.js';
import { DEFAULT_SYNC_IO, SyncIoGate, readFullySync, type SyncIoPolicy } from './sync-io.js';
import { silentLogger, type Logger } from '../lib/log.js';

export interface FileDeviceOptions {
  readOnly: boolean;
  /**
   * Identity recorded by overlays (read-only only), e.g. the image version
   * id. Default: derived from the file's device, inode, size and mtime, so
   * any change to the file changes it.
   */
  identity?: string;
  /** Sidecar path of the zero map (read-only only); loaded if it matches the file, else built once and written. */
  allocationMap?: string;
  logger?: Logger;
  /** When reads are served synchronously (tryReadSync); see sync-io.ts. */
  syncIo?: Readonly<SyncIoPolicy>;
}

/** Granularity of the zero map. 4 KiB matches file system blocks and the smallest overlay cluster. */
export const ZERO_MAP_BLOCK_SIZE = 4096;
const PREFERRED_BLOCK_SIZE = 4096;
/** Reads made by the zero scan and by cache(). */
const SCAN_CHUNK = 1024 * 1024;
const CACHE_CHUNK = 256 * 1024;

const SIDECAR_MAGIC = Buffer.from('DLZMAP\r\n', 'latin1');
const SIDECAR_VERSION = 1;
/** magic 8, version 4, block size 4, image size 8, ino 8, mtime ns 8, bitmap bytes 8 */
const SIDECAR_HEADER = 48;

export class FileDevice implements BlockDevice {
  readonly size: number;
  readonly preferredBlockSize = PREFERRED_BLOCK_SIZE;
  readonly capabilities: Readonly<Capabilities>;
  readonly identity: string | undefined;

  private readonly inflight = new Set<Promise<unknown>>();
  private closed = false;
  private readonly gate: SyncIoGate;

  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    size: number,
    readOnly: boolean,
    identity: string | undefined,
    /** One bit per ZERO_MAP_BLOCK_SIZE block, set when the block is all zeros. */
    private readonly zeroMap: Uint8Array | undefined,
    syncIo: Readonly<SyncIoPolicy>,
  ) {
    this.gate = new SyncIoGate(syncIo);
    this.size = size;
    this.identity = identity;
    this.capabilities = Object.freeze({
      readOnly,
      flush: true,
      fua: true,
      trim: false,
      writeZeroes: true,
      fastZero: true,
      extents: zeroMap !== undefined,
      cache: true,
      multiConn: true,
    });
  }

  static async open(path: string, options: FileDeviceOptions): Promise<FileDevice> {
    const logger = options.logger ?? silentLogger;
    if (!options.readOnly && options.allocationMap !== undefined) {
      throw storageError('STORAGE_INVALID_ARGUMENT', 'an allocation map is only kept for read-only images');
    }
    let fh: FileHandle;
    try {
      fh = await openFile(path, options.readOnly ? 'r' : 'r+');
    } catch (err) {
      throw fromSystemError(err, `opening image ${path}`);
    }
    try {
      const st = await fh.stat({ bigint: true });
      if (!st.isFile() && !st.isBlockDevice()) throw storageError('STORAGE_INVALID_ARGUMENT', `${path} is not a regular file`);
      if (st.size > BigInt(Number.MAX_SAFE_INTEGER)) throw storageError('STORAGE_INVALID_ARGUMENT', `${path} is too large`);
      const size = Number(st.size);
      const identity = options.readOnly
        ? (options.identity ?? `file:${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`)
        : undefined;
      let zeroMap: Uint8Array | undefined;
      if (options.allocationMap !== undefined) {
        const key = { size: st.size, ino: st.ino, mtimeNs: st.mtimeNs };
        zeroMap = await loadSidecar(options.allocationMap, key);
        if (zeroMap) {
          logger.debug('zero map loaded', { image: path, sidecar: options.allocationMap });
        } else {
          const started = Date.now();
          zeroMap = await scanZeros(fh, size);
          const after = await fh.stat({ bigint: true });
          if (after.mtimeNs !== st.mtimeNs || after.size !== st.size) {
            throw storageError('STORAGE_ALLOCATION_MAP_STALE', `${path} changed while its zero map was being built`);
          }
          await writeFileAtomic(options.allocationMap, encodeSidecar(key, zeroMap));
          logger.info('zero map built', { image: path, sidecar: options.allocationMap, ms: Date.now() - started });
        }
      }
      return new FileDevice(fh, path, size, options.readOnly, identity, zeroMap, options.syncIo ?? DEFAULT_SYNC_IO);
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw fromSystemError(err, `opening image ${path}`);
    }
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    this.check(offset, length);
    if (into && into.length < length) {
      throw storageError('STORAGE_INVALID_ARGUMENT', `read buffer of ${into.length} bytes is smaller than the ${length} asked for`);
    }
    const out = into ?? Buffer.allocUnsafe(length);
    return this.track(readFully(this.fh, out, 0, length, offset).then(() => out), 'read');
  }

  /** The page cache answers most reads of an image at once: read on the event loop (sync-io.ts). */
  tryReadSync(offset: number, length: number, into: Buffer): boolean {
    this.check(offset, length);
    if (into.length < length) {
      throw storageError('STORAGE_INVALID_ARGUMENT', `read buffer of ${into.length} bytes is smaller than the ${length} asked for`);
    }
    const gate = this.gate;
    if (!gate.allows(length)) return false;
    const started = gate.start();
    try {
      readFullySync(this.fh.fd, into, 0, length, offset);
    } catch (err) {
      throw fromSystemError(err, `read on ${this.path}`);
    }
    gate.done(started, length);
    return true;
  }

  async write(offset: number, data: Buffer, options: WriteOptions = {}): Promise<void> {
    this.checkWritable(offset, data.length);
    return this.track(
      (async () => {
        await writeFully(this.fh, data, offset);
        if (options.fua) await this.fh.datasync();
      })(),
      'write',
    );
  }

  async flush(): Promise<void> {
    this.checkOpen();
    // A read-only file has nothing to flush, and is never fsynced.
    if (this.capabilities.readOnly) return;
    return this.track(this.fh.datasync(), 'flush');
  }

  /** Not advertised (capabilities.trim is false); accepted as the no-op NBD allows. */
  async trim(offset: number, length: number, _options?: WriteOptions): Promise<void> {
    this.checkWritable(offset, length);
  }

  async zero(offset: number, length: number, options: ZeroOptions = {}): Promise<void> {
    this.checkWritable(offset, length);
    if (options.fast) {
      throw storageError('STORAGE_FAST_ZERO_UNSUPPORTED', 'a raw file can only be zeroed by writing zeros');
    }
    return this.track(
      (async () => {
        for (let done = 0; done < length; ) {
          const n = Math.min(ZERO_BUFFER.length, length - done);
          await writeFully(this.fh, ZERO_BUFFER.subarray(0, n), offset + done);
          done += n;
        }
        if (options.fua) await this.fh.datasync();
      })(),
      'zero',
    );
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    return this.tryExtentsSync(offset, length);
  }

  /** The zero map is in memory: extents are always answered at once. */
  tryExtentsSync(offset: number, length: number): Extent[] {
    this.check(offset, length);
    if (length === 0) return [];
    const map = this.zeroMap;
    if (!map) return [{ offset, length, hole: false, zero: false }];
    const end = offset + length;
    const out: Extent[] = [];
    let block = Math.floor(offset / ZERO_MAP_BLOCK_SIZE);
    let pos = offset;
    while (pos < end && out.length < MAX_EXTENTS_PER_CALL) {
      const zero = bit(map, block);
      // Skip whole bytes of the same value quickly: a large image is mostly long runs.
      let next = block + 1;
      const lastBlock = Math.ceil(end / ZERO_MAP_BLOCK_SIZE);
      while (next < lastBlock) {
        if ((next & 7) === 0 && next + 8 <= lastBlock && map[next >> 3] === (zero ? 0xff : 0)) {
          next += 8;
          continue;
        }
        if (bit(map, next) !== zero) break;
        next++;
      }
      const runEnd = Math.min(end, next * ZERO_MAP_BLOCK_SIZE);
      out.push({ offset: pos, length: runEnd - pos, hole: false, zero });
      pos = runEnd;
      block = next;
    }
    return out;
  }

  /** Reads the range ahead into the page cache (advisory; NBD_CMD_CACHE). */
  async cache(offset: number, length: number): Promise<void> {
    this.check(offset, length);
    return this.track(
      (async () => {
        const scratch = Buffer.allocUnsafe(Math.min(CACHE_CHUNK, length));
        for (let done = 0; done < length; ) {
          const n = Math.min(scratch.length, length - done);
          await readFully(this.fh, scratch, 0, n, offset + done);
          done += n;
        }
      })(),
      'cache',
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.inflight]);
    await this.fh.close();
  }

  private track<T>(p: Promise<T>, what: string): Promise<T> {
    const wrapped = p.catch((err: unknown) => {
      throw fromSystemError(err, `${what} on ${this.path}`);
    });
    this.inflight.add(wrapped);
    const done = (): void => void this.inflight.delete(wrapped);
    wrapped.then(done, done);
    return wrapped;
  }

  private checkOpen(): void {
    if (this.closed) throw storageError('STORAGE_CLOSED', `image ${this.path} is closed`);
  }

  private check(offset: number, length: number): void {
    this.checkOpen();
    assertRange(this.size, offset, length);
  }

  private checkWritable(offset: number, length: number): void {
    this.check(offset, length);
    if (this.capabilities.readOnly) throw storageError('STORAGE_READ_ONLY', `image ${this.path} is read-only`);
  }
}

function bit(map: Uint8Array, i: number): boolean {
  return ((map[i >> 3]! >> (i & 7)) & 1) === 1;
}

/** Reads the whole file once and marks every all-zero block. */
async function scanZeros(fh: FileHandle, size: number): Promise<Uint8Array> {
  const blocks = Math.ceil(size / ZERO_MAP_BLOCK_SIZE);
  const map = new Uint8Array(Math.ceil(blocks / 8));
  const buf = Buffer.allocUnsafe(SCAN_CHUNK);
  for (let pos = 0; pos < size; pos += SCAN_CHUNK) {
    const n = Math.min(SCAN_CHUNK, size - pos);
    await readFully(fh, buf, 0, n, pos);
    for (let off = 0; off < n; off += ZERO_MAP_BLOCK_SIZE) {
      const len = Math.min(ZERO_MAP_BLOCK_SIZE, n - off);
      if (buf.subarray(off, off + len).equals(ZERO_BUFFER.subarray(0, len))) {
        const b = (pos + off) / ZERO_MAP_BLOCK_SIZE;
        map[b >> 3]! |= 1 << (b & 7);
      }
    }
  }
  return map;
}

interface SidecarKey {
  size: bigint;
  ino: bigint;
  mtimeNs: bigint;
}

function encodeSidecar(key: SidecarKey, map: Uint8Array): Buffer {
  const buf = Buffer.alloc(SIDECAR_HEADER + map.length + 4);
  SIDECAR_MAGIC.copy(buf, 0);
  buf.writeUInt32LE(SIDECAR_VERSION, 8);
  buf.writeUInt32LE(ZERO_MAP_BLOCK_SIZE, 12);
  buf.writeBigUInt64LE(key.size, 16);
  buf.writeBigUInt64LE(key.ino, 24);
  buf.writeBigUInt64LE(key.mtimeNs, 32);
  buf.writeBigUInt64LE(BigInt(map.length), 40);
  buf.set(map, SIDECAR_HEADER);
  buf.writeUInt32LE(crc32(buf.subarray(0, SIDECAR_HEADER + map.length)), SIDECAR_HEADER + map.length);
  return buf;
}

/** The sidecar's map if it describes exactly this file, else undefined (missing, stale or damaged: rebuild). */
async function loadSidecar(path: string, key: SidecarKey): Promise<Uint8Array | undefined> {
  let buf: Buffer;
  try {
    if (!(await stat(path)).isFile()) return undefined;
    buf = await readFile(path);
  } catch {
    return undefined;
  }
  if (buf.length < SIDECAR_HEADER + 4 || !buf.subarray(0, 8).equals(SIDECAR_MAGIC)) return undefined;
  if (buf.readUInt32LE(8) !== SIDECAR_VERSION || buf.readUInt32LE(12) !== ZERO_MAP_BLOCK_SIZE) return undefined;
  if (buf.readBigUInt64LE(16) !== key.size || buf.readBigUInt64LE(24) !== key.ino || buf.readBigUInt64LE(32) !== key.mtimeNs) {
    return undefined;
  }
  const mapLength = Number(buf.readBigUInt64LE(40));
  const expected = Math.ceil(Math.ceil(Number(key.size) / ZERO_MAP_BLOCK_SIZE) / 8);
  if (mapLength !== expected || buf.length !== SIDECAR_HEADER + mapLength + 4) return undefined;
  if (crc32(buf.subarray(0, SIDECAR_HEADER + mapLength)) !== buf.readUInt32LE(SIDECAR_HEADER + mapLength)) return undefined;
  return new Uint8Array(buf.buffer, buf.byteOffset + SIDECAR_HEADER, mapLength);
}
