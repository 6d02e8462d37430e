/**
 * Synthetic disks and initramfs images for the tests of this module (unit,
 * integration and interop tiers share them). Nothing in the product imports
 * this file. Disks are made the way build-debian.ts makes real ones (sfdisk
 * on a file, mkfs.ext4 -d at an offset), from small trees that look like a
 * Debian or dracut system: os-release, an init, kernels in /boot and an
 * initramfs that has, or lacks, what NBD needs.
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { writeCpio, type CpioWriteEntry } from './cpio.js';
import { run } from './exec.js';

export type TreeNode = string | Buffer | { symlink: string } | { dir: true };
export type Tree = Record<string, TreeNode>;

export async function materialize(dir: string, tree: Tree): Promise<void> {
  for (const [path, node] of Object.entries(tree)) {
    const full = join(dir, path);
    await mkdir(dirname(full), { recursive: true });
    if (typeof node === 'string' || Buffer.isBuffer(node)) await writeFile(full, node);
    else if ('symlink' in node) await symlink(node.symlink, full);
    else await mkdir(full, { recursive: true });
  }
}

export type Layout = 'gpt' | 'mbr' | 'mbr-logical' | 'none';

export interface DiskSpec {
  path: string;
  tree: Tree;
  /** Disk size in bytes (default 64 MiB). */
  size?: number;
  layout?: Layout;
  uuid?: string;
}

export interface MadeDisk {
  uuid: string;
  /** The root's partition number (0: whole disk). */
  partition: number;
  offset: number;
}

const MiB = 1024 * 1024;

/** A disk whose ext4 root holds `tree`, in the given layout. */
export async function makeDisk(spec: DiskSpec): Promise<MadeDisk> {
  const size = spec.size ?? 64 * MiB;
  const uuid = spec.uuid ?? '5a1e7c4d-0b9e-4f3a-9d2c-6b8e1f0a7c31';
  const work = await mkdtemp(join(tmpdir(), 'diskless-synth-'));
  try {
    const tree = join(work, 'tree');
    await mkdir(tree);
    await materialize(tree, spec.tree);
    await run('truncate', ['-s', String(size), spec.path]);
    const layout = spec.layout ?? 'gpt';
    let script: string | undefined;
    let partition = 0;
    if (layout === 'gpt') {
      // An (empty) ESP, then the root typed "Linux root (x86-64)".
      script = 'label: gpt\nstart=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI"\nstart=18432, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"\n';
      partition = 2;
    } else if (layout === 'mbr') {
      script = 'label: dos\nstart=2048, type=83, bootable\n';
      partition = 1;
    } else if (layout === 'mbr-logical') {
      script = 'label: dos\nstart=2048, size=8192, type=c\nstart=10240, type=5\nstart=12288, size=4096, type=82\nstart=18432, type=83\n';
      partition = 6;
    }
    let offset = 0;
    let bytes = size;
    if (script) {
      await run('sfdisk', ['-q', spec.path], { stdin: script });
      const dump = (await run('sfdisk', ['-d', spec.path])).stdout.toString('utf8');
      const line = dump.split('\n').find((l) => new RegExp(`^\\S*${partition} :`).test(l));
      const m = line && /start=\s*(\d+),\s*size=\s*(\d+)/.exec(line);
      if (!m) throw new Error(`no partition ${partition} in\n${dump}`);
      offset = Number(m[1]) * 512;
      bytes = Number(m[2]) * 512;
    }
    const args = ['-q', '-F', '-U', uuid, '-L', 'root', ...(offset ? ['-E', `offset=${offset}`] : []), '-d', tree, spec.path, `${Math.floor(bytes / 1024)}K`];
    await run('mkfs.ext4', args);
    return { uuid, partition, offset };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export type Compress = 'none' | 'gzip' | 'zstd' | 'xz';

export async function compress(data: Buffer, how: Compress): Promise<Buffer> {
  if (how === 'none') return data;
  if (how === 'gzip') return gzipSync(data);
  const argv = how === 'zstd' ? ['zstd', '-q', '-c', '-3'] : ['xz', '-c', '--check=crc32', '-0'];
  return (await run(argv[0]!, argv.slice(1), { stdin: data })).stdout;
}

export interface InitrdSpec {
  kernelVersion: string;
  flavour: 'initramfs-tools' | 'dracut';
  nbdClient?: boolean;
  nbdModule?: boolean;
  /** initramfs-tools: scripts/local-top/nbd; dracut: the cmdline hook and /sbin/nbdroot. */
  nbdScript?: boolean;
  busybox?: boolean;
  /** bin, sbin and lib as symlinks into usr/ (merged /usr). */
  usrMerged?: boolean;
  /** nbd listed in modules.builtin instead of a .ko file. */
  nbdBuiltin?: boolean;
  compression?: Compress;
  /** An uncompressed early archive (microcode) before the main one. */
  early?: boolean;
}

/** An initramfs shaped like what initramfs-tools or dracut make, small. */
export async function makeInitrd(s: InitrdSpec): Promise<Buffer> {
  const v = s.kernelVersion;
  const merged = s.usrMerged ?? true;
  const lib = merged ? 'usr/lib' : 'lib';
  const sbin = merged ? 'usr/sbin' : 'sbin';
  const bin = merged ? 'usr/bin' : 'bin';
  const e: CpioWriteEntry[] = [{ name: '.' }];
  if (merged) {
    e.push({ name: 'usr' }, { name: 'usr/lib' }, { name: 'usr/sbin' }, { name: 'usr/bin' });
    e.push({ name: 'lib', type: 'symlink', data: 'usr/lib' }, { name: 'sbin', type: 'symlink', data: 'usr/sbin' }, { name: 'bin', type: 'symlink', data: 'usr/bin' });
  } else {
    e.push({ name: 'lib' }, { name: 'sbin' }, { name: 'bin' });
  }
  e.push({ name: `${lib}/modules` }, { name: `${lib}/modules/${v}` }, { name: `${lib}/modules/${v}/kernel` });
  e.push({ name: 'init', data: '#!/bin/sh\n', mode: 0o100755 });
  const modDir = `${lib}/modules/${v}/kernel/drivers/block`;
  e.push({ name: `${lib}/modules/${v}/kernel/drivers` }, { name: modDir });
  if (s.nbdModule ?? true) e.push({ name: `${modDir}/nbd.${s.flavour === 'dracut' ? 'ko.xz' : 'ko'}`, data: Buffer.alloc(3000, 0x7f) });
  e.push({ name: `${lib}/modules/${v}/modules.builtin`, data: `kernel/fs/ext4/ext4.ko\n${s.nbdBuiltin ? 'kernel/drivers/block/nbd.ko\n' : ''}` });
  if (s.nbdClient ?? true) e.push({ name: `${sbin}/nbd-client`, data: Buffer.alloc(5000, 0x45), mode: 0o100755 });
  if (s.flavour === 'initramfs-tools') {
    e.push({ name: 'conf' }, { name: 'conf/initramfs.conf', data: 'MODULES=list\n' }, { name: 'scripts' }, { name: 'scripts/functions', data: '# functions\n' });
    e.push({ name: 'scripts/local-top' });
    if (s.nbdScript ?? true) e.push({ name: 'scripts/local-top/nbd', data: '#!/bin/sh\n# nbd\n', mode: 0o100755 });
    if (s.busybox ?? true) {
      e.push({ name: `${bin}/busybox`, data: Buffer.alloc(2000, 0x42), mode: 0o100755 });
      e.push({ name: `${bin}/grep`, type: 'symlink', data: 'busybox' });
    }
  } else {
    e.push({ name: 'etc' }, { name: 'etc/initrd-release', data: 'NAME=dracut\n' });
    e.push({ name: `${lib}/dracut` }, { name: `${lib}/dracut/hooks` }, { name: `${lib}/dracut/hooks/cmdline` });
    if (s.nbdScript ?? true) {
      e.push({ name: `${lib}/dracut/hooks/cmdline/90-parse-nbdroot.sh`, data: '# parse\n' });
      e.push({ name: `${sbin}/nbdroot`, data: '#!/bin/sh\n', mode: 0o100755 });
    }
  }
  const main = await compress(writeCpio(e), s.compression ?? 'gzip');
  if (!s.early) return main;
  const early = writeCpio([{ name: 'kernel' }, { name: 'kernel/x86' }, { name: 'kernel/x86/microcode' }, { name: 'kernel/x86/microcode/GenuineIntel.bin', data: Buffer.alloc(1000, 1) }]);
  // The kernel wants the next archive 4-byte aligned; tools pad the early one to 512.
  const pad = Buffer.alloc((512 - (early.length % 512)) % 512);
  return Buffer.concat([early, pad, main]);
}

export interface SystemSpec {
  flavour: 'initramfs-tools' | 'dracut' | 'none';
  kernels: { version: string; initrd?: Buffer }[];
  /** Where /vmlinuz points (e.g. boot/vmlinuz-6.1.0-1-amd64); none when undefined. */
  vmlinuzLink?: string;
  osRelease?: boolean;
  init?: boolean;
  /** nbd-client installed in the image. */
  nbdClient?: boolean;
}

export const OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n';

/** A merged-/usr system tree with kernels in /boot. The kernel files hold recognisable bytes. */
export function systemTree(s: SystemSpec): Tree {
  const t: Tree = {
    bin: { symlink: 'usr/bin' },
    sbin: { symlink: 'usr/sbin' },
    lib: { symlink: 'usr/lib' },
    'usr/bin/sh': 'sh',
    etc: { dir: true },
    boot: { dir: true },
  };
  if (s.osRelease ?? true) {
    t['usr/lib/os-release'] = OS_RELEASE;
    t['etc/os-release'] = { symlink: '../usr/lib/os-release' };
  }
  if (s.init ?? true) {
    t['usr/lib/systemd/systemd'] = Buffer.alloc(100, 0x53);
    t['usr/sbin/init'] = { symlink: '../lib/systemd/systemd' };
  }
  if (s.flavour === 'initramfs-tools') {
    t['usr/sbin/mkinitramfs'] = '#!/bin/sh\n';
    t['usr/share/initramfs-tools/hooks/nbd'] = '#!/bin/sh\n';
  } else if (s.flavour === 'dracut') {
    t['usr/bin/dracut'] = '#!/bin/bash\n';
    t['usr/lib/dracut/dracut-functions.sh'] = '#\n';
    t['usr/lib/dracut/modules.d/95nbd/module-setup.sh'] = '#!/bin/bash\n';
  }
  if (s.nbdClient ?? true) t['usr/sbin/nbd-client'] = Buffer.alloc(5000, 0x45);
  for (const k of s.kernels) {
    t[`boot/vmlinuz-${k.version}`] = Buffer.concat([Buffer.from(`KERNEL ${k.version}\n`), Buffer.alloc(70_000, 0x4b)]);
    t[`usr/lib/modules/${k.version}/modules.builtin`] = 'kernel/fs/ext4/ext4.ko\n';
    if (k.initrd) {
      const name = s.flavour === 'dracut' ? `boot/initramfs-${k.version}.img` : `boot/initrd.img-${k.version}`;
      t[name] = k.initrd;
    }
  }
  if (s.vmlinuzLink) t.vmlinuz = { symlink: s.vmlinuzLink };
  return t;
}
