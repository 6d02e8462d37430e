/**
 * The REST API end to end on loopback: the HTTP service with restApi() as
 * its extension, over a real catalogue in a temporary data directory, driven
 * with fetch() as the dashboard and curl drive it.
 *
 * - every route: refused without a token, with a wrong token, with another
 *   scheme (401, WWW-Authenticate: Bearer, JSON body), and answered with it;
 *   a last test checks that every operation of the document was called both
 *   ways;
 * - bad params, queries and bodies (wrong types, extra fields, a bad MAC or
 *   image name, a negative quota, not JSON, too large): 4xx naming the
 *   field, and the catalogue exactly as before;
 * - unknown ids 404, conflicts 409, the catalogue unchanged after each;
 * - success paths change the catalogue as asked (checked through Catalogue,
 *   not through the API), and every answer validates against the response
 *   schema the OpenAPI document gives for it;
 * - the document validates as OpenAPI 3.1 and lists exactly the routes
 *   fastify registered;
 * - the event stream delivers boot events recorded and client changes made
 *   after it opened, keep-alive comments, replay after an id, a stream
 *   limit, and ends when the server closes.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get as httpGet, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { Validator } from '@seriousme/openapi-schema-validator';
import { NO_BOOT } from '../helpers/no-boot.js';
import { HttpServer } from '../../src/api/http-server.js';
import { loadOrCreateApiToken, restApi } from '../../src/api/rest/index.js';
import { Catalogue } from '../../src/app/catalogue.js';
import { toJson } from '../../src/app/json.js';

const MiB = 1024 * 1024;
const PREFIX = '/api/v1';
const IO = { readBps: 1000, writeBps: 2000, readBytes: 3 * MiB, writeBytes: 4 * MiB };
const MAX_STREAMS = 4;

let dir: string;
let dataDir: string;
let catalogue: Catalogue;
let server: HttpServer;
let base: string;
let token: string;
let doc: any;
const registered: Array<{ method: string; url: string }> = [];
/** Operations seen answered with 2xx and with 401: `METHOD /api/v1/template`. */
const answered = new Set<string>();
const refused401 = new Set<string>();
let ajv: Ajv2020;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'dl-rest-api-'));
  dataDir = join(dir, 'data');
  catalogue = Catalogue.open(dataDir);
  const raw = (name: string, mib: number, fill: number): string => {
    const b = Buffer.alloc(mib * MiB);
    for (let i = 0; i < b.length; i += 4096) b[i] = (fill + i / 4096) & 0xff;
    const p = join(dir, name);
    writeFileSync(p, b);
    return p;
  };
  await catalogue.addImageVersion('deb', raw('a.raw', 2, 1));
  await catalogue.addImageVersion('deb', raw('b.raw', 2, 2));
  await catalogue.addImageVersion('deb', raw('c.raw', 3, 3), { publish: false });
  await catalogue.addImageVersion('alpine', raw('d.raw', 1, 4));
  await catalogue.addImageVersion('spare', raw('e.raw', 1, 5));
  catalogue.addClient({ mac: '52:54:00:00:00:01', image: 'deb', name: 'pc-01' });
  catalogue.addClient({ mac: '52:54:00:00:00:02', image: 'deb', mode: 'persistent' });

  token = loadOrCreateApiToken(dataDir);
  server = new HttpServer({
    boot: NO_BOOT,
    extensions: [
      async (app) => {
        app.addHook('onRoute', (r) => {
          for (const m of [r.method].flat()) registered.push({ method: m, url: r.url });
        });
      },
      restApi({
        catalogue, dataDir, token,
        status: () => ({ services: { nbd: { port: 10809 } } }),
        ioRates: (exportName) => (exportName ? IO : null),
        stream: { pollMs: 50, keepAliveMs: 400, maxStreams: MAX_STREAMS },
      }),
    ],
  });
  const addr = await server.listen(0, '127.0.0.1');
  base = `http://127.0.0.1:${addr.port}`;

  const res = await fetch(`${base}${PREFIX}/openapi.json`);
  assert.equal(res.status, 200);
  doc = await res.json();
  ajv = new Ajv2020({ strict: false, allErrors: true });
  ajv.addFormat('date-time', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  ajv.addSchema({ ...doc, $id: 'urn:diskless:openapi' });
});

after(async () => {
  await server?.close();
  catalogue?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// helpers

interface Answer {
  status: number;
  body: any;
  headers: Headers;
}

/** The document's path template a concrete path matches, e.g. /api/v1/clients/{mac}. */
function templateOf(method: string, path: string): string | null {
  const bare = path.split('?')[0]!;
  for (const [tpl, item] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)) {
    if (!item[method.toLowerCase()]) continue;
    const re = new RegExp('^' + tpl.replace(/\{[^}]+\}/g, '[^/]+') + '$');
    if (re.test(bare)) return tpl;
  }
  return null;
}

/** Validates a 2xx answer against the response schema the document gives for it. */
function checkAgainstDocument(method: string, path: string, status: number, body: unknown): void {
  const tpl = templateOf(method, path);
  assert.ok(tpl, `${method} ${path} is not in the OpenAPI document`);
  const pointer = `/paths/${tpl.replace(/~/g, '~0').replace(/\//g, '~1')}/${method.toLowerCase()}/responses/${status}/content/application~1json/schema`;
  const validate = ajv.getSchema(`urn:diskless:openapi#${pointer}`);
  assert.ok(validate, `the document has no schema for ${status} of ${method} ${tpl}`);
  assert.ok(validate(body), `${method} ${path} answered what its schema does not allow: ${JSON.stringify(validate.errors)}\n${JSON.stringify(body).slice(0, 800)}`);
}

async function api(method: string, path: string, options: { body?: unknown; raw?: string; type?: string; auth?: string | null } = {}): Promise<Answer> {
  const headers: Record<string, string> = {};
  const auth = options.auth === undefined ? `Bearer ${token}` : options.auth;
  if (auth !== null) headers.authorization = auth;
  let body: string | undefined;
  if (options.raw !== undefined) body = options.raw;
  else if (options.body !== undefined) body = JSON.stringify(options.body);
  if (body !== undefined) headers['content-type'] = options.type ?? 'application/json';
  const res = await fetch(`${base}${PREFIX}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await res.text();
  let parsed: unknown = text;
  if ((res.headers.get('content-type') ?? '').includes('application/json')) parsed = JSON.parse(text);
  const tpl = templateOf(method, PREFIX + path);
  if (tpl && res.status >= 200 && res.status < 300) {
    answered.add(`${method} ${tpl}`);
    checkAgainstDocument(method, PREFIX + path, res.status, parsed);
  }
  if (tpl && res.status === 401) refused401.add(`${method} ${tpl}`);
  return { status: res.status, body: parsed, headers: res.headers };
}

/** Expects a JSON refusal: status, code, and a message containing every `mentions`. */
function refused(a: Answer, status: number, code: string | RegExp, ...mentions: string[]): void {
  assert.equal(a.status, status, `expected ${status}, got ${a.status}: ${JSON.stringify(a.body)}`);
  assert.equal(typeof a.body, 'object', `the refusal is JSON: ${String(a.body)}`);
  assert.deepEqual(Object.keys(a.body).sort(), ['error', 'message']);
  if (typeof code === 'string') assert.equal(a.body.error, code);
  else assert.match(a.body.error, code);
  for (const m of mentions) assert.ok(a.body.message.includes(m), `message ${JSON.stringify(a.body.message)} should mention ${m}`);
}

/** Everything the API could change, read through the catalogue itself. */
function snapshot(): string {
  return JSON.stringify({
    images: catalogue.listImages().map((i) => ({ ...i, versions: catalogue.showImage(i.name).versions })),
    // Bytes on disk are the file system's business (opening an overlay makes its files).
    clients: catalogue.listClients().map((c) => ({ ...c, overlay: c.overlay ? { ...c.overlay, diskBytes: 0 } : null })),
    unknown: catalogue.store.unknownMachines.list(),
  });
}

/** Runs refusals and asserts the catalogue did not change. */
async function unchanged(fn: () => Promise<void>): Promise<void> {
  const before = snapshot();
  await fn();
  assert.equal(snapshot(), before, 'a refused request changed the catalogue');
}

// ---------------------------------------------------------------------------
// the document

test('the OpenAPI document is valid OpenAPI 3.1 and is served without a token', async () => {
  const res = await fetch(`${base}${PREFIX}/openapi.json`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /application\/json/);
  assert.equal(doc.openapi, '3.1.0');
  const v = new Validator();
  const result = await v.validate(doc);
  assert.equal(v.version, '3.1');
  assert.ok(result.valid, `not valid OpenAPI 3.1: ${JSON.stringify(result.errors, null, 1)}`);
  assert.deepEqual(doc.components.securitySchemes.bearerAuth, { type: 'http', scheme: 'bearer', description: doc.components.securitySchemes.bearerAuth.description });
  answered.add(`GET ${PREFIX}/openapi.json`);
});

test('every route fastify registered under /api/v1 is in the document, and nothing else is', () => {
  const fromFastify = registered.filter((r) => r.url.startsWith(PREFIX) && r.method !== 'HEAD')
    .map((r) => `${r.method} ${r.url}`).sort();
  const fromDoc: string[] = [];
  for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)) {
    for (const method of Object.keys(item)) fromDoc.push(`${method.toUpperCase()} ${path.replace(/\{([^}]+)\}/g, ':$1')}`);
  }
  assert.ok(fromFastify.length >= 20, `only ${fromFastify.length} routes seen`);
  assert.deepEqual(fromFastify, fromDoc.sort());
  assert.equal(new Set(fromDoc).size, fromDoc.length);
});

test('docs/api.md lists every operation of the document, and no other', () => {
  const md = readFileSync(new URL('../../../docs/api.md', import.meta.url), 'utf8');
  const listed = [...md.matchAll(/^\| `(GET|POST|PATCH|DELETE) (\/api\/v1\/[^`?]*)/gm)].map((m) => `${m[1]} ${m[2]}`).sort();
  const fromDoc: string[] = [];
  for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)) {
    for (const method of Object.keys(item)) fromDoc.push(`${method.toUpperCase()} ${path}`);
  }
  assert.deepEqual(listed, fromDoc.sort());
});

// ---------------------------------------------------------------------------
// authentication

test('no token, a wrong token or another scheme: 401 JSON with WWW-Authenticate: Bearer, on every route', async () => {
  await unchanged(async () => {
    for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
      for (const method of Object.keys(item)) {
        if (item[method].security?.length === 0) continue;
        const concrete = path.replace('{name}', 'deb').replace('{version}', '1').replace('{mac}', '52:54:00:00:00:01').slice(PREFIX.length);
        const body = method === 'get' || method === 'delete' ? undefined : { on: true };
        const none = await api(method.toUpperCase(), concrete, { auth: null, body });
        refused(none, 401, 'API_UNAUTHORIZED', 'Bearer');
        assert.match(none.headers.get('www-authenticate') ?? '', /^Bearer realm="diskless"$/);
        const wrong = await api(method.toUpperCase(), concrete, { auth: `Bearer ${'0'.repeat(64)}`, body });
        refused(wrong, 401, 'API_UNAUTHORIZED', 'wrong');
        assert.match(wrong.headers.get('www-authenticate') ?? '', /^Bearer realm="diskless", error="invalid_token"$/);
        // The right token under another scheme, a token with a suffix, an empty bearer.
        refused(await api(method.toUpperCase(), concrete, { auth: `Basic ${token}`, body }), 401, 'API_UNAUTHORIZED');
        refused(await api(method.toUpperCase(), concrete, { auth: `Bearer ${token}x`, body }), 401, 'API_UNAUTHORIZED');
        refused(await api(method.toUpperCase(), concrete, { auth: 'Bearer ', body }), 401, 'API_UNAUTHORIZED');
      }
    }
  });
});

test('an unknown path under /api/v1 is 401 without the token and 404 JSON with it', async () => {
  refused(await api('GET', '/nothing-here', { auth: null }), 401, 'API_UNAUTHORIZED');
  refused(await api('GET', '/nothing-here'), 404, 'API_NOT_FOUND', '/api/v1/nothing-here');
  refused(await api('PUT', '/clients'), 404, 'API_NOT_FOUND');
  // The boot routes beside it are untouched by the API's authentication.
  assert.equal((await fetch(`${base}/healthz`)).status, 200);
});

test('the bearer scheme name is case-insensitive (RFC 6750 uses the HTTP auth-scheme rules)', async () => {
  const a = await api('GET', '/images', { auth: `bearer ${token}` });
  assert.equal(a.status, 200);
});

// ---------------------------------------------------------------------------
// server

test('GET /status: version, uptime, counts, services, data directory', async () => {
  const a = await api('GET', '/status');
  assert.equal(a.status, 200);
  assert.equal(a.body.name, 'diskless');
  assert.match(a.body.version, /^\d+\.\d+\.\d+/);
  assert.ok(a.body.uptimeSeconds >= 0);
  assert.deepEqual(a.body.counts, {
    images: 3, versions: 5, clients: 2, clientsUp: 0, clientsBooting: 0, maintenance: 0, overlays: 0, unknownMachines: 0,
  });
  assert.deepEqual(a.body.services.services, { nbd: { port: 10809 } });
  assert.equal(a.body.services.dataDir.path, dataDir);
  assert.ok(a.body.services.dataDir.freeBytes > 0);
});

// ---------------------------------------------------------------------------
// images

test('GET /images and /images/{name}: what the catalogue lists, as the CLI prints it', async () => {
  const a = await api('GET', '/images');
  assert.equal(a.status, 200);
  assert.deepEqual(a.body, catalogue.listImages().map((i) => toJson(i)));
  assert.deepEqual(a.body.map((i: any) => [i.name, i.currentVersion, i.versions]), [['alpine', 1, 1], ['deb', 2, 3], ['spare', 1, 1]]);
  assert.equal(typeof a.body[0].createdAt, 'string');
  assert.equal(a.body[0].createdMs, undefined);

  const s = await api('GET', '/images/deb');
  assert.equal(s.status, 200);
  const { image, versions } = catalogue.showImage('deb');
  assert.deepEqual(s.body, { ...toJson(image), versions: versions.map((v) => toJson(v)) });
  assert.deepEqual(s.body.versions.map((v: any) => [v.version, v.published]), [[1, true], [2, true], [3, false]]);

  const l = await api('GET', '/images/deb/versions');
  assert.deepEqual(l.body, s.body.versions);
  const one = await api('GET', '/images/deb/versions/3');
  assert.equal(one.status, 200);
  assert.deepEqual(one.body, s.body.versions[2]);
});

test('images: bad names and versions are 400 naming the parameter; unknown ones 404', async () => {
  await unchanged(async () => {
    refused(await api('GET', '/images/Bad_Name'), 400, 'API_INVALID_REQUEST', 'params.name', 'image name');
    refused(await api('GET', `/images/${'a'.repeat(65)}`), 400, 'API_INVALID_REQUEST', 'params.name');
    refused(await api('GET', '/images/deb/versions/0'), 400, 'API_INVALID_REQUEST', 'params.version', '>= 1');
    refused(await api('GET', '/images/deb/versions/two'), 400, 'API_INVALID_REQUEST', 'params.version', 'integer');
    refused(await api('GET', '/images/deb/versions/1.5'), 400, 'API_INVALID_REQUEST', 'params.version');
    refused(await api('POST', '/images/deb/versions/-1/publish'), 400, 'API_INVALID_REQUEST', 'params.version');
    refused(await api('DELETE', '/images/BAD'), 400, 'API_INVALID_REQUEST', 'params.name');
    refused(await api('GET', '/images/nope'), 404, 'STATE_NOT_FOUND', 'nope');
    refused(await api('GET', '/images/nope/versions'), 404, 'STATE_NOT_FOUND', 'nope');
    refused(await api('GET', '/images/deb/versions/99'), 404, 'STATE_NOT_FOUND', '99');
    refused(await api('POST', '/images/nope/rollback'), 404, 'STATE_NOT_FOUND', 'nope');
    refused(await api('POST', '/images/deb/rollback', { body: { version: 'two' } }), 400, 'API_INVALID_REQUEST', 'body.version', 'integer');
    refused(await api('POST', '/images/deb/rollback', { body: { version: 0 } }), 400, 'API_INVALID_REQUEST', 'body.version');
    refused(await api('POST', '/images/deb/rollback', { body: { version: 1, force: true } }), 400, 'API_INVALID_REQUEST', 'body.force');
    refused(await api('POST', '/images/deb/rollback', { body: [1] }), 400, 'API_INVALID_REQUEST', 'body', 'object');
  });
});

test('POST /images/{name}/versions/{version}/publish: a held version becomes current', async () => {
  await unchanged(async () => {
    refused(await api('POST', '/images/deb/versions/9/publish'), 404, 'STATE_NOT_FOUND');
    refused(await api('POST', '/images/nope/versions/1/publish'), 404, 'STATE_NOT_FOUND');
  });
  const a = await api('POST', '/images/deb/versions/3/publish');
  assert.equal(a.status, 200, JSON.stringify(a.body));
  assert.equal(a.body.version, 3);
  assert.equal(a.body.published, true);
  assert.equal(catalogue.showImage('deb').image.currentVersion, 3);
  assert.equal(catalogue.store.images.requireVersion('deb', 3).published, true);
});

test('POST /images/{name}/rollback: back to the previous published version, or to the one named', async () => {
  assert.equal(catalogue.showImage('deb').image.currentVersion, 3);
  const a = await api('POST', '/images/deb/rollback');
  assert.equal(a.status, 200, JSON.stringify(a.body));
  assert.deepEqual([a.body.from, a.body.to, a.body.image.currentVersion], [3, 2, 2]);
  assert.equal(catalogue.showImage('deb').image.currentVersion, 2);
  const b = await api('POST', '/images/deb/rollback', { body: { version: 3 } });
  assert.equal(b.status, 200, JSON.stringify(b.body));
  assert.deepEqual([b.body.from, b.body.to], [2, 3]);
  const c = await api('POST', '/images/deb/rollback', { body: {} });
  assert.equal(c.status, 200);
  assert.equal(catalogue.showImage('deb').image.currentVersion, 2);
  await unchanged(async () => {
    refused(await api('POST', '/images/deb/rollback', { body: { version: 42 } }), 404, 'STATE_NOT_FOUND');
    refused(await api('POST', '/images/alpine/rollback'), 409, 'APP_NOTHING_TO_ROLL_BACK', 'alpine');
  });
});

// ---------------------------------------------------------------------------
// clients

test('GET /clients and /clients/{mac}: the catalogue\'s views, with recent events', async () => {
  const a = await api('GET', '/clients');
  assert.equal(a.status, 200);
  assert.deepEqual(a.body, catalogue.listClients().map((c) => toJson(c)));
  assert.deepEqual(a.body.map((c: any) => [c.mac, c.name, c.mode]), [['52:54:00:00:00:01', 'pc-01', 'ephemeral'], ['52:54:00:00:00:02', null, 'persistent']]);

  catalogue.store.events.record({ mac: '52:54:00:00:00:01', step: 'dhcp-discover' });
  // Any MAC spelling the catalogue accepts names the same client.
  for (const spelling of ['52:54:00:00:00:01', '52-54-00-00-00-01', '525400000001', '52:54:00:00:00:01'.toUpperCase()]) {
    const s = await api('GET', `/clients/${spelling}`);
    assert.equal(s.status, 200, spelling);
    assert.equal(s.body.mac, '52:54:00:00:00:01');
    assert.deepEqual(s.body.events.map((e: any) => e.step), ['dhcp-discover']);
  }
  await unchanged(async () => {
    refused(await api('GET', '/clients/52:54:00:00:00'), 400, 'API_INVALID_REQUEST', 'params.mac', 'MAC address');
    refused(await api('GET', '/clients/zz:54:00:00:00:01'), 400, 'API_INVALID_REQUEST', 'params.mac');
    refused(await api('GET', '/clients/52:54:00:99:99:99'), 404, 'STATE_NOT_FOUND', '52:54:00:99:99:99');
  });
});

test('POST /clients: bad bodies are 400 naming the field and add nothing', async () => {
  const mac = '52:54:00:00:00:10';
  await unchanged(async () => {
    refused(await api('POST', '/clients', { body: { mac: 'not-a-mac', image: 'deb' } }), 400, 'API_INVALID_REQUEST', 'body.mac', 'MAC address');
    refused(await api('POST', '/clients', { body: { mac, image: 'Deb Image' } }), 400, 'API_INVALID_REQUEST', 'body.image', 'image name');
    refused(await api('POST', '/clients', { body: { mac, image: 'deb', colour: 'red' } }), 400, 'API_INVALID_REQUEST', 'body.colour', 'not a known field');
    refused(await api('POST', '/clients', { body: { mac, image: 'deb', pinnedVersion: '2' } }), 400, 'API_INVALID_REQUEST', 'body.pinnedVersion', 'integer');
    refused(await api('POST', '/clients', { body: { mac, image: 'deb', pinnedVersion: -2 } }), 400, 'API_INVALID_REQUEST', 'body.pinnedVersion');
    refused(await api('POST', '/clients', { body: { mac, image: 'deb', mode: 'sometimes' } }), 400, 'API_INVALID_REQUEST', 'body.mode', 'ephemeral');
    refused(await api('POST', '/clients', { body: { mac, image: 'deb', name: 'no spaces allowed' } }), 400, 'API_INVALID_REQUEST', 'body.name');
    refused(await api('POST', '/clients', { body: { mac, image: 'deb', name: 7 } }), 400, 'API_INVALID_REQUEST', 'body.name');
    refused(await api('POST', '/clients', { body: { mac: 525400000010, image: 'deb' } }), 400, 'API_INVALID_REQUEST', 'body.mac', 'string');
    refused(await api('POST', '/clients', { body: { mac } }), 400, 'API_INVALID_REQUEST', 'body.image', 'required');
    refused(await api('POST', '/clients', { body: 'mac' }), 400, 'API_INVALID_REQUEST', 'body');
    refused(await api('POST', '/clients', { body: null }), 400, 'API_INVALID_REQUEST', 'body');
    refused(await api('POST', '/clients'), 400, 'API_INVALID_REQUEST', 'body');
    refused(await api('POST', '/clients', { raw: '{"mac": "52:54:00:00:00:10", "image": ' }), 400, 'API_INVALID_REQUEST', 'body', 'JSON');
    refused(await api('POST', '/clients', { raw: 'mac=52:54:00:00:00:10&image=deb', type: 'application/x-www-form-urlencoded' }), 415, 'API_UNSUPPORTED_MEDIA_TYPE');
    refused(await api('POST', '/clients', { raw: '{"mac": "52:54:00:00:00:10", "image": "deb"}', type: 'text/plain' }), 415, 'API_UNSUPPORTED_MEDIA_TYPE');
    refused(await api('POST', '/clients', { raw: JSON.stringify({ mac, image: 'deb', name: 'x'.repeat(70 * 1024) }) }), 413, 'API_BODY_TOO_LARGE');
    refused(await api('POST', '/clients', { raw: '{"mac": "52:54:00:00:00:10", "image": "deb", "__proto__": {"x": 1}}' }), 400, 'API_INVALID_REQUEST');
    // Well-formed, but the catalogue refuses: unknown image or version (404), a MAC or name taken (409).
    refused(await api('POST', '/clients', { body: { mac, image: 'nope' } }), 404, 'STATE_NOT_FOUND', 'nope');
    refused(await api('POST', '/clients', { body: { mac, image: 'deb', pinnedVersion: 99 } }), 404, 'STATE_NOT_FOUND', '99');
    refused(await api('POST', '/clients', { body: { mac: '52:54:00:00:00:01', image: 'alpine' } }), 409, 'STATE_CONFLICT', '52:54:00:00:00:01');
    refused(await api('POST', '/clients', { body: { mac, image: 'deb', name: 'pc-01' } }), 409, 'STATE_CONFLICT', 'pc-01');
  });
});

test('POST /clients adds a client, and adopts an unknown machine', async () => {
  catalogue.store.unknownMachines.seen('52:54:00:00:00:20', { arch: 'x86-64 UEFI' });
  catalogue.store.unknownMachines.seen('52:54:00:00:00:21');
  const u = await api('GET', '/unknown-machines');
  assert.equal(u.status, 200);
  assert.deepEqual(u.body.map((m: any) => m.mac).sort(), ['52:54:00:00:00:20', '52:54:00:00:00:21']);
  assert.equal(u.body.find((m: any) => m.mac === '52:54:00:00:00:20').arch, 'x86-64 UEFI');

  const a = await api('POST', '/clients', { body: { mac: '52-54-00-00-00-20', image: 'alpine', mode: 'persistent', name: 'lab-20', pinnedVersion: 1 } });
  assert.equal(a.status, 201, JSON.stringify(a.body));
  assert.equal(a.headers.get('location'), '/api/v1/clients/52:54:00:00:00:20');
  assert.deepEqual([a.body.mac, a.body.image, a.body.mode, a.body.name, a.body.pinnedVersion], ['52:54:00:00:00:20', 'alpine', 'persistent', 'lab-20', 1]);
  const c = catalogue.showClient('52:54:00:00:00:20');
  assert.deepEqual([c.image, c.mode, c.name, c.pinnedVersion], ['alpine', 'persistent', 'lab-20', 1]);
  assert.deepEqual(catalogue.store.unknownMachines.list().map((m) => m.mac), ['52:54:00:00:00:21']);

  const b = await api('POST', '/clients', { body: { mac: '52:54:00:00:00:30', image: 'deb' } });
  assert.equal(b.status, 201);
  assert.equal(catalogue.showClient('52:54:00:00:00:30').mode, 'ephemeral');
});

test('PATCH /clients/{mac}: bad changes are 400 naming the field, unknown things 404, taken names 409; nothing changes', async () => {
  const mac = '52:54:00:00:00:02';
  await unchanged(async () => {
    refused(await api('PATCH', `/clients/${mac}`, { body: { quotaBytes: -1 } }), 400, 'API_INVALID_REQUEST', 'body.quotaBytes', '>= 1');
    refused(await api('PATCH', `/clients/${mac}`, { body: { quotaBytes: 0 } }), 400, 'API_INVALID_REQUEST', 'body.quotaBytes');
    refused(await api('PATCH', `/clients/${mac}`, { body: { quotaBytes: 1.5 } }), 400, 'API_INVALID_REQUEST', 'body.quotaBytes', 'integer');
    refused(await api('PATCH', `/clients/${mac}`, { body: { quotaBytes: '10G' } }), 400, 'API_INVALID_REQUEST', 'body.quotaBytes');
    refused(await api('PATCH', `/clients/${mac}`, { body: { mode: 'persistent', colour: 'red' } }), 400, 'API_INVALID_REQUEST', 'body.colour');
    refused(await api('PATCH', `/clients/${mac}`, { body: { mode: 'Persistent' } }), 400, 'API_INVALID_REQUEST', 'body.mode');
    refused(await api('PATCH', `/clients/${mac}`, { body: { image: '../etc' } }), 400, 'API_INVALID_REQUEST', 'body.image');
    refused(await api('PATCH', `/clients/${mac}`, { body: { pinnedVersion: true } }), 400, 'API_INVALID_REQUEST', 'body.pinnedVersion');
    refused(await api('PATCH', `/clients/${mac}`, { body: {} }), 400, 'API_INVALID_REQUEST', 'body', 'at least 1 field');
    refused(await api('PATCH', '/clients/bad-mac', { body: { mode: 'ephemeral' } }), 400, 'API_INVALID_REQUEST', 'params.mac');
    refused(await api('PATCH', '/clients/52:54:00:99:99:99', { body: { mode: 'ephemeral' } }), 404, 'STATE_NOT_FOUND');
    refused(await api('PATCH', `/clients/${mac}`, { body: { image: 'nope' } }), 404, 'STATE_NOT_FOUND', 'nope');
    refused(await api('PATCH', `/clients/${mac}`, { body: { pinnedVersion: 77 } }), 404, 'STATE_NOT_FOUND', '77');
    // A valid change next to an invalid one: neither is made.
    refused(await api('PATCH', `/clients/${mac}`, { body: { mode: 'ephemeral', image: 'nope' } }), 404, 'STATE_NOT_FOUND');
    refused(await api('PATCH', `/clients/${mac}`, { body: { name: 'pc-01', mode: 'ephemeral' } }), 409, 'STATE_CONFLICT', 'pc-01');
  });
});

test('PATCH /clients/{mac}: image, pin, mode, name and quota change as asked', async () => {
  const mac = '52:54:00:00:00:02';
  const a = await api('PATCH', `/clients/${mac}`, { body: { name: 'pc-02', mode: 'ephemeral', pinnedVersion: 1, quotaBytes: 8 * MiB } });
  assert.equal(a.status, 200, JSON.stringify(a.body));
  let c = catalogue.showClient(mac);
  assert.deepEqual([c.name, c.mode, c.pinnedVersion, c.quotaBytes, c.image], ['pc-02', 'ephemeral', 1, 8 * MiB, 'deb']);
  assert.deepEqual([a.body.name, a.body.mode, a.body.pinnedVersion, a.body.quotaBytes], ['pc-02', 'ephemeral', 1, 8 * MiB]);

  const b = await api('PATCH', `/clients/${mac}`, { body: { image: 'alpine' } });
  assert.equal(b.status, 200);
  c = catalogue.showClient(mac);
  assert.deepEqual([c.image, c.pinnedVersion], ['alpine', null], 'changing the image drops the pin');

  const d = await api('PATCH', `/clients/${mac}`, { body: { name: null, quotaBytes: null, mode: 'persistent', image: 'deb' } });
  assert.equal(d.status, 200);
  c = catalogue.showClient(mac);
  assert.deepEqual([c.name, c.quotaBytes, c.mode, c.image], [null, null, 'persistent', 'deb']);
});

test('overlays: GET /overlays and /clients/{mac}/overlay with size, quota and I/O; 404 without one', async () => {
  const mac = '52:54:00:00:00:01';
  await unchanged(async () => {
    refused(await api('GET', `/clients/${mac}/overlay`), 404, 'API_NO_OVERLAY', mac);
    refused(await api('GET', '/clients/52:54:00:99:99:99/overlay'), 404, 'STATE_NOT_FOUND');
    refused(await api('GET', '/clients/x/overlay'), 400, 'API_INVALID_REQUEST', 'params.mac');
  });
  const none = await api('GET', '/overlays');
  assert.deepEqual(none.body, []);

  const boot = await catalogue.newBoot(mac);
  const a = await api('GET', `/clients/${mac}/overlay`);
  assert.equal(a.status, 200, JSON.stringify(a.body));
  const view = catalogue.showClient(mac);
  assert.deepEqual([a.body.mac, a.body.image, a.body.version, a.body.dir, a.body.exportName], [mac, 'deb', boot.version, view.overlay!.dir, boot.exportName]);
  assert.equal(a.body.diskBytes, view.overlay!.diskBytes);
  assert.equal(a.body.quotaBytes, view.quotaBytes);
  assert.deepEqual(a.body.io, IO);
  const l = await api('GET', '/overlays');
  assert.deepEqual(l.body, [a.body]);
  const s = await api('GET', '/status');
  assert.equal(s.body.counts.overlays, 1);
  assert.equal(s.body.counts.clientsBooting, 1);
});

test('GET /clients/{mac}/timeline groups the client\'s events by boot', async () => {
  const mac = '52:54:00:00:00:30';
  const rec = (step: any, bootId: string | null, timeMs: number): void => { catalogue.store.events.record({ mac, step, bootId, timeMs }); };
  rec('dhcp-discover', null, 1_000); rec('dhcp-ack', null, 1_010); rec('script', 'boot-a', 1_020); rec('os-up', 'boot-a', 1_500);
  rec('dhcp-discover', null, 5_000); rec('script', 'boot-b', 5_020);
  const a = await api('GET', `/clients/${mac}/timeline`);
  assert.equal(a.status, 200, JSON.stringify(a.body));
  assert.equal(a.body.mac, mac);
  assert.deepEqual(a.body.boots.map((b: any) => [b.bootId, b.events.length, b.up, b.lastStep, b.startedAt]), [
    ['boot-a', 4, true, 'os-up', new Date(1_000).toISOString()],
    ['boot-b', 2, false, 'script', new Date(5_000).toISOString()],
  ]);
  const last = await api('GET', `/clients/${mac}/timeline?limit=2`);
  assert.deepEqual(last.body.boots.map((b: any) => b.bootId), ['boot-b']);
  await unchanged(async () => {
    refused(await api('GET', `/clients/${mac}/timeline?limit=0`), 400, 'API_INVALID_REQUEST', 'query.limit');
    refused(await api('GET', `/clients/${mac}/timeline?limit=5001`), 400, 'API_INVALID_REQUEST', 'query.limit');
    refused(await api('GET', `/clients/${mac}/timeline?limt=5`), 400, 'API_INVALID_REQUEST', 'query.limt');
    refused(await api('GET', '/clients/52:54:00:99:99:99/timeline'), 404, 'STATE_NOT_FOUND');
  });
});

test('GET /events filters by mac, after and limit', async () => {
  const all = catalogue.store.events.list({ limit: 1000 });
  const a = await api('GET', '/events?limit=1000');
  assert.equal(a.status, 200);
  assert.deepEqual(a.body, all.map((e) => toJson(e)));
  const byMac = await api('GET', '/events?mac=52-54-00-00-00-30');
  assert.deepEqual(byMac.body.map((e: any) => e.mac), all.filter((e) => e.mac === '52:54:00:00:00:30').map((e) => e.mac));
  assert.ok(byMac.body.length >= 6);
  const pivot = all[all.length - 3]!.id;
  const after = await api('GET', `/events?after=${pivot}`);
  assert.deepEqual(after.body.map((e: any) => e.id), all.filter((e) => e.id > pivot).map((e) => e.id));
  const limited = await api('GET', '/events?limit=2');
  assert.deepEqual(limited.body.map((e: any) => e.id), all.slice(-2).map((e) => e.id));
  refused(await api('GET', '/events?limit=0'), 400, 'API_INVALID_REQUEST', 'query.limit');
  refused(await api('GET', '/events?limit=1001'), 400, 'API_INVALID_REQUEST', 'query.limit');
  refused(await api('GET', '/events?limit=ten'), 400, 'API_INVALID_REQUEST', 'query.limit', 'integer');
  refused(await api('GET', '/events?after=-1'), 400, 'API_INVALID_REQUEST', 'query.after');
  refused(await api('GET', '/events?mac=nope'), 400, 'API_INVALID_REQUEST', 'query.mac');
  refused(await api('GET', '/events?since=5'), 400, 'API_INVALID_REQUEST', 'query.since');
  refused(await api('GET', '/events?limit=1&limit=2'), 400, 'API_INVALID_REQUEST', 'query.limit');
});

test('POST /clients/{mac}/maintenance turns maintenance on and off', async () => {
  const mac = '52:54:00:00:00:30';
  await unchanged(async () => {
    refused(await api('POST', `/clients/${mac}/maintenance`, { body: { on: 'yes' } }), 400, 'API_INVALID_REQUEST', 'body.on', 'boolean');
    refused(await api('POST', `/clients/${mac}/maintenance`, { body: { on: 1 } }), 400, 'API_INVALID_REQUEST', 'body.on');
    refused(await api('POST', `/clients/${mac}/maintenance`, { body: {} }), 400, 'API_INVALID_REQUEST', 'body.on', 'required');
    refused(await api('POST', `/clients/${mac}/maintenance`, { body: { on: true, publish: true } }), 400, 'API_INVALID_REQUEST', 'body.publish');
    refused(await api('POST', `/clients/${mac}/maintenance`), 400, 'API_INVALID_REQUEST', 'body');
    refused(await api('POST', '/clients/52:54:00:99:99:99/maintenance', { body: { on: true } }), 404, 'STATE_NOT_FOUND');
  });
  const a = await api('POST', `/clients/${mac}/maintenance`, { body: { on: true } });
  assert.equal(a.status, 200, JSON.stringify(a.body));
  assert.equal(a.body.maintenance, true);
  assert.equal(catalogue.showClient(mac).maintenance, true);
  const b = await api('POST', `/clients/${mac}/maintenance`, { body: { on: false } });
  assert.equal(b.status, 200, JSON.stringify(b.body));
  assert.equal(catalogue.showClient(mac).maintenance, false);
});

test('POST /clients/{mac}/commit: refused (409) without maintenance or a draft, 422 when the draft is no bootable disk; nothing changes', async () => {
  const mac = '52:54:00:00:00:30';
  await unchanged(async () => {
    refused(await api('POST', '/clients/52:54:00:99:99:99/commit'), 404, 'STATE_NOT_FOUND');
    refused(await api('POST', `/clients/${mac}/commit`, { body: { publish: 'yes' } }), 400, 'API_INVALID_REQUEST', 'body.publish', 'boolean');
    refused(await api('POST', `/clients/${mac}/commit`, { body: { publish: true, now: 1 } }), 400, 'API_INVALID_REQUEST', 'body.now');
    refused(await api('POST', `/clients/${mac}/commit`, { body: { publish: true } }), 409, 'APP_NOT_IN_MAINTENANCE', mac);
  });
  assert.equal((await api('POST', `/clients/${mac}/maintenance`, { body: { on: true } })).status, 200);
  await unchanged(async () => {
    refused(await api('POST', `/clients/${mac}/commit`), 409, 'APP_NO_DRAFT', mac);
  });
  await catalogue.newBoot(mac);
  assert.equal(catalogue.showClient(mac).overlay?.draft, true);
  // The test images are a few MiB of patterned bytes: no partition table, no file system.
  await unchanged(async () => {
    refused(await api('POST', `/clients/${mac}/commit`, { body: { publish: false } }), 422, /^IMAGES_/);
  });
  assert.equal((await api('POST', `/clients/${mac}/maintenance`, { body: { on: false } })).status, 200);
  await catalogue.resetClient(mac);
});

test('POST /clients/{mac}/reset discards the overlay and ends the boot', async () => {
  const mac = '52:54:00:00:00:01';
  assert.ok(catalogue.showClient(mac).overlay);
  const a = await api('POST', `/clients/${mac}/reset`);
  assert.equal(a.status, 200, JSON.stringify(a.body));
  assert.equal(a.body.client.mac, mac);
  assert.equal(a.body.client.bootId, null);
  assert.ok(a.body.discarded);
  const c = catalogue.showClient(mac);
  assert.equal(c.overlay, null);
  assert.equal(c.bootId, null);
  // A second reset has nothing to discard.
  const b = await api('POST', `/clients/${mac}/reset`);
  assert.equal(b.status, 200);
  assert.equal(b.body.discarded, null);
  refused(await api('POST', '/clients/52:54:00:99:99:99/reset'), 404, 'STATE_NOT_FOUND');
  refused(await api('POST', '/clients/nope/reset'), 400, 'API_INVALID_REQUEST', 'params.mac');
});

test('DELETE /images/{name}/versions/{version}: refused while in use (409, naming why), else deleted', async () => {
  const current = catalogue.showImage('deb').image.currentVersion!;
  await unchanged(async () => {
    refused(await api('DELETE', `/images/deb/versions/${current}`), 409, 'APP_VERSION_IN_USE', 'current');
    refused(await api('DELETE', '/images/deb/versions/99'), 404, 'STATE_NOT_FOUND');
    refused(await api('DELETE', '/images/nope/versions/1'), 404, 'STATE_NOT_FOUND');
  });
  const unused = catalogue.showImage('deb').versions.find((v) => v.version !== current && !catalogue.listClients().some((c) => c.pinnedVersion === v.version))!;
  const a = await api('DELETE', `/images/deb/versions/${unused.version}`);
  assert.equal(a.status, 200, JSON.stringify(a.body));
  assert.ok(!catalogue.showImage('deb').versions.some((v) => v.version === unused.version));
});

test('DELETE /clients/{mac}: the client and its overlay are gone; unknown ones 404', async () => {
  await unchanged(async () => {
    refused(await api('DELETE', '/clients/52:54:00:99:99:99'), 404, 'STATE_NOT_FOUND');
    refused(await api('DELETE', '/clients/99'), 400, 'API_INVALID_REQUEST', 'params.mac');
  });
  await catalogue.newBoot('52:54:00:00:00:20');
  const overlay = catalogue.showClient('52:54:00:00:00:20').overlay!;
  const a = await api('DELETE', '/clients/52:54:00:00:00:20');
  assert.equal(a.status, 200, JSON.stringify(a.body));
  assert.equal(a.body.client.mac, '52:54:00:00:00:20');
  assert.equal(a.body.discarded.dir, overlay.dir);
  assert.ok(!catalogue.store.overlays.list().some((o) => o.dir === overlay.dir));
  assert.ok(!catalogue.listClients().some((c) => c.mac === '52:54:00:00:00:20'));
  refused(await api('GET', '/clients/52:54:00:00:00:20'), 404, 'STATE_NOT_FOUND');
});

test('DELETE /images/{name}: refused while clients use it (409), else the image is gone', async () => {
  await unchanged(async () => {
    refused(await api('DELETE', '/images/deb'), 409, 'APP_IMAGE_IN_USE', '52:54:00:00:00:01');
    refused(await api('DELETE', '/images/nope'), 404, 'STATE_NOT_FOUND');
  });
  const a = await api('DELETE', '/images/spare');
  assert.equal(a.status, 200, JSON.stringify(a.body));
  assert.deepEqual([a.body.image, a.body.versions], ['spare', [1]]);
  assert.ok(!catalogue.listImages().some((i) => i.name === 'spare'));
  refused(await api('GET', '/images/spare'), 404, 'STATE_NOT_FOUND');
});

// ---------------------------------------------------------------------------
// the event stream

interface Frame {
  event: string | null;
  id: string | null;
  data: string | null;
  comment: string | null;
}

/** Reads server-sent events from a fetch() body, frame by frame (HTML "Server-sent events", parsing rules). */
class SseReader {
  private buf = '';
  private readonly frames: Frame[] = [];
  private readonly decoder = new TextDecoder();
  constructor(private readonly reader: ReadableStreamDefaultReader<Uint8Array>) {}

  /** Waits (bounded) for a frame `match` accepts; frames before it are consumed. */
  async next(match: (f: Frame) => boolean, timeoutMs = 5000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex(match);
      if (i >= 0) return this.frames.splice(0, i + 1)[i]!;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching frame within ${timeoutMs} ms; saw ${JSON.stringify(this.frames)}`);
      let timer: NodeJS.Timeout | undefined;
      const chunk = await Promise.race([
        this.reader.read(),
        new Promise<'timeout'>((r) => { timer = setTimeout(() => r('timeout'), left); }),
      ]);
      clearTimeout(timer);
      if (chunk === 'timeout') continue;
      if (chunk.done) throw new Error('the stream ended');
      this.buf += this.decoder.decode(chunk.value, { stream: true });
      let end: number;
      while ((end = this.buf.indexOf('\n\n')) >= 0) {
        const block = this.buf.slice(0, end);
        this.buf = this.buf.slice(end + 2);
        const f: Frame = { event: null, id: null, data: null, comment: null };
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) f.comment = line.slice(1).trim();
          else if (line.startsWith('event: ')) f.event = line.slice(7);
          else if (line.startsWith('id: ')) f.id = line.slice(4);
          else if (line.startsWith('data: ')) f.data = (f.data === null ? '' : f.data + '\n') + line.slice(6);
        }
        this.frames.push(f);
      }
    }
  }

  cancel(): Promise<void> {
    return this.reader.cancel().catch(() => undefined);
  }
}

async function openStream(query = '', headers: Record<string, string> = {}): Promise<{ res: Response; sse: SseReader | null; ctrl: AbortController }> {
  const ctrl = new AbortController();
  const res = await fetch(`${base}${PREFIX}/events/stream${query}`, { headers: { authorization: `Bearer ${token}`, ...headers }, signal: ctrl.signal });
  const ok = res.status === 200;
  if (ok) {
    answered.add(`GET ${PREFIX}/events/stream`);
    return { res, sse: new SseReader(res.body!.getReader()), ctrl };
  }
  return { res, sse: null, ctrl };
}

test('the event stream delivers boot events recorded and client changes made after it opened', async () => {
  const { res, sse, ctrl } = await openStream();
  try {
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    await sse!.next((f) => f.comment?.startsWith('connected') === true);

    const e = catalogue.store.events.record({ mac: '52:54:00:00:00:30', step: 'kernel', bootId: 'boot-b', detail: { bytes: 123 } });
    const f = await sse!.next((x) => x.event === 'boot-event');
    assert.equal(f.id, String(e.id));
    assert.deepEqual(JSON.parse(f.data!), toJson(e));

    // A change made beside the API (as the CLI in another process would): seen through the store.
    catalogue.store.clients.seen('52:54:00:00:00:30', '192.0.2.30');
    const c = await sse!.next((x) => x.event === 'client');
    const change = JSON.parse(c.data!);
    assert.equal(change.change, 'changed');
    assert.equal(change.mac, '52:54:00:00:00:30');
    assert.equal(change.client.lastAddress, '192.0.2.30');

    // An API change shows up too.
    assert.equal((await api('POST', '/clients', { body: { mac: '52:54:00:00:00:40', image: 'alpine' } })).status, 201);
    const added = await sse!.next((x) => x.event === 'client' && JSON.parse(x.data!).mac === '52:54:00:00:00:40');
    assert.equal(JSON.parse(added.data!).change, 'added');

    // An image change (a new version, as an import from the CLI makes one): an image event.
    const before = catalogue.showImage('alpine').versions.length;
    const file = join(dir, 'stream-version.raw');
    writeFileSync(file, Buffer.alloc(1024 * 1024, 0x3c));
    await catalogue.addImageVersion('alpine', file, { publish: false });
    const img = await sse!.next((x) => x.event === 'image' && JSON.parse(x.data!).name === 'alpine');
    const imageChange = JSON.parse(img.data!);
    assert.equal(imageChange.change, 'changed');
    assert.equal(imageChange.image.versions.length, before + 1);
    assert.equal(imageChange.image.versions.at(-1).published, false);

    // Quiet: keep-alive comments (400 ms here; 15 s by default).
    await sse!.next((x) => x.comment === 'keep-alive', 3000);
  } finally {
    ctrl.abort();
    await sse?.cancel();
  }
});

test('the event stream replays boot events after ?after= or Last-Event-ID, needs the token, and is bounded in number', async () => {
  const first = catalogue.store.events.record({ mac: '52:54:00:00:00:30', step: 'initrd', bootId: 'boot-b' });
  const second = catalogue.store.events.record({ mac: '52:54:00:00:00:30', step: 'nbd-connect', bootId: 'boot-b' });
  const open: Array<{ sse: SseReader | null; ctrl: AbortController }> = [];
  try {
    const a = await openStream(`?after=${first.id - 1}`);
    open.push(a);
    assert.deepEqual([(await a.sse!.next((f) => f.event === 'boot-event')).id, (await a.sse!.next((f) => f.event === 'boot-event')).id], [String(first.id), String(second.id)]);
    const b = await openStream('', { 'last-event-id': String(first.id) });
    open.push(b);
    assert.equal((await b.sse!.next((f) => f.event === 'boot-event')).id, String(second.id));

    const noToken = await fetch(`${base}${PREFIX}/events/stream`);
    assert.equal(noToken.status, 401);
    assert.equal((await noToken.json()).error, 'API_UNAUTHORIZED');
    refused(await api('GET', '/events/stream?after=x'), 400, 'API_INVALID_REQUEST', 'query.after');

    while (open.length < MAX_STREAMS) open.push(await openStream());
    const over = await openStream();
    assert.equal(over.res.status, 503);
    assert.equal((await over.res.json()).error, 'API_STREAM_LIMIT');
    assert.equal((await api('GET', '/status')).body.streams, MAX_STREAMS);
  } finally {
    for (const o of open) {
      o.ctrl.abort();
      await o.sse?.cancel();
    }
  }
  // Closed streams are let go: a new one opens.
  const deadline = Date.now() + 3000;
  while ((await api('GET', '/status')).body.streams > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal((await api('GET', '/status')).body.streams, 0);
});

// ---------------------------------------------------------------------------
// coverage, and shutdown (last)

test('every operation of the document was answered (2xx) and refused without a token (401) by these tests', () => {
  const missing2xx: string[] = [];
  const missing401: string[] = [];
  for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
    for (const [method, op] of Object.entries(item)) {
      const key = `${method.toUpperCase()} ${path}`;
      // A successful commit needs a bootable disk (sfdisk, mkfs.ext4, debugfs): rest-api-commit.test.ts.
      if (op.operationId !== 'commitMaintenance' && !answered.has(key)) missing2xx.push(key);
      if (op.security?.length !== 0 && !refused401.has(key)) missing401.push(key);
    }
  }
  assert.deepEqual(missing2xx, [], 'operations never answered with 2xx');
  assert.deepEqual(missing401, [], 'operations never refused without a token');
});

test('closing the server ends open event streams instead of waiting for them', async () => {
  // A server of its own, read with node:http: fetch()'s connection pool keeps sockets of its own
  // (after an aborted stream, for seconds) that a shutdown would wait for, whatever the server does.
  const own = new HttpServer({ boot: NO_BOOT, extensions: [restApi({ catalogue, dataDir, token })] });
  const { port } = await own.listen(0, '127.0.0.1');
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    httpGet({ host: '127.0.0.1', port, path: `${PREFIX}/events/stream`, headers: { authorization: `Bearer ${token}` }, agent: false }, resolve).on('error', reject);
  });
  assert.equal(res.statusCode, 200);
  let text = '';
  const ended = new Promise<void>((resolve) => {
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => { text += chunk; });
    res.on('end', resolve);
    res.on('close', resolve);
  });
  for (const started = Date.now(); !text.includes(': connected') && Date.now() - started < 5000;) await new Promise((r) => setTimeout(r, 20));
  assert.ok(text.includes(': connected'));
  const t0 = Date.now();
  await own.close();
  await ended;
  assert.ok(Date.now() - t0 < 2000, `close() took ${Date.now() - t0} ms with a stream open`);
});
