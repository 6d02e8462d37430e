/**
 * What is inside a raw disk image, read without loop devices or mounts: the
 * partition table (partition-table.ts), the file system of each partition
 * (superblock magic), the Linux root among them, its /etc/os-release, the
 * kernels in /boot with their initramfs, the default kernel, which
 * initramfs generator the image has installed, and whether each initramfs
 * can mount the root over NBD (initramfs.ts). Files are read with debugfs
 * (ext-fs.ts), so the root must be ext2/3/4.
 *
 * extractBootFiles() then copies one kernel and its initramfs out, with
 * their SHA-256, for the HTTP boot endpoints.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, openSync, readSync, fstatSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { ROOT_CANDIDATE_KINDS, type PartitionKind } from './constants.js';
import { isDisklessError } from '../lib/errors.js';
import { imagesError } from './errors.js';
import { ExtFsReader, readExtSuperblock } from './ext-fs.js';
import {
  captureForNbd,
  detectInitramfsFlavour,
  listInitramfs,
  nbdSupport,
  type InitramfsFlavour,
  type InitramfsSegment,
  type NbdSupport,
} from './initramfs.js';
import { fsyncPath } from './files.js';
import { readPartitionTable, type ByteSource, type PartitionTable } from './partition-table.js';

export type FsType = 'ext2' | 'ext3' | 'ext4' | 'vfat' | 'swap' | 'xfs' | 'btrfs' | 'unknown';

export interface PartitionReport {
  /** 0 = the whole disk is one file system (no partition table). */
  number: number;
  offset: number;
  size: number;
  kind: PartitionKind | 'whole-disk';
  fsType: FsType;
  fsUuid?: string;
  fsLabel?: string;
}

export interface InitramfsReport {
  /** The generator that made it, from its content. */
  flavour?: InitramfsFlavour;
  segments: InitramfsSegment[];
  files: number;
  unpackedBytes: number;
  nbd: NbdSupport;
  warnings: string[];
}

export interface KernelReport {
  version: string;
  /** Path inside the file system of `partition`. */
  kernelPath: string;
  kernelSize: number;
  initrdPath?: string;
  initrdSize?: number;
  /** The partition holding the files: the root's, or a separate /boot's. */
  partition: number;
  initramfs?: InitramfsReport;
}

export interface DiskInspection {
  path: string;
  size: number;
  /** null: no partition table, the disk is a bare file system (root=/dev/nbd0). */
  partitionTable: PartitionTable | null;
  partitions: PartitionReport[];
  root: {
    partition: number;
    offset: number;
    size: number;
    fsType: FsType;
    uuid: string;
    label: string;
    /** The device the client's kernel will see the root as, with the disk on nbd0. */
    nbdDevice: string;
  };
  /** /etc/os-release (or /usr/lib/os-release) as key/value pairs. */
  osRelease: Record<string, string>;
  /** What the image has installed to make initramfs images; undefined when it has neither. */
  initramfsFlavour?: InitramfsFlavour;
  installed: { initramfsTools: boolean; dracut: boolean; dracutNbdModule: boolean; nbdClient: boolean };
  /** Newest first. */
  kernels: KernelReport[];
  defaultKernel: string;
  /** How the default was chosen: the image's /vmlinuz link, or the newest version. */
  defaultKernelFrom: 'vmlinuz-link' | 'newest';
  warnings: string[];
}

export interface InspectOptions {
  /**
   * Throw IMAGES_NO_INITRAMFS / IMAGES_INITRAMFS_NO_NBD when the default
   * kernel cannot mount its root over NBD (default true). With false the
   * inspection is returned and its kernels' `initramfs.nbd` tell what is missing.
   */
  requireNbd?: boolean;
  /** Where initramfs files are copied to be listed (default: the system's temp directory). */
  tmpDir?: string;
  signal?: AbortSignal;
}

/** Kernel versions as file names may carry them (vmlinuz-6.1.0-18-amd64, vmlinuz-6.5.6-300.fc39.x86_64). */
const KERNEL_VERSION = /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$/;
const INITRD_NAMES = (v: string): string[] => [`initrd.img-${v}`, `initramfs-${v}.img`, `initrd-${v}`, `initrd-${v}.img`];

/** Compares kernel versions: digit runs as numbers, other runs as text (6.1.0-18 > 6.1.0-9). */
export function compareKernelVersions(a: string, b: string): number {
  const split = (s: string): string[] => s.match(/\d+|\D+/g) ?? [];
  const x = split(a);
  const y = split(b);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const p = x[i];
    const q = y[i];
    if (p === undefined) return -1;
    if (q === undefined) return 1;
    const pn = /^\d/.test(p);
    const qn = /^\d/.test(q);
    if (pn && qn) {
      const d = Number(p) - Number(q);
      if (d !== 0) return d < 0 ? -1 : 1;
    } else if (p !== q) {
      return p < q ? -1 : 1;
    }
  }
  return 0;
}

/** os-release(5): shell-style KEY=value lines, values optionally quoted. */
export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (!m) continue;
    let v = m[2]!;
    const q = v[0];
    if ((q === '"' || q === "'") && v.endsWith(q) && v.length >= 2) {
      v = v.slice(1, -1);
      if (q === '"') v = v.replace(/\\([$"`\\])/g, '$1');
    }
    out[m[1]!] = v;
  }
  return out;
}

function fileSource(path: string): ByteSource & { close(): void } {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw imagesError('IMAGES_DISK_UNREADABLE', `cannot open ${path}: ${(e as Error).message}`, { cause: e });
  }
  const size = fstatSync(fd).size;
  return {
    size,
    read(offset, length) {
      const n = Math.max(0, Math.min(length, size - offset));
      const b = Buffer.alloc(n);
      let done = 0;
      while (done < n) {
        const r = readSync(fd, b, done, n - done, offset + done);
        if (r === 0) break;
        done += r;
      }
      return b.subarray(0, done);
    },
    close: () => closeSync(fd),
  };
}

function probeFs(src: ByteSource, offset: number, size: number): { fsType: FsType; fsUuid?: string; fsLabel?: string } {
  const sb = readExtSuperblock(src, offset);
  if (sb) {
    // ext2/3/4 share the magic; the features tell them apart (extents => ext4, journal => ext3).
    const fsType: FsType = sb.extents ? 'ext4' : sb.hasJournal ? 'ext3' : 'ext2';
    return { fsType, fsUuid: sb.uuid, fsLabel: sb.label };
  }
  const head = src.read(offset, Math.min(size, 4096));
  if (head.length >= 4 && head.toString('latin1', 0, 4) === 'XFSB') return { fsType: 'xfs' };
  if (head.length >= 512 && head[510] === 0x55 && head[511] === 0xaa && /FAT/.test(head.toString('latin1', 0x36, 0x5a))) return { fsType: 'vfat' };
  if (head.length >= 4096 && head.toString('latin1', 4086, 4096) === 'SWAPSPACE2') return { fsType: 'swap' };
  const btrfs = src.read(offset + 0x10040, 8);
  if (btrfs.toString('latin1') === '_BHRfS_M') return { fsType: 'btrfs' };
  return { fsType: 'unknown' };
}

const isExt = (t: FsType): boolean => t === 'ext2' || t === 'ext3' || t === 'ext4';

/**
 * Inspects a raw disk image. Throws IMAGES_UNKNOWN_PARTITION_TABLE (and the
 * other partition table codes), IMAGES_NO_LINUX_ROOT,
 * IMAGES_UNSUPPORTED_FILESYSTEM, IMAGES_NO_KERNEL, and with requireNbd
 * (the default) IMAGES_NO_INITRAMFS / IMAGES_INITRAMFS_NO_NBD, whose
 * `details` carry the inspection and what the client kit must add.
 */
export async function inspectDisk(path: string, options: InspectOptions = {}): Promise<DiskInspection> {
  const src = fileSource(path);
  const diskSize = src.size;
  const warnings: string[] = [];
  let table: PartitionTable | null = null;
  const partitions: PartitionReport[] = [];
  try {
    try {
      table = readPartitionTable(src);
    } catch (e) {
      if (!isDisklessError(e, 'IMAGES_UNKNOWN_PARTITION_TABLE') || !readExtSuperblock(src, 0)) throw e;
    }
    if (table) {
      warnings.push(...table.warnings);
      for (const p of table.partitions) {
        if (p.kind === 'extended') continue;
        partitions.push({ number: p.number, offset: p.offset, size: p.size, kind: p.kind, ...probeFs(src, p.offset, p.size) });
      }
    } else {
      partitions.push({ number: 0, offset: 0, size: src.size, kind: 'whole-disk', ...probeFs(src, 0, src.size) });
    }
  } finally {
    src.close();
  }

  // The root: an ext file system with os-release and an init. Typed root partitions first.
  const order = (p: PartitionReport): number => (p.kind === 'linux-root-x86-64' ? 0 : p.kind === 'whole-disk' || p.kind === 'linux-filesystem' ? 1 : 2);
  const candidates = partitions
    .filter((p) => p.kind === 'whole-disk' || ROOT_CANDIDATE_KINDS.has(p.kind as PartitionKind))
    .sort((a, b) => order(a) - order(b) || a.number - b.number);
  let root: { part: PartitionReport; fs: ExtFsReader; osRelease: Record<string, string> } | undefined;
  const readers = new Map<number, ExtFsReader>();
  const reader = (p: PartitionReport): ExtFsReader => {
    let r = readers.get(p.number);
    if (!r) readers.set(p.number, (r = new ExtFsReader(path, p.offset, { signal: options.signal })));
    return r;
  };
  for (const p of candidates) {
    if (!isExt(p.fsType)) continue;
    const fs = reader(p);
    let osText: Buffer | undefined;
    try {
      osText = (await fs.readFile('/etc/os-release')) ?? (await fs.readFile('/usr/lib/os-release'));
      if (!osText) continue;
      if (!(await fs.exists('/sbin/init')) && !(await fs.exists('/usr/lib/systemd'))) continue;
    } catch (e) {
      // A damaged file system in one partition must not hide a good root in another.
      if (!isDisklessError(e, 'IMAGES_FS_READ_FAILED')) throw e;
      warnings.push(`partition ${p.number}: its ${p.fsType} file system cannot be read (${(e as Error).message.split('\n')[0]})`);
      continue;
    }
    if (root) {
      warnings.push(`partition ${p.number} also looks like a Linux root; partition ${root.part.number} is used`);
      continue;
    }
    root = { part: p, fs, osRelease: parseOsRelease(osText.toString('utf8')) };
  }
  if (!root) {
    const other = partitions.find((p) => p.fsType === 'xfs' || p.fsType === 'btrfs');
    if (other) {
      throw imagesError('IMAGES_UNSUPPORTED_FILESYSTEM', `partition ${other.number} holds ${other.fsType}; only ext2/3/4 roots can be read and served`, {
        details: { partitions },
      });
    }
    throw imagesError(
      'IMAGES_NO_LINUX_ROOT',
      partitions.length === 0
        ? 'the disk has a partition table with no partitions'
        : `none of the partitions (${partitions.map((p) => `${p.number}: ${p.fsType}`).join(', ')}) holds an ext file system with /etc/os-release and /sbin/init or /usr/lib/systemd`,
      { details: { partitions } },
    );
  }

  const fs = root.fs;
  const installed = {
    initramfsTools: (await fs.exists('/usr/sbin/mkinitramfs')) || (await fs.exists('/usr/share/initramfs-tools')),
    dracut: (await fs.exists('/usr/bin/dracut')) || (await fs.exists('/usr/lib/dracut/dracut-functions.sh')),
    dracutNbdModule: await fs.exists('/usr/lib/dracut/modules.d/95nbd'),
    nbdClient: (await fs.exists('/usr/sbin/nbd-client')) || (await fs.exists('/sbin/nbd-client')),
  };

  // Kernels: /boot of the root, else the top of another ext partition (a separate /boot).
  const kernels: KernelReport[] = [];
  const collect = async (part: PartitionReport, reader: ExtFsReader, dir: string): Promise<void> => {
    const entries = await reader.list(dir);
    if (!entries) return;
    const names = new Map(entries.map((e) => [e.name, e]));
    for (const e of entries) {
      const m = /^vmlinuz-(.+)$/.exec(e.name);
      if (!m || !KERNEL_VERSION.test(m[1]!)) continue;
      const kernel = await reader.resolve(posix.join(dir, e.name));
      if (!kernel || kernel.node.type !== 'file') continue;
      const version = m[1]!;
      const report: KernelReport = { version, kernelPath: kernel.path, kernelSize: kernel.node.size, partition: part.number };
      for (const name of INITRD_NAMES(version)) {
        if (!names.has(name)) continue;
        const initrd = await reader.resolve(posix.join(dir, name));
        if (initrd?.node.type === 'file') {
          report.initrdPath = initrd.path;
          report.initrdSize = initrd.node.size;
          break;
        }
      }
      kernels.push(report);
    }
  };
  await collect(root.part, fs, '/boot');
  if (kernels.length === 0) {
    for (const p of partitions) {
      if (p === root.part || !isExt(p.fsType)) continue;
      await collect(p, reader(p), '/');
      if (kernels.length > 0) {
        warnings.push(`the kernels are on partition ${p.number} (a separate /boot)`);
        break;
      }
    }
  }
  if (kernels.length === 0) {
    throw imagesError('IMAGES_NO_KERNEL', `the root file system (partition ${root.part.number}) has no kernel: no /boot/vmlinuz-VERSION`, {
      details: { partitions },
    });
  }
  kernels.sort((a, b) => compareKernelVersions(b.version, a.version));

  // The default: what /vmlinuz (or /boot/vmlinuz) points to, else the newest.
  let defaultKernel = kernels[0]!.version;
  let defaultKernelFrom: DiskInspection['defaultKernelFrom'] = 'newest';
  for (const link of ['/vmlinuz', '/boot/vmlinuz']) {
    const node = await fs.lstat(link);
    if (node?.type !== 'symlink' || !node.linkTarget) continue;
    const m = /^vmlinuz-(.+)$/.exec(posix.basename(node.linkTarget));
    const hit = m && kernels.find((k) => k.version === m[1]);
    if (hit) {
      defaultKernel = hit.version;
      defaultKernelFrom = 'vmlinuz-link';
      break;
    }
    warnings.push(`${link} points to ${node.linkTarget}, which is not one of the kernels in /boot`);
  }

  // Each initramfs: list it and check it for NBD.
  let flavour: InitramfsFlavour | undefined = installed.initramfsTools && !installed.dracut ? 'initramfs-tools' : installed.dracut && !installed.initramfsTools ? 'dracut' : undefined;
  const scratch = await mkdtemp(join(options.tmpDir ?? tmpdir(), 'diskless-inspect-'));
  try {
    for (const k of kernels) {
      if (!k.initrdPath) continue;
      const part = partitions.find((p) => p.number === k.partition)!;
      const local = join(scratch, 'initrd');
      await reader(part).dumpTo(k.initrdPath, local);
      const listing = await listInitramfs(local, { capture: captureForNbd, signal: options.signal });
      await rm(local, { force: true });
      const contentFlavour = detectInitramfsFlavour(listing);
      if (!flavour && installed.initramfsTools && installed.dracut && k.version === defaultKernel) flavour = contentFlavour;
      const builtin = (await fs.readFile(`/lib/modules/${k.version}/modules.builtin`).catch(() => undefined))?.toString('utf8');
      const nbdBuiltin = builtin?.split('\n').some((l) => l.trim() === 'kernel/drivers/block/nbd.ko') ?? false;
      const checkAs = flavour ?? contentFlavour ?? 'initramfs-tools';
      k.initramfs = {
        ...(contentFlavour ? { flavour: contentFlavour } : {}),
        segments: listing.segments,
        files: listing.entries.size,
        unpackedBytes: listing.unpackedBytes,
        nbd: nbdSupport(listing, { flavour: checkAs, kernelVersion: k.version, nbdBuiltin }),
        warnings: listing.warnings,
      };
      if (contentFlavour && flavour && contentFlavour !== flavour) {
        warnings.push(`the initramfs of ${k.version} was made by ${contentFlavour}, but the image has ${flavour} installed`);
      }
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  if (!flavour) {
    flavour = kernels.find((k) => k.version === defaultKernel)?.initramfs?.flavour;
    if (!installed.initramfsTools && !installed.dracut) warnings.push('the image has neither initramfs-tools nor dracut installed; its initramfs cannot be regenerated');
  }

  const rootPart = root.part;
  const inspection: DiskInspection = {
    path,
    size: diskSize,
    partitionTable: table,
    partitions,
    root: {
      partition: rootPart.number,
      offset: rootPart.offset,
      size: rootPart.size,
      fsType: rootPart.fsType,
      uuid: rootPart.fsUuid!,
      label: rootPart.fsLabel ?? '',
      nbdDevice: rootPart.number === 0 ? '/dev/nbd0' : `/dev/nbd0p${rootPart.number}`,
    },
    osRelease: root.osRelease,
    ...(flavour ? { initramfsFlavour: flavour } : {}),
    installed,
    kernels,
    defaultKernel,
    defaultKernelFrom,
    warnings,
  };
  if (options.requireNbd ?? true) assertNbdBootable(inspection);
  return inspection;
}

/**
 * Throws unless `kernelVersion` (default: the image's default kernel) has an
 * initramfs that can mount the root over NBD; the error's details list what
 * the client kit must add.
 */
export function assertNbdBootable(inspection: DiskInspection, kernelVersion = inspection.defaultKernel): KernelReport {
  const k = inspection.kernels.find((x) => x.version === kernelVersion);
  if (!k) {
    throw imagesError('IMAGES_NO_KERNEL', `the image has no kernel ${kernelVersion} (it has ${inspection.kernels.map((x) => x.version).join(', ')})`);
  }
  if (!k.initrdPath || !k.initramfs) {
    throw imagesError('IMAGES_NO_INITRAMFS', `kernel ${k.version} has no initramfs in /boot (looked for ${INITRD_NAMES(k.version).join(', ')})`, {
      details: { inspection },
    });
  }
  const nbd = k.initramfs.nbd;
  if (!nbd.supported) {
    const lines = nbd.missing.map((m) => `- ${m.item}: ${m.need}; fix: ${m.fix}`);
    throw imagesError('IMAGES_INITRAMFS_NO_NBD', `the initramfs of ${k.version} (${nbd.flavour}) cannot mount the root over NBD; it lacks:\n${lines.join('\n')}`, {
      details: { missing: nbd.missing, inspection },
    });
  }
  return k;
}

export interface BootFile {
  /** Absolute path of the written file. */
  path: string;
  size: number;
  sha256: string;
}

export interface BootFiles {
  kernelVersion: string;
  kernel: BootFile;
  initrd: BootFile;
}

/** The names extractBootFiles writes in destDir (and SHA256SUMS, in sha256sum -c format). */
export const BOOT_FILE_NAMES = { kernel: 'vmlinuz', initrd: 'initrd.img', sums: 'SHA256SUMS' } as const;

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * Copies the kernel and initramfs of `kernelVersion` out of the image into
 * destDir as `vmlinuz` and `initrd.img`, plus SHA256SUMS. Files are written
 * under temporary names and renamed when complete, so a reader of destDir
 * never sees half a kernel.
 */
export async function extractBootFiles(path: string, inspection: DiskInspection, kernelVersion: string, destDir: string): Promise<BootFiles> {
  const k = inspection.kernels.find((x) => x.version === kernelVersion);
  if (!k) {
    throw imagesError('IMAGES_NO_KERNEL', `the image has no kernel ${kernelVersion} (it has ${inspection.kernels.map((x) => x.version).join(', ')})`);
  }
  if (!k.initrdPath) throw imagesError('IMAGES_NO_INITRAMFS', `kernel ${kernelVersion} has no initramfs in the image`);
  const part = inspection.partitions.find((p) => p.number === k.partition);
  if (!part) throw imagesError('IMAGES_NO_KERNEL', `partition ${k.partition} of kernel ${kernelVersion} is not in the inspection`);
  await mkdir(destDir, { recursive: true });
  const fs = new ExtFsReader(path, part.offset);
  const tag = randomBytes(6).toString('hex');
  const out = async (from: string, name: string, expected: number): Promise<BootFile> => {
    const tmp = join(destDir, `.${name}.${tag}.tmp`);
    try {
      const size = await fs.dumpTo(from, tmp);
      const sha256 = await sha256File(tmp);
      const { size: written } = await stat(tmp);
      if (written !== size || size !== expected) {
        throw imagesError('IMAGES_FS_READ_FAILED', `${from}: wrote ${written} bytes, expected ${expected}`);
      }
      await fsyncPath(tmp);
      const final = join(destDir, name);
      await rename(tmp, final);
      return { path: final, size, sha256 };
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  };
  const kernel = await out(k.kernelPath, BOOT_FILE_NAMES.kernel, k.kernelSize);
  const initrd = await out(k.initrdPath, BOOT_FILE_NAMES.initrd, k.initrdSize ?? -1);
  const sums = `${kernel.sha256}  ${BOOT_FILE_NAMES.kernel}\n${initrd.sha256}  ${BOOT_FILE_NAMES.initrd}\n`;
  const sumsTmp = join(destDir, `.${BOOT_FILE_NAMES.sums}.${tag}.tmp`);
  await writeFile(sumsTmp, sums);
  await rename(sumsTmp, join(destDir, BOOT_FILE_NAMES.sums));
  await fsyncPath(destDir);
  return { kernelVersion, kernel, initrd };
}
