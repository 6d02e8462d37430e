/**
 * One NBD connection: fixed newstyle option haggling, then the transmission
 * phase over the export the client chose. The session owns its stream, its
 * decoder, its timers and the export it opened; nothing it does reaches
 * another connection. Every request is validated here, at the boundary,
 * before the device is touched (proto.md "Request types", "Error values").
 *
 * Flow control: requests are served concurrently and answered as each
 * completes. The session stops reading its socket (and stops decoding
 * frames already received) while limits.maxInFlight requests or
 * limits.maxInFlightBytes of payload are held, or while the socket holds
 * more than limits.writeHighWaterMark unsent reply bytes; TCP then pushes
 * back on the client.
 *
 * Replies with data are written as a header buffer and the data buffer the
 * device read into, corked together: never copied into one buffer.
 *
 * Input from a TCP socket is read into buffers the session chooses
 * (lib/socket-reader.ts): the rest of a large write's payload straight into
 * the pooled buffer the device will be handed, everything else into one
 * receive buffer the server's sessions share (each read is decoded before
 * the next one is made, and the decoder copies what it keeps). On the
 * bench VM (fio 1 MiB writes at queue depth 8 into an overlay whose pages
 * are already in the page cache) this took the server's CPU from 1.13-1.28
 * to 0.36 s per GB and its rate from 1.0 to 2.7 GB/s: the 64 KiB buffers
 * Node allocates for every read in its ordinary mode set off a major GC
 * every few tens of milliseconds (a fifth of the CPU), and were gathered
 * into the payload with one more copy. Other streams (tests, other
 * transports) are read through 'data' events.
 */
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../../lib/log.js';
import type { BlockDevice, Capabilities, Extent } from '../../storage/block-device.js';
import {
  CLIENT_FLAGS,
  COMMAND_FLAGS,
  COMMANDS,
  ERRORS,
  HANDSHAKE_FLAGS,
  SIZES,
  INFO_TYPES,
  META_CONTEXT_BASE_ALLOCATION,
  META_CONTEXT_NAMESPACE_BASE,
  OPTIONS,
  REPLY_FLAGS,
  REPLY_TYPES,
  STATE_FLAGS,
  STRUCTURED_REPLY_TYPES,
  TRANSMISSION_FLAGS,
  commandName,
  errorName,
  flagNames,
  optionName,
  replyTypeName,
} from './constants.js';
import {
  decodeClientString,
  decodeInfoRequest,
  decodeMetaContextRequest,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeErrorMessage,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeOptionReply,
  encodeRepMetaContext,
  encodeRepServer,
  encodeServerGreeting,
  encodeSimpleReplyHeader,
  encodeStructuredReplyHeader,
  OFFSET_DATA_HEADER_SIZE,
  OFFSET_HOLE_CHUNK_SIZE,
  writeOffsetDataHeader,
  writeOffsetHoleChunk,
  writeSimpleReplyHeader,
  type BlockDescriptor,
  type RequestHeader,
} from './codec.js';
import { ClientStreamDecoder, type ClientFrame } from './decoder.js';
import { readIntoBuffers } from '../../lib/socket-reader.js';
import { NbdOptionError, isNbdFramingError, nbdErrnoOf, optionInvalid, optionReplyErrorOf } from './errors.js';
import type { ExportResolver, OpenedExport, Peer } from './exports.js';
import type { BufferPool } from './buffer-pool.js';
import type { NbdLimits } from './limits.js';

/** Counters of one export, summed over its connections; read by metrics. */
export interface NbdExportStats {
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  flushes: number;
  trims: number;
  zeroes: number;
  caches: number;
  blockStatus: number;
  /** Requests answered with an error (validation or device). */
  errors: number;
  /** Connections in the transmission phase on this export now. */
  connections: number;
  /** Connections that ever entered the transmission phase on this export. */
  connectionsTotal: number;
}

export function newExportStats(): NbdExportStats {
  return { reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, flushes: 0, trims: 0, zeroes: 0, caches: 0, blockStatus: 0, errors: 0, connections: 0, connectionsTotal: 0 };
}

export interface SessionContext {
  resolver: ExportResolver;
  logger: Logger;
  limits: Readonly<NbdLimits>;
  /** Read buffers shared by the server's sessions. */
  buffers: BufferPool;
  /**
   * The buffer socket reads go into, shared by the server's sessions (see
   * the top of this file); absent: each session makes its own.
   */
  receiveBuffer?: Buffer;
  statsFor(exportName: string): NbdExportStats;
}

/** The server offers fixed newstyle and lets clients drop the 124 zeroes. */
export const SERVER_HANDSHAKE_FLAGS = HANDSHAKE_FLAGS.NBD_FLAG_FIXED_NEWSTYLE | HANDSHAKE_FLAGS.NBD_FLAG_NO_ZEROES;
const KNOWN_CLIENT_FLAGS = CLIENT_FLAGS.NBD_FLAG_C_FIXED_NEWSTYLE | CLIENT_FLAGS.NBD_FLAG_C_NO_ZEROES;

/**
 * The id of `base:allocation` in NBD_OPT_SET_META_CONTEXT replies. The only
 * context, so a fixed id; NBD_OPT_LIST_META_CONTEXT replies use 0 as
 * proto.md asks ("reserved and SHOULD be set to zero").
 */
export const BASE_ALLOCATION_CONTEXT_ID = 1;

/**
 * Transmission flags for a device, told truthfully from its capabilities
 * (proto.md "Transmission flags"). FUA is offered where the device has it
 * or can flush (then a FUA write is a write and a flush). Write-side
 * features are not offered on a read-only export. NBD_FLAG_SEND_DF needs
 * structured replies.
 */
export function transmissionFlagsFor(caps: Readonly<Capabilities>, structured: boolean): number {
  const F = TRANSMISSION_FLAGS;
  let flags = F.NBD_FLAG_HAS_FLAGS;
  if (caps.readOnly) flags |= F.NBD_FLAG_READ_ONLY;
  if (caps.flush) flags |= F.NBD_FLAG_SEND_FLUSH;
  if (!caps.readOnly) {
    if (caps.fua || caps.flush) flags |= F.NBD_FLAG_SEND_FUA;
    if (caps.trim) flags |= F.NBD_FLAG_SEND_TRIM;
    if (caps.writeZeroes) {
      flags |= F.NBD_FLAG_SEND_WRITE_ZEROES;
      // proto.md: SEND_FAST_ZERO MUST be 0 without SEND_WRITE_ZEROES.
      if (caps.fastZero) flags |= F.NBD_FLAG_SEND_FAST_ZERO;
    }
  }
  if (structured) flags |= F.NBD_FLAG_SEND_DF;
  if (caps.multiConn) flags |= F.NBD_FLAG_CAN_MULTI_CONN;
  if (caps.cache) flags |= F.NBD_FLAG_SEND_CACHE;
  return flags;
}

/**
 * NBD_INFO_BLOCK_SIZE for a device: minimum 1 (any alignment works), the
 * device's preferred block size made a power of two between 512 and the
 * maximum payload (proto.md "Size constraints"), and the maximum payload.
 */
export function blockSizeFor(device: BlockDevice, maxPayload: number): { minimum: number; preferred: number; maximum: number } {
  let preferred = 512;
  const want = Number.isSafeInteger(device.preferredBlockSize) ? device.preferredBlockSize : 4096;
  while (preferred < want && preferred * 2 <= maxPayload) preferred *= 2;
  return { minimum: 1, preferred, maximum: maxPayload };
}

/** A piece of a structured read: data to read and send, or zeroes sent as a hole. */
export interface ReadPiece {
  offset: number;
  length: number;
  hole: boolean;
}

const SECTOR = 512;

/**
 * Splits [offset, offset+length) into data and hole pieces from the
 * device's extents: runs known to read as zeroes and at least `minHole`
 * long become holes, cut to 512-byte boundaries (proto.md asks for chunks
 * that are multiples of 512 where possible); everything else, including
 * any part the extents do not cover or describe inconsistently, is data.
 */
export function planRead(extents: readonly Extent[], offset: number, length: number, minHole: number): ReadPiece[] {
  const end = offset + length;
  const holes: [number, number][] = [];
  let pos = offset;
  for (const e of extents) {
    if (pos >= end) break;
    if (!Number.isSafeInteger(e.offset) || !Number.isSafeInteger(e.length) || e.length <= 0 || e.offset > pos) break;
    const eEnd = e.offset + e.length;
    if (eEnd <= pos) continue;
    const t = Math.min(eEnd, end);
    if (e.zero) {
      const last = holes[holes.length - 1];
      if (last && last[1] === pos) last[1] = t;
      else holes.push([pos, t]);
    }
    pos = t;
  }
  const pieces: ReadPiece[] = [];
  let at = offset;
  for (const [s0, t0] of holes) {
    const s = s0 === offset ? s0 : Math.ceil(s0 / SECTOR) * SECTOR;
    const t = t0 === end ? t0 : Math.floor(t0 / SECTOR) * SECTOR;
    if (t - s < minHole) continue;
    if (s > at) pieces.push({ offset: at, length: s - at, hole: false });
    pieces.push({ offset: s, length: t - s, hole: true });
    at = t;
  }
  if (at < end) pieces.push({ offset: at, length: end - at, hole: false });
  return pieces;
}

/**
 * base:allocation descriptors for [offset, offset+length) from the device's
 * extents: clipped to the range, equal neighbours merged, at most `max`.
 * Stops at the first gap or inconsistency (proto.md lets a server return
 * fewer descriptors than the range needs, as long as there is one).
 */
export function toDescriptors(extents: readonly Extent[], offset: number, length: number, max: number): BlockDescriptor[] {
  const end = offset + length;
  const out: BlockDescriptor[] = [];
  let pos = offset;
  for (const e of extents) {
    if (pos >= end) break;
    if (!Number.isSafeInteger(e.offset) || !Number.isSafeInteger(e.length) || e.length <= 0 || e.offset > pos) break;
    const eEnd = e.offset + e.length;
    if (eEnd <= pos) continue;
    const t = Math.min(eEnd, end);
    const flags = (e.hole ? STATE_FLAGS.NBD_STATE_HOLE : 0) | (e.zero ? STATE_FLAGS.NBD_STATE_ZERO : 0);
    const last = out[out.length - 1];
    if (last && last.flags === flags) last.length += t - pos;
    else if (out.length < max) out.push({ length: t - pos, flags });
    else break;
    pos = t;
  }
  return out;
}

type Phase = 'handshake' | 'transmission' | 'closing' | 'closed';
type AfterOption = 'option' | 'transmission' | 'abort' | 'reject';

interface Request extends RequestHeader {
  payload?: Buffer;
  pooled?: boolean;
}

/** One read reply laid out in one buffer: each chunk's header in front of the slot its data is read into. */
interface ReadLayout {
  buffer: Buffer;
  pieces: ReadPiece[];
  /** Where each piece's chunk starts in `buffer`, and one more entry: the end. */
  chunkStarts: number[];
  /** Where each data piece's bytes go in `buffer` (-1 for holes). */
  dataStarts: number[];
}

const SIMPLE_HEADER = SIZES.SIMPLE_REPLY_HEADER;
/**
 * Size of the receive buffer a server's sessions share: one read system
 * call takes up to this much of what a client pipelined (128 requests of
 * 4 KiB writes, or a thousand reads).
 */
export const RECEIVE_BUFFER_SIZE = 256 * 1024;
/**
 * A write payload is read straight into its own buffer when at least this
 * much of it is still to come; a smaller rest goes through the receive
 * buffer with what follows it, in the same system call.
 */
const DIRECT_READ_MIN = 16 * 1024;
const EMPTY = Buffer.alloc(0);
const WRITE_COMMANDS = new Set<number>([COMMANDS.NBD_CMD_WRITE, COMMANDS.NBD_CMD_TRIM, COMMANDS.NBD_CMD_WRITE_ZEROES]);

export class NbdSession {
  private phase: Phase = 'handshake';
  private decoder: ClientStreamDecoder;
  /** With socket reads into chosen buffers: the one the next read goes into, when it is a write payload's. */
  private readTarget: Buffer | null = null;
  private ownReceiveBuffer: Buffer | undefined;
  private log: Logger;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private lingerTimer: NodeJS.Timeout | undefined;
  private stallTimer: NodeJS.Timeout | undefined;
  private optionBusy = false;
  private optionsSeen = 0;
  private noZeroes = false;
  private structured = false;
  /** Export name of the last NBD_OPT_SET_META_CONTEXT, and whether it selected base:allocation. */
  private metaExport: string | null = null;
  private metaAllocation = false;
  private opened: OpenedExport | null = null;
  private device: BlockDevice | null = null;
  private stats: NbdExportStats | null = null;
  private transmissionFlags = 0;
  private inFlight = 0;
  private inFlightBytes = 0;
  private idleWaiters: (() => void)[] = [];
  private pumping = false;
  private peerEnded = false;
  private forced = false;
  private requestsServed = 0;
  /** The socket is corked until the end of this turn of the event loop (batch()). */
  private batched = false;
  private readonly onDrain = (): void => this.pump();
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;

  constructor(
    private readonly stream: Duplex,
    readonly peer: Peer,
    private readonly ctx: SessionContext,
  ) {
    this.decoder = this.newDecoder(false);
    this.log = ctx.logger.child({ peer: `${peer.address}:${peer.port}` });
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  private newDecoder(transientInput: boolean): ClientStreamDecoder {
    const ctx = this.ctx;
    return new ClientStreamDecoder(
      { maxOptionPayload: ctx.limits.maxOptionPayload, maxPayload: ctx.limits.maxPayload },
      // Write data is gathered into a pooled buffer, given back once the
      // device has written it (releasePayload).
      { allocate: (size) => ctx.buffers.get(size), transientInput },
    );
  }

  /** Sends the greeting and starts reading. */
  start(): void {
    const s = this.stream;
    let direct = false;
    if (s instanceof Socket) {
      // proto.md "Protocol phases": both sides SHOULD disable Nagle's algorithm.
      s.setNoDelay(true);
      if (this.ctx.limits.keepAliveMs > 0) s.setKeepAlive(true, this.ctx.limits.keepAliveMs);
      const owned = this.decoder;
      this.decoder = this.newDecoder(true);
      direct = readIntoBuffers(s, { next: this.nextReadBuffer, onRead: this.onRead });
      if (!direct) this.decoder = owned;
    }
    if (!direct) s.on('data', (chunk: Buffer) => this.onData(chunk));
    s.on('end', () => this.onEnd());
    s.on('error', (err: Error) => this.log.debug('nbd socket error', { err }));
    s.on('close', () => void this.onClose());
    s.on('drain', this.onDrain);
    this.handshakeTimer = setTimeout(() => {
      this.log.warn('nbd handshake timed out', { code: 'NBD_HANDSHAKE_TIMEOUT', timeoutMs: this.ctx.limits.handshakeTimeoutMs });
      this.abortConnection();
    }, this.ctx.limits.handshakeTimeoutMs);
    this.handshakeTimer.unref?.();
    this.log.debug('nbd connection opened', { reads: direct ? 'into chosen buffers' : 'data events' });
    this.send(encodeServerGreeting(SERVER_HANDSHAKE_FLAGS));
    this.updateFlow();
  }

  /** Export this session is in transmission on, if any. */
  get exportName(): string | undefined {
    return this.opened?.name;
  }

  /**
   * Ends the session on server shutdown: option haggling is cut at once;
   * in transmission, reading stops and requests being served are finished
   * (proto.md: a server SHOULD wait for in-flight requests before it
   * disconnects), then the connection is closed.
   */
  shutdown(): void {
    if (this.phase === 'handshake') this.abortConnection();
    else this.closeGracefully('server is shutting down');
  }

  /** Closes the connection now and releases the export without waiting for requests in flight. */
  destroy(): void {
    this.forced = true;
    this.stream.destroy();
    for (const w of this.idleWaiters.splice(0)) w();
  }

  // -------------------------------------------------------------------------
  // Input

  private onData(chunk: Buffer): void {
    if (this.phase === 'closed') return;
    this.decoder.push(chunk);
    if (this.phase !== 'closing') this.pump();
  }

  /**
   * The buffer the next socket read goes into: the rest of the payload
   * being received when the decoder can take it directly, else the shared
   * receive buffer.
   */
  private readonly nextReadBuffer = (): Buffer => {
    const target = this.decoder.directTarget(DIRECT_READ_MIN);
    this.readTarget = target;
    return target ?? this.ctx.receiveBuffer ?? (this.ownReceiveBuffer ??= Buffer.allocUnsafeSlow(RECEIVE_BUFFER_SIZE));
  };

  /** `n` bytes were read into `buf` (from nextReadBuffer()); they are decoded, and what is kept copied, before this returns. */
  private readonly onRead = (n: number, buf: Buffer): void => {
    const d = this.decoder;
    if (buf === this.readTarget) d.receivedDirect(n);
    else d.push(buf.subarray(0, n));
    if (this.phase !== 'closed' && this.phase !== 'closing') this.pump();
    d.release();
  };

  private onEnd(): void {
    this.peerEnded = true;
    if (this.phase === 'closing') {
      // Both sides are done once our end() has gone out; until then the
      // replies still owed are written (the peer may read after its FIN),
      // and the 'finish' handler of closeGracefully() closes.
      if (this.stream.writableFinished) this.stream.destroy();
      return;
    }
    this.pump();
  }

  private canTakeRequest(): boolean {
    const l = this.ctx.limits;
    return this.inFlight < l.maxInFlight && this.inFlightBytes < l.maxInFlightBytes && this.stream.writableLength < l.writeHighWaterMark;
  }

  /**
   * Decodes and dispatches what can be, then pauses or resumes reading. A
   * bug met here (an exception nothing below caught) ends this connection,
   * never the process.
   */
  private pump(): void {
    try {
      this.pumpFrames();
    } catch (err) {
      this.pumping = false;
      this.log.error('nbd session failed; closing the connection', { err });
      this.abortConnection();
    }
  }

  private pumpFrames(): void {
    if (this.pumping) return;
    this.pumping = true;
    // Replies made while decoding this batch (requests served at once) leave
    // in one write when it ends.
    const s = this.stream;
    s.cork();
    try {
      for (;;) {
        if (this.phase === 'closing' || this.phase === 'closed') return;
        if (this.phase === 'transmission' && !this.canTakeRequest()) break;
        let frame: ClientFrame | null;
        try {
          frame = this.decoder.next();
        } catch (err) {
          this.onFramingError(err);
          return;
        }
        if (frame === null) {
          if (this.peerEnded && !this.optionBusy) {
            this.closeGracefully('client closed its side of the connection');
            return;
          }
          break;
        }
        this.handleFrame(frame);
      }
    } finally {
      this.pumping = false;
      s.uncork();
    }
    this.updateFlow();
  }

  private updateFlow(): void {
    const s = this.stream;
    let read: boolean;
    if (this.phase === 'handshake') read = !this.optionBusy;
    else if (this.phase === 'transmission') read = this.canTakeRequest();
    else read = this.phase === 'closing'; // drain and drop input while closing
    if (read) s.resume();
    else s.pause();
  }

  private onFramingError(err: unknown): void {
    if (isNbdFramingError(err)) this.log.warn('nbd framing error, closing connection', { code: err.code, err: err.message });
    else this.log.error('nbd decoder failed', { err });
    this.closeGracefully('framing error');
  }

  private handleFrame(frame: ClientFrame): void {
    switch (frame.kind) {
      case 'clientFlags':
        this.onClientFlags(frame.flags);
        return;
      case 'option':
      case 'optionTooBig':
        this.optionsSeen++;
        if (this.optionsSeen > this.ctx.limits.maxOptions) {
          this.log.warn('nbd client sent too many options, closing', { options: this.optionsSeen });
          this.abortConnection();
          return;
        }
        this.optionBusy = true;
        void this.runOption(frame);
        return;
      case 'request':
      case 'oversizeWrite':
        this.onRequest(frame);
        return;
    }
  }

  // -------------------------------------------------------------------------
  // Handshake (proto.md "Fixed newstyle negotiation", "Option types")

  private onClientFlags(flags: number): void {
    // proto.md "Client flags": the server MUST drop the connection on an
    // unknown flag. A client without NBD_FLAG_C_FIXED_NEWSTYLE is served
    // as fixed newstyle anyway, which the spec permits.
    if ((flags & ~KNOWN_CLIENT_FLAGS) !== 0) {
      this.log.warn('nbd client sent unknown client flags, closing', { code: 'NBD_BAD_CLIENT_FLAGS', flags });
      this.abortConnection();
      return;
    }
    this.noZeroes = (flags & CLIENT_FLAGS.NBD_FLAG_C_NO_ZEROES) !== 0;
  }

  private async runOption(frame: ClientFrame & { kind: 'option' | 'optionTooBig' }): Promise<void> {
    let next: AfterOption;
    try {
      next = await this.answerOption(frame);
    } catch (err) {
      this.log.error('nbd option failed unexpectedly', { option: optionName(frame.option), err });
      next = 'reject';
    }
    this.optionBusy = false;
    this.notifyIdle();
    if (this.phase !== 'handshake') return;
    switch (next) {
      case 'option':
        this.decoder.expectOption();
        break;
      case 'transmission':
        this.decoder.expectRequests();
        this.enterTransmission();
        break;
      case 'abort':
        this.closeGracefully('client aborted option haggling');
        return;
      case 'reject':
        this.abortConnection();
        return;
    }
    this.pump();
  }

  private async answerOption(frame: ClientFrame & { kind: 'option' | 'optionTooBig' }): Promise<AfterOption> {
    const O = OPTIONS;
    const option = frame.option;
    if (frame.kind === 'optionTooBig') {
      this.log.debug('nbd option too large, skipped', { option: optionName(option), length: frame.length, code: 'NBD_OPTION_TOO_LARGE' });
      // NBD_OPT_EXPORT_NAME cannot be answered with an error: the session ends.
      if (option === O.NBD_OPT_EXPORT_NAME) return 'reject';
      this.replyOption(option, REPLY_TYPES.NBD_REP_ERR_TOO_BIG, `option data of ${frame.length} bytes is over the ${this.ctx.limits.maxOptionPayload}-byte limit`);
      return 'option';
    }
    const payload = frame.payload;
    try {
      switch (option) {
        case O.NBD_OPT_EXPORT_NAME:
          return await this.optExportName(payload);
        case O.NBD_OPT_ABORT:
          // proto.md: the server MUST reply with NBD_REP_ACK (and ignore any data).
          this.replyOption(option, REPLY_TYPES.NBD_REP_ACK);
          return 'abort';
        case O.NBD_OPT_LIST:
          return await this.optList(payload);
        case O.NBD_OPT_INFO:
        case O.NBD_OPT_GO:
          return await this.optInfoGo(option, payload);
        case O.NBD_OPT_STRUCTURED_REPLY:
          if (payload.length !== 0) throw optionInvalid('NBD_OPT_STRUCTURED_REPLY takes no data');
          if (this.structured) throw optionInvalid('structured replies are already negotiated');
          this.structured = true;
          this.replyOption(option, REPLY_TYPES.NBD_REP_ACK);
          return 'option';
        case O.NBD_OPT_LIST_META_CONTEXT:
        case O.NBD_OPT_SET_META_CONTEXT:
          return this.optMetaContext(option, payload);
        default:
          // NBD_OPT_STARTTLS included: this server runs in NOTLS mode
          // (proto.md "NOTLS mode" allows NBD_REP_ERR_UNSUP).
          this.replyOption(option, REPLY_TYPES.NBD_REP_ERR_UNSUP, `option ${optionName(option)} is not supported`);
          return 'option';
      }
    } catch (err) {
      if (err instanceof NbdOptionError) {
        this.log.debug('nbd option refused', { option: optionName(option), reply: replyTypeName(err.replyType), err: err.message });
        this.replyOption(option, err.replyType, err.message);
        return 'option';
      }
      throw err;
    }
  }

  private async optExportName(payload: Buffer): Promise<AfterOption> {
    let name: string;
    try {
      name = decodeClientString(payload, 'export name');
    } catch (err) {
      this.log.warn('nbd NBD_OPT_EXPORT_NAME with an invalid name, closing', { err: (err as Error).message });
      return 'reject';
    }
    const opened = await this.openExport(name);
    if (!opened) return 'reject'; // proto.md: the server MUST terminate the session
    if (this.phase !== 'handshake') {
      await this.releaseExport(opened);
      return 'reject';
    }
    const flags = transmissionFlagsFor(opened.device.capabilities, this.structured);
    if (this.metaExport !== name) this.metaAllocation = false;
    this.bind(opened, name, flags);
    this.send(encodeExportNameReply(opened.device.size, flags, this.noZeroes));
    return 'transmission';
  }

  private async optList(payload: Buffer): Promise<AfterOption> {
    const option = OPTIONS.NBD_OPT_LIST;
    if (payload.length !== 0) throw optionInvalid('NBD_OPT_LIST takes no data');
    let exports;
    try {
      exports = await this.ctx.resolver.list(this.peer);
    } catch (err) {
      const type = optionReplyErrorOf(err, REPLY_TYPES.NBD_REP_ERR_PLATFORM);
      this.log.warn('nbd export list failed', { err, reply: replyTypeName(type) });
      this.replyOption(option, type, 'the export list is not available');
      return 'option';
    }
    if (this.phase !== 'handshake') return 'reject';
    const replies: Buffer[] = [];
    for (const e of exports) {
      try {
        replies.push(encodeOptionReply(option, REPLY_TYPES.NBD_REP_SERVER, encodeRepServer(e.name, e.description)));
      } catch (err) {
        this.log.warn('nbd export cannot be listed', { export: e.name, err });
      }
    }
    replies.push(encodeOptionReply(option, REPLY_TYPES.NBD_REP_ACK));
    this.send(...replies);
    return 'option';
  }

  private async optInfoGo(option: number, payload: Buffer): Promise<AfterOption> {
    const req = decodeInfoRequest(payload);
    const opened = await this.openExport(req.name, option);
    if (!opened) return 'option';
    if (this.phase !== 'handshake') {
      await this.releaseExport(opened);
      return 'reject';
    }
    const device = opened.device;
    const flags = transmissionFlagsFor(device.capabilities, this.structured);
    const asked = new Set(req.infoRequests);
    const replies: Buffer[] = [];
    try {
      const info = (p: Buffer): void => void replies.push(encodeOptionReply(option, REPLY_TYPES.NBD_REP_INFO, p));
      // NBD_INFO_EXPORT MUST be sent before a successful NBD_REP_ACK.
      info(encodeInfoExport(device.size, flags));
      if (asked.has(INFO_TYPES.NBD_INFO_NAME)) info(encodeInfoString(INFO_TYPES.NBD_INFO_NAME, opened.name));
      if (asked.has(INFO_TYPES.NBD_INFO_DESCRIPTION) && opened.description) info(encodeInfoString(INFO_TYPES.NBD_INFO_DESCRIPTION, opened.description));
      // Always sent: the constraints are the defaults with minimum 1, so a
      // client that did not ask loses nothing (proto.md allows unrequested info).
      info(encodeInfoBlockSize(blockSizeFor(device, this.ctx.limits.maxPayload)));
      replies.push(encodeOptionReply(option, REPLY_TYPES.NBD_REP_ACK));
    } catch (err) {
      // A device whose size or name cannot be put on the wire.
      this.log.error('nbd export cannot be described', { export: opened.name, err });
      await this.releaseExport(opened);
      this.replyOption(option, REPLY_TYPES.NBD_REP_ERR_UNKNOWN, 'the export cannot be described');
      return 'option';
    }
    if (option === OPTIONS.NBD_OPT_INFO) {
      await this.releaseExport(opened);
      this.send(...replies);
      return 'option';
    }
    // proto.md: block status needs the final NBD_OPT_SET_META_CONTEXT to name the same export.
    if (this.metaExport !== req.name) this.metaAllocation = false;
    this.bind(opened, req.name, flags);
    this.send(...replies);
    return 'transmission';
  }

  /**
   * NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT with the one
   * context this server has, `base:allocation` (proto.md "Metadata
   * querying", "The base: metadata namespace"). Contexts do not depend on
   * the export (base:allocation is offered on every device, reported as
   * all data where the device has no extents), so the export is not opened
   * here; NBD_OPT_GO checks the name matches.
   */
  private optMetaContext(option: number, payload: Buffer): AfterOption {
    const set = option === OPTIONS.NBD_OPT_SET_META_CONTEXT;
    // proto.md: SET replaces all previously set contexts, also when it fails.
    if (set) {
      this.metaAllocation = false;
      this.metaExport = null;
    }
    // SET MUST NOT come before structured replies (server SHOULD answer
    // NBD_REP_ERR_INVALID). LIST only SHOULD NOT; it is answered, as it
    // changes nothing.
    if (set && !this.structured) throw optionInvalid('NBD_OPT_SET_META_CONTEXT needs NBD_OPT_STRUCTURED_REPLY first');
    const req = decodeMetaContextRequest(payload);
    let allocation = !set && req.queries.length === 0; // LIST with no query lists everything
    for (const q of req.queries) {
      const colon = q.indexOf(':');
      if (colon <= 0) throw optionInvalid(`query "${q}" does not start with a namespace and a colon`);
      if (q === META_CONTEXT_BASE_ALLOCATION) allocation = true;
      // "base:" is a wildcard for LIST and MUST be ignored by SET; other
      // leaf names and other namespaces MUST be ignored.
      else if (q === META_CONTEXT_NAMESPACE_BASE && !set) allocation = true;
    }
    const replies: Buffer[] = [];
    if (allocation) {
      const id = set ? BASE_ALLOCATION_CONTEXT_ID : 0;
      replies.push(encodeOptionReply(option, REPLY_TYPES.NBD_REP_META_CONTEXT, encodeRepMetaContext(id, META_CONTEXT_BASE_ALLOCATION)));
    }
    replies.push(encodeOptionReply(option, REPLY_TYPES.NBD_REP_ACK));
    if (set) {
      this.metaExport = req.name;
      this.metaAllocation = allocation;
    }
    this.send(...replies);
    return 'option';
  }

  /**
   * Opens an export through the resolver. On failure: with `replyTo`, an
   * error reply to that option (option haggling goes on); without, nothing
   * (NBD_OPT_EXPORT_NAME, whose failure ends the session).
   */
  private async openExport(name: string, replyTo?: number): Promise<OpenedExport | null> {
    let opened: OpenedExport;
    try {
      opened = await this.ctx.resolver.open(name, this.peer);
    } catch (err) {
      const type = optionReplyErrorOf(err, REPLY_TYPES.NBD_REP_ERR_UNKNOWN);
      const known = type === REPLY_TYPES.NBD_REP_ERR_UNKNOWN || type === REPLY_TYPES.NBD_REP_ERR_POLICY;
      const fields = { export: name, reply: replyTypeName(type), code: (err as { code?: unknown }).code, err };
      if (known && (err as { code?: unknown }).code !== undefined) this.log.info('nbd export refused', fields);
      else this.log.warn('nbd export could not be opened', fields);
      if (replyTo !== undefined) {
        const text =
          type === REPLY_TYPES.NBD_REP_ERR_POLICY ? `export "${name}" is not allowed` :
          type === REPLY_TYPES.NBD_REP_ERR_SHUTDOWN ? 'server is shutting down' :
          `export "${name}" is not available`;
        this.replyOption(replyTo, type, text);
      }
      return null;
    }
    if (!Number.isSafeInteger(opened.device.size) || opened.device.size < 0) {
      this.log.error('nbd export has an invalid size', { export: name, size: opened.device.size });
      await this.releaseExport(opened);
      if (replyTo !== undefined) this.replyOption(replyTo, REPLY_TYPES.NBD_REP_ERR_UNKNOWN, `export "${name}" is not available`);
      return null;
    }
    return opened;
  }

  private async releaseExport(opened: OpenedExport): Promise<void> {
    try {
      await opened.release();
    } catch (err) {
      this.log.warn('nbd export release failed', { export: opened.name, err });
    }
  }

  private bind(opened: OpenedExport, requestedName: string, flags: number): void {
    this.opened = opened;
    this.device = opened.device;
    this.transmissionFlags = flags;
    this.stats = this.ctx.statsFor(opened.name);
    this.stats.connections++;
    this.stats.connectionsTotal++;
    this.log = this.log.child({ export: opened.name });
    this.log.info('nbd export opened', {
      ...(requestedName === opened.name ? {} : { requested: requestedName }),
      size: opened.device.size,
      flags: flagNames(TRANSMISSION_FLAGS, flags),
      structured: this.structured,
      baseAllocation: this.metaAllocation,
    });
  }

  private enterTransmission(): void {
    this.phase = 'transmission';
    clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
  }

  private replyOption(option: number, type: number, message?: string): void {
    this.send(encodeOptionReply(option, type, message ? encodeErrorMessage(message) : undefined));
  }

  // -------------------------------------------------------------------------
  // Transmission (proto.md "Transmission", "Request types")

  private onRequest(frame: ClientFrame & { kind: 'request' | 'oversizeWrite' }): void {
    const req: Request = frame;
    if (frame.kind === 'oversizeWrite') {
      // Its data was read and dropped; the client MUST NOT send more than
      // the advertised maximum payload.
      this.replyError(req, ERRORS.NBD_EINVAL, `write of ${frame.length} bytes is over the maximum payload of ${this.ctx.limits.maxPayload}`);
      return;
    }
    if (req.type === COMMANDS.NBD_CMD_DISC) {
      // proto.md: handle all outstanding requests, then close. No reply.
      this.closeGracefully('client sent NBD_CMD_DISC');
      return;
    }
    const invalid = this.validate(req);
    if (invalid) {
      this.releasePayload(req);
      this.replyError(req, invalid[0], invalid[1]);
      return;
    }
    // The device answers most reads and writes at once (page cache, maps in
    // memory): then the reply is made here, in the turn that decoded the
    // request, and leaves with the batch (pumpFrames).
    if (req.type === COMMANDS.NBD_CMD_READ ? this.readNow(req) : req.type === COMMANDS.NBD_CMD_WRITE && this.writeNow(req)) {
      this.requestsServed++;
      return;
    }
    const cost = req.type === COMMANDS.NBD_CMD_READ || req.type === COMMANDS.NBD_CMD_WRITE ? req.length : 0;
    this.inFlight++;
    this.inFlightBytes += cost;
    this.execute(req)
      .catch((err: unknown) => {
        this.log.error('nbd request handling failed; closing the connection', { command: commandName(req.type), err });
        this.abortConnection();
      })
      .finally(() => {
        this.inFlight--;
        this.inFlightBytes -= cost;
        this.requestsServed++;
        this.notifyIdle();
        this.pump();
      });
  }

  /** [error, message] when the request must be refused before the device sees it. */
  private validate(req: Request): [number, string] | null {
    const C = COMMANDS;
    const F = COMMAND_FLAGS;
    const T = TRANSMISSION_FLAGS;
    const E = ERRORS;
    const tf = this.transmissionFlags;
    const device = this.device!;
    const name = (): string => commandName(req.type);

    // proto.md "Command flags": FUA is valid on every command once
    // negotiated; the others only on their own command and when offered.
    let allowed = (tf & T.NBD_FLAG_SEND_FUA) !== 0 ? F.NBD_CMD_FLAG_FUA : 0;
    switch (req.type) {
      case C.NBD_CMD_READ:
        if ((tf & T.NBD_FLAG_SEND_DF) !== 0) allowed |= F.NBD_CMD_FLAG_DF;
        break;
      case C.NBD_CMD_WRITE_ZEROES:
        allowed |= F.NBD_CMD_FLAG_NO_HOLE;
        if ((tf & T.NBD_FLAG_SEND_FAST_ZERO) !== 0) allowed |= F.NBD_CMD_FLAG_FAST_ZERO;
        break;
      case C.NBD_CMD_BLOCK_STATUS:
        allowed |= F.NBD_CMD_FLAG_REQ_ONE;
        break;
      case C.NBD_CMD_WRITE:
      case C.NBD_CMD_FLUSH:
      case C.NBD_CMD_TRIM:
      case C.NBD_CMD_CACHE:
        break;
      default:
        // proto.md "Error values": NBD_EINVAL for an unknown command.
        return [E.NBD_EINVAL, `unknown command ${name()}`];
    }
    const bad = req.flags & ~allowed;
    if (bad !== 0) return [E.NBD_EINVAL, `flags ${flagNames(COMMAND_FLAGS, bad).join(',')} are not valid on ${name()}`];

    // proto.md "Error values": NBD_EPERM for a write or trim on a read-only export.
    if (WRITE_COMMANDS.has(req.type) && device.capabilities.readOnly) return [E.NBD_EPERM, 'export is read-only'];

    switch (req.type) {
      case C.NBD_CMD_FLUSH:
        if ((tf & T.NBD_FLAG_SEND_FLUSH) === 0) return [E.NBD_EINVAL, 'flush is not supported on this export'];
        // proto.md "NBD_CMD_FLUSH": offset and length are reserved and MUST be zero.
        if (req.offset !== 0 || req.length !== 0) return [E.NBD_EINVAL, 'flush offset and length must be zero'];
        return null;
      case C.NBD_CMD_TRIM:
        if ((tf & T.NBD_FLAG_SEND_TRIM) === 0) return [E.NBD_EINVAL, 'trim is not supported on this export'];
        break;
      case C.NBD_CMD_WRITE_ZEROES:
        if ((tf & T.NBD_FLAG_SEND_WRITE_ZEROES) === 0) return [E.NBD_EINVAL, 'write zeroes is not supported on this export'];
        break;
      case C.NBD_CMD_BLOCK_STATUS:
        // proto.md: servers SHOULD reply NBD_EINVAL without a selected context.
        if (!this.metaAllocation) return [E.NBD_EINVAL, 'no metadata context was negotiated for this export'];
        break;
    }

    // proto.md "Error values": NBD_ENOSPC for writes (and write zeroes) past
    // the end, NBD_EINVAL for other requests past the end.
    if (!Number.isSafeInteger(req.offset) || req.offset + req.length > device.size) {
      const e = req.type === C.NBD_CMD_WRITE || req.type === C.NBD_CMD_WRITE_ZEROES ? E.NBD_ENOSPC : E.NBD_EINVAL;
      return [e, `offset ${req.offset} + length ${req.length} is past the end of the export (${device.size} bytes)`];
    }
    if (req.type === C.NBD_CMD_READ && req.length > this.ctx.limits.maxPayload) {
      // Simple replies cannot carry it; with structured replies proto.md lets
      // the server refuse a large read up front with NBD_EOVERFLOW.
      return [this.structured ? E.NBD_EOVERFLOW : E.NBD_EINVAL, `read of ${req.length} bytes is over the maximum payload of ${this.ctx.limits.maxPayload}`];
    }
    if (req.type === C.NBD_CMD_BLOCK_STATUS && req.length === 0) return [E.NBD_EINVAL, 'block status of zero bytes'];
    return null;
  }

  private async execute(req: Request): Promise<void> {
    const C = COMMANDS;
    const device = this.device!;
    const stats = this.stats!;
    const caps = device.capabilities;
    const fua = (req.flags & COMMAND_FLAGS.NBD_CMD_FLAG_FUA) !== 0 && WRITE_COMMANDS.has(req.type);
    // FUA on a device without it: the write, then a flush (see transmissionFlagsFor).
    const emulateFua = fua && !caps.fua;
    try {
      switch (req.type) {
        case C.NBD_CMD_READ:
          await this.read(req);
          return;
        case C.NBD_CMD_WRITE:
          if (req.length > 0) {
            try {
              await device.write(req.offset, req.payload!, { fua: fua && !emulateFua });
            } finally {
              this.releasePayload(req);
            }
            if (emulateFua) await device.flush();
          }
          stats.writes++;
          stats.bytesWritten += req.length;
          break;
        case C.NBD_CMD_FLUSH:
          await device.flush();
          stats.flushes++;
          break;
        case C.NBD_CMD_TRIM:
          if (req.length > 0) {
            await device.trim(req.offset, req.length, { fua: fua && !emulateFua });
            if (emulateFua) await device.flush();
          }
          stats.trims++;
          break;
        case C.NBD_CMD_WRITE_ZEROES: {
          const fast = (req.flags & COMMAND_FLAGS.NBD_CMD_FLAG_FAST_ZERO) !== 0;
          if (req.length > 0) {
            await device.zero(req.offset, req.length, {
              fua: fua && !emulateFua,
              mayTrim: (req.flags & COMMAND_FLAGS.NBD_CMD_FLAG_NO_HOLE) === 0,
              fast,
            });
            if (emulateFua) await device.flush();
          }
          stats.zeroes++;
          break;
        }
        case C.NBD_CMD_CACHE:
          // proto.md: clients send NBD_CMD_CACHE even where it was not
          // offered; without device support it is a successful no-op.
          if (caps.cache && req.length > 0) await device.cache(req.offset, req.length);
          stats.caches++;
          break;
        case C.NBD_CMD_BLOCK_STATUS:
          await this.blockStatus(req);
          return;
      }
      this.send(encodeSimpleReplyHeader(0, req.cookie));
    } catch (err) {
      this.replyDeviceError(req, err);
    }
  }

  /**
   * NBD_CMD_READ. The reply is laid out in one pooled buffer (layoutRead):
   * a simple reply's header and the data, or, with structured replies, one
   * NBD_REPLY_TYPE_OFFSET_DATA chunk, or for reads at least
   * limits.minHoleSize long on a device that reports extents (and without
   * NBD_CMD_FLAG_DF) data chunks and NBD_REPLY_TYPE_OFFSET_HOLE chunks for
   * the runs of zeroes, which are then neither read nor sent. The device
   * reads each piece straight into its slot behind its chunk header, and
   * the reply leaves as that one buffer: no copy, one write.
   *
   * readNow() serves it at once when the device can (tryReadSync, and
   * tryExtentsSync for the plan of holes); read() is the asynchronous path.
   */
  private readNow(req: Request): boolean {
    const device = this.device!;
    if (!device.tryReadSync || req.length === 0) return false;
    let pieces: ReadPiece[] | null = null;
    if (this.wantsHoles(req)) {
      const extents = device.tryExtentsSync?.(req.offset, req.length);
      if (extents === undefined) return false;
      pieces = planRead(extents, req.offset, req.length, this.ctx.limits.minHoleSize);
    }
    const layout = this.layoutRead(req, pieces);
    const buffer = layout.buffer;
    let done = true;
    try {
      for (let i = 0; i < layout.pieces.length && done; i++) {
        const p = layout.pieces[i]!;
        if (p.hole) continue;
        const at = layout.dataStarts[i]!;
        done = device.tryReadSync(p.offset, p.length, buffer.subarray(at, at + p.length));
      }
    } catch {
      // read() tries again and reports the failure, per piece where it can.
      done = false;
    }
    if (!done) {
      this.ctx.buffers.put(buffer);
      return false;
    }
    this.sendPooled(buffer);
    const stats = this.stats!;
    stats.reads++;
    stats.bytesRead += req.length;
    return true;
  }

  private async read(req: Request): Promise<void> {
    const device = this.device!;
    const stats = this.stats!;
    const { offset, length, cookie } = req;
    const DONE = REPLY_FLAGS.NBD_REPLY_FLAG_DONE;
    if (length === 0) {
      // Unspecified by proto.md; answered as an empty success.
      this.send(this.structured ? encodeStructuredReplyHeader({ flags: DONE, type: STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_NONE, cookie, length: 0 }) : encodeSimpleReplyHeader(0, cookie));
      stats.reads++;
      return;
    }
    let pieces: ReadPiece[] | null = null;
    if (this.wantsHoles(req)) {
      try {
        pieces = planRead(await device.extents(offset, length), offset, length, this.ctx.limits.minHoleSize);
      } catch (err) {
        // The extents are an optimisation: read it all as data instead.
        this.log.debug('nbd extents for a read failed; sending data', { offset, length, err });
      }
    }
    const layout = this.layoutRead(req, pieces);
    const buffer = layout.buffer;
    const failures: unknown[] = [];
    let failed = 0;
    const readPiece = async (i: number): Promise<void> => {
      const p = layout.pieces[i]!;
      const at = layout.dataStarts[i]!;
      const slot = buffer.subarray(at, at + p.length);
      try {
        const got = await device.read(p.offset, p.length, slot);
        // The device should have read into `slot`; a device that returned
        // another buffer has its bytes copied there.
        if (got.buffer !== slot.buffer || got.byteOffset !== slot.byteOffset) got.copy(slot, 0, 0, p.length);
      } catch (err) {
        failures[i] = err;
        failed++;
      }
    };
    if (layout.pieces.length === 1) {
      if (!layout.pieces[0]!.hole) await readPiece(0);
    } else {
      const reads: Promise<void>[] = [];
      for (let i = 0; i < layout.pieces.length; i++) if (!layout.pieces[i]!.hole) reads.push(readPiece(i));
      await Promise.all(reads);
    }

    if (failed === 0) {
      this.sendPooled(buffer);
      stats.reads++;
      stats.bytesRead += length;
      return;
    }
    const pool = this.ctx.buffers;
    if (!this.structured) {
      pool.put(buffer);
      this.replyDeviceError(req, failures[0]);
      return;
    }
    const s = this.stream;
    if (s.destroyed || s.writableEnded) {
      pool.put(buffer);
      return;
    }
    // proto.md: NBD_REPLY_TYPE_ERROR_OFFSET tells which part failed; the
    // other chunks of the reply stay usable.
    this.batch();
    for (let i = 0; i < layout.pieces.length; i++) {
      const p = layout.pieces[i]!;
      const err = failures[i];
      if (err === undefined) {
        s.write(buffer.subarray(layout.chunkStarts[i]!, layout.chunkStarts[i + 1]!));
        continue;
      }
      const errno = nbdErrnoOf(err);
      this.log.warn('nbd read failed', { offset: p.offset, length: p.length, error: errorName(errno), err });
      const flags = i === layout.pieces.length - 1 ? DONE : 0;
      s.write(encodeErrorChunk(flags, cookie, errno, `read failed at offset ${p.offset}${codeSuffix(err)}`, p.offset));
    }
    // Chunks are written in order: once the last one is out, so is the buffer.
    s.write(EMPTY, () => pool.put(buffer));
    stats.errors++;
  }

  /** A structured read long enough to look for holes in (see read()). */
  private wantsHoles(req: Request): boolean {
    return (
      this.structured &&
      (req.flags & COMMAND_FLAGS.NBD_CMD_FLAG_DF) === 0 &&
      req.length >= this.ctx.limits.minHoleSize &&
      this.device!.capabilities.extents
    );
  }

  /**
   * The reply to a read in one pooled buffer, headers written: a simple
   * reply header then the data; or, structured, the chunks of `pieces`
   * (one data piece when null) back to back, the last flagged DONE.
   */
  private layoutRead(req: Request, plan: ReadPiece[] | null): ReadLayout {
    const { offset, length, cookie } = req;
    const pool = this.ctx.buffers;
    if (!this.structured) {
      const buffer = writeSimpleReplyHeader(pool.get(SIMPLE_HEADER + length), 0, 0, cookie);
      return { buffer, pieces: [{ offset, length, hole: false }], chunkStarts: [0, SIMPLE_HEADER + length], dataStarts: [SIMPLE_HEADER] };
    }
    const pieces = plan && !(plan.length === 1 && !plan[0]!.hole) ? plan : [{ offset, length, hole: false }];
    let size = 0;
    for (const p of pieces) size += p.hole ? OFFSET_HOLE_CHUNK_SIZE : OFFSET_DATA_HEADER_SIZE + p.length;
    const buffer = pool.get(size);
    const chunkStarts: number[] = [];
    const dataStarts: number[] = [];
    let at = 0;
    for (let i = 0; i < pieces.length; i++) {
      const p = pieces[i]!;
      const flags = i === pieces.length - 1 ? REPLY_FLAGS.NBD_REPLY_FLAG_DONE : 0;
      chunkStarts.push(at);
      if (p.hole) {
        writeOffsetHoleChunk(buffer, at, flags, cookie, p.offset, p.length);
        dataStarts.push(-1);
        at += OFFSET_HOLE_CHUNK_SIZE;
      } else {
        writeOffsetDataHeader(buffer, at, flags, cookie, p.offset, p.length);
        dataStarts.push(at + OFFSET_DATA_HEADER_SIZE);
        at += OFFSET_DATA_HEADER_SIZE + p.length;
      }
    }
    chunkStarts.push(at);
    return { buffer, pieces, chunkStarts, dataStarts };
  }

  /**
   * NBD_CMD_WRITE without FUA served at once when the device can
   * (tryWriteSync): true when answered (written, or refused with an error).
   */
  private writeNow(req: Request): boolean {
    const device = this.device!;
    if (!device.tryWriteSync || req.length === 0 || (req.flags & COMMAND_FLAGS.NBD_CMD_FLAG_FUA) !== 0) return false;
    try {
      if (!device.tryWriteSync(req.offset, req.payload!)) return false;
    } catch (err) {
      this.releasePayload(req);
      this.replyDeviceError(req, err);
      return true;
    }
    this.releasePayload(req);
    const stats = this.stats!;
    stats.writes++;
    stats.bytesWritten += req.length;
    this.send(encodeSimpleReplyHeader(0, req.cookie));
    return true;
  }

  /** Gives a write's gathered payload back to the pool (the device keeps no reference once done). */
  private releasePayload(req: Request): void {
    if (req.pooled && req.payload) this.ctx.buffers.put(req.payload);
    req.payload = undefined;
  }

  /** NBD_CMD_BLOCK_STATUS for base:allocation (proto.md "NBD_CMD_BLOCK_STATUS"). */
  private async blockStatus(req: Request): Promise<void> {
    const device = this.device!;
    const reqOne = (req.flags & COMMAND_FLAGS.NBD_CMD_FLAG_REQ_ONE) !== 0;
    let descriptors: BlockDescriptor[] = [];
    if (device.capabilities.extents) {
      const extents = await device.extents(req.offset, req.length);
      descriptors = toDescriptors(extents, req.offset, req.length, reqOne ? 1 : this.ctx.limits.maxBlockStatusDescriptors);
    }
    // Status 0 ("allocated, contents unknown") is always a truthful answer.
    if (descriptors.length === 0) descriptors = [{ length: req.length, flags: 0 }];
    this.send(encodeBlockStatusChunk(REPLY_FLAGS.NBD_REPLY_FLAG_DONE, req.cookie, BASE_ALLOCATION_CONTEXT_ID, descriptors));
    this.stats!.blockStatus++;
  }

  private replyDeviceError(req: Request, err: unknown): void {
    const errno = nbdErrnoOf(err);
    const fields = { command: commandName(req.type), offset: req.offset, length: req.length, error: errorName(errno), err };
    // Refusals the device is entitled to (read-only, fast zero) are routine.
    if (errno === ERRORS.NBD_ENOTSUP || errno === ERRORS.NBD_EPERM) this.log.debug('nbd request refused by the device', fields);
    else this.log.warn('nbd request failed', fields);
    this.replyError(req, errno, `${commandName(req.type)} failed${codeSuffix(err)}`);
  }

  /**
   * An error reply: a structured NBD_REPLY_TYPE_ERROR chunk with a message
   * where structured replies were negotiated (proto.md: SHOULD be preferred,
   * and MUST be used for NBD_CMD_READ), else a simple reply with no data.
   */
  private replyError(req: RequestHeader, errno: number, message: string): void {
    if (this.stats) this.stats.errors++;
    this.log.debug('nbd request answered with an error', { command: commandName(req.type), error: errorName(errno), message });
    if (this.structured) this.send(encodeErrorChunk(REPLY_FLAGS.NBD_REPLY_FLAG_DONE, req.cookie, errno, message));
    else this.send(encodeSimpleReplyHeader(errno, req.cookie));
  }

  // -------------------------------------------------------------------------
  // Output and the end of the connection

  /**
   * Writes a reply laid out in a pooled buffer; the buffer goes back to the
   * pool once the socket is done with it (or at once if the stream is gone).
   */
  private sendPooled(buffer: Buffer): void {
    const s = this.stream;
    const pool = this.ctx.buffers;
    if (s.destroyed || s.writableEnded) {
      pool.put(buffer);
      return;
    }
    this.batch();
    s.write(buffer, () => pool.put(buffer));
  }

  private send(...buffers: Buffer[]): void {
    const s = this.stream;
    if (s.destroyed || s.writableEnded) return;
    if (buffers.length === 1) {
      this.batch();
      s.write(buffers[0]!);
      return;
    }
    s.cork();
    for (const b of buffers) s.write(b);
    s.uncork();
  }

  /**
   * In transmission, replies of requests that complete asynchronously within
   * one turn of the event loop leave together: the socket is corked at the
   * first and uncorked once the turn's I/O callbacks have run (setImmediate),
   * so they share one write system call. Replies made while pumpFrames runs
   * are covered by its own cork.
   */
  private batch(): void {
    if (this.pumping || this.batched || this.phase !== 'transmission') return;
    this.batched = true;
    this.stream.cork();
    setImmediate(this.endBatch);
  }

  private readonly endBatch = (): void => {
    this.batched = false;
    this.stream.uncork();
  };

  /**
   * Resolves when no request is being served and no option is being
   * answered (an option may be opening an export through the resolver), or
   * at once after destroy().
   */
  private whenIdle(): Promise<void> {
    if ((this.inFlight === 0 && !this.optionBusy) || this.forced) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private notifyIdle(): void {
    if (this.inFlight === 0 && !this.optionBusy) for (const w of this.idleWaiters.splice(0)) w();
  }

  /**
   * Stops reading requests, lets those in flight finish and send their
   * replies, then ends the connection; input that still arrives is drained
   * and dropped (limits.lingerMs) so the close does not reset replies the
   * client has yet to read.
   */
  private closeGracefully(reason: string): void {
    if (this.phase === 'closing' || this.phase === 'closed') return;
    this.phase = 'closing';
    clearTimeout(this.handshakeTimer);
    this.decoder.fail();
    this.log.debug('nbd connection closing', { reason, inFlight: this.inFlight });
    this.updateFlow();
    void this.whenIdle().then(() => {
      const s = this.stream;
      if (s.destroyed) return;
      const limits = this.ctx.limits;
      // Once every reply has left, wait for the peer to close its side, for
      // at most lingerMs; a peer that does not even read its last replies is
      // cut after closeTimeoutMs.
      s.once('finish', () => {
        if (this.peerEnded) s.destroy();
        else this.lingerTimer = unrefTimer(setTimeout(() => s.destroy(), limits.lingerMs));
      });
      this.stallTimer = unrefTimer(setTimeout(() => s.destroy(), limits.closeTimeoutMs + limits.lingerMs));
      s.end();
    });
  }

  /** A hard disconnect: no more replies. */
  private abortConnection(): void {
    if (this.phase === 'closed') return;
    this.phase = 'closing';
    clearTimeout(this.handshakeTimer);
    this.decoder.fail();
    this.stream.destroy();
  }

  private async onClose(): Promise<void> {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    clearTimeout(this.handshakeTimer);
    clearTimeout(this.lingerTimer);
    clearTimeout(this.stallTimer);
    this.decoder.fail();
    this.stream.off('drain', this.onDrain);
    // The device may not be released under requests still using it, and an
    // option may still be opening (then releasing) an export.
    await this.whenIdle();
    const opened = this.opened;
    if (opened) {
      this.stats!.connections--;
      await this.releaseExport(opened);
    }
    if (opened) {
      const ignored = this.decoder.ignoredBytes;
      this.log.info('nbd connection closed', { requests: this.requestsServed, ...(ignored > 0 ? { ignoredBytes: ignored } : {}) });
    } else {
      this.log.debug('nbd connection closed during option haggling', { options: this.optionsSeen });
    }
    this.resolveClosed();
  }
}

function unrefTimer(t: NodeJS.Timeout): NodeJS.Timeout {
  t.unref?.();
  return t;
}

function codeSuffix(err: unknown): string {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' ? ` (${code})` : '';
}
