import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DisklessError, type Errno } from '../../lib/errors.js';
import { ERRORS, REPLY_TYPES } from './constants.js';
import { ERROR_CODES, NbdError, NbdOptionError, nbdErrnoOf, optionInvalid, optionReplyErrorOf } from './errors.js';

test('every internal errno maps to its NBD error number', () => {
  const expected: Record<Errno, number> = {
    EPERM: 1,
    EIO: 5,
    ENOMEM: 12,
    EINVAL: 22,
    ENOSPC: 28,
    EOVERFLOW: 75,
    ENOTSUP: 95,
    ESHUTDOWN: 108,
  };
  for (const [errno, nbd] of Object.entries(expected) as [Errno, number][]) {
    assert.equal(nbdErrnoOf(new DisklessError('STORAGE_X', 'x', errno)), nbd, errno);
  }
});

test('errors without an errno: system codes where proto.md says, EIO otherwise', () => {
  const sys = (code: string): Error => Object.assign(new Error(code), { code });
  assert.equal(nbdErrnoOf(sys('ENOSPC')), ERRORS.NBD_ENOSPC);
  assert.equal(nbdErrnoOf(sys('EDQUOT')), ERRORS.NBD_ENOSPC);
  assert.equal(nbdErrnoOf(sys('EFBIG')), ERRORS.NBD_ENOSPC);
  assert.equal(nbdErrnoOf(sys('EOPNOTSUPP')), ERRORS.NBD_ENOTSUP);
  assert.equal(nbdErrnoOf(sys('EACCES')), ERRORS.NBD_EIO);
  assert.equal(nbdErrnoOf(sys('toString')), ERRORS.NBD_EIO);
  assert.equal(nbdErrnoOf(new DisklessError('X', 'no errno')), ERRORS.NBD_EIO);
  assert.equal(nbdErrnoOf(new Error('plain')), ERRORS.NBD_EIO);
  assert.equal(nbdErrnoOf(undefined), ERRORS.NBD_EIO);
  assert.equal(nbdErrnoOf(null), ERRORS.NBD_EIO);
  assert.equal(nbdErrnoOf('string'), ERRORS.NBD_EIO);
});

test('resolver errors become the option replies the app expects', () => {
  const fallback = REPLY_TYPES.NBD_REP_ERR_PLATFORM;
  assert.equal(optionReplyErrorOf(new DisklessError('NBD_EXPORT_UNKNOWN', 'x'), fallback), REPLY_TYPES.NBD_REP_ERR_UNKNOWN);
  assert.equal(optionReplyErrorOf(new DisklessError('NBD_EXPORT_FORBIDDEN', 'x'), fallback), REPLY_TYPES.NBD_REP_ERR_POLICY);
  assert.equal(optionReplyErrorOf(new DisklessError('STORAGE_CLOSED', 'x', 'ESHUTDOWN'), fallback), REPLY_TYPES.NBD_REP_ERR_SHUTDOWN);
  assert.equal(optionReplyErrorOf(optionInvalid('x'), fallback), REPLY_TYPES.NBD_REP_ERR_INVALID);
  assert.equal(optionReplyErrorOf(new Error('boom'), fallback), fallback);
});

test('error classes carry their codes; the catalogue is prefixed and described', () => {
  const e = optionInvalid('bad');
  assert.ok(e instanceof NbdOptionError && e instanceof NbdError && e instanceof DisklessError);
  assert.equal(e.code, 'NBD_OPTION_INVALID');
  for (const [code, meaning] of Object.entries(ERROR_CODES)) {
    assert.match(code, /^NBD_[A-Z_]+$/);
    assert.ok(meaning.length > 20, code);
  }
  assert.ok('NBD_EXPORT_UNKNOWN' in ERROR_CODES && 'NBD_EXPORT_FORBIDDEN' in ERROR_CODES);
});
