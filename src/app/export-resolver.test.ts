import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDisklessError } from '../lib/errors.js';
import type { OpenedExport, Peer } from '../protocols/nbd/exports.js';
import { Catalogue } from './catalogue.js';
import { CatalogueExportResolver, type CatalogueExportResolverOptions } from './export-resolver.js';

const A = '52:54:00:00:00:0a';
const B = '52:54:00:00:00:0b';
const SIZE = 1024 * 1024;
const peer = (address: string, port = 40000): Peer => ({ address, port, family: address.includes(':') ? 'IPv6' : 'IPv4' });
const pattern = (n: number, seed: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));

async function rejectsCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isDisklessError(err, code), `expected ${code}, got ${(err as { code?: string }).code}: ${(err as Error).message}`);
    return true;
  });
}

let dir: string;
let imageFile: string;
let catalogue: Catalogue;
let resolver: CatalogueExportResolver;
const opened: OpenedExport[] = [];

function makeResolver(options: Partial<CatalogueExportResolverOptions> = {}): CatalogueExportResolver {
  return new CatalogueExportResolver({ catalogue, graceMs: 0, ...options });
}

async function open(name: string, address = '10.0.0.5'): Promise<OpenedExport> {
  const e = await resolver.open(name, peer(address));
  opened.push(e);
  return e;
}

async function releaseAll(): Promise<void> {
  for (const e of opened.splice(0)) await e.release();
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'diskless-resolver-'));
  imageFile = join(dir, 'golden.raw');
  writeFileSync(imageFile, pattern(SIZE, 7));
  catalogue = Catalogue.open(join(dir, 'data'));
  await catalogue.addImageVersion('debian12', imageFile);
  catalogue.addClient({ mac: A, image: 'debian12', mode: 'ephemeral' });
  catalogue.addClient({ mac: B, image: 'debian12', mode: 'persistent' });
  resolver = makeResolver();
});

afterEach(async () => {
  await releaseAll();
  await resolver.close();
  catalogue.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('client exports', () => {
  test('a client opens only its own overlay; every other name is unknown', async () => {
    await rejectsCode(resolver.open(`525400000000a-${'0'.repeat(32)}`, peer('10.0.0.5')), 'NBD_EXPORT_UNKNOWN');
    const a = await catalogue.newBoot(A);
    const b = await catalogue.newBoot(B);
    assert.match(a.exportName, /^52540000000a-[0-9a-f]{32}$/);
    const ea = await open(a.exportName, '10.0.0.5');
    const eb = await open(b.exportName, '10.0.0.6');
    assert.notEqual(ea.device, eb.device);
    assert.equal(ea.device.size, SIZE);
    // A's MAC with B's token, a token off by one digit, an unknown MAC, junk: all unknown.
    for (const name of [
      `52540000000a-${b.token}`,
      `52540000000a-${a.token.slice(0, 31)}${a.token[31] === '0' ? '1' : '0'}`,
      `52540000000c-${a.token}`,
      a.exportName.toUpperCase(),
      '', 'disk', `${a.exportName}/x`, 'image/../etc',
    ]) {
      await rejectsCode(resolver.open(name, peer('10.0.0.5')), 'NBD_EXPORT_UNKNOWN');
    }
    // Writes go to each client's own overlay.
    await ea.device.write(0, Buffer.alloc(4096, 0xaa));
    await eb.device.write(0, Buffer.alloc(4096, 0xbb));
    assert.equal((await ea.device.read(0, 1))[0], 0xaa);
    assert.equal((await eb.device.read(0, 1))[0], 0xbb);
  });

  test('once bound to an address, the export is refused to any other', async () => {
    const a = await catalogue.newBoot(A);
    await open(a.exportName, '10.0.0.5');
    assert.equal(catalogue.store.clients.require(A).bootAddress, '10.0.0.5');
    await rejectsCode(resolver.open(a.exportName, peer('10.0.0.66')), 'NBD_EXPORT_FORBIDDEN');
    await open(a.exportName, '::ffff:10.0.0.5');
    // A boot started with the script fetch's address is bound from the start.
    const b = await catalogue.newBoot(B, { address: '10.0.0.7' });
    await rejectsCode(resolver.open(b.exportName, peer('10.0.0.5')), 'NBD_EXPORT_FORBIDDEN');
    await open(b.exportName, '10.0.0.7');
    // A new boot clears the binding.
    await releaseAll();
    const a2 = await catalogue.newBoot(A);
    await open(a2.exportName, '10.0.0.66');
  });

  test('with bindClientAddress off, any address may use the name', async () => {
    await resolver.close();
    resolver = makeResolver({ bindClientAddress: false });
    const a = await catalogue.newBoot(A);
    await open(a.exportName, '10.0.0.5');
    await open(a.exportName, '10.0.0.66');
    assert.equal(catalogue.store.clients.require(A).lastAddress, '10.0.0.66');
  });

  test('ephemeral: a new boot discards the overlay; the old name stops working', async () => {
    const first = await catalogue.newBoot(A);
    const e = await open(first.exportName);
    await e.device.write(8192, Buffer.alloc(4096, 0xcc));
    const dir1 = catalogue.showClient(A).overlay!.path;
    assert.ok(existsSync(dir1));
    await releaseAll();
    const second = await catalogue.newBoot(A);
    assert.equal(second.overlayReset, true);
    assert.notEqual(second.token, first.token);
    await rejectsCode(resolver.open(first.exportName, peer('10.0.0.5')), 'NBD_EXPORT_UNKNOWN');
    const e2 = await open(second.exportName);
    assert.deepEqual(await e2.device.read(8192, 4096), pattern(SIZE, 7).subarray(8192, 8192 + 4096), 'fresh overlay shows the image');
    assert.ok(!existsSync(dir1), 'discarded overlay folder deleted');
    assert.notEqual(catalogue.showClient(A).overlay!.path, dir1);
  });

  test('ephemeral: connections of the previous boot are cut off from the discarded disk', async () => {
    const first = await catalogue.newBoot(A);
    const stale = await open(first.exportName);
    await stale.device.write(0, Buffer.alloc(512, 1));
    const dir1 = catalogue.showClient(A).overlay!.path;
    await catalogue.newBoot(A);
    await assert.rejects(stale.device.write(0, Buffer.alloc(512, 2)), (err: unknown) => (err as { errno?: string }).errno === 'ESHUTDOWN');
    assert.ok(!existsSync(dir1));
    await stale.release();
  });

  test('an open waiting while a new boot starts sees the new boot, not the discarded overlay', async () => {
    const first = await catalogue.newBoot(A);
    const p1 = resolver.open(first.exportName, peer('10.0.0.5'));
    const p2 = resolver.open(first.exportName, peer('10.0.0.5'));
    const r2 = p2.then((e) => { opened.push(e); return e; }, (err: unknown) => err);
    // p1 now holds the client's lock, opening the overlay; p2 waits for it.
    await new Promise((r) => setImmediate(r));
    const second = await catalogue.newBoot(A);
    const e1 = await p1;
    opened.push(e1);
    assert.ok(isDisklessError(await r2, 'NBD_EXPORT_UNKNOWN'), 'the waiting open saw the new boot');
    const fresh = await open(second.exportName);
    assert.equal(resolver.openOverlay(A), fresh.device);
    assert.equal(catalogue.showClient(A).overlay!.dir.endsWith('/2'), true);
  });

  test('persistent: a new boot keeps the overlay and its data', async () => {
    const first = await catalogue.newBoot(B);
    const e = await open(first.exportName);
    await e.device.write(4096, Buffer.alloc(4096, 0xdd));
    await releaseAll();
    const path1 = catalogue.showClient(B).overlay!.path;
    const second = await catalogue.newBoot(B);
    assert.equal(second.overlayReset, false);
    await rejectsCode(resolver.open(first.exportName, peer('10.0.0.5')), 'NBD_EXPORT_UNKNOWN');
    const e2 = await open(second.exportName);
    assert.deepEqual(await e2.device.read(4096, 4096), Buffer.alloc(4096, 0xdd));
    assert.equal(catalogue.showClient(B).overlay!.path, path1);
  });

  test('persistent: a new image version waits for a reset; reset discards and ends the boot', async () => {
    const first = await catalogue.newBoot(B);
    const e = await open(first.exportName);
    await e.device.write(0, Buffer.alloc(4096, 0xee));
    await releaseAll();
    writeFileSync(imageFile, pattern(SIZE, 9));
    await catalogue.addImageVersion('debian12', imageFile);
    const second = await catalogue.newBoot(B);
    assert.equal(second.version, 1);
    assert.equal(second.pendingVersion, 2);
    const reset = await catalogue.resetClient(B);
    assert.equal(reset.removed.length, 1);
    assert.equal(catalogue.showClient(B).exportName, null);
    await rejectsCode(resolver.open(second.exportName, peer('10.0.0.5')), 'NBD_EXPORT_UNKNOWN');
    const third = await catalogue.newBoot(B);
    assert.equal(third.version, 2);
    const e3 = await open(third.exportName, '10.0.0.9');
    assert.deepEqual(await e3.device.read(0, 4096), pattern(SIZE, 9).subarray(0, 4096));
  });

  test('reconnects share one overlay instance; it closes after the grace time', async () => {
    await resolver.close();
    resolver = makeResolver({ graceMs: 150 });
    const b = await catalogue.newBoot(B);
    const [e1, e2] = await Promise.all([open(b.exportName), open(b.exportName)]);
    assert.equal(e1!.device, e2!.device, 'concurrent opens share the instance');
    assert.equal(resolver.overlayRefs().get(B), 2);
    await e1!.release();
    await e2!.release();
    opened.length = 0;
    const e3 = await open(b.exportName);
    assert.equal(e3.device, e1!.device, 'a reconnect within the grace time finds the same instance');
    await e3.device.write(0, Buffer.alloc(4096, 0x11));
    await releaseAll();
    assert.ok(resolver.openOverlay(B), 'still open during the grace time');
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(resolver.openOverlay(B), undefined, 'closed after the grace time');
    assert.equal(resolver.openBaseCount, 0, 'the base was released with it');
    const e4 = await open(b.exportName);
    assert.notEqual(e4.device, e1!.device);
    assert.deepEqual(await e4.device.read(0, 4096), Buffer.alloc(4096, 0x11), 'its data was flushed and is read back');
  });

  test('a discard by another process (the CLI) is noticed at the next open', async () => {
    const first = await catalogue.newBoot(A);
    const held = await open(first.exportName);
    await held.device.write(0, Buffer.alloc(4096, 0x22));
    const dir1 = catalogue.showClient(A).overlay!.path;
    // A second catalogue on the same data directory, with no resolver listening.
    const cli = Catalogue.open(join(dir, 'data'));
    try {
      const second = await cli.newBoot(A);
      assert.ok(existsSync(dir1), 'still open here, so not deleted there');
      const fresh = await open(second.exportName);
      assert.notEqual(fresh.device, held.device);
      assert.deepEqual(await fresh.device.read(0, 4096), pattern(SIZE, 7).subarray(0, 4096));
      assert.ok(!existsSync(dir1), 'the old overlay was retired and deleted');
    } finally {
      cli.close();
    }
  });
});

describe('discards by another process', () => {
  test('a reset from the CLI cuts off the connections still using the overlay', async () => {
    await resolver.close();
    resolver = makeResolver({ discardCheckMs: 50 });
    const b = await catalogue.newBoot(B);
    const held = await open(b.exportName);
    await held.device.write(0, Buffer.alloc(4096, 0x55));
    const path = catalogue.showClient(B).overlay!.path;
    const cli = Catalogue.open(join(dir, 'data'));
    try {
      const r = await cli.resetClient(B);
      assert.deepEqual(r.busy, [r.discarded!.dir], 'open in the server, so the CLI leaves it');
    } finally {
      cli.close();
    }
    const deadline = Date.now() + 5000;
    while (existsSync(path) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(!existsSync(path), 'retired and deleted by the server');
    await assert.rejects(held.device.write(0, Buffer.alloc(512)), (err: unknown) => (err as { errno?: string }).errno === 'ESHUTDOWN');
    assert.equal(resolver.openOverlay(B), undefined);
  });
});

describe('read-only image exports', () => {
  test('loopback may open published versions read-only; other addresses are refused', async () => {
    const cur = await open('image/debian12', '127.0.0.1');
    assert.equal(cur.device.capabilities.readOnly, true);
    assert.deepEqual(await cur.device.read(0, 64), pattern(SIZE, 7).subarray(0, 64));
    const v1 = await open('image/debian12/1', '::1');
    assert.equal(v1.device, cur.device, 'one base device per version');
    await rejectsCode(resolver.open('image/debian12/2', peer('127.0.0.1')), 'NBD_EXPORT_UNKNOWN');
    await rejectsCode(resolver.open('image/nope', peer('127.0.0.1')), 'NBD_EXPORT_UNKNOWN');
    await rejectsCode(resolver.open('image/debian12', peer('10.0.0.5')), 'NBD_EXPORT_FORBIDDEN');
    await rejectsCode(resolver.open('image/nope', peer('10.0.0.5')), 'NBD_EXPORT_FORBIDDEN');
    const listed = (await resolver.list(peer('127.0.0.1'))).map((e) => e.name);
    assert.deepEqual(listed, ['image/debian12', 'image/debian12/1']);
    assert.deepEqual(await resolver.list(peer('10.0.0.5')), []);
    await catalogue.newBoot(A);
    assert.ok(!(await resolver.list(peer('127.0.0.1'))).some((e) => e.name.startsWith('52540000000a')), 'client exports are never listed');
  });

  test('unpublished versions are not exported; the allow list is configurable', async () => {
    await catalogue.addImageVersion('debian12', imageFile, { publish: false });
    await rejectsCode(resolver.open('image/debian12/2', peer('127.0.0.1')), 'NBD_EXPORT_UNKNOWN');
    await resolver.close();
    resolver = makeResolver({ readOnlyFrom: ['10.0.0.0/24'] });
    await open('image/debian12/1', '10.0.0.5');
    await rejectsCode(resolver.open('image/debian12/1', peer('127.0.0.1')), 'NBD_EXPORT_FORBIDDEN');
  });
});

test('the image file copied into the catalogue is never written', async () => {
  const v = catalogue.showImage('debian12').versions[0]!;
  const path = catalogue.dir.abs(v.path);
  const before = statSync(path);
  assert.equal(before.mode & 0o777, 0o440);
  assert.equal(v.sha256, createHash('sha256').update(readFileSync(imageFile)).digest('hex'));
  const a = await catalogue.newBoot(A);
  const e = await open(a.exportName);
  await e.device.write(0, Buffer.alloc(SIZE, 0x33));
  await e.device.flush();
  await releaseAll();
  const after = statSync(path);
  assert.equal(after.mtimeMs, before.mtimeMs);
  assert.equal(createHash('sha256').update(readFileSync(path)).digest('hex'), v.sha256);
});

test('after close, opens are refused as a shutdown', async () => {
  const a = await catalogue.newBoot(A);
  await resolver.close();
  await rejectsCode(resolver.open(a.exportName, peer('10.0.0.5')), 'NBD_SERVER_CLOSED');
});
