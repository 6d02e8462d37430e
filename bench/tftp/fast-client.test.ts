/**
 * The benchmark's C client against this server in-process: it must fetch
 * exact bytes in lock-step, windowed, concurrently and across a block
 * rollover, recover from lost packets, and fail loudly on a server error or
 * on bytes that differ from the expected file. Skipped where no C compiler
 * is installed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OPCODES } from '../../src/protocols/tftp/constants.js';
import { FolderFileProvider } from '../../src/protocols/tftp/file-provider.js';
import { TftpServer } from '../../src/protocols/tftp/server.js';
import { createUdpSocket, type SocketFactory } from '../../src/protocols/tftp/socket.js';
import { buildFastClient, fastClientPath, parseFastClientOutput, parsePerfTaskClock, runFastClient } from './fast-client.js';

const HOST = '127.0.0.1';
const haveCc = spawnSync(process.env.CC ?? 'cc', ['--version']).status === 0;
let dir: string;
let binary: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'tftp-fast-client-'));
  writeFileSync(join(dir, 'big.bin'), randomBytes(1468 * 300 + 17));
  // 65535 + 20 blocks of 8 bytes: the block number rolls over.
  writeFileSync(join(dir, 'roll.bin'), randomBytes(8 * (65535 + 20) + 3));
  writeFileSync(join(dir, 'other.bin'), randomBytes(1468 * 300 + 17));
  writeFileSync(join(dir, 'small.bin'), randomBytes(1468 * 40 + 5));
  if (haveCc) {
    binary = fastClientPath(dir);
    const why = buildFastClient(binary);
    assert.equal(why, undefined, why);
  }
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('parses perf task-clock lines and the client result', () => {
  assert.equal(parsePerfTaskClock('98.61,msec,task-clock,98612707,100.00,0.475,CPUs utilized\n'), 0.09861);
  assert.equal(parsePerfTaskClock('<not counted>,msec,task-clock,0,100.00,,\n'), undefined);
  assert.equal(parsePerfTaskClock('nothing here'), undefined);
  assert.throws(() => parseFastClientOutput('{"ok":false,"error":"server error 1: File not found"}\n'), /File not found/);
  assert.throws(() => parseFastClientOutput('garbage'), /no result/);
  assert.throws(() => parseFastClientOutput('{"ok":true,"bytes":1}'), /without seconds/);
});

async function withServer<T>(fn: (port: number) => Promise<T>, socketFactory?: SocketFactory, timeoutMs?: number): Promise<T> {
  const server = new TftpServer({ files: new FolderFileProvider({ root: dir }), maxTransfersPerClient: 32, socketFactory, timeoutMs });
  const { port } = await server.listen(0, HOST);
  try {
    return await fn(port);
  } finally {
    await server.close();
  }
}

test('lock-step, windowed and concurrent downloads arrive exact; blocks and ACKs are counted', { skip: !haveCc && 'no C compiler' }, async () => {
  await withServer(async (port) => {
    const base = { binary, host: HOST, port, file: 'big.bin', expected: join(dir, 'big.bin'), blksize: 1468 };
    const lock = await runFastClient({ ...base, windowsize: 1 });
    assert.equal(lock.bytes, 1468 * 300 + 17);
    assert.equal(lock.windowsize, 1);
    assert.equal(lock.blocks, 301);
    assert.equal(lock.acks, 302, 'ACK 0 for the OACK, then one per block');
    const win = await runFastClient({ ...base, windowsize: 16 });
    assert.equal(win.windowsize, 16);
    assert.equal(win.acks, 1 + Math.ceil(301 / 16));
    const many = await runFastClient({ ...base, windowsize: 4, concurrent: 8 });
    assert.equal(many.bytes, 8 * (1468 * 300 + 17));
    assert.equal(many.blocks, 8 * 301);
    // No options asked: RFC 1350's 512-byte blocks, no OACK.
    const plain = await runFastClient({ binary, host: HOST, port, file: 'big.bin', expected: join(dir, 'big.bin') });
    assert.equal(plain.blksize, 512);
    assert.equal(plain.blocks, Math.floor((1468 * 300 + 17) / 512) + 1);
  });
});

test('the block number rolls over past 65535', { skip: !haveCc && 'no C compiler' }, async () => {
  await withServer(async (port) => {
    const r = await runFastClient({ binary, host: HOST, port, file: 'roll.bin', expected: join(dir, 'roll.bin'), blksize: 8, windowsize: 64 });
    assert.equal(r.bytes, 8 * (65535 + 20) + 3);
    assert.equal(r.blocks, 65535 + 21);
  });
});

test('a server error, a file that differs from the expected one, and silence are failures', { skip: !haveCc && 'no C compiler' }, async () => {
  await withServer(async (port) => {
    await assert.rejects(runFastClient({ binary, host: HOST, port, file: 'missing.bin' }), /server error 1/);
    await assert.rejects(runFastClient({ binary, host: HOST, port, file: 'big.bin', expected: join(dir, 'other.bin'), blksize: 1468 }), /block 1 differs/);
  });
  // Nobody listens on the port of a closed server: the retransmissions run out.
  const closed = await withServer(async (port) => port);
  await assert.rejects(runFastClient({ binary, host: HOST, port: closed, file: 'big.bin', retransmitMs: 20, maxRetries: 2 }), /no answer after 2/);
});

test('lost DATA packets: the client times out or reports the gap, and the file still arrives exact', { skip: !haveCc && 'no C compiler' }, async () => {
  let sends = 0;
  let dropped = 0;
  // Every 7th DATA packet the server sends is lost.
  const lossy: SocketFactory = (family) => {
    const inner = createUdpSocket(family);
    return {
      bind: (p, a) => inner.bind(p, a),
      address: () => inner.address(),
      close: () => inner.close(),
      onError: (h) => inner.onError(h),
      onMessage: (h) => inner.onMessage(h),
      send(chunks, port, address, done) {
        const first = chunks[0]!;
        if (first.length >= 2 && first[1] === OPCODES.DATA && ++sends % 7 === 0) {
          dropped++;
          if (done) queueMicrotask(() => done(null));
          return;
        }
        inner.send(chunks, port, address, done);
      },
    };
  };
  await withServer(async (port) => {
    // The client's timer (30 ms) fires well before the server's (100 ms).
    const base = { binary, host: HOST, port, file: 'small.bin', expected: join(dir, 'small.bin'), blksize: 1468, retransmitMs: 30, maxRetries: 10 };
    const lock = await runFastClient({ ...base, windowsize: 1 });
    assert.equal(lock.bytes, 1468 * 40 + 5);
    assert.ok(lock.timeouts > 0, 'lock-step recovers by the client resending its ACK');
    const win = await runFastClient({ ...base, windowsize: 8 });
    assert.equal(win.bytes, 1468 * 40 + 5);
    assert.ok(win.discarded > 0 || win.timeouts > 0, 'a lost block in a window leaves a gap the client reports');
  }, lossy, 100);
  assert.ok(dropped > 0);
});
