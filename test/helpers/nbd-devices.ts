/**
 * Block devices for NBD tests: a wrapper that records every call, can
 * change the capabilities it reports, and can delay or fail any call.
 */
import type { BlockDevice, Capabilities, Extent, WriteOptions, ZeroOptions } from '../../src/storage/block-device.js';

export type Op = 'read' | 'write' | 'flush' | 'trim' | 'zero' | 'extents' | 'cache';

export interface Call {
  op: Op;
  offset?: number;
  length?: number;
  options?: WriteOptions | ZeroOptions;
}

/** Runs before each call reaches the inner device; may wait or throw. */
export type Hook = (call: Call) => void | Promise<void>;

export class HookedDevice implements BlockDevice {
  readonly calls: Call[] = [];
  readonly capabilities: Readonly<Capabilities>;
  hook: Hook | null;
  /** Calls started and not finished. */
  active = 0;
  maxActive = 0;

  constructor(
    readonly inner: BlockDevice,
    options: { capabilities?: Partial<Capabilities>; hook?: Hook } = {},
  ) {
    this.capabilities = Object.freeze({ ...inner.capabilities, ...options.capabilities });
    this.hook = options.hook ?? null;
  }

  get size(): number {
    return this.inner.size;
  }

  get preferredBlockSize(): number {
    return this.inner.preferredBlockSize;
  }

  private async run<T>(call: Call, fn: () => Promise<T>): Promise<T> {
    this.calls.push(call);
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      if (this.hook) await this.hook(call);
      return await fn();
    } finally {
      this.active--;
    }
  }

  read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    return this.run({ op: 'read', offset, length }, () => this.inner.read(offset, length, into));
  }

  write(offset: number, data: Buffer, options?: WriteOptions): Promise<void> {
    return this.run({ op: 'write', offset, length: data.length, ...(options ? { options } : {}) }, () => this.inner.write(offset, data, options));
  }

  flush(): Promise<void> {
    return this.run({ op: 'flush' }, () => this.inner.flush());
  }

  trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return this.run({ op: 'trim', offset, length, ...(options ? { options } : {}) }, () => this.inner.trim(offset, length, options));
  }

  zero(offset: number, length: number, options?: ZeroOptions): Promise<void> {
    return this.run({ op: 'zero', offset, length, ...(options ? { options } : {}) }, () => this.inner.zero(offset, length, options));
  }

  extents(offset: number, length: number): Promise<Extent[]> {
    return this.run({ op: 'extents', offset, length }, () => this.inner.extents(offset, length));
  }

  cache(offset: number, length: number): Promise<void> {
    return this.run({ op: 'cache', offset, length }, () => this.inner.cache(offset, length));
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  count(op: Op): number {
    return this.calls.filter((c) => c.op === op).length;
  }
}

/** A latch tests open by hand: calls wait on it until open() or forever. */
export class Gate {
  private waiters: (() => void)[] = [];
  isOpen = false;
  waiting = 0;

  wait(): Promise<void> {
    if (this.isOpen) return Promise.resolve();
    this.waiting++;
    return new Promise((r) => this.waiters.push(r));
  }

  open(): void {
    this.isOpen = true;
    this.waiting = 0;
    for (const w of this.waiters.splice(0)) w();
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 5 ms until true, failing after `timeoutMs`. */
export async function until(cond: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}
