/**
 * Address allocation for one subnet: dynamic ranges, reservations, bindings
 * and short offer holds. Synchronous and clock-free (the caller passes
 * `now`), so every decision is atomic and testable.
 *
 * Design against DISCOVER floods (many fake MACs, each asking once):
 *  - An offer is only a hint. It holds an address for `offerHoldMs`
 *    (seconds), it is never written to the lease store, and a DHCPREQUEST is
 *    never refused because another client holds an offer on the address: the
 *    first client to request an offered-but-unbound address gets it. So a
 *    flood can delay, but not deny, a real client.
 *  - The number of offers is capped per pool (`maxOffers`); when the pool or
 *    the cap is exhausted, the oldest offer is reclaimed before anything
 *    else. Bound leases that have not expired are never reclaimed.
 *  - Unknown clients (not reserved, not known to the boot policy) may hold at
 *    most `unknownShare` of the dynamic addresses, offers and bindings
 *    together, so known clients always find room even when unknown ones
 *    complete whole exchanges; unknown clients never evict known clients'
 *    offers.
 *  - Reserved addresses are never offered to anyone else.
 * Per-client rate limits sit in the server, before the pool is consulted.
 *
 * Allocation order for a DISCOVER (RFC 2131 section 4.3.1): the client's
 * reservation; its current or previous address; its pending offer; the
 * address it asked for (option 50) if free; a never-used address; the
 * oldest expired or released lease; the oldest pending offer.
 */
import { type Cidr, cidrContains, formatIpv4 } from './address.js';
import type { LeaseRecord } from './leases.js';

export interface Reservation {
  address: number;
  hostName?: string;
}

export interface PoolConfig {
  /** As configured, e.g. `10.0.0.0/24`; the `subnet` of every record. */
  name: string;
  cidr: Cidr;
  /** Inclusive ranges of dynamic addresses. */
  ranges: ReadonlyArray<{ start: number; end: number }>;
  /** By canonical MAC. */
  reservations: ReadonlyMap<string, Reservation>;
  /** Addresses never handed out (this server, routers, DNS servers...). */
  excluded: ReadonlySet<number>;
  offerHoldMs: number;
  maxOffers: number;
  /** Fraction (0..1] of the dynamic addresses unknown clients may hold. */
  unknownShare: number;
}

export interface PoolClient {
  clientKey: string;
  mac: string;
  known: boolean;
}

interface Offer {
  address: number;
  clientKey: string;
  mac: string;
  known: boolean;
  expiresAt: number;
}

export type CommitResult = { ok: true; lease: LeaseRecord; replaced?: LeaseRecord } | { ok: false; reason: string };

export class AddressPool {
  readonly name: string;
  readonly cidr: Cidr;
  /** Number of dynamic addresses (ranges less exclusions and reservations). */
  readonly dynamicSize: number;
  private readonly cfg: PoolConfig;
  private readonly reservedBy = new Map<number, string>();
  /** Dynamic addresses that have no record and no offer, in the order to hand them out. */
  private readonly free = new Set<number>();
  private readonly records = new Map<number, LeaseRecord>();
  private readonly recordByClient = new Map<string, number>();
  /** Insertion order is age order (holds are all the same length). */
  private readonly offers = new Map<number, Offer>();
  private readonly offerByClient = new Map<string, Offer>();
  private unknownOffers = 0;
  /** Addresses bound to clients that were unknown when they bound them. */
  private readonly unknownBound = new Set<number>();
  /** No record can be reclaimed before this time (cache of the last full scan). */
  private reclaimNotBefore = 0;
  /** No unknown binding expires before this time (cache of the last prune). */
  private unknownPruneNotBefore = 0;

  constructor(cfg: PoolConfig) {
    this.cfg = cfg;
    this.name = cfg.name;
    this.cidr = cfg.cidr;
    for (const [mac, r] of cfg.reservations) this.reservedBy.set(r.address, mac);
    for (const { start, end } of cfg.ranges) {
      for (let a = start; a <= end; a++) {
        if (this.usable(a) && !this.reservedBy.has(a)) this.free.add(a);
      }
    }
    this.dynamicSize = this.free.size;
  }

  private usable(a: number): boolean {
    return cidrContains(this.cidr, a) && a !== this.cidr.network && a !== this.cidr.broadcast && !this.cfg.excluded.has(a);
  }

  inSubnet(a: number): boolean {
    return cidrContains(this.cidr, a);
  }

  inRanges(a: number): boolean {
    for (const { start, end } of this.cfg.ranges) if (a >= start && a <= end) return true;
    return false;
  }

  reservationFor(mac: string): Reservation | undefined {
    return this.cfg.reservations.get(mac);
  }

  /** Adds a record read from the store (ignored if it is not in this subnet). */
  load(r: LeaseRecord, address: number): void {
    if (!this.inSubnet(address)) return;
    this.records.set(address, { ...r });
    this.free.delete(address);
    if (r.clientKey && r.state !== 'declined') this.recordByClient.set(r.clientKey, address);
  }

  get pendingOffers(): number {
    return this.offers.size;
  }

  get freeCount(): number {
    return this.free.size;
  }

  record(address: number): LeaseRecord | undefined {
    const r = this.records.get(address);
    return r ? { ...r } : undefined;
  }

  /** The client's current record (bound, released or expired), if any. */
  recordOf(clientKey: string): LeaseRecord | undefined {
    const a = this.recordByClient.get(clientKey);
    return a === undefined ? undefined : this.record(a);
  }

  allRecords(): LeaseRecord[] {
    return [...this.records.values()].map((r) => ({ ...r }));
  }

  /** Whether `address` is in active use (bound and unexpired, or declined and unexpired). */
  private activeRecord(address: number, now: number): LeaseRecord | undefined {
    const r = this.records.get(address);
    if (!r) return undefined;
    if (r.state === 'released') return undefined;
    return r.expiresAt > now ? r : undefined;
  }

  /**
   * Whether the client may have this address now (for a REQUEST): in the
   * subnet, not reserved for another MAC, in a range unless reserved for
   * this client, not in active use by another client, not declined.
   * Other clients' offers do not count (see the file comment).
   */
  availableTo(address: number, c: PoolClient, now: number): boolean {
    if (!this.usable(address)) return false;
    const owner = this.reservedBy.get(address);
    if (owner !== undefined && owner !== c.mac) return false;
    if (owner === undefined && !this.inRanges(address)) return false;
    const r = this.activeRecord(address, now);
    if (r && (r.state === 'declined' || r.clientKey !== c.clientKey)) return false;
    return true;
  }

  private dropOffer(o: Offer): void {
    this.offers.delete(o.address);
    if (this.offerByClient.get(o.clientKey) === o) this.offerByClient.delete(o.clientKey);
    if (!o.known) this.unknownOffers--;
    if (this.records.has(o.address)) this.reclaimNotBefore = 0;
    else if (!this.reservedBy.has(o.address) && this.inRanges(o.address) && this.usable(o.address)) this.free.add(o.address);
  }

  /** Drops offers whose hold has run out (they are in age order, so this stops early). */
  expireOffers(now: number): void {
    for (const o of this.offers.values()) {
      if (o.expiresAt > now) break;
      this.dropOffer(o);
    }
  }

  /** Drops the client's pending offer (it chose another server, or was answered). */
  withdrawOffer(clientKey: string): void {
    const o = this.offerByClient.get(clientKey);
    if (o) this.dropOffer(o);
  }

  offerOf(clientKey: string, now: number): number | undefined {
    const o = this.offerByClient.get(clientKey);
    return o && o.expiresAt > now ? o.address : undefined;
  }

  /**
   * Offers and unexpired bindings of unknown clients. Expired bindings are
   * pruned only when the count reaches the cap (and then at most once per
   * expiry), so the common case stays O(1).
   */
  private unknownHeld(now: number): number {
    if (this.unknownOffers + this.unknownBound.size >= this.unknownCap() && now >= this.unknownPruneNotBefore) {
      let next = Infinity;
      for (const a of this.unknownBound) {
        const r = this.records.get(a);
        if (!r || r.state !== 'bound' || r.expiresAt <= now) this.unknownBound.delete(a);
        else if (r.expiresAt < next) next = r.expiresAt;
      }
      this.unknownPruneNotBefore = next;
    }
    return this.unknownOffers + this.unknownBound.size;
  }

  private unknownCap(): number {
    return Math.ceil(this.cfg.unknownShare * this.dynamicSize);
  }

  /** Oldest expired or released record no one holds an offer on. */
  private reclaimable(now: number, c: PoolClient): number | undefined {
    if (now < this.reclaimNotBefore) return undefined;
    let best: number | undefined;
    let bestExpiry = Infinity;
    let nextActive = Infinity;
    for (const [a, r] of this.records) {
      const active = r.state !== 'released' && r.expiresAt > now;
      if (active) {
        if (r.expiresAt < nextActive) nextActive = r.expiresAt;
        continue;
      }
      if (this.offers.has(a) || !this.availableTo(a, c, now)) continue;
      const order = r.state === 'released' ? Math.min(r.expiresAt, r.updatedAt) : r.expiresAt;
      if (order < bestExpiry) {
        bestExpiry = order;
        best = a;
      }
    }
    if (best === undefined) this.reclaimNotBefore = nextActive;
    return best;
  }

  /** The oldest offer the client may take over: unknown clients' first; known clients' only for a known client. */
  private evictable(c: PoolClient): Offer | undefined {
    let oldestKnown: Offer | undefined;
    for (const o of this.offers.values()) {
      if (o.clientKey === c.clientKey) continue;
      if (!o.known) return o;
      if (!oldestKnown) oldestKnown = o;
    }
    return c.known ? oldestKnown : undefined;
  }

  /**
   * Picks an address for a DISCOVER and holds it as an offer. Returns
   * undefined when nothing can be offered (pool exhausted, or the unknown
   * clients' share is used up).
   */
  offer(c: PoolClient, requested: number | undefined, now: number): number | undefined {
    this.expireOffers(now);
    const pick = this.choose(c, requested, now);
    if (pick === undefined) return undefined;
    const old = this.offerByClient.get(c.clientKey);
    if (old) this.dropOffer(old);
    const taken = this.offers.get(pick);
    if (taken) this.dropOffer(taken);
    this.free.delete(pick);
    const o: Offer = { address: pick, clientKey: c.clientKey, mac: c.mac, known: c.known, expiresAt: now + this.cfg.offerHoldMs };
    this.offers.set(pick, o);
    this.offerByClient.set(c.clientKey, o);
    if (!c.known) this.unknownOffers++;
    // Keep the number of holds bounded: the oldest go first.
    while (this.offers.size > this.cfg.maxOffers) {
      const oldest = this.offers.values().next().value as Offer;
      this.dropOffer(oldest);
    }
    return pick;
  }

  private choose(c: PoolClient, requested: number | undefined, now: number): number | undefined {
    const res = this.reservationFor(c.mac);
    if (res && this.availableTo(res.address, c, now)) return res.address;

    const previous = this.recordByClient.get(c.clientKey);
    if (previous !== undefined && this.availableTo(previous, c, now) && !this.offeredToOther(previous, c, now)) return previous;

    const pending = this.offerOf(c.clientKey, now);
    if (pending !== undefined) return pending;

    const counts = c.known || this.unknownHeld(now) < this.unknownCap();
    if (counts) {
      if (requested !== undefined && this.availableTo(requested, c, now) && !this.offeredToOther(requested, c, now)) {
        return requested;
      }
      const first = this.free.values().next();
      if (!first.done) return first.value;
      const old = this.reclaimable(now, c);
      if (old !== undefined) return old;
    }
    // Last resort: take over the oldest pending offer (never a bound lease).
    const victim = this.evictable(c);
    if (!victim) return undefined;
    if (!counts && victim.known) return undefined;
    return victim.address;
  }

  private offeredToOther(a: number, c: PoolClient, now: number): boolean {
    const o = this.offers.get(a);
    return o !== undefined && o.expiresAt > now && o.clientKey !== c.clientKey;
  }

  /**
   * Binds `address` to the client (DHCPREQUEST accepted). Any offer on the
   * address, the client's other offer and its other record in this pool are
   * dropped: one address per client per subnet.
   */
  commit(c: PoolClient, address: number, now: number, leaseMs: number, hostName?: string): CommitResult {
    if (!this.availableTo(address, c, now)) return { ok: false, reason: `${formatIpv4(address)} is not available to this client` };
    const onAddress = this.offers.get(address);
    if (onAddress) this.dropOffer(onAddress);
    const own = this.offerByClient.get(c.clientKey);
    if (own) this.dropOffer(own);
    let replaced: LeaseRecord | undefined;
    const previous = this.recordByClient.get(c.clientKey);
    if (previous !== undefined && previous !== address) {
      const r = this.records.get(previous);
      if (r && r.state === 'bound' && r.expiresAt > now) {
        r.state = 'released';
        r.expiresAt = now;
        r.updatedAt = now;
        replaced = { ...r };
        this.reclaimNotBefore = 0;
      }
      this.unknownBound.delete(previous);
    }
    const prior = this.records.get(address);
    if (prior && prior.clientKey && prior.clientKey !== c.clientKey && this.recordByClient.get(prior.clientKey) === address) {
      this.recordByClient.delete(prior.clientKey);
    }
    const lease: LeaseRecord = {
      address: formatIpv4(address),
      subnet: this.name,
      clientKey: c.clientKey,
      mac: c.mac,
      state: 'bound',
      expiresAt: now + leaseMs,
      updatedAt: now,
      ...(hostName ? { hostName } : {}),
    };
    this.records.set(address, lease);
    this.recordByClient.set(c.clientKey, address);
    this.free.delete(address);
    if (c.known || this.reservedBy.has(address)) this.unknownBound.delete(address);
    else {
      this.unknownBound.add(address);
      this.unknownPruneNotBefore = Math.min(this.unknownPruneNotBefore, lease.expiresAt);
    }
    return { ok: true, lease: { ...lease }, ...(replaced ? { replaced } : {}) };
  }

  /** DHCPRELEASE: the record is kept (released) so the client gets the address again. */
  release(clientKey: string, address: number, now: number): LeaseRecord | undefined {
    const r = this.records.get(address);
    if (!r || r.clientKey !== clientKey || r.state !== 'bound') return undefined;
    r.state = 'released';
    r.expiresAt = now;
    r.updatedAt = now;
    this.unknownBound.delete(address);
    this.reclaimNotBefore = 0;
    return { ...r };
  }

  /** DHCPDECLINE: the address is in use by someone we do not know; set it aside. */
  decline(address: number, now: number, holdMs: number): LeaseRecord | undefined {
    if (!this.usable(address)) return undefined;
    const o = this.offers.get(address);
    if (o) this.dropOffer(o);
    const prior = this.records.get(address);
    if (prior?.clientKey && this.recordByClient.get(prior.clientKey) === address) this.recordByClient.delete(prior.clientKey);
    const r: LeaseRecord = {
      address: formatIpv4(address),
      subnet: this.name,
      clientKey: '',
      mac: '',
      state: 'declined',
      expiresAt: now + holdMs,
      updatedAt: now,
    };
    this.records.set(address, r);
    this.free.delete(address);
    this.unknownBound.delete(address);
    return { ...r };
  }

  /** Forgets a record (administrative release); the address becomes free. */
  forget(address: number): boolean {
    const r = this.records.get(address);
    if (!r) return false;
    this.records.delete(address);
    if (r.clientKey && this.recordByClient.get(r.clientKey) === address) this.recordByClient.delete(r.clientKey);
    this.unknownBound.delete(address);
    if (!this.offers.has(address) && !this.reservedBy.has(address) && this.inRanges(address) && this.usable(address)) {
      this.free.add(address);
    }
    return true;
  }
}
