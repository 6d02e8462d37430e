/**
 * NBD transmission over loopback: every command and flag, simple and
 * structured replies, validation errors, device errors, pipelining,
 * flow control, counters and shutdown.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DisklessError } from '../../src/lib/errors.js';
import { MemoryDevice } from '../../src/storage/memory-device.js';
import { COMMAND_FLAGS as F, COMMANDS as C, ERRORS as E, OPTIONS, REPLY_FLAGS, STRUCTURED_REPLY_TYPES as RT, TRANSMISSION_FLAGS as T } from '../../src/protocols/nbd/constants.js';
import { encodeInfoRequest } from '../../src/protocols/nbd/codec.js';
import { NbdReplyError, NbdTestClient, destroyAllSockets } from '../helpers/nbd-client.js';
import { patternBytes, startNbdServer } from '../helpers/nbd.js';
import { Gate, HookedDevice, sleep, until } from '../helpers/nbd-devices.js';
import { MemoryStream } from '../helpers/nbd-fuzz.js';
import { NbdServer } from '../../src/protocols/nbd/server.js';
import type { NbdError } from '../../src/protocols/nbd/errors.js';
import { createLogger } from '../../src/lib/log.js';

const MiB = 1024 * 1024;
const KiB = 1024;

async function withServer<T>(
  exports: Parameters<typeof startNbdServer>[0],
  fn: (s: Awaited<ReturnType<typeof startNbdServer>>) => Promise<T>,
  limits?: Parameters<typeof startNbdServer>[1],
): Promise<T> {
  const s = await startNbdServer(exports, limits);
  try {
    return await fn(s);
  } finally {
    destroyAllSockets();
    await s.close();
    assert.equal(s.resolver.openCount, 0, 'every export released');
  }
}

for (const structured of [false, true]) {
  describe(`nbd transmission with ${structured ? 'structured' : 'simple'} replies`, () => {
    test('read, write, flush, trim, write zeroes and cache round trip', async () => {
      const dev = new MemoryDevice(4 * MiB);
      await withServer({ disk: { device: dev } }, async (s) => {
        const c = await NbdTestClient.open(s.port, 'disk', { structured });
        assert.equal(c.size, 4 * MiB);
        const a = patternBytes(300 * KiB, 1);
        await c.write(12345, a);
        assert.deepEqual(await c.read(12345, a.length), a);
        assert.deepEqual(await dev.read(12345, a.length), a);
        assert.equal(await c.errorOf(C.NBD_CMD_FLUSH, 0, 0), 0);
        assert.equal(await c.errorOf(C.NBD_CMD_TRIM, 12345, 100 * KiB), 0);
        assert.equal(await c.errorOf(C.NBD_CMD_WRITE_ZEROES, 12345 + 100 * KiB, 100 * KiB, F.NBD_CMD_FLAG_NO_HOLE), 0);
        assert.equal(await c.errorOf(C.NBD_CMD_CACHE, 0, MiB), 0);
        const back = await c.read(12345, a.length);
        assert.ok(back.subarray(0, 200 * KiB).every((x) => x === 0));
        assert.deepEqual(back.subarray(200 * KiB), a.subarray(200 * KiB));
        // Zero-length requests succeed and touch nothing.
        assert.equal((await c.read(0, 0)).length, 0);
        assert.equal(await c.errorOf(C.NBD_CMD_WRITE, 0, 0), 0);
        assert.equal(await c.errorOf(C.NBD_CMD_TRIM, 4 * MiB, 0), 0);
        // The very last byte, and a maximum-size read.
        await c.write(4 * MiB - 1, Buffer.from([0xab]));
        assert.deepEqual(await c.read(4 * MiB - 1, 1), Buffer.from([0xab]));
        const all = await c.read(0, 4 * MiB);
        assert.deepEqual(all, await dev.read(0, 4 * MiB));
        c.disconnect();
        assert.ok(await c.reader.waitEnd(2000));
      });
    });

    test('requests refused at the boundary get the error proto.md names', async () => {
      const dev = new HookedDevice(new MemoryDevice(MiB));
      await withServer({ disk: { device: dev }, ro: { device: new MemoryDevice(MiB, { readOnly: true }) } }, async (s) => {
        const c = await NbdTestClient.open(s.port, 'disk', { structured });
        const expectations: [string, number, number | bigint, number, number, number][] = [
          ['read past the end', C.NBD_CMD_READ, MiB - 10, 11, 0, E.NBD_EINVAL],
          ['read at 2^64-1', C.NBD_CMD_READ, 2n ** 64n - 1n, 1, 0, E.NBD_EINVAL],
          ['read at 2^53', C.NBD_CMD_READ, 2n ** 53n, 0, 0, E.NBD_EINVAL],
          ['write past the end', C.NBD_CMD_WRITE, MiB, 1, 0, E.NBD_ENOSPC],
          ['write zeroes past the end', C.NBD_CMD_WRITE_ZEROES, MiB - 1, 2, 0, E.NBD_ENOSPC],
          ['trim past the end', C.NBD_CMD_TRIM, 0, MiB + 1, 0, E.NBD_EINVAL],
          ['cache past the end', C.NBD_CMD_CACHE, MiB, 1, 0, E.NBD_EINVAL],
          ['flush with an offset', C.NBD_CMD_FLUSH, 1, 0, 0, E.NBD_EINVAL],
          ['flush with a length', C.NBD_CMD_FLUSH, 0, 1, 0, E.NBD_EINVAL],
          ['unknown command', 9, 0, 1, 0, E.NBD_EINVAL],
          ['NBD_CMD_RESIZE (not offered)', C.NBD_CMD_RESIZE, 0, 0, 0, E.NBD_EINVAL],
          ['command 0xffff', 0xffff, 0, 0, 0, E.NBD_EINVAL],
          ['unknown flag on read', C.NBD_CMD_READ, 0, 1, 0x100, E.NBD_EINVAL],
          ['NO_HOLE on write', C.NBD_CMD_WRITE, 0, 0, F.NBD_CMD_FLAG_NO_HOLE, E.NBD_EINVAL],
          ['REQ_ONE on read', C.NBD_CMD_READ, 0, 1, F.NBD_CMD_FLAG_REQ_ONE, E.NBD_EINVAL],
          ['FAST_ZERO on trim', C.NBD_CMD_TRIM, 0, 1, F.NBD_CMD_FLAG_FAST_ZERO, E.NBD_EINVAL],
          ['PAYLOAD_LEN (extension) on read', C.NBD_CMD_READ, 0, 1, F.NBD_CMD_FLAG_PAYLOAD_LEN, E.NBD_EINVAL],
          ['read over the maximum payload', C.NBD_CMD_READ, 0, 256 * KiB + 1, 0, structured ? E.NBD_EOVERFLOW : E.NBD_EINVAL],
        ];
        if (!structured) {
          expectations.push(['DF without structured replies', C.NBD_CMD_READ, 0, 1, F.NBD_CMD_FLAG_DF, E.NBD_EINVAL]);
          expectations.push(['block status without structured replies', C.NBD_CMD_BLOCK_STATUS, 0, 1, 0, E.NBD_EINVAL]);
        } else {
          expectations.push(['block status of zero bytes', C.NBD_CMD_BLOCK_STATUS, 0, 0, 0, E.NBD_EINVAL]);
          expectations.push(['block status past the end', C.NBD_CMD_BLOCK_STATUS, MiB - 1, 2, 0, E.NBD_EINVAL]);
        }
        const callsBefore = dev.calls.length;
        // All pipelined at once: every one is answered, each with its own error.
        // A write carries its data even when it is refused.
        const results = await Promise.all(
          expectations.map(([, type, off, len, flags]) => c.request(type, off, len, { flags, ...(type === C.NBD_CMD_WRITE && len > 0 ? { payload: Buffer.alloc(len) } : {}) })),
        );
        for (const [i, [what, , , , , errno]] of expectations.entries()) {
          assert.equal(results[i]!.error, errno, what);
          if (structured) {
            assert.equal(results[i]!.chunks.length, 1, `${what}: one error chunk`);
            assert.equal(results[i]!.chunks[0]!.type, RT.NBD_REPLY_TYPE_ERROR, what);
            assert.ok((results[i]!.chunks[0] as { message: string }).message.length > 0, `${what}: a message`);
            assert.equal(results[i]!.chunkFlags[0], REPLY_FLAGS.NBD_REPLY_FLAG_DONE);
          }
        }
        assert.equal(dev.calls.length, callsBefore, 'the device saw none of them');
        assert.equal(s.server.stats().get('disk')!.errors, expectations.length);
        // Still in step afterwards.
        assert.equal((await c.read(0, 100)).length, 100);
        c.close();

        const ro = await NbdTestClient.open(s.port, 'ro', { structured });
        assert.ok(ro.transmissionFlags & T.NBD_FLAG_READ_ONLY);
        assert.equal(await ro.errorOf(C.NBD_CMD_WRITE, 0, 4, 0, Buffer.alloc(4)), E.NBD_EPERM);
        assert.equal(await ro.errorOf(C.NBD_CMD_TRIM, 0, 4), E.NBD_EPERM);
        assert.equal(await ro.errorOf(C.NBD_CMD_WRITE_ZEROES, 0, 4), E.NBD_EPERM);
        // FUA is not offered on a read-only export, so it is an unknown flag there.
        assert.equal(await ro.errorOf(C.NBD_CMD_READ, 0, 4, F.NBD_CMD_FLAG_FUA), E.NBD_EINVAL);
        assert.equal(await ro.errorOf(C.NBD_CMD_FLUSH, 0, 0), 0);
        assert.equal((await ro.read(0, 4)).length, 4);
        ro.close();
      }, { limits: { maxPayload: 256 * KiB } });
    });

    test('a write over the maximum payload (within 32 MiB) is read, refused, and the stream stays in step', async () => {
      const dev = new HookedDevice(new MemoryDevice(8 * MiB));
      await withServer({ disk: { device: dev } }, async (s) => {
        const c = await NbdTestClient.open(s.port, 'disk', { structured });
        const big = patternBytes(2 * MiB, 4);
        const r = await c.request(C.NBD_CMD_WRITE, 0, big.length, { payload: big });
        assert.equal(r.error, E.NBD_EINVAL);
        assert.equal(dev.count('write'), 0);
        await c.write(0, big.subarray(0, MiB));
        assert.deepEqual(await c.read(0, MiB), big.subarray(0, MiB));
        c.close();
      }, { limits: { maxPayload: MiB } });
    });

    test('device errors are mapped to NBD errors', async () => {
      const fail = new Map<string, DisklessError>();
      const dev = new HookedDevice(new MemoryDevice(MiB), {
        hook: (call) => {
          const e = fail.get(call.op);
          if (e) throw e;
        },
      });
      await withServer({ disk: { device: dev } }, async (s) => {
        const c = await NbdTestClient.open(s.port, 'disk', { structured });
        fail.set('read', new DisklessError('STORAGE_IO', 'disk on fire at /secret/path', 'EIO'));
        const r = await c.request(C.NBD_CMD_READ, 4096, 4096);
        assert.equal(r.error, E.NBD_EIO);
        if (structured) {
          const chunk = r.chunks[0] as { type: number; offset: number; message: string };
          assert.equal(chunk.type, RT.NBD_REPLY_TYPE_ERROR_OFFSET);
          assert.equal(chunk.offset, 4096);
          assert.doesNotMatch(chunk.message, /secret/);
          assert.match(chunk.message, /STORAGE_IO/);
        }
        fail.set('write', new DisklessError('STORAGE_NO_SPACE', 'full', 'ENOSPC'));
        assert.equal(await c.errorOf(C.NBD_CMD_WRITE, 0, 8, 0, Buffer.alloc(8)), E.NBD_ENOSPC);
        fail.set('flush', Object.assign(new Error('raw'), { code: 'EDQUOT' }) as never);
        assert.equal(await c.errorOf(C.NBD_CMD_FLUSH, 0, 0), E.NBD_ENOSPC);
        fail.set('zero', new DisklessError('STORAGE_FAST_ZERO_UNSUPPORTED', 'slow', 'ENOTSUP'));
        assert.equal(await c.errorOf(C.NBD_CMD_WRITE_ZEROES, 0, 8, F.NBD_CMD_FLAG_FAST_ZERO), E.NBD_ENOTSUP);
        fail.set('trim', new Error('no errno at all') as never);
        assert.equal(await c.errorOf(C.NBD_CMD_TRIM, 0, 8), E.NBD_EIO);
        fail.clear();
        assert.equal((await c.read(0, 8)).length, 8);
        c.close();
      });
    });

    test('FUA reaches the device, or becomes a flush where the device has none', async () => {
      const withFua = new HookedDevice(new MemoryDevice(MiB));
      const noFua = new HookedDevice(new MemoryDevice(MiB), { capabilities: { fua: false } });
      const neither = new HookedDevice(new MemoryDevice(MiB), { capabilities: { fua: false, flush: false } });
      await withServer({ a: { device: withFua }, b: { device: noFua }, c: { device: neither } }, async (s) => {
        const a = await NbdTestClient.open(s.port, 'a', { structured });
        assert.ok(a.transmissionFlags & T.NBD_FLAG_SEND_FUA);
        await a.write(0, Buffer.alloc(512, 1), F.NBD_CMD_FLAG_FUA);
        assert.equal(await a.errorOf(C.NBD_CMD_TRIM, 0, 512, F.NBD_CMD_FLAG_FUA), 0);
        assert.equal(await a.errorOf(C.NBD_CMD_WRITE_ZEROES, 0, 512, F.NBD_CMD_FLAG_FUA | F.NBD_CMD_FLAG_NO_HOLE), 0);
        // FUA is valid (and ignored) on commands that do not write.
        assert.equal(await a.errorOf(C.NBD_CMD_READ, 0, 512, F.NBD_CMD_FLAG_FUA), 0);
        assert.deepEqual(withFua.calls.filter((x) => x.op !== 'extents').map((x) => [x.op, (x.options as { fua?: boolean } | undefined)?.fua]), [
          ['write', true], ['trim', true], ['zero', true], ['read', undefined],
        ]);
        assert.equal(withFua.count('flush'), 0);
        await a.write(0, Buffer.alloc(512, 1));
        assert.equal(withFua.calls.at(-1)!.options?.fua, false);

        const b = await NbdTestClient.open(s.port, 'b', { structured });
        assert.ok(b.transmissionFlags & T.NBD_FLAG_SEND_FUA);
        await b.write(0, Buffer.alloc(512, 1), F.NBD_CMD_FLAG_FUA);
        assert.deepEqual(noFua.calls.map((x) => x.op), ['write', 'flush']);
        assert.equal(noFua.calls[0]!.options?.fua, false);

        const c = await NbdTestClient.open(s.port, 'c', { structured });
        assert.equal(c.transmissionFlags & (T.NBD_FLAG_SEND_FUA | T.NBD_FLAG_SEND_FLUSH), 0);
        assert.equal(await c.errorOf(C.NBD_CMD_WRITE, 0, 1, F.NBD_CMD_FLAG_FUA, Buffer.alloc(1)), E.NBD_EINVAL);
        assert.equal(await c.errorOf(C.NBD_CMD_FLUSH, 0, 0), E.NBD_EINVAL);
        a.close();
        b.close();
        c.close();
      });
    });

    test('write zeroes: NO_HOLE keeps allocation, FAST_ZERO is passed on or refused where not offered', async () => {
      const fast = new HookedDevice(new MemoryDevice(MiB));
      const slow = new HookedDevice(new MemoryDevice(MiB), { capabilities: { fastZero: false } });
      const noZero = new HookedDevice(new MemoryDevice(MiB), { capabilities: { writeZeroes: false, fastZero: true, trim: false } });
      await withServer({ fast: { device: fast }, slow: { device: slow }, nozero: { device: noZero } }, async (s) => {
        const a = await NbdTestClient.open(s.port, 'fast', { structured });
        assert.ok(a.transmissionFlags & T.NBD_FLAG_SEND_FAST_ZERO);
        assert.equal(await a.errorOf(C.NBD_CMD_WRITE_ZEROES, 0, 4096, F.NBD_CMD_FLAG_NO_HOLE), 0);
        assert.equal(await a.errorOf(C.NBD_CMD_WRITE_ZEROES, 4096, 4096, F.NBD_CMD_FLAG_FAST_ZERO), 0);
        assert.deepEqual(fast.calls.map((x) => x.options), [
          { fua: false, mayTrim: false, fast: false },
          { fua: false, mayTrim: true, fast: true },
        ]);
        if (structured) {
          assert.deepEqual(await a.blockStatus(0, 8192), [{ length: 4096, flags: 2 }, { length: 4096, flags: 3 }]);
        }
        const b = await NbdTestClient.open(s.port, 'slow', { structured });
        assert.equal(b.transmissionFlags & T.NBD_FLAG_SEND_FAST_ZERO, 0);
        assert.ok(b.transmissionFlags & T.NBD_FLAG_SEND_WRITE_ZEROES);
        assert.equal(await b.errorOf(C.NBD_CMD_WRITE_ZEROES, 0, 4096, F.NBD_CMD_FLAG_FAST_ZERO), E.NBD_EINVAL);
        assert.equal(slow.calls.length, 0);
        const n = await NbdTestClient.open(s.port, 'nozero', { structured });
        assert.equal(n.transmissionFlags & (T.NBD_FLAG_SEND_WRITE_ZEROES | T.NBD_FLAG_SEND_FAST_ZERO | T.NBD_FLAG_SEND_TRIM), 0);
        assert.equal(await n.errorOf(C.NBD_CMD_WRITE_ZEROES, 0, 4096), E.NBD_EINVAL);
        assert.equal(await n.errorOf(C.NBD_CMD_TRIM, 0, 4096), E.NBD_EINVAL);
        a.close();
        b.close();
        n.close();
      });
    });

    test('pipelined requests are answered as each completes', async () => {
      const gate = new Gate();
      const dev = new HookedDevice(new MemoryDevice(MiB, { data: patternBytes(MiB, 3) }), {
        hook: async (call) => {
          if (call.op === 'read' && call.offset === 0) await gate.wait();
        },
      });
      await withServer({ disk: { device: dev } }, async (s) => {
        const c = await NbdTestClient.open(s.port, 'disk', { structured });
        const order: string[] = [];
        const slowRead = c.read(0, 4096).then((b) => (order.push('slow'), b));
        const fast = [1, 2, 3].map((i) => c.read(i * 4096, 4096).then((b) => (order.push(`fast${i}`), b)));
        await Promise.all(fast);
        assert.deepEqual(order, ['fast1', 'fast2', 'fast3']);
        gate.open();
        await slowRead;
        assert.deepEqual(order, ['fast1', 'fast2', 'fast3', 'slow']);
        c.close();
      });
    });
  });
}

describe('nbd structured reads and block status', () => {
  test('holes and zero runs are sent as OFFSET_HOLE chunks; DF forces one data chunk', async () => {
    const dev = new HookedDevice(new MemoryDevice(4 * MiB));
    await dev.inner.write(0, patternBytes(100 * KiB, 1));
    await dev.inner.zero(200 * KiB, 200 * KiB, { mayTrim: false });
    await dev.inner.write(500 * KiB, patternBytes(10 * KiB, 2));
    await withServer({ disk: { device: dev } }, async (s) => {
      const c = await NbdTestClient.open(s.port, 'disk');
      const expected = await dev.inner.read(0, MiB);
      const r = await c.request(C.NBD_CMD_READ, 0, MiB);
      assert.equal(r.error, 0);
      assert.deepEqual(r.data, expected);
      const kinds = r.chunks.map((x) => [x.type, (x as { offset: number }).offset, (x as { size?: number }).size ?? (x as { data: Buffer }).data.length]);
      assert.deepEqual(kinds, [
        [RT.NBD_REPLY_TYPE_OFFSET_DATA, 0, 100 * KiB],
        [RT.NBD_REPLY_TYPE_OFFSET_HOLE, 100 * KiB, 400 * KiB],
        [RT.NBD_REPLY_TYPE_OFFSET_DATA, 500 * KiB, 10 * KiB],
        [RT.NBD_REPLY_TYPE_OFFSET_HOLE, 510 * KiB, 514 * KiB],
      ]);
      assert.deepEqual(r.chunkFlags, [0, 0, 0, REPLY_FLAGS.NBD_REPLY_FLAG_DONE]);
      // Only the data pieces were read.
      const reads = dev.calls.filter((x) => x.op === 'read').map((x) => [x.offset, x.length]);
      assert.deepEqual(reads, [[0, 100 * KiB], [500 * KiB, 10 * KiB]]);

      const df = await c.request(C.NBD_CMD_READ, 0, MiB, { flags: F.NBD_CMD_FLAG_DF });
      assert.equal(df.chunks.length, 1);
      assert.equal(df.chunks[0]!.type, RT.NBD_REPLY_TYPE_OFFSET_DATA);
      assert.deepEqual(df.data, expected);
      // A short read does not ask for extents.
      const extentCalls = dev.count('extents');
      assert.deepEqual(await c.read(100, 1000), expected.subarray(100, 1100));
      assert.equal(dev.count('extents'), extentCalls);
      // A read entirely in a hole is one hole chunk; a zero-length read one NONE chunk.
      const h = await c.request(C.NBD_CMD_READ, 2 * MiB, MiB);
      assert.deepEqual(h.chunks, [{ type: RT.NBD_REPLY_TYPE_OFFSET_HOLE, offset: 2 * MiB, size: MiB }]);
      assert.ok(h.data!.every((x) => x === 0));
      const z = await c.request(C.NBD_CMD_READ, 0, 0);
      assert.deepEqual(z.chunks, [{ type: RT.NBD_REPLY_TYPE_NONE }]);
      c.close();
    });
  });

  test('a failed piece of a split read gives ERROR_OFFSET for it, the rest is still sent', async () => {
    const dev = new HookedDevice(new MemoryDevice(MiB), {
      hook: (call) => {
        if (call.op === 'read' && call.offset === 512 * KiB) throw new DisklessError('STORAGE_IO', 'bad sector', 'EIO');
      },
    });
    await dev.inner.write(0, patternBytes(64 * KiB, 1));
    await dev.inner.write(512 * KiB, patternBytes(64 * KiB, 2));
    await withServer({ disk: { device: dev } }, async (s) => {
      const c = await NbdTestClient.open(s.port, 'disk');
      const r = await c.request(C.NBD_CMD_READ, 0, MiB);
      assert.equal(r.error, E.NBD_EIO);
      assert.deepEqual(r.chunks.map((x) => x.type), [RT.NBD_REPLY_TYPE_OFFSET_DATA, RT.NBD_REPLY_TYPE_OFFSET_HOLE, RT.NBD_REPLY_TYPE_ERROR_OFFSET, RT.NBD_REPLY_TYPE_OFFSET_HOLE]);
      assert.equal((r.chunks[2] as { offset: number }).offset, 512 * KiB);
      assert.deepEqual((r.chunks[0] as { data: Buffer }).data, patternBytes(64 * KiB, 1));
      c.close();
    });
  });

  test('block status: extents after writes, trims and zeroes; REQ_ONE; devices without extents', async () => {
    const dev = new MemoryDevice(MiB);
    const flat = new HookedDevice(new MemoryDevice(MiB), { capabilities: { extents: false } });
    await withServer({ disk: { device: dev }, flat: { device: flat } }, async (s) => {
      const c = await NbdTestClient.open(s.port, 'disk');
      assert.deepEqual(await c.blockStatus(0, MiB), [{ length: MiB, flags: 3 }]);
      await c.write(64 * KiB, Buffer.alloc(64 * KiB, 9));
      assert.equal(await c.errorOf(C.NBD_CMD_WRITE_ZEROES, 256 * KiB, 64 * KiB, F.NBD_CMD_FLAG_NO_HOLE), 0);
      await c.write(512 * KiB, Buffer.alloc(128 * KiB, 9));
      assert.equal(await c.errorOf(C.NBD_CMD_TRIM, 512 * KiB, 64 * KiB), 0);
      assert.deepEqual(await c.blockStatus(0, MiB), [
        { length: 64 * KiB, flags: 3 },
        { length: 64 * KiB, flags: 0 },
        { length: 128 * KiB, flags: 3 },
        { length: 64 * KiB, flags: 2 },
        { length: 256 * KiB, flags: 3 },
        { length: 64 * KiB, flags: 0 },
        { length: 384 * KiB, flags: 3 },
      ]);
      assert.deepEqual(await c.blockStatus(0, 32 * KiB, F.NBD_CMD_FLAG_REQ_ONE), [{ length: 32 * KiB, flags: 3 }]);
      assert.deepEqual(await c.blockStatus(100 * KiB, MiB - 100 * KiB, F.NBD_CMD_FLAG_REQ_ONE), [{ length: 28 * KiB, flags: 0 }]);
      const f = await NbdTestClient.open(s.port, 'flat');
      assert.deepEqual(await f.blockStatus(4096, 8192), [{ length: 8192, flags: 0 }]);
      assert.equal(flat.count('extents'), 0);
      c.close();
      f.close();
    });
  });

  test('block status descriptors are capped by maxBlockStatusDescriptors', async () => {
    const dev = new MemoryDevice(MiB);
    for (let i = 0; i < 32; i++) await dev.write(i * 8192, Buffer.alloc(4096, 1));
    await withServer({ disk: { device: dev } }, async (s) => {
      const c = await NbdTestClient.open(s.port, 'disk');
      const d = await c.blockStatus(0, MiB);
      assert.equal(d.length, 10);
      assert.equal(d.reduce((n, x) => n + x.length, 0), 5 * 8192);
      c.close();
    }, { limits: { maxBlockStatusDescriptors: 10 } });
  });
});

describe('nbd flow control, counters and shutdown', () => {
  test('no more than maxInFlight requests reach the device at once', async () => {
    const gate = new Gate();
    const dev = new HookedDevice(new MemoryDevice(MiB), { hook: () => gate.wait() });
    await withServer({ disk: { device: dev } }, async (s) => {
      const c = await NbdTestClient.open(s.port, 'disk');
      const all = Array.from({ length: 20 }, (_, i) => c.read(i * 4096, 4096));
      await until(() => dev.calls.length === 4, 2000, 'four calls');
      await sleep(100);
      assert.equal(dev.calls.length, 4, 'the rest wait in the socket');
      gate.open();
      await Promise.all(all);
      assert.equal(dev.maxActive, 4);
      assert.equal(dev.calls.length, 20);
      c.close();
    }, { limits: { maxInFlight: 4 } });
  });

  test('no more than maxInFlightBytes of payload is held at once', async () => {
    const gate = new Gate();
    const dev = new HookedDevice(new MemoryDevice(8 * MiB), { hook: () => gate.wait() });
    await withServer({ disk: { device: dev } }, async (s) => {
      const c = await NbdTestClient.open(s.port, 'disk', { structured: false });
      const reads = Array.from({ length: 6 }, (_, i) => c.read(i * MiB, MiB));
      const write = c.write(0, Buffer.alloc(MiB));
      await until(() => dev.calls.length === 2, 2000, 'two calls');
      await sleep(100);
      assert.equal(dev.calls.length, 2, 'two 1 MiB reads fill the 2 MiB budget');
      gate.open();
      await Promise.all([...reads, write]);
      assert.equal(dev.maxActive, 2);
      c.close();
    }, { limits: { maxInFlightBytes: 2 * MiB } });
  });

  test('a client that does not read its replies stops being read', async () => {
    const dev = new HookedDevice(new MemoryDevice(4 * MiB, { data: patternBytes(4 * MiB, 5) }));
    await withServer({ disk: { device: dev } }, async (s) => {
      const c = await NbdTestClient.open(s.port, 'disk', { structured: false });
      c.socket.pause();
      const n = 300;
      const all = Array.from({ length: n }, (_, i) => c.read((i % 4) * MiB, MiB));
      await sleep(800);
      const served = dev.count('read');
      assert.ok(served < n / 2, `server kept reading: ${served} of ${n} reads served with nobody reading replies`);
      c.socket.resume();
      const results = await Promise.all(all);
      const expected = await Promise.all([0, 1, 2, 3].map((k) => dev.inner.read(k * MiB, MiB)));
      for (const [i, b] of results.entries()) assert.ok(b.equals(expected[i % 4]!), `read ${i}`);
      assert.equal(dev.count('read'), n);
      c.close();
    }, { limits: { writeHighWaterMark: MiB, maxInFlight: 1000, maxInFlightBytes: 4 * MiB } });
  });

  test('a client that disconnects without reading its replies is cut and its export released', async () => {
    await withServer({ disk: { device: new MemoryDevice(4 * MiB) } }, async (s) => {
      const c = await NbdTestClient.open(s.port, 'disk', { structured: false });
      c.socket.pause();
      for (let i = 0; i < 24; i++) void c.read((i % 4) * MiB, MiB).catch(() => {});
      c.disconnect();
      // Closing its side too: the server must not wait for a 'finish' that never comes.
      c.socket.end();
      await until(() => s.resolver.openCount === 0, 3000, 'export released');
      assert.equal(s.server.connectionCount, 0);
    }, { limits: { writeHighWaterMark: 64 * MiB, maxInFlightBytes: 64 * MiB, closeTimeoutMs: 300, lingerMs: 100 } });
  });

  test('per-export counters', async () => {
    await withServer({ disk: { device: new MemoryDevice(MiB) } }, async (s) => {
      const c = await NbdTestClient.open(s.port, 'disk');
      const d = await NbdTestClient.open(s.port, 'disk', { structured: false });
      await c.write(0, Buffer.alloc(1000));
      await d.write(0, Buffer.alloc(24));
      await c.read(0, 100);
      await d.read(0, 28);
      await c.errorOf(C.NBD_CMD_FLUSH, 0, 0);
      await c.errorOf(C.NBD_CMD_TRIM, 0, 10);
      await c.errorOf(C.NBD_CMD_WRITE_ZEROES, 0, 10);
      await c.errorOf(C.NBD_CMD_CACHE, 0, 10);
      await c.blockStatus(0, 10);
      await c.errorOf(C.NBD_CMD_READ, MiB, 1);
      const st = s.server.stats().get('disk')!;
      assert.deepEqual({ ...st }, {
        reads: 2, writes: 2, bytesRead: 128, bytesWritten: 1024, flushes: 1, trims: 1, zeroes: 1, caches: 1, blockStatus: 1, errors: 1, connections: 2, connectionsTotal: 2,
      });
      assert.equal(s.server.connectionCount, 2);
      c.disconnect();
      d.close();
      await until(() => st.connections === 0 && s.server.connectionCount === 0, 2000, 'connections closed');
      assert.equal(st.connectionsTotal, 2);
    });
  });

  test('close() lets requests in flight finish, then releases every export', async () => {
    const gate = new Gate();
    const dev = new HookedDevice(new MemoryDevice(MiB), {
      hook: async (call) => {
        if (call.op === 'write') await gate.wait();
      },
    });
    const s = await startNbdServer({ disk: { device: dev } });
    const c = await NbdTestClient.open(s.port, 'disk');
    const handshaking = await NbdTestClient.connect(s.port);
    const w = c.write(0, Buffer.alloc(4096, 7));
    await until(() => gate.waiting === 1, 2000, 'write in the device');
    const closing = s.close();
    await sleep(50);
    assert.ok(await handshaking.reader.waitEnd(1000), 'handshaking connection cut');
    assert.equal(s.resolver.openCount, 1, 'not released while the write is in flight');
    gate.open();
    await w;
    await closing;
    assert.equal(s.resolver.openCount, 0);
    assert.ok(await c.reader.waitEnd(1000));
    assert.deepEqual(await dev.inner.read(0, 4096), Buffer.alloc(4096, 7));
    await assert.rejects(NbdTestClient.connect(s.port));
  });

  test('close() gives up on a stuck device after closeTimeoutMs and still releases', async () => {
    const gate = new Gate();
    const dev = new HookedDevice(new MemoryDevice(MiB), { hook: () => gate.wait() });
    const s = await startNbdServer({ disk: { device: dev } }, { limits: { closeTimeoutMs: 200 } });
    const c = await NbdTestClient.open(s.port, 'disk');
    const r = c.read(0, 10).catch((e: Error) => e);
    await until(() => gate.waiting === 1, 2000, 'read in the device');
    const t0 = Date.now();
    await s.close();
    assert.ok(Date.now() - t0 < 2000);
    assert.equal(s.resolver.openCount, 0);
    assert.ok((await r) instanceof Error);
    gate.open();
  });

  test('close() during a slow NBD_OPT_GO waits until the export it opens is released', async () => {
    const gate = new Gate();
    const s = await startNbdServer({ disk: { device: new MemoryDevice(MiB) } });
    const open = s.resolver.open.bind(s.resolver);
    s.resolver.open = async (name, peer) => {
      await gate.wait();
      return open(name, peer);
    };
    const c = await NbdTestClient.connect(s.port);
    c.option(OPTIONS.NBD_OPT_GO, encodeInfoRequest({ name: 'disk', infoRequests: [] }));
    await until(() => gate.waiting === 1, 2000, 'GO in the resolver');
    let closed = false;
    const closing = s.close().then(() => (closed = true));
    assert.ok(await c.reader.waitEnd(1000), 'the handshaking connection is cut at once');
    await sleep(100);
    assert.equal(closed, false, 'close() waits for the option being answered');
    gate.open();
    await closing;
    assert.equal(s.resolver.opens, 1);
    assert.equal(s.resolver.openCount, 0, 'the export opened after the cut was released');
  });

  test('listen and close: errors with codes, close is idempotent, nothing is accepted after it', async () => {
    const a = await startNbdServer({ disk: { device: new MemoryDevice(MiB) } });
    const b = new NbdServer({ resolver: a.resolver });
    await assert.rejects(b.listen(a.port, '127.0.0.1'), (e: NbdError) => e.code === 'NBD_LISTEN_FAILED');
    await assert.rejects(a.server.listen(0, '127.0.0.1'), (e: NbdError) => e.code === 'NBD_LISTEN_FAILED');
    assert.throws(() => new NbdServer({ resolver: a.resolver, limits: { maxInFlight: 0 } }), (e: NbdError) => e.code === 'NBD_LIMITS_INVALID');
    await Promise.all([a.close(), a.close()]);
    await a.close();
    await b.close();
    await assert.rejects(a.server.listen(0, '127.0.0.1'), (e: NbdError) => e.code === 'NBD_SERVER_CLOSED');
    const stream = new MemoryStream(false);
    a.server.handleConnection(stream, { address: '192.0.2.9', port: 1, family: 'IPv4' });
    assert.ok(stream.destroyed);
    assert.equal(stream.bytesOut, 0);
  });

  test('two connections to one multi-conn export see each other\'s writes', async () => {
    await withServer({ disk: { device: new MemoryDevice(MiB) } }, async (s) => {
      const a = await NbdTestClient.open(s.port, 'disk');
      const b = await NbdTestClient.open(s.port, 'disk', { structured: false });
      assert.ok(a.transmissionFlags & T.NBD_FLAG_CAN_MULTI_CONN);
      const data = patternBytes(8192, 11);
      await a.write(4096, data, F.NBD_CMD_FLAG_FUA);
      assert.deepEqual(await b.read(4096, 8192), data);
      await assert.rejects(b.read(MiB, 1), (e: NbdReplyError) => e.errno === E.NBD_EINVAL);
      a.close();
      b.close();
    });
  });
});

describe('nbd socket reads into chosen buffers', () => {
  test('a TCP connection is read into chosen buffers, not through data events', async () => {
    const lines: string[] = [];
    const logger = createLogger({ level: 'debug', pretty: false, write: (l) => lines.push(l) });
    const s = await startNbdServer({ disk: { device: new MemoryDevice(MiB) } }, { logger });
    try {
      const c = await NbdTestClient.open(s.port, 'disk');
      await c.write(0, patternBytes(100 * KiB, 5));
      c.close();
    } finally {
      destroyAllSockets();
      await s.close();
    }
    const opened = lines.map((l) => JSON.parse(l) as { msg: string; reads?: string }).filter((r) => r.msg === 'nbd connection opened');
    assert.deepEqual(opened.map((r) => r.reads), ['into chosen buffers']);
  });

  test('pipelined writes of every size keep their data while a slow device holds their buffers', async () => {
    // Writes wait a while in the device (the asynchronous path, buffers held
    // from the pool) while later ones are read, some straight into buffers
    // the pool handed out before: each must reach the device intact.
    let n = 0;
    const dev = new HookedDevice(new MemoryDevice(16 * MiB), {
      hook: async (call) => {
        if (call.op === 'write') await sleep(n++ % 3);
      },
    });
    await withServer({ disk: { device: dev } }, async (s) => {
      const c = await NbdTestClient.open(s.port, 'disk');
      const sizes = [1, 511, 4096, 16 * KiB - 1, 16 * KiB, 16 * KiB + 1, 100 * KiB + 3, MiB, MiB + 17, 3 * MiB + 5];
      const writes: { offset: number; data: Buffer }[] = [];
      let offset = 0;
      for (let round = 0; round < 3; round++) {
        for (const [i, size] of sizes.entries()) {
          writes.push({ offset, data: patternBytes(size, 100 * round + i) });
          offset += size;
        }
      }
      assert.ok(offset <= 16 * MiB);
      await Promise.all(writes.map((w) => c.write(w.offset, w.data)));
      for (const w of writes) assert.deepEqual(await c.read(w.offset, w.data.length), w.data, `write of ${w.data.length} at ${w.offset}`);
      c.close();
    });
  });
});
