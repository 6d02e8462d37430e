import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { BootEventRecord, BootStep } from '../../state/store.js';
import { groupByBoot } from './timeline.js';

const MAC = '52:54:00:00:00:01';
let nextId = 1;
const ev = (step: BootStep, bootId: string | null, timeMs: number): BootEventRecord =>
  ({ id: nextId++, mac: MAC, bootId, step, timeMs, detail: null });

test('DHCP steps before the boot id belong to the boot that follows them', () => {
  const boots = groupByBoot([
    ev('dhcp-discover', null, 1000), ev('dhcp-offer', null, 1001), ev('dhcp-ack', null, 1002), ev('tftp', null, 1003),
    ev('script', 'b1', 1004), ev('kernel', 'b1', 1005), ev('initrd', 'b1', 1006), ev('nbd-connect', 'b1', 1010), ev('os-up', 'b1', 1100),
    ev('dhcp-discover', null, 2000), ev('dhcp-ack', null, 2001), ev('script', 'b2', 2002),
  ]);
  assert.equal(boots.length, 2);
  assert.deepEqual(boots.map((b) => [b.bootId, b.events.length, b.startedMs, b.lastMs, b.lastStep, b.up]), [
    ['b1', 9, 1000, 1100, 'os-up', true],
    ['b2', 3, 2000, 2002, 'script', false],
  ]);
});

test('a new boot id without DHCP starts a new boot; no events, no boots', () => {
  const boots = groupByBoot([ev('script', 'b1', 10), ev('kernel', 'b1', 11), ev('script', 'b2', 20), ev('nbd-connect', null, 21)]);
  assert.deepEqual(boots.map((b) => [b.bootId, b.events.map((e) => e.step)]), [
    ['b1', ['script', 'kernel']],
    ['b2', ['script', 'nbd-connect']],
  ]);
  assert.deepEqual(groupByBoot([]), []);
});

test('events of a boot that never got an id stay one boot with a null id', () => {
  const boots = groupByBoot([ev('dhcp-discover', null, 5), ev('dhcp-offer', null, 6), ev('dhcp-discover', null, 9)]);
  assert.deepEqual(boots.map((b) => [b.bootId, b.events.length]), [[null, 2], [null, 1]]);
});
