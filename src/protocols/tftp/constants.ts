/**
 * TFTP constants named as their specifications name them: RFC 1350 (the
 * protocol, opcodes, error codes, modes), RFC 2347 (option extension, OACK,
 * error 8), RFC 2348 (blksize), RFC 2349 (timeout, tsize), RFC 7440
 * (windowsize).
 */

/** RFC 1350 section 4: the well-known port a server listens on for requests. */
export const TFTP_PORT = 69;

/** RFC 1350 section 5 and RFC 2347 (OACK). */
export const OPCODES = {
  RRQ: 1,
  WRQ: 2,
  DATA: 3,
  ACK: 4,
  ERROR: 5,
  OACK: 6,
} as const;
export type Opcode = (typeof OPCODES)[keyof typeof OPCODES];
export type OpcodeName = keyof typeof OPCODES;

/** RFC 1350 appendix "Error Codes", plus code 8 from RFC 2347. */
export const ERROR_NUMBERS = {
  NOT_DEFINED: 0,
  FILE_NOT_FOUND: 1,
  ACCESS_VIOLATION: 2,
  DISK_FULL: 3,
  ILLEGAL_OPERATION: 4,
  UNKNOWN_TID: 5,
  FILE_EXISTS: 6,
  NO_SUCH_USER: 7,
  OPTION_NEGOTIATION: 8,
} as const;
export type ErrorNumber = (typeof ERROR_NUMBERS)[keyof typeof ERROR_NUMBERS];

/** RFC 1350 section 1: transfer modes, compared case-insensitively. */
export const MODES = {
  NETASCII: 'netascii',
  OCTET: 'octet',
  MAIL: 'mail',
} as const;
export type Mode = (typeof MODES)[keyof typeof MODES];

/** Option names (case-insensitive on the wire; kept lower-case here). */
export const OPTIONS = {
  /** RFC 2348 */
  BLKSIZE: 'blksize',
  /** RFC 2349 */
  TIMEOUT: 'timeout',
  /** RFC 2349 */
  TSIZE: 'tsize',
  /** RFC 7440 */
  WINDOWSIZE: 'windowsize',
} as const;

/** RFC 1350 section 2: data blocks are 512 bytes unless blksize says otherwise. */
export const DEFAULT_BLKSIZE = 512;
/** RFC 2348: "Valid values range between 8 and 65464 octets, inclusive." */
export const BLKSIZE_MIN = 8;
export const BLKSIZE_MAX = 65464;
/** RFC 2349: "Valid values range between 1 and 255 seconds, inclusive." */
export const TIMEOUT_MIN = 1;
export const TIMEOUT_MAX = 255;
/** RFC 7440 section 3: "Valid values range between 1 and 65535 blocks, inclusive." */
export const WINDOWSIZE_MIN = 1;
export const WINDOWSIZE_MAX = 65535;
/** Without the windowsize option a transfer is lock-step (RFC 1350). */
export const DEFAULT_WINDOWSIZE = 1;

/** DATA and ACK carry a 16-bit block number (RFC 1350 section 5); it rolls over past this. */
export const BLOCK_MODULO = 0x10000;
/** The DATA/ACK header: opcode (2) + block number (2). */
export const DATA_HEADER_SIZE = 4;
/** RFC 2347: "The maximum size of a request packet is 512 octets." */
export const REQUEST_MAX_SIZE = 512;

/**
 * Bytes a TFTP DATA packet spends on headers below the payload, used to
 * derive the largest blksize a link MTU carries without IP fragmentation
 * (RFC 2348 notes 1468 for Ethernet's 1500): IP (20 for IPv4, 40 for IPv6),
 * UDP (8) and the TFTP DATA header (4).
 */
export const HEADER_OVERHEAD = { IPv4: 20 + 8 + 4, IPv6: 40 + 8 + 4 } as const;

const OPCODE_NAMES = new Map<number, OpcodeName>(Object.entries(OPCODES).map(([k, v]) => [v, k as OpcodeName]));
const ERROR_NAMES = new Map<number, string>(Object.entries(ERROR_NUMBERS).map(([k, v]) => [v, k]));

/** `RRQ`, `DATA`... or `opcode 9` for logs. */
export function opcodeName(opcode: number): string {
  return OPCODE_NAMES.get(opcode) ?? `opcode ${opcode}`;
}

/** `FILE_NOT_FOUND`... or `error 12` for logs. */
export function errorName(code: number): string {
  return ERROR_NAMES.get(code) ?? `error ${code}`;
}
