/**
 * Listing an initramfs without unpacking it: the kernel's buffer format
 * (Documentation/driver-api/early-userspace/buffer-format.rst) is one or more
 * cpio archives, each either plain or compressed, one after the other. Real
 * ones are an uncompressed early archive (CPU microcode) followed by the
 * compressed main archive (gzip, zstd, xz, lz4...).
 *
 * The plain archives are decoded here (cpio.ts); the first compressed segment
 * is streamed through a decompressor (node:zlib for gzip, the zstd, xz, lz4
 * and bzip2 programs for the others) into a second decoder. Only names, types,
 * sizes, symlink targets and the few files asked for are kept: a 40 MB
 * initramfs is listed in one pass with little memory.
 *
 * Then, per flavour, what the initramfs needs to mount its root over NBD:
 * - initramfs-tools (Debian's nbd-client package, its hook and
 *   scripts/local-top/nbd): nbd-client, the nbd module (or built in),
 *   scripts/local-top/nbd, and grep (busybox), which that script calls;
 * - dracut (modules.d/95nbd): nbd-client, the nbd module, the cmdline hook
 *   parse-nbdroot.sh and /sbin/nbdroot.
 */
import { spawn } from 'node:child_process';
import { open } from 'node:fs/promises';
import { posix } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { createReadStream } from 'node:fs';
import { COMPRESSION_MAGIC, type Compression } from './constants.js';
import { CpioDecoder, normalizeName, type CpioEntry } from './cpio.js';
import { imagesError } from './errors.js';

export type InitramfsFlavour = 'initramfs-tools' | 'dracut';

export interface InitramfsSegment {
  /** Byte offset of the segment in the initramfs file. */
  offset: number;
  compression: Compression | 'none';
  /** cpio archives (trailers) found in the segment. */
  archives: number;
  entries: number;
}

export interface InitramfsListing {
  /** Size of the initramfs file. */
  size: number;
  segments: InitramfsSegment[];
  /** Every entry by normalized path (no leading "/" or "./"); a later entry replaces an earlier one, as when unpacking. */
  entries: Map<string, CpioEntry>;
  /** The sum of the sizes of the files, i.e. what the kernel unpacks into its tmpfs. */
  unpackedBytes: number;
  warnings: string[];
}

export interface ListOptions {
  /** Regular files whose content to keep (small ones, e.g. modules.builtin). */
  capture?: (name: string) => boolean;
  /** Our limit on the bytes a compressed segment may decompress to (a guard against decompression bombs). */
  maxUnpackedBytes?: number;
  /** Our limit on the time one decompression may take. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export const DEFAULT_MAX_UNPACKED_BYTES = 4 * 1024 * 1024 * 1024;
export const DEFAULT_DECOMPRESS_TIMEOUT_MS = 300_000;
const READ_CHUNK = 1024 * 1024;

/** Decompressor programs: argv that read stdin and write stdout. gzip uses node:zlib. */
const DECOMPRESSORS: Record<Exclude<Compression, 'gzip'>, string[]> = {
  zstd: ['zstd', '-dcq'],
  xz: ['xz', '-dc'],
  lzma: ['xz', '--format=lzma', '-dc'],
  lz4: ['lz4', '-dc'],
  bzip2: ['bzip2', '-dc'],
};

export function detectCompression(head: Buffer): Compression | undefined {
  for (const { name, magic } of COMPRESSION_MAGIC) {
    if (head.length >= magic.length && head.subarray(0, magic.length).equals(magic)) return name;
  }
  return undefined;
}

/** Files the NBD analysis reads the content of. */
export const captureForNbd = (name: string): boolean => /(^|\/)lib\/modules\/[^/]+\/modules\.builtin$/.test(name);

/**
 * Lists an initramfs given as a path or as bytes. Throws
 * IMAGES_INITRAMFS_CORRUPT when it is not a valid initramfs and
 * IMAGES_INITRAMFS_COMPRESSION when its decompressor is missing.
 */
export async function listInitramfs(input: string | Buffer, options: ListOptions = {}): Promise<InitramfsListing> {
  const entries = new Map<string, CpioEntry>();
  let unpackedBytes = 0;
  const onEntry = (e: CpioEntry): void => {
    const old = entries.get(e.name);
    if (old?.type === 'file') unpackedBytes -= old.size;
    if (e.type === 'file') unpackedBytes += e.size;
    entries.set(e.name, e);
  };
  const warnings: string[] = [];
  const segments: InitramfsSegment[] = [];
  const outer = new CpioDecoder({ onEntry, capture: options.capture });

  // 1. The plain part, read until the decoder meets something that is not cpio.
  let size: number;
  if (Buffer.isBuffer(input)) {
    size = input.length;
    outer.push(input);
  } else {
    const fh = await open(input, 'r').catch((e: unknown) => {
      throw imagesError('IMAGES_INITRAMFS_CORRUPT', `cannot open ${input}: ${(e as Error).message}`, { cause: e });
    });
    try {
      size = (await fh.stat()).size;
      const buf = Buffer.alloc(READ_CHUNK);
      for (let pos = 0; pos < size && !outer.stopped; ) {
        const { bytesRead } = await fh.read(buf, 0, READ_CHUNK, pos);
        if (bytesRead === 0) break;
        outer.push(buf.subarray(0, bytesRead));
        pos += bytesRead;
      }
    } finally {
      await fh.close();
    }
  }
  if (size === 0) throw imagesError('IMAGES_INITRAMFS_CORRUPT', 'the initramfs is empty');
  if (outer.entries > 0 || outer.archives > 0) {
    segments.push({ offset: 0, compression: 'none', archives: outer.archives, entries: outer.entries });
  }
  if (!outer.stopped) {
    outer.end();
    return { size, segments, entries, unpackedBytes, warnings };
  }

  // 2. A compressed segment at foreignOffset.
  const at = outer.foreignOffset!;
  const head = Buffer.isBuffer(input) ? input.subarray(at, at + 8) : await readAt(input, at, 8);
  const compression = detectCompression(head);
  if (!compression) {
    throw imagesError('IMAGES_INITRAMFS_CORRUPT', `byte ${at} starts neither a cpio archive nor a known compression (${head.toString('hex')})`);
  }
  const inner = new CpioDecoder({ onEntry, capture: options.capture });
  const source = (): NodeJS.ReadableStream => (Buffer.isBuffer(input) ? readableOf(input.subarray(at)) : createReadStream(input, { start: at }));
  const problem = await decompressInto(compression, source, inner, options);
  if (problem !== undefined) {
    if (!inner.complete) {
      throw imagesError('IMAGES_INITRAMFS_CORRUPT', `the ${compression} archive at byte ${at} is damaged: ${problem}`);
    }
    // The decompressor stopped at bytes after the end of its data (padding or a further segment).
    warnings.push(`data after the ${compression} archive at byte ${at} was not read (${problem})`);
  }
  if (inner.stopped) {
    warnings.push(`the ${compression} archive at byte ${at} continues with data that is not cpio; it was not read`);
  } else {
    inner.end();
  }
  segments.push({ offset: at, compression, archives: inner.archives, entries: inner.entries });
  return { size, segments, entries, unpackedBytes, warnings };
}

async function readAt(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(length);
    const { bytesRead } = await fh.read(b, 0, length, offset);
    return b.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

function readableOf(buf: Buffer): NodeJS.ReadableStream {
  // A stream of 1 MiB slices, so a decompressor's stdin gets back-pressure.
  return (async function* () {
    for (let i = 0; i < buf.length; i += READ_CHUNK) yield buf.subarray(i, i + READ_CHUNK);
  })() as unknown as NodeJS.ReadableStream;
}

/**
 * Streams the source through the decompressor into the decoder. Returns
 * undefined on a clean end, or the decompressor's complaint (the caller
 * decides whether the archive was complete anyway).
 */
async function decompressInto(
  compression: Compression,
  source: () => NodeJS.ReadableStream,
  decoder: CpioDecoder,
  options: ListOptions,
): Promise<string | undefined> {
  const limit = options.maxUnpackedBytes ?? DEFAULT_MAX_UNPACKED_BYTES;
  let total = 0;
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      total += chunk.length;
      if (total > limit) {
        cb(imagesError('IMAGES_INITRAMFS_CORRUPT', `decompresses to more than ${limit} bytes`));
        return;
      }
      try {
        if (!decoder.stopped) decoder.push(chunk);
        cb();
      } catch (e) {
        cb(e as Error);
      }
    },
  });
  const timeoutMs = options.timeoutMs ?? DEFAULT_DECOMPRESS_TIMEOUT_MS;
  const signals = [AbortSignal.timeout(timeoutMs), ...(options.signal ? [options.signal] : [])];
  const signal = AbortSignal.any(signals);

  if (compression === 'gzip') {
    try {
      await pipeline(source(), createGunzip(), sink, { signal });
      return undefined;
    } catch (e) {
      return rethrowOwn(e, signal, options.signal);
    }
  }

  const [cmd, ...args] = DECOMPRESSORS[compression];
  const child = spawn(cmd!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-4096);
  });
  const exited = new Promise<{ code: number | null; error?: NodeJS.ErrnoException }>((resolve) => {
    child.on('error', (error: NodeJS.ErrnoException) => resolve({ code: null, error }));
    child.on('close', (code) => resolve({ code }));
  });
  const onAbort = (): void => {
    child.kill('SIGKILL');
  };
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    const feed = pipeline(source(), child.stdin).catch(() => undefined); // EPIPE when it stops reading early
    let sinkError: unknown;
    await pipeline(child.stdout, sink).catch((e: unknown) => {
      sinkError = e;
      child.kill('SIGKILL');
    });
    await feed;
    const { code, error } = await exited;
    if (error?.code === 'ENOENT') {
      throw imagesError('IMAGES_INITRAMFS_COMPRESSION', `the initramfs is ${compression}-compressed and ${cmd} is not installed`);
    }
    if (sinkError) return rethrowOwn(sinkError, signal, options.signal);
    if (signal.aborted) return rethrowOwn(new Error('aborted'), signal, options.signal);
    if (code !== 0) return `${cmd} exited with status ${code}: ${stderr.trim().split('\n').slice(-2).join(' ')}`;
    return undefined;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/** Our own errors (a corrupt cpio inside, a limit) and cancellations are thrown; decompressor complaints are returned. */
function rethrowOwn(e: unknown, signal: AbortSignal, userSignal: AbortSignal | undefined): string {
  if (userSignal?.aborted) throw imagesError('IMAGES_ABORTED', 'listing the initramfs was cancelled');
  if (signal.aborted) throw imagesError('IMAGES_INITRAMFS_CORRUPT', 'decompressing the initramfs took too long');
  if ((e as { code?: string }).code?.startsWith('IMAGES_')) throw e;
  return (e as Error).message;
}

// --- paths inside a listing ---------------------------------------------------

/** Our limit on symlinks followed while resolving one path (Linux uses 40). */
const MAX_HOPS = 40;

/** Finds `path` in the listing, following symlinks in every component (bin -> usr/bin). */
export function findEntry(listing: InitramfsListing, path: string): { path: string; entry: CpioEntry } | undefined {
  let rest = normalizeName(path).split('/').filter(Boolean);
  let done: string[] = [];
  let hops = 0;
  while (rest.length > 0) {
    const c = rest.shift()!;
    if (c === '.') continue;
    if (c === '..') {
      done.pop();
      continue;
    }
    const candidate = [...done, c].join('/');
    const e = listing.entries.get(candidate);
    if (e?.type === 'symlink' && e.linkTarget !== undefined) {
      if (++hops > MAX_HOPS) return undefined;
      if (e.linkTarget.startsWith('/')) done = [];
      rest = [...e.linkTarget.split('/').filter(Boolean), ...rest];
      continue;
    }
    if (!e && rest.length > 0) return undefined;
    done.push(c);
  }
  const final = done.join('/');
  const entry = listing.entries.get(final);
  return entry ? { path: final, entry } : undefined;
}

function findFirst(listing: InitramfsListing, paths: string[]): string | undefined {
  for (const p of paths) {
    const f = findEntry(listing, p);
    if (f) return f.path;
  }
  return undefined;
}

/** What made the initramfs, judged from its content. */
export function detectInitramfsFlavour(listing: InitramfsListing): InitramfsFlavour | undefined {
  const has = (p: string): boolean => findEntry(listing, p) !== undefined;
  if (has('conf/initramfs.conf') || has('scripts/functions')) return 'initramfs-tools';
  for (const name of listing.entries.keys()) {
    if (/^(usr\/)?lib\/dracut\//.test(name) || name === 'etc/initrd-release' || name === 'dracut-state.sh') return 'dracut';
  }
  return undefined;
}

// --- NBD support ---------------------------------------------------------------

export type NbdItem = 'nbd-client' | 'nbd-module' | 'nbd-script' | 'grep';

export interface NbdCheck {
  item: NbdItem;
  present: boolean;
  /** Where it was found in the initramfs (or "built into the kernel"). */
  found?: string;
  /** What is needed and why. */
  need: string;
  /** What the client kit (or the image's owner) must do when it is missing. */
  fix: string;
}

export interface NbdSupport {
  /** The flavour the checks were made for. */
  flavour: InitramfsFlavour;
  supported: boolean;
  checks: NbdCheck[];
  missing: NbdCheck[];
}

export interface NbdSupportOptions {
  flavour: InitramfsFlavour;
  kernelVersion: string;
  /** The image's /lib/modules/VERSION/modules.builtin lists nbd (CONFIG_BLK_DEV_NBD=y). */
  nbdBuiltin?: boolean;
}

const BIN_DIRS = ['sbin', 'usr/sbin', 'bin', 'usr/bin'];
const MODULE_SUFFIXES = ['.ko', '.ko.xz', '.ko.zst', '.ko.gz'];

function moduleInInitramfs(listing: InitramfsListing, kernelVersion: string, relPath: string): string | undefined {
  const base = `lib/modules/${kernelVersion}/kernel/${relPath}`;
  const hit = findFirst(listing, MODULE_SUFFIXES.map((s) => base + s));
  if (hit) return hit;
  // Built in, as the initramfs itself records it.
  const builtin = findEntry(listing, `lib/modules/${kernelVersion}/modules.builtin`)?.entry.content?.toString('utf8');
  if (builtin && builtin.split('\n').some((l) => l.trim() === `kernel/${relPath}.ko`)) return 'built into the kernel (modules.builtin)';
  return undefined;
}

export function nbdSupport(listing: InitramfsListing, o: NbdSupportOptions): NbdSupport {
  const checks: NbdCheck[] = [];
  const client = findFirst(listing, BIN_DIRS.map((d) => `${d}/nbd-client`));
  const module = moduleInInitramfs(listing, o.kernelVersion, 'drivers/block/nbd') ?? (o.nbdBuiltin ? 'built into the kernel' : undefined);
  const modulesDirs = [...listing.entries.keys()].filter((n) => /^(usr\/)?lib\/modules\/[^/]+$/.test(n)).map((n) => posix.basename(n));
  const otherKernel = modulesDirs.length > 0 && !modulesDirs.includes(o.kernelVersion) ? ` (the initramfs has modules for ${modulesDirs.join(', ')}, not ${o.kernelVersion})` : '';

  if (o.flavour === 'initramfs-tools') {
    checks.push({
      item: 'nbd-client',
      present: !!client,
      found: client,
      need: 'the nbd-client program, which connects /dev/nbd0 to the server',
      fix: 'install the nbd-client package in the image (its initramfs hook copies nbd-client), then update-initramfs -u -k all',
    });
    checks.push({
      item: 'nbd-module',
      present: !!module,
      found: module,
      need: `the nbd kernel module for ${o.kernelVersion}${otherKernel}`,
      fix: 'add "nbd" to /etc/initramfs-tools/modules in the image (nbd-client\'s hook adds it too), then update-initramfs -u -k all',
    });
    const script = findFirst(listing, ['scripts/local-top/nbd']);
    checks.push({
      item: 'nbd-script',
      present: !!script,
      found: script,
      need: 'scripts/local-top/nbd, which reads nbdroot= and runs nbd-client before the root is mounted',
      fix: 'install the nbd-client package in the image (it ships /usr/share/initramfs-tools/scripts/local-top/nbd), then update-initramfs -u -k all',
    });
    const grep = findFirst(listing, BIN_DIRS.map((d) => `${d}/grep`).concat(['bin/busybox', 'usr/bin/busybox']));
    checks.push({
      item: 'grep',
      present: !!grep,
      found: grep,
      need: 'grep (busybox), which scripts/local-top/nbd calls',
      fix: 'install busybox in the image and set BUSYBOX=y in /etc/initramfs-tools/initramfs.conf, then update-initramfs -u -k all',
    });
  } else {
    checks.push({
      item: 'nbd-client',
      present: !!client,
      found: client,
      need: 'the nbd-client program, which connects /dev/nbd0 to the server',
      fix: 'install nbd-client in the image, then dracut --force --add nbd',
    });
    checks.push({
      item: 'nbd-module',
      present: !!module,
      found: module,
      need: `the nbd kernel module for ${o.kernelVersion}${otherKernel}`,
      fix: 'regenerate with dracut --force --add nbd (module 95nbd installs the nbd driver), or add_drivers+=" nbd " in /etc/dracut.conf.d/',
    });
    let hook: string | undefined;
    for (const name of listing.entries.keys()) {
      if (/(^|\/)hooks\/cmdline\/\d+-?parse-nbdroot\.sh$/.test(name)) hook = name;
    }
    const nbdroot = findFirst(listing, ['sbin/nbdroot', 'usr/sbin/nbdroot']);
    checks.push({
      item: 'nbd-script',
      present: !!hook && !!nbdroot,
      found: hook && nbdroot ? `${hook}, ${nbdroot}` : undefined,
      need: 'dracut\'s nbd module: the cmdline hook parse-nbdroot.sh and /sbin/nbdroot, which read root=nbd:/netroot=nbd: and connect',
      fix: 'regenerate the initramfs with dracut --force --add nbd (needs /usr/lib/dracut/modules.d/95nbd in the image)',
    });
  }
  // No `found: undefined` keys: the result is stored as JSON and must read back equal.
  for (const c of checks) if (c.found === undefined) delete c.found;
  const missing = checks.filter((c) => !c.present);
  return { flavour: o.flavour, supported: missing.length === 0, checks, missing };
}
