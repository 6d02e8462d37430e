/**
 * DHCPv4 wire codec: Buffer in, typed object out, and back. Pure: no
 * sockets, clocks or loggers. Every malformation is a DhcpCodecError with a
 * stable code; nothing here loops on packet contents beyond the packet's
 * own length.
 *
 * Layout (RFC 2131 section 2): a 236-byte fixed BOOTP header, the magic
 * cookie, then options (RFC 2132). Option 52 (Option Overload) may extend
 * the options into the `file` and `sname` fields; they are read in the order
 * options, file, sname (RFC 2131 section 4.1), exactly once each, and an
 * option 52 found inside an overloaded field is rejected rather than
 * followed, so overload can never loop. Several instances of one option are
 * concatenated in that order (RFC 3396 section 7), and long values are split
 * the same way on encoding.
 */
import { formatIpv4, formatMac, parseIpv4 } from './address.js';
import {
  BOOTP_MIN_SIZE,
  BOOTREPLY,
  BOOTREQUEST,
  CHADDR_SIZE,
  ETHERNET_HLEN,
  FILE_SIZE,
  HEADER,
  HTYPE_ETHERNET,
  IPXE_USER_CLASS,
  MAGIC_COOKIE,
  MAX_HOPS,
  MESSAGE_TYPES,
  MIN_DHCP_SIZE,
  MIN_MAX_MESSAGE_SIZE,
  OPTIONS,
  PXE_VENDOR_OPTIONS,
  SNAME_SIZE,
  VENDOR_CLASS,
  optionFormat,
  optionName,
} from './constants.js';
import { DhcpCodecError } from './errors.js';

/**
 * The largest datagram decodePacket accepts. Real DHCP messages fit an
 * Ethernet frame (1500 bytes less headers); option 57 could announce up to
 * 65535, but nothing a boot client sends comes near this bound.
 */
export const MAX_PACKET_SIZE = 4096;

/** A decoded DHCP (or BOOTP) message. */
export interface DhcpPacket {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** The whole 16-byte chaddr field; the hardware address is its first `hlen` bytes. */
  chaddr: Buffer;
  /** Empty when the field is overloaded with options. */
  sname: string;
  /** Empty when the field is overloaded with options. */
  file: string;
  /** Option code to value, in order of first appearance, instances concatenated (RFC 3396). */
  options: Map<number, Buffer>;
  /** Option 52's value (1 file, 2 sname, 3 both), or 0. */
  overload: number;
}

/** What encodePacket needs; every field but op, xid and chaddr has a zero default. */
export interface DhcpPacketInit {
  op: number;
  htype?: number;
  hlen?: number;
  hops?: number;
  xid: number;
  secs?: number;
  flags?: number;
  ciaddr?: string;
  yiaddr?: string;
  siaddr?: string;
  giaddr?: string;
  /** Up to 16 bytes; zero-filled to the field size. */
  chaddr: Buffer;
  sname?: string;
  file?: string;
  /** Written in this order; codes 0 and 255 are not allowed. */
  options?: Iterable<readonly [number, Buffer]>;
}

export interface EncodeOptions {
  /** Pad the message to at least this many bytes (default BOOTP_MIN_SIZE, 300). */
  minSize?: number;
  /** Refuse to produce more than this many bytes (default: no limit). */
  maxSize?: number;
}

// ---------------------------------------------------------------------------
// Decoding

type OptionArea = 'options' | 'file' | 'sname';

/**
 * Reads options from buf[start, end) into `chunks`. Stops at End (255);
 * reaching the end of the area without End is accepted (several firmware
 * builds pad instead), but an option whose length byte or value would cross
 * the end of the area is an error.
 */
function readOptionArea(buf: Buffer, start: number, end: number, area: OptionArea, chunks: Map<number, Buffer[]>): void {
  let i = start;
  while (i < end) {
    const code = buf[i]!;
    if (code === OPTIONS.PAD) {
      i++;
      continue;
    }
    if (code === OPTIONS.END) return;
    if (i + 1 >= end) {
      throw new DhcpCodecError('DHCP_OPTION_OVERRUN', `option ${code} in ${area} has no length byte`, i);
    }
    const len = buf[i + 1]!;
    if (i + 2 + len > end) {
      throw new DhcpCodecError(
        'DHCP_OPTION_OVERRUN',
        `option ${code} (${optionName(code)}) in ${area} claims ${len} bytes but only ${end - i - 2} remain`,
        i,
      );
    }
    if (code === OPTIONS.OPTION_OVERLOAD && area !== 'options') {
      throw new DhcpCodecError('DHCP_OVERLOAD_LOOP', `option 52 (Option Overload) inside the ${area} field`, i);
    }
    const value = buf.subarray(i + 2, i + 2 + len);
    const list = chunks.get(code);
    if (list) list.push(value);
    else chunks.set(code, [value]);
    i += 2 + len;
  }
}

function fieldString(buf: Buffer, start: number, size: number): string {
  const field = buf.subarray(start, start + size);
  const nul = field.indexOf(0);
  return field.toString('latin1', 0, nul < 0 ? size : nul);
}

/** Decodes one datagram. Throws DhcpCodecError for every malformation. */
export function decodePacket(buf: Buffer, maxSize: number = MAX_PACKET_SIZE): DhcpPacket {
  if (buf.length < MIN_DHCP_SIZE) {
    throw new DhcpCodecError('DHCP_TRUNCATED', `packet of ${buf.length} bytes is shorter than ${MIN_DHCP_SIZE}`);
  }
  if (buf.length > maxSize) {
    throw new DhcpCodecError('DHCP_PACKET_TOO_LARGE', `packet of ${buf.length} bytes exceeds ${maxSize}`);
  }
  if (buf.readUInt32BE(HEADER.cookie) !== MAGIC_COOKIE) {
    throw new DhcpCodecError('DHCP_NO_MAGIC_COOKIE', 'no DHCP magic cookie after the BOOTP header', HEADER.cookie);
  }
  const op = buf[HEADER.op]!;
  if (op !== BOOTREQUEST && op !== BOOTREPLY) {
    throw new DhcpCodecError('DHCP_BAD_OP', `op ${op} is neither BOOTREQUEST nor BOOTREPLY`, HEADER.op);
  }
  const htype = buf[HEADER.htype]!;
  const hlen = buf[HEADER.hlen]!;
  if (hlen > CHADDR_SIZE || (htype === HTYPE_ETHERNET && hlen !== ETHERNET_HLEN)) {
    throw new DhcpCodecError('DHCP_BAD_HLEN', `hlen ${hlen} is not valid for htype ${htype}`, HEADER.hlen);
  }
  const hops = buf[HEADER.hops]!;
  if (hops > MAX_HOPS) {
    throw new DhcpCodecError('DHCP_TOO_MANY_HOPS', `hops ${hops} exceeds ${MAX_HOPS}`, HEADER.hops);
  }

  const chunks = new Map<number, Buffer[]>();
  readOptionArea(buf, HEADER.options, buf.length, 'options', chunks);

  let overload = 0;
  const overloadChunks = chunks.get(OPTIONS.OPTION_OVERLOAD);
  if (overloadChunks) {
    // Two instances concatenate to two bytes, which is caught here too.
    const v = Buffer.concat(overloadChunks);
    if (v.length !== 1 || v[0]! < 1 || v[0]! > 3) {
      throw new DhcpCodecError('DHCP_BAD_OVERLOAD', `option 52 value ${v.toString('hex') || '(empty)'} is not 1, 2 or 3`);
    }
    overload = v[0]!;
  }
  // RFC 2131 section 4.1: options, then 'file', then 'sname'; each read once.
  if (overload & 1) readOptionArea(buf, HEADER.file, HEADER.file + FILE_SIZE, 'file', chunks);
  if (overload & 2) readOptionArea(buf, HEADER.sname, HEADER.sname + SNAME_SIZE, 'sname', chunks);

  const options = new Map<number, Buffer>();
  for (const [code, list] of chunks) options.set(code, list.length === 1 ? list[0]! : Buffer.concat(list));

  return {
    op,
    htype,
    hlen,
    hops,
    xid: buf.readUInt32BE(HEADER.xid),
    secs: buf.readUInt16BE(HEADER.secs),
    flags: buf.readUInt16BE(HEADER.flags),
    ciaddr: formatIpv4(buf.readUInt32BE(HEADER.ciaddr)),
    yiaddr: formatIpv4(buf.readUInt32BE(HEADER.yiaddr)),
    siaddr: formatIpv4(buf.readUInt32BE(HEADER.siaddr)),
    giaddr: formatIpv4(buf.readUInt32BE(HEADER.giaddr)),
    chaddr: Buffer.from(buf.subarray(HEADER.chaddr, HEADER.chaddr + CHADDR_SIZE)),
    sname: overload & 2 ? '' : fieldString(buf, HEADER.sname, SNAME_SIZE),
    file: overload & 1 ? '' : fieldString(buf, HEADER.file, FILE_SIZE),
    options,
    overload,
  };
}

/** The client hardware address as `aa:bb:..` (the first hlen bytes of chaddr). */
export function packetMac(p: Pick<DhcpPacket, 'chaddr' | 'hlen'>): string {
  return formatMac(p.chaddr.subarray(0, Math.min(p.hlen, CHADDR_SIZE)));
}

// ---------------------------------------------------------------------------
// Encoding

function writeIpv4(buf: Buffer, offset: number, text: string | undefined, field: string): void {
  const n = parseIpv4(text ?? '0.0.0.0');
  if (n === undefined) throw new DhcpCodecError('DHCP_BAD_OPTION_VALUE', `${field} is not an IPv4 address: ${text}`);
  buf.writeUInt32BE(n, offset);
}

function writeField(buf: Buffer, offset: number, size: number, text: string | undefined, field: string): void {
  if (!text) return;
  const bytes = Buffer.from(text, 'latin1');
  // Keep one byte for the terminating NUL the field is defined with.
  if (bytes.length > size - 1) {
    throw new DhcpCodecError('DHCP_FIELD_TOO_LONG', `${field} of ${bytes.length} bytes does not fit its ${size}-byte field`);
  }
  bytes.copy(buf, offset);
}

/** Encodes a message. Option values longer than 255 bytes are split into consecutive instances (RFC 3396). */
export function encodePacket(p: DhcpPacketInit, opts: EncodeOptions = {}): Buffer {
  const parts: Buffer[] = [];
  let optionBytes = 0;
  for (const [code, value] of p.options ?? []) {
    if (!Number.isInteger(code) || code <= OPTIONS.PAD || code >= OPTIONS.END) {
      throw new DhcpCodecError('DHCP_BAD_OPTION_VALUE', `option code ${code} cannot be encoded`);
    }
    let off = 0;
    do {
      const len = Math.min(255, value.length - off);
      const head = Buffer.from([code, len]);
      parts.push(head, value.subarray(off, off + len));
      optionBytes += 2 + len;
      off += len;
    } while (off < value.length);
  }
  const body = MIN_DHCP_SIZE + optionBytes + 1;
  const total = Math.max(body, opts.minSize ?? BOOTP_MIN_SIZE);
  if (opts.maxSize !== undefined && total > opts.maxSize) {
    throw new DhcpCodecError('DHCP_REPLY_TOO_LARGE', `message of ${total} bytes exceeds the client's limit of ${opts.maxSize}`);
  }
  const buf = Buffer.alloc(total);
  buf[HEADER.op] = p.op;
  buf[HEADER.htype] = p.htype ?? HTYPE_ETHERNET;
  buf[HEADER.hlen] = p.hlen ?? ETHERNET_HLEN;
  buf[HEADER.hops] = p.hops ?? 0;
  buf.writeUInt32BE(p.xid >>> 0, HEADER.xid);
  buf.writeUInt16BE((p.secs ?? 0) & 0xffff, HEADER.secs);
  buf.writeUInt16BE((p.flags ?? 0) & 0xffff, HEADER.flags);
  writeIpv4(buf, HEADER.ciaddr, p.ciaddr, 'ciaddr');
  writeIpv4(buf, HEADER.yiaddr, p.yiaddr, 'yiaddr');
  writeIpv4(buf, HEADER.siaddr, p.siaddr, 'siaddr');
  writeIpv4(buf, HEADER.giaddr, p.giaddr, 'giaddr');
  if (p.chaddr.length > CHADDR_SIZE) {
    throw new DhcpCodecError('DHCP_FIELD_TOO_LONG', `chaddr of ${p.chaddr.length} bytes exceeds ${CHADDR_SIZE}`);
  }
  p.chaddr.copy(buf, HEADER.chaddr);
  writeField(buf, HEADER.sname, SNAME_SIZE, p.sname, 'sname');
  writeField(buf, HEADER.file, FILE_SIZE, p.file, 'file');
  buf.writeUInt32BE(MAGIC_COOKIE, HEADER.cookie);
  let off = HEADER.options;
  for (const part of parts) {
    part.copy(buf, off);
    off += part.length;
  }
  buf[off] = OPTIONS.END;
  return buf;
}

// ---------------------------------------------------------------------------
// Encapsulated options (43, 82, 175): code, length, value; pad and end allowed.

/** Decodes a block of sub-options. Instances of one code are concatenated. */
export function decodeEncapsulated(buf: Buffer, what = 'encapsulated options'): Map<number, Buffer> {
  const chunks = new Map<number, Buffer[]>();
  let i = 0;
  while (i < buf.length) {
    const code = buf[i]!;
    if (code === 0) {
      i++;
      continue;
    }
    if (code === 255) break;
    if (i + 1 >= buf.length) throw new DhcpCodecError('DHCP_ENCAPSULATED_MALFORMED', `${what}: sub-option ${code} has no length byte`, i);
    const len = buf[i + 1]!;
    if (i + 2 + len > buf.length) {
      throw new DhcpCodecError('DHCP_ENCAPSULATED_MALFORMED', `${what}: sub-option ${code} claims ${len} bytes, ${buf.length - i - 2} remain`, i);
    }
    const v = buf.subarray(i + 2, i + 2 + len);
    const list = chunks.get(code);
    if (list) list.push(v);
    else chunks.set(code, [v]);
    i += 2 + len;
  }
  const out = new Map<number, Buffer>();
  for (const [code, list] of chunks) out.set(code, list.length === 1 ? list[0]! : Buffer.concat(list));
  return out;
}

/**
 * Encodes sub-options. `end` appends the End sub-option (255): the PXE
 * specification terminates option 43 with it; iPXE's own option blocks do too.
 */
export function encodeEncapsulated(entries: Iterable<readonly [number, Buffer]>, end = false): Buffer {
  const parts: Buffer[] = [];
  for (const [code, value] of entries) {
    if (!Number.isInteger(code) || code <= 0 || code >= 255) {
      throw new DhcpCodecError('DHCP_BAD_OPTION_VALUE', `sub-option code ${code} cannot be encoded`);
    }
    if (value.length > 255) throw new DhcpCodecError('DHCP_BAD_OPTION_VALUE', `sub-option ${code} is longer than 255 bytes`);
    parts.push(Buffer.from([code, value.length]), value);
  }
  if (end) parts.push(Buffer.from([255]));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------
// Typed option values

export type OptionValue =
  | string
  | string[]
  | Array<[string, string]>
  | number
  | number[]
  | boolean
  | Buffer
  | Map<number, Buffer>;

function bad(code: number, why: string): DhcpCodecError {
  return new DhcpCodecError('DHCP_BAD_OPTION_VALUE', `option ${code} (${optionName(code)}): ${why}`);
}

function needLength(code: number, v: Buffer, ok: boolean, expected: string): void {
  if (!ok) throw bad(code, `length ${v.length}, expected ${expected}`);
}

/** Strings in options carry no NUL (RFC 2132 section 2), but some clients add one; it is dropped. */
function optionString(v: Buffer): string {
  let end = v.length;
  while (end > 0 && v[end - 1] === 0) end--;
  return v.toString('latin1', 0, end);
}

/** Decodes an option's value according to its format (constants OPTION_FORMATS). */
export function decodeOptionValue(code: number, v: Buffer): OptionValue {
  switch (optionFormat(code)) {
    case 'ipv4':
      needLength(code, v, v.length === 4, '4');
      return formatIpv4(v.readUInt32BE(0));
    case 'ipv4-list': {
      needLength(code, v, v.length >= 4 && v.length % 4 === 0, 'a non-zero multiple of 4');
      const out: string[] = [];
      for (let i = 0; i < v.length; i += 4) out.push(formatIpv4(v.readUInt32BE(i)));
      return out;
    }
    case 'ipv4-pairs': {
      needLength(code, v, v.length >= 8 && v.length % 8 === 0, 'a non-zero multiple of 8');
      const out: Array<[string, string]> = [];
      for (let i = 0; i < v.length; i += 8) out.push([formatIpv4(v.readUInt32BE(i)), formatIpv4(v.readUInt32BE(i + 4))]);
      return out;
    }
    case 'u8':
      needLength(code, v, v.length === 1, '1');
      return v[0]!;
    case 'flag':
      needLength(code, v, v.length === 1, '1');
      if (v[0]! > 1) throw bad(code, `flag value ${v[0]} is neither 0 nor 1`);
      return v[0] === 1;
    case 'u16':
      needLength(code, v, v.length === 2, '2');
      return v.readUInt16BE(0);
    case 'u32':
      needLength(code, v, v.length === 4, '4');
      return v.readUInt32BE(0);
    case 'i32':
      needLength(code, v, v.length === 4, '4');
      return v.readInt32BE(0);
    case 'u8-list':
      needLength(code, v, v.length >= 1, 'at least 1');
      return [...v];
    case 'u16-list': {
      needLength(code, v, v.length >= 2 && v.length % 2 === 0, 'a non-zero multiple of 2');
      const out: number[] = [];
      for (let i = 0; i < v.length; i += 2) out.push(v.readUInt16BE(i));
      return out;
    }
    case 'string':
      needLength(code, v, v.length >= 1, 'at least 1');
      return optionString(v);
    case 'encapsulated':
      return decodeEncapsulated(v, `option ${code} (${optionName(code)})`);
    case 'bytes':
      return Buffer.from(v);
  }
}

function isStringArray(x: unknown): x is string[] {
  return Array.isArray(x) && x.every((e) => typeof e === 'string');
}

function uint(code: number, value: unknown, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    throw bad(code, `${String(value)} is not an integer in 0..${max}`);
  }
  return value;
}

function ipv4Bytes(code: number, text: unknown): Buffer {
  const n = typeof text === 'string' ? parseIpv4(text) : undefined;
  if (n === undefined) throw bad(code, `${String(text)} is not an IPv4 address`);
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
}

/** Encodes a typed value for an option according to its format. */
export function encodeOptionValue(code: number, value: OptionValue): Buffer {
  switch (optionFormat(code)) {
    case 'ipv4':
      return ipv4Bytes(code, value);
    case 'ipv4-list':
      if (!isStringArray(value) || value.length === 0) throw bad(code, 'expected a non-empty list of addresses');
      return Buffer.concat(value.map((a) => ipv4Bytes(code, a)));
    case 'ipv4-pairs':
      if (!Array.isArray(value) || value.length === 0) throw bad(code, 'expected a non-empty list of address pairs');
      return Buffer.concat(
        (value as unknown[]).map((pair) => {
          if (!isStringArray(pair) || pair.length !== 2) throw bad(code, 'expected address pairs');
          return Buffer.concat([ipv4Bytes(code, pair[0]), ipv4Bytes(code, pair[1])]);
        }),
      );
    case 'u8':
      return Buffer.from([uint(code, value, 0xff)]);
    case 'flag':
      if (typeof value !== 'boolean') throw bad(code, 'expected a boolean');
      return Buffer.from([value ? 1 : 0]);
    case 'u16': {
      const b = Buffer.alloc(2);
      b.writeUInt16BE(uint(code, value, 0xffff), 0);
      return b;
    }
    case 'u32': {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(uint(code, value, 0xffffffff), 0);
      return b;
    }
    case 'i32': {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < -0x80000000 || value > 0x7fffffff) {
        throw bad(code, `${String(value)} is not a 32-bit signed integer`);
      }
      const b = Buffer.alloc(4);
      b.writeInt32BE(value, 0);
      return b;
    }
    case 'u8-list':
      if (!Array.isArray(value) || value.length === 0) throw bad(code, 'expected a non-empty list');
      return Buffer.from((value as unknown[]).map((x) => uint(code, x, 0xff)));
    case 'u16-list': {
      if (!Array.isArray(value) || value.length === 0) throw bad(code, 'expected a non-empty list');
      const b = Buffer.alloc(value.length * 2);
      (value as unknown[]).forEach((x, i) => b.writeUInt16BE(uint(code, x, 0xffff), i * 2));
      return b;
    }
    case 'string':
      if (typeof value !== 'string' || value.length === 0) throw bad(code, 'expected a non-empty string');
      return Buffer.from(value, 'latin1');
    case 'encapsulated':
      if (!(value instanceof Map)) throw bad(code, 'expected a map of sub-options');
      return encodeEncapsulated(value);
    case 'bytes':
      if (!Buffer.isBuffer(value)) throw bad(code, 'expected bytes');
      return value;
  }
}

// ---------------------------------------------------------------------------
// What a client's request says, read and validated once.

export interface NetworkInterfaceId {
  /** 1 = UNDI (RFC 4578 section 2.2). */
  type: number;
  major: number;
  minor: number;
}

export interface PxeBootItem {
  type: number;
  layer: number;
}

/** The request fields and options the server and the boot policy act on. */
export interface DhcpRequestInfo {
  /** Undefined for a BOOTP request (no option 53). */
  messageType: number | undefined;
  mac: string;
  /**
   * The client's identity for leases (RFC 2131 section 4.2): option 61 as
   * hex, or htype followed by chaddr, which is what a client sending the
   * usual type-1 identifier would send, so both forms name the same client.
   */
  clientKey: string;
  requestedAddress?: string;
  serverIdentifier?: string;
  requestedLeaseSeconds?: number;
  parameterRequestList: number[];
  /** Option 57, never below 576 (RFC 2132 section 9.10). */
  maxMessageSize?: number;
  vendorClass?: string;
  /** Option 77: RFC 3004 instances, or the bare string iPXE sends. */
  userClasses: string[];
  hostName?: string;
  /** Option 93; `arch` is its first entry, or the Arch field of a PXEClient/HTTPClient vendor class. */
  architectures: number[];
  arch?: number;
  interfaceId?: NetworkInterfaceId;
  /** Option 97 as sent (type 0 and a 16-byte GUID), echoed by proxyDHCP. */
  machineIdentifier?: Buffer;
  /** Option 43 sub-options, decoded only for PXEClient / HTTPClient vendor classes. */
  vendorOptions?: Map<number, Buffer>;
  pxeBootItem?: PxeBootItem;
  /** Option 175 sub-options (present only when iPXE sent them). */
  ipxeOptions?: Map<number, Buffer>;
  /** User class iPXE or option 175 present: the client already runs iPXE. */
  isIpxe: boolean;
  isPxeClient: boolean;
  isHttpClient: boolean;
  /** Option 82 exactly as the relay agent sent it, to be echoed (RFC 3046 section 2.2). */
  relayAgentInformation?: Buffer;
  /** Option 118 (RFC 3011), or sub-option 82.5 (RFC 3527). */
  subnetSelection?: string;
}

/** RFC 3004 section 4: one or more (length, data) instances; otherwise the bare value. */
export function parseUserClass(v: Buffer): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < v.length) {
    const len = v[i]!;
    if (len === 0 || i + 1 + len > v.length) return [optionString(v)];
    out.push(v.toString('latin1', i + 1, i + 1 + len));
    i += 1 + len;
  }
  return out.length > 0 ? out : [optionString(v)];
}

const ARCH_IN_CLASS = /^(?:PXEClient|HTTPClient):Arch:(\d{5})/;

function getOption(p: DhcpPacket, code: number): Buffer | undefined {
  return p.options.get(code);
}

/**
 * Reads what a request says. Throws DhcpCodecError when an option the server
 * acts on is malformed (wrong length, unknown message type, broken
 * encapsulation); options it only carries are not inspected.
 */
export function readRequestInfo(p: DhcpPacket): DhcpRequestInfo {
  const typeBuf = getOption(p, OPTIONS.DHCP_MESSAGE_TYPE);
  let messageType: number | undefined;
  if (typeBuf) {
    messageType = decodeOptionValue(OPTIONS.DHCP_MESSAGE_TYPE, typeBuf) as number;
    if (messageType < MESSAGE_TYPES.DHCPDISCOVER || messageType > MESSAGE_TYPES.DHCPTLS) {
      throw new DhcpCodecError('DHCP_BAD_MESSAGE_TYPE', `message type ${messageType} is not defined`);
    }
  }
  const mac = packetMac(p);
  const idBuf = getOption(p, OPTIONS.CLIENT_IDENTIFIER);
  if (idBuf && idBuf.length < 2) throw bad(OPTIONS.CLIENT_IDENTIFIER, 'shorter than 2 bytes (RFC 2132 section 9.14)');
  const clientKey = idBuf
    ? idBuf.toString('hex')
    : p.htype.toString(16).padStart(2, '0') + p.chaddr.subarray(0, p.hlen).toString('hex');

  const info: DhcpRequestInfo = {
    messageType,
    mac,
    clientKey,
    parameterRequestList: [],
    userClasses: [],
    architectures: [],
    isIpxe: false,
    isPxeClient: false,
    isHttpClient: false,
  };

  const str = (code: number): string | undefined => {
    const v = getOption(p, code);
    return v && v.length > 0 ? (decodeOptionValue(code, v) as string) : undefined;
  };
  const ip = (code: number): string | undefined => {
    const v = getOption(p, code);
    return v ? (decodeOptionValue(code, v) as string) : undefined;
  };

  info.requestedAddress = ip(OPTIONS.REQUESTED_IP_ADDRESS);
  info.serverIdentifier = ip(OPTIONS.SERVER_IDENTIFIER);
  const lease = getOption(p, OPTIONS.IP_ADDRESS_LEASE_TIME);
  if (lease) info.requestedLeaseSeconds = decodeOptionValue(OPTIONS.IP_ADDRESS_LEASE_TIME, lease) as number;
  const prl = getOption(p, OPTIONS.PARAMETER_REQUEST_LIST);
  if (prl) info.parameterRequestList = [...prl];
  const mms = getOption(p, OPTIONS.MAXIMUM_DHCP_MESSAGE_SIZE);
  if (mms) {
    const n = decodeOptionValue(OPTIONS.MAXIMUM_DHCP_MESSAGE_SIZE, mms) as number;
    info.maxMessageSize = Math.max(n, MIN_MAX_MESSAGE_SIZE);
  }
  info.vendorClass = str(OPTIONS.VENDOR_CLASS_IDENTIFIER);
  info.hostName = str(OPTIONS.HOST_NAME);
  const uc = getOption(p, OPTIONS.USER_CLASS);
  if (uc && uc.length > 0) info.userClasses = parseUserClass(uc);

  const archBuf = getOption(p, OPTIONS.CLIENT_SYSTEM_ARCHITECTURE_TYPE);
  if (archBuf) info.architectures = decodeOptionValue(OPTIONS.CLIENT_SYSTEM_ARCHITECTURE_TYPE, archBuf) as number[];
  const vc = info.vendorClass ?? '';
  info.isPxeClient = vc.startsWith(VENDOR_CLASS.PXE_CLIENT);
  info.isHttpClient = vc.startsWith(VENDOR_CLASS.HTTP_CLIENT);
  if (info.architectures.length > 0) info.arch = info.architectures[0];
  else {
    const m = ARCH_IN_CLASS.exec(vc);
    if (m) info.arch = Number(m[1]);
  }

  const ndi = getOption(p, OPTIONS.CLIENT_NETWORK_INTERFACE_IDENTIFIER);
  if (ndi) {
    if (ndi.length !== 3) throw bad(OPTIONS.CLIENT_NETWORK_INTERFACE_IDENTIFIER, `length ${ndi.length}, expected 3`);
    info.interfaceId = { type: ndi[0]!, major: ndi[1]!, minor: ndi[2]! };
  }
  const guid = getOption(p, OPTIONS.CLIENT_MACHINE_IDENTIFIER);
  if (guid) {
    // RFC 4578 section 2.3: type 0 and 16 bytes. Anything else is still echoed, but bounded.
    if (guid.length < 1 || guid.length > 64) throw bad(OPTIONS.CLIENT_MACHINE_IDENTIFIER, `length ${guid.length}`);
    info.machineIdentifier = Buffer.from(guid);
  }

  const v43 = getOption(p, OPTIONS.VENDOR_SPECIFIC_INFORMATION);
  if (v43 && (info.isPxeClient || info.isHttpClient)) {
    info.vendorOptions = decodeEncapsulated(v43, 'option 43 (PXE vendor options)');
    const item = info.vendorOptions.get(PXE_VENDOR_OPTIONS.PXE_BOOT_ITEM);
    if (item) {
      if (item.length !== 4) throw new DhcpCodecError('DHCP_ENCAPSULATED_MALFORMED', `PXE_BOOT_ITEM of ${item.length} bytes, expected 4`);
      info.pxeBootItem = { type: item.readUInt16BE(0), layer: item.readUInt16BE(2) };
    }
  }
  const v175 = getOption(p, OPTIONS.IPXE_ENCAPSULATED);
  if (v175) info.ipxeOptions = decodeEncapsulated(v175, 'option 175 (iPXE)');
  info.isIpxe = info.ipxeOptions !== undefined || info.userClasses.includes(IPXE_USER_CLASS);

  const v82 = getOption(p, OPTIONS.RELAY_AGENT_INFORMATION);
  if (v82) {
    const sub = decodeEncapsulated(v82, 'option 82 (relay agent information)');
    info.relayAgentInformation = Buffer.from(v82);
    const link = sub.get(5);
    if (link) {
      if (link.length !== 4) throw new DhcpCodecError('DHCP_ENCAPSULATED_MALFORMED', 'link selection sub-option is not 4 bytes');
      info.subnetSelection = formatIpv4(link.readUInt32BE(0));
    }
  }
  const sel = ip(OPTIONS.SUBNET_SELECTION);
  if (sel) info.subnetSelection = sel;
  return info;
}
