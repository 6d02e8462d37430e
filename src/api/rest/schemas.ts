/**
 * JSON Schemas of the REST API: the request schemas fastify validates params,
 * query strings and bodies with (every object closed with
 * `additionalProperties: false`), and the response schemas the OpenAPI
 * document names under components/schemas. One source for both, so the
 * document describes what the routes check.
 *
 * Response schemas describe what toJson() makes of the catalogue's records:
 * `*Ms` times appear as `*At` ISO strings. They leave objects open
 * (additional properties allowed) so a field added to a record does not
 * break a client; the integration test validates every answer it gets
 * against them.
 *
 * The `description` of a request field doubles as the hint in a refusal
 * ("params.mac must match ...: a MAC address, e.g. 52:54:00:12:34:56").
 */
import { BOOT_STEPS, CLIENT_MODES, CLIENT_NAME, CLIENT_STATES, IMAGE_NAME } from '../../state/store.js';

export type JsonSchema = Record<string, unknown>;

/** Bytes of a JSON request body the API reads at most. */
export const BODY_LIMIT = 64 * 1024;
/** Largest version number a path or body may name (the store's are small integers). */
const MAX_VERSION = 999_999_999;

// ---- request pieces ----

export const MAC_PATTERN = '^[0-9A-Fa-f]{2}(?:[:-]?[0-9A-Fa-f]{2}){5}$';

export const macField: JsonSchema = {
  type: 'string', pattern: MAC_PATTERN, maxLength: 17,
  description: 'a MAC address, e.g. 52:54:00:12:34:56 (also 52-54-00-12-34-56 or 525400123456)',
};
export const imageNameField: JsonSchema = {
  type: 'string', pattern: IMAGE_NAME.source, maxLength: 64,
  description: 'an image name: 1-64 of a-z 0-9 . _ -, starting with a letter or digit',
};
const clientNameField: JsonSchema = {
  type: ['string', 'null'], pattern: CLIENT_NAME.source, maxLength: 63,
  description: 'a client name (may become its host name): 1-63 of A-Z a-z 0-9 . _ -, starting with a letter or digit; null for none',
};
export const versionField: JsonSchema = { type: 'integer', minimum: 1, maximum: MAX_VERSION, description: 'an image version number (1, 2, 3...)' };
const pinField: JsonSchema = { type: ['integer', 'null'], minimum: 1, maximum: MAX_VERSION, description: 'boot this version of the image instead of its current one; null to follow the current version' };
const modeField: JsonSchema = { type: 'string', enum: [...CLIENT_MODES], description: 'ephemeral: the disk starts clean at every boot; persistent: writes are kept across boots' };
const quotaField: JsonSchema = {
  type: ['integer', 'null'], minimum: 1, maximum: Number.MAX_SAFE_INTEGER,
  description: 'most bytes the client\'s overlay may allocate; null for no limit',
};

const closed = (properties: Record<string, JsonSchema>, required: string[] = [], extra: JsonSchema = {}): JsonSchema =>
  ({ type: 'object', properties, required, additionalProperties: false, ...extra });

export const params = {
  name: closed({ name: imageNameField }, ['name']),
  nameVersion: closed({ name: imageNameField, version: versionField }, ['name', 'version']),
  mac: closed({ mac: macField }, ['mac']),
};

export const query = {
  events: closed({
    mac: { ...macField, description: `only this machine's events: ${String(macField.description)}` },
    after: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'only events with an id greater than this (the id of the last event already seen)' },
    limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100, description: 'at most this many events, the newest ones (default 100)' },
  }),
  timeline: closed({
    limit: { type: 'integer', minimum: 1, maximum: 5000, default: 500, description: 'group at most this many of the client\'s newest events (default 500)' },
  }),
  stream: closed({
    after: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'first send the boot events with an id greater than this (at most 1000), then the new ones' },
  }),
};

export const bodies = {
  addClient: closed({
    mac: macField, image: imageNameField, mode: modeField, name: clientNameField, pinnedVersion: pinField,
  }, ['mac', 'image']),
  updateClient: closed({
    name: clientNameField, image: imageNameField, pinnedVersion: pinField, mode: modeField, quotaBytes: quotaField,
  }, [], { minProperties: 1 }),
  maintenance: closed({ on: { type: 'boolean', description: 'true: the client\'s overlay becomes a draft of the image\'s next version; false: back to normal' } }, ['on']),
  rollback: closed({ version: { ...versionField, description: 'the published version to make current; default: the published version before the current one' } }),
  commit: closed({
    publish: { type: 'boolean', description: 'publish the new version at once (default true); false holds it for clients pinned to it' },
    force: { type: 'boolean', description: 'commit even though a newer version was published since the draft began (its changes are not in the draft)' },
  }),
};

// ---- response schemas (components/schemas of the OpenAPI document) ----

const int: JsonSchema = { type: 'integer' };
const intOrNull: JsonSchema = { type: ['integer', 'null'] };
const str: JsonSchema = { type: 'string' };
const strOrNull: JsonSchema = { type: ['string', 'null'] };
const time: JsonSchema = { type: 'string', format: 'date-time' };
const timeOrNull: JsonSchema = { type: ['string', 'null'], format: 'date-time' };
const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });
const open = (properties: Record<string, JsonSchema>, description?: string): JsonSchema =>
  ({ type: 'object', ...(description ? { description } : {}), properties, required: Object.keys(properties) });

const imageProps = { id: int, name: str, description: strOrNull, currentVersion: intOrNull, createdAt: time };
const clientProps = {
  id: int, mac: str, name: strOrNull, imageId: int, image: str, pinnedVersion: intOrNull, mode: { type: 'string', enum: [...CLIENT_MODES] },
  bootVersionId: intOrNull, bootVersion: intOrNull, bootImage: strOrNull, bootId: strOrNull, bootToken: strOrNull,
  bootStartedAt: timeOrNull, bootAddress: strOrNull, lastAddress: strOrNull, lastSeenAt: timeOrNull,
  state: { type: 'string', enum: [...CLIENT_STATES] }, maintenance: { type: 'boolean' }, quotaBytes: intOrNull, createdAt: time, updatedAt: time,
};
const overlayRecordProps = {
  id: int, clientId: int, mac: str, versionId: int, image: str, version: int, dir: str, draft: { type: 'boolean' }, createdAt: time,
};
const ioProps = { readBps: { type: 'number' }, writeBps: { type: 'number' }, readBytes: int, writeBytes: int };

export const components: Record<string, JsonSchema> = {
  Error: {
    type: 'object', required: ['error', 'message'], additionalProperties: false,
    properties: {
      error: { type: 'string', description: 'a stable code (docs/errors.md), e.g. API_INVALID_REQUEST, STATE_NOT_FOUND, STATE_CONFLICT' },
      message: { type: 'string', description: 'what was wrong, naming the field or record' },
    },
  },
  Image: open(imageProps, 'an image: a name and its current (published) version'),
  ImageSummary: open({ ...imageProps, versions: { type: 'integer', description: 'how many versions it has' }, size: { ...intOrNull, description: 'bytes of the current version' } }, 'an image in the list'),
  ImageVersion: open({
    id: int, imageId: int, image: str, version: int, path: { type: 'string', description: 'the raw disk file, relative to the data directory' },
    size: int, sha256: str, createdAt: time, published: { type: 'boolean' }, bootInfo: { type: ['object', 'null'] },
  }, 'one immutable version of an image'),
  ImageDetail: {
    allOf: [ref('Image'), { type: 'object', required: ['versions'], properties: { versions: { type: 'array', items: ref('ImageVersion') } } }],
    description: 'an image with all its versions',
  },
  RollbackResult: open({ image: ref('Image'), from: intOrNull, to: int }, 'the image after a rollback, and the current version before and after'),
  Client: open(clientProps, 'a client machine as the catalogue records it'),
  OverlayRecord: open(overlayRecordProps, 'a client\'s copy-on-write overlay'),
  ClientOverlay: {
    allOf: [ref('OverlayRecord'), open({ path: { type: 'string', description: 'absolute path of its folder' }, diskBytes: { type: 'integer', description: 'bytes its files take on disk' } })],
    description: 'an overlay with where it is and what it takes on disk',
  },
  ClientView: {
    allOf: [ref('Client'), open({
      exportName: { ...strOrNull, description: 'the NBD export of the current boot' },
      overlay: { oneOf: [ref('ClientOverlay'), { type: 'null' }] },
      targetVersion: { ...intOrNull, description: 'the version its next boot runs (its pin, else the current one)' },
      stale: { type: 'boolean', description: 'its current boot runs another version than targetVersion; it takes the change at its next boot (persistent: at a reset)' },
    })],
    description: 'a client with its current export and overlay',
  },
  ClientDetail: {
    allOf: [ref('ClientView'), { type: 'object', required: ['events'], properties: { events: { type: 'array', items: ref('BootEvent'), description: 'its 20 newest boot events' } } }],
    description: 'a client, its overlay and its recent boot events',
  },
  DiscardResult: open({
    client: ref('Client'), discarded: { oneOf: [ref('OverlayRecord'), { type: 'null' }] },
    removed: { type: 'array', items: str, description: 'overlay folders deleted' },
    busy: { type: 'array', items: str, description: 'overlay folders still open in the server; deleted when released' },
  }, 'a client (as it was before a deletion) and the overlay discarded with it'),
  VersionDeleted: open({ image: str, version: int, removed: { type: 'array', items: str, description: 'files deleted' } }, 'a deleted version'),
  ImageDeleted: open({
    image: str, versions: { type: 'array', items: int, description: 'the versions deleted with it' },
    removed: { type: 'array', items: str, description: 'files deleted' },
  }, 'a deleted image'),
  Overlay: open({
    mac: str, name: strOrNull, image: str, version: int, dir: str, path: str, draft: { type: 'boolean' },
    diskBytes: { type: 'integer', description: 'bytes its files take on disk' },
    quotaBytes: { ...intOrNull, description: 'most bytes it may allocate; null for no limit' },
    createdAt: time, exportName: strOrNull,
    io: { oneOf: [open(ioProps, 'throughput of its current export'), { type: 'null' }] },
  }, 'a client\'s overlay: size, quota and I/O'),
  UnknownMachine: open({ mac: str, firstSeenAt: time, lastSeenAt: time, arch: strOrNull, attempts: int }, 'a machine that tried to boot but is not a client'),
  BootEvent: open({
    id: int, mac: str, bootId: strOrNull, step: { type: 'string', enum: [...BOOT_STEPS] }, timeAt: time, detail: { type: ['object', 'null'] },
  }, 'one step of a boot'),
  Timeline: open({
    mac: str,
    boots: {
      type: 'array', description: 'the boots, oldest first',
      items: open({
        bootId: { ...strOrNull, description: 'null for DHCP steps seen before the boot got its id' },
        startedAt: time, lastAt: time,
        lastStep: { type: 'string', enum: [...BOOT_STEPS] },
        up: { type: 'boolean', description: 'the OS reported in (os-up)' },
        events: { type: 'array', items: ref('BootEvent') },
      }, 'one boot and its steps'),
    },
  }, 'a client\'s boot events grouped by boot'),
  Status: open({
    name: str, version: str, startedAt: time, uptimeSeconds: { type: 'number' },
    counts: open({ images: int, versions: int, clients: int, clientsUp: int, clientsBooting: int, maintenance: int, overlays: int, unknownMachines: int }, 'what the catalogue holds'),
    services: { type: 'object', description: 'what the server reports of its services (addresses, states)' },
    streams: { type: 'integer', description: 'event streams open now' },
  }, 'the server and its catalogue'),
};

export const responseRef = ref;
