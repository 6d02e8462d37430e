import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NetworkInterfaceInfo } from 'node:os';
import { linkMtuResolver, readSysfsMtu } from './mtu.js';

const iface = (address: string, cidr: string, family: 'IPv4' | 'IPv6'): NetworkInterfaceInfo => ({
  address, cidr, family, netmask: '', mac: '00:00:00:00:00:00', internal: false, scopeid: 0,
} as NetworkInterfaceInfo);

const interfaces = () => ({
  lo: [iface('127.0.0.1', '127.0.0.1/8', 'IPv4'), iface('::1', '::1/128', 'IPv6')],
  eth0: [iface('192.168.10.1', '192.168.10.1/24', 'IPv4'), iface('fd00::1', 'fd00::1/64', 'IPv6')],
  wg0: [iface('10.9.0.1', '10.9.0.1/16', 'IPv4')],
});
const mtus: Record<string, number> = { lo: 65536, eth0: 1500, wg0: 1420 };

test('the MTU of the interface whose subnet holds the peer', () => {
  let reads = 0;
  const mtu = linkMtuResolver({ interfaces, readMtu: (n) => (reads++, mtus[n]) });
  assert.equal(mtu({ address: '192.168.10.57', family: 'IPv4' }), 1500);
  assert.equal(mtu({ address: '::ffff:192.168.10.57', family: 'IPv6' }), 1500);
  assert.equal(mtu({ address: '10.9.200.3', family: 'IPv4' }), 1420);
  assert.equal(mtu({ address: '127.0.0.1', family: 'IPv4' }), 65536);
  assert.equal(mtu({ address: 'fd00::abcd', family: 'IPv6' }), 1500);
  assert.equal(mtu({ address: '8.8.8.8', family: 'IPv4' }), undefined, 'a routed peer: unknown');
  assert.equal(mtu({ address: 'not an address', family: 'IPv4' }), undefined);
  assert.equal(reads, 3, 'MTUs are read once per interface and cached');
});

test('the interface table is rebuilt after cacheMs', () => {
  let t = 0;
  let table = { eth0: [iface('192.168.10.1', '192.168.10.1/24', 'IPv4')] };
  const mtu = linkMtuResolver({ interfaces: () => table, readMtu: () => 9000, cacheMs: 1000, now: () => t });
  assert.equal(mtu({ address: '192.168.10.2', family: 'IPv4' }), 9000);
  table = { eth0: [iface('172.16.0.1', '172.16.0.1/24', 'IPv4')] };
  t = 500;
  assert.equal(mtu({ address: '192.168.10.2', family: 'IPv4' }), 9000);
  t = 1500;
  assert.equal(mtu({ address: '192.168.10.2', family: 'IPv4' }), undefined);
});

test('sysfs reader refuses odd interface names and reads lo on Linux', () => {
  assert.equal(readSysfsMtu('../../etc/passwd'), undefined);
  if (process.platform === 'linux') assert.ok((readSysfsMtu('lo') ?? 0) >= 1500);
});
