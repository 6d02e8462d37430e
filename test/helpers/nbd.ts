/**
 * Test rig for the NBD server: an ExportResolver over a fixed set of
 * devices (MemoryDevice by default) that counts opens and releases, and a
 * started NbdServer on a random loopback port.
 */
import { DisklessError } from '../../src/lib/errors.js';
import { createLogger, silentLogger, type Logger } from '../../src/lib/log.js';
import type { ExportInfo, ExportResolver, OpenedExport, Peer } from '../../src/protocols/nbd/exports.js';
import { NbdServer, type NbdLimits } from '../../src/protocols/nbd/server.js';
import type { BlockDevice } from '../../src/storage/block-device.js';

export interface TestExport {
  device: BlockDevice;
  description?: string;
  /** Left out of NBD_OPT_LIST but still openable. */
  hidden?: boolean;
  /** Refused with NBD_EXPORT_FORBIDDEN. */
  forbidden?: boolean;
}

export class MapResolver implements ExportResolver {
  readonly exports: Map<string, TestExport>;
  opens = 0;
  releases = 0;
  /** Peers that opened an export, in order. */
  readonly peers: Peer[] = [];
  /** When set, list() throws it. */
  listError: Error | null = null;

  constructor(exports: Record<string, TestExport>) {
    this.exports = new Map(Object.entries(exports));
  }

  async list(_peer: Peer): Promise<ExportInfo[]> {
    if (this.listError) throw this.listError;
    return [...this.exports.entries()]
      .filter(([, e]) => !e.hidden)
      .map(([name, e]) => (e.description ? { name, description: e.description } : { name }));
  }

  async open(name: string, peer: Peer): Promise<OpenedExport> {
    const e = this.exports.get(name);
    if (!e) throw new DisklessError('NBD_EXPORT_UNKNOWN', `no export named "${name}"`);
    if (e.forbidden) throw new DisklessError('NBD_EXPORT_FORBIDDEN', `export "${name}" is not for ${peer.address}`);
    this.opens++;
    this.peers.push(peer);
    let released = false;
    return {
      name,
      ...(e.description ? { description: e.description } : {}),
      device: e.device,
      release: async () => {
        if (released) throw new Error(`export "${name}" released twice`);
        released = true;
        this.releases++;
      },
    };
  }

  /** Exports opened and not yet released. */
  get openCount(): number {
    return this.opens - this.releases;
  }
}

export interface StartedNbd {
  server: NbdServer;
  resolver: MapResolver;
  port: number;
  host: string;
  uri(exportName: string): string;
  close(): Promise<void>;
}

export interface StartOptions {
  limits?: Partial<NbdLimits>;
  logger?: Logger;
  host?: string;
}

/** The logger for tests: silent unless DISKLESS_TEST_LOG=debug|info|warn|error. */
export function testLogger(): Logger {
  const level = process.env.DISKLESS_TEST_LOG;
  if (level === 'debug' || level === 'info' || level === 'warn' || level === 'error') {
    return createLogger({ level, pretty: true, write: (l) => process.stderr.write(l + '\n') });
  }
  return silentLogger;
}

export async function startNbdServer(exports: Record<string, TestExport>, options: StartOptions = {}): Promise<StartedNbd> {
  const resolver = new MapResolver(exports);
  const server = new NbdServer({ resolver, logger: options.logger ?? testLogger(), ...(options.limits ? { limits: options.limits } : {}) });
  const host = options.host ?? '127.0.0.1';
  const address = await server.listen(0, host);
  return {
    server,
    resolver,
    port: address.port,
    host,
    uri: (name) => `nbd://${host}:${address.port}/${encodeURIComponent(name)}`,
    close: () => server.close(),
  };
}

/** Deterministic pseudo-random bytes (xorshift32), so failures reproduce. */
export function patternBytes(length: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  let x = (seed >>> 0) || 0x9e3779b9;
  let i = 0;
  for (; i + 4 <= length; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b.writeUInt32LE(x, i);
  }
  for (; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}
