/**
 * Disk capture end to end on loopback: the HTTP service with the kit routes
 * in-process, and the real kit script (as the server serves it at GET /kit)
 * run by sh against a file standing in for a disk (--disk FILE).
 *
 * - interrupted half way (the kit's process group killed with SIGKILL, an
 *   upload in flight cut off) and run again: it resumes the same upload,
 *   sends only what the server lacks, and the published version's sha256 is
 *   the source's;
 * - a chunk with a wrong sha256 is refused (422) and not stored;
 * - a disk over the size limit, or over the free space, is refused before any
 *   chunk is read;
 * - capture without the token is refused (401), by the kit and over HTTP;
 * - --freeze on a mounted ext4 file system (a loop device): frozen for the
 *   copy, thawed after, and the published image holds its files; without
 *   --freeze the kit warns that the copy is crash-consistent at best.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NO_BOOT } from '../helpers/no-boot.js';
import { HttpServer } from '../../src/api/http-server.js';
import { kitRoutes } from '../../src/api/kit-routes.js';
import type { CapturedDisk } from '../../src/images/capture/capture-service.js';
import { requirePeers, requireRoot } from '../helpers/peers.js';

const TOKEN = 'test-capture-token-7f3a';
const MiB = 1024 * 1024;
const CHUNK = 1 * MiB;
const DISK_MIB = 24;
/** The whole run of one kit, bounded: TCG-free, but process spawning is slow on some machines. */
const KIT_TIMEOUT_MS = 120_000;

let dir: string;
let dataDir: string;
let server: HttpServer;
let base: string;
let kitPath: string;
/** What the publish callback saw: the disk and the sha256 of the bytes it read at rawPath. */
const published: Array<{ disk: CapturedDisk; fileSha: string; copy: string }> = [];
/** Free bytes the server believes its data directory has; lowered by one test. */
let freeBytes = 10 * 1024 * MiB;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'dl-kit-capture-'));
  dataDir = join(dir, 'data');
  mkdirSync(join(dir, 'published'));
  server = new HttpServer({
    boot: NO_BOOT,
    extensions: [kitRoutes({
      dataDir,
      captureToken: TOKEN,
      limits: { maxSize: 64 * MiB, minChunkSize: 64 * 1024, reserveBytes: 0 },
      freeSpace: async () => freeBytes,
      publish: async (rawPath, disk) => {
        const copy = join(dir, 'published', `${disk.name}.raw`);
        copyFileSync(rawPath, copy);
        published.push({ disk, fileSha: sha256(readFileSync(copy)), copy });
        return { version: `${disk.name}@${published.length}` };
      },
    })],
  });
  const addr = await server.listen(0, '127.0.0.1');
  base = `http://127.0.0.1:${addr.port}`;
  // The kit exactly as a machine gets it, server URL filled in.
  const res = await fetch(`${base}/kit`);
  assert.equal(res.status, 200);
  const kit = await res.text();
  assert.ok(kit.includes(`KIT_DEFAULT_SERVER='${base}'`), 'the served kit names this server');
  assert.ok(!kit.includes('@DISKLESS_SERVER_URL@'), 'the placeholder is replaced');
  kitPath = join(dir, 'kit.sh');
  writeFileSync(kitPath, kit);
});

after(async () => {
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A disk image with data, all-zero chunks (sent without a body) and a short last chunk. */
function makeDisk(name: string, mib: number, extraBytes = 0): { path: string; sha: string } {
  const data = Buffer.alloc(mib * MiB + extraBytes);
  for (let off = 0; off < data.length; off += CHUNK) {
    const i = off / CHUNK;
    if (i % 5 === 3) continue; // zeros
    randomBytes(Math.min(CHUNK, data.length - off)).copy(data, off);
  }
  const path = join(dir, name);
  writeFileSync(path, data);
  return { path, sha: sha256(data) };
}

interface KitRun {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  done: Promise<number | null>;
}

function runKit(args: string[], env: Record<string, string> = {}): KitRun {
  const scratch = join(dir, 'scratch');
  mkdirSync(scratch, { recursive: true });
  // detached: the kit leads its own process group, so the test can kill it with its dd and curl.
  const child = spawn('sh', [kitPath, ...args], {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', DISKLESS_TMPDIR: scratch, ...env },
  });
  const run: KitRun = { child, stdout: '', stderr: '', done: Promise.resolve(null) };
  child.stdout!.on('data', (d: Buffer) => { run.stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { run.stderr += d.toString(); });
  run.done = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      killGroup(child);
      reject(new Error(`kit ${args.join(' ')} ran over ${KIT_TIMEOUT_MS} ms\n${run.stdout}\n${run.stderr}`));
    }, KIT_TIMEOUT_MS);
    child.on('close', (code) => { clearTimeout(timer); resolve(code); });
  });
  return run;
}

function killGroup(child: ChildProcess): void {
  try {
    if (child.pid) process.kill(-child.pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

async function api(method: string, path: string, init: { body?: string | Buffer; headers?: Record<string, string>; token?: string | null } = {}) {
  const headers: Record<string, string> = { ...(init.headers ?? {}) };
  const token = init.token === undefined ? TOKEN : init.token;
  if (token) headers.authorization = `Bearer ${token}`;
  const body = init.body === undefined ? null : typeof init.body === 'string' ? init.body : new Uint8Array(init.body);
  const res = await fetch(`${base}${path}`, { method, headers, body });
  const text = await res.text();
  return { status: res.status, text, headers: res.headers, json: () => JSON.parse(text) as Record<string, unknown> };
}

function uploadFolders(): string[] {
  const root = join(dataDir, 'capture');
  return existsSync(root) ? readdirSync(root) : [];
}

test('capture interrupted half way resumes and publishes a version with the source\'s sha256', async (t) => {
  if (!requirePeers(t, 'sh', 'curl', 'dd', 'sha256sum')) return;
  const disk = makeDisk('resume.img', DISK_MIB, 12345);
  const chunks = Math.ceil((DISK_MIB * MiB + 12345) / CHUNK);
  const args = ['capture', '--disk', disk.path, '--name', 'resume-test', '--chunk-size', '1M'];

  const first = runKit(args, { DISKLESS_TOKEN: TOKEN });
  // Kill once about half the chunks have been handled.
  const killedAt = await new Promise<number>((resolve, reject) => {
    const started = Date.now();
    const poll = setInterval(() => {
      const m = [...first.stderr.matchAll(/progress: (\d+)\/(\d+) chunks/g)].at(-1);
      const done = m ? Number(m[1]) : 0;
      if (done >= chunks / 2) {
        clearInterval(poll);
        killGroup(first.child);
        resolve(done);
      } else if (first.child.exitCode !== null || Date.now() - started > KIT_TIMEOUT_MS) {
        clearInterval(poll);
        reject(new Error(`the kit ended before half way:\n${first.stdout}\n${first.stderr}`));
      }
    }, 20);
  });
  await first.done;
  const id = /upload (\S+) started/.exec(first.stdout)?.[1];
  assert.ok(id, `the kit named its upload:\n${first.stdout}`);
  assert.ok(!first.stdout.includes('CAPTURED'), 'the first run did not finish');

  const status = await api('GET', `/capture/${id}`);
  assert.equal(status.status, 200);
  const present = status.json().present as number;
  assert.ok(present >= killedAt - 1 && present < chunks, `after the kill the server has ${present} of ${chunks} chunks (killed at ${killedAt})`);
  assert.equal(published.length, 0);

  const second = runKit(args, { DISKLESS_TOKEN: TOKEN });
  const code = await second.done;
  assert.equal(code, 0, `the resumed kit succeeded:\n${second.stdout}\n${second.stderr}`);
  // A chunk whose upload was already on its way when the kit was killed may
  // land after the status above: the resumed kit finds at least that many.
  const resumed = new RegExp(`resuming upload ${id}: the server has (\\d+) of ${chunks} chunks`).exec(second.stdout);
  assert.ok(resumed, second.stdout);
  const had = Number(resumed[1]);
  assert.ok(had >= present && had <= present + 1 && had < chunks, `the server had ${had} chunks at resume (${present} after the kill)`);
  const sums = /sent (\d+) chunks, (\d+) were on the server already/.exec(second.stdout);
  assert.ok(sums, second.stdout);
  assert.equal(Number(sums[2]), had, 'every chunk the server had was kept');
  assert.equal(Number(sums[1]), chunks - had, 'only the missing chunks were sent');
  assert.match(second.stdout, new RegExp(`CAPTURED resume-test ${disk.sha}`));

  assert.equal(published.length, 1);
  const p = published[0]!;
  assert.equal(p.disk.sha256, disk.sha, 'the server verified the source\'s sha256');
  assert.equal(p.fileSha, disk.sha, 'the published file has the source\'s bytes');
  assert.equal(p.disk.size, DISK_MIB * MiB + 12345);
  assert.match(second.stdout, /"version":"resume-test@1"/, 'the kit shows what was published');
  assert.deepEqual(uploadFolders(), [], 'the upload\'s files are gone once published');
  assert.equal((await api('GET', `/capture/${id}`)).status, 404);
});

test('a chunk with a wrong sha256 is refused with 422 and not stored', async () => {
  const start = await api('POST', '/capture', {
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'bad-chunk', size: 3 * 256 * 1024 + 100, chunkSize: 256 * 1024 }),
  });
  assert.equal(start.status, 201, start.text);
  const id = start.json().id as string;
  const chunk = randomBytes(256 * 1024);
  const wrong = sha256(Buffer.from('something else'));
  const put = (n: number, sha: string, body: Buffer) => api('PUT', `/capture/${id}/chunk/${n}`, {
    headers: { 'content-type': 'application/octet-stream', 'x-sha256': sha }, body,
  });

  const refused = await put(0, wrong, chunk);
  assert.equal(refused.status, 422);
  assert.equal(refused.json().error, 'CAPTURE_CHECKSUM_MISMATCH');
  assert.match(refused.json().message as string, /not stored/);
  assert.equal((await api('GET', `/capture/${id}/chunks`)).text, '', 'the server lists no chunk');
  const raw = readFileSync(join(dataDir, 'capture', id, 'disk.raw'));
  assert.ok(raw.subarray(0, chunk.length).equals(Buffer.alloc(chunk.length)), 'no byte of the refused chunk reached the disk');

  // A body of the wrong length, a chunk past the end, no checksum: refused, nothing stored.
  assert.equal((await put(0, sha256(chunk.subarray(1)), chunk.subarray(1))).json().error, 'CAPTURE_CHUNK_LENGTH');
  assert.equal((await put(9, sha256(chunk), chunk)).status, 400);
  const noSha = await api('PUT', `/capture/${id}/chunk/0`, { headers: { 'content-type': 'application/octet-stream' }, body: chunk });
  assert.equal(noSha.status, 400);
  assert.equal(noSha.json().error, 'CAPTURE_BAD_REQUEST');

  const ok = await put(0, sha256(chunk), chunk);
  assert.equal(ok.status, 201, ok.text);
  assert.equal((await api('GET', `/capture/${id}/chunks`)).text, `0 ${sha256(chunk)}\n`);
  // Finishing with chunks missing is refused; abort removes everything.
  const early = await api('POST', `/capture/${id}/finish`, { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sha256: wrong }) });
  assert.equal(early.status, 409);
  assert.equal(early.json().error, 'CAPTURE_INCOMPLETE');
  assert.equal((await api('DELETE', `/capture/${id}`)).status, 204);
  assert.ok(!uploadFolders().includes(id), 'an aborted upload leaves no files');
});

test('a disk over the size limit or the free space is refused before any chunk is read', async (t) => {
  if (!requirePeers(t, 'sh', 'curl', 'dd', 'sha256sum')) return;
  const big = join(dir, 'big.img');
  writeFileSync(big, '');
  truncateSync(big, 128 * MiB); // sparse: over the 64 MiB limit
  const before = uploadFolders().length;
  const run = runKit(['capture', '--disk', big, '--name', 'too-big', '--chunk-size', '1M'], { DISKLESS_TOKEN: TOKEN });
  assert.equal(await run.done, 1, run.stdout + run.stderr);
  assert.match(run.stderr, /refused the capture: a disk of 134217728 bytes is larger than the largest capture/);
  assert.doesNotMatch(run.stderr, /progress:/, 'no chunk was read');
  assert.equal(uploadFolders().length, before, 'no upload was opened');

  const disk = makeDisk('nospace.img', 8);
  freeBytes = 4 * MiB;
  try {
    const run2 = runKit(['capture', '--disk', disk.path, '--name', 'no-space', '--chunk-size', '1M'], { DISKLESS_TOKEN: TOKEN });
    assert.equal(await run2.done, 1, run2.stdout + run2.stderr);
    assert.match(run2.stderr, /does not fit: 4194304 bytes are free/);
    assert.doesNotMatch(run2.stderr, /progress:/);
    const direct = await api('POST', '/capture', {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'no-space', size: 8 * MiB, chunkSize: CHUNK }),
    });
    assert.equal(direct.status, 413);
    assert.equal(direct.json().error, 'CAPTURE_NO_SPACE');
  } finally {
    freeBytes = 10 * 1024 * MiB;
  }
  assert.equal(uploadFolders().length, before);
});

test('--freeze: a mounted file system on a block device is frozen for the copy and thawed after', async (t) => {
  if (!requireRoot(t) || !requirePeers(t, 'sh', 'curl', 'dd', 'sha256sum', 'losetup', 'mkfs.ext4', 'mount', 'umount', 'fsfreeze')) return;
  const image = join(dir, 'fs.img');
  writeFileSync(image, '');
  truncateSync(image, 8 * MiB);
  const sh = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  sh('mkfs.ext4', ['-q', '-F', image]);
  const loop = sh('losetup', ['-f', '--show', image]);
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  let mounted = false;
  try {
    sh('mount', [loop, mnt]);
    mounted = true;
    writeFileSync(join(mnt, 'hello.txt'), 'a file on the captured disk\n');
    const run = runKit(['capture', '--disk', loop, '--name', 'frozen', '--chunk-size', '1M', '--freeze'], { DISKLESS_TOKEN: TOKEN });
    assert.equal(await run.done, 0, run.stdout + run.stderr);
    assert.match(run.stdout, new RegExp(`froze ${mnt}`));
    assert.match(run.stdout, new RegExp(`thawed ${mnt}`));
    assert.doesNotMatch(run.stderr, /crash-consistent/, 'no warning when frozen');
    // Thawed: the file system takes writes again.
    writeFileSync(join(mnt, 'after.txt'), 'written after the capture\n');
    const p = published.find((x) => x.disk.name === 'frozen');
    assert.ok(p, 'published');
    assert.equal(p.disk.size, 8 * MiB, 'the size came from the block device');
    // The published image is a file system holding the file written before the capture.
    const check = spawnSync('debugfs', ['-R', 'cat /hello.txt', p.copy], { encoding: 'utf8' });
    if (!check.error) assert.equal(check.stdout, 'a file on the captured disk\n');
    // Without --freeze the kit warns that the copy is at best crash-consistent.
    const live = runKit(['capture', '--disk', loop, '--name', 'live', '--chunk-size', '1M'], { DISKLESS_TOKEN: TOKEN });
    assert.equal(await live.done, 0, live.stdout + live.stderr);
    assert.match(live.stderr, /crash-consistent at best/);
  } finally {
    if (mounted) spawnSync('umount', [mnt]);
    spawnSync('losetup', ['-d', loop]);
  }
});

test('capture without the token gets 401; the kit itself is open', async (t) => {
  const kit = await api('GET', '/kit', { token: null });
  assert.equal(kit.status, 200);
  for (const token of [null, 'wrong-token']) {
    const r = await api('POST', '/capture', {
      token, headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'x', size: MiB, chunkSize: CHUNK }),
    });
    assert.equal(r.status, 401);
    assert.equal(r.json().error, 'CAPTURE_UNAUTHORIZED');
    assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer/);
  }
  assert.equal((await api('GET', '/capture/AAAAAAAAAAAAAAAAAAAAAA', { token: null })).status, 401);
  assert.equal((await api('PUT', '/capture/AAAAAAAAAAAAAAAAAAAAAA/chunk/0', { token: null, headers: { 'x-sha256': '0'.repeat(64) } })).status, 401);

  if (!requirePeers(t, 'sh', 'curl', 'dd', 'sha256sum')) return;
  const disk = makeDisk('noauth.img', 2);
  const before = uploadFolders().length;
  const run = runKit(['capture', '--disk', disk.path, '--name', 'no-token', '--chunk-size', '1M']);
  assert.equal(await run.done, 1);
  assert.match(run.stderr, /refused the capture: capture needs a bearer token/);
  const wrong = runKit(['capture', '--disk', disk.path, '--name', 'no-token', '--chunk-size', '1M', '--token', 'nope']);
  assert.equal(await wrong.done, 1);
  assert.match(wrong.stderr, /the capture token is wrong/);
  assert.equal(uploadFolders().length, before, 'nothing was opened');
});
