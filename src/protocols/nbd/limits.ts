/**
 * Every limit of the NBD server, with its default and its reason. The server
 * takes a Partial<NbdLimits>, fills it from DEFAULT_LIMITS, checks it once
 * (every problem listed) and freezes it.
 */
import { NBD_MAX_BLOCK_STATUS_DESCRIPTORS, NBD_PORTABLE_PAYLOAD_LIMIT } from './constants.js';
import { NbdError } from './errors.js';

export interface NbdLimits {
  /**
   * Largest READ or WRITE payload, advertised as the maximum payload of
   * NBD_INFO_BLOCK_SIZE. proto.md "Size constraints" asks servers to support
   * at least 2^25 when nothing is advertised; 2^25 is also what every client
   * assumes, so it is the default.
   */
  maxPayload: number;
  /** Requests of one connection being served at once; reading stops while this many are. */
  maxInFlight: number;
  /**
   * Payload bytes of one connection held at once (write data received, read
   * buffers not yet sent); reading stops above it. Bounds the memory a
   * connection can pin to about this plus one maximum payload.
   */
  maxInFlightBytes: number;
  /** Reading also stops while the socket holds more unsent reply bytes than this. */
  writeHighWaterMark: number;
  /** Connections open at once (handshake and transmission); more are closed on arrival. */
  maxConnections: number;
  /** Time from connect to the end of option haggling. */
  handshakeTimeoutMs: number;
  /** Options one connection may send before the server gives up on it (a loop or a flood). */
  maxOptions: number;
  /**
   * Longest option payload read into memory. Real options are far shorter
   * (strings are at most 4096 bytes); longer ones are skipped and answered
   * NBD_REP_ERR_TOO_BIG, bounded in time by the handshake timeout.
   */
  maxOptionPayload: number;
  /**
   * Structured reads at least this long ask the device for its extents, and
   * runs of zeroes at least this long are sent as NBD_REPLY_TYPE_OFFSET_HOLE
   * instead of data. Shorter reads cost no extra call.
   */
  minHoleSize: number;
  /** Descriptors in one NBD_REPLY_TYPE_BLOCK_STATUS chunk (proto.md: SHOULD NOT exceed 2^20). */
  maxBlockStatusDescriptors: number;
  /**
   * close() waits this long for requests being served before cutting
   * connections; a closing connection whose client does not read its last
   * replies is cut this long (plus lingerMs) after the server ended it.
   */
  closeTimeoutMs: number;
  /** TCP keepalive probe delay, so a client that vanished releases its export. 0 turns it off. */
  keepAliveMs: number;
  /**
   * After the server ends a connection (NBD_CMD_DISC, a framing error) it
   * keeps draining and dropping input this long for the client to close its
   * side: closing with unread input makes TCP send a reset, which can
   * destroy replies the client has not read yet.
   */
  lingerMs: number;
  /**
   * Bytes of idle read buffers the server keeps for reuse (4 KiB to 4 MiB
   * each); 0 turns the pool off and every read allocates.
   */
  bufferPoolBytes: number;
}

export const DEFAULT_LIMITS: Readonly<NbdLimits> = Object.freeze({
  maxPayload: NBD_PORTABLE_PAYLOAD_LIMIT,
  maxInFlight: 64,
  maxInFlightBytes: 64 * 1024 * 1024,
  writeHighWaterMark: 8 * 1024 * 1024,
  maxConnections: 1024,
  handshakeTimeoutMs: 30_000,
  maxOptions: 256,
  maxOptionPayload: 64 * 1024,
  minHoleSize: 64 * 1024,
  maxBlockStatusDescriptors: 64 * 1024,
  closeTimeoutMs: 10_000,
  keepAliveMs: 30_000,
  lingerMs: 5_000,
  bufferPoolBytes: 16 * 1024 * 1024,
});

/** Ranges each limit must fall in: [min, max], integers. */
const RANGES: Record<keyof NbdLimits, [number, number]> = {
  // The preferred block size advertised is at least 512 and MUST NOT exceed the maximum payload.
  maxPayload: [512, 256 * 1024 * 1024],
  maxInFlight: [1, 65536],
  maxInFlightBytes: [1, 4 * 1024 * 1024 * 1024],
  writeHighWaterMark: [1, 1024 * 1024 * 1024],
  maxConnections: [1, 1_000_000],
  handshakeTimeoutMs: [1, 24 * 3600 * 1000],
  maxOptions: [1, 1_000_000],
  maxOptionPayload: [64, 16 * 1024 * 1024],
  minHoleSize: [512, 1024 * 1024 * 1024],
  maxBlockStatusDescriptors: [1, NBD_MAX_BLOCK_STATUS_DESCRIPTORS],
  closeTimeoutMs: [0, 24 * 3600 * 1000],
  keepAliveMs: [0, 24 * 3600 * 1000],
  lingerMs: [0, 600_000],
  bufferPoolBytes: [0, 1024 * 1024 * 1024],
};

/** Fills `partial` from DEFAULT_LIMITS, checks every value, and freezes the result. */
export function resolveLimits(partial: Partial<NbdLimits> = {}): Readonly<NbdLimits> {
  const out = { ...DEFAULT_LIMITS } as NbdLimits;
  const problems: string[] = [];
  for (const [key, value] of Object.entries(partial) as [keyof NbdLimits, unknown][]) {
    if (value === undefined) continue;
    if (!Object.hasOwn(RANGES, key)) {
      problems.push(`unknown limit "${key}"`);
      continue;
    }
    const [min, max] = RANGES[key];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      problems.push(`${key} must be an integer from ${min} to ${max} (got ${String(value)})`);
      continue;
    }
    out[key] = value;
  }
  if (problems.length > 0) throw new NbdError('NBD_LIMITS_INVALID', `invalid NBD limits: ${problems.join('; ')}`, 'EINVAL');
  return Object.freeze(out);
}
