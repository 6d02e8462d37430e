/**
 * HTTP Range (RFC 9110 section 14) for boot files. iPXE and curl ask for one
 * range at most; a request for several is answered with the whole file,
 * which the RFC permits.
 */

export type RangeResult =
  | { kind: 'full' }
  | { kind: 'partial'; start: number; end: number } // inclusive end
  | { kind: 'unsatisfiable' };

export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'full' };
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return { kind: 'full' }; // unknown unit, several ranges, or garbage: ignore the header
  const [, a, b] = m;
  if (a === '' && b === '') return { kind: 'full' };
  if (a === '') {
    // suffix: the last N bytes
    const n = Number(b);
    if (!Number.isSafeInteger(n)) return { kind: 'full' };
    if (n === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  if (!Number.isSafeInteger(start)) return { kind: 'full' };
  if (start >= size) return { kind: 'unsatisfiable' };
  let end = b === '' ? size - 1 : Number(b);
  if (!Number.isSafeInteger(end)) end = size - 1;
  if (end < start) return { kind: 'full' }; // invalid range-spec: ignore
  return { kind: 'partial', start, end: Math.min(end, size - 1) };
}
