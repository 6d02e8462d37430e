import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BootClient } from '../protocols/dhcp/policy.js';
import { Store, type ClientRecord } from '../state/store.js';
import { CatalogueBootPolicy, clientUefiBinary, type CatalogueBootPolicyOptions } from './dhcp-policy.js';
import type { BootEventInput, BootEventSink } from './events.js';

const KNOWN = '52:54:00:00:00:0a';
const OTHER = '52:54:00:00:00:0b';
const UNKNOWN = '52:54:00:00:00:99';

class Sink implements BootEventSink {
  unknown: Array<[string, string | null | undefined]> = [];
  record(_e: BootEventInput): void {}
  unknownSeen(mac: string, arch?: string | null): void {
    this.unknown.push([mac, arch]);
  }
}

let dir: string;
let store: Store;
let sink: Sink;
let clock: number;

function client(mac: string, o: Partial<BootClient> = {}): BootClient {
  const isIpxe = o.isIpxe ?? false;
  return {
    mac, arch: 0, architectures: [0], userClasses: isIpxe ? ['iPXE'] : [], hasIpxeOptions: isIpxe, isIpxe,
    isPxeClient: true, isHttpClient: false, interfaceName: 'br0', serverAddress: '10.0.0.1', mode: 'full', pxePort: false,
    messageType: 1, ...o,
  };
}

function policy(o: Partial<CatalogueBootPolicyOptions> = {}): CatalogueBootPolicy {
  return new CatalogueBootPolicy({
    store, events: sink, httpBase: 'http://{server}:8080', unknownClients: 'register-script', uefiBinary: 'snponly.efi', now: () => clock, ...o,
  });
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'diskless-boot-policy-'));
  store = Store.open(dir);
  store.images.create('debian12');
  store.clients.add({ mac: KNOWN, image: 'debian12', name: 'pc-01' });
  store.clients.add({ mac: OTHER, image: 'debian12', name: 'lab_pc.2' });
  sink = new Sink();
  clock = 1_000_000;
});

afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

test('the chain for a known client: BIOS, x64 UEFI (configured binary), then iPXE gets its script on this link', () => {
  const p = policy();
  assert.deepEqual(p.decide(client(KNOWN)), { action: 'tftp', bootFile: 'undionly.kpxe', known: true, hostName: 'pc-01' });
  assert.deepEqual(p.decide(client(KNOWN, { arch: 7, architectures: [7] })), { action: 'tftp', bootFile: 'snponly.efi', known: true, hostName: 'pc-01' });
  assert.deepEqual(policy({ uefiBinary: 'ipxe.efi' }).decide(client(KNOWN, { arch: 9 })), { action: 'tftp', bootFile: 'ipxe.efi', known: true, hostName: 'pc-01' });
  assert.deepEqual(p.decide(client(KNOWN, { isIpxe: true, arch: 7, serverAddress: '10.9.0.1' })), {
    action: 'http', url: 'http://10.9.0.1:8080/ipxe/52-54-00-00-00-0a', known: true, hostName: 'pc-01',
  });
  // A fixed public URL is used as is.
  assert.equal((policy({ httpBase: 'http://boot.example:80/' }).decide(client(KNOWN, { isIpxe: true })) as { url: string }).url, 'http://boot.example:80/ipxe/52-54-00-00-00-0a');
  assert.deepEqual(sink.unknown, []);
});

test('a client name that is not a DHCP host name is not handed out as one', () => {
  const d = policy().decide(client(OTHER));
  assert.equal(d.action, 'tftp');
  assert.equal((d as { hostName?: string }).hostName, undefined);
});

test('unknown machines: ignored under "ignore", booted otherwise, noted once per interval', () => {
  const ignore = policy({ unknownClients: 'ignore' });
  assert.equal(ignore.decide(client(UNKNOWN)).action, 'ignore');
  assert.deepEqual(sink.unknown, [[UNKNOWN, 'X86_BIOS']]);
  // iPXE and firmware send several DISCOVERs per boot: one note.
  clock += 1000;
  ignore.decide(client(UNKNOWN));
  assert.equal(sink.unknown.length, 1);
  clock += 60_000;
  ignore.decide(client(UNKNOWN, { arch: 7 }));
  assert.equal(sink.unknown.length, 2);

  const boot = policy({ unknownClients: 'default-image' });
  assert.deepEqual(boot.decide(client(UNKNOWN, { isIpxe: true })), { action: 'http', url: 'http://10.0.0.1:8080/ipxe/52-54-00-00-00-99', known: false });
  assert.deepEqual(boot.unknownClients().map((u) => u.mac), [UNKNOWN]);
});

test('without our TFTP, firmware gets no boot file but iPXE still gets its script', () => {
  const p = policy({ tftp: false });
  assert.equal(p.decide(client(KNOWN)).action, 'none');
  assert.equal(p.decide(client(KNOWN, { isIpxe: true })).action, 'http');
});

test('UEFI HTTP boot gets the iPXE binary from the HTTP service; ARM64 only where configured', () => {
  const http = policy().decide(client(KNOWN, { arch: 16, architectures: [16], isHttpClient: true, isPxeClient: false }));
  assert.deepEqual(http, { action: 'http', url: 'http://10.0.0.1:8080/firmware/snponly.efi', known: true, hostName: 'pc-01' });
  assert.equal(policy().decide(client(KNOWN, { arch: 11 })).action, 'none');
  assert.deepEqual(policy({ efiArm64File: 'arm64-efi/snponly.efi' }).decide(client(KNOWN, { arch: 11 })), {
    action: 'tftp', bootFile: 'arm64-efi/snponly.efi', known: true, hostName: 'pc-01',
  });
});

test('a per-client UEFI binary is read from the catalogue record once it has one', () => {
  const base = store.clients.get(KNOWN)!;
  assert.equal(clientUefiBinary(base), undefined);
  assert.equal(clientUefiBinary({ ...base, uefiBinary: 'ipxe.efi' } as ClientRecord), 'ipxe.efi');
  assert.equal(clientUefiBinary({ ...base, uefiBinary: '../etc/passwd' } as ClientRecord), undefined);
  assert.throws(() => policy({ uefiBinary: 'x.efi' as 'ipxe.efi' }));
});
