/**
 * The in-memory allocation map of an overlay: 2 bits per cluster, packed
 * four to a byte exactly as on disk (cluster i in byte i >> 2, bits
 * 2 * (i & 3)), so a map page is written from memory without conversion.
 * Changes mark their 4 KiB page dirty; a flush takes a copy of the dirty
 * pages (see overlay.ts for why the copy is taken before the data sync).
 */

export const ClusterState = {
  /** Never written: read through to the base. */
  BASE: 0,
  /** Written: the data file holds the whole cluster. */
  DATA: 1,
  /** Zeroed without permission to deallocate (NBD NO_HOLE): reads zeros, reported zero, not a hole. */
  ZERO: 2,
  /** Trimmed, or zeroed with permission to deallocate: reads zeros, reported hole and zero. */
  HOLE: 3,
} as const;
export type ClusterState = (typeof ClusterState)[keyof typeof ClusterState];

/** Map pages are this many bytes: 16384 clusters each. */
export const MAP_PAGE_SIZE = 4096;
export const CLUSTERS_PER_PAGE = MAP_PAGE_SIZE * 4;

/** DATA entries in each possible map byte. */
const DATA_IN_BYTE = (() => {
  const t = new Uint8Array(256);
  for (let b = 0; b < 256; b++) {
    let n = 0;
    for (let k = 0; k < 4; k++) if (((b >> (2 * k)) & 3) === ClusterState.DATA) n++;
    t[b] = n;
  }
  return t;
})();

export interface PageCopy {
  page: number;
  bytes: Buffer;
}

export class ClusterMap {
  /** Packed entries; length is a whole number of pages. */
  readonly bytes: Buffer;
  private readonly dirty = new Set<number>();
  private data = 0;

  constructor(readonly clusters: number, bytes?: Buffer) {
    const pages = Math.max(1, Math.ceil(clusters / CLUSTERS_PER_PAGE));
    if (bytes) {
      if (bytes.length !== pages * MAP_PAGE_SIZE) throw new RangeError(`map of ${bytes.length} bytes for ${clusters} clusters`);
      this.bytes = bytes;
      // Entries past the last cluster are padding; ignore whatever they hold.
      for (let i = 0; i < clusters >> 2; i++) this.data += DATA_IN_BYTE[bytes[i]!]!;
      for (let c = clusters & ~3; c < clusters; c++) if (this.get(c) === ClusterState.DATA) this.data++;
    } else {
      this.bytes = Buffer.alloc(pages * MAP_PAGE_SIZE);
    }
  }

  static pagesFor(clusters: number): number {
    return Math.max(1, Math.ceil(clusters / CLUSTERS_PER_PAGE));
  }

  get(i: number): ClusterState {
    return ((this.bytes[i >> 2]! >> ((i & 3) << 1)) & 3) as ClusterState;
  }

  set(i: number, s: ClusterState): void {
    const byte = i >> 2;
    const shift = (i & 3) << 1;
    const old = this.bytes[byte]!;
    const was = (old >> shift) & 3;
    if (was === s) return;
    this.bytes[byte] = (old & ~(3 << shift)) | (s << shift);
    if (was === ClusterState.DATA) this.data--;
    if (s === ClusterState.DATA) this.data++;
    this.dirty.add(Math.floor(byte / MAP_PAGE_SIZE));
  }

  /** Sets clusters first..last (inclusive), a whole byte at a time where it can. */
  setRange(first: number, last: number, s: ClusterState): void {
    let i = first;
    while (i <= last && (i & 3) !== 0) this.set(i++, s);
    const fill = s * 0x55;
    while (i + 3 <= last) {
      const byte = i >> 2;
      const old = this.bytes[byte]!;
      if (old !== fill) {
        this.data += (s === ClusterState.DATA ? 4 : 0) - DATA_IN_BYTE[old]!;
        this.bytes[byte] = fill;
        this.dirty.add(Math.floor(byte / MAP_PAGE_SIZE));
      }
      i += 4;
    }
    while (i <= last) this.set(i++, s);
  }

  /** Clusters in state DATA among first..last (inclusive). */
  dataIn(first: number, last: number): number {
    let n = 0;
    let i = first;
    while (i <= last && (i & 3) !== 0) if (this.get(i++) === ClusterState.DATA) n++;
    for (; i + 3 <= last; i += 4) n += DATA_IN_BYTE[this.bytes[i >> 2]!]!;
    for (; i <= last; i++) if (this.get(i) === ClusterState.DATA) n++;
    return n;
  }

  /** Clusters in state DATA. */
  get dataClusters(): number {
    return this.data;
  }

  get dirtyPages(): number {
    return this.dirty.size;
  }

  /** Copies of the dirty pages, in page order; the dirty set is cleared. */
  takeDirty(): PageCopy[] {
    const pages = [...this.dirty].sort((a, b) => a - b);
    this.dirty.clear();
    return pages.map((page) => ({
      page,
      bytes: Buffer.from(this.bytes.subarray(page * MAP_PAGE_SIZE, (page + 1) * MAP_PAGE_SIZE)),
    }));
  }

  /** Marks pages dirty again (their write failed); the next flush writes their current contents. */
  redirty(pages: Iterable<number>): void {
    for (const p of pages) this.dirty.add(p);
  }
}
