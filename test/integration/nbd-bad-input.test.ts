/**
 * Broken and hostile input: each case gets the right error reply or a
 * clean close of its own connection, while a healthy client on the same
 * server keeps reading and checking data the whole time.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryDevice } from '../../src/storage/memory-device.js';
import { COMMANDS as C, ERRORS as E, MAGICS, OPTIONS as O, REPLY_TYPES as R } from '../../src/protocols/nbd/constants.js';
import { encodeClientFlags, encodeInfoRequest, encodeMetaContextRequest, encodeOption, encodeRequestHeader } from '../../src/protocols/nbd/codec.js';
import { ByteReader, NbdTestClient, destroyAllSockets, openSocket } from '../helpers/nbd-client.js';
import { patternBytes, startNbdServer, type StartedNbd } from '../helpers/nbd.js';
import { sleep, until } from '../helpers/nbd-devices.js';

const MiB = 1024 * 1024;
const SIZE = 4 * MiB;

/** Reads random ranges forever and counts mismatches, until stopped. */
class HealthyClient {
  reads = 0;
  mismatches: string[] = [];
  errors: string[] = [];
  private running = true;
  private done: Promise<void>;
  constructor(
    private readonly client: NbdTestClient,
    private readonly expected: Buffer,
  ) {
    this.done = this.loop();
  }
  private async loop(): Promise<void> {
    let seed = 12345;
    while (this.running) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const len = 1 + (seed % (256 * 1024));
      const off = (seed >>> 3) % (SIZE - len);
      try {
        const [a, b] = await Promise.all([this.client.read(off, len), this.client.read(SIZE - len, len)]);
        if (!a.equals(this.expected.subarray(off, off + len))) this.mismatches.push(`${off}+${len}`);
        if (!b.equals(this.expected.subarray(SIZE - len))) this.mismatches.push(`end-${len}`);
        this.reads += 2;
      } catch (e) {
        this.errors.push(String(e));
        return;
      }
    }
  }
  /** Waits for a few more good reads: the server is still serving. */
  async assertServing(): Promise<void> {
    const n = this.reads;
    await until(() => this.reads >= n + 4 || this.errors.length > 0, 5000, 'healthy client reads');
    assert.deepEqual(this.errors, []);
    assert.deepEqual(this.mismatches, []);
  }
  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }
}

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const req = (type: number, offset: number | bigint, length: number, flags = 0, cookie = 1n): Buffer => encodeRequestHeader({ type, flags, cookie, offset, length });

describe('nbd bad input', () => {
  let nbd: StartedNbd;
  let healthy: HealthyClient;
  const expected = patternBytes(SIZE, 99);

  before(async () => {
    nbd = await startNbdServer(
      {
        // The healthy client's export is never written by the bad cases.
        disk: { device: new MemoryDevice(SIZE, { data: expected }) },
        scratch: { device: new MemoryDevice(SIZE) },
      },
      { limits: { handshakeTimeoutMs: 3000, maxPayload: MiB, lingerMs: 500 } },
    );
    healthy = new HealthyClient(await NbdTestClient.open(nbd.port, 'disk'), expected);
  });

  after(async () => {
    await healthy.stop();
    assert.ok(healthy.reads > 100, `healthy client made only ${healthy.reads} reads`);
    assert.deepEqual(healthy.mismatches, []);
    assert.deepEqual(healthy.errors, []);
    destroyAllSockets();
    await until(() => nbd.server.connectionCount === 0, 5000, 'all connections closed');
    await nbd.close();
    assert.equal(nbd.resolver.openCount, 0);
  });

  /** A raw connection past the greeting, with client flags sent. */
  async function raw(): Promise<NbdTestClient> {
    return NbdTestClient.connect(nbd.port);
  }

  /** A connection in transmission on the scratch export. */
  async function transmitting(structured = true): Promise<NbdTestClient> {
    return NbdTestClient.open(nbd.port, 'scratch', { structured });
  }

  async function assertClosed(c: NbdTestClient, what: string): Promise<void> {
    assert.ok(await c.reader.waitEnd(4000), `${what}: the server closed the connection`);
    c.close();
    await healthy.assertServing();
  }

  test('truncated frames followed by a close', async () => {
    const cases: [string, (c: NbdTestClient) => void][] = [
      ['half the client flags', (c) => c.send(hex('0000'))],
      ['half an option header', (c) => c.send(encodeOption(O.NBD_OPT_GO).subarray(0, 9))],
      ['an option without all its data', (c) => c.send(encodeOption(O.NBD_OPT_GO, encodeInfoRequest({ name: 'scratch', infoRequests: [] })).subarray(0, 20))],
    ];
    for (const [what, act] of cases) {
      const s = await openSocket(nbd.port);
      const reader = new ByteReader(s);
      await reader.readExact(18);
      const c = { send: (b: Buffer) => s.write(b) } as unknown as NbdTestClient;
      if (what !== 'half the client flags') s.write(encodeClientFlags(3));
      act(c);
      s.end();
      assert.ok(await reader.waitEnd(3000), what);
      s.destroy();
    }
    // In transmission: half a request header, half a write's data.
    const a = await transmitting();
    a.send(req(C.NBD_CMD_READ, 0, 10).subarray(0, 13));
    a.socket.end();
    await assertClosed(a, 'half a request header');
    const b = await transmitting();
    b.send(Buffer.concat([req(C.NBD_CMD_WRITE, 0, 4096), Buffer.alloc(1000, 0xee)]));
    b.socket.end();
    await assertClosed(b, 'half a write payload');
    const check = await transmitting();
    assert.ok((await check.read(0, 4096)).every((x) => x === 0), 'the truncated write was not applied');
    check.close();
    // A reset in the middle of a write.
    const r = await transmitting();
    r.send(Buffer.concat([req(C.NBD_CMD_WRITE, 0, 65536), Buffer.alloc(100)]));
    await sleep(20);
    r.socket.resetAndDestroy();
    await healthy.assertServing();
  });

  test('wrong magics close the connection; earlier requests are still answered', async () => {
    const opt = await raw();
    opt.send(hex('49484156454f5055 00000007 00000000'));
    await assertClosed(opt, 'wrong option magic');

    for (const magic of [0x25609514, 0x12560953, MAGICS.NBD_EXTENDED_REQUEST_MAGIC, 0]) {
      const c = await transmitting();
      const ok = c.read(4096, 512);
      const bad = req(C.NBD_CMD_READ, 0, 512);
      bad.writeUInt32BE(magic, 0);
      c.send(bad);
      assert.equal((await ok).length, 512, 'the read before the bad frame is answered');
      await assertClosed(c, `request magic 0x${magic.toString(16)}`);
    }
  });

  test('lengths that lie', async () => {
    // GO whose name length runs past the option: ERR_INVALID, haggling continues.
    const c = await raw();
    const payload = encodeInfoRequest({ name: 'scratch', infoRequests: [] });
    payload.writeUInt32BE(1000, 0);
    assert.equal((await c.optionOnce(O.NBD_OPT_GO, payload)).type, R.NBD_REP_ERR_INVALID);
    // Meta context query count that does not fit.
    await c.optionOnce(O.NBD_OPT_STRUCTURED_REPLY);
    const meta = encodeMetaContextRequest({ name: 'scratch', queries: ['base:allocation'] });
    meta.writeUInt32BE(5, 11);
    assert.equal((await c.optionOnce(O.NBD_OPT_SET_META_CONTEXT, meta)).type, R.NBD_REP_ERR_INVALID);
    // Query length past the end.
    const meta2 = encodeMetaContextRequest({ name: 'scratch', queries: ['base:allocation'] });
    meta2.writeUInt32BE(0xfffffff0, 15);
    assert.equal((await c.optionOnce(O.NBD_OPT_LIST_META_CONTEXT, meta2)).type, R.NBD_REP_ERR_INVALID);
    await c.go('scratch');
    assert.equal((await c.read(0, 10)).length, 10);
    // A write whose length says more than is sent: what follows is taken as
    // its data, so the read after it is never seen as a read.
    c.send(Buffer.concat([req(C.NBD_CMD_WRITE, 8192, 100, 0, 77n), Buffer.alloc(10, 1), req(C.NBD_CMD_READ, 0, 10, 0, 78n)]));
    await sleep(100);
    assert.equal(c.reader.buffered, 0, 'no reply: the write is still waiting for its data');
    c.send(Buffer.alloc(62, 2));
    await sleep(100);
    c.socket.end();
    assert.ok(await c.reader.waitEnd(3000));
    const check = await transmitting();
    const back = await check.read(8192, 100);
    assert.deepEqual(back.subarray(0, 10), Buffer.alloc(10, 1), 'the write took the following bytes as its data');
    check.close();
    await healthy.assertServing();
  });

  test('huge lengths', async () => {
    // An option of 4 GiB: skipped while the client sends, then the handshake timeout ends it.
    const c = await raw();
    c.send(hex('49484156454f5054 00000003 ffffffff'));
    c.send(Buffer.alloc(MiB));
    assert.equal(c.reader.buffered, 0);
    await assertClosed(c, 'endless option');

    const t = await transmitting();
    assert.equal(await t.errorOf(C.NBD_CMD_READ, 0, 0xffffffff), E.NBD_EINVAL);
    assert.equal(await t.errorOf(C.NBD_CMD_READ, 0, MiB + 1), E.NBD_EOVERFLOW);
    assert.equal(await t.errorOf(C.NBD_CMD_TRIM, 0, 0xffffffff), E.NBD_EINVAL);
    assert.equal(await t.errorOf(C.NBD_CMD_WRITE_ZEROES, 0, 0xffffffff), E.NBD_ENOSPC);
    assert.equal(await t.errorOf(C.NBD_CMD_CACHE, 0, 0xffffffff), E.NBD_EINVAL);
    assert.equal(await t.errorOf(C.NBD_CMD_READ, 0xffffffffffffffffn, 0xffffffff), E.NBD_EINVAL);
    // A write over the maximum payload but within 32 MiB: consumed and refused.
    assert.equal(await t.errorOf(C.NBD_CMD_WRITE, 0, 2 * MiB, 0, Buffer.alloc(2 * MiB, 3)), E.NBD_EINVAL);
    assert.equal((await t.read(0, 10)).length, 10);
    // A write of 4 GiB: closed at once.
    t.send(req(C.NBD_CMD_WRITE, 0, 0xffffffff));
    await assertClosed(t, 'write of 4 GiB');
  });

  test('unknown options, commands and flags; out-of-range offsets', async () => {
    const c = await raw();
    for (const opt of [0, 99, 0x80000000, 0xffffffff]) assert.equal((await c.optionOnce(opt, Buffer.alloc(7))).type, R.NBD_REP_ERR_UNSUP);
    await c.go('scratch');
    for (const [type, flags] of [[10, 0], [0x7fff, 0], [C.NBD_CMD_READ, 0x40], [C.NBD_CMD_FLUSH, 0x8000], [C.NBD_CMD_BLOCK_STATUS, 0x2]] as const) {
      assert.equal(await c.errorOf(type, 0, 1, flags), E.NBD_EINVAL, `type ${type} flags ${flags}`);
    }
    assert.equal(await c.errorOf(C.NBD_CMD_READ, SIZE, 1), E.NBD_EINVAL);
    assert.equal(await c.errorOf(C.NBD_CMD_READ, 2n ** 63n, 1), E.NBD_EINVAL);
    assert.equal(await c.errorOf(C.NBD_CMD_WRITE, SIZE - 1, 2, 0, Buffer.alloc(2)), E.NBD_ENOSPC);
    assert.equal(await c.errorOf(C.NBD_CMD_WRITE, 2n ** 64n - 1n, 1, 0, Buffer.alloc(1)), E.NBD_ENOSPC);
    assert.equal(await c.errorOf(C.NBD_CMD_TRIM, SIZE, 1), E.NBD_EINVAL);
    // Still serving after all of it.
    assert.equal((await c.read(SIZE - 10, 10)).length, 10);
    c.close();
    await healthy.assertServing();
  });

  test('options after NBD_OPT_GO close the connection', async () => {
    const c = await raw();
    await c.go('scratch');
    c.send(encodeOption(O.NBD_OPT_LIST));
    c.send(encodeOption(O.NBD_OPT_LIST));
    await assertClosed(c, 'option in transmission');
    // And after NBD_OPT_EXPORT_NAME.
    const d = await raw();
    await d.exportName('scratch');
    d.send(encodeOption(O.NBD_OPT_GO, encodeInfoRequest({ name: 'disk', infoRequests: [] })));
    d.send(encodeOption(O.NBD_OPT_ABORT));
    await assertClosed(d, 'GO after EXPORT_NAME');
  });

  test('data after NBD_CMD_DISC is ignored; requests before it are answered; the close is clean', async () => {
    const c = await transmitting(false);
    const w = c.write(0, Buffer.alloc(4096, 5));
    const r = c.read(0, 4096);
    c.send(Buffer.concat([req(C.NBD_CMD_DISC, 0, 0, 0, 999n), req(C.NBD_CMD_WRITE, 0, 4096, 0, 1000n), Buffer.alloc(4096, 6), Buffer.alloc(100, 0xff)]));
    await w;
    assert.deepEqual(await r, Buffer.alloc(4096, 5));
    assert.ok(await c.reader.waitEnd(3000), 'closed after DISC');
    assert.equal(c.reader.buffered, 0, 'nothing answered after DISC');
    c.close();
    const check = await transmitting();
    assert.deepEqual(await check.read(0, 4096), Buffer.alloc(4096, 5), 'the write after DISC was not applied');
    check.close();
    // DISC with nonzero offset and length still disconnects.
    const d = await transmitting();
    d.send(req(C.NBD_CMD_DISC, 5, 5));
    await assertClosed(d, 'DISC with offset');
  });

  test('garbage instead of a client, and many connections dropped mid-handshake', async () => {
    const g = await openSocket(nbd.port);
    const reader = new ByteReader(g);
    g.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    assert.ok(await reader.waitEnd(3000));
    g.destroy();
    const sockets = await Promise.all(Array.from({ length: 30 }, () => openSocket(nbd.port)));
    for (const [i, s] of sockets.entries()) {
      if (i % 3 === 0) s.write(encodeClientFlags(3));
      if (i % 3 === 1) s.write(Buffer.concat([encodeClientFlags(3), encodeOption(O.NBD_OPT_GO, encodeInfoRequest({ name: 'scratch', infoRequests: [] }))]));
      if (i % 2 === 0) s.resetAndDestroy();
      else s.destroy();
    }
    await until(() => nbd.server.connectionCount === 1, 5000, 'only the healthy connection left');
    await until(() => nbd.resolver.openCount === 1, 5000, 'only the healthy export open');
    await healthy.assertServing();
  });
});
