/**
 * Builds a Debian image that boots as a diskless client: debootstrap
 * (minbase, with the kernel, systemd, nbd-client, initramfs-tools, busybox,
 * zstd and curl), the client kit (client-kit.ts) applied in the chroot, one
 * initramfs generation, a check that the initramfs can mount its root over
 * NBD, and a GPT raw disk made without loop devices or mounts (sfdisk on the
 * file, then mkfs.ext4 -d at the partition's offset).
 *
 * Caches, both in cacheDir:
 * - debootstrap/<suite>-<hash>.tgz: the downloaded packages
 *   (debootstrap --make-tarball once per suite, package set and mirror;
 *   --unpack-tarball afterwards);
 * - disks/<key>.raw: the finished disk, keyed by a hash of every input
 *   (BUILD_SCRIPT_VERSION, suite, packages, size, mirror, kit options), so
 *   a second build with the same inputs is a sparse copy (or a reflink).
 *
 * Chroot commands run in a private mount namespace (unshare --mount) where
 * proc, sys and dev are mounted for that command only: if the build is
 * killed, no mount is left behind on the host, and the work directory can
 * always be removed (it is checked for mounts first all the same).
 *
 * debootstrap runs with INITRD=No, which the kernel's postinst hook honours:
 * the initramfs is generated once, after the kit has configured it, not
 * twice (measured: debootstrap 2m40s instead of ~5 min).
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, rename, rm, stat, statfs, unlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import type { Logger } from '../lib/log.js';
import { silentLogger } from '../lib/log.js';
import { isDisklessError } from '../lib/errors.js';
import { mirrorFromApt } from './apt-sources.js';
import {
  AUTOLOGIN_DROPIN,
  DISABLED_UNITS,
  DISKLESS_NET_PATH,
  DISKLESS_NET_SCRIPT,
  DISKLESS_NET_UNIT,
  DISKLESS_UP_PATH,
  DISKLESS_UP_SCRIPT,
  DISKLESS_UP_UNIT,
  HOSTS,
  NETWORK_INTERFACES,
  NETWORK_MANAGER_UNITS,
  RESUME_CONF,
  editInitramfsConf,
  fstab,
  initramfsModulesFile,
  unsafeInterfaceStanzas,
  type InitramfsModulesMode,
} from './client-kit.js';
import { imagesError } from './errors.js';
import { NBD_KEEPER_FILES, NBD_KEEPER_UNIT, readKitFile } from './kit-files.js';
import { run } from './exec.js';
import { copyDisk, fsyncPath } from './files.js';
import { captureForNbd, listInitramfs, nbdSupport } from './initramfs.js';
import { compareKernelVersions, inspectDisk, type DiskInspection } from './inspect.js';

/** Bump when the build steps change what they produce: it is part of the cache key. */
export const BUILD_SCRIPT_VERSION = 4;

/** Packages every image gets (the client kit needs each of them). */
export const BASE_PACKAGES = [
  'linux-image-amd64',
  'systemd-sysv',
  'udev',
  'initramfs-tools',
  'busybox',
  'nbd-client',
  'zstd',
  'curl',
  'iproute2',
  'ifupdown',
] as const;

export const BUILD_DEFAULTS = {
  suite: 'bookworm',
  size: '4G',
  initramfsModules: 'list' as InitramfsModulesMode,
} as const;

/** Our limits on the disk size: the base system needs ~1 GiB with room to run. */
export const MIN_DISK_BYTES = 1024 ** 3;
export const MAX_DISK_BYTES = 2 * 1024 ** 4;
/** The partition starts at 1 MiB (sector 2048), the usual alignment. */
export const PARTITION_OFFSET = 1024 * 1024;
/** GPT type of the root partition: Linux filesystem, as the measured boots used. */
export const ROOT_PARTITION_TYPE = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';

const TIMEOUTS = {
  /** Our default limit on waiting for another build of the same inputs. */
  lockWait: 60 * 60_000,
  debootstrap: 60 * 60_000,
  chroot: 20 * 60_000,
  mkfs: 30 * 60_000,
};

export type BuildStep = 'prepare' | 'download' | 'debootstrap' | 'configure' | 'initramfs' | 'verify' | 'filesystem' | 'cache' | 'output' | 'inspect';
export const BUILD_STEPS: readonly BuildStep[] = ['prepare', 'download', 'debootstrap', 'configure', 'initramfs', 'verify', 'filesystem', 'cache', 'output', 'inspect'];

export interface BuildProgress {
  step: BuildStep;
  /** 1-based position of the step in BUILD_STEPS. */
  index: number;
  total: number;
  state: 'start' | 'progress' | 'done' | 'skipped';
  message?: string;
  /** Set on 'done': how long the step took. */
  elapsedMs?: number;
}

export interface BuildDebianOptions {
  suite?: string;
  /** Disk size: bytes, or a number with K/M/G/T (binary units), e.g. '4G'. */
  size?: string | number;
  /** Packages beyond BASE_PACKAGES (resolved by debootstrap --include). */
  packages?: string[];
  /** The raw disk to write; must not exist. */
  outPath: string;
  /** Where tarballs and finished disks are kept between builds. */
  cacheDir: string;
  /** Scratch space for the root tree (~1.5 GB); must allow device nodes. */
  workDir: string;
  /** Debian mirror URL; default: the machine's apt sources. */
  mirror?: string;
  /** A fixed host name for every client; default none: the name from DHCP (ip=), else diskless-<mac>. */
  hostname?: string;
  /** Log root in on the serial console without a password (demos); default: root's password is locked. */
  autologin?: boolean;
  /** initramfs-tools MODULES=; default 'list' (the kit's modules plus every network driver). */
  initramfsModules?: InitramfsModulesMode;
  /** Modules added to /etc/initramfs-tools/modules besides the kit's. */
  extraModules?: string[];
  /** Build even when the cache has this disk. */
  rebuild?: boolean;
  /**
   * When another process is building the same inputs, wait this long for it
   * (then copy its disk from the cache) before failing with IMAGES_BUILD_BUSY.
   * Default one hour; 0 fails at once.
   */
  lockWaitMs?: number;
  progress?: (p: BuildProgress) => void;
  logger?: Logger;
  signal?: AbortSignal;
  /** Where to read apt sources when no mirror is given (tests); default /etc/apt. */
  aptDir?: string;
}

export interface BuildResult {
  outPath: string;
  /** True when the disk came from the cache. */
  cached: boolean;
  cacheKey: string;
  suite: string;
  mirror: string;
  packages: string[];
  size: number;
  fsUuid: string;
  /** Milliseconds per step that ran. */
  timings: Partial<Record<BuildStep, number>> & { total: number };
  inspection: DiskInspection;
}

// --- option checks (pure) -------------------------------------------------------

const SIZE = /^(\d+)\s*([KMGT])?(?:i?B)?$/i;
const UNITS: Record<string, number> = { K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

export function parseSize(size: string | number): number {
  let bytes: number;
  if (typeof size === 'number') bytes = size;
  else {
    const m = SIZE.exec(size.trim());
    if (!m) throw imagesError('IMAGES_BAD_OPTION', `size ${JSON.stringify(size)} is not a size (e.g. 4G, 8192M)`);
    bytes = Number(m[1]) * (m[2] ? UNITS[m[2].toUpperCase()]! : 1);
  }
  if (!Number.isSafeInteger(bytes) || bytes < MIN_DISK_BYTES || bytes > MAX_DISK_BYTES) {
    throw imagesError('IMAGES_BAD_OPTION', `size ${size} is outside ${MIN_DISK_BYTES / 1024 ** 3} GiB .. ${MAX_DISK_BYTES / 1024 ** 4} TiB`);
  }
  return Math.floor(bytes / (1024 * 1024)) * 1024 * 1024; // whole MiB
}

const SUITE = /^[a-z][a-z0-9-]{1,31}$/;
/** Debian policy 5.6.1: package names. */
const PACKAGE = /^[a-z0-9][a-z0-9+.-]+$/;
/** RFC 1123 host name label(s). */
const HOSTNAME = /^(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$/;

export interface ResolvedBuild {
  suite: string;
  size: number;
  packages: string[];
  mirror: string;
  hostname?: string;
  autologin: boolean;
  initramfsModules: InitramfsModulesMode;
  extraModules: string[];
}

export function validateMirror(mirror: string): string {
  let u: URL;
  try {
    u = new URL(mirror);
  } catch {
    throw imagesError('IMAGES_BAD_OPTION', `mirror ${JSON.stringify(mirror)} is not a URL`);
  }
  if (!['http:', 'https:', 'file:'].includes(u.protocol) || /\s/.test(mirror)) {
    throw imagesError('IMAGES_BAD_OPTION', `mirror ${mirror}: only http, https and file URLs can be used`);
  }
  return mirror.replace(/\/+$/, '');
}

/** Everything that decides the disk's content, in a stable order. */
export function cacheKey(r: ResolvedBuild): string {
  const canonical = JSON.stringify({
    v: BUILD_SCRIPT_VERSION,
    arch: 'amd64',
    suite: r.suite,
    size: r.size,
    packages: r.packages,
    mirror: r.mirror,
    hostname: r.hostname ?? null,
    autologin: r.autologin,
    modules: r.initramfsModules,
    extraModules: r.extraModules,
    // The kit files written as they are (an edit to one makes a new disk).
    kitFiles: createHash('sha256').update(NBD_KEEPER_FILES.map((f) => `${f.dest}\0${readKitFile(f.name)}`).join('\0')).digest('hex'),
  });
  return createHash('sha256').update(canonical).digest('hex').slice(0, 32);
}

/** The debootstrap tarball depends only on what is downloaded. */
export function tarballName(r: Pick<ResolvedBuild, 'suite' | 'packages' | 'mirror'>): string {
  const h = createHash('sha256').update(JSON.stringify({ variant: 'minbase', arch: 'amd64', suite: r.suite, packages: r.packages, mirror: r.mirror })).digest('hex');
  return `${r.suite}-${h.slice(0, 16)}.tgz`;
}

export async function resolveBuildOptions(o: BuildDebianOptions): Promise<ResolvedBuild> {
  const suite = o.suite ?? BUILD_DEFAULTS.suite;
  if (!SUITE.test(suite)) throw imagesError('IMAGES_BAD_OPTION', `suite ${JSON.stringify(suite)} is not a suite name`);
  for (const p of o.packages ?? []) if (!PACKAGE.test(p)) throw imagesError('IMAGES_BAD_OPTION', `${JSON.stringify(p)} is not a Debian package name`);
  if (o.hostname !== undefined && !HOSTNAME.test(o.hostname)) throw imagesError('IMAGES_BAD_OPTION', `host name ${JSON.stringify(o.hostname)} is not valid (RFC 1123)`);
  const modules = o.initramfsModules ?? BUILD_DEFAULTS.initramfsModules;
  if (!['list', 'netboot', 'most'].includes(modules)) throw imagesError('IMAGES_BAD_OPTION', `initramfsModules must be list, netboot or most`);
  for (const m of o.extraModules ?? []) if (!/^[a-z0-9_-]{1,64}$/.test(m)) throw imagesError('IMAGES_BAD_OPTION', `${JSON.stringify(m)} is not a module name`);
  let mirror = o.mirror;
  if (mirror === undefined) {
    mirror = await mirrorFromApt(suite, o.aptDir);
    if (!mirror) throw imagesError('IMAGES_NO_MIRROR', `no mirror given and none for ${suite} in the apt sources of this machine (${o.aptDir ?? '/etc/apt'})`);
  }
  return {
    suite,
    size: parseSize(o.size ?? BUILD_DEFAULTS.size),
    packages: [...new Set([...BASE_PACKAGES, ...(o.packages ?? [])])].sort(),
    mirror: validateMirror(mirror),
    hostname: o.hostname,
    autologin: o.autologin ?? false,
    initramfsModules: modules,
    extraModules: [...new Set(o.extraModules ?? [])].sort(),
  };
}

// --- files and processes ---------------------------------------------------------

/**
 * Writes a file inside the root tree without following symlinks out of it:
 * every parent must be a real directory under `root` (an absolute symlink in
 * the tree would otherwise point at the build host), and an existing file is
 * unlinked first.
 */
export async function writeInRoot(root: string, path: string, content: string, mode = 0o644): Promise<void> {
  const rel = relative(root, join(root, path));
  if (rel.startsWith('..')) throw imagesError('IMAGES_BUILD_FAILED', `${path} is outside the root`);
  const parts = rel.split('/');
  let cur = root;
  for (const p of parts.slice(0, -1)) {
    cur = join(cur, p);
    const st = await lstat(cur).catch(() => undefined);
    if (!st) await mkdir(cur, { mode: 0o755 });
    else if (!st.isDirectory()) throw imagesError('IMAGES_BUILD_FAILED', `${relative(root, cur)} in the image is not a directory (a symlink?); refusing to write ${path} through it`);
  }
  const target = join(root, rel);
  await unlink(target).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
  });
  await writeFile(target, content, { mode, flag: 'wx' });
}

const CHROOT_ENV: NodeJS.ProcessEnv = {
  PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
  LC_ALL: 'C',
  LANG: 'C',
  HOME: '/root',
  DEBIAN_FRONTEND: 'noninteractive',
};

/** Mounts this build made visible to itself only; a shell run by unshare, arguments passed as $@. */
const CHROOT_SCRIPT = [
  'set -e',
  'r="$1"; shift',
  'mount -t proc proc "$r/proc"',
  'mount -t sysfs sysfs "$r/sys"',
  'mount --bind /dev "$r/dev"',
  'exec chroot "$r" "$@"',
].join('\n');

async function inChroot(root: string, argv: string[], o: { signal?: AbortSignal; logger: Logger; timeoutMs?: number; check?: boolean }): Promise<string> {
  const r = await run('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', CHROOT_SCRIPT, 'sh', root, ...argv], {
    env: CHROOT_ENV,
    timeoutMs: o.timeoutMs ?? TIMEOUTS.chroot,
    signal: o.signal,
    check: o.check,
    onLine: (line, stream) => o.logger.debug(line, { stream, command: argv[0] }),
  });
  return r.stdout.toString('utf8');
}

/** Mount points at or under `dir` (from /proc/self/mountinfo). */
async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const unescape = (s: string): string => s.replace(/\\(\d{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  return info
    .split('\n')
    .map((l) => unescape(l.split(' ')[4] ?? ''))
    .filter((m) => m === dir || m.startsWith(dir + '/'));
}

async function removeTree(dir: string): Promise<void> {
  const mounts = await mountsUnder(dir);
  if (mounts.length > 0) {
    throw imagesError('IMAGES_BUILD_FAILED', `refusing to remove ${dir}: ${mounts.join(', ')} still mounted`);
  }
  await rm(dir, { recursive: true, force: true });
}

// --- the lock ------------------------------------------------------------------------

/** How often a build waiting for another one with the same inputs looks at the lock. */
const LOCK_POLL_MS = 2_000;

/**
 * Takes the per-key lock (a file holding our pid, created with O_EXCL). A
 * lock whose process is gone is stale and taken over. While a live process
 * holds it, waits up to `waitMs` (that build will leave its disk in the
 * cache, which this one then copies), then gives up with IMAGES_BUILD_BUSY.
 */
export async function takeBuildLock(path: string, o: { waitMs: number; signal?: AbortSignal; onWait?: (pid: number) => void }): Promise<() => Promise<void>> {
  const deadline = Date.now() + o.waitMs;
  let told = false;
  for (;;) {
    try {
      await writeFile(path, `${process.pid}\n`, { flag: 'wx' });
      return () => rm(path, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim());
    let alive = false;
    if (Number.isInteger(pid) && pid > 0) {
      try {
        process.kill(pid, 0);
        alive = true;
      } catch (err) {
        alive = (err as NodeJS.ErrnoException).code === 'EPERM';
      }
    }
    if (!alive) {
      await rm(path, { force: true }); // stale: its process is gone
      continue;
    }
    if (Date.now() >= deadline) throw imagesError('IMAGES_BUILD_BUSY', `a build with the same inputs is running (process ${pid}, lock ${path})`);
    if (o.signal?.aborted) throw imagesError('IMAGES_ABORTED', 'the build was cancelled while waiting for another one');
    if (!told) {
      o.onWait?.(pid);
      told = true;
    }
    await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
  }
}

// --- the build -----------------------------------------------------------------------

async function requireTools(tools: string[]): Promise<void> {
  const missing: string[] = [];
  for (const t of tools) {
    const r = await run('sh', ['-c', 'command -v "$1"', 'sh', t], { check: false, timeoutMs: 10_000 });
    if (r.code !== 0) missing.push(t);
  }
  if (missing.length) throw imagesError('IMAGES_TOOL_MISSING', `not installed: ${missing.join(', ')} (scripts/setup installs them)`);
}

/**
 * Builds (or copies from the cache) a Debian disk image for diskless
 * clients. See the file comment for the steps; `progress` is called at the
 * start and end of each step and with debootstrap's and the tools' messages.
 */
export async function buildDebianImage(o: BuildDebianOptions): Promise<BuildResult> {
  const logger = (o.logger ?? silentLogger).child({ component: 'image-build' });
  const started = Date.now();
  const timings: BuildResult['timings'] = { total: 0 };
  const report = (step: BuildStep, state: BuildProgress['state'], extra: Partial<BuildProgress> = {}): void => {
    o.progress?.({ step, index: BUILD_STEPS.indexOf(step) + 1, total: BUILD_STEPS.length, state, ...extra });
  };
  const stepStart = new Map<BuildStep, number>();
  const begin = (step: BuildStep, message?: string): void => {
    if (o.signal?.aborted) throw imagesError('IMAGES_ABORTED', `the build was cancelled before ${step}`);
    stepStart.set(step, Date.now());
    logger.info(`build step ${step}`, message === undefined ? {} : { message });
    report(step, 'start', { message });
  };
  const end = (step: BuildStep, message?: string): void => {
    const ms = Date.now() - (stepStart.get(step) ?? Date.now());
    timings[step] = ms;
    logger.info(`build step ${step} done`, message === undefined ? { ms } : { ms, message });
    report(step, 'done', { elapsedMs: ms, message });
  };

  // prepare
  begin('prepare');
  if (process.getuid?.() !== 0) throw imagesError('IMAGES_BUILD_NEEDS_ROOT', 'building an image needs root (debootstrap, chroot, device nodes)');
  if (existsSync(o.outPath)) throw imagesError('IMAGES_OUTPUT_EXISTS', `${o.outPath} already exists`);
  const r = await resolveBuildOptions(o);
  await requireTools(['debootstrap', 'unshare', 'chroot', 'sfdisk', 'mkfs.ext4', 'debugfs', 'cp']);
  const key = cacheKey(r);
  const dirs = { tarballs: join(o.cacheDir, 'debootstrap'), disks: join(o.cacheDir, 'disks'), locks: join(o.cacheDir, 'locks') };
  for (const d of [...Object.values(dirs), o.workDir, dirname(o.outPath)]) await mkdir(d, { recursive: true });
  const cachedDisk = join(dirs.disks, `${key}.raw`);
  const cachedMeta = join(dirs.disks, `${key}.json`);
  const release = await takeBuildLock(join(dirs.locks, `${key}.lock`), {
    waitMs: o.lockWaitMs ?? TIMEOUTS.lockWait,
    signal: o.signal,
    onWait: (pid) => report('prepare', 'progress', { message: `waiting for process ${pid}, which is building the same image` }),
  });
  const work = join(o.workDir, `build-${key.slice(0, 12)}-${randomBytes(4).toString('hex')}`);
  end('prepare', `cache key ${key}`);

  try {
    let cached = false;
    if (!o.rebuild && existsSync(cachedDisk) && existsSync(cachedMeta)) {
      cached = true;
      for (const s of ['download', 'debootstrap', 'configure', 'initramfs', 'verify', 'filesystem', 'cache'] as const) report(s, 'skipped', { message: 'cached' });
    } else {
      await mkdir(work, { recursive: true });
      const root = join(work, 'root');
      const uuid = randomUUID();
      await freshBuild(r, { root, work, uuid, tarballs: dirs.tarballs, cachedDisk, cachedMeta, key }, { begin, end, report, logger, signal: o.signal });
    }

    begin('output', o.outPath);
    const free = await statfs(dirname(o.outPath));
    const used = (await stat(cachedDisk)).blocks * 512;
    if (free.bavail * free.bsize < used) {
      throw imagesError('IMAGES_NO_SPACE', `${dirname(o.outPath)} has ${free.bavail * free.bsize} bytes free; the disk needs ${used}`);
    }
    await copyDisk(cachedDisk, o.outPath, o.signal);
    end('output');

    begin('inspect');
    let inspection: DiskInspection;
    try {
      inspection = await inspectDisk(o.outPath, { signal: o.signal });
    } catch (e) {
      await rm(o.outPath, { force: true });
      throw e;
    }
    end('inspect', `${inspection.osRelease.PRETTY_NAME ?? ''} kernel ${inspection.defaultKernel}`);
    timings.total = Date.now() - started;
    return {
      outPath: o.outPath,
      cached,
      cacheKey: key,
      suite: r.suite,
      mirror: r.mirror,
      packages: r.packages,
      size: r.size,
      fsUuid: inspection.root.uuid,
      timings,
      inspection,
    };
  } finally {
    await removeTree(work).catch((e: unknown) => logger.error('could not remove the build directory', { err: e, work }));
    await release();
  }
}

interface StepFns {
  begin(step: BuildStep, message?: string): void;
  end(step: BuildStep, message?: string): void;
  report(step: BuildStep, state: BuildProgress['state'], extra?: Partial<BuildProgress>): void;
  logger: Logger;
  signal?: AbortSignal;
}

interface BuildPaths {
  root: string;
  work: string;
  uuid: string;
  tarballs: string;
  cachedDisk: string;
  cachedMeta: string;
  key: string;
}

async function freshBuild(r: ResolvedBuild, p: BuildPaths, f: StepFns): Promise<void> {
  const { logger, signal } = f;
  const include = `--include=${r.packages.join(',')}`;
  const debootstrapLines = (step: BuildStep) => (line: string) => {
    logger.debug(line, { step });
    const m = /^I: (Retrieving|Validating|Extracting|Unpacking|Configuring|Installing|Base system) ?(.*)$/.exec(line);
    if (m) f.report(step, 'progress', { message: `${m[1]} ${m[2]}`.trim() });
  };
  const env = { ...process.env, LC_ALL: 'C', DEBIAN_FRONTEND: 'noninteractive', INITRD: 'No' };

  // download: the packages, once per suite + package set + mirror.
  const tarball = join(p.tarballs, tarballName(r));
  if (existsSync(tarball)) {
    f.report('download', 'skipped', { message: `cached ${tarball}` });
  } else {
    f.begin('download', r.mirror);
    const tmp = `${tarball}.${randomBytes(4).toString('hex')}.partial`;
    try {
      await run('debootstrap', ['--variant=minbase', include, `--make-tarball=${tmp}`, r.suite, join(p.work, 'tarball'), r.mirror], {
        env,
        timeoutMs: TIMEOUTS.debootstrap,
        signal,
        onLine: debootstrapLines('download'),
      });
      await fsyncPath(tmp);
      await rename(tmp, tarball);
    } catch (e) {
      throw wrap('download', e);
    } finally {
      await rm(tmp, { force: true });
      await removeTree(join(p.work, 'tarball'));
    }
    f.end('download');
  }

  f.begin('debootstrap', `${r.suite} from ${r.mirror}`);
  try {
    await run('debootstrap', ['--variant=minbase', include, `--unpack-tarball=${tarball}`, r.suite, p.root, r.mirror], {
      env,
      timeoutMs: TIMEOUTS.debootstrap,
      signal,
      onLine: debootstrapLines('debootstrap'),
    });
  } catch (e) {
    throw wrap('debootstrap', e);
  }
  f.end('debootstrap');

  f.begin('configure');
  try {
    await configureRoot(r, p, logger, signal);
  } catch (e) {
    throw wrap('configure', e);
  }
  f.end('configure');

  f.begin('initramfs', `MODULES=${r.initramfsModules}`);
  const kernels = (await readdir(join(p.root, 'boot'))).filter((n) => n.startsWith('vmlinuz-')).map((n) => n.slice('vmlinuz-'.length));
  if (kernels.length === 0) throw imagesError('IMAGES_BUILD_FAILED', 'initramfs: debootstrap installed no kernel in /boot');
  try {
    await inChroot(p.root, ['update-initramfs', '-c', '-k', 'all'], { logger, signal });
  } catch (e) {
    throw wrap('initramfs', e);
  }
  const newest = [...kernels].sort(compareKernelVersions).at(-1)!;
  // /initrd.img next to /vmlinuz, as the kernel's postinst would have made it.
  await rm(join(p.root, 'initrd.img'), { force: true });
  await run('ln', ['-s', `boot/initrd.img-${newest}`, join(p.root, 'initrd.img')]);
  const sizes = await Promise.all(kernels.map(async (k) => (await stat(join(p.root, 'boot', `initrd.img-${k}`))).size));
  f.end('initramfs', kernels.map((k, i) => `initrd.img-${k}: ${sizes[i]} bytes`).join(', '));

  f.begin('verify');
  for (const k of kernels) {
    const listing = await listInitramfs(join(p.root, 'boot', `initrd.img-${k}`), { capture: captureForNbd, signal });
    const nbd = nbdSupport(listing, { flavour: 'initramfs-tools', kernelVersion: k });
    if (!nbd.supported) {
      throw imagesError('IMAGES_BUILD_FAILED', `verify: the initramfs of ${k} lacks ${nbd.missing.map((m) => m.item).join(', ')}`, { details: { missing: nbd.missing } });
    }
  }
  const interfaces = await readFile(join(p.root, 'etc/network/interfaces'), 'utf8');
  const unsafe = unsafeInterfaceStanzas(interfaces);
  const dropins = await readdir(join(p.root, 'etc/network/interfaces.d')).catch(() => [] as string[]);
  if (unsafe.length || dropins.length) {
    throw imagesError('IMAGES_BUILD_FAILED', `verify: ifupdown would manage the boot NIC: ${[...unsafe, ...dropins].join('; ')}`);
  }
  for (const unit of NETWORK_MANAGER_UNITS) {
    const state = (await inChroot(p.root, ['systemctl', 'is-enabled', unit], { logger, signal, check: false })).trim();
    if (state === 'enabled' || state === 'enabled-runtime') throw imagesError('IMAGES_BUILD_FAILED', `verify: ${unit} is enabled and would reconfigure the boot NIC`);
  }
  f.end('verify');

  f.begin('filesystem', `${r.size} bytes, ext4 ${p.uuid}`);
  const disk = join(p.work, 'disk.raw');
  try {
    await makeDisk(disk, p.root, r.size, p.uuid, signal);
  } catch (e) {
    throw wrap('filesystem', e);
  }
  f.end('filesystem');

  f.begin('cache', p.cachedDisk);
  await rm(p.cachedDisk, { force: true });
  await rm(p.cachedMeta, { force: true });
  try {
    await rename(disk, p.cachedDisk);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    await copyDisk(disk, p.cachedDisk, signal);
  }
  await fsyncPath(dirname(p.cachedDisk));
  const meta = { key: p.key, builtAt: new Date().toISOString(), scriptVersion: BUILD_SCRIPT_VERSION, fsUuid: p.uuid, ...r };
  await writeFile(`${p.cachedMeta}.partial`, JSON.stringify(meta, null, 2) + '\n');
  await rename(`${p.cachedMeta}.partial`, p.cachedMeta);
  f.end('cache');
}

function wrap(step: BuildStep, e: unknown): Error {
  if (isDisklessError(e) && e.code !== 'IMAGES_TOOL_FAILED') return e;
  const msg = e instanceof Error ? e.message : String(e);
  return imagesError('IMAGES_BUILD_FAILED', `${step}: ${msg}`, { cause: e });
}

/** The client kit, applied to the root tree. */
async function configureRoot(r: ResolvedBuild, p: BuildPaths, logger: Logger, signal?: AbortSignal): Promise<void> {
  const root = p.root;
  // Host leftovers from debootstrap: the build machine's name, resolver and hosts.
  if (r.hostname) await writeInRoot(root, 'etc/hostname', `${r.hostname}\n`);
  else await rm(join(root, 'etc/hostname'), { force: true });
  await writeInRoot(root, 'etc/hosts', HOSTS);
  await writeInRoot(root, 'etc/resolv.conf', '# written at boot by diskless-net from what the initramfs learnt\n');
  await writeInRoot(root, 'etc/fstab', fstab(p.uuid));

  // initramfs-tools
  const confPath = join(root, 'etc/initramfs-tools/initramfs.conf');
  const conf = await readFile(confPath, 'utf8');
  const hasZstd = existsSync(join(root, 'usr/bin/zstd'));
  await writeInRoot(root, 'etc/initramfs-tools/initramfs.conf', editInitramfsConf(conf, { modules: r.initramfsModules, compress: hasZstd ? 'zstd' : 'gzip' }));
  await writeInRoot(root, 'etc/initramfs-tools/modules', initramfsModulesFile(r.extraModules));
  await writeInRoot(root, 'etc/initramfs-tools/conf.d/resume', RESUME_CONF);

  // network: loopback only for ifupdown; the boot NIC is guarded at run time.
  await writeInRoot(root, 'etc/network/interfaces', NETWORK_INTERFACES);
  for (const name of await readdir(join(root, 'etc/network/interfaces.d')).catch(() => [] as string[])) {
    await rm(join(root, 'etc/network/interfaces.d', name), { force: true, recursive: true });
  }
  await writeInRoot(root, DISKLESS_NET_PATH, DISKLESS_NET_SCRIPT, 0o755);
  await writeInRoot(root, 'etc/systemd/system/diskless-net.service', DISKLESS_NET_UNIT);
  await writeInRoot(root, DISKLESS_UP_PATH, DISKLESS_UP_SCRIPT, 0o755);
  await writeInRoot(root, 'etc/systemd/system/diskless-up.service', DISKLESS_UP_UNIT);
  // The root survives a restart of the server; the disk is released at power-off (kit-files.ts).
  for (const f of NBD_KEEPER_FILES) await writeInRoot(root, f.dest.replace(/^\//, ''), readKitFile(f.name), f.mode);

  if (r.autologin) {
    await writeInRoot(root, 'etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf', AUTOLOGIN_DROPIN);
  }
  const chroot = (argv: string[], check = true): Promise<string> => inChroot(root, argv, { logger, signal, check });
  // Locked root password; with autologin, agetty logs root in without one.
  await chroot(['passwd', '-l', 'root']);
  await chroot(['systemctl', 'enable', 'diskless-net.service', 'diskless-up.service', NBD_KEEPER_UNIT]);
  // One at a time: systemctl stops at a unit the image does not have.
  for (const unit of [...DISABLED_UNITS, ...NETWORK_MANAGER_UNITS]) await chroot(['systemctl', 'disable', unit], false);

  // Every client would otherwise share the build's machine id; empty = made at first boot.
  await writeInRoot(root, 'etc/machine-id', '');
  await rm(join(root, 'var/lib/dbus/machine-id'), { force: true });
  await chroot(['apt-get', 'clean']);
  for (const dir of ['var/lib/apt/lists', 'var/cache/apt/archives']) {
    for (const name of await readdir(join(root, dir)).catch(() => [] as string[])) {
      if (name === 'partial' || name === 'lock') continue;
      await rm(join(root, dir, name), { force: true, recursive: true });
    }
  }
  for (const name of await readdir(join(root, 'var/cache/apt')).catch(() => [] as string[])) {
    if (name.endsWith('.bin')) await rm(join(root, 'var/cache/apt', name), { force: true });
  }
  await rm(join(root, 'var/log/bootstrap.log'), { force: true });
}

/** GPT disk with one Linux partition at 1 MiB holding ext4 made from `tree`; no loop device, no mount. */
export async function makeDisk(disk: string, tree: string, size: number, uuid: string, signal?: AbortSignal): Promise<void> {
  const fh = await open(disk, 'wx');
  try {
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
  await run('sfdisk', ['-q', disk], { stdin: `label: gpt\nstart=${PARTITION_OFFSET / 512}, type=${ROOT_PARTITION_TYPE}\n`, signal });
  const dump = (await run('sfdisk', ['-d', disk], { signal })).stdout.toString('utf8');
  const m = /start=\s*(\d+),\s*size=\s*(\d+)/.exec(dump);
  if (!m || Number(m[1]) * 512 !== PARTITION_OFFSET) throw imagesError('IMAGES_BUILD_FAILED', `sfdisk made an unexpected table:\n${dump}`);
  // The file system must not be larger than its partition, or the kernel refuses it ("bad geometry").
  const kib = Math.floor((Number(m[2]) * 512) / 1024);
  await run(
    'mkfs.ext4',
    ['-q', '-F', '-U', uuid, '-L', 'root', '-E', `offset=${PARTITION_OFFSET}`, '-d', tree, disk, `${kib}K`],
    { timeoutMs: TIMEOUTS.mkfs, signal },
  );
  await fsyncPath(disk);
}
