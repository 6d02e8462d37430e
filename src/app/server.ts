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
import { dashboard } from '../api/dashboard.js';
import type { HttpServerOptions } from '../api/http-server.js';
import { kitRoutes } from '../api/kit-routes.js';
import { restApi } from '../api/rest/index.js';
import { loadOrCreateApiToken } from '../api/rest/token.js';
import { HttpMetrics, httpMetricsHook, metricsRoutes } from '../metrics/http.js';
import { IoRates } from '../metrics/io-rates.js';
import { TimedExportResolver } from '../metrics/nbd-latency.js';
import { collectServerMetrics } from '../metrics/server-metrics.js';
import { NbdServer } from '../protocols/nbd/server.js';
import { requireImageName } from '../state/store.js';
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
  /** Read and write rates per export, sampled from the NBD server's statistics. */
  readonly ioRates: IoRates;
  /** The bearer token of the REST API and of disk capture (`<dataDir>/api-token`). */
  readonly apiToken: string;
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
  // Device calls are timed for the latency histogram of /metrics.
  const timed = new TimedExportResolver(resolver);
  const nbd = new NbdServer({ resolver: timed, logger: log, limits: config.nbd.limits });
  const ioRates = new IoRates(() => nbd.stats(), { intervalMs: 1000 });
  const httpMetrics = new HttpMetrics();
  let apiToken: string;
  try {
    apiToken = loadOrCreateApiToken(catalogue.dir.root);
  } catch (err) {
    ioRates.close();
    catalogue.close();
    throw err;
  }
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
        httpExtensions: [
          httpMetricsHook(httpMetrics),
          metricsRoutes({
            collect: () => collectServerMetrics({
              nbd, nbdLatency: timed.histogram, tftp: () => boot?.tftpServer, dhcp: () => boot?.dhcp, http: httpMetrics, catalogue, process: true,
            }),
          }),
          restApi({
            catalogue, dataDir: catalogue.dir.root, token: apiToken, logger: log,
            status: () => ({
              nbd: nbdAddress ? { port: nbdAddress.port, connections: nbd.connectionCount } : null,
              http: boot ? { port: boot.http.port } : null,
              tftp: boot?.tftp ? { port: boot.tftp.port } : null,
              dhcp: boot?.dhcp ? { interfaces: config.dhcp.interfaces.map((i) => ({ name: i.name, mode: i.mode })) } : null,
            }),
            ioRates: (exportName) => {
              const totals = nbd.stats().get(exportName);
              if (!totals) return null;
              const rate = ioRates.forExport(exportName);
              return {
                readBps: rate?.readBytesPerSecond ?? 0, writeBps: rate?.writeBytesPerSecond ?? 0,
                readBytes: totals.bytesRead, writeBytes: totals.bytesWritten,
              };
            },
          }),
          dashboard({ logger: log }),
          kitRoutes({
            dataDir: catalogue.dir.root,
            captureToken: apiToken,
            logger: log,
            ...(config.http.publicUrl ? { publicUrl: config.http.publicUrl } : {}),
            // A verified disk becomes a version like any import: inspected, boot files extracted, published.
            publish: (rawPath, disk) => catalogue.importVersion(requireImageName(disk.name.toLowerCase()), rawPath, {
              move: true, extraInfo: { origin: 'capture', captureName: disk.name, uploadId: disk.uploadId },
            }),
          }),
          ...(options.httpExtensions ?? []),
        ],
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
    ioRates.close();
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
    ioRates,
    apiToken,
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
