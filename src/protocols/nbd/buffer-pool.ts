/**
 * Read buffers kept for reuse. A read allocates its buffer here, the device
 * reads straight into it, the socket writes it, and the write callback
 * gives it back; the next read of the same size takes it again instead of
 * allocating (Buffer.allocUnsafe of 4 KiB and more is a fresh allocation
 * each time, and it was the largest cost of a small read after the copy).
 *
 * Only buffers that own their whole memory are kept (allocUnsafeSlow), so a
 * pooled buffer never shares bytes with anything else, and at most
 * `maxBytes` are held. A buffer is given back only once nothing refers to
 * it: the socket has written it, or it was never handed out.
 */
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private held = 0;
  hits = 0;
  misses = 0;

  constructor(
    /** Bytes of idle buffers kept at most; 0 keeps none. */
    private readonly maxBytes: number,
    /** Larger buffers are not pooled. */
    private readonly maxSize: number = 1024 * 1024,
    /** Smaller buffers come from Node's own pool already. */
    private readonly minSize: number = Buffer.poolSize >>> 1,
  ) {}

  get(size: number): Buffer {
    if (size >= this.minSize && size <= this.maxSize && this.maxBytes > 0) {
      const list = this.free.get(size);
      const b = list?.pop();
      if (b) {
        this.held -= size;
        this.hits++;
        return b;
      }
      this.misses++;
      return Buffer.allocUnsafeSlow(size);
    }
    return Buffer.allocUnsafe(size);
  }

  /** Gives a buffer from get() back; anything else is ignored. */
  put(b: Buffer): void {
    const size = b.length;
    if (size < this.minSize || size > this.maxSize || b.byteOffset !== 0 || b.buffer.byteLength !== size) return;
    if (this.held + size > this.maxBytes) return;
    let list = this.free.get(size);
    if (!list) {
      list = [];
      this.free.set(size, list);
    }
    list.push(b);
    this.held += size;
  }

  /** Bytes of idle buffers held now. */
  get heldBytes(): number {
    return this.held;
  }
}
