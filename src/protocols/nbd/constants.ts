/**
 * NBD protocol constants, named exactly as the NetworkBlockDevice
 * specification (doc/proto.md, "The NBD protocol") names them. Each group is
 * an `as const` object so a value can be turned back into its spec name for
 * logs with nameOf() / flagNames().
 *
 * Values marked "extension" belong to experimental extensions proto.md only
 * reserves (EXTENDED_HEADERS, RESIZE); they are named so a peer using them
 * is logged by name, but this server does not implement them.
 */

/** The IANA-reserved port for newstyle negotiation (proto.md "Newstyle negotiation"). */
export const NBD_DEFAULT_PORT = 10809;

/** Magic numbers (proto.md "Handshake", "Transmission", "Reserved Magic values"). */
export const MAGICS = {
  /** ASCII 'NBDMAGIC', the first 64 bits the server sends (also INIT_PASSWD). */
  NBDMAGIC: 0x4e42444d41474943n,
  /** ASCII 'IHAVEOPT': newstyle greeting, and the start of every client option. */
  IHAVEOPT: 0x49484156454f5054n,
  /** Oldstyle negotiation's second magic (cliserv_magic); never sent by this server. */
  CLISERV_MAGIC: 0x00420281861253n,
  /** Starts every fixed-newstyle option reply ("magic number for replies"). */
  NBD_REP_MAGIC: 0x3e889045565a9n,
  NBD_REQUEST_MAGIC: 0x25609513,
  /** Used to be called NBD_REPLY_MAGIC. */
  NBD_SIMPLE_REPLY_MAGIC: 0x67446698,
  NBD_STRUCTURED_REPLY_MAGIC: 0x668e33ef,
  /** Extension (EXTENDED_HEADERS); refused as a framing error. */
  NBD_EXTENDED_REQUEST_MAGIC: 0x21e41c71,
  /** Extension (EXTENDED_HEADERS). */
  NBD_EXTENDED_REPLY_MAGIC: 0x6e8a278c,
} as const;

/** Handshake flags, 16 bits sent by the server (proto.md "Handshake flags"). */
export const HANDSHAKE_FLAGS = {
  NBD_FLAG_FIXED_NEWSTYLE: 1 << 0,
  NBD_FLAG_NO_ZEROES: 1 << 1,
} as const;

/** Client flags, 32 bits sent by the client (proto.md "Client flags"). */
export const CLIENT_FLAGS = {
  NBD_FLAG_C_FIXED_NEWSTYLE: 1 << 0,
  NBD_FLAG_C_NO_ZEROES: 1 << 1,
} as const;

/** Transmission flags, 16 bits (proto.md "Transmission flags"). */
export const TRANSMISSION_FLAGS = {
  NBD_FLAG_HAS_FLAGS: 1 << 0,
  NBD_FLAG_READ_ONLY: 1 << 1,
  NBD_FLAG_SEND_FLUSH: 1 << 2,
  NBD_FLAG_SEND_FUA: 1 << 3,
  NBD_FLAG_ROTATIONAL: 1 << 4,
  NBD_FLAG_SEND_TRIM: 1 << 5,
  NBD_FLAG_SEND_WRITE_ZEROES: 1 << 6,
  NBD_FLAG_SEND_DF: 1 << 7,
  NBD_FLAG_CAN_MULTI_CONN: 1 << 8,
  /** Extension (RESIZE). */
  NBD_FLAG_SEND_RESIZE: 1 << 9,
  NBD_FLAG_SEND_CACHE: 1 << 10,
  NBD_FLAG_SEND_FAST_ZERO: 1 << 11,
  /** Extension (EXTENDED_HEADERS). */
  NBD_FLAG_BLOCK_STATUS_PAYLOAD: 1 << 12,
} as const;

/** Option types (proto.md "Option types"). */
export const OPTIONS = {
  NBD_OPT_EXPORT_NAME: 1,
  NBD_OPT_ABORT: 2,
  NBD_OPT_LIST: 3,
  /** Withdrawn; not in use. */
  NBD_OPT_PEEK_EXPORT: 4,
  NBD_OPT_STARTTLS: 5,
  NBD_OPT_INFO: 6,
  NBD_OPT_GO: 7,
  NBD_OPT_STRUCTURED_REPLY: 8,
  NBD_OPT_LIST_META_CONTEXT: 9,
  NBD_OPT_SET_META_CONTEXT: 10,
  /** Extension (EXTENDED_HEADERS). */
  NBD_OPT_EXTENDED_HEADERS: 11,
} as const;

/** Error option replies have bit 31 set (proto.md "Option reply types"). */
export const NBD_REP_FLAG_ERROR = 0x80000000;

/** Option reply types (proto.md "Option reply types"). */
export const REPLY_TYPES = {
  NBD_REP_ACK: 1,
  NBD_REP_SERVER: 2,
  NBD_REP_INFO: 3,
  NBD_REP_META_CONTEXT: 4,
  NBD_REP_ERR_UNSUP: NBD_REP_FLAG_ERROR + 1,
  NBD_REP_ERR_POLICY: NBD_REP_FLAG_ERROR + 2,
  NBD_REP_ERR_INVALID: NBD_REP_FLAG_ERROR + 3,
  NBD_REP_ERR_PLATFORM: NBD_REP_FLAG_ERROR + 4,
  NBD_REP_ERR_TLS_REQD: NBD_REP_FLAG_ERROR + 5,
  NBD_REP_ERR_UNKNOWN: NBD_REP_FLAG_ERROR + 6,
  NBD_REP_ERR_SHUTDOWN: NBD_REP_FLAG_ERROR + 7,
  NBD_REP_ERR_BLOCK_SIZE_REQD: NBD_REP_FLAG_ERROR + 8,
  NBD_REP_ERR_TOO_BIG: NBD_REP_FLAG_ERROR + 9,
  /** Extension (EXTENDED_HEADERS). */
  NBD_REP_ERR_EXT_HEADER_REQD: NBD_REP_FLAG_ERROR + 10,
} as const;

/** Information types inside NBD_REP_INFO (proto.md "NBD_REP_INFO"). */
export const INFO_TYPES = {
  NBD_INFO_EXPORT: 0,
  NBD_INFO_NAME: 1,
  NBD_INFO_DESCRIPTION: 2,
  NBD_INFO_BLOCK_SIZE: 3,
} as const;

/** Request types (proto.md "Request types"). */
export const COMMANDS = {
  NBD_CMD_READ: 0,
  NBD_CMD_WRITE: 1,
  NBD_CMD_DISC: 2,
  NBD_CMD_FLUSH: 3,
  NBD_CMD_TRIM: 4,
  NBD_CMD_CACHE: 5,
  NBD_CMD_WRITE_ZEROES: 6,
  NBD_CMD_BLOCK_STATUS: 7,
  /** Extension (RESIZE); answered with NBD_EINVAL like any unknown command. */
  NBD_CMD_RESIZE: 8,
} as const;

/** Command flags, 16 bits in every request (proto.md "Command flags"). */
export const COMMAND_FLAGS = {
  NBD_CMD_FLAG_FUA: 1 << 0,
  NBD_CMD_FLAG_NO_HOLE: 1 << 1,
  NBD_CMD_FLAG_DF: 1 << 2,
  NBD_CMD_FLAG_REQ_ONE: 1 << 3,
  NBD_CMD_FLAG_FAST_ZERO: 1 << 4,
  /** Extension (EXTENDED_HEADERS). */
  NBD_CMD_FLAG_PAYLOAD_LEN: 1 << 5,
} as const;

/** Structured reply flags (proto.md "Structured reply flags"). */
export const REPLY_FLAGS = {
  NBD_REPLY_FLAG_DONE: 1 << 0,
} as const;

/** Error chunk types have bit 15 set (proto.md "Structured reply types"). */
export const NBD_REPLY_TYPE_FLAG_ERROR = 0x8000;

/** Structured reply chunk types (proto.md "Structured reply types"). */
export const STRUCTURED_REPLY_TYPES = {
  NBD_REPLY_TYPE_NONE: 0,
  NBD_REPLY_TYPE_OFFSET_DATA: 1,
  NBD_REPLY_TYPE_OFFSET_HOLE: 2,
  NBD_REPLY_TYPE_BLOCK_STATUS: 5,
  /** Extension (EXTENDED_HEADERS). */
  NBD_REPLY_TYPE_BLOCK_STATUS_EXT: 6,
  NBD_REPLY_TYPE_ERROR: NBD_REPLY_TYPE_FLAG_ERROR + 1,
  NBD_REPLY_TYPE_ERROR_OFFSET: NBD_REPLY_TYPE_FLAG_ERROR + 2,
} as const;

/** Error values of the reply error field (proto.md "Error values"). */
export const ERRORS = {
  NBD_EPERM: 1,
  NBD_EIO: 5,
  NBD_ENOMEM: 12,
  NBD_EINVAL: 22,
  NBD_ENOSPC: 28,
  NBD_EOVERFLOW: 75,
  NBD_ENOTSUP: 95,
  NBD_ESHUTDOWN: 108,
} as const;

/** Flags of the `base:allocation` metadata context (proto.md "base:allocation metadata context"). */
export const STATE_FLAGS = {
  NBD_STATE_HOLE: 1 << 0,
  NBD_STATE_ZERO: 1 << 1,
} as const;

/** proto.md "The base: metadata namespace". */
export const META_CONTEXT_NAMESPACE_BASE = 'base:';
export const META_CONTEXT_BASE_ALLOCATION = 'base:allocation';

/** Wire sizes of the fixed parts of each message, in bytes. */
export const SIZES = {
  /** NBDMAGIC + IHAVEOPT + handshake flags. */
  SERVER_GREETING: 18,
  CLIENT_FLAGS: 4,
  /** IHAVEOPT + option + length. */
  OPTION_HEADER: 16,
  /** Reply magic + option + reply type + length. */
  OPTION_REPLY_HEADER: 20,
  /** Size + transmission flags (+ 124 zeroes unless NBD_FLAG_C_NO_ZEROES) after NBD_OPT_EXPORT_NAME. */
  EXPORT_NAME_REPLY: 10,
  EXPORT_NAME_ZEROES: 124,
  /** magic + flags + type + cookie + offset + length. */
  REQUEST_HEADER: 28,
  /** magic + error + cookie. */
  SIMPLE_REPLY_HEADER: 16,
  /** magic + flags + type + cookie + length. */
  STRUCTURED_REPLY_HEADER: 20,
  /** The payload of NBD_INFO_EXPORT (type + size + flags). */
  INFO_EXPORT: 12,
  /** The payload of NBD_INFO_BLOCK_SIZE (type + min + preferred + max). */
  INFO_BLOCK_SIZE: 14,
} as const;

/**
 * proto.md "Conventions": strings SHOULD be at most 256 bytes and MUST be at
 * most 4096 bytes (export names, error messages, context names).
 */
export const NBD_MAX_STRING_LENGTH = 4096;

/**
 * proto.md "Size constraints": a payload up to 2^25 bytes SHOULD NOT be
 * treated as a denial of service even when larger than the advertised
 * maximum, so such writes are consumed and failed, not disconnected.
 */
export const NBD_PORTABLE_PAYLOAD_LIMIT = 1 << 25;

/** proto.md "NBD_REPLY_TYPE_BLOCK_STATUS": servers SHOULD NOT send more descriptors than this in one chunk. */
export const NBD_MAX_BLOCK_STATUS_DESCRIPTORS = 1 << 20;

/** proto.md "NBD_CMD_READ": unfragmented (DF) reads up to this length MUST be supported. */
export const NBD_DF_MIN_SUPPORTED = 65536;

type Table = Readonly<Record<string, number | bigint>>;

/** The spec name of `value` in `table`, or a hex placeholder for logs when unknown. */
export function nameOf(table: Table, value: number | bigint): string {
  for (const [name, v] of Object.entries(table)) if (v === value) return name;
  return `unknown(0x${value.toString(16)})`;
}

/** The spec names of the bits set in `bits`; unknown bits are listed in hex. */
export function flagNames(table: Readonly<Record<string, number>>, bits: number): string[] {
  const out: string[] = [];
  let rest = bits >>> 0;
  for (const [name, bit] of Object.entries(table)) {
    if ((rest & bit) !== 0) {
      out.push(name);
      rest = (rest & ~bit) >>> 0;
    }
  }
  if (rest !== 0) out.push(`unknown(0x${rest.toString(16)})`);
  return out;
}

export const optionName = (v: number): string => nameOf(OPTIONS, v);
export const replyTypeName = (v: number): string => nameOf(REPLY_TYPES, v);
export const commandName = (v: number): string => nameOf(COMMANDS, v);
export const errorName = (v: number): string => (v === 0 ? 'OK' : nameOf(ERRORS, v));
export const infoTypeName = (v: number): string => nameOf(INFO_TYPES, v);
export const structuredReplyTypeName = (v: number): string => nameOf(STRUCTURED_REPLY_TYPES, v);
