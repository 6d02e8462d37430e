/**
 * DhcpServer: DHCPv4 (full) and proxyDHCP per listening interface.
 *
 * Full mode (RFC 2131): address pools per subnet, reservations by MAC,
 * leases written through a LeaseStore, the DISCOVER/OFFER/REQUEST/ACK/NAK
 * exchange with the REQUEST states of section 4.3.2 (SELECTING, INIT-REBOOT,
 * RENEWING, REBINDING), RELEASE, DECLINE and INFORM. Boot information comes
 * from the BootPolicy the app supplies.
 *
 * Proxy mode (PXE 2.1 section 2.2.6): no addresses. PXE clients (option 60
 * "PXEClient") are answered on port 67 with a proxy offer (yiaddr zero,
 * options 60, 43, 97, next-server and boot file) and on port 4011 with the
 * same boot information as a DHCPACK; other clients are left to the site's
 * DHCP server.
 *
 * Which link did a broadcast come in on? Node's dgram has neither
 * IP_PKTINFO nor SO_BINDTODEVICE, so the server cannot ask. Each configured
 * interface therefore has:
 *   - a receive socket bound to `bindAddress` (0.0.0.0 by default, the only
 *     binding that receives broadcasts), and
 *   - a send socket bound to the interface's own address and the same port.
 *     Linux routes a limited broadcast (255.255.255.255) out of the device
 *     that owns the source address of a bound socket, so replies leave by the
 *     right link with the right source even without a default route; it also
 *     receives unicasts to that address (renewals, relayed requests).
 * A request is placed in a subnet by, in order: giaddr (relayed, RFC 2131
 * 4.3.1), option 118 / sub-option 82.5, ciaddr (a bound client), and
 * finally the subnet holding the receiving interface's address. Two
 * interfaces that both receive broadcasts on one port cannot be told apart,
 * so the configuration refuses that: run one server per network namespace,
 * or reach further subnets through relay agents. See README.md.
 */
import { EventEmitter } from 'node:events';
import dgram from 'node:dgram';
import type { Logger } from '../../lib/log.js';
import { silentLogger } from '../../lib/log.js';
import { type Cidr, cidrContains, formatIpv4, normalizeMac, parseCidr, parseIpv4 } from './address.js';
import {
  type DhcpPacket,
  type DhcpRequestInfo,
  MAX_PACKET_SIZE,
  decodePacket,
  encodePacket,
  readRequestInfo,
} from './codec.js';
import {
  BOOTREQUEST,
  HTYPE_ETHERNET,
  IP_UDP_HEADERS,
  MESSAGE_TYPES as MT,
  MIN_MAX_MESSAGE_SIZE,
  PORTS,
  architectureName,
  messageTypeName,
} from './constants.js';
import { DhcpError, isDhcpCodecError } from './errors.js';
import { InMemoryLeaseStore, type LeaseRecord, type LeaseStore } from './leases.js';
import type { BootClient, BootDecision, BootPolicy } from './policy.js';
import { AddressPool, type PoolClient, type Reservation } from './pool.js';
import { type Destination, type LeaseTimes, type NetworkOptions, buildReply, replyDestination } from './reply.js';

const ZERO = '0.0.0.0';

// ---------------------------------------------------------------------------
// Options

export interface DhcpInterfaceOptions {
  /** Label for logs and events (the Linux interface name, typically). */
  name: string;
  /**
   * This server's IPv4 address on the link: the server identifier, the
   * default next-server, the source of every reply, and (for clients that
   * are not relayed) the address whose subnet they are placed in.
   */
  address: string;
  mode: 'full' | 'proxy';
  /** Address the receive socket binds; default 0.0.0.0 (needed to hear broadcasts). */
  bindAddress?: string;
  /** Where "broadcast" replies go; default 255.255.255.255. Tests point it at loopback. */
  broadcastAddress?: string;
  /** Also serve PXE boot-server requests on port 4011. Default: true in proxy mode, false in full mode. */
  pxePort?: boolean;
}

export interface DhcpRange {
  start: string;
  end: string;
}

export interface DhcpReservationOptions {
  mac: string;
  address: string;
  hostName?: string;
}

export interface DhcpSubnetOptions {
  /** CIDR, e.g. `10.0.0.0/24`. */
  subnet: string;
  /** Dynamic ranges, inclusive. May be empty (reservations only). */
  ranges?: DhcpRange[];
  routers?: string[];
  dnsServers?: string[];
  domainName?: string;
  /** Default DEFAULT_LEASE_SECONDS. */
  leaseSeconds?: number;
  /** T1; default half the lease. */
  renewalSeconds?: number;
  /** T2; default 7/8 of the lease. */
  rebindingSeconds?: number;
  reservations?: DhcpReservationOptions[];
  /**
   * Answer for addresses the server has no record of (RFC 2131 section
   * 4.3.2): NAK an INIT-REBOOT/REBINDING client whose address is wrong and
   * confirm one whose address is free. Off by default: without a record the
   * server stays silent, as the RFC requires of a non-authoritative server.
   */
  authoritative?: boolean;
}

export interface DhcpPorts {
  /** Port the server listens on (67). 0 picks a free port (tests). */
  server: number;
  /** Port replies to clients go to (68). */
  client: number;
  /** PXE boot-server port (4011). 0 picks a free port (tests). */
  pxe: number;
  /** Port of relay agents, where replies to relayed requests go (67). Defaults to `server` unless that is 0. */
  relay?: number;
}

export interface DhcpLimits {
  /** Larger datagrams are dropped before decoding. */
  maxPacketSize: number;
  /** How long an offered address is held for the client. */
  offerHoldMs: number;
  /** Pending offers per subnet; the oldest is dropped beyond this. */
  maxPendingOffers: number;
  /** Fraction of a pool's dynamic addresses unknown clients may hold (offers and leases). */
  unknownPoolShare: number;
  /** How long a declined address is set aside (RFC 2131 section 4.3.3). */
  declineHoldMs: number;
  /** Per-MAC token bucket: burst size... */
  clientBurst: number;
  /** ...and refill rate. Reserved MACs are not limited. */
  clientRatePerSecond: number;
  /** MACs tracked by the rate limiter (least recently seen forgotten first). */
  maxTrackedClients: number;
  /** Packets being handled at once (awaiting the policy or the store); more are dropped. */
  maxInFlight: number;
  /** A policy that takes longer is treated as failed and the packet dropped. */
  policyTimeoutMs: number;
  /** Repeated drop warnings of one kind are logged at most once per this period. */
  logThrottleMs: number;
}

export const DEFAULT_LEASE_SECONDS = 3600;
/** RFC 2131 section 4.4.5: T1 = 0.5 and T2 = 0.875 of the lease. */
export const RENEWAL_FRACTION = 0.5;
export const REBINDING_FRACTION = 0.875;
/** The shortest lease the configuration accepts (a client renews at half of it). */
export const MIN_LEASE_SECONDS = 60;

export const DEFAULT_PORTS: Readonly<DhcpPorts> = Object.freeze({
  server: PORTS.DHCP_SERVER,
  client: PORTS.DHCP_CLIENT,
  pxe: PORTS.PXE,
});

export const DEFAULT_LIMITS: Readonly<DhcpLimits> = Object.freeze({
  maxPacketSize: MAX_PACKET_SIZE,
  // PXE firmware requests within a few seconds of the offer; a late REQUEST
  // still succeeds if the address is free, so the hold can be short.
  offerHoldMs: 10_000,
  maxPendingOffers: 1024,
  unknownPoolShare: 0.8,
  // dnsmasq's DECLINE_BACKOFF is the same ten minutes.
  declineHoldMs: 600_000,
  // Firmware sends a handful of packets per boot (DISCOVER retries at 4, 8, 16 s).
  clientBurst: 12,
  clientRatePerSecond: 2,
  maxTrackedClients: 8192,
  maxInFlight: 512,
  policyTimeoutMs: 2000,
  logThrottleMs: 10_000,
});

/** Where the server reports what it does, for the boot timeline. */
export interface DhcpEvent {
  type: 'discover' | 'offer' | 'request' | 'ack' | 'nak' | 'release' | 'decline' | 'inform' | 'ignored';
  /** From the server's clock, milliseconds since the epoch. */
  time: number;
  mac: string;
  interface: string;
  mode: 'full' | 'proxy';
  /** The request arrived on the PXE boot-server port. */
  pxePort: boolean;
  xid: number;
  /** Offered, acknowledged, released or declined address. */
  address?: string;
  arch?: number;
  ipxe: boolean;
  known?: boolean;
  /** What the client was handed. */
  boot?: { kind: 'tftp'; nextServer: string; file: string } | { kind: 'http'; url: string };
  /** giaddr of a relayed request. */
  relay?: string;
  /** Why a request was ignored or refused. */
  reason?: string;
}

export interface DhcpSocket {
  /** Binds and resolves with the bound port. */
  bind(port: number, address: string): Promise<number>;
  send(buf: Buffer, port: number, address: string): Promise<void>;
  close(): Promise<void>;
  onMessage(handler: (msg: Buffer, from: { address: string; port: number }) => void): void;
  onError(handler: (err: Error) => void): void;
}
export type DhcpSocketFactory = () => DhcpSocket;

export interface DhcpServerOptions {
  interfaces: DhcpInterfaceOptions[];
  /** Required for full-mode interfaces: the subnets addresses are handed out in. */
  subnets?: DhcpSubnetOptions[];
  policy: BootPolicy;
  /** Default: an InMemoryLeaseStore (leases are lost at restart). */
  leaseStore?: LeaseStore;
  ports?: Partial<DhcpPorts>;
  limits?: Partial<DhcpLimits>;
  createSocket?: DhcpSocketFactory;
  /** Milliseconds since the epoch; default Date.now. */
  now?: () => number;
  logger?: Logger;
}

/** The default socket: Node's dgram, SO_REUSEADDR (two sockets share the port), SO_BROADCAST. */
export const udpSocketFactory: DhcpSocketFactory = () => {
  const s = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  return {
    bind: (port, address) =>
      new Promise<number>((resolve, reject) => {
        const onError = (e: Error): void => reject(e);
        s.once('error', onError);
        s.bind(port, address, () => {
          s.off('error', onError);
          s.setBroadcast(true);
          resolve(s.address().port);
        });
      }),
    send: (buf, port, address) =>
      new Promise<void>((resolve, reject) => s.send(buf, port, address, (e) => (e ? reject(e) : resolve()))),
    close: () =>
      new Promise<void>((resolve) => {
        try {
          s.close(() => resolve());
        } catch {
          resolve();
        }
      }),
    onMessage: (h) => s.on('message', (msg, r) => h(msg, { address: r.address, port: r.port })),
    onError: (h) => s.on('error', h),
  };
};

// ---------------------------------------------------------------------------
// Validated configuration

interface ResolvedInterface {
  name: string;
  address: string;
  addressNum: number;
  mode: 'full' | 'proxy';
  bindAddress: string;
  broadcastAddress: string;
  pxePort: boolean;
}

interface ResolvedSubnet {
  name: string;
  cidr: Cidr;
  pool: AddressPool;
  lease: LeaseTimes;
  routers: string[];
  dnsServers: string[];
  domainName?: string;
  authoritative: boolean;
}

function validate(o: DhcpServerOptions, limits: DhcpLimits, ports: DhcpPorts): { interfaces: ResolvedInterface[]; subnets: ResolvedSubnet[] } {
  const problems: string[] = [];
  const interfaces: ResolvedInterface[] = [];
  const subnets: ResolvedSubnet[] = [];
  const ip = (what: string, v: unknown): number | undefined => {
    const n = typeof v === 'string' ? parseIpv4(v) : undefined;
    if (n === undefined) problems.push(`${what}: ${JSON.stringify(v)} is not an IPv4 address`);
    return n;
  };

  for (const [k, v] of Object.entries(limits)) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) problems.push(`limits.${k} must be a positive number`);
  }
  if (limits.unknownPoolShare > 1) problems.push('limits.unknownPoolShare must be at most 1');
  for (const [k, v] of Object.entries(ports)) {
    if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 65535)) problems.push(`ports.${k} must be a port number`);
  }
  if (!o.policy || typeof o.policy.decide !== 'function') problems.push('policy must implement decide(client)');
  if (!Array.isArray(o.interfaces) || o.interfaces.length === 0) problems.push('interfaces: at least one interface is needed');

  const names = new Set<string>();
  const broadcastListeners = new Set<string>();
  for (const [i, f] of (o.interfaces ?? []).entries()) {
    const at = `interfaces[${i}]`;
    if (typeof f.name !== 'string' || f.name === '') problems.push(`${at}.name is required`);
    else if (names.has(f.name)) problems.push(`${at}.name ${f.name} is used twice`);
    names.add(f.name);
    if (f.mode !== 'full' && f.mode !== 'proxy') problems.push(`${at}.mode must be 'full' or 'proxy'`);
    const addressNum = ip(`${at}.address`, f.address);
    const bindAddress = f.bindAddress ?? ZERO;
    ip(`${at}.bindAddress`, bindAddress);
    const broadcastAddress = f.broadcastAddress ?? '255.255.255.255';
    ip(`${at}.broadcastAddress`, broadcastAddress);
    if (addressNum === 0) problems.push(`${at}.address may not be 0.0.0.0`);
    // One broadcast receiver per port: two could not tell their links apart (see the file comment).
    if (bindAddress === ZERO && ports.server !== 0) {
      const key = `${ports.server}`;
      if (broadcastListeners.has(key)) {
        problems.push(`${at}: a second interface receiving broadcasts on port ${key}; run one server per network namespace or use relays`);
      }
      broadcastListeners.add(key);
    }
    if (addressNum !== undefined && typeof f.name === 'string') {
      interfaces.push({
        name: f.name,
        address: f.address,
        addressNum,
        mode: f.mode,
        bindAddress,
        broadcastAddress,
        pxePort: f.pxePort ?? f.mode === 'proxy',
      });
    }
  }

  const serverAddresses = new Set(interfaces.map((f) => f.addressNum));
  const seenReservedMacs = new Map<string, string>();
  for (const [i, s] of (o.subnets ?? []).entries()) {
    const at = `subnets[${i}]`;
    const cidr = typeof s.subnet === 'string' ? parseCidr(s.subnet) : undefined;
    if (!cidr) {
      problems.push(`${at}.subnet: ${JSON.stringify(s.subnet)} is not a network in CIDR form (e.g. 10.0.0.0/24)`);
      continue;
    }
    if (cidr.prefix > 30) problems.push(`${at}.subnet: a /${cidr.prefix} has no room for clients`);
    for (const other of subnets) {
      if (cidrContains(other.cidr, cidr.network) || cidrContains(cidr, other.cidr.network)) {
        problems.push(`${at}.subnet ${s.subnet} overlaps ${other.name}`);
      }
    }
    const ranges: Array<{ start: number; end: number }> = [];
    let total = 0;
    for (const [j, r] of (s.ranges ?? []).entries()) {
      const a = ip(`${at}.ranges[${j}].start`, r.start);
      const b = ip(`${at}.ranges[${j}].end`, r.end);
      if (a === undefined || b === undefined) continue;
      if (a > b) problems.push(`${at}.ranges[${j}]: start is after end`);
      else if (!cidrContains(cidr, a) || !cidrContains(cidr, b)) problems.push(`${at}.ranges[${j}] is not inside ${s.subnet}`);
      else {
        ranges.push({ start: a, end: b });
        total += b - a + 1;
      }
    }
    if (total > MAX_POOL_ADDRESSES) problems.push(`${at}: ranges hold ${total} addresses, more than ${MAX_POOL_ADDRESSES}`);
    const routers = (s.routers ?? []).filter((r, j) => ip(`${at}.routers[${j}]`, r) !== undefined);
    const dnsServers = (s.dnsServers ?? []).filter((r, j) => ip(`${at}.dnsServers[${j}]`, r) !== undefined);
    if (s.domainName !== undefined && !/^[A-Za-z0-9.-]{1,253}$/.test(s.domainName)) problems.push(`${at}.domainName is not a domain name`);
    const leaseSeconds = s.leaseSeconds ?? DEFAULT_LEASE_SECONDS;
    if (!Number.isInteger(leaseSeconds) || leaseSeconds < MIN_LEASE_SECONDS || leaseSeconds > 0xfffffffe) {
      problems.push(`${at}.leaseSeconds must be an integer from ${MIN_LEASE_SECONDS} to 4294967294`);
    }
    const renewalSeconds = s.renewalSeconds ?? Math.floor(leaseSeconds * RENEWAL_FRACTION);
    const rebindingSeconds = s.rebindingSeconds ?? Math.floor(leaseSeconds * REBINDING_FRACTION);
    if (!(renewalSeconds > 0 && renewalSeconds < rebindingSeconds && rebindingSeconds < leaseSeconds)) {
      problems.push(`${at}: lease times must satisfy 0 < renewalSeconds < rebindingSeconds < leaseSeconds`);
    }
    const reservations = new Map<string, Reservation>();
    const reservedAddrs = new Set<number>();
    for (const [j, r] of (s.reservations ?? []).entries()) {
      const mac = typeof r.mac === 'string' ? normalizeMac(r.mac) : undefined;
      if (!mac) {
        problems.push(`${at}.reservations[${j}].mac: ${JSON.stringify(r.mac)} is not a MAC address`);
        continue;
      }
      const a = ip(`${at}.reservations[${j}].address`, r.address);
      if (a === undefined) continue;
      if (!cidrContains(cidr, a) || a === cidr.network || a === cidr.broadcast) problems.push(`${at}.reservations[${j}]: ${r.address} is not a host address of ${s.subnet}`);
      if (serverAddresses.has(a)) problems.push(`${at}.reservations[${j}]: ${r.address} is this server's address`);
      if (reservations.has(mac) || seenReservedMacs.has(mac)) problems.push(`${at}.reservations[${j}]: ${mac} is reserved twice`);
      if (reservedAddrs.has(a)) problems.push(`${at}.reservations[${j}]: ${r.address} is reserved twice`);
      if (r.hostName !== undefined && !/^[A-Za-z0-9-]{1,63}$/.test(r.hostName)) problems.push(`${at}.reservations[${j}].hostName is not a host name`);
      reservations.set(mac, { address: a, ...(r.hostName ? { hostName: r.hostName } : {}) });
      seenReservedMacs.set(mac, s.subnet);
      reservedAddrs.add(a);
    }
    // Never hand out this server's own addresses, nor the routers' or DNS servers'.
    const excluded = new Set<number>(serverAddresses);
    for (const r of [...routers, ...dnsServers]) excluded.add(parseIpv4(r)!);
    const pool = new AddressPool({
      name: s.subnet,
      cidr,
      ranges: total <= MAX_POOL_ADDRESSES ? ranges : [],
      reservations,
      excluded,
      offerHoldMs: limits.offerHoldMs,
      maxOffers: limits.maxPendingOffers,
      unknownShare: limits.unknownPoolShare,
    });
    subnets.push({
      name: s.subnet,
      cidr,
      pool,
      lease: { leaseSeconds, renewalSeconds, rebindingSeconds },
      routers,
      dnsServers,
      ...(s.domainName ? { domainName: s.domainName } : {}),
      authoritative: s.authoritative === true,
    });
  }
  for (const f of interfaces) {
    if (f.mode === 'full' && !subnets.some((s) => cidrContains(s.cidr, f.addressNum))) {
      problems.push(`interface ${f.name}: full mode needs a subnet containing its address ${f.address}`);
    }
  }
  if (problems.length > 0) {
    throw new DhcpError('DHCP_CONFIG_INVALID', `invalid DHCP configuration:\n  - ${problems.join('\n  - ')}`);
  }
  return { interfaces, subnets };
}

/** The most dynamic addresses one subnet may have (the pool keeps a set of free ones). */
export const MAX_POOL_ADDRESSES = 1 << 18;

// ---------------------------------------------------------------------------
// Rate limiting and log throttling

class ClientRateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(
    private readonly burst: number,
    private readonly perSecond: number,
    private readonly maxTracked: number,
  ) {}

  allow(key: string, now: number): boolean {
    let b = this.buckets.get(key);
    if (b) {
      this.buckets.delete(key);
      b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.perSecond);
      b.at = now;
    } else {
      b = { tokens: this.burst, at: now };
      while (this.buckets.size >= this.maxTracked) this.buckets.delete(this.buckets.keys().next().value as string);
    }
    this.buckets.set(key, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}

class LogThrottle {
  private readonly last = new Map<string, { at: number; suppressed: number }>();
  constructor(private readonly periodMs: number) {}
  /** Returns the number of suppressed repeats to report, or -1 to stay quiet. */
  check(key: string, now: number): number {
    const e = this.last.get(key);
    if (!e || now - e.at >= this.periodMs) {
      const suppressed = e?.suppressed ?? 0;
      if (this.last.size > 256) this.last.clear();
      this.last.set(key, { at: now, suppressed: 0 });
      return suppressed;
    }
    e.suppressed++;
    return -1;
  }
}

// ---------------------------------------------------------------------------

interface Listener {
  iface: ResolvedInterface;
  kind: 'dhcp' | 'pxe';
  /** Replies are sent from this socket (bound to the interface's address). */
  tx: DhcpSocket;
  sockets: DhcpSocket[];
  port: number;
}

interface Ctx {
  l: Listener;
  packet: DhcpPacket;
  info: DhcpRequestInfo;
  type: number;
  from: { address: string; port: number };
  now: number;
  log: Logger;
}

function isPromise<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | null)?.then === 'function';
}

/** Counters, for tests, benchmarks and metrics. */
export interface DhcpStats {
  received: number;
  malformed: number;
  rateLimited: number;
  overloaded: number;
  ignored: number;
  replies: number;
  sendErrors: number;
  storeErrors: number;
  policyErrors: number;
  /** Decoded requests by message type name (option 53: `DHCPDISCOVER`...), before rate limiting. */
  receivedByType: Record<string, number>;
  /** Replies sent by message type name (`DHCPOFFER`, `DHCPACK`, `DHCPNAK`). */
  sentByType: Record<string, number>;
}

export class DhcpServer extends EventEmitter<{ event: [DhcpEvent] }> {
  private readonly interfaces: ResolvedInterface[];
  private readonly subnets: ResolvedSubnet[];
  private readonly policy: BootPolicy;
  private readonly store: LeaseStore;
  private readonly ports: DhcpPorts;
  private readonly limits: DhcpLimits;
  private readonly createSocket: DhcpSocketFactory;
  private readonly now: () => number;
  private readonly log: Logger;
  private readonly limiter: ClientRateLimiter;
  private readonly throttle: LogThrottle;
  private readonly bound: Listener[] = [];
  private readonly reservedMacs = new Set<string>();
  private inFlight = 0;
  private state: 'new' | 'listening' | 'closed' = 'new';
  readonly stats: DhcpStats = {
    received: 0,
    malformed: 0,
    rateLimited: 0,
    overloaded: 0,
    ignored: 0,
    replies: 0,
    sendErrors: 0,
    storeErrors: 0,
    policyErrors: 0,
    receivedByType: {},
    sentByType: {},
  };

  constructor(options: DhcpServerOptions) {
    super();
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.ports = { ...DEFAULT_PORTS, ...options.ports };
    const resolved = validate(options, this.limits, this.ports);
    this.interfaces = resolved.interfaces;
    this.subnets = resolved.subnets;
    for (const s of options.subnets ?? []) for (const r of s.reservations ?? []) this.reservedMacs.add(normalizeMac(r.mac)!);
    this.policy = options.policy;
    this.store = options.leaseStore ?? new InMemoryLeaseStore();
    this.createSocket = options.createSocket ?? udpSocketFactory;
    this.now = options.now ?? Date.now;
    this.log = (options.logger ?? silentLogger).child({ protocol: 'dhcp' });
    this.limiter = new ClientRateLimiter(this.limits.clientBurst, this.limits.clientRatePerSecond, this.limits.maxTrackedClients);
    this.throttle = new LogThrottle(this.limits.logThrottleMs);
  }

  /** Loads the leases and binds every socket. */
  async listen(): Promise<void> {
    if (this.state !== 'new') throw new DhcpError('DHCP_NOT_LISTENING', `cannot listen: server is ${this.state}`);
    let records: readonly LeaseRecord[];
    try {
      records = await this.store.load();
    } catch (e) {
      throw new DhcpError('DHCP_STORE_FAILED', `could not load leases: ${(e as Error).message}`, { cause: e });
    }
    let loaded = 0;
    for (const r of records) {
      const a = parseIpv4(r.address);
      const s = a === undefined ? undefined : this.subnets.find((x) => x.name === r.subnet && cidrContains(x.cidr, a));
      if (s && a !== undefined) {
        s.pool.load(r, a);
        loaded++;
      }
    }
    try {
      for (const iface of this.interfaces) {
        await this.open(iface, 'dhcp', this.ports.server);
        if (iface.pxePort) await this.open(iface, 'pxe', this.ports.pxe);
      }
    } catch (e) {
      await this.closeSockets();
      this.state = 'closed';
      throw new DhcpError('DHCP_BIND_FAILED', `could not bind DHCP sockets: ${(e as Error).message}`, { cause: e });
    }
    this.state = 'listening';
    this.log.info('DHCP server listening', {
      interfaces: this.bound.map((l) => `${l.iface.name}/${l.iface.mode}/${l.kind}:${l.port}`),
      leases: loaded,
    });
  }

  private async open(iface: ResolvedInterface, kind: 'dhcp' | 'pxe', port: number): Promise<void> {
    const sockets: DhcpSocket[] = [];
    const attach = (s: DhcpSocket): void => {
      sockets.push(s);
      s.onError((err) => this.log.warn('DHCP socket error', { interface: iface.name, kind, err }));
    };
    let tx: DhcpSocket;
    let bound: number;
    if (kind === 'pxe' || iface.bindAddress === iface.address) {
      // Boot-server requests are unicast to our address (PXE 2.1 section 2.2.7); no broadcast socket.
      tx = this.createSocket();
      attach(tx);
      bound = await tx.bind(port, iface.address);
    } else {
      const rx = this.createSocket();
      attach(rx);
      bound = await rx.bind(port, iface.bindAddress);
      tx = this.createSocket();
      attach(tx);
      await tx.bind(bound, iface.address);
    }
    const l: Listener = { iface, kind, tx, sockets, port: bound };
    for (const s of sockets) s.onMessage((msg, from) => this.onMessage(l, msg, from));
    this.bound.push(l);
  }

  /** The ports actually bound (differs from the options when they asked for 0). */
  boundPorts(interfaceName: string): { dhcp?: number; pxe?: number } {
    const out: { dhcp?: number; pxe?: number } = {};
    for (const l of this.bound) if (l.iface.name === interfaceName) out[l.kind] = l.port;
    return out;
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    await this.closeSockets();
  }

  private async closeSockets(): Promise<void> {
    const all = this.bound.flatMap((l) => l.sockets);
    this.bound.length = 0;
    await Promise.all(all.map((s) => s.close()));
  }

  /** Every lease record the server holds, by subnet. */
  leases(): LeaseRecord[] {
    return this.subnets.flatMap((s) => s.pool.allRecords());
  }

  /** Pending offers across all subnets. */
  pendingOffers(): number {
    return this.subnets.reduce((n, s) => n + s.pool.pendingOffers, 0);
  }

  /** Administrative removal of an address's record (e.g. a client retired from the catalogue). */
  async forgetLease(address: string): Promise<boolean> {
    const a = parseIpv4(address);
    if (a === undefined) return false;
    const s = this.subnets.find((x) => cidrContains(x.cidr, a));
    if (!s || !s.pool.forget(a)) return false;
    await this.store.remove(address);
    return true;
  }

  // -------------------------------------------------------------------------
  // Receiving

  private onMessage(l: Listener, msg: Buffer, from: { address: string; port: number }): void {
    // Nothing from the network may throw out of here.
    this.handle(l, msg, from).catch((err: unknown) => {
      this.log.error('DHCP request handling failed', { interface: l.iface.name, peer: from.address, err });
    });
  }

  /**
   * Hands a datagram to the server as if it had arrived on an interface's
   * DHCP (or PXE) socket; resolves once it is handled and any reply sent.
   * For in-process tests and fuzzing; the sockets use the same path.
   */
  async inject(interfaceName: string, msg: Buffer, from: { address: string; port: number }, kind: 'dhcp' | 'pxe' = 'dhcp'): Promise<void> {
    const l = this.bound.find((x) => x.iface.name === interfaceName && x.kind === kind);
    if (!l) throw new DhcpError('DHCP_NOT_LISTENING', `no ${kind} listener on interface ${interfaceName}`);
    await this.handle(l, msg, from);
  }

  private async handle(l: Listener, msg: Buffer, from: { address: string; port: number }): Promise<void> {
    if (this.state !== 'listening') return;
    this.stats.received++;
    const now = this.now();
    if (this.inFlight >= this.limits.maxInFlight) {
      this.stats.overloaded++;
      this.warnThrottled('overloaded', now, 'DHCP server busy; dropping packets', { inFlight: this.inFlight });
      return;
    }
    let packet: DhcpPacket;
    let info: DhcpRequestInfo;
    try {
      packet = decodePacket(msg, this.limits.maxPacketSize);
      if (packet.op !== BOOTREQUEST) return this.dropQuietly(l, 'not a BOOTREQUEST', from);
      if (packet.htype !== HTYPE_ETHERNET) return this.dropQuietly(l, `hardware type ${packet.htype} is not served`, from);
      info = readRequestInfo(packet);
    } catch (e) {
      if (!isDhcpCodecError(e)) throw e;
      this.stats.malformed++;
      this.warnThrottled(`malformed:${e.code}`, now, 'dropped malformed DHCP packet', {
        interface: l.iface.name,
        peer: from.address,
        code: e.code,
        reason: e.message,
        ...(e.offset !== undefined ? { offset: e.offset } : {}),
      });
      return;
    }
    if (info.messageType === undefined) return this.dropQuietly(l, 'BOOTP (no option 53) is not served', from);
    const typeName = messageTypeName(info.messageType);
    this.stats.receivedByType[typeName] = (this.stats.receivedByType[typeName] ?? 0) + 1;
    if (!this.reservedMacs.has(info.mac) && !this.limiter.allow(info.mac, now)) {
      this.stats.rateLimited++;
      this.warnThrottled('rate', now, 'client over its request rate; dropping', { mac: info.mac, interface: l.iface.name });
      return;
    }
    const log = this.log.child({ interface: l.iface.name, mac: info.mac });
    const ctx: Ctx = { l, packet, info, type: info.messageType, from, now, log };
    this.inFlight++;
    try {
      if (l.kind === 'pxe') await this.onPxePort(ctx);
      else if (l.iface.mode === 'proxy') await this.onProxy(ctx);
      else await this.onFull(ctx);
    } finally {
      this.inFlight--;
    }
  }

  private dropQuietly(l: Listener, why: string, from: { address: string }): void {
    this.stats.ignored++;
    this.log.debug('DHCP packet ignored', { interface: l.iface.name, peer: from.address, reason: why });
  }

  private warnThrottled(key: string, now: number, msg: string, fields: Record<string, unknown>): void {
    const suppressed = this.throttle.check(key, now);
    if (suppressed < 0) return;
    this.log.warn(msg, suppressed > 0 ? { ...fields, suppressedSinceLast: suppressed } : fields);
  }

  // -------------------------------------------------------------------------
  // Policy

  private bootClient(c: Ctx): BootClient {
    const i = c.info;
    const guid = i.machineIdentifier;
    return {
      mac: i.mac,
      ...(i.arch !== undefined ? { arch: i.arch } : {}),
      architectures: i.architectures,
      ...(i.vendorClass !== undefined ? { vendorClass: i.vendorClass } : {}),
      userClasses: i.userClasses,
      hasIpxeOptions: i.ipxeOptions !== undefined,
      isIpxe: i.isIpxe,
      isPxeClient: i.isPxeClient,
      isHttpClient: i.isHttpClient,
      ...(i.hostName !== undefined ? { hostName: i.hostName } : {}),
      ...(guid && guid.length === 17 && guid[0] === 0 ? { uuid: formatUuid(guid.subarray(1)) } : {}),
      ...(c.packet.giaddr !== ZERO ? { relay: c.packet.giaddr } : {}),
      interfaceName: c.l.iface.name,
      serverAddress: c.l.iface.address,
      mode: c.l.iface.mode,
      pxePort: c.l.kind === 'pxe',
      messageType: c.type,
    };
  }

  /** Asks the policy, bounded in time; undefined when it fails (the packet is then dropped). */
  private async decide(c: Ctx): Promise<BootDecision | undefined> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const r = this.policy.decide(this.bootClient(c));
      const d = isPromise(r)
        ? await Promise.race([
            r,
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(new Error(`no answer within ${this.limits.policyTimeoutMs} ms`)), this.limits.policyTimeoutMs);
              timer.unref?.();
            }),
          ])
        : r;
      if (!isDecision(d)) throw new Error(`policy returned ${JSON.stringify(d)}`);
      return d;
    } catch (err) {
      this.stats.policyErrors++;
      this.warnThrottled('policy', c.now, 'boot policy failed; packet dropped', { code: 'DHCP_POLICY_FAILED', mac: c.info.mac, err });
      return undefined;
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  // -------------------------------------------------------------------------
  // Full mode

  /** RFC 2131 section 4.3.1 and RFC 3011: which subnet a request belongs to. */
  private subnetFor(c: Ctx): ResolvedSubnet | undefined {
    const p = c.packet;
    const find = (addr: string | undefined): ResolvedSubnet | undefined => {
      const a = addr === undefined ? undefined : parseIpv4(addr);
      return a === undefined ? undefined : this.subnets.find((s) => cidrContains(s.cidr, a));
    };
    if (c.info.subnetSelection) return find(c.info.subnetSelection);
    if (p.giaddr !== ZERO) return find(p.giaddr);
    if (p.ciaddr !== ZERO && (c.type === MT.DHCPREQUEST || c.type === MT.DHCPINFORM || c.type === MT.DHCPRELEASE)) {
      return find(p.ciaddr);
    }
    return find(c.l.iface.address);
  }

  private async onFull(c: Ctx): Promise<void> {
    switch (c.type) {
      case MT.DHCPDISCOVER:
        return this.fullDiscover(c);
      case MT.DHCPREQUEST:
        return this.fullRequest(c);
      case MT.DHCPDECLINE:
        return this.fullDecline(c);
      case MT.DHCPRELEASE:
        return this.fullRelease(c);
      case MT.DHCPINFORM:
        return this.fullInform(c);
      default:
        this.dropQuietly(c.l, `${messageTypeName(c.type)} is not served`, c.from);
    }
  }

  private poolClient(c: Ctx, s: ResolvedSubnet, d: BootDecision): PoolClient {
    const known = (d.action !== 'ignore' && d.known) || s.pool.reservationFor(c.info.mac) !== undefined;
    return { clientKey: c.info.clientKey, mac: c.info.mac, known };
  }

  private network(s: ResolvedSubnet, c: Ctx, d: BootDecision): NetworkOptions {
    const res = s.pool.reservationFor(c.info.mac);
    const hostName = res?.hostName ?? (d.action !== 'ignore' ? d.hostName : undefined);
    return {
      subnetMask: formatIpv4(s.cidr.mask),
      routers: s.routers,
      dnsServers: s.dnsServers,
      ...(s.domainName ? { domainName: s.domainName } : {}),
      ...(hostName ? { hostName } : {}),
    };
  }

  private async fullDiscover(c: Ctx): Promise<void> {
    this.emitEvent(c, 'discover');
    const d = await this.decide(c);
    if (!d) return;
    if (d.action === 'ignore') return this.ignored(c, d.reason);
    const s = this.subnetFor(c);
    if (!s) return this.ignored(c, 'no subnet configured for this link or relay');
    const requested = c.info.requestedAddress ? parseIpv4(c.info.requestedAddress) : undefined;
    const addr = s.pool.offer(this.poolClient(c, s, d), requested, c.now);
    if (addr === undefined) {
      this.warnThrottled(`exhausted:${s.name}`, c.now, 'no address to offer', { subnet: s.name, mac: c.info.mac, known: d.known });
      return this.ignored(c, 'no address available');
    }
    const yiaddr = formatIpv4(addr);
    await this.reply(c, MT.DHCPOFFER, { yiaddr, lease: s.lease, network: this.network(s, c, d), boot: d }, { address: yiaddr, known: d.known });
  }

  private async fullRequest(c: Ctx): Promise<void> {
    const { info, packet } = c;
    this.emitEvent(c, 'request');
    const s = this.subnetFor(c);
    if (info.serverIdentifier !== undefined) {
      // SELECTING (RFC 2131 section 4.3.2): the client names the server it chose.
      if (info.serverIdentifier !== c.l.iface.address) {
        s?.pool.withdrawOffer(info.clientKey);
        return this.ignored(c, `client chose server ${info.serverIdentifier}`);
      }
      if (!info.requestedAddress || packet.ciaddr !== ZERO) return this.ignored(c, 'SELECTING request without option 50, or with ciaddr');
      if (!s) return this.ignored(c, 'no subnet configured for this link or relay');
      return this.bind(c, s, info.requestedAddress, 'selecting');
    }
    if (info.requestedAddress && packet.ciaddr === ZERO) {
      // INIT-REBOOT: the client checks the address it remembers.
      if (!s) return this.ignored(c, 'no subnet configured for this link or relay');
      const a = parseIpv4(info.requestedAddress)!;
      if (!s.pool.inSubnet(a)) return this.nak(c, s, `${info.requestedAddress} is not on this network`);
      const rec = s.pool.recordOf(info.clientKey);
      if (rec) {
        if (rec.address !== info.requestedAddress) return this.nak(c, s, `client's address is ${rec.address}`);
        return this.bind(c, s, info.requestedAddress, 'init-reboot');
      }
      if (!s.authoritative) return this.ignored(c, 'INIT-REBOOT for a client with no record (not authoritative)');
      return this.bind(c, s, info.requestedAddress, 'init-reboot');
    }
    if (packet.ciaddr !== ZERO && !info.requestedAddress) {
      // RENEWING (unicast) or REBINDING (broadcast): the same handling, as
      // the destination address of a datagram is not visible here.
      if (!s) return this.ignored(c, 'ciaddr is in no configured subnet');
      const a = parseIpv4(packet.ciaddr)!;
      const rec = s.pool.record(a);
      if (rec && rec.clientKey === info.clientKey && rec.state !== 'declined') return this.bind(c, s, packet.ciaddr, 'renewing');
      if (rec && rec.state === 'bound' && rec.expiresAt > c.now) return this.nak(c, s, `${packet.ciaddr} is leased to another client`);
      if (!s.authoritative) return this.ignored(c, 'renewal for an address with no record (not authoritative)');
      return this.bind(c, s, packet.ciaddr, 'renewing');
    }
    return this.ignored(c, 'DHCPREQUEST in no RFC 2131 state (needs option 54, option 50 or ciaddr)');
  }

  /** Commits the binding (store first), then ACKs; NAKs if the address cannot be the client's. */
  private async bind(c: Ctx, s: ResolvedSubnet, address: string, state: string): Promise<void> {
    const d = await this.decide(c);
    if (!d) return;
    if (d.action === 'ignore') return this.ignored(c, d.reason);
    const a = parseIpv4(address)!;
    const pc = this.poolClient(c, s, d);
    const res = s.pool.reservationFor(c.info.mac);
    if (res && res.address !== a && s.pool.availableTo(res.address, pc, c.now)) {
      return this.nak(c, s, `client is reserved ${formatIpv4(res.address)}`);
    }
    const net = this.network(s, c, d);
    const r = s.pool.commit(pc, a, c.now, s.lease.leaseSeconds * 1000, net.hostName);
    if (!r.ok) return this.nak(c, s, r.reason);
    try {
      if (r.replaced) await this.store.save(r.replaced);
      await this.store.save(r.lease);
    } catch (err) {
      this.stats.storeErrors++;
      c.log.error('lease store failed; no DHCPACK sent', { code: 'DHCP_STORE_FAILED', address, err });
      return;
    }
    c.log.debug('lease bound', { address, state });
    await this.reply(c, MT.DHCPACK, { yiaddr: address, copyCiaddr: true, lease: s.lease, network: net, boot: d }, { address, known: pc.known });
  }

  private async nak(c: Ctx, s: ResolvedSubnet, reason: string): Promise<void> {
    c.log.info('DHCPNAK', { reason });
    s.pool.withdrawOffer(c.info.clientKey);
    await this.reply(c, MT.DHCPNAK, { message: reason }, { reason });
  }

  private async fullDecline(c: Ctx): Promise<void> {
    const { info } = c;
    if (info.serverIdentifier !== undefined && info.serverIdentifier !== c.l.iface.address) return this.ignored(c, 'DHCPDECLINE for another server');
    const s = info.requestedAddress ? this.subnets.find((x) => x.pool.inSubnet(parseIpv4(info.requestedAddress!)!)) : undefined;
    if (!s || !info.requestedAddress) return this.ignored(c, 'DHCPDECLINE without a known address (option 50)');
    const a = parseIpv4(info.requestedAddress)!;
    // Only the client the address was offered or bound to may decline it.
    const rec = s.pool.record(a);
    const mine = s.pool.offerOf(info.clientKey, c.now) === a || (rec !== undefined && rec.clientKey === info.clientKey);
    if (!mine) return this.ignored(c, `DHCPDECLINE of ${info.requestedAddress}, which is not this client's`);
    const r = s.pool.decline(a, c.now, this.limits.declineHoldMs);
    if (!r) return this.ignored(c, 'address cannot be declined');
    c.log.warn('address declined by client (in use on the network?)', { address: info.requestedAddress });
    this.emitEvent(c, 'decline', { address: info.requestedAddress });
    try {
      await this.store.save(r);
    } catch (err) {
      this.stats.storeErrors++;
      c.log.error('lease store failed to record a declined address', { code: 'DHCP_STORE_FAILED', err });
    }
  }

  private async fullRelease(c: Ctx): Promise<void> {
    const { info, packet } = c;
    if (info.serverIdentifier !== undefined && info.serverIdentifier !== c.l.iface.address) return this.ignored(c, 'DHCPRELEASE for another server');
    const s = this.subnetFor(c);
    if (!s || packet.ciaddr === ZERO) return this.ignored(c, 'DHCPRELEASE without a known ciaddr');
    const r = s.pool.release(info.clientKey, parseIpv4(packet.ciaddr)!, c.now);
    if (!r) return this.ignored(c, `DHCPRELEASE of ${packet.ciaddr}, which is not bound to this client`);
    this.emitEvent(c, 'release', { address: packet.ciaddr });
    try {
      await this.store.save(r);
    } catch (err) {
      this.stats.storeErrors++;
      c.log.error('lease store failed to record a release', { code: 'DHCP_STORE_FAILED', err });
    }
  }

  /** RFC 2131 section 4.3.5: configuration for a client that has its address already. */
  private async fullInform(c: Ctx): Promise<void> {
    if (c.packet.ciaddr === ZERO) return this.ignored(c, 'DHCPINFORM without ciaddr');
    this.emitEvent(c, 'inform');
    const s = this.subnetFor(c);
    if (!s) return this.ignored(c, 'ciaddr is in no configured subnet');
    const d = await this.decide(c);
    if (!d) return;
    if (d.action === 'ignore') return this.ignored(c, d.reason);
    // No yiaddr and no lease times (table 3); the ACK goes to ciaddr.
    await this.reply(c, MT.DHCPACK, { copyCiaddr: true, network: this.network(s, c, d), boot: d }, { known: d.known });
  }

  // -------------------------------------------------------------------------
  // Proxy mode and the PXE port

  /** Port 67 in proxy mode: only PXE clients, only DISCOVER (and a REQUEST naming us). */
  private async onProxy(c: Ctx): Promise<void> {
    if (!c.info.isPxeClient) return this.dropQuietly(c.l, 'proxy mode answers PXEClient only', c.from);
    if (c.type === MT.DHCPDISCOVER) {
      this.emitEvent(c, 'discover');
      return this.proxyAnswer(c, MT.DHCPOFFER);
    }
    if (c.type === MT.DHCPREQUEST && c.info.serverIdentifier === c.l.iface.address) {
      this.emitEvent(c, 'request');
      return this.proxyAnswer(c, MT.DHCPACK);
    }
    this.dropQuietly(c.l, `${messageTypeName(c.type)} is left to the DHCP server`, c.from);
  }

  /** Port 4011 (PXE 2.1 section 2.2.7): a boot-server DHCPREQUEST (or INFORM) from a client with an address. */
  private async onPxePort(c: Ctx): Promise<void> {
    if (!c.info.isPxeClient) return this.dropQuietly(c.l, 'PXE port answers PXEClient only', c.from);
    if (c.type !== MT.DHCPREQUEST && c.type !== MT.DHCPINFORM) return this.dropQuietly(c.l, `${messageTypeName(c.type)} on the PXE port`, c.from);
    if (c.info.serverIdentifier !== undefined && c.info.serverIdentifier !== c.l.iface.address) {
      return this.ignored(c, `PXE request for server ${c.info.serverIdentifier}`);
    }
    this.emitEvent(c, 'request');
    return this.proxyAnswer(c, MT.DHCPACK);
  }

  private async proxyAnswer(c: Ctx, type: number): Promise<void> {
    const d = await this.decide(c);
    if (!d) return;
    if (d.action === 'ignore' || d.action === 'none') return this.ignored(c, d.reason);
    await this.reply(c, type, { boot: d, pxe: true, copyCiaddr: type === MT.DHCPACK }, { known: d.known });
  }

  // -------------------------------------------------------------------------
  // Sending

  private async reply(
    c: Ctx,
    type: number,
    spec: { yiaddr?: string; copyCiaddr?: boolean; lease?: LeaseTimes; network?: NetworkOptions; boot?: BootDecision; pxe?: boolean; message?: string },
    event: { address?: string; known?: boolean; reason?: string },
  ): Promise<void> {
    const boot = spec.boot;
    const nextServer = boot?.action === 'tftp' ? (boot.nextServer ?? c.l.iface.address) : c.l.iface.address;
    let buf: Buffer;
    try {
      const init = buildReply(c.packet, c.info, { type, serverId: c.l.iface.address, siaddr: nextServer, ...spec });
      const limit = Math.min(c.info.maxMessageSize ?? MIN_MAX_MESSAGE_SIZE, 1500) - IP_UDP_HEADERS;
      buf = encodePacket(init, { maxSize: limit });
    } catch (err) {
      c.log.error('could not encode a reply', { code: (err as { code?: string }).code, err });
      return;
    }
    const dest = this.destination(c, type);
    try {
      await c.l.tx.send(buf, dest.port, dest.address);
      this.stats.replies++;
      const sentName = messageTypeName(type);
      this.stats.sentByType[sentName] = (this.stats.sentByType[sentName] ?? 0) + 1;
    } catch (err) {
      this.stats.sendErrors++;
      this.warnThrottled(`send:${c.l.iface.name}`, c.now, 'could not send a DHCP reply', { to: `${dest.address}:${dest.port}`, err });
      return;
    }
    const kind = type === MT.DHCPOFFER ? 'offer' : type === MT.DHCPNAK ? 'nak' : 'ack';
    const bootInfo: DhcpEvent['boot'] =
      boot?.action === 'tftp'
        ? { kind: 'tftp', nextServer, file: boot.bootFile }
        : boot?.action === 'http'
          ? { kind: 'http', url: boot.url }
          : undefined;
    this.emitEvent(c, kind, { ...event, ...(bootInfo && type !== MT.DHCPNAK ? { boot: bootInfo } : {}) });
    c.log.debug(`sent ${messageTypeName(type)}`, { to: `${dest.address}:${dest.port}`, address: spec.yiaddr, arch: architectureName(c.info.arch) });
  }

  private destination(c: Ctx, type: number): Destination {
    // PXE port replies go back where the request came from (PXE 2.1 section 2.2.7).
    if (c.l.kind === 'pxe' && c.from.address !== ZERO) return { address: c.from.address, port: c.from.port, broadcast: false };
    return replyDestination(c.packet, type, {
      broadcastAddress: c.l.iface.broadcastAddress,
      clientPort: this.ports.client,
      relayPort: this.ports.relay ?? (this.ports.server || PORTS.DHCP_SERVER),
    });
  }

  private ignored(c: Ctx, reason: string): void {
    this.stats.ignored++;
    c.log.debug('request not answered', { type: messageTypeName(c.type), reason });
    this.emitEvent(c, 'ignored', { reason });
  }

  private emitEvent(c: Ctx, type: DhcpEvent['type'], extra: Partial<DhcpEvent> = {}): void {
    if (this.listenerCount('event') === 0) return;
    const e: DhcpEvent = {
      type,
      time: c.now,
      mac: c.info.mac,
      interface: c.l.iface.name,
      mode: c.l.iface.mode,
      pxePort: c.l.kind === 'pxe',
      xid: c.packet.xid,
      ipxe: c.info.isIpxe,
      ...(c.info.arch !== undefined ? { arch: c.info.arch } : {}),
      ...(c.packet.giaddr !== ZERO ? { relay: c.packet.giaddr } : {}),
      ...extra,
    };
    try {
      this.emit('event', e);
    } catch (err) {
      this.log.warn('a DHCP event listener threw', { err });
    }
  }
}

/** Boot file names and URLs go to firmware verbatim: printable ASCII, no spaces or quotes, bounded. */
const SAFE_BOOT_VALUE = /^[\x21\x23-\x7e]{1,1024}$/;
/** RFC 1123 host names (option 12). */
const HOST_NAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** Checks what a policy returned before any of it reaches the wire. */
function isDecision(d: unknown): d is BootDecision {
  if (typeof d !== 'object' || d === null) return false;
  const x = d as Record<string, unknown>;
  if (x.action === 'ignore') return true;
  if (typeof x.known !== 'boolean') return false;
  if (x.hostName !== undefined && (typeof x.hostName !== 'string' || x.hostName.length > 253 || !HOST_NAME.test(x.hostName))) return false;
  switch (x.action) {
    case 'none':
      return true;
    case 'tftp':
      return typeof x.bootFile === 'string' && SAFE_BOOT_VALUE.test(x.bootFile) && (x.nextServer === undefined || isIpv4String(x.nextServer));
    case 'http':
      return typeof x.url === 'string' && SAFE_BOOT_VALUE.test(x.url);
    default:
      return false;
  }
}

function isIpv4String(v: unknown): boolean {
  return typeof v === 'string' && parseIpv4(v) !== undefined;
}

function formatUuid(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
