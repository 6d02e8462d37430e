/**
 * The real Debian build (debootstrap from this machine's apt mirror), then
 * inspectDisk on its output, a cached rebuild, and a boot of the image: the
 * kernel and initramfs extracted by extractBootFiles, the root on NBD
 * (nbdkit with its cow filter, so the cached image is never written), QEMU
 * under TCG with user networking, until the client kit's diskless-up prints
 * its marker and POSTs the OS-up report.
 *
 * The first build takes 8-10 minutes (longer on a loaded machine); the
 * result is cached under DISKLESS_IMAGE_CACHE (default
 * /var/cache/diskless-test), outside the checkout, so later runs on the same
 * machine take seconds.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requirePeers, requireRoot } from '../helpers/peers.js';
import { kernelCommandLine } from '../../src/boot/kernel-cmdline.js';
import { BUILD_STEPS, buildDebianImage, type BuildProgress, type BuildResult } from '../../src/images/build-debian.js';
import { KIT_INITRAMFS_MODULES } from '../../src/images/client-kit.js';
import { run } from '../../src/images/exec.js';
import { ExtFsReader } from '../../src/images/ext-fs.js';
import { listInitramfs } from '../../src/images/initramfs.js';
import { extractBootFiles, inspectDisk } from '../../src/images/inspect.js';

const CACHE = process.env.DISKLESS_IMAGE_CACHE ?? '/var/cache/diskless-test';
const BUILD_PEERS = ['debootstrap', 'unshare', 'chroot', 'sfdisk', 'mkfs.ext4', 'debugfs', 'zstd'];
const BUILD_TIMEOUT_MS = 45 * 60_000;
/** Our limit on one boot under TCG on a busy 2-core machine (measured 2-4.5 min). */
const BOOT_TIMEOUT_MS = 15 * 60_000;

let dir: string;
let first: BuildResult | undefined;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diskless-images-build-'));
});
after(() => rm(dir, { recursive: true, force: true }));

const options = (outPath: string, progress?: (p: BuildProgress) => void) => ({
  outPath,
  cacheDir: CACHE,
  workDir: join(CACHE, 'work'),
  autologin: true,
  progress,
});

test('buildDebianImage makes a GPT disk that inspectDisk finds bootable over NBD', { timeout: BUILD_TIMEOUT_MS }, async (t) => {
  if (!requireRoot(t) || !requirePeers(t, ...BUILD_PEERS)) return;
  const events: BuildProgress[] = [];
  const outPath = join(dir, 'first.raw');
  first = await buildDebianImage(options(outPath, (p) => events.push(p)));
  t.diagnostic(`build ${first.cached ? '(cached)' : ''}: ${JSON.stringify(first.timings)}`);

  // Every step is reported, in order, as done or skipped.
  const finished = events.filter((e) => e.state === 'done' || e.state === 'skipped').map((e) => e.step);
  assert.deepEqual([...new Set(finished)], [...BUILD_STEPS].filter((s) => finished.includes(s)));
  assert.ok(finished.includes('prepare') && finished.includes('output') && finished.includes('inspect'));
  assert.deepEqual(new Set(finished), new Set(BUILD_STEPS), 'a step was never reported');

  const ins = await inspectDisk(outPath);
  assert.equal(ins.partitionTable?.scheme, 'gpt');
  assert.equal(ins.root.partition, 1);
  assert.equal(ins.root.offset, 1024 * 1024);
  assert.equal(ins.root.nbdDevice, '/dev/nbd0p1');
  assert.equal(ins.root.uuid, first.fsUuid);
  assert.match(ins.root.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(ins.osRelease.ID, 'debian');
  assert.equal(ins.osRelease.VERSION_CODENAME, 'bookworm');
  assert.equal(ins.initramfsFlavour, 'initramfs-tools');
  assert.equal(ins.defaultKernelFrom, 'vmlinuz-link');
  const k = ins.kernels.find((x) => x.version === ins.defaultKernel)!;
  assert.match(k.version, /^\d+\.\d+\.\d+-\d+-amd64$/);
  assert.equal(k.kernelPath, `/boot/vmlinuz-${k.version}`);
  assert.equal(k.initrdPath, `/boot/initrd.img-${k.version}`);
  assert.equal(k.initramfs?.flavour, 'initramfs-tools');
  assert.equal(k.initramfs?.nbd.supported, true, JSON.stringify(k.initramfs?.nbd.missing));
  assert.deepEqual(k.initramfs?.segments.at(-1)?.compression, 'zstd');
  t.diagnostic(`kernel ${k.version}: ${k.kernelSize} bytes; initrd ${k.initrdSize} bytes, ${k.initramfs?.files} files, ${k.initramfs?.unpackedBytes} bytes unpacked`);

  // The client kit, read back from the disk.
  const fs = new ExtFsReader(outPath, ins.root.offset);
  const text = async (p: string): Promise<string> => (await fs.readFile(p))?.toString('utf8') ?? '<missing>';
  assert.match(await text('/etc/fstab'), new RegExp(`^UUID=${ins.root.uuid} / ext4 defaults,noatime 0 0$`, 'm'));
  assert.doesNotMatch((await text('/etc/fstab')).replace(/^#.*$/gm, ''), /swap/);
  assert.equal(await text('/etc/initramfs-tools/conf.d/resume'), '# diskless client kit: there is no local disk to resume from\nRESUME=none\n');
  assert.match(await text('/etc/initramfs-tools/initramfs.conf'), /^MODULES=list$/m);
  assert.doesNotMatch(await text('/etc/network/interfaces'), /^(auto|allow-hotplug|iface)\s+(?!lo\b)/m);
  assert.deepEqual(await fs.list('/etc/network/interfaces.d'), []);
  assert.equal(await fs.lstat('/etc/hostname'), undefined, 'the build host\'s name must not stay in the image');
  assert.doesNotMatch(await text('/etc/resolv.conf'), /nameserver/);
  assert.equal(await text('/etc/machine-id'), '');
  assert.match(await text('/etc/shadow'), /^root:!/m);
  assert.ok(await fs.exists('/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf'));
  assert.ok(await fs.exists('/etc/systemd/system/multi-user.target.wants/diskless-up.service'));
  assert.ok(await fs.exists('/etc/systemd/system/sysinit.target.wants/diskless-net.service'));
  assert.equal(await fs.lstat('/etc/systemd/system/multi-user.target.wants/systemd-networkd.service'), undefined);
  assert.equal(await fs.lstat('/etc/systemd/system/timers.target.wants/apt-daily.timer'), undefined);
  assert.deepEqual((await fs.list('/var/lib/apt/lists'))?.filter((e) => e.type === 'file' && e.name !== 'lock'), []);
  assert.deepEqual((await fs.list('/var/cache/apt/archives'))?.filter((e) => e.name.endsWith('.deb')), []);

  // The initramfs holds the kit's modules.
  const local = join(dir, 'initrd.img');
  await fs.dumpTo(k.initrdPath!, local);
  const listing = await listInitramfs(local);
  const modules = new Set([...listing.entries.keys()].filter((n) => n.endsWith('.ko')).map((n) => n.split('/').pop()!.replace(/\.ko$/, '').replace(/-/g, '_')));
  for (const m of KIT_INITRAMFS_MODULES) assert.ok(modules.has(m), `module ${m} is not in the initramfs`);
});

test('a second build with the same inputs is a copy from the cache', { timeout: 10 * 60_000 }, async (t) => {
  if (!first) {
    t.skip('the first build did not run');
    return;
  }
  const outPath = join(dir, 'second.raw');
  const started = Date.now();
  const second = await buildDebianImage(options(outPath));
  const ms = Date.now() - started;
  t.diagnostic(`cached rebuild: ${ms} ms ${JSON.stringify(second.timings)}`);
  assert.equal(second.cached, true);
  assert.equal(second.cacheKey, first.cacheKey);
  assert.equal(second.fsUuid, first.fsUuid);
  assert.ok(ms < 120_000, `a cached build took ${ms} ms`);
  const cmp = await run('cmp', [first.outPath, outPath], { check: false, timeoutMs: 300_000 });
  assert.equal(cmp.code, 0, `the copies differ: ${cmp.stdout.toString()}`);
  // Sparse: the copy does not occupy the whole 4 GiB.
  assert.ok((await stat(outPath)).blocks * 512 < second.size / 2);
  await rm(outPath);
});

test('the image boots with its root on NBD and reports itself up', { timeout: BOOT_TIMEOUT_MS + 120_000 }, async (t) => {
  if (!first) {
    t.skip('the first build did not run');
    return;
  }
  if (!requirePeers(t, 'qemu-system-x86_64', 'nbdkit')) return;
  const disk = first.outPath;
  const ins = first.inspection;
  const boot = await extractBootFiles(disk, ins, ins.defaultKernel, join(dir, 'boot'));

  const posts: string[] = [];
  const http: Server = createServer((req, res) => {
    posts.push(`${req.method} ${req.url}`);
    res.statusCode = 204;
    res.end();
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const httpPort = (http.address() as { port: number }).port;
  const socket = join(dir, 'nbd.sock');
  const children: ChildProcess[] = [];
  t.after(async () => {
    for (const c of children) if (c.exitCode === null && c.pid) process.kill(c.pid, 'SIGKILL');
    await new Promise<void>((resolve) => http.close(() => resolve()));
  });
  // nbdkit on a Unix socket; QEMU's user network forwards the guest's
  // 10.0.2.100:10809 to it, so the command line keeps Debian's default port.
  const nbd = spawn('nbdkit', ['-f', '-U', socket, '--filter=cow', 'file', disk], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(nbd);
  for (let i = 0; i < 100 && !(await stat(socket).catch(() => undefined)); i++) await new Promise((r) => setTimeout(r, 100));

  const append = kernelCommandLine({
    flavour: 'initramfs-tools',
    nbd: { server: '10.0.2.100', port: 10809, exportName: 'image' },
    root: { uuid: ins.root.uuid },
    network: 'dhcp',
    consoles: ['ttyS0,115200n8'],
    extra: [`diskless.up=http://10.0.2.2:${httpPort}/boot/525400123456/b1/up`],
  });
  const started = Date.now();
  // The serial console goes to a file: a pipe the test reads while the guest
  // is busy can fill, and QEMU's UART then drops characters.
  const consoleLog = join(dir, 'console.log');
  const qemu = spawn(
    'qemu-system-x86_64',
    [
      '-machine', 'q35,accel=tcg', '-cpu', 'max', '-m', '1024', '-smp', '1',
      '-display', 'none', '-monitor', 'none', '-serial', `file:${consoleLog}`, '-no-reboot',
      '-kernel', boot.kernel.path, '-initrd', boot.initrd.path, '-append', append,
      '-netdev', `user,id=n0,guestfwd=tcp:10.0.2.100:10809-unix:${socket}`,
      '-device', 'e1000e,netdev=n0,mac=52:54:00:12:34:56',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  children.push(qemu);
  const readConsole = async (): Promise<string> => (await readFile(consoleLog, 'utf8').catch(() => ''));
  /** Polls the console (bounded by `ms`) until `re` matches; the match, or undefined. */
  const waitFor = async (re: RegExp, ms: number): Promise<RegExpExecArray | undefined> => {
    const until = Date.now() + ms;
    while (Date.now() < until && qemu.exitCode === null) {
      const m = re.exec(await readConsole());
      if (m) return m;
      await new Promise((r) => setTimeout(r, 1000));
    }
    return re.exec(await readConsole()) ?? undefined;
  };
  const up = (await waitFor(/DISKLESS-UP (\S+)/, BOOT_TIMEOUT_MS))?.[1];
  const upMs = Date.now() - started;
  assert.equal(up, '/dev/nbd0p1', `no DISKLESS-UP marker; console tail:\n${(await readConsole()).slice(-4000)}`);
  t.diagnostic(`DISKLESS-UP after ${(upMs / 1000).toFixed(0)} s`);
  // The OS-up report follows the marker (curl retries while the network settles).
  for (let i = 0; i < 300 && posts.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(posts, ['POST /boot/525400123456/b1/up']);
  // diskless-net named the host after the boot NIC; the demo's autologin is on the serial console.
  const login = await waitFor(/diskless-525400123456 login: root \(automatic login\)/, 120_000);
  assert.ok(login, `no autologin on ttyS0; console tail:\n${(await readConsole()).slice(-4000)}`);
});
