/**
 * The one interface between block protocols (NBD, later iSCSI) and storage.
 * Sessions validate requests at the boundary (range, flags, permissions)
 * before calling; implementations assert their invariants and raise
 * DisklessError with an errno for conditions the client must hear about.
 *
 * Offsets and lengths are byte counts below Number.MAX_SAFE_INTEGER.
 */

export interface Capabilities {
  /** Writes are refused (read-only export). */
  readOnly: boolean;
  /** flush() makes earlier acknowledged writes durable. */
  flush: boolean;
  /** write(..., { fua: true }) is durable on return. */
  fua: boolean;
  trim: boolean;
  writeZeroes: boolean;
  /** zero(..., { fast: true }) can answer quickly or refuse with ENOTSUP. */
  fastZero: boolean;
  /** extents() reports holes and zeros, not just "all data". */
  extents: boolean;
  cache: boolean;
  /**
   * Several connections to this same device see one consistent view, and a
   * flush on one covers writes completed on all (NBD_FLAG_CAN_MULTI_CONN).
   */
  multiConn: boolean;
}

/** A run of bytes with one allocation state (NBD base:allocation). */
export interface Extent {
  offset: number;
  length: number;
  /** Not allocated in any layer: reads return zeros, space is not used. */
  hole: boolean;
  /** Reads are known to return zeros. */
  zero: boolean;
}

export interface WriteOptions {
  /** Force Unit Access: durable before the call resolves. */
  fua?: boolean;
}

export interface ZeroOptions extends WriteOptions {
  /** The range may be deallocated (NBD: the NO_HOLE flag is absent). */
  mayTrim?: boolean;
  /** Fail with ENOTSUP unless zeroing is faster than writing zeros. */
  fast?: boolean;
}

export interface BlockDevice {
  /** Virtual size in bytes. */
  readonly size: number;
  /** Smallest write that does not need read-modify-write; a power of two. */
  readonly preferredBlockSize: number;
  readonly capabilities: Readonly<Capabilities>;
  /**
   * Names the contents of a device whose bytes never change (an image
   * version): a copy-on-write overlay records its base's identity and
   * refuses to open over a different one. Optional: a device without one
   * is matched by size only.
   */
  readonly identity?: string;

  /** Reads `length` bytes at `offset` into `into` (from its start) and returns it. */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
  /** `data` is the caller's again once the promise settles (servers reuse their buffers). */
  write(offset: number, data: Buffer, options?: WriteOptions): Promise<void>;
  flush(): Promise<void>;
  trim(offset: number, length: number, options?: WriteOptions): Promise<void>;
  zero(offset: number, length: number, options?: ZeroOptions): Promise<void>;
  /** Extents covering at least the first byte of [offset, offset+length), in order, contiguous. */
  extents(offset: number, length: number): Promise<Extent[]>;
  /** Advise that the range will be read soon. */
  cache(offset: number, length: number): Promise<void>;
  close(): Promise<void>;

  /**
   * Optional fast path of read(): reads the range into `into` (from its
   * start) before returning, when the device can do so at once (maps held
   * in memory, data the page cache holds; see sync-io.ts), and returns
   * true. Returns false when it cannot do it now; `into` may then hold
   * anything, and the caller uses read(). Throws what read() would reject
   * with. A caller that gets true has its answer without a promise or a
   * trip through the thread pool.
   */
  tryReadSync?(offset: number, length: number, into: Buffer): boolean;
  /**
   * Optional fast path of write() without FUA: writes `data` before
   * returning and returns true, or returns false having written nothing
   * (the caller then uses write()). Throws what write() would reject with.
   * Ordering is as for write(): a later request never lands under an
   * earlier one still running. The device keeps no reference to `data`.
   */
  tryWriteSync?(offset: number, data: Buffer): boolean;
  /**
   * Optional fast path of extents(): the same answer at once, or undefined
   * when the device cannot give it without waiting for I/O.
   */
  tryExtentsSync?(offset: number, length: number): Extent[] | undefined;
}
