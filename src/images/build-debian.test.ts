/**
 * The pure parts of the Debian build: option checks, the cache key, and
 * writing into a root tree without following symlinks out of it. The build
 * itself runs in test/interop/images-build.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDisklessError } from '../lib/errors.js';
import { spawn } from 'node:child_process';
import { BASE_PACKAGES, cacheKey, parseSize, resolveBuildOptions, takeBuildLock, tarballName, writeInRoot, type ResolvedBuild } from './build-debian.js';

const G = 1024 ** 3;

test('sizes: binary units, whole MiB, limits', () => {
  assert.equal(parseSize('4G'), 4 * G);
  assert.equal(parseSize('4GiB'), 4 * G);
  assert.equal(parseSize('8192M'), 8 * G);
  assert.equal(parseSize(2 * G + 123), 2 * G);
  for (const bad of ['4X', '', '-1G', '512M', '3T', 'G']) {
    assert.throws(() => parseSize(bad), (e: unknown) => isDisklessError(e, 'IMAGES_BAD_OPTION'), bad);
  }
});

const base: ResolvedBuild = {
  suite: 'bookworm',
  size: 4 * G,
  packages: [...BASE_PACKAGES].sort(),
  mirror: 'http://mirror.example/debian',
  autologin: false,
  initramfsModules: 'list',
  extraModules: [],
};

test('the cache key changes with every input that changes the disk, and only with those', () => {
  const k = cacheKey(base);
  assert.match(k, /^[0-9a-f]{32}$/);
  assert.equal(cacheKey({ ...base }), k);
  const variants: Partial<ResolvedBuild>[] = [
    { suite: 'trixie' },
    { size: 8 * G },
    { packages: [...base.packages, 'vim'].sort() },
    { mirror: 'http://other.example/debian' },
    { hostname: 'lab' },
    { autologin: true },
    { initramfsModules: 'most' },
    { extraModules: ['igc'] },
  ];
  const keys = new Set([k, ...variants.map((v) => cacheKey({ ...base, ...v }))]);
  assert.equal(keys.size, variants.length + 1);
  // The download does not depend on the kit's options.
  assert.equal(tarballName(base), tarballName({ ...base, autologin: true, size: 8 * G } as ResolvedBuild));
  assert.notEqual(tarballName(base), tarballName({ ...base, packages: [...base.packages, 'vim'] }));
});

test('options are validated, packages merged and sorted, the mirror taken from apt', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'diskless-build-opts-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const opts = { outPath: '/x', cacheDir: '/c', workDir: '/w', aptDir: dir };
  await assert.rejects(resolveBuildOptions(opts), (e: unknown) => isDisklessError(e, 'IMAGES_NO_MIRROR'));
  await writeFile(join(dir, 'sources.list'), 'deb http://apt.example/debian bookworm main\n');
  const r = await resolveBuildOptions({ ...opts, packages: ['vim', 'curl'] });
  assert.equal(r.mirror, 'http://apt.example/debian');
  assert.deepEqual(r.packages, [...new Set([...BASE_PACKAGES, 'vim'])].sort());
  assert.equal((await resolveBuildOptions({ ...opts, mirror: 'http://given.example/debian/' })).mirror, 'http://given.example/debian');
  const bad: Record<string, unknown>[] = [
    { suite: 'Bookworm; rm' },
    { packages: ['ok', 'Bad_Name'] },
    { hostname: '-lab' },
    { mirror: 'ftp://x/debian' },
    { mirror: 'not a url' },
    { initramfsModules: 'dep' },
    { extraModules: ['a b'] },
    { size: '100M' },
  ];
  for (const b of bad) {
    await assert.rejects(resolveBuildOptions({ ...opts, ...b }), (e: unknown) => isDisklessError(e, 'IMAGES_BAD_OPTION'), JSON.stringify(b));
  }
});

test('writeInRoot never writes through a symlink out of the root', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'diskless-root-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const root = join(dir, 'root');
  const outside = join(dir, 'outside');
  await mkdir(join(root, 'etc'), { recursive: true });
  await mkdir(outside);
  await writeFile(join(outside, 'resolv.conf'), 'host resolver\n');
  // A file that is a symlink to the host's file: replaced, not followed.
  await symlink(join(outside, 'resolv.conf'), join(root, 'etc', 'resolv.conf'));
  await writeInRoot(root, 'etc/resolv.conf', 'image resolver\n');
  assert.equal(await readFile(join(outside, 'resolv.conf'), 'utf8'), 'host resolver\n');
  assert.equal(await readFile(join(root, 'etc', 'resolv.conf'), 'utf8'), 'image resolver\n');
  // A directory that is a symlink out of the root: refused.
  await symlink(outside, join(root, 'srv'));
  await assert.rejects(writeInRoot(root, 'srv/evil', 'x'), (e: unknown) => isDisklessError(e, 'IMAGES_BUILD_FAILED'));
  await assert.rejects(readFile(join(outside, 'evil')), { code: 'ENOENT' });
  // Parents are made as needed.
  await writeInRoot(root, 'etc/systemd/system/x.service.d/a.conf', '[Service]\n');
  assert.equal(await readFile(join(root, 'etc/systemd/system/x.service.d/a.conf'), 'utf8'), '[Service]\n');
});

test('the build lock: taken over when stale, waited for while its process lives, BUSY after the wait', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'diskless-lock-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const lock = join(dir, 'k.lock');
  await writeFile(lock, '999999999\n'); // no such process
  const release = await takeBuildLock(lock, { waitMs: 0 });
  assert.equal((await readFile(lock, 'utf8')).trim(), String(process.pid));
  await release();
  await assert.rejects(readFile(lock), { code: 'ENOENT' });

  const holder = spawn('sleep', ['3'], { stdio: 'ignore' });
  t.after(() => {
    if (holder.exitCode === null) holder.kill('SIGKILL');
  });
  await writeFile(lock, `${holder.pid}\n`);
  await assert.rejects(takeBuildLock(lock, { waitMs: 0 }), (e: unknown) => isDisklessError(e, 'IMAGES_BUILD_BUSY') && new RegExp(`process ${holder.pid}`).test((e as Error).message));
  const waits: number[] = [];
  const started = Date.now();
  const p = takeBuildLock(lock, { waitMs: 30_000, onWait: (pid) => waits.push(pid) });
  await new Promise<void>((resolve) => holder.on('exit', () => resolve()));
  const release2 = await p;
  assert.deepEqual(waits, [holder.pid]);
  assert.ok(Date.now() - started >= 1000, 'it waited for the holder');
  await release2();
});
