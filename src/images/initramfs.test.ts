/**
 * Listing initramfs images made here (early cpio + gzip/zstd/xz main
 * archive, merged and split /usr, both flavours) and the host's own Debian
 * initramfs against lsinitramfs; then the NBD checks, each requirement
 * removed in turn.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requirePeers } from '../../test/helpers/peers.js';
import { isDisklessError } from '../lib/errors.js';
import { writeCpio } from './cpio.js';
import { run } from './exec.js';
import { captureForNbd, detectInitramfsFlavour, findEntry, listInitramfs, nbdSupport, type InitramfsListing } from './initramfs.js';
import { compress, makeInitrd, type Compress, type InitrdSpec } from './test-support.js';

const V = '6.1.0-1-amd64';

async function list(spec: Partial<InitrdSpec> = {}): Promise<InitramfsListing> {
  return listInitramfs(await makeInitrd({ kernelVersion: V, flavour: 'initramfs-tools', ...spec }), { capture: captureForNbd });
}

for (const compression of ['none', 'gzip', 'zstd', 'xz'] as Compress[]) {
  test(`${compression} main archive after an early uncompressed one, from bytes and from a file`, async (t) => {
    if (compression === 'zstd' && !requirePeers(t, 'zstd')) return;
    if (compression === 'xz' && !requirePeers(t, 'xz')) return;
    const bytes = await makeInitrd({ kernelVersion: V, flavour: 'initramfs-tools', compression, early: true });
    const dir = await mkdtemp(join(tmpdir(), 'diskless-initrd-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'initrd.img');
    await writeFile(file, bytes);
    for (const input of [bytes, file]) {
      const l = await listInitramfs(input);
      assert.ok(l.entries.has('kernel/x86/microcode/GenuineIntel.bin'));
      assert.ok(l.entries.has('usr/sbin/nbd-client'));
      assert.equal(l.entries.get('bin')?.linkTarget, 'usr/bin');
      assert.equal(l.size, bytes.length);
      if (compression === 'none') {
        assert.deepEqual(l.segments.map((s) => [s.compression, s.archives]), [['none', 2]]);
      } else {
        assert.deepEqual(l.segments.map((s) => [s.compression, s.archives]), [['none', 1], [compression, 1]]);
        assert.ok(l.segments[1]!.offset > 0);
        assert.equal(l.segments[1]!.offset % 512, 0);
      }
      assert.deepEqual(l.warnings, []);
    }
  });
}

test('only compressed (no early archive); trailing zeros after a gzip archive are ignored', async () => {
  const plain = writeCpio([{ name: 'init', data: 'x' }, { name: 'scripts' }]);
  const gz = await compress(plain, 'gzip');
  const l = await listInitramfs(Buffer.concat([gz, Buffer.alloc(1000)]));
  assert.deepEqual([...l.entries.keys()], ['init', 'scripts']);
  assert.deepEqual(l.segments.map((s) => [s.offset, s.compression]), [[0, 'gzip']]);
});

test('damaged compressed data, garbage and an empty file are IMAGES_INITRAMFS_CORRUPT', async (t) => {
  const good = await makeInitrd({ kernelVersion: V, flavour: 'initramfs-tools', compression: 'gzip', early: true });
  const corrupt = (e: unknown): boolean => isDisklessError(e, 'IMAGES_INITRAMFS_CORRUPT');
  await assert.rejects(listInitramfs(good.subarray(0, good.length - 200)), corrupt);
  const flipped = Buffer.from(good);
  flipped[flipped.length - 300] ^= 0xff;
  await assert.rejects(listInitramfs(flipped), corrupt);
  await assert.rejects(listInitramfs(Buffer.from('this is not an initramfs at all')), (e: unknown) => corrupt(e) && /neither a cpio archive nor a known compression/.test((e as Error).message));
  await assert.rejects(listInitramfs(Buffer.alloc(0)), corrupt);
  if (!requirePeers(t, 'zstd')) return;
  const z = await makeInitrd({ kernelVersion: V, flavour: 'initramfs-tools', compression: 'zstd' });
  await assert.rejects(listInitramfs(z.subarray(0, z.length - 50)), corrupt);
});

test('a decompression bomb stops at the limit', async () => {
  const big = writeCpio([{ name: 'zeros', data: Buffer.alloc(4 * 1024 * 1024) }]);
  const gz = await compress(big, 'gzip');
  await assert.rejects(listInitramfs(gz, { maxUnpackedBytes: 1024 * 1024 }), (e: unknown) => isDisklessError(e, 'IMAGES_INITRAMFS_CORRUPT') && /more than 1048576 bytes/.test((e as Error).message));
});

test('findEntry follows symlinks in every component and stops on loops', async () => {
  const l = await listInitramfs(
    writeCpio([
      { name: 'usr' },
      { name: 'usr/sbin' },
      { name: 'usr/sbin/nbd-client', data: 'x' },
      { name: 'sbin', type: 'symlink', data: 'usr/sbin' },
      { name: 'abs', type: 'symlink', data: '/usr/sbin/nbd-client' },
      { name: 'usr/sbin/up', type: 'symlink', data: '../../sbin/nbd-client' },
      { name: 'loop1', type: 'symlink', data: 'loop2' },
      { name: 'loop2', type: 'symlink', data: 'loop1' },
    ]),
  );
  assert.equal(findEntry(l, 'sbin/nbd-client')?.path, 'usr/sbin/nbd-client');
  assert.equal(findEntry(l, '/abs')?.path, 'usr/sbin/nbd-client');
  assert.equal(findEntry(l, 'usr/sbin/up')?.path, 'usr/sbin/nbd-client');
  assert.equal(findEntry(l, 'loop1'), undefined);
  assert.equal(findEntry(l, 'sbin/missing'), undefined);
});

test('initramfs-tools: complete, then each requirement missing with its fix', async () => {
  for (const usrMerged of [true, false]) {
    const l = await list({ usrMerged });
    assert.equal(detectInitramfsFlavour(l), 'initramfs-tools');
    const ok = nbdSupport(l, { flavour: 'initramfs-tools', kernelVersion: V });
    assert.equal(ok.supported, true, JSON.stringify(ok.missing));
    assert.equal(ok.checks.find((c) => c.item === 'nbd-client')?.found, usrMerged ? 'usr/sbin/nbd-client' : 'sbin/nbd-client');
  }
  const cases: [Partial<InitrdSpec>, string, RegExp][] = [
    [{ nbdClient: false }, 'nbd-client', /install the nbd-client package/],
    [{ nbdModule: false }, 'nbd-module', /"nbd" to \/etc\/initramfs-tools\/modules/],
    [{ nbdScript: false }, 'nbd-script', /scripts\/local-top\/nbd/],
    [{ busybox: false }, 'grep', /BUSYBOX=y/],
  ];
  for (const [spec, item, fix] of cases) {
    const s = nbdSupport(await list(spec), { flavour: 'initramfs-tools', kernelVersion: V });
    assert.equal(s.supported, false, item);
    assert.deepEqual(s.missing.map((m) => m.item), [item]);
    assert.match(s.missing[0]!.fix, fix);
  }
  // The module for another kernel does not count.
  const other = nbdSupport(await list(), { flavour: 'initramfs-tools', kernelVersion: '6.1.0-2-amd64' });
  assert.match(other.missing.find((m) => m.item === 'nbd-module')!.need, /has modules for 6\.1\.0-1-amd64, not 6\.1\.0-2-amd64/);
  // Built in: modules.builtin in the initramfs, or the image's (nbdBuiltin).
  const builtin = nbdSupport(await list({ nbdModule: false, nbdBuiltin: true }), { flavour: 'initramfs-tools', kernelVersion: V });
  assert.equal(builtin.supported, true);
  assert.match(builtin.checks.find((c) => c.item === 'nbd-module')!.found!, /built into the kernel/);
  assert.equal(nbdSupport(await list({ nbdModule: false }), { flavour: 'initramfs-tools', kernelVersion: V, nbdBuiltin: true }).supported, true);
});

test('dracut: nbd module hook, /sbin/nbdroot, nbd.ko.xz; missing pieces named', async () => {
  const make = async (spec: Partial<InitrdSpec> = {}): Promise<InitramfsListing> =>
    listInitramfs(await makeInitrd({ kernelVersion: V, flavour: 'dracut', ...spec }), { capture: captureForNbd });
  const l = await make();
  assert.equal(detectInitramfsFlavour(l), 'dracut');
  const ok = nbdSupport(l, { flavour: 'dracut', kernelVersion: V });
  assert.equal(ok.supported, true, JSON.stringify(ok.missing));
  assert.match(ok.checks.find((c) => c.item === 'nbd-module')!.found!, /nbd\.ko\.xz$/);
  assert.match(ok.checks.find((c) => c.item === 'nbd-script')!.found!, /hooks\/cmdline\/90-parse-nbdroot\.sh, usr\/sbin\/nbdroot/);
  const noHook = nbdSupport(await make({ nbdScript: false }), { flavour: 'dracut', kernelVersion: V });
  assert.deepEqual(noHook.missing.map((m) => m.item), ['nbd-script']);
  assert.match(noHook.missing[0]!.fix, /dracut --force --add nbd/);
  const noModule = nbdSupport(await make({ nbdModule: false }), { flavour: 'dracut', kernelVersion: V });
  assert.deepEqual(noModule.missing.map((m) => m.item), ['nbd-module']);
});

test('the host\'s own Debian initramfs: same names as lsinitramfs, and it is initramfs-tools', async (t) => {
  if (!requirePeers(t, 'lsinitramfs')) return;
  const initrd = readdirSync('/boot').find((n) => n.startsWith('initrd.img-'));
  if (!initrd || !existsSync(join('/boot', initrd))) {
    if (process.env.CI === 'true') throw new Error('no /boot/initrd.img-* (scripts/setup installs linux-image-amd64)');
    t.skip('no /boot/initrd.img-* on this machine');
    return;
  }
  const path = join('/boot', initrd);
  const ours = await listInitramfs(path);
  const theirs = (await run('lsinitramfs', [path], { timeoutMs: 300_000 })).stdout.toString('utf8').trim().split('\n');
  // lsinitramfs prints the top directory as "." and paths relative to it; ours drops the "./".
  const expected = new Set(theirs.filter((n) => n !== '.' && !n.startsWith('kernel/x86/microcode') && n !== 'kernel' && n !== 'kernel/x86').map((n) => n.replace(/^\.\//, '')));
  const got = new Set([...ours.entries.keys()].filter((n) => n !== '' && !n.startsWith('kernel/x86/microcode') && n !== 'kernel' && n !== 'kernel/x86'));
  assert.deepEqual([...got].filter((n) => !expected.has(n)), [], 'names we list that lsinitramfs does not');
  assert.deepEqual([...expected].filter((n) => !got.has(n)), [], 'names lsinitramfs lists that we do not');
  assert.equal(detectInitramfsFlavour(ours), 'initramfs-tools');
});
