import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bestOf, fmt, fmtInt, fmtRatio, markdownTable, ratioToBest } from './table.js';

test('best of: highest or lowest defined positive value', () => {
  assert.equal(bestOf([3, undefined, 7, 5], 'higher'), 7);
  assert.equal(bestOf([3, undefined, 7, 5], 'lower'), 3);
  assert.equal(bestOf([0, -1, Number.NaN, undefined], 'lower'), undefined);
  assert.equal(bestOf([], 'higher'), undefined);
});

test('ratios: 1 is as good as the best, above is better, whichever way the figure improves', () => {
  assert.equal(ratioToBest(50, 100, 'higher'), 0.5);
  assert.equal(ratioToBest(200, 100, 'higher'), 2);
  assert.equal(ratioToBest(4, 2, 'lower'), 0.5); // twice the latency of the best
  assert.equal(ratioToBest(1, 2, 'lower'), 2);
  assert.equal(ratioToBest(undefined, 2, 'lower'), undefined);
  assert.equal(ratioToBest(3, undefined, 'higher'), undefined);
  assert.equal(ratioToBest(0, 2, 'lower'), undefined);
});

test('formatting', () => {
  assert.equal(fmt(1.234, 2), '1.23');
  assert.equal(fmt(undefined), '–');
  assert.equal(fmtInt(27440.1), '27 440');
  assert.equal(fmtRatio(0.5), '0.50×');
  assert.equal(fmtRatio(undefined), '–');
});

test('markdown table: padded columns, right-aligned numbers, pipes escaped', () => {
  const t = markdownTable(['server', 'MB/s'], [['a|b', '1.0'], ['long-name', '123.4']], [false, true]);
  assert.equal(
    t,
    ['| server    |  MB/s |', '| --------- | ----: |', '| a\\|b      |   1.0 |', '| long-name | 123.4 |'].join('\n'),
  );
});
