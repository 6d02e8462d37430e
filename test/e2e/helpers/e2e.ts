/**
 * Helpers of the end-to-end tests: the Debian test image (built once and
 * cached), a catalogue holding it, the full server (NBD and boot services,
 * one process inside the lab namespace) and QEMU clients whose serial
 * console is both logged and writable, so a test can use it as a shell.
 *
 * Why not lab.startQemu(): its serial console is a file (output only). Here
 * the console is a QEMU socket chardev with a logfile: the log is what
 * waitForLog() reads, the socket is where commands are typed.
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { copyFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Catalogue } from '../../../src/app/catalogue.js';
import { addBootableVersion, DEMO_SERVER_READY } from '../../../src/app/demo.js';
import { buildDebianImage, type BuildResult } from '../../../src/images/build-debian.js';
import type { BootEventRecord, ImageVersionRecord } from '../../../src/state/store.js';
import { latestBootId } from '../../helpers/lab-boot.js';
import { LAB_LIMITS, LabError, readLog, waitForLog, type Lab, type LabChild } from '../../helpers/lab.js';
import { buildQemuArgs, FIRMWARE_FILES, missingFirmwareFiles, QEMU_BINARY, resolveAccel, type Accel, type FirmwareKind } from '../../helpers/lab-qemu.js';

export const E2E_LIMITS = {
  /** A first build of the image (debootstrap from the network) under a loaded machine. */
  imageBuildMs: 45 * 60_000,
  serverReadyMs: 30_000,
  /** Power-on to DISKLESS-UP under TCG: 2-3 min measured alone, more with two guests on two cores. */
  bootMs: 9 * 60_000,
  /** DISKLESS-UP printed to the report reaching the server (curl with retries). */
  reportMs: 60_000,
  shellMs: 60_000,
} as const;

export const NBD_PORT = 10809;
export const HTTP_PORT = 8080;
export const GUEST_MEMORY_MIB = 1024;

/** The test image cache (shared with the images tests). */
export const TEST_CACHE_DIR = process.env.DISKLESS_TEST_CACHE ?? '/var/cache/diskless-test';
export const TEST_BUILD_DIR = process.env.DISKLESS_TEST_BUILD_DIR ?? '/var/tmp/diskless-build';

const SERVER_SCRIPT = fileURLToPath(new URL('../../../src/app/demo.js', import.meta.url));

/**
 * The Debian 12 test image: root logged in on ttyS0 (so the console is a
 * shell). The same options as the images tests, so the cached disk is shared.
 */
export function buildTestImage(outPath: string): Promise<BuildResult> {
  return buildDebianImage({ outPath, cacheDir: TEST_CACHE_DIR, workDir: TEST_BUILD_DIR, autologin: true });
}

/** A MAC unique to this process and client number. */
export function macFor(n: number): string {
  const b = [0x52, 0x54, 0x00, 0xe2, (process.pid >> 4) & 0xff, ((process.pid & 0x0f) << 4) | (n & 0x0f)];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** A data directory with the image as a bootable version and the clients (ephemeral). */
export async function prepareCatalogue(dataDir: string, image: string, disk: string, macs: readonly string[]): Promise<ImageVersionRecord> {
  const catalogue = Catalogue.open(dataDir);
  try {
    const v = await addBootableVersion(catalogue, image, disk);
    macs.forEach((mac, i) => catalogue.addClient({ mac, image, mode: 'ephemeral', name: `e2e-pc-${i + 1}` }));
    return v;
  } finally {
    catalogue.close();
  }
}

/** The full server (NBD on NBD_PORT, HTTP, TFTP, full DHCP on the bridge) in the lab, from a configuration file. */
export async function startFullServerInLab(lab: Lab, dataDir: string): Promise<LabChild> {
  const file = join(lab.dir, 'diskless.json');
  writeFileSync(file, JSON.stringify({
    dataDir,
    nbd: { host: lab.serverAddress, port: NBD_PORT },
    http: { host: lab.serverAddress, port: HTTP_PORT },
    tftp: { host: lab.serverAddress },
    dhcp: {
      interfaces: [{
        name: lab.bridge, mode: 'full', address: lab.serverAddress, subnet: lab.subnet,
        pool: { start: lab.hostAddress(100), end: lab.hostAddress(199) },
      }],
    },
    boot: { unknownClients: 'ignore' },
  }, null, 2));
  const child = lab.spawn(process.execPath, ['--enable-source-maps', SERVER_SCRIPT, '--serve', file], {
    logFile: join(lab.dir, 'server.log'),
  });
  await waitForLog(child.logFile, new RegExp(DEMO_SERVER_READY), { timeoutMs: E2E_LIMITS.serverReadyMs, process: child });
  return child;
}

export interface ShellVm {
  readonly name: string;
  readonly firmware: FirmwareKind;
  readonly mac: string;
  readonly child: LabChild;
  readonly accel: Accel;
  readonly serialLog: string;
  readonly startedAt: number;
  waitForSerial(pattern: RegExp, timeoutMs: number, fromOffset?: number): Promise<RegExpExecArray>;
  /** Length of the console text so far (to wait for what comes after). */
  mark(): number;
  /**
   * Types a command on the console and resolves with the text it printed.
   * The end is found by a marker the shell computes ($((n+1))), so the echo
   * of the typed line never matches it.
   */
  shell(command: string, timeoutMs?: number): Promise<string>;
  /** Types a line on the console and returns at once (for reboot, poweroff: nothing comes back). */
  type(line: string): Promise<void>;
  stop(): Promise<void>;
}

let vmCounter = 0;

/** A disk-less QEMU client on a new tap of the lab, console logged and writable. */
export interface ShellVmOptions {
  firmware: FirmwareKind;
  mac: string;
  memory?: number;
  /** A guest reboot restarts the machine (default: QEMU exits, as a power-off does). */
  reboot?: boolean;
  /** More QEMU arguments (a local disk, a kernel to boot directly). */
  extraArgs?: readonly string[];
}

export async function startShellVm(lab: Lab, o: ShellVmOptions): Promise<ShellVm> {
  const missing = missingFirmwareFiles(o.firmware);
  if (missing.length > 0) throw new LabError('LAB_MISSING_FILE', `${o.firmware} needs ${missing.join(', ')}`);
  vmCounter += 1;
  const name = `e2e${vmCounter}-${o.firmware}`;
  const tap = await lab.addTap();
  const serialLog = join(lab.dir, `${name}.serial`);
  const socketPath = join(lab.dir, `${name}.console`);
  let varsFile: string | null = null;
  if (o.firmware !== 'bios-ipxe') {
    varsFile = join(lab.dir, `${name}-vars.fd`);
    copyFileSync(FIRMWARE_FILES.ovmfVars, varsFile);
  }
  const accel = await resolveAccel();
  const base = buildQemuArgs({
    name: `${lab.netns}-${name}`, firmware: o.firmware, accel, mac: o.mac, memory: o.memory ?? GUEST_MEMORY_MIB,
    nic: 'virtio-net-pci', tap, serialLog, pcap: null, varsFile, uuid: null, extraArgs: o.extraArgs ?? [],
  }).filter((a) => !(o.reboot && a === '-no-reboot'));
  // The file console becomes a socket console with the same file as its log.
  const i = base.indexOf(`file:${serialLog}`);
  if (i < 1 || base[i - 1] !== '-serial') throw new Error('unexpected QEMU command line: no file serial console');
  const args = [...base.slice(0, i - 1), '-chardev', `socket,id=console0,path=${socketPath},server=on,wait=off,logfile=${serialLog}`, '-serial', 'chardev:console0', ...base.slice(i + 1)];
  const startedAt = Date.now();
  const child = lab.spawn(QEMU_BINARY, args, { logFile: join(lab.dir, `${name}.qemu.log`) });
  let socket: Socket | null = null;
  let seq = 0;

  const waitForSerial = async (pattern: RegExp, timeoutMs: number, fromOffset?: number): Promise<RegExpExecArray> => {
    try {
      return await waitForLog(serialLog, pattern, { timeoutMs, process: child, ...(fromOffset !== undefined ? { fromOffset } : {}) });
    } catch (e) {
      if (e instanceof LabError && e.code === 'LAB_PROCESS_EXITED') {
        throw new LabError('LAB_PROCESS_EXITED', `${e.message}\nQEMU said: ${readLog(child.logFile).slice(-LAB_LIMITS.tailChars)}`);
      }
      throw e;
    }
  };
  const mark = (): number => readLog(serialLog).length;
  const openSocket = async (): Promise<Socket> => {
    if (socket) return socket;
    const s = connect(socketPath);
    await new Promise<void>((res, rej) => {
      s.once('connect', res);
      s.once('error', rej);
    });
    s.on('error', () => undefined);
    s.on('data', () => undefined);
    socket = s;
    return s;
  };
  return {
    name, firmware: o.firmware, mac: o.mac, child, accel, serialLog, startedAt, waitForSerial, mark,
    async shell(command, timeoutMs = E2E_LIMITS.shellMs) {
      const s = await openSocket();
      seq += 1;
      const n = 1000 + seq;
      const from = mark();
      // Printed after the command's output; the typed line holds $((n+1)), not the number.
      s.write(`${command}; echo "E2E-DONE-$((${n}+1))"\r`);
      const m = await waitForSerial(new RegExp(`([\\s\\S]*)E2E-DONE-${n + 1}\\n`), timeoutMs, from);
      const text = m[1]!;
      // Drop the echoed command line.
      const nl = text.indexOf('\n');
      return nl >= 0 ? text.slice(nl + 1) : '';
    },
    async type(line) {
      const s = await openSocket();
      s.write(`${line}\r`);
    },
    async stop() {
      socket?.destroy();
      await lab.stop(child);
    },
  };
}

/**
 * The server recorded every step of one boot, from DHCP to the OS-up report,
 * in order and after power-on (`since`: ms since the epoch, the power-on or
 * the reboot; `events` start there), the NBD connection coming from the
 * address our DHCP leased and opening `image`.
 */
export function assertBootTimeline(vm: Pick<ShellVm, 'name'>, events: readonly BootEventRecord[], image: string, since: number): void {
  const bootId = latestBootId(events);
  assert.ok(bootId, `${vm.name}: a boot script was fetched`);
  const first = (step: string, sameBoot: boolean): BootEventRecord => {
    const e = events.find((x) => x.step === step && x.timeMs >= since - 1000 && (!sameBoot || x.bootId === bootId));
    assert.ok(e, `${vm.name}: ${step} recorded (have ${events.map((x) => x.step).join(' ')})`);
    assert.ok(Number.isFinite(e.timeMs), `${vm.name}: ${step} has a time`);
    return e;
  };
  const order = [first('dhcp-discover', false), first('dhcp-ack', false), first('script', true), first('kernel', true), first('initrd', true), first('nbd-connect', true), first('os-up', true)];
  for (let i = 1; i < order.length; i += 1) {
    assert.ok(order[i]!.timeMs >= order[i - 1]!.timeMs, `${vm.name}: ${order[i - 1]!.step} before ${order[i]!.step}`);
  }
  const ack = events.filter((e) => e.step === 'dhcp-ack').at(-1)!;
  const nbd = order[5]!;
  assert.equal(nbd.detail?.image, image);
  // The kernel's NBD connection comes from the address our DHCP gave iPXE (the initramfs reuses it).
  assert.equal(nbd.detail?.address, ack.detail?.address, `${vm.name}: NBD from the leased address`);
}

/** Characters of each log's end a failed step reports. */
const EVIDENCE_CHARS = 1500;

/**
 * Runs a step; when it fails, the ends of the logs that say why (the
 * guests' consoles, the server's log) go into the error's message and the
 * test's diagnostics, so a failure far away (CI) can be read from its report.
 */
export async function withEvidence<T>(t: TestContext, logs: () => readonly string[], body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (e) {
    const tails = logs().map((f) => `--- ${basename(f)} ends:\n${readLog(f).slice(-EVIDENCE_CHARS)}`);
    for (const tail of tails) t.diagnostic(tail.replace(/\n/g, ' | '));
    if (e instanceof Error) e.message += `\n${tails.join('\n')}`;
    throw e;
  }
}
