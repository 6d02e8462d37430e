import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DhcpEvent } from '../protocols/dhcp/server.js';
import { TftpError } from '../protocols/tftp/errors.js';
import type { TransferSummary } from '../protocols/tftp/server.js';
import { Store } from '../state/store.js';
import { BootEventRecorder, parseArpTable, type BootEventRecorderOptions } from './events.js';

const KNOWN = '52:54:00:00:00:0a';
const OVMF = '52:54:00:00:00:0c';

let dir: string;
let store: Store;
const recorders: BootEventRecorder[] = [];

function recorder(o: Partial<BootEventRecorderOptions> = {}): BootEventRecorder {
  const r = new BootEventRecorder({ store, flushIntervalMs: 60_000, neighbour: async () => undefined, ...o });
  recorders.push(r);
  return r;
}

function dhcp(type: DhcpEvent['type'], mac: string, extra: Partial<DhcpEvent> = {}): DhcpEvent {
  return { type, time: 1000, mac, interface: 'br0', mode: 'full', pxePort: false, xid: 7, ipxe: false, arch: 0, ...extra };
}

function summary(address: string, file: string): TransferSummary {
  return {
    peer: { address, port: 2000, family: 'IPv4' }, requested: file, path: file, mode: 'octet', size: 100, bytes: 100, durationMs: 12.4,
    blksize: 1468, windowsize: 4, timeoutMs: 1000, options: {}, blocksSent: 1, retransmits: 0,
  };
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'diskless-events-'));
  store = Store.open(dir);
  store.images.create('debian12');
  store.clients.add({ mac: KNOWN, image: 'debian12' });
});

afterEach(async () => {
  for (const r of recorders.splice(0)) await r.close();
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

test('events are written in batches, in time order, on flush and on close', async () => {
  const r = recorder();
  r.record({ mac: KNOWN, step: 'kernel', bootId: 'b1', timeMs: 20, detail: { size: 5 } });
  r.record({ mac: KNOWN, step: 'script', bootId: 'b1', timeMs: 10 });
  r.record({ mac: 'nonsense', step: 'script' });
  assert.deepEqual(store.events.list(), [], 'nothing is written per event');
  r.flush();
  assert.deepEqual(store.events.list().map((e) => [e.step, e.bootId, e.timeMs]), [['script', 'b1', 10], ['kernel', 'b1', 20]]);
  r.record({ mac: KNOWN, step: 'os-up', bootId: 'b1', timeMs: 30 });
  await r.close();
  assert.equal(store.events.list().at(-1)!.step, 'os-up');
  assert.equal(r.stats().recorded, 3);
  r.record({ mac: KNOWN, step: 'script' });
  r.flush();
  assert.equal(store.events.list().length, 3, 'a closed recorder takes no more');
});

test('a flood of unknown MACs is bounded and cannot crowd out catalogue clients', () => {
  const r = recorder({ maxQueuedUnknown: 10, maxQueuedKnown: 50 });
  for (let i = 0; i < 500; i++) {
    const mac = `02:00:00:00:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`;
    r.record({ mac, step: 'dhcp-discover' });
    r.unknownSeen(mac, 'X86_BIOS');
    if (i % 50 === 0) r.record({ mac: KNOWN, step: 'dhcp-discover' });
  }
  r.flush();
  const events = store.events.list({ limit: 100_000 });
  assert.equal(events.filter((e) => e.mac === KNOWN).length, 10, 'every event of the known client');
  assert.equal(events.filter((e) => e.mac !== KNOWN).length, 10);
  assert.equal(store.unknownMachines.list().length, 10);
  assert.equal(r.stats().dropped, 980);
});

test('DHCP discover, offer and ack become timeline steps; TFTP peers are matched by the acked address', async () => {
  const r = recorder();
  const server = new EventEmitter();
  const detach = r.attachDhcp(server as never);
  server.emit('event', dhcp('discover', KNOWN));
  server.emit('event', dhcp('offer', KNOWN, { address: '10.0.0.100', known: true, boot: { kind: 'tftp', nextServer: '10.0.0.1', file: 'undionly.kpxe' } }));
  server.emit('event', dhcp('request', KNOWN));
  server.emit('event', dhcp('ack', KNOWN, { address: '10.0.0.100', known: true, boot: { kind: 'http', url: 'http://x/ipxe/52-54-00-00-00-0a' } }));
  const tftp = new EventEmitter();
  r.attachTftp(tftp as never);
  tftp.emit('served', summary('10.0.0.100', 'undionly.kpxe'));
  tftp.emit('failed', { ...summary('10.0.0.100', 'nope.efi'), error: new TftpError('TFTP_FILE_NOT_FOUND', 'nope.efi: no such file') });
  detach();
  server.emit('event', dhcp('discover', KNOWN));
  await r.close();
  const events = store.events.list();
  assert.deepEqual(events.map((e) => e.step), ['dhcp-discover', 'dhcp-offer', 'dhcp-ack', 'tftp', 'tftp']);
  assert.deepEqual(events[1]!.detail, { interface: 'br0', mode: 'full', xid: 7, ipxe: false, arch: 0, address: '10.0.0.100', boot: { tftp: 'undionly.kpxe', nextServer: '10.0.0.1' }, known: true });
  assert.deepEqual(events[3]!.detail, { file: 'undionly.kpxe', bytes: 100, durationMs: 12, blksize: 1468, windowsize: 4, address: '10.0.0.100' });
  assert.equal(events[4]!.detail!.failed, 'TFTP_FILE_NOT_FOUND');
});

test('proxy mode: a TFTP peer is matched through the neighbour table, or left off the timeline', async () => {
  const lookups: string[] = [];
  const r = recorder({ neighbour: async (a) => { lookups.push(a); return a === '10.0.0.150' ? OVMF : undefined; } });
  const tftp = new EventEmitter();
  r.attachTftp(tftp as never);
  tftp.emit('served', summary('::ffff:10.0.0.150', 'snponly.efi'));
  tftp.emit('served', summary('10.0.0.151', 'snponly.efi'));
  await r.close();
  assert.deepEqual(lookups, ['10.0.0.150', '10.0.0.151']);
  assert.deepEqual(store.events.list().map((e) => [e.mac, e.step, e.detail!.file]), [[OVMF, 'tftp', 'snponly.efi']]);
  assert.equal(r.stats().unmatchedTftp, 1);
});

test('a batch the store refuses is counted and dropped, not retried or thrown', () => {
  const r = recorder();
  r.record({ mac: KNOWN, step: 'script' });
  store.close();
  assert.doesNotThrow(() => r.flush());
  assert.equal(r.stats().failedBatches, 1);
  assert.equal(r.stats().dropped, 1);
  store = Store.open(dir);
});

test('parseArpTable keeps complete entries only', () => {
  const text = [
    'IP address       HW type     Flags       HW address            Mask     Device',
    '10.77.1.100      0x1         0x2         52:54:00:d1:00:01     *        dlbr0',
    '10.77.1.101      0x1         0x0         00:00:00:00:00:00     *        dlbr0',
    '10.77.1.102      0x1         0x6         52:54:00:D1:00:02     *        dlbr0',
    'garbage',
    '',
  ].join('\n');
  assert.deepEqual([...parseArpTable(text)], [['10.77.1.100', '52:54:00:d1:00:01'], ['10.77.1.102', '52:54:00:d1:00:02']]);
});
