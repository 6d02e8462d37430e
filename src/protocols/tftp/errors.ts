/**
 * Error codes of the TFTP module. Each maps to one TFTP error number (RFC
 * 1350 appendix, RFC 2347 for 8) in `tftpErrorOf()`, the only place the
 * server turns an internal error into an ERROR packet. Every code is stable
 * and documented in docs/errors.md, which is generated from this catalogue.
 */
import { DisklessError } from '../../lib/errors.js';
import { ERROR_NUMBERS, type ErrorNumber } from './constants.js';

export const ERROR_CODES = {
  TFTP_TRUNCATED: 'a TFTP packet is shorter than its opcode and fixed fields; the server drops it without a reply',
  TFTP_UNKNOWN_OPCODE: 'the opcode is none of RRQ, WRQ, DATA, ACK, ERROR, OACK (TFTP error 4)',
  TFTP_MISSING_NUL: 'a file name, mode, option or error message is not NUL-terminated (TFTP error 4)',
  TFTP_BAD_MODE: 'the transfer mode is not netascii or octet (mail is for writes only) (TFTP error 4)',
  TFTP_BAD_OPTION: 'an option has no value, a value that is not a decimal number, or one outside its RFC range (TFTP error 8)',
  TFTP_DUPLICATE_OPTION: 'a request names the same option twice (option names are case-insensitive) (TFTP error 8)',
  TFTP_BAD_PATH: 'the file name is empty, not UTF-8, has control characters or a `..` segment, or is too long (TFTP error 2)',
  TFTP_FILE_NOT_FOUND: 'no such file (TFTP error 1)',
  TFTP_ACCESS_VIOLATION: 'the file may not be served: outside the root, not a regular file, or unreadable (TFTP error 2)',
  TFTP_WRITE_REFUSED: 'a write request (WRQ): the server is read-only (TFTP error 2)',
  TFTP_ILLEGAL_OPERATION: 'a packet the transfer does not expect at this point, such as DATA sent to a read transfer (TFTP error 4)',
  TFTP_UNKNOWN_TID: 'a packet reached a transfer\'s port from an address or port that does not own it (TFTP error 5)',
  TFTP_BUSY: 'too many transfers at once, in all or from this client address (TFTP error 0)',
  TFTP_TIMEOUT: 'the peer stopped acknowledging and the retransmissions ran out (TFTP error 0)',
  TFTP_READ_FAILED: 'the file could not be read, changed size during the transfer, or a read took too long (TFTP error 0)',
  TFTP_NETASCII_TOO_LARGE: 'netascii mode was asked for a file larger than the server translates in memory (TFTP error 0)',
  TFTP_PEER_ERROR: 'the peer ended the transfer with an ERROR packet; nothing is sent back (RFC 1350 section 7)',
  TFTP_SHUTDOWN: 'the server closed while the transfer was running (TFTP error 0)',
  TFTP_SOCKET_FAILED: 'a transfer socket could not be bound or failed to send (TFTP error 0 when it can still be sent)',
  TFTP_BIND_FAILED: 'the TFTP server could not bind its listening socket (port in use, missing privilege, or address not on this host)',
  TFTP_CONFIG_INVALID: 'a TFTP server or file provider option is invalid; the message lists every problem',
  TFTP_INTERNAL: 'an unexpected failure in the server or the file provider (TFTP error 0)',
  TFTP_DOWNLOAD_TOO_LARGE: 'the client received more bytes than it was told to accept (TFTP error 3 to the server)',
} as const;

export type TftpErrorCode = keyof typeof ERROR_CODES;

/** Any error raised by the TFTP module. */
export class TftpError extends DisklessError {
  override readonly name: string = 'TftpError';
  constructor(
    override readonly code: TftpErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, 'EINVAL', options);
  }
}

/** A packet from the network that cannot be decoded (or a value that cannot be encoded). */
export class TftpCodecError extends TftpError {
  override readonly name = 'TftpCodecError';
  constructor(
    code: TftpErrorCode,
    message: string,
    /** Byte offset in the packet where the problem was found, when known. */
    readonly offset?: number,
  ) {
    super(code, message);
  }
}

/** The peer sent an ERROR packet (raised by the client; the server reports it as an 'aborted' event). */
export class TftpPeerError extends TftpError {
  override readonly name = 'TftpPeerError';
  constructor(
    /** The peer's TFTP error number. */
    readonly peerCode: number,
    /** The peer's ErrMsg. */
    readonly peerMessage: string,
  ) {
    super('TFTP_PEER_ERROR', `peer sent error ${peerCode}: ${peerMessage}`);
  }
}

/** The error number each code is sent as; null: nothing is sent. */
const WIRE: Record<TftpErrorCode, ErrorNumber | null> = {
  TFTP_TRUNCATED: null,
  TFTP_UNKNOWN_OPCODE: ERROR_NUMBERS.ILLEGAL_OPERATION,
  TFTP_MISSING_NUL: ERROR_NUMBERS.ILLEGAL_OPERATION,
  TFTP_BAD_MODE: ERROR_NUMBERS.ILLEGAL_OPERATION,
  TFTP_BAD_OPTION: ERROR_NUMBERS.OPTION_NEGOTIATION,
  TFTP_DUPLICATE_OPTION: ERROR_NUMBERS.OPTION_NEGOTIATION,
  TFTP_BAD_PATH: ERROR_NUMBERS.ACCESS_VIOLATION,
  TFTP_FILE_NOT_FOUND: ERROR_NUMBERS.FILE_NOT_FOUND,
  TFTP_ACCESS_VIOLATION: ERROR_NUMBERS.ACCESS_VIOLATION,
  // RFC 1350 leaves the choice open; a WRQ is a well-formed, legal TFTP
  // operation, so "illegal TFTP operation" (4) would misdescribe it. What
  // refuses it is this server's policy, which is what "access violation"
  // (2) means, and what clients show users as "permission denied".
  TFTP_WRITE_REFUSED: ERROR_NUMBERS.ACCESS_VIOLATION,
  TFTP_ILLEGAL_OPERATION: ERROR_NUMBERS.ILLEGAL_OPERATION,
  TFTP_UNKNOWN_TID: ERROR_NUMBERS.UNKNOWN_TID,
  TFTP_BUSY: ERROR_NUMBERS.NOT_DEFINED,
  TFTP_TIMEOUT: ERROR_NUMBERS.NOT_DEFINED,
  TFTP_READ_FAILED: ERROR_NUMBERS.NOT_DEFINED,
  TFTP_NETASCII_TOO_LARGE: ERROR_NUMBERS.NOT_DEFINED,
  // RFC 1350 section 7: an ERROR packet is never acknowledged.
  TFTP_PEER_ERROR: null,
  TFTP_SHUTDOWN: ERROR_NUMBERS.NOT_DEFINED,
  TFTP_SOCKET_FAILED: ERROR_NUMBERS.NOT_DEFINED,
  TFTP_BIND_FAILED: null,
  TFTP_CONFIG_INVALID: null,
  TFTP_INTERNAL: ERROR_NUMBERS.NOT_DEFINED,
  TFTP_DOWNLOAD_TOO_LARGE: ERROR_NUMBERS.DISK_FULL,
};

/** Short messages put in ERROR packets: what the peer may know, no more. */
const WIRE_MESSAGE: Partial<Record<TftpErrorCode, string>> = {
  TFTP_FILE_NOT_FOUND: 'File not found',
  TFTP_ACCESS_VIOLATION: 'Access violation',
  TFTP_BAD_PATH: 'Access violation: bad file name',
  TFTP_WRITE_REFUSED: 'Access violation: read-only server',
  TFTP_UNKNOWN_TID: 'Unknown transfer ID',
  TFTP_BUSY: 'Server busy, try again',
  TFTP_TIMEOUT: 'Timed out',
  TFTP_READ_FAILED: 'Read error',
  TFTP_NETASCII_TOO_LARGE: 'File too large for netascii mode; use octet',
  TFTP_SHUTDOWN: 'Server shutting down',
  TFTP_SOCKET_FAILED: 'Server socket error',
  TFTP_INTERNAL: 'Internal error',
  TFTP_DOWNLOAD_TOO_LARGE: 'Allocation exceeded',
};

/** ErrMsg fields are kept short: they go in one datagram and are read by people. */
const MAX_WIRE_MESSAGE = 200;

export interface WireError {
  /** TFTP error number, 0-8. */
  number: ErrorNumber;
  /** The ErrMsg field. */
  message: string;
}

/**
 * The one place internal errors become TFTP ERROR packets. Returns null when
 * nothing is to be sent (truncated packets, the peer's own ERROR). Errors
 * that are not TftpErrors (a file provider's bug, an I/O error) become error
 * 0 with a generic message: internal details are logged, not sent.
 */
export function tftpErrorOf(err: unknown): WireError | null {
  if (!(err instanceof TftpError)) return { number: ERROR_NUMBERS.NOT_DEFINED, message: WIRE_MESSAGE.TFTP_INTERNAL! };
  const number = WIRE[err.code];
  if (number === null || number === undefined) return null;
  // Codec and option errors describe the client's own packet, so their
  // message helps it and reveals nothing of the server.
  const message = WIRE_MESSAGE[err.code] ?? err.message.slice(0, MAX_WIRE_MESSAGE);
  return { number, message };
}

export function isTftpError(e: unknown, code?: TftpErrorCode): e is TftpError {
  return e instanceof TftpError && (code === undefined || e.code === code);
}
