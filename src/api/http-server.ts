/**
 * The HTTP service: what firmware and iPXE fetch at boot (scripts, kernels,
 * initramfs, iPXE binaries). The only module that imports the web framework.
 *
 * Boot-time routes are open (iPXE cannot hold a token) but serve only what
 * the named client may have: a kernel URL carries the client's current boot
 * id, which only its own script was given.
 */
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { createReadStream } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { BootFile, BootFileName, BootRequest, BootService } from '../boot/boot-service.js';
import { normalizeMac, plainAddress } from '../lib/net.js';
import { silentLogger, type Logger } from '../lib/log.js';
import { HttpError, httpStatusOf } from './errors.js';
import { parseRange } from './range.js';

export interface HttpServerOptions {
  boot: BootService;
  logger?: Logger;
  /** Base URL clients reach us by; defaults to the Host header of each request. */
  publicUrl?: string;
  /** Requests a connection may be kept idle, bounded. */
  keepAliveTimeoutMs?: number;
  /** Plugins that add routes (REST API, dashboard, metrics), registered after the boot routes. */
  extensions?: Array<(app: FastifyInstance) => void | Promise<void>>;
}

export const HTTP_DEFAULTS = {
  keepAliveTimeoutMs: 10_000,
  /** Boot routes take no bodies of note. */
  bodyLimit: 1024 * 1024,
  requestTimeoutMs: 120_000,
} as const;

const BOOT_FILES = new Set<BootFileName>(['vmlinuz', 'initrd.img']);
const FIRMWARE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const BOOT_ID = /^[A-Za-z0-9_-]{1,64}$/;

export class HttpServer {
  readonly app: FastifyInstance;
  private readonly log: Logger;

  constructor(private readonly options: HttpServerOptions) {
    this.log = (options.logger ?? silentLogger).child({ protocol: 'http' });
    this.app = Fastify({
      logger: false,
      bodyLimit: HTTP_DEFAULTS.bodyLimit,
      keepAliveTimeout: options.keepAliveTimeoutMs ?? HTTP_DEFAULTS.keepAliveTimeoutMs,
      requestTimeout: HTTP_DEFAULTS.requestTimeoutMs,
      return503OnClosing: true,
    });
    this.routes();
  }

  async listen(port: number, host = '0.0.0.0'): Promise<AddressInfo> {
    for (const ext of this.options.extensions ?? []) await ext(this.app);
    await this.app.listen({ port, host });
    const address = this.app.server.address() as AddressInfo;
    this.log.info('listening', { host: address.address, port: address.port });
    return address;
  }

  async close(): Promise<void> {
    await this.app.close();
  }

  private routes(): void {
    const app = this.app;

    app.setErrorHandler((err, req, reply) => {
      const status = httpStatusOf(err);
      const code = (err as { code?: string }).code ?? 'HTTP_ERROR';
      if (status >= 500) this.log.error('request failed', { err, url: req.url, peer: req.ip });
      else this.log.debug('request refused', { status, code, url: req.url, peer: req.ip });
      void reply.status(status).type('application/json').send({ error: code, message: status >= 500 ? 'internal error' : (err as Error).message });
    });
    app.setNotFoundHandler((req, reply) => {
      void reply.status(404).type('application/json').send({ error: 'HTTP_NOT_FOUND', message: `no route for ${req.method} ${req.url.split('?')[0]}` });
    });

    // A generic entry point, for iPXE builds or ROMs that are told only this URL:
    // it chains to the per-client script, letting iPXE fill in the MAC.
    app.get('/ipxe/boot.ipxe', async (req, reply) => {
      const base = this.baseUrl(req);
      return reply.type('text/plain').send(`#!ipxe\nchain ${base}/ipxe/\${mac:hexhyp}\n`);
    });

    app.get<{ Params: { mac: string } }>('/ipxe/:mac', async (req, reply) => {
      const mac = normalizeMac(req.params.mac.replace(/\.ipxe$/, ''));
      if (!mac) throw new HttpError('HTTP_BAD_MAC', `${JSON.stringify(req.params.mac)} is not a MAC address`);
      const script = await this.options.boot.script(this.bootRequest(req, mac));
      return reply.type('text/plain').header('cache-control', 'no-store').send(script);
    });

    app.get<{ Params: { mac: string; bootId: string; file: string } }>('/boot/:mac/:bootId/:file', async (req, reply) => {
      const mac = normalizeMac(req.params.mac);
      if (!mac) throw new HttpError('HTTP_BAD_MAC', `${JSON.stringify(req.params.mac)} is not a MAC address`);
      const name = req.params.file as BootFileName;
      if (!BOOT_FILES.has(name) || !BOOT_ID.test(req.params.bootId)) {
        throw new HttpError('HTTP_NOT_FOUND', `no boot file ${req.params.file}`);
      }
      const file = await this.options.boot.bootFile({ ...this.bootRequest(req, mac), bootId: req.params.bootId, name });
      if (!file) throw new HttpError('HTTP_NOT_FOUND', `boot ${req.params.bootId} of ${mac} has no ${name}`);
      return this.sendFile(req, reply, file);
    });

    app.post<{ Params: { mac: string; bootId: string } }>('/boot/:mac/:bootId/up', async (req, reply) => {
      const mac = normalizeMac(req.params.mac);
      if (!mac) throw new HttpError('HTTP_BAD_MAC', `${JSON.stringify(req.params.mac)} is not a MAC address`);
      if (!BOOT_ID.test(req.params.bootId)) throw new HttpError('HTTP_NOT_FOUND', 'unknown boot id');
      const ok = await this.options.boot.osUp({ ...this.bootRequest(req, mac), bootId: req.params.bootId });
      if (!ok) throw new HttpError('HTTP_NOT_FOUND', `boot ${req.params.bootId} is not the current boot of ${mac}`);
      return reply.status(204).send();
    });

    app.get<{ Params: { name: string } }>('/firmware/:name', async (req, reply) => {
      if (!FIRMWARE_NAME.test(req.params.name)) throw new HttpError('HTTP_NOT_FOUND', 'no such firmware file');
      const file = await this.options.boot.firmwareFile(req.params.name);
      if (!file) throw new HttpError('HTTP_NOT_FOUND', `no firmware file ${req.params.name}`);
      return this.sendFile(req, reply, file);
    });

    app.get('/healthz', async () => ({ ok: true }));
  }

  private bootRequest(req: FastifyRequest, mac: string | null): BootRequest {
    return { mac, address: plainAddress(req.socket.remoteAddress ?? ''), baseUrl: this.baseUrl(req) };
  }

  private baseUrl(req: FastifyRequest): string {
    if (this.options.publicUrl) return this.options.publicUrl.replace(/\/+$/, '');
    // The Host header is the client's own word; it only shapes URLs sent back to that client.
    const host = /^[A-Za-z0-9.:[\]-]{1,255}$/.test(req.headers.host ?? '') ? req.headers.host! : `${req.socket.localAddress}:${req.socket.localPort}`;
    return `http://${host}`;
  }

  private sendFile(req: FastifyRequest, reply: FastifyReply, file: BootFile): FastifyReply {
    reply.header('etag', file.etag).header('last-modified', file.lastModified.toUTCString()).header('accept-ranges', 'bytes');
    reply.type('application/octet-stream');
    if (req.headers['if-none-match'] === file.etag) return reply.status(304).send();
    // If-Range: a range applies only while the validator still matches.
    const ifRange = req.headers['if-range'];
    const rangeHeader = ifRange === undefined || ifRange === file.etag ? req.headers.range : undefined;
    const range = parseRange(rangeHeader, file.size);
    if (range.kind === 'unsatisfiable') {
      return reply.status(416).header('content-range', `bytes */${file.size}`).send();
    }
    if (range.kind === 'partial') {
      reply.status(206).header('content-range', `bytes ${range.start}-${range.end}/${file.size}`);
      reply.header('content-length', range.end - range.start + 1);
      return reply.send(createReadStream(file.path, { start: range.start, end: range.end, highWaterMark: 256 * 1024 }));
    }
    reply.header('content-length', file.size);
    if (file.size === 0) return reply.send('');
    return reply.send(createReadStream(file.path, { highWaterMark: 256 * 1024 }));
  }
}
