/**
 * A simulated disk with a volatile write cache under an overlay, for power
 * cut tests. It keeps, per file, the durable contents and the writes made
 * since the last datasync, and per directory the durable entries and the
 * creates, renames and unlinks since the last directory fsync.
 *
 * powerCut() returns what a disk could hold after losing power at this
 * instant: durable contents, plus any subset of the pending writes applied
 * sector by sector (a write may be torn; a sector holds its durable value or
 * the value of one of the writes to it), plus a prefix of the pending
 * directory operations (file systems journal them in order). Every operation
 * yields to the event loop a random number of times, so concurrent requests
 * interleave differently from run to run.
 */
import { basename } from 'node:path';
import type { OverlayFile, OverlayFs } from '../../src/storage/cow/io.js';
import { below, prng } from './prng.js';

const SECTOR = 512;
const CHUNK = 64 * 1024;

/** Sparse contents in 64 KiB chunks. */
class Content {
  chunks = new Map<number, Buffer>();
  size = 0;

  clone(): Content {
    const c = new Content();
    c.size = this.size;
    for (const [k, v] of this.chunks) c.chunks.set(k, Buffer.from(v));
    return c;
  }

  read(buf: Buffer, offset: number, length: number, position: number): void {
    for (let done = 0; done < length; ) {
      const pos = position + done;
      const k = Math.floor(pos / CHUNK);
      const within = pos - k * CHUNK;
      const n = Math.min(CHUNK - within, length - done);
      const chunk = this.chunks.get(k);
      if (chunk && pos < this.size) {
        const valid = Math.min(n, this.size - pos);
        chunk.copy(buf, offset + done, within, within + valid);
        buf.fill(0, offset + done + valid, offset + done + n);
      } else {
        buf.fill(0, offset + done, offset + done + n);
      }
      done += n;
    }
  }

  write(data: Buffer, position: number): void {
    for (let done = 0; done < data.length; ) {
      const pos = position + done;
      const k = Math.floor(pos / CHUNK);
      const within = pos - k * CHUNK;
      const n = Math.min(CHUNK - within, data.length - done);
      let chunk = this.chunks.get(k);
      if (!chunk) this.chunks.set(k, (chunk = Buffer.alloc(CHUNK)));
      data.copy(chunk, within, done, done + n);
      done += n;
    }
    this.size = Math.max(this.size, position + data.length);
  }

  truncate(length: number): void {
    if (length < this.size) {
      // Zero what is cut off, so that growing again reads zeros.
      for (const [k, chunk] of this.chunks) {
        const start = k * CHUNK;
        if (start >= length) this.chunks.delete(k);
        else if (start + CHUNK > length) chunk.fill(0, length - start);
      }
    }
    this.size = length;
  }
}

type Pending = { kind: 'write'; position: number; data: Buffer } | { kind: 'truncate'; length: number };

class Inode {
  current = new Content();
  durable = new Content();
  pending: Pending[] = [];
}

type DirOp = { kind: 'link'; name: string; inode: Inode } | { kind: 'unlink'; name: string };

export class SimFs implements OverlayFs {
  private entries = new Map<string, Inode>();
  private durableEntries = new Map<string, Inode>();
  private dirOps: DirOp[] = [];
  private readonly yieldRng: () => number;
  /** Operations made so far. */
  operations = 0;
  /** Writes (writev, truncate, directory changes) made so far. */
  writes = 0;
  /** Called at the start of every operation: a test may cut the power from here. */
  onOperation: (() => void) | undefined;

  constructor(seed: number) {
    this.yieldRng = prng(seed);
  }

  private async jitter(write = false): Promise<void> {
    this.operations++;
    if (write) this.writes++;
    this.onOperation?.();
    const n = below(this.yieldRng, 3);
    for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
  }

  private async settle(): Promise<void> {
    const n = below(this.yieldRng, 3);
    for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
  }

  async open(path: string, mode: 'r+' | 'w'): Promise<OverlayFile> {
    await this.jitter(mode === 'w');
    const name = basename(path);
    let inode = this.entries.get(name);
    if (!inode) {
      if (mode === 'r+') throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
      inode = new Inode();
      this.entries.set(name, inode);
      this.dirOps.push({ kind: 'link', name, inode });
    } else if (mode === 'w') {
      inode.current.truncate(0);
      inode.pending.push({ kind: 'truncate', length: 0 });
    }
    return this.file(inode);
  }

  private file(inode: Inode): OverlayFile {
    let closed = false;
    const check = (): void => {
      if (closed) throw Object.assign(new Error('EBADF'), { code: 'EBADF' });
    };
    return {
      read: async (buf, offset, length, position) => {
        await this.jitter();
        check();
        inode.current.read(buf, offset, length, position);
      },
      writev: async (bufs, position) => {
        await this.jitter(true);
        check();
        let pos = position;
        for (const b of bufs) {
          inode.current.write(b, pos);
          inode.pending.push({ kind: 'write', position: pos, data: Buffer.from(b) });
          pos += b.length;
        }
        await this.settle();
      },
      datasync: async () => {
        await this.jitter();
        check();
        // Apply what is pending rather than copying everything: syncs are frequent.
        for (const p of inode.pending) {
          if (p.kind === 'write') inode.durable.write(p.data, p.position);
          else inode.durable.truncate(p.length);
        }
        inode.pending = [];
        // The caller hears of it later: other requests may run in between.
        await this.settle();
      },
      truncate: async (length) => {
        await this.jitter(true);
        check();
        inode.current.truncate(length);
        inode.pending.push({ kind: 'truncate', length });
      },
      size: async () => {
        check();
        return inode.current.size;
      },
      close: async () => {
        closed = true;
      },
    };
  }

  async exists(path: string): Promise<boolean> {
    return this.entries.has(basename(path)) || !basename(path).startsWith('overlay.');
  }

  async rename(from: string, to: string): Promise<void> {
    await this.jitter(true);
    const inode = this.entries.get(basename(from));
    if (!inode) throw Object.assign(new Error(`ENOENT: ${from}`), { code: 'ENOENT' });
    this.entries.delete(basename(from));
    this.entries.set(basename(to), inode);
    this.dirOps.push({ kind: 'unlink', name: basename(from) }, { kind: 'link', name: basename(to), inode });
  }

  async unlink(path: string): Promise<void> {
    await this.jitter(true);
    if (this.entries.delete(basename(path))) this.dirOps.push({ kind: 'unlink', name: basename(path) });
  }

  async fsyncDir(): Promise<void> {
    await this.jitter();
    this.durableEntries = new Map(this.entries);
    this.dirOps = [];
  }

  async mkdir(): Promise<void> {}
  async rmdir(): Promise<void> {}

  /** What survives a power cut now (see the file comment); `tear` is the chance each pending sector write survives. */
  powerCut(seed: number, tear = 0.5): SimFs {
    const r = prng(seed);
    const after = new SimFs(seed ^ 0x55aa);
    const survivors = new Map<Inode, Inode>();
    const surviving = (inode: Inode): Inode => {
      let s = survivors.get(inode);
      if (s) return s;
      s = new Inode();
      const c = inode.durable.clone();
      for (const p of inode.pending) {
        if (p.kind === 'truncate') {
          if (r() < 0.5) c.truncate(p.length);
          continue;
        }
        for (let at = 0; at < p.data.length; at += SECTOR) {
          if (r() < tear) c.write(p.data.subarray(at, Math.min(at + SECTOR, p.data.length)), p.position + at);
        }
      }
      s.current = c;
      s.durable = c.clone();
      survivors.set(inode, s);
      return s;
    };
    const entries = new Map(this.durableEntries);
    const keep = below(r, this.dirOps.length + 1);
    for (const op of this.dirOps.slice(0, keep)) {
      if (op.kind === 'link') entries.set(op.name, op.inode);
      else entries.delete(op.name);
    }
    for (const [name, inode] of entries) after.entries.set(name, surviving(inode));
    after.durableEntries = new Map(after.entries);
    return after;
  }
}
