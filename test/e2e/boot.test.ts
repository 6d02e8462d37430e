/**
 * End to end: disk-less QEMU clients power on in a lab namespace, get an
 * address and iPXE script from our DHCP and HTTP, load the image version's
 * kernel and initramfs, mount their root over our NBD server through their
 * own copy-on-write overlay, and reach multi-user (the image's
 * diskless-up.service prints `DISKLESS-UP <root source>` and reports to the
 * server).
 *
 *   1. one SeaBIOS + iPXE client: the whole boot timeline, as the server
 *      recorded it, step by step with times;
 *   2. two clients at once on one image, OVMF + iPXE and SeaBIOS + iPXE:
 *      each writes a file through its console shell that the other never
 *      sees, and the image version file is never written.
 *
 * The image is the Debian 12 test image (src/images buildDebianImage, root
 * logged in on ttyS0), cached under DISKLESS_TEST_CACHE (default
 * /var/cache/diskless-test): the first run builds it (minutes, network),
 * later runs copy it. Each full boot takes 2-4 minutes under TCG.
 */
import { after, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Store, type BootEventRecord } from '../../src/state/store.js';
import { createLab, readLog } from '../helpers/lab.js';
import { requirePeers, requireRoot } from '../helpers/peers.js';
import { DISKLESS_UP_LINE, serverTimeline, untilRecorded } from '../helpers/lab-boot.js';
import { assertBootTimeline, buildTestImage, E2E_LIMITS, macFor, prepareCatalogue, startFullServerInLab, startShellVm, type ShellVm } from './helpers/e2e.js';

const IMAGE = 'debian12';
const PEERS = ['ip', 'qemu-system-x86_64', 'debootstrap', 'sfdisk', 'mkfs.ext4'] as const;

let imageDir: string | null = null;
let imagePromise: Promise<string> | null = null;

/** The built image (from the cache after the first build), once per process. */
function testImage(): Promise<string> {
  imagePromise ??= (async () => {
    imageDir = mkdtempSync('/var/tmp/diskless-e2e-');
    const out = join(imageDir, 'disk.raw');
    await buildTestImage(out);
    return out;
  })();
  return imagePromise;
}

function ready(t: TestContext): boolean {
  return requireRoot(t) && requirePeers(t, ...PEERS);
}

/** Boots a VM until DISKLESS-UP and the server has the os-up report; returns the root device and the timeline. */
async function bootToUp(store: Store, vm: ShellVm): Promise<{ root: string; upAt: number; events: BootEventRecord[]; times: Record<string, number> }> {
  const m = await vm.waitForSerial(DISKLESS_UP_LINE, E2E_LIMITS.bootMs);
  const upAt = Math.round((Date.now() - vm.startedAt) / 100) / 10;
  const events = await untilRecorded(store, vm.mac, 'os-up', E2E_LIMITS.reportMs, vm.startedAt);
  return { root: m[1]!, upAt, events, times: serverTimeline(events, vm.startedAt) };
}

describe('end to end: disk-less clients boot Debian over our DHCP, HTTP and NBD', () => {
  after(() => {
    if (imageDir) rmSync(imageDir, { recursive: true, force: true });
  });

  test('SeaBIOS + iPXE boots to multi-user with its root on /dev/nbd0 and the server records the timeline', { timeout: E2E_LIMITS.imageBuildMs + E2E_LIMITS.bootMs + 120_000 }, async (t) => {
    if (!ready(t)) return;
    const disk = await testImage();
    const lab = await createLab({ t });
    const mac = macFor(1);
    const dataDir = join(lab.dir, 'data');
    const version = await prepareCatalogue(dataDir, IMAGE, disk, [mac]);
    await startFullServerInLab(lab, dataDir);
    const store = Store.open(dataDir);
    t.after(() => store.close());

    const vm = await startShellVm(lab, { firmware: 'bios-ipxe', mac });
    const up = await bootToUp(store, vm);
    t.diagnostic(`${vm.firmware} (${vm.accel}): ${Object.entries(up.times).map(([k, v]) => `${k} +${v}s`).join(', ')}; DISKLESS-UP on the console +${up.upAt}s`);
    assert.match(up.root, /^\/dev\/nbd0(p\d+)?$/, 'the root is the NBD device');
    assertBootTimeline(vm, up.events, IMAGE, vm.startedAt);

    const kernel = up.events.find((e) => e.step === 'kernel')!;
    const initrd = up.events.find((e) => e.step === 'initrd')!;
    const info = version.bootInfo as Record<string, unknown>;
    assert.equal(kernel.detail?.size, statSync(join(dataDir, String(info.kernelFile))).size);
    assert.equal(initrd.detail?.size, statSync(join(dataDir, String(info.initrdFile))).size);
    // The client's state in the catalogue follows the report.
    const client = store.clients.get(mac)!;
    assert.equal(client.state, 'up');
    await vm.stop();
  });

  test('two clients at once on one image (OVMF + iPXE, SeaBIOS + iPXE) each write a file the other never sees', { timeout: E2E_LIMITS.imageBuildMs + E2E_LIMITS.bootMs + 4 * E2E_LIMITS.shellMs + 120_000 }, async (t) => {
    if (!ready(t)) return;
    const disk = await testImage();
    const lab = await createLab({ t });
    const macs = [macFor(2), macFor(3)];
    const dataDir = join(lab.dir, 'data');
    const version = await prepareCatalogue(dataDir, IMAGE, disk, macs);
    const versionFile = join(dataDir, version.path);
    const before = statSync(versionFile);
    await startFullServerInLab(lab, dataDir);
    const store = Store.open(dataDir);
    t.after(() => store.close());

    const vms = [
      await startShellVm(lab, { firmware: 'uefi-ipxe', mac: macs[0]! }),
      await startShellVm(lab, { firmware: 'bios-ipxe', mac: macs[1]! }),
    ];
    const ups = await Promise.all(vms.map((vm) => bootToUp(store, vm)));
    vms.forEach((vm, i) => {
      t.diagnostic(`${vm.firmware} (${vm.accel}, two at once): ${Object.entries(ups[i]!.times).map(([k, v]) => `${k} +${v}s`).join(', ')}; DISKLESS-UP +${ups[i]!.upAt}s`);
      assert.match(ups[i]!.root, /^\/dev\/nbd0(p\d+)?$/);
      assertBootTimeline(vm, ups[i]!.events, IMAGE, vm.startedAt);
    });

    // The console is root's shell (autologin): wait for its prompt.
    for (const vm of vms) await vm.waitForSerial(/root@[^\s:]+:[^\n]*# ?$/m, E2E_LIMITS.shellMs);
    const [a, b] = vms as [ShellVm, ShellVm];
    const secret = (vm: ShellVm): string => `secret-of-${vm.mac.replace(/:/g, '')}`;
    for (const vm of vms) {
      const outText = await vm.shell(`echo ${secret(vm)} > /root/mine.txt && sync && cat /root/mine.txt`);
      assert.match(outText, new RegExp(secret(vm)), `${vm.name} reads back what it wrote`);
    }
    for (const [vm, other] of [[a, b], [b, a]] as const) {
      const outText = await vm.shell('cat /root/mine.txt; ls /root');
      assert.match(outText, new RegExp(secret(vm)), `${vm.name} still has its own file`);
      assert.doesNotMatch(outText, new RegExp(secret(other)), `${vm.name} never sees ${other.name}'s write`);
    }
    // Both really run on the same image version, through two overlays; the version file is untouched.
    const nbds = ups.map((u) => u.events.find((e) => e.step === 'nbd-connect' && e.detail?.version === version.version));
    assert.ok(nbds.every(Boolean), 'both clients connected to the same version');
    const overlays = macs.map((mac) => store.overlays.forClient(store.clients.get(mac)!.id));
    assert.ok(overlays[0] && overlays[1] && overlays[0].id !== overlays[1].id, 'one overlay per client');
    for (const o of overlays) assert.ok(existsSync(join(dataDir, o!.dir)), `overlay ${o!.dir} exists`);
    const afterStat = statSync(versionFile);
    assert.equal(afterStat.mtimeMs, before.mtimeMs, 'the image version was never written');
    assert.equal(afterStat.size, before.size);
    t.diagnostic(`console tails: ${vms.map((vm) => readLog(vm.serialLog).slice(-200).replace(/\n/g, ' | ')).join(' || ')}`);
    await Promise.all(vms.map((vm) => vm.stop()));
  });
});
