import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Catalogue } from '../app/catalogue.js';
import type { BootRequest } from './boot-service.js';
import type { BootEventInput, BootEventSink } from './events.js';
import { CatalogueBootService, readVersionBoot, type CatalogueBootServiceOptions } from './service.js';

const A = '52:54:00:00:00:0a';
const B = '52:54:00:00:00:0b';
const U = '52:54:00:00:00:99';
const UUID = '0b8d2f6e-2c11-4f6e-9a3c-7d1e5b2a4c10';
const KERNEL = Buffer.alloc(3000, 1);
const INITRD = Buffer.alloc(5000, 2);

class Sink implements BootEventSink {
  events: BootEventInput[] = [];
  unknown: string[] = [];
  record(e: BootEventInput): void {
    this.events.push(e);
  }
  unknownSeen(mac: string): void {
    this.unknown.push(mac);
  }
  steps(mac: string): string[] {
    return this.events.filter((e) => e.mac === mac).map((e) => e.step);
  }
}

let dir: string;
let catalogue: Catalogue;
let sink: Sink;

function req(mac: string | null, address = '10.0.0.5'): BootRequest {
  return { mac, address, baseUrl: 'http://10.0.0.1:8080' };
}

function service(options: Partial<CatalogueBootServiceOptions> = {}): CatalogueBootService {
  return new CatalogueBootService({
    store: catalogue.store,
    dataDir: catalogue.dir.root,
    newBoot: (mac, o) => catalogue.newBoot(mac, o),
    events: sink,
    nbd: { host: '10.0.0.1', port: 10809 },
    unknownClients: 'ignore',
    ipxeDir: dir,
    ...options,
  });
}

/** Gives version 1 of debian12 extracted boot files and a root UUID. */
function makeBootable(extra: Record<string, unknown> = {}): void {
  const v = catalogue.store.images.version('debian12', 1)!;
  mkdirSync(join(catalogue.dir.root, 'images/debian12/1.boot'), { recursive: true });
  writeFileSync(join(catalogue.dir.root, 'images/debian12/1.boot/vmlinuz'), KERNEL);
  writeFileSync(join(catalogue.dir.root, 'images/debian12/1.boot/initrd.img'), INITRD);
  catalogue.store.images.setBootInfo(v.id, {
    kernelFile: 'images/debian12/1.boot/vmlinuz', initrdFile: 'images/debian12/1.boot/initrd.img', rootUuid: UUID, ...extra,
  });
}

const urlOf = (script: string, file: string): string => new RegExp(`(http://\\S+/${file.replace('.', '\\.')})`).exec(script)![1]!;
const bootIdOf = (script: string): string => /\/boot\/52-54-00-00-00-0[ab]\/([A-Za-z0-9_-]+)\/vmlinuz/.exec(script)![1]!;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'diskless-boot-service-'));
  const image = join(dir, 'disk.raw');
  writeFileSync(image, Buffer.alloc(1024 * 1024));
  writeFileSync(join(dir, 'ipxe.efi'), 'efi');
  catalogue = Catalogue.open(join(dir, 'data'));
  await catalogue.addImageVersion('debian12', image);
  catalogue.addClient({ mac: A, image: 'debian12', mode: 'ephemeral', name: 'pc-01' });
  catalogue.addClient({ mac: B, image: 'debian12', mode: 'persistent' });
  sink = new Sink();
});

afterEach(() => {
  catalogue.close();
  rmSync(dir, { recursive: true, force: true });
});

test('a known client with a bootable version gets a new boot: script, command line, URLs, events', async () => {
  makeBootable({ kernelArgs: ['quiet'] });
  const s = service({ extraKernelArgs: ['loglevel=4'] });
  const script = await s.script(req(A));
  const client = catalogue.store.clients.get(A)!;
  assert.ok(client.bootId && client.bootToken, 'a boot was started');
  assert.equal(bootIdOf(script), client.bootId);
  assert.equal(client.bootAddress, '10.0.0.5', 'the boot is bound to the fetching address');
  const kernelLine = script.split('\n').find((l) => l.startsWith('kernel '))!;
  const exportName = catalogue.exportNameOf(client)!;
  const base = `http://10.0.0.1:8080/boot/52-54-00-00-00-0a/${client.bootId}`;
  assert.ok(kernelLine.startsWith(`kernel ${base}/vmlinuz initrd=initrd.img `), kernelLine);
  assert.match(kernelLine, new RegExp(` nbdroot=10\\.0\\.0\\.1,${exportName},nbd0 root=UUID=${UUID} rw systemd\\.gpt_auto=0 quiet loglevel=4 diskless\\.up=${base.replace(/\./g, '\\.')}/up \\|\\| goto failed$`));
  assert.match(kernelLine, / console=tty0 console=ttyS0,115200n8 /);
  assert.ok(script.includes(`initrd --name initrd.img ${base}/initrd.img || goto failed`));
  assert.match(script, /pc-01 \(52:54:00:00:00:0a\): debian12 version 1/);
  const ev = sink.events.find((e) => e.step === 'script')!;
  assert.equal(ev.bootId, client.bootId);
  assert.ok(!JSON.stringify(sink.events).includes(client.bootToken!), 'the export token never reaches the timeline');

  // The files of this boot, and only of this boot.
  const kernel = await s.bootFile({ ...req(A), bootId: client.bootId!, name: 'vmlinuz' });
  assert.equal(kernel?.size, KERNEL.length);
  assert.match(kernel!.etag, /^"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"$/);
  const initrd = await s.bootFile({ ...req(A), bootId: client.bootId!, name: 'initrd.img' });
  assert.equal(initrd?.size, INITRD.length);
  assert.deepEqual(sink.steps(A), ['script', 'kernel', 'initrd']);
  assert.equal(await s.bootFile({ ...req(A), bootId: 'not-it', name: 'vmlinuz' }), null);
  assert.equal(await s.bootFile({ ...req(B), bootId: client.bootId!, name: 'vmlinuz' }), null, "another client's boot id");

  // A second script fetch is a new boot: the old id stops working, the ephemeral overlay is reset.
  const second = await s.script(req(A));
  const again = catalogue.store.clients.get(A)!;
  assert.notEqual(again.bootId, client.bootId);
  assert.equal(bootIdOf(second), again.bootId);
  assert.equal(await s.bootFile({ ...req(A), bootId: client.bootId!, name: 'vmlinuz' }), null);
  assert.ok(await s.bootFile({ ...req(A), bootId: again.bootId!, name: 'vmlinuz' }));
  assert.equal(sink.events.filter((e) => e.step === 'script').at(-1)!.detail!.overlayReset, true);
  assert.ok(urlOf(second, 'initrd.img').includes(again.bootId!));
});

test('os-up is accepted only for the current boot and recorded', async () => {
  makeBootable();
  const s = service();
  await s.script(req(A));
  const bootId = catalogue.store.clients.get(A)!.bootId!;
  assert.equal(await s.osUp({ ...req(A), bootId: 'old' }), false);
  assert.equal(await s.osUp({ ...req(B), bootId }), false);
  assert.equal(catalogue.store.clients.get(A)!.state, 'booting');
  assert.equal(await s.osUp({ ...req(A), bootId }), true);
  assert.equal(catalogue.store.clients.get(A)!.state, 'up');
  assert.deepEqual(sink.steps(A), ['script', 'os-up']);
});

test('unknown machines: ignore says how to register and exits; register-script retries; both note the MAC', async () => {
  makeBootable();
  const ignore = await service({ unknownClients: 'ignore' }).script(req(U));
  assert.match(ignore, /^#!ipxe\n/);
  assert.ok(ignore.includes(`diskless client add ${U} --image NAME`));
  assert.match(ignore, /\nexit 1\n$/);
  assert.ok(!ignore.includes('kernel '));
  const register = await service({ unknownClients: 'register-script' }).script(req(U));
  assert.ok(register.includes(`diskless client add ${U} --image NAME`));
  assert.ok(register.includes('chain --replace http://10.0.0.1:8080/ipxe/52-54-00-00-00-99'));
  assert.deepEqual(sink.unknown, [U, U]);
  assert.equal(catalogue.store.clients.get(U), null, 'not added');
  assert.equal(sink.events.filter((e) => e.mac === U && e.step === 'script').length, 2);
});

test('default-image: an unknown machine is added as an ephemeral client and boots', async () => {
  makeBootable();
  const s = service({ unknownClients: 'default-image', defaultImage: 'debian12' });
  const script = await s.script(req(U));
  const c = catalogue.store.clients.get(U)!;
  assert.equal(c.mode, 'ephemeral');
  assert.equal(c.image, 'debian12');
  assert.ok(script.includes(`/boot/52-54-00-00-00-99/${c.bootId}/vmlinuz`));
  assert.equal(sink.events.find((e) => e.step === 'script')!.detail!.adopted, true);
  assert.throws(() => service({ unknownClients: 'default-image' }), /defaultImage/);
});

test('known but not ready: says why and retries, without starting a boot', async () => {
  const s = service();
  const noInfo = await s.script(req(A));
  assert.match(noInfo, /not been extracted|no boot information/);
  assert.match(noInfo, /chain --replace http:\/\/10\.0\.0\.1:8080\/ipxe\/52-54-00-00-00-0a\n/);
  assert.equal(catalogue.store.clients.get(A)!.bootId, null);

  makeBootable();
  rmSync(join(catalogue.dir.root, 'images/debian12/1.boot/initrd.img'));
  assert.match(await s.script(req(A)), /boot file images\/debian12\/1\.boot\/initrd\.img is missing/);

  const v = catalogue.store.images.version('debian12', 1)!;
  catalogue.store.images.setBootInfo(v.id, { kernelFile: '../../../etc/passwd', initrdFile: 'x', rootUuid: UUID });
  assert.match(await s.script(req(A)), /leaves the data directory/);
  catalogue.store.images.setBootInfo(v.id, { kernelFile: 'k', initrdFile: 'i' });
  assert.match(await s.script(req(A)), /root file system is not known/);
  assert.equal(catalogue.store.clients.get(A)!.bootId, null);

  // An image without a published version.
  writeFileSync(join(dir, 'other.raw'), Buffer.alloc(4096));
  await catalogue.addImageVersion('other', join(dir, 'other.raw'), { publish: false });
  catalogue.store.clients.update(A, { image: 'other' });
  assert.match(await s.script(req(A)), /image other has no published version yet/);
  assert.ok(sink.events.every((e) => e.step === 'script' && typeof e.detail!.notReady === 'string'));
});

test('a value that would change the command line is refused as not ready', async () => {
  makeBootable({ rootUuid: 'x y' });
  const script = await service().script(req(A));
  assert.ok(!script.split('\n').some((l) => l.startsWith('kernel ')));
  assert.match(script, /cannot be placed on a kernel command line/);
  assert.throws(() => service({ extraKernelArgs: ['a;reboot'] }), (e: unknown) => (e as { code?: string }).code === 'BOOT_UNSAFE_VALUE');
});

test('a failure inside the server gives a retrying script, not an error', async () => {
  makeBootable();
  const s = service({ newBoot: async () => { throw new Error('disk on fire'); } });
  const script = await s.script(req(A));
  assert.match(script, /^#!ipxe\n/);
  assert.match(script, /could not prepare a boot for 52:54:00:00:00:0a \(INTERNAL\)/);
  assert.match(script, /chain --replace /);
  assert.match(await s.script(req(null)), /names no MAC/);
});

test('a wildcard NBD host becomes the address the client reached the server by', async () => {
  makeBootable();
  const script = await service({ nbd: { host: '0.0.0.0', port: 10809 } }).script({ mac: A, address: '10.0.0.5', baseUrl: 'http://192.168.7.1:8080' });
  assert.match(script, / nbdroot=192\.168\.7\.1,[0-9a-f]{12}-[0-9a-f]{32},nbd0 /);
});

test('script requests of one MAC are serialized: the last boot is the current one', async () => {
  makeBootable();
  const s = service();
  const scripts = await Promise.all([s.script(req(A)), s.script(req(A)), s.script(req(A))]);
  const ids = scripts.map(bootIdOf);
  assert.equal(new Set(ids).size, 3);
  assert.equal(catalogue.store.clients.get(A)!.bootId, ids[2]);
});

test('a persistent client keeps booting the version of its overlay', async () => {
  makeBootable();
  const s = service();
  await s.script(req(B));
  writeFileSync(join(dir, 'v2.raw'), Buffer.alloc(1024 * 1024, 0));
  await catalogue.addImageVersion('debian12', join(dir, 'v2.raw'));
  // Version 2 has no boot files; the persistent client stays on version 1, which has them.
  const script = await s.script(req(B));
  assert.match(script, /debian12 version 1/);
  assert.ok(script.split('\n').some((l) => l.startsWith('kernel ')));
  // A new ephemeral client would boot version 2, which is not ready.
  assert.match(await s.script(req(A)), /debian12 version 2: .*not extracted/);
});

test('firmware files: only the named iPXE binaries of the iPXE folder', async () => {
  const s = service();
  assert.equal((await s.firmwareFile('ipxe.efi'))?.size, 3);
  assert.equal(await s.firmwareFile('snponly.efi'), null, 'named but not installed');
  assert.equal(await s.firmwareFile('disk.raw'), null, 'in the folder but not an iPXE binary');
  assert.equal(await service({ ipxeDir: null }).firmwareFile('ipxe.efi'), null);
});

test('readVersionBoot checks the shape of boot_info', () => {
  assert.equal(readVersionBoot(null).ok, false);
  assert.equal(readVersionBoot({ kernelFile: '/abs', initrdFile: 'i', rootUuid: UUID }).ok, false);
  assert.equal(readVersionBoot({ kernelFile: 'k', initrdFile: 'i', rootPartition: -1 }).ok, false);
  assert.equal(readVersionBoot({ kernelFile: 'k', initrdFile: 'i', rootPartition: 0, initramfsFlavour: 'mkinitcpio' }).ok, false);
  assert.equal(readVersionBoot({ kernelFile: 'k', initrdFile: 'i', rootPartition: 0, kernelArgs: 'quiet' }).ok, false);
  const r = readVersionBoot({ kernelFile: 'k', initrdFile: 'i', rootPartition: 1, initramfsFlavour: 'dracut' });
  assert.deepEqual(r, { ok: true, boot: { kernelFile: 'k', initrdFile: 'i', root: { partition: 1 }, flavour: 'dracut', kernelArgs: [] } });
});
