/**
 * TFTP packet codec (RFC 1350 section 5, RFC 2347 for options and OACK).
 * Pure: bytes in, objects out, and back; no sockets, clocks or loggers.
 * UDP delivers whole datagrams, so there is no incremental decoder: one
 * datagram is one packet. Malformed input raises TftpCodecError with a
 * stable code; the server maps it to an ERROR packet (or silence) in
 * errors.ts.
 */
import { DATA_HEADER_SIZE, MODES, OPCODES, type Mode } from './constants.js';
import { TftpCodecError } from './errors.js';

export interface TftpOption {
  /** Lower-cased: RFC 2347 option names are case-insensitive. */
  name: string;
  /** As sent; the meaning of a value is the negotiation's business (options.ts). */
  value: string;
}

export interface RequestPacket {
  opcode: typeof OPCODES.RRQ | typeof OPCODES.WRQ;
  filename: string;
  /** Lower-cased. */
  mode: Mode;
  options: TftpOption[];
}
export interface DataPacket {
  opcode: typeof OPCODES.DATA;
  block: number;
  /** A view into the datagram, not a copy. */
  data: Buffer;
}
export interface AckPacket {
  opcode: typeof OPCODES.ACK;
  block: number;
}
export interface ErrorPacket {
  opcode: typeof OPCODES.ERROR;
  code: number;
  message: string;
}
export interface OackPacket {
  opcode: typeof OPCODES.OACK;
  options: TftpOption[];
}
export type TftpPacket = RequestPacket | DataPacket | AckPacket | ErrorPacket | OackPacket;

const utf8 = new TextDecoder('utf-8', { fatal: true });
const KNOWN_MODES = new Set<string>(Object.values(MODES));

/** Reads NUL-terminated strings from a datagram. */
class Fields {
  pos: number;
  constructor(private readonly buf: Buffer, start: number) {
    this.pos = start;
  }
  get done(): boolean {
    return this.pos >= this.buf.length;
  }
  /** True when nothing but NUL padding is left (some ROMs pad their requests). */
  onlyPadding(): boolean {
    for (let i = this.pos; i < this.buf.length; i++) if (this.buf[i] !== 0) return false;
    return true;
  }
  /** The raw bytes up to the next NUL, which is consumed. */
  next(what: string): Buffer {
    const end = this.buf.indexOf(0, this.pos);
    if (end < 0) throw new TftpCodecError('TFTP_MISSING_NUL', `${what} is not NUL-terminated`, this.pos);
    const field = this.buf.subarray(this.pos, end);
    this.pos = end + 1;
    return field;
  }
}

/** Decodes one datagram. Throws TftpCodecError on malformed input. */
export function decodePacket(buf: Buffer): TftpPacket {
  if (buf.length < 2) throw new TftpCodecError('TFTP_TRUNCATED', `a ${buf.length}-byte datagram has no opcode`, 0);
  const opcode = buf.readUInt16BE(0);
  switch (opcode) {
    case OPCODES.RRQ:
    case OPCODES.WRQ:
      return decodeRequest(buf, opcode);
    case OPCODES.DATA:
      if (buf.length < DATA_HEADER_SIZE) throw new TftpCodecError('TFTP_TRUNCATED', 'DATA without a block number', 2);
      return { opcode, block: buf.readUInt16BE(2), data: buf.subarray(DATA_HEADER_SIZE) };
    case OPCODES.ACK:
      // Bytes after the block number are ignored: nothing in them has a meaning.
      if (buf.length < 4) throw new TftpCodecError('TFTP_TRUNCATED', 'ACK without a block number', 2);
      return { opcode, block: buf.readUInt16BE(2) };
    case OPCODES.ERROR: {
      if (buf.length < 4) throw new TftpCodecError('TFTP_TRUNCATED', 'ERROR without an error code', 2);
      const f = new Fields(buf, 4);
      const message = f.next('the error message').toString('latin1');
      return { opcode, code: buf.readUInt16BE(2), message };
    }
    case OPCODES.OACK:
      return { opcode, options: decodeOptions(new Fields(buf, 2)) };
    default:
      throw new TftpCodecError('TFTP_UNKNOWN_OPCODE', `unknown opcode ${opcode}`, 0);
  }
}

function decodeRequest(buf: Buffer, opcode: typeof OPCODES.RRQ | typeof OPCODES.WRQ): RequestPacket {
  const f = new Fields(buf, 2);
  const rawName = f.next('the file name');
  let filename: string;
  try {
    filename = utf8.decode(rawName);
  } catch {
    throw new TftpCodecError('TFTP_BAD_PATH', 'the file name is not valid UTF-8', 2);
  }
  const modeAt = f.pos;
  const mode = f.next('the mode').toString('latin1').toLowerCase();
  if (!KNOWN_MODES.has(mode)) throw new TftpCodecError('TFTP_BAD_MODE', `unknown mode ${JSON.stringify(mode.slice(0, 32))}`, modeAt);
  return { opcode, filename, mode: mode as Mode, options: decodeOptions(f) };
}

/** RFC 2347: name/value pairs, each NUL-terminated, after the mode (or the OACK opcode). */
function decodeOptions(f: Fields): TftpOption[] {
  const options: TftpOption[] = [];
  const seen = new Set<string>();
  while (!f.done && !f.onlyPadding()) {
    const at = f.pos;
    const name = f.next('an option name').toString('latin1').toLowerCase();
    if (name.length === 0) throw new TftpCodecError('TFTP_BAD_OPTION', 'an option has an empty name', at);
    if (f.done) throw new TftpCodecError('TFTP_BAD_OPTION', `option ${JSON.stringify(name.slice(0, 32))} has no value`, f.pos);
    const value = f.next(`the value of option ${JSON.stringify(name.slice(0, 32))}`).toString('latin1');
    if (seen.has(name)) throw new TftpCodecError('TFTP_DUPLICATE_OPTION', `option ${JSON.stringify(name.slice(0, 32))} appears twice`, at);
    seen.add(name);
    options.push({ name, value });
  }
  return options;
}

// ---------------------------------------------------------------- encoders

function checkBlock(block: number): void {
  if (!Number.isInteger(block) || block < 0 || block > 0xffff) throw new TftpCodecError('TFTP_INTERNAL', `block number ${block} is not a 16-bit value`);
}

function checkField(text: string, what: string): Buffer {
  const b = Buffer.from(text, 'utf8');
  if (b.includes(0)) throw new TftpCodecError('TFTP_MISSING_NUL', `${what} contains a NUL byte`);
  return b;
}

function strings(parts: Buffer[], opcode: number): Buffer {
  const len = 2 + parts.reduce((n, p) => n + p.length + 1, 0);
  const out = Buffer.alloc(len);
  out.writeUInt16BE(opcode, 0);
  let pos = 2;
  for (const p of parts) {
    p.copy(out, pos);
    pos += p.length + 1; // the NUL is already there (alloc zero-fills)
  }
  return out;
}

function optionFields(options: readonly TftpOption[]): Buffer[] {
  return options.flatMap((o) => [checkField(o.name, 'an option name'), checkField(o.value, 'an option value')]);
}

export function encodeRequest(opcode: typeof OPCODES.RRQ | typeof OPCODES.WRQ, filename: string, mode: Mode | string, options: readonly TftpOption[] = []): Buffer {
  return strings([checkField(filename, 'the file name'), checkField(mode, 'the mode'), ...optionFields(options)], opcode);
}

export function encodeData(block: number, data: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(DATA_HEADER_SIZE + data.length);
  writeDataHeader(out, 0, block);
  out.set(data, DATA_HEADER_SIZE);
  return out;
}

/** Writes a DATA header (opcode, block) at `offset`: the hot path sends it beside the payload, uncopied. */
export function writeDataHeader(into: Uint8Array, offset: number, block: number): void {
  checkBlock(block);
  into[offset] = 0;
  into[offset + 1] = OPCODES.DATA;
  into[offset + 2] = block >>> 8;
  into[offset + 3] = block & 0xff;
}

export function encodeAck(block: number): Buffer {
  checkBlock(block);
  const out = Buffer.allocUnsafe(4);
  out.writeUInt16BE(OPCODES.ACK, 0);
  out.writeUInt16BE(block, 2);
  return out;
}

/**
 * RFC 1350: ErrMsg is netascii; anything outside printable ASCII is replaced,
 * so a message that quotes the client's bytes stays one clean string.
 */
export function encodeError(code: number, message: string): Buffer {
  if (!Number.isInteger(code) || code < 0 || code > 0xffff) throw new TftpCodecError('TFTP_INTERNAL', `error code ${code} is not a 16-bit value`);
  const text = Buffer.from(message.replace(/[^\x20-\x7e]/g, '?'), 'latin1');
  const out = Buffer.alloc(4 + text.length + 1);
  out.writeUInt16BE(OPCODES.ERROR, 0);
  out.writeUInt16BE(code, 2);
  text.copy(out, 4);
  return out;
}

export function encodeOack(options: readonly TftpOption[]): Buffer {
  return strings(optionFields(options), OPCODES.OACK);
}
