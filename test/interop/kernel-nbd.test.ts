/**
 * The Linux kernel's NBD client against our NBD server.
 *
 * A small QEMU guest (the distribution kernel, a busybox initramfs with
 * nbd-client 3.x; see test/helpers/guest/) connects to the server on the
 * host's loopback through QEMU user networking, mounts the ext4 file system
 * the export holds and follows init.sh's scenarios, reporting each step on
 * its serial console. The host then reads the export back through the
 * server with nbdcopy and checks it with e2fsck and debugfs, and checks that
 * the base image under the copy-on-write overlay was never written.
 *
 *   reconnect: mount, write a payload, sync, umount, nbd-client -d, connect
 *              again, mount, read back and compare sha256, write more.
 *   persist:   mount, write, sync; the host kills the server (SIGKILL: the
 *              guest's sync was acknowledged, so the data must survive a
 *              crash) and starts it again on the same port; the guest reads
 *              through its old connection (nbd-client -nonetlink -persist),
 *              then disconnects, connects afresh and reads back.
 *
 * DISKLESS_KERNEL_NBD_SERVER=qemu-nbd runs the same scenarios against
 * qemu-nbd, to tell a harness fault from a server fault.
 * DISKLESS_GUEST_KEEP=1 keeps the working directory (console logs, server
 * log, disk images) even when the test passes; a failing test keeps it.
 */
import { test, before, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDisklessError } from '../../src/lib/errors.js';
import { requirePeers } from '../helpers/peers.js';
import { ensureGuestInitramfs, findGuestKernel, type GuestKernel, type Initramfs } from '../helpers/guest/initramfs.js';
import { bootGuest, SLIRP, type ExitInfo, type GuestEvent, type GuestScenario, type GuestVm } from '../helpers/guest/qemu-guest.js';
import {
  exportServerKind, freeLoopbackPort, makeExt4Image, sha256OfFile, snapshotExport, startExportServer,
  type ExportServer, type ExportServerKind,
} from '../helpers/guest/export-server.js';

const PEERS = ['qemu-system-x86_64', 'nbd-client', 'busybox', 'mkfs.ext4', 'nbdcopy', 'debugfs', 'e2fsck'];
/** The reference server needs its own tools. */
const peers = (): string[] => [...PEERS, ...(exportServerKind() === 'qemu-nbd' ? ['qemu-nbd', 'qemu-img'] : [])];
const EXPORT_NAME = 'guest-disk';
const IMAGE_MIB = 256;
const PAYLOAD_MIB = 4;
const SHA256 = /^[0-9a-f]{64}$/;

/** Limits of one scenario's steps (TCG: boot to "up" takes 5-15 s, each NBD step well under a second). */
const STEP = {
  bootMs: 90_000,
  stepMs: 30_000,
  exitMs: 30_000,
  /** After the restarted server answers: time for a reconnecting nbd-client (it retries every second). */
  settleAfterRestartMs: 3_000,
} as const;

let kernel: GuestKernel | null = null;
let initramfs: Initramfs | null = null;
let setupError: unknown = null;

before(async () => {
  // Building needs the peers too; a missing one is reported (or skipped) per test by requirePeers.
  try {
    kernel = findGuestKernel();
    initramfs = await ensureGuestInitramfs(kernel);
  } catch (e) {
    setupError = e;
  }
});

interface Rig {
  dir: string;
  kind: ExportServerKind;
  image: string;
  port: number;
  baseSha: string;
  guest: GuestVm | null;
  /** Set as the test's last step: a test that stops earlier keeps its directory. */
  passed: boolean;
  /** The running server. */
  server(): ExportServer;
  /** Stops the server with `signal` and starts it again on the same port with the same overlay. */
  restartServer(signal: NodeJS.Signals): Promise<{ old: ExportServer; killed: ExitInfo; server: ExportServer }>;
}

/** Like requirePeers: without an installed kernel a developer's run skips, CI fails. */
function requireGuest(t: TestContext): boolean {
  if (!isDisklessError(setupError, 'GUEST_NO_KERNEL') || process.env.CI === 'true') return true;
  t.skip((setupError as Error).message);
  return false;
}

/**
 * Working directory, base image, server. Cleanup is registered first, so
 * whatever fails later, the guest and the server are killed (by pid) and the
 * directory is kept for a look.
 */
async function setUp(t: TestContext, name: string): Promise<Rig> {
  if (setupError) throw setupError;
  const dir = mkdtempSync(join(tmpdir(), `dl-kernel-nbd-${name}-`));
  let server: ExportServer | null = null;
  const rig: Rig = {
    dir, kind: exportServerKind(), image: join(dir, 'base.raw'), port: 0, baseSha: '', guest: null, passed: false,
    server: () => {
      if (!server) throw new Error('the server is not running');
      return server;
    },
    restartServer: async (signal) => {
      const old = rig.server();
      const killed = await old.stop(signal);
      server = null;
      server = await start();
      return { old, killed, server };
    },
  };
  const start = (): Promise<ExportServer> => startExportServer({
    kind: rig.kind, image: rig.image, exportName: EXPORT_NAME, port: rig.port, cowDir: join(dir, 'overlay'), logFile: join(dir, 'server.log'),
  });
  t.after(async () => {
    await rig.guest?.kill();
    await server?.stop('SIGKILL');
    if (process.env.DISKLESS_GUEST_KEEP === '1' || !rig.passed) t.diagnostic(`kept ${dir} (console-*.log, server.log, images)`);
    else rmSync(dir, { recursive: true, force: true });
  });
  await makeExt4Image(rig.image, IMAGE_MIB);
  rig.baseSha = await sha256OfFile(rig.image);
  rig.port = await freeLoopbackPort();
  server = await start();
  return rig;
}

async function boot(rig: Rig, scenario: GuestScenario): Promise<GuestVm> {
  rig.guest = await bootGuest({
    kernel: kernel!.path,
    initramfs: initramfs!.path,
    serialLog: join(rig.dir, `console-${scenario}.log`),
    cmdline: { server: SLIRP.host, port: rig.port, exportName: EXPORT_NAME, scenario, payloadMiB: PAYLOAD_MIB },
  });
  return rig.guest;
}

/** The sha256 a "wrote <file> <sha>" or "readback <file> ok <sha>" event carries. */
function shaOf(e: GuestEvent): string {
  const sha = e.args[e.args.length - 1] ?? '';
  assert.match(sha, SHA256, `no sha256 in "${e.text}"`);
  return sha;
}

function expectFile(e: GuestEvent, file: string): void {
  assert.equal(e.args[0], file, `event "${e.text}" is about another file`);
}

/** The console lines between two offsets of it, for the report of what happened. */
function consoleBetween(vm: GuestVm, from: string, to: string): string {
  const text = vm.serial();
  const a = text.indexOf(from);
  const b = a < 0 ? -1 : text.indexOf(to, a);
  return a < 0 ? '' : text.slice(a, b < 0 ? undefined : b + to.length);
}

/** A multi-line excerpt as diagnostics, one line each (TAP escapes newlines inside one), repeated kernel I/O errors folded. */
function report(t: TestContext, title: string, text: string, maxLines = 40): void {
  t.diagnostic(`${title}:`);
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  let folded = 0;
  const kept: string[] = [];
  for (const l of lines) {
    if (/\] (I\/O error, dev|Buffer I\/O error on dev)/.test(l) && kept.length > 0 && /I\/O error/.test(kept[kept.length - 1]!)) folded++;
    else kept.push(l);
  }
  for (const l of kept.slice(0, maxLines)) t.diagnostic(`  ${l}`);
  if (kept.length > maxLines) t.diagnostic(`  ... ${kept.length - maxLines} more lines`);
  if (folded > 0) t.diagnostic(`  (${folded} further kernel I/O error lines folded)`);
}

test('kernel nbd-client: mount ext4, write, sync, disconnect, reconnect, read back', { timeout: 240_000 }, async (t) => {
  if (!requirePeers(t, ...peers()) || !requireGuest(t)) return;
  const rig = await setUp(t, 'reconnect');
  const started = Date.now();
  const vm = await boot(rig, 'reconnect');
  t.diagnostic(`server ${rig.kind} pid ${rig.server().pid} on 127.0.0.1:${rig.port}; guest pid ${vm.pid} accel ${vm.accel}; initramfs ${initramfs!.cached ? 'cached' : `built in ${initramfs!.buildMs} ms`}`);

  const up = await vm.waitForEvent('up', STEP.bootMs);
  const connected = await vm.waitForEvent('connected', STEP.stepMs);
  assert.equal(Number(connected.args[0]), IMAGE_MIB * 1024 * 1024, 'the kernel sees the export at its full size');
  t.diagnostic(`kernel queue: ${connected.args.slice(1).join(' ')}`);
  await vm.waitForEvent('mounted', STEP.stepMs);
  const wrote = await vm.waitForEvent('wrote', STEP.stepMs);
  expectFile(wrote, 'payload.bin');
  const payloadSha = shaOf(wrote);
  await vm.waitForEvent('synced', STEP.stepMs);
  await vm.waitForEvent('disconnected', STEP.stepMs);
  const reconnected = await vm.waitForEvent('reconnected', STEP.stepMs);
  assert.equal(Number(reconnected.args[0]), IMAGE_MIB * 1024 * 1024);
  await vm.waitForEvent('mounted', STEP.stepMs);
  const readback = await vm.waitForEvent('readback', STEP.stepMs);
  expectFile(readback, 'payload.bin');
  assert.equal(readback.args[1], 'ok', `guest read back other data: ${readback.text}`);
  assert.equal(shaOf(readback), payloadSha);
  const wrote2 = await vm.waitForEvent('wrote', STEP.stepMs);
  expectFile(wrote2, 'second.bin');
  const secondSha = shaOf(wrote2);
  const done = await vm.waitForEvent('done', STEP.stepMs);
  const exit = await vm.waitForExit(STEP.exitMs);
  assert.equal(exit.code, 0, 'the guest powered off (QEMU exits 0)');
  t.diagnostic(`guest: up at ${up.atMs} ms, done at ${done.atMs} ms; whole run ${Date.now() - started} ms`);

  // The host's own view, read through the server by another NBD client.
  const snap = await snapshotExport(rig.server().uri, join(rig.dir, 'readback.raw'), ['/payload.bin', '/second.bin']);
  assert.ok(snap.fsClean, `e2fsck -fn on the export found problems:\n${snap.fsckOutput}`);
  assert.equal(snap.files['/payload.bin'], payloadSha, 'payload.bin as the server stored it');
  assert.equal(snap.files['/second.bin'], secondSha, 'second.bin as the server stored it');
  assert.equal(await sha256OfFile(rig.image), rig.baseSha, 'the base image under the overlay was not written');
  rig.passed = true;
});

test('kernel nbd-client: server restarted under a mounted device (-persist), then a fresh connection', { timeout: 240_000 }, async (t) => {
  if (!requirePeers(t, ...peers()) || !requireGuest(t)) return;
  const rig = await setUp(t, 'persist');
  const started = Date.now();
  const vm = await boot(rig, 'persist');
  t.diagnostic(`server ${rig.kind} pid ${rig.server().pid} on 127.0.0.1:${rig.port}; guest pid ${vm.pid} accel ${vm.accel}`);

  await vm.waitForEvent('up', STEP.bootMs);
  await vm.waitForEvent('connected', STEP.stepMs);
  await vm.waitForEvent('mounted', STEP.stepMs);
  const wrote = await vm.waitForEvent('wrote', STEP.stepMs);
  expectFile(wrote, 'payload.bin');
  const payloadSha = shaOf(wrote);
  await vm.waitForEvent('synced', STEP.stepMs);
  await vm.waitForEvent('await-restart', STEP.stepMs);

  // A crash, not a clean stop: the guest's sync was acknowledged before it.
  const restart = await rig.restartServer('SIGKILL');
  t.diagnostic(`server pid ${restart.old.pid} killed (${restart.killed.signal ?? restart.killed.code}); restarted as pid ${restart.server.pid} on the same port`);
  await new Promise((r) => setTimeout(r, STEP.settleAfterRestartMs));
  vm.send('go');

  await vm.waitForEvent('persist-resumed', STEP.stepMs);
  // Through the connection the guest held across the restart: either the
  // data or an I/O error, never other data.
  const early = await vm.waitForEvent('readback', STEP.stepMs);
  expectFile(early, 'payload.bin');
  const earlySha = early.args[2] ?? '';
  if (SHA256.test(earlySha)) assert.equal(earlySha, payloadSha, `the held connection read other data: ${early.text}`);
  const outcome = await vm.waitForEvent(['persist-ok', 'persist-read-failed', 'persist-write-failed'], STEP.stepMs);
  t.diagnostic(`persist outcome: ${outcome.name}`);
  await vm.waitForEvent('disconnected', STEP.stepMs);
  report(t, 'console from the restart to the fresh connection', consoleBetween(vm, 'DISKLESS-GUEST: await-restart', 'DISKLESS-GUEST: disconnected'));

  // A fresh connection to the restarted server sees what was synced before the crash.
  await vm.waitForEvent('reconnected', STEP.stepMs);
  await vm.waitForEvent('mounted', STEP.stepMs);
  const readback = await vm.waitForEvent('readback', STEP.stepMs);
  expectFile(readback, 'payload.bin');
  assert.equal(readback.args[1], 'ok', `after the restart the guest read other data: ${readback.text}`);
  assert.equal(shaOf(readback), payloadSha);
  await vm.waitForEvent('done', STEP.stepMs);
  const exit = await vm.waitForExit(STEP.exitMs);
  assert.equal(exit.code, 0);
  t.diagnostic(`whole run ${Date.now() - started} ms`);

  const snap = await snapshotExport(rig.server().uri, join(rig.dir, 'readback.raw'), ['/payload.bin']);
  assert.ok(snap.fsClean, `e2fsck -fn on the export found problems:\n${snap.fsckOutput}`);
  assert.equal(snap.files['/payload.bin'], payloadSha, 'payload.bin as the server stored it across the crash');
  assert.equal(await sha256OfFile(rig.image), rig.baseSha, 'the base image under the overlay was not written');
  rig.passed = true;
});
