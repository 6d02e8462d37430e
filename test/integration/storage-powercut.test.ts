/**
 * Power cuts, simulated: the overlay runs on a disk with a volatile write
 * cache (test/helpers/storage-sim-fs.ts). At a random instant (mid-request,
 * mid-flush, mid-creation) the power is cut: only what was synced survives,
 * plus any subset of the unsynced writes, torn at sector boundaries. The
 * overlay is reopened on what survived and every sector is checked against
 * the requests acknowledged durable (test/helpers/storage-crash-model.ts).
 * Runs in process, so hundreds of cuts take seconds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CowOverlay } from '../../src/storage/cow/overlay.js';
import { CLUSTERS_PER_PAGE } from '../../src/storage/cow/cluster-map.js';
import { MemoryDevice } from '../../src/storage/memory-device.js';
import { SimFs } from '../helpers/storage-sim-fs.js';
import { BASE_ID, History, SECTOR, ZERO, checkSectors, opData, opStream, sectorContent, type Op, type Workload } from '../helpers/storage-crash-model.js';
import { below, prng } from '../helpers/prng.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const ROUNDS_PER_CLUSTER_SIZE = 120;
const DEPTH = 4;

interface Setup {
  size: number;
  workload: Workload;
  base: MemoryDevice;
  initial: (sector: number) => number;
}

/**
 * Two windows of 1 MiB: one at the start (base data in its first half, a
 * base hole after) and one across the first map page boundary, so that a
 * request can dirty two map pages.
 */
async function setup(clusterSize: number): Promise<Setup> {
  const pageBoundary = CLUSTERS_PER_PAGE * clusterSize;
  const size = pageBoundary + 8 * MiB;
  const windows = [
    { offset: 0, length: 1 * MiB },
    { offset: pageBoundary - 512 * KiB, length: 1 * MiB },
  ];
  const base = new MemoryDevice(size, { identity: `powercut-${clusterSize}` });
  const patterned = (s: number): boolean => s * SECTOR < 512 * KiB || s * SECTOR >= windows[1]!.offset;
  for (const w of windows) {
    const buf = Buffer.alloc(w.length);
    for (let at = 0; at < w.length; at += SECTOR) {
      const s = (w.offset + at) / SECTOR;
      if (patterned(s)) sectorContent(BASE_ID, s, buf, at);
    }
    await base.write(w.offset, buf);
  }
  return { size, workload: { windows, maxLength: 3 * clusterSize + 8 * KiB }, base, initial: (s) => (patterned(s) ? BASE_ID : ZERO) };
}

for (const clusterSize of [4096, 64 * KiB]) {
  test(`overlay survives ${ROUNDS_PER_CLUSTER_SIZE} simulated power cuts with no repair (cluster ${clusterSize / KiB} KiB)`, async () => {
    const s = await setup(clusterSize);
    const r = prng(9000 + clusterSize);
    let checkedDurable = 0;
    for (let round = 0; round < ROUNDS_PER_CLUSTER_SIZE; round++) {
      const fs = new SimFs(round * 7 + 1);
      const history = new History(clusterSize, s.initial);
      const durable = new Set<number>();
      const issued = new Set<number>();
      const cutAt = below(r, 700);
      const tear = [0, 0.5, 1][round % 3]!;
      let survivor: SimFs | undefined;
      let frozenDurable: Set<number> | undefined;
      let frozenIssued: Set<number> | undefined;
      fs.onOperation = () => {
        if (survivor || fs.operations < cutAt) return;
        survivor = fs.powerCut(round, tear);
        frozenDurable = new Set(durable);
        frozenIssued = new Set(issued);
      };
      const dir = `/sim/powercut-${clusterSize}-${round}`;
      let ov: CowOverlay | undefined;
      try {
        ov = await CowOverlay.open({ base: s.base, dir, clusterSize, fs });
        const ops = opStream(round + 1, round, s.workload);
        let completed: number[] = [];
        const worker = async (): Promise<void> => {
          for (let n = 0; !survivor && n < 2000; n++) {
            const op: Op = ops.next().value as Op;
            issued.add(op.id);
            history.record(op);
            if (op.kind === 'flush') {
              const covered = completed;
              completed = [];
              await ov!.flush();
              for (const id of covered) durable.add(id);
            } else {
              if (op.kind === 'write' || op.kind === 'fua') await ov!.write(op.offset, opData(op), { fua: op.kind === 'fua' });
              else if (op.kind === 'trim') await ov!.trim(op.offset, op.length);
              else await ov!.zero(op.offset, op.length, { mayTrim: op.kind === 'zeroTrim' });
              if (op.kind === 'fua') durable.add(op.id);
              completed.push(op.id);
            }
          }
        };
        await Promise.all(Array.from({ length: DEPTH }, worker));
      } finally {
        await ov?.close();
      }
      if (!survivor) {
        // The cut never came (fewer operations than cutAt): cut now, after a clean close.
        survivor = fs.powerCut(round, tear);
        frozenDurable = new Set(durable);
        frozenIssued = new Set(issued);
      }
      const writesBefore = survivor.writes;
      // A cut before creation finished leaves no overlay (open then creates one); otherwise it must open as is.
      const existed = await survivor.exists('/sim/overlay.map');
      if (!existed) assert.equal(frozenIssued!.size, 0, `round ${round}: an overlay whose open resolved is gone`);
      const after = await CowOverlay.open({ base: s.base, dir: dir + '-after', fs: survivor });
      try {
        for (const w of s.workload.windows) {
          const bytes = await after.read(w.offset, w.length);
          const { problems } = checkSectors(bytes, w.offset, history, (id) => frozenDurable!.has(id), (id) => frozenIssued!.has(id));
          assert.deepEqual(problems, [], `round ${round} (cut at operation ${cutAt}, tear ${tear})`);
        }
        // Outside the windows nothing was written: the overlay shows the base's hole.
        const gap = { offset: s.workload.windows[0]!.length, length: s.workload.windows[1]!.offset - s.workload.windows[0]!.length };
        assert.deepEqual(await after.extents(gap.offset, gap.length), [{ ...gap, hole: true, zero: true }]);
        if (existed) assert.equal(survivor.writes, writesBefore, 'opening and reading wrote nothing: no repair');
      } finally {
        await after.close();
      }
      checkedDurable += frozenDurable!.size;
    }
    assert.ok(checkedDurable > ROUNDS_PER_CLUSTER_SIZE * 5, `too few durable requests were checked (${checkedDurable})`);
  });
}
