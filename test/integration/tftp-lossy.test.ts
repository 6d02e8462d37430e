/**
 * The server behind a socket shim that drops, duplicates and reorders
 * packets in both directions (what it sends and what it receives), with a
 * seeded generator so a failure can be replayed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tftpGet } from '../../src/protocols/tftp/client.js';
import { OPCODES } from '../../src/protocols/tftp/constants.js';
import { FolderFileProvider } from '../../src/protocols/tftp/file-provider.js';
import { TftpServer, type TransferSummary } from '../../src/protocols/tftp/server.js';
import { createUdpSocket, type SocketFactory, type UdpSocket } from '../../src/protocols/tftp/socket.js';
import { prng as rng } from '../helpers/prng.js';

const HOST = '127.0.0.1';
let root: string;
const files: Record<string, Buffer> = {};

before(() => {
  root = mkdtempSync(join(tmpdir(), 'tftp-lossy-'));
  for (const [name, size] of [['a.bin', 200_000], ['b.bin', 1_000_000], ['c.bin', 1468 * 40], ['d.bin', 0], ['e.bin', 700]] as const) {
    files[name] = randomBytes(size);
    writeFileSync(join(root, name), files[name]!);
  }
});
after(() => rmSync(root, { recursive: true, force: true }));


interface ShimStats {
  /** DATA packets the server asked to send, by transfer port and wire block number. */
  dataSends: Map<string, number>;
  dropped: number;
  duplicated: number;
}

function shim(random: () => number, drop: number, dup: number, stats: ShimStats): SocketFactory {
  return (family) => {
    const inner: UdpSocket = createUdpSocket(family);
    const later = (fn: () => void): void => {
      // Half the duplicates come at once, half a little later (reordered).
      if (random() < 0.5) fn();
      else setTimeout(fn, Math.floor(random() * 5));
    };
    return {
      bind: (port, address) => inner.bind(port, address),
      address: () => inner.address(),
      close: () => inner.close(),
      onError: (h) => inner.onError(h),
      send(chunks, port, address, done) {
        const bytes = Buffer.concat(chunks.map((c) => Buffer.from(c.buffer, c.byteOffset, c.byteLength)));
        if (bytes.length >= 4 && bytes.readUInt16BE(0) === OPCODES.DATA) {
          const key = `${inner.address().port}:${bytes.readUInt16BE(2)}`;
          stats.dataSends.set(key, (stats.dataSends.get(key) ?? 0) + 1);
        }
        if (random() < drop) {
          stats.dropped++;
          if (done) queueMicrotask(() => done(null));
          return;
        }
        inner.send(chunks, port, address, done);
        if (random() < dup) {
          stats.duplicated++;
          later(() => inner.send([bytes], port, address));
        }
      },
      onMessage(handler) {
        inner.onMessage((msg, from) => {
          if (random() < drop) {
            stats.dropped++;
            return;
          }
          handler(msg, from);
          if (random() < dup) {
            stats.duplicated++;
            later(() => handler(msg, from));
          }
        });
      },
    };
  };
}

test('every packet duplicated both ways: exact transfers, and duplicate ACKs cause no send (RFC 1123 4.2.3.1)', async () => {
  const stats: ShimStats = { dataSends: new Map(), dropped: 0, duplicated: 0 };
  // No loss, so no timeout should fire: a long timer keeps a loaded machine from faking one.
  const server = new TftpServer({ files: new FolderFileProvider({ root }), socketFactory: shim(rng(1), 0, 1, stats), timeoutMs: 5000, maxTransfersPerClient: 16 });
  const { port } = await server.listen(0, HOST);
  try {
    const served: TransferSummary[] = [];
    server.on('served', (s) => served.push(s));
    for (const [name, o] of [['a.bin', {}], ['c.bin', { blksize: 1468, windowsize: 4 }], ['b.bin', { blksize: 1468, windowsize: 16 }], ['d.bin', {}]] as const) {
      const r = await tftpGet({ host: HOST, port, file: name, retransmitMs: 5000, ...o });
      assert.ok(r.data.equals(files[name]!), name);
      assert.ok(r.discarded > 0 || files[name]!.length === 0, 'the client did see duplicates');
    }
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(served.length, 4);
    assert.ok(stats.duplicated > 1000);
    const resent = [...stats.dataSends].filter(([, n]) => n > 1);
    assert.deepEqual(resent, [], 'each DATA block was sent exactly once');
    assert.deepEqual(served.map((s) => s.retransmits), [0, 0, 0, 0]);
  } finally {
    await server.close();
  }
});

test('10% loss and 10% duplication both ways: every transfer completes byte-identical', async () => {
  const stats: ShimStats = { dataSends: new Map(), dropped: 0, duplicated: 0 };
  const server = new TftpServer({
    files: new FolderFileProvider({ root }), socketFactory: shim(rng(42), 0.1, 0.1, stats),
    timeoutMs: 40, maxRetries: 40, maxTransfersPerClient: 16,
  });
  const { port } = await server.listen(0, HOST);
  try {
    const served: TransferSummary[] = [];
    const failed: string[] = [];
    server.on('served', (s) => served.push(s));
    server.on('failed', (s) => failed.push(`${s.requested}: ${s.error.code}`));
    const jobs = [
      ['a.bin', {}], ['a.bin', { blksize: 1468 }], ['b.bin', { blksize: 1468, windowsize: 8 }], ['b.bin', { blksize: 1428, windowsize: 4, tsize: true }],
      ['c.bin', { blksize: 1468, windowsize: 16 }], ['d.bin', {}], ['d.bin', { windowsize: 4 }], ['e.bin', { blksize: 512, windowsize: 2 }],
    ] as const;
    const results = await Promise.all(jobs.map(([name, o]) =>
      tftpGet({ host: HOST, port, file: name, retransmitMs: 70, maxRetries: 40, dallyMs: 400, ...o }).then((r) => ({ name, r }))));
    for (const { name, r } of results) assert.ok(r.data.equals(files[name]!), name);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(failed, []);
    assert.equal(served.length, jobs.length);
    assert.ok(stats.dropped > 50, `packets were really dropped (${stats.dropped})`);
    assert.ok(served.reduce((n, s) => n + s.retransmits, 0) > 0, 'losses were repaired by retransmission');
  } finally {
    await server.close();
  }
});
