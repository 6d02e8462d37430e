/**
 * What the TFTP server needs from the application: a way to turn a
 * requested (already normalized) path into something it can read ranges
 * of. The app implements `FileProvider` over its boot files; the
 * ready-made `FolderFileProvider` serves a root folder plus virtual names
 * mapped to host files or in-memory contents.
 */
import { constants as fsConstants, type Stats } from 'node:fs';
import { open, realpath, type FileHandle } from 'node:fs/promises';
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
  constructor(private readonly handle: FileHandle, readonly size: number) {}

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
async function openRegular(hostPath: string, what: string): Promise<TftpFile> {
  let handle: FileHandle;
  try {
    handle = await open(hostPath, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch (err) {
    throw fsError(err, what);
  }
  let stat: Stats;
  try {
    stat = await handle.stat();
  } catch (err) {
    await handle.close().catch(() => {});
    throw fsError(err, what);
  }
  if (!stat.isFile()) {
    await handle.close().catch(() => {});
    throw new TftpError('TFTP_ACCESS_VIOLATION', `${what}: not a regular file`);
  }
  return new HandleFile(handle, stat.size);
}

export interface FolderProviderOptions {
  /** The folder served: the requested path is looked up under it. Omit to serve only `files`. */
  root?: string;
  /**
   * Names the application maps, looked up before the root: a normalized
   * name (e.g. `undionly.kpxe`) to an absolute host path (e.g.
   * `/usr/lib/ipxe/undionly.kpxe`) or to the file's contents. These are
   * trusted configuration, so a mapped host path may lie outside the root.
   */
  files?: Record<string, string | Uint8Array>;
}

/**
 * Serves a root folder plus virtual names. A path resolving outside the
 * root (through a symlink) is refused with TFTP error 2; so is anything
 * that is not a regular file (directories, devices, FIFOs).
 */
export class FolderFileProvider implements FileProvider {
  private readonly root: string | undefined;
  private realRoot: Promise<string> | undefined;
  private readonly files = new Map<string, string | Uint8Array>();

  constructor(options: FolderProviderOptions) {
    const problems: string[] = [];
    if (options.root !== undefined && (typeof options.root !== 'string' || options.root.length === 0)) problems.push('root must be a non-empty path');
    for (const [name, target] of Object.entries(options.files ?? {})) {
      try {
        this.setFile(name, target);
      } catch (err) {
        problems.push((err as Error).message);
      }
    }
    if (problems.length > 0) throw new TftpError('TFTP_CONFIG_INVALID', `invalid TFTP folder provider: ${problems.join('; ')}`);
    this.root = options.root === undefined ? undefined : resolve(options.root);
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
    if (mapped !== undefined) return typeof mapped === 'string' ? openRegular(mapped, request.path) : bufferFile(mapped);
    if (this.root === undefined) throw new TftpError('TFTP_FILE_NOT_FOUND', `${request.path}: no such file`);

    // Belt and braces: the path is normalized, so join() cannot leave the
    // root lexically; realpath() then catches symlinks that do.
    const candidate = join(this.root, ...request.path.split('/'));
    const root = await this.realRootPath();
    let real: string;
    try {
      real = await realpath(candidate);
    } catch (err) {
      throw fsError(err, request.path);
    }
    if (real !== root && !real.startsWith(root.endsWith(sep) ? root : root + sep)) {
      throw new TftpError('TFTP_ACCESS_VIOLATION', `${request.path}: resolves outside the root`);
    }
    return openRegular(real, request.path);
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
