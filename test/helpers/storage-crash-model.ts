/**
 * What may be read back after a crash, sector by sector, for the overlay
 * crash tests (SIGKILL in test/integration/storage-crash.test.ts, simulated
 * power cuts in test/integration/storage-powercut.test.ts).
 *
 * Every sector a test writes carries who wrote it: a header (request id,
 * sector number) and a pseudo-random body derived from both, so a sector
 * read back is identified exactly (or found to be garbage). A request is
 * durable once a flush called after it completed has resolved, or, for a
 * FUA write, once it resolved. For each sector, the values that may be read
 * are: the value after its last durable request (or its value before the
 * test, when none), and the value of every later request touching it. An
 * older value, or garbage, is lost or corrupted data.
 */
import { prng, below } from './prng.js';

export const SECTOR = 512;
/** The value of a sector that reads as zeros. */
export const ZERO = -1;
/** The request id stamped on the base image's patterned sectors. */
export const BASE_ID = 0xfffffffe;
/** Request ids of one round start at round * ROUND_IDS. */
export const ROUND_IDS = 1_000_000;
/** Content seed, fixed so that any sector can be identified in any round. */
const CONTENT_SEED = 0x5eed1234;

const words = new Uint32Array(SECTOR / 4);
const wordBytes = Buffer.from(words.buffer);

/** Fills `out[at..at+512)` with the content request `id` writes to `sector`. */
export function sectorContent(id: number, sector: number, out: Buffer, at: number): void {
  words[0] = id >>> 0;
  words[1] = sector >>> 0;
  words[2] = Math.floor(sector / 2 ** 32);
  let x = (Math.imul(id ^ CONTENT_SEED, 0x9e3779b1) ^ Math.imul(sector + 1, 0x85ebca6b)) >>> 0 || 1;
  for (let i = 3; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  // Little-endian hosts only (the layout is checked by identify() on the same host).
  wordBytes.copy(out, at);
}

const scratch = Buffer.alloc(SECTOR);

/** The request id whose content `buf[at..at+512)` is, ZERO, or undefined for anything else. */
export function identify(buf: Buffer, at: number, sector: number): number | undefined {
  let zero = true;
  for (let i = 0; i < SECTOR; i += 4) {
    if (buf.readUInt32LE(at + i) !== 0) {
      zero = false;
      break;
    }
  }
  if (zero) return ZERO;
  const id = buf.readUInt32LE(at);
  sectorContent(id, sector, scratch, 0);
  return buf.subarray(at, at + SECTOR).equals(scratch) ? id : undefined;
}

export type OpKind = 'write' | 'fua' | 'zero' | 'zeroTrim' | 'trim' | 'flush';

export interface Op {
  id: number;
  kind: OpKind;
  offset: number;
  length: number;
}

export interface Workload {
  /** Byte ranges requests fall in, sector-aligned. */
  windows: { offset: number; length: number }[];
  maxLength: number;
}

/** The i-th request of a round; the child and the checker both call this, so they agree. */
export function* opStream(seed: number, round: number, w: Workload): Generator<Op> {
  const r = prng(seed);
  for (let i = 0; ; i++) {
    const id = round * ROUND_IDS + i;
    const x = r();
    const kind: OpKind = x < 0.5 ? 'write' : x < 0.62 ? 'fua' : x < 0.72 ? 'zero' : x < 0.77 ? 'zeroTrim' : x < 0.88 ? 'trim' : 'flush';
    const win = w.windows[below(r, w.windows.length)]!;
    const sectors = win.length / SECTOR;
    const start = below(r, sectors);
    const count = 1 + below(r, Math.min(sectors - start, w.maxLength / SECTOR));
    yield { id, kind, offset: win.offset + start * SECTOR, length: count * SECTOR };
  }
}

/** Writes the content of a write request into a new buffer. */
export function opData(op: Op): Buffer {
  const buf = Buffer.allocUnsafe(op.length);
  const first = op.offset / SECTOR;
  for (let s = 0; s < op.length / SECTOR; s++) sectorContent(op.id, first + s, buf, s * SECTOR);
  return buf;
}

/** Per-sector history of the requests that touched it, in the order they were applied. */
export class History {
  /** sector -> [id, value, id, value, ...] */
  private readonly events = new Map<number, number[]>();

  constructor(
    private readonly clusterSize: number,
    /** The value of a sector before any recorded request. */
    private readonly initial: (sector: number) => number,
  ) {}

  /** Records a request (requests touching a sector must be recorded in the order the device applies them). */
  record(op: Op): void {
    if (op.kind === 'flush') return;
    let from = op.offset;
    let to = op.offset + op.length;
    if (op.kind === 'trim') {
      // The overlay trims whole clusters only.
      from = Math.ceil(from / this.clusterSize) * this.clusterSize;
      to = Math.floor(to / this.clusterSize) * this.clusterSize;
    }
    const value = op.kind === 'write' || op.kind === 'fua' ? op.id : ZERO;
    for (let s = from / SECTOR; s < to / SECTOR; s++) {
      let list = this.events.get(s);
      if (!list) this.events.set(s, (list = []));
      list.push(op.id, value);
    }
  }

  /** The values sector `s` may hold after a crash, given which requests are durable. */
  admissible(s: number, durable: (id: number) => boolean, issued: (id: number) => boolean): number[] {
    const list = this.events.get(s) ?? [];
    let from = -1;
    for (let i = 0; i < list.length; i += 2) if (durable(list[i]!)) from = i;
    const out: number[] = [from < 0 ? this.initial(s) : list[from + 1]!];
    for (let i = from < 0 ? 0 : from + 2; i < list.length; i += 2) if (issued(list[i]!)) out.push(list[i + 1]!);
    return out;
  }
}

/**
 * Checks `bytes` (the device's contents at `offset`) sector by sector.
 * Returns the problems found (empty when all is well) and the value read at
 * each sector, which the next round takes as its starting point.
 */
export function checkSectors(
  bytes: Buffer,
  offset: number,
  history: History,
  durable: (id: number) => boolean,
  issued: (id: number) => boolean,
): { problems: string[]; values: Map<number, number> } {
  const problems: string[] = [];
  const values = new Map<number, number>();
  for (let at = 0; at < bytes.length; at += SECTOR) {
    const s = (offset + at) / SECTOR;
    const got = identify(bytes, at, s);
    const ok = history.admissible(s, durable, issued);
    if (got === undefined) problems.push(`sector ${s}: garbage (allowed ${ok.join(',')})`);
    else if (!ok.includes(got)) problems.push(`sector ${s}: holds ${got}, allowed ${ok.join(',')}`);
    if (got !== undefined) values.set(s, got);
    if (problems.length > 20) break;
  }
  return { problems, values };
}
