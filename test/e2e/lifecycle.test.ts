/**
 * End to end, the life of a room of disk-less clients on one image, through
 * real firmware, iPXE, Linux and its NBD client, driven as an admin would
 * drive it (the REST API):
 *
 *   1. two clients boot at once, A ephemeral (SeaBIOS + iPXE) and B
 *      persistent (OVMF + iPXE); the server records each boot's timeline
 *      from DHCP to OS-up; each writes a file the other never sees;
 *   2. the server is stopped and started while both are up and writing:
 *      they carry on (the image's diskless-nbd-keeper gives the kernel a new
 *      connection), with no I/O error in their kernel logs and every
 *      acknowledged (fsynced) write still there, read back from the server;
 *   3. a maintenance client M boots a draft of the image, installs a package
 *      and powers off; its draft is committed as version 2 and published;
 *      A and B, still running version 1, are reported stale and B does not
 *      see the package;
 *   4. A and B reboot: A (ephemeral) runs version 2, has the package and no
 *      longer its own file; B (persistent) keeps its file and its overlay on
 *      version 1, and stays stale until a reset;
 *   5. rollback: version 1 is current again, B is no longer stale, and A's
 *      next boot has no package.
 *
 * The image is the cached Debian 12 test image (buildTestImage). Router
 * advertisements run on the lab bridge so no boot waits for IPv6. Under TCG
 * a boot takes one to two minutes; this file boots six times.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Catalogue } from '../../src/app/catalogue.js';
import { Store } from '../../src/state/store.js';
import { createLab, type Lab, type LabChild } from '../helpers/lab.js';
import { DISKLESS_UP_LINE, LAB_HTTP_PORT, labServerConfig, NBD_ROOT_SOURCE, serverTimeline, startRouterAdverts, startServerInLab, untilRecorded } from '../helpers/lab-boot.js';
import { requirePeers, requireRoot } from '../helpers/peers.js';
import { assertBootTimeline, buildTestImage, E2E_LIMITS, macFor, startShellVm, withEvidence, type ShellVm } from './helpers/e2e.js';

const IMAGE = 'debian12';
const PEERS = ['ip', 'qemu-system-x86_64', 'dnsmasq', 'curl', 'debootstrap', 'sfdisk', 'mkfs.ext4'] as const;
const MACS = { a: macFor(10), b: macFor(11), m: macFor(12) } as const;
const PACKAGE = 'diskless-e2e-marker';
const SHELL_PROMPT = /root@[^\s:]+:[^\n]*# ?$/m;
/** Kernel messages that mean a request failed or the file system gave up. */
const IO_TROUBLE = /I\/O error|blk_update_request|Buffer I\/O|EXT4-fs error|EXT4-fs warning|Remounting filesystem read-only|Aborting journal/;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface World {
  lab: Lab;
  dataDir: string;
  store: Store;
  config: Record<string, unknown>;
  server: LabChild;
  token: string;
  a: ShellVm;
  b: ShellVm;
}
let world: World | null = null;
let workDir: string | null = null;
let serverStarts = 0;
/** The lab's folder, known before the world is whole (step 1 fills it). */
let labDir: string | null = null;

function ready(t: TestContext): boolean {
  return requireRoot(t) && requirePeers(t, ...PEERS);
}

/** The world the previous steps made; a step after a failed one fails at once. */
function w(): World {
  if (!world) throw new Error('an earlier step failed: no lab to go on with');
  return world;
}

/** The logs a failed step reports: every guest's console and the running server's log. */
function evidence(): string[] {
  const dir = world?.lab.dir ?? labDir;
  if (!dir) return [];
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch {
    return [];
  }
  return [...files.filter((f) => f.endsWith('.serial')).map((f) => join(dir, f)), join(dir, `server-${serverStarts}.log`)];
}

async function startServer(lab: Lab, config: Record<string, unknown>): Promise<LabChild> {
  serverStarts += 1;
  return startServerInLab(lab, config, `server-${serverStarts}.log`);
}

/** A REST API call from inside the lab, as an admin's tool would make it. */
async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const { lab, token } = w();
  const args = ['-sS', '-X', method, '-H', `authorization: Bearer ${token}`, '-w', '\n%{http_code}', '--max-time', '300'];
  if (body !== undefined) args.push('-H', 'content-type: application/json', '--data-binary', JSON.stringify(body));
  args.push(`http://${lab.serverAddress}:${LAB_HTTP_PORT}/api/v1${path}`);
  const r = await lab.exec('curl', args, { timeoutMs: 320_000 });
  const nl = r.stdout.lastIndexOf('\n');
  const text = r.stdout.slice(0, nl);
  return { status: Number(r.stdout.slice(nl + 1)), json: text ? JSON.parse(text) : null };
}

async function client(mac: string): Promise<{ stale: boolean; bootVersion: number | null; targetVersion: number | null; state: string }> {
  const r = await api('GET', `/clients/${mac}`);
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json;
}

/** Waits for the marker after `fromOffset`, then for the server's OS-up report of that boot; returns the boot's events. */
async function upAgain(vm: ShellVm, since: number, fromOffset: number): Promise<ReturnType<Store['events']['list']>> {
  const m = await vm.waitForSerial(DISKLESS_UP_LINE, E2E_LIMITS.bootMs, fromOffset);
  assert.match(m[1]!, NBD_ROOT_SOURCE, `${vm.name}: the root is the NBD device`);
  const events = await untilRecorded(w().store, vm.mac, 'os-up', E2E_LIMITS.reportMs, since);
  // The autologin shell comes after the report; on a loaded machine it can take a while.
  await vm.waitForSerial(SHELL_PROMPT, 3 * E2E_LIMITS.shellMs, fromOffset);
  return events;
}

/** Reboots through the guest's own shutdown (which disconnects NBD cleanly) and waits until it is up again. */
async function reboot(vm: ShellVm): Promise<ReturnType<Store['events']['list']>> {
  const from = vm.mark();
  const since = Date.now();
  await vm.type('systemctl reboot');
  const events = await upAgain(vm, since, from);
  assertBootTimeline(vm, events, IMAGE, since);
  return events;
}

/** The version the client's latest boot connected to. */
function bootedVersion(events: ReturnType<Store['events']['list']>): unknown {
  return events.filter((e) => e.step === 'nbd-connect').at(-1)?.detail?.version;
}

const has = async (vm: ShellVm, path: string): Promise<boolean> => /^yes$/m.test(await vm.shell(`test -e ${path} && echo yes || echo no`));
const hasPackage = async (vm: ShellVm): Promise<boolean> => /^installed$/m.test(await vm.shell(`dpkg-query -W -f='\${db:Status-Status}\\n' ${PACKAGE} 2>/dev/null || echo absent`));

describe('end to end: a room of clients through reboots, a server restart, an image update and a rollback', { timeout: E2E_LIMITS.imageBuildMs + 60 * 60_000 }, () => {
  before(async () => {
    if (process.getuid?.() !== 0) return;
    workDir = mkdtempSync('/var/tmp/diskless-e2e-life-');
  });
  after(async () => {
    world?.store.close();
    await world?.lab.close();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  test('two clients, one ephemeral and one persistent, boot at once; each writes a file the other never sees', { timeout: E2E_LIMITS.imageBuildMs + E2E_LIMITS.bootMs + 240_000 }, async (t) => withEvidence(t, evidence, async () => {
    if (!ready(t)) return;
    const disk = join(workDir!, 'disk.raw');
    await buildTestImage(disk);
    const lab = await createLab({});
    labDir = lab.dir;
    const dataDir = join(lab.dir, 'data');
    const catalogue = Catalogue.open(dataDir);
    try {
      await catalogue.importVersion(IMAGE, disk, { move: false });
      catalogue.addClient({ mac: MACS.a, image: IMAGE, mode: 'ephemeral', name: 'room-a' });
      catalogue.addClient({ mac: MACS.b, image: IMAGE, mode: 'persistent', name: 'room-b' });
      catalogue.addClient({ mac: MACS.m, image: IMAGE, mode: 'ephemeral', name: 'room-maint' });
    } finally {
      catalogue.close();
    }
    rmSync(disk, { force: true });
    const config = labServerConfig(lab, dataDir, { dhcp: 'full' });
    await startRouterAdverts(lab);
    const server = await startServer(lab, config);
    const store = Store.open(dataDir);
    const token = readFileSync(join(dataDir, 'api-token'), 'utf8').trim();
    const a = await startShellVm(lab, { firmware: 'bios-ipxe', mac: MACS.a, reboot: true });
    const b = await startShellVm(lab, { firmware: 'uefi-ipxe', mac: MACS.b, reboot: true });
    world = { lab, dataDir, store, config, server, token, a, b };

    const [evA, evB] = await Promise.all([upAgain(a, a.startedAt, 0), upAgain(b, b.startedAt, 0)]);
    for (const [vm, ev] of [[a, evA], [b, evB]] as const) {
      assertBootTimeline(vm, ev, IMAGE, vm.startedAt);
      t.diagnostic(`${vm.firmware} (${vm.accel}): ${Object.entries(serverTimeline(ev, vm.startedAt)).map(([k, v]) => `${k} +${v}s`).join(', ')}`);
      assert.equal(bootedVersion(ev), 1);
    }
    for (const vm of [a, b]) {
      const out = await vm.shell(`echo mine-${vm.name} > /root/mine.txt && sync /root/mine.txt && cat /root/mine.txt`);
      assert.match(out, new RegExp(`mine-${vm.name}`));
    }
    assert.doesNotMatch(await a.shell('cat /root/mine.txt'), new RegExp(`mine-${b.name}`));
    assert.doesNotMatch(await b.shell('cat /root/mine.txt'), new RegExp(`mine-${a.name}`));
    // Both run with the keeper that step 2 relies on.
    for (const vm of [a, b]) assert.match(await vm.shell('systemctl is-active diskless-nbd-keeper'), /^active$/m, `${vm.name}: the NBD keeper runs`);
  }));

  test('the server restarts under both clients while they write: they carry on, no I/O error, no acknowledged write lost', { timeout: 10 * 60_000 }, async (t) => withEvidence(t, evidence, async () => {
    if (!ready(t)) return;
    const { lab, a, b, config } = w();
    const vms = [a, b];
    // Each line is fsynced (an NBD flush) before the next is written: every line in the file was acknowledged.
    for (const vm of vms) {
      await vm.shell("rm -f /run/stop-writer; (nohup sh -c 'i=0; while [ ! -e /run/stop-writer ]; do echo $i >> /root/writes.log; sync /root/writes.log; i=$((i+1)); sleep 0.1; done' > /dev/null 2>&1 < /dev/null &)");
    }
    await sleep(5000);
    const before = await Promise.all(vms.map(async (vm) => Number((await vm.shell('tail -n 1 /root/writes.log')).trim())));
    const stoppedAt = Date.now();
    await lab.stop(w().server);
    await sleep(3000);
    w().server = await startServer(lab, config);
    t.diagnostic(`server down for ${Date.now() - stoppedAt} ms`);
    // The keepers reconnect, and the writers go on past where they were.
    for (const [i, vm] of vms.entries()) {
      const deadline = Date.now() + 120_000;
      for (;;) {
        const last = Number((await vm.shell('tail -n 1 /root/writes.log', 120_000)).trim());
        if (last > before[i]! + 20) break;
        assert.ok(Date.now() < deadline, `${vm.name}: the writer did not go on after the restart (at ${last}, was ${before[i]})`);
        await sleep(2000);
      }
    }
    for (const [i, vm] of vms.entries()) {
      assert.match(await vm.shell('dmesg | grep -c "diskless-nbd-keeper: nbd0 reconnected"'), /^[1-9]/m, `${vm.name}: the keeper gave the kernel a new connection`);
      await vm.shell('touch /run/stop-writer; sleep 1; sync');
      // Read back from the server, not from the guest's page cache.
      const check = await vm.shell("echo 3 > /proc/sys/vm/drop_caches; awk 'NR-1 != $1 { bad = bad \" \" NR \":\" $1 } END { print \"lines\", NR, \"bad\" bad }' /root/writes.log", 120_000);
      const m = /lines (\d+) bad(.*)$/m.exec(check);
      assert.ok(m, `${vm.name}: ${check}`);
      assert.equal(m[2]!.trim(), '', `${vm.name}: every line is in order, none lost (${check.trim()})`);
      assert.ok(Number(m[1]) > before[i]! + 20, `${vm.name}: the file holds the lines written before and after the restart`);
      const trouble = await vm.shell(`dmesg | grep -E '${IO_TROUBLE.source.replace(/\\/g, '')}'; echo end-of-trouble`);
      assert.equal(trouble.replace(/end-of-trouble\s*$/, '').trim(), '', `${vm.name}: no I/O error in the kernel log`);
      const dmesg = await vm.shell('dmesg | grep -iE "nbd|keeper" | tail -n 4');
      assert.match(await vm.shell('findmnt -n -o OPTIONS /'), /^rw[,\n]/m, `${vm.name}: the root is still read-write`);
      t.diagnostic(`${vm.name}: ${m[1]} acknowledged writes, all read back; ${dmesg.split('\n').filter((l) => /nbd|keeper/i.test(l)).slice(-3).join(' | ')}`);
    }
  }));

  test('a maintenance client installs a package; its draft becomes version 2; the running clients are stale and keep version 1', { timeout: E2E_LIMITS.bootMs + 10 * 60_000 }, async (t) => withEvidence(t, evidence, async () => {
    if (!ready(t)) return;
    const { lab, a, b } = w();
    const on = await api('POST', `/clients/${MACS.m}/maintenance`, { on: true });
    assert.equal(on.status, 200, JSON.stringify(on.json));
    const m = await startShellVm(lab, { firmware: 'bios-ipxe', mac: MACS.m });
    const ev = await upAgain(m, m.startedAt, 0);
    assertBootTimeline(m, ev, IMAGE, m.startedAt);
    // A package built and installed on the spot: dpkg's database changes as with any install.
    const install = await m.shell([
      `mkdir -p /tmp/pkg/DEBIAN /tmp/pkg/usr/share/${PACKAGE}`,
      `printf 'Package: ${PACKAGE}\\nVersion: 2\\nArchitecture: all\\nMaintainer: diskless tests <root@localhost>\\nDescription: marks version 2 of the image\\n' > /tmp/pkg/DEBIAN/control`,
      `echo version-2 > /tmp/pkg/usr/share/${PACKAGE}/release`,
      `dpkg-deb --build /tmp/pkg /tmp/${PACKAGE}.deb > /dev/null && dpkg -i /tmp/${PACKAGE}.deb && sync`,
    ].join(' && '), 180_000);
    assert.match(install, new RegExp(`Setting up ${PACKAGE} \\(2\\)`), install);
    await m.type('poweroff');
    const exit = await Promise.race([m.child.exited, sleep(E2E_LIMITS.shellMs * 3).then(() => null)]);
    assert.ok(exit, 'the maintenance client powered off');

    // Its shutdown disconnected NBD cleanly, so the server released its draft at once.
    let commit = await api('POST', `/clients/${MACS.m}/commit`, {});
    for (let i = 0; commit.status === 409 && i < 30; i += 1) {
      await sleep(2000);
      commit = await api('POST', `/clients/${MACS.m}/commit`, {});
    }
    assert.equal(commit.status, 201, JSON.stringify(commit.json));
    assert.equal(commit.json.version, 2);
    assert.equal(commit.json.published, true);
    const image = await api('GET', `/images/${IMAGE}`);
    assert.equal(image.status, 200);
    t.diagnostic(`committed: ${JSON.stringify({ version: commit.json.version, size: commit.json.size })}; image: ${JSON.stringify(image.json).slice(0, 300)}`);

    for (const vm of [a, b]) {
      const c = await client(vm.mac);
      assert.equal(c.stale, true, `${vm.name} runs version 1 and is reported stale`);
      assert.equal(c.targetVersion, 2);
      assert.equal(await hasPackage(vm), false, `${vm.name} keeps what it booted`);
    }
  }));

  test('after a reboot the ephemeral client runs version 2 without its old file; the persistent one keeps its file and its version', { timeout: E2E_LIMITS.bootMs + 5 * 60_000 }, async (t) => withEvidence(t, evidence, async () => {
    if (!ready(t)) return;
    const { a, b } = w();
    const [evA, evB] = await Promise.all([reboot(a), reboot(b)]);
    assert.equal(bootedVersion(evA), 2, 'A booted version 2');
    assert.equal(await hasPackage(a), true, 'A has the package the maintenance client installed');
    assert.match(await a.shell(`cat /usr/share/${PACKAGE}/release`), /^version-2$/m);
    assert.equal(await has(a, '/root/mine.txt'), false, 'A is ephemeral: its file went with its last boot');
    assert.equal((await client(a.mac)).stale, false);

    assert.equal(bootedVersion(evB), 1, 'B is persistent: its overlay stays on version 1');
    assert.match(await b.shell('cat /root/mine.txt'), new RegExp(`mine-${b.name}`), 'B is persistent: its file is still there');
    assert.equal(await hasPackage(b), false);
    assert.equal((await client(b.mac)).stale, true, 'B stays stale until it is reset');
  }));

  test('a rollback makes version 1 current again: the persistent client is current, the ephemeral one boots without the package', { timeout: E2E_LIMITS.bootMs + 5 * 60_000 }, async (t) => withEvidence(t, evidence, async () => {
    if (!ready(t)) return;
    const { a, b } = w();
    const r = await api('POST', `/images/${IMAGE}/rollback`, {});
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(r.json.from, 2);
    assert.equal(r.json.to, 1);
    assert.equal((await client(b.mac)).stale, false, 'B runs the current version again');
    assert.equal((await client(a.mac)).stale, true, 'A runs version 2, no longer current');
    const evA = await reboot(a);
    assert.equal(bootedVersion(evA), 1);
    assert.equal(await hasPackage(a), false, 'A boots version 1: no package');
    assert.equal((await client(a.mac)).stale, false);
    await Promise.all([a.stop(), b.stop()]);
  }));
});
