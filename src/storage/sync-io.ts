/**
 * Synchronous file I/O on the event loop, for requests the page cache can
 * answer at once, and the gate that keeps it from stalling the process when
 * it cannot.
 *
 * Why. A block request is mostly small reads and writes of data the page
 * cache already holds (the golden image all clients share, a client's own
 * overlay). Measured on the 2-core VM of bench/nbd (Node 20): a 4 KiB pread
 * from the page cache costs about 5 us of CPU done synchronously, about
 * 13 us through libuv's thread pool with a callback, and about 34 us through
 * a FileHandle promise (the hand-off to a worker thread, its wake-up, the
 * completion's wake-up of the event loop, the promise jobs). With four
 * buffered 1 MiB writes to one file in flight at once the kernel managed
 * about a tenth of what one at a time reached (the writers contend inside
 * the file system), so the event loop writing them one after the other is
 * also the faster order. The synchronous paths (BlockDevice.tryReadSync,
 * tryWriteSync) serve those requests in the same turn that decoded them.
 *
 * The risk is a read the page cache cannot answer, or a write the kernel
 * throttles (dirty page limits): done synchronously it stops every
 * connection of the process for as long as the disk takes. SyncIoGate
 * bounds that. Every synchronous call is timed; a call slower than
 * `slowMs` plus `slowMsPerMiB` for its size counts as slow, and after
 * `slowStreak` slow calls in a row the gate closes for `backoffMs`: callers
 * then use the thread pool (the asynchronous path, which is always there)
 * until it opens again and tries once more. A lone slow call (the process
 * was descheduled mid-call on a busy host) does not close it. Requests
 * larger than `maxBytes` always take the thread pool, so one request never
 * holds the event loop for long.
 */
import { readSync, writeSync, writevSync } from 'node:fs';
import { writeCalls } from './file-io.js';

export interface SyncIoPolicy {
  /** Largest request done synchronously (bytes); 0 turns synchronous I/O off. */
  maxBytes: number;
  /** A call taking longer than this (plus slowMsPerMiB for its size) is slow. */
  slowMs: number;
  slowMsPerMiB: number;
  /** Slow calls in a row that close the gate. */
  slowStreak: number;
  /** How long a closed gate stays closed. */
  backoffMs: number;
}

/**
 * Chosen by measurement (bench/nbd). A page-cache hit of 4 KiB takes a few
 * microseconds and of 1 MiB a few hundred; a read from the virtual disk of
 * the bench VM takes from 0.1 ms up. 1 MiB covers the requests clients make
 * (Linux sends at most 128 KiB to 512 KiB per request, fio's sequential job
 * 1 MiB) while a 32 MiB request goes to the thread pool.
 */
export const DEFAULT_SYNC_IO: Readonly<SyncIoPolicy> = Object.freeze({
  maxBytes: 1024 * 1024,
  slowMs: 1,
  slowMsPerMiB: 2,
  // Three in a row: one or two slow calls are a busy host descheduling the
  // process; three are a disk the page cache is not hiding.
  slowStreak: 3,
  backoffMs: 1000,
});

const MiB = 1024 * 1024;

export class SyncIoGate {
  private streak = 0;
  private closedUntil = 0;
  /** Times the gate closed (for tests and logs). */
  closings = 0;

  constructor(
    readonly policy: Readonly<SyncIoPolicy> = DEFAULT_SYNC_IO,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** True when a request of `bytes` may be done synchronously now. */
  allows(bytes: number): boolean {
    if (bytes > this.policy.maxBytes) return false;
    if (this.closedUntil === 0) return true;
    if (this.now() < this.closedUntil) return false;
    this.closedUntil = 0;
    return true;
  }

  /** The time to pass to done(). */
  start(): number {
    return this.now();
  }

  /** Records a synchronous call of `bytes` that started at `started`. */
  done(started: number, bytes: number): void {
    const elapsed = this.now() - started;
    const p = this.policy;
    if (elapsed <= p.slowMs + (p.slowMsPerMiB * bytes) / MiB) {
      this.streak = 0;
      return;
    }
    if (++this.streak >= p.slowStreak) {
      this.streak = 0;
      this.closedUntil = this.now() + p.backoffMs;
      this.closings++;
    }
  }

  /** Whether the gate is closed now (for tests and metrics). */
  get closed(): boolean {
    return this.closedUntil !== 0 && this.now() < this.closedUntil;
  }
}

/**
 * Reads exactly `length` bytes at `position` into `buf` at `offset`,
 * synchronously; past the end of the file reads zeros (as readFully).
 */
export function readFullySync(fd: number, buf: Buffer, offset: number, length: number, position: number): void {
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, offset + done, length - done, position + done);
    if (n === 0) {
      buf.fill(0, offset + done, offset + length);
      return;
    }
    done += n;
  }
}

/** Writes the buffers back to back from `position`, synchronously, in the calls writeCalls() makes, looping over short writes. */
export function writevFullySync(fd: number, bufs: readonly Buffer[], position: number): void {
  for (const call of writeCalls(bufs, position)) {
    if (call.bufs.length === 1) {
      writeFullySync(fd, call.bufs[0]!, call.position);
      continue;
    }
    const written = writevSync(fd, call.bufs, call.position);
    if (written === call.bytes) continue;
    let skip = written;
    let pos = call.position;
    for (const b of call.bufs) {
      if (skip >= b.length) {
        skip -= b.length;
        pos += b.length;
        continue;
      }
      writeFullySync(fd, b.subarray(skip), pos + skip);
      pos += b.length;
      skip = 0;
    }
  }
}

function writeFullySync(fd: number, buf: Buffer, position: number): void {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done, position + done);
}
