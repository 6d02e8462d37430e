import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertSplitInvariant, feed, feedTransient } from '../../../test/helpers/nbd-split.js';
import { encodeClientFlags, encodeInfoRequest, encodeMetaContextRequest, encodeOption, encodeRequestHeader } from './codec.js';
import { COMMANDS, OPTIONS } from './constants.js';
import { ClientStreamDecoder, DECODER_STATES } from './decoder.js';
import { NbdFramingError } from './errors.js';

const flags = encodeClientFlags(3);
const sr = encodeOption(OPTIONS.NBD_OPT_STRUCTURED_REPLY);
const setMeta = encodeOption(OPTIONS.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ name: 'disk', queries: ['base:allocation'] }));
const go = encodeOption(OPTIONS.NBD_OPT_GO, encodeInfoRequest({ name: 'disk', infoRequests: [3, 1] }));
const req = (type: number, cookie: bigint, offset: number, length: number, f = 0): Buffer => encodeRequestHeader({ type, cookie, offset, length, flags: f });
const writeData = Buffer.from('0123456789abcdef'.repeat(3));
const write = Buffer.concat([req(COMMANDS.NBD_CMD_WRITE, 2n, 4096, writeData.length, 1), writeData]);
const read = req(COMMANDS.NBD_CMD_READ, 1n, 0, 512);
const disc = req(COMMANDS.NBD_CMD_DISC, 9n, 0, 0);

test('each fixture decodes the same at every split', () => {
  assertSplitInvariant(flags);
  assertSplitInvariant(Buffer.concat([flags, sr]));
  assertSplitInvariant(Buffer.concat([flags, go]));
  assertSplitInvariant(Buffer.concat([flags, go, read]));
  assertSplitInvariant(Buffer.concat([flags, go, write]));
  assertSplitInvariant(Buffer.concat([flags, go, disc]));
});

test('a whole session in one chunk and at every split: frames in order', () => {
  const bytes = Buffer.concat([flags, sr, setMeta, go, read, write, req(COMMANDS.NBD_CMD_WRITE, 3n, 0, 0), read, disc, Buffer.from('junk after disc')]);
  const r = assertSplitInvariant(bytes);
  assert.equal(r.error, undefined);
  assert.deepEqual(
    r.frames.map((f) => f.kind),
    ['clientFlags', 'option', 'option', 'option', 'request', 'request', 'request', 'request', 'request'],
  );
  assert.deepEqual(r.frames[0], { kind: 'clientFlags', flags: 3 });
  const goFrame = r.frames[3] as { option: number; payload: Buffer };
  assert.equal(goFrame.option, OPTIONS.NBD_OPT_GO);
  assert.deepEqual(goFrame.payload, go.subarray(16));
  const w = r.frames[5] as { type: number; flags: number; cookie: bigint; offset: number; length: number; payload: Buffer };
  assert.equal(w.type, COMMANDS.NBD_CMD_WRITE);
  assert.equal(w.flags, 1);
  assert.equal(w.cookie, 2n);
  assert.equal(w.offset, 4096);
  assert.deepEqual(w.payload, writeData);
  const empty = r.frames[6] as { payload?: Buffer; length: number };
  assert.equal(empty.length, 0);
  assert.equal(empty.payload, undefined);
  assert.equal(r.state, DECODER_STATES.DISCONNECTED);
  assert.equal(r.buffered, 0);
});

test('partial frames are kept and the state says what is awaited', () => {
  const d = new ClientStreamDecoder({ maxOptionPayload: 1024, maxPayload: 1024 });
  assert.equal(d.state, 'CLIENT_FLAGS');
  d.push(flags.subarray(0, 3));
  assert.equal(d.next(), null);
  assert.equal(d.buffered, 3);
  d.push(flags.subarray(3));
  assert.deepEqual(d.next(), { kind: 'clientFlags', flags: 3 });
  assert.equal(d.state, 'OPTION_HEADER');
  d.push(go.subarray(0, 20));
  assert.equal(d.next(), null);
  assert.equal(d.state, 'OPTION_PAYLOAD');
  d.push(go.subarray(20));
  assert.equal(d.next()?.kind, 'option');
  assert.equal(d.state, 'OPTION_PENDING');
  // Nothing is decoded while the session answers the option.
  d.push(read);
  assert.equal(d.next(), null);
  assert.equal(d.buffered, read.length);
  d.expectRequests();
  assert.equal(d.next()?.kind, 'request');
  d.push(write.subarray(0, 30));
  assert.equal(d.next(), null);
  assert.equal(d.state, 'WRITE_PAYLOAD');
  d.push(write.subarray(30));
  assert.equal(d.next()?.kind, 'request');
  assert.equal(d.state, 'REQUEST_HEADER');
  assert.throws(() => d.expectOption(), /REQUEST_HEADER/);
});

test('wrong magics are framing errors; the decoder then ignores input', () => {
  const badOpt = Buffer.from(go);
  badOpt[7] ^= 1;
  const r1 = assertSplitInvariant(Buffer.concat([flags, badOpt]));
  assert.ok(r1.error instanceof NbdFramingError);
  assert.equal((r1.error as NbdFramingError).code, 'NBD_BAD_MAGIC');
  assert.equal(r1.state, 'FAILED');

  const badReq = Buffer.from(read);
  badReq[0] = 0x26;
  const r2 = assertSplitInvariant(Buffer.concat([flags, go, read, badReq, read]));
  assert.equal((r2.error as NbdFramingError).code, 'NBD_BAD_MAGIC');
  assert.equal(r2.frames.filter((f) => f.kind === 'request').length, 1);

  // An option sent after NBD_OPT_GO is read as a request: wrong magic.
  const r3 = feed([Buffer.concat([flags, go, sr, sr])]);
  assert.equal((r3.error as NbdFramingError).code, 'NBD_BAD_MAGIC');

  const d = new ClientStreamDecoder({ maxOptionPayload: 1024, maxPayload: 1024 });
  d.push(Buffer.alloc(20, 0xff));
  d.next();
  assert.throws(() => d.next(), NbdFramingError);
  assert.equal(d.state, 'FAILED');
  d.push(Buffer.alloc(100));
  assert.equal(d.next(), null);
  assert.equal(d.buffered, 0);
  assert.ok(d.ignoredBytes >= 100);
});

test('an option over maxOptionPayload is skipped without buffering and the next one parses', () => {
  const big = encodeOption(OPTIONS.NBD_OPT_LIST, Buffer.alloc(300, 0xaa));
  const bytes = Buffer.concat([flags, big, sr]);
  const r = assertSplitInvariant(bytes, { limits: { maxOptionPayload: 100 } });
  assert.deepEqual(r.frames[1], { kind: 'optionTooBig', option: OPTIONS.NBD_OPT_LIST, length: 300 });
  assert.equal(r.frames[2]?.kind, 'option');
  // While skipping, at most one chunk is held.
  const d = new ClientStreamDecoder({ maxOptionPayload: 100, maxPayload: 1024 });
  d.push(flags);
  d.next();
  d.push(big.subarray(0, 16));
  assert.equal(d.next(), null);
  assert.equal(d.state, 'OPTION_DISCARD');
  d.push(big.subarray(16, 200));
  assert.equal(d.next(), null);
  assert.equal(d.buffered, 0);
});

test('a write over maxPayload but within 32 MiB is consumed; the stream stays in step', () => {
  const payload = Buffer.alloc(5000, 1);
  const over = Buffer.concat([req(COMMANDS.NBD_CMD_WRITE, 5n, 0, payload.length), payload]);
  const bytes = Buffer.concat([flags, go, over, read]);
  const r = feed([bytes], { limits: { maxPayload: 4096 } });
  assert.equal(r.error, undefined);
  assert.deepEqual(r.frames.map((f) => f.kind), ['clientFlags', 'option', 'oversizeWrite', 'request']);
  assert.equal((r.frames[2] as { cookie: bigint }).cookie, 5n);
  assert.equal((r.frames[3] as { type: number }).type, COMMANDS.NBD_CMD_READ);
  // Every split gives the same; splitting 5 kB byte by byte is quick enough.
  assertSplitInvariant(bytes, { limits: { maxPayload: 4096 } });
});

test('a write over both maxPayload and 32 MiB closes the connection before any data is read', () => {
  const header = req(COMMANDS.NBD_CMD_WRITE, 5n, 0, 32 * 1024 * 1024 + 1);
  const r = assertSplitInvariant(Buffer.concat([flags, go, header]), { limits: { maxPayload: 4096 } });
  assert.equal((r.error as NbdFramingError).code, 'NBD_PAYLOAD_TOO_LARGE');
  // With a larger maxPayload, the limit follows it.
  const r2 = feed([Buffer.concat([flags, go, req(COMMANDS.NBD_CMD_WRITE, 5n, 0, 64 * 1024 * 1024 + 1)])], { limits: { maxPayload: 64 * 1024 * 1024 } });
  assert.equal((r2.error as NbdFramingError).code, 'NBD_PAYLOAD_TOO_LARGE');
  const r3 = feed([Buffer.concat([flags, go, req(COMMANDS.NBD_CMD_WRITE, 5n, 0, 0xffffffff)])]);
  assert.equal((r3.error as NbdFramingError).code, 'NBD_PAYLOAD_TOO_LARGE');
});

test('reads and other commands with huge lengths carry no payload and are not framing errors', () => {
  const r = assertSplitInvariant(Buffer.concat([flags, go, req(COMMANDS.NBD_CMD_READ, 1n, 0, 0xffffffff), req(COMMANDS.NBD_CMD_TRIM, 2n, 0, 0xffffffff), read]));
  assert.equal(r.error, undefined);
  assert.equal(r.frames.length, 5);
});

test('after NBD_CMD_DISC all further bytes are dropped and counted', () => {
  const d = new ClientStreamDecoder({ maxOptionPayload: 1024, maxPayload: 1024 });
  d.push(Buffer.concat([flags, go]));
  d.next();
  d.next();
  d.expectRequests();
  d.push(Buffer.concat([disc, read, Buffer.alloc(10)]));
  assert.equal((d.next() as { type: number }).type, COMMANDS.NBD_CMD_DISC);
  assert.equal(d.state, 'DISCONNECTED');
  assert.equal(d.next(), null);
  d.push(Buffer.alloc(5));
  assert.equal(d.ignoredBytes, read.length + 15);
  assert.equal(d.buffered, 0);
});

test('zero-length option payloads and reads split in odd places', () => {
  const abort = encodeOption(OPTIONS.NBD_OPT_ABORT);
  const r = assertSplitInvariant(Buffer.concat([flags, abort, sr, abort]));
  assert.deepEqual(r.frames.slice(1).map((f) => (f as { option: number }).option), [2, 8, 2]);
  assert.ok(r.frames.slice(1).every((f) => (f as { payload: Buffer }).payload.length === 0));
});

test('transient input: a large write payload is read straight into its buffer, after any bytes that came with the header', () => {
  const data = Buffer.alloc(100_000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 13) & 0xff;
  const big = Buffer.concat([req(COMMANDS.NBD_CMD_WRITE, 7n, 0, data.length), data]);
  const bytes = Buffer.concat([flags, go, read, big, read]);
  const owned = feed([bytes]);
  // Reads of assorted sizes, some ending inside the header, some inside the payload.
  for (const size of [1, 7, 32, 100, 4096, 65536, bytes.length]) {
    const chunks: Buffer[] = [];
    for (let at = 0; at < bytes.length; at += size) chunks.push(bytes.subarray(at, at + size));
    for (const directMin of [1, 16 * 1024]) {
      const r = feedTransient(chunks, { directMin });
      assert.equal(r.error, undefined);
      assert.deepEqual(r.frames.map((f) => f.kind), owned.frames.map((f) => f.kind));
      assert.deepEqual((r.frames[3] as { payload: Buffer }).payload, data, `reads of ${size}, directMin ${directMin}`);
    }
  }

  const pool: Buffer[] = [];
  const d = new ClientStreamDecoder({ maxOptionPayload: 1024, maxPayload: 1 << 20 }, { transientInput: true, allocate: (n) => (pool.push(Buffer.alloc(n)), pool[pool.length - 1]!) });
  d.push(Buffer.concat([flags, go]));
  d.next();
  d.next();
  d.expectRequests();
  d.release();
  // Nothing is offered while other bytes are buffered or no write payload is awaited.
  assert.equal(d.directTarget(), null);
  d.push(big.subarray(0, 36)); // the 28-byte header and 8 bytes of data
  assert.equal(d.next(), null);
  assert.equal(d.directTarget(1 << 20), null, 'less than asked for remains');
  const target = d.directTarget(1024)!;
  assert.equal(target.length, data.length - 8);
  assert.equal(target.buffer, pool[0]!.buffer, 'the target is the payload buffer the allocator gave');
  data.copy(target, 0, 8, 5008);
  d.receivedDirect(5000);
  assert.equal(d.next(), null);
  assert.throws(() => d.receivedDirect(data.length), /cannot take/, 'a read longer than the target is a bug, not data');
  const rest = d.directTarget()!;
  data.copy(rest, 0, 5008);
  d.receivedDirect(rest.length);
  const frame = d.next() as { payload: Buffer; pooled?: boolean };
  assert.deepEqual(frame.payload, data);
  assert.equal(frame.pooled, true);
  assert.equal(d.directTarget(), null);
});

test('transient input: fail() drops a payload being filled, and bytes read into it later are ignored', () => {
  const d = new ClientStreamDecoder({ maxOptionPayload: 1024, maxPayload: 1 << 20 }, { transientInput: true });
  d.push(Buffer.concat([flags, go, req(COMMANDS.NBD_CMD_WRITE, 1n, 0, 50_000)]));
  d.next();
  d.next();
  d.expectRequests();
  assert.equal(d.next(), null);
  d.release();
  const target = d.directTarget()!;
  assert.equal(target.length, 50_000);
  d.receivedDirect(1000);
  d.fail();
  assert.equal(d.directTarget(), null);
  // A read that was already aimed at the payload still completes: counted, not decoded.
  d.receivedDirect(2000);
  assert.equal(d.next(), null);
  assert.equal(d.ignoredBytes, 3000);
});
