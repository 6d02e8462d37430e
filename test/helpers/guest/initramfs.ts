/**
 * The test guest's kernel and initramfs.
 *
 * The kernel is the distribution's own (Debian's linux-image-amd64 in
 * /boot), booted with QEMU's -kernel, so the NBD client under test is the
 * one real machines run. The initramfs is built from the host's busybox,
 * nbd-client and kernel modules by build-initramfs.sh, with init.sh as
 * /init, and cached under `.cache/guest/` keyed by everything that goes into
 * it: the kernel version, both scripts and the identity (size, mtime) of
 * busybox, nbd-client and the module index. A changed script or an upgraded
 * package gives a new key, so a stale guest is never booted.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GuestError } from './errors.js';

/** The repository root: this file runs as dist/test/helpers/guest/initramfs.js. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
/** The scripts are not compiled, so they are read from the source tree. */
export const GUEST_SOURCE_DIR = join(REPO_ROOT, 'test', 'helpers', 'guest');
export const BUILD_SCRIPT = join(GUEST_SOURCE_DIR, 'build-initramfs.sh');
export const INIT_SCRIPT = join(GUEST_SOURCE_DIR, 'init.sh');

export const INITRAMFS_LIMITS = {
  /** A build copies ~6 MiB and gzips it; two minutes covers a loaded CI machine. */
  buildTimeoutMs: 120_000,
  /** Archives from other inputs older than this are deleted after a build. */
  staleAfterMs: 60 * 60 * 1000,
} as const;

export interface GuestKernel {
  version: string;
  /** The bzImage to hand to QEMU's -kernel. */
  path: string;
  /** Where lib/modules/<version> lives. */
  moduleRoot: string;
}

function readable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

function kernelAt(path: string, moduleRoot: string): GuestKernel | null {
  const m = /vmlinuz-(.+)$/.exec(path);
  if (!m || !readable(path)) return null;
  const version = m[1]!;
  if (!existsSync(join(moduleRoot, 'lib', 'modules', version, 'modules.dep'))) return null;
  return { version, path, moduleRoot };
}

/**
 * The kernel the guest boots: DISKLESS_GUEST_KERNEL (a vmlinuz-<version>
 * path) if set, else the newest readable /boot/vmlinuz-* whose modules are
 * installed. The host's running kernel is not used as such: in a container
 * it is not the one whose modules are on disk.
 */
export function findGuestKernel(bootDir = '/boot', moduleRoot = '/'): GuestKernel {
  const wanted = process.env.DISKLESS_GUEST_KERNEL;
  if (wanted) {
    const k = kernelAt(wanted, moduleRoot);
    if (!k) throw new GuestError('GUEST_NO_KERNEL', `DISKLESS_GUEST_KERNEL=${wanted} is not a readable vmlinuz-<version> with modules under ${moduleRoot}lib/modules`);
    return k;
  }
  let names: string[] = [];
  try {
    names = readdirSync(bootDir).filter((n) => n.startsWith('vmlinuz-'));
  } catch {
    // no /boot
  }
  const kernels = names
    .map((n) => kernelAt(join(bootDir, n), moduleRoot))
    .filter((k): k is GuestKernel => k !== null)
    .sort((a, b) => b.version.localeCompare(a.version, 'en', { numeric: true }));
  if (kernels.length === 0) {
    throw new GuestError('GUEST_NO_KERNEL', `no readable ${bootDir}/vmlinuz-* with modules in ${moduleRoot}lib/modules (install linux-image-amd64)`);
  }
  return kernels[0]!;
}

function which(command: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin'])) {
    const p = join(dir, command);
    if (dir && existsSync(p)) return p;
  }
  return null;
}

function identity(path: string | null): string {
  if (!path) return 'missing';
  try {
    const s = statSync(path);
    return `${path}:${s.size}:${Math.trunc(s.mtimeMs)}`;
  } catch {
    return `${path}:missing`;
  }
}

/** The cache key: changes whenever anything that goes into the archive changes. Pure but for file reads. */
export function initramfsKey(kernel: GuestKernel): string {
  const h = createHash('sha256');
  h.update(kernel.version).update('\0');
  h.update(readFileSync(BUILD_SCRIPT)).update('\0');
  h.update(readFileSync(INIT_SCRIPT)).update('\0');
  h.update(identity(process.env.GUEST_BUSYBOX ?? which('busybox'))).update('\0');
  h.update(identity(process.env.GUEST_NBD_CLIENT ?? which('nbd-client'))).update('\0');
  h.update(identity(join(kernel.moduleRoot, 'lib', 'modules', kernel.version, 'modules.dep')));
  return h.digest('hex').slice(0, 16);
}

export interface Initramfs {
  path: string;
  /** False when this call built it. */
  cached: boolean;
  buildMs: number;
}

/** The cache directory: DISKLESS_GUEST_CACHE, or `.cache/guest` in the repository (gitignored). */
export function guestCacheDir(): string {
  return process.env.DISKLESS_GUEST_CACHE ?? join(REPO_ROOT, '.cache', 'guest');
}

/**
 * Returns the cached initramfs for this kernel, building it first if needed.
 * Parallel callers may both build; the script renames its output into place,
 * so neither ever boots a half-written archive.
 */
export async function ensureGuestInitramfs(kernel: GuestKernel, cacheDir = guestCacheDir()): Promise<Initramfs> {
  const out = join(cacheDir, `initramfs-${kernel.version}-${initramfsKey(kernel)}.cpio.gz`);
  if (existsSync(out)) return { path: out, cached: true, buildMs: 0 };
  mkdirSync(cacheDir, { recursive: true });
  const started = Date.now();
  const env = { ...process.env, GUEST_MODULE_ROOT: kernel.moduleRoot, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` };
  await new Promise<void>((resolvePromise, reject) => {
    const child = spawn('sh', [BUILD_SCRIPT, kernel.version, INIT_SCRIPT, out], { stdio: ['ignore', 'pipe', 'pipe'], env });
    const output: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => output.push(b));
    child.stderr.on('data', (b: Buffer) => output.push(b));
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    }, INITRAMFS_LIMITS.buildTimeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new GuestError('GUEST_BUILD_FAILED', `cannot run ${BUILD_SCRIPT}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0 && existsSync(out)) resolvePromise();
      else reject(new GuestError('GUEST_BUILD_FAILED', `${BUILD_SCRIPT} exited ${code ?? signal}: ${Buffer.concat(output).toString().trim().slice(-2000)}`));
    });
  });
  pruneStale(cacheDir, kernel.version, out);
  return { path: out, cached: false, buildMs: Date.now() - started };
}

/**
 * Removes archives of this kernel built from older inputs, so the cache does
 * not grow by 6 MiB at every edit of init.sh. Recent ones are left alone: a
 * parallel run from another checkout state may be booting one.
 */
function pruneStale(cacheDir: string, version: string, keep: string): void {
  const cutoff = Date.now() - INITRAMFS_LIMITS.staleAfterMs;
  for (const name of readdirSync(cacheDir)) {
    const p = join(cacheDir, name);
    if (p === keep || !name.startsWith(`initramfs-${version}-`) || !name.endsWith('.cpio.gz')) continue;
    try {
      if (statSync(p).mtimeMs < cutoff) unlinkSync(p);
    } catch {
      // removed by another run meanwhile
    }
  }
}
