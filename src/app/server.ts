/**
 * The composition root: startServer() opens the catalogue and starts every
 * service over it; close() stops them in reverse order.
 *
 * A service is a name, a start() that resolves once it serves (returning
 * what to log, e.g. its address), and a close(). Adding one (HTTP, TFTP,
 * DHCP) is a few lines in services(): build it from the configuration and
 * the shared pieces (catalogue, export resolver, logger), push it.
 */
import type { AddressInfo } from 'node:net';
import { createLogger, type Logger } from '../lib/log.js';
import type { HttpServerOptions } from '../api/http-server.js';
import { NbdServer } from '../protocols/nbd/server.js';
import { startBootServices, type BootServices } from './boot-services.js';
import { Catalogue } from './catalogue.js';
import type { DisklessConfig } from './config.js';
import { CatalogueExportResolver } from './export-resolver.js';

export interface Service {
  readonly name: string;
  start(): Promise<Record<string, unknown> | void>;
  close(): Promise<void>;
}

export interface ServerHandle {
  readonly config: DisklessConfig;
  readonly catalogue: Catalogue;
  readonly resolver: CatalogueExportResolver;
  readonly nbd: NbdServer;
  /** Where the NBD server listens (known once startServer() resolved). */
  readonly nbdAddress: AddressInfo;
  /** DHCP, TFTP and HTTP (known once startServer() resolved). */
  readonly boot: BootServices;
  /** Stops every service, closes the overlays and the catalogue. Idempotent. */
  close(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  /** Extra HTTP routes (capture, REST API) registered beside the boot routes. */
  httpExtensions?: HttpServerOptions['extensions'];
}

export async function startServer(config: DisklessConfig, options: StartOptions = {}): Promise<ServerHandle> {
  const log = options.logger ?? createLogger();
  const catalogue = Catalogue.open(config.dataDir, { logger: log.child({ component: 'catalogue' }) });
  const resolver = new CatalogueExportResolver({
    catalogue,
    logger: log,
    graceMs: config.nbd.overlayGraceMs,
    bindClientAddress: config.nbd.bindClientAddress,
    readOnlyFrom: config.nbd.readOnlyExportsFrom,
  });
  const nbd = new NbdServer({ resolver, logger: log, limits: config.nbd.limits });
  let nbdAddress: AddressInfo | null = null;

  const services: Service[] = [
    {
      name: 'nbd',
      start: async () => {
        nbdAddress = await nbd.listen(config.nbd.port, config.nbd.host);
        return { address: nbdAddress.address, port: nbdAddress.port };
      },
      // The resolver closes after the server, which releases every export first.
      close: async () => {
        await nbd.close();
        await resolver.close();
      },
    },
  ];

  // DHCP, TFTP and HTTP: after NBD, whose address the boot scripts name.
  let boot: BootServices | null = null;
  services.push({
    name: 'boot',
    start: async () => {
      boot = await startBootServices({
        config,
        catalogue,
        logger: log,
        nbd: { host: config.nbd.host, port: nbdAddress!.port },
        httpExtensions: options.httpExtensions,
      });
      return { http: boot.http.port, tftp: boot.tftp?.port ?? null, dhcp: boot.dhcp !== null };
    },
    close: async () => {
      await boot?.close();
    },
  });

  const started: Service[] = [];
  const stopAll = async (): Promise<void> => {
    for (const s of started.reverse()) {
      try {
        await s.close();
        log.info('service stopped', { service: s.name });
      } catch (err) {
        log.error('service did not stop cleanly', { service: s.name, err });
      }
    }
    started.length = 0;
    await resolver.close();
    catalogue.close();
  };

  try {
    const swept = await catalogue.sweepOverlays();
    if (swept.busy.length > 0) log.warn('overlays still open in another process', { overlays: swept.busy });
    for (const s of services) {
      const info = await s.start();
      started.push(s);
      log.info('service started', { service: s.name, ...(info ?? {}) });
    }
  } catch (err) {
    await stopAll();
    throw err;
  }
  log.info('diskless started', { dataDir: catalogue.dir.root });

  let closing: Promise<void> | null = null;
  return {
    config,
    catalogue,
    resolver,
    nbd,
    nbdAddress: nbdAddress!,
    boot: boot!,
    close: () => {
      closing ??= (async () => {
        log.info('diskless stopping');
        await stopAll();
        log.info('diskless stopped');
      })();
      return closing;
    },
  };
}
