import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { HttpServer } from './http-server.js';
import type { BootFile, BootService } from '../boot/boot-service.js';

const dir = mkdtempSync(join(tmpdir(), 'dl-http-'));
const kernel = randomBytes(100_000);
const kernelPath = join(dir, 'vmlinuz');
writeFileSync(kernelPath, kernel);
const kernelFile: BootFile = { path: kernelPath, size: kernel.length, etag: '"k1"', lastModified: new Date(0) };
const calls: string[] = [];

const boot: BootService = {
  async script(r) { calls.push(`script ${r.mac} ${r.baseUrl}`); return `#!ipxe\necho hello ${r.mac}\n`; },
  async bootFile(r) { calls.push(`file ${r.mac} ${r.bootId} ${r.name}`); return r.bootId === 'good' && r.name === 'vmlinuz' ? kernelFile : null; },
  async firmwareFile(name) { return name === 'ipxe.efi' ? kernelFile : null; },
  async osUp(r) { return r.bootId === 'good'; },
};

const server = new HttpServer({ boot });
before(async () => { await server.app.ready(); });
after(async () => { await server.close(); rmSync(dir, { recursive: true, force: true }); });

test('per-client script by MAC in any common spelling', async () => {
  for (const m of ['52-54-00-12-34-56', '52:54:00:12:34:56', '525400123456.ipxe']) {
    const r = await server.app.inject({ url: `/ipxe/${m}`, headers: { host: '10.77.0.1:8080' } });
    assert.equal(r.statusCode, 200);
    assert.equal(r.body, '#!ipxe\necho hello 52:54:00:12:34:56\n');
    assert.equal(r.headers['cache-control'], 'no-store');
  }
  assert.equal(calls.at(-1), 'script 52:54:00:12:34:56 http://10.77.0.1:8080');
  const bad = await server.app.inject({ url: '/ipxe/not-a-mac' });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error, 'HTTP_BAD_MAC');
});

test('the generic entry chains with iPXE expanding the MAC', async () => {
  const r = await server.app.inject({ url: '/ipxe/boot.ipxe', headers: { host: 'srv:80' } });
  assert.equal(r.body, '#!ipxe\nchain http://srv:80/ipxe/${mac:hexhyp}\n');
});

test('boot files: whole, Range, If-None-Match, If-Range, 416, HEAD', async () => {
  const url = '/boot/52-54-00-12-34-56/good/vmlinuz';
  const full = await server.app.inject({ url });
  assert.equal(full.statusCode, 200);
  assert.equal(full.headers['content-length'], String(kernel.length));
  assert.equal(full.headers.etag, '"k1"');
  assert.ok(full.rawPayload.equals(kernel));

  const part = await server.app.inject({ url, headers: { range: 'bytes=1000-1999' } });
  assert.equal(part.statusCode, 206);
  assert.equal(part.headers['content-range'], `bytes 1000-1999/${kernel.length}`);
  assert.ok(part.rawPayload.equals(kernel.subarray(1000, 2000)));

  const stale = await server.app.inject({ url, headers: { range: 'bytes=0-9', 'if-range': '"old"' } });
  assert.equal(stale.statusCode, 200, 'If-Range with another validator must send the whole file');

  assert.equal((await server.app.inject({ url, headers: { 'if-none-match': '"k1"' } })).statusCode, 304);
  const unsat = await server.app.inject({ url, headers: { range: `bytes=${kernel.length}-` } });
  assert.equal(unsat.statusCode, 416);
  assert.equal(unsat.headers['content-range'], `bytes */${kernel.length}`);
  const head = await server.app.inject({ url, method: 'HEAD' });
  assert.equal(head.statusCode, 200);
  assert.equal(head.headers['content-length'], String(kernel.length));
});

test('another boot id, unknown files and path tricks get 404 with a message', async () => {
  for (const url of ['/boot/52-54-00-12-34-56/other/vmlinuz', '/boot/52-54-00-12-34-56/good/initrd.img',
    '/boot/52-54-00-12-34-56/good/..%2f..%2fetc%2fpasswd', '/boot/52-54-00-12-34-56/bad%20id/vmlinuz', '/firmware/..%2fx', '/firmware/nope.efi', '/nope']) {
    const r = await server.app.inject({ url });
    assert.equal(r.statusCode, 404, url);
    assert.equal(typeof r.json().message, 'string');
  }
  assert.equal((await server.app.inject({ url: '/firmware/ipxe.efi' })).statusCode, 200);
});

test('OS-up report only for the current boot', async () => {
  assert.equal((await server.app.inject({ method: 'POST', url: '/boot/525400123456/good/up' })).statusCode, 204);
  assert.equal((await server.app.inject({ method: 'POST', url: '/boot/525400123456/old/up' })).statusCode, 404);
});
