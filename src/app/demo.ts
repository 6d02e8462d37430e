/**
 * `diskless demo`: the whole product on one machine, in one command.
 *
 *   1. builds the demo image (Debian 12 with the client kit and root logged
 *      in on the serial console), or reuses it: the disk build is cached by
 *      its options, and the catalogue version made from it is reused while
 *      its build key matches;
 *   2. makes a private network namespace with a bridge and one tap device,
 *      so DHCP never reaches a real network;
 *   3. starts the server in it (NBD, HTTP, TFTP, full DHCP on the bridge);
 *   4. boots a disk-less QEMU VM (SeaBIOS + iPXE) on the tap, shows its
 *      serial console live until the login prompt, then attaches the user's
 *      terminal to that console;
 *   5. on Ctrl-C, SIGTERM or `diskless demo stop` stops the VM and the
 *      server (by pid) and deletes the namespace.
 *
 * The pids, the namespace and the console socket are written to a state
 * file, so `stopDemo()` (another process) can stop a demo, and clean up
 * after one that was killed.
 *
 * The namespace code is a small runtime copy of the test lab's
 * (test/helpers/lab.ts): the product must not import test code.
 *
 * This module is also an executable: `node demo.js --serve CONFIG` is the
 * server process the demo starts inside the namespace (startServer: NBD
 * and the boot services over one catalogue), and `node demo.js run|stop` runs the demo
 * without the CLI.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildDebianImage, cacheKey, resolveBuildOptions, type BuildProgress } from '../images/build-debian.js';
import { DisklessError } from '../lib/errors.js';
import type { AppErrorCode } from './errors.js';
import { createLogger, silentLogger, type Logger } from '../lib/log.js';
import type { ImageVersionRecord } from '../state/store.js';
import type { Catalogue } from './catalogue.js';
import { loadConfig } from './config.js';
import { startServer } from './server.js';

export const DEMO_DEFAULTS = {
  /** Pids, namespace and console socket of the running demo. */
  stateDir: '/run/diskless-demo',
  /** The demo's catalogue (data directory) and scratch files; kept between runs. */
  workDir: '/var/lib/diskless-demo',
  /** Debootstrap tarballs and finished disks, kept between runs. */
  cacheDir: '/var/cache/diskless',
  /** Scratch space of an image build (~1.5 GB while it runs). */
  buildDir: '/var/tmp/diskless-build',
  netns: 'diskless-demo',
  bridge: 'dlbr0',
  tap: 'dltap0',
  /** The demo subnet inside the namespace: the server is .1, clients get .100-.199. */
  subnetPrefix: '10.213.77',
  image: 'demo',
  mac: '52:54:00:d1:5c:01',
  /** Under TCG a full Debian needs at least this much (field notes). */
  memoryMiB: 1024,
  httpPort: 8080,
  nbdPort: 10809,
  serverReadyMs: 60_000,
  /** Power-on to the login prompt; TCG takes 2-4 minutes. */
  bootTimeoutMs: 15 * 60_000,
  stopGraceMs: 5_000,
  pollMs: 200,
  commandTimeoutMs: 15_000,
} as const;

/** The line the server process prints once every service listens. */
export const DEMO_SERVER_READY = 'DISKLESS-DEMO-SERVER-READY';
/** The serial console shows one of these once the VM can be used. */
export const LOGIN_PROMPT = /(login: |root@[^\s:]+:[^\n#]*# ?)$/m;

/** The demo's codes live with the app's (src/app/errors.ts), so docs/errors.md lists them. */
export type DemoErrorCode = Extract<AppErrorCode, `DEMO_${string}`>;

export class DemoError extends DisklessError {
  override readonly name = 'DemoError';
  constructor(code: DemoErrorCode, message: string) {
    super(code, message);
  }
}

export interface DemoOptions {
  stateDir?: string;
  workDir?: string;
  cacheDir?: string;
  buildDir?: string;
  /** Debian mirror for the image build; default: this machine's apt sources. */
  mirror?: string;
  /** 'tcg' (default, or DISKLESS_QEMU_ACCEL) or 'kvm' when the host has a working KVM. */
  accel?: 'tcg' | 'kvm';
  memoryMiB?: number;
  /** Attach the terminal to the VM's console (default: when stdin is a terminal). */
  attach?: boolean;
  /** Where progress text goes; default stderr. */
  say?: (line: string) => void;
  /** Where the VM's console goes; default stdout. */
  console?: NodeJS.WritableStream;
  logger?: Logger;
  /** Resolves (the demo then stops) when this signal aborts, besides SIGINT/SIGTERM. */
  signal?: AbortSignal;
}

interface DemoState {
  pid: number;
  netns: string;
  serverPid: number | null;
  qemuPid: number | null;
  consoleSocket: string;
  consoleLog: string;
  startedMs: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** The pid still runs the program we started (pids are reused). */
function pidRuns(pid: number, needle: string): boolean {
  if (!pidAlive(pid)) return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes(needle);
  } catch {
    return false;
  }
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // gone
  }
}

async function waitGone(pids: number[], ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (pids.some(pidAlive) && Date.now() < deadline) await sleep(DEMO_DEFAULTS.pollMs);
}

/** SIGTERM, then SIGKILL after the grace time. */
async function stopPid(pid: number, needle: string): Promise<void> {
  if (!pidRuns(pid, needle)) return;
  killQuietly(pid, 'SIGTERM');
  await waitGone([pid], DEMO_DEFAULTS.stopGraceMs);
  if (pidAlive(pid)) {
    killQuietly(pid, 'SIGKILL');
    await waitGone([pid], DEMO_DEFAULTS.stopGraceMs);
  }
}

function ip(args: string[], allowFailure = false): void {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: DEMO_DEFAULTS.commandTimeoutMs });
  if ((r.status !== 0 || r.error) && !allowFailure) {
    throw new DemoError('DEMO_COMMAND_FAILED', `ip ${args.join(' ')}: ${r.error?.message ?? r.stderr.trim()}`);
  }
}

function netnsExists(name: string): boolean {
  return existsSync(join('/run/netns', name));
}

// ---------------------------------------------------------------------------
// Image versions with their boot files

/**
 * Adds a raw disk as the next version of `image` and makes it bootable
 * (Catalogue.importVersion). `extraInfo` is merged into the boot info (the
 * demo records its build key).
 */
export async function addBootableVersion(catalogue: Catalogue, image: string, disk: string, extraInfo: Record<string, unknown> = {}): Promise<ImageVersionRecord> {
  return catalogue.importVersion(image, disk, { extraInfo });
}

// ---------------------------------------------------------------------------
// The server process: startServer() (NBD, then HTTP, TFTP and DHCP over one catalogue)

/** `node demo.js --serve CONFIG`: the server process, until SIGTERM/SIGINT; prints DEMO_SERVER_READY once it serves. */
async function serveMain(args: string[]): Promise<void> {
  const config = loadConfig(resolve(args[0] ?? ''));
  const logger = createLogger({ level: 'info', pretty: false });
  const server = await startServer(config, { logger });
  process.stdout.write(`${DEMO_SERVER_READY} ${JSON.stringify({ pid: process.pid, nbd: server.nbdAddress.port })}\n`);
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    server.close().then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

// ---------------------------------------------------------------------------
// The demo

function statePath(o: DemoOptions): string {
  return join(o.stateDir ?? DEMO_DEFAULTS.stateDir, 'state.json');
}

function readState(o: DemoOptions): DemoState | null {
  try {
    return JSON.parse(readFileSync(statePath(o), 'utf8')) as DemoState;
  } catch {
    return null;
  }
}

function writeState(o: DemoOptions, s: DemoState): void {
  mkdirSync(o.stateDir ?? DEMO_DEFAULTS.stateDir, { recursive: true, mode: 0o700 });
  writeFileSync(statePath(o), JSON.stringify(s, null, 2) + '\n', { mode: 0o600 });
}

/** Stops what a state file names (VM, server), deletes the namespace and the state. Idempotent. */
async function teardown(o: DemoOptions, s: DemoState): Promise<void> {
  if (s.qemuPid !== null) await stopPid(s.qemuPid, 'qemu-system');
  if (s.serverPid !== null) await stopPid(s.serverPid, '--serve');
  if (netnsExists(s.netns)) ip(['netns', 'del', s.netns], true);
  rmSync(s.consoleSocket, { force: true });
  rmSync(statePath(o), { force: true });
}

/**
 * Stops a running demo: asks the demo process to stop (it cleans up), and
 * cleans up itself what is left (a demo process killed with SIGKILL leaves
 * the VM, the server and the namespace). Resolves with what it found.
 */
export async function stopDemo(options: DemoOptions = {}): Promise<{ running: boolean; cleaned: boolean }> {
  const s = readState(options);
  if (!s) {
    // No state, but a namespace by our name would still be ours.
    if (netnsExists(DEMO_DEFAULTS.netns)) {
      ip(['netns', 'del', DEMO_DEFAULTS.netns], true);
      return { running: false, cleaned: true };
    }
    return { running: false, cleaned: false };
  }
  const running = s.pid !== process.pid && pidRuns(s.pid, 'demo');
  if (running) {
    killQuietly(s.pid, 'SIGTERM');
    await waitGone([s.pid], DEMO_DEFAULTS.stopGraceMs * 4);
  }
  await teardown(options, s);
  return { running, cleaned: true };
}

interface Running {
  state: DemoState;
  server: ChildProcess | null;
  qemu: ChildProcess | null;
}

/** Builds the demo image or reuses the catalogue's version of it. */
async function prepareImage(o: DemoOptions, dataDir: string, say: (s: string) => void, logger: Logger): Promise<void> {
  const { Catalogue } = await import('./catalogue.js');
  const build = { autologin: true, cacheDir: o.cacheDir ?? DEMO_DEFAULTS.cacheDir, workDir: o.buildDir ?? DEMO_DEFAULTS.buildDir, ...(o.mirror ? { mirror: o.mirror } : {}) };
  const key = cacheKey(await resolveBuildOptions({ ...build, outPath: '/nonexistent' }));
  const catalogue = Catalogue.open(dataDir, { logger });
  try {
    const image = catalogue.listImages().find((i) => i.name === DEMO_DEFAULTS.image);
    const current = image ? catalogue.store.images.current(DEMO_DEFAULTS.image) : null;
    const info = current?.bootInfo as Record<string, unknown> | null | undefined;
    if (current && info?.buildKey === key && typeof info.kernelFile === 'string' && existsSync(catalogue.dir.abs(info.kernelFile))) {
      say(`image: reusing ${DEMO_DEFAULTS.image} version ${current.version} (Debian ${String(info.kernelVersion ?? '')})`);
      return;
    }
    const out = join(o.workDir ?? DEMO_DEFAULTS.workDir, `build-${key.slice(0, 12)}.raw`);
    rmSync(out, { force: true });
    say('image: building the demo image (Debian 12 with the client kit; the first build downloads ~150 MB and takes several minutes, later ones come from the cache)');
    const t0 = Date.now();
    let lastProgress = 0;
    const result = await buildDebianImage({
      ...build, outPath: out, logger,
      progress: (p: BuildProgress) => {
        // Steps a cached build skips are said once, not one line each.
        // Progress lines (debootstrap's) at most every few seconds: signs of life, not a flood.
        if (p.state === 'progress') {
          if (Date.now() - lastProgress < 5_000) return;
          lastProgress = Date.now();
        }
        const secs = ((Date.now() - t0) / 1000).toFixed(0).padStart(4);
        say(`image: ${secs}s [${p.index}/${p.total}] ${p.step} ${p.state}${p.message ? ': ' + p.message : ''}`);
      },
      ...(o.signal ? { signal: o.signal } : {}),
    });
    say(`image: ${result.cached ? 'from the cache' : 'built'}; adding it to the catalogue with its kernel and initramfs`);
    try {
      const v = await addBootableVersion(catalogue, DEMO_DEFAULTS.image, out, { buildKey: key });
      say(`image: ${v.image} version ${v.version} is published`);
    } finally {
      rmSync(out, { force: true });
    }
  } finally {
    catalogue.close();
  }
}

/** The namespace with its bridge (the server's address) and the VM's tap. */
function makeNamespace(netns: string, serverAddress: string): void {
  ip(['netns', 'add', netns]);
  const n = (...args: string[]): void => ip(['-n', netns, ...args]);
  n('link', 'set', 'lo', 'up');
  // No STP, no forwarding delay: the firmware's first DHCPDISCOVER must get through.
  n('link', 'add', DEMO_DEFAULTS.bridge, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
  n('addr', 'add', `${serverAddress}/24`, 'dev', DEMO_DEFAULTS.bridge);
  n('link', 'set', DEMO_DEFAULTS.bridge, 'up');
  n('tuntap', 'add', 'dev', DEMO_DEFAULTS.tap, 'mode', 'tap');
  n('link', 'set', DEMO_DEFAULTS.tap, 'master', DEMO_DEFAULTS.bridge);
  n('link', 'set', DEMO_DEFAULTS.tap, 'up');
}

function spawnInNetns(netns: string, command: string, args: string[], logFile: string): ChildProcess {
  const fd = openSync(logFile, 'a');
  try {
    // `ip netns exec` execs the command, so the child's pid is the command's.
    return spawn('ip', ['netns', 'exec', netns, command, ...args], { stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd);
  }
}

/** Follows a growing file; calls `onText` with each new piece. Returns a stop function. */
function follow(path: string, onText: (text: string) => void): () => void {
  let offset = 0;
  let stopped = false;
  const buf = Buffer.alloc(64 * 1024);
  const tick = (): void => {
    if (stopped) return;
    try {
      const fd = openSync(path, 'r');
      try {
        const size = fstatSync(fd).size;
        while (offset < size) {
          const n = readSync(fd, buf, 0, Math.min(buf.length, size - offset), offset);
          if (n <= 0) break;
          offset += n;
          onText(buf.subarray(0, n).toString('utf8'));
        }
      } finally {
        closeSync(fd);
      }
    } catch {
      // not created yet
    }
    setTimeout(tick, DEMO_DEFAULTS.pollMs);
  };
  tick();
  return () => {
    stopped = true;
  };
}

async function waitForText(path: string, pattern: RegExp, timeoutMs: number, exited: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let text = '';
    try {
      text = readFileSync(path, 'utf8').replace(/\r/g, '');
    } catch {
      // not yet
    }
    if (pattern.test(text)) return;
    if (exited()) throw new DemoError(what === 'server' ? 'DEMO_SERVER_FAILED' : 'DEMO_VM_FAILED', `the ${what} exited; its log ends:\n${text.slice(-1500)}`);
    if (Date.now() > deadline) throw new DemoError('DEMO_TIMEOUT', `the ${what} did not show ${pattern} within ${Math.round(timeoutMs / 1000)} s; its log ends:\n${text.slice(-1500)}`);
    await sleep(DEMO_DEFAULTS.pollMs);
  }
}

/**
 * Runs the demo until Ctrl-C, SIGTERM, `diskless demo stop` or the VM
 * powering off, then cleans up. Resolves with 0 when it ran and stopped
 * cleanly.
 */
export async function runDemo(options: DemoOptions = {}): Promise<number> {
  const say = options.say ?? ((line: string) => void process.stderr.write(`\x1b[1m==> ${line}\x1b[0m\n`));
  const out = options.console ?? process.stdout;
  const logger = options.logger ?? silentLogger;
  if (process.getuid?.() !== 0) throw new DemoError('DEMO_NEEDS_ROOT', 'run the demo as root: it makes a network namespace and a tap device, and builds a Debian image');
  const previous = readState(options);
  if (previous && previous.pid !== process.pid && pidRuns(previous.pid, 'demo')) {
    throw new DemoError('DEMO_RUNNING', `a demo is already running (pid ${previous.pid}); stop it with \`diskless demo stop\``);
  }
  if (previous || netnsExists(DEMO_DEFAULTS.netns)) {
    say('cleaning up what a previous demo left');
    await stopDemo(options);
  }

  const workDir = options.workDir ?? DEMO_DEFAULTS.workDir;
  const stateDir = options.stateDir ?? DEMO_DEFAULTS.stateDir;
  const dataDir = join(workDir, 'data');
  mkdirSync(workDir, { recursive: true, mode: 0o750 });
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });

  // Stop requests: signals, the caller's AbortSignal, `demo stop` (SIGTERM).
  const stopCtl = new AbortController();
  const onSignal = (): void => stopCtl.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  options.signal?.addEventListener('abort', onSignal);
  const stopped = new Promise<void>((r) => stopCtl.signal.addEventListener('abort', () => r()));
  const buildSignal = AbortSignal.any([stopCtl.signal, ...(options.signal ? [options.signal] : [])]);

  const serverAddress = `${DEMO_DEFAULTS.subnetPrefix}.1`;
  const run: Running = {
    state: {
      pid: process.pid, netns: DEMO_DEFAULTS.netns, serverPid: null, qemuPid: null,
      consoleSocket: join(stateDir, 'console.sock'), consoleLog: join(workDir, 'console.log'), startedMs: Date.now(),
    },
    server: null,
    qemu: null,
  };
  let restoreTerminal: (() => void) | null = null;
  let stopFollow: (() => void) | null = null;
  let socket: Socket | null = null;
  try {
    await prepareImage({ ...options, signal: buildSignal }, dataDir, say, logger);
    if (stopCtl.signal.aborted) return 0;

    // The catalogue: one ephemeral client, the VM's MAC.
    {
      const { Catalogue } = await import('./catalogue.js');
      const catalogue = Catalogue.open(dataDir, { logger });
      try {
        const existing = catalogue.listClients().find((c) => c.mac === DEMO_DEFAULTS.mac);
        if (!existing) catalogue.addClient({ mac: DEMO_DEFAULTS.mac, image: DEMO_DEFAULTS.image, mode: 'ephemeral', name: 'demo-pc' });
      } finally {
        catalogue.close();
      }
    }

    say(`network: making namespace ${DEMO_DEFAULTS.netns} with bridge ${DEMO_DEFAULTS.bridge} (${serverAddress}/24) and tap ${DEMO_DEFAULTS.tap}; nothing reaches your real network`);
    writeState(options, run.state);
    makeNamespace(DEMO_DEFAULTS.netns, serverAddress);

    const configFile = join(workDir, 'diskless.json');
    writeFileSync(configFile, JSON.stringify({
      dataDir,
      nbd: { host: serverAddress, port: DEMO_DEFAULTS.nbdPort },
      http: { host: serverAddress, port: DEMO_DEFAULTS.httpPort },
      tftp: { host: serverAddress },
      dhcp: {
        interfaces: [{
          name: DEMO_DEFAULTS.bridge, mode: 'full', address: serverAddress, subnet: `${DEMO_DEFAULTS.subnetPrefix}.0/24`,
          pool: { start: `${DEMO_DEFAULTS.subnetPrefix}.100`, end: `${DEMO_DEFAULTS.subnetPrefix}.199` },
        }],
      },
      boot: { unknownClients: 'ignore' },
    }, null, 2) + '\n');
    const serverLog = join(workDir, 'server.log');
    rmSync(serverLog, { force: true });
    say(`server: starting NBD (port ${DEMO_DEFAULTS.nbdPort}), HTTP (${DEMO_DEFAULTS.httpPort}), TFTP and DHCP on ${serverAddress}; log: ${serverLog}`);
    run.server = spawnInNetns(DEMO_DEFAULTS.netns, process.execPath, ['--enable-source-maps', fileURLToPath(import.meta.url), '--serve', configFile], serverLog);
    run.state.serverPid = run.server.pid ?? null;
    writeState(options, run.state);
    const serverGone = (): boolean => run.server!.exitCode !== null || run.server!.signalCode !== null;
    await waitForText(serverLog, new RegExp(DEMO_SERVER_READY), DEMO_DEFAULTS.serverReadyMs, serverGone, 'server');

    const accel = options.accel ?? (process.env.DISKLESS_QEMU_ACCEL === 'kvm' ? 'kvm' : 'tcg');
    rmSync(run.state.consoleLog, { force: true });
    rmSync(run.state.consoleSocket, { force: true });
    const qemuArgs = [
      '-name', 'diskless-demo', '-machine', `q35,accel=${accel}`, '-cpu', 'max', '-smp', '1',
      '-m', String(options.memoryMiB ?? DEMO_DEFAULTS.memoryMiB), '-nodefaults', '-nographic',
      // The console is a socket the terminal attaches to; everything it prints is also logged.
      '-chardev', `socket,id=console0,path=${run.state.consoleSocket},server=on,wait=off,logfile=${run.state.consoleLog}`,
      '-serial', 'chardev:console0', '-monitor', 'none', '-boot', 'n',
      '-netdev', `tap,id=n0,ifname=${DEMO_DEFAULTS.tap},script=no,downscript=no`,
      '-device', `virtio-net-pci,netdev=n0,mac=${DEMO_DEFAULTS.mac},bootindex=1`,
    ];
    say(`vm: powering on a disk-less VM (MAC ${DEMO_DEFAULTS.mac}, SeaBIOS + iPXE, ${accel.toUpperCase()}${accel === 'tcg' ? ', 2-4 minutes to the login prompt' : ''}); its console follows`);
    run.qemu = spawnInNetns(DEMO_DEFAULTS.netns, 'qemu-system-x86_64', qemuArgs, join(workDir, 'qemu.log'));
    run.state.qemuPid = run.qemu.pid ?? null;
    writeState(options, run.state);
    const vmGone = (): boolean => run.qemu!.exitCode !== null || run.qemu!.signalCode !== null;
    const vmExited = new Promise<void>((r) => run.qemu!.once('exit', () => r()));

    stopFollow = follow(run.state.consoleLog, (text) => out.write(text));
    const prompt = waitForText(run.state.consoleLog, LOGIN_PROMPT, DEMO_DEFAULTS.bootTimeoutMs, vmGone, 'VM');
    const first = await Promise.race([prompt.then(() => 'up' as const), stopped.then(() => 'stop' as const)]);
    prompt.catch(() => undefined);
    if (first === 'stop') return 0;
    await sleep(500);
    stopFollow();
    stopFollow = null;

    const attach = options.attach ?? (process.stdin.isTTY === true);
    out.write('\n');
    if (attach) {
      say('vm: up. Your terminal is now the VM\'s serial console (root is logged in). Ctrl-C or `diskless demo stop` ends the demo and cleans up.');
      socket = connect(run.state.consoleSocket);
      await new Promise<void>((res, rej) => { socket!.once('connect', res); socket!.once('error', rej); });
      // Characters go to the VM as typed and the VM echoes them; ISIG stays on so Ctrl-C ends the demo.
      const saved = spawnSync('stty', ['-g'], { stdio: ['inherit', 'pipe', 'inherit'], encoding: 'utf8' }).stdout.trim();
      spawnSync('stty', ['-icanon', '-echo', 'isig', 'min', '1'], { stdio: 'inherit' });
      restoreTerminal = () => {
        if (saved) spawnSync('stty', [saved], { stdio: 'inherit' });
        else spawnSync('stty', ['sane'], { stdio: 'inherit' });
      };
      socket.on('data', (b: Buffer) => out.write(b));
      socket.on('error', () => undefined);
      process.stdin.on('data', (b: Buffer) => socket?.write(b));
      process.stdin.resume();
      socket.write('\r');
    } else {
      say('vm: up. The VM keeps running; its console is logged to ' + run.state.consoleLog + '; `diskless demo stop` (or SIGTERM) ends the demo.');
      stopFollow = follow(run.state.consoleLog, () => undefined);
    }
    await Promise.race([stopped, vmExited]);
    if (vmGone() && !stopCtl.signal.aborted) say('vm: powered off');
    return 0;
  } finally {
    stopFollow?.();
    restoreTerminal?.();
    process.stdin.pause();
    socket?.destroy();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    options.signal?.removeEventListener('abort', onSignal);
    say('stopping: VM, server, namespace');
    await teardown(options, run.state);
    say('demo stopped; the image stays cached for next time');
  }
}

// ---------------------------------------------------------------------------
// Executable

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const argv = process.argv.slice(2);
  // Options alone mean `run`.
  if (argv[0]?.startsWith('--') && argv[0] !== '--serve') argv.unshift('run');
  const [what, ...rest] = argv;
  const done = (code: number): void => {
    process.exitCode = code;
  };
  const fail = (err: unknown): void => {
    process.stderr.write(`diskless demo: ${(err as Error).message ?? String(err)}\n`);
    process.exitCode = 1;
  };
  // run|stop [--cache-dir DIR] [--work-dir DIR] [--mirror URL] [--accel tcg|kvm]
  const opt = (name: string): string | undefined => {
    const i = rest.indexOf(name);
    return i >= 0 ? rest[i + 1] : undefined;
  };
  const accel = opt('--accel');
  const options: DemoOptions = {
    ...(opt('--cache-dir') ? { cacheDir: resolve(opt('--cache-dir')!) } : {}),
    ...(opt('--work-dir') ? { workDir: resolve(opt('--work-dir')!) } : {}),
    ...(opt('--mirror') ? { mirror: opt('--mirror')! } : {}),
    ...(accel === 'kvm' || accel === 'tcg' ? { accel } : {}),
  };
  if (what === '--serve') serveMain(rest).catch((err: unknown) => { fail(err); process.exit(1); });
  else if (what === 'stop') stopDemo(options).then((r) => { process.stderr.write(r.cleaned ? 'demo stopped\n' : 'no demo was running\n'); done(0); }, fail);
  else if (what === undefined || what === 'run') runDemo(options).then(done, fail);
  else fail(new Error('usage: demo.js [run|stop] [--cache-dir DIR] [--work-dir DIR] [--mirror URL] [--accel tcg|kvm] | --serve CONFIG'));
}
