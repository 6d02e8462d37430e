/**
 * The boot services started from the frozen configuration: the HTTP server
 * (iPXE scripts, kernels, initramfs, iPXE binaries for UEFI HTTP boot, and
 * whatever routes the caller adds), the TFTP server (iPXE binaries for PXE
 * firmware) and the DHCP server (full or proxy per interface), with the
 * boot timeline recorded into the catalogue.
 *
 *   const boot = await startBootServices({ config, catalogue, logger, nbd: { host, port } });
 *   ...
 *   await boot.close();
 *
 * Start order is HTTP, TFTP, router advertisements (if asked for), DHCP: nothing tells a client where to go
 * before what it will fetch is being served, and the DHCP policy needs the
 * HTTP port actually bound (0 in tests). close() stops them in reverse and
 * writes the last queued boot events.
 */
import { existsSync, realpathSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { HttpServer, type HttpServerOptions } from '../api/http-server.js';
import { CatalogueBootPolicy, IPXE_BINARIES, SERVER_PLACEHOLDER } from '../boot/dhcp-policy.js';
import { BootError } from '../boot/errors.js';
import { BootEventRecorder } from '../boot/events.js';
import { StoreLeaseStore } from '../boot/lease-store.js';
import { RouterAdvertiser } from '../boot/router-adverts.js';
import { BOOT_SERVICE_DEFAULTS, CatalogueBootService } from '../boot/service.js';
import { isDisklessError } from '../lib/errors.js';
import { silentLogger, type Logger } from '../lib/log.js';
import { DhcpServer, type DhcpInterfaceOptions, type DhcpSubnetOptions } from '../protocols/dhcp/server.js';
import { FolderFileProvider } from '../protocols/tftp/file-provider.js';
import type { SocketAddress } from '../protocols/tftp/socket.js';
import { TftpServer } from '../protocols/tftp/server.js';
import type { Catalogue } from './catalogue.js';
import { resolveIpxeDir, type DisklessConfig } from './config.js';

/**
 * Where an ARM64 UEFI iPXE may sit in the iPXE folder or the TFTP root
 * (iPXE's own build directory name, `bin-arm64-efi`, without the prefix).
 * Debian's x86 `ipxe` package has none; the first that exists is handed to
 * arch 11 firmware.
 */
export const ARM64_IPXE_CANDIDATES = ['arm64-efi/snponly.efi', 'arm64-efi/ipxe.efi'] as const;

export interface BootServicesOptions {
  config: DisklessConfig;
  /** The catalogue: clients, versions, boots (newBoot), events, leases and the data directory. */
  catalogue: Catalogue;
  logger?: Logger;
  /** Where clients reach the NBD server; a wildcard host means the address a client reached HTTP by. */
  nbd: { host: string; port: number };
  /** More HTTP routes (kit, REST API, dashboard), registered after the boot routes. */
  httpExtensions?: HttpServerOptions['extensions'];
  /**
   * Interfaces to send IPv6 router advertisements on (dnsmasq in RA-only
   * mode, see src/boot/router-adverts.ts), so iPXE does not wait for IPv6,
   * beside the DHCP interfaces that `boot.routerAdvertisements: 'on'` adds.
   * Each needs an IPv6 prefix.
   */
  routerAdvertisements?: readonly string[];
}

export interface BootServices {
  readonly http: AddressInfo;
  /** null when `tftp.enabled` is false. */
  readonly tftp: SocketAddress | null;
  /** The TFTP server itself (its statistics feed /metrics); null when off. */
  readonly tftpServer: TftpServer | null;
  /** null when no DHCP interface is configured. */
  readonly dhcp: DhcpServer | null;
  readonly service: CatalogueBootService;
  readonly events: BootEventRecorder;
  /** Stops DHCP, TFTP and HTTP (in that order) and writes the queued boot events. Idempotent. */
  close(): Promise<void>;
}

const isWildcard = (host: string): boolean => host === '0.0.0.0' || host === '::';

/** The first IPv4 address of an interface in this network namespace. */
function interfaceAddress(name: string): string | undefined {
  return networkInterfaces()[name]?.find((a) => a.family === 'IPv4' && !a.internal)?.address
    ?? networkInterfaces()[name]?.find((a) => a.family === 'IPv4')?.address;
}

/** The DHCP server's interfaces and subnets from the configuration. */
export function dhcpSettings(config: DisklessConfig): { interfaces: DhcpInterfaceOptions[]; subnets: DhcpSubnetOptions[] } {
  const interfaces: DhcpInterfaceOptions[] = [];
  const subnets: DhcpSubnetOptions[] = [];
  for (const i of config.dhcp.interfaces) {
    const address = i.address ?? interfaceAddress(i.name);
    if (!address) {
      throw new BootError('BOOT_INTERFACE_UNUSABLE', `DHCP interface ${i.name} does not exist here or has no IPv4 address; set dhcp.interfaces[].address or fix the interface`);
    }
    interfaces.push({ name: i.name, address, mode: i.mode });
    if (i.mode !== 'full') continue;
    subnets.push({
      subnet: i.subnet!,
      ranges: i.pool ? [{ start: i.pool.start, end: i.pool.end }] : [],
      routers: i.router ? [i.router] : [],
      dnsServers: [...i.dns],
      ...(i.domain ? { domainName: i.domain } : {}),
      leaseSeconds: i.leaseSeconds,
      ...(i.renewalSeconds !== undefined ? { renewalSeconds: i.renewalSeconds } : {}),
      ...(i.rebindingSeconds !== undefined ? { rebindingSeconds: i.rebindingSeconds } : {}),
      reservations: Object.entries(i.reservations).map(([mac, address]) => ({ mac, address })),
      authoritative: i.authoritative,
    });
  }
  return { interfaces, subnets };
}

/** The iPXE folder, or null when there is none and TFTP can do without it (a TFTP root, or no TFTP). */
function findIpxeDir(config: DisklessConfig, log: Logger): string | null {
  try {
    return resolveIpxeDir(config);
  } catch (err) {
    if (!isDisklessError(err, 'APP_IPXE_NOT_FOUND') || (config.tftp.enabled && config.tftp.root === undefined)) throw err;
    log.warn('no iPXE binaries found; firmware must find iPXE in the TFTP root or elsewhere', { err });
    return null;
  }
}

/**
 * TFTP serves the iPXE binaries by their plain names, then the optional TFTP
 * root. Mapped paths are resolved here, once: Debian's `ipxe` package makes
 * some of them symlinks (`/usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi`), and the
 * TFTP provider opens a mapped path with O_NOFOLLOW, refusing a symlink.
 */
export function tftpFiles(ipxeDir: string | null, root: string | undefined, arm64: string | undefined): FolderFileProvider {
  const files: Record<string, string> = {};
  const names: string[] = [...Object.values(IPXE_BINARIES), ...(arm64 ? [arm64] : [])];
  if (ipxeDir) {
    for (const name of names) {
      try {
        files[name] = realpathSync(join(ipxeDir, name));
      } catch {
        // Not installed: the name falls through to the TFTP root, if any.
      }
    }
  }
  return new FolderFileProvider({ ...(root !== undefined ? { root } : {}), files });
}

export async function startBootServices(options: BootServicesOptions): Promise<BootServices> {
  const { config, catalogue } = options;
  const logger = options.logger ?? silentLogger;
  const log = logger.child({ component: 'boot-services' });
  const store = catalogue.store;
  const ipxeDir = findIpxeDir(config, log);
  const arm64 = ARM64_IPXE_CANDIDATES.find((f) => (ipxeDir && existsSync(join(ipxeDir, f))) || (config.tftp.root && existsSync(join(config.tftp.root, f))));
  const dhcp = config.dhcp.interfaces.length > 0 ? dhcpSettings(config) : null;

  const events = new BootEventRecorder({ store, logger });
  const service = new CatalogueBootService({
    store,
    dataDir: catalogue.dir.root,
    newBoot: (mac, o) => catalogue.newBoot(mac, o),
    events,
    nbd: options.nbd,
    unknownClients: config.boot.unknownClients,
    ...(config.boot.defaultImage ? { defaultImage: config.boot.defaultImage } : {}),
    extraKernelArgs: config.boot.extraKernelArgs.split(/\s+/).filter(Boolean),
    ipxeDir,
    firmwareNames: [...BOOT_SERVICE_DEFAULTS.firmwareNames, ...(arm64 && ipxeDir ? [arm64] : [])],
    logger,
  });

  const closers: Array<{ name: string; close: () => Promise<void> }> = [];
  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      for (const c of closers.reverse()) {
        try {
          await c.close();
        } catch (err) {
          log.error('boot service did not stop cleanly', { service: c.name, err });
        }
      }
      await events.close();
    })();
    return closing;
  };

  try {
    const http = new HttpServer({
      boot: service,
      logger,
      ...(config.http.publicUrl ? { publicUrl: config.http.publicUrl } : {}),
      ...(options.httpExtensions ? { extensions: options.httpExtensions } : {}),
    });
    closers.push({ name: 'http', close: () => http.close() });
    const httpAddress = await http.listen(config.http.port, config.http.host);

    let tftpAddress: SocketAddress | null = null;
    let tftpServer: TftpServer | null = null;
    if (config.tftp.enabled) {
      const tftp = new TftpServer({ files: tftpFiles(ipxeDir, config.tftp.root, arm64), logger });
      events.attachTftp(tftp);
      closers.push({ name: 'tftp', close: () => tftp.close() });
      tftpAddress = await tftp.listen(config.tftp.port, config.tftp.host);
      tftpServer = tftp;
    }

    const advertised = [...new Set([
      ...(config.boot.routerAdvertisements === 'on' ? config.dhcp.interfaces.map((i) => i.name) : []),
      ...(options.routerAdvertisements ?? []),
    ])];
    for (const name of advertised) {
      const ra = new RouterAdvertiser({ interface: name, logger });
      closers.push({ name: `router-adverts:${name}`, close: () => ra.close() });
      await ra.start();
    }

    let dhcpServer: DhcpServer | null = null;
    if (dhcp) {
      const httpHost = isWildcard(config.http.host) ? SERVER_PLACEHOLDER : isIP(config.http.host) === 6 ? `[${config.http.host}]` : config.http.host;
      const policy = new CatalogueBootPolicy({
        store,
        events,
        httpBase: config.http.publicUrl ?? `http://${httpHost}:${httpAddress.port}`,
        unknownClients: config.boot.unknownClients,
        uefiBinary: config.boot.uefiBinary,
        ...(arm64 ? { efiArm64File: arm64 } : {}),
        tftp: config.tftp.enabled,
        ...(config.tftp.enabled && !isWildcard(config.tftp.host) && isIP(config.tftp.host) === 4 ? { tftpServer: config.tftp.host } : {}),
      });
      const server = new DhcpServer({ interfaces: dhcp.interfaces, subnets: dhcp.subnets, policy, leaseStore: new StoreLeaseStore(store), logger });
      events.attachDhcp(server);
      closers.push({ name: 'dhcp', close: () => server.close() });
      await server.listen();
      dhcpServer = server;
    }

    log.info('boot services started', {
      http: `${httpAddress.address}:${httpAddress.port}`,
      tftp: tftpAddress ? `${tftpAddress.address}:${tftpAddress.port}` : 'off',
      dhcp: dhcp ? dhcp.interfaces.map((i) => `${i.name}/${i.mode}/${i.address}`) : 'off',
      ipxeDir,
      unknownClients: config.boot.unknownClients,
      routerAdvertisements: advertised,
    });
    return { http: httpAddress, tftp: tftpAddress, tftpServer, dhcp: dhcpServer, service, events, close };
  } catch (err) {
    await close();
    throw err;
  }
}
