/**
 * Test harness for the DHCP server: a loopback client that builds requests
 * and waits for replies, a socket factory that refuses any destination off
 * 127.0.0.0/8 (so no test can leak a DHCP packet onto a real network), an
 * in-memory socket factory for in-process tests, a settable clock and a
 * logger that keeps its lines.
 */
import dgram from 'node:dgram';
import { type DhcpPacket, type DhcpPacketInit, decodePacket, encodePacket } from '../../src/protocols/dhcp/codec.js';
import { BOOTREQUEST, FLAG_BROADCAST, MESSAGE_TYPES as MT, OPTIONS } from '../../src/protocols/dhcp/constants.js';
import { type DhcpSocket, type DhcpSocketFactory, udpSocketFactory } from '../../src/protocols/dhcp/server.js';
import type { Logger, Fields } from '../../src/lib/log.js';

export const LOOPBACK = /^127\./;

/** Wraps the real UDP socket factory; any send off loopback throws (and is recorded). */
export function loopbackOnlySockets(violations: string[]): DhcpSocketFactory {
  return () => {
    const s = udpSocketFactory();
    return {
      ...s,
      send: async (buf, port, address) => {
        if (!LOOPBACK.test(address)) {
          violations.push(`${address}:${port}`);
          throw new Error(`test refused to send to ${address}`);
        }
        return s.send(buf, port, address);
      },
    };
  };
}

export interface SentPacket {
  buf: Buffer;
  port: number;
  address: string;
  from: number;
}

/** Sockets that never touch the network: sends are recorded, nothing is received but what is injected. */
export function memorySockets(sent: SentPacket[], keep = 1000): DhcpSocketFactory {
  let next = 40000;
  return (): DhcpSocket => {
    let port = 0;
    return {
      bind: async (p) => (port = p || next++),
      send: async (buf, toPort, address) => {
        sent.push({ buf, port: toPort, address, from: port });
        if (sent.length > keep) sent.splice(0, sent.length - keep);
      },
      close: async () => {},
      onMessage: () => {},
      onError: () => {},
    };
  };
}

export class TestClock {
  constructor(public t = Date.UTC(2026, 0, 1)) {}
  now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

export interface LogLine {
  level: string;
  msg: string;
  fields: Fields;
}

const LEVELS: Record<string, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function memoryLogger(lines: LogLine[], bindings: Fields = {}, minLevel: 'debug' | 'info' | 'warn' | 'error' = 'debug'): Logger {
  const min = LEVELS[minLevel]!;
  const emit = (level: string) => (msg: string, fields: Fields = {}) => {
    if (LEVELS[level]! < min) return;
    lines.push({ level, msg, fields: { ...bindings, ...fields } });
  };
  return {
    debug: emit('debug'),
    info: emit('info'),
    warn: emit('warn'),
    error: emit('error'),
    child: (more) => memoryLogger(lines, { ...bindings, ...more }, minLevel),
  };
}

export function macBytes(mac: string): Buffer {
  return Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
}

export interface RequestSpec {
  type: number;
  mac: string;
  xid?: number;
  ciaddr?: string;
  giaddr?: string;
  flags?: number;
  hops?: number;
  requested?: string;
  serverId?: string;
  arch?: number;
  vendorClass?: string;
  ipxe?: boolean;
  clientId?: Buffer;
  guid?: Buffer;
  prl?: number[];
  relayInfo?: Buffer;
  extra?: Array<[number, Buffer]>;
}

let xidCounter = 0x1000;

/** A request laid out as the firmware in test/fixtures/dhcp sends it. */
export function buildRequest(s: RequestSpec): Buffer {
  const o: Array<[number, Buffer]> = [[OPTIONS.DHCP_MESSAGE_TYPE, Buffer.from([s.type])]];
  if (s.requested) o.push([OPTIONS.REQUESTED_IP_ADDRESS, Buffer.from(s.requested.split('.').map(Number))]);
  if (s.serverId) o.push([OPTIONS.SERVER_IDENTIFIER, Buffer.from(s.serverId.split('.').map(Number))]);
  o.push([OPTIONS.MAXIMUM_DHCP_MESSAGE_SIZE, Buffer.from([0x05, 0xc0])]);
  if (s.arch !== undefined) {
    const a = Buffer.alloc(2);
    a.writeUInt16BE(s.arch, 0);
    o.push([OPTIONS.CLIENT_SYSTEM_ARCHITECTURE_TYPE, a]);
    o.push([OPTIONS.CLIENT_NETWORK_INTERFACE_IDENTIFIER, Buffer.from([1, 3, 0])]);
  }
  const vc = s.vendorClass ?? (s.arch !== undefined ? `PXEClient:Arch:${String(s.arch).padStart(5, '0')}:UNDI:003000` : undefined);
  if (vc) o.push([OPTIONS.VENDOR_CLASS_IDENTIFIER, Buffer.from(vc)]);
  if (s.ipxe) {
    o.push([OPTIONS.USER_CLASS, Buffer.from('iPXE')]);
    o.push([OPTIONS.IPXE_ENCAPSULATED, Buffer.from([177, 5, 1, 0x1a, 0xf4, 0x10, 0x00, 235, 3, 1, 0, 0, 19, 1, 1])]);
  }
  o.push([OPTIONS.PARAMETER_REQUEST_LIST, Buffer.from(s.prl ?? [1, 3, 6, 12, 15, 43, 60, 66, 67, 175])]);
  if (s.clientId) o.push([OPTIONS.CLIENT_IDENTIFIER, s.clientId]);
  if (s.guid) o.push([OPTIONS.CLIENT_MACHINE_IDENTIFIER, s.guid]);
  for (const e of s.extra ?? []) o.push(e);
  if (s.relayInfo) o.push([OPTIONS.RELAY_AGENT_INFORMATION, s.relayInfo]);
  const init: DhcpPacketInit = {
    op: BOOTREQUEST,
    xid: s.xid ?? xidCounter++,
    chaddr: macBytes(s.mac),
    flags: s.flags ?? 0,
    hops: s.hops ?? (s.giaddr ? 1 : 0),
    ciaddr: s.ciaddr ?? '0.0.0.0',
    giaddr: s.giaddr ?? '0.0.0.0',
    options: o,
  };
  return encodePacket(init);
}

export interface Received {
  packet: DhcpPacket;
  type: number | undefined;
  from: { address: string; port: number };
  /** The address the datagram was sent to (the socket that received it). */
  socket: string;
}

/** A UDP endpoint on loopback that collects DHCP replies. */
export class LoopbackPeer {
  readonly received: Received[] = [];
  private waiters: Array<{ pred: (r: Received) => boolean; resolve: (r: Received) => void }> = [];
  private constructor(
    private readonly socket: dgram.Socket,
    readonly address: string,
    readonly port: number,
  ) {
    socket.on('message', (msg, rinfo) => {
      let packet: DhcpPacket;
      try {
        packet = decodePacket(msg);
      } catch {
        return;
      }
      const t = packet.options.get(OPTIONS.DHCP_MESSAGE_TYPE);
      const r: Received = { packet, type: t?.[0], from: { address: rinfo.address, port: rinfo.port }, socket: address };
      const w = this.waiters.findIndex((x) => x.pred(r));
      if (w >= 0) {
        const [waiter] = this.waiters.splice(w, 1);
        waiter!.resolve(r);
      } else this.received.push(r);
    });
  }

  static async open(address = '0.0.0.0', port = 0): Promise<LoopbackPeer> {
    const s = dgram.createSocket({ type: 'udp4', reuseAddr: false });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(port, address, () => {
        s.off('error', reject);
        resolve();
      });
    });
    return new LoopbackPeer(s, address, s.address().port);
  }

  send(buf: Buffer, port: number, address = '127.0.0.1'): Promise<void> {
    if (!LOOPBACK.test(address)) throw new Error(`test refused to send to ${address}`);
    return new Promise((resolve, reject) => this.socket.send(buf, port, address, (e) => (e ? reject(e) : resolve())));
  }

  /** The next reply matching `pred` (already received or arriving within `ms`), or undefined. */
  next(pred: (r: Received) => boolean, ms = 1500): Promise<Received | undefined> {
    const i = this.received.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.received.splice(i, 1)[0]);
    return new Promise((resolve) => {
      const waiter = {
        pred,
        resolve: (r: Received | undefined) => {
          clearTimeout(timer);
          resolve(r);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        resolve(undefined);
      }, ms);
      this.waiters.push(waiter as { pred: (r: Received) => boolean; resolve: (r: Received) => void });
    });
  }

  /** The reply to transaction `xid`, optionally of one message type. */
  reply(xid: number, type?: number, ms?: number): Promise<Received | undefined> {
    return this.next((r) => r.packet.xid === xid && (type === undefined || r.type === type), ms);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}

export const xidOf = (buf: Buffer): number => buf.readUInt32BE(4);

/** Runs DISCOVER then REQUEST (SELECTING) and returns the OFFER and ACK. */
export async function dora(
  client: LoopbackPeer,
  serverPort: number,
  spec: Omit<RequestSpec, 'type'>,
  serverAddress = '127.0.0.1',
): Promise<{ offer?: Received; ack?: Received }> {
  const d = buildRequest({ ...spec, type: MT.DHCPDISCOVER, flags: spec.flags ?? FLAG_BROADCAST });
  await client.send(d, serverPort, serverAddress);
  const offer = await client.reply(xidOf(d), MT.DHCPOFFER);
  if (!offer) return {};
  const r = buildRequest({
    ...spec,
    type: MT.DHCPREQUEST,
    xid: xidOf(d),
    requested: offer.packet.yiaddr,
    serverId: offer.packet.options.get(OPTIONS.SERVER_IDENTIFIER)!.join('.'),
    flags: spec.flags ?? FLAG_BROADCAST,
  });
  await client.send(r, serverPort, serverAddress);
  const ack = await client.reply(xidOf(d), undefined);
  return { offer, ...(ack ? { ack } : {}) };
}
