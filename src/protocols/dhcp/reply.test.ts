import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeEncapsulated, decodePacket, encodePacket, readRequestInfo } from './codec.js';
import { BOOTREQUEST, FLAG_BROADCAST, MESSAGE_TYPES as MT, OPTIONS } from './constants.js';
import { buildReply, replyDestination } from './reply.js';

const MAC = Buffer.from([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
const ctx = { broadcastAddress: '255.255.255.255', clientPort: 68, relayPort: 67 };

function req(fields: { ciaddr?: string; giaddr?: string; flags?: number } = {}, options: Array<[number, Buffer]> = []) {
  const bytes = encodePacket({ op: BOOTREQUEST, xid: 42, chaddr: MAC, ...fields, options: [[OPTIONS.DHCP_MESSAGE_TYPE, Buffer.from([1])], ...options] });
  const packet = decodePacket(bytes);
  return { packet, info: readRequestInfo(packet) };
}

test('reply addressing follows RFC 2131 section 4.1', () => {
  const d = (f: Parameters<typeof req>[0], type: number) => replyDestination(req(f).packet, type, ctx);
  assert.deepEqual(d({ giaddr: '10.1.0.1' }, MT.DHCPOFFER), { address: '10.1.0.1', port: 67, broadcast: false });
  assert.deepEqual(d({ giaddr: '10.1.0.1', ciaddr: '10.1.0.7' }, MT.DHCPNAK), { address: '10.1.0.1', port: 67, broadcast: false });
  assert.deepEqual(d({ ciaddr: '10.0.0.7' }, MT.DHCPNAK), { address: '255.255.255.255', port: 68, broadcast: true });
  assert.deepEqual(d({ ciaddr: '10.0.0.7' }, MT.DHCPACK), { address: '10.0.0.7', port: 68, broadcast: false });
  assert.deepEqual(d({ flags: FLAG_BROADCAST }, MT.DHCPOFFER), { address: '255.255.255.255', port: 68, broadcast: true });
  // No ARP entry can be made from Node, so the "unicast to chaddr/yiaddr" case is broadcast.
  assert.deepEqual(d({}, MT.DHCPOFFER), { address: '255.255.255.255', port: 68, broadcast: true });
});

test('an OFFER carries the lease, the network and the boot file; the NAK carries none', () => {
  const { packet, info } = req({ giaddr: '10.1.0.1' }, [
    [OPTIONS.CLIENT_IDENTIFIER, Buffer.from([1, ...MAC])],
    [OPTIONS.RELAY_AGENT_INFORMATION, Buffer.from([1, 2, 0x61, 0x62])],
  ]);
  const spec = {
    serverId: '10.0.0.1',
    siaddr: '10.0.0.1',
    yiaddr: '10.1.0.50',
    lease: { leaseSeconds: 3600, renewalSeconds: 1800, rebindingSeconds: 3150 },
    network: { subnetMask: '255.255.255.0', routers: ['10.1.0.1'], dnsServers: ['10.0.0.53'], domainName: 'lab', hostName: 'pc1' },
    boot: { action: 'tftp' as const, bootFile: 'undionly.kpxe', known: true },
  };
  const offer = decodePacket(encodePacket(buildReply(packet, info, { type: MT.DHCPOFFER, ...spec })));
  assert.equal(offer.op, 2);
  assert.equal(offer.yiaddr, '10.1.0.50');
  assert.equal(offer.siaddr, '10.0.0.1');
  assert.equal(offer.giaddr, '10.1.0.1');
  assert.equal(offer.file, 'undionly.kpxe');
  const codes = [...offer.options.keys()];
  assert.deepEqual(codes.slice(0, 2), [OPTIONS.DHCP_MESSAGE_TYPE, OPTIONS.SERVER_IDENTIFIER]);
  assert.equal(codes.at(-1), OPTIONS.RELAY_AGENT_INFORMATION, 'option 82 echoed last (RFC 3046)');
  assert.deepEqual(offer.options.get(OPTIONS.RELAY_AGENT_INFORMATION), Buffer.from([1, 2, 0x61, 0x62]));
  assert.deepEqual(offer.options.get(OPTIONS.CLIENT_IDENTIFIER), Buffer.from([1, ...MAC]), 'RFC 6842 echo');
  assert.equal(offer.options.get(OPTIONS.IP_ADDRESS_LEASE_TIME)!.readUInt32BE(0), 3600);
  assert.equal(offer.options.get(OPTIONS.RENEWAL_TIME_VALUE)!.readUInt32BE(0), 1800);
  assert.equal(offer.options.get(OPTIONS.REBINDING_TIME_VALUE)!.readUInt32BE(0), 3150);
  assert.equal(offer.options.get(OPTIONS.HOST_NAME)!.toString(), 'pc1');
  assert.equal(offer.options.has(OPTIONS.IPXE_ENCAPSULATED), false, 'not iPXE');

  const nak = decodePacket(encodePacket(buildReply(packet, info, { type: MT.DHCPNAK, ...spec, message: 'wrong network' })));
  assert.equal(nak.yiaddr, '0.0.0.0');
  assert.equal(nak.siaddr, '0.0.0.0');
  assert.equal(nak.file, '');
  assert.equal(nak.flags & FLAG_BROADCAST, FLAG_BROADCAST, 'NAK through a relay sets the broadcast bit');
  assert.equal(nak.options.has(OPTIONS.IP_ADDRESS_LEASE_TIME), false);
  assert.equal(nak.options.has(OPTIONS.SUBNET_MASK), false);
  assert.equal(nak.options.get(OPTIONS.MESSAGE)!.toString(), 'wrong network');
});

test('iPXE gets 175.176 = 1; HTTP boot gets HTTPClient; long URLs go in option 67', () => {
  const ipxe = req({}, [
    [OPTIONS.USER_CLASS, Buffer.from('iPXE')],
    [OPTIONS.PARAMETER_REQUEST_LIST, Buffer.from([1, 3, 67])],
  ]);
  const url = 'http://10.0.0.1:8080/boot/52-54-00-ab-cd-ef.ipxe';
  const r = decodePacket(encodePacket(buildReply(ipxe.packet, ipxe.info, { type: MT.DHCPACK, serverId: '10.0.0.1', boot: { action: 'http', url, known: true } })));
  assert.deepEqual([...decodeEncapsulated(r.options.get(OPTIONS.IPXE_ENCAPSULATED)!)], [[176, Buffer.from([1])]]);
  assert.equal(r.file, url);
  assert.equal(r.options.get(OPTIONS.BOOTFILE_NAME)!.toString(), url, 'requested in option 55');
  assert.equal(r.options.has(OPTIONS.VENDOR_CLASS_IDENTIFIER), false);

  const http = req({}, [[OPTIONS.VENDOR_CLASS_IDENTIFIER, Buffer.from('HTTPClient:Arch:00016:UNDI:003016')]]);
  const longUrl = `http://10.0.0.1/${'x'.repeat(200)}.efi`;
  const h = decodePacket(encodePacket(buildReply(http.packet, http.info, { type: MT.DHCPOFFER, serverId: '10.0.0.1', boot: { action: 'http', url: longUrl, known: false } })));
  assert.equal(h.options.get(OPTIONS.VENDOR_CLASS_IDENTIFIER)!.toString(), 'HTTPClient');
  assert.equal(h.file, '', 'does not fit the 128-byte field');
  assert.equal(h.options.get(OPTIONS.BOOTFILE_NAME)!.toString(), longUrl);
});

test('a proxy reply has no address and carries 60, 43 and the echoed 97', () => {
  const guid = Buffer.concat([Buffer.from([0]), Buffer.alloc(16, 0x11)]);
  const pxe = req({}, [
    [OPTIONS.VENDOR_CLASS_IDENTIFIER, Buffer.from('PXEClient:Arch:00007:UNDI:003000')],
    [OPTIONS.CLIENT_MACHINE_IDENTIFIER, guid],
    [OPTIONS.VENDOR_SPECIFIC_INFORMATION, Buffer.from([71, 4, 0x80, 0x00, 0x00, 0x00, 255])],
  ]);
  const r = decodePacket(
    encodePacket(buildReply(pxe.packet, pxe.info, { type: MT.DHCPACK, serverId: '10.0.0.1', siaddr: '10.0.0.1', pxe: true, boot: { action: 'tftp', bootFile: 'ipxe.efi', known: false } })),
  );
  assert.equal(r.yiaddr, '0.0.0.0');
  assert.equal(r.siaddr, '10.0.0.1');
  assert.equal(r.file, 'ipxe.efi');
  assert.equal(r.options.get(OPTIONS.VENDOR_CLASS_IDENTIFIER)!.toString(), 'PXEClient');
  assert.deepEqual(r.options.get(OPTIONS.CLIENT_MACHINE_IDENTIFIER), guid);
  const vendor = decodeEncapsulated(r.options.get(OPTIONS.VENDOR_SPECIFIC_INFORMATION)!);
  assert.deepEqual(vendor.get(6), Buffer.from([8]), 'PXE_DISCOVERY_CONTROL: use the boot file');
  assert.deepEqual(vendor.get(71), Buffer.from([0x80, 0, 0, 0]), 'boot item echoed');
  assert.equal(r.options.get(OPTIONS.VENDOR_SPECIFIC_INFORMATION)!.at(-1), 255, 'PXE options end with End');
  assert.equal(r.options.has(OPTIONS.IP_ADDRESS_LEASE_TIME), false);
});
