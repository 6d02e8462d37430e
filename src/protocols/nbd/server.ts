/**
 * The NBD server: accepts TCP connections and runs one NbdSession on each
 * (fixed newstyle handshake, then transmission on the export the client
 * chose, opened through the app's ExportResolver). Sessions share nothing
 * but the per-export counters; a client that breaks the protocol loses its
 * own connection and nothing else.
 *
 *   const server = new NbdServer({ resolver, logger, limits: { maxConnections: 200 } });
 *   const address = await server.listen(10809, '0.0.0.0');
 *   ...
 *   await server.close(); // stops accepting, finishes requests, releases exports
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { silentLogger, type Logger } from '../../lib/log.js';
import { BufferPool } from './buffer-pool.js';
import { NbdError } from './errors.js';
import type { ExportResolver, Peer } from './exports.js';
import { resolveLimits, type NbdLimits } from './limits.js';
import { NbdSession, RECEIVE_BUFFER_SIZE, newExportStats, type NbdExportStats } from './session.js';

export { DEFAULT_LIMITS, type NbdLimits } from './limits.js';
export type { NbdExportStats } from './session.js';

export interface NbdServerOptions {
  resolver: ExportResolver;
  logger?: Logger;
  /** Any limit left out takes its value from DEFAULT_LIMITS. */
  limits?: Partial<NbdLimits>;
}

export class NbdServer {
  readonly limits: Readonly<NbdLimits>;
  private readonly resolver: ExportResolver;
  private readonly log: Logger;
  private readonly sessions = new Set<NbdSession>();
  private readonly exportStats = new Map<string, NbdExportStats>();
  private server: Server | null = null;
  private closing: Promise<void> | null = null;
  private readonly buffers: BufferPool;
  /** What every session's socket reads go into (session.ts). */
  private readonly receiveBuffer = Buffer.allocUnsafeSlow(RECEIVE_BUFFER_SIZE);

  constructor(options: NbdServerOptions) {
    this.resolver = options.resolver;
    this.limits = resolveLimits(options.limits);
    this.log = (options.logger ?? silentLogger).child({ protocol: 'nbd' });
    this.buffers = new BufferPool(this.limits.bufferPoolBytes, Math.min(this.limits.maxPayload, 4 * 1024 * 1024));
  }

  /** Listens on `port` (0 for any free one) and resolves with the bound address. */
  listen(port: number, host?: string): Promise<AddressInfo> {
    if (this.closing) return Promise.reject(new NbdError('NBD_SERVER_CLOSED', 'the NBD server was closed'));
    if (this.server) return Promise.reject(new NbdError('NBD_LISTEN_FAILED', 'the NBD server is already listening'));
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
    server.on('connection', (socket: Socket) => this.onSocket(socket));
    this.server = server;
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => {
        this.server = null;
        reject(new NbdError('NBD_LISTEN_FAILED', `cannot listen on ${host ?? '*'}:${port}: ${err.message}`, undefined, { cause: err }));
      };
      server.once('error', onError);
      server.listen(port, host, () => {
        server.off('error', onError);
        server.on('error', (err) => this.log.error('nbd listener error', { err }));
        const address = server.address() as AddressInfo;
        this.log.info('nbd server listening', { address: address.address, port: address.port });
        resolve(address);
      });
    });
  }

  /** Connections open now, in handshake or transmission. */
  get connectionCount(): number {
    return this.sessions.size;
  }

  /**
   * Live counters per export (canonical name), created when an export is
   * first entered. Cheap to read at any rate; the objects are the server's
   * own and must not be modified.
   */
  stats(): ReadonlyMap<string, Readonly<NbdExportStats>> {
    return this.exportStats;
  }

  /**
   * Serves one connection that did not come through listen(): an already
   * connected socket, or any duplex stream (in-process tests, other
   * transports). The stream is owned by the server from here on.
   */
  handleConnection(stream: Duplex, peer: Peer): void {
    if (this.closing) {
      stream.destroy();
      return;
    }
    if (this.sessions.size >= this.limits.maxConnections) {
      this.log.warn('nbd connection refused: too many connections', { code: 'NBD_TOO_MANY_CONNECTIONS', peer: `${peer.address}:${peer.port}`, limit: this.limits.maxConnections });
      stream.destroy();
      return;
    }
    const session = new NbdSession(stream, peer, {
      resolver: this.resolver,
      logger: this.log,
      limits: this.limits,
      buffers: this.buffers,
      receiveBuffer: this.receiveBuffer,
      statsFor: (name) => {
        let s = this.exportStats.get(name);
        if (!s) {
          s = newExportStats();
          this.exportStats.set(name, s);
        }
        return s;
      },
    });
    this.sessions.add(session);
    void session.closed.then(() => this.sessions.delete(session));
    session.start();
  }

  /**
   * Stops accepting, ends every session (finishing the requests in flight,
   * up to limits.closeTimeoutMs, then cutting the rest) and resolves when
   * every export opened has been released. Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const server = this.server;
    const stopped = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    const sessions = [...this.sessions];
    for (const s of sessions) s.shutdown();
    const all = Promise.all(sessions.map((s) => s.closed));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      all.then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), this.limits.closeTimeoutMs))),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      const left = sessions.filter((s) => this.sessions.has(s));
      this.log.warn('nbd sessions did not finish in time; closing them', { sessions: left.length, timeoutMs: this.limits.closeTimeoutMs });
      for (const s of left) s.destroy();
      await all;
    }
    await stopped;
    this.log.info('nbd server closed');
  }

  private onSocket(socket: Socket): void {
    const peer: Peer = {
      address: socket.remoteAddress ?? 'unknown',
      port: socket.remotePort ?? 0,
      family: socket.remoteFamily ?? 'unknown',
    };
    if (!socket.remoteAddress) {
      // The peer is already gone.
      socket.destroy();
      return;
    }
    this.handleConnection(socket, peer);
  }
}

