import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { COMMAND_FLAGS, COMMANDS, MAGICS, OPTIONS, REPLY_TYPES } from '../../src/protocols/nbd/constants.js';
import { ByteQueue, classifyReads, decodeNbdCapture, NbdSession, OverlayModel, parseTraceCsv, summarizeTrace, TcpDirection, toCsv, type Segment, type TraceRecord } from './nbd-trace.js';

// ---------------------------------------------------------------- byte builders (proto.md layouts)

function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return b;
}

function request(type: number, handle: number, offset: number, length: number, flags = 0, payload?: Buffer): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(MAGICS.NBD_REQUEST_MAGIC, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(BigInt(handle), 8);
  h.writeBigUInt64BE(BigInt(offset), 16);
  h.writeUInt32BE(length, 24);
  return payload ? Buffer.concat([h, payload]) : h;
}

function simpleReply(handle: number, error = 0, data?: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32BE(MAGICS.NBD_SIMPLE_REPLY_MAGIC, 0);
  h.writeUInt32BE(error, 4);
  h.writeBigUInt64BE(BigInt(handle), 8);
  return data ? Buffer.concat([h, data]) : h;
}

function option(opt: number, data: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32BE(opt, 0);
  h.writeUInt32BE(data.length, 4);
  return Buffer.concat([u64(MAGICS.IHAVEOPT), h, data]);
}

function optionReply(opt: number, type: number, data: Buffer): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt32BE(opt, 0);
  h.writeUInt32BE(type, 4);
  h.writeUInt32BE(data.length, 8);
  return Buffer.concat([u64(MAGICS.NBD_REP_MAGIC), h, data]);
}

/** A kernel-like session: GO, read 4 KiB, FUA write 1 KiB, flush, a failed read, disconnect. */
function session(): { client: Buffer; server: Buffer } {
  const name = Buffer.from('export-token');
  const goData = Buffer.concat([Buffer.from([0, 0, 0, name.length]), name, Buffer.from([0, 0])]);
  const info = Buffer.alloc(12);
  info.writeUInt16BE(0, 0); // NBD_INFO_EXPORT
  info.writeBigUInt64BE(1n << 30n, 2);
  info.writeUInt16BE(0x4d, 10);
  const client = Buffer.concat([
    Buffer.from([0, 0, 0, 3]),
    option(OPTIONS.NBD_OPT_GO, goData),
    request(COMMANDS.NBD_CMD_READ, 1, 8192, 4096),
    request(COMMANDS.NBD_CMD_WRITE, 2, 1024, 1024, COMMAND_FLAGS.NBD_CMD_FLAG_FUA, Buffer.alloc(1024, 0xab)),
    request(COMMANDS.NBD_CMD_FLUSH, 3, 0, 0),
    request(COMMANDS.NBD_CMD_READ, 4, 1 << 29, 512),
    request(COMMANDS.NBD_CMD_DISC, 5, 0, 0),
  ]);
  const server = Buffer.concat([
    u64(MAGICS.NBDMAGIC), u64(MAGICS.IHAVEOPT), Buffer.from([0, 3]),
    optionReply(OPTIONS.NBD_OPT_GO, REPLY_TYPES.NBD_REP_INFO, info),
    optionReply(OPTIONS.NBD_OPT_GO, REPLY_TYPES.NBD_REP_ACK, Buffer.alloc(0)),
    // Replies out of request order, as a server may send them.
    simpleReply(2),
    simpleReply(1, 0, Buffer.alloc(4096, 0x11)),
    simpleReply(3),
    simpleReply(4, 5),
  ]);
  return { client, server };
}

const EXPECTED = [
  { cmd: 'read', offset: 8192, length: 4096, flags: 0 },
  { cmd: 'write', offset: 1024, length: 1024, flags: COMMAND_FLAGS.NBD_CMD_FLAG_FUA },
  { cmd: 'flush', offset: 0, length: 0, flags: 0 },
  { cmd: 'read', offset: 1 << 29, length: 512, flags: 0 },
  { cmd: 'disc', offset: 0, length: 0, flags: 0 },
];

function shape(records: readonly TraceRecord[]): object[] {
  return records.map((r) => ({ cmd: r.cmd, offset: r.offset, length: r.length, flags: r.flags }));
}

describe('bench/boot nbd-trace: NBD requests from captured streams', () => {
  test('ByteQueue peeks across pieces and skips with the time of the last byte', () => {
    const q = new ByteQueue();
    q.push(Buffer.from([1, 2]), 10);
    q.push(Buffer.from([3, 4, 5]), 11);
    assert.deepEqual([...q.peek(4)!], [1, 2, 3, 4]);
    assert.equal(q.peek(6), null);
    assert.deepEqual(q.skip(3), { skipped: 3, time: 11 });
    assert.deepEqual(q.skip(9), { skipped: 2, time: 11 });
    assert.equal(q.length, 0);
  });

  test('a session decodes the same whatever the split of either stream, one byte at a time included', () => {
    const { client, server } = session();
    const cuts = [1, 3, 7, 16, 28, 29, 100, client.length - 1];
    for (const cut of cuts) {
      for (const scut of [1, 18, 19, 40, 60, server.length - 1]) {
        const s = new NbdSession(0);
        // Client bytes go first (a reply never precedes its request at the capture point).
        s.fromClient(client.subarray(0, cut), 1);
        s.fromClient(client.subarray(cut), 2);
        s.fromServer(server.subarray(0, scut), 3);
        s.fromServer(server.subarray(scut), 4);
        assert.equal(s.error, null, `cut ${cut}/${scut}: ${s.error}`);
        assert.deepEqual(shape(s.records), EXPECTED);
      }
    }
    const s = new NbdSession(0);
    for (let i = 0; i < client.length; i += 1) s.fromClient(client.subarray(i, i + 1), i);
    for (let i = 0; i < server.length; i += 1) s.fromServer(server.subarray(i, i + 1), 1000 + i);
    assert.deepEqual(shape(s.records), EXPECTED);
    // The read's reply ends with its last data byte; the failed read has its error and no data.
    const [read, write, flush, bad, disc] = s.records as [TraceRecord, TraceRecord, TraceRecord, TraceRecord, TraceRecord];
    assert.equal(read.replyT, 1000 + server.length - 16 * 2 - 1);
    assert.ok(write.replyT! < read.replyT!);
    assert.ok(flush.replyT! > read.replyT!);
    assert.equal(bad.error, 5);
    assert.equal(bad.replyT, 1000 + server.length - 1);
    assert.equal(disc.replyT, undefined);
    // The request time is when its header was complete.
    assert.equal(read.t, client.indexOf(request(COMMANDS.NBD_CMD_READ, 1, 8192, 4096)) + 27);
  });

  test('a reply for a handle never sent stops the decoding with a reason, not an exception', () => {
    const { client, server } = session();
    const s = new NbdSession(0);
    s.fromClient(client.subarray(0, 4 + 16 + 18), 1);
    s.fromServer(server.subarray(0, server.indexOf(simpleReply(2))), 2);
    s.fromServer(simpleReply(99), 3);
    assert.match(s.error ?? '', /unknown handle/);
  });

  test('TCP reassembly puts out-of-order and retransmitted segments back in order', () => {
    const got: Buffer[] = [];
    const d = new TcpDirection((b) => got.push(b));
    const data = Buffer.from('0123456789abcdef');
    const isn = 0xfffffff0; // the sequence numbers wrap inside the stream
    d.push({ seq: isn, syn: true, payload: Buffer.alloc(0), time: 0 });
    const seg = (from: number, to: number): { seq: number; syn: boolean; payload: Buffer; time: number } => ({ seq: (isn + 1 + from) >>> 0, syn: false, payload: data.subarray(from, to), time: from });
    d.push(seg(0, 4));
    d.push(seg(8, 12)); // early
    d.push(seg(2, 6)); // overlaps what came
    d.push(seg(6, 8)); // fills the gap
    d.push(seg(0, 4)); // a retransmission
    d.push(seg(12, 16));
    assert.equal(Buffer.concat(got).toString(), data.toString());
    assert.equal(d.broken, null);
  });

  test('decodeNbdCapture follows a connection through segments of both directions', () => {
    const { client, server } = session();
    const segs: Segment[] = [];
    const base = { src: '10.0.0.50', sport: 40000, dst: '10.0.0.1', dport: 10809, fin: false, rst: false };
    const back = { src: '10.0.0.1', sport: 10809, dst: '10.0.0.50', dport: 40000, fin: false, rst: false };
    segs.push({ ...base, time: 0, seq: 100, syn: true, payload: Buffer.alloc(0) });
    segs.push({ ...back, time: 0.001, seq: 500, syn: true, payload: Buffer.alloc(0) });
    segs.push({ ...back, time: 0.002, seq: 501, syn: false, payload: server.subarray(0, 18) });
    segs.push({ ...base, time: 0.003, seq: 101, syn: false, payload: client });
    segs.push({ ...back, time: 0.004, seq: 519, syn: false, payload: server.subarray(18) });
    // Traffic of another port is not ours.
    segs.push({ ...base, dport: 8080, time: 0.005, seq: 1, syn: false, payload: Buffer.from('GET / HTTP/1.1\r\n') });
    const d = decodeNbdCapture(segs, 10809);
    assert.deepEqual(d.sessions, [{ conn: 0, client: '10.0.0.50:40000', error: null, requests: 5 }]);
    assert.deepEqual(shape(d.records), EXPECTED);
    assert.ok(d.records.every((r) => r.t === 0.003));
  });

  test('OverlayModel: reads are base until a write, zero or whole-cluster trim takes their clusters', () => {
    const m = new OverlayModel(16384, 1 << 20);
    assert.equal(m.apply({ cmd: 'read', offset: 0, length: 4096 }), 'base');
    m.apply({ cmd: 'write', offset: 1024, length: 512 }); // partly covers cluster 0: read-modify-write makes it the overlay's
    assert.equal(m.source(8192, 4096), 'overlay');
    assert.equal(m.source(0, 32768), 'mixed');
    m.apply({ cmd: 'trim', offset: 16384 + 512, length: 3 * 16384 }); // clusters 2 and 3 whole; 1 and 4 only in part
    assert.equal(m.source(16384, 16384), 'base');
    assert.equal(m.source(2 * 16384, 2 * 16384), 'overlay');
    assert.equal(m.source(4 * 16384, 16384), 'base');
    m.apply({ cmd: 'write-zeroes', offset: 5 * 16384 + 100, length: 10 });
    assert.equal(m.source(5 * 16384, 16384), 'overlay');
    m.apply({ cmd: 'write', offset: 6 * 16384, length: 16384, error: 28 }); // a failed write changes nothing
    assert.equal(m.source(6 * 16384, 16384), 'base');
    assert.equal(m.ownCount(), 4);
  });

  test('CSV written from records parses back, and the summary counts them', () => {
    const records: TraceRecord[] = [
      { t: 10.25, conn: 0, cmd: 'read', flags: 0, offset: 0, length: 4096, replyT: 10.2505 },
      { t: 10.5, conn: 0, cmd: 'write', flags: COMMAND_FLAGS.NBD_CMD_FLAG_FUA, offset: 0, length: 512, replyT: 10.51 },
      { t: 10.6, conn: 0, cmd: 'read', flags: 0, offset: 0, length: 1024, error: 5 },
    ];
    classifyReads(records, new OverlayModel(4096, 1 << 20));
    const rows = parseTraceCsv(toCsv(records, 10));
    assert.deepEqual(rows, [
      { t: 0.25, conn: 0, cmd: 'read', flags: [], offset: 0, length: 4096, src: 'base', latencyMs: 0.5 },
      { t: 0.5, conn: 0, cmd: 'write', flags: ['fua'], offset: 0, length: 512, latencyMs: 10 },
      { t: 0.6, conn: 0, cmd: 'read', flags: [], offset: 0, length: 1024, src: 'overlay', error: 5 },
    ]);
    const s = summarizeTrace(rows);
    assert.equal(s.requests, 3);
    assert.deepEqual(s.byCommand, { read: { count: 2, bytes: 5120 }, write: { count: 1, bytes: 512 } });
    assert.deepEqual(s.readsBySource, { base: 1, overlay: 1 });
    assert.equal(s.distinctBytesRead, 4096);
    assert.throws(() => parseTraceCsv('t,conn\n'), /header/);
    assert.throws(() => parseTraceCsv(toCsv(records).replace('read', 'raed')), /command/);
    assert.throws(() => parseTraceCsv(toCsv(records).replace(',4096,', ',-1,')), /length/);
  });
});
