import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LeaseRecord } from '../protocols/dhcp/leases.js';
import { Store } from '../state/store.js';
import { StoreLeaseStore } from './lease-store.js';

let dir: string;
let store: Store;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'diskless-leases-'));
  store = Store.open(dir);
});

afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const bound: LeaseRecord = {
  address: '10.0.0.100', subnet: '10.0.0.0/24', clientKey: '01525400000001', mac: '52:54:00:00:00:01',
  state: 'bound', expiresAt: 2_000_000, updatedAt: 1_000_000, hostName: 'pc-01',
};

test('leases survive a reopen, with the DHCP module\'s states', () => {
  const leases = new StoreLeaseStore(store);
  leases.save(bound);
  leases.save({ ...bound, address: '10.0.0.101', mac: '', clientKey: '', state: 'declined', hostName: undefined });
  leases.save({ ...bound, address: '10.0.0.102', mac: '52:54:00:00:00:02', clientKey: '01525400000002', state: 'released' });
  store.close();
  store = Store.open(dir);
  const loaded = new StoreLeaseStore(store).load();
  assert.deepEqual(loaded.sort((a, b) => a.address.localeCompare(b.address)), [
    bound,
    { ...bound, address: '10.0.0.101', mac: '', clientKey: '', state: 'declined', hostName: undefined },
    { ...bound, address: '10.0.0.102', mac: '52:54:00:00:00:02', clientKey: '01525400000002', state: 'released' },
  ].map((r) => JSON.parse(JSON.stringify(r))));
  assert.equal(store.leases.get('10.0.0.100')!.state, 'active', 'a binding is "active" in the catalogue');
});

test('a save replaces the address\'s record; remove forgets it; offered rows are not loaded', () => {
  const leases = new StoreLeaseStore(store);
  leases.save(bound);
  leases.save({ ...bound, expiresAt: 3_000_000, updatedAt: 1_500_000 });
  assert.equal(leases.load().length, 1);
  assert.equal(leases.load()[0]!.expiresAt, 3_000_000);
  store.leases.save({ address: '10.0.0.150', subnet: '10.0.0.0/24', mac: '52:54:00:00:00:05', clientKey: 'x', state: 'offered', expiresMs: 1, updatedMs: 1, hostName: null });
  assert.deepEqual(leases.load().map((l) => l.address), ['10.0.0.100']);
  leases.remove('10.0.0.100');
  assert.deepEqual(leases.load(), []);
  assert.throws(() => leases.save({ ...bound, mac: 'not-a-mac' }));
});
