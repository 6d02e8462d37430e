/**
 * A strict parser of the Prometheus text exposition format 0.0.4, for
 * tests: it refuses what a lenient scraper would let through, so a test
 * that parses a scrape also checks the format.
 *
 * Checked: metric and label name syntax; label value escapes (only \\, \"
 * and \n); HELP escapes; one HELP and one TYPE per family, before its
 * samples; a family's samples contiguous and no family twice; no series
 * twice; values as Go floats (NaN, +Inf, -Inf); no timestamps (the server
 * writes none); for histograms: _bucket lines with an `le` label, ascending
 * bounds, cumulative counts that never go down, a +Inf bucket equal to
 * _count, and a _sum; a final newline.
 */

export interface ParsedSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface ParsedFamily {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  samples: ParsedSample[];
}

export class PrometheusParseError extends Error {
  constructor(line: number, message: string) {
    super(`line ${line}: ${message}`);
  }
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const FLOAT = /^[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)$/;

function parseValue(s: string, line: number): number {
  if (s === 'NaN') return NaN;
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (!FLOAT.test(s)) throw new PrometheusParseError(line, `bad value ${JSON.stringify(s)}`);
  return Number(s);
}

function unescapeHelp(s: string, line: number): string {
  return s.replace(/\\(.?)/g, (_m, c: string) => {
    if (c === '\\') return '\\';
    if (c === 'n') return '\n';
    throw new PrometheusParseError(line, `bad escape \\${c} in HELP`);
  });
}

/** Parses `{a="x",b="y"}` at text[i] (text[i] === '{'); returns the labels and the index after '}'. */
function parseLabels(text: string, start: number, line: number): [Record<string, string>, number] {
  const labels: Record<string, string> = {};
  let i = start + 1;
  for (;;) {
    if (text[i] === '}') return [labels, i + 1];
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new PrometheusParseError(line, 'label without =');
    const name = text.slice(i, eq);
    if (!LABEL_NAME.test(name)) throw new PrometheusParseError(line, `bad label name ${JSON.stringify(name)}`);
    if (Object.hasOwn(labels, name)) throw new PrometheusParseError(line, `label ${name} twice`);
    if (text[eq + 1] !== '"') throw new PrometheusParseError(line, `label ${name}: value not quoted`);
    let j = eq + 2;
    let value = '';
    for (;;) {
      const c = text[j];
      if (c === undefined) throw new PrometheusParseError(line, `label ${name}: unterminated value`);
      if (c === '"') break;
      if (c === '\n') throw new PrometheusParseError(line, `label ${name}: raw newline`);
      if (c === '\\') {
        const n = text[j + 1];
        if (n === '\\') value += '\\';
        else if (n === '"') value += '"';
        else if (n === 'n') value += '\n';
        else throw new PrometheusParseError(line, `label ${name}: bad escape \\${n ?? ''}`);
        j += 2;
        continue;
      }
      value += c;
      j++;
    }
    labels[name] = value;
    i = j + 1;
    if (text[i] === ',') i++;
    else if (text[i] !== '}') throw new PrometheusParseError(line, `expected , or } after label ${name}`);
  }
}

function familyOf(sampleName: string, families: Map<string, ParsedFamily>): ParsedFamily | undefined {
  const direct = families.get(sampleName);
  if (direct) return direct;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (sampleName.endsWith(suffix)) {
      const f = families.get(sampleName.slice(0, -suffix.length));
      if (f && (f.type === 'histogram' || f.type === 'summary')) return f;
    }
  }
  return undefined;
}

export function parsePrometheusText(text: string): Map<string, ParsedFamily> {
  if (text.length > 0 && !text.endsWith('\n')) throw new PrometheusParseError(0, 'no final newline');
  const families = new Map<string, ParsedFamily>();
  const closed = new Set<string>();
  let current: ParsedFamily | undefined;
  const series = new Set<string>();
  const lines = text.split('\n');
  lines.pop();
  lines.forEach((raw, idx) => {
    const line = idx + 1;
    if (raw.trim() === '') return;
    if (raw.startsWith('#')) {
      const m = /^# (HELP|TYPE) ([^ ]+) ?(.*)$/.exec(raw);
      if (!m) return; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, 'HELP' | 'TYPE', string, string];
      if (!METRIC_NAME.test(name)) throw new PrometheusParseError(line, `bad metric name ${name}`);
      if (closed.has(name)) throw new PrometheusParseError(line, `family ${name} appears twice`);
      let f = families.get(name);
      if (f && f !== current) throw new PrometheusParseError(line, `family ${name} appears twice`);
      if (f && f.samples.length > 0) throw new PrometheusParseError(line, `${kind} of ${name} after its samples`);
      if (!f) {
        if (current) closed.add(current.name);
        f = { name, help: '', type: 'untyped', samples: [] };
        families.set(name, f);
        current = f;
        (f as ParsedFamily & { seen?: Set<string> }).seen = new Set();
      }
      const seen = (f as ParsedFamily & { seen: Set<string> }).seen;
      if (seen.has(kind)) throw new PrometheusParseError(line, `second ${kind} for ${name}`);
      seen.add(kind);
      if (kind === 'HELP') f.help = unescapeHelp(rest, line);
      else {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new PrometheusParseError(line, `bad type ${rest}`);
        f.type = rest as ParsedFamily['type'];
      }
      return;
    }
    const nameEnd = raw.search(/[{ ]/);
    if (nameEnd <= 0) throw new PrometheusParseError(line, 'no sample name');
    const name = raw.slice(0, nameEnd);
    if (!METRIC_NAME.test(name)) throw new PrometheusParseError(line, `bad metric name ${name}`);
    let labels: Record<string, string> = {};
    let i = nameEnd;
    if (raw[i] === '{') [labels, i] = parseLabels(raw, i, line);
    if (raw[i] !== ' ') throw new PrometheusParseError(line, 'expected a space before the value');
    const rest = raw.slice(i + 1).split(' ');
    if (rest.length !== 1) throw new PrometheusParseError(line, 'unexpected timestamp or trailing text');
    const value = parseValue(rest[0]!, line);
    const f = familyOf(name, families);
    if (!f) throw new PrometheusParseError(line, `sample ${name} before its TYPE`);
    if (f !== current) throw new PrometheusParseError(line, `sample ${name} outside its family's block`);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (series.has(key)) throw new PrometheusParseError(line, `series ${key} twice`);
    series.add(key);
    if (f.type === 'histogram' && name === `${f.name}_bucket` && labels.le === undefined) throw new PrometheusParseError(line, 'bucket without le');
    if ((f.type === 'counter' || name.endsWith('_count')) && !(value >= 0)) throw new PrometheusParseError(line, `${name} is negative or NaN`);
    f.samples.push({ name, labels, value });
  });
  for (const f of families.values()) {
    delete (f as ParsedFamily & { seen?: Set<string> }).seen;
    if (f.type === 'histogram') checkHistogram(f);
  }
  return families;
}

function checkHistogram(f: ParsedFamily): void {
  const groups = new Map<string, { buckets: [number, number][]; sum?: number; count?: number }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { buckets: [] }));
    if (s.name === `${f.name}_bucket`) g.buckets.push([le === '+Inf' ? Infinity : Number(le), s.value]);
    else if (s.name === `${f.name}_sum`) g.sum = s.value;
    else if (s.name === `${f.name}_count`) g.count = s.value;
    else throw new PrometheusParseError(0, `histogram ${f.name} has sample ${s.name}`);
  }
  for (const [key, g] of groups) {
    if (g.sum === undefined || g.count === undefined) throw new PrometheusParseError(0, `histogram ${f.name}${key} lacks _sum or _count`);
    const last = g.buckets[g.buckets.length - 1];
    if (!last || last[0] !== Infinity) throw new PrometheusParseError(0, `histogram ${f.name}${key} lacks its +Inf bucket`);
    if (last[1] !== g.count) throw new PrometheusParseError(0, `histogram ${f.name}${key}: +Inf bucket ${last[1]} != count ${g.count}`);
    for (let i = 1; i < g.buckets.length; i++) {
      if (!(g.buckets[i]![0] > g.buckets[i - 1]![0])) throw new PrometheusParseError(0, `histogram ${f.name}${key}: bounds not ascending`);
      if (g.buckets[i]![1] < g.buckets[i - 1]![1]) throw new PrometheusParseError(0, `histogram ${f.name}${key}: cumulative counts go down`);
    }
  }
}

/** The value of the one sample of `name` whose labels include `labels`; throws when there is none or several. */
export function valueOf(families: Map<string, ParsedFamily>, name: string, labels: Record<string, string> = {}): number {
  const matches = [...families.values()]
    .flatMap((f) => f.samples)
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (matches.length !== 1) throw new Error(`${matches.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return matches[0]!.value;
}

/** Every sample of `name` whose labels include `labels`. */
export function samplesOf(families: Map<string, ParsedFamily>, name: string, labels: Record<string, string> = {}): ParsedSample[] {
  return [...families.values()].flatMap((f) => f.samples).filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}
