/**
 * Issue 3, against real firmware: the boot services (startBootServices, run
 * as their own process inside a lab namespace, bound to the lab's server
 * address) take disk-less QEMU clients from power-on to the kernel and
 * initramfs of their image version.
 *
 *   full DHCP:  (a) SeaBIOS + iPXE ROM   (b) OVMF + iPXE EFI ROM
 *               (c) OVMF's own PXE, which must chainload snponly.efi over our TFTP
 *   proxyDHCP beside dnsmasq as the site's DHCP server (addresses only, no
 *   boot options, on its own address in its own namespace):
 *               (a) and (c), (c) chainloading ipxe.efi
 *
 * Each client counts as booted when the server has recorded, for the boot
 * its script started, the kernel and the initramfs being fetched, AND iPXE
 * has reported both downloads complete ("initrd.img... ok") on the serial
 * console. The timeline in the catalogue (DHCP, TFTP, script, kernel,
 * initrd) is checked step by step. The boot after that is not part of this
 * test (the kernel runs out of road without an NBD server).
 *
 * The kernel and initramfs are the host's (`/boot/vmlinuz-*`, `initrd.img-*`;
 * DISKLESS_BOOT_KERNEL and DISKLESS_BOOT_INITRD override), registered as
 * the boot files of an image version in a temporary catalogue.
 *
 * Router advertisements: the first full-DHCP lab has none, so iPXE there
 * waits for IPv6 to time out; a second one runs the server's own router
 * advertisements (startBootServices' routerAdvertisements: dnsmasq in
 * RA-only mode, src/boot/router-adverts.ts) and must get the script within
 * seconds of the DHCPACK; in the proxy lab the site's dnsmasq sends them, as
 * a site router would. The diagnostics print each timeline.
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Catalogue } from '../../src/app/catalogue.js';
import { Store, type BootEventRecord } from '../../src/state/store.js';
import { BOOT_SERVER_READY, BOOT_SERVER_SCRIPT } from '../helpers/boot-server.js';
import { createLab, readLog, waitForLog, type Lab, type LabChild, type QemuVm } from '../helpers/lab.js';
import { IPXE_FILES } from '../helpers/lab-peers.js';
import type { FirmwareKind } from '../helpers/lab-qemu.js';
import { startSiteDhcp } from '../helpers/lab-boot.js';
import { requirePeers, requireRoot } from '../helpers/peers.js';

const LIMITS = {
  /** From QEMU start to both files fetched, per client, under TCG with several clients at once. */
  bootMs: 240_000,
  serverReadyMs: 20_000,
  pollMs: 500,
  /** With a router advertisement on the link, iPXE fetches its script this soon after its DHCPACK (measured: about 1 s). */
  scriptAfterAckWithRaMs: 10_000,
} as const;

const HTTP_PORT = 8080;
const NBD_PORT = 10809;
const IMAGE = 'lab';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The newest host kernel that has an initramfs beside it. */
function hostKernel(): { kernel: string; initrd: string } | null {
  const k = process.env.DISKLESS_BOOT_KERNEL;
  const i = process.env.DISKLESS_BOOT_INITRD;
  if (k && i) return { kernel: k, initrd: i };
  let names: string[];
  try {
    names = readdirSync('/boot');
  } catch {
    return null;
  }
  const versions = names.filter((n) => n.startsWith('vmlinuz-')).map((n) => n.slice('vmlinuz-'.length))
    .filter((v) => names.includes(`initrd.img-${v}`)).sort();
  const v = versions.at(-1);
  return v ? { kernel: `/boot/vmlinuz-${v}`, initrd: `/boot/initrd.img-${v}` } : null;
}

/** A MAC unique to this process, lab and client. */
function macFor(lab: number, n: number): string {
  const b = [0x52, 0x54, 0x00, (process.pid >> 8) & 0xff, ((process.pid & 0x0f) << 4) | lab, n];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

interface Prepared {
  dataDir: string;
  kernelSize: number;
  initrdSize: number;
}

/** A catalogue with one image version whose boot files are the host's kernel and initramfs, and the clients. */
async function prepareCatalogue(lab: Lab, files: { kernel: string; initrd: string }, macs: string[]): Promise<Prepared> {
  const dataDir = join(lab.dir, 'data');
  const catalogue = Catalogue.open(dataDir);
  try {
    const raw = join(lab.dir, 'disk.raw');
    writeFileSync(raw, Buffer.alloc(1024 * 1024));
    const v = await catalogue.addImageVersion(IMAGE, raw);
    const bootDir = `images/${IMAGE}/${v.version}.boot`;
    mkdirSync(join(dataDir, bootDir), { recursive: true });
    copyFileSync(files.kernel, join(dataDir, bootDir, 'vmlinuz'));
    copyFileSync(files.initrd, join(dataDir, bootDir, 'initrd.img'));
    catalogue.store.images.setBootInfo(v.id, { kernelFile: `${bootDir}/vmlinuz`, initrdFile: `${bootDir}/initrd.img`, rootUuid: randomUUID() });
    macs.forEach((mac, i) => catalogue.addClient({ mac, image: IMAGE, mode: 'ephemeral', name: `lab-pc-${i + 1}` }));
  } finally {
    catalogue.close();
  }
  return { dataDir, kernelSize: statSync(files.kernel).size, initrdSize: statSync(files.initrd).size };
}

/** Starts the boot services in the lab from a configuration file, as the product would read it. */
async function startServer(lab: Lab, config: Record<string, unknown>, extraArgs: string[] = []): Promise<LabChild> {
  const file = join(lab.dir, 'diskless.json');
  writeFileSync(file, JSON.stringify(config, null, 2));
  const child = lab.spawn(process.execPath, ['--enable-source-maps', BOOT_SERVER_SCRIPT, '--config', file, '--nbd', `${lab.serverAddress}:${NBD_PORT}`, ...extraArgs], {
    logFile: join(lab.dir, 'boot-server.log'),
  });
  await waitForLog(child.logFile, new RegExp(BOOT_SERVER_READY), { timeoutMs: LIMITS.serverReadyMs, process: child });
  return child;
}

/**
 * Starts the clients together. Taps are made one at a time first: Lab.addTap
 * names a tap by the count of taps made so far, so two made at once would
 * get the same name.
 */
async function startClients(lab: Lab, kinds: FirmwareKind[], macs: string[]): Promise<QemuVm[]> {
  const taps: string[] = [];
  for (let i = 0; i < kinds.length; i++) taps.push(await lab.addTap());
  return Promise.all(kinds.map((firmware, i) => lab.startQemu({ firmware, mac: macs[i]!, tap: taps[i]!, pcap: false })));
}

interface Booted {
  vm: QemuVm;
  events: BootEventRecord[];
  bootId: string;
  /** Seconds from QEMU start. */
  timeline: Record<string, number>;
}

/**
 * Waits until the server has recorded the kernel and initrd of the boot its
 * latest script started for this VM, and iPXE has said both are loaded.
 */
async function untilServed(store: Store, vm: QemuVm, deadline: number): Promise<Booted> {
  for (;;) {
    const events = store.events.list({ mac: vm.mac });
    const script = events.filter((e) => e.step === 'script' && e.bootId !== null).at(-1);
    const done = (step: string): boolean => events.some((e) => e.step === step && e.bootId === script?.bootId);
    if (script && done('kernel') && done('initrd')) break;
    if (vm.child.exitCode !== null || vm.child.signalCode !== null || Date.now() > deadline) {
      throw new Error(`${vm.name} (${vm.mac}): kernel and initrd not fetched; events ${JSON.stringify(events.map((e) => e.step))}; serial ends:\n${readLog(vm.serialLog).slice(-1500)}`);
    }
    await sleep(LIMITS.pollMs);
  }
  // iPXE redraws its progress with backspaces (and, on SeaBIOS's console, a line break).
  await vm.waitForSerial(/initrd\.img\.\.\.[ \n\x08\d%]*ok/, Math.max(1000, deadline - Date.now()));
  const loadedAt = Date.now();
  const events = store.events.list({ mac: vm.mac });
  const bootId = events.filter((e) => e.step === 'script' && e.bootId !== null).at(-1)!.bootId!;
  const s = (t: number): number => Math.round((t - vm.startedAt) / 100) / 10;
  const timeline: Record<string, number> = {};
  for (const e of events) {
    // Firmware's DHCP and iPXE's are told apart: the gap from iPXE's DHCP to its script is its IPv6 wait.
    const key = e.step === 'tftp' ? `tftp ${String(e.detail?.file)}` : e.step.startsWith('dhcp-') && e.detail?.ipxe === true ? `${e.step} (iPXE)` : e.step;
    timeline[key] ??= s(e.timeMs);
  }
  timeline['iPXE: both loaded'] = s(loadedAt);
  return { vm, events, bootId, timeline };
}

function steps(b: Booted): string[] {
  // Repeated DHCP exchanges (firmware, then iPXE) collapse into one entry per step kind in order.
  const out: string[] = [];
  for (const e of b.events) if (out.at(-1) !== e.step) out.push(e.step);
  return out;
}

function checkFiles(b: Booted, p: Prepared): void {
  const kernel = b.events.find((e) => e.step === 'kernel' && e.bootId === b.bootId)!;
  const initrd = b.events.find((e) => e.step === 'initrd' && e.bootId === b.bootId)!;
  assert.equal(kernel.detail?.size, p.kernelSize, `${b.vm.name}: the kernel served is the version's`);
  assert.equal(initrd.detail?.size, p.initrdSize, `${b.vm.name}: the initramfs served is the version's`);
  assert.ok(kernel.timeMs <= initrd.timeMs, `${b.vm.name}: kernel before initrd`);
}

function firmwareMissing(t: TestContext): boolean {
  const missing = Object.values(IPXE_FILES).filter((f) => !existsSync(f));
  if (missing.length === 0) return false;
  if (process.env.CI === 'true') throw new Error(`missing ${missing.join(', ')} (Debian package ipxe)`);
  t.skip(`missing ${missing.join(', ')}`);
  return true;
}

function report(t: TestContext, mode: string, booted: Booted[]): void {
  for (const b of booted) {
    const line = Object.entries(b.timeline).map(([k, v]) => `${k} +${v}s`).join(', ');
    t.diagnostic(`${mode} ${b.vm.firmware} (${b.vm.accel}): ${line}`);
  }
}

describe('boot lab: firmware to kernel and initramfs over our DHCP, TFTP and HTTP', { concurrency: true }, () => {
  test('full DHCP: SeaBIOS+iPXE, OVMF+iPXE and OVMF PXE (chainloading snponly.efi over our TFTP)', { timeout: 330_000 }, async (t) => {
    if (!requireRoot(t) || !requirePeers(t, 'ip', 'qemu-system-x86_64')) return;
    if (firmwareMissing(t)) return;
    const files = hostKernel();
    if (!files) return void (process.env.CI === 'true' ? assert.fail('no kernel with an initramfs in /boot') : t.skip('no kernel with an initramfs in /boot'));
    const lab = await createLab({ t });
    const kinds: FirmwareKind[] = ['bios-ipxe', 'uefi-ipxe', 'uefi-pxe'];
    const macs = kinds.map((_, i) => macFor(1, i + 1));
    const prepared = await prepareCatalogue(lab, files, macs);
    await startServer(lab, {
      dataDir: prepared.dataDir,
      http: { host: lab.serverAddress, port: HTTP_PORT },
      tftp: { host: lab.serverAddress },
      dhcp: { interfaces: [{ name: lab.bridge, mode: 'full', address: lab.serverAddress, subnet: lab.subnet, pool: { start: lab.hostAddress(100), end: lab.hostAddress(199) } }] },
      boot: { unknownClients: 'ignore', uefiBinary: 'snponly.efi' },
    });
    const store = Store.open(prepared.dataDir);
    t.after(() => store.close());

    const vms = await startClients(lab, kinds, macs);
    const deadline = Date.now() + LIMITS.bootMs;
    const booted = await Promise.all(vms.map((vm) => untilServed(store, vm, deadline)));
    await Promise.all(vms.map((vm) => vm.stop()));
    report(t, 'full', booted);

    for (const b of booted) {
      checkFiles(b, prepared);
      const acks = b.events.filter((e) => e.step === 'dhcp-ack');
      assert.ok(acks.length >= 1, `${b.vm.name}: an address from us`);
      for (const a of acks) assert.match(String(a.detail?.address), /\.1\d\d$/, 'from the pool');
      const script = b.events.find((e) => e.step === 'script' && e.bootId === b.bootId)!;
      assert.equal(script.detail?.address, acks.at(-1)!.detail?.address, 'the script was fetched from the acked address');
      const lastAck = acks.at(-1)!.detail!;
      assert.deepEqual(lastAck.boot, { http: `http://${lab.serverAddress}:${HTTP_PORT}/ipxe/${b.vm.mac.replace(/:/g, '-')}` }, 'iPXE is handed its script');
    }
    const [bios, uefiIpxe, uefiPxe] = booted as [Booted, Booted, Booted];
    // The iPXE ROMs are iPXE from their first packet: DHCP, then the script at once, no TFTP.
    for (const b of [bios, uefiIpxe]) {
      assert.equal(steps(b)[0], 'dhcp-discover');
      assert.deepEqual(steps(b).slice(-4), ['dhcp-ack', 'script', 'kernel', 'initrd'], steps(b).join(' '));
      assert.ok(!b.events.some((e) => e.step === 'tftp'), `${b.vm.name}: no TFTP`);
      assert.equal(b.events.filter((e) => e.step === 'dhcp-ack').length, 1);
    }
    // OVMF's PXE: a TFTP boot file first, then iPXE's own DHCP, then the script.
    const firmwareAck = uefiPxe.events.find((e) => e.step === 'dhcp-ack')!;
    assert.deepEqual(firmwareAck.detail?.boot, { tftp: 'snponly.efi', nextServer: lab.serverAddress });
    const tftp = uefiPxe.events.filter((e) => e.step === 'tftp');
    assert.equal(tftp.length, 1, 'one complete transfer (the tsize probe is not a file served)');
    assert.equal(tftp[0]!.detail?.file, 'snponly.efi');
    assert.equal(tftp[0]!.detail?.bytes, statSync(IPXE_FILES['snponly.efi']).size);
    assert.equal(tftp[0]!.detail?.windowsize, 4, 'OVMF asks for RFC 7440 windows and gets them');
    const order = steps(uefiPxe);
    assert.ok(order.indexOf('tftp') > order.indexOf('dhcp-ack') && order.indexOf('tftp') < order.indexOf('script'), order.join(' '));
    assert.equal(uefiPxe.events.filter((e) => e.step === 'dhcp-ack').length, 2, 'firmware and iPXE each get an address');
  });

  test('full DHCP with our router advertisements (dnsmasq RA-only, supervised): iPXE fetches its script without the IPv6 wait', { timeout: 330_000 }, async (t) => {
    if (!requireRoot(t) || !requirePeers(t, 'ip', 'qemu-system-x86_64', 'dnsmasq')) return;
    if (firmwareMissing(t)) return;
    const files = hostKernel();
    if (!files) return void (process.env.CI === 'true' ? assert.fail('no kernel with an initramfs in /boot') : t.skip('no kernel with an initramfs in /boot'));
    const lab = await createLab({ t });
    const mac = macFor(3, 1);
    const prepared = await prepareCatalogue(lab, files, [mac]);
    await startServer(lab, {
      dataDir: prepared.dataDir,
      http: { host: lab.serverAddress, port: HTTP_PORT },
      tftp: { host: lab.serverAddress },
      dhcp: { interfaces: [{ name: lab.bridge, mode: 'full', address: lab.serverAddress, subnet: lab.subnet, pool: { start: lab.hostAddress(100), end: lab.hostAddress(199) } }] },
    }, ['--router-adverts', lab.bridge]);
    const store = Store.open(prepared.dataDir);
    t.after(() => store.close());

    const [vm] = await startClients(lab, ['bios-ipxe'], [mac]);
    const b = await untilServed(store, vm!, Date.now() + LIMITS.bootMs);
    await vm!.stop();
    report(t, 'full+RA', [b]);
    checkFiles(b, prepared);
    const ack = b.events.find((e) => e.step === 'dhcp-ack')!;
    const script = b.events.find((e) => e.step === 'script' && e.bootId === b.bootId)!;
    // Without an advertisement iPXE waits 13-20 s here (the first case); with one, about a second.
    assert.ok(script.timeMs - ack.timeMs < LIMITS.scriptAfterAckWithRaMs, `script ${script.timeMs - ack.timeMs} ms after the DHCPACK`);
    assert.match(readLog(vm!.serialLog), new RegExp(`net0: ${lab.serverAddress6.replace(/::1$/, '')}:[0-9a-f:]+/64`), 'iPXE took the advertised prefix');
  });

  test('proxyDHCP beside dnsmasq: SeaBIOS+iPXE and OVMF PXE (chainloading ipxe.efi over our TFTP)', { timeout: 330_000 }, async (t) => {
    if (!requireRoot(t) || !requirePeers(t, 'ip', 'qemu-system-x86_64', 'dnsmasq', 'unshare')) return;
    if (firmwareMissing(t)) return;
    const files = hostKernel();
    if (!files) return void (process.env.CI === 'true' ? assert.fail('no kernel with an initramfs in /boot') : t.skip('no kernel with an initramfs in /boot'));
    const lab = await createLab({ t });
    const kinds: FirmwareKind[] = ['bios-ipxe', 'uefi-pxe'];
    const macs = kinds.map((_, i) => macFor(2, i + 1));
    const prepared = await prepareCatalogue(lab, files, macs);
    const site = await startSiteDhcp(lab);
    await startServer(lab, {
      dataDir: prepared.dataDir,
      http: { host: lab.serverAddress, port: HTTP_PORT },
      tftp: { host: lab.serverAddress },
      dhcp: { interfaces: [{ name: lab.bridge, mode: 'proxy', address: lab.serverAddress }] },
      boot: { unknownClients: 'ignore', uefiBinary: 'ipxe.efi' },
    });
    const store = Store.open(prepared.dataDir);
    t.after(() => store.close());

    const vms = await startClients(lab, kinds, macs);
    const deadline = Date.now() + LIMITS.bootMs;
    const booted = await Promise.all(vms.map((vm) => untilServed(store, vm, deadline)));
    await Promise.all(vms.map((vm) => vm.stop()));
    report(t, 'proxy', booted);

    const siteLog = readLog(site.child.logFile);
    for (const b of booted) {
      checkFiles(b, prepared);
      // The address is the site's; we only added the boot information.
      assert.match(siteLog, new RegExp(`DHCPACK\\(vsite0\\) (\\S+) ${b.vm.mac}`));
      const offers = b.events.filter((e) => e.step === 'dhcp-offer');
      assert.ok(offers.length >= 1);
      for (const o of offers) {
        assert.equal(o.detail?.mode, 'proxy');
        assert.equal(o.detail?.address, undefined, 'a proxy offer carries no address');
      }
      const script = b.events.find((e) => e.step === 'script' && e.bootId === b.bootId)!;
      const leased = [...siteLog.matchAll(new RegExp(`DHCPACK\\(vsite0\\) (\\S+) ${b.vm.mac}`, 'g'))].map((m) => m[1]);
      assert.ok(leased.includes(String(script.detail?.address)), `script fetched from a site-leased address (${String(script.detail?.address)} in ${leased.join(', ')})`);
      assert.ok(offers.some((o) => JSON.stringify(o.detail?.boot) === JSON.stringify({ http: `http://${lab.serverAddress}:${HTTP_PORT}/ipxe/${b.vm.mac.replace(/:/g, '-')}` })));
    }
    const uefiPxe = booted[1]!;
    assert.ok(uefiPxe.events.some((e) => e.step === 'dhcp-offer' && JSON.stringify(e.detail?.boot) === JSON.stringify({ tftp: 'ipxe.efi', nextServer: lab.serverAddress })));
    const tftp = uefiPxe.events.filter((e) => e.step === 'tftp');
    assert.equal(tftp.length, 1);
    assert.equal(tftp[0]!.detail?.file, 'ipxe.efi', 'the TFTP peer was matched to its MAC through the neighbour table');
    assert.equal(tftp[0]!.detail?.bytes, statSync(IPXE_FILES['ipxe.efi']).size);
    assert.ok(!booted[0]!.events.some((e) => e.step === 'tftp'));
  });
});
