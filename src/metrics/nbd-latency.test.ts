import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryDevice } from '../storage/memory-device.js';
import type { ExportResolver, OpenedExport } from '../protocols/nbd/exports.js';
import { TimedExportResolver, newNbdLatencyHistogram, timeDevice } from './nbd-latency.js';

const PEER = { address: '127.0.0.1', port: 1, family: 'IPv4' };

test('each device call is one observation under its op; results and errors pass through untouched', async () => {
  const h = newNbdLatencyHistogram();
  const dev = new MemoryDevice(1 << 20);
  const timed = timeDevice(dev, h);
  assert.equal(timed.size, dev.size);
  assert.equal(timed.capabilities, dev.capabilities);
  await timed.write(0, Buffer.from('hello'));
  const back = await timed.read(0, 5);
  assert.equal(back.toString(), 'hello');
  await timed.read(1, 2);
  await timed.flush();
  await timed.zero(0, 4096);
  await timed.extents(0, 4096);
  await assert.rejects(timed.read(1 << 20, 10));
  assert.equal(h.count({ op: 'read' }), 3, 'the failed read is timed too');
  assert.equal(h.count({ op: 'write' }), 1);
  assert.equal(h.count({ op: 'flush' }), 1);
  assert.equal(h.count({ op: 'zero' }), 1);
  assert.equal(h.count({ op: 'extents' }), 1);
  assert.equal(h.count({ op: 'trim' }), 0);
  const f = h.collect();
  assert.equal(f.type, 'histogram');
});

test('other members of the device reach the caller, bound to the device', async () => {
  class Extra extends MemoryDevice {
    calls = 0;
    fastPath(): number {
      return ++this.calls;
    }
  }
  const dev = new Extra(4096);
  const timed = timeDevice(dev, newNbdLatencyHistogram()) as Extra;
  assert.equal(timed.fastPath(), 1);
  assert.equal(dev.calls, 1);
  assert.equal(timed.fastPath, timed.fastPath, 'one bound function per member');
});

test('synchronous fast paths are timed when they serve, and absent ones stay absent', () => {
  const h = newNbdLatencyHistogram();
  const plain = timeDevice(new MemoryDevice(4096), h);
  assert.equal(plain.tryReadSync, undefined);
  let answer = true;
  class Fast extends MemoryDevice {
    tryReadSync(_offset: number, _length: number, _into: Buffer): boolean {
      return answer;
    }
    tryWriteSync(offset: number): boolean {
      if (offset > 0) throw new Error('range');
      return answer;
    }
  }
  const fast = timeDevice(new Fast(4096), h);
  assert.equal(fast.tryReadSync!(0, 512, Buffer.alloc(512)), true);
  answer = false;
  assert.equal(fast.tryReadSync!(0, 512, Buffer.alloc(512)), false);
  assert.throws(() => fast.tryWriteSync!(512, Buffer.alloc(512)), /range/);
  assert.equal(fast.tryWriteSync!(0, Buffer.alloc(512)), false);
  assert.equal(h.count({ op: 'read' }), 1, 'only the read it served');
  assert.equal(h.count({ op: 'write' }), 1, 'the write that threw');
});

test('the resolver wraps opened devices and keeps release', async () => {
  let released = 0;
  const dev = new MemoryDevice(4096);
  const inner: ExportResolver = {
    list: async () => [{ name: 'd' }],
    open: async (name): Promise<OpenedExport> => ({ name, device: dev, release: async () => void released++ }),
  };
  const r = new TimedExportResolver(inner);
  assert.deepEqual(await r.list(PEER), [{ name: 'd' }]);
  const o = await r.open('d', PEER);
  assert.notEqual(o.device, dev);
  await o.device.read(0, 10);
  await o.release();
  assert.equal(released, 1);
  assert.equal(r.histogram.count({ op: 'read' }), 1);
});
