/**
 * One read transfer on its own socket (RFC 1350 section 4: a new TID per
 * transfer): the OACK exchange (RFC 2347), then DATA in windows of
 * `windowsize` blocks (RFC 7440; 1 is RFC 1350's lock-step).
 *
 * Design:
 * - Blocks live in a ring of about two windows plus twice readAheadBytes. The file is read a chunk at a
 *   time, straight into the ring, ahead of the window being sent, so the
 *   peer never waits on the disk in steady state. Retransmissions and
 *   window restarts send from the ring: each byte is read from the file
 *   once.
 * - Each DATA packet is sent as [4-byte header, payload view]: no copy.
 *   No read rewrites the ring while a send from it is still queued.
 * - Block numbers are absolute internally and taken modulo 65536 on the
 *   wire, so a file of more than 65535 blocks rolls over to block 0 (the
 *   convention of tftp-hpa, atftp and iPXE). An ACK is matched by its
 *   distance from the last acknowledged block, modulo 65536.
 * - An ACK of a block already acknowledged (a duplicate) sends nothing: only
 *   the timer retransmits. This is the Sorcerer's Apprentice fix (RFC 1123
 *   section 4.2.3.1), which RFC 7440 keeps.
 * - An ACK of a block inside the window but before its end (the peer lost
 *   a block) restarts the window right after it (RFC 7440 section 4); a
 *   timeout resends the whole window from the last acknowledged block.
 */
import type { Logger } from '../../lib/log.js';
import { decodePacket, encodeError, encodeOack, writeDataHeader, type TftpOption } from './codec.js';
import { DATA_HEADER_SIZE, OPCODES } from './constants.js';
import { TftpError, tftpErrorOf } from './errors.js';
import type { TftpFile, TftpPeer } from './file-provider.js';
import type { SocketAddress, UdpSocket } from './socket.js';

/** Timers the server uses; injectable so tests can drive time. */
export interface Clock {
  /** Milliseconds, monotonic. */
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export interface TransferParams {
  socket: UdpSocket;
  peer: TftpPeer;
  file: TftpFile;
  blksize: number;
  windowsize: number;
  /** Retransmission timeout. */
  timeoutMs: number;
  /** Retransmissions of one window (or the OACK) before giving up. */
  maxRetries: number;
  /** A file read slower than this fails the transfer. */
  readTimeoutMs: number;
  /** Bytes read from the file at once (at least one window): fewer, larger reads. */
  readAheadBytes: number;
  /** The OACK's options, or null to start with DATA 1 (no options accepted). */
  oack: TftpOption[] | null;
  clock: Clock;
  log: Logger;
}

export type TransferOutcome =
  | { kind: 'served' }
  | { kind: 'aborted'; peerError: { code: number; message: string } }
  | { kind: 'failed'; error: TftpError };

export interface TransferStats {
  /** Blocks acknowledged by the peer. */
  blocksAcked: number;
  /** Payload bytes acknowledged by the peer. */
  bytes: number;
  /** DATA packets sent, first sends and resends. */
  blocksSent: number;
  /** DATA packets sent again (timeouts and window restarts). */
  retransmits: number;
  /** Timer expiries. */
  timeouts: number;
}

export class ReadTransfer {
  private state: 'idle' | 'oack' | 'data' | 'done' = 'idle';
  private readonly size: number;
  private readonly bs: number;
  private readonly window: number;
  /** Blocks in the transfer; the last is shorter than blksize, possibly empty. */
  private readonly totalBlocks: number;
  private readonly capacity: number;
  /** Blocks read at once. */
  private readonly chunk: number;
  private readonly ring: Buffer;
  private readonly headers: Buffer;
  /** Highest block acknowledged (absolute). */
  private acked = 0;
  /** Next block to send, and the last block of the current window. */
  private nextToSend = 1;
  private windowEnd = 0;
  /** Highest block ever sent: resends of blocks up to it count as retransmits. */
  private highestSent = 0;
  /** Blocks [lo, hi) are in the ring. */
  private lo = 1;
  private hi = 1;
  private reading = false;
  private inflight = 0;
  private timer: unknown = undefined;
  private readTimer: unknown = undefined;
  private retries = 0;
  private settle!: (o: TransferOutcome) => void;
  readonly done: Promise<TransferOutcome>;
  readonly stats: TransferStats = { blocksAcked: 0, bytes: 0, blocksSent: 0, retransmits: 0, timeouts: 0 };

  constructor(private readonly p: TransferParams) {
    this.size = p.file.size;
    this.bs = p.blksize;
    this.window = p.windowsize;
    this.totalBlocks = Math.floor(this.size / this.bs) + 1;
    // A chunk (at least a window) is read when that much is free, which
    // leaves a window plus the read-ahead still buffered, so the peer does
    // not wait on the disk. Slots: window + chunk + read-ahead, i.e. at most
    // 2 x (window + read-ahead) bytes. Never more slots than the file has
    // blocks: a small file pins only its size.
    const ahead = Math.max(1, Math.ceil(p.readAheadBytes / this.bs));
    this.chunk = Math.max(this.window, ahead);
    this.capacity = Math.min(this.window + this.chunk + ahead, this.totalBlocks);
    this.ring = Buffer.allocUnsafe(this.capacity === this.totalBlocks ? this.size : this.capacity * this.bs);
    this.headers = Buffer.allocUnsafe(this.capacity * DATA_HEADER_SIZE);
    this.done = new Promise((resolve) => (this.settle = resolve));
    p.socket.onMessage((msg, from) => this.onMessage(msg, from));
    p.socket.onError((err) => this.p.log.debug('transfer socket error', { err }));
  }

  start(): void {
    if (this.state !== 'idle') return;
    if (this.p.oack) {
      this.state = 'oack';
      this.sendOack();
    } else {
      this.state = 'data';
      this.startWindow();
    }
  }

  /** Ends the transfer from outside (server shutdown): sends the error and settles. */
  abort(error: TftpError): void {
    this.fail(error, true);
  }

  // ------------------------------------------------------------ receiving

  private onMessage(msg: Buffer, from: SocketAddress): void {
    if (this.state === 'done') return;
    if (from.port !== this.p.peer.port || from.address !== this.p.peer.address) {
      // RFC 1350 section 4: answer a stranger with error 5, without
      // disturbing the transfer; never answer an ERROR.
      if (msg.length >= 2 && msg.readUInt16BE(0) !== OPCODES.ERROR) {
        this.sendError(new TftpError('TFTP_UNKNOWN_TID', 'unknown transfer ID'), from);
      }
      return;
    }
    if (msg.length < 4) return; // too short to mean anything here: dropped
    const opcode = msg.readUInt16BE(0);
    if (opcode === OPCODES.ERROR) {
      // Whatever its form, the peer has ended the transfer (tsize probes do this after the OACK).
      let message = '';
      try {
        const pkt = decodePacket(msg);
        if (pkt.opcode === OPCODES.ERROR) message = pkt.message;
      } catch {
        message = msg.subarray(4).toString('latin1').replace(/\0.*$/s, '');
      }
      this.finish({ kind: 'aborted', peerError: { code: msg.readUInt16BE(2), message: message.slice(0, 200) } });
      return;
    }
    if (opcode !== OPCODES.ACK) {
      // DATA, a request or an OACK on a read transfer, or an unknown opcode.
      this.fail(new TftpError('TFTP_ILLEGAL_OPERATION', `unexpected opcode ${opcode} on a read transfer`), true);
      return;
    }
    this.onAck(msg.readUInt16BE(2));
  }

  private onAck(block: number): void {
    if (this.state === 'oack') {
      // RFC 2347: the client acknowledges the OACK with ACK 0.
      if (block !== 0) return;
      this.clearTimer();
      this.retries = 0;
      this.state = 'data';
      this.startWindow();
      return;
    }
    if (this.state !== 'data') return;
    const distance = (block - this.acked) & 0xffff;
    const outstanding = this.highestSent - this.acked;
    // distance 0: a duplicate ACK; beyond what was sent: stale or forged.
    if (distance === 0 || distance > outstanding) return;
    this.acked += distance;
    this.lo = this.acked + 1;
    this.stats.blocksAcked = this.acked;
    this.stats.bytes = Math.min(this.size, this.acked * this.bs);
    this.retries = 0;
    this.clearTimer();
    if (this.acked === this.totalBlocks) {
      this.finish({ kind: 'served' });
      return;
    }
    this.startWindow();
  }

  // ------------------------------------------------------------- sending

  private startWindow(): void {
    this.nextToSend = this.acked + 1;
    this.windowEnd = Math.min(this.acked + this.window, this.totalBlocks);
    this.pump();
  }

  /** Sends what the ring holds of the window; arms the timer once the window is out; keeps reading ahead. */
  private pump(): void {
    if (this.state !== 'data') return;
    while (this.nextToSend <= this.windowEnd && this.nextToSend < this.hi) this.sendBlock(this.nextToSend++);
    if (this.nextToSend > this.windowEnd && this.timer === undefined) this.armTimer();
    this.fill();
  }

  private blockLength(block: number): number {
    return block < this.totalBlocks ? this.bs : this.size - (this.totalBlocks - 1) * this.bs;
  }

  private slot(block: number): number {
    return (block - 1) % this.capacity;
  }

  private sendBlock(block: number): void {
    const slot = this.slot(block);
    const header = this.headers.subarray(slot * DATA_HEADER_SIZE, (slot + 1) * DATA_HEADER_SIZE);
    writeDataHeader(header, 0, block & 0xffff);
    const start = slot * this.bs;
    const data = this.ring.subarray(start, start + this.blockLength(block));
    this.stats.blocksSent++;
    if (block <= this.highestSent) this.stats.retransmits++;
    else this.highestSent = block;
    this.inflight++;
    this.p.socket.send([header, data], this.p.peer.port, this.p.peer.address, (err) => {
      this.inflight--;
      // A failed send is a lost packet: the timer resends it.
      if (err && this.state !== 'done') this.p.log.debug('send failed', { err, block });
      if (this.inflight === 0) this.fill();
    });
  }

  /**
   * Reads ahead into free ring slots, one read at a time: when a whole
   * chunk is free (or the window waits for data), so reads stay large.
   */
  private fill(): void {
    if (this.state !== 'data' || this.reading || this.inflight > 0) return;
    const free = this.capacity - (this.hi - this.lo);
    const remaining = this.totalBlocks + 1 - this.hi;
    if (remaining <= 0 || free <= 0) return;
    if (free < Math.min(this.chunk, remaining) && this.hi > this.windowEnd) return;
    const slot = this.slot(this.hi);
    const count = Math.min(this.chunk, free, this.capacity - slot, remaining);
    const offset = (this.hi - 1) * this.bs;
    const length = Math.min(count * this.bs, this.size - offset);
    const first = this.hi;
    if (length <= 0) {
      // Only the empty last block of a file whose size is a multiple of blksize.
      this.hi += count;
      this.pump();
      return;
    }
    this.reading = true;
    const into = this.ring.subarray(slot * this.bs, slot * this.bs + length);
    this.readTimer = this.p.clock.setTimeout(() => {
      this.readTimer = undefined;
      this.fail(new TftpError('TFTP_READ_FAILED', `reading ${length} bytes at ${offset} took over ${this.p.readTimeoutMs} ms`), true);
    }, this.p.readTimeoutMs);
    this.p.file.read(offset, length, into).then(
      (n) => {
        this.reading = false;
        if (this.readTimer !== undefined) this.p.clock.clearTimeout(this.readTimer);
        this.readTimer = undefined;
        if (this.state === 'done') return;
        if (n !== length) {
          this.fail(new TftpError('TFTP_READ_FAILED', `read ${n} bytes at ${offset} where ${length} were expected: the file changed`), true);
          return;
        }
        if (this.hi === first) this.hi = first + count;
        this.pump();
      },
      (err: unknown) => {
        this.reading = false;
        if (this.state === 'done') return;
        this.fail(new TftpError('TFTP_READ_FAILED', `reading at ${offset}: ${(err as Error).message}`, { cause: err }), true);
      },
    );
  }

  private sendOack(): void {
    this.p.socket.send([encodeOack(this.p.oack!)], this.p.peer.port, this.p.peer.address);
    this.armTimer();
  }

  private sendError(error: TftpError, to: SocketAddress = this.p.peer): void {
    const wire = tftpErrorOf(error);
    if (!wire) return;
    this.p.socket.send([encodeError(wire.number, wire.message)], to.port, to.address);
  }

  // -------------------------------------------------------------- timers

  private armTimer(): void {
    this.clearTimer();
    this.timer = this.p.clock.setTimeout(() => this.onTimeout(), this.p.timeoutMs);
  }

  private clearTimer(): void {
    if (this.timer !== undefined) this.p.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private onTimeout(): void {
    this.timer = undefined;
    if (this.state !== 'oack' && this.state !== 'data') return;
    this.stats.timeouts++;
    if (++this.retries > this.p.maxRetries) {
      this.fail(new TftpError('TFTP_TIMEOUT', `no acknowledgement after ${this.p.maxRetries} retransmissions`), true);
      return;
    }
    if (this.state === 'oack') {
      this.sendOack();
      return;
    }
    this.startWindow();
  }

  // ------------------------------------------------------------- ending

  private fail(error: TftpError, tell: boolean): void {
    if (this.state === 'done') return;
    if (tell) this.sendError(error);
    this.finish({ kind: 'failed', error });
  }

  private finish(outcome: TransferOutcome): void {
    if (this.state === 'done') return;
    this.state = 'done';
    this.clearTimer();
    if (this.readTimer !== undefined) this.p.clock.clearTimeout(this.readTimer);
    this.readTimer = undefined;
    // Closing drops sends still queued: only an error reply could be, and
    // it is sent before; UDP gives no delivery guarantee anyway.
    setImmediate(() => this.p.socket.close());
    this.settle(outcome);
  }
}
