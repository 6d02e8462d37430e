/**
 * Chooses the overlay cluster size by measurement (run by hand, never timed
 * in tests):
 *
 *   npx tsc -p tsconfig.json && node dist/bench/storage/cluster-size.js [--size-mib 512] [--sizes 4,8,...]
 *
 * For each cluster size, on a fresh overlay over a raw base file:
 * - random 4 KiB writes (queue depth 8, a flush every 64 writes, as a guest
 *   file system's journal commits do): write IOPS, and the space and bytes
 *   written per 4 KiB the guest wrote (read-modify-write amplification);
 * - sequential 1 MiB reads of the whole disk, through a fresh overlay (all
 *   clusters on the base) and through the written one (runs broken up by
 *   the scattered written clusters);
 * - a first-boot-like mix: 85% reads of 4-128 KiB in sequential bursts
 *   from scattered places (files being opened), 15% writes of 4-16 KiB to a
 *   few hot regions (logs, journal, package state), queue depth 4, a flush
 *   every 40 requests;
 * - the in-memory map per GiB of disk.
 * The base file is in the page cache after it is made, so reads measure the
 * overlay's own costs (system calls, splitting, read-modify-write); fdatasync
 * reaches the real disk.
 */
import { mkdtemp, rm, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CowOverlay } from '../../src/storage/cow/overlay.js';
import { FileDevice } from '../../src/storage/file-device.js';
import { nodeFs, type OverlayFs } from '../../src/storage/cow/io.js';
import { below, prng, randomBytes } from '../../test/helpers/prng.js';

const KiB = 1024;
const MiB = 1024 * KiB;

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

const SIZE = Number(arg('size-mib', '512')) * MiB;
const CLUSTERS = arg('sizes', '4,8,16,32,64,128,256').split(',').map((k) => Number(k) * KiB);
const RANDOM_WRITES = Number(arg('writes', '4000'));
const MIX_OPS = Number(arg('mix', '6000'));
const REPS = Number(arg('reps', '3'));

/** Counts the bytes the overlay writes to its files (read-modify-write amplification). */
let bytesWritten = 0;
const countingFs: OverlayFs = {
  ...nodeFs,
  async open(path, mode) {
    const f = await nodeFs.open(path, mode);
    return {
      read: (b, o, l, p) => f.read(b, o, l, p),
      writev: (bufs, p) => {
        for (const b of bufs) bytesWritten += b.length;
        return f.writev(bufs, p);
      },
      datasync: () => f.datasync(),
      truncate: (n) => f.truncate(n),
      size: () => f.size(),
      close: () => f.close(),
    };
  },
};

async function makeBase(path: string): Promise<void> {
  const fh = await open(path, 'w');
  const r = prng(1);
  const chunk = randomBytes(r, 4 * MiB);
  for (let pos = 0; pos < SIZE; pos += chunk.length) {
    chunk.writeUInt32LE(pos / chunk.length, 0); // make chunks differ
    await fh.write(chunk, 0, Math.min(chunk.length, SIZE - pos), pos);
  }
  await fh.sync();
  await fh.close();
}

/** Runs `count` tasks with at most `depth` in flight. */
async function queue(count: number, depth: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: depth }, worker));
}

interface Row {
  cluster: number;
  writeIops: number;
  spacePer4k: number;
  writtenPer4k: number;
  mixWrittenPerGuestByte: number;
  seqFreshMBs: number;
  seqWrittenMBs: number;
  mixOps: number;
  mixMBs: number;
  mapPerGiB: number;
}

async function measure(basePath: string, work: string, C: number): Promise<Row> {
  const base = await FileDevice.open(basePath, { readOnly: true });
  const dir = join(work, `ov-${C}`);
  const ov = await CowOverlay.open({ base, dir, clusterSize: C, fs: countingFs });
  const mb = (bytes: number, ms: number): number => bytes / MiB / (ms / 1000);

  // Sequential 1 MiB reads through a fresh overlay.
  let t0 = performance.now();
  const buf = Buffer.allocUnsafe(MiB);
  for (let pos = 0; pos < SIZE; pos += MiB) await ov.read(pos, MiB, buf);
  const seqFreshMBs = mb(SIZE, performance.now() - t0);

  // Random 4 KiB writes.
  const r = prng(42);
  const data = randomBytes(r, 4 * KiB);
  const offsets = Array.from({ length: RANDOM_WRITES }, () => below(r, SIZE / (4 * KiB)) * 4 * KiB);
  bytesWritten = 0;
  t0 = performance.now();
  let since = 0;
  await queue(RANDOM_WRITES, 8, async (i) => {
    await ov.write(offsets[i]!, data);
    if (++since >= 64) {
      since = 0;
      await ov.flush();
    }
  });
  await ov.flush();
  const writeIops = RANDOM_WRITES / ((performance.now() - t0) / 1000);
  const spacePer4k = ov.allocatedBytes() / (RANDOM_WRITES * 4 * KiB);
  const writtenPer4k = bytesWritten / (RANDOM_WRITES * 4 * KiB);

  // Sequential reads through the written overlay.
  t0 = performance.now();
  for (let pos = 0; pos < SIZE; pos += MiB) await ov.read(pos, MiB, buf);
  const seqWrittenMBs = mb(SIZE, performance.now() - t0);
  await ov.close();
  await CowOverlay.destroy(dir);

  // First-boot-like mix on a fresh overlay.
  const ov2 = await CowOverlay.open({ base, dir, clusterSize: C, fs: countingFs });
  const m = prng(7);
  const hot = Array.from({ length: 6 }, () => below(m, SIZE - 8 * MiB));
  const plan: { write: boolean; offset: number; length: number }[] = [];
  while (plan.length < MIX_OPS) {
    if (m() < 0.15) {
      const length = (1 + below(m, 4)) * 4 * KiB;
      plan.push({ write: true, offset: hot[below(m, hot.length)]! + below(m, 2048) * 4 * KiB, length });
    } else {
      // A burst: a file read from its start in growing chunks.
      let offset = below(m, (SIZE - 2 * MiB) / (4 * KiB)) * 4 * KiB;
      const burst = 1 + below(m, 6);
      for (let k = 0; k < burst && plan.length < MIX_OPS; k++) {
        const length = Math.min(128 * KiB, 4 * KiB << below(m, 6));
        plan.push({ write: false, offset, length });
        offset += length;
      }
    }
  }
  const wbuf = randomBytes(m, 16 * KiB);
  let bytes = 0;
  let guestWritten = 0;
  let count = 0;
  bytesWritten = 0;
  t0 = performance.now();
  await queue(plan.length, 4, async (i) => {
    const p = plan[i]!;
    if (p.write) {
      await ov2.write(p.offset, wbuf.subarray(0, p.length));
      guestWritten += p.length;
    }
    else await ov2.read(p.offset, p.length);
    bytes += p.length;
    if (++count % 40 === 0) await ov2.flush();
  });
  await ov2.flush();
  const mixMs = performance.now() - t0;
  const mixWrittenPerGuestByte = bytesWritten / guestWritten;
  // 2 bits per cluster (the file pads the map to whole 4 KiB pages; memory holds the same pages).
  const mapPerGiB = (1024 * MiB) / C / 4;
  await ov2.close();
  await CowOverlay.destroy(dir);
  await base.close();
  return {
    cluster: C, writeIops, spacePer4k, writtenPer4k, mixWrittenPerGuestByte, seqFreshMBs, seqWrittenMBs,
    mixOps: plan.length / (mixMs / 1000), mixMBs: mb(bytes, mixMs), mapPerGiB,
  };
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'diskless-bench-'));
  try {
    const basePath = join(work, 'base.img');
    await makeBase(basePath);
    console.log(`base ${SIZE / MiB} MiB, ${RANDOM_WRITES} random 4K writes, ${MIX_OPS} mixed requests, median of ${REPS} runs`);
    const rows = new Map<number, Row[]>(CLUSTERS.map((c) => [c, []]));
    // Interleave the sizes across repetitions so that background load spreads evenly.
    for (let rep = 0; rep < REPS; rep++) {
      for (const C of rep % 2 === 0 ? CLUSTERS : [...CLUSTERS].reverse()) rows.get(C)!.push(await measure(basePath, work, C));
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    console.log('| cluster | 4K write IOPS | space per 4K written | bytes written per 4K | seq 1M read, fresh (MB/s) | seq 1M read, written (MB/s) | boot mix (req/s) | boot mix (MB/s) | boot mix bytes written per guest byte | map per GiB |');
    console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const C of CLUSTERS) {
      const rs = rows.get(C)!;
      const m = (f: (r: Row) => number): number => median(rs.map(f));
      console.log(
        `| ${C / KiB}K | ${m((r) => r.writeIops).toFixed(0)} | ${m((r) => r.spacePer4k).toFixed(1)}x | ${m((r) => r.writtenPer4k).toFixed(1)}x | ` +
          `${m((r) => r.seqFreshMBs).toFixed(0)} | ${m((r) => r.seqWrittenMBs).toFixed(0)} | ${m((r) => r.mixOps).toFixed(0)} | ` +
          `${m((r) => r.mixMBs).toFixed(0)} | ${m((r) => r.mixWrittenPerGuestByte).toFixed(1)}x | ${m((r) => r.mapPerGiB)} B |`,
      );
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
