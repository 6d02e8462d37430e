/**
 * Capture into a running server: the kit, fetched from the server as a
 * machine gets it, streams a bootable disk and the server publishes it as a
 * version its boot service can serve (kernel, initramfs, command line); a
 * disk that cannot boot over NBD is refused at finish with the catalogue
 * unchanged and the upload kept for the admin to abort; a wrong token is
 * refused before anything is stored.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateConfig } from '../../src/app/config.js';
import { startServer, type ServerHandle } from '../../src/app/server.js';
import { makeDisk, makeInitrd, systemTree } from '../../src/images/test-support.js';
import { testLogger } from '../helpers/nbd.js';
import { havePeer, requirePeers } from '../helpers/peers.js';

const PEERS = ['sh', 'curl', 'dd', 'sha256sum', 'sfdisk', 'mkfs.ext4', 'debugfs'];
const V = '6.1.0-3-amd64';
const UUID = '1f2e3d4c-5b6a-4798-8a9b-0c1d2e3f4a5b';
const MiB = 1024 * 1024;

let dir: string;
let server: ServerHandle;
let base: string;
let kit: string;

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function runKit(args: string[], token: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', [kit, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', DISKLESS_TOKEN: token, DISKLESS_TMPDIR: dir },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`kit ${args.join(' ')} took too long\n${stdout}\n${stderr}`)); }, 120_000);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

function snapshot(): string {
  const c = server.catalogue;
  return JSON.stringify(c.listImages().map((i) => c.showImage(i.name)));
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'diskless-kit-publish-'));
  const config = validateConfig({ dataDir: join(dir, 'data'), nbd: { host: '127.0.0.1', port: 0 }, http: { host: '127.0.0.1', port: 0 }, tftp: { enabled: false } });
  server = await startServer(config, { logger: testLogger() });
  base = `http://127.0.0.1:${server.boot.http.port}`;
  const res = await fetch(`${base}/kit`);
  assert.equal(res.status, 200);
  kit = join(dir, 'kit.sh');
  writeFileSync(kit, await res.text());
});

after(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('a captured disk becomes a bootable version', async (t) => {
  if (!requirePeers(t, ...PEERS)) return;
  const disk = join(dir, 'machine.raw');
  const initrd = await makeInitrd({ kernelVersion: V, flavour: 'dracut' });
  await makeDisk({ path: disk, uuid: UUID, size: 32 * MiB, tree: systemTree({ flavour: 'dracut', kernels: [{ version: V, initrd }] }) });
  const bytes = readFileSync(disk);
  const r = await runKit(['capture', '--disk', disk, '--name', 'lab-pc', '--chunk-size', '4M'], server.apiToken);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, new RegExp(`CAPTURED lab-pc ${sha(bytes)}`));
  const v = server.catalogue.store.images.current('lab-pc');
  assert.ok(v, 'the image has a current version');
  assert.equal(v.sha256, sha(bytes));
  const info = v.bootInfo as Record<string, unknown>;
  assert.equal(info.origin, 'capture');
  assert.equal(info.initramfsFlavour, 'dracut');
  assert.equal(info.kernelVersion, V);
  // The boot service serves it: a client of the image gets dracut's NBD root.
  server.catalogue.addClient({ mac: '52:54:00:cc:00:01', image: 'lab-pc' });
  const script = await (await fetch(`${base}/ipxe/52:54:00:cc:00:01`)).text();
  assert.match(script, new RegExp(`netroot=nbd:127\\.0\\.0\\.1:${server.nbdAddress.port}/525400cc0001-[0-9a-f]{32} root=UUID=${UUID} .*rd\\.neednet=1`));
});

test('a captured disk that cannot boot over NBD is refused and leaves the catalogue as it was', async (t) => {
  if (!requirePeers(t, ...PEERS)) return;
  const disk = join(dir, 'nonbd.raw');
  const initrd = await makeInitrd({ kernelVersion: V, flavour: 'initramfs-tools', nbdScript: false });
  await makeDisk({ path: disk, uuid: UUID, size: 32 * MiB, tree: systemTree({ flavour: 'initramfs-tools', kernels: [{ version: V, initrd }] }) });
  const before = snapshot();
  const r = await runKit(['capture', '--disk', disk, '--name', 'lab-pc', '--chunk-size', '4M'], server.apiToken);
  assert.notEqual(r.code, 0);
  assert.match(r.stdout + r.stderr, /IMAGES_INITRAMFS_NO_NBD|cannot mount the root over NBD/);
  assert.equal(snapshot(), before);
});

test('a wrong token is refused', async (t) => {
  if (!requirePeers(t, 'sh', 'curl') || !havePeer('dd')) return;
  const disk = join(dir, 'any.raw');
  writeFileSync(disk, Buffer.alloc(MiB, 1));
  const before = snapshot();
  const r = await runKit(['capture', '--disk', disk, '--name', 'x'], 'not-the-token-at-all-0000000000000');
  assert.notEqual(r.code, 0);
  assert.match(r.stdout + r.stderr, /401|token/i);
  assert.equal(snapshot(), before);
});
