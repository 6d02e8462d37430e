/**
 * inspectDisk and extractBootFiles on small disks made at test time
 * (sfdisk + mkfs.ext4 -d from a tree that looks like a Debian or dracut
 * system, with initramfs images that have or lack what NBD needs).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requirePeers } from '../../test/helpers/peers.js';
import { isDisklessError } from '../lib/errors.js';
import type { ImagesError } from './errors.js';
import { run } from './exec.js';
import { assertNbdBootable, compareKernelVersions, extractBootFiles, inspectDisk, parseOsRelease } from './inspect.js';
import { makeDisk, makeInitrd, systemTree, type Layout, type SystemSpec } from './test-support.js';

const OLD = '6.1.0-1-amd64';
const NEW = '6.1.0-9-amd64';

async function scratch(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'diskless-inspect-test-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const peers = ['sfdisk', 'mkfs.ext4', 'debugfs'];

async function disk(t: { after(fn: () => Promise<void>): void }, system: SystemSpec, layout: Layout = 'gpt', uuid?: string): Promise<string> {
  const path = join(await scratch(t), 'disk.raw');
  await makeDisk({ path, tree: systemTree(system), layout, uuid });
  return path;
}

test('Debian-like GPT disk: root partition, UUID, os-release, kernels, the /vmlinuz default, NBD per initramfs', async (t) => {
  if (!requirePeers(t, ...peers)) return;
  const good = await makeInitrd({ kernelVersion: OLD, flavour: 'initramfs-tools', compression: 'gzip', early: true });
  const bad = await makeInitrd({ kernelVersion: NEW, flavour: 'initramfs-tools', nbdScript: false, busybox: false });
  const path = await disk(
    t,
    {
      flavour: 'initramfs-tools',
      kernels: [
        { version: OLD, initrd: good },
        { version: NEW, initrd: bad },
      ],
      vmlinuzLink: `boot/vmlinuz-${OLD}`, // the link wins over the newer version
    },
    'gpt',
    '0e3c8f1a-7d2b-4c55-9a61-2f4b8d7e6c10',
  );
  const ins = await inspectDisk(path);
  // The inspection is stored as JSON by the catalogue: it must round-trip.
  assert.deepEqual(JSON.parse(JSON.stringify(ins)), ins);
  assert.equal(ins.partitionTable?.scheme, 'gpt');
  assert.deepEqual(ins.partitions.map((p) => [p.number, p.kind, p.fsType]), [
    [1, 'efi-system', 'unknown'],
    [2, 'linux-root-x86-64', 'ext4'],
  ]);
  assert.deepEqual(ins.root, {
    partition: 2,
    offset: 18432 * 512,
    size: ins.partitions[1]!.size,
    fsType: 'ext4',
    uuid: '0e3c8f1a-7d2b-4c55-9a61-2f4b8d7e6c10',
    label: 'root',
    nbdDevice: '/dev/nbd0p2',
  });
  assert.equal(ins.osRelease.PRETTY_NAME, 'Debian GNU/Linux 12 (bookworm)');
  assert.equal(ins.osRelease.ID, 'debian');
  assert.equal(ins.initramfsFlavour, 'initramfs-tools');
  assert.deepEqual(ins.installed, { initramfsTools: true, dracut: false, dracutNbdModule: false, nbdClient: true });
  assert.deepEqual(ins.kernels.map((k) => [k.version, k.kernelPath, k.initrdPath, k.initrdSize]), [
    [NEW, `/boot/vmlinuz-${NEW}`, `/boot/initrd.img-${NEW}`, bad.length],
    [OLD, `/boot/vmlinuz-${OLD}`, `/boot/initrd.img-${OLD}`, good.length],
  ]);
  assert.equal(ins.defaultKernel, OLD);
  assert.equal(ins.defaultKernelFrom, 'vmlinuz-link');
  const [newK, oldK] = ins.kernels;
  assert.equal(oldK!.initramfs?.nbd.supported, true);
  assert.deepEqual(oldK!.initramfs?.segments.map((s) => s.compression), ['none', 'gzip']);
  assert.equal(oldK!.initramfs?.flavour, 'initramfs-tools');
  assert.equal(newK!.initramfs?.nbd.supported, false);
  assert.deepEqual(newK!.initramfs?.nbd.missing.map((m) => m.item), ['nbd-script', 'grep']);
  // The default kernel boots; asking for the other one says what is missing.
  assert.equal(assertNbdBootable(ins).version, OLD);
  assert.throws(() => assertNbdBootable(ins, NEW), (e: unknown) => isDisklessError(e, 'IMAGES_INITRAMFS_NO_NBD') && /scripts\/local-top\/nbd/.test((e as Error).message));
});

test('without the /vmlinuz link the newest kernel is the default; its initramfs lacking NBD is refused', async (t) => {
  if (!requirePeers(t, ...peers)) return;
  const path = await disk(t, {
    flavour: 'initramfs-tools',
    kernels: [
      { version: OLD, initrd: await makeInitrd({ kernelVersion: OLD, flavour: 'initramfs-tools' }) },
      { version: NEW, initrd: await makeInitrd({ kernelVersion: NEW, flavour: 'initramfs-tools', nbdClient: false, nbdModule: false }) },
    ],
  });
  await assert.rejects(inspectDisk(path), (e: unknown) => {
    assert.ok(isDisklessError(e, 'IMAGES_INITRAMFS_NO_NBD'), String(e));
    const details = (e as ImagesError).details as { missing: { item: string; fix: string }[] };
    assert.deepEqual(details.missing.map((m) => m.item), ['nbd-client', 'nbd-module']);
    assert.match((e as Error).message, /6\.1\.0-9-amd64 \(initramfs-tools\) cannot mount the root over NBD/);
    return true;
  });
  const ins = await inspectDisk(path, { requireNbd: false });
  assert.equal(ins.defaultKernel, NEW);
  assert.equal(ins.defaultKernelFrom, 'newest');
});

test('dracut image: flavour from what is installed, initramfs-VERSION.img, the 95nbd module', async (t) => {
  if (!requirePeers(t, ...peers, 'xz')) return;
  const path = await disk(
    t,
    {
      flavour: 'dracut',
      kernels: [{ version: OLD, initrd: await makeInitrd({ kernelVersion: OLD, flavour: 'dracut', compression: 'xz' }) }],
    },
    'mbr',
  );
  const ins = await inspectDisk(path);
  assert.equal(ins.partitionTable?.scheme, 'mbr');
  assert.equal(ins.root.nbdDevice, '/dev/nbd0p1');
  assert.equal(ins.initramfsFlavour, 'dracut');
  assert.deepEqual(ins.installed, { initramfsTools: false, dracut: true, dracutNbdModule: true, nbdClient: true });
  assert.equal(ins.kernels[0]!.initrdPath, `/boot/initramfs-${OLD}.img`);
  assert.equal(ins.kernels[0]!.initramfs?.nbd.flavour, 'dracut');
  assert.equal(ins.kernels[0]!.initramfs?.nbd.supported, true);

  const lacking = await disk(t, {
    flavour: 'dracut',
    kernels: [{ version: OLD, initrd: await makeInitrd({ kernelVersion: OLD, flavour: 'dracut', nbdScript: false }) }],
  });
  await assert.rejects(inspectDisk(lacking), (e: unknown) => isDisklessError(e, 'IMAGES_INITRAMFS_NO_NBD') && /dracut --force --add nbd/.test((e as Error).message));
});

test('a logical MBR partition and a bare file system (no table) are found as the root', async (t) => {
  if (!requirePeers(t, ...peers)) return;
  const system: SystemSpec = { flavour: 'initramfs-tools', kernels: [{ version: OLD, initrd: await makeInitrd({ kernelVersion: OLD, flavour: 'initramfs-tools' }) }] };
  const logical = await inspectDisk(await disk(t, system, 'mbr-logical'));
  assert.equal(logical.root.partition, 6);
  assert.equal(logical.root.nbdDevice, '/dev/nbd0p6');
  assert.deepEqual(logical.partitions.map((p) => p.number), [1, 5, 6]);
  const bare = await inspectDisk(await disk(t, system, 'none'));
  assert.equal(bare.partitionTable, null);
  assert.equal(bare.root.partition, 0);
  assert.equal(bare.root.nbdDevice, '/dev/nbd0');
});

test('no Linux root, no kernel, no initramfs: each its own error', async (t) => {
  if (!requirePeers(t, ...peers)) return;
  const noOs = await disk(t, { flavour: 'initramfs-tools', kernels: [{ version: OLD }], osRelease: false });
  await assert.rejects(inspectDisk(noOs), (e: unknown) => isDisklessError(e, 'IMAGES_NO_LINUX_ROOT') && /2: ext4/.test((e as Error).message));
  const noInit = await disk(t, { flavour: 'initramfs-tools', kernels: [{ version: OLD }], init: false });
  await assert.rejects(inspectDisk(noInit), (e: unknown) => isDisklessError(e, 'IMAGES_NO_LINUX_ROOT'));
  const noKernel = await disk(t, { flavour: 'initramfs-tools', kernels: [] });
  await assert.rejects(inspectDisk(noKernel), (e: unknown) => isDisklessError(e, 'IMAGES_NO_KERNEL') && /no \/boot\/vmlinuz-VERSION/.test((e as Error).message));
  const noInitrd = await disk(t, { flavour: 'initramfs-tools', kernels: [{ version: OLD }] });
  await assert.rejects(inspectDisk(noInitrd), (e: unknown) => isDisklessError(e, 'IMAGES_NO_INITRAMFS'));
  assert.equal((await inspectDisk(noInitrd, { requireNbd: false })).kernels[0]!.initrdPath, undefined);
  const dir = await scratch(t);
  const zeros = join(dir, 'zeros.raw');
  await run('truncate', ['-s', '8M', zeros]);
  await assert.rejects(inspectDisk(zeros), (e: unknown) => isDisklessError(e, 'IMAGES_UNKNOWN_PARTITION_TABLE'));
  await assert.rejects(inspectDisk(join(dir, 'missing.raw')), (e: unknown) => isDisklessError(e, 'IMAGES_DISK_UNREADABLE'));
});

test('extractBootFiles writes vmlinuz and initrd.img byte-identical, with SHA256SUMS, and no temporary files', async (t) => {
  if (!requirePeers(t, ...peers)) return;
  const initrd = await makeInitrd({ kernelVersion: OLD, flavour: 'initramfs-tools', compression: 'gzip', early: true });
  const system: SystemSpec = { flavour: 'initramfs-tools', kernels: [{ version: OLD, initrd }], vmlinuzLink: `boot/vmlinuz-${OLD}` };
  const path = await disk(t, system);
  const ins = await inspectDisk(path);
  const dest = join(await scratch(t), 'boot');
  const files = await extractBootFiles(path, ins, OLD, dest);
  const kernelBytes = systemTree(system)[`boot/vmlinuz-${OLD}`] as Buffer;
  assert.deepEqual(await readFile(join(dest, 'vmlinuz')), kernelBytes);
  assert.deepEqual(await readFile(join(dest, 'initrd.img')), initrd);
  const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
  assert.equal(files.kernel.sha256, sha(kernelBytes));
  assert.equal(files.initrd.sha256, sha(initrd));
  assert.equal(files.initrd.size, initrd.length);
  assert.deepEqual((await readdir(dest)).sort(), ['SHA256SUMS', 'initrd.img', 'vmlinuz']);
  if (requirePeers(t, 'sha256sum')) await run('sha256sum', ['-c', '--quiet', 'SHA256SUMS'], { cwd: dest });
  await assert.rejects(extractBootFiles(path, ins, '9.9.9', dest), (e: unknown) => isDisklessError(e, 'IMAGES_NO_KERNEL'));
});

test('kernel version order and os-release parsing', () => {
  const sorted = ['6.1.0-9-amd64', '6.1.0-18-amd64', '5.10.0-28-amd64', '6.1.0-18-cloud-amd64', '6.10.2', '6.1.0-9-amd64+b1'].sort(compareKernelVersions);
  assert.deepEqual(sorted, ['5.10.0-28-amd64', '6.1.0-9-amd64', '6.1.0-9-amd64+b1', '6.1.0-18-amd64', '6.1.0-18-cloud-amd64', '6.10.2']);
  assert.deepEqual(parseOsRelease('# c\nNAME="Fedora Linux"\nID=fedora\nVERSION=\'39 (Cloud)\'\nQ="a \\"b\\" \\$c"\nbad line\n'), {
    NAME: 'Fedora Linux',
    ID: 'fedora',
    VERSION: '39 (Cloud)',
    Q: 'a "b" $c',
  });
});
