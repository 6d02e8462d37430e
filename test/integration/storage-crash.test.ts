/**
 * SIGKILL during writes: a child process (test/helpers/storage-crash-child.ts)
 * writes, zeroes, trims and flushes (some writes FUA) on an overlay and
 * reports each acknowledged flush and FUA write over a pipe; the parent kills
 * it at a random moment, reopens the overlay and checks every sector against
 * what was acknowledged (test/helpers/storage-crash-model.ts), and that the
 * open changed nothing (no repair step). Two overlays (4 KiB and 64 KiB
 * clusters) take turns and live on across rounds, so later rounds start from
 * what earlier ones left. Power cuts are simulated in storage-powercut.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CowOverlay } from '../../src/storage/cow/overlay.js';
import { CLUSTERS_PER_PAGE } from '../../src/storage/cow/cluster-map.js';
import { FileDevice } from '../../src/storage/file-device.js';
import { BASE_ID, History, SECTOR, ZERO, checkSectors, opStream, sectorContent, type Op, type Workload } from '../helpers/storage-crash-model.js';
import { below, prng } from '../helpers/prng.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const ROUNDS = 56;
const CHILD = fileURLToPath(new URL('../helpers/storage-crash-child.js', import.meta.url));
/** Bound on one child's life if the kill somehow does not come. */
const CHILD_TIMEOUT_MS = 20_000;

interface Target {
  clusterSize: number;
  dir: string;
  basePath: string;
  size: number;
  workload: Workload;
  /** The value of each sector when the next round starts. */
  values: Map<number, number>;
  initial: (s: number) => number;
}

async function makeTarget(work: string, clusterSize: number): Promise<Target> {
  const pageBoundary = CLUSTERS_PER_PAGE * clusterSize;
  const size = pageBoundary + 8 * MiB;
  const windows = [
    { offset: 0, length: 1 * MiB },
    { offset: pageBoundary - 512 * KiB, length: 1 * MiB },
  ];
  const patterned = (s: number): boolean => s * SECTOR < 512 * KiB || s * SECTOR >= windows[1]!.offset;
  const basePath = join(work, `base-${clusterSize}.img`);
  const fh = await open(basePath, 'w');
  await fh.truncate(size); // sparse: zeros outside the windows
  for (const w of windows) {
    const buf = Buffer.alloc(w.length);
    for (let at = 0; at < w.length; at += SECTOR) {
      const s = (w.offset + at) / SECTOR;
      if (patterned(s)) sectorContent(BASE_ID, s, buf, at);
    }
    await fh.write(buf, 0, buf.length, w.offset);
  }
  await fh.close();
  const values = new Map<number, number>();
  const initialBase = (s: number): number => (patterned(s) ? BASE_ID : ZERO);
  return {
    clusterSize, dir: join(work, `ov-${clusterSize}`), basePath, size,
    workload: { windows, maxLength: 3 * clusterSize + 8 * KiB },
    values, initial: (s) => values.get(s) ?? initialBase(s),
  };
}

interface ChildResult {
  ready: boolean;
  durable: Set<number>;
  issued: Set<number>;
}

/** Runs the child and SIGKILLs it `killAfterMs` after it is ready (or after spawning, if `early`). */
function runChild(t: Target, seed: number, round: number, killAfterMs: number, early: boolean): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, t.dir, t.basePath, String(t.clusterSize), String(seed), String(round), JSON.stringify(t.workload)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const result: ChildResult = { ready: false, durable: new Set(), issued: new Set() };
    let pending = '';
    let stderr = '';
    let killTimer: NodeJS.Timeout | undefined;
    const kill = (): void => void child.kill('SIGKILL');
    const guard = setTimeout(kill, CHILD_TIMEOUT_MS);
    if (early) killTimer = setTimeout(kill, killAfterMs);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop()!; // a line cut short by the kill is ignored
      for (const line of lines) {
        const [tag, ...ids] = line.split(' ');
        if (tag === 'READY') {
          result.ready = true;
          if (!early) killTimer = setTimeout(kill, killAfterMs);
        } else if (tag === 'I') result.issued.add(Number(ids[0]));
        else if (tag === 'D' || tag === 'U') for (const id of ids) result.durable.add(Number(id));
      }
    });
    child.stderr.on('data', (d: Buffer) => void (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(guard);
      clearTimeout(killTimer);
      if (signal !== 'SIGKILL') reject(new Error(`child exited ${code} ${signal}: ${stderr}`));
      else resolve(result);
    });
  });
}

async function sha256(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

test(`overlay survives ${ROUNDS} SIGKILLs during writes and flushes; acknowledged data reads back exactly; no repair`, async (t) => {
  const work = await mkdtemp(join(tmpdir(), 'diskless-crash-'));
  t.after(() => rm(work, { recursive: true, force: true }));
  const targets = [await makeTarget(work, 4096), await makeTarget(work, 64 * KiB)];
  // Build the bases' zero maps once; children and checks load them.
  for (const tg of targets) await (await FileDevice.open(tg.basePath, { readOnly: true, identity: 'crash-base', allocationMap: tg.basePath + '.zeromap' })).close();
  const r = prng(4242);
  let durableChecked = 0;
  let issuedTotal = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const tg = targets[round % 2]!;
    const seed = 1000 + round;
    const early = r() < 0.1;
    const killAfter = early ? below(r, 150) : 20 + below(r, 250);
    const res = await runChild(tg, seed, round, killAfter, early);
    issuedTotal += res.issued.size;

    // Replay the child's requests, in issue order, into the history.
    const history = new History(tg.clusterSize, tg.initial);
    const maxIssued = Math.max(-1, ...res.issued);
    const gen = opStream(seed, round, tg.workload);
    for (let op = gen.next().value as Op; op.id <= maxIssued; op = gen.next().value as Op) history.record(op);

    const mapPath = join(tg.dir, 'overlay.map');
    const existed = await stat(mapPath).then(() => true, () => false);
    if (!existed) {
      assert.equal(res.issued.size, 0, `round ${round}: the overlay vanished after requests were issued`);
      continue;
    }
    const mapHash = await sha256(mapPath);
    const dataMtime = (await stat(join(tg.dir, 'overlay.data'), { bigint: true })).mtimeNs;

    const base = await FileDevice.open(tg.basePath, { readOnly: true, identity: 'crash-base', allocationMap: tg.basePath + '.zeromap' });
    const ov = await CowOverlay.open({ base, dir: tg.dir });
    try {
      for (const w of tg.workload.windows) {
        const bytes = await ov.read(w.offset, w.length);
        const { problems, values } = checkSectors(bytes, w.offset, history, (id) => res.durable.has(id), (id) => res.issued.has(id));
        assert.deepEqual(problems, [], `round ${round} (cluster ${tg.clusterSize}, killed ${killAfter} ms after ${early ? 'spawn' : 'ready'})`);
        for (const [s, v] of values) tg.values.set(s, v);
      }
      const gapFrom = tg.workload.windows[0]!.length;
      const gap = await ov.extents(gapFrom, tg.workload.windows[1]!.offset - gapFrom);
      assert.ok(gap.every((e) => e.zero), `round ${round}: something was written outside the windows`);
      assert.equal(await sha256(mapPath), mapHash, 'open and reads left the map as it was: no repair');
      assert.equal((await stat(join(tg.dir, 'overlay.data'), { bigint: true })).mtimeNs, dataMtime);
    } finally {
      await ov.close(); // flushes: the values read are where the next round starts
      await base.close();
    }
    durableChecked += res.durable.size;
  }
  assert.ok(durableChecked > ROUNDS * 5, `too few acknowledged requests were checked (${durableChecked} of ${issuedTotal} issued)`);
  t.diagnostic(`${issuedTotal} requests issued, ${durableChecked} acknowledged durable and checked`);
});
