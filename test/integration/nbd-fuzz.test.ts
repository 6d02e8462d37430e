/**
 * Fuzzing the NBD server in-process: generated client sessions, valid and
 * mutated (bit flips, lying lengths, truncation, inserted, deleted,
 * duplicated and swapped frames, garbage frames), fed in random pieces to
 * sessions over in-memory streams, plus long well-framed sessions of random
 * requests. At least 100,000 frames; no crash, no hung session, every
 * export released, and a healthy TCP client still reads correct data after.
 *
 * DISKLESS_FUZZ_CASES=N sets the number of mutated sessions (default 3000,
 * about 23 frames each; long sessions of 3000 requests are added, one per
 * 150 cases); DISKLESS_FUZZ_SEED picks the seed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as turn } from 'node:timers/promises';
import { DisklessError } from '../../src/lib/errors.js';
import type { ExportInfo, ExportResolver, OpenedExport, Peer } from '../../src/protocols/nbd/exports.js';
import { NbdServer } from '../../src/protocols/nbd/server.js';
import type { BlockDevice } from '../../src/storage/block-device.js';
import { MemoryDevice } from '../../src/storage/memory-device.js';
import { MemoryStream, MUTATIONS, Rng, generateRequest, generateSession, mutate, type FuzzTarget } from '../helpers/nbd-fuzz.js';
import { NbdTestClient, destroyAllSockets } from '../helpers/nbd-client.js';
import { HookedDevice } from '../helpers/nbd-devices.js';
import { patternBytes, testLogger } from '../helpers/nbd.js';
import { encodeClientFlags, encodeInfoRequest, encodeMetaContextRequest, encodeOption } from '../../src/protocols/nbd/codec.js';
import { OPTIONS } from '../../src/protocols/nbd/constants.js';

const KiB = 1024;
const SIZE = 512 * KiB;
const CASES = Number(process.env.DISKLESS_FUZZ_CASES ?? '') || 3000;
const SEED = Number(process.env.DISKLESS_FUZZ_SEED ?? '') || 20240611;
const LONG_SESSIONS = Math.max(4, Math.round(CASES / 150));
const LONG_REQUESTS = 3000;
const PARALLEL = 8;
/** A session that has not closed this long after its input ended is hung. */
const CASE_TIMEOUT_MS = 20_000;

/**
 * Runs fn(0) .. fn(count - 1), PARALLEL at a time: enough sessions at once
 * to interleave, few enough that a busy machine does not make a slow
 * session look hung.
 */
async function inPool(count: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: PARALLEL }, async () => {
      while (next < count) await fn(next++);
    }),
  );
}

/** Opens a fresh device per connection (fuzz writes stay cheap), shared read-only ones, and a flaky one. */
class FuzzResolver implements ExportResolver {
  opens = 0;
  releases = 0;
  constructor(private readonly shared: Map<string, BlockDevice>, private readonly rng: Rng) {}
  async list(_peer: Peer): Promise<ExportInfo[]> {
    return [{ name: 'fuzz' }, { name: 'ro' }, { name: 'flaky', description: 'fails at random' }];
  }
  async open(name: string, _peer: Peer): Promise<OpenedExport> {
    let device: BlockDevice | undefined = this.shared.get(name);
    if (name === 'fuzz') device = new MemoryDevice(SIZE, { multiConn: false });
    if (name === 'flaky') {
      const rng = this.rng;
      device = new HookedDevice(new MemoryDevice(SIZE), {
        capabilities: { fua: rng.chance(0.5), fastZero: rng.chance(0.5), extents: rng.chance(0.8) },
        hook: async () => {
          const r = rng.int(100);
          if (r < 10) throw new DisklessError('STORAGE_IO', 'random failure', rng.pick(['EIO', 'ENOSPC', 'EPERM', 'ENOTSUP', 'EINVAL'] as const));
          if (r < 12) throw new Error('not even a DisklessError');
          if (r < 20) await new Promise((res) => setTimeout(res, rng.int(3)));
        },
      });
    }
    if (!device) throw new DisklessError(name === 'forbidden' ? 'NBD_EXPORT_FORBIDDEN' : 'NBD_EXPORT_UNKNOWN', `no ${name}`);
    this.opens++;
    let released = false;
    return {
      name,
      device,
      release: async () => {
        assert.equal(released, false, 'released twice');
        released = true;
        this.releases++;
      },
    };
  }
}

test(`nbd fuzz: ${CASES} mutated sessions and ${LONG_SESSIONS} long sessions`, { timeout: 600_000 }, async () => {
  const rng = new Rng(SEED);
  const golden = patternBytes(SIZE, 42);
  const resolver = new FuzzResolver(
    new Map<string, BlockDevice>([
      ['ro', new MemoryDevice(SIZE, { readOnly: true, data: golden.subarray(0, 100 * KiB) })],
      ['golden', new MemoryDevice(SIZE, { readOnly: true, data: golden })],
    ]),
    rng,
  );
  const server = new NbdServer({
    resolver,
    logger: testLogger(),
    limits: { maxPayload: 16 * KiB, maxOptionPayload: 4096, maxInFlight: 16, maxInFlightBytes: 512 * KiB, writeHighWaterMark: 64 * KiB, lingerMs: 50, minHoleSize: 4096 },
  });
  const target: FuzzTarget = { exports: [{ name: 'fuzz', size: SIZE }, { name: 'ro', size: SIZE }, { name: 'flaky', size: SIZE }], maxWrite: 20 * KiB };

  let frames = 0;
  let hung = 0;
  let bytesIn = 0;
  let bytesOut = 0;
  const started = Date.now();

  const runCase = async (bytes: Buffer, caseRng: Rng, id: number): Promise<void> => {
    const stream = new MemoryStream(caseRng.chance(0.3));
    const closed = new Promise<void>((resolve) => stream.once('close', resolve));
    server.handleConnection(stream, { address: '192.0.2.1', port: id & 0xffff, family: 'IPv4' });
    let at = 0;
    while (at < bytes.length && !stream.destroyed) {
      const n = 1 + caseRng.int(caseRng.chance(0.5) ? 64 : 8192);
      stream.push(bytes.subarray(at, at + n));
      at += n;
      if (caseRng.chance(0.2)) await turn();
    }
    bytesIn += bytes.length;
    if (caseRng.chance(0.9)) stream.push(null);
    else stream.destroy();
    let timer: NodeJS.Timeout | undefined;
    const ok = await Promise.race([closed.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), CASE_TIMEOUT_MS)))]);
    clearTimeout(timer);
    bytesOut += stream.bytesOut;
    if (!ok) {
      hung++;
      stream.destroy();
    }
  };

  // Phase 1: mutated sessions.
  await inPool(CASES, async (id) => {
    const caseRng = new Rng(SEED + id * 7919);
    const session = generateSession(caseRng, target, 4 + caseRng.int(30));
    frames += session.frames.length;
    const kind = caseRng.chance(0.15) ? 'none' : caseRng.pick(MUTATIONS);
    await runCase(mutate(caseRng, session, kind), caseRng, id);
  });

  // Phase 2: long sessions of well-framed random requests after a valid handshake.
  await inPool(LONG_SESSIONS, async (k) => {
    const r = new Rng(SEED ^ (k * 104729));
    const name = r.pick(['fuzz', 'flaky', 'ro']);
    const parts: Buffer[] = [
      encodeClientFlags(3),
      encodeOption(OPTIONS.NBD_OPT_STRUCTURED_REPLY),
      encodeOption(OPTIONS.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ name, queries: ['base:allocation'] })),
      encodeOption(OPTIONS.NBD_OPT_GO, encodeInfoRequest({ name, infoRequests: [] })),
    ];
    for (let i = 0; i < LONG_REQUESTS; i++) parts.push(generateRequest(r, SIZE, 8 * KiB, BigInt(i)));
    frames += parts.length;
    await runCase(Buffer.concat(parts), r, 100000 + k);
  });

  const seconds = (Date.now() - started) / 1000;
  const stats = [...server.stats().values()];
  const served = stats.reduce((n, s) => n + s.reads + s.writes + s.flushes + s.trims + s.zeroes + s.caches + s.blockStatus + s.errors, 0);
  const transmissions = stats.reduce((n, s) => n + s.connectionsTotal, 0);
  process.stderr.write(
    `# nbd fuzz: ${frames} frames in ${CASES + LONG_SESSIONS} sessions (${transmissions} reached transmission, ${served} requests answered), ` +
      `${(bytesIn / 1048576).toFixed(1)} MiB in, ${(bytesOut / 1048576).toFixed(1)} MiB out, ${seconds.toFixed(1)} s, seed ${SEED}\n`,
  );

  assert.equal(hung, 0, 'sessions that never closed');
  assert.ok(frames >= (CASES >= 3000 ? 100_000 : 0), `only ${frames} frames`);
  assert.ok(transmissions > CASES / 4, `only ${transmissions} sessions reached transmission: the fuzz is not getting deep`);
  assert.ok(served > frames / 4, `only ${served} requests answered`);
  assert.equal(server.connectionCount, 0);
  assert.equal(resolver.opens, resolver.releases, 'every opened export was released');

  // The server still serves a healthy client over TCP, with correct data.
  const address = await server.listen(0, '127.0.0.1');
  try {
    const c = await NbdTestClient.open(address.port, 'golden');
    assert.deepEqual(await c.read(SIZE - 16 * KiB, 16 * KiB), golden.subarray(SIZE - 16 * KiB));
    const parts = await Promise.all(Array.from({ length: 64 }, (_, i) => c.read(i * 8 * KiB, 8 * KiB)));
    assert.deepEqual(Buffer.concat(parts), golden);
    const w = await NbdTestClient.open(address.port, 'fuzz', { structured: false });
    await w.write(1000, golden.subarray(0, 5000));
    assert.deepEqual(await w.read(1000, 5000), golden.subarray(0, 5000));
    c.close();
    w.close();
  } finally {
    destroyAllSockets();
    await server.close();
  }
  assert.equal(resolver.opens, resolver.releases);
});
