import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeChunkPayload,
  decodeClientFlags,
  decodeClientString,
  decodeExportNameReply,
  decodeInfo,
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  decodeOptionReplyHeader,
  decodeRepMetaContext,
  decodeReplyHeader,
  decodeRepServer,
  decodeRequestHeader,
  decodeServerGreeting,
  encodeBlockStatusChunk,
  encodeClientFlags,
  encodeErrorChunk,
  encodeErrorMessage,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoRequest,
  encodeInfoString,
  encodeMetaContextRequest,
  encodeOffsetDataHeader,
  encodeOffsetHoleChunk,
  encodeOption,
  encodeOptionReply,
  encodeRepMetaContext,
  encodeRepServer,
  encodeRequestHeader,
  encodeServerGreeting,
  encodeSimpleReplyHeader,
  encodeStructuredReplyHeader,
  readU64,
  writeU64,
} from './codec.js';
import { COMMANDS, ERRORS, INFO_TYPES, OPTIONS, REPLY_TYPES, STRUCTURED_REPLY_TYPES } from './constants.js';
import { NbdError, NbdOptionError } from './errors.js';

/** Hex with spaces for readability, grouped as proto.md lays the fields out. */
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

test('server greeting: NBDMAGIC, IHAVEOPT, handshake flags', () => {
  const b = encodeServerGreeting(3);
  assert.deepEqual(b, hex('4e42444d41474943 49484156454f5054 0003'));
  assert.deepEqual(decodeServerGreeting(b), { handshakeFlags: 3 });
  assert.equal(codeOf(() => decodeServerGreeting(hex('4e42444d41474943 0000420281861253 0003'))), 'NBD_BAD_REPLY');
  assert.equal(codeOf(() => decodeServerGreeting(b.subarray(0, 17))), 'NBD_TRUNCATED');
});

test('client flags', () => {
  assert.deepEqual(encodeClientFlags(3), hex('00000003'));
  assert.equal(decodeClientFlags(hex('ff 00000002'), 1), 2);
});

test('option header and NBD_OPT_GO payload fixture', () => {
  const payload = encodeInfoRequest({ name: 'disk', infoRequests: [INFO_TYPES.NBD_INFO_BLOCK_SIZE] });
  const opt = encodeOption(OPTIONS.NBD_OPT_GO, payload);
  assert.deepEqual(opt, hex('49484156454f5054 00000007 0000000c  00000004 6469736b 0001 0003'));
  assert.deepEqual(decodeOptionHeader(opt), { magicOk: true, option: 7, length: 12 });
  assert.deepEqual(decodeInfoRequest(opt.subarray(16)), { name: 'disk', infoRequests: [3] });
  assert.equal(decodeOptionHeader(hex('49484156454f5055 00000007 00000000')).magicOk, false);
});

test('NBD_OPT_INFO/GO payload: lengths must add up exactly', () => {
  const invalid = (b: Buffer): void => {
    assert.throws(() => decodeInfoRequest(b), (e: unknown) => e instanceof NbdOptionError && e.replyType === REPLY_TYPES.NBD_REP_ERR_INVALID);
  };
  invalid(hex('00000000 00')); // shorter than 6
  invalid(hex('00000005 6469736b 0000')); // name runs past the data
  invalid(hex('ffffffff 0000')); // huge name length
  invalid(hex('00000000 0002 0003')); // two requests, one present
  invalid(hex('00000000 0001 0003 00')); // trailing byte
  invalid(hex('00000002 ff fe 0000')); // not UTF-8
  invalid(hex('00000002 61 00 0000')); // NUL in name
  assert.deepEqual(decodeInfoRequest(hex('00000000 0000')), { name: '', infoRequests: [] });
});

test('meta context request fixture and validation', () => {
  const b = encodeMetaContextRequest({ name: 'disk', queries: ['base:allocation'] });
  assert.deepEqual(b, hex('00000004 6469736b 00000001 0000000f 626173653a616c6c6f636174696f6e'));
  assert.deepEqual(decodeMetaContextRequest(b), { name: 'disk', queries: ['base:allocation'] });
  assert.deepEqual(decodeMetaContextRequest(hex('00000000 00000000')), { name: '', queries: [] });
  const invalid = (x: Buffer): void => {
    assert.throws(() => decodeMetaContextRequest(x), NbdOptionError);
  };
  invalid(hex('00000000 000000')); // short
  invalid(hex('00000000 00000001')); // a query with no length
  invalid(hex('00000000 00000001 00000005 6261')); // query runs past
  invalid(hex('00000000 ffffffff 00000000')); // count that cannot fit
  invalid(hex('00000000 00000000 00')); // trailing byte
  invalid(hex('00000009 6469736b 00000000')); // name runs past
});

test('client strings: at most 4096 bytes of UTF-8 without NUL', () => {
  assert.equal(decodeClientString(Buffer.from('é'), 'x'), 'é');
  assert.throws(() => decodeClientString(Buffer.alloc(4097, 0x61), 'x'), NbdOptionError);
  assert.equal(decodeClientString(Buffer.alloc(4096, 0x61), 'x').length, 4096);
});

test('option replies: header fixture, NBD_REP_SERVER, NBD_REP_META_CONTEXT, info payloads', () => {
  const ack = encodeOptionReply(OPTIONS.NBD_OPT_GO, REPLY_TYPES.NBD_REP_ACK);
  assert.deepEqual(ack, hex('0003e889045565a9 00000007 00000001 00000000'));
  assert.deepEqual(decodeOptionReplyHeader(ack), { option: 7, type: 1, length: 0 });
  const err = encodeOptionReply(OPTIONS.NBD_OPT_LIST, REPLY_TYPES.NBD_REP_ERR_UNSUP, encodeErrorMessage('no'));
  assert.deepEqual(err, hex('0003e889045565a9 00000003 80000001 00000002 6e6f'));
  assert.equal(codeOf(() => decodeOptionReplyHeader(hex('0003e889045565aa 00000007 00000001 00000000'))), 'NBD_BAD_REPLY');

  const server = encodeRepServer('disk', 'd');
  assert.deepEqual(server, hex('00000004 6469736b 64'));
  assert.deepEqual(decodeRepServer(server), { name: 'disk', description: 'd' });
  assert.deepEqual(decodeRepServer(encodeRepServer('x')), { name: 'x', description: '' });
  assert.equal(codeOf(() => decodeRepServer(hex('00000009 61'))), 'NBD_BAD_REPLY');

  const meta = encodeRepMetaContext(1, 'base:allocation');
  assert.deepEqual(meta, hex('00000001 626173653a616c6c6f636174696f6e'));
  assert.deepEqual(decodeRepMetaContext(meta), { contextId: 1, name: 'base:allocation' });

  const exp = encodeInfoExport(1024 * 1024, 0x0d);
  assert.deepEqual(exp, hex('0000 0000000000100000 000d'));
  assert.deepEqual(decodeInfo(exp), { type: 0, size: 1048576, transmissionFlags: 13 });
  const bs = encodeInfoBlockSize({ minimum: 1, preferred: 4096, maximum: 33554432 });
  assert.deepEqual(bs, hex('0003 00000001 00001000 02000000'));
  assert.deepEqual(decodeInfo(bs), { type: 3, minimum: 1, preferred: 4096, maximum: 33554432 });
  assert.deepEqual(decodeInfo(encodeInfoString(INFO_TYPES.NBD_INFO_NAME, 'disk')), { type: 1, name: 'disk' });
  assert.deepEqual(decodeInfo(encodeInfoString(INFO_TYPES.NBD_INFO_DESCRIPTION, 'a disk')), { type: 2, description: 'a disk' });
  assert.deepEqual(decodeInfo(hex('0009 ab')), { type: 9, unknown: hex('ab') });
  assert.equal(codeOf(() => decodeInfo(hex('0000 00'))), 'NBD_BAD_REPLY');
});

test('export name reply: with and without the 124 zeroes', () => {
  const withZeroes = encodeExportNameReply(4096, 0x0001, false);
  assert.equal(withZeroes.length, 134);
  assert.deepEqual(withZeroes.subarray(0, 10), hex('0000000000001000 0001'));
  assert.ok(withZeroes.subarray(10).every((b) => b === 0));
  const short = encodeExportNameReply(4096, 0x0001, true);
  assert.deepEqual(short, hex('0000000000001000 0001'));
  assert.deepEqual(decodeExportNameReply(short), { size: 4096, transmissionFlags: 1 });
});

test('request header fixture and round trip', () => {
  const b = encodeRequestHeader({ type: COMMANDS.NBD_CMD_READ, flags: 0, cookie: 0x0102030405060708n, offset: 0x1000, length: 0x200 });
  assert.deepEqual(b, hex('25609513 0000 0000 0102030405060708 0000000000001000 00000200'));
  assert.deepEqual(decodeRequestHeader(b), {
    magic: 0x25609513,
    magicOk: true,
    flags: 0,
    type: 0,
    cookie: 0x0102030405060708n,
    offset: 4096,
    length: 512,
  });
  const w = encodeRequestHeader({ type: COMMANDS.NBD_CMD_WRITE_ZEROES, flags: 0x13, cookie: 0xffffffffffffffffn, offset: 2n ** 40n, length: 0xffffffff });
  const d = decodeRequestHeader(w);
  assert.equal(d.flags, 0x13);
  assert.equal(d.type, 6);
  assert.equal(d.cookie, 0xffffffffffffffffn);
  assert.equal(d.offset, 2 ** 40);
  assert.equal(d.length, 0xffffffff);
});

test('64-bit offsets: exact up to MAX_SAFE_INTEGER, never a safe integer above it', () => {
  const b = Buffer.alloc(8);
  writeU64(b, Number.MAX_SAFE_INTEGER, 0);
  assert.deepEqual(b, hex('001fffffffffffff'));
  assert.equal(readU64(b, 0), Number.MAX_SAFE_INTEGER);
  for (const big of [2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n]) {
    writeU64(b, big, 0);
    const v = readU64(b, 0);
    assert.ok(!Number.isSafeInteger(v), `${big} decoded to the safe integer ${v}`);
    assert.ok(v > Number.MAX_SAFE_INTEGER);
  }
  assert.equal(codeOf(() => writeU64(b, -1, 0)), 'NBD_VALUE_OUT_OF_RANGE');
  assert.equal(codeOf(() => writeU64(b, 2 ** 53, 0)), 'NBD_VALUE_OUT_OF_RANGE');
  assert.equal(codeOf(() => writeU64(b, 2n ** 64n, 0)), 'NBD_VALUE_OUT_OF_RANGE');
});

test('simple reply fixture', () => {
  const b = encodeSimpleReplyHeader(ERRORS.NBD_EINVAL, 0x0102030405060708n);
  assert.deepEqual(b, hex('67446698 00000016 0102030405060708'));
  assert.deepEqual(decodeReplyHeader(b), { kind: 'simple', error: 22, cookie: 0x0102030405060708n });
});

test('structured chunks: fixtures for every type the server sends', () => {
  const cookie = 1n;
  const none = encodeStructuredReplyHeader({ flags: 1, type: STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_NONE, cookie, length: 0 });
  assert.deepEqual(none, hex('668e33ef 0001 0000 0000000000000001 00000000'));
  assert.deepEqual(decodeReplyHeader(none), { kind: 'structured', flags: 1, type: 0, cookie: 1n, length: 0 });
  assert.deepEqual(decodeChunkPayload(0, Buffer.alloc(0)), { type: 0 });

  const data = encodeOffsetDataHeader(1, cookie, 4096, 512);
  assert.deepEqual(data, hex('668e33ef 0001 0001 0000000000000001 00000208 0000000000001000'));
  const payload = Buffer.concat([data.subarray(20), Buffer.alloc(512, 7)]);
  const dc = decodeChunkPayload(1, payload) as { offset: number; data: Buffer };
  assert.equal(dc.offset, 4096);
  assert.equal(dc.data.length, 512);

  const hole = encodeOffsetHoleChunk(0, cookie, 8192, 65536);
  assert.deepEqual(hole, hex('668e33ef 0000 0002 0000000000000001 0000000c 0000000000002000 00010000'));
  assert.deepEqual(decodeChunkPayload(2, hole.subarray(20)), { type: 2, offset: 8192, size: 65536 });

  const bs = encodeBlockStatusChunk(1, cookie, 1, [
    { length: 4096, flags: 3 },
    { length: 8192, flags: 0 },
  ]);
  assert.deepEqual(bs, hex('668e33ef 0001 0005 0000000000000001 00000014 00000001 00001000 00000003 00002000 00000000'));
  assert.deepEqual(decodeChunkPayload(5, bs.subarray(20)), { type: 5, contextId: 1, descriptors: [{ length: 4096, flags: 3 }, { length: 8192, flags: 0 }] });

  const err = encodeErrorChunk(1, cookie, ERRORS.NBD_EINVAL, 'bad');
  assert.deepEqual(err, hex('668e33ef 0001 8001 0000000000000001 00000009 00000016 0003 626164'));
  assert.deepEqual(decodeChunkPayload(0x8001, err.subarray(20)), { type: 0x8001, error: 22, message: 'bad' });

  const errOff = encodeErrorChunk(1, cookie, ERRORS.NBD_EIO, 'bad', 4096);
  assert.deepEqual(errOff, hex('668e33ef 0001 8002 0000000000000001 00000011 00000005 0003 626164 0000000000001000'));
  assert.deepEqual(decodeChunkPayload(0x8002, errOff.subarray(20)), { type: 0x8002, error: 5, message: 'bad', offset: 4096 });
});

test('structured chunk payloads with impossible lengths are refused', () => {
  const bad = (type: number, payload: string): void => {
    assert.throws(() => decodeChunkPayload(type, hex(payload)), (e: unknown) => e instanceof NbdError && e.code === 'NBD_BAD_REPLY');
  };
  bad(0, '00');
  bad(1, '0000000000000000');
  bad(2, '0000000000000000 00000001 00');
  bad(5, '00000001 00001000');
  bad(5, '00000001 00001000 00000000 00');
  bad(0x8001, '00000016 00');
  bad(0x8001, '00000016 0005 6162');
  bad(0x8002, '00000016 0000 00000000');
  assert.equal(codeOf(() => decodeReplyHeader(hex('12345678 00000000 0000000000000000'))), 'NBD_BAD_REPLY');
});

test('encoders refuse values that do not fit their field', () => {
  assert.equal(codeOf(() => encodeBlockStatusChunk(0, 1n, 1, [])), 'NBD_VALUE_OUT_OF_RANGE');
  assert.equal(codeOf(() => encodeBlockStatusChunk(0, 1n, 1, [{ length: 0, flags: 0 }])), 'NBD_VALUE_OUT_OF_RANGE');
  assert.equal(codeOf(() => encodeBlockStatusChunk(0, 1n, 1, [{ length: 2 ** 32, flags: 0 }])), 'NBD_VALUE_OUT_OF_RANGE');
  assert.equal(codeOf(() => encodeOffsetHoleChunk(0, 1n, 0, 0)), 'NBD_VALUE_OUT_OF_RANGE');
  assert.equal(codeOf(() => encodeErrorChunk(0, 1n, 0, 'x')), 'NBD_VALUE_OUT_OF_RANGE');
  assert.equal(codeOf(() => encodeRepServer('x'.repeat(4097))), 'NBD_VALUE_OUT_OF_RANGE');
  assert.equal(codeOf(() => encodeRequestHeader({ type: 0x10000, cookie: 1n, offset: 0, length: 0 })), 'NBD_VALUE_OUT_OF_RANGE');
  assert.equal(codeOf(() => encodeExportNameReply(-1, 1, true)), 'NBD_VALUE_OUT_OF_RANGE');
  // Error messages longer than a string may be are cut, not refused.
  const long = encodeErrorChunk(0, 1n, 5, 'x'.repeat(5000));
  assert.equal(long.readUInt16BE(24), 4096);
  assert.equal(encodeErrorMessage('y'.repeat(5000)).length, 4096);
});
