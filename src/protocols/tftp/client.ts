/**
 * A small TFTP read client (RFC 1350, 2347, 2348, 2349, 7440 receiver
 * side). The tests and the benchmark drive every server with it, since none
 * of the packaged clients does windowsize and blksize together with
 * measurements; it is also usable to check a boot server by hand.
 *
 * Receiver rules (RFC 7440 section 4): ACK after `windowsize` in-order
 * blocks or the last (short) block; on a gap, ACK the last in-order block
 * once and drop what follows; a block already held is ignored, except the
 * last one acknowledged, which is acknowledged again (its ACK was lost).
 */
import { isIP } from 'node:net';
import { decodePacket, encodeAck, encodeError, encodeRequest, type TftpOption } from './codec.js';
import { DEFAULT_BLKSIZE, ERROR_NUMBERS, MODES, OPCODES, OPTIONS, TFTP_PORT } from './constants.js';
import { TftpError, TftpPeerError, tftpErrorOf } from './errors.js';
import { fromNetascii } from './netascii.js';
import { udpSocketFactory, type SocketAddress, type SocketFactory } from './socket.js';

/** A window of large blocks arrives in one burst: the receive buffer must hold it. */
const clientSockets = udpSocketFactory({ recvBufferSize: 4 * 1024 * 1024 });

export interface TftpGetOptions {
  host: string;
  port?: number;
  file: string;
  mode?: 'octet' | 'netascii';
  blksize?: number;
  windowsize?: number;
  /** Ask for tsize (RFC 2349); the result carries the size announced. */
  tsize?: boolean;
  /** timeout option to negotiate, in seconds (RFC 2349). */
  timeout?: number;
  /** More options, sent as they are (tests). */
  extraOptions?: TftpOption[];
  /** The client's retransmission timer. */
  retransmitMs?: number;
  /** Retransmissions before giving up. */
  maxRetries?: number;
  /** After the last block, keep answering its retransmissions this long (RFC 1350 section 6, "dallying"). */
  dallyMs?: number;
  /** Stop after the OACK with an ERROR 0, as OVMF and iPXE do to learn a file's size. */
  probeOnly?: boolean;
  /** Receives payload in order instead of collecting it; the chunk is only valid during the call. */
  onData?: (chunk: Buffer) => void;
  /** Largest download collected or passed on (default 1 GiB). */
  maxBytes?: number;
  socketFactory?: SocketFactory;
  /** Local address to bind (default: any). */
  localAddress?: string;
}

export interface TftpGetResult {
  /** The file (after netascii decoding); empty when onData was given or probeOnly. */
  data: Buffer;
  bytes: number;
  /** The server's OACK, empty when it sent none. */
  oack: Record<string, string>;
  blksize: number;
  windowsize: number;
  durationMs: number;
  /** The server's transfer port. */
  serverPort: number;
  packets: number;
  acksSent: number;
  /** DATA packets dropped: already held, or after a gap. */
  discarded: number;
}

export const TFTP_CLIENT_DEFAULTS = {
  retransmitMs: 1000,
  maxRetries: 5,
  maxBytes: 1024 * 1024 * 1024,
} as const;

export function tftpGet(options: TftpGetOptions): Promise<TftpGetResult> {
  return new Promise((resolve, reject) => {
    const port = options.port ?? TFTP_PORT;
    const family = isIP(options.host) === 6 ? 'udp6' : 'udp4';
    const socket = (options.socketFactory ?? clientSockets)(family);
    const retransmitMs = options.retransmitMs ?? TFTP_CLIENT_DEFAULTS.retransmitMs;
    const maxRetries = options.maxRetries ?? TFTP_CLIENT_DEFAULTS.maxRetries;
    const maxBytes = options.maxBytes ?? TFTP_CLIENT_DEFAULTS.maxBytes;
    const requested: TftpOption[] = [];
    if (options.blksize !== undefined) requested.push({ name: OPTIONS.BLKSIZE, value: String(options.blksize) });
    if (options.windowsize !== undefined) requested.push({ name: OPTIONS.WINDOWSIZE, value: String(options.windowsize) });
    if (options.timeout !== undefined) requested.push({ name: OPTIONS.TIMEOUT, value: String(options.timeout) });
    if (options.tsize || options.probeOnly) requested.push({ name: OPTIONS.TSIZE, value: '0' });
    requested.push(...(options.extraOptions ?? []));
    const rrq = encodeRequest(OPCODES.RRQ, options.file, options.mode ?? MODES.OCTET, requested);

    const started = performance.now();
    const chunks: Buffer[] = [];
    let server: SocketAddress | undefined;
    let oack: Record<string, string> = {};
    let blksize = DEFAULT_BLKSIZE;
    let windowsize = 1;
    let startedData = false;
    let lastInOrder = 0; // absolute
    let lastAcked = 0; // absolute
    let inWindow = 0;
    let gapAcked = false;
    let bytes = 0;
    let packets = 0;
    let acksSent = 0;
    let discarded = 0;
    let lastSent: Buffer = rrq;
    let retries = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let finished = false;
    let endedAt = 0;

    const send = (buf: Buffer, to: { port: number; address: string } = server ?? { port, address: options.host }): void => {
      socket.send([buf], to.port, to.address);
    };
    const ack = (block: number): void => {
      lastAcked = block;
      lastSent = encodeAck(block & 0xffff);
      acksSent++;
      send(lastSent);
    };
    const arm = (): void => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(onTimeout, retransmitMs);
    };
    const onTimeout = (): void => {
      timer = undefined;
      if (finished) return;
      if (++retries > maxRetries) {
        fail(new TftpError('TFTP_TIMEOUT', `no answer after ${maxRetries} retransmissions`), false);
        return;
      }
      send(lastSent);
      arm();
    };
    const cleanup = (): void => {
      finished = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
      setImmediate(() => socket.close());
    };
    const fail = (err: TftpError, tell: boolean): void => {
      if (finished) return;
      if (tell && server) {
        const wire = tftpErrorOf(err);
        if (wire) send(encodeError(wire.number, wire.message));
      }
      cleanup();
      reject(err);
    };
    const succeed = (): void => {
      endedAt = performance.now();
      const result = (): TftpGetResult => {
        let data: Buffer = options.onData ? Buffer.alloc(0) : Buffer.concat(chunks, bytes);
        if (options.mode === MODES.NETASCII && !options.onData) data = fromNetascii(data);
        return {
          data, bytes, oack, blksize, windowsize, durationMs: endedAt - started, serverPort: server?.port ?? 0, packets, acksSent, discarded,
        };
      };
      if (timer) clearTimeout(timer);
      timer = undefined;
      if (!options.dallyMs) {
        cleanup();
        resolve(result());
        return;
      }
      // Dally: the socket stays open to acknowledge the last block again.
      setTimeout(() => {
        cleanup();
        resolve(result());
      }, options.dallyMs);
    };

    const onDataPacket = (block: number, data: Buffer): void => {
      startedData = true;
      const distance = (block - lastInOrder) & 0xffff;
      if (distance === 1) {
        if (data.length > blksize) {
          fail(new TftpError('TFTP_ILLEGAL_OPERATION', `block of ${data.length} bytes, blksize is ${blksize}`), true);
          return;
        }
        lastInOrder++;
        inWindow++;
        gapAcked = false;
        retries = 0;
        if (bytes + data.length > maxBytes) {
          fail(new TftpError('TFTP_DOWNLOAD_TOO_LARGE', `more than ${maxBytes} bytes`), true);
          return;
        }
        bytes += data.length;
        if (options.onData) options.onData(data);
        else chunks.push(Buffer.from(data));
        if (data.length < blksize) {
          ack(lastInOrder);
          succeed();
          return;
        }
        if (inWindow >= windowsize) {
          inWindow = 0;
          ack(lastInOrder);
        }
        arm();
        return;
      }
      discarded++;
      if (distance === 0) {
        // The peer resent the block we last acknowledged: our ACK was lost.
        // (A copy of a block not yet acknowledged says nothing: ignored.)
        if (lastInOrder > 0 && lastAcked === lastInOrder) {
          inWindow = 0;
          ack(lastInOrder);
        }
      } else if (distance < 0x8000 && !gapAcked) {
        // A gap: tell the sender where to restart (RFC 7440 section 4).
        gapAcked = true;
        inWindow = 0;
        ack(lastInOrder);
      }
    };

    socket.onMessage((msg, from) => {
      if (finished && !options.dallyMs) return;
      if (!server) {
        if (from.address !== normalizeAddress(options.host, from.address)) return;
        server = from; // RFC 1350 section 4: the server's first packet fixes its TID
      } else if (from.port !== server.port || from.address !== server.address) {
        if (msg.length >= 2 && msg.readUInt16BE(0) !== OPCODES.ERROR) {
          send(encodeError(ERROR_NUMBERS.UNKNOWN_TID, 'Unknown transfer ID'), from);
        }
        return;
      }
      packets++;
      let pkt;
      try {
        pkt = decodePacket(msg);
      } catch (err) {
        if (!finished) fail(err as TftpError, (err as TftpError).code !== 'TFTP_TRUNCATED');
        return;
      }
      if (finished) {
        // Dallying: acknowledge the last block again if it comes back.
        if (pkt.opcode === OPCODES.DATA && pkt.block === (lastInOrder & 0xffff)) {
          socket.send([encodeAck(pkt.block)], server.port, server.address);
        }
        return;
      }
      switch (pkt.opcode) {
        case OPCODES.ERROR:
          cleanup();
          reject(new TftpPeerError(pkt.code, pkt.message));
          return;
        case OPCODES.OACK: {
          if (startedData) return;
          const got: Record<string, string> = {};
          for (const o of pkt.options) {
            const asked = requested.find((r) => r.name.toLowerCase() === o.name);
            if (!asked) {
              fail(new TftpError('TFTP_BAD_OPTION', `the server acknowledged option ${o.name}, which was not asked for`), true);
              return;
            }
            got[o.name] = o.value;
          }
          const bs = got[OPTIONS.BLKSIZE] === undefined ? DEFAULT_BLKSIZE : Number(got[OPTIONS.BLKSIZE]);
          const ws = got[OPTIONS.WINDOWSIZE] === undefined ? 1 : Number(got[OPTIONS.WINDOWSIZE]);
          if (!Number.isInteger(bs) || bs < 8 || (options.blksize !== undefined && bs > options.blksize)
            || !Number.isInteger(ws) || ws < 1 || (options.windowsize !== undefined && ws > options.windowsize)) {
            fail(new TftpError('TFTP_BAD_OPTION', `the server answered blksize ${got.blksize} windowsize ${got.windowsize}`), true);
            return;
          }
          oack = got;
          blksize = bs;
          windowsize = ws;
          if (options.probeOnly) {
            send(encodeError(ERROR_NUMBERS.NOT_DEFINED, 'tsize probe done'));
            endedAt = performance.now();
            cleanup();
            resolve({ data: Buffer.alloc(0), bytes: 0, oack, blksize, windowsize, durationMs: endedAt - started, serverPort: server.port, packets, acksSent, discarded });
            return;
          }
          retries = 0;
          ack(0);
          arm();
          return;
        }
        case OPCODES.DATA:
          onDataPacket(pkt.block, pkt.data);
          return;
        default:
          fail(new TftpError('TFTP_ILLEGAL_OPERATION', `unexpected ${pkt.opcode} from the server`), true);
      }
    });
    socket.onError(() => {});

    socket.bind(0, options.localAddress).then(
      () => {
        send(rrq);
        arm();
      },
      (err: unknown) => {
        cleanup();
        reject(new TftpError('TFTP_SOCKET_FAILED', `cannot bind the client socket: ${(err as Error).message}`, { cause: err }));
      },
    );
  });
}

/** The form the socket reports `host` in (udp4 as is; literal IPv6 lower-case). */
function normalizeAddress(host: string, seen: string): string {
  if (isIP(host) === 6) return host.toLowerCase() === seen.toLowerCase() ? seen : host;
  return host === 'localhost' ? seen : host;
}
