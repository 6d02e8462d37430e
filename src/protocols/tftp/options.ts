/**
 * Option negotiation for read requests (RFC 2347 section "Negotiation
 * Protocol"): pure, so every rule is unit-tested without sockets.
 *
 * - Only options the client asked for are acknowledged, in its order; an
 *   option this server does not know is ignored (RFC 2347).
 * - blksize (RFC 2348) and windowsize (RFC 7440 section 3) may be answered
 *   with a smaller value than asked; a value below the RFC minimum, or one
 *   that is not a decimal number, refuses the request with error 8.
 * - timeout (RFC 2349) must be echoed unchanged, so a value outside 1-255 is
 *   refused with error 8.
 * - tsize (RFC 2349) on a read request is answered with the file's size.
 */
import {
  BLKSIZE_MAX, BLKSIZE_MIN, DEFAULT_BLKSIZE, DEFAULT_WINDOWSIZE, OPTIONS, TIMEOUT_MAX, TIMEOUT_MIN, WINDOWSIZE_MAX, WINDOWSIZE_MIN,
} from './constants.js';
import type { TftpOption } from './codec.js';
import { TftpError } from './errors.js';

export interface NegotiationLimits {
  /** Largest blksize for this peer (configured ceiling, already clamped to the link MTU). */
  maxBlksize: number;
  /** Largest windowsize granted. */
  maxWindowsize: number;
  /** Bytes one window may hold (blksize x windowsize): bounds the memory a transfer pins. */
  maxWindowBytes: number;
  /** What tsize reports: the exact number of bytes that will be sent. */
  transferSize: number;
}

export interface Negotiated {
  blksize: number;
  windowsize: number;
  /** Retransmission timeout the client asked for (RFC 2349), or undefined for the server's default. */
  timeoutMs: number | undefined;
  /** The OACK's options; empty when the client asked for none this server knows (then no OACK is sent). */
  oack: TftpOption[];
}

const DECIMAL = /^[0-9]{1,10}$/;

function decimal(option: TftpOption): number {
  if (!DECIMAL.test(option.value)) {
    throw new TftpError('TFTP_BAD_OPTION', `option ${option.name} has value ${JSON.stringify(option.value.slice(0, 32))}, not a decimal number`);
  }
  return Number(option.value);
}

export function negotiate(requested: readonly TftpOption[], limits: NegotiationLimits): Negotiated {
  let blksize = DEFAULT_BLKSIZE;
  let windowsize = DEFAULT_WINDOWSIZE;
  let timeoutMs: number | undefined;
  let windowAsked: number | undefined;
  const accepted: Array<{ name: string; value: () => string }> = [];

  for (const option of requested) {
    switch (option.name) {
      case OPTIONS.BLKSIZE: {
        const n = decimal(option);
        if (n < BLKSIZE_MIN) throw new TftpError('TFTP_BAD_OPTION', `blksize ${n} is below ${BLKSIZE_MIN} (RFC 2348)`);
        blksize = Math.max(BLKSIZE_MIN, Math.min(n, BLKSIZE_MAX, limits.maxBlksize));
        accepted.push({ name: option.name, value: () => String(blksize) });
        break;
      }
      case OPTIONS.TIMEOUT: {
        const n = decimal(option);
        if (n < TIMEOUT_MIN || n > TIMEOUT_MAX) {
          throw new TftpError('TFTP_BAD_OPTION', `timeout ${n} is outside ${TIMEOUT_MIN}-${TIMEOUT_MAX} seconds (RFC 2349)`);
        }
        timeoutMs = n * 1000;
        accepted.push({ name: option.name, value: () => String(n) });
        break;
      }
      case OPTIONS.TSIZE: {
        // A client sends 0 on a read request; the value is checked only for form.
        decimal(option);
        accepted.push({ name: option.name, value: () => String(limits.transferSize) });
        break;
      }
      case OPTIONS.WINDOWSIZE: {
        const n = decimal(option);
        if (n < WINDOWSIZE_MIN) throw new TftpError('TFTP_BAD_OPTION', `windowsize ${n} is below ${WINDOWSIZE_MIN} (RFC 7440)`);
        windowAsked = n;
        accepted.push({ name: option.name, value: () => String(windowsize) });
        break;
      }
      default:
        // RFC 2347: options the server does not support are ignored.
        break;
    }
  }
  if (windowAsked !== undefined) {
    // The window is bounded by memory after blksize is settled, whatever the order of the options.
    const byBytes = Math.max(1, Math.floor(limits.maxWindowBytes / blksize));
    windowsize = Math.max(WINDOWSIZE_MIN, Math.min(windowAsked, WINDOWSIZE_MAX, limits.maxWindowsize, byBytes));
  }
  return { blksize, windowsize, timeoutMs, oack: accepted.map((a) => ({ name: a.name, value: a.value() })) };
}
