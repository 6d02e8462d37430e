/**
 * A maintenance commit through the REST API, on a disk the image tooling
 * accepts (a small GPT disk with an ext4 root, a kernel and an initramfs
 * with NBD support, made with sfdisk and mkfs.ext4 and read with debugfs):
 * maintenance on, a boot makes the draft, POST /clients/{mac}/commit makes
 * it the next version, held or published as asked, and the client leaves
 * maintenance. Skips locally without the tools; CI has them.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NO_BOOT } from '../helpers/no-boot.js';
import { HttpServer } from '../../src/api/http-server.js';
import { loadOrCreateApiToken, restApi } from '../../src/api/rest/index.js';
import { Catalogue } from '../../src/app/catalogue.js';
import { makeDisk, makeInitrd, systemTree } from '../../src/images/test-support.js';
import { havePeer, requirePeers } from '../helpers/peers.js';

const PEERS = ['sfdisk', 'mkfs.ext4', 'debugfs'];
const V = '6.1.0-1-amd64';
const MAC = '52:54:00:0c:00:01';

let dir: string;
let catalogue: Catalogue | null = null;
let server: HttpServer | null = null;
let base: string;
let token: string;

before(async () => {
  if (!PEERS.every(havePeer)) return;
  dir = mkdtempSync(join(tmpdir(), 'dl-rest-commit-'));
  const disk = join(dir, 'tools.raw');
  const initrd = await makeInitrd({ kernelVersion: V, flavour: 'initramfs-tools' });
  await makeDisk({
    path: disk, uuid: '5d4c3b2a-1908-4f7e-8d6c-5b4a39281706', size: 48 * 1024 * 1024,
    tree: systemTree({ flavour: 'initramfs-tools', kernels: [{ version: V, initrd }], vmlinuzLink: `boot/vmlinuz-${V}` }),
  });
  const dataDir = join(dir, 'data');
  catalogue = Catalogue.open(dataDir);
  await catalogue.importVersion('tools', disk);
  catalogue.addClient({ mac: MAC, image: 'tools', mode: 'ephemeral' });
  token = loadOrCreateApiToken(dataDir);
  server = new HttpServer({ boot: NO_BOOT, extensions: [restApi({ catalogue, dataDir, token })] });
  base = `http://127.0.0.1:${(await server.listen(0, '127.0.0.1')).port}/api/v1`;
});

after(async () => {
  await server?.close();
  catalogue?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function post(path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: await res.json() };
}

test('a maintenance draft committed over the API becomes the next version, held or published as asked', async (t) => {
  if (!requirePeers(t, ...PEERS)) return;
  const c = catalogue!;
  assert.equal((await post(`/clients/${MAC}/maintenance`, { on: true })).status, 200);
  await c.newBoot(MAC);
  assert.equal(c.showClient(MAC).overlay?.draft, true);

  const held = await post(`/clients/${MAC}/commit`, { publish: false });
  assert.equal(held.status, 201, JSON.stringify(held.body));
  assert.deepEqual([held.body.image, held.body.version, held.body.published], ['tools', 2, false]);
  assert.equal(held.body.bootInfo.origin, 'commit');
  assert.equal(held.body.bootInfo.committedFrom, MAC);
  assert.equal(c.showImage('tools').image.currentVersion, 1, 'a held version is not current');
  const m = c.showClient(MAC);
  assert.equal(m.maintenance, false);
  assert.equal(m.overlay, null, 'the draft is gone');

  // Again, published this time (the default).
  assert.equal((await post(`/clients/${MAC}/maintenance`, { on: true })).status, 200);
  await c.newBoot(MAC);
  const published = await post(`/clients/${MAC}/commit`);
  assert.equal(published.status, 201, JSON.stringify(published.body));
  assert.deepEqual([published.body.version, published.body.published], [3, true]);
  assert.equal(c.showImage('tools').image.currentVersion, 3);
});
