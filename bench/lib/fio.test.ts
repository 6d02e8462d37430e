import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fioArgs, NBD_JOBS, parseFioJson } from './fio.js';

// Compiled to dist/bench/lib; the fixture stays in the source tree.
const fixture = readFileSync(
  join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'lib', 'fixtures', 'fio-3.33-nbd-randwrite.json'),
  'utf8',
);

test('parses the write side of a real fio 3.33 nbd report', () => {
  const f = parseFioJson(fixture, 'write');
  assert.equal(f.bytes, 112619520);
  assert.equal(f.bandwidth, 112394730);
  assert.equal(f.iops, 27440.11976);
  assert.equal(f.clatP50Ns, 593920);
  assert.equal(f.clatP99Ns, 10158080);
  assert.equal(f.clatP999Ns, 29491200);
  assert.equal(f.runtimeMs, 1002);
  assert.ok(f.clientUsrPct > 0);
});

test('the read side of a write job moved nothing and has no percentiles', () => {
  const f = parseFioJson(fixture, 'read');
  assert.equal(f.bytes, 0);
  assert.equal(f.clatP99Ns, undefined);
});

test('a line the nbd engine prints before the JSON is skipped', () => {
  const f = parseFioJson('fio: connected to NBD server\n' + fixture, 'write');
  assert.equal(f.bytes, 112619520);
});

test('a job error or a report with no JSON is an error, not a zero row', () => {
  const broken = fixture.replace('"error" : 0', '"error" : 5');
  assert.throws(() => parseFioJson(broken, 'write'), /error 5/);
  assert.throws(() => parseFioJson('fio: io engine nbd init failed\n', 'write'), /no JSON/);
  assert.throws(() => parseFioJson('{"jobs": []}', 'write'), /no jobs/);
  assert.throws(() => parseFioJson('{"jobs": [{"error": 0, "write": {"io_bytes": "x"}}]}', 'write'), /io_bytes/);
});

test('fio arguments: nbd engine, time-based, same seeded offsets for every server', () => {
  const job = NBD_JOBS.find((j) => j.id === 'rand-read');
  assert.ok(job);
  const args = fioArgs(job, 'nbd://127.0.0.1:1234/bench', 5, '/tmp/out.json');
  for (const a of ['--ioengine=nbd', '--uri=nbd://127.0.0.1:1234/bench', '--rw=randread', '--bs=4096', '--iodepth=32', '--time_based', '--runtime=5', '--randrepeat=1', '--output=/tmp/out.json']) {
    assert.ok(args.includes(a), a);
  }
  assert.ok(args.some((a) => a.startsWith('--randseed=')));
});
