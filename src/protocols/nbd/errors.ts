/**
 * Error codes of the NBD module, and the two places internal errors become
 * wire values: nbdErrnoOf() for the error field of transmission replies
 * (proto.md "Error values"), optionReplyErrorOf() for option replies
 * during the handshake (proto.md "Option reply types").
 *
 * Framing errors (a wrong magic, a length the server will not read) end
 * only the connection they happened on: the session logs the code and
 * closes that socket. Every code is stable and documented in
 * docs/errors.md, generated from this catalogue.
 */
import { DisklessError, type Errno } from '../../lib/errors.js';
import { ERRORS, REPLY_TYPES } from './constants.js';

export const ERROR_CODES = {
  NBD_EXPORT_UNKNOWN: 'the export a client asked for does not exist (NBD_REP_ERR_UNKNOWN; after NBD_OPT_EXPORT_NAME, which cannot fail, the connection is closed)',
  NBD_EXPORT_FORBIDDEN: 'the client may not use the export it asked for (NBD_REP_ERR_POLICY; after NBD_OPT_EXPORT_NAME the connection is closed)',
  NBD_BAD_MAGIC: 'an option or request does not start with its magic number (IHAVEOPT, NBD_REQUEST_MAGIC); the connection is closed',
  NBD_BAD_CLIENT_FLAGS: 'the client flags set a bit the server does not know or did not offer; the connection is closed (proto.md "Client flags")',
  NBD_OPTION_TOO_LARGE: 'an option\'s payload is longer than the server reads (limits.maxOptionPayload); it is skipped and answered with NBD_REP_ERR_TOO_BIG',
  NBD_OPTION_INVALID: 'an option\'s payload is malformed: lengths that do not add up, a string over 4096 bytes or not UTF-8, data where none is allowed (NBD_REP_ERR_INVALID)',
  NBD_PAYLOAD_TOO_LARGE: 'a write request carries more data than the server will read (above both limits.maxPayload and 32 MiB); the connection is closed',
  NBD_HANDSHAKE_TIMEOUT: 'a client did not finish option haggling within limits.handshakeTimeoutMs; the connection is closed',
  NBD_TOO_MANY_CONNECTIONS: 'a connection arrived while limits.maxConnections were open; it is closed at once',
  NBD_LIMITS_INVALID: 'an NBD server limit is out of its allowed range (the message names it)',
  NBD_LISTEN_FAILED: 'the NBD server could not listen on its address (port in use, missing privilege, address not on this host)',
  NBD_SERVER_CLOSED: 'the NBD server was asked to listen or accept after close()',
  NBD_TRUNCATED: 'a buffer handed to the NBD codec is shorter than the message it should hold',
  NBD_BAD_REPLY: 'a message from an NBD server is malformed (wrong magic, impossible length); raised by the codec\'s reply decoders',
  NBD_VALUE_OUT_OF_RANGE: 'a value to encode does not fit its NBD wire field (a length over 32 bits, a string over 4096 bytes)',
} as const;

export type NbdErrorCode = keyof typeof ERROR_CODES;

/** Any error raised by the NBD module. */
export class NbdError extends DisklessError {
  override readonly name: string = 'NbdError';
  constructor(
    override readonly code: NbdErrorCode,
    message: string,
    errno?: Errno,
    options?: { cause?: unknown },
  ) {
    super(code, message, errno, options);
  }
}

/**
 * The client broke the framing of the byte stream: nothing after this point
 * can be parsed, so the connection is closed (proto.md: either side MAY
 * initiate a hard disconnect on a violation of a mandatory condition).
 */
export class NbdFramingError extends NbdError {
  override readonly name = 'NbdFramingError';
}

/** An option the server answers with an error reply; option haggling goes on. */
export class NbdOptionError extends NbdError {
  override readonly name = 'NbdOptionError';
  constructor(
    code: NbdErrorCode,
    message: string,
    /** The NBD_REP_ERR_* reply type to send. */
    readonly replyType: number,
  ) {
    super(code, message, 'EINVAL');
  }
}

export function isNbdFramingError(e: unknown): e is NbdFramingError {
  return e instanceof NbdFramingError;
}

const NBD_ERRNO: Record<Errno, number> = {
  EPERM: ERRORS.NBD_EPERM,
  EIO: ERRORS.NBD_EIO,
  ENOMEM: ERRORS.NBD_ENOMEM,
  EINVAL: ERRORS.NBD_EINVAL,
  ENOSPC: ERRORS.NBD_ENOSPC,
  EOVERFLOW: ERRORS.NBD_EOVERFLOW,
  ENOTSUP: ERRORS.NBD_ENOTSUP,
  ESHUTDOWN: ERRORS.NBD_ESHUTDOWN,
};

/**
 * The one place an internal error becomes the error field of a transmission
 * reply. A DisklessError carries the errno its condition corresponds to; a
 * raw system error (a device that let one through) is mapped by its code,
 * with EDQUOT and EFBIG reported as NBD_ENOSPC as proto.md "Error values"
 * asks; anything else is NBD_EIO, the answer that makes a client retry or
 * fail the I/O rather than trust data.
 */
export function nbdErrnoOf(err: unknown): number {
  if (err instanceof DisklessError && err.errno !== undefined) return NBD_ERRNO[err.errno] ?? ERRORS.NBD_EIO;
  const code = (err as { code?: unknown } | null | undefined)?.code;
  if (typeof code === 'string') {
    if (code === 'EDQUOT' || code === 'EFBIG') return ERRORS.NBD_ENOSPC;
    if (code === 'EOPNOTSUPP') return ERRORS.NBD_ENOTSUP;
    if (Object.hasOwn(NBD_ERRNO, code)) return NBD_ERRNO[code as Errno];
  }
  return ERRORS.NBD_EIO;
}

/**
 * The option reply type for an error met while answering an option:
 * the resolver's NBD_EXPORT_UNKNOWN and NBD_EXPORT_FORBIDDEN, an
 * NbdOptionError's own type, a shutting-down device or server as
 * NBD_REP_ERR_SHUTDOWN, and `fallback` for anything else (the session logs
 * the real cause; the client only needs to know the option failed).
 */
export function optionReplyErrorOf(err: unknown, fallback: number): number {
  if (err instanceof NbdOptionError) return err.replyType;
  if (err instanceof DisklessError) {
    if (err.code === 'NBD_EXPORT_UNKNOWN') return REPLY_TYPES.NBD_REP_ERR_UNKNOWN;
    if (err.code === 'NBD_EXPORT_FORBIDDEN') return REPLY_TYPES.NBD_REP_ERR_POLICY;
    if (err.errno === 'ESHUTDOWN') return REPLY_TYPES.NBD_REP_ERR_SHUTDOWN;
  }
  return fallback;
}

export function framingError(code: NbdErrorCode, message: string): NbdFramingError {
  return new NbdFramingError(code, message, 'EINVAL');
}

export function optionInvalid(message: string): NbdOptionError {
  return new NbdOptionError('NBD_OPTION_INVALID', message, REPLY_TYPES.NBD_REP_ERR_INVALID);
}
