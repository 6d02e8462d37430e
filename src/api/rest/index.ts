/**
 * The REST API: JSON over the server's HTTP port under /api/v1, as a plugin
 * for the HTTP service's `extensions`:
 *
 *   const token = loadOrCreateApiToken(dataDir);
 *   new HttpServer({ ..., extensions: [restApi({ catalogue, dataDir, token })] });
 *
 * Every route but GET /api/v1/openapi.json needs `Authorization: Bearer
 * <token>`; the token is compared in constant time (as digests, so its
 * length is not revealed either). Refusals are `{error: CODE, message}`
 * (errors.ts); the routes and their schemas are one table (routes.ts) that
 * both registers them and makes the OpenAPI document (openapi.ts).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statfsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Catalogue } from '../../app/catalogue.js';
import { silentLogger, type Logger } from '../../lib/log.js';
import { RestError, restErrorOf } from './errors.js';
import { fastifyPath, openApiDocument } from './openapi.js';
import { API_PREFIX, restRoutes, type CatalogueOps, type IoRates, type RouteSpec } from './routes.js';
import { BODY_LIMIT, type JsonSchema } from './schemas.js';
import { EventStream, type StreamLimits } from './stream.js';
import { compileValidator } from './validate.js';

export { loadOrCreateApiToken, API_TOKEN_FILE } from './token.js';
export { API_PREFIX, type CatalogueOps, type IoRates, type RouteSpec } from './routes.js';
export { ERROR_CODES, RestError, type RestErrorCode } from './errors.js';
export { STREAM_DEFAULTS, type StreamLimits } from './stream.js';

export interface RestApiOptions {
  catalogue: Catalogue;
  /** The data directory: its free space is part of the status. */
  dataDir: string;
  /** The bearer token requests must carry (loadOrCreateApiToken()). */
  token: string;
  logger?: Logger;
  /** What the server reports of its services (addresses, states), shown under `services` of GET /status. */
  status?: () => Record<string, unknown>;
  /** Throughput of an NBD export, shown with each overlay; null when the export is not open. */
  ioRates?: IoRates;
  /** Event stream timings and limits; the defaults are STREAM_DEFAULTS (tests shorten them). */
  stream?: Partial<StreamLimits>;
}

/** A token shorter than this is refused: the API would be guessable. */
const MIN_TOKEN_LENGTH = 32;
const REALM = 'Bearer realm="diskless"';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route needs no token (the OpenAPI document). */
    restOpen?: boolean;
  }
}

export function restApi(options: RestApiOptions): (app: FastifyInstance) => Promise<void> {
  if (typeof options.token !== 'string' || options.token.length < MIN_TOKEN_LENGTH || /\s/.test(options.token)) {
    throw new RestError('API_TOKEN_FILE', `the API token must be at least ${MIN_TOKEN_LENGTH} characters without spaces (loadOrCreateApiToken() makes one)`);
  }
  const digest = sha256(options.token);
  const log = (options.logger ?? silentLogger).child({ protocol: 'http', module: 'rest' });
  const catalogue: CatalogueOps = options.catalogue;

  return async (app: FastifyInstance) => {
    const stream = new EventStream(catalogue.store, log, options.stream);
    const startedMs = Date.now();
    const version = serverVersion();
    let document: Record<string, unknown> | null = null;
    const routes = restRoutes({
      catalogue,
      stream,
      status: () => ({ ...dataDirSpace(options.dataDir), ...(options.status?.() ?? {}) }),
      ioRates: options.ioRates ?? null,
      document: () => (document ??= openApiDocument(routes, { version })),
      serverVersion: version,
      startedMs,
    });

    // Streams hold their connections open: end them before the server waits for connections to close.
    app.addHook('preClose', async () => stream.close());
    app.addHook('onClose', async () => stream.close());

    await app.register(async (scope) => {
      scope.setErrorHandler((err, req, reply) => {
        const w = restErrorOf(err);
        if (w.status >= 500 && w.status !== 503) log.error('api request failed', { err, method: req.method, url: req.url, peer: req.ip });
        else log.debug('api request refused', { status: w.status, code: w.code, method: req.method, url: req.url, peer: req.ip });
        if (w.status === 401) void reply.header('www-authenticate', (err instanceof RestError && err.challenge) || REALM);
        void reply.status(w.status).type('application/json; charset=utf-8').header('cache-control', 'no-store').send({ error: w.code, message: w.message });
      });

      // JSON only: fastify also parses text/plain by default, which no route here takes (415 instead).
      scope.removeContentTypeParser('text/plain');

      scope.setNotFoundHandler(async (req) => {
        throw new RestError('API_NOT_FOUND', `no API route for ${req.method} ${req.url.split('?')[0]} (GET ${API_PREFIX}/openapi.json lists them)`);
      });

      // Before the body is read: an unauthenticated request costs no parsing.
      scope.addHook('onRequest', async (req) => {
        if (req.routeOptions.config?.restOpen) return;
        const given = /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? '')?.[1];
        if (!given) {
          throw new RestError('API_UNAUTHORIZED', 'this API needs an Authorization: Bearer <token> header; the token is in <dataDir>/api-token (`diskless api token` prints it)', { challenge: REALM });
        }
        if (!timingSafeEqual(sha256(given), digest)) {
          // RFC 6750 section 3.1: a token was given but is not valid.
          throw new RestError('API_UNAUTHORIZED', 'the bearer token is wrong', { challenge: `${REALM}, error="invalid_token"` });
        }
      });

      // Changes are worth a line in the log: who changed what.
      scope.addHook('onResponse', async (req, reply) => {
        if (req.method !== 'GET' && req.method !== 'HEAD' && reply.statusCode < 400) {
          log.info('api change', { method: req.method, url: req.url, status: reply.statusCode, peer: req.ip });
        }
      });

      for (const r of routes) register(scope, r);
    }, { prefix: API_PREFIX });
  };
}

function register(scope: FastifyInstance, r: RouteSpec): void {
  const schema: Record<string, JsonSchema> = {};
  if (r.params) schema.params = r.params;
  if (r.query) schema.querystring = r.query;
  if (r.body) schema.body = r.body;
  scope.route({
    method: r.method,
    url: fastifyPath(r.path),
    schema,
    validatorCompiler: ({ schema: s, httpPart }) => compileValidator(s as JsonSchema, httpPart ?? 'body', r.bodyRequired ?? true),
    config: { restOpen: r.open === true },
    bodyLimit: BODY_LIMIT,
    // HEAD is GET without a body; the API has no use for it and the document does not list it.
    exposeHeadRoute: false,
    handler: async (req, reply) => {
      const out = await r.handle(req, reply);
      if (reply.sent || out === undefined) return reply;
      return reply.status(r.response.status).header('cache-control', 'no-store').send(out);
    },
  });
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** Free and total bytes of the data directory's file system. */
function dataDirSpace(dataDir: string): Record<string, unknown> {
  try {
    const s = statfsSync(dataDir);
    return { dataDir: { path: dataDir, freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize } };
  } catch {
    return { dataDir: { path: dataDir, freeBytes: null, totalBytes: null } };
  }
}

let cachedVersion: string | null = null;
/** The version of this diskless: its package.json, found above this file (in src/ or in dist/src/). */
function serverVersion(): string {
  if (cachedVersion !== null) return cachedVersion;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'diskless' && typeof pkg.version === 'string') return (cachedVersion = pkg.version);
    } catch {
      // Not here; look higher.
    }
    dir = dirname(dir);
  }
  return (cachedVersion = 'unknown');
}
