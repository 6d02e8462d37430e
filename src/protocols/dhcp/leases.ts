/**
 * Lease persistence. The server keeps the working set in memory (it decides
 * allocations synchronously, so two requests can never be given one address)
 * and writes every binding through a LeaseStore before it acknowledges it
 * (RFC 2131 section 4.3.2 hands out an address only once the server has
 * committed it). Offers are never written: they are short holds, and a flood
 * of DISCOVERs must not turn into a flood of disk writes.
 *
 * The store may be synchronous (better-sqlite3) or asynchronous.
 */

/** One address's record, keyed by `address`. */
export interface LeaseRecord {
  /** Dotted quad. */
  address: string;
  /** The subnet (CIDR, as configured) the address belongs to. */
  subnet: string;
  /**
   * Client identity: option 61 as hex, or htype and chaddr as hex (see
   * DhcpRequestInfo.clientKey). Empty for a declined address.
   */
  clientKey: string;
  /** `aa:bb:cc:dd:ee:ff`; empty for a declined address. */
  mac: string;
  /**
   * bound: in use until expiresAt. released: given back (RFC 2131 section
   * 4.4.6); kept so the same client gets it again. declined: a client saw
   * it in use (section 4.3.3); not handed out until expiresAt.
   */
  state: 'bound' | 'released' | 'declined';
  /** Milliseconds since the epoch. */
  expiresAt: number;
  /** When the record last changed, milliseconds since the epoch. */
  updatedAt: number;
  hostName?: string;
}

export interface LeaseStore {
  /** Every record; read once when the server starts listening. */
  load(): readonly LeaseRecord[] | Promise<readonly LeaseRecord[]>;
  /** Insert or replace the record of `lease.address`. */
  save(lease: LeaseRecord): void | Promise<void>;
  /** Forget an address's record. */
  remove(address: string): void | Promise<void>;
}

/** A LeaseStore in memory, for tests and for running without a database. */
export class InMemoryLeaseStore implements LeaseStore {
  private readonly records = new Map<string, LeaseRecord>();
  /** Number of save() calls, for tests that check what is written. */
  saves = 0;

  constructor(initial: readonly LeaseRecord[] = []) {
    for (const r of initial) this.records.set(r.address, { ...r });
  }

  load(): LeaseRecord[] {
    return [...this.records.values()].map((r) => ({ ...r }));
  }

  save(lease: LeaseRecord): void {
    this.saves++;
    this.records.set(lease.address, { ...lease });
  }

  remove(address: string): void {
    this.records.delete(address);
  }

  get(address: string): LeaseRecord | undefined {
    const r = this.records.get(address);
    return r ? { ...r } : undefined;
  }

  get size(): number {
    return this.records.size;
  }
}
