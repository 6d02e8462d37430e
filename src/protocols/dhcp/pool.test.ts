import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatIpv4, parseCidr, parseIpv4 } from './address.js';
import { AddressPool, type PoolClient, type PoolConfig } from './pool.js';

const ip = (s: string): number => parseIpv4(s)!;

function pool(over: Partial<PoolConfig> = {}): AddressPool {
  return new AddressPool({
    name: '10.0.0.0/24',
    cidr: parseCidr('10.0.0.0/24')!,
    ranges: [{ start: ip('10.0.0.10'), end: ip('10.0.0.19') }],
    reservations: new Map([['52:54:00:00:00:99', { address: ip('10.0.0.50'), hostName: 'res' }]]),
    excluded: new Set([ip('10.0.0.12')]),
    offerHoldMs: 10_000,
    maxOffers: 100,
    unknownShare: 1,
    ...over,
  });
}

const client = (n: number, known = false): PoolClient => ({
  clientKey: `01aa${n.toString(16).padStart(8, '0')}`,
  mac: `aa:00:${[24, 16, 8, 0].map((s) => ((n >>> s) & 255).toString(16).padStart(2, '0')).join(':')}`,
  known,
});

test('dynamic addresses exclude the server, routers and reservations', () => {
  const p = pool();
  assert.equal(p.dynamicSize, 9, '10 in range, one excluded');
  const got = new Set<number>();
  for (let i = 0; i < 9; i++) got.add(p.offer(client(i, true), undefined, 0)!);
  assert.equal(got.size, 9);
  assert.ok(!got.has(ip('10.0.0.12')));
  assert.ok(!got.has(ip('10.0.0.50')));
});

test('a client keeps its offer, its previous address and gets what it asks for when free', () => {
  const p = pool();
  const a = client(1);
  const first = p.offer(a, undefined, 0)!;
  assert.equal(p.offer(a, undefined, 1000), first, 'repeated DISCOVER gets the same offer');
  const b = client(2);
  assert.equal(p.offer(b, ip('10.0.0.17'), 0), ip('10.0.0.17'), 'option 50 honoured');
  assert.notEqual(p.offer(client(3), first, 0), first, 'an address offered to another client is not offered again');
  const r = p.commit(a, first, 0, 60_000);
  assert.ok(r.ok);
  assert.equal(p.offer(a, undefined, 30_000), first, 'its bound address');
  p.release(a.clientKey, first, 40_000);
  assert.equal(p.offer(a, undefined, 50_000), first, 'its released address again');
});

test('reservations go to their MAC only', () => {
  const p = pool();
  const owner: PoolClient = { clientKey: 'x', mac: '52:54:00:00:00:99', known: false };
  assert.equal(p.offer(owner, undefined, 0), ip('10.0.0.50'));
  const other = client(7);
  assert.notEqual(p.offer(other, ip('10.0.0.50'), 0), ip('10.0.0.50'));
  assert.equal(p.availableTo(ip('10.0.0.50'), other, 0), false);
  assert.equal(p.commit(other, ip('10.0.0.50'), 0, 1000).ok, false);
  assert.ok(p.commit(owner, ip('10.0.0.50'), 0, 1000).ok);
});

test('a REQUEST wins over another client\'s offer, never over a bound lease', () => {
  const p = pool();
  const a = client(1);
  const b = client(2);
  const addr = p.offer(a, undefined, 0)!;
  assert.ok(p.commit(b, addr, 1, 60_000).ok, 'b takes the address offered to a');
  assert.equal(p.offerOf(a.clientKey, 2), undefined, 'a\'s offer is gone');
  assert.equal(p.commit(a, addr, 3, 60_000).ok, false, 'now bound to b');
  assert.ok(p.commit(a, addr, 60_001, 60_000).ok, 'after b\'s lease expired');
});

test('offers expire and return their address to the pool', () => {
  const p = pool({ ranges: [{ start: ip('10.0.0.10'), end: ip('10.0.0.11') }], excluded: new Set() });
  p.offer(client(1), undefined, 0);
  p.offer(client(2), undefined, 0);
  assert.equal(p.freeCount, 0);
  p.expireOffers(10_000);
  assert.equal(p.pendingOffers, 0);
  assert.equal(p.freeCount, 2);
});

test('an exhausted pool reclaims expired leases, then the oldest offer, never a bound lease', () => {
  const p = pool({ ranges: [{ start: ip('10.0.0.10'), end: ip('10.0.0.11') }], excluded: new Set() });
  const a = client(1);
  const b = client(2);
  const aAddr = p.offer(a, undefined, 0)!;
  p.commit(a, aAddr, 0, 1000);
  const bAddr = p.offer(b, undefined, 0)!;
  p.commit(b, bAddr, 0, 100_000);
  assert.equal(p.offer(client(3), undefined, 500), undefined, 'both bound');
  assert.equal(p.offer(client(3), undefined, 1500), aAddr, 'a expired: reclaimed');
  assert.equal(p.offer(client(4), undefined, 1600), aAddr, 'oldest offer taken over');
  assert.equal(p.offerOf(client(3).clientKey, 1600), undefined);
});

test('declined addresses are set aside for the hold', () => {
  const p = pool({ ranges: [{ start: ip('10.0.0.10'), end: ip('10.0.0.10') }], excluded: new Set() });
  const a = client(1);
  const addr = p.offer(a, undefined, 0)!;
  assert.ok(p.decline(addr, 0, 600_000));
  assert.equal(p.offer(client(2), undefined, 1000), undefined);
  assert.equal(p.availableTo(addr, a, 1000), false);
  assert.equal(p.offer(client(2), undefined, 600_001), addr);
});

test('flood: offers stay bounded and a known client always gets an address', () => {
  const p = pool({ ranges: [{ start: ip('10.0.0.10'), end: ip('10.0.0.29') }], excluded: new Set(), maxOffers: 8, unknownShare: 0.75 });
  for (let i = 0; i < 5000; i++) p.offer(client(1000 + i), undefined, i);
  assert.ok(p.pendingOffers <= 8, `pending offers ${p.pendingOffers}`);
  const real = client(1, true);
  const addr = p.offer(real, undefined, 5000);
  assert.notEqual(addr, undefined);
  for (let i = 0; i < 5000; i++) p.offer(client(9000 + i), undefined, 5001 + i);
  assert.ok(p.commit(real, addr!, 20_000, 60_000).ok, 'its REQUEST is accepted even if the offer was taken over');
});

test('unknown clients hold at most their share; known clients find room', () => {
  const p = pool({ ranges: [{ start: ip('10.0.0.10'), end: ip('10.0.0.19') }], excluded: new Set(), unknownShare: 0.5 });
  let bound = 0;
  for (let i = 0; i < 20; i++) {
    const c = client(100 + i);
    const a = p.offer(c, undefined, i);
    if (a !== undefined && p.commit(c, a, i, 3_600_000).ok) bound++;
  }
  assert.equal(bound, 5, 'half of ten addresses');
  const others: number[] = [];
  for (let i = 0; i < 5; i++) {
    const k = client(500 + i, true);
    const a = p.offer(k, undefined, 100);
    assert.notEqual(a, undefined, `known client ${i} gets an address`);
    assert.ok(p.commit(k, a!, 100, 3_600_000).ok);
    others.push(a!);
  }
  assert.equal(new Set(others).size, 5);
  assert.equal(formatIpv4(others[0]!).startsWith('10.0.0.'), true);
});

test('the offer cap drops the oldest offers first', () => {
  const p = pool({ ranges: [{ start: ip('10.0.0.10'), end: ip('10.0.0.19') }], excluded: new Set(), maxOffers: 3 });
  for (let i = 0; i < 6; i++) p.offer(client(i), undefined, i);
  assert.equal(p.pendingOffers, 3);
  assert.equal(p.offerOf(client(0).clientKey, 10), undefined);
  assert.notEqual(p.offerOf(client(5).clientKey, 10), undefined);
});
