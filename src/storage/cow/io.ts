/**
 * The file operations an overlay uses, behind a small interface so that a
 * test can put a simulated disk with a volatile write cache underneath and
 * cut its power (test/helpers/storage-sim-fs.ts). The default is node:fs/promises.
 */
import { mkdir, open, rename, rm, rmdir, stat, type FileHandle } from 'node:fs/promises';
import { fsyncDir, readFully, writevFully } from '../file-io.js';
import { readFullySync, writevFullySync } from '../sync-io.js';

export interface OverlayFile {
  /** Reads exactly `length` bytes into `buf` at `offset`; past the end of the file reads zeros. */
  read(buf: Buffer, offset: number, length: number, position: number): Promise<void>;
  /** Writes the buffers back to back from `position`. */
  writev(bufs: Buffer[], position: number): Promise<void>;
  /**
   * Optional synchronous forms of read and writev, for the overlay's fast
   * paths (sync-io.ts); a file without them is always used asynchronously.
   */
  readSync?(buf: Buffer, offset: number, length: number, position: number): void;
  writevSync?(bufs: Buffer[], position: number): void;
  /** Makes completed writes (and the size) durable. */
  datasync(): Promise<void>;
  truncate(length: number): Promise<void>;
  size(): Promise<number>;
  close(): Promise<void>;
}

export interface OverlayFs {
  /** 'r+' opens an existing file; 'w' creates or truncates. */
  open(path: string, mode: 'r+' | 'w'): Promise<OverlayFile>;
  exists(path: string): Promise<boolean>;
  rename(from: string, to: string): Promise<void>;
  /** Removes a file; a missing one is not an error. */
  unlink(path: string): Promise<void>;
  /** Makes creates, renames and unlinks in `dir` durable. */
  fsyncDir(dir: string): Promise<void>;
  mkdir(dir: string): Promise<void>;
  /** Removes an empty directory; a missing or non-empty one is left alone. */
  rmdir(dir: string): Promise<void>;
}

class NodeFile implements OverlayFile {
  constructor(private readonly fh: FileHandle) {}
  read(buf: Buffer, offset: number, length: number, position: number): Promise<void> {
    return readFully(this.fh, buf, offset, length, position);
  }
  writev(bufs: Buffer[], position: number): Promise<void> {
    return writevFully(this.fh, bufs, position);
  }
  readSync(buf: Buffer, offset: number, length: number, position: number): void {
    readFullySync(this.fh.fd, buf, offset, length, position);
  }
  writevSync(bufs: Buffer[], position: number): void {
    writevFullySync(this.fh.fd, bufs, position);
  }
  datasync(): Promise<void> {
    return this.fh.datasync();
  }
  truncate(length: number): Promise<void> {
    return this.fh.truncate(length);
  }
  async size(): Promise<number> {
    return (await this.fh.stat()).size;
  }
  close(): Promise<void> {
    return this.fh.close();
  }
}

export const nodeFs: OverlayFs = {
  async open(path, mode) {
    // 'w+': created files are read as well as written.
    return new NodeFile(await open(path, mode === 'w' ? 'w+' : 'r+', 0o600));
  },
  async exists(path) {
    try {
      await stat(path);
      return true;
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') return false;
      throw err;
    }
  },
  rename: (from, to) => rename(from, to),
  unlink: (path) => rm(path, { force: true }),
  fsyncDir: (dir) => fsyncDir(dir),
  async mkdir(dir) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  },
  async rmdir(dir) {
    await rmdir(dir).catch(() => undefined);
  },
};
