/**
 * The admin's way in, with the real Debian image: `diskless image build
 * debian` (from the build cache the other interop tests fill), then the
 * built disk converted by qemu-img to every import format and brought back
 * with `diskless image import`. Each gives a version whose bytes are the
 * built disk's and whose boot files and command line the boot service serves.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Catalogue } from '../../src/app/catalogue.js';
import { validateConfig } from '../../src/app/config.js';
import { startServer } from '../../src/app/server.js';
import { IMPORT_FORMATS } from '../../src/images/import.js';
import { requirePeers, requireRoot } from '../helpers/peers.js';
import { testLogger } from '../helpers/nbd.js';

const BIN = fileURLToPath(new URL('../../../bin/diskless', import.meta.url));
const CACHE = process.env.DISKLESS_IMAGE_CACHE ?? '/var/cache/diskless-test';
const PEERS = ['debootstrap', 'unshare', 'chroot', 'sfdisk', 'mkfs.ext4', 'debugfs', 'zstd', 'qemu-img'];

let dir: string;
let data: string;

/** Runs bin/diskless with --json; resolves with its exit status and parsed output. */
function cli(args: string[], timeoutMs: number): Promise<{ status: number | null; value: any; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args, '--data-dir', data, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`diskless ${args.join(' ')} took over ${timeoutMs} ms\n${stderr}`)); }, timeoutMs);
    child.on('close', (status) => {
      clearTimeout(timer);
      try {
        resolve({ status, value: JSON.parse(stdout), stderr });
      } catch {
        reject(new Error(`diskless ${args.join(' ')}: not JSON (status ${status})\n${stdout}\n${stderr}`));
      }
    });
  });
}

function qemuImg(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('qemu-img', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`qemu-img ${args.join(' ')}: ${err}`))));
  });
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diskless-images-cli-'));
  data = join(dir, 'data');
});
after(() => rm(dir, { recursive: true, force: true }));

test('image build debian, then image import of the built disk in every format', { timeout: 60 * 60_000 }, async (t) => {
  if (!requireRoot(t) || !requirePeers(t, ...PEERS)) return;
  const built = await cli(['image', 'build', 'debian', '--name', 'deb', '--autologin', '--cache-dir', CACHE], 50 * 60_000);
  assert.equal(built.status, 0, built.stderr);
  const v = built.value;
  assert.equal(v.image, 'deb');
  assert.equal(v.bootInfo.origin, 'build');
  assert.equal(v.bootInfo.initramfsFlavour, 'initramfs-tools');
  assert.match(v.bootInfo.kernelVersion, /^\d+\.\d+\.\d+-\d+-amd64$/);
  assert.equal(v.bootInfo.rootPartition, 1);

  const c = Catalogue.open(data);
  const raw = c.dir.abs(c.store.images.requireVersion('deb', 1).path);
  c.close();
  for (const format of IMPORT_FORMATS) {
    const src = join(dir, `deb.${format}`);
    await qemuImg(['convert', '-f', 'raw', '-O', format, raw, src]);
    const r = await cli(['image', 'import', src, '--name', `deb-${format}`], 20 * 60_000);
    await rm(src, { force: true });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.value.sha256, v.sha256, `${format}: the imported disk is the built one`);
    assert.equal(r.value.bootInfo.sourceFormat, format);
    assert.equal(r.value.bootInfo.kernelVersion, v.bootInfo.kernelVersion);
    assert.equal(r.value.bootInfo.kernelSha256, v.bootInfo.kernelSha256);
    assert.equal(r.value.bootInfo.initrdSha256, v.bootInfo.initrdSha256);
    t.diagnostic(`${format}: imported as deb-${format} version ${r.value.version}`);
  }

  // What the boot service makes of them: the script of a client of each.
  const server = await startServer(validateConfig({
    dataDir: data, nbd: { host: '127.0.0.1', port: 0 }, http: { host: '127.0.0.1', port: 0 }, tftp: { enabled: false },
  }), { logger: testLogger() });
  try {
    for (const [i, image] of ['deb', ...IMPORT_FORMATS.map((f) => `deb-${f}`)].entries()) {
      const mac = `52:54:00:dd:00:${String(i + 1).padStart(2, '0')}`;
      server.catalogue.addClient({ mac, image });
      const script = await (await fetch(`http://127.0.0.1:${server.boot.http.port}/ipxe/${mac}`)).text();
      const exportName = server.catalogue.showClient(mac).exportName;
      // Off port 10809 Debian's hook takes SERVER:PORT/EXPORT, and the root by partition.
      assert.match(script, new RegExp(`^kernel http://\\S+/vmlinuz .*nbdroot=127\\.0\\.0\\.1:${server.nbdAddress.port}/${exportName} root=/dev/nbd0p1 `, 'm'), `${image}:\n${script}`);
      const kernel = Buffer.from(await (await fetch(/^kernel (\S+)/m.exec(script)![1]!)).arrayBuffer());
      assert.ok(kernel.length > 1_000_000 && kernel.subarray(0x202, 0x206).toString() === 'HdrS', `${image}: a bzImage kernel is served`);
    }
  } finally {
    await server.close();
  }
});
