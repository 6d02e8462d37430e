/**
 * netascii (RFC 1350 section 1, after RFC 764): lines end in CR LF and a
 * bare CR is sent as CR NUL. Only text files are asked for in this mode,
 * so the server translates a whole file in memory, up to a limit, and
 * tsize then reports the exact translated size.
 */
const CR = 0x0d;
const LF = 0x0a;

/** The netascii form of `data`: LF -> CR LF, CR -> CR NUL. */
export function toNetascii(data: Uint8Array): Buffer {
  let extra = 0;
  for (let i = 0; i < data.length; i++) if (data[i] === CR || data[i] === LF) extra++;
  const out = Buffer.allocUnsafe(data.length + extra);
  let j = 0;
  for (let i = 0; i < data.length; i++) {
    const b = data[i]!;
    if (b === LF) {
      out[j++] = CR;
      out[j++] = LF;
    } else if (b === CR) {
      out[j++] = CR;
      out[j++] = 0;
    } else {
      out[j++] = b;
    }
  }
  return out;
}

/** The inverse, for the client and tests: CR LF -> LF, CR NUL -> CR. */
export function fromNetascii(data: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(data.length);
  let j = 0;
  for (let i = 0; i < data.length; i++) {
    const b = data[i]!;
    if (b === CR && i + 1 < data.length && (data[i + 1] === LF || data[i + 1] === 0)) {
      out[j++] = data[i + 1] === LF ? LF : CR;
      i++;
    } else {
      out[j++] = b;
    }
  }
  return out.subarray(0, j);
}
