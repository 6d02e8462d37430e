/**
 * A client's overlay quota, set in the catalogue, holds on the running
 * server: writes that would allocate past it get ENOSPC while another client
 * keeps writing; raising it (as the CLI or the API does, through the
 * catalogue) reaches the open overlay within the server's check interval.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateConfig } from '../../src/app/config.js';
import { DISCARD_CHECK_MS } from '../../src/app/export-resolver.js';
import { startServer, type ServerHandle } from '../../src/app/server.js';
import { COMMANDS, ERRORS } from '../../src/protocols/nbd/constants.js';
import { NbdTestClient } from '../helpers/nbd-client.js';
import { patternBytes, testLogger } from '../helpers/nbd.js';

const A = '52:54:00:0b:00:01';
const B = '52:54:00:0b:00:02';
const KiB = 1024;

let dir: string;
let server: ServerHandle;
const clients: NbdTestClient[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'diskless-quota-'));
  writeFileSync(join(dir, 'base.raw'), patternBytes(8 * 1024 * KiB, 7));
  const config = validateConfig({ dataDir: join(dir, 'data'), nbd: { host: '127.0.0.1', port: 0 }, http: { host: '127.0.0.1', port: 0 }, tftp: { enabled: false } });
  server = await startServer(config, { logger: testLogger() });
  await server.catalogue.addImageVersion('base', join(dir, 'base.raw'));
  server.catalogue.addClient({ mac: A, image: 'base' });
  server.catalogue.addClient({ mac: B, image: 'base' });
  server.catalogue.updateClient(A, { quotaBytes: 256 * KiB });
});

after(async () => {
  for (const c of clients) c.close();
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('writes past the quota get ENOSPC; others keep writing; a raised quota applies to the open overlay', async () => {
  const a = await NbdTestClient.open(server.nbdAddress.port, (await server.catalogue.newBoot(A)).exportName);
  const b = await NbdTestClient.open(server.nbdAddress.port, (await server.catalogue.newBoot(B)).exportName);
  clients.push(a, b);
  const chunk = patternBytes(128 * KiB, 1);
  await a.write(0, chunk);
  await a.write(128 * KiB, chunk);
  // 256 KiB allocated: a write into new clusters is refused, the space held stays writable.
  assert.equal(await a.errorOf(COMMANDS.NBD_CMD_WRITE, 1024 * KiB, chunk.length, 0, chunk), ERRORS.NBD_ENOSPC);
  await a.write(64 * KiB, patternBytes(4 * KiB, 2));
  // Client B has no quota.
  for (let i = 0; i < 8; i++) await b.write(i * 512 * KiB, chunk);
  // The refused write left nothing behind.
  assert.deepEqual(await a.read(1024 * KiB, 4 * KiB), patternBytes(8 * 1024 * KiB, 7).subarray(1024 * KiB, 1028 * KiB));

  server.catalogue.updateClient(A, { quotaBytes: 1024 * KiB });
  await new Promise((r) => setTimeout(r, DISCARD_CHECK_MS + 500));
  await a.write(1024 * KiB, chunk);
  assert.deepEqual(await a.read(1024 * KiB, chunk.length), chunk);
  const view = server.catalogue.showClient(A);
  assert.equal(view.quotaBytes, 1024 * KiB);
});
