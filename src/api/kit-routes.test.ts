import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BootService } from '../boot/boot-service.js';
import { CaptureService } from '../images/capture/capture-service.js';
import { HttpServer } from './http-server.js';
import { kitRoutes, type KitRoutesOptions } from './kit-routes.js';

const boot: BootService = {
  async script() { return ''; },
  async bootFile() { return null; },
  async firmwareFile() { return null; },
  async osUp() { return false; },
};
const TOKEN = 'unit-token';
const auth = { authorization: `Bearer ${TOKEN}` };
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function withApp(t: { after(fn: () => Promise<void> | void): void }, o: Partial<KitRoutesOptions> = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'dl-kit-routes-'));
  const server = new HttpServer({ boot });
  await kitRoutes({ dataDir, captureToken: TOKEN, publish: async () => 'v', limits: { minChunkSize: 1024, reserveBytes: 0 }, freeSpace: async () => 1e12, ...o })(server.app);
  await server.app.ready();
  t.after(async () => {
    await server.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
  return server.app;
}

test('GET /kit is open and names the server the client reached', async (t) => {
  const app = await withApp(t);
  const r = await app.inject({ url: '/kit', headers: { host: '10.77.0.1:8080' } });
  assert.equal(r.statusCode, 200);
  assert.match(r.headers['content-type'] as string, /^text\/plain/);
  assert.match(r.body, /^KIT_DEFAULT_SERVER='http:\/\/10\.77\.0\.1:8080'$/m);
  // A Host header that could break out of the shell quotes is not used.
  const evil = await app.inject({ url: '/kit', headers: { host: "x'$(evil-host-command)'" } });
  assert.equal(evil.statusCode, 200);
  assert.doesNotMatch(evil.body, /evil-host-command/);
  assert.match(evil.body, /^KIT_DEFAULT_SERVER='http:\/\/[0-9a-f.:[\]]+(:\d+)?'$/m);
});

test('publicUrl wins over the Host header; an unsafe one is refused up front', async (t) => {
  const app = await withApp(t, { publicUrl: 'http://boot.lab:8080/' });
  const r = await app.inject({ url: '/kit', headers: { host: 'other:1' } });
  assert.match(r.body, /^KIT_DEFAULT_SERVER='http:\/\/boot\.lab:8080'$/m);
  assert.throws(() => kitRoutes({ dataDir: '/x', publish: async () => null, publicUrl: "http://x';id;'" }), /cannot be placed/);
});

test('no capture token configured: capture is off (403) and the kit still served', async (t) => {
  const app = await withApp(t, { captureToken: '' });
  const r = await app.inject({ method: 'POST', url: '/capture', headers: auth, payload: { name: 'a', size: 1, chunkSize: 1024 } });
  assert.equal(r.statusCode, 403);
  assert.equal(r.json().error, 'CAPTURE_DISABLED');
  assert.equal((await app.inject({ url: '/kit' })).statusCode, 200);
});

test('chunk refusals before the body is read: announced length, busy slots; bad JSON is a 400', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'dl-kit-routes-svc-'));
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  const service = new CaptureService({ dataDir, publish: async () => null, limits: { minChunkSize: 1024, maxInflightChunks: 1, reserveBytes: 0 }, freeSpace: async () => 1e12 });
  await service.open();
  t.after(() => service.close());
  const app = await withApp(t, { service });
  const start = await app.inject({ method: 'POST', url: '/capture', headers: auth, payload: { name: 'a', size: 3000, chunkSize: 2048 } });
  assert.equal(start.statusCode, 201);
  const id = start.json().id as string;
  const body = randomBytes(2048);
  const put = (n: number, payload: Buffer, extra: Record<string, string> = {}) => app.inject({
    method: 'PUT', url: `/capture/${id}/chunk/${n}`, payload,
    headers: { ...auth, 'content-type': 'application/octet-stream', 'x-sha256': sha(payload), ...extra },
  });
  // The last chunk is 952 bytes: 2048 announced is refused before the body is read.
  const long = await put(1, body);
  assert.equal(long.statusCode, 400);
  assert.equal(long.json().error, 'CAPTURE_CHUNK_LENGTH');
  assert.equal((await put(7, body)).json().error, 'CAPTURE_BAD_REQUEST');
  const text = await put(0, body, { 'content-type': 'text/plain' });
  assert.equal(text.statusCode, 400);
  assert.equal(text.json().error, 'CAPTURE_BAD_REQUEST');
  const odd = await put(0, body, { 'content-type': 'application/x-odd' });
  assert.equal(odd.statusCode, 415);
  assert.equal(odd.json().error, 'CAPTURE_BAD_REQUEST');

  assert.equal(service.tryAcquireChunkSlot(), true);
  const busy = await put(0, body);
  assert.equal(busy.statusCode, 429);
  assert.equal(busy.json().error, 'CAPTURE_BUSY');
  service.releaseChunkSlot();
  assert.equal((await put(0, body)).statusCode, 201);
  // The slot of the finished request was given back.
  assert.equal(service.tryAcquireChunkSlot(), true);
  service.releaseChunkSlot();

  const badJson = await app.inject({ method: 'POST', url: '/capture', headers: { ...auth, 'content-type': 'application/json' }, payload: '{"name":' });
  assert.equal(badJson.statusCode, 400);
  assert.equal(badJson.json().error, 'CAPTURE_BAD_REQUEST');
  const chunks = await app.inject({ url: `/capture/${id}/chunks`, headers: auth });
  assert.equal(chunks.body, `0 ${sha(body)}\n`);
  assert.equal((await app.inject({ method: 'DELETE', url: `/capture/${id}`, headers: auth })).statusCode, 204);
  assert.equal((await app.inject({ url: `/capture/${id}`, headers: auth })).statusCode, 404);
});
