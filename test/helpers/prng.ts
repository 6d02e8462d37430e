/** Deterministic PRNG (mulberry32) for reproducible randomized tests. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An integer in [0, n). */
export function below(r: () => number, n: number): number {
  return Math.floor(r() * n);
}

/** `length` pseudo-random bytes. */
export function randomBytes(r: () => number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  let i = 0;
  for (; i + 4 <= length; i += 4) b.writeUInt32LE((r() * 4294967296) >>> 0, i);
  for (; i < length; i++) b[i] = below(r, 256);
  return b;
}
