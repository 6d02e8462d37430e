/**
 * startBootServices in-process on loopback: HTTP and TFTP really listen
 * (port 0), the catalogue is real. DHCP is not started here: outside a lab
 * namespace it would hear the host's network (test/interop/boot-lab.test.ts
 * runs it against firmware); its settings are checked as data.
 */
import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tftpGet } from '../protocols/tftp/client.js';
import { Catalogue } from './catalogue.js';
import { dhcpSettings, startBootServices, tftpFiles, type BootServices } from './boot-services.js';
import { validateConfig } from './config.js';

const MAC = '52:54:00:00:00:0a';
let dir: string;
let catalogue: Catalogue;
let services: BootServices | null;

function http(method: string, port: number, path: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const r = request({ host: '127.0.0.1', port, path, method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks) }));
    });
    r.on('error', reject);
    r.end();
  });
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'diskless-boot-services-'));
  // An iPXE folder laid out like Debian's: ipxe.efi is a symlink.
  mkdirSync(join(dir, 'ipxe'));
  writeFileSync(join(dir, 'ipxe/undionly.kpxe'), Buffer.alloc(70_000, 7));
  writeFileSync(join(dir, 'ipxe/real-ipxe.efi'), Buffer.alloc(5000, 9));
  symlinkSync(join(dir, 'ipxe/real-ipxe.efi'), join(dir, 'ipxe/ipxe.efi'));
  writeFileSync(join(dir, 'disk.raw'), Buffer.alloc(1024 * 1024));
  catalogue = Catalogue.open(join(dir, 'data'));
  const v = await catalogue.addImageVersion('debian12', join(dir, 'disk.raw'));
  mkdirSync(join(catalogue.dir.root, 'images/debian12/1.boot'));
  writeFileSync(join(catalogue.dir.root, 'images/debian12/1.boot/vmlinuz'), Buffer.alloc(12_345, 1));
  writeFileSync(join(catalogue.dir.root, 'images/debian12/1.boot/initrd.img'), Buffer.alloc(23_456, 2));
  catalogue.store.images.setBootInfo(v.id, { kernelFile: 'images/debian12/1.boot/vmlinuz', initrdFile: 'images/debian12/1.boot/initrd.img', rootPartition: 1 });
  catalogue.addClient({ mac: MAC, image: 'debian12' });
  services = null;
});

afterEach(async () => {
  await services?.close();
  catalogue.close();
  rmSync(dir, { recursive: true, force: true });
});

test('HTTP and TFTP from the configuration: script, kernel, initrd, os-up, iPXE over TFTP; the timeline is written', async () => {
  const config = validateConfig({
    dataDir: catalogue.dir.root,
    http: { host: '127.0.0.1', port: 0 },
    tftp: { host: '127.0.0.1', port: 0, ipxeDir: join(dir, 'ipxe') },
    boot: { extraKernelArgs: 'quiet  loglevel=3' },
  });
  services = await startBootServices({ config, catalogue, nbd: { host: '0.0.0.0', port: 10809 } });
  assert.equal(services.dhcp, null);
  const port = services.http.port;

  const script = (await http('GET', port, '/ipxe/52-54-00-00-00-0a')).body.toString();
  const bootId = catalogue.store.clients.get(MAC)!.bootId!;
  assert.ok(script.includes(`kernel http://127.0.0.1:${port}/boot/52-54-00-00-00-0a/${bootId}/vmlinuz `));
  assert.match(script, / nbdroot=127\.0\.0\.1,52540000000a-[0-9a-f]{32},nbd0 root=\/dev\/nbd0p1 rw systemd\.gpt_auto=0 quiet loglevel=3 diskless\.up=/);
  assert.equal((await http('GET', port, `/boot/52-54-00-00-00-0a/${bootId}/vmlinuz`)).body.length, 12_345);
  assert.equal((await http('GET', port, `/boot/52-54-00-00-00-0a/${bootId}/initrd.img`)).body.length, 23_456);
  assert.equal((await http('GET', port, '/boot/52-54-00-00-00-0a/wrong/initrd.img')).status, 404);
  assert.equal((await http('POST', port, `/boot/52-54-00-00-00-0a/${bootId}/up`)).status, 204);
  assert.equal((await http('GET', port, '/firmware/ipxe.efi')).body.length, 5000, 'a symlinked binary is served over HTTP');

  const tftp = services.tftp!;
  const viaTftp = await tftpGet({ host: '127.0.0.1', port: tftp.port, file: 'ipxe.efi', blksize: 1468, windowsize: 4 });
  assert.equal(viaTftp.bytes, 5000, 'and over TFTP');
  assert.equal((await tftpGet({ host: '127.0.0.1', port: tftp.port, file: 'undionly.kpxe' })).bytes, 70_000);
  await assert.rejects(tftpGet({ host: '127.0.0.1', port: tftp.port, file: 'real-ipxe.efi' }), 'only the named binaries, no folder listing by another name');

  await services.close();
  services = null;
  const steps = catalogue.store.events.list({ mac: MAC }).map((e) => e.step);
  assert.deepEqual(steps, ['script', 'kernel', 'initrd', 'os-up']);
  assert.equal(catalogue.store.clients.get(MAC)!.state, 'up');
});

test('a port in use fails the start and leaves nothing listening', async () => {
  const first = await startBootServices({
    config: validateConfig({ dataDir: catalogue.dir.root, http: { host: '127.0.0.1', port: 0 }, tftp: { enabled: false } }),
    catalogue, nbd: { host: '127.0.0.1', port: 10809 },
  });
  try {
    const config = validateConfig({ dataDir: catalogue.dir.root, http: { host: '127.0.0.1', port: first.http.port }, tftp: { enabled: false } });
    await assert.rejects(startBootServices({ config, catalogue, nbd: { host: '127.0.0.1', port: 10809 } }), /EADDRINUSE|address already in use/i);
  } finally {
    await first.close();
  }
});

test('DHCP settings from the configuration: full and proxy interfaces, reservations, lease times', () => {
  const config = validateConfig({
    dhcp: {
      interfaces: [{
        name: 'lo', mode: 'full', subnet: '127.0.0.0/8', pool: { start: '127.0.0.100', end: '127.0.0.200' }, router: '127.0.0.254',
        dns: ['127.0.0.53'], domain: 'lab.example', leaseSeconds: 600, reservations: { '52-54-00-00-00-0A': '127.0.0.50' },
      }],
    },
  });
  const s = dhcpSettings(config);
  assert.deepEqual(s.interfaces, [{ name: 'lo', address: '127.0.0.1', mode: 'full' }]);
  assert.deepEqual(s.subnets, [{
    subnet: '127.0.0.0/8', ranges: [{ start: '127.0.0.100', end: '127.0.0.200' }], routers: ['127.0.0.254'], dnsServers: ['127.0.0.53'],
    domainName: 'lab.example', leaseSeconds: 600, reservations: [{ mac: '52:54:00:00:00:0a', address: '127.0.0.50' }], authoritative: false,
  }]);
  const missing = validateConfig({ dhcp: { interfaces: [{ name: 'nosuchif0', mode: 'proxy' }] } });
  assert.throws(() => dhcpSettings(missing), (e: unknown) => (e as { code?: string }).code === 'BOOT_INTERFACE_UNUSABLE');
  assert.deepEqual(dhcpSettings(validateConfig({ dhcp: { interfaces: [{ name: 'nosuchif0', mode: 'proxy', address: '10.0.0.1' }] } })).interfaces,
    [{ name: 'nosuchif0', address: '10.0.0.1', mode: 'proxy' }]);
});

test('TFTP files: binaries that are not installed fall through to the TFTP root', async () => {
  mkdirSync(join(dir, 'root'));
  writeFileSync(join(dir, 'root/snponly.efi'), 'from the root');
  const p = tftpFiles(join(dir, 'ipxe'), join(dir, 'root'), undefined);
  const peer = { address: '127.0.0.1', port: 1, family: 'IPv4' };
  const f = await p.open({ path: 'snponly.efi', requested: 'snponly.efi', mode: 'octet', peer });
  assert.equal(f.size, 'from the root'.length);
  await f.close();
  const g = await p.open({ path: 'ipxe.efi', requested: 'ipxe.efi', mode: 'octet', peer });
  assert.equal(g.size, 5000);
  await g.close();
});
