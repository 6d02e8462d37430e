/**
 * The transfer state machine driven packet by packet: a fake socket records
 * what the server sends and a manual clock fires its timers, so each rule
 * (Sorcerer's Apprentice, window restarts, rollover, retries) is checked
 * exactly, with no timing luck.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { silentLogger } from '../../lib/log.js';
import { decodePacket, encodeAck, encodeData, encodeError, type TftpPacket } from './codec.js';
import { OPCODES } from './constants.js';
import { bufferFile, type TftpFile } from './file-provider.js';
import type { SocketAddress, UdpSocket } from './socket.js';
import { ReadTransfer, type Clock, type TransferParams } from './transfer.js';

const PEER: SocketAddress = { address: '10.0.0.2', port: 40000, family: 'IPv4' };

class FakeSocket implements UdpSocket {
  sent: Array<{ packet: TftpPacket; to: { port: number; address: string } }> = [];
  closed = false;
  private handler: (msg: Buffer, from: SocketAddress) => void = () => {};
  bind(): Promise<SocketAddress> {
    return Promise.resolve({ address: '10.0.0.1', port: 50000, family: 'IPv4' });
  }
  send(chunks: readonly Uint8Array[], port: number, address: string, done?: (err: Error | null) => void): void {
    this.sent.push({ packet: decodePacket(Buffer.concat(chunks.map((c) => Buffer.from(c)))), to: { port, address } });
    if (done) queueMicrotask(() => done(null));
  }
  onMessage(h: (msg: Buffer, from: SocketAddress) => void): void {
    this.handler = h;
  }
  onError(): void {}
  address(): SocketAddress {
    return { address: '10.0.0.1', port: 50000, family: 'IPv4' };
  }
  close(): void {
    this.closed = true;
  }
  deliver(msg: Buffer, from: SocketAddress = PEER): void {
    this.handler(msg, from);
  }
  /** Block numbers of DATA packets sent since the last call. */
  takeData(): number[] {
    const out = this.sent.filter((s) => s.packet.opcode === OPCODES.DATA).map((s) => (s.packet as { block: number }).block);
    this.sent = this.sent.filter((s) => s.packet.opcode !== OPCODES.DATA);
    return out;
  }
  take(): TftpPacket[] {
    const out = this.sent.map((s) => s.packet);
    this.sent = [];
    return out;
  }
}

class ManualClock implements Clock {
  t = 0;
  /** setTimeout calls so far. */
  created = 0;
  private timers = new Map<number, { at: number; fn: () => void }>();
  private next = 1;
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    this.created++;
    const id = this.next++;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers.delete(h as number);
  }
  advance(ms: number): void {
    this.t += ms;
    for (const [id, timer] of [...this.timers].sort((a, b) => a[1].at - b[1].at)) {
      if (timer.at <= this.t && this.timers.has(id)) {
        this.timers.delete(id);
        timer.fn();
      }
    }
  }
}

/** Lets promise callbacks and queued microtasks run (file reads, send completions). */
const settle = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

function counting(file: TftpFile): TftpFile & { bytesRead: number; reads: number } {
  const f = {
    size: file.size,
    bytesRead: 0,
    reads: 0,
    async read(offset: number, length: number, into: Uint8Array) {
      f.reads++;
      const n = await file.read(offset, length, into);
      f.bytesRead += n;
      return n;
    },
    close: () => file.close(),
  };
  return f;
}

function pattern(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 7 + (i >> 8)) & 0xff;
  return b;
}

function setup(size: number, over: Partial<TransferParams> = {}) {
  const socket = new FakeSocket();
  const clock = new ManualClock();
  const data = pattern(size);
  const file = counting(bufferFile(data));
  const transfer = new ReadTransfer({
    socket, peer: PEER, file, blksize: 512, windowsize: 1, timeoutMs: 1000, maxRetries: 3, readTimeoutMs: 30_000,
    readAheadBytes: 4096, oack: null, clock, log: silentLogger, ...over,
  });
  return { socket, clock, file, data, transfer };
}

test('lock-step transfer; the last block is short; the payload is exact', async () => {
  const { socket, transfer, data } = setup(1300);
  transfer.start();
  await settle();
  const got: Buffer[] = [];
  for (let block = 1; ; block++) {
    const sent = socket.take();
    assert.equal(sent.length, 1);
    const p = sent[0]!;
    assert.ok(p.opcode === OPCODES.DATA && p.block === block, `expected DATA ${block}`);
    got.push(Buffer.from(p.data));
    socket.deliver(encodeAck(block));
    await settle();
    if (p.data.length < 512) break;
  }
  assert.deepEqual(Buffer.concat(got), data);
  assert.deepEqual(await transfer.done, { kind: 'served' });
  assert.equal(transfer.stats.bytes, 1300);
});

test('a file that is a multiple of blksize ends with an empty block; an empty file is one empty block', async () => {
  for (const [size, blocks] of [[1024, 3], [0, 1]] as const) {
    const { socket, transfer } = setup(size);
    transfer.start();
    await settle();
    for (let b = 1; b <= blocks; b++) {
      const p = socket.take()[0]!;
      assert.ok(p.opcode === OPCODES.DATA && p.block === b);
      assert.equal(p.data.length, b === blocks ? 0 : 512);
      socket.deliver(encodeAck(b));
      await settle();
    }
    assert.deepEqual(await transfer.done, { kind: 'served' });
  }
});

test('duplicate ACKs send nothing (Sorcerer\'s Apprentice, RFC 1123 4.2.3.1)', async () => {
  const { socket, transfer } = setup(512 * 10);
  transfer.start();
  await settle();
  assert.deepEqual(socket.takeData(), [1]);
  socket.deliver(encodeAck(1));
  socket.deliver(encodeAck(1));
  await settle();
  assert.deepEqual(socket.takeData(), [2], 'the second ACK 1 caused no send');
  socket.deliver(encodeAck(1));
  socket.deliver(encodeAck(0));
  socket.deliver(encodeAck(7)); // a block never sent: ignored
  await settle();
  assert.deepEqual(socket.takeData(), []);
  socket.deliver(encodeAck(2));
  await settle();
  assert.deepEqual(socket.takeData(), [3]);
  assert.equal(transfer.stats.retransmits, 0);
});

test('timeouts resend the unacknowledged block, then give up with error 0 after maxRetries', async () => {
  const { socket, transfer, clock } = setup(512 * 4);
  transfer.start();
  await settle();
  assert.deepEqual(socket.takeData(), [1]);
  socket.deliver(encodeAck(1));
  await settle();
  assert.deepEqual(socket.takeData(), [2]);
  clock.advance(999);
  assert.deepEqual(socket.takeData(), []);
  clock.advance(1);
  assert.deepEqual(socket.takeData(), [2]);
  clock.advance(1000);
  clock.advance(1000);
  assert.deepEqual(socket.takeData(), [2, 2]);
  clock.advance(1000);
  const outcome = await transfer.done;
  assert.equal(outcome.kind, 'failed');
  assert.equal(outcome.kind === 'failed' && outcome.error.code, 'TFTP_TIMEOUT');
  const last = socket.take();
  assert.deepEqual(last, [{ opcode: OPCODES.ERROR, code: 0, message: 'Timed out' }]);
  assert.equal(transfer.stats.retransmits, 3);
});

test('windowed: a window at a time; an ACK inside the window restarts after it; a timeout resends the window', async () => {
  const { socket, transfer, clock, file } = setup(512 * 20 + 100, { windowsize: 4 });
  transfer.start();
  await settle();
  assert.deepEqual(socket.takeData(), [1, 2, 3, 4]);
  socket.deliver(encodeAck(4));
  await settle();
  assert.deepEqual(socket.takeData(), [5, 6, 7, 8]);
  // The client lost block 7: it acknowledges 6 (RFC 7440 section 4).
  socket.deliver(encodeAck(6));
  await settle();
  assert.deepEqual(socket.takeData(), [7, 8, 9, 10]);
  socket.deliver(encodeAck(6)); // the same gap reported again: a duplicate, nothing sent
  await settle();
  assert.deepEqual(socket.takeData(), []);
  clock.advance(1000);
  assert.deepEqual(socket.takeData(), [7, 8, 9, 10], 'a timeout resends the whole window');
  socket.deliver(encodeAck(10));
  await settle();
  assert.deepEqual(socket.takeData(), [11, 12, 13, 14]);
  for (const b of [14, 18]) {
    socket.deliver(encodeAck(b));
    await settle();
  }
  assert.deepEqual(socket.takeData(), [15, 16, 17, 18, 19, 20, 21]);
  socket.deliver(encodeAck(21));
  assert.deepEqual(await transfer.done, { kind: 'served' });
  assert.equal(file.bytesRead, 512 * 20 + 100, 'each byte read from the file once, resends included');
  assert.equal(transfer.stats.retransmits, 2 + 4, '7 and 8 after the restart, 7-10 after the timeout');
});

test('block numbers roll over from 65535 to 0', async () => {
  const blocks = 65535 + 10;
  const { socket, transfer, data } = setup(8 * (blocks - 1) + 3, { blksize: 8, windowsize: 64, readAheadBytes: 8 * 1024 });
  transfer.start();
  await settle();
  const got: Buffer[] = [];
  let absolute = 0;
  for (let rounds = 0; rounds < 5000 && absolute < blocks; rounds++) {
    const sent = socket.take();
    assert.ok(sent.length > 0, `nothing sent after block ${absolute}`);
    for (const p of sent) {
      assert.equal(p.opcode, OPCODES.DATA);
      if (p.opcode !== OPCODES.DATA) continue;
      absolute++;
      assert.equal(p.block, absolute & 0xffff, `block ${absolute} goes out as ${absolute & 0xffff}`);
      got.push(Buffer.from(p.data));
    }
    socket.deliver(encodeAck(absolute & 0xffff));
    await settle();
  }
  assert.equal(absolute, blocks);
  assert.deepEqual(Buffer.concat(got), data);
  assert.deepEqual(await transfer.done, { kind: 'served' });
});

test('OACK: resent on timeout, ACK 0 starts the data; a client ERROR after it is an abort (tsize probe)', async () => {
  const oack = [{ name: 'tsize', value: '2000' }];
  {
    const { socket, transfer, clock } = setup(2000, { oack });
    transfer.start();
    assert.deepEqual(socket.take(), [{ opcode: OPCODES.OACK, options: oack }]);
    socket.deliver(encodeAck(3)); // not ACK 0: ignored
    clock.advance(1000);
    assert.deepEqual(socket.take(), [{ opcode: OPCODES.OACK, options: oack }]);
    socket.deliver(encodeAck(0));
    await settle();
    assert.deepEqual(socket.takeData(), [1]);
    socket.deliver(encodeAck(0)); // a duplicate ACK 0 sends nothing
    await settle();
    assert.deepEqual(socket.takeData(), []);
    transfer.abort(new (await import('./errors.js')).TftpError('TFTP_SHUTDOWN', 'bye'));
    assert.equal((await transfer.done).kind, 'failed');
  }
  {
    const { socket, transfer } = setup(2000, { oack });
    transfer.start();
    socket.deliver(encodeError(0, 'probe done'));
    assert.deepEqual(await transfer.done, { kind: 'aborted', peerError: { code: 0, message: 'probe done' } });
    assert.deepEqual(socket.take().filter((p) => p.opcode === OPCODES.ERROR), [], 'an ERROR is never answered');
  }
});

test('a stranger gets error 5 and the transfer goes on; DATA from the peer is an illegal operation', async () => {
  const { socket, transfer } = setup(2000);
  transfer.start();
  await settle();
  socket.takeData();
  const stranger = { address: '10.0.0.3', port: 40000, family: 'IPv4' };
  socket.deliver(encodeAck(1), stranger);
  socket.deliver(encodeAck(1), { ...PEER, port: 40001 });
  socket.deliver(encodeError(0, 'x'), stranger); // never answered
  const replies = socket.sent.splice(0);
  assert.deepEqual(replies.map((r) => [r.packet.opcode, (r.packet as { code?: number }).code, r.to.address, r.to.port]), [
    [OPCODES.ERROR, 5, '10.0.0.3', 40000],
    [OPCODES.ERROR, 5, '10.0.0.2', 40001],
  ]);
  socket.deliver(encodeAck(1));
  await settle();
  assert.deepEqual(socket.takeData(), [2]);
  socket.deliver(encodeData(1, Buffer.from('x')));
  const outcome = await transfer.done;
  assert.equal(outcome.kind === 'failed' && outcome.error.code, 'TFTP_ILLEGAL_OPERATION');
  assert.deepEqual(socket.take(), [{ opcode: OPCODES.ERROR, code: 4, message: 'unexpected opcode 3 on a read transfer' }]);
});

test('a file that shrinks under the transfer fails with a read error', async () => {
  const socket = new FakeSocket();
  const real = bufferFile(pattern(100));
  const lying: TftpFile = { size: 5000, read: (o, l, into) => real.read(o, l, into), close: () => {} };
  const transfer = new ReadTransfer({
    socket, peer: PEER, file: lying, blksize: 512, windowsize: 1, timeoutMs: 1000, maxRetries: 3, readTimeoutMs: 30_000,
    readAheadBytes: 4096, oack: null, clock: new ManualClock(), log: silentLogger,
  });
  transfer.start();
  const outcome = await transfer.done;
  assert.equal(outcome.kind === 'failed' && outcome.error.code, 'TFTP_READ_FAILED');
  assert.equal(socket.take().at(-1)?.opcode, OPCODES.ERROR);
});

test('a read that never completes fails after readTimeoutMs', async () => {
  const socket = new FakeSocket();
  const clock = new ManualClock();
  const stuck: TftpFile = { size: 5000, read: () => new Promise(() => {}), close: () => {} };
  const transfer = new ReadTransfer({
    socket, peer: PEER, file: stuck, blksize: 512, windowsize: 1, timeoutMs: 1000, maxRetries: 3, readTimeoutMs: 5000,
    readAheadBytes: 4096, oack: null, clock, log: silentLogger,
  });
  transfer.start();
  clock.advance(5000);
  const outcome = await transfer.done;
  assert.equal(outcome.kind === 'failed' && outcome.error.code, 'TFTP_READ_FAILED');
});

test('the first chunk is read during the OACK: ACK 0 is answered at once, and no block ever waits on a read', async () => {
  const oack = [{ name: 'blksize', value: '512' }];
  const { socket, transfer, file, data } = setup(512 * 40 + 7, { oack });
  transfer.start();
  assert.deepEqual(socket.take(), [{ opcode: OPCODES.OACK, options: oack }]);
  await settle(); // the client's ACK 0 takes longer than the read
  assert.equal(file.reads, 1);
  const got: Buffer[] = [];
  for (let block = 0; block <= 40; block++) {
    socket.deliver(encodeAck(block));
    // No await: the next DATA leaves inside the ACK's handler.
    const sent = socket.take();
    assert.equal(sent.length, 1, `ACK ${block} answered synchronously`);
    const p = sent[0]!;
    assert.ok(p.opcode === OPCODES.DATA && p.block === block + 1);
    got.push(Buffer.from(p.data));
    await settle(); // reads ahead run between ACKs, as they do between packets
  }
  socket.deliver(encodeAck(41));
  assert.deepEqual(await transfer.done, { kind: 'served' });
  assert.deepEqual(Buffer.concat(got), data);
  assert.equal(transfer.stats.readWaits, 0);
  assert.equal(file.bytesRead, data.length);
});

test('a file held in memory (TftpFile.contents) is sent from there and never read', async () => {
  const data = pattern(512 * 9 + 100);
  const file = { ...counting(bufferFile(data)), contents: data };
  const { socket, transfer } = setup(0, { file, windowsize: 4, oack: [{ name: 'windowsize', value: '4' }] });
  transfer.start();
  socket.take();
  socket.deliver(encodeAck(0));
  assert.deepEqual(socket.takeData(), [1, 2, 3, 4], 'the window leaves at once');
  socket.deliver(encodeAck(2)); // a gap: restart after 2
  assert.deepEqual(socket.takeData(), [3, 4, 5, 6]);
  socket.deliver(encodeAck(6));
  socket.deliver(encodeAck(10));
  const last = socket.take().filter((p) => p.opcode === OPCODES.DATA);
  assert.deepEqual(last.map((p) => (p as { block: number }).block), [7, 8, 9, 10]);
  assert.equal((last.at(-1) as { data: Buffer }).data.length, 100);
  assert.deepEqual(await transfer.done, { kind: 'served' });
  assert.equal(file.reads, 0);
  assert.equal(transfer.stats.readWaits, 0);
});

test('one clock timer per transfer: ACKs move the deadline, the timeout still comes timeoutMs after the last send', async () => {
  const data = pattern(512 * 300);
  const { socket, transfer, clock } = setup(0, { file: bufferFile(data) });
  transfer.start();
  assert.deepEqual(socket.takeData(), [1]);
  for (let b = 1; b < 250; b++) {
    clock.advance(3);
    socket.deliver(encodeAck(b));
    assert.deepEqual(socket.takeData(), [b + 1]);
  }
  assert.ok(clock.created <= 2, `${clock.created} timers for 250 blocks`);
  // Block 250 went out at t = 747: its timer expires at 1747, not at the 1000 the first timer was set for.
  clock.advance(1746 - clock.t);
  assert.deepEqual(socket.takeData(), []);
  clock.advance(1);
  assert.deepEqual(socket.takeData(), [250], 'resent once timeoutMs passed without an ACK');
  clock.advance(999);
  assert.deepEqual(socket.takeData(), []);
  clock.advance(1);
  assert.deepEqual(socket.takeData(), [250]);
  socket.deliver(encodeAck(250));
  assert.deepEqual(socket.takeData(), [251]);
  assert.equal(transfer.stats.retransmits, 2);
  assert.equal(transfer.stats.timeouts, 2);
  transfer.abort(new (await import('./errors.js')).TftpError('TFTP_SHUTDOWN', 'bye'));
  assert.equal((await transfer.done).kind, 'failed');
});
