/**
 * proxyDHCP (PXE 2.1 section 2.2.6 and 2.2.7) on loopback: PXE clients are
 * answered on the DHCP port without an address and on the PXE port with a
 * DHCPACK; everyone else is left to the site's DHCP server.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { decodeEncapsulated } from '../../src/protocols/dhcp/codec.js';
import { MESSAGE_TYPES as MT, OPTIONS } from '../../src/protocols/dhcp/constants.js';
import { DefaultBootPolicy } from '../../src/protocols/dhcp/policy.js';
import { type DhcpEvent, DhcpServer } from '../../src/protocols/dhcp/server.js';
import { LoopbackPeer, TestClock, buildRequest, loopbackOnlySockets, xidOf } from './dhcp-harness.js';

const SERVER = '127.0.0.1';
const RELAY = '127.9.0.1';
const GUID = Buffer.concat([Buffer.from([0]), Buffer.from('0123456789abcdef')]);

async function setup(t: TestContext) {
  const violations: string[] = [];
  const client = await LoopbackPeer.open('0.0.0.0');
  const relay = await LoopbackPeer.open(RELAY);
  // A PXE client that already has an address (from the site's server) talks to port 4011 from it.
  const addressed = await LoopbackPeer.open('127.0.5.5');
  const clock = new TestClock();
  const server = new DhcpServer({
    interfaces: [{ name: 'lo', address: SERVER, mode: 'proxy', bindAddress: SERVER, broadcastAddress: SERVER }],
    policy: new DefaultBootPolicy({ scriptUrl: 'http://127.0.0.1:8080/boot/{mac}.ipxe', now: clock.now }),
    ports: { server: 0, pxe: 0, client: client.port, relay: relay.port },
    createSocket: loopbackOnlySockets(violations),
    now: clock.now,
  });
  const events: DhcpEvent[] = [];
  server.on('event', (e) => events.push(e));
  await server.listen();
  t.after(async () => {
    await server.close();
    await Promise.all([client.close(), relay.close(), addressed.close()]);
    assert.deepEqual(violations, []);
  });
  const ports = server.boundPorts('lo');
  assert.ok(ports.dhcp && ports.pxe, 'proxy mode listens on both ports');
  return { server, client, relay, addressed, dhcp: ports.dhcp!, pxe: ports.pxe!, events };
}

test('port 67: a PXE client gets a proxy offer with no address, 60, 43, 97, next-server and file', async (t) => {
  const s = await setup(t);
  const d = buildRequest({ type: MT.DHCPDISCOVER, mac: '52:54:00:00:10:01', arch: 7, guid: GUID });
  await s.client.send(d, s.dhcp);
  const r = await s.client.reply(xidOf(d));
  assert.equal(r?.type, MT.DHCPOFFER);
  const p = r!.packet;
  assert.equal(p.yiaddr, '0.0.0.0', 'proxyDHCP hands out no address');
  assert.equal(p.siaddr, SERVER);
  assert.equal(p.file, 'ipxe.efi');
  assert.equal(p.options.get(OPTIONS.VENDOR_CLASS_IDENTIFIER)!.toString(), 'PXEClient');
  assert.deepEqual([...p.options.get(OPTIONS.SERVER_IDENTIFIER)!], [127, 0, 0, 1]);
  assert.deepEqual(p.options.get(OPTIONS.CLIENT_MACHINE_IDENTIFIER), GUID);
  assert.deepEqual(decodeEncapsulated(p.options.get(OPTIONS.VENDOR_SPECIFIC_INFORMATION)!).get(6), Buffer.from([8]));
  assert.equal(p.options.has(OPTIONS.IP_ADDRESS_LEASE_TIME), false);
  assert.equal(p.options.has(OPTIONS.SUBNET_MASK), false);
  assert.deepEqual(s.events.map((e) => [e.type, e.mode]), [['discover', 'proxy'], ['offer', 'proxy']]);

  const bios = buildRequest({ type: MT.DHCPDISCOVER, mac: '52:54:00:00:10:02', arch: 0 });
  await s.client.send(bios, s.dhcp);
  assert.equal((await s.client.reply(xidOf(bios)))?.packet.file, 'undionly.kpxe');
});

test('port 67: clients that are not PXE clients, and non-DISCOVERs, are left alone', async (t) => {
  const s = await setup(t);
  const os = buildRequest({ type: MT.DHCPDISCOVER, mac: '52:54:00:00:10:03', vendorClass: 'udhcp 1.36.1' });
  const bare = buildRequest({ type: MT.DHCPDISCOVER, mac: '52:54:00:00:10:04' });
  const http = buildRequest({ type: MT.DHCPDISCOVER, mac: '52:54:00:00:10:05', arch: 16, vendorClass: 'HTTPClient:Arch:00016:UNDI:003000' });
  const req = buildRequest({ type: MT.DHCPREQUEST, mac: '52:54:00:00:10:06', arch: 0, requested: '10.0.0.5', serverId: '10.0.0.254' });
  const inform = buildRequest({ type: MT.DHCPINFORM, mac: '52:54:00:00:10:07', arch: 0, ciaddr: '127.0.5.5' });
  for (const b of [os, bare, http, req, inform]) await s.client.send(b, s.dhcp);
  for (const b of [os, bare, http, req, inform]) assert.equal(await s.client.reply(xidOf(b), undefined, 300), undefined);
  assert.equal(s.server.stats.replies, 0);
});

test('port 4011: a boot-server DHCPREQUEST gets a DHCPACK back to where it came from, boot item echoed', async (t) => {
  const s = await setup(t);
  const item = Buffer.from([71, 4, 0x80, 0x00, 0x00, 0x00, 255]);
  const r = buildRequest({
    type: MT.DHCPREQUEST,
    mac: '52:54:00:00:10:08',
    arch: 7,
    ciaddr: '127.0.5.5',
    guid: GUID,
    extra: [[OPTIONS.VENDOR_SPECIFIC_INFORMATION, item]],
  });
  await s.addressed.send(r, s.pxe);
  const ack = await s.addressed.reply(xidOf(r));
  assert.equal(ack?.type, MT.DHCPACK);
  assert.equal(ack!.from.port, s.pxe, 'sent from the PXE port, as iPXE checks');
  assert.equal(ack!.packet.yiaddr, '0.0.0.0');
  assert.equal(ack!.packet.ciaddr, '127.0.5.5');
  assert.equal(ack!.packet.file, 'ipxe.efi');
  assert.equal(ack!.packet.options.get(OPTIONS.BOOTFILE_NAME)!.toString(), 'ipxe.efi', 'OVMF reads option 67');
  const vendor = decodeEncapsulated(ack!.packet.options.get(OPTIONS.VENDOR_SPECIFIC_INFORMATION)!);
  assert.deepEqual(vendor.get(71), Buffer.from([0x80, 0, 0, 0]));
  assert.ok(s.events.some((e) => e.type === 'ack' && e.pxePort));
});

test('port 4011: iPXE\'s proxyDHCP request is handed its script; others and foreign server ids are ignored', async (t) => {
  const s = await setup(t);
  const ipxe = buildRequest({ type: MT.DHCPREQUEST, mac: '52:54:00:00:10:09', arch: 0, ipxe: true, ciaddr: '127.0.5.5', serverId: SERVER });
  await s.addressed.send(ipxe, s.pxe);
  const ack = await s.addressed.reply(xidOf(ipxe));
  assert.equal(ack?.packet.file, 'http://127.0.0.1:8080/boot/52-54-00-00-10-09.ipxe');
  assert.equal(ack!.packet.options.has(OPTIONS.IPXE_ENCAPSULATED), false, 'proxy replies carry no 175');
  const foreign = buildRequest({ type: MT.DHCPREQUEST, mac: '52:54:00:00:10:0a', arch: 0, ciaddr: '127.0.5.5', serverId: '127.0.0.2' });
  const nonPxe = buildRequest({ type: MT.DHCPREQUEST, mac: '52:54:00:00:10:0b', ciaddr: '127.0.5.5' });
  const discover = buildRequest({ type: MT.DHCPDISCOVER, mac: '52:54:00:00:10:0c', arch: 0 });
  for (const b of [foreign, nonPxe, discover]) await s.addressed.send(b, s.pxe);
  for (const b of [foreign, nonPxe, discover]) assert.equal(await s.addressed.reply(xidOf(b), undefined, 300), undefined);
});

test('a relayed PXE DISCOVER is answered through the relay', async (t) => {
  const s = await setup(t);
  const d = buildRequest({ type: MT.DHCPDISCOVER, mac: '52:54:00:00:10:0d', arch: 0, giaddr: RELAY });
  await s.relay.send(d, s.dhcp);
  const r = await s.relay.reply(xidOf(d));
  assert.equal(r?.type, MT.DHCPOFFER);
  assert.equal(r!.packet.giaddr, RELAY);
  assert.equal(r!.packet.yiaddr, '0.0.0.0');
});
