/**
 * Runs the boot services (startBootServices: DHCP, TFTP, HTTP) as their own
 * process, for lab tests that start it inside a lab namespace:
 *
 *   lab.spawn(process.execPath, [BOOT_SERVER_SCRIPT, '--config', FILE, '--nbd', HOST:PORT, ['--router-adverts', IF]])
 *
 * FILE is a configuration file as the product reads it (validated the same
 * way); its dataDir holds the catalogue the test prepared. The process logs
 * JSON lines on stdout, prints `BOOT-SERVER-READY {...}` once every service
 * listens, and on SIGTERM or SIGINT stops them and exits 0. The NBD server
 * itself is not started: its address only goes into kernel command lines.
 */
import { fileURLToPath } from 'node:url';
import { Catalogue } from '../../src/app/catalogue.js';
import { startBootServices } from '../../src/app/boot-services.js';
import { loadConfig } from '../../src/app/config.js';
import { createLogger, type Level } from '../../src/lib/log.js';

export const BOOT_SERVER_SCRIPT = fileURLToPath(import.meta.url);
export const BOOT_SERVER_READY = 'BOOT-SERVER-READY';

function argValue(args: string[], name: string): string {
  const i = args.indexOf(name);
  const v = i >= 0 ? args[i + 1] : undefined;
  if (v === undefined) throw new Error(`usage: boot-server --config FILE --nbd HOST:PORT [--router-adverts IF] (missing ${name})`);
  return v;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const config = loadConfig(argValue(args, '--config'));
  const nbd = /^(.+):(\d+)$/.exec(argValue(args, '--nbd'));
  if (!nbd) throw new Error('--nbd must be HOST:PORT');
  const logger = createLogger({ level: (process.env.DISKLESS_LOG_LEVEL as Level | undefined) ?? 'debug', pretty: false });
  const catalogue = Catalogue.open(config.dataDir, { logger: logger.child({ component: 'catalogue' }) });
  const ra = args.includes('--router-adverts') ? [argValue(args, '--router-adverts')] : [];
  const services = await startBootServices({ config, catalogue, logger, nbd: { host: nbd[1]!, port: Number(nbd[2]) }, routerAdvertisements: ra });
  process.stdout.write(`${BOOT_SERVER_READY} ${JSON.stringify({ http: services.http, tftp: services.tftp, pid: process.pid })}\n`);
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    void services.close().then(
      () => {
        catalogue.close();
        process.exit(0);
      },
      (err: unknown) => {
        logger.error('boot services did not stop cleanly', { err });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (process.argv[1] === BOOT_SERVER_SCRIPT) {
  main().catch((err: unknown) => {
    process.stderr.write(`boot-server: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
