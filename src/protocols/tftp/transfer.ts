/**
 * One read transfer on its own socket (RFC 1350 section 4: a new TID per
 * transfer): the OACK exchange (RFC 2347), then DATA in windows of
 * `windowsize` blocks (RFC 7440; 1 is RFC 1350's lock-step).
 *
 * Design:
 * - A file the provider holds in memory (TftpFile.contents) is sent from
 *   there: nothing is read or copied.
 * - Otherwise blocks live in a ring of about two windows plus twice readAheadBytes. The file is read a chunk at a
 *   time, straight into the ring, ahead of the window being sent, so the
 *   peer never waits on the disk in steady state. Reading starts with the
 *   transfer, while the OACK waits for its ACK 0, so DATA 1 answers ACK 0
 *   at once. Retransmissions and window restarts send from the ring: each
 *   byte is read from the file once.
 * - The path from an ACK to the next DATA is synchronous: no file read, no
 *   timer created, no allocation beyond two buffer views. With windowsize 1
 *   (lock-step) that path is the whole cost of a block.
 * - Each DATA packet is sent as [4-byte header, payload view]: no copy.
 *   No read rewrites the ring while a send from it is still queued. The
 *   headers sit in 2 x windowsize slots: block b + 2w is only sent once a
 *   block first sent after every send of block b is acknowledged, and a
 *   socket sends in order, so no queued send still points at the slot.
 * - One clock timer per transfer. An ACK only moves the retransmission
 *   deadline; the timer, when it fires, compares the clock with the
 *   deadline and sleeps again if the deadline moved. The read timeout
 *   (readTimeoutMs) shares it.
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
  /**
   * Times a block was due (its window open) before the file read bringing
   * it had finished: the peer waited on the disk. The read-ahead keeps this
   * at 0 once the first read is done.
   */
  readWaits: number;
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
  private readonly headerSlots: number;
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
  /** The read in progress, for its timeout message. */
  private readOffset = 0;
  private readLength = 0;
  private inflight = 0;
  /** Retransmission deadline (clock ms), Infinity when no window or OACK awaits its ACK. */
  private deadline = Infinity;
  /** Deadline of the read in progress, Infinity when none. */
  private readDeadline = Infinity;
  /** The transfer's one clock timer, and when it was set to fire. */
  private timer: unknown = undefined;
  private timerAt = Infinity;
  /** Whether the window being sent already counted a read wait. */
  private waited = false;
  private retries = 0;
  private settle!: (o: TransferOutcome) => void;
  readonly done: Promise<TransferOutcome>;
  readonly stats: TransferStats = { blocksAcked: 0, bytes: 0, blocksSent: 0, retransmits: 0, timeouts: 0, readWaits: 0 };

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
    const contents = p.file.contents;
    if (contents !== undefined && contents.length === this.size) {
      // The whole file is in memory already: it is the ring, full from the start.
      this.capacity = this.totalBlocks;
      this.ring = Buffer.from(contents.buffer, contents.byteOffset, contents.length);
      this.hi = this.totalBlocks + 1;
    } else {
      this.capacity = Math.min(this.window + this.chunk + ahead, this.totalBlocks);
      this.ring = Buffer.allocUnsafe(this.capacity === this.totalBlocks ? this.size : this.capacity * this.bs);
    }
    this.headerSlots = Math.min(this.capacity, 2 * this.window);
    this.headers = Buffer.allocUnsafe(this.headerSlots * DATA_HEADER_SIZE);
    this.done = new Promise((resolve) => (this.settle = resolve));
    p.socket.onMessage((msg, from) => this.onMessage(msg, from));
    p.socket.onError((err) => this.p.log.debug('transfer socket error', { err }));
  }

  start(): void {
    if (this.state !== 'idle') return;
    if (this.p.oack) {
      this.state = 'oack';
      this.sendOack();
      // The first chunk is read while the client answers the OACK.
      this.fill();
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
    if (this.nextToSend > this.windowEnd) {
      this.waited = false;
      if (this.deadline === Infinity) this.armTimer();
    } else if (!this.waited) {
      this.waited = true;
      this.stats.readWaits++;
    }
    this.fill();
  }

  private blockLength(block: number): number {
    return block < this.totalBlocks ? this.bs : this.size - (this.totalBlocks - 1) * this.bs;
  }

  private slot(block: number): number {
    return (block - 1) % this.capacity;
  }

  private sendBlock(block: number): void {
    const h = ((block - 1) % this.headerSlots) * DATA_HEADER_SIZE;
    const header = this.headers.subarray(h, h + DATA_HEADER_SIZE);
    writeDataHeader(header, 0, block & 0xffff);
    const start = this.slot(block) * this.bs;
    const data = this.ring.subarray(start, start + this.blockLength(block));
    this.stats.blocksSent++;
    if (block <= this.highestSent) this.stats.retransmits++;
    else this.highestSent = block;
    this.inflight++;
    this.p.socket.send([header, data], this.p.peer.port, this.p.peer.address, this.onSent);
  }

  /** Completion of a DATA send (one function for all of them: nothing allocated per packet). */
  private readonly onSent = (err: Error | null): void => {
    this.inflight--;
    // A failed send is a lost packet: the timer resends it.
    if (err && this.state !== 'done') this.p.log.debug('send failed', { err });
    if (this.inflight === 0) this.fill();
  };

  /**
   * Reads ahead into free ring slots, one read at a time: when a whole
   * chunk is free (or the window waits for data), so reads stay large.
   */
  private fill(): void {
    if ((this.state !== 'data' && this.state !== 'oack') || this.reading || this.inflight > 0) return;
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
    this.readOffset = offset;
    this.readLength = length;
    const into = this.ring.subarray(slot * this.bs, slot * this.bs + length);
    this.readDeadline = this.p.clock.now() + this.p.readTimeoutMs;
    this.schedule();
    this.p.file.read(offset, length, into).then(
      (n) => {
        this.reading = false;
        this.readDeadline = Infinity;
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
        this.readDeadline = Infinity;
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

  /** Starts the retransmission timer: timeoutMs from now. */
  private armTimer(): void {
    this.deadline = this.p.clock.now() + this.p.timeoutMs;
    this.schedule();
  }

  /** Stops the retransmission timer; the clock timer, if set, lapses when it finds nothing due. */
  private clearTimer(): void {
    this.deadline = Infinity;
  }

  /**
   * Makes sure the clock timer fires by the earlier deadline. A timer set
   * to fire sooner is kept: it re-checks and sleeps again. So in steady
   * state a transfer creates a timer per timeoutMs, not per packet.
   */
  private schedule(): void {
    const at = Math.min(this.deadline, this.readDeadline);
    if (at === Infinity || this.timerAt <= at) return;
    if (this.timer !== undefined) this.p.clock.clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = this.p.clock.setTimeout(this.onTimer, Math.max(0, at - this.p.clock.now()));
  }

  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.timerAt = Infinity;
    if (this.state === 'done') return;
    const now = this.p.clock.now();
    if (now >= this.readDeadline) {
      this.fail(new TftpError('TFTP_READ_FAILED', `reading ${this.readLength} bytes at ${this.readOffset} took over ${this.p.readTimeoutMs} ms`), true);
      return;
    }
    if (now >= this.deadline) {
      this.deadline = Infinity;
      this.onTimeout();
    }
    this.schedule();
  };

  private onTimeout(): void {
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
    this.deadline = Infinity;
    this.readDeadline = Infinity;
    if (this.timer !== undefined) this.p.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
    // Closing drops sends still queued: only an error reply could be, and
    // it is sent before; UDP gives no delivery guarantee anyway.
    setImmediate(() => this.p.socket.close());
    this.settle(outcome);
  }
}
