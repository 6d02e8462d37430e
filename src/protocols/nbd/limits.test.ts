import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LIMITS, resolveLimits } from './limits.js';
import { NbdError } from './errors.js';

test('defaults fill what is left out, and the result is frozen', () => {
  const l = resolveLimits({ maxInFlight: 4 });
  assert.equal(l.maxInFlight, 4);
  assert.equal(l.maxPayload, DEFAULT_LIMITS.maxPayload);
  assert.equal(DEFAULT_LIMITS.maxPayload, 32 * 1024 * 1024);
  assert.ok(Object.isFrozen(l));
  assert.ok(Object.isFrozen(DEFAULT_LIMITS));
  assert.deepEqual(resolveLimits(), DEFAULT_LIMITS);
});

test('every bad limit is listed in one error', () => {
  try {
    resolveLimits({ maxPayload: 100, maxInFlight: 0, handshakeTimeoutMs: 1.5, bogus: 1 } as never);
    assert.fail('expected an error');
  } catch (e) {
    assert.ok(e instanceof NbdError);
    assert.equal(e.code, 'NBD_LIMITS_INVALID');
    for (const word of ['maxPayload', 'maxInFlight', 'handshakeTimeoutMs', 'bogus']) assert.match(e.message, new RegExp(word));
  }
});
