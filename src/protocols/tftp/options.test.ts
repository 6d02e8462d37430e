import { test } from 'node:test';
import assert from 'node:assert/strict';
import { negotiate, type NegotiationLimits } from './options.js';
import { TftpError } from './errors.js';

const limits: NegotiationLimits = { maxBlksize: 65464, maxWindowsize: 64, maxWindowBytes: 1024 * 1024, transferSize: 123456 };
const opts = (...pairs: string[]): Array<{ name: string; value: string }> => {
  const out = [];
  for (let i = 0; i < pairs.length; i += 2) out.push({ name: pairs[i]!, value: pairs[i + 1]! });
  return out;
};
const codeOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof TftpError);
    return err.code;
  }
  assert.fail('no error');
};

test('no options: RFC 1350 defaults and no OACK', () => {
  assert.deepEqual(negotiate([], limits), { blksize: 512, windowsize: 1, timeoutMs: undefined, oack: [] });
});

test('unknown options are ignored and never acknowledged', () => {
  const n = negotiate(opts('multicast', '', 'rollover', '0', 'blksize', '1024'), limits);
  assert.deepEqual(n.oack, [{ name: 'blksize', value: '1024' }]);
});

test('OVMF transfer request: blksize 1468, windowsize 4 (and its tsize probe)', () => {
  const n = negotiate(opts('blksize', '1468', 'windowsize', '4'), limits);
  assert.equal(n.blksize, 1468);
  assert.equal(n.windowsize, 4);
  assert.deepEqual(n.oack, [{ name: 'blksize', value: '1468' }, { name: 'windowsize', value: '4' }]);
  const probe = negotiate(opts('tsize', '0', 'blksize', '1468'), limits);
  assert.deepEqual(probe.oack, [{ name: 'tsize', value: '123456' }, { name: 'blksize', value: '1468' }]);
});

test('blksize: clamped to the limit (MTU) and to 65464; below 8 or not a number refused', () => {
  assert.equal(negotiate(opts('blksize', '9000'), { ...limits, maxBlksize: 1468 }).blksize, 1468);
  assert.deepEqual(negotiate(opts('blksize', '9000'), { ...limits, maxBlksize: 1468 }).oack, [{ name: 'blksize', value: '1468' }]);
  assert.equal(negotiate(opts('blksize', '70000'), limits).blksize, 65464);
  assert.equal(negotiate(opts('blksize', '8'), limits).blksize, 8);
  assert.equal(codeOf(() => negotiate(opts('blksize', '7'), limits)), 'TFTP_BAD_OPTION');
  assert.equal(codeOf(() => negotiate(opts('blksize', '0'), limits)), 'TFTP_BAD_OPTION');
  for (const bad of ['', 'abc', '-1', '1e3', ' 512', '0x200', '12345678901']) {
    assert.equal(codeOf(() => negotiate(opts('blksize', bad), limits)), 'TFTP_BAD_OPTION', bad);
  }
});

test('timeout: 1-255 echoed as asked; outside refused', () => {
  const n = negotiate(opts('timeout', '3'), limits);
  assert.equal(n.timeoutMs, 3000);
  assert.deepEqual(n.oack, [{ name: 'timeout', value: '3' }]);
  assert.equal(negotiate(opts('timeout', '255'), limits).timeoutMs, 255000);
  assert.equal(codeOf(() => negotiate(opts('timeout', '0'), limits)), 'TFTP_BAD_OPTION');
  assert.equal(codeOf(() => negotiate(opts('timeout', '256'), limits)), 'TFTP_BAD_OPTION');
});

test('tsize reports the transfer size; its value must be a number', () => {
  assert.deepEqual(negotiate(opts('tsize', '0'), { ...limits, transferSize: 0 }).oack, [{ name: 'tsize', value: '0' }]);
  assert.equal(codeOf(() => negotiate(opts('tsize', 'x'), limits)), 'TFTP_BAD_OPTION');
});

test('windowsize: clamped to the limit and to the window memory, whatever the option order; 0 refused', () => {
  assert.equal(negotiate(opts('windowsize', '1000'), limits).windowsize, 64);
  assert.equal(negotiate(opts('windowsize', '65535'), { ...limits, maxWindowsize: 32768, maxWindowBytes: 1 << 30 }).windowsize, 32768);
  // 1 MiB / 65464 = 16 blocks, whether windowsize comes before blksize or after.
  assert.equal(negotiate(opts('windowsize', '64', 'blksize', '65464'), limits).windowsize, 16);
  assert.equal(negotiate(opts('blksize', '65464', 'windowsize', '64'), limits).windowsize, 16);
  assert.deepEqual(negotiate(opts('windowsize', '64', 'blksize', '65464'), limits).oack, [
    { name: 'windowsize', value: '16' }, { name: 'blksize', value: '65464' },
  ]);
  assert.equal(negotiate(opts('windowsize', '4'), { ...limits, maxWindowBytes: 100 }).windowsize, 1);
  assert.equal(codeOf(() => negotiate(opts('windowsize', '0'), limits)), 'TFTP_BAD_OPTION');
});
