/**
 * Image versions through the catalogue, on a running server: importing a
 * disk makes a bootable version (kernel, initramfs and command line right
 * for initramfs-tools and for dracut); bad disks are refused with the
 * catalogue and the data directory unchanged; publish, hold, rollback and
 * delete guards; a maintenance client's draft committed as a new version
 * (stale clients reported); readers of the current version see whole
 * versions only while new ones are published.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { copyFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateConfig } from '../../src/app/config.js';
import { startServer, type ServerHandle } from '../../src/app/server.js';
import { isDisklessError } from '../../src/lib/errors.js';
import { makeDisk, makeInitrd, systemTree, type SystemSpec } from '../../src/images/test-support.js';
import { NbdTestClient } from '../helpers/nbd-client.js';
import { testLogger } from '../helpers/nbd.js';
import { COMMANDS } from '../../src/protocols/nbd/constants.js';
import { havePeer, requirePeers } from '../helpers/peers.js';

const PEERS = ['sfdisk', 'mkfs.ext4', 'debugfs'];
const V = '6.1.0-1-amd64';
const UUID = '3c2b1a09-8f7e-4d6c-9b5a-413121110f0e';
const DRACUT_UUID = '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1';
const MAC_A = '52:54:00:0a:00:01';
const MAC_B = '52:54:00:0a:00:02';
const MAC_M = '52:54:00:0a:00:0f';
/** In the GPT gap between the entry array and the first partition (1 MiB): safe to scribble on. */
const SCRIBBLE_AT = 512 * 1024;

let dir: string;
let server: ServerHandle;
let tools = false;
let toolsDisk: string;
let dracutDisk: string;
const clients: NbdTestClient[] = [];

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function system(path: string, spec: Partial<SystemSpec> & { flavour: SystemSpec['flavour'] }, uuid = UUID, initrd?: Buffer | null): Promise<string> {
  const flavour = spec.flavour === 'none' ? 'initramfs-tools' : spec.flavour;
  const rd = initrd === null ? undefined : initrd ?? await makeInitrd({ kernelVersion: V, flavour });
  await makeDisk({ path, uuid, size: 48 * 1024 * 1024, tree: systemTree({ kernels: [{ version: V, ...(rd ? { initrd: rd } : {}) }], vmlinuzLink: `boot/vmlinuz-${V}`, ...spec }) });
  return path;
}

/** What the catalogue and the data directory hold, to show a refusal changed nothing. */
function snapshot(): string {
  const c = server.catalogue;
  const files = (d: string): string[] => existsSync(d) ? readdirSync(d, { recursive: true }).map(String).sort() : [];
  return JSON.stringify({
    images: c.listImages(),
    versions: c.listImages().map((i) => c.showImage(i.name).versions),
    clients: c.listClients().map((x) => ({ ...x, overlay: x.overlay ? { ...x.overlay, diskBytes: 0 } : null })),
    files: files(c.dir.abs('images')),
  });
}

async function script(mac: string): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${server.boot.http.port}/ipxe/${mac}`);
  assert.equal(r.status, 200);
  return r.text();
}

async function connect(name: string): Promise<NbdTestClient> {
  const c = await NbdTestClient.open(server.nbdAddress.port, name);
  clients.push(c);
  return c;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'diskless-versions-'));
  tools = PEERS.every(havePeer);
  const config = validateConfig({
    dataDir: join(dir, 'data'),
    nbd: { host: '127.0.0.1', port: 0, overlayGraceMs: 100 },
    http: { host: '127.0.0.1', port: 0 },
    tftp: { enabled: false },
  });
  server = await startServer(config, { logger: testLogger() });
  if (!tools) return;
  toolsDisk = await system(join(dir, 'tools.raw'), { flavour: 'initramfs-tools' });
  dracutDisk = await system(join(dir, 'dracut.raw'), { flavour: 'dracut' }, DRACUT_UUID);
});

after(async () => {
  for (const c of clients) c.close();
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('importing a disk makes a bootable version', () => {
  test('initramfs-tools: kernel and initramfs extracted, nbdroot= and root=UUID= on the command line', async (t) => {
    if (!requirePeers(t, ...PEERS)) return;
    const v = await server.catalogue.importVersion('tools', toolsDisk);
    assert.equal(v.version, 1);
    assert.equal(v.published, true);
    assert.equal(v.sha256, sha(await readFile(toolsDisk)));
    const info = v.bootInfo as Record<string, unknown>;
    assert.equal(info.initramfsFlavour, 'initramfs-tools');
    assert.equal(info.kernelVersion, V);
    assert.equal(info.rootUuid, UUID);
    assert.deepEqual(info.kernels, [`/boot/vmlinuz-${V}`]);
    const kernel = readFileSync(server.catalogue.dir.abs(String(info.kernelFile)));
    assert.ok(kernel.subarray(0, 40).toString().startsWith(`KERNEL ${V}`), 'the extracted kernel is the image\'s');
    assert.equal(sha(kernel), info.kernelSha256);
    assert.deepEqual(readFileSync(server.catalogue.dir.abs(String(info.initrdFile))), await makeInitrd({ kernelVersion: V, flavour: 'initramfs-tools' }));

    server.catalogue.addClient({ mac: MAC_A, image: 'tools' });
    const s = await script(MAC_A);
    const boot = server.catalogue.showClient(MAC_A);
    // Off port 10809 the hook's only form with a port cannot name the device, so the root goes by partition.
    assert.match(s, new RegExp(`nbdroot=127\\.0\\.0\\.1:${server.nbdAddress.port}/${boot.exportName} root=/dev/nbd0p${Number(info.rootPartition)} `));
    assert.doesNotMatch(s, /root=nbd:|netroot=/);
    const k = await fetch(`http://127.0.0.1:${server.boot.http.port}/boot/${MAC_A}/${boot.bootId}/vmlinuz`);
    assert.equal(k.status, 200);
    assert.deepEqual(Buffer.from(await k.arrayBuffer()), kernel);
  });

  test('dracut: flavour found, netroot=nbd: and root=UUID= on the command line with rd.neednet', async (t) => {
    if (!requirePeers(t, ...PEERS)) return;
    const v = await server.catalogue.importVersion('fedora-like', dracutDisk);
    assert.equal((v.bootInfo as Record<string, unknown>).initramfsFlavour, 'dracut');
    server.catalogue.addClient({ mac: MAC_B, image: 'fedora-like' });
    const s = await script(MAC_B);
    const boot = server.catalogue.showClient(MAC_B);
    assert.match(s, new RegExp(`netroot=nbd:127\\.0\\.0\\.1:${server.nbdAddress.port}/${boot.exportName} root=UUID=${DRACUT_UUID} `));
    assert.match(s, /rd\.neednet=1/);
    assert.doesNotMatch(s, /nbdroot=/);
  });
});

describe('bad disks are refused and change nothing', () => {
  const cases: [string, string, () => Promise<string>][] = [
    ['no Linux root', 'IMAGES_NO_LINUX_ROOT', () => system(join(dir, 'noroot.raw'), { flavour: 'initramfs-tools', osRelease: false, init: false })],
    ['no kernel', 'IMAGES_NO_KERNEL', async () => {
      const p = join(dir, 'nokernel.raw');
      await makeDisk({ path: p, uuid: UUID, size: 48 * 1024 * 1024, tree: systemTree({ flavour: 'initramfs-tools', kernels: [] }) });
      return p;
    }],
    ['an initramfs without NBD support', 'IMAGES_INITRAMFS_NO_NBD', async () =>
      system(join(dir, 'nonbd.raw'), { flavour: 'initramfs-tools' }, UUID, await makeInitrd({ kernelVersion: V, flavour: 'initramfs-tools', nbdClient: false, nbdScript: false }))],
    ['no initramfs at all', 'IMAGES_NO_INITRAMFS', () => system(join(dir, 'noinitrd.raw'), { flavour: 'initramfs-tools' }, UUID, null)],
    ['an unknown partition table', 'IMAGES_UNKNOWN_PARTITION_TABLE', async () => {
      const p = join(dir, 'random.raw');
      const b = Buffer.alloc(4 * 1024 * 1024);
      for (let i = 0; i < b.length; i += 4) b.writeUInt32LE((i * 2654435761) >>> 0, i);
      writeFileSync(p, b);
      return p;
    }],
  ];
  for (const [what, code, make] of cases) {
    test(what, async (t) => {
      if (!requirePeers(t, ...PEERS)) return;
      const disk = await make();
      for (const image of ['tools', 'brand-new']) {
        const before = snapshot();
        await assert.rejects(server.catalogue.importVersion(image, disk), (e: unknown) => {
          assert.ok(isDisklessError(e, code), `expected ${code}, got ${String((e as Error).message)}`);
          assert.ok((e as Error).message.length > 20, 'the message says what is wrong');
          return true;
        });
        assert.equal(snapshot(), before, `importing into ${image} left a trace`);
      }
      assert.ok(existsSync(disk), 'a copied source is never touched');
    });
  }

  test('a moved file that is refused is put back', async (t) => {
    if (!requirePeers(t, ...PEERS)) return;
    const disk = await system(join(dir, 'data', 'moved-noinitrd.raw'), { flavour: 'initramfs-tools' }, UUID, null);
    const bytes = sha(await readFile(disk));
    const before = snapshot();
    await assert.rejects(server.catalogue.importVersion('tools', disk, { move: true }), (e: unknown) => isDisklessError(e, 'IMAGES_NO_INITRAMFS'));
    assert.equal(snapshot(), before);
    assert.equal(sha(await readFile(disk)), bytes);
    rmSync(disk);
  });
});

describe('publish, hold, rollback and delete', () => {
  test('a held version boots only clients pinned to it; publish makes it current; rollback goes back', async (t) => {
    if (!requirePeers(t, ...PEERS)) return;
    const c = server.catalogue;
    const v2 = await c.importVersion('tools', toolsDisk, { publish: false, kernelArgs: ['quiet'] });
    assert.equal(v2.version, 2);
    assert.equal(v2.published, false);
    assert.equal(c.showImage('tools').image.currentVersion, 1);
    // A test group: a client pinned to the held version boots it.
    c.updateClient(MAC_A, { pinnedVersion: 2 });
    const boot = await c.newBoot(MAC_A);
    assert.equal(boot.version, 2);
    assert.match(await script(MAC_A), / quiet( |$)/m, 'the version\'s own arguments are on its command line');
    c.updateClient(MAC_A, { pinnedVersion: null });
    assert.equal(c.showClient(MAC_A).stale, true, 'it runs 2, would boot 1');
    assert.throws(() => c.rollback('tools', 2), (e: unknown) => isDisklessError(e, 'APP_VERSION_NOT_PUBLISHED'));
    c.publishVersion('tools', 2);
    assert.equal(c.showImage('tools').image.currentVersion, 2);
    assert.equal(c.showClient(MAC_A).stale, false);
    const r = c.rollback('tools');
    assert.deepEqual([r.from, r.to], [2, 1]);
    assert.equal(c.showClient(MAC_A).stale, true);
    assert.throws(() => c.rollback('tools'), (e: unknown) => isDisklessError(e, 'APP_NOTHING_TO_ROLL_BACK'));
    assert.equal(c.rollback('tools', 2).to, 2);
  });

  test('a version in use is not deleted, and the refusal names what uses it', async (t) => {
    if (!requirePeers(t, ...PEERS)) return;
    const c = server.catalogue;
    // Version 2 is current and MAC_A runs it.
    await assert.rejects(c.deleteVersion('tools', 2), (e: unknown) => {
      assert.ok(isDisklessError(e, 'APP_VERSION_IN_USE'));
      assert.match((e as Error).message, /current version/);
      assert.match((e as Error).message, new RegExp(MAC_A));
      return true;
    });
    // Version 1: pinned by a client.
    c.updateClient(MAC_B, { image: 'tools', pinnedVersion: 1 });
    await assert.rejects(c.deleteVersion('tools', 1), (e: unknown) => isDisklessError(e, 'APP_VERSION_IN_USE') && /pinned by 52:54:00:0a:00:02/.test((e as Error).message));
    await assert.rejects(c.deleteImage('tools'), (e: unknown) => isDisklessError(e, 'APP_IMAGE_IN_USE'));
    c.updateClient(MAC_B, { image: 'fedora-like' });
    const before = c.showImage('tools').versions.length;
    const v3 = await c.importVersion('tools', toolsDisk, { publish: false });
    const r = await c.deleteVersion('tools', v3.version);
    assert.ok(r.removed.some((p) => p.endsWith(`${v3.version}.raw`)) && r.removed.some((p) => p.endsWith(`${v3.version}.boot`)));
    assert.equal(c.showImage('tools').versions.length, before);
    assert.equal(existsSync(c.dir.abs(v3.path)), false);
  });

  test('an image nobody uses is deleted with its files', async (t) => {
    if (!requirePeers(t, ...PEERS)) return;
    const c = server.catalogue;
    await c.importVersion('scratch', toolsDisk);
    await c.importVersion('scratch', toolsDisk);
    const r = await c.deleteImage('scratch');
    assert.deepEqual(r.versions, [1, 2]);
    assert.equal(c.listImages().some((i) => i.name === 'scratch'), false);
    assert.equal(existsSync(c.dir.abs('images/scratch')), false);
  });
});

describe('a maintenance client', () => {
  test('its draft becomes a new version; others see it at their next boot and are reported stale until then', async (t) => {
    if (!requirePeers(t, ...PEERS)) return;
    const c = server.catalogue;
    c.addClient({ mac: MAC_M, image: 'tools', mode: 'ephemeral', name: 'maint' });
    await assert.rejects(c.commitMaintenance(MAC_M), (e: unknown) => isDisklessError(e, 'APP_NOT_IN_MAINTENANCE'));
    c.setMaintenance(MAC_M, true);
    await assert.rejects(c.commitMaintenance(MAC_M), (e: unknown) => isDisklessError(e, 'APP_NO_DRAFT'));
    const base = c.store.images.current('tools')!;
    const boot = await c.newBoot(MAC_M);
    assert.equal(c.showClient(MAC_M).overlay?.draft, true);
    const change = Buffer.alloc(64 * 1024, 0x5d);
    const nbd = await connect(boot.exportName);
    await nbd.write(SCRIBBLE_AT, change);
    await nbd.request(COMMANDS.NBD_CMD_FLUSH, 0, 0);
    // A reboot in maintenance keeps the draft, even for an ephemeral client.
    const again = await c.newBoot(MAC_M);
    assert.equal(again.overlayReset, false);
    // While the server has the disk open, a commit is refused.
    const nbd2 = await connect(again.exportName);
    assert.deepEqual(await nbd2.read(SCRIBBLE_AT, change.length), change);
    await assert.rejects(c.commitMaintenance(MAC_M), (e: unknown) => isDisklessError(e, 'APP_CLIENT_RUNNING'));
    nbd.close();
    nbd2.close();
    // MAC_A runs the current version now.
    await c.newBoot(MAC_A);
    assert.equal(c.showClient(MAC_A).stale, false);

    // The server keeps the disk open for overlayGraceMs after the last connection.
    let v;
    for (const started = Date.now(); ; await new Promise((r) => setTimeout(r, 50))) {
      try {
        v = await c.commitMaintenance(MAC_M);
        break;
      } catch (e) {
        if (!isDisklessError(e, 'APP_CLIENT_RUNNING') || Date.now() - started > 10_000) throw e;
      }
    }
    assert.equal(v.version, base.version + 1);
    assert.equal(v.published, true);
    assert.equal((v.bootInfo as Record<string, unknown>).baseVersion, base.version);
    const expected = Buffer.from(readFileSync(c.dir.abs(base.path)));
    change.copy(expected, SCRIBBLE_AT);
    assert.equal(v.sha256, sha(expected), 'the new version is the base with the draft\'s writes');
    assert.equal(sha(readFileSync(c.dir.abs(v.path))), v.sha256);
    const m = c.showClient(MAC_M);
    assert.equal(m.maintenance, false);
    assert.equal(m.overlay, null, 'the draft is gone');
    // MAC_A still runs the old version: stale, until its next boot.
    assert.equal(c.showClient(MAC_A).stale, true);
    const next = await c.newBoot(MAC_A);
    assert.equal(next.version, v.version);
    const reader = await connect(next.exportName);
    assert.deepEqual(await reader.read(SCRIBBLE_AT, change.length), change);
    assert.equal(c.showClient(MAC_A).stale, false);
    reader.close();
  });

  test('maintenance off discards the draft at the next boot', async (t) => {
    if (!requirePeers(t, ...PEERS)) return;
    const c = server.catalogue;
    c.updateClient(MAC_M, { mode: 'persistent' });
    c.setMaintenance(MAC_M, true);
    await c.newBoot(MAC_M);
    const draft = c.showClient(MAC_M).overlay!;
    assert.equal(draft.draft, true);
    c.setMaintenance(MAC_M, false);
    const b = await c.newBoot(MAC_M);
    assert.equal(b.overlayReset, true);
    const o = c.showClient(MAC_M).overlay!;
    assert.equal(o.draft, false, 'a persistent client gets an ordinary overlay, not the draft');
    assert.notEqual(o.dir, draft.dir);
  });
});

describe('publishing while clients read the current version', () => {
  test('a reader of image/<name> sees one whole version, old or new, never a mix', async (t) => {
    if (!requirePeers(t, ...PEERS)) return;
    const c = server.catalogue;
    // Versions whose every byte differs: the disk with a different fill in the GPT gap is
    // not enough, so each version is a plain raw file of one repeated byte.
    const size = 4 * 1024 * 1024;
    const fills = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66];
    const files = fills.map((f) => {
      const p = join(dir, `fill-${f}.raw`);
      writeFileSync(p, Buffer.alloc(size, f));
      return p;
    });
    await c.addImageVersion('fills', files[0]!);
    let publishing = true;
    const publisher = (async () => {
      for (const f of files.slice(1)) {
        await c.addImageVersion('fills', f);
        await new Promise((r) => setTimeout(r, 20));
      }
      publishing = false;
    })();
    const seen = new Set<number>();
    let reads = 0;
    // Until a connection opened after the last publication has read (one
    // opened just before it may still see the version before).
    let readAfterLast = false;
    while (!readAfterLast || reads < 3) {
      const afterLast = !publishing;
      const r = await NbdTestClient.open(server.nbdAddress.port, 'image/fills');
      try {
        const first = (await r.read(0, 1))[0]!;
        for (let off = 0; off < size; off += 1024 * 1024) {
          const part = await r.read(off, 1024 * 1024);
          assert.ok(part.equals(Buffer.alloc(part.length, first)), 'one connection sees one version from first to last byte');
        }
        seen.add(first);
        reads++;
        if (afterLast) {
          readAfterLast = true;
          assert.equal(first, 0x66, 'a connection opened after the last publication sees the last version');
        }
      } finally {
        r.close();
      }
    }
    await publisher;
    assert.ok(seen.has(0x66), 'the last version is seen once published');
    assert.ok([...seen].every((b) => fills.includes(b)));
    // Copies of the fills are untouched.
    await copyFile(files[0]!, join(dir, 'copy.raw'));
    assert.ok(readFileSync(join(dir, 'copy.raw')).equals(Buffer.alloc(size, 0x11)));
  });
});
