/**
 * Child process of test/integration/storage-crash.test.ts: opens an overlay
 * over a raw base file and runs random requests on it (several in flight)
 * until it is killed, reporting on stdout, one line each:
 *   READY            the overlay is open
 *   I <id>           request <id> is about to be issued
 *   D <id> <id> ...  a flush resolved: these requests (completed before it was called) are durable
 *   U <id>           FUA write <id> resolved: it is durable
 * stdout is a pipe, which Node writes synchronously on Linux, so a line is in
 * the pipe before the next request starts.
 *
 *   node storage-crash-child.js DIR BASE CLUSTER_SIZE SEED ROUND WORKLOAD_JSON
 */
import { CowOverlay } from '../../src/storage/cow/overlay.js';
import { FileDevice } from '../../src/storage/file-device.js';
import { opData, opStream, type Op, type Workload } from './storage-crash-model.js';

const [dir, basePath, clusterArg, seedArg, roundArg, workloadJson] = process.argv.slice(2);
const DEPTH = 4;
/** Bounds the child even if nobody kills it. */
const MAX_OPS = 200_000;
const MAX_MS = 60_000;

const base = await FileDevice.open(basePath!, { readOnly: true, identity: 'crash-base', allocationMap: basePath + '.zeromap' });
const ov = await CowOverlay.open({ base, dir: dir!, clusterSize: Number(clusterArg) });
const say = (line: string): void => void process.stdout.write(line + '\n');
say('READY');

const ops = opStream(Number(seedArg), Number(roundArg), JSON.parse(workloadJson!) as Workload);
const started = Date.now();
let issued = 0;
let completed: number[] = [];
const worker = async (): Promise<void> => {
  while (issued < MAX_OPS && Date.now() - started < MAX_MS) {
    issued++;
    const op = ops.next().value as Op;
    say(`I ${op.id}`);
    if (op.kind === 'flush') {
      const covered = completed;
      completed = [];
      await ov.flush();
      if (covered.length > 0) say(`D ${covered.join(' ')}`);
      continue;
    }
    if (op.kind === 'write' || op.kind === 'fua') await ov.write(op.offset, opData(op), { fua: op.kind === 'fua' });
    else if (op.kind === 'trim') await ov.trim(op.offset, op.length);
    else await ov.zero(op.offset, op.length, { mayTrim: op.kind === 'zeroTrim' });
    if (op.kind === 'fua') say(`U ${op.id}`);
    completed.push(op.id);
  }
};
await Promise.all(Array.from({ length: DEPTH }, worker));
await ov.close();
await base.close();
