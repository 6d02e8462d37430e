/**
 * What the TFTP server needs from the application: a way to turn a
 * requested (already normalized) path into something it can read ranges
 * of. The app implements `FileProvider` over its boot files; the
 * ready-made `FolderFileProvider` serves a root folder plus virtual names
 * mapped to host files or in-memory contents, and keeps the small files it
 * served last in memory (every client of a room asks for the same iPXE).
 */
import { constants as fsConstants, type BigIntStats } from 'node:fs';
import { lstat, open, realpath, stat, type FileHandle } from 'node:fs/promises';
import { isAbsolute, join, resolve, sep } from 'node:path';
import type { Mode } from './constants.js';
import { TftpError } from './errors.js';
import { normalizePath } from './path.js';
import type { SocketAddress } from './socket.js';

export type TftpPeer = SocketAddress;

export interface FileRequest {
  /** Normalized (path.ts): relative, `/`-separated, no `.`, `..` or empty segment. */
  path: string;
  /** The file name exactly as the client sent it, for logs. */
  requested: string;
  mode: Extract<Mode, 'octet' | 'netascii'>;
  peer: TftpPeer;
}

/** An opened file; the server calls close() exactly once. */
export interface TftpFile {
  /** Bytes in the file; fixed for the transfer (tsize reports it). */
  readonly size: number;
  /**
   * The whole file, when the provider holds it in memory already (length
   * === size): the transfer sends views of it and never calls read(). It
   * must not change until close().
   */
  readonly contents?: Uint8Array;
  /**
   * Reads up to `length` bytes at `offset` into `into` starting at its index
   * 0, resolving the number read. Fewer than `length` means end of file.
   */
  read(offset: number, length: number, into: Uint8Array): Promise<number>;
  close(): Promise<void> | void;
}

export interface FileProvider {
  /**
   * Opens a file for one transfer. Throws TftpError with code
   * TFTP_FILE_NOT_FOUND (TFTP error 1) or TFTP_ACCESS_VIOLATION (2); any
   * other error is sent as error 0 and logged.
   */
  open(request: FileRequest): Promise<TftpFile>;
}

/** A TftpFile over bytes in memory (generated scripts, tests). */
export function bufferFile(data: Uint8Array): TftpFile {
  return {
    size: data.length,
    contents: data,
    read(offset, length, into) {
      const part = data.subarray(Math.min(offset, data.length), Math.min(offset + length, data.length));
      into.set(part, 0);
      return Promise.resolve(part.length);
    },
    close() {},
  };
}

/** A TftpFile over an open file handle. */
class HandleFile implements TftpFile {
  constructor(protected readonly handle: FileHandle, readonly size: number) {}

  async read(offset: number, length: number, into: Uint8Array): Promise<number> {
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(into, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

function fsError(err: unknown, what: string): TftpError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') return new TftpError('TFTP_FILE_NOT_FOUND', `${what}: no such file`, { cause: err });
  if (code === 'EACCES' || code === 'EPERM' || code === 'ELOOP' || code === 'EISDIR') {
    return new TftpError('TFTP_ACCESS_VIOLATION', `${what}: ${code}`, { cause: err });
  }
  return new TftpError('TFTP_INTERNAL', `${what}: ${(err as Error).message}`, { cause: err });
}

/**
 * Opens a host file for reading. O_NOFOLLOW: the last component was already
 * resolved, so a symlink swapped in after that check is refused; O_NONBLOCK:
 * opening a FIFO must not hang the transfer (it is then refused as not a
 * regular file).
 */
async function openRegular(hostPath: string, what: string): Promise<{ handle: FileHandle; stats: BigIntStats }> {
  let handle: FileHandle;
  try {
    handle = await open(hostPath, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch (err) {
    throw fsError(err, what);
  }
  let stats: BigIntStats;
  try {
    stats = await handle.stat({ bigint: true });
  } catch (err) {
    await handle.close().catch(() => {});
    throw fsError(err, what);
  }
  if (!stats.isFile()) {
    await handle.close().catch(() => {});
    throw new TftpError('TFTP_ACCESS_VIOLATION', `${what}: not a regular file`);
  }
  return { handle, stats };
}

/**
 * What identifies one version of a file: a file replaced (new inode) or
 * written (new mtime and ctime, to the nanosecond where the filesystem
 * keeps them) is another version, and is read again.
 */
function versionOf(s: BigIntStats): string {
  return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
}

/**
 * The files served last, whole, by host path and version, least recently
 * used dropped first. A transfer of a cached file reads nothing: it sends
 * views of the shared bytes, which are never written after they are put
 * here (a new version is a new buffer).
 */
class FileCache {
  private readonly entries = new Map<string, { version: string; contents: Buffer }>();
  private bytes = 0;
  /** Host paths being read into the cache by a transfer: one at a time each. */
  readonly filling = new Set<string>();

  constructor(readonly maxBytes: number, readonly maxFileBytes: number) {}

  takes(size: number): boolean {
    return size <= this.maxFileBytes && size <= this.maxBytes;
  }

  get(path: string, version: string): Buffer | undefined {
    const e = this.entries.get(path);
    if (!e) return undefined;
    this.entries.delete(path);
    if (e.version !== version) {
      this.bytes -= e.contents.length;
      return undefined;
    }
    this.entries.set(path, e); // most recently used last
    return e.contents;
  }

  put(path: string, version: string, contents: Buffer): void {
    const old = this.entries.get(path);
    if (old) {
      this.entries.delete(path);
      this.bytes -= old.contents.length;
    }
    if (!this.takes(contents.length)) return;
    for (const [p, e] of this.entries) {
      if (this.bytes + contents.length <= this.maxBytes) break;
      this.entries.delete(p);
      this.bytes -= e.contents.length;
    }
    this.entries.set(path, { version, contents });
    this.bytes += contents.length;
  }

  get size(): { files: number; bytes: number } {
    return { files: this.entries.size, bytes: this.bytes };
  }
}

/**
 * A file read from disk that is also copied, as the transfer reads it in
 * order, into a buffer the cache keeps once the whole file went through.
 */
class CachingFile extends HandleFile {
  private readonly copy: Buffer;
  private filled = 0;

  constructor(handle: FileHandle, size: number, private readonly cache: FileCache, private readonly path: string, private readonly version: string) {
    super(handle, size);
    this.copy = Buffer.allocUnsafe(size);
    cache.filling.add(path);
  }

  override async read(offset: number, length: number, into: Uint8Array): Promise<number> {
    const n = await super.read(offset, length, into);
    if (offset === this.filled && n > 0 && offset + n <= this.size) {
      this.copy.set(into.subarray(0, n), offset);
      this.filled += n;
    }
    return n;
  }

  override async close(): Promise<void> {
    this.cache.filling.delete(this.path);
    // A version changed while being read is put under its old version, which
    // no later open matches: it is never served, only evicted.
    if (this.filled === this.size) this.cache.put(this.path, this.version, this.copy);
    await super.close();
  }
}

export interface FolderProviderOptions {
  /** The folder served: the requested path is looked up under it. Omit to serve only `files`. */
  root?: string;
  /**
   * Bytes of recently served files kept in memory, all files together; 0
   * turns the cache off. A cached file is checked against the disk (size,
   * inode, mtime, ctime) at each request, and served without reading it.
   */
  cacheBytes?: number;
  /** Largest file the cache keeps. */
  cacheFileBytes?: number;
  /**
   * Names the application maps, looked up before the root: a normalized
   * name (e.g. `undionly.kpxe`) to an absolute host path (e.g.
   * `/usr/lib/ipxe/undionly.kpxe`) or to the file's contents. These are
   * trusted configuration, so a mapped host path may lie outside the root.
   */
  files?: Record<string, string | Uint8Array>;
}

export const FOLDER_PROVIDER_DEFAULTS = {
  /** Room for the iPXE builds of every architecture and a few scripts and menus, several times over. */
  cacheBytes: 32 * 1024 * 1024,
  /** iPXE, pxelinux and shim are well under this; kernels and initrds usually go over HTTP. */
  cacheFileBytes: 8 * 1024 * 1024,
} as const;

/**
 * Serves a root folder plus virtual names. A path resolving outside the
 * root (through a symlink) is refused with TFTP error 2; so is anything
 * that is not a regular file (directories, devices, FIFOs).
 *
 * Files up to `cacheFileBytes` are kept in memory once a transfer has read
 * them whole. A request still resolves the path and stats the file (in
 * parallel: one thread-pool round trip), so a file replaced, rewritten or
 * moved is served as it is now; only the reading is saved: no open, no
 * reads, and the first DATA goes out as soon as the OACK is acknowledged.
 */
export class FolderFileProvider implements FileProvider {
  private readonly root: string | undefined;
  private realRoot: Promise<string> | undefined;
  private readonly files = new Map<string, string | Uint8Array>();
  private readonly cache: FileCache | undefined;

  constructor(options: FolderProviderOptions) {
    const problems: string[] = [];
    if (options.root !== undefined && (typeof options.root !== 'string' || options.root.length === 0)) problems.push('root must be a non-empty path');
    for (const name of ['cacheBytes', 'cacheFileBytes'] as const) {
      const v = options[name];
      if (v !== undefined && (!Number.isSafeInteger(v) || v < 0)) problems.push(`${name} must be an integer >= 0, not ${String(v)}`);
    }
    for (const [name, target] of Object.entries(options.files ?? {})) {
      try {
        this.setFile(name, target);
      } catch (err) {
        problems.push((err as Error).message);
      }
    }
    if (problems.length > 0) throw new TftpError('TFTP_CONFIG_INVALID', `invalid TFTP folder provider: ${problems.join('; ')}`);
    this.root = options.root === undefined ? undefined : resolve(options.root);
    const cacheBytes = options.cacheBytes ?? FOLDER_PROVIDER_DEFAULTS.cacheBytes;
    const cacheFileBytes = options.cacheFileBytes ?? FOLDER_PROVIDER_DEFAULTS.cacheFileBytes;
    this.cache = cacheBytes > 0 && cacheFileBytes > 0 ? new FileCache(cacheBytes, cacheFileBytes) : undefined;
  }

  /** Files and bytes the cache holds now. */
  cacheStats(): { files: number; bytes: number } {
    return this.cache?.size ?? { files: 0, bytes: 0 };
  }

  /** Maps (or re-maps) a virtual name to a host path or to contents. */
  setFile(name: string, target: string | Uint8Array): void {
    let key: string;
    try {
      key = normalizePath(name);
    } catch {
      throw new TftpError('TFTP_CONFIG_INVALID', `virtual file name ${JSON.stringify(name)} is not a valid TFTP path`);
    }
    if (typeof target === 'string' && !isAbsolute(target)) {
      throw new TftpError('TFTP_CONFIG_INVALID', `virtual file ${JSON.stringify(name)} must map to an absolute path, not ${JSON.stringify(target)}`);
    }
    if (typeof target !== 'string' && !(target instanceof Uint8Array)) {
      throw new TftpError('TFTP_CONFIG_INVALID', `virtual file ${JSON.stringify(name)} must map to a path or bytes`);
    }
    this.files.set(key, target);
  }

  deleteFile(name: string): boolean {
    try {
      return this.files.delete(normalizePath(name));
    } catch {
      return false;
    }
  }

  async open(request: FileRequest): Promise<TftpFile> {
    const mapped = this.files.get(request.path);
    if (mapped !== undefined) {
      if (typeof mapped !== 'string') return bufferFile(mapped);
      // lstat, as the open's O_NOFOLLOW: a mapped path that is a symlink is refused either way.
      const version = this.cache ? lstat(mapped, { bigint: true }) : undefined;
      version?.catch(() => {});
      return this.openHost(mapped, request.path, version);
    }
    if (this.root === undefined) throw new TftpError('TFTP_FILE_NOT_FOUND', `${request.path}: no such file`);

    // Belt and braces: the path is normalized, so join() cannot leave the
    // root lexically; realpath() then catches symlinks that do.
    const candidate = join(this.root, ...request.path.split('/'));
    const root = await this.realRootPath();
    // The stat for the cache runs beside the realpath. Were a symlink swapped
    // between the two, the version would be of another file than `real`,
    // which no cache entry of `real` matches: a version holds device and inode.
    const version = this.cache ? stat(candidate, { bigint: true }) : undefined;
    // Handled now: when the path is bad, realpath's error is the one reported.
    version?.catch(() => {});
    let real: string;
    try {
      real = await realpath(candidate);
    } catch (err) {
      throw fsError(err, request.path);
    }
    if (real !== root && !real.startsWith(root.endsWith(sep) ? root : root + sep)) {
      throw new TftpError('TFTP_ACCESS_VIOLATION', `${request.path}: resolves outside the root`);
    }
    return this.openHost(real, request.path, version);
  }

  /** A host file from the cache when `statting` finds the version cached, else opened (and maybe cached). */
  private async openHost(hostPath: string, what: string, statting: Promise<BigIntStats> | undefined): Promise<TftpFile> {
    const cache = this.cache;
    if (cache && statting) {
      // A failed stat is no answer: the open below reports the problem.
      const seen = await statting.catch(() => undefined);
      if (seen?.isFile()) {
        const hit = cache.get(hostPath, versionOf(seen));
        if (hit) return bufferFile(hit);
      }
    }
    const { handle, stats } = await openRegular(hostPath, what);
    const size = Number(stats.size);
    if (cache && cache.takes(size) && !cache.filling.has(hostPath)) return new CachingFile(handle, size, cache, hostPath, versionOf(stats));
    return new HandleFile(handle, size);
  }

  private realRootPath(): Promise<string> {
    // Resolved once; if the root does not exist yet, try again next time.
    this.realRoot ??= realpath(this.root!).catch((err: unknown) => {
      this.realRoot = undefined;
      throw fsError(err, 'the TFTP root');
    });
    return this.realRoot;
  }
}
