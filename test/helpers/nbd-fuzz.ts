/**
 * Fuzzing helpers for the NBD server: a seeded random source, generators of
 * valid client byte streams (handshake plus requests) and of mutations of
 * them, and an in-memory duplex stream to run a session on without TCP.
 */
import { Duplex } from 'node:stream';
import { COMMAND_FLAGS, COMMANDS, INFO_TYPES, OPTIONS } from '../../src/protocols/nbd/constants.js';
import { encodeClientFlags, encodeInfoRequest, encodeMetaContextRequest, encodeOption, encodeRequestHeader } from '../../src/protocols/nbd/codec.js';

/** xorshift128+ on two 32-bit halves: fast, seeded, reproducible. */
export class Rng {
  private a: number;
  private b: number;
  constructor(seed: number) {
    this.a = (seed ^ 0x9e3779b9) >>> 0 || 1;
    this.b = (Math.imul(seed, 0x85ebca6b) ^ 0xc2b2ae35) >>> 0 || 2;
  }
  u32(): number {
    let s1 = this.a;
    const s0 = this.b;
    this.a = s0;
    s1 ^= s1 << 23;
    s1 ^= s1 >>> 17;
    s1 ^= s0;
    s1 ^= s0 >>> 26;
    this.b = s1 >>> 0;
    return (this.a + this.b) >>> 0;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return n <= 0 ? 0 : Math.floor((this.u32() / 0x1_0000_0000) * n);
  }
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}

export interface FuzzTarget {
  /** Export names to use, with their sizes. */
  exports: { name: string; size: number }[];
  /** Largest write payload to generate (keep small: speed). */
  maxWrite: number;
}

/** A generated stream: its frames, kept apart so mutations can work on frame boundaries. */
export interface GeneratedSession {
  frames: Buffer[];
  /** Index of the first transmission frame (frames before it are the handshake). */
  transmissionStart: number;
}

const INTERESTING_U32 = [0, 1, 2, 3, 7, 0xff, 0x100, 0x1000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0x80000001, 0xfffffffe, 0xffffffff, 28, 4096, 65536, 1 << 25];

/**
 * A well-formed session: client flags, some options (in a legal or
 * deliberately odd order), GO or EXPORT_NAME, then `requests` requests with
 * random commands, flags, offsets and lengths (mostly in range), writes
 * carrying their data, sometimes ending with NBD_CMD_DISC.
 */
export function generateSession(rng: Rng, target: FuzzTarget, requests: number): GeneratedSession {
  const frames: Buffer[] = [];
  const exp = rng.pick(target.exports);
  const name = rng.chance(0.05) ? rng.pick(['nope', '', 'x'.repeat(300)]) : exp.name;
  frames.push(encodeClientFlags(rng.chance(0.95) ? rng.pick([1, 3, 3, 3, 0, 2]) : rng.u32()));
  const optionCount = rng.int(6);
  for (let i = 0; i < optionCount; i++) {
    switch (rng.int(9)) {
      case 0:
        frames.push(encodeOption(OPTIONS.NBD_OPT_STRUCTURED_REPLY));
        break;
      case 1:
        frames.push(encodeOption(OPTIONS.NBD_OPT_LIST));
        break;
      case 2:
        frames.push(encodeOption(OPTIONS.NBD_OPT_INFO, encodeInfoRequest({ name, infoRequests: [INFO_TYPES.NBD_INFO_NAME, INFO_TYPES.NBD_INFO_BLOCK_SIZE, rng.int(8)] })));
        break;
      case 3:
        frames.push(encodeOption(OPTIONS.NBD_OPT_LIST_META_CONTEXT, encodeMetaContextRequest({ name, queries: rng.chance(0.5) ? [] : ['base:', 'qemu:x'] })));
        break;
      case 4:
      case 5:
        frames.push(encodeOption(OPTIONS.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ name, queries: ['base:allocation'] })));
        break;
      case 6:
        frames.push(encodeOption(rng.int(20), rng.bytes(rng.int(40))));
        break;
      case 7:
        frames.push(encodeOption(OPTIONS.NBD_OPT_STARTTLS));
        break;
      default:
        frames.push(encodeOption(OPTIONS.NBD_OPT_STRUCTURED_REPLY));
        frames.push(encodeOption(OPTIONS.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ name, queries: ['base:allocation'] })));
    }
  }
  if (rng.chance(0.15)) frames.push(encodeOption(OPTIONS.NBD_OPT_EXPORT_NAME, Buffer.from(name)));
  else frames.push(encodeOption(OPTIONS.NBD_OPT_GO, encodeInfoRequest({ name, infoRequests: [INFO_TYPES.NBD_INFO_BLOCK_SIZE] })));
  const transmissionStart = frames.length;
  for (let i = 0; i < requests; i++) frames.push(generateRequest(rng, exp.size, target.maxWrite, BigInt(i + 1)));
  if (rng.chance(0.3)) frames.push(encodeRequestHeader({ type: COMMANDS.NBD_CMD_DISC, cookie: 0n, offset: 0, length: 0 }));
  return { frames, transmissionStart };
}

const COMMAND_WEIGHTS = [
  COMMANDS.NBD_CMD_READ, COMMANDS.NBD_CMD_READ, COMMANDS.NBD_CMD_READ,
  COMMANDS.NBD_CMD_WRITE, COMMANDS.NBD_CMD_WRITE, COMMANDS.NBD_CMD_WRITE,
  COMMANDS.NBD_CMD_FLUSH, COMMANDS.NBD_CMD_TRIM, COMMANDS.NBD_CMD_CACHE,
  COMMANDS.NBD_CMD_WRITE_ZEROES, COMMANDS.NBD_CMD_WRITE_ZEROES,
  COMMANDS.NBD_CMD_BLOCK_STATUS, COMMANDS.NBD_CMD_BLOCK_STATUS, COMMANDS.NBD_CMD_RESIZE,
];
const FLAG_VALUES = [0, 0, 0, 0, COMMAND_FLAGS.NBD_CMD_FLAG_FUA, COMMAND_FLAGS.NBD_CMD_FLAG_NO_HOLE, COMMAND_FLAGS.NBD_CMD_FLAG_DF, COMMAND_FLAGS.NBD_CMD_FLAG_REQ_ONE, COMMAND_FLAGS.NBD_CMD_FLAG_FAST_ZERO, 0x13];

/** One request: a header, and for a write its data. */
export function generateRequest(rng: Rng, size: number, maxWrite: number, cookie: bigint): Buffer {
  const type = rng.chance(0.03) ? rng.int(0x10000) : rng.pick(COMMAND_WEIGHTS);
  const flags = rng.chance(0.05) ? rng.int(0x10000) : rng.pick(FLAG_VALUES);
  let length: number;
  if (type === COMMANDS.NBD_CMD_WRITE) length = rng.int(maxWrite + 1);
  else if (rng.chance(0.05)) length = rng.pick(INTERESTING_U32);
  else if (rng.chance(0.8)) length = rng.int(maxWrite + 1);
  else length = rng.int(Math.min(size, 256 * 1024) + 1);
  let offset: number | bigint;
  const r = rng.int(100);
  if (r < 85) offset = rng.int(Math.max(1, size - length + 1));
  else if (r < 92) offset = size - rng.int(4);
  else if (r < 96) offset = BigInt(rng.u32()) * 0x1_0000_0000n + BigInt(rng.u32());
  else offset = rng.pick([0, size, 2 ** 53 - 1]);
  if (type === COMMANDS.NBD_CMD_FLUSH && rng.chance(0.8)) {
    offset = 0;
    length = 0;
  }
  const header = encodeRequestHeader({ type, flags, cookie, offset, length });
  if (type !== COMMANDS.NBD_CMD_WRITE || length === 0) return header;
  return Buffer.concat([header, rng.bytes(Math.min(length, 64)), Buffer.alloc(Math.max(0, length - 64), rng.int(256))]);
}

export const MUTATIONS = ['none', 'bitflip', 'interesting', 'truncate', 'insert', 'delete', 'duplicate', 'swap', 'garbageFrame', 'splitLength'] as const;
export type Mutation = (typeof MUTATIONS)[number];

/** Applies one mutation to a session's bytes; frame-aware ones use the frame list. */
export function mutate(rng: Rng, s: GeneratedSession, kind: Mutation): Buffer {
  const frames = s.frames.slice();
  switch (kind) {
    case 'duplicate': {
      const i = rng.int(frames.length);
      frames.splice(i, 0, frames[i]!);
      return Buffer.concat(frames);
    }
    case 'swap': {
      const i = rng.int(frames.length);
      const j = rng.int(frames.length);
      [frames[i], frames[j]] = [frames[j]!, frames[i]!];
      return Buffer.concat(frames);
    }
    case 'garbageFrame': {
      const i = 1 + rng.int(frames.length);
      const g = rng.chance(0.5) ? rng.bytes(rng.int(64)) : encodeOption(rng.u32(), rng.bytes(rng.int(32)));
      frames.splice(i, 0, g);
      return Buffer.concat(frames);
    }
    default:
      break;
  }
  const bytes = Buffer.from(Buffer.concat(frames));
  if (bytes.length === 0) return bytes;
  switch (kind) {
    case 'none':
      return bytes;
    case 'bitflip': {
      const n = 1 + rng.int(8);
      for (let i = 0; i < n; i++) bytes[rng.int(bytes.length)]! ^= 1 << rng.int(8);
      return bytes;
    }
    case 'interesting': {
      const n = 1 + rng.int(3);
      for (let i = 0; i < n; i++) {
        const at = rng.int(Math.max(1, bytes.length - 4));
        if (at + 4 <= bytes.length) bytes.writeUInt32BE(rng.pick(INTERESTING_U32), at);
      }
      return bytes;
    }
    case 'truncate':
      return bytes.subarray(0, rng.int(bytes.length));
    case 'insert': {
      const at = rng.int(bytes.length);
      return Buffer.concat([bytes.subarray(0, at), rng.bytes(1 + rng.int(16)), bytes.subarray(at)]);
    }
    case 'delete': {
      const at = rng.int(bytes.length);
      return Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1 + rng.int(16))]);
    }
    case 'splitLength': {
      // Make a length field lie by a little: the usual off-by-N of broken clients.
      const at = rng.int(Math.max(1, bytes.length - 4));
      if (at + 4 <= bytes.length) bytes.writeUInt32BE((bytes.readUInt32BE(at) + rng.pick([1, -1, 4, -4, 8])) >>> 0, at);
      return bytes;
    }
  }
}

/**
 * The server's end of an in-memory connection. push() feeds client bytes;
 * what the server writes is counted (and dropped). Writes complete at once
 * or, when `slowWrites`, on a later turn, so the server sees a write
 * buffer that fills.
 */
export class MemoryStream extends Duplex {
  bytesOut = 0;
  writes = 0;
  constructor(private readonly slowWrites: boolean) {
    super({ allowHalfOpen: true, highWaterMark: 16 * 1024 });
  }
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.bytesOut += chunk.length;
    this.writes++;
    if (this.slowWrites) setImmediate(cb);
    else cb();
  }
  override _final(cb: (err?: Error | null) => void): void {
    cb();
  }
}
