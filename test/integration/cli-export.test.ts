/**
 * `diskless export FILE` in a child process, driven by libnbd (nbdinfo and
 * its Python binding): read-write, read-only, and a persistent copy-on-write overlay
 * that leaves the file's bytes and mtime alone and keeps its writes across
 * restarts. Stops cleanly (exit 0) on SIGTERM and SIGINT.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requirePeers } from '../helpers/peers.js';
import { assertPeerOk, requireLibnbdPython, runPeer } from '../helpers/nbd-peers.js';
import { patternBytes } from '../helpers/nbd.js';

const BIN = fileURLToPath(new URL('../../../bin/diskless', import.meta.url));
const SIZE = 4 * 1024 * 1024;

let dir: string;
const children = new Set<ChildProcess>();

interface Running {
  child: ChildProcess;
  uri: string;
  output: () => string;
  exited: Promise<number | null>;
}

/** Starts `diskless export ...` and waits for its "export ready" log line. */
function startExport(...args: string[]): Promise<Running> {
  const child = spawn(process.execPath, [BIN, 'export', ...args], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => {
    children.delete(child);
    resolve(code);
  }));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`export did not start in time:\n${out}`)), 20_000);
    const onData = (chunk: Buffer): void => {
      out += chunk.toString();
      for (const line of out.split('\n')) {
        if (!line.startsWith('{')) continue;
        const rec = JSON.parse(line) as { msg?: string; uri?: string };
        if (rec.msg === 'export ready' && rec.uri) {
          clearTimeout(timer);
          resolve({ child, uri: rec.uri, output: () => out, exited });
          return;
        }
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (c: Buffer) => { out += c.toString(); });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`export exited with ${code} before it was ready:\n${out}`));
    });
  });
}

async function stop(r: Running, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  r.child.kill(signal);
  const timer = setTimeout(() => r.child.kill('SIGKILL'), 20_000);
  const code = await r.exited;
  clearTimeout(timer);
  return code;
}

function tool(cmd: string, args: string[]): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { encoding: 'buffer', timeout: 30_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr: stderr.toString() });
    });
  });
}

/** libnbd's Python binding does the writes and reads (nbdinfo only reads metadata). */
let python = 'python3';

const nbdWrite = (uri: string, offset: number, data: Buffer) =>
  runPeer(python, ['-c', `import nbd; h = nbd.NBD(); h.connect_uri(${JSON.stringify(uri)}); h.pwrite(bytes.fromhex('${data.toString('hex')}'), ${offset}); h.flush(); h.shutdown()`]);

async function nbdRead(uri: string, offset: number, length: number): Promise<Buffer> {
  const r = await runPeer(python, ['-c', `import nbd; h = nbd.NBD(); h.connect_uri(${JSON.stringify(uri)}); print(h.pread(${length}, ${offset}).hex()); h.shutdown()`]);
  assertPeerOk(r, 'python3 nbd pread');
  return Buffer.from(r.stdout.trim(), 'hex');
}

const sha = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

function peers(t: TestContext): boolean {
  if (!requirePeers(t, 'nbdinfo')) return false;
  const p = requireLibnbdPython(t);
  if (!p) return false;
  python = p;
  return true;
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'diskless-export-'));
});
after(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('diskless export', () => {
  test('--cow: writes go to the overlay; the file is untouched; the overlay persists', async (t) => {
    if (!peers(t)) return;
    const file = join(dir, 'golden.raw');
    const golden = patternBytes(SIZE, 5);
    writeFileSync(file, golden);
    const before = statSync(file);
    const shaBefore = sha(file);

    const first = await startExport('golden.raw', '--cow', 'overlay', '--listen', '127.0.0.1:0', '--name', 'disk');
    assert.match(first.uri, /^nbd:\/\/127\.0\.0\.1:\d+\/disk$/);
    const info = await tool('nbdinfo', ['--json', first.uri]);
    assert.equal(info.code, 0, info.stderr);
    const exp = (JSON.parse(info.stdout.toString()) as { exports: { 'export-size': number; 'is_read_only': boolean }[] }).exports[0]!;
    assert.equal(exp['export-size'], SIZE);
    assert.equal(exp.is_read_only, false);
    const list = await tool('nbdinfo', ['--list', first.uri.replace(/\/disk$/, '')]);
    assert.match(list.stdout.toString(), /export="disk"/);

    const data = patternBytes(12_288, 9);
    assertPeerOk(await nbdWrite(first.uri, 8192 + 512, data), 'write');
    assert.deepEqual(await nbdRead(first.uri, 8192 + 512, data.length), data);
    assert.deepEqual(await nbdRead(first.uri, 0, 8192), golden.subarray(0, 8192), 'untouched blocks come from the file');
    assert.equal(await stop(first), 0, first.output());
    assert.match(first.output(), /"msg":"stopping","signal":"SIGTERM"/);

    assert.equal(sha(file), shaBefore, 'file bytes unchanged');
    assert.equal(statSync(file).mtimeMs, before.mtimeMs, 'file mtime unchanged');

    // The overlay is persistent: a new export over the same folder shows the writes.
    const second = await startExport('golden.raw', '--cow', 'overlay', '--listen', '127.0.0.1:0');
    assert.deepEqual(await nbdRead(second.uri, 8192 + 512, data.length), data);
    assert.equal(await stop(second, 'SIGINT'), 0, second.output());
  });

  test('--read-only refuses writes and never changes the file', async (t) => {
    if (!peers(t)) return;
    const file = join(dir, 'ro.raw');
    writeFileSync(file, patternBytes(SIZE, 6));
    const shaBefore = sha(file);
    const r = await startExport('ro.raw', '--read-only', '--listen', '127.0.0.1:0');
    const info = await tool('nbdinfo', ['--json', r.uri]);
    assert.equal((JSON.parse(info.stdout.toString()) as { exports: { is_read_only: boolean }[] }).exports[0]!.is_read_only, true);
    const w = await nbdWrite(r.uri, 0, Buffer.alloc(4096, 1));
    assert.notEqual(w.code, 0, 'the write is refused');
    assert.match(w.stderr, /EPERM|not permitted|read-only/i, w.stderr);
    assert.equal(await stop(r), 0);
    assert.equal(sha(file), shaBefore);
  });

  test('by default the file itself is written', async (t) => {
    if (!peers(t)) return;
    const file = join(dir, 'rw.raw');
    writeFileSync(file, Buffer.alloc(SIZE));
    const r = await startExport(file, '--listen', '127.0.0.1:0');
    assert.match(r.uri, /^nbd:\/\/127\.0\.0\.1:\d+\/$/, 'the default export (empty name)');
    assertPeerOk(await nbdWrite(r.uri, SIZE - 4096, Buffer.alloc(4096, 0x7e)), 'write');
    assert.equal(await stop(r), 0);
    assert.deepEqual(readFileSync(file).subarray(SIZE - 4096), Buffer.alloc(4096, 0x7e));
  });

  test('a file that does not exist fails at start with exit 1', async () => {
    const r = await tool(process.execPath, [BIN, 'export', join(dir, 'missing.raw'), '--listen', '127.0.0.1:0']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /missing\.raw.*\[STORAGE_FILE_NOT_FOUND\]/);
  });

  test('a port in use fails at start with exit 1', async (t) => {
    if (!peers(t)) return;
    writeFileSync(join(dir, 'p.raw'), Buffer.alloc(65536));
    const first = await startExport('p.raw', '--read-only', '--listen', '127.0.0.1:0');
    const port = new URL(first.uri).port;
    const second = await tool(process.execPath, [BIN, 'export', join(dir, 'p.raw'), '--read-only', '--listen', `127.0.0.1:${port}`]);
    assert.equal(second.code, 1);
    assert.match(second.stderr, /\[NBD_LISTEN_FAILED\]/);
    assert.equal(await stop(first), 0);
  });
});
