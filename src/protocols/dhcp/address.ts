/**
 * IPv4 and MAC address helpers. Addresses are handled as unsigned 32-bit
 * numbers inside the pool (cheap to compare, count and iterate) and as
 * dotted quads at every interface (options, events, the lease store).
 */

const DOTTED = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** Parses a dotted quad; returns undefined for anything else (no octal, no short forms). */
export function parseIpv4(text: string): number | undefined {
  const m = DOTTED.exec(text);
  if (!m) return undefined;
  let n = 0;
  for (let i = 1; i <= 4; i++) {
    const part = m[i]!;
    if (part.length > 1 && part[0] === '0') return undefined;
    const v = Number(part);
    if (v > 255) return undefined;
    n = n * 256 + v;
  }
  return n >>> 0;
}

export function formatIpv4(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export function isIpv4(text: string): boolean {
  return parseIpv4(text) !== undefined;
}

export function ipv4ToBuffer(text: string): Buffer {
  const n = parseIpv4(text);
  if (n === undefined) throw new TypeError(`not an IPv4 address: ${text}`);
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
}

export function readIpv4(buf: Buffer, offset: number): string {
  return formatIpv4(buf.readUInt32BE(offset));
}

export function prefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export interface Cidr {
  network: number;
  prefix: number;
  mask: number;
  broadcast: number;
}

/** Parses `10.0.0.0/24`; the address must be the network address itself. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const addr = parseIpv4(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (addr === undefined || !/^\d{1,2}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > 32) return undefined;
  const mask = prefixMask(prefix);
  if (((addr & mask) >>> 0) !== addr) return undefined;
  return { network: addr, prefix, mask, broadcast: (addr | ~mask) >>> 0 };
}

export function cidrContains(c: Cidr, addr: number): boolean {
  return ((addr & c.mask) >>> 0) === c.network;
}

/** `aa:bb:cc:dd:ee:ff`, lower case: the one MAC form used across the project. */
export function formatMac(bytes: Buffer | Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) {
    if (i > 0) s += ':';
    s += bytes[i]!.toString(16).padStart(2, '0');
  }
  return s;
}

const MAC = /^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$/i;

/** Accepts `aa:bb:..`, `AA-BB-..`; returns the canonical form or undefined. */
export function normalizeMac(text: string): string | undefined {
  if (!MAC.test(text)) return undefined;
  return text.toLowerCase().replace(/-/g, ':');
}
