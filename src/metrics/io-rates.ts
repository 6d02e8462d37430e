/**
 * Live read and write rates per NBD export, for the dashboard: a sampler
 * over the NBD server's per-export counters (NbdServer.stats(), which only
 * grow) that keeps the last few seconds of samples and answers in bytes
 * (and requests) per second over that window.
 *
 *   const rates = new IoRates(() => nbd.stats(), { intervalMs: 1000, windowMs: 5000 });
 *   rates.forExport(name)   // { readBytesPerSecond, writeBytesPerSecond, ... } or null
 *   rates.close();
 *
 * A rate is (newest - oldest) / elapsed over the samples in the window, so
 * it is an average over up to windowMs, known once two samples exist. An
 * export that disappears from the source is forgotten; a counter that goes
 * down (a new server behind the same source) restarts its history.
 */
import { parseExportName } from '../app/export-names.js';

/** The fields read from each export's counters (NbdExportStats has them all). */
export interface IoCounters {
  readonly bytesRead: number;
  readonly bytesWritten: number;
  readonly reads: number;
  readonly writes: number;
}

export interface IoRate {
  readBytesPerSecond: number;
  writeBytesPerSecond: number;
  readsPerSecond: number;
  writesPerSecond: number;
  /** Milliseconds the rate is averaged over. */
  windowMs: number;
}

export interface IoRatesOptions {
  /** How often to sample; 0 means only when sample() is called (tests). */
  intervalMs?: number;
  /** How far back rates look. */
  windowMs?: number;
  /** Milliseconds, monotonic; default performance.now. */
  now?: () => number;
}

export const IO_RATES_DEFAULTS = {
  intervalMs: 1000,
  windowMs: 5000,
  /** Exports tracked at most; more are ignored until some go away. */
  maxExports: 10_000,
} as const;

interface Point {
  t: number;
  bytesRead: number;
  bytesWritten: number;
  reads: number;
  writes: number;
}

export class IoRates {
  private readonly history = new Map<string, Point[]>();
  private readonly windowMs: number;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly source: () => ReadonlyMap<string, Readonly<IoCounters>>,
    options: IoRatesOptions = {},
  ) {
    const intervalMs = options.intervalMs ?? IO_RATES_DEFAULTS.intervalMs;
    this.windowMs = options.windowMs ?? IO_RATES_DEFAULTS.windowMs;
    if (!(Number.isFinite(intervalMs) && intervalMs >= 0)) throw new RangeError(`intervalMs must be a number >= 0, not ${intervalMs}`);
    if (!(Number.isFinite(this.windowMs) && this.windowMs > 0)) throw new RangeError(`windowMs must be a number > 0, not ${this.windowMs}`);
    this.now = options.now ?? (() => performance.now());
    this.sample();
    if (intervalMs > 0) {
      this.timer = setInterval(() => this.sample(), intervalMs);
      // Sampling never keeps the process alive.
      this.timer.unref();
    }
  }

  /** Takes one sample of every export now. */
  sample(): void {
    const t = this.now();
    let current: ReadonlyMap<string, Readonly<IoCounters>>;
    try {
      current = this.source();
    } catch {
      return;
    }
    for (const name of this.history.keys()) if (!current.has(name)) this.history.delete(name);
    for (const [name, c] of current) {
      let h = this.history.get(name);
      if (!h) {
        if (this.history.size >= IO_RATES_DEFAULTS.maxExports) continue;
        h = [];
        this.history.set(name, h);
      }
      const p: Point = { t, bytesRead: c.bytesRead, bytesWritten: c.bytesWritten, reads: c.reads, writes: c.writes };
      const last = h[h.length - 1];
      if (last && (p.bytesRead < last.bytesRead || p.bytesWritten < last.bytesWritten || p.reads < last.reads || p.writes < last.writes)) h.length = 0;
      h.push(p);
      // Keep one sample at or before the window's start, so the window is covered whole.
      while (h.length > 2 && h[1]!.t <= t - this.windowMs) h.shift();
    }
  }

  /** Rates of one export (canonical name), or null when it is unknown or has a single sample. */
  forExport(name: string): IoRate | null {
    const h = this.history.get(name);
    if (!h || h.length < 2) return null;
    return rateOf(h[0]!, h[h.length - 1]!);
  }

  /**
   * Rates of a client (`aa:bb:cc:dd:ee:ff`) summed over its exports (each
   * boot has its own export name); null when none has two samples.
   */
  forMac(mac: string): IoRate | null {
    let total: IoRate | null = null;
    for (const [name, h] of this.history) {
      if (h.length < 2) continue;
      const p = parseExportName(name);
      if (p?.kind !== 'client' || p.mac !== mac) continue;
      const r = rateOf(h[0]!, h[h.length - 1]!);
      total = total
        ? {
            readBytesPerSecond: total.readBytesPerSecond + r.readBytesPerSecond,
            writeBytesPerSecond: total.writeBytesPerSecond + r.writeBytesPerSecond,
            readsPerSecond: total.readsPerSecond + r.readsPerSecond,
            writesPerSecond: total.writesPerSecond + r.writesPerSecond,
            windowMs: Math.max(total.windowMs, r.windowMs),
          }
        : r;
    }
    return total;
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.history.clear();
  }
}

function rateOf(a: Point, b: Point): IoRate {
  const ms = b.t - a.t;
  if (ms <= 0) return { readBytesPerSecond: 0, writeBytesPerSecond: 0, readsPerSecond: 0, writesPerSecond: 0, windowMs: 0 };
  const per = (x: number, y: number): number => ((y - x) * 1000) / ms;
  return {
    readBytesPerSecond: per(a.bytesRead, b.bytesRead),
    writeBytesPerSecond: per(a.bytesWritten, b.bytesWritten),
    readsPerSecond: per(a.reads, b.reads),
    writesPerSecond: per(a.writes, b.writes),
    windowMs: ms,
  };
}
