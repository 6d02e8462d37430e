/**
 * The NBD server against real clients: nbdinfo (--list, --map), qemu-img
 * (info, compare) and nbdcopy (whole reads and writes), over loopback to an
 * in-process server with MemoryDevice exports.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, openSync, readFileSync, rmSync, writeSync, closeSync, ftruncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requirePeers } from '../helpers/peers.js';
import { MemoryDevice } from '../../src/storage/memory-device.js';
import { COMMAND_FLAGS as F, COMMANDS as C } from '../../src/protocols/nbd/constants.js';
import { NbdTestClient, destroyAllSockets } from '../helpers/nbd-client.js';
import { patternBytes, startNbdServer, type StartedNbd } from '../helpers/nbd.js';
import { assertPeerOk, runPeer } from '../helpers/nbd-peers.js';

const MiB = 1024 * 1024;
const KiB = 1024;

describe('nbd interop: nbdinfo, qemu-img, nbdcopy', () => {
  let nbd: StartedNbd;
  let dir: string;
  const disk = new MemoryDevice(16 * MiB);
  const ro = new MemoryDevice(4 * MiB, { readOnly: true, data: patternBytes(4 * MiB, 3) });
  const target = new MemoryDevice(16 * MiB);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'diskless-nbd-'));
    await disk.write(0, patternBytes(MiB, 1));
    await disk.write(8 * MiB, patternBytes(512 * KiB, 2));
    nbd = await startNbdServer({
      disk: { device: disk, description: 'the test disk' },
      ro: { device: ro },
      target: { device: target },
      single: { device: new MemoryDevice(MiB, { multiConn: false }) },
      map: { device: new MemoryDevice(4 * MiB) },
    });
  });

  after(async () => {
    destroyAllSockets();
    await nbd.close();
    assert.equal(nbd.resolver.openCount, 0);
    rmSync(dir, { recursive: true, force: true });
  });

  test('nbdinfo --list shows every export with its flags and sizes', async (t) => {
    if (!requirePeers(t, 'nbdinfo')) return;
    const r = await runPeer('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${nbd.port}`]);
    assertPeerOk(r, 'nbdinfo --list');
    const info = JSON.parse(r.stdout) as { protocol: string; structured: boolean; exports: Record<string, unknown>[] };
    assert.equal(info.protocol, 'newstyle-fixed');
    assert.equal(info.structured, true);
    const byName = new Map(info.exports.map((e) => [e['export-name'] as string, e]));
    assert.deepEqual([...byName.keys()].sort(), ['disk', 'map', 'ro', 'single', 'target']);
    const d = byName.get('disk')!;
    assert.equal(d['description'], 'the test disk');
    assert.equal(d['export-size'], 16 * MiB);
    assert.deepEqual(d['contexts'], ['base:allocation']);
    for (const k of ['can_cache', 'can_df', 'can_fast_zero', 'can_flush', 'can_fua', 'can_multi_conn', 'can_trim', 'can_zero']) assert.equal(d[k], true, k);
    assert.equal(d['is_read_only'], false);
    assert.equal(d['block_size_minimum'], 1);
    assert.equal(d['block_size_preferred'], 4096);
    assert.equal(d['block_size_maximum'], 32 * MiB);
    const r2 = byName.get('ro')!;
    assert.equal(r2['is_read_only'], true);
    for (const k of ['can_fua', 'can_trim', 'can_zero', 'can_fast_zero']) assert.equal(r2[k], false, k);
    assert.equal(byName.get('single')!['can_multi_conn'], false);
  });

  test('nbdinfo --map shows data, holes and zeros right after writes, trims and zeroes', async (t) => {
    if (!requirePeers(t, 'nbdinfo')) return;
    const map = async (): Promise<[number, number, string][]> => {
      const r = await runPeer('nbdinfo', ['--map', '--json', nbd.uri('map')]);
      assertPeerOk(r, 'nbdinfo --map');
      return (JSON.parse(r.stdout) as { offset: number; length: number; description: string }[]).map((e) => [e.offset, e.length, e.description]);
    };
    assert.deepEqual(await map(), [[0, 4 * MiB, 'hole,zero']]);
    const c = await NbdTestClient.open(nbd.port, 'map');
    await c.write(0, patternBytes(256 * KiB, 5));
    await c.write(MiB, patternBytes(MiB, 6));
    assert.equal(await c.errorOf(C.NBD_CMD_TRIM, MiB + 256 * KiB, 256 * KiB), 0);
    assert.equal(await c.errorOf(C.NBD_CMD_WRITE_ZEROES, 3 * MiB, 512 * KiB, F.NBD_CMD_FLAG_NO_HOLE), 0);
    assert.equal(await c.errorOf(C.NBD_CMD_WRITE_ZEROES, 64 * KiB, 64 * KiB), 0);
    assert.deepEqual(await map(), [
      [0, 64 * KiB, 'data'],
      [64 * KiB, 64 * KiB, 'hole,zero'],
      [128 * KiB, 128 * KiB, 'data'],
      [256 * KiB, 768 * KiB, 'hole,zero'],
      [MiB, 256 * KiB, 'data'],
      [MiB + 256 * KiB, 256 * KiB, 'hole,zero'],
      [MiB + 512 * KiB, 512 * KiB, 'data'],
      [2 * MiB, MiB, 'hole,zero'],
      [3 * MiB, 512 * KiB, 'zero'],
      [3 * MiB + 512 * KiB, 512 * KiB, 'hole,zero'],
    ]);
    // Writing over a zeroed range makes it data again.
    await c.write(3 * MiB, Buffer.alloc(4096, 1));
    const m = await map();
    assert.deepEqual(m.slice(-3), [[3 * MiB, 4096, 'data'], [3 * MiB + 4096, 512 * KiB - 4096, 'zero'], [3 * MiB + 512 * KiB, 512 * KiB, 'hole,zero']]);
    c.close();
  });

  test('qemu-img info and compare against the expected bytes', async (t) => {
    if (!requirePeers(t, 'qemu-img')) return;
    const info = await runPeer('qemu-img', ['info', '--output=json', nbd.uri('disk')]);
    assertPeerOk(info, 'qemu-img info');
    const parsed = JSON.parse(info.stdout) as { 'virtual-size': number; format: string };
    assert.equal(parsed['virtual-size'], 16 * MiB);
    assert.equal(parsed.format, 'raw');

    const expected = join(dir, 'expected.raw');
    writeFileSync(expected, await disk.read(0, 16 * MiB));
    const same = await runPeer('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', expected, nbd.uri('disk')]);
    assertPeerOk(same, 'qemu-img compare');
    assert.match(same.stdout, /identical/);
    // One byte different in the middle of a hole: qemu-img must notice.
    const fd = openSync(expected, 'r+');
    writeSync(fd, Buffer.from([1]), 0, 1, 12 * MiB + 3);
    closeSync(fd);
    const differ = await runPeer('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', expected, nbd.uri('disk')]);
    assert.equal(differ.code, 1, differ.stdout + differ.stderr);
    // qemu-img names the first differing byte, or the start of its sector when the export side is a hole.
    const at = Number(/mismatch at offset (\d+)/.exec(differ.stdout)?.[1]);
    assert.ok(at >= 12 * MiB && at <= 12 * MiB + 3, differ.stdout);
    // The read-only export too.
    const roFile = join(dir, 'ro.raw');
    writeFileSync(roFile, patternBytes(4 * MiB, 3));
    assertPeerOk(await runPeer('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', roFile, nbd.uri('ro')]), 'qemu-img compare ro');
  });

  test('nbdcopy reads a whole export and writes a sparse image into one', async (t) => {
    if (!requirePeers(t, 'nbdcopy')) return;
    const out = join(dir, 'out.raw');
    const r = await runPeer('nbdcopy', [nbd.uri('disk'), out], { timeoutMs: 120_000 });
    assertPeerOk(r, 'nbdcopy read');
    assert.ok(readFileSync(out).equals(await disk.read(0, 16 * MiB)), 'copied image equals the export');

    // A sparse source: data at a few places, holes in between.
    const src = join(dir, 'in.raw');
    const fd = openSync(src, 'w');
    ftruncateSync(fd, 16 * MiB);
    writeSync(fd, patternBytes(3 * MiB, 8), 0, 3 * MiB, 0);
    writeSync(fd, patternBytes(100 * KiB, 9), 0, 100 * KiB, 7 * MiB + 12345);
    writeSync(fd, patternBytes(64 * KiB, 10), 0, 64 * KiB, 16 * MiB - 64 * KiB);
    closeSync(fd);
    // Fill the target with data first, so holes in the copy must really be zeroed.
    await target.write(0, patternBytes(16 * MiB, 11));
    const w = await runPeer('nbdcopy', ['--flush', src, nbd.uri('target')], { timeoutMs: 120_000 });
    assertPeerOk(w, 'nbdcopy write');
    assert.ok((await target.read(0, 16 * MiB)).equals(readFileSync(src)), 'the export equals the copied image');
    const st = nbd.server.stats().get('target')!;
    assert.ok(st.writes > 0 && st.zeroes > 0, `nbdcopy wrote data and zeroes: ${JSON.stringify(st)}`);
    assert.equal(st.errors, 0);

    // Writing to the read-only export fails.
    const bad = await runPeer('nbdcopy', [src, nbd.uri('ro')], { timeoutMs: 60_000 });
    assert.notEqual(bad.code, 0);
  });
});
