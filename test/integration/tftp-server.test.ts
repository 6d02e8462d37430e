/**
 * The TFTP server on loopback, driven by the module's own client and by raw
 * packets: sizes at the block edges, every option, block-number rollover,
 * refusals with their error numbers, limits, 50 transfers at once.
 */
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tftpGet, type TftpGetOptions } from '../../src/protocols/tftp/client.js';
import { decodePacket, encodeAck, encodeRequest, type TftpPacket } from '../../src/protocols/tftp/codec.js';
import { OPCODES } from '../../src/protocols/tftp/constants.js';
import { TftpError, TftpPeerError } from '../../src/protocols/tftp/errors.js';
import { FolderFileProvider } from '../../src/protocols/tftp/file-provider.js';
import { TftpServer, type TftpServerOptions, type TransferSummary } from '../../src/protocols/tftp/server.js';

const HOST = '127.0.0.1';
let root: string;
const files: Record<string, Buffer> = {};

before(() => {
  root = mkdtempSync(join(tmpdir(), 'tftp-int-'));
  const put = (name: string, data: Buffer): void => {
    files[name] = data;
    writeFileSync(join(root, name), data);
  };
  put('small.bin', randomBytes(1000));
  put('exact.bin', randomBytes(512 * 8));
  put('exact1468.bin', randomBytes(1468 * 5));
  put('empty.bin', Buffer.alloc(0));
  put('one.bin', randomBytes(512));
  put('medium.bin', randomBytes(3 * 1024 * 1024 + 77));
  put('text.txt', Buffer.from('#!ipxe\nchain http://server/boot.ipxe\r\nbare\rcr\n'.repeat(50)));
  // 33 MiB at blksize 512 is 67,585 blocks: the block number rolls over past 65535.
  put('huge.bin', randomBytes(33 * 1024 * 1024));
});
after(() => rmSync(root, { recursive: true, force: true }));

async function withServer<T>(fn: (port: number, server: TftpServer) => Promise<T>, options: Partial<TftpServerOptions> = {}): Promise<T> {
  const server = new TftpServer({ files: new FolderFileProvider({ root }), maxTransfersPerClient: 64, ...options });
  const { port } = await server.listen(0, HOST);
  try {
    return await fn(port, server);
  } finally {
    await server.close();
  }
}

const get = (port: number, file: string, o: Partial<TftpGetOptions> = {}) => tftpGet({ host: HOST, port, file, retransmitMs: 500, ...o });

async function peerErrorOf(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof TftpPeerError, `expected an ERROR from the server, got ${String(err)}`);
    return { code: err.peerCode, message: err.peerMessage };
  }
  assert.fail('the transfer succeeded');
}

/** Polls until `cond` holds (or `ms` pass): events trail the client's last packet, more so on a loaded machine. */
async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
}

/** A bound loopback socket, closed when the test ends whatever happens (an open socket keeps the run alive). */
async function openSocket(t: TestContext): Promise<dgram.Socket> {
  const sock = dgram.createSocket('udp4');
  t.after(() => {
    try {
      sock.close();
    } catch {
      // already closed
    }
  });
  await new Promise<void>((r) => sock.bind(0, HOST, r));
  return sock;
}

/** Sends raw bytes to the server's request port; collects replies for a short while. */
async function raw(port: number, packets: Buffer[], expect: number): Promise<Array<{ packet: TftpPacket; port: number }>> {
  const sock = dgram.createSocket('udp4');
  const replies: Array<{ packet: TftpPacket; port: number }> = [];
  sock.on('message', (msg, rinfo) => replies.push({ packet: decodePacket(msg), port: rinfo.port }));
  await new Promise<void>((r) => sock.bind(0, HOST, r));
  for (const p of packets) sock.send(p, port, HOST);
  await until(() => replies.length >= expect);
  // A little longer, to catch replies that should not come.
  await new Promise((r) => setTimeout(r, 100));
  sock.close();
  return replies;
}

test('small, exact-multiple and empty files, lock-step at 512: byte-identical; served events', async () => {
  await withServer(async (port, server) => {
    const served: TransferSummary[] = [];
    server.on('served', (s) => served.push(s));
    for (const name of ['small.bin', 'exact.bin', 'empty.bin', 'one.bin']) {
      const r = await get(port, name, { dallyMs: 0 });
      assert.deepEqual(r.data, files[name], name);
      assert.notEqual(r.serverPort, port, 'each transfer runs on its own port');
      assert.deepEqual(r.oack, {}, 'no options asked, no OACK');
    }
    await until(() => served.length >= 4);
    assert.deepEqual(served.map((s) => [s.path, s.bytes, s.size]), [
      ['small.bin', 1000, 1000], ['exact.bin', 4096, 4096], ['empty.bin', 0, 0], ['one.bin', 512, 512],
    ]);
    const s = served[0]!;
    assert.equal(s.peer.address, HOST);
    assert.ok(s.peer.port > 0);
    assert.ok(s.durationMs >= 0);
    assert.equal(s.blocksSent, 2);
    assert.equal(s.retransmits, 0);
    assert.equal(server.stats().served, 4);
  });
});

test('every option: blksize, windowsize, tsize, timeout; only asked options are acknowledged', async () => {
  await withServer(async (port) => {
    for (const [name, blksize, windowsize] of [
      ['exact1468.bin', 1468, 4], ['exact1468.bin', 1468, 1], ['medium.bin', 1468, 16], ['medium.bin', 8192, 8], ['small.bin', 8, 3], ['medium.bin', 65464, 2],
    ] as const) {
      const r = await get(port, name, { blksize, windowsize, tsize: true, timeout: 2 });
      assert.deepEqual(r.data, files[name], `${name} ${blksize}/${windowsize}`);
      assert.deepEqual(r.oack, { blksize: String(blksize), windowsize: String(windowsize), tsize: String(files[name]!.length), timeout: '2' });
    }
    const only = await get(port, 'small.bin', { blksize: 1024 });
    assert.deepEqual(only.oack, { blksize: '1024' });
    const unknown = await get(port, 'small.bin', { extraOptions: [{ name: 'rollover', value: '0' }, { name: 'multicast', value: '' }] });
    assert.deepEqual(unknown.oack, {}, 'unknown options are ignored: no OACK at all');
    assert.deepEqual(unknown.data, files['small.bin']);
    const big = await get(port, 'small.bin', { blksize: 70000 });
    assert.equal(big.oack.blksize, '65464', 'above the RFC 2348 maximum: answered with the maximum');
    const wide = await get(port, 'medium.bin', { blksize: 1468, windowsize: 65535 });
    assert.equal(wide.oack.windowsize, '64', 'windowsize answered with the server ceiling');
    assert.deepEqual(wide.data, files['medium.bin']);
  });
});

test('blksize is clamped to the path MTU; windowsize to the window memory', async () => {
  await withServer(async (port) => {
    const r = await get(port, 'medium.bin', { blksize: 9000, windowsize: 64 });
    assert.equal(r.oack.blksize, '1468', 'MTU 1500 - 20 (IP) - 8 (UDP) - 4 (TFTP)');
    assert.equal(r.oack.windowsize, String(Math.floor(32768 / 1468)));
    assert.deepEqual(r.data, files['medium.bin']);
  }, { pathMtu: () => 1500, maxWindowBytes: 32768 });
  await withServer(async (port) => {
    const r = await get(port, 'small.bin', { blksize: 9000 });
    assert.equal(r.oack.blksize, '1468', 'an unknown path MTU is taken as Ethernet\'s');
  }, { pathMtu: () => undefined });
  await withServer(async (port) => {
    const r = await get(port, 'small.bin', { blksize: 65464 });
    assert.equal(r.oack.blksize, '65464', 'the loopback MTU (65536) allows the largest block');
  });
});

test('tsize probe (OVMF: RRQ tsize+blksize+windowsize, then ERROR after the OACK) is an abort, not a failure', async () => {
  await withServer(async (port, server) => {
    const aborted: Array<{ peerError: { code: number } }> = [];
    const failed: unknown[] = [];
    server.on('aborted', (s) => aborted.push(s));
    server.on('failed', (s) => failed.push(s));
    const probe = await get(port, 'medium.bin', { probeOnly: true, blksize: 1468, windowsize: 4 });
    assert.equal(probe.oack.tsize, String(files['medium.bin']!.length));
    const r = await get(port, 'medium.bin', { blksize: 1468, windowsize: 4 });
    assert.deepEqual(r.data, files['medium.bin']);
    await until(() => aborted.length >= 1);
    assert.equal(aborted.length, 1);
    assert.equal(aborted[0]!.peerError.code, 0);
    assert.deepEqual(failed, []);
  });
});

test('netascii: LF sent as CR LF, CR as CR NUL; tsize is the translated size', async () => {
  await withServer(async (port) => {
    const r = await get(port, 'text.txt', { mode: 'netascii', tsize: true });
    assert.deepEqual(r.data, files['text.txt']);
    const text = files['text.txt']!;
    const crlf = text.filter((b) => b === 10 || b === 13).length;
    assert.equal(r.oack.tsize, String(text.length + crlf));
  });
  await withServer(async (port) => {
    const e = await peerErrorOf(get(port, 'small.bin', { mode: 'netascii' }));
    assert.equal(e.code, 0);
  }, { maxNetasciiBytes: 100 });
});

test('a file of more than 65535 blocks: the block number rolls over to 0', async () => {
  await withServer(async (port, server) => {
    const served: TransferSummary[] = [];
    server.on('served', (s) => served.push(s));
    const r = await get(port, 'huge.bin', { blksize: 512, windowsize: 64 });
    assert.ok(r.data.equals(files['huge.bin']!), 'byte-identical after the rollover');
    await until(() => served.length >= 1);
    assert.equal(served[0]?.bytes, 33 * 1024 * 1024);
    // Exact even if a loaded machine forced a retransmission.
    assert.equal(served[0]!.blocksSent - served[0]!.retransmits, 33 * 2048 + 1, 'each of the 67,585 blocks sent');
  });
});

test('refusals: missing (1), traversal and absolute escapes (2), write (2), bad option (8), bad mode (4)', async () => {
  await withServer(async (port) => {
    assert.equal((await peerErrorOf(get(port, 'missing.bin'))).code, 1);
    assert.equal((await peerErrorOf(get(port, '/etc/passwd'))).code, 1, 'absolute paths are read inside the root, where there is none');
    for (const name of ['../etc/passwd', '..', 'a/../../etc/passwd', '..\\..\\etc\\passwd', `${root}/../x`]) {
      assert.equal((await peerErrorOf(get(port, name))).code, 2, name);
    }
    assert.equal((await peerErrorOf(get(port, 'small.bin', { extraOptions: [{ name: 'blksize', value: '4' }] }))).code, 8);
    assert.equal((await peerErrorOf(get(port, 'small.bin', { extraOptions: [{ name: 'timeout', value: '0' }] }))).code, 8);
    assert.equal((await peerErrorOf(get(port, 'small.bin', { extraOptions: [{ name: 'windowsize', value: 'x' }] }))).code, 8);

    const replies = await raw(port, [
      encodeRequest(OPCODES.WRQ, 'upload.bin', 'octet'),
      Buffer.concat([encodeRequest(OPCODES.RRQ, 'small.bin', 'octet', [{ name: 'blksize', value: '512' }]), Buffer.from('BLKSIZE\x001024\x00')]),
      encodeRequest(OPCODES.RRQ, 'small.bin', 'mail'),
      Buffer.from('\x00\x01small.bin\x00octet', 'latin1'),
      Buffer.from('\x00\x01small.bin', 'latin1'),
      Buffer.from([0, 9, 1, 2, 3]),
      Buffer.from([0, 0]),
      encodeAck(1),
      Buffer.from([0, 5, 0, 1, 0x41, 0]), // an ERROR: never answered
      Buffer.from([7]), // too short: dropped
    ], 8);
    const codes = replies.map((r) => (r.packet.opcode === OPCODES.ERROR ? r.packet.code : -r.packet.opcode)).sort();
    // WRQ 2; duplicated option 8; mail mode 4; two missing NULs 4; two unknown opcodes 4; ACK to the request port 4.
    assert.deepEqual(codes, [2, 4, 4, 4, 4, 4, 4, 8]);
  });
});

test('limits: per client and overall; a refused request gets error 0 and the others go on', async (t) => {
  await withServer(async (port, server) => {
    const failed: string[] = [];
    server.on('failed', (s) => failed.push(s.error.code));
    for (let i = 0; i < 2; i++) (await openSocket(t)).send(encodeRequest(OPCODES.RRQ, 'medium.bin', 'octet'), port, HOST);
    await until(() => server.stats().active === 2);
    assert.equal(server.stats().active, 2);
    const e = await peerErrorOf(get(port, 'small.bin'));
    assert.equal(e.code, 0);
    assert.match(e.message, /busy/i);
    assert.deepEqual(failed, ['TFTP_BUSY']);
  }, { maxTransfersPerClient: 2, timeoutMs: 5000 });
  await withServer(async (port) => {
    const results = await Promise.allSettled([0, 1, 2].map(() => get(port, 'medium.bin', { blksize: 1468 })));
    const busy = results.filter((r) => r.status === 'rejected');
    assert.equal(busy.length, 1, 'with maxTransfers 2, one of three concurrent requests is refused');
  }, { maxTransfers: 2 });
});

test('a resent request (same TID, same bytes) does not start a second transfer', async (t) => {
  await withServer(async (port, server) => {
    const sock = await openSocket(t);
    const fromPorts = new Set<number>();
    const blocks: number[] = [];
    sock.on('message', (msg, rinfo) => {
      fromPorts.add(rinfo.port);
      const p = decodePacket(msg);
      if (p.opcode === OPCODES.DATA) blocks.push(p.block);
    });
    const rrq = encodeRequest(OPCODES.RRQ, 'small.bin', 'octet');
    sock.send(rrq, port, HOST);
    sock.send(rrq, port, HOST);
    sock.send(rrq, port, HOST);
    await until(() => blocks.length > 0);
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(fromPorts.size, 1, 'one transfer port answered');
    assert.deepEqual(blocks, [1]);
    assert.equal(server.stats().active, 1);
  }, { timeoutMs: 5000 });
});

test('a copy of a request arriving just after its file was served starts nothing; later, the same port may ask again', async (t) => {
  await withServer(async (port, server) => {
    const sock = await openSocket(t);
    const rrq = encodeRequest(OPCODES.RRQ, 'small.bin', 'octet');
    let dataPackets = 0;
    /** Lock-step download from this one port; the request is resent every 200 ms until answered, as clients do. */
    const download = (): Promise<Buffer> => new Promise((resolve, reject) => {
      const parts: Buffer[] = [];
      let answered = false;
      const resend = setInterval(() => {
        if (!answered) sock.send(rrq, port, HOST);
      }, 200);
      const timer = setTimeout(() => {
        clearInterval(resend);
        reject(new Error('no answer'));
      }, 5000);
      const onMessage = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
        const p = decodePacket(msg);
        if (p.opcode !== OPCODES.DATA) return;
        answered = true;
        parts.push(Buffer.from(p.data));
        sock.send(encodeAck(p.block), rinfo.port, HOST);
        if (p.data.length < 512) {
          clearTimeout(timer);
          clearInterval(resend);
          sock.off('message', onMessage);
          resolve(Buffer.concat(parts));
        }
      };
      sock.on('message', onMessage);
      sock.send(rrq, port, HOST);
    });
    assert.deepEqual(await download(), files['small.bin']);
    // A late copy of the request: no second transfer to a client that has its file.
    sock.on('message', () => dataPackets++);
    sock.send(rrq, port, HOST);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(dataPackets, 0);
    assert.equal(server.stats().active, 0);
    sock.removeAllListeners('message');
    // After requestMemoryMs the same port asking again is a new download.
    await new Promise((r) => setTimeout(r, 400));
    assert.deepEqual(await download(), files['small.bin']);
    await until(() => server.stats().served === 2);
    assert.equal(server.stats().served, 2);
  }, { requestMemoryMs: 500 });
});

test('50 concurrent transfers, mixed sizes and options, all byte-identical', async () => {
  await withServer(async (port, server) => {
    const names = ['small.bin', 'exact.bin', 'empty.bin', 'medium.bin', 'exact1468.bin'];
    const jobs = Array.from({ length: 50 }, (_, i) => {
      const name = names[i % names.length]!;
      const o: Partial<TftpGetOptions> = i % 3 === 0 ? {} : i % 3 === 1 ? { blksize: 1468 } : { blksize: 1468, windowsize: 8, tsize: true };
      return get(port, name, o).then((r) => ({ name, r }));
    });
    const done = await Promise.all(jobs);
    for (const { name, r } of done) assert.ok(r.data.equals(files[name]!), name);
    assert.equal(new Set(done.map((d) => d.r.serverPort)).size >= 2, true);
    await until(() => server.stats().served === 50);
    assert.equal(server.stats().served, 50);
    assert.equal(server.stats().active, 0);
  }, { maxTransfersPerClient: 50 });
});

test('close() ends running transfers with error 0 and waits for them', async (t) => {
  const server = new TftpServer({ files: new FolderFileProvider({ root }), timeoutMs: 5000 });
  t.after(() => server.close());
  const { port } = await server.listen(0, HOST);
  const sock = await openSocket(t);
  const errors: TftpPacket[] = [];
  let data = 0;
  sock.on('message', (msg) => {
    const p = decodePacket(msg);
    if (p.opcode === OPCODES.ERROR) errors.push(p);
    if (p.opcode === OPCODES.DATA) data++;
  });
  sock.send(encodeRequest(OPCODES.RRQ, 'medium.bin', 'octet'), port, HOST);
  for (let i = 0; i < 200 && data === 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(server.stats().active, 1);
  await server.close();
  for (let i = 0; i < 200 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(errors, [{ opcode: OPCODES.ERROR, code: 0, message: 'Server shutting down' }]);
  assert.equal(server.stats().active, 0);
});

test('a provider slower than readTimeoutMs: error 0 to the client, and the late file is closed', async () => {
  let closed = 0;
  const slow = {
    open: () => new Promise<import('../../src/protocols/tftp/file-provider.js').TftpFile>((resolve) => setTimeout(() => resolve({
      size: 10, read: async () => 10, close: () => void closed++,
    }), 300)),
  };
  const failed: string[] = [];
  await withServer(async (port, server) => {
    server.on('failed', (s) => failed.push(s.error.code));
    const e = await peerErrorOf(get(port, 'anything'));
    assert.deepEqual(e, { code: 0, message: 'Read error' });
    await until(() => closed === 1);
  }, { files: slow, readTimeoutMs: 100 });
  assert.deepEqual(failed, ['TFTP_READ_FAILED']);
  assert.equal(closed, 1);
});

test('a provider that throws something other than a TftpError: error 0, logged, server unharmed', async () => {
  let calls = 0;
  const broken = {
    open: async () => {
      calls++;
      if (calls === 1) throw new Error('database exploded');
      return (await import('../../src/protocols/tftp/file-provider.js')).bufferFile(Buffer.from('ok'));
    },
  };
  await withServer(async (port) => {
    assert.deepEqual(await peerErrorOf(get(port, 'x')), { code: 0, message: 'Internal error' });
    assert.equal((await get(port, 'x')).data.toString(), 'ok');
  }, { files: broken });
});

test('options are validated once, every problem listed', () => {
  assert.throws(
    () => new TftpServer({ files: new FolderFileProvider({ root: '/' }), maxBlksize: 4, maxWindowsize: 0, transferPortRange: [5, 2] }),
    (e: unknown) => e instanceof TftpError && e.code === 'TFTP_CONFIG_INVALID' && /maxBlksize/.test(e.message) && /maxWindowsize/.test(e.message) && /transferPortRange/.test(e.message),
  );
});

test('transferPortRange: transfer sockets bind inside it', async () => {
  const base = 20000 + Math.floor(Math.random() * 20000);
  await withServer(async (port) => {
    const r = await get(port, 'small.bin');
    assert.ok(r.serverPort >= base && r.serverPort <= base + 50, `port ${r.serverPort}`);
  }, { transferPortRange: [base, base + 50] });
});

test('IPv6: on ::1, and a dual-stack listener on :: serving an IPv4 client', async (t) => {
  const probe = dgram.createSocket('udp6');
  const haveV6 = await new Promise<boolean>((r) => {
    probe.once('error', () => r(false));
    probe.bind(0, '::1', () => r(true));
  });
  probe.close();
  if (!haveV6) {
    t.skip('no IPv6 loopback here');
    return;
  }
  for (const [listen, host] of [['::1', '::1'], ['::', HOST]] as const) {
    const server = new TftpServer({ files: new FolderFileProvider({ root }) });
    const { port } = await server.listen(0, listen);
    try {
      const r = await tftpGet({ host, port, file: 'medium.bin', blksize: 1468, windowsize: 8, tsize: true });
      assert.ok(r.data.equals(files['medium.bin']!), `${listen} <- ${host}`);
    } finally {
      await server.close();
    }
  }
});

test('an event listener that throws does not break the server', async () => {
  await withServer(async (port, server) => {
    server.on('request', () => {
      throw new Error('listener bug');
    });
    server.on('served', () => {
      throw new Error('listener bug');
    });
    const r = await get(port, 'small.bin');
    assert.deepEqual(r.data, files['small.bin']);
    assert.equal((await get(port, 'small.bin')).bytes, 1000);
    await until(() => server.stats().served === 2);
    assert.equal(server.stats().served, 2);
  });
});
