/**
 * A small reader and writer for classic libpcap files (the format QEMU's
 * `filter-dump` writes), with just enough decoding for boot traffic:
 * Ethernet II (with an optional 802.1Q tag), IPv4, UDP and TCP. On top of it,
 * a readable dump of DHCP, TFTP and HTTP requests, used for the golden text
 * files beside the fixtures in test/fixtures/pcap/ and for debugging a lab.
 *
 * File structure errors throw a PcapError (the file is ours, so a bad one is
 * a bug); bad packet contents never throw: a decoder returns null and the
 * dump prints "malformed", because a capture is network input.
 *
 * Format: https://www.tcpdump.org/manpages/pcap-savefile.5.html (classic
 * header, magic 0xa1b2c3d4 for microsecond and 0xa1b23c4d for nanosecond
 * timestamps, either byte order).
 */
import { readFileSync } from 'node:fs';
import { DisklessError } from '../../src/lib/errors.js';

export const PCAP_ERROR_CODES = {
  PCAP_BAD_MAGIC: 'not a classic pcap file (unknown magic number)',
  PCAP_TRUNCATED: 'the pcap file ends inside a header or a frame',
  PCAP_BAD_RECORD: 'a pcap record header is inconsistent (length beyond the snap length or the limit)',
  PCAP_TOO_MANY_FRAMES: 'the pcap file holds more frames than the reader was allowed to read',
} as const;

export type PcapErrorCode = keyof typeof PCAP_ERROR_CODES;

export class PcapError extends DisklessError {
  override readonly name = 'PcapError';
  constructor(code: PcapErrorCode, message: string) {
    super(code, message);
  }
}

/** LINKTYPE_ETHERNET, the only link type QEMU's filter-dump writes. */
export const LINKTYPE_ETHERNET = 1;
const MAGIC_MICROS = 0xa1b2c3d4;
const MAGIC_NANOS = 0xa1b23c4d;
const GLOBAL_HEADER_LEN = 24;
const RECORD_HEADER_LEN = 16;
/** Largest frame we accept whatever the header's snap length says (jumbo frames fit). */
export const MAX_FRAME_LEN = 262_144;
export const DEFAULT_MAX_FRAMES = 1_000_000;

export interface PcapFrame {
  /** 1-based, as tcpdump and Wireshark number frames. */
  index: number;
  tsSec: number;
  tsUsec: number;
  /** Seconds since the epoch, with microseconds. */
  time: number;
  origLen: number;
  data: Buffer;
}

export interface Pcap {
  linkType: number;
  snapLen: number;
  frames: PcapFrame[];
}

export interface ReadPcapOptions {
  maxFrames?: number;
}

export function readPcap(bytes: Buffer, options: ReadPcapOptions = {}): Pcap {
  const maxFrames = options.maxFrames ?? DEFAULT_MAX_FRAMES;
  if (bytes.length < GLOBAL_HEADER_LEN) {
    throw new PcapError('PCAP_TRUNCATED', `pcap global header needs ${GLOBAL_HEADER_LEN} bytes, file has ${bytes.length}`);
  }
  let le: boolean;
  let nanos: boolean;
  const magicLE = bytes.readUInt32LE(0);
  const magicBE = bytes.readUInt32BE(0);
  if (magicLE === MAGIC_MICROS || magicLE === MAGIC_NANOS) {
    le = true;
    nanos = magicLE === MAGIC_NANOS;
  } else if (magicBE === MAGIC_MICROS || magicBE === MAGIC_NANOS) {
    le = false;
    nanos = magicBE === MAGIC_NANOS;
  } else {
    throw new PcapError('PCAP_BAD_MAGIC', `unknown pcap magic 0x${magicBE.toString(16).padStart(8, '0')}`);
  }
  const u32 = (off: number): number => (le ? bytes.readUInt32LE(off) : bytes.readUInt32BE(off));
  const snapLen = u32(16);
  const linkType = u32(20) & 0x0fffffff; // the top bits may carry the FCS length (pcap-savefile(5))
  const limit = Math.min(snapLen === 0 ? MAX_FRAME_LEN : snapLen, MAX_FRAME_LEN);
  const frames: PcapFrame[] = [];
  let off = GLOBAL_HEADER_LEN;
  while (off < bytes.length) {
    if (frames.length >= maxFrames) {
      throw new PcapError('PCAP_TOO_MANY_FRAMES', `more than ${maxFrames} frames`);
    }
    if (off + RECORD_HEADER_LEN > bytes.length) {
      throw new PcapError('PCAP_TRUNCATED', `record header of frame ${frames.length + 1} cut at byte ${off}`);
    }
    const tsSec = u32(off);
    const frac = u32(off + 4);
    const inclLen = u32(off + 8);
    const origLen = u32(off + 12);
    if (inclLen > limit || (nanos ? frac >= 1e9 : frac >= 1e6)) {
      throw new PcapError('PCAP_BAD_RECORD', `frame ${frames.length + 1}: captured length ${inclLen} (limit ${limit}) or timestamp fraction ${frac}`);
    }
    const start = off + RECORD_HEADER_LEN;
    if (start + inclLen > bytes.length) {
      throw new PcapError('PCAP_TRUNCATED', `frame ${frames.length + 1} needs ${inclLen} bytes, ${bytes.length - start} left`);
    }
    const tsUsec = nanos ? Math.floor(frac / 1000) : frac;
    frames.push({
      index: frames.length + 1,
      tsSec,
      tsUsec,
      time: tsSec + tsUsec / 1e6,
      origLen: Math.max(origLen, inclLen),
      data: bytes.subarray(start, start + inclLen),
    });
    off = start + inclLen;
  }
  return { linkType, snapLen, frames };
}

export function readPcapFile(path: string, options: ReadPcapOptions = {}): Pcap {
  return readPcap(readFileSync(path), options);
}

export interface WritePcapFrame {
  tsSec: number;
  tsUsec: number;
  data: Buffer;
  origLen?: number;
}

export interface WritePcapOptions {
  snapLen?: number;
  linkType?: number;
}

/** A classic little-endian microsecond pcap of the given frames (renumbered in order). */
export function writePcap(frames: readonly WritePcapFrame[], options: WritePcapOptions = {}): Buffer {
  const header = Buffer.alloc(GLOBAL_HEADER_LEN);
  header.writeUInt32LE(MAGIC_MICROS, 0);
  header.writeUInt16LE(2, 4); // version 2.4
  header.writeUInt16LE(4, 6);
  header.writeUInt32LE(options.snapLen ?? 65535, 16);
  header.writeUInt32LE(options.linkType ?? LINKTYPE_ETHERNET, 20);
  const parts: Buffer[] = [header];
  for (const f of frames) {
    const rec = Buffer.alloc(RECORD_HEADER_LEN);
    rec.writeUInt32LE(f.tsSec, 0);
    rec.writeUInt32LE(f.tsUsec, 4);
    rec.writeUInt32LE(f.data.length, 8);
    rec.writeUInt32LE(Math.max(f.origLen ?? f.data.length, f.data.length), 12);
    parts.push(rec, f.data);
  }
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------- decoding

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_VLAN = 0x8100;
export const ETHERTYPE_IPV6 = 0x86dd;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

function mac(b: Buffer, off: number): string {
  return Array.from(b.subarray(off, off + 6), (x) => x.toString(16).padStart(2, '0')).join(':');
}

function ipv4(b: Buffer, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

export interface EthernetFrame {
  dstMac: string;
  srcMac: string;
  etherType: number;
  vlan: number | null;
  payload: Buffer;
}

export function decodeEthernet(data: Buffer): EthernetFrame | null {
  if (data.length < 14) return null;
  let etherType = data.readUInt16BE(12);
  let off = 14;
  let vlan: number | null = null;
  if (etherType === ETHERTYPE_VLAN) {
    if (data.length < 18) return null;
    vlan = data.readUInt16BE(14) & 0x0fff;
    etherType = data.readUInt16BE(16);
    off = 18;
  }
  return { dstMac: mac(data, 0), srcMac: mac(data, 6), etherType, vlan, payload: data.subarray(off) };
}

export interface Ipv4Packet {
  src: string;
  dst: string;
  protocol: number;
  ttl: number;
  fragment: boolean;
  payload: Buffer;
}

/** RFC 791 section 3.1. Returns null for anything that is not a sane IPv4 header. */
export function decodeIpv4(packet: Buffer): Ipv4Packet | null {
  if (packet.length < 20) return null;
  const version = packet[0]! >> 4;
  const ihl = (packet[0]! & 0x0f) * 4;
  if (version !== 4 || ihl < 20 || packet.length < ihl) return null;
  const totalLength = packet.readUInt16BE(2);
  if (totalLength < ihl) return null;
  // Ethernet pads short frames to 60 bytes: trust the IP total length, not the frame length.
  const end = Math.min(totalLength, packet.length);
  const flagsFrag = packet.readUInt16BE(6);
  const fragment = (flagsFrag & 0x2000) !== 0 || (flagsFrag & 0x1fff) !== 0;
  return {
    src: ipv4(packet, 12),
    dst: ipv4(packet, 16),
    protocol: packet[9]!,
    ttl: packet[8]!,
    fragment,
    payload: packet.subarray(ihl, end),
  };
}

function ipv4Of(frameData: Buffer): { eth: EthernetFrame; ip: Ipv4Packet } | null {
  const eth = decodeEthernet(frameData);
  if (!eth || eth.etherType !== ETHERTYPE_IPV4) return null;
  const ip = decodeIpv4(eth.payload);
  if (!ip || ip.fragment) return null;
  return { eth, ip };
}

export interface UdpDatagram {
  srcMac: string;
  dstMac: string;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  payload: Buffer;
}

/** RFC 768. Null unless the frame is Ethernet/IPv4/UDP with a consistent length. */
export function decodeUdp(frame: PcapFrame | Buffer): UdpDatagram | null {
  const r = ipv4Of(Buffer.isBuffer(frame) ? frame : frame.data);
  if (!r || r.ip.protocol !== IPPROTO_UDP || r.ip.payload.length < 8) return null;
  const u = r.ip.payload;
  const length = u.readUInt16BE(4);
  if (length < 8 || length > u.length) return null;
  return {
    srcMac: r.eth.srcMac,
    dstMac: r.eth.dstMac,
    src: r.ip.src,
    dst: r.ip.dst,
    sport: u.readUInt16BE(0),
    dport: u.readUInt16BE(2),
    payload: u.subarray(8, length),
  };
}

const TCP_FLAGS = ['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG'] as const;

export interface TcpSegment {
  srcMac: string;
  dstMac: string;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: string[];
  payload: Buffer;
}

/** RFC 9293 section 3.1. Null unless the frame is Ethernet/IPv4/TCP with a sane data offset. */
export function decodeTcp(frame: PcapFrame | Buffer): TcpSegment | null {
  const r = ipv4Of(Buffer.isBuffer(frame) ? frame : frame.data);
  if (!r || r.ip.protocol !== IPPROTO_TCP || r.ip.payload.length < 20) return null;
  const t = r.ip.payload;
  const dataOffset = (t[12]! >> 4) * 4;
  if (dataOffset < 20 || dataOffset > t.length) return null;
  const bits = t[13]!;
  return {
    srcMac: r.eth.srcMac,
    dstMac: r.eth.dstMac,
    src: r.ip.src,
    dst: r.ip.dst,
    sport: t.readUInt16BE(0),
    dport: t.readUInt16BE(2),
    seq: t.readUInt32BE(4),
    ack: t.readUInt32BE(8),
    flags: TCP_FLAGS.filter((_, i) => (bits & (1 << i)) !== 0),
    payload: t.subarray(dataOffset),
  };
}

// ---------------------------------------------------------------- DHCP

export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;
export const TFTP_PORT = 69;
/** RFC 2131 section 3: the magic cookie 99.130.83.99 that starts the options. */
const DHCP_MAGIC_COOKIE = 0x63825363;
const BOOTP_FIXED_LEN = 236;

function cString(b: Buffer): string {
  const nul = b.indexOf(0);
  return (nul < 0 ? b : b.subarray(0, nul)).toString('latin1');
}

export interface DhcpOptionRaw {
  code: number;
  data: Buffer;
}

export interface DecodedDhcp {
  op: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  chaddr: string;
  sname: string;
  file: string;
  options: DhcpOptionRaw[];
  messageType: number | null;
}

/** RFC 2131 section 2 fixed header plus RFC 2132 options. Null when malformed. */
export function decodeDhcp(payload: Buffer): DecodedDhcp | null {
  if (payload.length < BOOTP_FIXED_LEN + 4 || payload.readUInt32BE(BOOTP_FIXED_LEN) !== DHCP_MAGIC_COOKIE) return null;
  const options: DhcpOptionRaw[] = [];
  let off = BOOTP_FIXED_LEN + 4;
  let ended = false;
  while (off < payload.length) {
    const code = payload[off]!;
    if (code === 0) {
      off += 1;
      continue;
    } // pad
    if (code === 255) {
      ended = true;
      break;
    }
    if (off + 2 > payload.length) return null;
    const len = payload[off + 1]!;
    if (off + 2 + len > payload.length) return null;
    options.push({ code, data: payload.subarray(off + 2, off + 2 + len) });
    off += 2 + len;
  }
  if (!ended) return null;
  const type = options.find((o) => o.code === 53);
  return {
    op: payload[0]!,
    xid: payload.readUInt32BE(4),
    secs: payload.readUInt16BE(8),
    flags: payload.readUInt16BE(10),
    ciaddr: ipv4(payload, 12),
    yiaddr: ipv4(payload, 16),
    siaddr: ipv4(payload, 20),
    giaddr: ipv4(payload, 24),
    chaddr: mac(payload, 28),
    sname: cString(payload.subarray(44, 108)),
    file: cString(payload.subarray(108, 236)),
    options,
    messageType: type && type.data.length === 1 ? type.data[0]! : null,
  };
}

/** RFC 2132 section 9.6. */
export const DHCP_MESSAGE_TYPE_NAMES: Readonly<Record<number, string>> = {
  1: 'DHCPDISCOVER', 2: 'DHCPOFFER', 3: 'DHCPREQUEST', 4: 'DHCPDECLINE',
  5: 'DHCPACK', 6: 'DHCPNAK', 7: 'DHCPRELEASE', 8: 'DHCPINFORM',
};

/** Names for the options boot clients and servers actually send (RFC 2132, 3004, 4578, iPXE). */
const DHCP_OPTION_NAMES: Readonly<Record<number, string>> = {
  1: 'Subnet Mask', 3: 'Router', 6: 'Domain Name Server', 7: 'Log Server', 12: 'Host Name',
  15: 'Domain Name', 17: 'Root Path', 26: 'Interface MTU', 28: 'Broadcast Address',
  43: 'Vendor Specific Information', 50: 'Requested IP Address', 51: 'IP Address Lease Time',
  53: 'DHCP Message Type', 54: 'Server Identifier', 55: 'Parameter Request List', 57: 'Maximum DHCP Message Size',
  58: 'Renewal (T1) Time', 59: 'Rebinding (T2) Time', 60: 'Vendor Class Identifier', 61: 'Client Identifier',
  66: 'TFTP Server Name', 67: 'Bootfile Name', 77: 'User Class', 93: 'Client System Architecture',
  94: 'Client Network Interface Identifier', 97: 'Client Machine Identifier', 119: 'Domain Search',
  175: 'iPXE Encapsulated Options', 203: 'iPXE Settings',
};

/** RFC 4578 section 2.1 and the IANA "Processor Architecture Types" registry. */
const CLIENT_ARCH_NAMES: Readonly<Record<number, string>> = {
  0: 'x86 BIOS', 6: 'x86 UEFI', 7: 'x64 UEFI', 9: 'EBC (used for x64 UEFI by some firmware)', 10: 'ARM 32-bit UEFI',
  11: 'ARM 64-bit UEFI', 16: 'x64 UEFI HTTP',
};

/**
 * iPXE's encapsulated option 175 sub-options (its include/ipxe/dhcp.h and
 * features.h). The feature flags match the "Features:" line iPXE prints at
 * start-up, which is how the captured values were checked.
 */
const IPXE_ENCAP_NAMES: Readonly<Record<number, string>> = {
  1: 'priority', 8: 'keep-san', 9: 'skip-san-boot',
  16: 'feature PXE-EXT', 17: 'feature iSCSI', 18: 'feature AoE', 19: 'feature HTTP', 20: 'feature HTTPS',
  21: 'feature TFTP', 22: 'feature FTP', 23: 'feature DNS', 24: 'feature bzImage', 25: 'feature Multiboot',
  26: 'feature SLAM', 27: 'feature SRP', 32: 'feature NBI', 33: 'feature PXE', 34: 'feature ELF',
  35: 'feature COMBOOT', 36: 'feature EFI', 37: 'feature FCoE', 38: 'feature VLAN', 39: 'feature Menu',
  40: 'feature SDI', 41: 'feature NFS',
  176: 'no-pxedhcp', 177: 'bus-id', 235: 'version',
};

function printable(b: Buffer): boolean {
  return b.length > 0 && b.every((c) => c >= 0x20 && c < 0x7f);
}

function hex(b: Buffer): string {
  return b.length === 0 ? '(empty)' : b.toString('hex');
}

/** A string option as text; servers often NUL-terminate them (dnsmasq does for option 67), shown as `+NUL`. */
function quoted(b: Buffer): string {
  let end = b.length;
  while (end > 0 && b[end - 1] === 0) end -= 1;
  const text = b.subarray(0, end);
  if (!printable(text)) return `0x${hex(b)}`;
  const nuls = b.length - end;
  return JSON.stringify(text.toString('latin1')) + (nuls === 0 ? '' : nuls === 1 ? ' +NUL' : ` +${nuls} NUL`);
}

function ipv4List(b: Buffer): string | null {
  if (b.length === 0 || b.length % 4 !== 0) return null;
  const out: string[] = [];
  for (let i = 0; i < b.length; i += 4) out.push(ipv4(b, i));
  return out.join(' ');
}

function encapsulated(b: Buffer, names: Readonly<Record<number, string>>): string[] | null {
  const out: string[] = [];
  let off = 0;
  while (off < b.length) {
    const code = b[off]!;
    if (code === 0) {
      off += 1;
      continue;
    }
    if (code === 255) break;
    if (off + 2 > b.length) return null;
    const len = b[off + 1]!;
    if (off + 2 + len > b.length) return null;
    const data = b.subarray(off + 2, off + 2 + len);
    const name = names[code] ? ` ${names[code]}` : '';
    const value = len === 1 ? String(data[0]) : quoted(data);
    out.push(`sub-option ${code}${name} (${len}): ${value}`);
    off += 2 + len;
  }
  return out;
}

/** One or more readable lines for a DHCP option value. */
export function describeDhcpOption(code: number, data: Buffer): string[] {
  const head = `option ${code}${DHCP_OPTION_NAMES[code] ? ' ' + DHCP_OPTION_NAMES[code] : ''} (${data.length})`;
  const one = (v: string): string[] => [`${head}: ${v}`];
  switch (code) {
    case 53:
      return one(data.length === 1 ? `${data[0]} (${DHCP_MESSAGE_TYPE_NAMES[data[0]!] ?? 'unknown'})` : `0x${hex(data)}`);
    case 55:
      return one(Array.from(data).join(' '));
    case 57:
    case 26:
      return one(data.length === 2 ? String(data.readUInt16BE(0)) : `0x${hex(data)}`);
    case 51:
    case 58:
    case 59:
      return one(data.length === 4 ? `${data.readUInt32BE(0)} s` : `0x${hex(data)}`);
    case 1:
    case 3:
    case 6:
    case 28:
    case 50:
    case 54:
      return one(ipv4List(data) ?? `0x${hex(data)}`);
    case 93: {
      if (data.length === 0 || data.length % 2 !== 0) return one(`0x${hex(data)}`);
      const archs: string[] = [];
      for (let i = 0; i < data.length; i += 2) {
        const a = data.readUInt16BE(i);
        archs.push(`${a} (${CLIENT_ARCH_NAMES[a] ?? 'unknown'})`);
      }
      return one(archs.join(', '));
    }
    case 94: // RFC 4578 section 2.2: type 1 (UNDI), major, minor
      return one(data.length === 3 ? `type ${data[0]} version ${data[1]}.${data[2]}` : `0x${hex(data)}`);
    case 97: // RFC 4578 section 2.3: type 0 then a 16-byte GUID
      return one(data.length === 17 ? `type ${data[0]} guid ${hex(data.subarray(1))}` : `0x${hex(data)}`);
    case 61:
      return one(data.length === 7 && data[0] === 1 ? `type 1 (Ethernet) ${mac(data, 1)}` : `0x${hex(data)}`);
    case 43:
    case 175: {
      const subs = encapsulated(data, code === 175 ? IPXE_ENCAP_NAMES : {});
      if (!subs) return one(`malformed 0x${hex(data)}`);
      return [`${head}:`, ...subs.map((s) => `  ${s}`)];
    }
    default:
      return one(quoted(data));
  }
}

export function describeDhcp(payload: Buffer): string[] {
  const d = decodeDhcp(payload);
  if (!d) return [`DHCP malformed (${payload.length} bytes)`];
  const type = d.messageType === null ? 'BOOTP' : DHCP_MESSAGE_TYPE_NAMES[d.messageType] ?? `type ${d.messageType}`;
  const lines = [
    `DHCP ${type} op=${d.op === 1 ? 'BOOTREQUEST' : d.op === 2 ? 'BOOTREPLY' : d.op} xid=0x${d.xid.toString(16).padStart(8, '0')} secs=${d.secs} flags=0x${d.flags.toString(16).padStart(4, '0')}${d.flags & 0x8000 ? ' (broadcast)' : ''}`,
    `  ciaddr=${d.ciaddr} yiaddr=${d.yiaddr} siaddr=${d.siaddr} giaddr=${d.giaddr} chaddr=${d.chaddr}`,
  ];
  if (d.sname || d.file) lines.push(`  sname=${JSON.stringify(d.sname)} file=${JSON.stringify(d.file)}`);
  for (const o of d.options) lines.push(...describeDhcpOption(o.code, o.data).map((l) => `  ${l}`));
  return lines;
}

// ---------------------------------------------------------------- TFTP

/** RFC 1350 section 5 opcodes, RFC 2347 OACK. */
export const TFTP_OPCODE_NAMES: Readonly<Record<number, string>> = {
  1: 'RRQ', 2: 'WRQ', 3: 'DATA', 4: 'ACK', 5: 'ERROR', 6: 'OACK',
};

function nulStrings(b: Buffer): string[] | null {
  if (b.length === 0) return [];
  if (b[b.length - 1] !== 0) return null;
  return b.subarray(0, b.length - 1).toString('latin1').split('\0');
}

export interface TftpPacket {
  opcode: number;
  /** RRQ/WRQ. */
  filename?: string;
  mode?: string;
  /** RRQ/WRQ/OACK options (RFC 2347) in wire order, names as sent. */
  options?: Array<[string, string]>;
  /** DATA/ACK. */
  block?: number;
  /** DATA: bytes of data after the 4-byte header. */
  dataLength?: number;
  /** ERROR. */
  errorCode?: number;
  errorMessage?: string;
}

export function decodeTftp(payload: Buffer): TftpPacket | null {
  if (payload.length < 2) return null;
  const opcode = payload.readUInt16BE(0);
  const rest = payload.subarray(2);
  switch (opcode) {
    case 1:
    case 2: {
      const parts = nulStrings(rest);
      if (!parts || parts.length < 2 || parts.length % 2 !== 0) return null;
      const options: Array<[string, string]> = [];
      for (let i = 2; i < parts.length; i += 2) options.push([parts[i]!, parts[i + 1]!]);
      return { opcode, filename: parts[0]!, mode: parts[1]!, options };
    }
    case 3:
      return rest.length >= 2 ? { opcode, block: rest.readUInt16BE(0), dataLength: rest.length - 2 } : null;
    case 4:
      return rest.length === 2 ? { opcode, block: rest.readUInt16BE(0) } : null;
    case 5: {
      if (rest.length < 3) return null;
      const msg = nulStrings(rest.subarray(2));
      return { opcode, errorCode: rest.readUInt16BE(0), errorMessage: msg ? msg.join(' ') : rest.subarray(2).toString('latin1') };
    }
    case 6: {
      const parts = nulStrings(rest);
      if (!parts || parts.length % 2 !== 0) return null;
      const options: Array<[string, string]> = [];
      for (let i = 0; i < parts.length; i += 2) options.push([parts[i]!, parts[i + 1]!]);
      return { opcode, options };
    }
    default:
      return null;
  }
}

export function describeTftp(payload: Buffer): string[] {
  const t = decodeTftp(payload);
  if (!t) return [`TFTP malformed (${payload.length} bytes)`];
  const name = TFTP_OPCODE_NAMES[t.opcode];
  const opts = (t.options ?? []).map(([k, v]) => `${k}=${v}`).join(' ');
  switch (t.opcode) {
    case 1:
    case 2:
      return [`TFTP ${name} ${JSON.stringify(t.filename)} mode=${t.mode}${opts ? ' ' + opts : ''}`];
    case 3:
      return [`TFTP DATA block=${t.block} ${t.dataLength} bytes`];
    case 4:
      return [`TFTP ACK block=${t.block}`];
    case 5:
      return [`TFTP ERROR code=${t.errorCode} ${JSON.stringify(t.errorMessage)}`];
    default:
      return [`TFTP OACK${opts ? ' ' + opts : ''}`];
  }
}

/** HTTP request methods iPXE and firmware use; a TCP payload starting with one is a request. */
const HTTP_REQUEST_RE = /^(GET|HEAD|POST|PUT) \S+ HTTP\/1\.[01]\r\n/;
const HTTP_RESPONSE_RE = /^HTTP\/1\.[01] \d{3}/;

export interface ClassifiedFrame {
  frame: PcapFrame;
  kind: 'dhcp' | 'tftp' | 'http' | 'other';
  udp: UdpDatagram | null;
  tcp: TcpSegment | null;
}

/**
 * Labels each frame. TFTP transfers run on ephemeral ports (RFC 1350
 * section 4), so a flow is TFTP when one end is a client endpoint seen
 * sending a request to port 69 earlier in the capture.
 */
export function classifyFrames(pcap: Pcap): ClassifiedFrame[] {
  const tftpClients = new Set<string>();
  return pcap.frames.map((frame): ClassifiedFrame => {
    const udp = decodeUdp(frame);
    if (udp) {
      if ((udp.sport === DHCP_CLIENT_PORT && udp.dport === DHCP_SERVER_PORT) || (udp.sport === DHCP_SERVER_PORT && udp.dport === DHCP_CLIENT_PORT) || udp.dport === 4011 || udp.sport === 4011) {
        return { frame, kind: 'dhcp', udp, tcp: null };
      }
      if (udp.dport === TFTP_PORT) {
        tftpClients.add(`${udp.src}:${udp.sport}`);
        return { frame, kind: 'tftp', udp, tcp: null };
      }
      if (tftpClients.has(`${udp.src}:${udp.sport}`) || tftpClients.has(`${udp.dst}:${udp.dport}`)) {
        return { frame, kind: 'tftp', udp, tcp: null };
      }
      return { frame, kind: 'other', udp, tcp: null };
    }
    const tcp = decodeTcp(frame);
    if (tcp && tcp.payload.length > 0) {
      const head = tcp.payload.subarray(0, 64).toString('latin1');
      if (HTTP_REQUEST_RE.test(head) || HTTP_RESPONSE_RE.test(head)) return { frame, kind: 'http', udp: null, tcp };
    }
    return { frame, kind: 'other', udp: null, tcp };
  });
}

function describeHttp(payload: Buffer): string[] {
  const text = payload.toString('latin1');
  const headEnd = text.indexOf('\r\n\r\n');
  const head = headEnd < 0 ? text : text.slice(0, headEnd);
  return head.split('\r\n').map((l, i) => (i === 0 ? `HTTP ${l}` : `  ${l}`));
}

/**
 * A readable, deterministic dump (times relative to the first frame) of
 * every frame: addresses, then the DHCP options by number with values, the
 * TFTP request and its options, or the HTTP request head.
 */
export function dumpPcap(pcap: Pcap, title = 'capture'): string {
  const lines = [`# ${title}: ${pcap.frames.length} frames, link type ${pcap.linkType}, snap length ${pcap.snapLen}`];
  const t0 = pcap.frames[0]?.time ?? 0;
  for (const c of classifyFrames(pcap)) {
    const f = c.frame;
    const rel = (f.time - t0).toFixed(6);
    lines.push('');
    if (c.udp) {
      const u = c.udp;
      lines.push(`frame ${f.index} +${rel}s ${u.srcMac} > ${u.dstMac} ${u.src}:${u.sport} > ${u.dst}:${u.dport} UDP ${u.payload.length} bytes`);
      if (c.kind === 'dhcp') lines.push(...describeDhcp(u.payload).map((l) => `  ${l}`));
      else if (c.kind === 'tftp') lines.push(...describeTftp(u.payload).map((l) => `  ${l}`));
    } else if (c.tcp) {
      const t = c.tcp;
      lines.push(`frame ${f.index} +${rel}s ${t.srcMac} > ${t.dstMac} ${t.src}:${t.sport} > ${t.dst}:${t.dport} TCP [${t.flags.join(',')}] ${t.payload.length} bytes`);
      if (c.kind === 'http') lines.push(...describeHttp(t.payload).map((l) => `  ${l}`));
    } else {
      const eth = decodeEthernet(f.data);
      lines.push(
        eth
          ? `frame ${f.index} +${rel}s ${eth.srcMac} > ${eth.dstMac} ethertype 0x${eth.etherType.toString(16).padStart(4, '0')} ${f.data.length} bytes`
          : `frame ${f.index} +${rel}s malformed ${f.data.length} bytes`,
      );
    }
  }
  return lines.join('\n') + '\n';
}
