/**
 * CRC-32 as GPT uses it (UEFI 2.10 section 5.3.2: "the 32-bit CRC algorithm
 * of ISO 3309", the reflected 0xEDB88320 polynomial, init and final XOR
 * 0xFFFFFFFF, the same as zlib's crc32). Written here rather than taken from
 * node:zlib because zlib.crc32 only exists from Node 20.15.
 */

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(data: Uint8Array, start = 0, end = data.length): number {
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
