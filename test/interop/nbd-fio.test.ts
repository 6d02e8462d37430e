/**
 * fio's nbd engine against the server: random mixed reads and writes with
 * crc32c verification on a MemoryDevice export. A negative control (an
 * export that corrupts some reads) shows the verification really runs.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { requirePeers } from '../helpers/peers.js';
import { MemoryDevice } from '../../src/storage/memory-device.js';
import { HookedDevice } from '../helpers/nbd-devices.js';
import { destroyAllSockets } from '../helpers/nbd-client.js';
import { startNbdServer, type StartedNbd } from '../helpers/nbd.js';
import { runPeer, type PeerResult } from '../helpers/nbd-peers.js';

const MiB = 1024 * 1024;

/** Flips a bit in the first byte of every read that starts in 4 KiB block 5, 102, 199, ... (every 97th). */
class CorruptingDevice extends HookedDevice {
  override async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const b = await super.read(offset, length, into);
    if (length > 0 && Math.floor(offset / 4096) % 97 === 5) b[0]! ^= 1;
    return b;
  }
}

interface FioJob {
  error: number;
  read: { io_bytes: number; iops: number };
  write: { io_bytes: number; iops: number };
}

function fioJob(r: PeerResult): FioJob {
  // The nbd engine prints a line before the JSON.
  const at = r.stdout.indexOf('{');
  if (at < 0) throw new Error(`no JSON from fio (exit ${r.code}): ${r.stderr}`);
  return (JSON.parse(r.stdout.slice(at)) as { jobs: FioJob[] }).jobs[0]!;
}

const fioArgs = (uri: string, rw: string, extra: string[] = []): string[] => [
  '--name=verify', '--ioengine=nbd', `--uri=${uri}`, `--rw=${rw}`, '--bsrange=512-64k', '--bs_unaligned=0',
  '--size=16m', '--iodepth=16', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1',
  // A failed verification would otherwise leave its state file in the working directory.
  '--verify_state_save=0', '--output-format=json', ...extra,
];

describe('nbd interop: fio', () => {
  let nbd: StartedNbd;
  before(async () => {
    nbd = await startNbdServer({
      mem: { device: new MemoryDevice(16 * MiB) },
      corrupt: { device: new CorruptingDevice(new MemoryDevice(16 * MiB)) },
    });
  });
  after(async () => {
    destroyAllSockets();
    await nbd.close();
    assert.equal(nbd.resolver.openCount, 0);
  });

  test('randrw with crc32c verification on a MemoryDevice export', async (t) => {
    if (!requirePeers(t, 'fio')) return;
    for (const rw of ['randrw', 'randwrite']) {
      const r = await runPeer('fio', fioArgs(nbd.uri('mem'), rw), { timeoutMs: 180_000 });
      const job = fioJob(r);
      assert.equal(r.code, 0, `fio ${rw} failed: ${r.stderr}`);
      assert.equal(job.error, 0);
      assert.ok(job.write.io_bytes > 0, `${rw}: bytes written`);
      assert.ok(job.read.io_bytes >= job.write.io_bytes / 2, `${rw}: bytes read back and verified`);
    }
    const st = nbd.server.stats().get('mem')!;
    assert.equal(st.errors, 0);
    assert.ok(st.reads > 0 && st.writes > 0);
  });

  test('negative control: corrupted reads make fio fail verification', async (t) => {
    if (!requirePeers(t, 'fio')) return;
    const r = await runPeer('fio', fioArgs(nbd.uri('corrupt'), 'randrw'), { timeoutMs: 180_000 });
    assert.notEqual(r.code, 0, 'fio did not notice corrupted data');
    assert.match(r.stderr + r.stdout, /verify/);
  });
});
