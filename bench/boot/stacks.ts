/**
 * The two boot stacks the boot benchmark compares, each run in a fresh lab
 * (test/helpers/lab.ts: a network namespace with a bridge and a tap), booting
 * one QEMU client from power-on to the image's `DISKLESS-UP` line:
 *
 * - `diskless`: our server, the product's composition root (`demo.js
 *   --serve`: NBD, HTTP, TFTP and full DHCP over one catalogue), configured
 *   as the e2e tests configure it.
 * - `reference`: dnsmasq (DHCP and TFTP; iPXE is handed a static script
 *   URL), Python's http.server (the kernel, the initramfs and the script) and
 *   nbd-server with `copyonwrite = true` exporting the same image version
 *   file. The script is rendered by the same function as ours, and its kernel
 *   command line by the same function with the same inputs: only the export
 *   name and the boot path in the OS-up URL differ (the bench checks this on
 *   the console's "Command line:").
 *
 * Both stacks get the same client (MAC, host name, a reserved address
 * outside the pool, so `ip=` is the same too), the same subnet, the same
 * QEMU command line, and the same two DHCP shortcuts ours takes: no ping
 * before an offer and iPXE's option 175.176 = 1 (no proxyDHCP wait). IPv6
 * router advertisements are off in both unless asked for (--router-adverts):
 * then both labs run the same RA-only dnsmasq.
 *
 * nbd-server 3.24 is run as the field notes say it must be to be correct:
 * `sparse_cow = false`, `max_threads = 1`, as a daemon with a pid file (its
 * foreground mode serves one connection); its pid and per-connection
 * children are ended by pid.
 */
import { closeSync, mkdirSync, openSync, readFileSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { BOOT_SERVICE_DEFAULTS, chooseRoot, readVersionBoot } from '../../src/boot/service.js';
import { kernelCommandLine, NBD_DEFAULT_PORT } from '../../src/boot/kernel-cmdline.js';
import { renderBootScript } from '../../src/boot/ipxe-script.js';
import { Store, type ImageVersionRecord } from '../../src/state/store.js';
import { createLab, type Lab } from '../../test/helpers/lab.js';
import { DISKLESS_UP_LINE, LAB_HTTP_PORT, labServerConfig, serverTimeline, startRouterAdverts, startServerInLab, untilRecorded } from '../../test/helpers/lab-boot.js';
import { prepareBootRoot, startDnsmasq, startHttpServer } from '../../test/helpers/lab-peers.js';
import type { FirmwareKind } from '../../test/helpers/lab-qemu.js';
import { startShellVm, type ShellVm } from '../../test/e2e/helpers/e2e.js';
import { isAlive, ProcessRegistry, readProcStat, waitFor } from '../lib/proc.js';
import { consoleCommandLine, firstMatch, LogClock, milestoneTimes, phaseDurations, seconds, type Chunk } from './timeline.js';

export type Firmware = 'bios' | 'uefi';
export const FIRMWARES: readonly Firmware[] = ['bios', 'uefi'];
export const FIRMWARE_KIND: Record<Firmware, FirmwareKind> = { bios: 'bios-ipxe', uefi: 'uefi-ipxe' };

export type StackId = 'diskless' | 'reference';
export const STACKS: readonly StackId[] = ['diskless', 'reference'];

export const STACK_LIMITS = {
  /** Power-on to DISKLESS-UP; TCG takes 2-4 minutes, more on a loaded machine. */
  bootMs: 10 * 60_000,
  /** The marker to our server's os-up record (curl with retries). */
  reportMs: 30_000,
  nbdServerReadyMs: 10_000,
  /** Guest RAM: a Debian boot needs about this much under TCG (field notes). */
  memoryMiB: 1024,
} as const;

/** The reference export's name (nbd-server section); ours is a per-boot token. */
export const REFERENCE_EXPORT = 'debian12';
/** The client's fixed address: host .50, outside both pools. */
export const CLIENT_HOST = 50;

export interface BenchContext {
  /** Our catalogue: the image version and the client. */
  dataDir: string;
  version: ImageVersionRecord;
  mac: string;
  clientName: string;
  /** The lab subnet of every boot, so both stacks' command lines can be equal. */
  subnet: string;
  routerAdverts: boolean;
  keepLabs: boolean;
  say(line: string): void;
}

export interface BootSample {
  stack: StackId;
  firmware: Firmware;
  round: number;
  ok: boolean;
  error?: string;
  /** ISO time of power-on. */
  startedAt: string;
  /** 1-minute load average at power-on. */
  load: number;
  /** Power-on to DISKLESS-UP on the console, seconds. */
  totalS?: number;
  /** Serial milestones, seconds from power-on (timeline.ts SERIAL_MILESTONES). */
  serial: Record<string, number>;
  /** Seconds in each phase (timeline.ts PHASES). */
  phases: Record<string, number>;
  /**
   * The servers' side, seconds from power-on. Ours: the boot timeline the
   * server recorded. The reference: dnsmasq's and http.server's log lines as
   * first seen, and the NBD connection as the console shows it.
   */
  server: Record<string, number>;
  /** "Command line:" as the kernel printed it. */
  commandLine?: string;
  /** What findmnt said / is on. */
  rootSource?: string;
}

interface VmRun {
  vm: ShellVm;
  clock: LogClock;
  /** 1-minute load average at power-on. */
  load: number;
  rootSource?: string;
  error?: string;
}

/** Boots the client in the lab and waits for the marker; never throws for a failed boot. */
async function bootVm(lab: Lab, ctx: BenchContext, firmware: Firmware, clock: LogClock): Promise<VmRun> {
  const load = Math.round(loadavg()[0]! * 100) / 100;
  const vm = await startShellVm(lab, { firmware: FIRMWARE_KIND[firmware], mac: ctx.mac, memory: STACK_LIMITS.memoryMiB });
  clock.follow('serial', vm.serialLog);
  clock.start();
  try {
    const m = await vm.waitForSerial(DISKLESS_UP_LINE, STACK_LIMITS.bootMs);
    clock.poll();
    return { vm, clock, load, rootSource: m[1]! };
  } catch (e) {
    return { vm, clock, load, error: (e as Error).message.slice(0, 2000) };
  }
}

function baseSample(stack: StackId, firmware: Firmware, round: number, run: VmRun): BootSample {
  const startedAt = run.vm.startedAt;
  const serialChunks = run.clock.chunks('serial');
  const serial = milestoneTimes(serialChunks, startedAt);
  return {
    stack, firmware, round,
    ok: run.error === undefined && serial.marker !== undefined,
    ...(run.error ? { error: run.error } : {}),
    startedAt: new Date(startedAt).toISOString(),
    load: run.load,
    ...(serial.marker !== undefined ? { totalS: serial.marker } : {}),
    serial,
    phases: phaseDurations(serial),
    server: {},
    ...(consoleCommandLine(serialChunks) ? { commandLine: consoleCommandLine(serialChunks)! } : {}),
    ...(run.rootSource ? { rootSource: run.rootSource } : {}),
  };
}

async function closeLab(lab: Lab, ctx: BenchContext): Promise<void> {
  const report = await lab.close();
  if (ctx.keepLabs) ctx.say(`  lab kept: ${lab.dir}`);
  if (!report.namespaceRemoved) ctx.say(`  warning: namespace ${report.netns} was not removed`);
}

// ---------------------------------------------------------------- ours

export async function bootDiskless(ctx: BenchContext, firmware: Firmware, round: number): Promise<BootSample> {
  const lab = await createLab({ subnet: ctx.subnet, keepDir: ctx.keepLabs });
  const clock = new LogClock({});
  const store = Store.open(ctx.dataDir);
  try {
    if (ctx.routerAdverts) await startRouterAdverts(lab);
    await startServerInLab(lab, labServerConfig(lab, ctx.dataDir, { dhcp: 'full', reservations: { [ctx.mac]: lab.hostAddress(CLIENT_HOST) } }));
    const run = await bootVm(lab, ctx, firmware, clock);
    let events = store.events.list({ mac: ctx.mac }).filter((e) => e.timeMs >= run.vm.startedAt);
    if (!run.error) {
      try {
        events = await untilRecorded(store, ctx.mac, 'os-up', STACK_LIMITS.reportMs, run.vm.startedAt);
      } catch (e) {
        run.error = `no os-up report: ${(e as Error).message}`;
      }
    }
    clock.stop();
    await run.vm.stop();
    const sample = baseSample('diskless', firmware, round, run);
    // The iPXE ROMs are iPXE from the first packet: firmware and iPXE DHCP are one step here.
    for (const [k, v] of Object.entries(serverTimeline(events, run.vm.startedAt))) {
      const step = k.replace(/ \(iPXE\)$/, '');
      sample.server[step] = Math.min(sample.server[step] ?? v, v);
    }
    return sample;
  } finally {
    clock.stop();
    store.close();
    await closeLab(lab, ctx);
  }
}

// ---------------------------------------------------------------- the reference

/** The reference stack's kernel command line: ours, built by the same function from the same inputs, but for the export name and the OS-up URL. */
export function referenceCommandLine(ctx: Pick<BenchContext, 'version' | 'mac' | 'clientName'>, server: string): string {
  const vb = readVersionBoot(ctx.version.bootInfo);
  if (!vb.ok) throw new Error(`${ctx.version.image} version ${ctx.version.version} cannot boot: ${vb.reason}`);
  return kernelCommandLine({
    flavour: vb.boot.flavour,
    nbd: { server, port: NBD_DEFAULT_PORT, exportName: REFERENCE_EXPORT },
    root: chooseRoot(vb.boot, NBD_DEFAULT_PORT),
    network: BOOT_SERVICE_DEFAULTS.network,
    initrdName: BOOT_SERVICE_DEFAULTS.initrdName,
    consoles: [...BOOT_SERVICE_DEFAULTS.consoles],
    hostname: ctx.clientName,
    // Ours ends with diskless.up=<base>/up; the static server answers that POST with 501, after the marker.
    extra: [...vb.boot.kernelArgs, `diskless.up=http://${server}:${LAB_HTTP_PORT}/boot/${ctx.mac.replace(/:/g, '-')}/reference/up`],
  });
}

/** nbd-server's config: one copy-on-write export of the version file, diff files in the lab directory. */
export function nbdServerConfig(o: { listen: string; port: number; exportFile: string; cowDir: string }): string {
  return [
    '[generic]',
    `    listenaddr = ${o.listen}`,
    `    port = ${o.port}`,
    '    allowlist = false',
    '    max_threads = 1',
    `[${REFERENCE_EXPORT}]`,
    `    exportname = ${o.exportFile}`,
    '    copyonwrite = true',
    '    sparse_cow = false',
    `    cowdir = ${o.cowDir}`,
    '',
  ].join('\n');
}

/** True when a socket of the process's network namespace listens on the TCP port (read through the pid, so it works from outside the namespace). */
function listensInNamespace(pid: number, port: number): boolean {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  try {
    return readFileSync(`/proc/${pid}/net/tcp`, 'utf8').split('\n').slice(1).some((l) => {
      const c = l.trim().split(/\s+/);
      return c[1]?.endsWith(hex) === true && c[3] === '0A';
    });
  } catch {
    return false;
  }
}

async function startNbdServer(lab: Lab, registry: ProcessRegistry, exportFile: string): Promise<number> {
  const conf = join(lab.dir, 'nbd-server.conf');
  const pidFile = join(lab.dir, 'nbd-server.pid');
  const logFile = join(lab.dir, 'nbd-server.log');
  writeFileSync(conf, nbdServerConfig({ listen: lab.serverAddress, port: NBD_DEFAULT_PORT, exportFile, cowDir: lab.dir }));
  const fd = openSync(logFile, 'a');
  // It daemonizes: the launcher returns at once and the daemon lives on in the lab's namespace.
  const r = spawnSync('ip', ['netns', 'exec', lab.netns, 'nbd-server', '-C', conf, '-p', pidFile], { stdio: ['ignore', fd, fd], timeout: 10_000 });
  closeSync(fd);
  const havePid = await waitFor(() => existsSync(pidFile) && /^\d+\s*$/.test(readFileSync(pidFile, 'utf8')), 3000);
  if (!havePid) throw new Error(`nbd-server wrote no pid file (launcher status ${r.status}): ${readFileSync(logFile, 'utf8').slice(-500)}`);
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  if (readProcStat(pid)?.comm !== 'nbd-server') throw new Error(`pid ${pid} from nbd-server's pid file is not nbd-server`);
  registry.add(pid);
  const up = await waitFor(() => !isAlive(pid) || listensInNamespace(pid, NBD_DEFAULT_PORT), STACK_LIMITS.nbdServerReadyMs);
  if (!up || !isAlive(pid)) throw new Error(`nbd-server is not listening on ${lab.serverAddress}:${NBD_DEFAULT_PORT}: ${readFileSync(logFile, 'utf8').slice(-500)}`);
  return pid;
}

/** What the reference servers' logs show, seconds from power-on; the NBD connection from the console. */
export function referenceServerTimes(logs: { dnsmasq: readonly Chunk[]; http: readonly Chunk[]; serial: readonly Chunk[] }, startedAt: number): Record<string, number> {
  const out: Record<string, number> = {};
  const at = (key: string, chunks: readonly Chunk[], re: RegExp): void => {
    const hit = firstMatch(chunks, re);
    if (hit && hit.t >= startedAt - 1000) out[key] = seconds(hit.t - startedAt);
  };
  at('dhcp-discover', logs.dnsmasq, /DHCPDISCOVER\(/);
  at('dhcp-offer', logs.dnsmasq, /DHCPOFFER\(/);
  at('dhcp-ack', logs.dnsmasq, /DHCPACK\(/);
  at('script', logs.http, /"GET \/boot\.ipxe /);
  at('kernel', logs.http, /"GET \/vmlinuz /);
  at('initrd', logs.http, /"GET \/initrd\.img /);
  at('nbd-connect', logs.serial, /nbd0: detected capacity change/);
  at('os-up', logs.serial, /DISKLESS-UP \S+/);
  return out;
}

export async function bootReference(ctx: BenchContext, firmware: Firmware, round: number): Promise<BootSample> {
  const lab = await createLab({ subnet: ctx.subnet, keepDir: ctx.keepLabs });
  const registry = new ProcessRegistry();
  const clock = new LogClock({});
  try {
    if (ctx.routerAdverts) await startRouterAdverts(lab);
    const vb = readVersionBoot(ctx.version.bootInfo);
    if (!vb.ok) throw new Error(vb.reason);
    const server = lab.serverAddress;
    const url = (name: string): string => `http://${server}:${LAB_HTTP_PORT}/${name}`;
    const script = renderBootScript({
      clientLabel: `${ctx.clientName} (${ctx.mac})`,
      imageLabel: `${ctx.version.image} version ${ctx.version.version} (reference stack)`,
      kernelUrl: url('vmlinuz'),
      initrdUrl: url('initrd.img'),
      initrdName: BOOT_SERVICE_DEFAULTS.initrdName,
      commandLine: referenceCommandLine(ctx, server),
    });
    const root = prepareBootRoot(lab, { script });
    mkdirSync(root.httpRoot, { recursive: true });
    // The same files ours serves, so both read the same page cache.
    symlinkSync(join(ctx.dataDir, vb.boot.kernelFile), join(root.httpRoot, 'vmlinuz'));
    symlinkSync(join(ctx.dataDir, vb.boot.initrdFile), join(root.httpRoot, 'initrd.img'));
    const dnsmasq = await startDnsmasq(lab, {
      tftpRoot: root.tftpRoot,
      bootScriptUrl: url(root.scriptName),
      ipxeNoProxyDhcp: true,
      ping: false,
      // Ours names no router on a subnet without one; dnsmasq names itself unless told not to (an empty option 3).
      extraArgs: [`--dhcp-host=${ctx.mac},${lab.hostAddress(CLIENT_HOST)}`, '--dhcp-option=3'],
    });
    const http = await startHttpServer(lab, { root: root.httpRoot, port: LAB_HTTP_PORT });
    await startNbdServer(lab, registry, join(ctx.dataDir, ctx.version.path));
    clock.follow('dnsmasq', dnsmasq.logFile);
    clock.follow('http', http.child.logFile);
    const run = await bootVm(lab, ctx, firmware, clock);
    clock.stop();
    await run.vm.stop();
    const sample = baseSample('reference', firmware, round, run);
    sample.server = referenceServerTimes({ dnsmasq: clock.chunks('dnsmasq'), http: clock.chunks('http'), serial: clock.chunks('serial') }, run.vm.startedAt);
    return sample;
  } finally {
    clock.stop();
    await registry.stopAll();
    await closeLab(lab, ctx);
  }
}
