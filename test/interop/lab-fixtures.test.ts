/**
 * The firmware captures in test/fixtures/pcap/ and the helpers that read
 * and make them: the golden dumps match the pcaps, the packets hold what the
 * README says each firmware sends, the pcap reader refuses damaged files,
 * and the QEMU and dnsmasq command lines keep the settings the captures
 * depend on. Needs no root: it reads files only.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  classifyFrames, decodeDhcp, decodeTftp, dumpPcap, readPcap, writePcap, PcapError,
  type ClassifiedFrame, type DecodedDhcp, type Pcap,
} from '../helpers/pcap.js';
import { trimCapture } from '../helpers/lab-capture.js';
import { buildQemuArgs, type QemuArgsInput } from '../helpers/lab-qemu.js';
import { dnsmasqArgs } from '../helpers/lab-peers.js';
import { plainText } from '../helpers/lab.js';

// dist/test/interop -> the source tree's test/fixtures/pcap
const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'fixtures', 'pcap');
const KINDS = ['bios-ipxe', 'uefi-ipxe', 'uefi-pxe'] as const;

function load(kind: string): { bytes: Buffer; pcap: Pcap } {
  const bytes = readFileSync(join(FIXTURES, `${kind}.pcap`));
  return { bytes, pcap: readPcap(bytes) };
}

function clientDhcp(frames: ClassifiedFrame[]): DecodedDhcp[] {
  return frames.filter((f) => f.kind === 'dhcp' && f.udp!.sport === 68).map((f) => decodeDhcp(f.udp!.payload)!);
}

const opt = (d: DecodedDhcp, code: number): Buffer | undefined => d.options.find((o) => o.code === code)?.data;

for (const kind of KINDS) {
  test(`${kind}: the golden dump matches the pcap`, () => {
    const { pcap } = load(kind);
    const golden = readFileSync(join(FIXTURES, `${kind}.golden.txt`), 'utf8');
    assert.equal(dumpPcap(pcap, `${kind}.pcap`), golden);
  });

  test(`${kind}: the fixture is already trimmed and writes back byte for byte`, () => {
    const { bytes, pcap } = load(kind);
    assert.equal(trimCapture(pcap).length, pcap.frames.length);
    assert.deepEqual(classifyFrames(pcap).filter((c) => c.kind === 'other').map((c) => c.frame.index), []);
    assert.deepEqual(writePcap(pcap.frames, { linkType: pcap.linkType, snapLen: pcap.snapLen }), bytes);
    assert.ok(bytes.length < 16_384, `${kind}.pcap is ${bytes.length} bytes: keep fixtures small`);
  });
}

test('bios-ipxe: iPXE asks as a BIOS client from its first packet and fetches the script over HTTP', () => {
  const frames = classifyFrames(load('bios-ipxe').pcap);
  const dhcp = clientDhcp(frames);
  assert.deepEqual(dhcp.map((d) => d.messageType), [1, 1, 3]);
  for (const d of dhcp) {
    assert.equal(opt(d, 60)?.toString(), 'PXEClient:Arch:00000:UNDI:002001');
    assert.deepEqual([...opt(d, 93)!], [0, 0]);
    assert.equal(opt(d, 77)?.toString(), 'iPXE');
    assert.ok(opt(d, 175), 'option 175');
    assert.deepEqual([...opt(d, 61)!], [1, 0x52, 0x54, 0x00, 0xd1, 0x00, 0x01]);
  }
  assert.equal(frames.filter((f) => f.kind === 'tftp').length, 0);
  assert.ok(frames.some((f) => f.kind === 'http' && f.tcp!.payload.toString().startsWith('GET /boot.ipxe HTTP/1.1\r\n')));
});

test('uefi-ipxe: iPXE asks as an x64 UEFI client', () => {
  const dhcp = clientDhcp(classifyFrames(load('uefi-ipxe').pcap));
  assert.ok(dhcp.length >= 2);
  for (const d of dhcp) {
    assert.equal(opt(d, 60)?.toString(), 'PXEClient:Arch:00007:UNDI:003010');
    assert.deepEqual([...opt(d, 93)!], [0, 7]);
    assert.equal(opt(d, 77)?.toString(), 'iPXE');
  }
});

test('uefi-pxe: OVMF PXE asks without iPXE options, probes tsize over TFTP, then iPXE takes over', () => {
  const frames = classifyFrames(load('uefi-pxe').pcap);
  const dhcp = clientDhcp(frames);
  const firmware = dhcp.filter((d) => !opt(d, 77));
  const ipxe = dhcp.filter((d) => opt(d, 77)?.toString() === 'iPXE');
  assert.deepEqual(firmware.map((d) => d.messageType), [1, 3]);
  for (const d of firmware) {
    assert.equal(opt(d, 60)?.toString(), 'PXEClient:Arch:00007:UNDI:003000');
    assert.deepEqual([...opt(d, 93)!], [0, 7]);
    assert.equal(opt(d, 175), undefined);
    assert.equal(d.flags & 0x8000, 0x8000, 'OVMF asks for broadcast replies');
  }
  assert.ok(ipxe.length >= 2 && ipxe[0]!.messageType === 1);
  // The firmware stage ends before iPXE's begins.
  assert.ok(dhcp.indexOf(firmware.at(-1)!) < dhcp.indexOf(ipxe[0]!));

  const tftp = frames.filter((f) => f.kind === 'tftp').map((f) => ({ f, t: decodeTftp(f.udp!.payload)! }));
  const rrqs = tftp.filter((x) => x.t.opcode === 1);
  assert.equal(rrqs.length, 2);
  assert.deepEqual(rrqs[0]!.t.options, [['tsize', '0'], ['blksize', '1468'], ['windowsize', '4']]);
  assert.deepEqual(rrqs[1]!.t.options, [['blksize', '1468'], ['windowsize', '4']]);
  assert.equal(rrqs[0]!.t.filename, 'snponly.efi');
  // The size probe is aborted by the client with error 8 (RFC 2347 option negotiation).
  const abort = tftp.find((x) => x.t.opcode === 5);
  assert.equal(abort?.t.errorCode, 8);
  assert.equal(abort!.f.udp!.sport, rrqs[0]!.f.udp!.sport);
  const data = tftp.filter((x) => x.t.opcode === 3);
  assert.ok(data.length >= 2 && data.every((x) => x.t.dataLength === 1468));
});

test('the pcap reader refuses a damaged file at every cut and any bad magic', () => {
  const { bytes, pcap } = load('uefi-pxe');
  const boundaries = new Set<number>([24]);
  let off = 24;
  for (const f of pcap.frames) boundaries.add((off += 16 + f.data.length));
  for (let cut = 0; cut < bytes.length; cut++) {
    const part = bytes.subarray(0, cut);
    if (boundaries.has(cut)) {
      assert.ok(readPcap(part).frames.length < pcap.frames.length);
    } else {
      assert.throws(() => readPcap(part), (e: unknown) => e instanceof PcapError && e.code === 'PCAP_TRUNCATED', `cut at ${cut}`);
    }
  }
  const bad = Buffer.from(bytes);
  bad.writeUInt32LE(0xdeadbeef, 0);
  assert.throws(() => readPcap(bad), (e: unknown) => e instanceof PcapError && e.code === 'PCAP_BAD_MAGIC');
  const huge = Buffer.from(bytes);
  huge.writeUInt32LE(10_000_000, 24 + 8); // first record's captured length
  assert.throws(() => readPcap(huge), (e: unknown) => e instanceof PcapError && e.code === 'PCAP_BAD_RECORD');
  assert.throws(() => readPcap(bytes, { maxFrames: 3 }), (e: unknown) => e instanceof PcapError && e.code === 'PCAP_TOO_MANY_FRAMES');
});

test('the pcap reader reads big-endian and nanosecond files', () => {
  const { pcap } = load('bios-ipxe');
  const parts: Buffer[] = [];
  const header = Buffer.alloc(24);
  header.writeUInt32BE(0xa1b23c4d, 0);
  header.writeUInt16BE(2, 4);
  header.writeUInt16BE(4, 6);
  header.writeUInt32BE(65535, 16);
  header.writeUInt32BE(1, 20);
  parts.push(header);
  for (const f of pcap.frames) {
    const rec = Buffer.alloc(16);
    rec.writeUInt32BE(f.tsSec, 0);
    rec.writeUInt32BE(f.tsUsec * 1000 + 999, 4);
    rec.writeUInt32BE(f.data.length, 8);
    rec.writeUInt32BE(f.origLen, 12);
    parts.push(rec, f.data);
  }
  const again = readPcap(Buffer.concat(parts));
  assert.deepEqual(again.frames.map((f) => [f.tsSec, f.tsUsec, f.data]), pcap.frames.map((f) => [f.tsSec, f.tsUsec, f.data]));
});

test('decoding and dumping arbitrary frames never throws', () => {
  // Every fixture frame cut at every length, and bytes flipped: the decoders answer null, the dump says "malformed".
  let seed = 12345;
  const rand = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  for (const kind of KINDS) {
    const { pcap } = load(kind);
    for (const f of pcap.frames) {
      const frames = [];
      for (let len = 0; len <= f.data.length; len += 7) frames.push({ ...f, data: f.data.subarray(0, len) });
      for (let i = 0; i < 20; i++) {
        const d = Buffer.from(f.data);
        for (let j = 0; j < 4; j++) d[Math.floor(rand() * d.length)] = Math.floor(rand() * 256);
        frames.push({ ...f, data: d });
      }
      const text = dumpPcap({ ...pcap, frames });
      assert.ok(text.length > 0);
    }
  }
});

const qemuBase: QemuArgsInput = {
  name: 'dl-1-1-vm1', firmware: 'bios-ipxe', accel: 'tcg', mac: '52:54:00:00:00:01', memory: 256, nic: 'virtio-net-pci',
  tap: 'dltap0', serialLog: '/tmp/s', pcap: '/tmp/p.pcap', varsFile: null, uuid: null, extraArgs: [],
};

test('QEMU command lines: plain Ethernet captures, QEMU\'s own option ROM, and OVMF with its own PXE only without a ROM', () => {
  const bios = buildQemuArgs(qemuBase).join(' ');
  assert.match(bios, /-machine q35,accel=tcg -cpu max/);
  assert.match(bios, /-netdev tap,id=n0,ifname=dltap0,script=no,downscript=no,vnet_hdr=off/);
  assert.match(bios, /-object filter-dump,id=dump0,netdev=n0,file=\/tmp\/p\.pcap/);
  assert.match(bios, /-no-reboot/);
  assert.doesNotMatch(bios, /romfile|pflash/);
  const uefiIpxe = buildQemuArgs({ ...qemuBase, firmware: 'uefi-ipxe', varsFile: '/tmp/v.fd' }).join(' ');
  assert.match(uefiIpxe, /if=pflash,format=raw,unit=0,readonly=on,file=\/usr\/share\/OVMF\/OVMF_CODE_4M\.fd/);
  assert.match(uefiIpxe, /if=pflash,format=raw,unit=1,file=\/tmp\/v\.fd/);
  assert.doesNotMatch(uefiIpxe, /romfile/);
  const uefiPxe = buildQemuArgs({ ...qemuBase, firmware: 'uefi-pxe', varsFile: '/tmp/v.fd', uuid: '00112233-4455-6677-8899-aabbccddeeff', pcap: null });
  assert.ok(uefiPxe.includes('virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,bootindex=1,romfile='));
  assert.ok(uefiPxe.includes('-uuid'));
  assert.doesNotMatch(uefiPxe.join(' '), /filter-dump/);
  assert.throws(() => buildQemuArgs({ ...qemuBase, firmware: 'uefi-pxe' }));
});

test('dnsmasq command line: boot file per architecture and iPXE user class, speed-ups only on request', () => {
  const lab = { bridge: 'dlbr0', dir: '/tmp/lab', hostAddress: (n: number) => `10.77.5.${n}` };
  const plain = dnsmasqArgs(lab, { tftpRoot: '/tmp/lab/tftp', bootScriptUrl: 'http://10.77.5.1:8080/boot.ipxe' });
  for (const a of ['--no-daemon', '--conf-file=/dev/null', '--port=0', '--interface=dlbr0', '--bind-interfaces', '--no-ping',
    '--dhcp-range=10.77.5.100,10.77.5.199,255.255.255.0,1h', '--enable-tftp', '--tftp-root=/tmp/lab/tftp',
    '--dhcp-match=set:efi64,option:client-arch,7', '--dhcp-userclass=set:ipxe,iPXE',
    '--dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe', '--dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi',
    '--dhcp-boot=tag:ipxe,http://10.77.5.1:8080/boot.ipxe']) {
    assert.ok(plain.includes(a), a);
  }
  assert.ok(!plain.some((a) => a.includes('175') || a.includes('enable-ra')));
  const fast = dnsmasqArgs(lab, { ipxeNoProxyDhcp: true, routerAdvertisements: true, ping: true });
  assert.ok(fast.includes('--dhcp-option=tag:ipxe,encap:175,176,1b'));
  assert.ok(fast.includes('--enable-ra') && fast.includes('--dhcp-range=::,constructor:dlbr0,ra-only'));
  assert.ok(!fast.includes('--no-ping'));
});

test('serial text is matched without ANSI escapes and carriage returns', () => {
  assert.equal(plainText('\x1b[2J\x1b[0;1miPXE\x1b[0m ok\r\n\x1b[=3h'), 'iPXE ok\n');
  assert.ok(existsSync(FIXTURES));
});
