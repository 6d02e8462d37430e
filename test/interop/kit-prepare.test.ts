/**
 * `kit prepare` in real Debian bookworm systems: two debootstrap chroots, one
 * with initramfs-tools and one with dracut in its place (standing in for
 * Fedora and the RHEL family), with /proc, /sys and /dev bound in for the run
 * and unmounted after. The chroots are cached as tarballs (kit-chroot.ts).
 *
 * Each system is given what a real one has for the kit to change: an fstab
 * whose root is named by device (a loop device holding an ext4 file system)
 * plus a swap entry; ifupdown's DHCP stanza for the boot NIC (initramfs-tools
 * system), systemd-networkd and NetworkManager configuration (dracut system).
 * The kit installs what is missing with apt (nbd-client, curl, busybox or
 * dracut-network and a D-Bus daemon), so the run needs the Debian mirror.
 *
 * Checked independently of the kit's own report:
 * - the initramfs, listed with lsinitramfs / lsinitrd, holds nbd-client, the
 *   nbd module and every NIC driver (this machine's and the common ones) the
 *   kernel has as a module;
 * - fstab names the root by UUID (the loop device's), swap is commented out;
 *   resume is off; the boot NIC is kept from the network managers;
 *   diskless-up.service is enabled;
 * - running prepare a second time changes nothing: every file under /etc,
 *   /boot, /usr/local and /var/backups has the same sha256 before and after,
 *   and the kit's own checksums of the files it touched are the same;
 * - a step that cannot be done (an unknown --nic) stops before any change.
 *
 * Slow: each system builds one initramfs (minutes under this machine's
 * process start-up costs); the two systems run side by side.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, writeFileSync, symlinkSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Catalogue } from '../../src/app/catalogue.js';
import { kernelCommandLine } from '../../src/boot/kernel-cmdline.js';
import { chooseRoot, readVersionBoot } from '../../src/boot/service.js';
import { makeDisk } from '../../src/images/build-debian.js';
import { loadKitTemplate, renderKit } from '../../src/images/capture/kit-script.js';
import type { BootInfo } from '../../src/state/store.js';
import { havePeer } from '../helpers/peers.js';
import {
  ChrootMounts, ensureChrootTarball, removeChroot, run, unpack, type Flavour, type Prepared,
} from './kit-chroot.js';

const PEERS = ['debootstrap', 'chroot', 'mount', 'umount', 'tar', 'gzip', 'losetup', 'mkfs.ext4', 'blkid'];
/** One prepare run: apt installs and one initramfs build, bounded. */
const PREPARE_TIMEOUT_MS = 30 * 60_000;
const COMMON_DRIVERS = ['e1000', 'e1000e', 'igb', 'ixgbe', 'r8169', 'virtio_net'];
const CHROOT_ENV = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  LC_ALL: 'C', HOME: '/root', DEBIAN_FRONTEND: 'noninteractive',
  // The kit's scratch inside the chroot (its /dev/shm is not a tmpfs under a plain bind of /dev).
  DISKLESS_TMPDIR: '/tmp',
};

let workDir = '';
let skipWhy: string | null = null;
let setupError: unknown = null;
const tarballs = new Map<Flavour, Prepared>();

before(async () => {
  const missing = PEERS.filter((p) => !havePeer(p));
  if (process.getuid?.() !== 0) skipWhy = 'needs root (chroot, bind mounts, loop devices)';
  else if (missing.length) skipWhy = `missing peer programs: ${missing.join(', ')} (scripts/setup installs them)`;
  if (skipWhy) {
    if (process.env.CI === 'true') throw new Error(skipWhy);
    return;
  }
  // On disk, not tmpfs: a chroot is several hundred MiB.
  mkdirSync('/var/tmp', { recursive: true });
  workDir = mkdtempSync('/var/tmp/dl-kit-prepare-');
  try {
    // One after the other: both start from the same cached base.
    for (const f of ['initramfs-tools', 'dracut'] as Flavour[]) tarballs.set(f, await ensureChrootTarball(f, workDir));
  } catch (e) {
    setupError = e;
  }
}, { timeout: 90 * 60_000 });

after(() => {
  // Kept (failed) systems stay for a look; an empty work directory goes.
  if (workDir && readdirSync(workDir).length === 0) removeChroot(workDir);
});

/** The NIC of the default route, as the kit finds it (the chroot sees this machine's network). */
function bootNic(): { name: string; mac: string; driver: string | null } {
  const line = readFileSync('/proc/net/route', 'utf8').split('\n').slice(1).find((l) => l.split(/\s+/)[1] === '00000000');
  const name = line?.split(/\s+/)[0];
  if (!name) throw new Error('this machine has no default route: the kit needs a boot NIC');
  const mac = readFileSync(`/sys/class/net/${name}/address`, 'utf8').trim();
  let driver: string | null = null;
  try { driver = readlinkSync(`/sys/class/net/${name}/device/driver/module`).split('/').pop() ?? null; } catch { /* virtual */ }
  return { name, mac, driver };
}

/** sha256 of every file (and symlink target) under the given roots of a chroot. */
function manifest(root: string, dirs: string[]): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string): void => {
    const abs = join(root, rel);
    let st;
    try { st = lstatSync(abs); } catch { return; }
    if (st.isSymbolicLink()) out.set(rel, `-> ${readlinkSync(abs)}`);
    else if (st.isDirectory()) for (const n of readdirSync(abs).sort()) walk(join(rel, n));
    else if (st.isFile()) out.set(rel, createHash('sha256').update(readFileSync(abs)).digest('hex'));
  };
  for (const d of dirs) walk(d);
  return out;
}

function readVersionBootOrThrow(info: BootInfo | null) {
  const r = readVersionBoot(info);
  if (!r.ok) throw new Error(`the version cannot boot: ${r.reason}`);
  return r.boot;
}

function diff(a: Map<string, string>, b: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of a) if (b.get(k) !== v) out.push(`${k}: ${v} -> ${b.get(k) ?? '(gone)'}`);
  for (const k of b.keys()) if (!a.has(k)) out.push(`${k}: (new)`);
  return out;
}

/** The kit's "touched files (sha256)" block: `sha  path` lines. */
function touchedSums(output: string): string[] {
  const block = output.split('[prepare] touched files (sha256):\n')[1] ?? '';
  return block.split('\n').filter((l) => /^ {2}[0-9a-f]{64} {2}\//.test(l)).sort();
}

const MANIFEST_DIRS = ['etc', 'boot', 'usr/local', 'var/backups'];

async function prepareFlavour(flavour: Flavour, t: { diagnostic(s: string): void }): Promise<void> {
  if (setupError) throw setupError;
  const prepared = tarballs.get(flavour)!;
  if (prepared.built) t.diagnostic(`built ${prepared.tarball} in ${Math.round(prepared.buildMs / 1000)} s`);
  const dir = mkdtempSync(join(workDir, `${flavour}-`));
  const root = join(dir, 'root');
  const logs: string[] = [];
  let loop: string | null = null;
  const mounts = new ChrootMounts(root);
  let passed = false;
  try {
    await unpack(prepared.tarball, root);
    const nic = bootNic();

    // A root file system named by device, as an installer may leave it.
    const image = join(dir, 'rootfs.img');
    assert.equal((await run('truncate', ['-s', '32M', image], { timeoutMs: 30_000 })).code, 0);
    assert.equal((await run('mkfs.ext4', ['-q', '-F', image], { timeoutMs: 60_000 })).code, 0);
    const lo = await run('losetup', ['-f', '--show', image], { timeoutMs: 30_000 });
    assert.equal(lo.code, 0, lo.output);
    loop = lo.output.trim();
    const uuid = (await run('blkid', ['-s', 'UUID', '-o', 'value', loop], { timeoutMs: 30_000 })).output.trim();
    assert.match(uuid, /^[0-9a-f-]{36}$/);
    writeFileSync(join(root, 'etc/fstab'), [
      '# /etc/fstab of the test system',
      `${loop} / ext4 errors=remount-ro 0 1`,
      '/swapfile none swap sw 0 0',
      'proc /proc proc defaults 0 0',
      '',
    ].join('\n'));
    if (flavour === 'initramfs-tools') {
      writeFileSync(join(root, 'etc/network/interfaces'), [
        'source /etc/network/interfaces.d/*', '', 'auto lo', 'iface lo inet loopback', '',
        `allow-hotplug ${nic.name}`, `iface ${nic.name} inet dhcp`, '',
      ].join('\n'));
    } else {
      mkdirSync(join(root, 'etc/systemd/network'), { recursive: true });
      writeFileSync(join(root, 'etc/systemd/network/20-wired.network'), '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n');
      mkdirSync(join(root, 'etc/systemd/system/multi-user.target.wants'), { recursive: true });
      symlinkSync('/lib/systemd/system/systemd-networkd.service', join(root, 'etc/systemd/system/multi-user.target.wants/systemd-networkd.service'));
      mkdirSync(join(root, 'etc/NetworkManager/conf.d'), { recursive: true });
    }
    // The kit as the server serves it.
    writeFileSync(join(root, 'root/diskless-kit.sh'), renderKit(await loadKitTemplate(), 'http://127.0.0.1:9'));
    writeFileSync(join(root, 'etc/resolv.conf'), readFileSync('/etc/resolv.conf'));

    await mounts.mount();
    const kit = (args: string[]) => run('chroot', [root, 'sh', '/root/diskless-kit.sh', ...args], { timeoutMs: PREPARE_TIMEOUT_MS, env: CHROOT_ENV });

    // A step that cannot be done stops before anything changes.
    const untouched = manifest(root, MANIFEST_DIRS);
    const refused = await kit(['prepare', '--nic', 'no-such-nic0']);
    logs.push(`--- prepare --nic no-such-nic0 (exit ${refused.code})\n${refused.output}`);
    assert.equal(refused.code, 1);
    assert.match(refused.output, /\[nic\] error: no network interface no-such-nic0/);
    assert.deepEqual(diff(untouched, manifest(root, MANIFEST_DIRS)), [], 'a refused prepare changed nothing');

    const started = Date.now();
    const first = await kit(['prepare']);
    logs.push(`--- prepare #1 (exit ${first.code}, ${Date.now() - started} ms)\n${first.output}`);
    assert.equal(first.code, 0, `prepare failed:\n${first.output.slice(-6000)}`);
    t.diagnostic(`${flavour}: first prepare took ${Math.round((Date.now() - started) / 1000)} s`);

    // The initramfs, listed by the distribution's own tool.
    const kernels = readdirSync(join(root, 'lib/modules'));
    assert.ok(kernels.length > 0, 'a kernel is installed');
    for (const kv of kernels) {
      const img = ['boot/initrd.img-' + kv, `boot/initramfs-${kv}.img`].find((p) => existsSync(join(root, p)));
      assert.ok(img, `kernel ${kv} has an initramfs`);
      const lister = flavour === 'initramfs-tools' ? ['lsinitramfs', `/${img}`] : ['lsinitrd', `/${img}`];
      const listing = await run('chroot', [root, ...lister], { timeoutMs: 10 * 60_000, env: CHROOT_ENV });
      assert.equal(listing.code, 0, listing.output.slice(-2000));
      const files = listing.output;
      assert.match(files, /s?bin\/nbd-client\n/, `${img} holds nbd-client`);
      const drivers = ['nbd', ...new Set([...COMMON_DRIVERS, ...(nic.driver ? [nic.driver] : [])])];
      const present: string[] = [];
      for (const d of drivers) {
        const mf = (await run('chroot', [root, 'modinfo', '-k', kv, '-F', 'filename', d], { timeoutMs: 60_000, env: CHROOT_ENV })).output.trim();
        if (mf === '(builtin)') continue;
        assert.ok(mf.endsWith('.ko') || /\.ko\.(xz|zst|gz)$/.test(mf), `kernel ${kv} has module ${d} (${mf})`);
        const name = mf.split('/').pop()!.replace(/\.(xz|zst|gz)$/, '');
        assert.ok(files.includes(`/${name}`), `${img} holds ${d} (${name})`);
        present.push(d);
      }
      t.diagnostic(`${flavour}: ${img} holds nbd-client and ${present.join(', ')}`);
      if (flavour === 'initramfs-tools') {
        assert.match(files, /scripts\/local-top\/nbd\n/, 'the nbd boot script');
        assert.match(files, /bin\/busybox\n/, 'busybox, which the nbd script needs');
      } else {
        assert.match(files, /nbdroot/, 'dracut\'s nbd hooks');
      }
    }

    // fstab: root by UUID, swap off.
    const fstab = readFileSync(join(root, 'etc/fstab'), 'utf8');
    assert.match(fstab, new RegExp(`^UUID=${uuid} / ext4 errors=remount-ro 0 1$`, 'm'));
    assert.doesNotMatch(fstab, /^[^#].*\sswap\s/m, 'no active swap entry');
    assert.match(fstab, /^# diskless: swap stays off the network disk: \/swapfile none swap sw 0 0$/m);
    assert.match(fstab, /^proc \/proc proc defaults 0 0$/m, 'other entries kept');
    // Units.
    assert.ok(lstatSync(join(root, 'etc/systemd/system/multi-user.target.wants/diskless-up.service')).isSymbolicLink());
    assert.match(readFileSync(join(root, 'etc/systemd/system/diskless-up.service'), 'utf8'), /ExecStart=\/usr\/local\/sbin\/diskless-up/);
    const upScript = readFileSync(join(root, 'usr/local/sbin/diskless-up'), 'utf8');
    assert.match(upScript, /diskless\.up=/);
    assert.match(upScript, /DISKLESS-UP/);
    // Resume and the boot NIC.
    if (flavour === 'initramfs-tools') {
      assert.match(readFileSync(join(root, 'etc/initramfs-tools/conf.d/resume'), 'utf8'), /^RESUME=none$/m);
      const ifaces = readFileSync(join(root, 'etc/network/interfaces'), 'utf8');
      assert.match(ifaces, new RegExp(`^iface ${nic.name} inet manual$`, 'm'));
      assert.doesNotMatch(ifaces, new RegExp(`^\\s*(auto|allow-hotplug)\\s.*\\b${nic.name}\\b`, 'm'), 'ifupdown does not bring the boot NIC up or down');
      assert.match(ifaces, /^auto lo$/m);
      assert.match(readFileSync(join(root, 'etc/initramfs-tools/modules'), 'utf8'), /^nbd$/m);
    } else {
      const conf = readFileSync(join(root, 'etc/dracut.conf.d/diskless.conf'), 'utf8');
      assert.match(conf, /^add_dracutmodules\+=" nbd network "$/m);
      assert.match(conf, /^add_drivers\+=" nbd .*virtio_net.* "$/m);
      assert.match(conf, /^omit_dracutmodules\+=" resume "$/m);
      assert.match(readFileSync(join(root, 'etc/modules-load.d/diskless.conf'), 'utf8'), /^nbd$/m);
      const networkd = readFileSync(join(root, 'etc/systemd/network/10-diskless-boot.network'), 'utf8');
      assert.match(networkd, new RegExp(`^MACAddress=${nic.mac}$`, 'm'));
      assert.match(networkd, /^KeepConfiguration=yes$/m);
      assert.match(readFileSync(join(root, 'etc/NetworkManager/conf.d/90-diskless.conf'), 'utf8'), new RegExp(`^unmanaged-devices=mac:${nic.mac}$`, 'm'));
    }

    // Twice: nothing changes.
    const beforeSecond = manifest(root, MANIFEST_DIRS);
    const second = await kit(['prepare']);
    logs.push(`--- prepare #2 (exit ${second.code})\n${second.output}`);
    assert.equal(second.code, 0, second.output.slice(-6000));
    assert.deepEqual(diff(beforeSecond, manifest(root, MANIFEST_DIRS)), [], 'the second prepare changed no file');
    assert.match(second.output, /done: nothing to change/);
    assert.match(second.output, /\[initramfs\] up to date: no rebuild/);
    const sums1 = touchedSums(first.output);
    assert.ok(sums1.length >= 8, `the kit listed the files it touched:\n${sums1.join('\n')}`);
    assert.deepEqual(touchedSums(second.output), sums1, 'the touched files have the same sha256 after the second run');

    // The prepared system as a disk the server takes in (what capture would send):
    // its flavour found, its initramfs able to mount the root over NBD, the command line to match.
    await mounts.unmount();
    const disk = join(dir, 'prepared.raw');
    const diskUuid = randomUUID();
    await makeDisk(disk, root, 3 * 1024 ** 3, diskUuid);
    const catalogue = Catalogue.open(join(dir, 'data'));
    try {
      const v = await catalogue.importVersion('prepared', disk, { move: true });
      const info = v.bootInfo as Record<string, unknown>;
      assert.equal(info.initramfsFlavour, flavour);
      assert.equal(info.rootUuid, diskUuid);
      const line = kernelCommandLine({
        flavour, nbd: { server: '10.0.0.1', port: 10809, exportName: 'x' }, root: chooseRoot(readVersionBootOrThrow(v.bootInfo), 10809), network: 'ipxe',
      });
      assert.match(line, flavour === 'dracut' ? new RegExp(`netroot=nbd:10\\.0\\.0\\.1:10809/x root=UUID=${diskUuid} .*rd\\.neednet=1`) : new RegExp(`nbdroot=10\\.0\\.0\\.1,x,nbd0 root=UUID=${diskUuid}`));
      t.diagnostic(`${flavour}: the prepared system imports as a version booting kernel ${String(info.kernelVersion)}: ${line}`);
    } finally {
      catalogue.close();
    }
    passed = true;
  } finally {
    await mounts.unmount().catch((e) => logs.push(`unmount: ${String(e)}`));
    if (loop) await run('losetup', ['-d', loop], { timeoutMs: 30_000 });
    if (passed && process.env.DISKLESS_KIT_KEEP !== '1') {
      removeChroot(dir);
    } else {
      writeFileSync(join(dir, 'kit.log'), logs.join('\n'));
      t.diagnostic(`kept ${dir} (kit.log)`);
    }
  }
}

describe('kit prepare in Debian chroots', { concurrency: 2, timeout: 120 * 60_000 }, () => {
  for (const flavour of ['initramfs-tools', 'dracut'] as Flavour[]) {
    it(`${flavour}: initramfs with nbd and NIC drivers, fstab by UUID, swap and resume off, boot NIC kept; twice changes nothing`, async (t) => {
      if (skipWhy) return t.skip(skipWhy);
      await prepareFlavour(flavour, t);
    });
  }
});
