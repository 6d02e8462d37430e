/**
 * The NBD server driven by libnbd (python3-libnbd): every option, command
 * and flag the server implements, structured replies on and off, meta
 * contexts listed and set, read-only and other refusals (with libnbd's
 * client-side checks turned off so the server's answers are what is
 * tested), and the old NBD_OPT_EXPORT_NAME path. Each scenario is a Python
 * script with its own assertions; the device calls it causes are checked
 * here too.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DisklessError } from '../../src/lib/errors.js';
import { MemoryDevice } from '../../src/storage/memory-device.js';
import { destroyAllSockets } from '../helpers/nbd-client.js';
import { HookedDevice } from '../helpers/nbd-devices.js';
import { patternBytes, startNbdServer, type StartedNbd } from '../helpers/nbd.js';
import { assertPeerOk, requireLibnbdPython, runPeer } from '../helpers/nbd-peers.js';

const MiB = 1024 * 1024;
const KiB = 1024;

/** Shared by every scenario: connection helpers and the expected pattern. */
const PRELUDE = String.raw`
import errno, sys, nbd
PORT = int(sys.argv[1])
URI = lambda name: 'nbd://127.0.0.1:%d/%s' % (PORT, name)
MiB = 1024 * 1024
KiB = 1024

def pattern(length, seed):
    # Same xorshift32 as test/helpers/nbd.ts patternBytes().
    out = bytearray(length)
    x = seed or 0x9e3779b9
    i = 0
    while i + 4 <= length:
        x ^= (x << 13) & 0xffffffff
        x ^= x >> 17
        x ^= (x << 5) & 0xffffffff
        out[i:i+4] = x.to_bytes(4, 'little')
        i += 4
    while i < length:
        x ^= (x << 13) & 0xffffffff
        x ^= x >> 17
        x ^= (x << 5) & 0xffffffff
        out[i] = x & 0xff
        i += 1
    return bytes(out)

def connect(name, structured=True, meta=True, strict=True):
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    if meta:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    if not strict:
        h.set_strict_mode(0)
    h.connect_uri(URI(name))
    return h

def expect_errno(e, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except nbd.Error as err:
        # nbd.Error: errnum is the number, errno its symbolic name.
        assert err.errnum == e, 'expected %s, got %s (%s)' % (errno.errorcode[e], err.errno, err.string)
        return
    raise AssertionError('expected %s from %s' % (errno.errorcode[e], fn.__name__))

def extents(h, count, offset, flags=0):
    got = []
    def cb(metacontext, off, entries, err):
        assert metacontext == nbd.CONTEXT_BASE_ALLOCATION, metacontext
        got.extend(zip(entries[0::2], entries[1::2]))
        return 0
    h.block_status(count, offset, cb, flags)
    return got
`;

const SCENARIOS: Record<string, string> = {
  options: String.raw`
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(URI(''))
assert h.aio_is_negotiating()
names = {}
h.opt_list(lambda name, desc: names.__setitem__(name, desc) or 0)
assert sorted(names) == ['disk', 'flaky', 'nofast', 'ro', 'single'], names
assert names['disk'] == 'libnbd disk', names

h.set_full_info(True)
h.set_export_name('disk')
h.opt_info()
assert h.get_size() == 8 * MiB
assert h.get_canonical_export_name() == 'disk'
assert h.get_export_description() == 'libnbd disk'
assert h.get_block_size(nbd.SIZE_MINIMUM) == 1
assert h.get_block_size(nbd.SIZE_PREFERRED) == 4096
assert h.get_block_size(nbd.SIZE_MAXIMUM) == 32 * MiB
assert not h.is_read_only()
for f in ('can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_fast_zero', 'can_cache', 'can_multi_conn', 'can_df'):
    assert getattr(h, f)() == True, f

h.set_export_name('ro')
h.opt_info()
assert h.is_read_only()
assert not h.can_trim() and not h.can_zero() and not h.can_fua()
h.set_export_name('single')
h.opt_info()
assert not h.can_multi_conn()
h.set_export_name('nofast')
h.opt_info()
assert h.can_zero() and not h.can_fast_zero() and h.can_fua()

for name in ('nope', 'secret'):
    h.set_export_name(name)
    try:
        h.opt_info()
        raise AssertionError('opt_info(%s) succeeded' % name)
    except nbd.Error:
        pass

found = []
h.set_export_name('disk')
h.opt_list_meta_context(lambda name: found.append(name) or 0)
assert found == ['base:allocation'], found
found = []
h.add_meta_context('base:')
h.opt_list_meta_context(lambda name: found.append(name) or 0)
assert found == ['base:allocation'], found
h.clear_meta_contexts()
h.add_meta_context('x-unknown:thing')
found = []
h.opt_list_meta_context(lambda name: found.append(name) or 0)
assert found == [], found
h.clear_meta_contexts()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)

h.opt_go()
assert h.aio_is_ready()
assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
assert h.pread(4096, 0) == pattern(MiB, 1)[:4096]
h.shutdown()

a = nbd.NBD()
a.set_opt_mode(True)
a.connect_uri(URI('disk'))
a.opt_abort()
assert a.aio_is_closed()
print('ok')
`,

  structured: String.raw`
h = connect('disk')
assert h.get_structured_replies_negotiated()
assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
assert h.can_df()
data = pattern(MiB, 1)
assert h.pread(MiB, 0) == data

# A read across data and a hole: data and hole chunks, reassembled right.
chunks = []
buf = h.pread_structured(2 * MiB, 512 * KiB, lambda sub, off, status, err: chunks.append((off, len(sub), status)) or 0)
assert buf == data[512 * KiB:] + bytes(MiB + 512 * KiB), 'pread_structured contents'
assert (512 * KiB, 512 * KiB, nbd.READ_DATA) in chunks, chunks
assert any(s == nbd.READ_HOLE for _, _, s in chunks), chunks
assert sum(n for _, n, _ in chunks) == 2 * MiB
# DF: exactly one content chunk.
chunks = []
h.pread_structured(2 * MiB, 512 * KiB, lambda sub, off, status, err: chunks.append((off, len(sub), status)) or 0, nbd.CMD_FLAG_DF)
assert chunks == [(512 * KiB, 2 * MiB, nbd.READ_DATA)], chunks

# Block status, then after writes, trims and zeroes.
assert extents(h, 8 * MiB, 0) == [(MiB, 0), (7 * MiB, 3)], extents(h, 8 * MiB, 0)
h.pwrite(b'\xaa' * 65536, 2 * MiB, nbd.CMD_FLAG_FUA)
h.zero(65536, 3 * MiB, nbd.CMD_FLAG_NO_HOLE)
h.zero(65536, 4 * MiB, nbd.CMD_FLAG_FAST_ZERO)
h.trim(65536, 0, nbd.CMD_FLAG_FUA)
h.flush()
h.cache(MiB, 0)
got = extents(h, 8 * MiB, 0)
assert got == [(65536, 3), (MiB - 65536, 0), (MiB, 3), (65536, 0), (MiB - 65536, 3), (65536, 2), (5 * MiB - 65536, 3)], got
assert extents(h, 8 * MiB, 0, nbd.CMD_FLAG_REQ_ONE) == [(65536, 3)]
assert extents(h, 1000, 65536 + 10, nbd.CMD_FLAG_REQ_ONE) == [(1000, 0)]
assert h.pread(65536, 2 * MiB) == b'\xaa' * 65536
assert h.pread(65536, 0) == bytes(65536)

# Pipelined: many reads in flight at once, completed in any order.
bufs = [nbd.Buffer(8192) for _ in range(64)]
cookies = [h.aio_pread(b, 65536 + i * 8192) for i, b in enumerate(bufs)]
while h.aio_in_flight() > 0:
    h.poll(-1)
for i, c in enumerate(cookies):
    assert h.aio_command_completed(c)
    assert bufs[i].to_bytearray() == data[65536 + i * 8192:65536 + (i + 1) * 8192]
h.shutdown()
print('ok')
`,

  simple: String.raw`
h = connect('disk', structured=False, meta=False)
assert not h.get_structured_replies_negotiated()
assert not h.can_df()
data = pattern(MiB, 1)
assert h.pread(100000, 123456) == data[123456:223456]
h.pwrite(b'\x55' * 4096, 6 * MiB, nbd.CMD_FLAG_FUA)
assert h.pread(4096, 6 * MiB) == b'\x55' * 4096
h.zero(4096, 6 * MiB, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(4096, 6 * MiB) == bytes(4096)
h.trim(4096, 6 * MiB)
h.flush()
h.cache(4096, 0)
h.shutdown()
# With libnbd's own checks off, the server refuses what simple replies cannot do.
s = connect('disk', structured=False, meta=False, strict=False)
expect_errno(errno.EINVAL, s.pread, 4096, 0, nbd.CMD_FLAG_DF)
expect_errno(errno.EINVAL, s.pread, 32 * MiB + 1, 0)
s.shutdown()
print('ok')
`,

  readonly: String.raw`
h = connect('ro', strict=False)
assert h.is_read_only()
assert h.pread(4096, 4096) == pattern(2 * MiB, 3)[4096:8192]
expect_errno(errno.EPERM, h.pwrite, b'x' * 512, 0)
expect_errno(errno.EPERM, h.trim, 512, 0)
expect_errno(errno.EPERM, h.zero, 512, 0)
expect_errno(errno.EPERM, h.zero, 512, 0, nbd.CMD_FLAG_NO_HOLE)
h.flush()
assert h.pread(4096, 4096) == pattern(2 * MiB, 3)[4096:8192]
h.shutdown()
print('ok')
`,

  refusals: String.raw`
h = connect('disk', strict=False)
size = h.get_size()
expect_errno(errno.EINVAL, h.pread, 2, size - 1)
expect_errno(errno.ENOSPC, h.pwrite, b'xy', size - 1)
expect_errno(errno.ENOSPC, h.zero, 2, size - 1)
expect_errno(errno.EINVAL, h.trim, 2, size - 1)
expect_errno(errno.EINVAL, h.cache, 2, size - 1)
expect_errno(errno.EINVAL, h.pread, 512, 0, nbd.CMD_FLAG_REQ_ONE)
expect_errno(errno.EINVAL, h.trim, 512, 0, nbd.CMD_FLAG_FAST_ZERO)
assert h.pread(512, size - 512) is not None
h.shutdown()
big = connect('big', strict=False)
expect_errno(errno.EOVERFLOW, big.pread, 32 * MiB + 512, 0)
assert big.pread(32 * MiB, 0) == bytes(32 * MiB)
big.shutdown()
n = connect('nofast', strict=False)
assert not n.can_fast_zero()
expect_errno(errno.EINVAL, n.zero, 4096, 0, nbd.CMD_FLAG_FAST_ZERO)
n.zero(4096, 0)
n.pwrite(b'f' * 4096, 8192, nbd.CMD_FLAG_FUA)
assert n.pread(4096, 8192) == b'f' * 4096
n.shutdown()
f = connect('flaky')
expect_errno(errno.EIO, f.pread, 4096, 64 * KiB)
statuses = []
try:
    f.pread_structured(8192, 60 * KiB, lambda sub, off, status, err: statuses.append(status) or 0)
    raise AssertionError('read of a bad range succeeded')
except nbd.Error as e:
    assert e.errnum == errno.EIO, e
assert f.pread(4096, 0) == bytes(4096)
f.shutdown()
print('ok')
`,

  oldstyle: String.raw`
# Without NBD_FLAG_FIXED_NEWSTYLE libnbd falls back to NBD_OPT_EXPORT_NAME,
# and without NO_ZEROES the server sends the 124 zeroes.
for flags in (0, nbd.HANDSHAKE_FLAG_FIXED_NEWSTYLE):
    h = nbd.NBD()
    h.set_handshake_flags(flags)
    h.connect_uri(URI('disk'))
    assert h.get_size() == 8 * MiB
    assert h.pread(4096, 98304) == pattern(MiB, 1)[98304:102400]
    if flags == 0:
        assert h.get_protocol() == 'newstyle', h.get_protocol()
    h.shutdown()
print('ok')
`,

  multiconn: String.raw`
a = connect('disk')
b = connect('disk', structured=False, meta=False)
assert a.can_multi_conn() and b.can_multi_conn()
a.pwrite(b'm' * 4096, 7 * MiB)
a.flush()
assert b.pread(4096, 7 * MiB) == b'm' * 4096
a.shutdown()
b.shutdown()
s = connect('single')
assert not s.can_multi_conn()
s.shutdown()
print('ok')
`,
};

describe('nbd interop: libnbd', () => {
  let nbd: StartedNbd;
  let dir: string;
  const disk = new HookedDevice(new MemoryDevice(8 * MiB, { data: patternBytes(MiB, 1) }));
  const nofast = new HookedDevice(new MemoryDevice(MiB), { capabilities: { fastZero: false, fua: false } });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'diskless-libnbd-'));
    nbd = await startNbdServer({
      disk: { device: disk, description: 'libnbd disk' },
      ro: { device: new MemoryDevice(2 * MiB, { readOnly: true, data: patternBytes(2 * MiB, 3) }) },
      single: { device: new MemoryDevice(MiB, { multiConn: false }) },
      big: { device: new MemoryDevice(64 * MiB), hidden: true },
      nofast: { device: nofast },
      flaky: {
        device: new HookedDevice(new MemoryDevice(MiB), {
          hook: (call) => {
            if (call.op === 'read' && call.offset! < 68 * KiB && call.offset! + call.length! > 64 * KiB) throw new DisklessError('STORAGE_IO', 'bad sector', 'EIO');
          },
        }),
      },
      secret: { device: new MemoryDevice(MiB), forbidden: true, hidden: true },
    });
  });

  after(async () => {
    destroyAllSockets();
    await nbd.close();
    assert.equal(nbd.resolver.openCount, 0);
    rmSync(dir, { recursive: true, force: true });
  });

  const run = async (name: string, python: string): Promise<void> => {
    const file = join(dir, `${name}.py`);
    writeFileSync(file, PRELUDE + SCENARIOS[name]);
    const r = await runPeer(python, [file, String(nbd.port)], { timeoutMs: 60_000 });
    assertPeerOk(r, `libnbd scenario ${name}`);
    assert.equal(r.stdout.trim(), 'ok');
  };

  test('options: list, info with full info, meta context list, go, abort', async (t) => {
    const python = requireLibnbdPython(t);
    if (!python) return;
    await run('options', python);
  });

  test('structured replies: data and hole chunks, DF, block status, REQ_ONE, writes with flags, pipelining', async (t) => {
    const python = requireLibnbdPython(t);
    if (!python) return;
    const before = disk.calls.length;
    await run('structured', python);
    const calls = disk.calls.slice(before).filter((c) => c.op !== 'read' && c.op !== 'extents');
    assert.deepEqual(calls.map((c) => [c.op, c.offset, c.length, c.options]), [
      ['write', 2 * MiB, 65536, { fua: true }],
      ['zero', 3 * MiB, 65536, { fua: false, mayTrim: false, fast: false }],
      ['zero', 4 * MiB, 65536, { fua: false, mayTrim: true, fast: true }],
      ['trim', 0, 65536, { fua: true }],
      ['flush', undefined, undefined, undefined],
      ['cache', 0, MiB, undefined],
    ]);
  });

  test('simple replies: every command without structured replies', async (t) => {
    const python = requireLibnbdPython(t);
    if (!python) return;
    await run('simple', python);
  });

  test('read-only export: writes, trims and zeroes refused with EPERM', async (t) => {
    const python = requireLibnbdPython(t);
    if (!python) return;
    await run('readonly', python);
  });

  test('refusals: ranges, flags, sizes, fast zero, device errors', async (t) => {
    const python = requireLibnbdPython(t);
    if (!python) return;
    await run('refusals', python);
    // FUA on a device without it became a write and a flush.
    const w = nofast.calls.findIndex((c) => c.op === 'write');
    assert.ok(w >= 0);
    assert.equal(nofast.calls[w + 1]?.op, 'flush');
  });

  test('NBD_OPT_EXPORT_NAME with and without the 124 zeroes', async (t) => {
    const python = requireLibnbdPython(t);
    if (!python) return;
    await run('oldstyle', python);
  });

  test('multi-conn is advertised only where the device shares one view', async (t) => {
    const python = requireLibnbdPython(t);
    if (!python) return;
    await run('multiconn', python);
  });
});
