import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type BootClient, DefaultBootPolicy } from './policy.js';

function firmware(arch: number | undefined, over: Partial<BootClient> = {}): BootClient {
  return {
    mac: '52:54:00:12:34:56',
    ...(arch !== undefined ? { arch, architectures: [arch] } : { architectures: [] }),
    vendorClass: `PXEClient:Arch:${String(arch ?? 0).padStart(5, '0')}:UNDI:002001`,
    userClasses: [],
    hasIpxeOptions: false,
    isIpxe: false,
    isPxeClient: true,
    isHttpClient: false,
    interfaceName: 'lan',
    serverAddress: '10.0.0.1',
    mode: 'full',
    pxePort: false,
    messageType: 1,
    ...over,
  };
}

const ipxe = (arch: number, over: Partial<BootClient> = {}): BootClient =>
  firmware(arch, { userClasses: ['iPXE'], hasIpxeOptions: true, isIpxe: true, ...over });

function policy(over: Partial<ConstructorParameters<typeof DefaultBootPolicy>[0]> = {}): DefaultBootPolicy {
  return new DefaultBootPolicy({
    scriptUrl: 'http://10.0.0.1:8080/boot/{mac}.ipxe',
    bootFiles: { efiArm64: 'ipxe-arm64.efi' },
    httpBootUrls: { x64: 'http://10.0.0.1:8080/firmware/ipxe.efi' },
    clients: { '52-54-00-12-34-56': { efiX64File: 'snponly.efi', hostName: 'pc01' } },
    ...over,
  });
}

test('firmware is handed iPXE by arch; iPXE is handed its script', () => {
  const p = policy({ clients: {} });
  assert.deepEqual(p.decide(firmware(0)), { action: 'tftp', bootFile: 'undionly.kpxe', known: false });
  assert.deepEqual(p.decide(firmware(7)), { action: 'tftp', bootFile: 'ipxe.efi', known: false });
  assert.deepEqual(p.decide(firmware(9)), { action: 'tftp', bootFile: 'ipxe.efi', known: false }, '9 is x64 on older firmware');
  assert.deepEqual(p.decide(firmware(11)), { action: 'tftp', bootFile: 'ipxe-arm64.efi', known: false });
  assert.equal(p.decide(firmware(6)).action, 'none', 'IA32 UEFI: nothing configured');
  assert.equal(p.decide(firmware(10)).action, 'none', 'ARM32: nothing configured');
  assert.equal(p.decide(firmware(2)).action, 'none', 'Itanium: nothing to hand out');
  const http = p.decide(firmware(16, { isPxeClient: false, isHttpClient: true, vendorClass: 'HTTPClient:Arch:00016' }));
  assert.deepEqual(http, { action: 'http', url: 'http://10.0.0.1:8080/firmware/ipxe.efi', known: false });
  assert.equal(p.decide(firmware(19, { isPxeClient: false, isHttpClient: true })).action, 'none', 'no ARM64 HTTP URL configured');
  for (const arch of [0, 6, 7, 9, 10, 11, 16]) {
    assert.deepEqual(p.decide(ipxe(arch)), { action: 'http', url: 'http://10.0.0.1:8080/boot/52-54-00-12-34-56.ipxe', known: false }, `iPXE on arch ${arch}`);
  }
  // Option 175 alone (no user class) is enough to know iPXE runs.
  assert.equal(p.decide(firmware(0, { isIpxe: true, hasIpxeOptions: true })).action, 'http');
});

test('per-client settings: snponly.efi, host name, known', () => {
  const p = policy();
  assert.deepEqual(p.decide(firmware(7)), { action: 'tftp', bootFile: 'snponly.efi', known: true, hostName: 'pc01' });
  assert.deepEqual(p.decide(firmware(0)), { action: 'tftp', bootFile: 'undionly.kpxe', known: true, hostName: 'pc01' });
  assert.equal(p.unknownClients().length, 0);
});

test('a client that is no boot client gets an address only', () => {
  const p = policy({ clients: {} });
  const os = firmware(undefined, { isPxeClient: false, vendorClass: 'udhcp 1.36', architectures: [] });
  assert.equal(p.decide(os).action, 'none');
});

test('unknown MACs are recorded, bounded, and may be ignored', () => {
  const seen: string[] = [];
  let t = 1000;
  const p = policy({ clients: {}, maxUnknownRecorded: 2, onUnknown: (u) => seen.push(u.mac), now: () => t++ });
  p.decide(firmware(0, { mac: 'aa:00:00:00:00:01' }));
  p.decide(firmware(0, { mac: 'aa:00:00:00:00:01' }));
  p.decide(firmware(7, { mac: 'aa:00:00:00:00:02' }));
  p.decide(firmware(7, { mac: 'aa:00:00:00:00:03' }));
  assert.deepEqual(seen, ['aa:00:00:00:00:01', 'aa:00:00:00:00:02', 'aa:00:00:00:00:03']);
  const list = p.unknownClients();
  assert.deepEqual(list.map((u) => u.mac), ['aa:00:00:00:00:02', 'aa:00:00:00:00:03']);
  assert.equal(list[1]!.arch, 7);

  const strict = policy({ clients: {}, unknownClients: 'ignore' });
  assert.equal(strict.decide(firmware(0)).action, 'ignore');
  assert.equal(strict.unknownClients().length, 1, 'still recorded');
});

test('the app lookup makes clients known and may ignore them', () => {
  const p = policy({
    clients: {},
    lookup: (mac) => (mac === '52:54:00:12:34:56' ? { ignore: true } : mac === '52:54:00:00:00:01' ? { bootFile: 'custom.efi' } : undefined),
  });
  assert.equal(p.decide(firmware(0)).action, 'ignore');
  assert.deepEqual(p.decide(firmware(7, { mac: '52:54:00:00:00:01' })), { action: 'tftp', bootFile: 'custom.efi', known: true });
  p.setClient('52:54:00:00:00:02', { scriptUrl: 'http://x/special.ipxe' });
  assert.deepEqual(p.decide(ipxe(7, { mac: '52:54:00:00:00:02' })), { action: 'http', url: 'http://x/special.ipxe', known: true });
});

test('unsafe boot values are refused at configuration', () => {
  assert.throws(() => policy({ scriptUrl: 'http://x/a b' }), /printable/);
  assert.throws(() => policy({ bootFiles: { bios: 'a"b' } }), /printable/);
  assert.throws(() => policy().setClient('not-a-mac', {}), /MAC/);
});
