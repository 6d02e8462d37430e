/**
 * Feeds byte fixtures through the NBD client-stream decoder in every way a
 * TCP stream could deliver them: whole, split in two at every offset, one
 * byte at a time, and several fixtures back to back in one chunk. Every
 * delivery must decode to the same frames.
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

/** Pushes each chunk and drains frames after each, as the session does. */
export function feed(chunks: readonly Buffer[], options: FeedOptions = {}): FeedResult {
  const d = new ClientStreamDecoder({ ...DEFAULT_LIMITS, ...options.limits });
  const after = options.afterOption ?? defaultAfterOption;
  const frames: ClientFrame[] = [];
  const drainFrames = (): void => {
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
  for (const chunks of deliveries(bytes)) {
    const r = feed(chunks, options);
    const where = `split into ${chunks.length} pieces (${chunks.map((c) => c.length).join('+')})`;
    assert.deepEqual(r.frames, whole.frames, `frames differ when ${where}`);
    assert.equal(r.state, whole.state, `final state differs when ${where}`);
    assert.equal((r.error as { code?: string } | undefined)?.code, (whole.error as { code?: string } | undefined)?.code, `error differs when ${where}`);
    assert.equal(r.buffered, whole.buffered, `buffered bytes differ when ${where}`);
  }
  return whole;
}
