/**
 * Reading files out of an ext2/3/4 file system inside a raw disk, without
 * loop devices or mounts, through debugfs (e2fsprogs) opened read-only at a
 * byte offset: `debugfs -R CMD 'disk.raw?offset=N'`.
 *
 * debugfs quirks this relies on (e2fsprogs 1.47):
 * - it exits 0 even when a command fails; failures are only on stderr
 *   ("File not found by ext2_lookup"), so stderr is read for them;
 * - it follows symlinks in the middle of a path but not the last component,
 *   so a final symlink is resolved here (`stat` prints "Fast link dest" for
 *   short targets; `cat` prints a long target, which lives in a data block);
 * - `ls -p` prints `/inode/mode/uid/gid/name/size/` per entry.
 * Paths are checked against a conservative character set before they are
 * put on a debugfs command line, which has its own quoting rules.
 */
import { posix } from 'node:path';
import { EXT_SB, EXT_SUPERBLOCK_OFFSET, EXT_SUPER_MAGIC } from './constants.js';
import { imagesError } from './errors.js';
import { run } from './exec.js';
import type { ByteSource } from './partition-table.js';

export type NodeType = 'file' | 'directory' | 'symlink' | 'other';

export interface FsNode {
  type: NodeType;
  size: number;
  mode: number;
  linkTarget?: string;
}

export interface DirEntry {
  name: string;
  type: NodeType;
  size: number;
}

/** Our limit on symlinks followed while resolving one path (Linux uses 40). */
export const MAX_SYMLINK_HOPS = 40;
/** Our limit on a file read into memory with readFile (os-release, modules.builtin). */
export const MAX_SMALL_FILE = 4 * 1024 * 1024;
const DEBUGFS_TIMEOUT_MS = 60_000;
/** Characters allowed in paths handed to debugfs (its command parser splits on blanks and quotes). */
const SAFE_PATH = /^\/[A-Za-z0-9._+@:,=~/-]*$/;

export interface ExtSuperblock {
  uuid: string;
  label: string;
  blockSize: number;
  blocks: number;
  /** Size of the file system in bytes. */
  size: number;
  hasJournal: boolean;
  extents: boolean;
}

/** Reads the ext2/3/4 superblock at `offset`; undefined when there is none. */
export function readExtSuperblock(src: ByteSource, offset: number): ExtSuperblock | undefined {
  const sb = src.read(offset + EXT_SUPERBLOCK_OFFSET, 1024);
  if (sb.length < 1024 || sb.readUInt16LE(EXT_SB.s_magic) !== EXT_SUPER_MAGIC) return undefined;
  const logBlock = sb.readUInt32LE(EXT_SB.s_log_block_size);
  if (logBlock > 6) return undefined; // block sizes 1 KiB..64 KiB
  const blockSize = 1024 << logBlock;
  const incompat = sb.readUInt32LE(EXT_SB.s_feature_incompat);
  const hi = incompat & 0x80 ? sb.readUInt32LE(EXT_SB.s_blocks_count_hi) : 0;
  const blocks = hi * 2 ** 32 + sb.readUInt32LE(EXT_SB.s_blocks_count_lo);
  const uuidBytes = sb.subarray(EXT_SB.s_uuid, EXT_SB.s_uuid + 16);
  // The ext UUID is stored as plain bytes (RFC 4122 order), unlike GPT GUIDs.
  const h = uuidBytes.toString('hex');
  const uuid = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  const labelBytes = sb.subarray(EXT_SB.s_volume_name, EXT_SB.s_volume_name + 16);
  const nul = labelBytes.indexOf(0);
  return {
    uuid,
    label: labelBytes.subarray(0, nul < 0 ? 16 : nul).toString('utf8'),
    blockSize,
    blocks,
    size: blocks * blockSize,
    hasJournal: (sb.readUInt32LE(EXT_SB.s_feature_compat) & 0x4) !== 0,
    extents: (incompat & 0x40) !== 0,
  };
}

function modeType(mode: number): NodeType {
  switch (mode & 0o170000) {
    case 0o100000:
      return 'file';
    case 0o040000:
      return 'directory';
    case 0o120000:
      return 'symlink';
    default:
      return 'other';
  }
}

export class ExtFsReader {
  private readonly device: string;
  private readonly lstatCache = new Map<string, FsNode | undefined>();

  constructor(
    readonly diskPath: string,
    readonly offset: number,
    private readonly options: { signal?: AbortSignal } = {},
  ) {
    if (diskPath.includes('?')) throw imagesError('IMAGES_BAD_OPTION', `disk path ${JSON.stringify(diskPath)} contains "?", which debugfs reads as its option separator`);
    if (!Number.isSafeInteger(offset) || offset < 0) throw imagesError('IMAGES_BAD_OPTION', `bad file system offset ${offset}`);
    this.device = offset === 0 ? diskPath : `${diskPath}?offset=${offset}`;
  }

  private async debugfs(command: string, check: (stderr: string) => string | undefined): Promise<Buffer> {
    const r = await run('debugfs', ['-R', command, this.device], {
      timeoutMs: DEBUGFS_TIMEOUT_MS,
      check: false,
      maxStdout: MAX_SMALL_FILE + 65536,
      signal: this.options.signal,
    });
    const problems = r.stderr
      .split('\n')
      .filter((l) => l.trim() && !/^debugfs \d/.test(l));
    const fatal = check(problems.join('\n'));
    if (r.code !== 0 || fatal) {
      throw imagesError('IMAGES_FS_READ_FAILED', `debugfs ${command} on ${this.device}: ${fatal ?? problems.join('; ') ?? `status ${r.code}`}`);
    }
    return r.stdout;
  }

  private static checkPath(path: string): string {
    const p = posix.normalize(path);
    if (!SAFE_PATH.test(p) || p.length > 4096) {
      throw imagesError('IMAGES_FS_READ_FAILED', `path ${JSON.stringify(path)} has characters the reader does not pass to debugfs`);
    }
    return p;
  }

  /** Information about `path` without following a final symlink; undefined when it does not exist. */
  async lstat(path: string): Promise<FsNode | undefined> {
    const p = ExtFsReader.checkPath(path);
    if (this.lstatCache.has(p)) return this.lstatCache.get(p);
    let missing = false;
    const out = (
      await this.debugfs(`stat ${p}`, (err) => {
        if (/File not found|not found by ext2_lookup|Ext2 inode is not a directory/i.test(err)) {
          missing = true;
          return undefined;
        }
        return err.trim() ? err : undefined;
      })
    ).toString('utf8');
    if (missing) {
      this.lstatCache.set(p, undefined);
      return undefined;
    }
    const typeName = /Type:\s+(\S+)/.exec(out)?.[1];
    const mode = parseInt(/Mode:\s+([0-7]+)/.exec(out)?.[1] ?? '0', 8);
    const size = Number(/Size:\s+(\d+)/.exec(out)?.[1] ?? '0');
    const type: NodeType = typeName === 'regular' ? 'file' : typeName === 'directory' ? 'directory' : typeName === 'symlink' ? 'symlink' : 'other';
    const node: FsNode = { type, size, mode };
    if (type === 'symlink') {
      const fast = /Fast link dest:\s*"([\s\S]*)"\s*$/.exec(out);
      if (fast) node.linkTarget = fast[1];
      else node.linkTarget = (await this.debugfs(`cat ${p}`, (err) => (err.trim() ? err : undefined))).toString('utf8');
    }
    this.lstatCache.set(p, node);
    return node;
  }

  /**
   * Follows symlinks (the last component here; the middle ones debugfs
   * follows itself) and returns the final path and its node.
   */
  async resolve(path: string): Promise<{ path: string; node: FsNode } | undefined> {
    let p = ExtFsReader.checkPath(path);
    for (let hops = 0; hops <= MAX_SYMLINK_HOPS; hops++) {
      const node = await this.lstat(p);
      if (!node) return undefined;
      if (node.type !== 'symlink') return { path: p, node };
      const t = node.linkTarget ?? '';
      p = ExtFsReader.checkPath(t.startsWith('/') ? t : posix.join(posix.dirname(p), t));
    }
    return undefined; // a symlink loop
  }

  async exists(path: string): Promise<boolean> {
    return (await this.resolve(path)) !== undefined;
  }

  /** The entries of a directory (following symlinks to it), without . and ..; undefined when it is not there. */
  async list(path: string): Promise<DirEntry[] | undefined> {
    const r = await this.resolve(path);
    if (!r || r.node.type !== 'directory') return undefined;
    const out = (await this.debugfs(`ls -p ${r.path}`, (err) => (err.trim() ? err : undefined))).toString('utf8');
    const entries: DirEntry[] = [];
    for (const line of out.split('\n')) {
      const m = /^\/(\d+)\/([0-7]+)\/\d+\/\d+\/(.*)\/(\d*)\/$/.exec(line);
      if (!m || m[3] === '.' || m[3] === '..' || m[1] === '0') continue;
      entries.push({ name: m[3]!, type: modeType(parseInt(m[2]!, 8)), size: Number(m[4] || 0) });
    }
    return entries;
  }

  /** A small file's content (os-release, modules.builtin), following symlinks. */
  async readFile(path: string, limit = MAX_SMALL_FILE): Promise<Buffer | undefined> {
    const r = await this.resolve(path);
    if (!r || r.node.type !== 'file') return undefined;
    if (r.node.size > limit) throw imagesError('IMAGES_FS_READ_FAILED', `${path} is ${r.node.size} bytes, more than the ${limit} this reader loads`);
    const data = await this.debugfs(`cat ${r.path}`, (err) => (err.trim() ? err : undefined));
    if (data.length !== r.node.size) throw imagesError('IMAGES_FS_READ_FAILED', `short read of ${path}: ${data.length} of ${r.node.size} bytes`);
    return data;
  }

  /** Copies a (large) file out to `dest` on the host; returns its size. */
  async dumpTo(path: string, dest: string): Promise<number> {
    const r = await this.resolve(path);
    if (!r || r.node.type !== 'file') throw imagesError('IMAGES_FS_READ_FAILED', `${path} is not a file in the image`);
    if (dest.includes('"') || /[\n\r]/.test(dest)) throw imagesError('IMAGES_BAD_OPTION', `destination ${JSON.stringify(dest)} cannot be passed to debugfs`);
    await this.debugfs(`dump "${r.path}" "${dest}"`, (err) => (err.trim() ? err : undefined));
    return r.node.size;
  }
}
