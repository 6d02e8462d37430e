/**
 * A BlockDevice held in memory: the reference model for the other devices'
 * tests and a real device for protocol tests.
 *
 * Semantics, at byte granularity:
 * - never-written bytes are a hole (hole + zero);
 * - trimmed bytes, and bytes zeroed with `mayTrim`, become a hole again;
 * - bytes zeroed without `mayTrim` read as zero but are allocated (zero);
 * - written bytes are data (even when the data happens to be zeros).
 *
 * Contents live in lazily allocated chunks, so a large sparse device costs
 * only what was written. The allocation state is a list of runs kept apart
 * from the bytes: the bytes are always right (a trimmed chunk is freed or
 * zero-filled), the runs only answer extents().
 *
 * One instance may be shared by several connections (multiConn defaults to
 * true): every call completes atomically with respect to the others.
 */
import { randomUUID } from 'node:crypto';
import type { BlockDevice, Capabilities, Extent, WriteOptions, ZeroOptions } from './block-device.js';
import { assertRange, storageError } from './errors.js';

export interface MemoryDeviceOptions {
  readOnly?: boolean;
  /** Initial contents, placed at offset 0 and reported as data; at most `size` bytes. */
  data?: Buffer;
  /** Default true: one instance is shared by all connections. */
  multiConn?: boolean;
  /** A power of two from 1 to 1 MiB; default 4096. */
  preferredBlockSize?: number;
  /** Identity an overlay records for its base; default a random UUID per instance. */
  identity?: string;
}

/** Contents are stored in chunks of this many bytes, allocated on first write. */
const CHUNK_SIZE = 64 * 1024;
const DEFAULT_PREFERRED_BLOCK_SIZE = 4096;
const MAX_PREFERRED_BLOCK_SIZE = 1024 * 1024;

const enum State {
  Hole = 0,
  Zero = 1,
  Data = 2,
}

interface Run {
  start: number;
  end: number;
  state: State;
}

/**
 * Sorted, contiguous, coalesced runs covering [0, size). O(runs) per update,
 * which is plenty for tests and protocol fixtures.
 */
class RunList {
  private runs: Run[];

  constructor(size: number) {
    this.runs = size > 0 ? [{ start: 0, end: size, state: State.Hole }] : [];
  }

  set(start: number, end: number, state: State): void {
    if (start >= end) return;
    const out: Run[] = [];
    let placed = false;
    for (const r of this.runs) {
      if (r.end <= start || r.start >= end) {
        if (!placed && r.start >= end) {
          push(out, { start, end, state });
          placed = true;
        }
        push(out, r);
        continue;
      }
      if (r.start < start) push(out, { start: r.start, end: start, state: r.state });
      if (!placed) {
        push(out, { start, end, state });
        placed = true;
      }
      if (r.end > end) push(out, { start: end, end: r.end, state: r.state });
    }
    if (!placed) push(out, { start, end, state });
    this.runs = out;
  }

  slice(start: number, end: number): Run[] {
    const out: Run[] = [];
    for (const r of this.runs) {
      if (r.end <= start) continue;
      if (r.start >= end) break;
      out.push({ start: Math.max(r.start, start), end: Math.min(r.end, end), state: r.state });
    }
    return out;
  }
}

function push(out: Run[], r: Run): void {
  const last = out[out.length - 1];
  if (last && last.state === r.state && last.end === r.start) last.end = r.end;
  else out.push({ ...r });
}

export class MemoryDevice implements BlockDevice {
  readonly size: number;
  readonly preferredBlockSize: number;
  readonly capabilities: Readonly<Capabilities>;
  readonly identity: string;

  private readonly chunks = new Map<number, Buffer>();
  private readonly runs: RunList;
  private closed = false;

  constructor(size: number, options: MemoryDeviceOptions = {}) {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw storageError('STORAGE_INVALID_ARGUMENT', `device size ${size} is not a non-negative safe integer`);
    }
    const pbs = options.preferredBlockSize ?? DEFAULT_PREFERRED_BLOCK_SIZE;
    if (!Number.isInteger(pbs) || pbs < 1 || pbs > MAX_PREFERRED_BLOCK_SIZE || (pbs & (pbs - 1)) !== 0) {
      throw storageError('STORAGE_INVALID_ARGUMENT', `preferred block size ${pbs} is not a power of two up to 1 MiB`);
    }
    this.size = size;
    this.preferredBlockSize = pbs;
    this.identity = options.identity ?? `memory:${randomUUID()}`;
    this.capabilities = Object.freeze({
      readOnly: options.readOnly ?? false,
      flush: true,
      fua: true,
      trim: true,
      writeZeroes: true,
      fastZero: true,
      extents: true,
      cache: true,
      multiConn: options.multiConn ?? true,
    });
    this.runs = new RunList(size);
    if (options.data) {
      if (options.data.length > size) {
        throw storageError('STORAGE_INVALID_ARGUMENT', `initial data (${options.data.length} bytes) is larger than the device (${size})`);
      }
      this.store(0, options.data);
    }
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    this.check(offset, length);
    if (into && into.length < length) {
      throw storageError('STORAGE_INVALID_ARGUMENT', `read buffer of ${into.length} bytes is smaller than the ${length} asked for`);
    }
    const out = into ?? Buffer.allocUnsafe(length);
    this.copyOut(offset, length, out);
    return out;
  }

  async write(offset: number, data: Buffer, _options?: WriteOptions): Promise<void> {
    this.checkWritable(offset, data.length);
    this.store(offset, data);
  }

  async flush(): Promise<void> {
    this.checkOpen();
  }

  async trim(offset: number, length: number, _options?: WriteOptions): Promise<void> {
    this.checkWritable(offset, length);
    this.clear(offset, length, State.Hole);
  }

  async zero(offset: number, length: number, options: ZeroOptions = {}): Promise<void> {
    this.checkWritable(offset, length);
    // Zeroing is always cheap here, so `fast` never has to refuse.
    this.clear(offset, length, options.mayTrim ? State.Hole : State.Zero);
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    this.check(offset, length);
    return this.runs.slice(offset, offset + length).map((r) => ({
      offset: r.start,
      length: r.end - r.start,
      hole: r.state === State.Hole,
      zero: r.state !== State.Data,
    }));
  }

  async cache(offset: number, length: number): Promise<void> {
    this.check(offset, length);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.chunks.clear();
  }

  /** Bytes of chunk memory in use (for tests of sparseness). */
  allocatedBytes(): number {
    return this.chunks.size * CHUNK_SIZE;
  }

  private store(offset: number, data: Buffer): void {
    let done = 0;
    while (done < data.length) {
      const pos = offset + done;
      const index = Math.floor(pos / CHUNK_SIZE);
      const within = pos - index * CHUNK_SIZE;
      const n = Math.min(CHUNK_SIZE - within, data.length - done);
      let chunk = this.chunks.get(index);
      if (!chunk) {
        chunk = Buffer.alloc(CHUNK_SIZE);
        this.chunks.set(index, chunk);
      }
      data.copy(chunk, within, done, done + n);
      done += n;
    }
    this.runs.set(offset, offset + data.length, State.Data);
  }

  private clear(offset: number, length: number, state: State): void {
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const index = Math.floor(pos / CHUNK_SIZE);
      const within = pos - index * CHUNK_SIZE;
      const n = Math.min(CHUNK_SIZE - within, length - done);
      const chunk = this.chunks.get(index);
      if (chunk) {
        if (n === CHUNK_SIZE) this.chunks.delete(index);
        else chunk.fill(0, within, within + n);
      }
      done += n;
    }
    this.runs.set(offset, offset + length, state);
  }

  private copyOut(offset: number, length: number, out: Buffer): void {
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const index = Math.floor(pos / CHUNK_SIZE);
      const within = pos - index * CHUNK_SIZE;
      const n = Math.min(CHUNK_SIZE - within, length - done);
      const chunk = this.chunks.get(index);
      if (chunk) chunk.copy(out, done, within, within + n);
      else out.fill(0, done, done + n);
      done += n;
    }
  }

  private checkOpen(): void {
    if (this.closed) throw storageError('STORAGE_CLOSED', 'memory device is closed');
  }

  private check(offset: number, length: number): void {
    this.checkOpen();
    assertRange(this.size, offset, length);
  }

  private checkWritable(offset: number, length: number): void {
    this.check(offset, length);
    if (this.capabilities.readOnly) throw storageError('STORAGE_READ_ONLY', 'device is read-only');
  }
}
