/**
 * The recorded NBD trace of a real boot (test/fixtures/nbd-trace) parses and
 * looks like a boot: what its README and meta file say about it holds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseTraceCsv, summarizeTrace, type TraceSummary } from './nbd-trace.js';

// dist/bench/boot -> the repository root.
const FIXTURES = join(resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..'), 'test', 'fixtures', 'nbd-trace');

interface Meta {
  image: { virtualSize: number };
  overlay: { clusterSize: number; onlyInReplay: number; onlyInMap: number };
  markerS: number;
  connections: Array<{ conn: number }>;
  summary: TraceSummary;
}

test('the Debian 12 BIOS boot trace parses and is plausible', () => {
  const rows = parseTraceCsv(readFileSync(join(FIXTURES, 'debian12-bios-boot.csv'), 'utf8'));
  const meta = JSON.parse(readFileSync(join(FIXTURES, 'debian12-bios-boot.meta.json'), 'utf8')) as Meta;
  const size = meta.image.virtualSize;
  assert.ok(rows.length >= 100, `a boot sends hundreds of requests, not ${rows.length}`);

  for (let i = 0; i < rows.length; i += 1) {
    const r = rows[i]!;
    const where = `line ${i + 2}`;
    if (i > 0) assert.ok(r.t >= rows[i - 1]!.t, `${where}: times are sorted`);
    assert.ok(r.t > 0 && r.t <= meta.markerS, `${where}: between power-on and the marker`);
    assert.ok(r.offset + r.length <= size, `${where}: inside the ${size}-byte image`);
    // The kernel's logical block size is 512: every request is whole sectors.
    assert.equal(r.offset % 512, 0, `${where}: offset in whole sectors`);
    assert.equal(r.length % 512, 0, `${where}: length in whole sectors`);
    assert.ok(meta.connections.some((c) => c.conn === r.conn), `${where}: a known connection`);
    assert.equal(r.src !== undefined, r.cmd === 'read', `${where}: reads and only reads have a source`);
    assert.equal(r.error, undefined, `${where}: no request failed`);
    if (r.cmd === 'read' || r.cmd === 'write') assert.ok(r.length > 0 && r.length <= 32 << 20, `${where}: a data request of 1 byte to 32 MiB`);
    if (r.cmd === 'flush') assert.equal(r.length, 0, `${where}: a flush has no length`);
    assert.ok(r.latencyMs !== undefined && r.latencyMs >= 0 && r.latencyMs < 60_000, `${where}: a reply came back`);
  }

  const s = summarizeTrace(rows);
  const reads = s.byCommand.read!;
  const writes = s.byCommand.write ?? { count: 0, bytes: 0 };
  assert.ok(reads.count > rows.length / 2, 'reads dominate the requests');
  assert.ok(reads.bytes > writes.bytes, 'more bytes are read than written');
  assert.ok((s.readsBySource.base ?? 0) > (s.readsBySource.overlay ?? 0), 'an ephemeral boot reads mostly the base');
  // The first thing the kernel reads is the partition table at the start of the disk.
  assert.ok(rows.slice(0, 10).some((r) => r.cmd === 'read' && r.offset === 0), 'sector 0 is read first');
  assert.deepEqual(s, meta.summary, 'the meta file sums up this very file');
  assert.equal(meta.overlay.onlyInReplay + meta.overlay.onlyInMap, 0, 'the base/overlay replay agreed with the overlay map');
});
