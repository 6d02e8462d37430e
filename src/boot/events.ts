/**
 * The boot timeline: what each client did, step by step (DHCP discover,
 * offer and ack, TFTP file served, script, kernel, initrd, OS up), written
 * to the catalogue's `boot_events` table for the dashboard and for tests.
 *
 * Design note. Events come from the network, and the network includes
 * floods: a DISCOVER storm from thousands of fake MACs must not turn into
 * thousands of synchronous SQLite commits (each is an fsync under
 * synchronous=FULL, and better-sqlite3 blocks the event loop while it
 * runs, which would starve the DHCP server itself). So the recorder:
 *   - queues events in memory and writes them in one transaction every
 *     `flushIntervalMs` (one fsync per batch, not per event);
 *   - bounds the queue twice: events of catalogue clients have their own
 *     share, so unknown MACs can never crowd them out; what does not fit is
 *     dropped and counted (`stats().dropped`), with a throttled warning;
 *   - coalesces sightings of unknown machines per MAC within a batch.
 * A failed batch is logged and dropped, never retried in a loop.
 *
 * TFTP knows addresses, not MACs. The recorder maps a TFTP peer's address
 * to a MAC from the DHCP acknowledgements it has seen (full mode), and
 * otherwise from the kernel's neighbour table (`/proc/net/arp`, read in the
 * server's network namespace): in proxy mode the site's DHCP server handed
 * out the address, but the TFTP exchange itself has just put the client in
 * the ARP table.
 */
import { readFile } from 'node:fs/promises';
import { silentLogger, type Logger } from '../lib/log.js';
import { normalizeMac } from '../lib/net.js';
import type { DhcpEvent } from '../protocols/dhcp/server.js';
import type { TftpServerEvents } from '../protocols/tftp/server.js';
import type { BootStep, Store } from '../state/store.js';

export interface BootEventInput {
  mac: string;
  step: BootStep;
  bootId?: string | null;
  detail?: Record<string, unknown> | null;
  /** Milliseconds since the epoch; default: now. */
  timeMs?: number;
}

/** Where the boot service and the protocol adapters send timeline events. */
export interface BootEventSink {
  record(event: BootEventInput): void;
  /** A machine that is not in the catalogue tried to boot. */
  unknownSeen(mac: string, arch?: string | null): void;
}

export interface BootEventRecorderOptions {
  store: Store;
  logger?: Logger;
  now?: () => number;
  flushIntervalMs?: number;
  /** Queued events of catalogue clients. */
  maxQueuedKnown?: number;
  /** Queued events and sightings of unknown MACs. */
  maxQueuedUnknown?: number;
  /** Address-to-MAC pairs remembered from DHCP acknowledgements. */
  maxAddresses?: number;
  /** Whether a MAC is a catalogue client; default: a store lookup. */
  isKnown?: (mac: string) => boolean;
  /** MAC of a neighbour by IPv4 address; default: the kernel's ARP table. */
  neighbour?: (address: string) => Promise<string | undefined>;
}

export const EVENT_DEFAULTS = {
  flushIntervalMs: 250,
  maxQueuedKnown: 4096,
  maxQueuedUnknown: 512,
  maxAddresses: 4096,
  /** Neighbour-table lookups in flight (one per TFTP transfer of an unmatched peer); more are not looked up. */
  maxPendingLookups: 64,
  /** Drop warnings are logged at most this often. */
  warnIntervalMs: 10_000,
} as const;

export const ARP_TABLE = '/proc/net/arp';

/**
 * Reads the kernel's IPv4 neighbour table (proc(5): "IP address  HW type
 * Flags  HW address  Mask  Device") and returns the MAC of `address`, if it
 * is complete (flag ATF_COM, 0x2).
 */
export async function arpLookup(address: string, path: string = ARP_TABLE): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'latin1');
  } catch {
    return undefined;
  }
  return parseArpTable(text).get(address);
}

/** The complete entries of a /proc/net/arp text, address to MAC. */
export function parseArpTable(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    const flags = Number.parseInt(f[2]!, 16);
    const mac = normalizeMac(f[3]!);
    if (!mac || mac === '00:00:00:00:00:00' || !(flags & 0x2)) continue;
    out.set(f[0]!, mac);
  }
  return out;
}

interface Queued {
  mac: string;
  step: BootStep;
  bootId: string | null;
  detail: Record<string, unknown> | null;
  timeMs: number;
}

export interface BootEventStats {
  recorded: number;
  dropped: number;
  unknownRecorded: number;
  failedBatches: number;
  /** TFTP transfers whose peer could not be matched to a MAC. */
  unmatchedTftp: number;
}

type DhcpEmitter = { on(event: 'event', listener: (e: DhcpEvent) => void): unknown; off(event: 'event', listener: (e: DhcpEvent) => void): unknown };
type TftpEmitter = {
  on<K extends keyof TftpServerEvents>(event: K, listener: (...args: TftpServerEvents[K]) => void): unknown;
  off<K extends keyof TftpServerEvents>(event: K, listener: (...args: TftpServerEvents[K]) => void): unknown;
};

const DHCP_STEPS: Partial<Record<DhcpEvent['type'], BootStep>> = { discover: 'dhcp-discover', offer: 'dhcp-offer', ack: 'dhcp-ack' };

export class BootEventRecorder implements BootEventSink {
  private readonly store: Store;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly isKnown: (mac: string) => boolean;
  private readonly neighbour: (address: string) => Promise<string | undefined>;
  private readonly limits: { maxQueuedKnown: number; maxQueuedUnknown: number; maxAddresses: number };
  private known: Queued[] = [];
  private unknown: Queued[] = [];
  private unknownMachines = new Map<string, { arch: string | null; timeMs: number }>();
  /** IPv4 address to MAC, from DHCP acknowledgements; least recently set first. */
  private readonly addresses = new Map<string, string>();
  private readonly pending = new Set<Promise<void>>();
  private readonly timer: NodeJS.Timeout;
  private lastDropWarning = 0;
  private droppedSinceWarning = 0;
  private closed = false;
  private readonly counters: BootEventStats = { recorded: 0, dropped: 0, unknownRecorded: 0, failedBatches: 0, unmatchedTftp: 0 };

  constructor(options: BootEventRecorderOptions) {
    this.store = options.store;
    this.log = (options.logger ?? silentLogger).child({ component: 'boot-events' });
    this.now = options.now ?? Date.now;
    this.isKnown = options.isKnown ?? ((mac) => this.store.clients.get(mac) !== null);
    this.neighbour = options.neighbour ?? ((a) => arpLookup(a));
    this.limits = {
      maxQueuedKnown: options.maxQueuedKnown ?? EVENT_DEFAULTS.maxQueuedKnown,
      maxQueuedUnknown: options.maxQueuedUnknown ?? EVENT_DEFAULTS.maxQueuedUnknown,
      maxAddresses: options.maxAddresses ?? EVENT_DEFAULTS.maxAddresses,
    };
    for (const [k, v] of Object.entries(this.limits)) {
      if (!Number.isInteger(v) || v < 1) throw new TypeError(`boot event recorder: ${k} must be a positive integer`);
    }
    const interval = options.flushIntervalMs ?? EVENT_DEFAULTS.flushIntervalMs;
    if (!Number.isFinite(interval) || interval < 1) throw new TypeError('boot event recorder: flushIntervalMs must be positive');
    this.timer = setInterval(() => this.flush(), interval);
    this.timer.unref();
  }

  stats(): BootEventStats {
    return { ...this.counters };
  }

  record(event: BootEventInput): void {
    if (this.closed) return;
    const mac = normalizeMac(event.mac);
    if (!mac) return;
    const q: Queued = { mac, step: event.step, bootId: event.bootId ?? null, detail: event.detail ?? null, timeMs: event.timeMs ?? this.now() };
    let known: boolean;
    try {
      known = this.isKnown(mac);
    } catch {
      known = false;
    }
    const queue = known ? this.known : this.unknown;
    const max = known ? this.limits.maxQueuedKnown : this.limits.maxQueuedUnknown;
    if (queue.length >= max) return this.dropped();
    queue.push(q);
  }

  unknownSeen(mac: string, arch: string | null = null): void {
    if (this.closed) return;
    const m = normalizeMac(mac);
    if (!m) return;
    const seen = this.unknownMachines.get(m);
    if (seen) {
      seen.timeMs = this.now();
      if (arch) seen.arch = arch;
      return;
    }
    if (this.unknownMachines.size >= this.limits.maxQueuedUnknown) return this.dropped();
    this.unknownMachines.set(m, { arch, timeMs: this.now() });
  }

  /** Remembers which MAC holds an address (from a DHCPACK), for TFTP events. */
  noteAddress(address: string, mac: string): void {
    this.addresses.delete(address);
    this.addresses.set(address, mac);
    while (this.addresses.size > this.limits.maxAddresses) this.addresses.delete(this.addresses.keys().next().value as string);
  }

  /** Records a DHCP server's discover, offer and ack events. Returns a function that detaches. */
  attachDhcp(server: DhcpEmitter): () => void {
    const listener = (e: DhcpEvent): void => this.onDhcp(e);
    server.on('event', listener);
    return () => server.off('event', listener);
  }

  /** Records TFTP files served (and transfers that failed). Returns a function that detaches. */
  attachTftp(server: TftpEmitter): () => void {
    const served = (s: TftpServerEvents['served'][0]): void => this.onTftp(s.peer.address, {
      file: s.path ?? s.requested, bytes: s.bytes, durationMs: Math.round(s.durationMs), blksize: s.blksize, windowsize: s.windowsize,
    });
    const failed = (s: TftpServerEvents['failed'][0]): void => this.onTftp(s.peer.address, {
      file: s.path ?? s.requested, failed: s.error.code, message: s.error.message.slice(0, 200),
    });
    server.on('served', served);
    server.on('failed', failed);
    return () => {
      server.off('served', served);
      server.off('failed', failed);
    };
  }

  /** Writes everything queued, in one transaction. */
  flush(): void {
    if (this.known.length === 0 && this.unknown.length === 0 && this.unknownMachines.size === 0) return;
    // Take the batch first: anything queued while writing goes to the next one.
    const events = [...this.known, ...this.unknown].sort((a, b) => a.timeMs - b.timeMs);
    const machines = this.unknownMachines;
    this.known = [];
    this.unknown = [];
    this.unknownMachines = new Map();
    let recorded = 0;
    let unknownRecorded = 0;
    try {
      this.store.transaction(() => {
        for (const e of events) {
          try {
            this.store.events.record(e);
            recorded++;
          } catch (err) {
            this.log.warn('boot event not recorded', { mac: e.mac, step: e.step, err });
          }
        }
        for (const [mac, u] of machines) {
          try {
            // A no-op for a MAC that became a client in the meantime.
            if (this.store.unknownMachines.seen(mac, { arch: u.arch, timeMs: u.timeMs })) unknownRecorded++;
          } catch (err) {
            this.log.warn('unknown machine not recorded', { mac, err });
          }
        }
      });
      this.counters.recorded += recorded;
      this.counters.unknownRecorded += unknownRecorded;
    } catch (err) {
      this.counters.failedBatches++;
      this.counters.dropped += events.length + machines.size;
      this.log.error('boot events could not be written; batch dropped', { events: events.length, machines: machines.size, err });
    }
  }

  /** Stops the timer, waits for address lookups in progress, writes what is queued. */
  async close(): Promise<void> {
    if (this.closed) return;
    await Promise.allSettled([...this.pending]);
    this.closed = true;
    clearInterval(this.timer);
    try {
      this.flush();
    } catch (err) {
      this.log.error('final flush of boot events failed', { err });
    }
  }

  private onDhcp(e: DhcpEvent): void {
    const step = DHCP_STEPS[e.type];
    if (e.type === 'ack' && e.address) this.noteAddress(e.address, e.mac);
    if (!step) return;
    const detail: Record<string, unknown> = { interface: e.interface, mode: e.mode, xid: e.xid, ipxe: e.ipxe };
    if (e.arch !== undefined) detail.arch = e.arch;
    if (e.pxePort) detail.pxePort = true;
    if (e.relay) detail.relay = e.relay;
    if (e.address) detail.address = e.address;
    if (e.boot) detail.boot = e.boot.kind === 'tftp' ? { tftp: e.boot.file, nextServer: e.boot.nextServer } : { http: e.boot.url };
    if (e.known !== undefined) detail.known = e.known;
    this.record({ mac: e.mac, step, detail, timeMs: e.time });
  }

  private onTftp(address: string, detail: Record<string, unknown>): void {
    if (this.closed) return;
    const timeMs = this.now();
    const plain = address.startsWith('::ffff:') ? address.slice(7) : address;
    const mac = this.addresses.get(plain);
    if (mac) {
      this.record({ mac, step: 'tftp', detail: { ...detail, address: plain }, timeMs });
      return;
    }
    if (this.pending.size >= EVENT_DEFAULTS.maxPendingLookups) {
      this.counters.unmatchedTftp++;
      return;
    }
    const p = this.neighbour(plain)
      .then((m) => {
        if (m) this.record({ mac: m, step: 'tftp', detail: { ...detail, address: plain }, timeMs });
        else {
          this.counters.unmatchedTftp++;
          this.log.debug('TFTP peer matches no known MAC; not on the timeline', { address: plain });
        }
      })
      .catch(() => undefined)
      .finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  private dropped(): void {
    this.counters.dropped++;
    this.droppedSinceWarning++;
    const t = this.now();
    if (t - this.lastDropWarning >= EVENT_DEFAULTS.warnIntervalMs) {
      this.log.warn('boot event queue full; events dropped', { dropped: this.droppedSinceWarning });
      this.lastDropWarning = t;
      this.droppedSinceWarning = 0;
    }
  }
}
