/**
 * The OpenAPI 3.1 document of the REST API (GET /api/v1/openapi.json),
 * made from the route table, so every registered route is in it with the
 * very schemas its inputs are checked with. OpenAPI 3.1 schemas are JSON
 * Schema 2020-12; the request schemas use only keywords that mean the same
 * in draft-07 (what Ajv checks requests with) and in 2020-12.
 */
import { API_PREFIX, type RouteSpec } from './routes.js';
import { components, type JsonSchema } from './schemas.js';

const ERROR_RESPONSES: Record<number, { name: string; description: string }> = {
  400: { name: 'BadRequest', description: 'a parameter or body field is wrong; the message names it (API_INVALID_REQUEST, STATE_INVALID, APP_*)' },
  401: { name: 'Unauthorized', description: 'no bearer token, or a wrong one (API_UNAUTHORIZED); the answer carries WWW-Authenticate: Bearer' },
  404: { name: 'NotFound', description: 'the image, version, client or overlay named does not exist (STATE_NOT_FOUND, API_NO_OVERLAY)' },
  409: { name: 'Conflict', description: 'the catalogue refuses the change as it stands, and says why (STATE_CONFLICT, APP_VERSION_IN_USE, APP_CLIENT_RUNNING, ...)' },
  413: { name: 'TooLarge', description: 'the body is larger than the API reads (API_BODY_TOO_LARGE)' },
  415: { name: 'UnsupportedMediaType', description: 'the body is not application/json (API_UNSUPPORTED_MEDIA_TYPE)' },
  422: { name: 'Unprocessable', description: 'the disk made from a draft is not a bootable image; the code (IMAGES_*) says what is missing' },
  503: { name: 'Unavailable', description: 'busy: the catalogue stayed locked (STATE_BUSY), or too many event streams are open (API_STREAM_LIMIT)' },
  507: { name: 'InsufficientStorage', description: 'the data directory has too little free space for the new version (APP_NO_SPACE)' },
};

/** `/clients/{mac}` -> `/clients/:mac`, the form fastify registers. */
export function fastifyPath(path: string): string {
  return path.replace(/\{([A-Za-z0-9_]+)\}/g, ':$1');
}

export function openApiDocument(routes: readonly RouteSpec[], info: { version: string }): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const item = (paths[API_PREFIX + r.path] ??= {});
    item[r.method.toLowerCase()] = operation(r);
  }
  const responses: Record<string, unknown> = {};
  for (const { name, description } of Object.values(ERROR_RESPONSES)) {
    responses[name] = { description, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'diskless management API',
      version: info.version,
      description: [
        'Images, clients, overlays and boot events of a diskless server, as JSON.',
        'Every request but this document needs `Authorization: Bearer <token>`, the token of `<dataDir>/api-token`',
        '(printed by `diskless api token`). Refusals are `{error, message}` with a stable code.',
      ].join(' '),
    },
    jsonSchemaDialect: 'https://spec.openapis.org/oas/3.1/dialect/base',
    tags: [
      { name: 'images', description: 'images and their immutable versions' },
      { name: 'clients', description: 'client machines, and machines not yet adopted' },
      { name: 'overlays', description: 'the per-client copy-on-write overlays' },
      { name: 'events', description: 'the boot timeline' },
      { name: 'server', description: 'the server itself' },
    ],
    security: [{ bearerAuth: [] }],
    paths,
    components: {
      securitySchemes: {
        bearerAuth: { type: 'http', scheme: 'bearer', description: 'the token of <dataDir>/api-token (64 hex digits)' },
      },
      schemas: components,
      responses,
    },
  };
}

function operation(r: RouteSpec): Record<string, unknown> {
  const op: Record<string, unknown> = {
    operationId: r.operationId,
    summary: r.summary,
    ...(r.description ? { description: r.description } : {}),
    tags: [r.tag],
  };
  const parameters = [...parametersOf(r.params, 'path'), ...parametersOf(r.query, 'query')];
  if (parameters.length > 0) op.parameters = parameters;
  if (r.body) {
    op.requestBody = { required: r.bodyRequired ?? true, content: { 'application/json': { schema: r.body } } };
  }
  const responses: Record<string, unknown> = {
    [String(r.response.status)]: {
      description: r.response.description,
      content: { [r.response.contentType ?? 'application/json']: { schema: r.response.schema } },
    },
  };
  const errors = new Set(r.errors);
  if (r.params || r.query || r.body) errors.add(400);
  if (r.body) {
    errors.add(413);
    errors.add(415);
  }
  if (!r.open) errors.add(401);
  for (const status of [...errors].sort((a, b) => a - b)) {
    responses[String(status)] = { $ref: `#/components/responses/${ERROR_RESPONSES[status]!.name}` };
  }
  op.responses = responses;
  if (r.open) op.security = [];
  return op;
}

function parametersOf(schema: JsonSchema | undefined, where: 'path' | 'query'): Record<string, unknown>[] {
  if (!schema) return [];
  const props = (schema.properties ?? {}) as Record<string, JsonSchema>;
  const required = new Set((schema.required ?? []) as string[]);
  return Object.entries(props).map(([name, s]) => ({
    name,
    in: where,
    required: where === 'path' || required.has(name),
    ...(typeof s.description === 'string' ? { description: s.description } : {}),
    schema: s,
  }));
}
