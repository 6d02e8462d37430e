/**
 * A FIFO lock over ranges of cluster numbers. A request may start when no
 * request that arrived before it covers an overlapping range: requests on
 * different clusters run in parallel, overlapping ones run one after the
 * other in arrival order (so a later write to a block always lands after an
 * earlier one, as a client that waited for neither may still expect).
 *
 * Cost is O(in-flight requests) per acquire and release; the NBD server
 * bounds in-flight requests per connection, so this stays small.
 */

interface Entry {
  first: number;
  last: number;
  running: boolean;
  start: () => void;
}

export type Release = () => void;

export class RangeLock {
  /** Running and waiting requests, in arrival order. */
  private readonly queue: Entry[] = [];

  /** Resolves once [first, last] (inclusive) is held; call the returned function exactly once to release. */
  acquire(first: number, last: number): Promise<Release> {
    return new Promise<Release>((resolve) => {
      const entry: Entry = { first, last, running: false, start: () => undefined };
      let released = false;
      const release: Release = () => {
        if (released) return;
        released = true;
        const i = this.queue.indexOf(entry);
        if (i >= 0) this.queue.splice(i, 1);
        this.wake();
      };
      entry.start = () => resolve(release);
      this.queue.push(entry);
      if (!this.blocked(this.queue.length - 1)) {
        entry.running = true;
        entry.start();
      }
    });
  }

  /**
   * True when no request holds or waits for a range overlapping
   * [first, last]: a request done at once, without awaiting anything,
   * is then ordered exactly as if it had acquired and released the range.
   */
  isFree(first: number, last: number): boolean {
    const q = this.queue;
    for (let i = 0; i < q.length; i++) {
      const o = q[i]!;
      if (o.first <= last && first <= o.last) return false;
    }
    return true;
  }

  /** Requests holding or waiting for a range (for tests and metrics). */
  get size(): number {
    return this.queue.length;
  }

  private blocked(index: number): boolean {
    const e = this.queue[index]!;
    for (let i = 0; i < index; i++) {
      const o = this.queue[i]!;
      if (o.first <= e.last && e.first <= o.last) return true;
    }
    return false;
  }

  private wake(): void {
    for (let i = 0; i < this.queue.length; i++) {
      const e = this.queue[i]!;
      if (!e.running && !this.blocked(i)) {
        e.running = true;
        e.start();
      }
    }
  }
}
