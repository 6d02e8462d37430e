import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { classifyFrames, decodeDhcp, readPcapFile } from '../../../test/helpers/pcap.js';
import {
  type DhcpPacketInit,
  type OptionValue,
  decodeEncapsulated,
  decodeOptionValue,
  decodePacket,
  encodeEncapsulated,
  encodeOptionValue,
  encodePacket,
  parseUserClass,
  readRequestInfo,
} from './codec.js';
import { BOOTREPLY, BOOTREQUEST, HEADER, MESSAGE_TYPES, OPTIONS, OPTION_FORMATS, type OptionFormat } from './constants.js';
import { DhcpCodecError } from './errors.js';

const fixture = (name: string): string => fileURLToPath(new URL(`../../../../test/fixtures/${name.includes('/') ? name : `dhcp/${name}`}`, import.meta.url));
/** Every capture: ours (test/fixtures/dhcp) and the lab's (test/fixtures/pcap, scripts/capture-fixtures). */
const ALL_CAPTURES = ['dhcp', 'pcap'].flatMap((dir) =>
  readdirSync(fileURLToPath(new URL(`../../../../test/fixtures/${dir}/`, import.meta.url)))
    .filter((f) => f.endsWith('.pcap'))
    .map((f) => `${dir}/${f}`),
);

function dhcpPayloads(name: string): Buffer[] {
  return classifyFrames(readPcapFile(fixture(name)))
    .filter((c) => c.kind === 'dhcp' && c.udp)
    .map((c) => Buffer.from(c.udp!.payload));
}

const MAC = Buffer.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

function request(options: Array<[number, Buffer]>, extra: Partial<DhcpPacketInit> = {}): Buffer {
  return encodePacket({ op: BOOTREQUEST, xid: 0x1234abcd, chaddr: MAC, options, ...extra });
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof DhcpCodecError, `expected a DhcpCodecError, got ${String(e)}`);
    return e.code;
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Golden tests on packets captured from real firmware (test/fixtures/dhcp/capture.sh)

test('golden: SeaBIOS iPXE ROM and undionly.kpxe DHCPDISCOVER', () => {
  const payloads = dhcpPayloads('bios-ipxe.pcap');
  assert.ok(payloads.length >= 8, `expected DHCP frames, got ${payloads.length}`);
  const p = decodePacket(payloads[0]!);
  assert.equal(p.op, BOOTREQUEST);
  assert.equal(p.htype, 1);
  assert.equal(p.hlen, 6);
  assert.equal(p.hops, 0);
  assert.equal(p.ciaddr, '0.0.0.0');
  const info = readRequestInfo(p);
  assert.equal(info.messageType, MESSAGE_TYPES.DHCPDISCOVER);
  assert.equal(info.mac, '52:54:00:d1:5c:01');
  assert.equal(info.clientKey, '01525400d15c01'); // option 61 type 1 + MAC
  assert.equal(info.arch, 0);
  assert.deepEqual(info.architectures, [0]);
  assert.equal(info.vendorClass, 'PXEClient:Arch:00000:UNDI:002001');
  assert.deepEqual(info.userClasses, ['iPXE']);
  assert.equal(info.isIpxe, true);
  assert.equal(info.isPxeClient, true);
  assert.equal(info.maxMessageSize, 1472);
  assert.deepEqual(info.interfaceId, { type: 1, major: 2, minor: 1 });
  assert.equal(info.machineIdentifier?.length, 17);
  assert.ok(info.ipxeOptions?.has(177), 'iPXE bus-id sub-option');
  assert.deepEqual([...info.ipxeOptions!.get(235)!], [1, 0, 0], 'iPXE version 1.0.0');
  assert.ok(info.parameterRequestList.includes(175) && info.parameterRequestList.includes(67));
});

test('golden: OVMF PXE DHCPDISCOVER and DHCPREQUEST, then ipxe.efi', () => {
  const payloads = dhcpPayloads('ovmf.pcap');
  const requests = payloads.map((b) => decodePacket(b)).filter((p) => p.op === BOOTREQUEST);
  const infos = requests.map(readRequestInfo);
  const first = infos[0]!;
  assert.equal(first.messageType, MESSAGE_TYPES.DHCPDISCOVER);
  assert.equal(first.mac, '52:54:00:d1:5c:02');
  assert.equal(first.arch, 7);
  assert.equal(first.vendorClass, 'PXEClient:Arch:00007:UNDI:003000');
  assert.equal(first.isIpxe, false);
  assert.equal(first.clientKey, '01525400d15c02', 'no option 61: htype + chaddr');
  assert.equal(requests[0]!.flags, 0x8000, 'OVMF sets the broadcast bit');
  const req = infos.find((i) => i.messageType === MESSAGE_TYPES.DHCPREQUEST)!;
  assert.equal(req.serverIdentifier, '10.0.2.2');
  assert.equal(req.requestedAddress, '10.0.2.15');
  assert.equal(req.maxMessageSize, 65280);
  const ipxe = infos.find((i) => i.isIpxe)!;
  assert.ok(ipxe, 'the chainloaded ipxe.efi asks again');
  assert.equal(ipxe.arch, 7);
  assert.equal(ipxe.clientKey, first.clientKey, 'option 61 and chaddr name the same client');
});

test('golden: every captured packet decodes, agrees with an independent decoder, and survives a round trip', () => {
  let n = 0;
  assert.ok(ALL_CAPTURES.length >= 5, `captures: ${ALL_CAPTURES.join(', ')}`);
  for (const name of ALL_CAPTURES) {
    for (const bytes of dhcpPayloads(name)) {
      const p = decodePacket(bytes);
      const other = decodeDhcp(bytes)!;
      assert.ok(other, 'the pcap helper decodes it too');
      assert.equal(p.xid, other.xid);
      assert.equal(p.yiaddr, other.yiaddr);
      assert.equal(p.file, other.file);
      for (const o of other.options) assert.deepEqual(p.options.get(o.code), Buffer.from(o.data), `option ${o.code} in ${name}`);
      if (p.op === BOOTREPLY) {
        assert.match(p.yiaddr, /^10\.(0\.2\.15|77\.77\.\d+)$/);
      } else {
        readRequestInfo(p);
      }
      const again = decodePacket(encodePacket({ ...p, options: p.options }));
      assert.deepEqual(again, p);
      n++;
    }
  }
  assert.ok(n >= 70, `decoded ${n} captured packets`);
});

// ---------------------------------------------------------------------------
// Hand-built packets, every option format

const SAMPLES: Record<OptionFormat, OptionValue> = {
  ipv4: '10.1.2.3',
  'ipv4-list': ['10.0.0.1', '192.168.7.254'],
  'ipv4-pairs': [['10.0.0.0', '10.0.0.1']],
  u8: 200,
  flag: true,
  u16: 1500,
  u32: 86400,
  i32: -3600,
  'u8-list': [1, 3, 6, 15, 66, 67],
  'u16-list': [0, 7, 11],
  string: 'host-a.example',
  bytes: Buffer.from([0, 1, 2, 0xff]),
  encapsulated: new Map([
    [6, Buffer.from([8])],
    [71, Buffer.from([0x80, 0x00, 0, 0])],
  ]),
};

test('every option with a known format round-trips through a packet', () => {
  let checked = 0;
  for (const [codeText, format] of Object.entries(OPTION_FORMATS)) {
    const code = Number(codeText);
    if (code === OPTIONS.OPTION_OVERLOAD || code === OPTIONS.DHCP_MESSAGE_TYPE) continue; // structural, tested below
    const value = SAMPLES[format];
    const bytes = request([[code, encodeOptionValue(code, value)]]);
    const p = decodePacket(bytes);
    assert.deepEqual(decodeOptionValue(code, p.options.get(code)!), value, `option ${code} (${format})`);
    checked++;
  }
  assert.ok(checked > 80);
});

test('option encodings are the RFC byte layouts', () => {
  assert.deepEqual([...encodeOptionValue(OPTIONS.CLIENT_SYSTEM_ARCHITECTURE_TYPE, [0, 7])], [0, 0, 0, 7]);
  assert.deepEqual([...encodeOptionValue(OPTIONS.IP_ADDRESS_LEASE_TIME, 3600)], [0, 0, 0x0e, 0x10]);
  assert.deepEqual([...encodeOptionValue(OPTIONS.ROUTER, ['10.0.0.1'])], [10, 0, 0, 1]);
  assert.deepEqual([...encodeOptionValue(OPTIONS.TIME_OFFSET, -1)], [0xff, 0xff, 0xff, 0xff]);
  assert.deepEqual([...encodeOptionValue(OPTIONS.IP_FORWARDING, false)], [0]);
  assert.deepEqual(
    [...encodeEncapsulated([[6, Buffer.from([8])]], true)],
    [6, 1, 8, 255],
    'PXE_DISCOVERY_CONTROL=8 then End',
  );
  // A whole packet: header fields at their RFC 2131 offsets.
  const b = encodePacket({
    op: BOOTREPLY,
    xid: 0xdeadbeef,
    flags: 0x8000,
    ciaddr: '1.2.3.4',
    yiaddr: '5.6.7.8',
    siaddr: '9.10.11.12',
    giaddr: '13.14.15.16',
    chaddr: MAC,
    sname: 'srv',
    file: 'undionly.kpxe',
    options: [[OPTIONS.DHCP_MESSAGE_TYPE, Buffer.from([2])]],
  });
  assert.equal(b.length, 300, 'padded to the BOOTP minimum');
  assert.equal(b[0], 2);
  assert.equal(b.readUInt32BE(4), 0xdeadbeef);
  assert.equal(b.readUInt16BE(10), 0x8000);
  assert.deepEqual([...b.subarray(12, 28)], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
  assert.deepEqual(b.subarray(28, 34), MAC);
  assert.equal(b.toString('latin1', 44, 47), 'srv');
  assert.equal(b.toString('latin1', 108, 121), 'undionly.kpxe');
  assert.equal(b.readUInt32BE(236), 0x63825363);
  assert.deepEqual([...b.subarray(240, 244)], [53, 1, 2, 255]);
});

test('options longer than 255 bytes are split and concatenated (RFC 3396)', () => {
  const long = Buffer.alloc(600, 0x41);
  const b = request([[OPTIONS.ROOT_PATH, long]]);
  assert.equal(b[240], OPTIONS.ROOT_PATH);
  assert.equal(b[241], 255);
  assert.equal(b[240 + 257], OPTIONS.ROOT_PATH, 'second instance follows');
  assert.deepEqual(decodePacket(b).options.get(OPTIONS.ROOT_PATH), long);
});

test('option overload: options, then file, then sname, each read once (RFC 2131 4.1, RFC 3396)', () => {
  const b = request([
    [OPTIONS.DHCP_MESSAGE_TYPE, Buffer.from([1])],
    [OPTIONS.OPTION_OVERLOAD, Buffer.from([3])],
    [OPTIONS.HOST_NAME, Buffer.from('ab')],
  ]);
  // file: the second part of option 12, then option 60; sname: the third part of option 12.
  Buffer.from([12, 2, 0x63, 0x64, 60, 3, 0x50, 0x58, 0x45, 255]).copy(b, HEADER.file);
  Buffer.from([0, 12, 1, 0x65, 255]).copy(b, HEADER.sname);
  const p = decodePacket(b);
  assert.equal(p.overload, 3);
  assert.equal(p.options.get(OPTIONS.HOST_NAME)!.toString(), 'abcde');
  assert.equal(p.options.get(OPTIONS.VENDOR_CLASS_IDENTIFIER)!.toString(), 'PXE');
  assert.equal(p.file, '', 'an overloaded field is not a file name');
  assert.equal(p.sname, '');

  const fileOnly = request([[OPTIONS.OPTION_OVERLOAD, Buffer.from([1])]]);
  Buffer.from('sname-stays').copy(fileOnly, HEADER.sname);
  Buffer.from([53, 1, 3, 255]).copy(fileOnly, HEADER.file);
  const q = decodePacket(fileOnly);
  assert.equal(q.sname, 'sname-stays');
  assert.deepEqual(readRequestInfo(q).messageType, MESSAGE_TYPES.DHCPREQUEST);
});

test('packets without an End option are accepted when every option fits', () => {
  const b = request([[OPTIONS.DHCP_MESSAGE_TYPE, Buffer.from([1])]]).subarray(0, 243);
  assert.equal(readRequestInfo(decodePacket(b)).messageType, 1);
});

test('user class: iPXE\'s bare string and RFC 3004 instances', () => {
  assert.deepEqual(parseUserClass(Buffer.from('iPXE')), ['iPXE']);
  assert.deepEqual(parseUserClass(Buffer.from([4, 0x69, 0x50, 0x58, 0x45, 3, 0x61, 0x62, 0x63])), ['iPXE', 'abc']);
  const withClass = request([
    [OPTIONS.DHCP_MESSAGE_TYPE, Buffer.from([1])],
    [OPTIONS.USER_CLASS, Buffer.from([4, 0x69, 0x50, 0x58, 0x45])],
  ]);
  assert.equal(readRequestInfo(decodePacket(withClass)).isIpxe, true);
});

test('arch comes from the vendor class when option 93 is absent', () => {
  const b = request([
    [OPTIONS.DHCP_MESSAGE_TYPE, Buffer.from([1])],
    [OPTIONS.VENDOR_CLASS_IDENTIFIER, Buffer.from('PXEClient:Arch:00011:UNDI:003016')],
  ]);
  assert.equal(readRequestInfo(decodePacket(b)).arch, 11);
  const http = request([
    [OPTIONS.DHCP_MESSAGE_TYPE, Buffer.from([1])],
    [OPTIONS.VENDOR_CLASS_IDENTIFIER, Buffer.from('HTTPClient:Arch:00016:UNDI:003016')],
  ]);
  const info = readRequestInfo(decodePacket(http));
  assert.equal(info.arch, 16);
  assert.equal(info.isHttpClient, true);
});

test('relay agent information is kept for the echo and its link selection read', () => {
  const relay = encodeEncapsulated([
    [1, Buffer.from('port7')],
    [5, Buffer.from([10, 9, 8, 0])],
  ]);
  const info = readRequestInfo(decodePacket(request([[OPTIONS.DHCP_MESSAGE_TYPE, Buffer.from([1])], [OPTIONS.RELAY_AGENT_INFORMATION, relay]])));
  assert.deepEqual(info.relayAgentInformation, relay);
  assert.equal(info.subnetSelection, '10.9.8.0');
});

// ---------------------------------------------------------------------------
// Malformations: each a typed error with its stable code

test('malformed packets are typed errors', () => {
  const good = request([[OPTIONS.DHCP_MESSAGE_TYPE, Buffer.from([1])]]);
  const mutate = (f: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(good);
    f(b);
    return b;
  };
  assert.equal(codeOf(() => decodePacket(good.subarray(0, 239))), 'DHCP_TRUNCATED');
  assert.equal(codeOf(() => decodePacket(Buffer.alloc(0))), 'DHCP_TRUNCATED');
  assert.equal(codeOf(() => decodePacket(Buffer.alloc(5000, 1))), 'DHCP_PACKET_TOO_LARGE');
  assert.equal(codeOf(() => decodePacket(mutate((b) => b.writeUInt32BE(0x63825364, 236)))), 'DHCP_NO_MAGIC_COOKIE');
  assert.equal(codeOf(() => decodePacket(mutate((b) => (b[0] = 3)))), 'DHCP_BAD_OP');
  assert.equal(codeOf(() => decodePacket(mutate((b) => (b[2] = 7)))), 'DHCP_BAD_HLEN');
  assert.equal(codeOf(() => decodePacket(mutate((b) => ((b[1] = 32), (b[2] = 17))))), 'DHCP_BAD_HLEN');
  assert.equal(codeOf(() => decodePacket(mutate((b) => (b[3] = 17)))), 'DHCP_TOO_MANY_HOPS');
  assert.equal(decodePacket(mutate((b) => (b[3] = 16))).hops, 16, '16 hops is still allowed');
  // Option 53 claims 200 bytes.
  assert.equal(codeOf(() => decodePacket(mutate((b) => (b[241] = 200)))), 'DHCP_OPTION_OVERRUN');
  // An option code in the last byte with no room for its length.
  const noLen = Buffer.concat([good.subarray(0, 243), Buffer.from([12])]);
  assert.equal(codeOf(() => decodePacket(noLen)), 'DHCP_OPTION_OVERRUN');
});

test('option overload malformations: bad value, loop, overrun inside a field', () => {
  const withOverload = (v: number[]): Buffer => request([[OPTIONS.OPTION_OVERLOAD, Buffer.from(v)]]);
  assert.equal(codeOf(() => decodePacket(withOverload([0]))), 'DHCP_BAD_OVERLOAD');
  assert.equal(codeOf(() => decodePacket(withOverload([4]))), 'DHCP_BAD_OVERLOAD');
  assert.equal(codeOf(() => decodePacket(withOverload([1, 1]))), 'DHCP_BAD_OVERLOAD');
  const twice = request([
    [OPTIONS.OPTION_OVERLOAD, Buffer.from([1])],
    [OPTIONS.OPTION_OVERLOAD, Buffer.from([2])],
  ]);
  assert.equal(codeOf(() => decodePacket(twice)), 'DHCP_BAD_OVERLOAD', 'two instances concatenate to two bytes');
  // The file field points back at sname (and at itself): refused, not followed.
  const loop = withOverload([1]);
  Buffer.from([52, 1, 3, 255]).copy(loop, HEADER.file);
  assert.equal(codeOf(() => decodePacket(loop)), 'DHCP_OVERLOAD_LOOP');
  const loopSname = withOverload([3]);
  Buffer.from([255]).copy(loopSname, HEADER.file);
  Buffer.from([52, 1, 1]).copy(loopSname, HEADER.sname);
  assert.equal(codeOf(() => decodePacket(loopSname)), 'DHCP_OVERLOAD_LOOP');
  // An option in 'file' that runs past the end of the 128-byte field (into sname would be wrong).
  const overrun = withOverload([1]);
  overrun[HEADER.file + 120] = 12;
  overrun[HEADER.file + 121] = 20;
  assert.equal(codeOf(() => decodePacket(overrun)), 'DHCP_OPTION_OVERRUN');
});

test('malformed option values are typed errors when the server reads them', () => {
  const info = (opts: Array<[number, Buffer]>): unknown => readRequestInfo(decodePacket(request(opts)));
  const t = (v: number): [number, Buffer] => [OPTIONS.DHCP_MESSAGE_TYPE, Buffer.from([v])];
  assert.equal(codeOf(() => info([t(0)])), 'DHCP_BAD_MESSAGE_TYPE');
  assert.equal(codeOf(() => info([t(99)])), 'DHCP_BAD_MESSAGE_TYPE');
  assert.equal(codeOf(() => info([[OPTIONS.DHCP_MESSAGE_TYPE, Buffer.from([1, 1])]])), 'DHCP_BAD_OPTION_VALUE');
  assert.equal(codeOf(() => info([t(3), [OPTIONS.REQUESTED_IP_ADDRESS, Buffer.from([1, 2, 3])]])), 'DHCP_BAD_OPTION_VALUE');
  assert.equal(codeOf(() => info([t(3), [OPTIONS.SERVER_IDENTIFIER, Buffer.alloc(5)]])), 'DHCP_BAD_OPTION_VALUE');
  assert.equal(codeOf(() => info([t(1), [OPTIONS.CLIENT_IDENTIFIER, Buffer.from([1])]])), 'DHCP_BAD_OPTION_VALUE');
  assert.equal(codeOf(() => info([t(1), [OPTIONS.CLIENT_SYSTEM_ARCHITECTURE_TYPE, Buffer.from([0, 7, 1])]])), 'DHCP_BAD_OPTION_VALUE');
  assert.equal(codeOf(() => info([t(1), [OPTIONS.CLIENT_NETWORK_INTERFACE_IDENTIFIER, Buffer.from([1, 2])]])), 'DHCP_BAD_OPTION_VALUE');
  assert.equal(codeOf(() => info([t(1), [OPTIONS.IPXE_ENCAPSULATED, Buffer.from([176, 5, 1])]])), 'DHCP_ENCAPSULATED_MALFORMED');
  assert.equal(codeOf(() => info([t(1), [OPTIONS.RELAY_AGENT_INFORMATION, Buffer.from([1])]])), 'DHCP_ENCAPSULATED_MALFORMED');
  const pxe: [number, Buffer] = [OPTIONS.VENDOR_CLASS_IDENTIFIER, Buffer.from('PXEClient')];
  assert.equal(codeOf(() => info([t(3), pxe, [OPTIONS.VENDOR_SPECIFIC_INFORMATION, Buffer.from([71, 9, 0])]])), 'DHCP_ENCAPSULATED_MALFORMED');
  assert.equal(codeOf(() => info([t(3), pxe, [OPTIONS.VENDOR_SPECIFIC_INFORMATION, encodeEncapsulated([[71, Buffer.from([1, 2])]])]])), 'DHCP_ENCAPSULATED_MALFORMED');
  // Option 43 of a non-PXE vendor is opaque: not decoded, not an error.
  assert.equal(codeOf(() => info([t(1), [OPTIONS.VENDOR_SPECIFIC_INFORMATION, Buffer.from([71, 9, 0])]])), undefined);
  // A too-small option 57 is raised to the RFC minimum rather than refused.
  const small = readRequestInfo(decodePacket(request([t(1), [OPTIONS.MAXIMUM_DHCP_MESSAGE_SIZE, Buffer.from([0, 100])]])));
  assert.equal(small.maxMessageSize, 576);
});

test('encoding refuses what cannot be sent', () => {
  const base = { op: BOOTREPLY, xid: 1, chaddr: MAC };
  assert.equal(codeOf(() => encodePacket({ ...base, file: 'x'.repeat(128) })), 'DHCP_FIELD_TOO_LONG');
  assert.equal(codeOf(() => encodePacket({ ...base, sname: 'x'.repeat(64) })), 'DHCP_FIELD_TOO_LONG');
  assert.equal(codeOf(() => encodePacket({ ...base, chaddr: Buffer.alloc(17) })), 'DHCP_FIELD_TOO_LONG');
  assert.equal(codeOf(() => encodePacket({ ...base, yiaddr: '10.0.0.256' })), 'DHCP_BAD_OPTION_VALUE');
  assert.equal(codeOf(() => encodePacket({ ...base, options: [[255, Buffer.alloc(1)]] })), 'DHCP_BAD_OPTION_VALUE');
  assert.equal(codeOf(() => encodePacket({ ...base, options: [[OPTIONS.ROOT_PATH, Buffer.alloc(400)]] }, { maxSize: 548 })), 'DHCP_REPLY_TOO_LARGE');
  assert.equal(codeOf(() => encodeOptionValue(OPTIONS.ROUTER, ['not-an-ip'])), 'DHCP_BAD_OPTION_VALUE');
  assert.equal(codeOf(() => encodeOptionValue(OPTIONS.DEFAULT_IP_TIME_TO_LIVE, 256)), 'DHCP_BAD_OPTION_VALUE');
  assert.equal(codeOf(() => encodeEncapsulated([[1, Buffer.alloc(256)]])), 'DHCP_BAD_OPTION_VALUE');
  assert.equal(codeOf(() => decodeEncapsulated(Buffer.from([1, 3, 0]))), 'DHCP_ENCAPSULATED_MALFORMED');
});
