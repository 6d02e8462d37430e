/**
 * Debian chroots for the kit's interop tests, built with debootstrap and
 * cached as tarballs outside the repository (/var/cache/diskless-test/, or
 * DISKLESS_TEST_CACHE), keyed by suite and packages, so the minutes of
 * debootstrap are spent once per machine.
 *
 *   base:    debootstrap --variant=minbase with a few packages every flavour needs
 *   flavour: base + a kernel + initramfs-tools, or + dracut (which replaces
 *            initramfs-tools: debootstrap itself cannot pick dracut for the
 *            kernel's initramfs dependency, so it is installed with apt after)
 *
 * The kernel goes in with INITRD=No and its initramfs is then built once
 * (package hooks and triggers would build it twice, and a build takes minutes
 * here), so the cached system is like an installed one: it boots from its
 * disk with a plain initramfs. The mirror is read from this machine's apt
 * sources.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';

export type Flavour = 'initramfs-tools' | 'dracut';

export const SUITE = 'bookworm';
/** Bumped when the way a chroot is made changes (so old tarballs are not reused). */
const RECIPE = 3;
const BASE_PACKAGES = ['systemd-sysv', 'udev', 'kmod', 'ifupdown'];
const FLAVOUR_PACKAGES: Record<Flavour, string[]> = {
  'initramfs-tools': ['linux-image-amd64', 'initramfs-tools'],
  dracut: ['linux-image-amd64', 'dracut'],
};

export function cacheDir(): string {
  return process.env.DISKLESS_TEST_CACHE ?? '/var/cache/diskless-test';
}

/**
 * The Debian mirror this machine's apt uses for `suite`: the first `deb`
 * source (deb822 .sources files or one-line sources.list) that lists the
 * suite itself. Never a host name written into the tests.
 */
export function aptMirror(suite = SUITE): string {
  const texts: string[] = [];
  const add = (p: string): void => { try { texts.push(readFileSync(p, 'utf8')); } catch { /* unreadable: skip */ } };
  add('/etc/apt/sources.list');
  const d = '/etc/apt/sources.list.d';
  if (existsSync(d)) for (const f of readdirSync(d).sort()) if (f.endsWith('.sources') || f.endsWith('.list')) add(join(d, f));
  for (const text of texts) {
    // One-line form: deb [options] URI suite components...
    for (const line of text.split('\n')) {
      const m = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s/.exec(line);
      if (m && m[2] === suite) return m[1]!.replace(/\/+$/, '');
    }
    // deb822: stanzas of Field: value lines, separated by blank lines.
    for (const stanza of text.split(/\n\s*\n/)) {
      const fields = new Map<string, string>();
      for (const line of stanza.split('\n')) {
        const m = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
        if (m) fields.set(m[1]!.toLowerCase(), m[2]!.trim());
      }
      if (fields.get('enabled') === 'no') continue;
      if (!(fields.get('types') ?? '').split(/\s+/).includes('deb')) continue;
      if (!(fields.get('suites') ?? '').split(/\s+/).includes(suite)) continue;
      const uri = (fields.get('uris') ?? '').split(/\s+/)[0];
      if (uri) return uri.replace(/\/+$/, '');
    }
  }
  throw new Error(`no apt source for ${suite} in /etc/apt/sources.list{,.d}: cannot debootstrap`);
}

function key(parts: unknown): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 12);
}

export function tarballPath(flavour: Flavour): string {
  return join(cacheDir(), `debian-${SUITE}-${flavour}-${key({ RECIPE, SUITE, base: BASE_PACKAGES, extra: FLAVOUR_PACKAGES[flavour] })}.tar.gz`);
}

export function baseTarballPath(): string {
  return join(cacheDir(), `debian-${SUITE}-base-${key({ RECIPE, SUITE, base: BASE_PACKAGES })}.tar.gz`);
}

export interface RunResult {
  code: number | null;
  output: string;
}

/** Runs a command, output collected (and bounded), killed after timeoutMs. */
export function run(cmd: string, args: string[], opts: { timeoutMs: number; env?: NodeJS.ProcessEnv; input?: string } ): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let output = '';
    const keep = (d: Buffer): void => {
      output += d.toString();
      if (output.length > 4_000_000) output = output.slice(-2_000_000);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} ran over ${opts.timeoutMs} ms:\n${output.slice(-4000)}`));
    }, opts.timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, output }); });
    if (child.stdin) {
      // A command that exits without reading its input must not fail the test with EPIPE.
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
  });
}

async function must(cmd: string, args: string[], timeoutMs: number, env?: NodeJS.ProcessEnv): Promise<string> {
  const r = await run(cmd, args, { timeoutMs, ...(env ? { env } : {}) });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${r.output.slice(-4000)}`);
  return r.output;
}

/** Packs a directory into a tarball atomically (written aside, renamed into place). */
async function pack(dir: string, tarball: string): Promise<void> {
  mkdirSync(cacheDir(), { recursive: true });
  const tmp = `${tarball}.${process.pid}.tmp`;
  await must('tar', ['--numeric-owner', '-C', dir, '-czf', tmp, '.'], 20 * 60_000);
  renameSync(tmp, tarball);
}

export async function unpack(tarball: string, dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  await must('tar', ['--numeric-owner', '-C', dir, '-xzf', tarball], 20 * 60_000);
}

/** /proc, /sys and /dev bound into a chroot (not recursively: one umount each undoes them). */
export class ChrootMounts {
  private mounted: string[] = [];
  constructor(readonly root: string) {}

  async mount(): Promise<void> {
    for (const m of ['proc', 'sys', 'dev']) {
      const target = join(this.root, m);
      mkdirSync(target, { recursive: true });
      await must('mount', ['--bind', `/${m}`, target], 30_000);
      this.mounted.push(target);
    }
  }

  /** Unmounts in reverse order; throws if anything under root is still mounted. */
  async unmount(): Promise<void> {
    for (const target of [...this.mounted].reverse()) {
      const r = await run('umount', [target], { timeoutMs: 60_000 });
      if (r.code !== 0) await run('umount', ['-l', target], { timeoutMs: 60_000 });
    }
    this.mounted = [];
    const left = mountsUnder(this.root);
    if (left.length > 0) throw new Error(`still mounted under ${this.root}: ${left.join(', ')}`);
  }
}

/** Mount points at or under dir, from /proc/self/mountinfo (octal escapes decoded). */
export function mountsUnder(dir: string): string[] {
  const text = readFileSync('/proc/self/mountinfo', 'utf8');
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const mp = line.split(' ')[4];
    if (!mp) continue;
    const path = mp.replace(/\\([0-7]{3})/g, (_s, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (path === dir || path.startsWith(dir + '/')) out.push(path);
  }
  return out;
}

/**
 * Removes a chroot directory, but only when nothing is mounted under it:
 * deleting through a bind mount of /dev would delete the host's device nodes.
 */
export function removeChroot(dir: string): void {
  const left = mountsUnder(dir);
  if (left.length > 0) throw new Error(`not removing ${dir}: still mounted: ${left.join(', ')}`);
  rmSync(dir, { recursive: true, force: true });
}

async function chrootApt(root: string, packages: string[], flavour: Flavour): Promise<void> {
  copyFileSync('/etc/resolv.conf', join(root, 'etc', 'resolv.conf'));
  const env = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C',
    // No initramfs while the cache is made: the kit's run builds it (see the header).
    INITRD: 'No',
  };
  const mounts = new ChrootMounts(root);
  await mounts.mount();
  try {
    await must('chroot', [root, 'apt-get', 'update', '-q'], 10 * 60_000, env);
    await must('chroot', [root, 'apt-get', 'install', '-y', '-q', '--no-install-recommends', ...packages], 30 * 60_000, env);
    await must('chroot', [root, 'apt-get', 'clean'], 60_000, env);
    const { INITRD: _skip, ...buildEnv } = env;
    const build = flavour === 'initramfs-tools' ? ['update-initramfs', '-c', '-k', 'all'] : ['dracut', '-f', '--regenerate-all'];
    await must('chroot', [root, ...build], 30 * 60_000, buildEnv);
  } finally {
    await mounts.unmount();
  }
}

export interface Prepared {
  tarball: string;
  /** True when this call built it (and how long that took). */
  built: boolean;
  buildMs: number;
}

/** The flavour's chroot tarball, built (with its base) when not cached yet. */
export async function ensureChrootTarball(flavour: Flavour, workDir: string): Promise<Prepared> {
  const tarball = tarballPath(flavour);
  if (existsSync(tarball)) return { tarball, built: false, buildMs: 0 };
  const started = Date.now();
  const base = baseTarballPath();
  if (!existsSync(base)) {
    const dir = mkdtempSync(join(workDir, 'base-'));
    try {
      await must('debootstrap', ['--variant=minbase', `--include=${BASE_PACKAGES.join(',')}`, SUITE, dir, aptMirror()], 40 * 60_000);
      await pack(dir, base);
    } finally {
      removeChroot(dir);
    }
  }
  const dir = mkdtempSync(join(workDir, `${flavour}-`));
  try {
    await unpack(base, dir);
    await chrootApt(dir, FLAVOUR_PACKAGES[flavour], flavour);
    await pack(dir, tarball);
  } finally {
    removeChroot(dir);
  }
  return { tarball, built: true, buildMs: Date.now() - started };
}
