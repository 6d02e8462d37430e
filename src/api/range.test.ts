import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRange } from './range.js';

test('Range forms of RFC 9110 14.1.1', () => {
  assert.deepEqual(parseRange(undefined, 100), { kind: 'full' });
  assert.deepEqual(parseRange('bytes=0-9', 100), { kind: 'partial', start: 0, end: 9 });
  assert.deepEqual(parseRange('bytes=90-', 100), { kind: 'partial', start: 90, end: 99 });
  assert.deepEqual(parseRange('bytes=-10', 100), { kind: 'partial', start: 90, end: 99 });
  assert.deepEqual(parseRange('bytes=-1000', 100), { kind: 'partial', start: 0, end: 99 });
  assert.deepEqual(parseRange('bytes=50-1000', 100), { kind: 'partial', start: 50, end: 99 });
  assert.deepEqual(parseRange('bytes=100-', 100), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange('bytes=-0', 100), { kind: 'unsatisfiable' });
});

test('garbage, other units, several ranges and inverted ranges are ignored', () => {
  for (const h of ['', 'bytes', 'items=0-1', 'bytes=0-1,5-6', 'bytes=9-3', 'bytes=a-b', 'bytes=99999999999999999999-']) {
    assert.deepEqual(parseRange(h, 100), { kind: 'full' }, h);
  }
});
