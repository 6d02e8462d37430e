/**
 * importDisk with qemu-img: a small bootable synthetic disk converted to
 * each format by qemu-img comes back byte-identical; damaged, dangerous and
 * too-large sources are refused with nothing left behind.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { statfsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { havePeer, requirePeers } from '../helpers/peers.js';
import { isDisklessError } from '../../src/lib/errors.js';
import { run } from '../../src/images/exec.js';
import { importDisk, probeDisk, IMPORT_FORMATS, type ImportProgress } from '../../src/images/import.js';
import { makeDisk, makeInitrd, systemTree } from '../../src/images/test-support.js';

const PEERS = ['qemu-img', 'sfdisk', 'mkfs.ext4', 'debugfs'];
const V = '6.1.0-1-amd64';
const UUID = '7b1d2c3e-4f50-4a6b-8c7d-9e0f1a2b3c4d';
let dir: string;
let source: string;
let sourceBytes: Buffer;
let outDir: string;
let n = 0;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diskless-import-'));
  outDir = join(dir, 'out');
  await mkdir(outDir);
  if (!PEERS.every(havePeer)) return;
  source = join(dir, 'source.raw');
  const initrd = await makeInitrd({ kernelVersion: V, flavour: 'initramfs-tools', compression: 'gzip' });
  await makeDisk({ path: source, uuid: UUID, tree: systemTree({ flavour: 'initramfs-tools', kernels: [{ version: V, initrd }], vmlinuzLink: `boot/vmlinuz-${V}` }) });
  sourceBytes = await readFile(source);
});
after(() => rm(dir, { recursive: true, force: true }));

const nextOut = (): string => join(outDir, `image-${++n}.raw`);

async function assertNothingLeft(): Promise<void> {
  const left = (await readdir(outDir)).filter((f) => f.startsWith('.') || f.endsWith('.partial'));
  assert.deepEqual(left, [], 'temporary files left in the output directory');
}

for (const format of IMPORT_FORMATS) {
  test(`${format}: converted by qemu-img, imported back byte-identical and inspected`, async (t) => {
    if (!requirePeers(t, ...PEERS)) return;
    const src = join(dir, `disk.${format}`);
    if (format === 'raw') await copyFile(source, src);
    else await run('qemu-img', ['convert', '-f', 'raw', '-O', format, source, src]);
    const events: ImportProgress[] = [];
    const outPath = nextOut();
    const r = await importDisk({ source: src, outPath, progress: (p) => events.push(p) });
    assert.equal(r.source.format, format);
    assert.equal(r.source.virtualSize, sourceBytes.length);
    assert.ok((await readFile(outPath)).equals(sourceBytes), 'the imported raw disk differs from the original');
    assert.equal(r.inspection.path, outPath);
    assert.equal(r.inspection.root.uuid, UUID);
    assert.equal(r.inspection.defaultKernel, V);
    const phases = [...new Set(events.map((e) => e.phase))];
    assert.deepEqual(phases, ['probe', 'check', 'convert', 'sync', 'inspect', 'done']);
    const percents = events.filter((e) => e.phase === 'convert').map((e) => e.percent ?? -1);
    assert.equal(percents.at(-1), 100, `qemu-img's progress was parsed: ${percents.join(',')}`);
    for (let i = 1; i < percents.length; i++) assert.ok(percents[i]! >= percents[i - 1]!, 'progress never goes back');
    await assertNothingLeft();
  });
}

async function qcow2Copy(name: string): Promise<string> {
  const p = join(dir, name);
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', source, p]);
  return p;
}

async function refused(src: string, code: string, re?: RegExp): Promise<void> {
  const outPath = nextOut();
  await assert.rejects(importDisk({ source: src, outPath }), (e: unknown) => {
    assert.ok(isDisklessError(e, code), `expected ${code}, got ${(e as { code?: string }).code}: ${(e as Error).message}`);
    if (re) assert.match((e as Error).message, re);
    return true;
  });
  await assert.rejects(readFile(outPath), { code: 'ENOENT' });
  await assertNothingLeft();
}

test('corrupt qcow2: garbled magic, cut short, bad L1 table offset, corrupt flag', async (t) => {
  if (!requirePeers(t, ...PEERS)) return;
  // Magic garbled: qemu-img probes it as raw; the .qcow2 name says otherwise.
  const magic = await qcow2Copy('magic.qcow2');
  const fh = await open(magic, 'r+');
  await fh.write(Buffer.from('XXXX'), 0, 4, 0);
  await fh.close();
  await refused(magic, 'IMAGES_IMPORT_FORMAT', /named as qcow2 but its content reads as raw: its qcow2 header is damaged/);
  // Cut short: qemu-img info and even convert succeed (missing clusters read as zeros); check finds it.
  const short = await qcow2Copy('short.qcow2');
  await truncate(short, 400_000);
  await refused(short, 'IMAGES_IMPORT_CORRUPT', /qemu-img check found .* damaged \(corruptions\)/);
  // L1 table offset past the end: qemu-img cannot open it.
  const l1 = await qcow2Copy('l1.qcow2');
  const fh2 = await open(l1, 'r+');
  await fh2.write(Buffer.alloc(8, 0xff), 0, 8, 40);
  await fh2.close();
  await refused(l1, 'IMAGES_IMPORT_CORRUPT', /qemu-img cannot open/);
  // The header's "corrupt" incompatible feature bit (qcow2 spec: bit 1 of incompatible_features at offset 72).
  const flagged = await qcow2Copy('flagged.qcow2');
  const fh3 = await open(flagged, 'r+');
  const b = Buffer.alloc(8);
  await fh3.read(b, 0, 8, 72);
  b[7] = b[7]! | 0x02;
  await fh3.write(b, 0, 8, 72);
  await fh3.close();
  await refused(flagged, 'IMAGES_IMPORT_CORRUPT');
});

test('sources that point at other files are refused: backing file, vmdk extent elsewhere', async (t) => {
  if (!requirePeers(t, ...PEERS)) return;
  const overlay = join(dir, 'overlay.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', source, '-F', 'raw', overlay]);
  await refused(overlay, 'IMAGES_IMPORT_EXTERNAL_FILE', /backing file/);
  // A hand-written vmdk descriptor whose FLAT extent is some other file on the server.
  const secret = join(dir, 'secret.bin');
  await writeFile(secret, Buffer.alloc(1024 * 1024, 0x53));
  const vmdk = join(dir, 'descriptor.vmdk');
  await writeFile(
    vmdk,
    ['# Disk DescriptorFile', 'version=1', 'CID=fffffffe', 'parentCID=ffffffff', 'createType="monolithicFlat"', '', `RW 2048 FLAT "${secret}" 0`, '', 'ddb.adapterType = "ide"', ''].join('\n'),
  );
  await refused(vmdk, 'IMAGES_IMPORT_EXTERNAL_FILE', /extent is another file/);
});

test('a disk larger than the free space is refused up front', async (t) => {
  if (!requirePeers(t, ...PEERS)) return;
  const fs = statfsSync(outDir);
  const free = fs.bavail * fs.bsize;
  const virtual = Math.ceil((free + 1024 ** 4) / 1024 ** 3) * 1024 ** 3; // a TiB more than is free
  const big = join(dir, 'big.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', big, String(virtual)]);
  const started = Date.now();
  await refused(big, 'IMAGES_NO_SPACE', /bytes free/);
  assert.ok(Date.now() - started < 10_000, 'refused before copying anything');
});

test('not bootable over NBD, wrong format option, existing output, unknown format, cancellation', async (t) => {
  if (!requirePeers(t, ...PEERS)) return;
  const plain = join(dir, 'plain.raw');
  await makeDisk({
    path: plain,
    tree: systemTree({ flavour: 'initramfs-tools', kernels: [{ version: V, initrd: await makeInitrd({ kernelVersion: V, flavour: 'initramfs-tools', nbdClient: false }) }] }),
  });
  await refused(plain, 'IMAGES_INITRAMFS_NO_NBD', /nbd-client/);
  // With requireNbd false it is imported and the inspection says what is missing.
  const r = await importDisk({ source: plain, outPath: nextOut(), inspect: { requireNbd: false } });
  assert.deepEqual(r.inspection.kernels[0]!.initramfs?.nbd.missing.map((m) => m.item), ['nbd-client']);

  await assert.rejects(importDisk({ source, outPath: nextOut(), format: 'qcow2' }), (e: unknown) => isDisklessError(e, 'IMAGES_IMPORT_FORMAT'));
  const existing = nextOut();
  await writeFile(existing, 'keep me');
  await assert.rejects(importDisk({ source, outPath: existing }), (e: unknown) => isDisklessError(e, 'IMAGES_OUTPUT_EXISTS'));
  assert.equal(await readFile(existing, 'utf8'), 'keep me');

  const qed = join(dir, 'disk.qed');
  await run('qemu-img', ['create', '-q', '-f', 'qed', qed, '64M']);
  await assert.rejects(probeDisk(qed), (e: unknown) => isDisklessError(e, 'IMAGES_IMPORT_FORMAT') && /qed/.test((e as Error).message));

  const ac = new AbortController();
  const outPath = nextOut();
  await assert.rejects(
    importDisk({ source, outPath, signal: ac.signal, progress: (p) => p.phase === 'check' && ac.abort() }),
    (e: unknown) => isDisklessError(e, 'IMAGES_ABORTED'),
  );
  await assert.rejects(readFile(outPath), { code: 'ENOENT' });
  await assertNothingLeft();
});
