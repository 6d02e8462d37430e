/**
 * Fuzzing, in-process: 100,000+ random and mutated packets injected into
 * the server's request socket and into its live transfer sockets, from its
 * real peers and from strangers. The server must not throw, must log no
 * internal error, must release every transfer, and must still serve a file
 * byte-identical afterwards. Replies go to sink sockets this test owns, so
 * nothing else on loopback receives them.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../src/lib/log.js';
import { tftpGet } from '../../src/protocols/tftp/client.js';
import { encodeAck, encodeData, encodeError, encodeOack, encodeRequest, type TftpOption } from '../../src/protocols/tftp/codec.js';
import { OPCODES } from '../../src/protocols/tftp/constants.js';
import { FolderFileProvider } from '../../src/protocols/tftp/file-provider.js';
import { TftpServer } from '../../src/protocols/tftp/server.js';
import { createUdpSocket, type SocketAddress, type SocketFactory, type UdpSocket } from '../../src/protocols/tftp/socket.js';
import { prng as rng } from '../helpers/prng.js';

const HOST = '127.0.0.1';
const PACKETS = 120_000;
let root: string;
const medium = randomBytes(300_000);

before(() => {
  root = mkdtempSync(join(tmpdir(), 'tftp-fuzz-'));
  mkdirSync(join(root, 'sub'));
  writeFileSync(join(root, 'small.bin'), randomBytes(700));
  writeFileSync(join(root, 'medium.bin'), medium);
  writeFileSync(join(root, 'sub', 'x.txt'), 'line\nline\r\n');
});
after(() => rmSync(root, { recursive: true, force: true }));


interface Tapped {
  socket: UdpSocket;
  handler: ((msg: Buffer, from: SocketAddress) => void) | undefined;
  /** Where the server sent its first packet: the transfer's peer. */
  peer: SocketAddress | undefined;
  closed: boolean;
}

test(`fuzz: ${PACKETS} random and mutated packets, no crash, still serving`, async (t) => {
  const random = rng(20240607);
  const int = (n: number): number => Math.floor(random() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

  // Sinks: the fake peers' addresses, so the server's replies land in sockets this test owns.
  const sinks = await Promise.all(Array.from({ length: 16 }, async () => {
    const s = dgram.createSocket('udp4');
    s.on('message', () => {});
    await new Promise<void>((r) => s.bind(0, HOST, r));
    return s;
  }));
  const peers: SocketAddress[] = sinks.map((s) => ({ address: HOST, port: s.address().port, family: 'IPv4' }));

  const tapped: Tapped[] = [];
  /** Transfer sockets that are open and have a peer: the targets for transfer packets. */
  let live: Tapped[] = [];
  const factory: SocketFactory = (family) => {
    const inner = createUdpSocket(family);
    const tap: Tapped = { socket: inner, handler: undefined, peer: undefined, closed: false };
    tapped.push(tap);
    return {
      bind: (p, a) => inner.bind(p, a),
      address: () => inner.address(),
      onError: (h) => inner.onError(h),
      close: () => {
        tap.closed = true;
        live = live.filter((x) => x !== tap);
        inner.close();
      },
      send(chunks, port, address, done) {
        if (!tap.peer) {
          tap.peer = { address, port, family: 'IPv4' };
          if (tapped[0] !== tap && !tap.closed) live.push(tap);
        }
        inner.send(chunks, port, address, done);
      },
      onMessage(h) {
        tap.handler = h;
        inner.onMessage(h);
      },
    };
  };

  const errors: string[] = [];
  const logger = createLogger({ level: 'error', pretty: false, write: (line) => errors.push(line) });
  const server = new TftpServer({
    files: new FolderFileProvider({ root, files: { 'virtual.bin': Buffer.from('virtual') } }),
    socketFactory: factory, logger, timeoutMs: 15, maxRetries: 1, maxTransfers: 48, maxTransfersPerClient: 6, pathMtu: () => 1500,
  });
  const { port } = await server.listen(0, HOST);
  const listener = tapped[0]!;

  const names = ['small.bin', 'medium.bin', 'virtual.bin', 'sub/x.txt', 'missing', '../etc/passwd', '/etc/passwd', 'sub/../small.bin',
    '..\\..\\x', 'sub', '', 'a'.repeat(600), 'sm\u0001all', '\u00e9t\u00e9', '.', '/'];
  const modes = ['octet', 'netascii', 'OCTET', 'mail', 'binary', ''];
  const optionNames = ['blksize', 'tsize', 'timeout', 'windowsize', 'BLKSIZE', 'multicast', 'rollover', ''];
  const values = ['0', '1', '7', '8', '512', '1468', '65464', '65465', '65535', '70000', '255', '256', '-1', 'abc', '', '99999999999', '4'];
  const randomOptions = (): TftpOption[] => Array.from({ length: int(5) }, () => ({ name: pick(optionNames), value: pick(values) }))
    .filter((o) => o.name !== '');

  const template = (): Buffer => {
    switch (int(8)) {
      case 0:
      case 1:
      case 2:
        return encodeRequest(OPCODES.RRQ, pick(names).replace(/\0/g, ''), pick(modes) || 'octet', randomOptions());
      case 3:
        return encodeRequest(OPCODES.WRQ, pick(names).replace(/\0/g, ''), 'octet', randomOptions());
      case 4:
        return encodeAck(int(65536));
      case 5:
        return encodeData(int(65536), randomBytes(int(600)));
      case 6:
        return encodeError(int(10), 'x'.repeat(int(40)));
      default:
        return encodeOack(randomOptions());
    }
  };
  const mutate = (b: Buffer): Buffer => {
    let out = Buffer.from(b);
    for (let n = int(4); n >= 0; n--) {
      switch (int(7)) {
        case 0:
          if (out.length) out[int(out.length)] ^= 1 << int(8);
          break;
        case 1:
          out = out.subarray(0, int(out.length + 1));
          break;
        case 2:
          out = Buffer.concat([out, randomBytes(int(40))]);
          break;
        case 3: {
          const at = int(out.length + 1);
          out = Buffer.concat([out.subarray(0, at), Buffer.from([0]), out.subarray(at)]);
          break;
        }
        case 4: {
          const nul = out.indexOf(0, 2);
          if (nul >= 0) out = Buffer.concat([out.subarray(0, nul), out.subarray(nul + 1)]);
          break;
        }
        case 5:
          if (out.length >= 2) out.writeUInt16BE(int(65536), 0);
          break;
        default: {
          const at = int(out.length + 1);
          out = Buffer.concat([out.subarray(0, at), out.subarray(int(out.length))]);
        }
      }
    }
    return out;
  };
  const packet = (): Buffer => {
    const r = random();
    if (r < 0.2) return randomBytes(int(r < 0.05 ? 4 : 700));
    if (r < 0.45) return template();
    return mutate(template());
  };

  const started = performance.now();
  let toTransfers = 0;
  for (let i = 0; i < PACKETS; i++) {
    const msg = packet();
    if (live.length > 0 && random() < 0.35) {
      const target = pick(live);
      // Most from the transfer's own peer (so ACKs can move it on), some from strangers.
      const from = random() < 0.7 ? target.peer! : pick(peers);
      const m = random() < 0.5 ? encodeAck(int(8)) : msg;
      target.handler!(m, from);
      toTransfers++;
    } else {
      listener.handler!(msg, pick(peers));
    }
    if (i % 250 === 0) await new Promise((r) => setImmediate(r));
  }
  const fuzzMs = performance.now() - started;

  // Every transfer ends (timeouts are 15 ms, one retry): none may leak.
  for (let i = 0; i < 200 && server.stats().active > 0; i++) await new Promise((r) => setTimeout(r, 25));
  assert.equal(server.stats().active, 0, 'every fuzzed transfer was released');
  assert.ok(toTransfers > 1000, `packets reached live transfers (${toTransfers})`);
  const s = server.stats();
  assert.ok(s.failed > 1000 && s.served + s.aborted + s.failed > 1000, JSON.stringify(s));

  // Still serving, byte-identical.
  const r = await tftpGet({ host: HOST, port, file: 'medium.bin', blksize: 1468, windowsize: 8, retransmitMs: 500 });
  assert.ok(r.data.equals(medium));
  assert.deepEqual(errors, [], 'no internal error was logged');
  await server.close();
  for (const sink of sinks) sink.close();
  t.diagnostic(`fuzzed in ${Math.round(fuzzMs)} ms; ${toTransfers} packets to live transfers; sockets opened ${tapped.length}; ${JSON.stringify(s)}`);
  assert.ok(fuzzMs < 60_000, `fuzzing took ${Math.round(fuzzMs)} ms`);
});
