/**
 * Ratio tables. One convention everywhere: a ratio compares a figure with the
 * best peer's figure so that 1.00 means "as good as the best peer", above 1
 * better, below 1 worse, whichever way the figure itself improves.
 *   higher-is-better (MB/s, IOPS):          ratio = value / best
 *   lower-is-better (latency, CPU per GB):  ratio = best / value
 */

export type Better = 'higher' | 'lower';

/** The best of the defined, positive values; undefined when there is none. */
export function bestOf(values: readonly (number | undefined)[], better: Better): number | undefined {
  let best: number | undefined;
  for (const v of values) {
    if (v === undefined || !Number.isFinite(v) || v <= 0) continue;
    if (best === undefined || (better === 'higher' ? v > best : v < best)) best = v;
  }
  return best;
}

/** See the file comment; undefined when either side is missing or not positive. */
export function ratioToBest(value: number | undefined, best: number | undefined, better: Better): number | undefined {
  if (value === undefined || best === undefined || !(value > 0) || !(best > 0)) return undefined;
  return better === 'higher' ? value / best : best / value;
}

/** A number with a fixed count of decimals, or a dash when there is none. */
export function fmt(v: number | undefined, decimals = 1): string {
  return v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(decimals);
}

/** Numbers grouped by thousands with a thin space (readable IOPS). */
export function fmtInt(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? '–' : Math.round(v).toLocaleString('en-US').replace(/,/g, ' ');
}

export function fmtRatio(v: number | undefined): string {
  return v === undefined ? '–' : `${v.toFixed(2)}×`;
}

/** A GitHub-flavoured markdown table; `right` marks the columns aligned right (numbers). */
export function markdownTable(headers: readonly string[], rows: readonly (readonly string[])[], right: readonly boolean[] = []): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
  const widths = headers.map((h, i) => Math.max(h.length, 3, ...rows.map((r) => esc(r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    '| ' + widths.map((w, i) => (right[i] ? esc(cells[i] ?? '').padStart(w) : esc(cells[i] ?? '').padEnd(w))).join(' | ') + ' |';
  const rule = '| ' + widths.map((w, i) => (right[i] ? '-'.repeat(w - 1) + ':' : '-'.repeat(w))).join(' | ') + ' |';
  return [line(headers), rule, ...rows.map(line)].join('\n');
}
