import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cidrContains, formatIpv4, formatMac, normalizeMac, parseCidr, parseIpv4 } from './address.js';

test('IPv4 parsing accepts only plain dotted quads', () => {
  assert.equal(parseIpv4('10.0.0.1'), 0x0a000001);
  assert.equal(parseIpv4('255.255.255.255'), 0xffffffff);
  for (const bad of ['10.0.0', '10.0.0.256', '010.0.0.1', '1.2.3.4 ', 'a.b.c.d', '', '1.2.3.4.5']) assert.equal(parseIpv4(bad), undefined, bad);
  assert.equal(formatIpv4(0xc0a80101), '192.168.1.1');
});

test('CIDR parsing and containment', () => {
  const c = parseCidr('10.1.0.0/16')!;
  assert.equal(formatIpv4(c.mask), '255.255.0.0');
  assert.equal(formatIpv4(c.broadcast), '10.1.255.255');
  assert.ok(cidrContains(c, parseIpv4('10.1.200.3')!));
  assert.ok(!cidrContains(c, parseIpv4('10.2.0.1')!));
  assert.equal(parseCidr('10.1.0.1/16'), undefined, 'host bits set');
  assert.equal(parseCidr('10.1.0.0/33'), undefined);
  assert.equal(parseCidr('0.0.0.0/0')!.mask, 0);
});

test('MAC forms', () => {
  assert.equal(formatMac(Buffer.from([0x52, 0x54, 0, 0xab, 0xcd, 0xef])), '52:54:00:ab:cd:ef');
  assert.equal(normalizeMac('52-54-00-AB-CD-EF'), '52:54:00:ab:cd:ef');
  assert.equal(normalizeMac('52:54:00:ab:cd'), undefined);
});
