import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ERROR_CODES, assertRange, fromSystemError, storageError } from './errors.js';
import { DisklessError, isDisklessError } from '../lib/errors.js';

test('codes are STORAGE_ prefixed and each carries a meaning', () => {
  for (const [code, meaning] of Object.entries(ERROR_CODES)) {
    assert.match(code, /^STORAGE_[A-Z0-9_]+$/);
    assert.ok(meaning.length > 10);
  }
});

test('storageError gives each code its errno', () => {
  assert.equal(storageError('STORAGE_READ_ONLY', 'x').errno, 'EPERM');
  assert.equal(storageError('STORAGE_OUT_OF_RANGE', 'x').errno, 'EINVAL');
  assert.equal(storageError('STORAGE_CLOSED', 'x').errno, 'ESHUTDOWN');
  assert.equal(storageError('STORAGE_FAST_ZERO_UNSUPPORTED', 'x').errno, 'ENOTSUP');
  assert.ok(storageError('STORAGE_IO', 'x') instanceof DisklessError);
});

test('system errors map to ENOSPC or EIO; DisklessErrors pass through', () => {
  const nospc = fromSystemError(Object.assign(new Error('full'), { code: 'ENOSPC' }), 'w');
  assert.ok(isDisklessError(nospc, 'STORAGE_NO_SPACE') && nospc.errno === 'ENOSPC');
  const io = fromSystemError(Object.assign(new Error('bad'), { code: 'EIO' }), 'w');
  assert.ok(isDisklessError(io, 'STORAGE_IO') && io.errno === 'EIO');
  const own = storageError('STORAGE_READ_ONLY', 'x');
  assert.equal(fromSystemError(own, 'w'), own);
});

test('assertRange accepts the device and refuses anything outside it', () => {
  assert.doesNotThrow(() => assertRange(100, 0, 100));
  assert.doesNotThrow(() => assertRange(100, 100, 0));
  for (const [o, l] of [[0, 101], [100, 1], [-1, 1], [1.5, 1], [0, Number.POSITIVE_INFINITY], [Number.MAX_SAFE_INTEGER, 2]]) {
    assert.throws(() => assertRange(100, o!, l!), (e) => isDisklessError(e, 'STORAGE_OUT_OF_RANGE'));
  }
});
