import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrometheusParseError, parsePrometheusText, valueOf } from '../../test/helpers/prometheus-text.js';
import { Counter, Gauge, Histogram, MetricsRegistry, escapeLabelValue, formatValue, renderPrometheusText, type MetricFamily } from './registry.js';

test('counters, gauges and label escaping render as the text format and parse back exactly', () => {
  const c = new Counter({ name: 'x_requests_total', help: 'Requests\nwith a back\\slash', labelNames: ['route'] });
  const nasty = 'a"b\\c\nd{e}=f,g';
  c.inc({ route: nasty }, 3);
  c.inc({ route: nasty });
  c.inc({ route: '/plain' });
  const g = new Gauge({ name: 'x_temperature', help: 'A gauge' });
  g.set(undefined, -2.5);
  const text = renderPrometheusText([c.collect(), g.collect()]);
  assert.match(text, /^# HELP x_requests_total Requests\\nwith a back\\\\slash\n# TYPE x_requests_total counter\n/);
  assert.ok(text.includes(`x_requests_total{route="a\\"b\\\\c\\nd{e}=f,g"} 4\n`), text);
  const parsed = parsePrometheusText(text);
  assert.equal(parsed.get('x_requests_total')!.help, 'Requests\nwith a back\\slash');
  assert.equal(valueOf(parsed, 'x_requests_total', { route: nasty }), 4);
  assert.equal(valueOf(parsed, 'x_requests_total', { route: '/plain' }), 1);
  assert.equal(valueOf(parsed, 'x_temperature'), -2.5);
});

test('special values are spelled as Go floats', () => {
  assert.equal(formatValue(NaN), 'NaN');
  assert.equal(formatValue(Infinity), '+Inf');
  assert.equal(formatValue(-Infinity), '-Inf');
  assert.equal(formatValue(2 ** 53), '9007199254740992');
  assert.equal(formatValue(1e21), '1e+21');
  assert.equal(escapeLabelValue('\\"\n'), '\\\\\\"\\n');
  const parsed = parsePrometheusText(renderPrometheusText([{ name: 'v', help: '', type: 'gauge', samples: [{ labels: { k: 'nan' }, value: NaN }, { labels: { k: 'inf' }, value: Infinity }, { labels: { k: 'big' }, value: 1e21 }] }]));
  assert.ok(Number.isNaN(valueOf(parsed, 'v', { k: 'nan' })));
  assert.equal(valueOf(parsed, 'v', { k: 'inf' }), Infinity);
  assert.equal(valueOf(parsed, 'v', { k: 'big' }), 1e21);
});

test('a histogram has cumulative buckets ending at +Inf, a sum and a count', () => {
  const h = new Histogram({ name: 'x_seconds', help: 'h', labelNames: ['op'], buckets: [0.1, 1, 10] });
  for (const v of [0.05, 0.1, 0.5, 1, 5, 50, 50]) h.observe({ op: 'read' }, v);
  h.observe({ op: 'write' }, 0.2);
  h.observe({ op: 'write' }, NaN); // ignored
  const text = renderPrometheusText([h.collect()]);
  const p = parsePrometheusText(text);
  const b = (le: string, op = 'read'): number => valueOf(p, 'x_seconds_bucket', { op, le });
  // le is "less than or equal": 0.1 falls in the 0.1 bucket, 1 in the 1 bucket.
  assert.deepEqual([b('0.1'), b('1'), b('10'), b('+Inf')], [2, 4, 5, 7]);
  assert.equal(valueOf(p, 'x_seconds_count', { op: 'read' }), 7);
  assert.ok(Math.abs(valueOf(p, 'x_seconds_sum', { op: 'read' }) - 106.65) < 1e-9);
  assert.deepEqual([b('0.1', 'write'), b('1', 'write'), b('+Inf', 'write')], [0, 1, 1]);
  assert.equal(h.count({ op: 'write' }), 1);
});

test('names are checked, reserved labels refused, duplicates caught at render', () => {
  assert.throws(() => new Counter({ name: '1bad', help: '' }));
  assert.throws(() => new Counter({ name: 'ok', help: '', labelNames: ['__x'] }));
  assert.throws(() => new Histogram({ name: 'h', help: '', labelNames: ['le'], buckets: [1] }));
  assert.throws(() => new Histogram({ name: 'h', help: '', buckets: [2, 1] }));
  assert.throws(() => new Counter({ name: 'c', help: '', labelNames: ['a'] }).inc({}), /needs label a/);
  assert.throws(() => new Counter({ name: 'c', help: '' }).inc(undefined, -1));
  const f: MetricFamily = { name: 'dup', help: '', type: 'gauge', samples: [{ labels: { a: '1' }, value: 1 }, { labels: { a: '1' }, value: 2 }] };
  assert.throws(() => renderPrometheusText([f]), /two samples/);
  const g: MetricFamily = { name: 'g', help: '', type: 'gauge', samples: [] };
  assert.throws(() => renderPrometheusText([g, g]), /twice/);
  assert.equal(renderPrometheusText([]), '');
});

test('an instrument keeps at most maxSeries label sets and counts what it dropped', () => {
  const c = new Counter({ name: 'c_total', help: '', labelNames: ['k'], maxSeries: 3 });
  for (let i = 0; i < 10; i++) c.inc({ k: String(i) });
  assert.equal(c.collect().samples.length, 3);
  assert.equal(c.dropped, 7);
  c.inc({ k: '0' });
  assert.equal(c.get({ k: '0' }), 2);
});

test('the registry gathers instruments and collectors in order', async () => {
  const r = new MetricsRegistry();
  r.counter({ name: 'a_total', help: 'a' }).inc();
  r.addCollector(async () => [{ name: 'b', help: 'b', type: 'gauge', samples: [{ labels: {}, value: 7 }] }]);
  const p = parsePrometheusText(renderPrometheusText(await r.collect()));
  assert.deepEqual([...p.keys()], ['a_total', 'b']);
  assert.equal(valueOf(p, 'b'), 7);
});

test('the test parser is strict', () => {
  const bad = [
    'x 1', // no final newline
    'x 1\n', // sample before TYPE
    '# TYPE x counter\nx{a="b} 1\n',
    '# TYPE x counter\nx{a="\\t"} 1\n',
    '# TYPE x counter\nx 1 1234\n',
    '# TYPE x counter\nx -1\n',
    '# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\nx 2\n',
    '# TYPE x gauge\nx 1\nx 2\n',
    '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
    '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',
  ];
  for (const t of bad) assert.throws(() => parsePrometheusText(t), PrometheusParseError, JSON.stringify(t));
});
