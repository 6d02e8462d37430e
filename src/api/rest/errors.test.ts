import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ERROR_CODES as APP } from '../../app/errors.js';
import { ERROR_CODES as IMAGES } from '../../images/errors.js';
import { DisklessError } from '../../lib/errors.js';
import { ERROR_CODES as STATE, StateError } from '../../state/errors.js';
import { ERROR_CODES as STORAGE } from '../../storage/errors.js';
import { AppError } from '../../app/errors.js';
import { CATALOGUE_STATUS, ERROR_CODES, RestError, restErrorOf } from './errors.js';

test('every code the API maps to a status is a code some module defines', () => {
  const known = new Set([...Object.keys(APP), ...Object.keys(IMAGES), ...Object.keys(STATE), ...Object.keys(STORAGE)]);
  for (const code of Object.keys(CATALOGUE_STATUS)) assert.ok(known.has(code), `${code} is mapped but defined nowhere`);
});

test('every APP_ code the catalogue may throw has a deliberate status', () => {
  // Those that never come out of a catalogue operation the API calls.
  const notFromApi = new Set(['APP_DATA_DIR', 'APP_LISTEN_INVALID', 'APP_IPXE_NOT_FOUND']);
  for (const code of Object.keys(APP)) {
    // The demo's codes come only from `diskless demo`.
    if (code.startsWith('CONFIG_') || code.startsWith('DEMO_') || notFromApi.has(code)) continue;
    assert.ok(CATALOGUE_STATUS[code] !== undefined, `${code} has no status in CATALOGUE_STATUS`);
  }
});

test('refusals keep their code and message; unexpected errors say only "internal error"', () => {
  assert.deepEqual(restErrorOf(new StateError('STATE_NOT_FOUND', 'no client with MAC 52:54:00:00:00:01')), { status: 404, code: 'STATE_NOT_FOUND', message: 'no client with MAC 52:54:00:00:00:01' });
  assert.deepEqual(restErrorOf(new AppError('APP_VERSION_IN_USE', 'pinned by x')), { status: 409, code: 'APP_VERSION_IN_USE', message: 'pinned by x' });
  assert.equal(restErrorOf(new AppError('APP_NO_SPACE', 'needs 2 GiB')).message, 'needs 2 GiB');
  assert.equal(restErrorOf(new RestError('API_UNAUTHORIZED', 'no token')).status, 401);
  assert.deepEqual(restErrorOf(new StateError('STATE_IO', '/var/lib/diskless/diskless.db: disk I/O error')), { status: 500, code: 'STATE_IO', message: 'internal error' });
  assert.deepEqual(restErrorOf(new DisklessError('STORAGE_IO', 'EIO on /var/lib/diskless/overlays/x')), { status: 500, code: 'STORAGE_IO', message: 'internal error' });
  assert.deepEqual(restErrorOf(new TypeError('x is not a function')), { status: 500, code: 'API_INTERNAL', message: 'internal error' });
  const tooLarge = Object.assign(new Error('Request body is too large'), { statusCode: 413, code: 'FST_ERR_CTP_BODY_TOO_LARGE' });
  assert.deepEqual(restErrorOf(tooLarge), { status: 413, code: 'API_BODY_TOO_LARGE', message: 'Request body is too large' });
  for (const code of Object.keys(ERROR_CODES)) assert.match(code, /^API_[A-Z_]+$/);
});
