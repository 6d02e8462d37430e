/**
 * `diskless serve` in a child process, with the catalogue changed by the
 * CLI in another process while it runs (as an administrator would), and a
 * real NBD client: a new boot from the CLI retires the overlay the server
 * holds. SIGTERM stops it with exit 0; a bad configuration is refused with
 * every problem listed.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { COMMANDS } from '../../src/protocols/nbd/constants.js';
import { NbdTestClient } from '../helpers/nbd-client.js';
import { patternBytes } from '../helpers/nbd.js';
import { until } from '../helpers/nbd-devices.js';

const BIN = fileURLToPath(new URL('../../../bin/diskless', import.meta.url));
const MAC = '52:54:00:00:02:01';
const SIZE = 2 * 1024 * 1024;

let dir: string;
let data: string;
const children = new Set<ChildProcess>();
const clients: NbdTestClient[] = [];

function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: dir, encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

interface Served {
  child: ChildProcess;
  port: number;
  log: () => string;
  exited: Promise<number | null>;
}

function serve(config: object): Promise<Served> {
  const path = join(dir, `config-${Date.now()}.json`);
  writeFileSync(path, JSON.stringify(config));
  const child = spawn(process.execPath, [BIN, 'serve', '--config', path], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => {
    children.delete(child);
    resolve(code);
  }));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start:\n${out}`)), 20_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      // Ready once every service started ("diskless started"); the NBD port is in its own line.
      if (!out.includes('"msg":"diskless started"')) return;
      for (const line of out.split('\n')) {
        if (!line.includes('"service started"')) continue;
        const rec = JSON.parse(line) as { service: string; port: number };
        if (rec.service === 'nbd') {
          clearTimeout(timer);
          resolve({ child, port: rec.port, log: () => out, exited });
        }
      }
    });
    child.stderr!.on('data', (c: Buffer) => { out += c.toString(); });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`serve exited with ${code}:\n${out}`), { code, out }));
    });
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'diskless-serve-'));
  data = join(dir, 'data');
  writeFileSync(join(dir, 'golden.raw'), patternBytes(SIZE, 3));
  assert.equal((await cli('image', 'add', 'golden', 'golden.raw', '--raw', '--data-dir', data)).code, 0);
  assert.equal((await cli('client', 'add', MAC, '--image', 'golden', '--data-dir', data)).code, 0);
});

after(() => {
  for (const c of clients) c.close();
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('diskless serve', () => {
  test('serves the catalogue; a new boot from the CLI retires the overlay the server holds; SIGTERM stops it', async () => {
    const s = await serve({ dataDir: data, nbd: { host: '127.0.0.1', port: 0 }, http: { host: '127.0.0.1', port: 0 }, tftp: { enabled: false } });
    try {
      await servesAndStops(s);
    } catch (err) {
      throw Object.assign(err as Error, { message: `${(err as Error).message}\n--- server log\n${s.log()}` });
    }
  });

  test('a bad configuration is refused with every problem, exit 1', async () => {
    await assert.rejects(serve({ dataDir: data, nbd: { port: 'x' }, http: { port: -1 } }), (err: { code?: number; out?: string }) => {
      assert.equal(err.code, 1);
      assert.match(err.out!, /nbd\.port: must be an integer 0-65535, got "x"/);
      assert.match(err.out!, /http\.port: must be an integer 0-65535, got -1/);
      assert.match(err.out!, /\[CONFIG_INVALID\]/);
      return true;
    });
  });
});

async function servesAndStops(s: Served): Promise<void> {
  const boot1 = JSON.parse((await cli('client', 'new-boot', MAC, '--data-dir', data, '--json')).stdout) as { exportName: string; overlay: string };
  const c1 = await NbdTestClient.open(s.port, boot1.exportName);
  clients.push(c1);
  await c1.write(0, Buffer.alloc(4096, 0x44));
  assert.deepEqual(await c1.read(0, 4096), Buffer.alloc(4096, 0x44));

  // The server holds the overlay open, so the CLI cannot delete it; the
  // server does, at the next open or its periodic check, whichever comes first.
  const r = await cli('client', 'new-boot', MAC, '--data-dir', data, '--json');
  assert.equal(r.code, 0, r.stderr);
  const boot2 = JSON.parse(r.stdout) as { exportName: string; overlay: string; overlayReset: boolean };
  assert.equal(boot2.overlayReset, true);
  assert.notEqual(boot2.overlay, boot1.overlay);
  const c2 = await NbdTestClient.open(s.port, boot2.exportName);
  clients.push(c2);
  assert.deepEqual(await c2.read(0, 4096), patternBytes(SIZE, 3).subarray(0, 4096), 'a clean overlay');
  await until(() => !existsSync(boot1.overlay), 5000, 'the retired overlay deleted');
  assert.notEqual(await c1.errorOf(COMMANDS.NBD_CMD_WRITE, 0, 512, 0, Buffer.alloc(512)), 0, 'the old boot cannot write any more');
  const stale = await NbdTestClient.connect(s.port);
  clients.push(stale);
  await assert.rejects(stale.go(boot1.exportName), 'the old export name is gone');

  const show = JSON.parse((await cli('client', 'show', MAC, '--data-dir', data, '--json')).stdout) as { bootAddress: string; events: { step: string }[] };
  assert.equal(show.bootAddress, '127.0.0.1');
  assert.ok(show.events.some((e) => e.step === 'nbd-connect'));

  // A reset from the CLI reaches the running server's connections within seconds.
  const reset = await cli('client', 'reset', MAC, '--data-dir', data, '--json');
  assert.equal(reset.code, 0, reset.stderr);
  // Open in the server, so the CLI leaves it (unless the server's own check was quicker).
  const { busy, removed } = JSON.parse(reset.stdout) as { busy: string[]; removed: string[] };
  assert.deepEqual([...busy, ...removed].map((d) => join(data, d)), [boot2.overlay]);
  await until(() => !existsSync(boot2.overlay), 10_000, 'the reset overlay retired and deleted by the server');
  assert.notEqual(await c2.errorOf(COMMANDS.NBD_CMD_WRITE, 0, 512, 0, Buffer.alloc(512)), 0, 'the reset disk cannot be written any more');

  s.child.kill('SIGTERM');
  assert.equal(await s.exited, 0, s.log());
  assert.match(s.log(), /"msg":"diskless stopped"/);
}
