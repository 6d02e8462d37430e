/**
 * Feeds byte fixtures through the NBD client-stream decoder in every way a
 * TCP stream could deliver them: whole, split in two at every offset, one
 * byte at a time, and several fixtures back to back in one chunk. Every
 * delivery must decode to the same frames.
 *
 * feedTransient() delivers them as the session reads a socket into chosen
 * buffers: each read lands in one scratch buffer that is scribbled over
 * once the decoder has released it, or straight into the payload buffer the
 * decoder offers (directTarget), so a frame that kept a view of the input,
 * or bytes the decoder failed to copy, show up as wrong data.
 */
import assert from 'node:assert/strict';
import { OPTIONS } from '../../src/protocols/nbd/constants.js';
import { ClientStreamDecoder, type ClientFrame, type DecoderLimits, type DecoderState } from '../../src/protocols/nbd/decoder.js';

export interface FeedResult {
  frames: ClientFrame[];
  state: DecoderState;
  error?: Error;
  buffered: number;
}

export interface FeedOptions {
  limits?: Partial<DecoderLimits>;
  /** feedTransient: the smallest rest of a payload read straight into its buffer (default 1). */
  directMin?: number;
  /**
   * What the session would do after an option: go on with options, or
   * enter transmission. Default: transmission after NBD_OPT_GO and
   * NBD_OPT_EXPORT_NAME, options otherwise.
   */
  afterOption?: (frame: ClientFrame) => 'option' | 'requests';
}

const DEFAULT_LIMITS: DecoderLimits = { maxOptionPayload: 64 * 1024, maxPayload: 32 * 1024 * 1024 };

function defaultAfterOption(frame: ClientFrame): 'option' | 'requests' {
  if (frame.kind !== 'option') return 'option';
  return frame.option === OPTIONS.NBD_OPT_GO || frame.option === OPTIONS.NBD_OPT_EXPORT_NAME ? 'requests' : 'option';
}

function drainer(d: ClientStreamDecoder, frames: ClientFrame[], options: FeedOptions): () => void {
  const after = options.afterOption ?? defaultAfterOption;
  return (): void => {
    for (;;) {
      const f = d.next();
      if (f === null) return;
      frames.push(f);
      if (f.kind === 'option' || f.kind === 'optionTooBig') {
        if (after(f) === 'requests') d.expectRequests();
        else d.expectOption();
      }
    }
  };
}

/** Pushes each chunk and drains frames after each, as the session does. */
export function feed(chunks: readonly Buffer[], options: FeedOptions = {}): FeedResult {
  const d = new ClientStreamDecoder({ ...DEFAULT_LIMITS, ...options.limits });
  const frames: ClientFrame[] = [];
  const drainFrames = drainer(d, frames, options);
  try {
    for (const c of chunks) {
      d.push(c);
      drainFrames();
    }
  } catch (error) {
    return { frames, state: d.state, error: error as Error, buffered: d.buffered };
  }
  return { frames, state: d.state, buffered: d.buffered };
}

/**
 * Delivers `chunks` as socket reads into chosen buffers (see the top of
 * this file). A read of a chunk goes into the decoder's direct target when
 * it offers one (as much of the chunk as fits; the rest is the next read),
 * else into the scratch buffer, which is pushed, drained, released and then
 * overwritten. Frames are returned with `pooled` removed, to compare with
 * feed()'s.
 */
export function feedTransient(chunks: readonly Buffer[], options: FeedOptions = {}): FeedResult {
  const d = new ClientStreamDecoder({ ...DEFAULT_LIMITS, ...options.limits }, { transientInput: true });
  const frames: ClientFrame[] = [];
  const drainFrames = drainer(d, frames, options);
  const scratch = Buffer.alloc(Math.max(1, ...chunks.map((c) => c.length)));
  const result = (error?: Error): FeedResult => ({
    frames: frames.map((f) => {
      const { pooled: _pooled, ...rest } = f as ClientFrame & { pooled?: boolean };
      return rest as ClientFrame;
    }),
    state: d.state,
    buffered: d.buffered,
    ...(error ? { error } : {}),
  });
  try {
    for (const chunk of chunks) {
      for (let at = 0; at < chunk.length; ) {
        const target = d.directTarget(options.directMin ?? 1);
        if (target) {
          const n = Math.min(target.length, chunk.length - at);
          chunk.copy(target, 0, at, at + n);
          d.receivedDirect(n);
          at += n;
          drainFrames();
          continue;
        }
        const n = chunk.length - at;
        chunk.copy(scratch, 0, at);
        d.push(scratch.subarray(0, n));
        at += n;
        try {
          drainFrames();
        } finally {
          d.release();
          scratch.fill(0xee);
        }
      }
    }
  } catch (error) {
    return result(error as Error);
  }
  return result();
}

/** Every way to deliver `bytes`: whole, in two pieces at each offset, byte by byte. */
export function* deliveries(bytes: Buffer): Generator<Buffer[]> {
  yield [bytes];
  for (let i = 1; i < bytes.length; i++) yield [bytes.subarray(0, i), bytes.subarray(i)];
  yield Array.from({ length: bytes.length }, (_, i) => bytes.subarray(i, i + 1));
}

/**
 * Asserts that `bytes` decodes to the same frames, final state and error
 * (by code) however it is split, and returns that result.
 */
export function assertSplitInvariant(bytes: Buffer, options: FeedOptions = {}): FeedResult {
  const whole = feed([bytes], options);
  const withoutPooled = whole.frames.map((f) => {
    const { pooled: _pooled, ...rest } = f as ClientFrame & { pooled?: boolean };
    return rest;
  });
  for (const chunks of deliveries(bytes)) {
    const where = `split into ${chunks.length} pieces (${chunks.map((c) => c.length).join('+')})`;
    for (const [how, r, frames] of [
      ['owned', feed(chunks, options), whole.frames],
      ['transient', feedTransient(chunks, options), withoutPooled],
    ] as const) {
      assert.deepEqual(r.frames, frames, `frames differ when ${where} (${how} input)`);
      assert.equal(r.state, whole.state, `final state differs when ${where} (${how} input)`);
      assert.equal((r.error as { code?: string } | undefined)?.code, (whole.error as { code?: string } | undefined)?.code, `error differs when ${where} (${how} input)`);
      assert.equal(r.buffered, whole.buffered, `buffered bytes differ when ${where} (${how} input)`);
    }
  }
  return whole;
}
