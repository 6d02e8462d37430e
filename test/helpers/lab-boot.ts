/**
 * Booting the Debian test image to its marker in a lab, with what the e2e
 * helpers (test/e2e/helpers/e2e.ts) leave fixed:
 *
 * - our whole server (NBD, HTTP, TFTP, DHCP; `demo.js --serve`, the product's
 *   composition root) started from any configuration: proxyDHCP, another
 *   UEFI binary;
 * - the site's DHCP server for proxyDHCP labs: dnsmasq handing out addresses
 *   only, in a namespace of its own joined to the lab bridge;
 * - IPv6 router advertisements on the lab bridge (dnsmasq RA-only, the same
 *   command line as src/boot/router-adverts.ts), so iPXE does not wait
 *   13-20 s for IPv6 when a test does not measure that wait;
 * - waits on the server's boot timeline and on the marker line.
 *
 * The marker: the image's diskless-up.service prints `DISKLESS-UP <source
 * of />` (findmnt) on the serial console once multi-user is reached, then
 * reports to the server (`os-up` in the timeline).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEMO_SERVER_READY } from '../../src/app/demo.js';
import { routerAdvertArgs } from '../../src/boot/router-adverts.js';
import type { BootEventRecord, Store } from '../../src/state/store.js';
import { LabError, waitForLog, type Lab, type LabChild } from './lab.js';
import { DNSMASQ_BINARY, dnsmasqArgs } from './lab-peers.js';

/** The serial line diskless-up.service prints; group 1 is the source of `/`. */
export const DISKLESS_UP_LINE = /DISKLESS-UP (\S+)/;
/** The root is the NBD disk or one of its partitions. */
export const NBD_ROOT_SOURCE = /^\/dev\/nbd0(p\d+)?$/;

export const LAB_BOOT_LIMITS = {
  serverReadyMs: 30_000,
  siteDhcpReadyMs: 10_000,
  routerAdvertsReadyMs: 10_000,
  pollMs: 250,
} as const;

/** The NBD port: Debian's initramfs hook takes `nbdroot=SERVER,EXPORT,nbd0` only on this one. */
export const LAB_NBD_PORT = 10809;
export const LAB_HTTP_PORT = 8080;

/** dist/src/app/demo.js, seen from dist/test/helpers. */
const SERVER_SCRIPT = fileURLToPath(new URL('../../src/app/demo.js', import.meta.url));

export interface LabServerConfigOptions {
  /** 'full': our DHCP hands out addresses (pool .100-.199); 'proxy': proxyDHCP beside the site's server. */
  dhcp: 'full' | 'proxy';
  uefiBinary?: 'ipxe.efi' | 'snponly.efi';
  /** Full mode: fixed addresses, MAC to IPv4 address of the lab subnet. */
  reservations?: Record<string, string>;
}

/** A configuration file's content for our server in a lab: every service on the lab's server address. */
export function labServerConfig(lab: Pick<Lab, 'serverAddress' | 'bridge' | 'subnet' | 'hostAddress'>, dataDir: string, o: LabServerConfigOptions): Record<string, unknown> {
  const iface = o.dhcp === 'full'
    ? { name: lab.bridge, mode: 'full', address: lab.serverAddress, subnet: lab.subnet, pool: { start: lab.hostAddress(100), end: lab.hostAddress(199) }, ...(o.reservations ? { reservations: o.reservations } : {}) }
    : { name: lab.bridge, mode: 'proxy', address: lab.serverAddress };
  return {
    dataDir,
    nbd: { host: lab.serverAddress, port: LAB_NBD_PORT },
    http: { host: lab.serverAddress, port: LAB_HTTP_PORT },
    tftp: { host: lab.serverAddress },
    dhcp: { interfaces: [iface] },
    boot: { unknownClients: 'ignore', ...(o.uefiBinary ? { uefiBinary: o.uefiBinary } : {}) },
  };
}

/**
 * Our whole server in the lab from a configuration (written to
 * `<lab.dir>/diskless.json`, read and validated as the product reads it).
 * Resolves once every service listens; its log is `<lab.dir>/<logName>`.
 */
export async function startServerInLab(lab: Lab, config: Record<string, unknown>, logName = 'server.log'): Promise<LabChild> {
  const file = join(lab.dir, 'diskless.json');
  writeFileSync(file, JSON.stringify(config, null, 2));
  // A log of its own per start (lab.spawn appends): an earlier start's ready line must not count.
  const child = lab.spawn(process.execPath, ['--enable-source-maps', SERVER_SCRIPT, '--serve', file], { logFile: join(lab.dir, logName) });
  await waitForLog(child.logFile, new RegExp(DEMO_SERVER_READY), { timeoutMs: LAB_BOOT_LIMITS.serverReadyMs, process: child });
  return child;
}

export interface SiteDhcp {
  child: LabChild;
  /** The site server's address on the lab subnet (.2). */
  address: string;
}

const SITE_NETNS_READY = 'site-netns-ready';

/**
 * dnsmasq as the site's DHCP server: addresses only (no boot file, no PXE
 * options), router advertisements on, at .2 in a namespace of its own
 * joined to the lab bridge by a veth pair. Its own namespace because two
 * DHCP servers in one namespace would share port 67 and, on one address, a
 * server identifier. The namespace is anonymous (unshare) and dies with
 * dnsmasq, which the lab tracks and stops. Needs `unshare` (util-linux).
 */
export async function startSiteDhcp(lab: Lab): Promise<SiteDhcp> {
  const address = lab.hostAddress(2);
  const address6 = lab.serverAddress6.replace(/::1$/, '::2');
  const peer = { bridge: 'vsite0', dir: lab.dir, hostAddress: (n: number) => lab.hostAddress(n) };
  const args = dnsmasqArgs(peer, { routerAdvertisements: true }).filter((a) => !a.startsWith('--dhcp-boot='));
  const setup = [
    // Printed once this shell runs, i.e. after unshare has made the new namespace: until then the
    // pid is still `ip netns exec` or unshare in the lab's namespace, and a veth end moved to it
    // would land in the lab's namespace instead.
    `echo ${SITE_NETNS_READY}`,
    // The veth end is moved in by the parent after that line: wait for it, bounded (10 s).
    'n=0; while ! ip link show vsite0 >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 100 ] && exit 3; sleep 0.1; done',
    'ip link set lo up',
    `ip addr add ${address}/${lab.prefixLength} dev vsite0`,
    `ip -6 addr add ${address6}/64 dev vsite0 nodad`,
    'ip link set vsite0 up',
    `exec ${DNSMASQ_BINARY} "$@"`,
  ].join('\n');
  const child = lab.spawn('unshare', ['--net', 'sh', '-c', setup, 'site-dhcp', ...args], { logFile: join(lab.dir, 'site-dnsmasq.log') });
  if (child.pid === undefined) throw new LabError('LAB_COMMAND_FAILED', 'could not start the site DHCP server');
  await waitForLog(child.logFile, new RegExp(SITE_NETNS_READY), { timeoutMs: LAB_BOOT_LIMITS.siteDhcpReadyMs, process: child });
  await lab.exec('ip', ['link', 'add', 'vsite', 'type', 'veth', 'peer', 'name', 'vsite0', 'netns', String(child.pid)]);
  await lab.exec('ip', ['link', 'set', 'vsite', 'master', lab.bridge]);
  await lab.exec('ip', ['link', 'set', 'vsite', 'up']);
  await waitForLog(child.logFile, /sockets bound exclusively/, { timeoutMs: LAB_BOOT_LIMITS.siteDhcpReadyMs, process: child });
  return { child, address };
}

/**
 * IPv6 router advertisements on the lab bridge (which has a ULA prefix):
 * dnsmasq in RA-only mode with the product's own arguments (no DHCPv4, no
 * DNS, router lifetime 0). A site router does this; it spares every iPXE
 * boot its 13-20 s wait for IPv6.
 */
export async function startRouterAdverts(lab: Lab): Promise<LabChild> {
  const child = lab.spawn(DNSMASQ_BINARY, routerAdvertArgs(lab.bridge), { logFile: join(lab.dir, 'router-adverts.log') });
  await waitForLog(child.logFile, /router advertisement on /, { timeoutMs: LAB_BOOT_LIMITS.routerAdvertsReadyMs, process: child });
  return child;
}

/** The boot id of the latest boot the server started for a MAC (its script), or null. */
export function latestBootId(events: readonly BootEventRecord[]): string | null {
  return events.filter((e) => e.step === 'script' && e.bootId !== null).at(-1)?.bootId ?? null;
}

/**
 * Waits until the server has recorded `step` for the MAC's latest boot;
 * resolves with its events. `sinceMs` (ms since the epoch, e.g. power-on)
 * leaves out the events of earlier boots of the same MAC.
 */
export async function untilRecorded(store: Store, mac: string, step: string, timeoutMs: number, sinceMs = 0): Promise<BootEventRecord[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const events = store.events.list({ mac }).filter((e) => e.timeMs >= sinceMs);
    const bootId = latestBootId(events);
    if (bootId && events.some((e) => e.step === step && e.bootId === bootId)) return events;
    if (Date.now() > deadline) throw new LabError('LAB_TIMEOUT', `${mac}: no ${step} recorded within ${timeoutMs} ms; events: ${events.map((e) => e.step).join(' ')}`);
    await new Promise((r) => setTimeout(r, LAB_BOOT_LIMITS.pollMs));
  }
}

/**
 * Seconds from power-on (`startedAt`, ms since the epoch) of the first event
 * of each step: the latest boot's own for per-boot steps (script onwards),
 * the first seen for the DHCP and TFTP steps that come before a boot id.
 * DHCP steps of iPXE (as opposed to the firmware's) are keyed `<step> (iPXE)`.
 */
export function serverTimeline(events: readonly BootEventRecord[], startedAt: number): Record<string, number> {
  const bootId = latestBootId(events);
  const out: Record<string, number> = {};
  for (const e of events) {
    if (e.bootId !== null && e.bootId !== bootId) continue;
    if (e.timeMs < startedAt - 1000) continue;
    const key = e.step.startsWith('dhcp-') && e.detail?.ipxe === true ? `${e.step} (iPXE)` : e.step;
    out[key] ??= Math.round(e.timeMs - startedAt) / 1000;
  }
  return out;
}
