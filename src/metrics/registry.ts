/**
 * A small metrics registry and the Prometheus text exposition format,
 * version 0.0.4 (Prometheus docs, "Exposition formats", text-based format).
 * No dependency: the format is a few lines per family.
 *
 * Two ways to produce metrics:
 *   - live instruments (Counter, Gauge, Histogram) that code updates as
 *     things happen (HTTP requests, NBD request latency);
 *   - collectors that read counters other modules already keep (NBD
 *     per-export stats, TFTP and DHCP server stats, the catalogue) and turn
 *     them into families at scrape time. Nothing is copied between scrapes.
 *
 * Both produce MetricFamily values, and renderPrometheusText() writes them.
 *
 * Format rules applied (same source):
 *   - metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 *     [a-zA-Z_][a-zA-Z0-9_]* and must not start with `__`;
 *   - in HELP text, `\` and newline are escaped as `\\` and `\n`; in label
 *     values, also `"` as `\"`;
 *   - values are Go floats: `NaN`, `+Inf`, `-Inf` are spelled so;
 *   - one HELP and one TYPE line per family, before its samples; each
 *     family appears once, its samples together;
 *   - a histogram `x` is written as cumulative `x_bucket{le="..."}` lines
 *     ending with `le="+Inf"` (equal to `x_count`), then `x_sum`, `x_count`.
 * Names and labels come from this code, not from the network, so a bad one
 * is a programming error: it fails an assertion. Label values may come
 * from the network (a route, a MAC) and are escaped.
 */
import assert from 'node:assert/strict';

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type Labels = Readonly<Record<string, string>>;

export interface Sample {
  labels: Labels;
  value: number;
}

export interface HistogramSample {
  labels: Labels;
  /** Upper bounds of the buckets, ascending, without +Inf. */
  bounds: readonly number[];
  /** Observations per bucket, NOT cumulative; one more entry than bounds (the +Inf bucket). */
  counts: readonly number[];
  sum: number;
}

export type MetricFamily =
  | { name: string; help: string; type: 'counter' | 'gauge'; samples: Sample[] }
  | { name: string; help: string; type: 'histogram'; samples: HistogramSample[] };

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Most label sets one instrument keeps; later ones are dropped and counted (a bound against label explosions). */
export const DEFAULT_MAX_SERIES = 10_000;

/** Latency buckets in seconds: 50 µs to 10 s, roughly 1-2.5-5 per decade. */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = Object.freeze([
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
]);

export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

export function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function checkName(name: string): void {
  assert.match(name, METRIC_NAME, `bad metric name ${JSON.stringify(name)}`);
}

function checkLabelName(name: string, histogram: boolean): void {
  assert.match(name, LABEL_NAME, `bad label name ${JSON.stringify(name)}`);
  assert.ok(!name.startsWith('__'), `label names starting with __ are reserved: ${name}`);
  assert.ok(!(histogram && name === 'le'), 'a histogram cannot have a label named le');
}

function labelText(labels: Labels, extra?: [string, string]): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(labels)) parts.push(`${k}="${escapeLabelValue(v)}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
  return parts.length > 0 ? `{${parts.join(',')}}` : '';
}

function seriesKey(labels: Labels): string {
  return Object.keys(labels).sort().map((k) => `${k}\u0000${labels[k]}`).join('\u0001');
}

/** Writes families in the text format. Throws (an assertion) on a malformed family: a bug, never input. */
export function renderPrometheusText(families: readonly MetricFamily[]): string {
  const out: string[] = [];
  const names = new Set<string>();
  for (const f of families) {
    checkName(f.name);
    assert.ok(!names.has(f.name), `metric family ${f.name} appears twice`);
    names.add(f.name);
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    const seen = new Set<string>();
    for (const s of f.samples) {
      for (const k of Object.keys(s.labels)) checkLabelName(k, f.type === 'histogram');
      const key = seriesKey(s.labels);
      assert.ok(!seen.has(key), `metric ${f.name} has two samples with labels ${JSON.stringify(s.labels)}`);
      seen.add(key);
    }
    if (f.type === 'histogram') {
      for (const s of f.samples) {
        assert.equal(s.counts.length, s.bounds.length + 1, `histogram ${f.name}: counts must have one entry per bound plus +Inf`);
        let cumulative = 0;
        for (let i = 0; i < s.bounds.length; i++) {
          cumulative += s.counts[i]!;
          out.push(`${f.name}_bucket${labelText(s.labels, ['le', formatValue(s.bounds[i]!)])} ${cumulative}`);
        }
        cumulative += s.counts[s.bounds.length]!;
        out.push(`${f.name}_bucket${labelText(s.labels, ['le', '+Inf'])} ${cumulative}`);
        out.push(`${f.name}_sum${labelText(s.labels)} ${formatValue(s.sum)}`);
        out.push(`${f.name}_count${labelText(s.labels)} ${cumulative}`);
      }
    } else {
      for (const s of f.samples) out.push(`${f.name}${labelText(s.labels)} ${formatValue(s.value)}`);
    }
  }
  return out.length > 0 ? out.join('\n') + '\n' : '';
}

// ---------------------------------------------------------------- instruments

export interface InstrumentOptions {
  name: string;
  help: string;
  /** Label names every sample carries, in this order. */
  labelNames?: readonly string[];
  /** Most label sets kept; default DEFAULT_MAX_SERIES. */
  maxSeries?: number;
}

abstract class Instrument<S> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  private readonly maxSeries: number;
  protected readonly series = new Map<string, { labels: Labels; state: S }>();
  /** Updates dropped because the instrument already held maxSeries label sets. */
  dropped = 0;

  constructor(options: InstrumentOptions, histogram: boolean) {
    checkName(options.name);
    this.name = options.name;
    this.help = options.help;
    this.labelNames = Object.freeze([...(options.labelNames ?? [])]);
    for (const l of this.labelNames) checkLabelName(l, histogram);
    this.maxSeries = options.maxSeries ?? DEFAULT_MAX_SERIES;
  }

  protected abstract initial(): S;

  /** The state of one label set; null when over the series limit. */
  protected stateOf(labels: Labels | undefined): S | null {
    const values = this.labelNames.map((n) => {
      const v = labels?.[n];
      assert.ok(typeof v === 'string', `metric ${this.name} needs label ${n}`);
      return v;
    });
    const key = values.join('\u0000');
    let entry = this.series.get(key);
    if (!entry) {
      if (this.series.size >= this.maxSeries) {
        this.dropped++;
        return null;
      }
      const l: Record<string, string> = {};
      this.labelNames.forEach((n, i) => (l[n] = values[i]!));
      entry = { labels: Object.freeze(l), state: this.initial() };
      this.series.set(key, entry);
    }
    return entry.state;
  }
}

export class Counter extends Instrument<{ value: number }> {
  constructor(options: InstrumentOptions) {
    super(options, false);
  }
  protected initial(): { value: number } {
    return { value: 0 };
  }
  inc(labels?: Labels, by = 1): void {
    assert.ok(by >= 0, `counter ${this.name} cannot go down`);
    const s = this.stateOf(labels);
    if (s) s.value += by;
  }
  get(labels?: Labels): number {
    return this.stateOf(labels)?.value ?? 0;
  }
  collect(): MetricFamily {
    return { name: this.name, help: this.help, type: 'counter', samples: [...this.series.values()].map((e) => ({ labels: e.labels, value: e.state.value })) };
  }
}

export class Gauge extends Instrument<{ value: number }> {
  constructor(options: InstrumentOptions) {
    super(options, false);
  }
  protected initial(): { value: number } {
    return { value: 0 };
  }
  set(labels: Labels | undefined, value: number): void {
    const s = this.stateOf(labels);
    if (s) s.value = value;
  }
  add(labels: Labels | undefined, by: number): void {
    const s = this.stateOf(labels);
    if (s) s.value += by;
  }
  collect(): MetricFamily {
    return { name: this.name, help: this.help, type: 'gauge', samples: [...this.series.values()].map((e) => ({ labels: e.labels, value: e.state.value })) };
  }
}

export interface HistogramOptions extends InstrumentOptions {
  /** Upper bounds, strictly ascending, finite. */
  buckets: readonly number[];
}

interface HistogramState {
  counts: number[];
  sum: number;
}

export class Histogram extends Instrument<HistogramState> {
  readonly bounds: readonly number[];

  constructor(options: HistogramOptions) {
    super(options, true);
    assert.ok(options.buckets.length > 0, `histogram ${options.name} needs buckets`);
    for (let i = 0; i < options.buckets.length; i++) {
      assert.ok(Number.isFinite(options.buckets[i]), `histogram ${options.name}: bucket bounds must be finite`);
      if (i > 0) assert.ok(options.buckets[i]! > options.buckets[i - 1]!, `histogram ${options.name}: bucket bounds must ascend`);
    }
    this.bounds = Object.freeze([...options.buckets]);
  }

  protected initial(): HistogramState {
    return { counts: new Array<number>(this.bounds.length + 1).fill(0), sum: 0 };
  }

  observe(labels: Labels | undefined, value: number): void {
    if (Number.isNaN(value)) return;
    const s = this.stateOf(labels);
    if (!s) return;
    // Bucket i counts observations <= bounds[i] (the `le` semantics); binary search for the first bound >= value.
    let lo = 0;
    let hi = this.bounds.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.bounds[mid]! >= value) hi = mid;
      else lo = mid + 1;
    }
    s.counts[lo]!++;
    s.sum += value;
  }

  /** Observations so far for one label set (for tests and summaries). */
  count(labels?: Labels): number {
    const s = this.stateOf(labels);
    return s ? s.counts.reduce((a, b) => a + b, 0) : 0;
  }

  collect(): MetricFamily {
    return {
      name: this.name,
      help: this.help,
      type: 'histogram',
      samples: [...this.series.values()].map((e) => ({ labels: e.labels, bounds: this.bounds, counts: [...e.state.counts], sum: e.state.sum })),
    };
  }
}

export type Collector = () => MetricFamily[] | Promise<MetricFamily[]>;

/**
 * Instruments and collectors gathered into one collect(). Families with the
 * same name from two sources are a bug and fail the render.
 */
export class MetricsRegistry {
  private readonly sources: Collector[] = [];

  counter(options: InstrumentOptions): Counter {
    const c = new Counter(options);
    this.sources.push(() => [c.collect()]);
    return c;
  }

  gauge(options: InstrumentOptions): Gauge {
    const g = new Gauge(options);
    this.sources.push(() => [g.collect()]);
    return g;
  }

  histogram(options: HistogramOptions): Histogram {
    const h = new Histogram(options);
    this.sources.push(() => [h.collect()]);
    return h;
  }

  addCollector(collector: Collector): void {
    this.sources.push(collector);
  }

  async collect(): Promise<MetricFamily[]> {
    const out: MetricFamily[] = [];
    for (const s of this.sources) out.push(...(await s()));
    return out;
  }
}
