/**
 * Incremental decoder of the client-to-server byte stream, as an explicit
 * state machine. Bytes arrive in arbitrary pieces (push()); next() returns
 * the next complete frame, or null when more bytes are needed, keeping
 * partial bytes. Limits are enforced while parsing, before anything large
 * is buffered; a framing error is an NbdFramingError, after which the
 * decoder is FAILED and ignores all further input.
 *
 *   CLIENT_FLAGS ──> OPTION_HEADER ──> OPTION_PAYLOAD ──> OPTION_PENDING
 *                        ^   │                                  │
 *                        │   └─> OPTION_DISCARD (too big) ──────┤
 *                        └──── expectOption() ◄─────────────────┤
 *                                                               │ expectRequests()
 *   REQUEST_HEADER ──> WRITE_PAYLOAD ──> REQUEST_HEADER ◄────────┘
 *        │   └──────> WRITE_DISCARD (too big) ──^
 *        └─ NBD_CMD_DISC ──> DISCONNECTED        (any error) ──> FAILED
 *
 * Options are strictly sequential (proto.md: the client MUST NOT send an
 * option before the final reply to the previous one), and whether the
 * next bytes are an option or a request depends on the server's answer, so
 * after each option the decoder waits in OPTION_PENDING until the session
 * says which comes next. Requests are pipelined and need no such pause.
 *
 * Input is owned or transient. Owned (the default): pushed chunks stay
 * valid, and a write payload that arrived in one chunk is returned as a
 * view of it. Transient (`transientInput`, for a socket read into one
 * reused buffer, lib/socket-reader.ts): a pushed chunk is valid only until
 * release() returns, so no frame refers to it: a write's payload buffer is
 * taken from `allocate` when its header is decoded and filled as the bytes
 * arrive, option payloads are copied, and release() copies whatever is
 * still unconsumed. directTarget() then lets the caller have the rest of a
 * write's payload read straight into that buffer (receivedDirect()).
 */
import { COMMANDS, MAGICS, NBD_PORTABLE_PAYLOAD_LIMIT, SIZES } from './constants.js';
import { decodeOptionHeader, readU64, type RequestHeader } from './codec.js';
import { framingError } from './errors.js';

export const DECODER_STATES = {
  CLIENT_FLAGS: 'CLIENT_FLAGS',
  OPTION_HEADER: 'OPTION_HEADER',
  OPTION_PAYLOAD: 'OPTION_PAYLOAD',
  OPTION_DISCARD: 'OPTION_DISCARD',
  OPTION_PENDING: 'OPTION_PENDING',
  REQUEST_HEADER: 'REQUEST_HEADER',
  WRITE_PAYLOAD: 'WRITE_PAYLOAD',
  WRITE_DISCARD: 'WRITE_DISCARD',
  DISCONNECTED: 'DISCONNECTED',
  FAILED: 'FAILED',
} as const;
export type DecoderState = (typeof DECODER_STATES)[keyof typeof DECODER_STATES];

export interface DecoderOptions {
  /** Where a write payload is gathered (default: a new buffer). */
  allocate?: (size: number) => Buffer;
  /** Pushed chunks are valid only until release() (see above). */
  transientInput?: boolean;
}

export interface DecoderLimits {
  /** Largest option payload read into memory; longer ones are skipped (OPTION_DISCARD). */
  maxOptionPayload: number;
  /** Largest write payload accepted (the advertised maximum payload). */
  maxPayload: number;
}

export type ClientFrame =
  | { kind: 'clientFlags'; flags: number }
  | { kind: 'option'; option: number; payload: Buffer }
  /** An option whose payload was longer than maxOptionPayload; its bytes were skipped. */
  | { kind: 'optionTooBig'; option: number; length: number }
  | RequestFrame
  /**
   * A write whose payload is over maxPayload but within what proto.md says
   * must not be treated as a denial of service: its bytes are skipped
   * (WRITE_DISCARD) and the request is to be failed, not the connection.
   */
  | ({ kind: 'oversizeWrite' } & RequestHeader);

/** A request; a write carries its data in `payload`. */
export interface RequestFrame extends RequestHeader {
  kind: 'request';
  payload?: Buffer;
  /**
   * The payload came from the decoder's `allocate` (it arrived in pieces and
   * was gathered into one buffer) rather than being a view of the received
   * bytes: the session may give it back to its pool once the write is done.
   */
  pooled?: boolean;
}

const EMPTY = Buffer.alloc(0);

export class ClientStreamDecoder {
  private stateNow: DecoderState = DECODER_STATES.CLIENT_FLAGS;
  /** Unconsumed input: chunks[0] from `head` on, then the rest whole. */
  private chunks: Buffer[] = [];
  private head = 0;
  private available = 0;
  /** Option being read or skipped (OPTION_PAYLOAD, OPTION_DISCARD). */
  private option = 0;
  private optionLength = 0;
  /** Write whose payload is being read or skipped. */
  private pending: RequestFrame | null = null;
  /** Transient input: the pending write's payload buffer, and how much of it holds data. */
  private payload: Buffer | null = null;
  private filled = 0;
  /** Bytes still to skip in OPTION_DISCARD / WRITE_DISCARD. */
  private toSkip = 0;
  /** Bytes dropped because they came after NBD_CMD_DISC or a framing error. */
  ignoredBytes = 0;

  private readonly writeDiscardLimit: number;
  private readonly allocate: ((size: number) => Buffer) | undefined;
  private readonly transient: boolean;

  constructor(
    private readonly limits: DecoderLimits,
    options: DecoderOptions = {},
  ) {
    this.allocate = options.allocate;
    this.transient = options.transientInput === true;
    // proto.md "Size constraints": payloads up to 2^25 SHOULD NOT be taken for
    // a denial of service even above the advertised maximum, so writes up to
    // that are read and failed; only beyond both is the connection closed.
    this.writeDiscardLimit = Math.max(limits.maxPayload, NBD_PORTABLE_PAYLOAD_LIMIT);
  }

  get state(): DecoderState {
    return this.stateNow;
  }

  /** Bytes received and not yet consumed. */
  get buffered(): number {
    return this.available;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.stateNow === DECODER_STATES.DISCONNECTED || this.stateNow === DECODER_STATES.FAILED) {
      this.ignoredBytes += chunk.length;
      return;
    }
    this.chunks.push(chunk);
    this.available += chunk.length;
  }

  /** After an option reply that keeps option haggling going. */
  expectOption(): void {
    this.requireState(DECODER_STATES.OPTION_PENDING);
    this.stateNow = DECODER_STATES.OPTION_HEADER;
  }

  /** After NBD_OPT_EXPORT_NAME or a successful NBD_OPT_GO: requests follow. */
  expectRequests(): void {
    this.requireState(DECODER_STATES.OPTION_PENDING);
    this.stateNow = DECODER_STATES.REQUEST_HEADER;
  }

  /**
   * Stops decoding for good (the session is closing); buffered bytes are
   * dropped. A payload buffer being filled is dropped too, never given back
   * to `allocate`'s pool: a read into it may still be under way.
   */
  fail(): void {
    this.stateNow = DECODER_STATES.FAILED;
    this.ignoredBytes += this.available + this.filled;
    this.dropAll();
    this.pending = null;
    this.payload = null;
    this.filled = 0;
  }

  /**
   * Transient input: where the next bytes of the stream may be read
   * straight to. The unfilled rest of the payload of the write being
   * received, when no other byte is buffered (so the next bytes on the
   * stream are that payload's) and at least `min` bytes of it remain; null
   * otherwise. A read into it must not be longer than it is.
   */
  directTarget(min = 1): Buffer | null {
    const payload = this.payload;
    if (payload === null || this.available !== 0 || this.stateNow !== DECODER_STATES.WRITE_PAYLOAD) return null;
    if (payload.length - this.filled < Math.max(min, 1)) return null;
    return payload.subarray(this.filled);
  }

  /**
   * `n` bytes were read into the buffer directTarget() returned last. After
   * fail() or NBD_CMD_DISC they are counted as ignored.
   */
  receivedDirect(n: number): void {
    if (this.stateNow === DECODER_STATES.DISCONNECTED || this.stateNow === DECODER_STATES.FAILED) {
      this.ignoredBytes += n;
      return;
    }
    const payload = this.payload;
    if (payload === null || this.available !== 0 || this.stateNow !== DECODER_STATES.WRITE_PAYLOAD || !(n > 0 && n <= payload.length - this.filled)) {
      throw new Error(`decoder cannot take ${n} bytes read directly in state ${this.stateNow}`);
    }
    this.filled += n;
  }

  /**
   * Transient input: copies the bytes not consumed yet out of the pushed
   * chunks, which the caller may then reuse. Cheap when nothing is left,
   * which is the usual case.
   */
  release(): void {
    if (!this.transient || this.chunks.length === 0) return;
    if (this.available === 0) {
      this.dropAll();
      return;
    }
    const kept = this.copyInto(Buffer.allocUnsafe(this.available), this.available);
    this.chunks = [kept];
    this.head = 0;
  }

  /**
   * The next complete frame, or null when more bytes are needed (or the
   * decoder waits in OPTION_PENDING, DISCONNECTED or FAILED). Throws
   * NbdFramingError on a stream that cannot be parsed; the decoder is then
   * FAILED.
   */
  next(): ClientFrame | null {
    try {
      return this.step();
    } catch (e) {
      this.fail();
      throw e;
    }
  }

  private step(): ClientFrame | null {
    for (;;) {
      switch (this.stateNow) {
        case DECODER_STATES.CLIENT_FLAGS: {
          if (this.available < SIZES.CLIENT_FLAGS) return null;
          const flags = this.readU32();
          this.stateNow = DECODER_STATES.OPTION_HEADER;
          return { kind: 'clientFlags', flags };
        }
        case DECODER_STATES.OPTION_HEADER: {
          if (this.available < SIZES.OPTION_HEADER) return null;
          const h = decodeOptionHeader(this.peek(SIZES.OPTION_HEADER));
          if (!h.magicOk) throw framingError('NBD_BAD_MAGIC', 'option does not start with IHAVEOPT');
          this.skip(SIZES.OPTION_HEADER);
          this.option = h.option;
          this.optionLength = h.length;
          if (h.length > this.limits.maxOptionPayload) {
            this.toSkip = h.length;
            this.stateNow = DECODER_STATES.OPTION_DISCARD;
          } else {
            this.stateNow = DECODER_STATES.OPTION_PAYLOAD;
          }
          continue;
        }
        case DECODER_STATES.OPTION_PAYLOAD: {
          if (this.available < this.optionLength) return null;
          const payload = this.optionLength === 0 ? EMPTY : this.take(this.optionLength);
          this.stateNow = DECODER_STATES.OPTION_PENDING;
          return { kind: 'option', option: this.option, payload };
        }
        case DECODER_STATES.OPTION_DISCARD: {
          this.toSkip -= this.skipUpTo(this.toSkip);
          if (this.toSkip > 0) return null;
          this.stateNow = DECODER_STATES.OPTION_PENDING;
          return { kind: 'optionTooBig', option: this.option, length: this.optionLength };
        }
        case DECODER_STATES.REQUEST_HEADER: {
          if (this.available < SIZES.REQUEST_HEADER) return null;
          // The hot path: one object per request, decoded in place.
          const b = this.peek(SIZES.REQUEST_HEADER);
          const magic = b.readUInt32BE(0);
          if (magic !== MAGICS.NBD_REQUEST_MAGIC) throw framingError('NBD_BAD_MAGIC', `request does not start with NBD_REQUEST_MAGIC (got 0x${magic.toString(16)})`);
          const frame: RequestFrame = {
            kind: 'request',
            flags: b.readUInt16BE(4),
            type: b.readUInt16BE(6),
            cookie: b.readBigUInt64BE(8),
            offset: readU64(b, 16),
            length: b.readUInt32BE(24),
          };
          this.skip(SIZES.REQUEST_HEADER);
          if (frame.type === COMMANDS.NBD_CMD_WRITE && frame.length > 0) {
            if (frame.length > this.limits.maxPayload) {
              if (frame.length > this.writeDiscardLimit) {
                throw framingError('NBD_PAYLOAD_TOO_LARGE', `write of ${frame.length} bytes is over the ${this.writeDiscardLimit}-byte limit`);
              }
              this.toSkip = frame.length;
              this.stateNow = DECODER_STATES.WRITE_DISCARD;
              return { ...frame, kind: 'oversizeWrite' };
            }
            this.pending = frame;
            if (this.transient) {
              this.payload = this.allocate ? this.allocate(frame.length) : Buffer.allocUnsafe(frame.length);
              this.filled = 0;
            }
            this.stateNow = DECODER_STATES.WRITE_PAYLOAD;
            continue;
          }
          if (frame.type === COMMANDS.NBD_CMD_DISC) {
            // proto.md "NBD_CMD_DISC": the client MUST NOT send anything after it.
            this.stateNow = DECODER_STATES.DISCONNECTED;
            this.ignoredBytes += this.available;
            this.dropAll();
          }
          return frame;
        }
        case DECODER_STATES.WRITE_PAYLOAD: {
          const frame = this.pending!;
          const payload = this.payload;
          if (payload !== null) {
            const n = Math.min(this.available, payload.length - this.filled);
            if (n > 0) {
              this.copyInto(payload, n, this.filled);
              this.skip(n);
              this.filled += n;
            }
            if (this.filled < payload.length) return null;
            frame.payload = payload;
            if (this.allocate) frame.pooled = true;
            this.payload = null;
            this.filled = 0;
            this.pending = null;
            this.stateNow = DECODER_STATES.REQUEST_HEADER;
            return frame;
          }
          if (this.available < frame.length) return null;
          const first = this.chunks[0]!;
          if (this.allocate && first.length - this.head < frame.length) {
            frame.payload = this.gather(this.allocate(frame.length), frame.length);
            frame.pooled = true;
          } else {
            frame.payload = this.take(frame.length);
          }
          this.pending = null;
          this.stateNow = DECODER_STATES.REQUEST_HEADER;
          return frame;
        }
        case DECODER_STATES.WRITE_DISCARD: {
          this.toSkip -= this.skipUpTo(this.toSkip);
          if (this.toSkip > 0) return null;
          this.stateNow = DECODER_STATES.REQUEST_HEADER;
          continue;
        }
        case DECODER_STATES.OPTION_PENDING:
        case DECODER_STATES.DISCONNECTED:
        case DECODER_STATES.FAILED:
          return null;
      }
    }
  }

  private requireState(s: DecoderState): void {
    if (this.stateNow !== s) throw new Error(`decoder is in state ${this.stateNow}, not ${s}`);
  }

  private readU32(): number {
    const b = this.peek(4);
    const v = b.readUInt32BE(0);
    this.skip(4);
    return v;
  }

  /**
   * The next n bytes (n <= available) without consuming them: a view into
   * the first chunk when they are contiguous, a copy otherwise.
   */
  private peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length - this.head >= n) return first.subarray(this.head, this.head + n);
    return this.copyInto(Buffer.allocUnsafe(n), n);
  }

  /** Copies the next n bytes (n <= available) into `out` and consumes them. */
  private gather(out: Buffer, n: number): Buffer {
    this.copyInto(out, n);
    this.skip(n);
    return out;
  }

  /** Copies the next n bytes (n <= available) into `out` from `at` on, without consuming them. */
  private copyInto(out: Buffer, n: number, at = 0): Buffer {
    let copied = 0;
    let pos = this.head;
    for (const c of this.chunks) {
      const k = Math.min(c.length - pos, n - copied);
      c.copy(out, at + copied, pos, pos + k);
      copied += k;
      pos = 0;
      if (copied === n) break;
    }
    return out;
  }

  /** Consumes and returns n bytes (n <= available); zero-copy when contiguous and the input is owned. */
  private take(n: number): Buffer {
    const b = this.transient ? this.copyInto(Buffer.allocUnsafe(n), n) : this.peek(n);
    this.skip(n);
    return b;
  }

  /** Consumes n bytes (n <= available). */
  private skip(n: number): void {
    this.available -= n;
    while (n > 0) {
      const first = this.chunks[0]!;
      const left = first.length - this.head;
      if (n < left) {
        this.head += n;
        return;
      }
      n -= left;
      this.chunks.shift();
      this.head = 0;
    }
  }

  private skipUpTo(n: number): number {
    const k = Math.min(n, this.available);
    this.skip(k);
    return k;
  }

  private dropAll(): void {
    this.chunks = [];
    this.head = 0;
    this.available = 0;
  }
}
