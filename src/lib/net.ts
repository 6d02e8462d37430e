/** MAC and IPv4 helpers shared by the protocols and the catalogue. */

const MAC_RE = /^([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})$/i;

/** `aa:bb:cc:dd:ee:ff` from any of aa:bb.., aa-bb-.., aabbcc.., any case; null if not a MAC. */
export function normalizeMac(text: string): string | null {
  const m = MAC_RE.exec(text.trim());
  if (!m) return null;
  return m.slice(1, 7).join(':').toLowerCase();
}

/** `aabbccddeeff`: the MAC as it appears in export names and file names. */
export function compactMac(mac: string): string {
  return mac.replace(/:/g, '');
}

export function macFromBytes(bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, 6), (b) => b.toString(16).padStart(2, '0')).join(':');
}

export function ipv4ToInt(text: string): number | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return null;
    const v = Number(p);
    if (v > 255) return null;
    n = n * 256 + v;
  }
  return n >>> 0;
}

export function intToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Strips the IPv4-mapped IPv6 prefix Node reports for dual-stack sockets. */
export function plainAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}
