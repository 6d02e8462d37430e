/**
 * The NBD wire format as pure functions: Buffer in, object out, and back.
 * No sockets, clocks or loggers. Both directions are here: the server
 * decodes what clients send and encodes its replies; tests and tools use
 * the other half to play the client.
 *
 * Layouts follow proto.md ("Newstyle negotiation", "Fixed newstyle
 * negotiation", "Option types", "Option reply types", "Request message",
 * "Simple reply message", "Structured reply chunk message", "Structured
 * reply types"). All integers are big-endian.
 *
 * 64-bit values: cookies are opaque and kept as bigint. Offsets and sizes
 * decode to numbers, exact up to Number.MAX_SAFE_INTEGER; a larger wire
 * value decodes to a number above it (inexact), which every range check
 * rejects, so nothing downstream ever sees a wrapped or rounded offset that
 * looks valid. Encoders accept number or bigint.
 */
import {
  INFO_TYPES,
  MAGICS,
  NBD_MAX_STRING_LENGTH,
  NBD_REPLY_TYPE_FLAG_ERROR,
  SIZES,
  STRUCTURED_REPLY_TYPES,
} from './constants.js';
import { NbdError, optionInvalid } from './errors.js';

const TWO_32 = 0x1_0000_0000;
const MAX_U32 = 0xffffffff;
const MAX_U64 = 0xffffffffffffffffn;
const utf8 = new TextDecoder('utf-8', { fatal: true });

// ---------------------------------------------------------------------------
// 64-bit helpers

/** Reads a u64 as a number: exact when safe, otherwise some value above MAX_SAFE_INTEGER. */
export function readU64(buf: Buffer, at: number): number {
  return buf.readUInt32BE(at) * TWO_32 + buf.readUInt32BE(at + 4);
}

/** Writes a non-negative integer (number up to MAX_SAFE_INTEGER, or any u64 bigint). */
export function writeU64(buf: Buffer, value: number | bigint, at: number): void {
  if (typeof value === 'bigint') {
    if (value < 0n || value > MAX_U64) throw outOfRange(`64-bit value ${value} is out of range`);
    buf.writeBigUInt64BE(value, at);
    return;
  }
  if (!Number.isSafeInteger(value) || value < 0) throw outOfRange(`64-bit value ${value} is not a non-negative safe integer`);
  buf.writeUInt32BE(Math.floor(value / TWO_32), at);
  buf.writeUInt32BE(value % TWO_32, at + 4);
}

function checkU32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > MAX_U32) throw outOfRange(`${what} ${value} does not fit in 32 bits`);
  return value;
}

function checkU16(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff) throw outOfRange(`${what} ${value} does not fit in 16 bits`);
  return value;
}

function outOfRange(message: string): NbdError {
  return new NbdError('NBD_VALUE_OUT_OF_RANGE', message, 'EINVAL');
}

function truncated(what: string, need: number, have: number): NbdError {
  return new NbdError('NBD_TRUNCATED', `${what} needs ${need} bytes, got ${have}`, 'EINVAL');
}

function need(buf: Buffer, at: number, n: number, what: string): void {
  if (buf.length - at < n) throw truncated(what, n, Math.max(0, buf.length - at));
}

function badReply(message: string): NbdError {
  return new NbdError('NBD_BAD_REPLY', message, 'EIO');
}

/** A string for the wire: UTF-8, at most 4096 bytes (proto.md "Conventions"). */
function encodeString(s: string, what: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length > NBD_MAX_STRING_LENGTH) throw outOfRange(`${what} is ${b.length} bytes; strings are at most ${NBD_MAX_STRING_LENGTH}`);
  return b;
}

/**
 * A string from a client's option: valid UTF-8, no NUL, at most 4096 bytes
 * (proto.md "Conventions"); anything else makes the option invalid.
 */
export function decodeClientString(buf: Buffer, what: string): string {
  if (buf.length > NBD_MAX_STRING_LENGTH) throw optionInvalid(`${what} is ${buf.length} bytes; at most ${NBD_MAX_STRING_LENGTH} are allowed`);
  if (buf.includes(0)) throw optionInvalid(`${what} contains a NUL byte`);
  try {
    return utf8.decode(buf);
  } catch {
    throw optionInvalid(`${what} is not valid UTF-8`);
  }
}

// ---------------------------------------------------------------------------
// Handshake: greeting and client flags (proto.md "Newstyle negotiation")

export function encodeServerGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.allocUnsafe(SIZES.SERVER_GREETING);
  b.writeBigUInt64BE(MAGICS.NBDMAGIC, 0);
  b.writeBigUInt64BE(MAGICS.IHAVEOPT, 8);
  b.writeUInt16BE(checkU16(handshakeFlags, 'handshake flags'), 16);
  return b;
}

export function decodeServerGreeting(buf: Buffer): { handshakeFlags: number } {
  need(buf, 0, SIZES.SERVER_GREETING, 'server greeting');
  if (buf.readBigUInt64BE(0) !== MAGICS.NBDMAGIC) throw badReply('greeting does not start with NBDMAGIC');
  const second = buf.readBigUInt64BE(8);
  if (second === MAGICS.CLISERV_MAGIC) throw badReply('server uses oldstyle negotiation');
  if (second !== MAGICS.IHAVEOPT) throw badReply('greeting lacks IHAVEOPT');
  return { handshakeFlags: buf.readUInt16BE(16) };
}

export function encodeClientFlags(flags: number): Buffer {
  const b = Buffer.allocUnsafe(SIZES.CLIENT_FLAGS);
  b.writeUInt32BE(checkU32(flags, 'client flags'), 0);
  return b;
}

export function decodeClientFlags(buf: Buffer, at = 0): number {
  need(buf, at, SIZES.CLIENT_FLAGS, 'client flags');
  return buf.readUInt32BE(at);
}

// ---------------------------------------------------------------------------
// Options (client to server)

export interface OptionHeader {
  /** True when the header starts with IHAVEOPT. */
  magicOk: boolean;
  option: number;
  length: number;
}

export function decodeOptionHeader(buf: Buffer, at = 0): OptionHeader {
  need(buf, at, SIZES.OPTION_HEADER, 'option header');
  return {
    magicOk: buf.readUInt32BE(at) === 0x49484156 && buf.readUInt32BE(at + 4) === 0x454f5054,
    option: buf.readUInt32BE(at + 8),
    length: buf.readUInt32BE(at + 12),
  };
}

/** A whole option: header and payload (options are small; one buffer is fine). */
export function encodeOption(option: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.allocUnsafe(SIZES.OPTION_HEADER + payload.length);
  b.writeBigUInt64BE(MAGICS.IHAVEOPT, 0);
  b.writeUInt32BE(checkU32(option, 'option'), 8);
  b.writeUInt32BE(payload.length, 12);
  payload.copy(b, SIZES.OPTION_HEADER);
  return b;
}

/** The data of NBD_OPT_INFO and NBD_OPT_GO (proto.md "NBD_OPT_INFO (6) and NBD_OPT_GO (7)"). */
export interface InfoRequest {
  name: string;
  /** NBD_INFO_* types asked for, in the client's order. */
  infoRequests: number[];
}

export function encodeInfoRequest(req: InfoRequest): Buffer {
  const name = encodeString(req.name, 'export name');
  checkU16(req.infoRequests.length, 'information request count');
  const b = Buffer.allocUnsafe(4 + name.length + 2 + 2 * req.infoRequests.length);
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  let at = 4 + name.length;
  b.writeUInt16BE(req.infoRequests.length, at);
  at += 2;
  for (const t of req.infoRequests) {
    b.writeUInt16BE(checkU16(t, 'information type'), at);
    at += 2;
  }
  return b;
}

/** Throws NbdOptionError (NBD_REP_ERR_INVALID) when the lengths do not add up exactly. */
export function decodeInfoRequest(payload: Buffer): InfoRequest {
  if (payload.length < 6) throw optionInvalid(`option data of ${payload.length} bytes is shorter than the 6 bytes NBD_OPT_INFO/GO need`);
  const nameLength = payload.readUInt32BE(0);
  if (nameLength > payload.length - 6) throw optionInvalid(`export name length ${nameLength} runs past the option data (${payload.length} bytes)`);
  const name = decodeClientString(payload.subarray(4, 4 + nameLength), 'export name');
  let at = 4 + nameLength;
  const count = payload.readUInt16BE(at);
  at += 2;
  if (payload.length !== at + 2 * count) {
    throw optionInvalid(`${count} information requests need ${2 * count} bytes, the option has ${payload.length - at}`);
  }
  const infoRequests: number[] = [];
  for (let i = 0; i < count; i++, at += 2) infoRequests.push(payload.readUInt16BE(at));
  return { name, infoRequests };
}

/** The data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT. */
export interface MetaContextRequest {
  name: string;
  queries: string[];
}

export function encodeMetaContextRequest(req: MetaContextRequest): Buffer {
  const name = encodeString(req.name, 'export name');
  const queries = req.queries.map((q) => encodeString(q, 'meta context query'));
  const b = Buffer.allocUnsafe(8 + name.length + queries.reduce((n, q) => n + 4 + q.length, 0));
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  let at = 4 + name.length;
  b.writeUInt32BE(queries.length, at);
  at += 4;
  for (const q of queries) {
    b.writeUInt32BE(q.length, at);
    q.copy(b, at + 4);
    at += 4 + q.length;
  }
  return b;
}

/**
 * Throws NbdOptionError (NBD_REP_ERR_INVALID) when a length runs past the
 * option data or bytes are left over (proto.md "NBD_OPT_LIST_META_CONTEXT":
 * a syntactically invalid request MUST fail with NBD_REP_ERR_INVALID).
 */
export function decodeMetaContextRequest(payload: Buffer): MetaContextRequest {
  if (payload.length < 8) throw optionInvalid(`option data of ${payload.length} bytes is shorter than the 8 bytes a meta context option needs`);
  const nameLength = payload.readUInt32BE(0);
  if (nameLength > payload.length - 8) throw optionInvalid(`export name length ${nameLength} runs past the option data`);
  const name = decodeClientString(payload.subarray(4, 4 + nameLength), 'export name');
  let at = 4 + nameLength;
  const count = payload.readUInt32BE(at);
  at += 4;
  // Each query needs at least its 4-byte length: a count the data cannot hold is refused before looping.
  if (count > (payload.length - at) / 4) throw optionInvalid(`${count} queries cannot fit in ${payload.length - at} bytes`);
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (payload.length - at < 4) throw optionInvalid(`query ${i} has no length field`);
    const len = payload.readUInt32BE(at);
    at += 4;
    if (len > payload.length - at) throw optionInvalid(`query ${i} length ${len} runs past the option data`);
    queries.push(decodeClientString(payload.subarray(at, at + len), `query ${i}`));
    at += len;
  }
  if (at !== payload.length) throw optionInvalid(`${payload.length - at} bytes follow the last query`);
  return { name, queries };
}

// ---------------------------------------------------------------------------
// Option replies (server to client, proto.md "Fixed newstyle negotiation")

export interface OptionReplyHeader {
  option: number;
  type: number;
  length: number;
}

/** A whole option reply: 20-byte header and its (small) payload. */
export function encodeOptionReply(option: number, type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.allocUnsafe(SIZES.OPTION_REPLY_HEADER + payload.length);
  b.writeBigUInt64BE(MAGICS.NBD_REP_MAGIC, 0);
  b.writeUInt32BE(checkU32(option, 'option'), 8);
  b.writeUInt32BE(checkU32(type, 'reply type'), 12);
  b.writeUInt32BE(payload.length, 16);
  payload.copy(b, SIZES.OPTION_REPLY_HEADER);
  return b;
}

export function decodeOptionReplyHeader(buf: Buffer, at = 0): OptionReplyHeader {
  need(buf, at, SIZES.OPTION_REPLY_HEADER, 'option reply header');
  if (buf.readBigUInt64BE(at) !== MAGICS.NBD_REP_MAGIC) throw badReply('option reply does not start with the reply magic');
  return { option: buf.readUInt32BE(at + 8), type: buf.readUInt32BE(at + 12), length: buf.readUInt32BE(at + 16) };
}

/** An error reply's payload: a message for a human (proto.md: error replies MAY carry one). */
export function encodeErrorMessage(message: string): Buffer {
  const b = Buffer.from(message, 'utf8');
  return b.length <= NBD_MAX_STRING_LENGTH ? b : b.subarray(0, NBD_MAX_STRING_LENGTH);
}

/** The reply to NBD_OPT_EXPORT_NAME: size, transmission flags, and 124 zeroes unless NBD_FLAG_C_NO_ZEROES. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(SIZES.EXPORT_NAME_REPLY + (noZeroes ? 0 : SIZES.EXPORT_NAME_ZEROES));
  writeU64(b, size, 0);
  b.writeUInt16BE(checkU16(transmissionFlags, 'transmission flags'), 8);
  return b;
}

export function decodeExportNameReply(buf: Buffer): { size: number; transmissionFlags: number } {
  need(buf, 0, SIZES.EXPORT_NAME_REPLY, 'export name reply');
  return { size: readU64(buf, 0), transmissionFlags: buf.readUInt16BE(8) };
}

/** NBD_REP_SERVER: name length, name, then an optional human-readable description. */
export function encodeRepServer(name: string, description?: string): Buffer {
  const n = encodeString(name, 'export name');
  const d = description ? encodeString(description, 'export description') : Buffer.alloc(0);
  const b = Buffer.allocUnsafe(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

export function decodeRepServer(payload: Buffer): { name: string; description: string } {
  need(payload, 0, 4, 'NBD_REP_SERVER');
  const len = payload.readUInt32BE(0);
  if (len > payload.length - 4) throw badReply(`NBD_REP_SERVER name length ${len} runs past the reply`);
  return { name: payload.toString('utf8', 4, 4 + len), description: payload.toString('utf8', 4 + len) };
}

export function encodeInfoExport(size: number, transmissionFlags: number): Buffer {
  const b = Buffer.allocUnsafe(SIZES.INFO_EXPORT);
  b.writeUInt16BE(INFO_TYPES.NBD_INFO_EXPORT, 0);
  writeU64(b, size, 2);
  b.writeUInt16BE(checkU16(transmissionFlags, 'transmission flags'), 10);
  return b;
}

export function encodeInfoString(type: typeof INFO_TYPES.NBD_INFO_NAME | typeof INFO_TYPES.NBD_INFO_DESCRIPTION, text: string): Buffer {
  const s = encodeString(text, type === INFO_TYPES.NBD_INFO_NAME ? 'export name' : 'export description');
  const b = Buffer.allocUnsafe(2 + s.length);
  b.writeUInt16BE(type, 0);
  s.copy(b, 2);
  return b;
}

export interface BlockSizeConstraints {
  minimum: number;
  preferred: number;
  maximum: number;
}

export function encodeInfoBlockSize(c: BlockSizeConstraints): Buffer {
  const b = Buffer.allocUnsafe(SIZES.INFO_BLOCK_SIZE);
  b.writeUInt16BE(INFO_TYPES.NBD_INFO_BLOCK_SIZE, 0);
  b.writeUInt32BE(checkU32(c.minimum, 'minimum block size'), 2);
  b.writeUInt32BE(checkU32(c.preferred, 'preferred block size'), 6);
  b.writeUInt32BE(checkU32(c.maximum, 'maximum payload'), 10);
  return b;
}

export type Info =
  | { type: typeof INFO_TYPES.NBD_INFO_EXPORT; size: number; transmissionFlags: number }
  | { type: typeof INFO_TYPES.NBD_INFO_NAME; name: string }
  | { type: typeof INFO_TYPES.NBD_INFO_DESCRIPTION; description: string }
  | ({ type: typeof INFO_TYPES.NBD_INFO_BLOCK_SIZE } & BlockSizeConstraints)
  | { type: number; unknown: Buffer };

/** Decodes the payload of an NBD_REP_INFO reply, checking the lengths proto.md fixes. */
export function decodeInfo(payload: Buffer): Info {
  need(payload, 0, 2, 'NBD_REP_INFO');
  const type = payload.readUInt16BE(0);
  switch (type) {
    case INFO_TYPES.NBD_INFO_EXPORT:
      if (payload.length !== SIZES.INFO_EXPORT) throw badReply(`NBD_INFO_EXPORT length ${payload.length}, expected 12`);
      return { type, size: readU64(payload, 2), transmissionFlags: payload.readUInt16BE(10) };
    case INFO_TYPES.NBD_INFO_NAME:
      return { type, name: payload.toString('utf8', 2) };
    case INFO_TYPES.NBD_INFO_DESCRIPTION:
      return { type, description: payload.toString('utf8', 2) };
    case INFO_TYPES.NBD_INFO_BLOCK_SIZE:
      if (payload.length !== SIZES.INFO_BLOCK_SIZE) throw badReply(`NBD_INFO_BLOCK_SIZE length ${payload.length}, expected 14`);
      return { type, minimum: payload.readUInt32BE(2), preferred: payload.readUInt32BE(6), maximum: payload.readUInt32BE(10) };
    default:
      return { type, unknown: payload.subarray(2) };
  }
}

/** NBD_REP_META_CONTEXT: context id, then its name. */
export function encodeRepMetaContext(contextId: number, name: string): Buffer {
  const n = encodeString(name, 'meta context name');
  const b = Buffer.allocUnsafe(4 + n.length);
  b.writeUInt32BE(checkU32(contextId, 'meta context id'), 0);
  n.copy(b, 4);
  return b;
}

export function decodeRepMetaContext(payload: Buffer): { contextId: number; name: string } {
  need(payload, 0, 4, 'NBD_REP_META_CONTEXT');
  return { contextId: payload.readUInt32BE(0), name: payload.toString('utf8', 4) };
}

// ---------------------------------------------------------------------------
// Transmission: requests (proto.md "Request message")

export interface RequestHeader {
  flags: number;
  type: number;
  cookie: bigint;
  /** Exact up to MAX_SAFE_INTEGER; above it, some inexact larger number. */
  offset: number;
  length: number;
}

export interface DecodedRequestHeader extends RequestHeader {
  /** True when the header starts with NBD_REQUEST_MAGIC. */
  magicOk: boolean;
  magic: number;
}

export function decodeRequestHeader(buf: Buffer, at = 0): DecodedRequestHeader {
  need(buf, at, SIZES.REQUEST_HEADER, 'request header');
  const magic = buf.readUInt32BE(at);
  return {
    magic,
    magicOk: magic === MAGICS.NBD_REQUEST_MAGIC,
    flags: buf.readUInt16BE(at + 4),
    type: buf.readUInt16BE(at + 6),
    cookie: buf.readBigUInt64BE(at + 8),
    offset: readU64(buf, at + 16),
    length: buf.readUInt32BE(at + 24),
  };
}

export interface RequestToEncode {
  flags?: number;
  type: number;
  cookie: bigint;
  offset: number | bigint;
  length: number;
}

/** The 28-byte request header; a write's data follows it as its own buffer. */
export function encodeRequestHeader(req: RequestToEncode, into: Buffer = Buffer.allocUnsafe(SIZES.REQUEST_HEADER), at = 0): Buffer {
  into.writeUInt32BE(MAGICS.NBD_REQUEST_MAGIC, at);
  into.writeUInt16BE(checkU16(req.flags ?? 0, 'command flags'), at + 4);
  into.writeUInt16BE(checkU16(req.type, 'command type'), at + 6);
  into.writeBigUInt64BE(BigInt.asUintN(64, req.cookie), at + 8);
  writeU64(into, req.offset, at + 16);
  into.writeUInt32BE(checkU32(req.length, 'request length'), at + 24);
  return into;
}

// ---------------------------------------------------------------------------
// Transmission: replies (proto.md "Simple reply message", "Structured reply chunk message")

export function encodeSimpleReplyHeader(error: number, cookie: bigint): Buffer {
  return writeSimpleReplyHeader(Buffer.allocUnsafe(SIZES.SIMPLE_REPLY_HEADER), 0, error, cookie);
}

/**
 * A simple reply header written into `into` at `at` (16 bytes). Servers
 * read a reply's data into the same buffer right behind it, so header and
 * data go out in one write without being copied together.
 */
export function writeSimpleReplyHeader(into: Buffer, at: number, error: number, cookie: bigint): Buffer {
  into.writeUInt32BE(MAGICS.NBD_SIMPLE_REPLY_MAGIC, at);
  into.writeUInt32BE(checkU32(error, 'error'), at + 4);
  into.writeBigUInt64BE(cookie, at + 8);
  return into;
}

export interface StructuredReplyHeader {
  flags: number;
  type: number;
  cookie: bigint;
  length: number;
}

function writeStructuredHeader(b: Buffer, flags: number, type: number, cookie: bigint, length: number, at = 0): void {
  b.writeUInt32BE(MAGICS.NBD_STRUCTURED_REPLY_MAGIC, at);
  b.writeUInt16BE(flags, at + 4);
  b.writeUInt16BE(type, at + 6);
  b.writeBigUInt64BE(cookie, at + 8);
  b.writeUInt32BE(checkU32(length, 'chunk length'), at + 16);
}

/** A chunk header alone (20 bytes); for NBD_REPLY_TYPE_NONE it is the whole chunk. */
export function encodeStructuredReplyHeader(h: StructuredReplyHeader): Buffer {
  const b = Buffer.allocUnsafe(SIZES.STRUCTURED_REPLY_HEADER);
  writeStructuredHeader(b, checkU16(h.flags, 'reply flags'), checkU16(h.type, 'reply type'), h.cookie, h.length);
  return b;
}

/**
 * The first 28 bytes of an NBD_REPLY_TYPE_OFFSET_DATA chunk (header and
 * offset); the `dataLength` bytes of data are written after it as their own
 * buffer, never copied behind it.
 */
export function encodeOffsetDataHeader(flags: number, cookie: bigint, offset: number, dataLength: number): Buffer {
  return writeOffsetDataHeader(Buffer.allocUnsafe(OFFSET_DATA_HEADER_SIZE), 0, flags, cookie, offset, dataLength);
}

/** Header and offset of an NBD_REPLY_TYPE_OFFSET_DATA chunk: the data follows. */
export const OFFSET_DATA_HEADER_SIZE = SIZES.STRUCTURED_REPLY_HEADER + 8;
/** A whole NBD_REPLY_TYPE_OFFSET_HOLE chunk (header, offset, size). */
export const OFFSET_HOLE_CHUNK_SIZE = SIZES.STRUCTURED_REPLY_HEADER + 12;

/** encodeOffsetDataHeader() written into `into` at `at` (28 bytes), in front of where the data goes. */
export function writeOffsetDataHeader(into: Buffer, at: number, flags: number, cookie: bigint, offset: number, dataLength: number): Buffer {
  writeStructuredHeader(into, flags, STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_OFFSET_DATA, cookie, 8 + dataLength, at);
  writeU64(into, offset, at + 20);
  return into;
}

/** A whole NBD_REPLY_TYPE_OFFSET_HOLE chunk: `size` bytes at `offset` read as zeroes. */
export function encodeOffsetHoleChunk(flags: number, cookie: bigint, offset: number, size: number): Buffer {
  return writeOffsetHoleChunk(Buffer.allocUnsafe(OFFSET_HOLE_CHUNK_SIZE), 0, flags, cookie, offset, size);
}

/** encodeOffsetHoleChunk() written into `into` at `at` (32 bytes). */
export function writeOffsetHoleChunk(into: Buffer, at: number, flags: number, cookie: bigint, offset: number, size: number): Buffer {
  if (size <= 0) throw outOfRange('a hole chunk must cover at least one byte');
  writeStructuredHeader(into, flags, STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_OFFSET_HOLE, cookie, 12, at);
  writeU64(into, offset, at + 20);
  into.writeUInt32BE(checkU32(size, 'hole size'), at + 28);
  return into;
}

export interface BlockDescriptor {
  /** Nonzero, 32 bits. */
  length: number;
  /** NBD_STATE_* bits of the context. */
  flags: number;
}

/** A whole NBD_REPLY_TYPE_BLOCK_STATUS chunk for one metadata context. */
export function encodeBlockStatusChunk(flags: number, cookie: bigint, contextId: number, descriptors: readonly BlockDescriptor[]): Buffer {
  if (descriptors.length === 0) throw outOfRange('a block status chunk needs at least one descriptor');
  const payload = 4 + 8 * descriptors.length;
  const b = Buffer.allocUnsafe(SIZES.STRUCTURED_REPLY_HEADER + payload);
  writeStructuredHeader(b, flags, STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_BLOCK_STATUS, cookie, payload);
  b.writeUInt32BE(checkU32(contextId, 'meta context id'), 20);
  let at = 24;
  for (const d of descriptors) {
    if (d.length === 0) throw outOfRange('a block status descriptor must have a nonzero length');
    b.writeUInt32BE(checkU32(d.length, 'descriptor length'), at);
    b.writeUInt32BE(checkU32(d.flags, 'descriptor flags'), at + 4);
    at += 8;
  }
  return b;
}

/**
 * A whole error chunk: NBD_REPLY_TYPE_ERROR, or NBD_REPLY_TYPE_ERROR_OFFSET
 * when `offset` is given (proto.md "Structured reply types").
 */
export function encodeErrorChunk(flags: number, cookie: bigint, error: number, message: string, offset?: number): Buffer {
  if (error === 0) throw outOfRange('an error chunk needs a nonzero error');
  let msg = Buffer.from(message, 'utf8');
  if (msg.length > NBD_MAX_STRING_LENGTH) msg = msg.subarray(0, NBD_MAX_STRING_LENGTH);
  const payload = 6 + msg.length + (offset === undefined ? 0 : 8);
  const b = Buffer.allocUnsafe(SIZES.STRUCTURED_REPLY_HEADER + payload);
  const type = offset === undefined ? STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_ERROR : STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_ERROR_OFFSET;
  writeStructuredHeader(b, flags, type, cookie, payload);
  b.writeUInt32BE(checkU32(error, 'error'), 20);
  b.writeUInt16BE(msg.length, 24);
  msg.copy(b, 26);
  if (offset !== undefined) writeU64(b, offset, 26 + msg.length);
  return b;
}

export type ReplyHeader =
  | { kind: 'simple'; error: number; cookie: bigint }
  | ({ kind: 'structured' } & StructuredReplyHeader);

/** Size of the reply header starting with this magic, or 0 for an unknown magic. */
export function replyHeaderSize(magic: number): number {
  if (magic === MAGICS.NBD_SIMPLE_REPLY_MAGIC) return SIZES.SIMPLE_REPLY_HEADER;
  if (magic === MAGICS.NBD_STRUCTURED_REPLY_MAGIC) return SIZES.STRUCTURED_REPLY_HEADER;
  return 0;
}

/** Decodes a simple or structured reply header (16 or 20 bytes, as replyHeaderSize says). */
export function decodeReplyHeader(buf: Buffer, at = 0): ReplyHeader {
  need(buf, at, 4, 'reply magic');
  const magic = buf.readUInt32BE(at);
  if (magic === MAGICS.NBD_SIMPLE_REPLY_MAGIC) {
    need(buf, at, SIZES.SIMPLE_REPLY_HEADER, 'simple reply');
    return { kind: 'simple', error: buf.readUInt32BE(at + 4), cookie: buf.readBigUInt64BE(at + 8) };
  }
  if (magic === MAGICS.NBD_STRUCTURED_REPLY_MAGIC) {
    need(buf, at, SIZES.STRUCTURED_REPLY_HEADER, 'structured reply header');
    return {
      kind: 'structured',
      flags: buf.readUInt16BE(at + 4),
      type: buf.readUInt16BE(at + 6),
      cookie: buf.readBigUInt64BE(at + 8),
      length: buf.readUInt32BE(at + 16),
    };
  }
  throw badReply(`unknown reply magic 0x${magic.toString(16)}`);
}

export type Chunk =
  | { type: typeof STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_NONE }
  | { type: typeof STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_OFFSET_DATA; offset: number; data: Buffer }
  | { type: typeof STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_OFFSET_HOLE; offset: number; size: number }
  | { type: typeof STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_BLOCK_STATUS; contextId: number; descriptors: BlockDescriptor[] }
  | { type: typeof STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_ERROR | typeof STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_ERROR_OFFSET; error: number; message: string; offset?: number }
  | { type: number; unknown: Buffer };

/** Decodes a structured chunk's payload, checking the lengths proto.md fixes for each type. */
export function decodeChunkPayload(type: number, payload: Buffer): Chunk {
  const T = STRUCTURED_REPLY_TYPES;
  switch (type) {
    case T.NBD_REPLY_TYPE_NONE:
      if (payload.length !== 0) throw badReply('NBD_REPLY_TYPE_NONE with a payload');
      return { type };
    case T.NBD_REPLY_TYPE_OFFSET_DATA:
      if (payload.length < 9) throw badReply(`NBD_REPLY_TYPE_OFFSET_DATA length ${payload.length} < 9`);
      return { type, offset: readU64(payload, 0), data: payload.subarray(8) };
    case T.NBD_REPLY_TYPE_OFFSET_HOLE:
      if (payload.length !== 12) throw badReply(`NBD_REPLY_TYPE_OFFSET_HOLE length ${payload.length} != 12`);
      return { type, offset: readU64(payload, 0), size: payload.readUInt32BE(8) };
    case T.NBD_REPLY_TYPE_BLOCK_STATUS: {
      if (payload.length < 12 || (payload.length - 4) % 8 !== 0) throw badReply(`NBD_REPLY_TYPE_BLOCK_STATUS length ${payload.length}`);
      const descriptors: BlockDescriptor[] = [];
      for (let at = 4; at < payload.length; at += 8) descriptors.push({ length: payload.readUInt32BE(at), flags: payload.readUInt32BE(at + 4) });
      return { type, contextId: payload.readUInt32BE(0), descriptors };
    }
    default:
      if ((type & NBD_REPLY_TYPE_FLAG_ERROR) !== 0) {
        if (payload.length < 6) throw badReply(`error chunk length ${payload.length} < 6`);
        const error = payload.readUInt32BE(0);
        const msgLen = payload.readUInt16BE(4);
        const fixed = type === T.NBD_REPLY_TYPE_ERROR_OFFSET ? 8 : 0;
        if (6 + msgLen + fixed > payload.length) throw badReply(`error message length ${msgLen} runs past the chunk`);
        const message = payload.toString('utf8', 6, 6 + msgLen);
        if (type === T.NBD_REPLY_TYPE_ERROR_OFFSET) return { type, error, message, offset: readU64(payload, 6 + msgLen) };
        return { type: T.NBD_REPLY_TYPE_ERROR, error, message };
      }
      return { type, unknown: payload };
  }
}
