import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool } from './buffer-pool.js';

test('a returned buffer is handed out again for the same size, once', () => {
  const pool = new BufferPool(1 << 20);
  const a = pool.get(8192);
  assert.equal(a.length, 8192);
  assert.equal(a.buffer.byteLength, 8192, 'owns its whole memory');
  pool.put(a);
  assert.equal(pool.heldBytes, 8192);
  assert.equal(pool.get(8192), a);
  assert.equal(pool.heldBytes, 0);
  assert.notEqual(pool.get(8192), a);
  assert.notEqual(pool.get(16384), a, 'other sizes are other buffers');
  assert.equal(pool.hits, 1);
});

test('buffers that share memory, small or large ones, and any beyond the cap are not kept', () => {
  const pool = new BufferPool(16384, 8192);
  pool.put(pool.get(100)); // a slice of Node's own pool
  pool.put(pool.get(65536)); // over maxSize
  const slab = Buffer.allocUnsafeSlow(16384);
  pool.put(slab.subarray(0, 8192)); // shares memory with the rest of the slab
  pool.put(slab.subarray(8192)); // likewise, at an offset
  assert.equal(pool.heldBytes, 0);
  pool.put(pool.get(8192));
  pool.put(Buffer.allocUnsafeSlow(8192));
  pool.put(Buffer.allocUnsafeSlow(8192));
  assert.equal(pool.heldBytes, 16384, 'capped at maxBytes');
  const off = new BufferPool(0);
  off.put(off.get(8192));
  assert.equal(off.heldBytes, 0, 'a pool of 0 bytes keeps nothing');
});
