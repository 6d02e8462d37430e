/**
 * The routes of the REST API as one table: method, path, the schemas of
 * their inputs, what they answer, and a handler. The table is the single
 * source for fastify's registration (index.ts) and for the OpenAPI document
 * (openapi.ts), so the two cannot disagree.
 *
 * Handlers hold no policy and no SQL: each validates nothing itself (the
 * schemas did, before it runs), calls one Catalogue operation (or reads the
 * store's lists), and prints records with toJson(), the function the CLI's
 * --json uses. A refused request has changed nothing: the schemas refuse
 * before any call, and each write is one catalogue operation, which is one
 * store transaction.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Catalogue, ClientView } from '../../app/catalogue.js';
import { toJson } from '../../app/json.js';
import { normalizeMac } from '../../lib/net.js';
import type { ClientMode, ClientRecord } from '../../state/store.js';
import { RestError } from './errors.js';
import { bodies, params, query, responseRef, type JsonSchema } from './schemas.js';
import type { EventStream } from './stream.js';
import { groupByBoot } from './timeline.js';

/** The changes PATCH /clients/{mac} may make: the catalogue's updateClient() takes them as they are. */
export type ClientUpdate = Parameters<Catalogue['updateClient']>[1];

/** The catalogue operations the API calls: one implementation behind the CLI and the API. */
export type CatalogueOps = Pick<Catalogue,
  | 'store' | 'listImages' | 'showImage' | 'publishVersion' | 'rollback' | 'deleteVersion' | 'deleteImage'
  | 'addClient' | 'listClients' | 'showClient' | 'updateClient' | 'deleteClient' | 'setMaintenance' | 'commitMaintenance' | 'resetClient'>;

export type IoRates = (exportName: string) => { readBps: number; writeBps: number; readBytes: number; writeBytes: number } | null;

export interface RouteDeps {
  catalogue: CatalogueOps;
  stream: EventStream;
  status: () => Record<string, unknown>;
  ioRates: IoRates | null;
  /** The OpenAPI document, made from this table after it is built. */
  document: () => Record<string, unknown>;
  serverVersion: string;
  startedMs: number;
}

/** Where the API is mounted on the server's HTTP port. */
export const API_PREFIX = '/api/v1';

export type HttpMethod = 'GET' | 'POST' | 'PATCH' | 'DELETE';

export interface RouteSpec {
  method: HttpMethod;
  /** Relative to the API prefix, in OpenAPI form: `/clients/{mac}`. */
  path: string;
  operationId: string;
  tag: 'images' | 'clients' | 'overlays' | 'events' | 'server';
  summary: string;
  description?: string;
  /** Answered without the token (the OpenAPI document only). */
  open?: boolean;
  params?: JsonSchema;
  query?: JsonSchema;
  body?: JsonSchema;
  /** Default true when there is a body schema. */
  bodyRequired?: boolean;
  response: { status: number; description: string; schema: JsonSchema; contentType?: string };
  /** Refusals besides 400 (any input schema) and 401 (not open): 404, 409, 503. */
  errors: number[];
  /** Returns the JSON to send, or undefined once it has answered on the raw socket itself. */
  handle(req: FastifyRequest, reply: FastifyReply): Promise<unknown>;
}

interface Params { name: string; version: number; mac: string }

const p = (req: FastifyRequest): Params => req.params as Params;
/** The schema admitted only MACs; this is their one spelling. */
const macOf = (req: FastifyRequest): string => normalizeMac(p(req).mac)!;
const list = (records: readonly object[]): Record<string, unknown>[] => records.map((r) => toJson(r));

const arrayOf = (name: string): JsonSchema => ({ type: 'array', items: responseRef(name) });

export function restRoutes(d: RouteDeps): RouteSpec[] {
  const c = d.catalogue;

  const overlayJson = (v: ClientView): Record<string, unknown> | null => {
    const o = v.overlay;
    if (!o) return null;
    return toJson({
      mac: v.mac, name: v.name, image: o.image, version: o.version, dir: o.dir, path: o.path, draft: o.draft,
      diskBytes: o.diskBytes, quotaBytes: v.quotaBytes, createdMs: o.createdMs, exportName: v.exportName,
      io: v.exportName && d.ioRates ? d.ioRates(v.exportName) : null,
    });
  };

  return [
    // ---- server ----
    {
      method: 'GET', path: '/openapi.json', operationId: 'getOpenApi', tag: 'server', open: true,
      summary: 'This document (OpenAPI 3.1); needs no token',
      response: { status: 200, description: 'the OpenAPI document', schema: { type: 'object' } },
      errors: [],
      handle: async () => d.document(),
    },
    {
      method: 'GET', path: '/status', operationId: 'getStatus', tag: 'server',
      summary: 'Server version, uptime, catalogue counts, services',
      response: { status: 200, description: 'the status', schema: responseRef('Status') },
      errors: [503],
      handle: async () => {
        const images = c.listImages();
        const clients = c.store.clients.list();
        const count = (f: (x: ClientRecord) => boolean): number => clients.filter(f).length;
        return {
          name: 'diskless',
          version: d.serverVersion,
          startedAt: new Date(d.startedMs).toISOString(),
          uptimeSeconds: Math.round((Date.now() - d.startedMs) / 100) / 10,
          counts: {
            images: images.length,
            versions: images.reduce((n, i) => n + i.versions, 0),
            clients: clients.length,
            clientsUp: count((x) => x.state === 'up'),
            clientsBooting: count((x) => x.state === 'booting'),
            maintenance: count((x) => x.maintenance),
            overlays: c.store.overlays.list().length,
            unknownMachines: c.store.unknownMachines.list().length,
          },
          services: d.status(),
          streams: d.stream.open,
        };
      },
    },

    // ---- images ----
    {
      method: 'GET', path: '/images', operationId: 'listImages', tag: 'images',
      summary: 'List the images with their current version and number of versions',
      response: { status: 200, description: 'the images', schema: arrayOf('ImageSummary') },
      errors: [],
      handle: async () => list(c.listImages()),
    },
    {
      method: 'GET', path: '/images/{name}', operationId: 'showImage', tag: 'images', params: params.name,
      summary: 'Show an image and all its versions',
      response: { status: 200, description: 'the image', schema: responseRef('ImageDetail') },
      errors: [404],
      handle: async (req) => {
        const { image, versions } = c.showImage(p(req).name);
        return { ...toJson(image), versions: list(versions) };
      },
    },
    {
      method: 'DELETE', path: '/images/{name}', operationId: 'deleteImage', tag: 'images', params: params.name,
      summary: 'Delete an image: only one that no client is assigned to and whose versions are in use by none',
      response: { status: 200, description: 'the image, its versions and the files deleted', schema: responseRef('ImageDeleted') },
      errors: [404, 409],
      handle: async (req) => toJson(await c.deleteImage(p(req).name)),
    },
    {
      method: 'GET', path: '/images/{name}/versions', operationId: 'listVersions', tag: 'images', params: params.name,
      summary: 'List the versions of an image, oldest first',
      response: { status: 200, description: 'the versions', schema: arrayOf('ImageVersion') },
      errors: [404],
      handle: async (req) => list(c.showImage(p(req).name).versions),
    },
    {
      method: 'GET', path: '/images/{name}/versions/{version}', operationId: 'showVersion', tag: 'images', params: params.nameVersion,
      summary: 'Show one version of an image',
      response: { status: 200, description: 'the version', schema: responseRef('ImageVersion') },
      errors: [404],
      handle: async (req) => toJson(c.store.images.requireVersion(p(req).name, p(req).version)),
    },
    {
      method: 'POST', path: '/images/{name}/versions/{version}/publish', operationId: 'publishVersion', tag: 'images', params: params.nameVersion,
      summary: 'Publish a held version: it becomes the current version that clients boot from their next boot on',
      response: { status: 200, description: 'the version, published', schema: responseRef('ImageVersion') },
      errors: [404, 409],
      handle: async (req) => toJson(await c.publishVersion(p(req).name, p(req).version)),
    },
    {
      method: 'DELETE', path: '/images/{name}/versions/{version}', operationId: 'deleteVersion', tag: 'images', params: params.nameVersion,
      summary: 'Delete a version and its files: refused (409, naming them) while it is current, pinned, running or under an overlay',
      response: { status: 200, description: 'the version and the files deleted', schema: responseRef('VersionDeleted') },
      errors: [404, 409],
      handle: async (req) => toJson(await c.deleteVersion(p(req).name, p(req).version)),
    },
    {
      method: 'POST', path: '/images/{name}/rollback', operationId: 'rollbackImage', tag: 'images', params: params.name,
      body: bodies.rollback, bodyRequired: false,
      summary: 'Make an earlier published version current again (by default the one before the current one)',
      response: { status: 200, description: 'the image and the current version before and after', schema: responseRef('RollbackResult') },
      errors: [404, 409],
      handle: async (req) => {
        const version = (req.body as { version?: number } | null)?.version;
        const r = await c.rollback(p(req).name, version);
        return { image: toJson(r.image), from: r.from, to: r.to };
      },
    },

    // ---- clients ----
    {
      method: 'GET', path: '/clients', operationId: 'listClients', tag: 'clients',
      summary: 'List the clients with their current export and overlay',
      response: { status: 200, description: 'the clients', schema: arrayOf('ClientView') },
      errors: [],
      handle: async () => list(c.listClients()),
    },
    {
      method: 'POST', path: '/clients', operationId: 'addClient', tag: 'clients', body: bodies.addClient,
      summary: 'Add a client, or adopt an unknown machine (its MAC leaves the unknown machines)',
      response: { status: 201, description: 'the new client', schema: responseRef('Client') },
      errors: [404, 409],
      handle: async (req, reply) => {
        const b = req.body as { mac: string; image: string; mode?: ClientMode; name?: string | null; pinnedVersion?: number | null };
        const client = c.addClient({
          mac: normalizeMac(b.mac)!, image: b.image,
          ...(b.mode !== undefined ? { mode: b.mode } : {}),
          ...(b.name !== undefined ? { name: b.name } : {}),
          ...(b.pinnedVersion !== undefined ? { pinnedVersion: b.pinnedVersion } : {}),
        });
        void reply.header('location', `${API_PREFIX}/clients/${client.mac}`);
        return toJson(client);
      },
    },
    {
      method: 'GET', path: '/clients/{mac}', operationId: 'showClient', tag: 'clients', params: params.mac,
      summary: 'Show a client: its boot, export, overlay and 20 newest boot events',
      response: { status: 200, description: 'the client', schema: responseRef('ClientDetail') },
      errors: [404],
      handle: async (req) => {
        const mac = macOf(req);
        const client = c.showClient(mac);
        return { ...toJson(client), events: list(c.store.events.list({ mac, limit: 20 })) };
      },
    },
    {
      method: 'PATCH', path: '/clients/{mac}', operationId: 'updateClient', tag: 'clients', params: params.mac, body: bodies.updateClient,
      summary: 'Change a client\'s image, version pin, mode, name or overlay quota (from its next boot on)',
      description: 'Only the fields given change. Changing the image drops a pin unless a new one is given. null clears name, pin and quota.',
      response: { status: 200, description: 'the client as changed', schema: responseRef('ClientView') },
      errors: [404, 409],
      handle: async (req) => {
        const b = req.body as ClientUpdate;
        const changes: ClientUpdate = {};
        if (b.name !== undefined) changes.name = b.name;
        if (b.image !== undefined) changes.image = b.image;
        if (b.pinnedVersion !== undefined) changes.pinnedVersion = b.pinnedVersion;
        if (b.mode !== undefined) changes.mode = b.mode;
        if (b.quotaBytes !== undefined) changes.quotaBytes = b.quotaBytes;
        return toJson(await c.updateClient(macOf(req), changes));
      },
    },
    {
      method: 'DELETE', path: '/clients/{mac}', operationId: 'deleteClient', tag: 'clients', params: params.mac,
      summary: 'Delete a client and its overlay (a running client loses its disk: its NBD connections are cut)',
      response: { status: 200, description: 'the client as it was, and its overlay discarded', schema: responseRef('DiscardResult') },
      errors: [404],
      handle: async (req) => {
        const r = await c.deleteClient(macOf(req));
        return { client: toJson(r.client), discarded: r.discarded ? toJson(r.discarded) : null, removed: r.removed, busy: r.busy };
      },
    },
    {
      method: 'POST', path: '/clients/{mac}/maintenance', operationId: 'setMaintenance', tag: 'clients', params: params.mac, body: bodies.maintenance,
      summary: 'Turn maintenance on (its overlay becomes a draft of the image\'s next version) or off',
      response: { status: 200, description: 'the client', schema: responseRef('ClientView') },
      errors: [404, 409],
      handle: async (req) => toJson(await c.setMaintenance(macOf(req), (req.body as { on: boolean }).on)),
    },
    {
      method: 'POST', path: '/clients/{mac}/commit', operationId: 'commitMaintenance', tag: 'images', params: params.mac,
      body: bodies.commit, bodyRequired: false,
      summary: 'Commit a maintenance client\'s draft as the next version of its image (published unless publish is false)',
      description: 'The client must be shut down (409 APP_CLIENT_RUNNING while its disk is open). The draft is flattened over its base and imported like any version (422 if it is not a bootable disk). The client leaves maintenance and its draft is discarded.',
      response: { status: 201, description: 'the new version', schema: responseRef('ImageVersion') },
      errors: [404, 409, 422, 507],
      handle: async (req) => {
        const b = (req.body ?? {}) as { publish?: boolean; force?: boolean };
        return toJson(await c.commitMaintenance(macOf(req), {
          ...(b.publish !== undefined ? { publish: b.publish } : {}),
          ...(b.force !== undefined ? { force: b.force } : {}),
        }));
      },
    },
    {
      method: 'POST', path: '/clients/{mac}/reset', operationId: 'resetClient', tag: 'clients', params: params.mac,
      summary: 'Discard the client\'s overlay and end its current boot; its next boot starts clean',
      response: { status: 200, description: 'what the reset did', schema: responseRef('DiscardResult') },
      errors: [404, 409],
      handle: async (req) => {
        const r = await c.resetClient(macOf(req));
        return { client: toJson(r.client), discarded: r.discarded ? toJson(r.discarded) : null, removed: r.removed, busy: r.busy };
      },
    },
    {
      method: 'GET', path: '/clients/{mac}/overlay', operationId: 'showOverlay', tag: 'overlays', params: params.mac,
      summary: 'Show a client\'s overlay: size on disk, quota, I/O of its export',
      response: { status: 200, description: 'the overlay', schema: responseRef('Overlay') },
      errors: [404],
      handle: async (req) => {
        const view = c.showClient(macOf(req));
        const o = overlayJson(view);
        if (!o) throw new RestError('API_NO_OVERLAY', `client ${view.mac} has no overlay (it has not booted since it was added or reset)`);
        return o;
      },
    },
    {
      method: 'GET', path: '/clients/{mac}/timeline', operationId: 'clientTimeline', tag: 'events', params: params.mac, query: query.timeline,
      summary: 'A client\'s boot events grouped by boot, oldest boot first',
      response: { status: 200, description: 'the timeline', schema: responseRef('Timeline') },
      errors: [404],
      handle: async (req) => {
        const mac = c.showClient(macOf(req)).mac;
        const events = c.store.events.list({ mac, limit: (req.query as { limit: number }).limit });
        return {
          mac,
          boots: groupByBoot(events).map((b) => ({
            ...toJson({ bootId: b.bootId, startedMs: b.startedMs, lastMs: b.lastMs, lastStep: b.lastStep, up: b.up }),
            events: list(b.events),
          })),
        };
      },
    },

    // ---- overlays, unknown machines, events ----
    {
      method: 'GET', path: '/overlays', operationId: 'listOverlays', tag: 'overlays',
      summary: 'List the overlays: size on disk, quota, I/O of their exports',
      response: { status: 200, description: 'the overlays', schema: arrayOf('Overlay') },
      errors: [],
      handle: async () => c.listClients().map(overlayJson).filter((o) => o !== null),
    },
    {
      method: 'GET', path: '/unknown-machines', operationId: 'listUnknownMachines', tag: 'clients',
      summary: 'List the machines that tried to boot but are not clients (adopt one with POST /clients)',
      response: { status: 200, description: 'the unknown machines, most recently seen first', schema: arrayOf('UnknownMachine') },
      errors: [],
      handle: async () => list(c.store.unknownMachines.list()),
    },
    {
      method: 'GET', path: '/events', operationId: 'listEvents', tag: 'events', query: query.events,
      summary: 'List boot events, oldest first: the newest `limit` of those matching mac and after',
      response: { status: 200, description: 'the events', schema: arrayOf('BootEvent') },
      errors: [],
      handle: async (req) => {
        const q = req.query as { mac?: string; after?: number; limit: number };
        return list(c.store.events.list({
          ...(q.mac !== undefined ? { mac: normalizeMac(q.mac)! } : {}),
          ...(q.after !== undefined ? { afterId: q.after } : {}),
          limit: q.limit,
        }));
      },
    },
    {
      method: 'GET', path: '/events/stream', operationId: 'streamEvents', tag: 'events', query: query.stream,
      summary: 'Server-sent events: new boot events (event: boot-event) and client changes (event: client)',
      description: [
        'text/event-stream. Read it with fetch() and the Authorization header.',
        '`event: boot-event` has `id:` the event id and `data:` a BootEvent;',
        '`event: client` has `data:` {change: added|changed|removed, mac, client: Client|null};',
        '`event: resync` means events were skipped: reload the lists.',
        'A comment line is sent every 15 s. Reconnect with ?after=<last id> or Last-Event-ID to miss nothing.',
      ].join(' '),
      response: { status: 200, description: 'the event stream', schema: { type: 'string' }, contentType: 'text/event-stream' },
      errors: [503],
      handle: async (req, reply) => {
        const q = req.query as { after?: number };
        const header = req.headers['last-event-id'];
        const fromHeader = typeof header === 'string' && /^\d{1,15}$/.test(header.trim()) ? Number(header.trim()) : null;
        // Refuse (503) before the reply is taken over, so the refusal is an ordinary JSON error.
        d.stream.attach(reply.raw, q.after ?? fromHeader);
        void reply.hijack();
        return undefined;
      },
    },
  ];
}
