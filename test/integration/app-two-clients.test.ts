/**
 * The whole app on loopback: startServer() with a temporary data directory
 * and a random port, one golden image, two clients, real NBD connections.
 * Two clients write different data to the same blocks and each reads back
 * its own; the golden image's bytes and mtime do not change.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateConfig } from '../../src/app/config.js';
import { startServer, type ServerHandle } from '../../src/app/server.js';
import { COMMANDS, ERRORS, REPLY_TYPES } from '../../src/protocols/nbd/constants.js';
import { NbdTestClient } from '../helpers/nbd-client.js';
import { patternBytes, testLogger } from '../helpers/nbd.js';
import { until } from '../helpers/nbd-devices.js';

const SIZE = 8 * 1024 * 1024;
const A = '52:54:00:00:01:0a';
const B = '52:54:00:00:01:0b';

let dir: string;
let server: ServerHandle;
let port: number;
let golden: Buffer;
let versionPath: string;
let versionMtime: number;
const clients: NbdTestClient[] = [];

async function connect(name: string): Promise<NbdTestClient> {
  const c = await NbdTestClient.open(port, name);
  clients.push(c);
  return c;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'diskless-app-'));
  golden = patternBytes(SIZE, 42);
  writeFileSync(join(dir, 'golden.raw'), golden);
  const config = validateConfig({ dataDir: join(dir, 'data'), nbd: { host: '127.0.0.1', port: 0, overlayGraceMs: 200 }, http: { host: '127.0.0.1', port: 0 }, tftp: { enabled: false } });
  server = await startServer(config, { logger: testLogger() });
  port = server.nbdAddress.port;
  const v = await server.catalogue.addImageVersion('golden', join(dir, 'golden.raw'));
  versionPath = server.catalogue.dir.abs(v.path);
  versionMtime = statSync(versionPath).mtimeMs;
  server.catalogue.addClient({ mac: A, image: 'golden', mode: 'ephemeral', name: 'pc-a' });
  server.catalogue.addClient({ mac: B, image: 'golden', mode: 'persistent', name: 'pc-b' });
});

after(async () => {
  for (const c of clients) c.close();
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('two clients on one image', () => {
  test('each writes the same blocks and reads back its own data; the image is untouched', async () => {
    const a = await server.catalogue.newBoot(A);
    const b = await server.catalogue.newBoot(B);
    const ca = await connect(a.exportName);
    const cb = await connect(b.exportName);
    assert.equal(ca.size, SIZE);
    assert.equal(cb.size, SIZE);
    // Both start from the image.
    assert.deepEqual(await ca.read(1 << 20, 65536), golden.subarray(1 << 20, (1 << 20) + 65536));
    // Same offsets, different data; a partial-cluster write too.
    const da = patternBytes(192 * 1024, 1);
    const db = patternBytes(192 * 1024, 2);
    await Promise.all([ca.write(4096, da), cb.write(4096, db)]);
    await Promise.all([ca.write(SIZE - 1536, Buffer.alloc(512, 0xa1)), cb.write(SIZE - 1536, Buffer.alloc(512, 0xb1))]);
    assert.deepEqual(await ca.read(4096, da.length), da);
    assert.deepEqual(await cb.read(4096, db.length), db);
    assert.deepEqual(await ca.read(SIZE - 2048, 2048), Buffer.concat([golden.subarray(SIZE - 2048, SIZE - 1536), Buffer.alloc(512, 0xa1), golden.subarray(SIZE - 1024)]));
    assert.deepEqual(await cb.read(SIZE - 1536, 512), Buffer.alloc(512, 0xb1));
    // Bytes around the writes still come from the image.
    assert.deepEqual(await cb.read(0, 4096), golden.subarray(0, 4096));
    assert.equal((await ca.request(COMMANDS.NBD_CMD_FLUSH, 0, 0)).error, 0);
    assert.equal((await cb.request(COMMANDS.NBD_CMD_FLUSH, 0, 0)).error, 0);

    // A second connection of a client (multi-conn, a reconnect) sees its writes at once.
    const ca2 = await connect(a.exportName);
    assert.deepEqual(await ca2.read(4096, da.length), da);
    assert.equal(server.resolver.overlayRefs().get(A), 2, 'one overlay instance for both connections');

    assert.equal(statSync(versionPath).mtimeMs, versionMtime);
    assert.equal(sha(readFileSync(versionPath)), sha(golden));
    assert.equal(sha(readFileSync(join(dir, 'golden.raw'))), sha(golden), 'the source file too');
  });

  test('a client cannot open another client\'s disk; unknown names are refused', async () => {
    const a = server.catalogue.showClient(A);
    const b = server.catalogue.showClient(B);
    const token = (name: string): string => name.split('-')[1]!;
    for (const name of [`52540000010a-${token(b.exportName!)}`, `52540000010c-${token(a.exportName!)}`, 'golden', '']) {
      const c = await NbdTestClient.connect(port);
      clients.push(c);
      await assert.rejects(c.go(name), (err: { replyType?: number }) => err.replyType === REPLY_TYPES.NBD_REP_ERR_UNKNOWN, name);
      // Haggling goes on after a refusal: the right name still works on the same connection.
      if (name === '') await c.go(a.exportName!);
    }
    const list = await (await connect(a.exportName!)).size;
    assert.equal(list, SIZE);
  });

  test('read-only image exports from loopback: listed, readable, not writable', async () => {
    const lister = await NbdTestClient.connect(port);
    clients.push(lister);
    const names = (await lister.list()).map((e) => e.name);
    assert.deepEqual(names, ['image/golden', 'image/golden/1']);
    const ro = await connect('image/golden/1');
    assert.deepEqual(await ro.read(0, 65536), golden.subarray(0, 65536));
    assert.equal(await ro.errorOf(COMMANDS.NBD_CMD_WRITE, 0, 512, 0, Buffer.alloc(512)), ERRORS.NBD_EPERM);
  });

  test('a new boot of the ephemeral client cuts the old connection off and starts clean', async () => {
    const before = server.catalogue.showClient(A);
    const old = await connect(before.exportName!);
    assert.notDeepEqual(await old.read(4096, 4096), golden.subarray(4096, 8192), 'has its writes');
    const next = await server.catalogue.newBoot(A);
    assert.equal(next.overlayReset, true);
    assert.notEqual(await old.errorOf(COMMANDS.NBD_CMD_WRITE, 0, 512, 0, Buffer.alloc(512, 9)), 0, 'the previous boot can no longer write');
    const fresh = await connect(next.exportName);
    assert.deepEqual(await fresh.read(4096, 192 * 1024), golden.subarray(4096, 4096 + 192 * 1024));
    // The persistent client kept its data across a new boot.
    const nb = await server.catalogue.newBoot(B);
    const cb = await connect(nb.exportName);
    assert.deepEqual(await cb.read(4096, 192 * 1024), patternBytes(192 * 1024, 2));
  });

  test('boot events record the NBD connections', async () => {
    const events = server.catalogue.store.events.list({ mac: B });
    assert.ok(events.some((e) => e.step === 'nbd-connect' && e.detail?.address === '127.0.0.1'), JSON.stringify(events));
  });

  test('overlays close after the grace time once every connection is gone', async () => {
    for (const c of clients.splice(0)) {
      c.disconnect();
      c.close();
    }
    // The overlays close after their grace time, then release the image they sit on.
    await until(() => server.resolver.overlayRefs().size === 0 && server.resolver.openBaseCount === 0, 5000, 'idle overlays and bases closed');
  });
});
