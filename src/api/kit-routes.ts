/**
 * HTTP routes of the client kit and of disk capture, as a plugin the HTTP
 * service registers through its `extensions` option:
 *
 *   GET    /kit                        the kit script, server URL filled in (open)
 *   POST   /capture                    start or resume an upload -> {id, chunks, present, ...}
 *   GET    /capture/:id                the upload's status (JSON)
 *   GET    /capture/:id/chunks         chunks stored, one `<n> <sha256>` line each (for resume)
 *   PUT    /capture/:id/chunk/:n       one chunk; header x-sha256; `x-zero: 1` and no body for zeros
 *   POST   /capture/:id/finish         {sha256}: verify the whole, publish -> {published, ...}
 *   DELETE /capture/:id                abort: the upload and its files are removed
 *
 * Capture routes need `Authorization: Bearer <captureToken>`; with no token
 * configured they answer 403. Every refusal is a 4xx JSON {error, message}
 * with a code of src/images/capture/errors.ts.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { silentLogger, type Logger } from '../lib/log.js';
import { CaptureService, type PublishCallback } from '../images/capture/capture-service.js';
import type { CaptureLimits } from '../images/capture/constants.js';
import { CaptureError, captureHttpStatus } from '../images/capture/errors.js';
import { isSafeServerUrl, loadKitTemplate, renderKit } from '../images/capture/kit-script.js';

export interface KitRoutesOptions {
  /** Bearer token capture requests must carry. Absent or empty: capture is off (403). */
  captureToken?: string;
  /** The server's data directory; uploads are assembled in its `capture/` folder. */
  dataDir: string;
  /** Called with the verified raw disk; see PublishCallback. */
  publish: PublishCallback;
  /** Base URL clients reach the server by, put into the kit; defaults to the request's Host. */
  publicUrl?: string;
  limits?: Partial<CaptureLimits>;
  logger?: Logger;
  /** The kit script; defaults to kit/diskless-kit.sh of this checkout. */
  kitPath?: string;
  /** Free bytes of the data directory (tests); statfs by default. */
  freeSpace?: (dir: string) => Promise<number>;
  /** A capture service to use instead of one made here (its open() and close() are then the caller's). */
  service?: CaptureService;
}

/** Largest JSON body of start and finish. */
const JSON_BODY_LIMIT = 16 * 1024;
const CHUNK_NUMBER = /^\d{1,10}$/;

export function kitRoutes(options: KitRoutesOptions): (app: FastifyInstance) => Promise<void> {
  if (options.publicUrl !== undefined && !isSafeServerUrl(options.publicUrl.replace(/\/+$/, ''))) {
    throw new CaptureError('CAPTURE_BAD_REQUEST', `publicUrl ${JSON.stringify(options.publicUrl)} cannot be placed in the kit`);
  }
  const token = options.captureToken ? createHash('sha256').update(options.captureToken).digest() : null;
  const log = (options.logger ?? silentLogger).child({ protocol: 'http', module: 'capture' });

  return async (app: FastifyInstance) => {
    const template = await loadKitTemplate(options.kitPath);
    const service = options.service ?? new CaptureService({
      dataDir: options.dataDir, publish: options.publish, logger: options.logger,
      ...(options.limits ? { limits: options.limits } : {}),
      ...(options.freeSpace ? { freeSpace: options.freeSpace } : {}),
    });
    if (!options.service) {
      await service.open();
      app.addHook('onClose', async () => service.close());
    }

    app.get('/kit', async (req, reply) => {
      return reply.type('text/plain; charset=utf-8').header('cache-control', 'no-store')
        .send(renderKit(template, baseUrl(req, options.publicUrl)));
    });

    await app.register(async (scope) => {
      scope.setErrorHandler((err, req, reply) => {
        const status = captureHttpStatus(err);
        const known = err instanceof CaptureError;
        const code = known ? err.code
          : status === 413 ? 'CAPTURE_CHUNK_TOO_LARGE'
          : status === 429 ? 'CAPTURE_BUSY'
          : status < 500 ? 'CAPTURE_BAD_REQUEST' : 'CAPTURE_IO';
        if (status >= 500) log.error('capture request failed', { err, url: req.url, peer: req.ip });
        else log.debug('capture request refused', { status, code, url: req.url, peer: req.ip });
        if (status === 401) void reply.header('www-authenticate', 'Bearer realm="diskless-capture"');
        // Our own messages are safe to show; an unexpected error's is not.
        const message = known || status < 500 ? (err as Error).message : 'internal error';
        void reply.status(status).type('application/json').send({ error: code, message });
      });

      // Chunks arrive as raw bytes, never parsed; fastify enforces the route's bodyLimit while reading.
      scope.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

      scope.addHook('onRequest', async (req) => {
        if (!token) throw new CaptureError('CAPTURE_DISABLED', 'capture is turned off on this server: no capture token is configured');
        const given = /^Bearer +(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
        // Compare digests in constant time: the token's length is not revealed either.
        if (!given || !timingSafeEqual(createHash('sha256').update(given).digest(), token)) {
          throw new CaptureError('CAPTURE_UNAUTHORIZED', given ? 'the capture token is wrong' : 'capture needs a bearer token (DISKLESS_TOKEN or --token)');
        }
      });

      scope.post('/capture', { bodyLimit: JSON_BODY_LIMIT }, async (req, reply) => {
        const status = await service.start(req.body as never);
        return reply.status(status.resumed ? 200 : 201).send(status);
      });

      scope.get<{ Params: { id: string } }>('/capture/:id', async (req) => service.status(req.params.id));

      scope.get<{ Params: { id: string } }>('/capture/:id/chunks', async (req, reply) => {
        const lines = service.chunkList(req.params.id).map((c) => `${c.index} ${c.sha256}\n`).join('');
        return reply.type('text/plain; charset=utf-8').header('cache-control', 'no-store').send(lines);
      });

      scope.put<{ Params: { id: string; n: string } }>('/capture/:id/chunk/:n', {
        bodyLimit: service.limits.maxChunkSize,
        onRequest: async (req, reply) => {
          // Before the body is read: refuse what cannot be stored, and bound the bodies held in memory.
          const index = chunkNumber(req.params.n);
          const length = service.chunkLength(req.params.id, index);
          const declared = Number(req.headers['content-length'] ?? NaN);
          if (Number.isFinite(declared) && declared > length) {
            throw new CaptureError('CAPTURE_CHUNK_LENGTH', `chunk ${index} must be ${length} bytes; ${declared} are announced`);
          }
          if (!service.tryAcquireChunkSlot()) throw new CaptureError('CAPTURE_BUSY', 'too many chunks in flight; retry shortly');
          let held = true;
          reply.raw.once('close', () => {
            if (held) service.releaseChunkSlot();
            held = false;
          });
        },
      }, async (req, reply) => {
        const index = chunkNumber(req.params.n);
        const sha = header(req, 'x-sha256');
        if (!sha) throw new CaptureError('CAPTURE_BAD_REQUEST', 'a chunk needs its sha256 in the x-sha256 header');
        const zero = header(req, 'x-zero') === '1';
        const body = req.body;
        if (zero && body !== undefined && body !== null && !(Buffer.isBuffer(body) && body.length === 0)) {
          throw new CaptureError('CAPTURE_BAD_REQUEST', 'a chunk sent with x-zero: 1 has no body');
        }
        if (!zero && !Buffer.isBuffer(body)) {
          throw new CaptureError('CAPTURE_BAD_REQUEST', 'a chunk is sent as application/octet-stream (or as x-zero: 1 with no body)');
        }
        const result = await service.putChunk(req.params.id, index, sha.toLowerCase(), zero ? null : (body as Buffer));
        return reply.status(201).send(result);
      });

      scope.post<{ Params: { id: string } }>('/capture/:id/finish', { bodyLimit: JSON_BODY_LIMIT }, async (req) => {
        const body = req.body as { sha256?: unknown } | undefined;
        return service.finish(req.params.id, typeof body?.sha256 === 'string' ? body.sha256.toLowerCase() : '');
      });

      scope.delete<{ Params: { id: string } }>('/capture/:id', async (req, reply) => {
        await service.abort(req.params.id);
        return reply.status(204).send();
      });
    });
  };
}

function chunkNumber(text: string): number {
  if (!CHUNK_NUMBER.test(text)) throw new CaptureError('CAPTURE_BAD_REQUEST', `chunk number ${JSON.stringify(text.slice(0, 20))} is not a whole number`);
  return Number(text);
}

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === 'string' ? v.trim() : undefined;
}

/** The URL put into the kit: the configured one, else what the client used to reach us. */
function baseUrl(req: FastifyRequest, publicUrl: string | undefined): string {
  if (publicUrl) return publicUrl.replace(/\/+$/, '');
  // The Host header is the client's own word and lands in a shell script: only plain host[:port] is taken.
  const host = req.headers.host ?? '';
  if (/^[A-Za-z0-9.-]{1,253}(:\d{1,5})?$/.test(host) || /^\[[0-9A-Fa-f:.]{2,45}\](:\d{1,5})?$/.test(host)) return `http://${host}`;
  const addr = req.socket.localAddress ?? '127.0.0.1';
  const plain = addr.startsWith('::ffff:') ? addr.slice(7) : addr;
  const port = typeof req.socket.localPort === 'number' ? `:${req.socket.localPort}` : '';
  return `http://${plain.includes(':') ? `[${plain}]` : plain}${port}`;
}


