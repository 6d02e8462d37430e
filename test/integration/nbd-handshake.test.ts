/**
 * NBD option haggling over loopback against the in-process server:
 * every option, its replies byte for byte where proto.md fixes them, and
 * what is legal after what.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryDevice } from '../../src/storage/memory-device.js';
import { CLIENT_FLAGS, COMMANDS, ERRORS, HANDSHAKE_FLAGS, INFO_TYPES, OPTIONS, REPLY_TYPES, SIZES, TRANSMISSION_FLAGS as T } from '../../src/protocols/nbd/constants.js';
import { decodeInfo, decodeRepMetaContext, encodeClientFlags, encodeInfoRequest, encodeMetaContextRequest, encodeOption } from '../../src/protocols/nbd/codec.js';
import { NbdTestClient, openSocket, ByteReader } from '../helpers/nbd-client.js';
import { patternBytes, startNbdServer, type StartedNbd } from '../helpers/nbd.js';
import { until } from '../helpers/nbd-devices.js';

const R = REPLY_TYPES;
const O = OPTIONS;

describe('nbd handshake', () => {
  let nbd: StartedNbd;
  const data = patternBytes(64 * 1024, 7);

  before(async () => {
    nbd = await startNbdServer({
      disk: { device: new MemoryDevice(1024 * 1024, { data }), description: 'a test disk' },
      ro: { device: new MemoryDevice(65536, { readOnly: true, multiConn: false }) },
      secret: { device: new MemoryDevice(4096), forbidden: true },
      hidden: { device: new MemoryDevice(4096), hidden: true },
      '': { device: new MemoryDevice(8192), description: 'default export' },
    });
  });
  after(async () => {
    await nbd.close();
    assert.equal(nbd.resolver.openCount, 0, 'every opened export was released');
  });

  test('greeting offers fixed newstyle and no zeroes', async () => {
    const c = await NbdTestClient.connect(nbd.port);
    assert.equal(c.handshakeFlags, HANDSHAKE_FLAGS.NBD_FLAG_FIXED_NEWSTYLE | HANDSHAKE_FLAGS.NBD_FLAG_NO_ZEROES);
    c.close();
  });

  test('NBD_OPT_LIST: one NBD_REP_SERVER per visible export, then ACK; data is invalid', async () => {
    const c = await NbdTestClient.connect(nbd.port);
    const list = await c.list();
    assert.deepEqual(list.map((e) => e.name).sort(), ['', 'disk', 'ro', 'secret']);
    assert.equal(list.find((e) => e.name === 'disk')!.description, 'a test disk');
    const r = await c.optionOnce(O.NBD_OPT_LIST, Buffer.from('x'));
    assert.equal(r.type, R.NBD_REP_ERR_INVALID);
    assert.equal(r.option, O.NBD_OPT_LIST);
    c.close();
  });

  test('NBD_OPT_LIST when the resolver fails: an error reply, haggling goes on', async () => {
    nbd.resolver.listError = new Error('database is gone');
    try {
      const c = await NbdTestClient.connect(nbd.port);
      const r = await c.optionOnce(O.NBD_OPT_LIST);
      assert.equal(r.type, R.NBD_REP_ERR_PLATFORM);
      assert.doesNotMatch(r.payload.toString(), /database/, 'internal details stay in the log');
      const info = await c.info('disk');
      assert.equal(info.size, 1024 * 1024);
      c.close();
    } finally {
      nbd.resolver.listError = null;
    }
  });

  test('NBD_OPT_INFO: export, name, description, block size; the export is released', async () => {
    const before = nbd.resolver.releases;
    const c = await NbdTestClient.connect(nbd.port);
    const r = await c.info('disk', [INFO_TYPES.NBD_INFO_NAME, INFO_TYPES.NBD_INFO_DESCRIPTION, INFO_TYPES.NBD_INFO_BLOCK_SIZE]);
    assert.equal(r.size, 1024 * 1024);
    const expectFlags = T.NBD_FLAG_HAS_FLAGS | T.NBD_FLAG_SEND_FLUSH | T.NBD_FLAG_SEND_FUA | T.NBD_FLAG_SEND_TRIM | T.NBD_FLAG_SEND_WRITE_ZEROES | T.NBD_FLAG_SEND_FAST_ZERO | T.NBD_FLAG_CAN_MULTI_CONN | T.NBD_FLAG_SEND_CACHE;
    assert.equal(r.transmissionFlags, expectFlags);
    assert.deepEqual(r.infos.find((i) => i.type === INFO_TYPES.NBD_INFO_NAME), { type: 1, name: 'disk' });
    assert.deepEqual(r.infos.find((i) => i.type === INFO_TYPES.NBD_INFO_DESCRIPTION), { type: 2, description: 'a test disk' });
    assert.deepEqual(r.infos.find((i) => i.type === INFO_TYPES.NBD_INFO_BLOCK_SIZE), { type: 3, minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 });
    // The reply to NBD_INFO_EXPORT is 12 bytes.
    assert.equal(r.replies[0]!.payload.length, SIZES.INFO_EXPORT);
    await until(() => nbd.resolver.releases === before + 1, 2000, 'release after NBD_OPT_INFO');
    // Unrequested name/description are not sent; INFO then GO on the same connection works.
    const r2 = await c.info('ro', []);
    assert.equal(r2.infos.filter((i) => i.type === INFO_TYPES.NBD_INFO_NAME).length, 0);
    assert.equal(r2.transmissionFlags, T.NBD_FLAG_HAS_FLAGS | T.NBD_FLAG_READ_ONLY | T.NBD_FLAG_SEND_FLUSH | T.NBD_FLAG_SEND_CACHE);
    await c.go('disk');
    assert.deepEqual(await c.read(0, 4096), data.subarray(0, 4096));
    c.close();
  });

  test('NBD_OPT_INFO/GO on unknown and forbidden exports: ERR_UNKNOWN and ERR_POLICY, haggling goes on', async () => {
    const c = await NbdTestClient.connect(nbd.port);
    await assert.rejects(c.info('nope'), (e: { replyType?: number }) => e.replyType === R.NBD_REP_ERR_UNKNOWN);
    await assert.rejects(c.info('secret', [], O.NBD_OPT_GO), (e: { replyType?: number }) => e.replyType === R.NBD_REP_ERR_POLICY);
    // Malformed payload: ERR_INVALID.
    const bad = await c.optionOnce(O.NBD_OPT_GO, Buffer.from('00000009 61 0000'.replace(/ /g, ''), 'hex'));
    assert.equal(bad.type, R.NBD_REP_ERR_INVALID);
    // The default (empty) export and a hidden one can still be opened.
    const def = await c.info('');
    assert.equal(def.size, 8192);
    const hid = await c.info('hidden');
    assert.equal(hid.size, 4096);
    await c.go('disk');
    assert.deepEqual(await c.read(100, 100), data.subarray(100, 200));
    c.close();
  });

  test('NBD_OPT_EXPORT_NAME: size, flags and 124 zeroes unless NBD_FLAG_C_NO_ZEROES', async () => {
    const a = await NbdTestClient.connect(nbd.port, { clientFlags: CLIENT_FLAGS.NBD_FLAG_C_FIXED_NEWSTYLE });
    await a.exportName('disk', false);
    assert.equal(a.size, 1024 * 1024);
    assert.equal(a.transmissionFlags & T.NBD_FLAG_SEND_DF, 0, 'no DF without structured replies');
    assert.deepEqual(await a.read(0, 512), data.subarray(0, 512));
    a.close();
    const b = await NbdTestClient.connect(nbd.port);
    await b.exportName('disk', true);
    assert.deepEqual(await b.read(512, 512), data.subarray(512, 1024));
    b.close();
  });

  test('NBD_OPT_EXPORT_NAME with an unknown or forbidden name closes the connection', async () => {
    for (const name of ['nope', 'secret']) {
      const c = await NbdTestClient.connect(nbd.port);
      c.option(O.NBD_OPT_EXPORT_NAME, Buffer.from(name));
      assert.ok(await c.reader.waitEnd(2000), `connection closed after EXPORT_NAME ${name}`);
      assert.equal(c.reader.buffered, 0, 'nothing was sent back');
    }
  });

  test('NBD_OPT_ABORT: ACK, then the server closes', async () => {
    const c = await NbdTestClient.connect(nbd.port);
    const r = await c.optionOnce(O.NBD_OPT_ABORT, Buffer.from('ignored data'));
    assert.equal(r.type, R.NBD_REP_ACK);
    assert.ok(await c.reader.waitEnd(2000));
  });

  test('unknown options and NBD_OPT_STARTTLS get ERR_UNSUP and haggling goes on', async () => {
    const c = await NbdTestClient.connect(nbd.port);
    for (const opt of [O.NBD_OPT_STARTTLS, O.NBD_OPT_PEEK_EXPORT, O.NBD_OPT_EXTENDED_HEADERS, 0, 12, 0x7fffffff, 0xffffffff]) {
      const r = await c.optionOnce(opt, Buffer.from('some data'));
      assert.equal(r.type, R.NBD_REP_ERR_UNSUP, `option ${opt}`);
      assert.equal(r.option, opt);
    }
    await c.go('disk');
    assert.deepEqual(await c.read(0, 16), data.subarray(0, 16));
    c.close();
  });

  test('structured replies: ACK once, INVALID when repeated or given data', async () => {
    const c = await NbdTestClient.connect(nbd.port);
    assert.equal((await c.optionOnce(O.NBD_OPT_STRUCTURED_REPLY, Buffer.from('x'))).type, R.NBD_REP_ERR_INVALID);
    assert.equal((await c.optionOnce(O.NBD_OPT_STRUCTURED_REPLY)).type, R.NBD_REP_ACK);
    assert.equal((await c.optionOnce(O.NBD_OPT_STRUCTURED_REPLY)).type, R.NBD_REP_ERR_INVALID);
    const go = await c.go('disk');
    assert.ok(go.transmissionFlags & T.NBD_FLAG_SEND_DF);
    c.close();
  });

  test('meta contexts: SET before structured replies is invalid; LIST lists base:allocation', async () => {
    const c = await NbdTestClient.connect(nbd.port);
    const early = await c.setMetaContext('disk', ['base:allocation']);
    assert.equal(early[early.length - 1]!.type, R.NBD_REP_ERR_INVALID);
    // LIST before structured replies is answered (it changes nothing).
    assert.deepEqual((await c.listMetaContext('disk', [])).contexts, [{ contextId: 0, name: 'base:allocation' }]);
    await c.optionOnce(O.NBD_OPT_STRUCTURED_REPLY);
    assert.deepEqual((await c.listMetaContext('disk', ['base:'])).contexts, [{ contextId: 0, name: 'base:allocation' }]);
    assert.deepEqual((await c.listMetaContext('disk', ['base:allocation', 'base:allocation'])).contexts.length, 1);
    assert.deepEqual((await c.listMetaContext('disk', ['qemu:dirty-bitmap:x', 'base:other', 'x-foo:'])).contexts, []);
    const noColon = await c.listMetaContext('disk', ['allocation']);
    assert.equal(noColon.replies[noColon.replies.length - 1]!.type, R.NBD_REP_ERR_INVALID);
    // SET: "base:" selects nothing; base:allocation selects it with a nonzero id.
    let r = await c.setMetaContext('disk', ['base:']);
    assert.deepEqual(r.map((x) => x.type), [R.NBD_REP_ACK]);
    r = await c.setMetaContext('disk', ['x-unknown:thing', 'base:allocation']);
    assert.deepEqual(r.map((x) => x.type), [R.NBD_REP_META_CONTEXT, R.NBD_REP_ACK]);
    const ctx = decodeRepMetaContext(r[0]!.payload);
    assert.equal(ctx.name, 'base:allocation');
    // Malformed payload: INVALID, and it clears the selection (proto.md: SET replaces, even when failing).
    const bad = await c.optionOnce(O.NBD_OPT_SET_META_CONTEXT, Buffer.from('00000000 00000001'.replace(/ /g, ''), 'hex'));
    assert.equal(bad.type, R.NBD_REP_ERR_INVALID);
    await c.go('disk');
    assert.equal(await c.errorOf(COMMANDS.NBD_CMD_BLOCK_STATUS, 0, 4096), ERRORS.NBD_EINVAL);
    c.close();
  });

  test('block status needs the last SET_META_CONTEXT to name the export that is opened', async () => {
    const c = await NbdTestClient.connect(nbd.port);
    await c.optionOnce(O.NBD_OPT_STRUCTURED_REPLY);
    await c.setMetaContext('ro', ['base:allocation']);
    await c.go('disk');
    assert.equal(await c.errorOf(COMMANDS.NBD_CMD_BLOCK_STATUS, 0, 4096), ERRORS.NBD_EINVAL);
    c.close();
    // The same through NBD_OPT_EXPORT_NAME; and with the right name it works there too.
    for (const [metaName, ok] of [['ro', false], ['disk', true]] as const) {
      const e = await NbdTestClient.connect(nbd.port);
      await e.optionOnce(O.NBD_OPT_STRUCTURED_REPLY);
      await e.setMetaContext(metaName, ['base:allocation']);
      await e.exportName('disk');
      const r = await e.request(COMMANDS.NBD_CMD_BLOCK_STATUS, 0, 4096);
      assert.equal(r.error, ok ? 0 : ERRORS.NBD_EINVAL, `meta context set for ${metaName}`);
      e.close();
    }
    const d = await NbdTestClient.open(nbd.port, 'disk');
    const desc = await d.blockStatus(0, 128 * 1024);
    assert.deepEqual(desc, [{ length: 65536, flags: 0 }, { length: 65536, flags: 3 }]);
    d.close();
  });

  test('an option longer than maxOptionPayload is answered ERR_TOO_BIG and the next one works', async () => {
    const small = await startNbdServer({ disk: { device: new MemoryDevice(4096) } }, { limits: { maxOptionPayload: 128 } });
    try {
      const c = await NbdTestClient.connect(small.port);
      const r = await c.optionOnce(O.NBD_OPT_GO, encodeInfoRequest({ name: 'x'.repeat(200), infoRequests: [] }));
      assert.equal(r.type, R.NBD_REP_ERR_TOO_BIG);
      await c.go('disk');
      assert.equal((await c.read(0, 10)).length, 10);
      c.close();
      // NBD_OPT_EXPORT_NAME that is too big cannot be answered: closed.
      const d = await NbdTestClient.connect(small.port);
      d.option(O.NBD_OPT_EXPORT_NAME, Buffer.alloc(300, 0x61));
      assert.ok(await d.reader.waitEnd(2000));
    } finally {
      await small.close();
    }
  });

  test('unknown client flags close the connection; a client without FIXED_NEWSTYLE is served', async () => {
    const c = await NbdTestClient.connect(nbd.port, { clientFlags: 0x4 });
    c.option(O.NBD_OPT_LIST);
    assert.ok(await c.reader.waitEnd(2000));
    const old = await NbdTestClient.connect(nbd.port, { clientFlags: 0 });
    await old.exportName('disk', false);
    assert.deepEqual(await old.read(0, 8), data.subarray(0, 8));
    old.close();
  });

  test('several options in one write are answered in order', async () => {
    const socket = await openSocket(nbd.port);
    const reader = new ByteReader(socket);
    await reader.readExact(18);
    socket.write(Buffer.concat([
      encodeClientFlags(3),
      encodeOption(O.NBD_OPT_STRUCTURED_REPLY),
      encodeOption(O.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ name: 'disk', queries: ['base:allocation'] })),
      encodeOption(O.NBD_OPT_GO, encodeInfoRequest({ name: 'disk', infoRequests: [] })),
    ]));
    const types: number[] = [];
    for (let i = 0; i < 6; i++) {
      const h = await reader.readExact(20);
      const len = h.readUInt32BE(16);
      const payload = len ? await reader.readExact(len) : Buffer.alloc(0);
      types.push(h.readUInt32BE(12));
      if (h.readUInt32BE(12) === R.NBD_REP_INFO && payload.readUInt16BE(0) === 0) assert.equal(decodeInfo(payload).type, 0);
    }
    assert.deepEqual(types, [R.NBD_REP_ACK, R.NBD_REP_META_CONTEXT, R.NBD_REP_ACK, R.NBD_REP_INFO, R.NBD_REP_INFO, R.NBD_REP_ACK]);
    socket.destroy();
  });

  test('handshake timeout, option limit and connection limit', async () => {
    const s = await startNbdServer({ disk: { device: new MemoryDevice(4096) } }, { limits: { handshakeTimeoutMs: 200, maxOptions: 5, maxConnections: 2 } });
    try {
      const idle = await NbdTestClient.connect(s.port, { sendFlags: false });
      const t0 = Date.now();
      assert.ok(await idle.reader.waitEnd(3000), 'idle handshake closed');
      assert.ok(Date.now() - t0 < 2000);

      const chatty = await NbdTestClient.connect(s.port);
      for (let i = 0; i < 5; i++) assert.equal((await chatty.optionOnce(O.NBD_OPT_STRUCTURED_REPLY + 100)).type, R.NBD_REP_ERR_UNSUP);
      chatty.option(O.NBD_OPT_LIST);
      assert.ok(await chatty.reader.waitEnd(2000), 'closed after maxOptions');

      // Transmission is not subject to the handshake timeout.
      const a = await NbdTestClient.open(s.port, 'disk');
      const b = await NbdTestClient.open(s.port, 'disk');
      await until(() => s.server.connectionCount === 2, 2000, 'two connections');
      const third = await openSocket(s.port);
      const r3 = new ByteReader(third);
      assert.ok(await r3.waitEnd(2000), 'third connection refused');
      assert.equal(r3.buffered, 0);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await a.read(0, 10)).length, 10);
      assert.equal((await b.read(0, 10)).length, 10);
      a.close();
      b.close();
      await until(() => s.server.connectionCount === 0, 2000, 'connections closed');
    } finally {
      await s.close();
    }
  });
});
