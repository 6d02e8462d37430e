/**
 * NBD request latency, measured at the block device.
 *
 * The NBD session keeps counters, not timings, and the session is left
 * alone here. What can be timed from outside is the device each session is
 * handed: TimedExportResolver wraps the app's ExportResolver and gives each
 * session a view of its device whose read, write, flush, trim, zero,
 * cache and extents calls are timed into a histogram labelled by `op`.
 *
 * So the histogram measures the time storage takes to serve a request
 * (base image, overlay, page cache, disk), from the call to the settled
 * promise. It leaves out the network, the request decoding and the time a
 * request waits for an in-flight slot. It is per device call: a structured
 * read that skips holes is an `extents` call and one `read` per piece.
 *
 * The view is a Proxy, not a class implementing BlockDevice: whatever
 * else a device offers (fields or methods added later for fast paths)
 * reaches the session unchanged, and the device's own methods run with
 * the device as `this`.
 */
import type { ExportInfo, ExportResolver, OpenedExport, Peer } from '../protocols/nbd/exports.js';
import type { BlockDevice } from '../storage/block-device.js';
import { Histogram, LATENCY_BUCKETS_SECONDS } from './registry.js';

/**
 * Device calls that are timed, and their `op` label: the device call, not
 * the NBD command, because they differ (a structured NBD read may first ask
 * for extents to skip holes, then read several pieces).
 */
export const TIMED_DEVICE_CALLS = {
  read: 'read',
  write: 'write',
  flush: 'flush',
  trim: 'trim',
  zero: 'zero',
  cache: 'cache',
  extents: 'extents',
} as const satisfies Partial<Record<keyof BlockDevice, string>>;

/**
 * Optional synchronous fast paths (BlockDevice.tryReadSync/tryWriteSync):
 * timed too, under the op they stand for, when they served the request
 * (returned true) or threw; a false return is followed by the async call,
 * which is timed itself.
 */
export const TIMED_SYNC_CALLS = {
  tryReadSync: 'read',
  tryWriteSync: 'write',
} as const satisfies Partial<Record<keyof BlockDevice, string>>;

export const NBD_LATENCY_METRIC = 'diskless_nbd_device_request_duration_seconds';

export function newNbdLatencyHistogram(buckets: readonly number[] = LATENCY_BUCKETS_SECONDS): Histogram {
  return new Histogram({
    name: NBD_LATENCY_METRIC,
    help: 'Time the block device took per call made for NBD requests (storage only: no network, no queueing), by device call.',
    labelNames: ['op'],
    buckets,
  });
}

// performance.now() is monotonic, sub-microsecond, and allocates nothing (hrtime.bigint() allocates two bigints).
const seconds = (startMs: number): number => (performance.now() - startMs) / 1000;

/** A view of `device` whose timed calls are observed into `histogram`. */
export function timeDevice(device: BlockDevice, histogram: Histogram): BlockDevice {
  const wrapped = new Map<PropertyKey, unknown>();
  for (const [method, op] of Object.entries(TIMED_DEVICE_CALLS)) {
    const labels = Object.freeze({ op });
    const original = (device as unknown as Record<string, unknown>)[method];
    if (typeof original !== 'function') continue;
    wrapped.set(method, (...args: unknown[]) => {
      const start = performance.now();
      const p = (original as (...a: unknown[]) => Promise<unknown>).apply(device, args);
      const done = (): void => histogram.observe(labels, seconds(start));
      // Observe on settle without changing what the caller gets back (same promise, same rejection).
      p.then(done, done);
      return p;
    });
  }
  for (const [method, op] of Object.entries(TIMED_SYNC_CALLS)) {
    const labels = Object.freeze({ op });
    const original = (device as unknown as Record<string, unknown>)[method];
    if (typeof original !== 'function') continue;
    wrapped.set(method, (...args: unknown[]) => {
      const start = performance.now();
      let served = true;
      try {
        served = (original as (...a: unknown[]) => boolean).apply(device, args);
        return served;
      } finally {
        if (served) histogram.observe(labels, seconds(start));
      }
    });
  }
  const bound = new Map<PropertyKey, unknown>();
  return new Proxy(device, {
    get(target, prop) {
      const w = wrapped.get(prop);
      if (w) return w;
      const v = Reflect.get(target, prop, target);
      if (typeof v !== 'function') return v;
      let b = bound.get(prop);
      if (!b || (b as { original?: unknown }).original !== v) {
        const f = (v as (...a: unknown[]) => unknown).bind(target) as ((...a: unknown[]) => unknown) & { original?: unknown };
        f.original = v;
        bound.set(prop, f);
        b = f;
      }
      return b;
    },
  });
}

/** An ExportResolver whose opened devices are timed (see the note at the top). */
export class TimedExportResolver implements ExportResolver {
  constructor(
    private readonly inner: ExportResolver,
    readonly histogram: Histogram = newNbdLatencyHistogram(),
  ) {}

  list(peer: Peer): Promise<ExportInfo[]> {
    return this.inner.list(peer);
  }

  async open(name: string, peer: Peer): Promise<OpenedExport> {
    const opened = await this.inner.open(name, peer);
    // Anything else the resolver attached is kept; release() runs on the original.
    return { ...opened, device: timeDevice(opened.device, this.histogram), release: () => opened.release() };
  }
}
