/**
 * Reference peers run inside a boot lab: dnsmasq as the DHCP and TFTP server
 * firmware is known to work with, and Python's http.server for iPXE's script.
 * The fixture capture (scripts/capture-fixtures) and the lab smoke test use
 * them; interop tests of the project's own servers can use them as the
 * known-good side.
 */
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LabError, waitForLog, type Lab, type LabChild } from './lab.js';

export const DNSMASQ_BINARY = '/usr/sbin/dnsmasq';
/** The system Python (a user's pyenv shim may not run as root in a namespace). */
export const PYTHON_BINARY = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/** iPXE builds from Debian's `ipxe` package, handed to PXE firmware over TFTP. */
export const IPXE_FILES = {
  'undionly.kpxe': '/usr/lib/ipxe/undionly.kpxe',
  'ipxe.efi': '/usr/lib/ipxe/ipxe.efi',
  'snponly.efi': '/usr/lib/ipxe/snponly.efi',
} as const;
export type IpxeFile = keyof typeof IPXE_FILES;

export const PEER_DEFAULTS = {
  httpPort: 8080,
  rangeStart: 100,
  rangeEnd: 199,
  readyTimeoutMs: 10_000,
  scriptName: 'boot.ipxe',
} as const;

export interface BootRoot {
  tftpRoot: string;
  httpRoot: string;
  /** Printed by the boot script; wait for it on the serial console. */
  marker: string;
  scriptName: string;
}

/**
 * A TFTP root with the iPXE binaries and an HTTP root with a boot script
 * that prints a marker (with iPXE's platform and MAC, so a log shows which
 * client and which iPXE build ran it) and exits.
 */
export function prepareBootRoot(lab: Lab, options: { marker?: string; script?: string } = {}): BootRoot {
  const tftpRoot = join(lab.dir, 'tftp');
  const httpRoot = join(lab.dir, 'http');
  mkdirSync(tftpRoot, { recursive: true });
  mkdirSync(httpRoot, { recursive: true });
  for (const [name, path] of Object.entries(IPXE_FILES)) {
    if (!existsSync(path)) throw new LabError('LAB_MISSING_FILE', `${path} is missing (Debian package ipxe)`);
    copyFileSync(path, join(tftpRoot, name));
  }
  const marker = options.marker ?? `DL-LAB-MARKER-${lab.netns}`;
  const script = options.script ?? `#!ipxe\necho ${marker} platform=\${platform} mac=\${net0/mac} ip=\${net0/ip}\nexit\n`;
  writeFileSync(join(httpRoot, PEER_DEFAULTS.scriptName), script);
  return { tftpRoot, httpRoot, marker, scriptName: PEER_DEFAULTS.scriptName };
}

export interface DnsmasqOptions {
  /** Enables TFTP from this directory. */
  tftpRoot?: string;
  /** Given to iPXE (user class "iPXE", RFC 3004 option 77) as its boot file. */
  bootScriptUrl?: string;
  /** Boot file for BIOS PXE firmware (option 93 = 0). */
  biosBootFile?: string;
  /** Boot file for x64 UEFI PXE firmware (option 93 = 7 or 9). */
  efiBootFile?: string;
  rangeStart?: number;
  rangeEnd?: number;
  /**
   * dnsmasq pings an address before offering it and waits up to 3 s for an
   * answer; off by default since the lab subnet holds nobody else.
   */
  ping?: boolean;
  /** Sends iPXE option 175.176 = 1 so it does not wait 3 s for a proxyDHCP offer. */
  ipxeNoProxyDhcp?: boolean;
  /** Sends IPv6 router advertisements, so iPXE does not wait ~13 s for IPv6 to configure. */
  routerAdvertisements?: boolean;
  extraArgs?: readonly string[];
}

/** The dnsmasq command line for a lab (without the binary). Pure. */
export function dnsmasqArgs(lab: Pick<Lab, 'bridge' | 'dir' | 'hostAddress'>, o: DnsmasqOptions = {}): string[] {
  const args = [
    '--no-daemon', // stays in the foreground, writes no pid file, keeps root (reads the TFTP root)
    '--conf-file=/dev/null',
    '--log-facility=-',
    '--log-dhcp',
    '--port=0', // no DNS
    `--interface=${lab.bridge}`,
    '--bind-interfaces',
    '--dhcp-authoritative',
    `--dhcp-range=${lab.hostAddress(o.rangeStart ?? PEER_DEFAULTS.rangeStart)},${lab.hostAddress(o.rangeEnd ?? PEER_DEFAULTS.rangeEnd)},255.255.255.0,1h`,
    `--dhcp-leasefile=${join(lab.dir, 'dnsmasq.leases')}`,
    // RFC 4578 section 2.1: 7 is x64 UEFI; some firmware sends 9 for the same.
    '--dhcp-match=set:efi64,option:client-arch,7',
    '--dhcp-match=set:efi64,option:client-arch,9',
    '--dhcp-userclass=set:ipxe,iPXE',
  ];
  if (!(o.ping ?? false)) args.push('--no-ping');
  if (o.tftpRoot) args.push('--enable-tftp', `--tftp-root=${o.tftpRoot}`);
  args.push(`--dhcp-boot=tag:!ipxe,tag:!efi64,${o.biosBootFile ?? 'undionly.kpxe'}`);
  args.push(`--dhcp-boot=tag:!ipxe,tag:efi64,${o.efiBootFile ?? 'snponly.efi'}`);
  if (o.bootScriptUrl) args.push(`--dhcp-boot=tag:ipxe,${o.bootScriptUrl}`);
  if (o.ipxeNoProxyDhcp) args.push('--dhcp-option=tag:ipxe,encap:175,176,1b');
  if (o.routerAdvertisements) args.push('--enable-ra', `--dhcp-range=::,constructor:${lab.bridge},ra-only`);
  args.push(...(o.extraArgs ?? []));
  return args;
}

/** Starts dnsmasq in the lab and waits until its DHCP (and TFTP) sockets are up. */
export async function startDnsmasq(lab: Lab, options: DnsmasqOptions = {}): Promise<LabChild> {
  if (!existsSync(DNSMASQ_BINARY)) throw new LabError('LAB_MISSING_FILE', `${DNSMASQ_BINARY} is missing (Debian package dnsmasq-base)`);
  const child = lab.spawn(DNSMASQ_BINARY, dnsmasqArgs(lab, options), { logFile: join(lab.dir, 'dnsmasq.log') });
  const ready = options.tftpRoot ? /TFTP root is/ : /sockets bound exclusively/;
  await waitForLog(child.logFile, ready, { timeoutMs: PEER_DEFAULTS.readyTimeoutMs, process: child });
  return child;
}

export interface HttpPeer {
  child: LabChild;
  port: number;
  /** `http://<server address>:<port>/<path>`. */
  url(path: string): string;
}

/** Python's http.server on the lab's server address, serving `root`. Its access log is the child's log file. */
export async function startHttpServer(lab: Lab, options: { root: string; port?: number }): Promise<HttpPeer> {
  const port = options.port ?? PEER_DEFAULTS.httpPort;
  const child = lab.spawn(
    PYTHON_BINARY,
    ['-u', '-m', 'http.server', String(port), '--bind', lab.serverAddress, '--directory', options.root],
    { logFile: join(lab.dir, 'http.log') },
  );
  await waitForLog(child.logFile, /Serving HTTP on/, { timeoutMs: PEER_DEFAULTS.readyTimeoutMs, process: child });
  return { child, port, url: (path) => `http://${lab.serverAddress}:${port}/${path.replace(/^\//, '')}` };
}
