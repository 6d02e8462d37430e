/**
 * End to end, the boot paths other than "iPXE ROM + our full DHCP" (which
 * boot.test.ts covers), each from power-on to multi-user with the root on
 * our NBD server, one boot each:
 *
 *   (a) OVMF's own PXE client (the NIC has no option ROM, `romfile=`):
 *       DHCP from us, snponly.efi over our TFTP, then iPXE's own DHCP from
 *       us, our script, kernel, initramfs, NBD;
 *   (b) proxyDHCP: dnsmasq is the site's DHCP server (addresses only, no
 *       PXE options, in a namespace of its own on the lab bridge) and our
 *       server answers beside it in proxy mode; a SeaBIOS + iPXE client
 *       takes its address from the site and its boot from us.
 *
 * test/interop/boot-lab.test.ts takes the same paths as far as the kernel
 * download, with the host's kernel; here the kernel is the image's and the
 * boot goes on until the image's diskless-up.service prints `DISKLESS-UP
 * <findmnt source of />` on the serial console and reports to the server.
 *
 * Router advertisements run on both links (in (b) the site's dnsmasq sends
 * them, as a site router would), so iPXE does not spend 13-20 s waiting for
 * IPv6: that wait is not what these tests are about.
 *
 * The image is the cached Debian 12 test image (buildTestImage, as in
 * boot.test.ts). Each boot takes 2-4 minutes under TCG.
 */
import { after, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Store, type BootEventRecord } from '../../src/state/store.js';
import { createLab, readLog } from '../helpers/lab.js';
import { DISKLESS_UP_LINE, labServerConfig, latestBootId, NBD_ROOT_SOURCE, serverTimeline, startRouterAdverts, startServerInLab, startSiteDhcp, untilRecorded } from '../helpers/lab-boot.js';
import { IPXE_FILES } from '../helpers/lab-peers.js';
import { requirePeers, requireRoot } from '../helpers/peers.js';
import { buildTestImage, E2E_LIMITS, macFor, prepareCatalogue, startShellVm } from './helpers/e2e.js';

const IMAGE = 'debian12';
const PEERS = ['ip', 'qemu-system-x86_64', 'dnsmasq', 'unshare', 'debootstrap', 'sfdisk', 'mkfs.ext4'] as const;
const MACS = { ovmfPxe: macFor(4), proxy: macFor(5) } as const;
const TEST_TIMEOUT_MS = E2E_LIMITS.imageBuildMs + E2E_LIMITS.bootMs + 180_000;

let workDir: string | null = null;
let cataloguePromise: Promise<string> | null = null;

/** One data directory with the image (built or taken from the cache) and both clients, once per process. */
function dataDir(): Promise<string> {
  cataloguePromise ??= (async () => {
    workDir = mkdtempSync('/var/tmp/diskless-e2e-paths-');
    const disk = join(workDir, 'disk.raw');
    await buildTestImage(disk);
    const dir = join(workDir, 'data');
    await prepareCatalogue(dir, IMAGE, disk, [MACS.ovmfPxe, MACS.proxy]);
    // The catalogue holds its own copy of the disk.
    rmSync(disk, { force: true });
    return dir;
  })();
  return cataloguePromise;
}

function ready(t: TestContext): boolean {
  return requireRoot(t) && requirePeers(t, ...PEERS);
}

function first(events: readonly BootEventRecord[], step: string, pred: (e: BootEventRecord) => boolean = () => true): BootEventRecord {
  const e = events.find((x) => x.step === step && pred(x));
  assert.ok(e, `${step} recorded (have ${events.map((x) => x.step).join(' ')})`);
  return e;
}

/** Steps in recording order, repeats collapsed. */
function steps(events: readonly BootEventRecord[]): string[] {
  const out: string[] = [];
  for (const e of events) if (out.at(-1) !== e.step) out.push(e.step);
  return out;
}

function assertOrdered(events: readonly BootEventRecord[], order: readonly BootEventRecord[]): void {
  for (let i = 1; i < order.length; i += 1) {
    assert.ok(order[i]!.timeMs >= order[i - 1]!.timeMs, `${order[i - 1]!.step} before ${order[i]!.step}: ${steps(events).join(' ')}`);
  }
}

describe('end to end: firmware paths beyond the iPXE ROMs, to multi-user with the root on NBD', () => {
  after(() => {
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  test('(a) OVMF PXE without an iPXE ROM chainloads snponly.efi over our TFTP, then our script, to DISKLESS-UP on /dev/nbd0', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!ready(t)) return;
    const data = await dataDir();
    const lab = await createLab({ t });
    await startRouterAdverts(lab);
    await startServerInLab(lab, labServerConfig(lab, data, { dhcp: 'full', uefiBinary: 'snponly.efi' }));
    const store = Store.open(data);
    t.after(() => store.close());

    const vm = await startShellVm(lab, { firmware: 'uefi-pxe', mac: MACS.ovmfPxe });
    const up = await vm.waitForSerial(DISKLESS_UP_LINE, E2E_LIMITS.bootMs);
    const upAt = Math.round(Date.now() - vm.startedAt) / 1000;
    const events = await untilRecorded(store, vm.mac, 'os-up', E2E_LIMITS.reportMs, vm.startedAt);
    await vm.stop();
    t.diagnostic(`${vm.firmware} (${vm.accel}): ${Object.entries(serverTimeline(events, vm.startedAt)).map(([k, v]) => `${k} +${v}s`).join(', ')}; DISKLESS-UP +${upAt}s`);

    assert.match(up[1]!, NBD_ROOT_SOURCE, 'findmnt says / is on the NBD disk');
    const bootId = latestBootId(events);
    const mine = (e: BootEventRecord): boolean => e.bootId === bootId;
    // The firmware: no iPXE yet, so a TFTP boot file (the UEFI binary of the configuration) from us.
    const firmwareAck = first(events, 'dhcp-ack', (e) => e.detail?.ipxe !== true);
    assert.deepEqual(firmwareAck.detail?.boot, { tftp: 'snponly.efi', nextServer: lab.serverAddress });
    const tftp = events.filter((e) => e.step === 'tftp');
    assert.equal(tftp.length, 1, 'one complete transfer of the boot file');
    assert.equal(tftp[0]!.detail?.file, 'snponly.efi');
    assert.equal(tftp[0]!.detail?.bytes, statSync(IPXE_FILES['snponly.efi']).size);
    // iPXE from snponly.efi then asks DHCP again and is handed its script.
    const ipxeAck = first(events, 'dhcp-ack', (e) => e.detail?.ipxe === true);
    assert.deepEqual(ipxeAck.detail?.boot, { http: `http://${lab.serverAddress}:8080/ipxe/${vm.mac.replace(/:/g, '-')}` });
    const order = [firmwareAck, tftp[0]!, ipxeAck, first(events, 'script', mine), first(events, 'kernel', mine), first(events, 'initrd', mine), first(events, 'nbd-connect', mine), first(events, 'os-up', mine)];
    assertOrdered(events, order);
    const nbd = order[6]!;
    assert.equal(nbd.detail?.image, IMAGE);
    assert.equal(nbd.detail?.address, ipxeAck.detail?.address, 'the kernel connects to NBD from the address iPXE was given');
    assert.equal(store.clients.get(vm.mac)?.state, 'up');
  });

  test('(b) proxyDHCP beside the site dnsmasq: SeaBIOS + iPXE takes the site address and our boot, to DISKLESS-UP on /dev/nbd0', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!ready(t)) return;
    const data = await dataDir();
    const lab = await createLab({ t });
    const site = await startSiteDhcp(lab);
    await startServerInLab(lab, labServerConfig(lab, data, { dhcp: 'proxy' }));
    const store = Store.open(data);
    t.after(() => store.close());

    const vm = await startShellVm(lab, { firmware: 'bios-ipxe', mac: MACS.proxy });
    const up = await vm.waitForSerial(DISKLESS_UP_LINE, E2E_LIMITS.bootMs);
    const upAt = Math.round(Date.now() - vm.startedAt) / 1000;
    const events = await untilRecorded(store, vm.mac, 'os-up', E2E_LIMITS.reportMs, vm.startedAt);
    await vm.stop();
    t.diagnostic(`proxy ${vm.firmware} (${vm.accel}): ${Object.entries(serverTimeline(events, vm.startedAt)).map(([k, v]) => `${k} +${v}s`).join(', ')}; DISKLESS-UP +${upAt}s`);

    assert.match(up[1]!, NBD_ROOT_SOURCE, 'findmnt says / is on the NBD disk');
    // The address is the site's: we never offered one, only the boot.
    const siteLog = readLog(site.child.logFile);
    const leased = [...siteLog.matchAll(new RegExp(`DHCPACK\\(vsite0\\) (\\S+) ${vm.mac}`, 'g'))].map((m) => m[1]!);
    assert.ok(leased.length >= 1, `the site acknowledged an address for ${vm.mac}`);
    const offers = events.filter((e) => e.step === 'dhcp-offer');
    assert.ok(offers.length >= 1, 'our proxy offer was recorded');
    for (const o of events.filter((e) => e.step === 'dhcp-offer' || e.step === 'dhcp-ack')) {
      assert.equal(o.detail?.mode, 'proxy', `${o.step} sent in proxy mode`);
      assert.equal(o.detail?.address, undefined, `our ${o.step} carries no address`);
    }
    assert.ok(offers.some((o) => JSON.stringify(o.detail?.boot) === JSON.stringify({ http: `http://${lab.serverAddress}:8080/ipxe/${vm.mac.replace(/:/g, '-')}` })), 'iPXE is handed its script');
    const bootId = latestBootId(events);
    const mine = (e: BootEventRecord): boolean => e.bootId === bootId;
    const order = [first(events, 'script', mine), first(events, 'kernel', mine), first(events, 'initrd', mine), first(events, 'nbd-connect', mine), first(events, 'os-up', mine)];
    assertOrdered(events, order);
    assert.ok(leased.includes(String(order[0]!.detail?.address)), `script fetched from a site-leased address (${String(order[0]!.detail?.address)} in ${leased.join(', ')})`);
    assert.ok(leased.includes(String(order[3]!.detail?.address)), `NBD from the site-leased address (${String(order[3]!.detail?.address)})`);
    assert.equal(order[3]!.detail?.image, IMAGE);
    assert.ok(!events.some((e) => e.step === 'tftp'), 'the iPXE ROM needs no TFTP');
  });
});
