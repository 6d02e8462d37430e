/**
 * The TFTP server: read-only, RFC 1350 with options (RFC 2347), blksize
 * (RFC 2348), timeout and tsize (RFC 2349) and windowsize (RFC 7440).
 *
 * The listening socket only takes requests; every transfer gets its own
 * socket on an ephemeral port (RFC 1350 section 4) and runs in
 * transfer.ts. Files come from a FileProvider the application supplies.
 * Limits (transfers in all and per client address, window memory, retries,
 * read time) have named defaults in TFTP_DEFAULTS.
 */
import { EventEmitter } from 'node:events';
import { isIP } from 'node:net';
import { silentLogger, type Logger } from '../../lib/log.js';
import { decodePacket, encodeError, type RequestPacket } from './codec.js';
import {
  BLKSIZE_MAX, BLKSIZE_MIN, HEADER_OVERHEAD, MODES, OPCODES, TFTP_PORT, WINDOWSIZE_MAX, opcodeName,
} from './constants.js';
import { TftpError, isTftpError, tftpErrorOf } from './errors.js';
import { bufferFile, type FileProvider, type FileRequest, type TftpFile, type TftpPeer } from './file-provider.js';
import { linkMtuResolver, type PathMtu } from './mtu.js';
import { toNetascii } from './netascii.js';
import { negotiate } from './options.js';
import { normalizePath } from './path.js';
import { createUdpSocket, type SocketAddress, type SocketFactory, type SocketFamily, type UdpSocket } from './socket.js';
import { ReadTransfer, systemClock, type Clock, type TransferStats } from './transfer.js';

export interface TftpServerOptions {
  /** Where files come from. */
  files: FileProvider;
  logger?: Logger;
  /** Defaults to node:dgram sockets. */
  socketFactory?: SocketFactory;
  /** Defaults to performance.now() and the global timers. */
  clock?: Clock;
  /**
   * MTU toward a peer, to clamp blksize below fragmentation; defaults to the
   * MTU of the local interface whose subnet holds the peer (mtu.ts). Return
   * undefined when unknown: TFTP_DEFAULTS.routedMtu is then assumed.
   */
  pathMtu?: PathMtu;
  /** Transfers at once, from all clients. */
  maxTransfers?: number;
  /** Transfers at once from one client address. */
  maxTransfersPerClient?: number;
  /** Ceiling on blksize before the MTU clamp (8-65464). */
  maxBlksize?: number;
  /** Ceiling on windowsize (1-32768). */
  maxWindowsize?: number;
  /** Ceiling on blksize x windowsize; a transfer pins at most 2 x (this + readAheadBytes). */
  maxWindowBytes?: number;
  /** Retransmission timeout when the client negotiates none (RFC 2349 timeout overrides it). */
  timeoutMs?: number;
  /** Retransmissions of one window before a transfer is abandoned. */
  maxRetries?: number;
  /** A provider open() or read slower than this fails the transfer. */
  readTimeoutMs?: number;
  /** Largest file served in netascii mode (translated in memory). */
  maxNetasciiBytes?: number;
  /** Bytes read from a file at once, ahead of the window being sent. */
  readAheadBytes?: number;
  /** MTU assumed toward a peer on no local subnet (pathMtu answered undefined). */
  routedMtu?: number;
  /**
   * How long an identical request from the same address and port is taken
   * for a late copy, after its file was served (and ignored); 0 turns it off.
   */
  requestMemoryMs?: number;
  /** Local ports for transfer sockets, e.g. for a firewall; default: any ephemeral port. */
  transferPortRange?: readonly [number, number];
}

export const TFTP_DEFAULTS = {
  maxTransfers: 256,
  maxTransfersPerClient: 8,
  maxBlksize: BLKSIZE_MAX,
  /** OVMF asks for 4; clients asking for more gain little past a few dozen on a LAN. */
  maxWindowsize: 64,
  /** 64 blocks of 1468 fit; blksize 65464 gets a window of 4. */
  maxWindowBytes: 256 * 1024,
  /** RFC 2349's smallest negotiable value, and tftpd-hpa's default. */
  timeoutMs: 1000,
  maxRetries: 5,
  readTimeoutMs: 30_000,
  maxNetasciiBytes: 4 * 1024 * 1024,
  /** With maxWindowBytes, bounds a transfer's memory to 640 KiB (160 MiB for maxTransfers). */
  readAheadBytes: 64 * 1024,
  /** Ethernet: blksize 1468 (RFC 2348's example), what OVMF asks for. */
  routedMtu: 1500,
  /** Two default retransmission timeouts: a client's resent request is older than that. */
  requestMemoryMs: 2000,
} as const;

/** Above this, 16-bit ACK distances would be ambiguous (transfer.ts matches them modulo 65536). */
const WINDOWSIZE_HARD_MAX = 32768;

type Settings = Required<Omit<TftpServerOptions, 'logger' | 'transferPortRange' | 'pathMtu'>> & {
  logger: Logger;
  pathMtu: PathMtu;
  transferPortRange: readonly [number, number] | undefined;
};

/** What one transfer did; carried by the server's events. */
export interface TransferSummary {
  peer: TftpPeer;
  /** The file name as the client sent it. */
  requested: string;
  /** Normalized path, when it could be normalized. */
  path: string | undefined;
  mode: string;
  /** File size (after netascii translation), when it was opened. */
  size: number | undefined;
  /** Payload bytes the peer acknowledged. */
  bytes: number;
  durationMs: number;
  blksize: number;
  windowsize: number;
  timeoutMs: number;
  /** Options acknowledged in the OACK. */
  options: Record<string, string>;
  blocksSent: number;
  retransmits: number;
  /** Windows that waited on a file read (see TransferStats.readWaits); set once the transfer ran. */
  readWaits?: number;
}

export interface TftpServerEvents {
  /** A read request arrived (before any check): the start of a client's TFTP step. */
  request: [info: { peer: TftpPeer; requested: string }];
  /** A file was sent whole and its last block acknowledged. */
  served: [summary: TransferSummary];
  /** The client ended the transfer with an ERROR packet (OVMF's tsize probe does this). */
  aborted: [summary: TransferSummary & { peerError: { code: number; message: string } }];
  /** The server refused or gave up: bad request, missing file, timeout, read error... */
  failed: [summary: TransferSummary & { error: TftpError }];
}

export interface TftpServerStats {
  /** Read requests taken (a 'request' event each; duplicates of a running one are not): transfers started, refused ones included. */
  requests: number;
  /** Transfers running: not yet served, aborted or failed (a file still closing is not counted). */
  active: number;
  served: number;
  aborted: number;
  failed: number;
  /** Payload bytes acknowledged by peers, all transfers. */
  bytes: number;
}

interface Active {
  /**
   * The outcome is known and counted; the file may still be closing, and
   * the entry still counts against the limits until it is closed.
   */
  ended: boolean;
  request: Buffer;
  transfer: ReadTransfer | undefined;
  cancelled: TftpError | undefined;
  /** Set when the file was served whole: the request is remembered a while longer. */
  servedAt: number | undefined;
}

export class TftpServer extends EventEmitter<TftpServerEvents> {
  private readonly s: Settings;
  private readonly log: Logger;
  private listener: UdpSocket | undefined;
  private family: SocketFamily = 'udp4';
  private localAddress: string | undefined;
  private closing = false;
  private readonly active = new Set<Active>();
  /** The latest transfer of each client address and port, to spot resent requests. */
  private readonly byPeer = new Map<string, Active>();
  /** Timers that forget served requests (requestMemoryMs). */
  private readonly forgetTimers = new Set<unknown>();
  private readonly perClient = new Map<string, number>();
  private readonly running = new Set<Promise<void>>();
  private readonly counters: TftpServerStats = { requests: 0, active: 0, served: 0, aborted: 0, failed: 0, bytes: 0 };

  constructor(options: TftpServerOptions) {
    super();
    this.s = Object.freeze(validate(options));
    this.log = this.s.logger.child({ protocol: 'tftp' });
  }

  /** Binds the request socket. Port 0 picks one (tests); IPv6 addresses get a dual-stack socket. */
  async listen(port: number = TFTP_PORT, address = '0.0.0.0'): Promise<SocketAddress> {
    if (this.listener) throw new TftpError('TFTP_BIND_FAILED', 'the TFTP server is already listening');
    this.family = isIP(address) === 6 ? 'udp6' : 'udp4';
    const socket = this.s.socketFactory(this.family);
    socket.onError((err) => this.log.warn('request socket error', { err }));
    socket.onMessage((msg, from) => this.onRequest(msg, from));
    let bound: SocketAddress;
    try {
      bound = await socket.bind(port, address);
    } catch (err) {
      socket.close();
      throw new TftpError('TFTP_BIND_FAILED', `cannot bind TFTP on ${address}:${port}: ${(err as Error).message}`, { cause: err });
    }
    this.listener = socket;
    this.localAddress = address;
    this.closing = false;
    this.log.info('listening', { address: bound.address, port: bound.port });
    return bound;
  }

  /** Stops taking requests, ends running transfers (peers get error 0) and waits for them. */
  async close(): Promise<void> {
    this.closing = true;
    this.listener?.close();
    this.listener = undefined;
    const shutdown = new TftpError('TFTP_SHUTDOWN', 'server shutting down');
    for (const a of this.active) {
      a.cancelled = shutdown;
      a.transfer?.abort(shutdown);
    }
    await Promise.allSettled([...this.running]);
    for (const timer of this.forgetTimers) this.s.clock.clearTimeout(timer);
    this.forgetTimers.clear();
    this.byPeer.clear();
  }

  /**
   * Emits an event; a listener that throws is logged, never allowed to
   * reach the socket handlers (where it would crash the process) or to be
   * mistaken for a refused request.
   */
  private notify<K extends keyof TftpServerEvents>(event: K, ...args: TftpServerEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: TftpServerEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.log.error('a TFTP event listener threw', { event, err });
    }
  }

  stats(): TftpServerStats {
    let active = 0;
    for (const a of this.active) if (!a.ended) active++;
    return { ...this.counters, active };
  }

  // ------------------------------------------------------------ requests

  private onRequest(msg: Buffer, from: SocketAddress): void {
    if (this.closing || msg.length < 2) return;
    const opcode = msg.readUInt16BE(0);
    // RFC 1350 section 7: an ERROR is never answered, here least of all.
    if (opcode === OPCODES.ERROR) return;
    let packet;
    try {
      packet = decodePacket(msg);
    } catch (err) {
      this.log.debug('bad request', { peer: from.address, port: from.port, err });
      this.reply(err, from);
      return;
    }
    if (packet.opcode === OPCODES.WRQ) {
      this.refuse(new TftpError('TFTP_WRITE_REFUSED', 'write requests are refused'), from, packet);
      return;
    }
    if (packet.opcode !== OPCODES.RRQ) {
      this.reply(new TftpError('TFTP_ILLEGAL_OPERATION', `${opcodeName(packet.opcode)} sent to the request port`), from);
      return;
    }
    this.onReadRequest(packet, msg, from);
  }

  private onReadRequest(packet: RequestPacket, msg: Buffer, from: SocketAddress): void {
    const peer: TftpPeer = { address: from.address, port: from.port, family: from.family };
    const key = `${from.address}|${from.port}`;
    const existing = this.byPeer.get(key);
    if (existing && existing.request.equals(msg)) {
      // The client resent its request before our first packet reached it
      // (or the copy was slow to arrive): the running transfer answers it,
      // and a copy arriving just after the file was served must not start
      // a second transfer to a client that has gone. RFC 1350 clients take
      // a new port for each request; one that reuses its port for the same
      // file is answered once requestMemoryMs has passed.
      this.log.debug('duplicate request ignored', { peer: from.address, port: from.port });
      return;
    }
    this.counters.requests++;
    this.notify('request', { peer, requested: packet.filename });
    const fromClient = this.perClient.get(from.address) ?? 0;
    if (this.active.size >= this.s.maxTransfers || fromClient >= this.s.maxTransfersPerClient) {
      const why = this.active.size >= this.s.maxTransfers ? `${this.s.maxTransfers} transfers running` : `${fromClient} transfers running for this client`;
      this.refuse(new TftpError('TFTP_BUSY', why), from, packet);
      return;
    }
    // Reserved now, synchronously: the checks above hold while the file opens.
    const entry: Active = { ended: false, request: Buffer.from(msg), transfer: undefined, cancelled: undefined, servedAt: undefined };
    this.active.add(entry);
    this.byPeer.set(key, entry);
    this.perClient.set(from.address, fromClient + 1);
    const run = this.runTransfer(entry, packet, peer)
      .catch((err: unknown) => this.log.error('transfer crashed', { err, peer: peer.address }))
      .finally(() => {
        this.active.delete(entry);
        if (entry.servedAt !== undefined && !this.closing && this.s.requestMemoryMs > 0) {
          const timer = this.s.clock.setTimeout(() => {
            this.forgetTimers.delete(timer);
            if (this.byPeer.get(key) === entry) this.byPeer.delete(key);
          }, this.s.requestMemoryMs);
          this.forgetTimers.add(timer);
        } else if (this.byPeer.get(key) === entry) {
          this.byPeer.delete(key);
        }
        const n = (this.perClient.get(from.address) ?? 1) - 1;
        if (n <= 0) this.perClient.delete(from.address);
        else this.perClient.set(from.address, n);
        this.running.delete(run);
      });
    this.running.add(run);
  }

  private async runTransfer(entry: Active, packet: RequestPacket, peer: TftpPeer): Promise<void> {
    const started = this.s.clock.now();
    const log = this.log.child({ peer: peer.address, port: peer.port, file: packet.filename });
    const summary: TransferSummary = {
      peer, requested: packet.filename, path: undefined, mode: packet.mode, size: undefined, bytes: 0, durationMs: 0,
      blksize: 0, windowsize: 0, timeoutMs: 0, options: {}, blocksSent: 0, retransmits: 0,
    };
    let file: TftpFile | undefined;
    let socket: UdpSocket | undefined;
    try {
      if (packet.mode !== MODES.OCTET && packet.mode !== MODES.NETASCII) {
        throw new TftpError('TFTP_BAD_MODE', `mode ${packet.mode} is for write requests only`);
      }
      const path = normalizePath(packet.filename);
      summary.path = path;
      file = await this.openWithTimeout({ path, requested: packet.filename, mode: packet.mode, peer });
      if (entry.cancelled) throw entry.cancelled;
      if (!Number.isSafeInteger(file.size) || file.size < 0) throw new TftpError('TFTP_INTERNAL', `the provider reported size ${file.size}`);
      if (packet.mode === MODES.NETASCII) file = await this.netascii(file);
      summary.size = file.size;

      const overhead = peer.family === 'IPv6' && !peer.address.startsWith('::ffff:') ? HEADER_OVERHEAD.IPv6 : HEADER_OVERHEAD.IPv4;
      const mtu = this.s.pathMtu(peer) ?? this.s.routedMtu;
      const maxBlksize = Math.max(BLKSIZE_MIN, Math.min(this.s.maxBlksize, mtu - overhead));
      const n = negotiate(packet.options, {
        maxBlksize, maxWindowsize: this.s.maxWindowsize, maxWindowBytes: this.s.maxWindowBytes, transferSize: file.size,
      });
      summary.blksize = n.blksize;
      summary.windowsize = n.windowsize;
      summary.timeoutMs = n.timeoutMs ?? this.s.timeoutMs;
      summary.options = Object.fromEntries(n.oack.map((o) => [o.name, o.value]));

      socket = await this.openTransferSocket();
      if (entry.cancelled) throw entry.cancelled;
      const transfer = new ReadTransfer({
        socket, peer, file,
        blksize: n.blksize, windowsize: n.windowsize, timeoutMs: summary.timeoutMs,
        maxRetries: this.s.maxRetries, readTimeoutMs: this.s.readTimeoutMs, readAheadBytes: this.s.readAheadBytes,
        oack: n.oack.length > 0 ? n.oack : null, clock: this.s.clock, log,
      });
      socket = undefined; // the transfer owns it now
      entry.transfer = transfer;
      log.debug('transfer started', { size: file.size, blksize: n.blksize, windowsize: n.windowsize, options: summary.options });
      transfer.start();
      const outcome = await transfer.done;
      entry.ended = true;
      this.record(summary, transfer.stats, started);
      if (outcome.kind === 'served') {
        entry.servedAt = this.s.clock.now();
        this.counters.served++;
        log.info('file served', {
          path: summary.path, bytes: summary.bytes, durationMs: Math.round(summary.durationMs), retransmits: summary.retransmits, readWaits: summary.readWaits,
        });
        this.notify('served', summary);
      } else if (outcome.kind === 'aborted') {
        this.counters.aborted++;
        log.debug('transfer ended by the client', { peerError: outcome.peerError, bytes: summary.bytes });
        this.notify('aborted', { ...summary, peerError: outcome.peerError });
      } else {
        this.counters.failed++;
        log.warn('transfer failed', { code: outcome.error.code, reason: outcome.error.message, bytes: summary.bytes });
        this.notify('failed', { ...summary, error: outcome.error });
      }
    } catch (err) {
      // Refused before the transfer started: answered from the request port.
      const error = isTftpError(err) ? err : new TftpError('TFTP_INTERNAL', (err as Error)?.message ?? String(err), { cause: err });
      if (!isTftpError(err)) log.error('file provider failed', { err });
      socket?.close();
      this.record(summary, undefined, started);
      this.counters.failed++;
      log.info('request refused', { code: error.code, reason: error.message });
      if (!this.closing) this.reply(error, peer);
      this.notify('failed', { ...summary, error });
    } finally {
      entry.ended = true;
      if (file) await closeQuietly(file, log);
    }
  }

  private record(summary: TransferSummary, stats: TransferStats | undefined, started: number): void {
    summary.durationMs = this.s.clock.now() - started;
    if (!stats) return;
    summary.bytes = stats.bytes;
    summary.blocksSent = stats.blocksSent;
    summary.retransmits = stats.retransmits;
    summary.readWaits = stats.readWaits;
    this.counters.bytes += stats.bytes;
  }

  private async netascii(file: TftpFile): Promise<TftpFile> {
    if (file.size > this.s.maxNetasciiBytes) {
      throw new TftpError('TFTP_NETASCII_TOO_LARGE', `${file.size} bytes is over the netascii limit of ${this.s.maxNetasciiBytes}`);
    }
    const raw = Buffer.allocUnsafe(file.size);
    const n = await this.withReadTimeout(file.read(0, file.size, raw), 'reading the file');
    if (n !== file.size) throw new TftpError('TFTP_READ_FAILED', `read ${n} of ${file.size} bytes: the file changed`);
    await file.close();
    return bufferFile(toNetascii(raw));
  }

  /** provider.open() bounded by readTimeoutMs; a file that opens too late is closed, not leaked. */
  private async openWithTimeout(request: FileRequest): Promise<TftpFile> {
    let late = false;
    const opening = this.s.files.open(request);
    opening.then((f) => {
      if (late) void Promise.resolve().then(() => f.close()).catch(() => {});
    }, () => {});
    try {
      return await this.withReadTimeout(opening, 'opening the file');
    } catch (err) {
      late = true;
      throw err;
    }
  }

  private withReadTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = this.s.clock.setTimeout(() => reject(new TftpError('TFTP_READ_FAILED', `${what} took over ${this.s.readTimeoutMs} ms`)), this.s.readTimeoutMs);
      promise.then(
        (v) => {
          this.s.clock.clearTimeout(timer);
          resolve(v);
        },
        (e: unknown) => {
          this.s.clock.clearTimeout(timer);
          reject(e);
        },
      );
    });
  }

  /** A socket for one transfer, on the listener's address: replies leave from the address the client asked. */
  private async openTransferSocket(): Promise<UdpSocket> {
    const range = this.s.transferPortRange;
    const ports: number[] = [];
    if (!range) ports.push(0);
    else {
      const span = range[1] - range[0] + 1;
      const start = Math.floor(Math.random() * span);
      for (let i = 0; i < Math.min(span, 64); i++) ports.push(range[0] + ((start + i) % span));
    }
    let last: unknown;
    for (const port of ports) {
      const socket = this.s.socketFactory(this.family);
      try {
        await socket.bind(port, this.localAddress);
        return socket;
      } catch (err) {
        socket.close();
        last = err;
      }
    }
    throw new TftpError('TFTP_SOCKET_FAILED', `no transfer socket: ${(last as Error)?.message ?? 'no port free'}`, { cause: last });
  }

  private refuse(error: TftpError, to: SocketAddress, packet: RequestPacket): void {
    this.log.info('request refused', { peer: to.address, port: to.port, file: packet.filename, code: error.code, reason: error.message });
    this.reply(error, to);
    this.counters.failed++;
    this.notify('failed', {
      peer: { address: to.address, port: to.port, family: to.family }, requested: packet.filename, path: undefined, mode: packet.mode,
      size: undefined, bytes: 0, durationMs: 0, blksize: 0, windowsize: 0, timeoutMs: 0, options: {}, blocksSent: 0, retransmits: 0, error,
    });
  }

  /** Sends the ERROR packet an error maps to (if any) from the request port. */
  private reply(err: unknown, to: SocketAddress): void {
    const wire = tftpErrorOf(err);
    if (!wire || !this.listener) return;
    this.listener.send([encodeError(wire.number, wire.message)], to.port, to.address);
  }
}

/** Closes a provider's file; a failure is logged, not thrown (the transfer's outcome stands). */
async function closeQuietly(file: TftpFile, log: Logger): Promise<void> {
  try {
    await file.close();
  } catch (err) {
    log.warn('closing the file failed', { err });
  }
}

function validate(o: TftpServerOptions): Settings {
  const problems: string[] = [];
  const int = (name: keyof TftpServerOptions, value: unknown, min: number, max: number): void => {
    if (value === undefined) return;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) problems.push(`${name} must be an integer in ${min}-${max}, not ${String(value)}`);
  };
  if (!o || typeof o.files?.open !== 'function') problems.push('files must be a FileProvider (an object with open())');
  int('maxTransfers', o?.maxTransfers, 1, 65536);
  int('maxTransfersPerClient', o?.maxTransfersPerClient, 1, 65536);
  int('maxBlksize', o?.maxBlksize, BLKSIZE_MIN, BLKSIZE_MAX);
  int('maxWindowsize', o?.maxWindowsize, 1, Math.min(WINDOWSIZE_MAX, WINDOWSIZE_HARD_MAX));
  int('maxWindowBytes', o?.maxWindowBytes, BLKSIZE_MIN, 256 * 1024 * 1024);
  int('timeoutMs', o?.timeoutMs, 1, 255_000);
  int('maxRetries', o?.maxRetries, 0, 100);
  int('readTimeoutMs', o?.readTimeoutMs, 1, 3_600_000);
  int('maxNetasciiBytes', o?.maxNetasciiBytes, 0, 1024 * 1024 * 1024);
  int('readAheadBytes', o?.readAheadBytes, 0, 64 * 1024 * 1024);
  int('routedMtu', o?.routedMtu, 68, 65535);
  int('requestMemoryMs', o?.requestMemoryMs, 0, 600_000);
  const range = o?.transferPortRange;
  if (range !== undefined) {
    if (!Array.isArray(range) || range.length !== 2 || !range.every((p) => Number.isInteger(p) && p >= 1 && p <= 65535) || range[0] > range[1]) {
      problems.push('transferPortRange must be [first, last] with 1 <= first <= last <= 65535');
    }
  }
  if (problems.length > 0) throw new TftpError('TFTP_CONFIG_INVALID', `invalid TFTP server options: ${problems.join('; ')}`);
  return {
    files: o.files,
    logger: o.logger ?? silentLogger,
    socketFactory: o.socketFactory ?? createUdpSocket,
    clock: o.clock ?? systemClock,
    pathMtu: o.pathMtu ?? linkMtuResolver(),
    maxTransfers: o.maxTransfers ?? TFTP_DEFAULTS.maxTransfers,
    maxTransfersPerClient: o.maxTransfersPerClient ?? TFTP_DEFAULTS.maxTransfersPerClient,
    maxBlksize: o.maxBlksize ?? TFTP_DEFAULTS.maxBlksize,
    maxWindowsize: o.maxWindowsize ?? TFTP_DEFAULTS.maxWindowsize,
    maxWindowBytes: o.maxWindowBytes ?? TFTP_DEFAULTS.maxWindowBytes,
    timeoutMs: o.timeoutMs ?? TFTP_DEFAULTS.timeoutMs,
    maxRetries: o.maxRetries ?? TFTP_DEFAULTS.maxRetries,
    readTimeoutMs: o.readTimeoutMs ?? TFTP_DEFAULTS.readTimeoutMs,
    maxNetasciiBytes: o.maxNetasciiBytes ?? TFTP_DEFAULTS.maxNetasciiBytes,
    readAheadBytes: o.readAheadBytes ?? TFTP_DEFAULTS.readAheadBytes,
    routedMtu: o.routedMtu ?? TFTP_DEFAULTS.routedMtu,
    requestMemoryMs: o.requestMemoryMs ?? TFTP_DEFAULTS.requestMemoryMs,
    transferPortRange: range,
  };
}
