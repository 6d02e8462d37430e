/**
 * The DHCP server's LeaseStore over the catalogue's `dhcp_leases` table, so
 * bindings survive a restart (RFC 2131 section 4.3.2: an address is handed
 * out only once it is committed; the server writes through save() before it
 * sends the DHCPACK, and the store runs with synchronous=FULL).
 *
 * The two vocabularies differ in one word: the DHCP module calls a binding
 * `bound`, the catalogue `active`. `offered` rows (a state the table allows
 * for other writers) are never loaded: an offer is a short hold the server
 * keeps in memory only.
 */
import type { LeaseRecord, LeaseStore } from '../protocols/dhcp/leases.js';
import type { LeaseRow, Store } from '../state/store.js';

const TO_ROW: Record<LeaseRecord['state'], LeaseRow['state']> = { bound: 'active', released: 'released', declined: 'declined' };
const FROM_ROW: Partial<Record<LeaseRow['state'], LeaseRecord['state']>> = { active: 'bound', released: 'released', declined: 'declined' };

export class StoreLeaseStore implements LeaseStore {
  constructor(private readonly store: Store) {}

  load(): LeaseRecord[] {
    const out: LeaseRecord[] = [];
    for (const row of this.store.leases.list()) {
      const state = FROM_ROW[row.state];
      if (!state) continue;
      out.push({
        address: row.address,
        subnet: row.subnet,
        clientKey: row.clientKey,
        mac: row.mac,
        state,
        expiresAt: row.expiresMs,
        updatedAt: row.updatedMs,
        ...(row.hostName !== null ? { hostName: row.hostName } : {}),
      });
    }
    return out;
  }

  save(lease: LeaseRecord): void {
    this.store.leases.save({
      address: lease.address,
      subnet: lease.subnet,
      mac: lease.mac,
      clientKey: lease.clientKey,
      state: TO_ROW[lease.state],
      expiresMs: lease.expiresAt,
      updatedMs: lease.updatedAt,
      hostName: lease.hostName ?? null,
    });
  }

  remove(address: string): void {
    this.store.leases.remove(address);
  }
}
