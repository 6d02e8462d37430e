/**
 * The small UDP socket interface the TFTP server and client use, so tests
 * can put a lossy, duplicating or recording shim between them and the
 * network. `createUdpSocket` is the real one, over node:dgram.
 */
import dgram from 'node:dgram';
import { lookup as dnsLookup } from 'node:dns';
import { isIP } from 'node:net';

export interface SocketAddress {
  address: string;
  port: number;
  /** 'IPv4' | 'IPv6' */
  family: string;
}

export interface UdpSocket {
  /** Binds; port 0 picks an ephemeral port. Rejects on failure (EADDRINUSE, EACCES...). */
  bind(port: number, address?: string): Promise<SocketAddress>;
  /**
   * Sends one datagram made of `chunks` (header and payload, uncopied). The
   * chunks must not change until `done` runs; `done` gets the send error, if any.
   */
  send(chunks: readonly Uint8Array[], port: number, address: string, done?: (err: Error | null) => void): void;
  onMessage(handler: (msg: Buffer, from: SocketAddress) => void): void;
  /** Errors after bind (rare for UDP; ICMP errors are not reported on unconnected sockets). */
  onError(handler: (err: Error) => void): void;
  address(): SocketAddress;
  close(): void;
}

export type SocketFamily = 'udp4' | 'udp6';
export type SocketFactory = (family: SocketFamily) => UdpSocket;

export interface UdpSocketOptions {
  /** SO_RCVBUF in bytes; a windowed transfer's ACKs and a burst of requests need little. */
  recvBufferSize?: number;
  /** SO_SNDBUF in bytes: a whole window is written at once. */
  sendBufferSize?: number;
}

/** The node:dgram socket factory. udp6 sockets are dual-stack. */
export function udpSocketFactory(options: UdpSocketOptions = {}): SocketFactory {
  return (family) => new DgramSocket(family, options);
}

export const createUdpSocket: SocketFactory = udpSocketFactory();

/**
 * node:dgram resolves the address of every send, even a literal one, and
 * dns.lookup answers a literal on the next tick: each datagram would wait
 * for a tick queue turn and an async context switch. TFTP only ever sends
 * to the literal address a packet came from, so a literal is answered at
 * once and the send happens inside the call; names still go to dns.lookup.
 * Each socket remembers its last literal: a transfer sends every packet to
 * the same one, so most sends skip even the isIP() pattern match.
 */
function literalLookup(): NonNullable<dgram.SocketOptions['lookup']> {
  let last = '';
  let lastFamily = 0;
  return (hostname, family, callback) => {
    if (hostname === last) {
      callback(null, hostname, lastFamily);
      return;
    }
    // dgram passes the socket's family (4 or 6) here, which dns.lookup also takes.
    const literal = isIP(hostname);
    if (literal === 0) {
      dnsLookup(hostname, family, callback);
      return;
    }
    last = hostname;
    lastFamily = literal;
    callback(null, hostname, literal);
  };
}

class DgramSocket implements UdpSocket {
  private readonly socket: dgram.Socket;
  private errorHandler: (err: Error) => void = () => {};

  constructor(family: SocketFamily, private readonly options: UdpSocketOptions) {
    this.socket = dgram.createSocket({ type: family, ipv6Only: false, lookup: literalLookup() });
    // Always listened to: an 'error' event without a listener would throw.
    this.socket.on('error', (err) => this.errorHandler(err));
  }

  bind(port: number, address?: string): Promise<SocketAddress> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.socket.once('error', onError);
      this.socket.bind({ port, address, exclusive: true }, () => {
        this.socket.off('error', onError);
        try {
          if (this.options.recvBufferSize) this.socket.setRecvBufferSize(this.options.recvBufferSize);
          if (this.options.sendBufferSize) this.socket.setSendBufferSize(this.options.sendBufferSize);
        } catch {
          // Best effort: the kernel caps these at net.core.[rw]mem_max.
        }
        resolve(this.address());
      });
    });
  }

  send(chunks: readonly Uint8Array[], port: number, address: string, done?: (err: Error | null) => void): void {
    try {
      // `done` is passed as it is (no wrapper per packet): dgram calls it with (null, bytes) or (error).
      this.socket.send(chunks as Uint8Array[], port, address, done as ((err: Error | null) => void) | undefined);
    } catch (err) {
      // Synchronous throws: socket closed, bad port. Reported like async errors.
      if (done) queueMicrotask(() => done(err as Error));
    }
  }

  onMessage(handler: (msg: Buffer, from: SocketAddress) => void): void {
    this.socket.on('message', (msg, rinfo) => handler(msg, rinfo));
  }

  onError(handler: (err: Error) => void): void {
    this.errorHandler = handler;
  }

  address(): SocketAddress {
    const a = this.socket.address();
    return { address: a.address, port: a.port, family: a.family };
  }

  close(): void {
    try {
      this.socket.close();
    } catch {
      // Already closed.
    }
  }
}
