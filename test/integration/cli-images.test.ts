/**
 * The image and client management commands, run as an admin runs them
 * (bin/diskless in a child process, --json parsed): a bootable disk added
 * and shown with its kernels; a VM disk imported from every format qemu-img
 * writes, and from a block device; damaged and unbootable disks and a full
 * data directory refused with the catalogue unchanged; publish, rollback,
 * delete, maintenance and commit.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { IMPORT_FORMATS } from '../../src/images/import.js';
import { makeDisk, makeInitrd, systemTree } from '../../src/images/test-support.js';
import { havePeer, requirePeers, requireRoot } from '../helpers/peers.js';

const BIN = fileURLToPath(new URL('../../../bin/diskless', import.meta.url));
const PEERS = ['qemu-img', 'sfdisk', 'mkfs.ext4', 'debugfs'];
const V = '6.1.0-9-amd64';
const UUID = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';
const MAC = '52:54:00:c1:00:01';
const MiB = 1024 * 1024;

let dir: string;
let data: string;
let disk: string;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function cli(...args: string[]): { status: number | null; value: any; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args, '--data-dir', data, '--json'], {
    cwd: dir, encoding: 'utf8', timeout: 120_000, env: { ...process.env, DISKLESS_LOG_LEVEL: 'warn' },
  });
  let value: unknown = null;
  try {
    value = JSON.parse(r.stdout);
  } catch {
    assert.fail(`diskless ${args.join(' ')}: not JSON (status ${r.status}): ${r.stdout}\n${r.stderr}`);
  }
  return { status: r.status, value, stderr: r.stderr };
}

function text(...args: string[]): string {
  const r = spawnSync(process.execPath, [BIN, ...args, '--data-dir', data], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

/** The catalogue as `image list` and `image show` print it, to show a refusal changed nothing. */
function catalogue(): string {
  const images = cli('image', 'list').value as { name: string }[];
  return JSON.stringify([images, images.map((i) => cli('image', 'show', i.name).value)]);
}

function refused(args: string[], code: RegExp): void {
  const before = catalogue();
  const r = cli(...args);
  assert.equal(r.status, 1, `diskless ${args.join(' ')} should fail: ${JSON.stringify(r.value)}`);
  assert.match(r.value.error.code, code);
  assert.ok(String(r.value.error.message).length > 15, 'a message that says what is wrong');
  assert.equal(catalogue(), before, `diskless ${args.join(' ')} changed the catalogue`);
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'diskless-cli-images-'));
  data = join(dir, 'data');
  if (!PEERS.every(havePeer)) return;
  disk = join(dir, 'golden.raw');
  const initrd = await makeInitrd({ kernelVersion: V, flavour: 'initramfs-tools' });
  await makeDisk({ path: disk, uuid: UUID, size: 40 * MiB, tree: systemTree({ flavour: 'initramfs-tools', kernels: [{ version: V, initrd }], vmlinuzLink: `boot/vmlinuz-${V}` }) });
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('getting images in', () => {
  test('image add: a bootable disk, shown with its kernel and initramfs flavour', (t) => {
    if (!requirePeers(t, ...PEERS)) return;
    const r = cli('image', 'add', 'lab', 'golden.raw');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.value.version, 1);
    assert.equal(r.value.bootInfo.kernelVersion, V);
    assert.equal(r.value.bootInfo.initramfsFlavour, 'initramfs-tools');
    assert.equal(r.value.bootInfo.rootUuid, UUID);
    const shown = cli('image', 'show', 'lab').value;
    assert.deepEqual(shown.versions[0].bootInfo.kernels, [`/boot/vmlinuz-${V}`]);
    assert.match(shown.versions[0].createdAt, /^\d{4}-/);
    const out = text('image', 'show', 'lab');
    assert.match(out, new RegExp(`^1 \\*\\s+40\\.0 MiB\\s+yes\\s+-\\s+${V}\\s+initramfs-tools`, 'm'));
    assert.match(out, new RegExp(`${V}\\s+/boot/vmlinuz-${V}\\s+/boot/initrd.img-${V}\\s+NBD root: yes \\(initramfs-tools\\)`));
  });

  for (const format of IMPORT_FORMATS) {
    test(`image import: ${format}`, (t) => {
      if (!requirePeers(t, ...PEERS)) return;
      const src = join(dir, `copy-of-golden.${format}`);
      const conv = spawnSync('qemu-img', ['convert', '-f', 'raw', '-O', format, disk, src]);
      assert.equal(conv.status, 0, String(conv.stderr));
      const r = cli('image', 'import', src, '--name', 'imported');
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.value.bootInfo.origin, 'import');
      assert.equal(r.value.bootInfo.sourceFormat, format);
      assert.equal(r.value.bootInfo.kernelVersion, V);
      const raw = cli('image', 'show', 'lab').value.versions[0];
      assert.equal(r.value.sha256, raw.sha256, 'the imported disk is byte for byte the original');
    });
  }

  test('image import: a block device is read as raw', (t) => {
    if (!requirePeers(t, ...PEERS, 'losetup') || !requireRoot(t)) return;
    const lo = spawnSync('losetup', ['--find', '--show', '--read-only', disk], { encoding: 'utf8' });
    assert.equal(lo.status, 0, lo.stderr);
    const device = lo.stdout.trim();
    try {
      const r = cli('image', 'import', device, '--name', 'from-device');
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.value.sha256, cli('image', 'show', 'lab').value.versions[0].sha256);
      refused(['image', 'import', device, '--name', 'from-device', '--format', 'qcow2'], /^IMAGES_IMPORT_FORMAT$/);
    } finally {
      spawnSync('losetup', ['-d', device]);
    }
  });
});

describe('bad input is refused and changes nothing', () => {
  test('a corrupt qcow2', (t) => {
    if (!requirePeers(t, ...PEERS)) return;
    const src = join(dir, 'corrupt.qcow2');
    assert.equal(spawnSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', disk, src]).status, 0);
    const bytes = readFileSync(src);
    // The L1 table offset (header bytes 40-47) pointed past the end of the file.
    bytes.writeBigUInt64BE(BigInt(bytes.length) * 64n, 40);
    writeFileSync(src, bytes);
    refused(['image', 'import', src, '--name', 'lab'], /^IMAGES_IMPORT_CORRUPT$/);
  });

  test('a disk with no Linux root, and one whose initramfs cannot mount an NBD root', async (t) => {
    if (!requirePeers(t, ...PEERS)) return;
    const noRoot = join(dir, 'noroot.raw');
    await makeDisk({ path: noRoot, size: 40 * MiB, tree: { 'data/readme.txt': 'not a system\n' } });
    refused(['image', 'add', 'lab', 'noroot.raw'], /^IMAGES_NO_LINUX_ROOT$/);
    refused(['image', 'import', noRoot, '--name', 'newimage'], /^IMAGES_NO_LINUX_ROOT$/);
    const noNbd = join(dir, 'nonbd.raw');
    const initrd = await makeInitrd({ kernelVersion: V, flavour: 'initramfs-tools', nbdClient: false });
    await makeDisk({ path: noNbd, uuid: UUID, size: 40 * MiB, tree: systemTree({ flavour: 'initramfs-tools', kernels: [{ version: V, initrd }] }) });
    const r = cli('image', 'add', 'lab', 'nonbd.raw');
    assert.equal(r.value.error.code, 'IMAGES_INITRAMFS_NO_NBD');
    assert.match(r.value.error.message, /nbd-client/, 'it says what the kit must add');
  });

  test('a disk larger than the free space of the data directory', (t) => {
    if (!requirePeers(t, ...PEERS, 'mount') || !requireRoot(t)) return;
    // A small file system of its own for the data directory.
    const small = join(dir, 'small');
    mkdirSync(small);
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', small], { encoding: 'utf8' });
    assert.equal(m.status, 0, m.stderr);
    const saved = data;
    try {
      data = join(small, 'data');
      // 40 MiB of data (not sparse) for 24 MiB of space.
      const big = join(dir, 'big.raw');
      const b = Buffer.alloc(40 * MiB);
      for (let i = 0; i < b.length; i += 4) b.writeUInt32LE((i * 2654435761) >>> 0, i);
      writeFileSync(big, b);
      cli('image', 'list');
      refused(['image', 'add', 'lab', big], /^APP_NO_SPACE$/);
      refused(['image', 'import', big, '--name', 'lab'], /^IMAGES_NO_SPACE$/);
    } finally {
      data = saved;
      spawnSync('umount', [small]);
    }
  });
});

describe('versions and clients', () => {
  test('hold, publish, rollback, delete', (t) => {
    if (!requirePeers(t, ...PEERS)) return;
    const held = cli('image', 'add', 'lab', 'golden.raw', '--hold').value;
    assert.equal(held.published, false);
    assert.equal(cli('image', 'show', 'lab').value.currentVersion, 1);
    assert.equal(cli('image', 'publish', 'lab', String(held.version)).value.published, true);
    const rb = cli('image', 'rollback', 'lab').value;
    assert.deepEqual([rb.from, rb.to], [held.version, 1]);
    assert.equal(cli('image', 'show', 'lab').value.currentVersion, 1);
    const inUse = cli('image', 'delete', 'lab', '1');
    assert.equal(inUse.status, 1);
    assert.equal(inUse.value.error.code, 'APP_VERSION_IN_USE');
    assert.match(inUse.value.error.message, /current version/);
    assert.equal(cli('image', 'delete', 'lab', String(held.version)).status, 0);
    assert.deepEqual(cli('image', 'show', 'lab').value.versions.map((v: { version: number }) => v.version), [1]);
  });

  test('client set, maintenance, unknown, delete', (t) => {
    if (!requirePeers(t, ...PEERS)) return;
    assert.equal(cli('client', 'add', MAC, '--image', 'lab', '--quota', '2G').value.quotaBytes, 2 * 1024 * MiB);
    const set = cli('client', 'set', MAC, '--mode', 'persistent', '--name', 'pc-07', '--no-quota').value;
    assert.deepEqual([set.mode, set.name, set.quotaBytes], ['persistent', 'pc-07', null]);
    assert.equal(cli('client', 'set', MAC).status, 2, 'nothing to change is a usage error');
    assert.equal(cli('client', 'maintenance', MAC, 'on').value.maintenance, true);
    const commit = cli('image', 'commit', MAC);
    assert.equal(commit.value.error.code, 'APP_NO_DRAFT');
    assert.equal(cli('client', 'maintenance', MAC, 'off').value.maintenance, false);
    assert.deepEqual(cli('client', 'unknown').value, []);
    const del = cli('client', 'delete', MAC);
    assert.equal(del.status, 0);
    assert.equal(cli('client', 'show', MAC).value.error.code, 'STATE_NOT_FOUND');
  });
});
