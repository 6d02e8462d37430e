/**
 * The boot lab: a private network namespace holding a Linux bridge with the
 * server's address on it, tap devices for QEMU clients, and every process the
 * test runs there (dnsmasq, the server under test, QEMU).
 *
 * Why a namespace: DHCP is broadcast and must never leak onto a host
 * interface. Nothing here touches the host's links; the namespace, its
 * bridge and taps are removed on close, and only the processes the lab
 * started (tracked by pid) or found inside its own namespace are killed.
 *
 * Cleanup runs in this order of preference: `lab.close()` (pass `t` to
 * createLab and it is registered with `t.after`, so it runs on failure too),
 * then a process `exit` hook and SIGINT/SIGTERM hooks that tear down any lab
 * still open. A lab left by a killed test run can be removed with
 * `sweepStaleLabs()` (namespaces whose owner pid is gone and that hold no
 * process).
 *
 * Names: the namespace is `dl-<pid>-<n>`, unique per process and per lab,
 * so parallel test files never collide. Links live inside the namespace, so
 * their names (`dlbr0`, `dltap<k>`, at most 15 characters as Linux requires)
 * need only be unique within it.
 *
 * Requires root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { DisklessError } from '../../src/lib/errors.js';
import { startQemuInLab, type QemuOptions, type QemuVm } from './lab-qemu.js';

export type { FirmwareKind, QemuOptions, QemuVm } from './lab-qemu.js';

export const LAB_ERROR_CODES = {
  LAB_BAD_SUBNET: 'the lab subnet is not a private IPv4 /24 written as a.b.c.0/24',
  LAB_COMMAND_FAILED: 'a command run to set up the lab or inside it exited with an error',
  LAB_TIMEOUT: 'a lab wait (log pattern, command, process exit) ran past its time limit',
  LAB_PROCESS_EXITED: 'a lab process exited while a test was waiting for its output',
  LAB_CLOSED: 'the lab was already closed',
  LAB_MISSING_FILE: 'a firmware or peer file the lab needs is not installed',
} as const;
export type LabErrorCode = keyof typeof LAB_ERROR_CODES;

export class LabError extends DisklessError {
  override readonly name = 'LabError';
  constructor(code: LabErrorCode, message: string) {
    super(code, message);
  }
}

/** Named limits of the lab. */
export const LAB_LIMITS = {
  /** How long a setup command (ip, cp...) may take. */
  commandTimeoutMs: 15_000,
  /** Grace between SIGTERM and SIGKILL when stopping a process. */
  stopGraceMs: 3_000,
  /** How long to wait for a process to disappear after SIGKILL. */
  killWaitMs: 5_000,
  /** Poll interval of log waits. */
  pollMs: 100,
  /** A log wait keeps at most this much text (serial logs of a full boot are far smaller). */
  maxLogBytes: 16 * 1024 * 1024,
  /** Characters of log quoted in a timeout error. */
  tailChars: 1_500,
} as const;

export const NETNS_PREFIX = 'dl-';
export const BRIDGE_NAME = 'dlbr0';
const TAP_PREFIX = 'dltap';
/** Linux IFNAMSIZ is 16 including the terminating NUL. */
const IFNAME_MAX = 15;

export interface LabOptions {
  /** A private IPv4 /24 such as '10.77.5.0/24'; the server is .1 on the bridge. Default: 10.77.N.0/24. */
  subnet?: string;
  /** A test context: `lab.close()` is registered with `t.after()`, so it runs even when the test fails. */
  t?: { after(fn: () => unknown): void };
  /** Keep the lab's directory (logs, pcaps, serial logs) after close; also DISKLESS_LAB_KEEP=1. */
  keepDir?: boolean;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A process started inside the lab. Its stdout and stderr go to `logFile`. */
export type LabChild = ChildProcess & {
  readonly logFile: string;
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<ExitInfo>;
};

export interface LabSpawnOptions {
  /** File that receives stdout and stderr; default `<lab.dir>/<n>-<command>.log`. */
  logFile?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface LabExecOptions {
  timeoutMs?: number;
  /** Resolve with the result instead of rejecting when the exit status is not 0. */
  allowFailure?: boolean;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface LabExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface LabCloseReport {
  netns: string;
  /** Tracked processes that had to be stopped. */
  stopped: number[];
  /** Untracked processes found inside the namespace (descendants of lab processes) and killed. */
  strays: number[];
  /** True when the namespace no longer exists. */
  namespaceRemoved: boolean;
  dirRemoved: boolean;
}

export interface Lab {
  /** The network namespace, `dl-<pid>-<n>`. */
  readonly netns: string;
  readonly bridge: string;
  /** e.g. '10.77.5.0/24'. */
  readonly subnet: string;
  readonly prefixLength: number;
  /** The server's address on the bridge, .1 of the subnet. */
  readonly serverAddress: string;
  /** A unique-local IPv6 address on the bridge (for router advertisements), e.g. 'fd77:5::1'. */
  readonly serverAddress6: string;
  /** Per-lab scratch directory: logs, serial logs, pcaps, OVMF variable stores. */
  readonly dir: string;
  readonly closed: boolean;
  /** An address of the subnet: `hostAddress(100)` is 10.77.N.100. */
  hostAddress(host: number): string;
  /** Creates a tap device on the bridge (inside the namespace) and returns its name. */
  addTap(): Promise<string>;
  /** Runs a command inside the namespace to completion. */
  exec(command: string, args?: readonly string[], options?: LabExecOptions): Promise<LabExecResult>;
  /** Starts a long-running process inside the namespace; tracked by pid until it exits. */
  spawn(command: string, args?: readonly string[], options?: LabSpawnOptions): LabChild;
  /** SIGTERM, then SIGKILL after the grace time; resolves when the process has exited. */
  stop(child: LabChild, graceMs?: number): Promise<ExitInfo>;
  /** Boots a QEMU client on a new (or given) tap of this lab. */
  startQemu(options: QemuOptions): Promise<QemuVm>;
  /** Pids of lab processes that have not exited yet. */
  pids(): number[];
  /** Stops every lab process, deletes the links and the namespace, removes the directory. Idempotent. */
  close(): Promise<LabCloseReport>;
}

// ---------------------------------------------------------------- small process helpers

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A zombie still answers signal 0; it has exited for our purposes.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs a host command (not in the lab) to completion, bounded in time. */
export function run(command: string, args: readonly string[], options: LabExecOptions = {}): Promise<LabExecResult> {
  const timeoutMs = options.timeoutMs ?? LAB_LIMITS.commandTimeoutMs;
  return new Promise((resolve, reject) => {
    const child = spawn(command, [...args], { stdio: ['ignore', 'pipe', 'pipe'], env: options.env, cwd: options.cwd });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) killQuietly(child.pid, 'SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new LabError('LAB_COMMAND_FAILED', `${command}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result = { code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
      const line = `${command} ${args.join(' ')}`;
      if (timedOut) reject(new LabError('LAB_TIMEOUT', `${line}: no exit within ${timeoutMs} ms`));
      else if (code !== 0 && !options.allowFailure) {
        reject(new LabError('LAB_COMMAND_FAILED', `${line}: exit ${code ?? signal}: ${result.stderr.trim().slice(-500)}`));
      } else resolve(result);
    });
  });
}

// ---------------------------------------------------------------- log waiting

/** Serial consoles are full of ANSI escapes and CRs; patterns are matched on the text without them. */
export function plainText(raw: string): string {
  // eslint-disable-next-line no-control-regex
  return raw.replace(/\x1b\[[0-9;?=]*[A-Za-z]/g, '').replace(/\x1b[()][A-Za-z0-9]/g, '').replace(/\r/g, '');
}

export interface WaitForLogOptions {
  timeoutMs: number;
  /** Give up early (with the log tail) when this process exits. */
  process?: { readonly exited: Promise<ExitInfo> };
  /** Start matching at this offset of the plain text (to wait for a second occurrence). */
  fromOffset?: number;
  pollMs?: number;
}

/** The plain text of a log file, '' when it does not exist yet. */
export function readLog(path: string): string {
  try {
    const buf = readFileSync(path);
    return plainText(buf.subarray(Math.max(0, buf.length - LAB_LIMITS.maxLogBytes)).toString('latin1'));
  } catch {
    return '';
  }
}

/**
 * Polls a log file until `pattern` matches its plain text. Rejects with
 * LAB_TIMEOUT, or LAB_PROCESS_EXITED if the given process exits first, in
 * both cases quoting the end of the log.
 */
export async function waitForLog(path: string, pattern: RegExp, options: WaitForLogOptions): Promise<RegExpExecArray> {
  const deadline = Date.now() + options.timeoutMs;
  const re = new RegExp(pattern.source, pattern.flags.replace('g', ''));
  let exitedAt: number | null = null;
  let exitInfo: ExitInfo | null = null;
  void options.process?.exited.then((e) => {
    exitedAt = Date.now();
    exitInfo = e;
  });
  for (;;) {
    // Note the exit before reading, so the last words of a process that just exited are still matched.
    const exitSeen = exitedAt !== null;
    const text = readLog(path).slice(options.fromOffset ?? 0);
    const m = re.exec(text);
    if (m) return m;
    const tail = text.slice(-LAB_LIMITS.tailChars);
    if (exitSeen) {
      const e = exitInfo as ExitInfo | null;
      throw new LabError('LAB_PROCESS_EXITED', `process exited (${e?.code ?? e?.signal}) before ${pattern} appeared in ${path}; log ends:\n${tail}`);
    }
    if (Date.now() >= deadline) {
      throw new LabError('LAB_TIMEOUT', `${pattern} did not appear in ${path} within ${options.timeoutMs} ms; log ends:\n${tail}`);
    }
    await sleep(options.pollMs ?? LAB_LIMITS.pollMs);
  }
}

// ---------------------------------------------------------------- names and addresses

let labCounter = 0;

function privateSlash24(subnet: string): [number, number, number] {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.0\/24$/.exec(subnet);
  const o = m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [];
  const ok = m && o.every((x) => x <= 255) && (o[0] === 10 || (o[0] === 172 && o[1]! >= 16 && o[1]! <= 31) || (o[0] === 192 && o[1] === 168));
  if (!ok) throw new LabError('LAB_BAD_SUBNET', `subnet ${JSON.stringify(subnet)}: expected a private a.b.c.0/24`);
  return o as [number, number, number];
}

// ---------------------------------------------------------------- emergency cleanup

const openLabs = new Set<LabImpl>();
let hooksInstalled = false;

function cleanupAllSync(): void {
  for (const lab of openLabs) lab.closeSync();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', cleanupAllSync);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    const onSignal = (): void => {
      cleanupAllSync();
      // With our listener gone, re-raising gives the default behaviour (exit) unless someone else handles it.
      process.removeListener(sig, onSignal);
      process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

// ---------------------------------------------------------------- the lab

class LabImpl implements Lab {
  readonly bridge = BRIDGE_NAME;
  readonly prefixLength = 24;
  readonly serverAddress: string;
  readonly serverAddress6: string;
  closed = false;
  private readonly octets: [number, number, number];
  private readonly children = new Map<number, LabChild>();
  private readonly taps: string[] = [];
  private spawnCount = 0;
  private closing: Promise<LabCloseReport> | null = null;

  constructor(
    readonly netns: string,
    readonly subnet: string,
    readonly dir: string,
    private readonly keepDir: boolean,
  ) {
    this.octets = privateSlash24(subnet);
    this.serverAddress = this.hostAddress(1);
    this.serverAddress6 = `fd77:${this.octets[2].toString(16)}::1`;
  }

  hostAddress(host: number): string {
    if (!Number.isInteger(host) || host < 1 || host > 254) throw new LabError('LAB_BAD_SUBNET', `host number ${host} is not in 1..254`);
    return `${this.octets.join('.')}.${host}`;
  }

  private assertOpen(): void {
    if (this.closed) throw new LabError('LAB_CLOSED', `lab ${this.netns} is closed`);
  }

  async setUp(): Promise<void> {
    await run('ip', ['netns', 'add', this.netns]);
    const ipn = (...args: string[]): Promise<LabExecResult> => run('ip', ['-n', this.netns, ...args]);
    await ipn('link', 'set', 'lo', 'up');
    // No STP and no forwarding delay: a client's first DHCPDISCOVER must not be dropped by a learning bridge.
    await ipn('link', 'add', this.bridge, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
    await ipn('addr', 'add', `${this.serverAddress}/${this.prefixLength}`, 'dev', this.bridge);
    // nodad: the address is usable at once (router advertisements need it).
    await ipn('addr', 'add', `${this.serverAddress6}/64`, 'dev', this.bridge, 'nodad');
    await ipn('link', 'set', this.bridge, 'up');
  }

  async addTap(): Promise<string> {
    this.assertOpen();
    const name = `${TAP_PREFIX}${this.taps.length}`;
    if (name.length > IFNAME_MAX) throw new LabError('LAB_COMMAND_FAILED', `interface name ${name} too long`);
    await run('ip', ['-n', this.netns, 'tuntap', 'add', 'dev', name, 'mode', 'tap']);
    this.taps.push(name);
    await run('ip', ['-n', this.netns, 'link', 'set', name, 'master', this.bridge]);
    await run('ip', ['-n', this.netns, 'link', 'set', name, 'up']);
    return name;
  }

  exec(command: string, args: readonly string[] = [], options: LabExecOptions = {}): Promise<LabExecResult> {
    this.assertOpen();
    return run('ip', ['netns', 'exec', this.netns, command, ...args], options);
  }

  spawn(command: string, args: readonly string[] = [], options: LabSpawnOptions = {}): LabChild {
    this.assertOpen();
    this.spawnCount += 1;
    const logFile = options.logFile ?? join(this.dir, `${this.spawnCount}-${basename(command)}.log`);
    const fd = openSync(logFile, 'a');
    const spawnOptions: SpawnOptions = { stdio: ['ignore', fd, fd], env: options.env, cwd: options.cwd };
    let child: ChildProcess;
    try {
      // `ip netns exec` execs the command after entering the namespace, so the pid is the command's own.
      child = spawn('ip', ['netns', 'exec', this.netns, command, ...args], spawnOptions);
    } finally {
      closeSync(fd);
    }
    const exited = new Promise<ExitInfo>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      // A spawn failure is reported as an exit; 'error' must have a listener or it throws.
      child.on('error', () => resolve({ code: null, signal: null }));
    });
    const labChild = Object.assign(child, { logFile, exited }) as LabChild;
    const pid = child.pid;
    if (pid !== undefined) {
      this.children.set(pid, labChild);
      void exited.then(() => this.children.delete(pid));
    }
    return labChild;
  }

  async stop(child: LabChild, graceMs: number = LAB_LIMITS.stopGraceMs): Promise<ExitInfo> {
    const pid = child.pid;
    if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return child.exited;
    killQuietly(pid, 'SIGTERM');
    const escalate = setTimeout(() => killQuietly(pid, 'SIGKILL'), graceMs);
    let giveUp: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        child.exited,
        new Promise<never>((_, reject) => {
          giveUp = setTimeout(
            () => reject(new LabError('LAB_TIMEOUT', `pid ${pid} did not exit after SIGKILL`)),
            graceMs + LAB_LIMITS.killWaitMs,
          );
        }),
      ]);
    } finally {
      clearTimeout(escalate);
      clearTimeout(giveUp);
    }
  }

  startQemu(options: QemuOptions): Promise<QemuVm> {
    this.assertOpen();
    return startQemuInLab(this, options);
  }

  pids(): number[] {
    return [...this.children.keys()];
  }

  /** Pids of every process whose network namespace is this lab's. */
  namespacePids(): number[] {
    const r = spawnSync('ip', ['netns', 'pids', this.netns], { encoding: 'utf8', timeout: LAB_LIMITS.commandTimeoutMs });
    if (r.status !== 0) return [];
    return r.stdout.split(/\s+/).filter(Boolean).map(Number).filter((p) => Number.isInteger(p) && p !== process.pid);
  }

  close(): Promise<LabCloseReport> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<LabCloseReport> {
    this.closed = true;
    const stopped = this.pids();
    await Promise.all([...this.children.values()].map((c) => this.stop(c).catch(() => undefined)));
    // Descendants of lab processes that outlived them are still in the namespace: they are ours too.
    const strays = this.namespacePids();
    for (const pid of strays) killQuietly(pid, 'SIGTERM');
    await this.waitGone(strays, LAB_LIMITS.stopGraceMs);
    for (const pid of strays) if (pidAlive(pid)) killQuietly(pid, 'SIGKILL');
    await this.waitGone(strays, LAB_LIMITS.killWaitMs);
    for (const tap of this.taps) await run('ip', ['-n', this.netns, 'link', 'del', tap], { allowFailure: true });
    await run('ip', ['-n', this.netns, 'link', 'del', this.bridge], { allowFailure: true });
    await run('ip', ['netns', 'del', this.netns], { allowFailure: true });
    const namespaceRemoved = !netnsExists(this.netns);
    let dirRemoved = false;
    if (!this.keepDir) {
      rmSync(this.dir, { recursive: true, force: true });
      dirRemoved = !existsSync(this.dir);
    }
    openLabs.delete(this);
    return { netns: this.netns, stopped, strays, namespaceRemoved, dirRemoved };
  }

  private async waitGone(pids: number[], ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (pids.some(pidAlive) && Date.now() < deadline) await sleep(LAB_LIMITS.pollMs);
  }

  /** Last-resort teardown from an exit or signal hook: synchronous, best effort. */
  closeSync(): void {
    if (!openLabs.has(this)) return;
    this.closed = true;
    for (const pid of [...this.children.keys(), ...this.namespacePids()]) killQuietly(pid, 'SIGKILL');
    spawnSync('ip', ['netns', 'del', this.netns], { stdio: 'ignore', timeout: LAB_LIMITS.commandTimeoutMs });
    if (!this.keepDir) rmSync(this.dir, { recursive: true, force: true });
    openLabs.delete(this);
  }
}

export function netnsExists(name: string): boolean {
  return existsSync(join('/run/netns', name));
}

/** Names of this process's labs that are open. */
export function openLabNames(): string[] {
  return [...openLabs].map((l) => l.netns);
}

export async function createLab(options: LabOptions = {}): Promise<Lab> {
  labCounter += 1;
  const n = labCounter;
  const netns = `${NETNS_PREFIX}${process.pid}-${n}`;
  // Each lab is its own namespace, so equal subnets in two labs cannot clash; varying
  // the default only makes logs of parallel labs easier to tell apart.
  const subnet = options.subnet ?? `10.77.${((process.pid + n) % 250) + 1}.0/24`;
  privateSlash24(subnet);
  const dir = mkdtempSync(join(tmpdir(), `${netns}-`));
  const keep = options.keepDir ?? process.env.DISKLESS_LAB_KEEP === '1';
  const lab = new LabImpl(netns, subnet, dir, keep);
  installHooks();
  openLabs.add(lab);
  options.t?.after(() => lab.close());
  try {
    await lab.setUp();
  } catch (e) {
    await lab.close();
    throw e;
  }
  return lab;
}

/**
 * Removes lab namespaces left by test processes that no longer exist and
 * that hold no process. Returns the names removed. Namespaces of live
 * processes, and any holding a process, are left alone.
 */
export function sweepStaleLabs(): string[] {
  let names: string[] = [];
  try {
    names = readdirSync('/run/netns');
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = /^dl-(\d+)-\d+$/.exec(name);
    if (!m || pidAlive(Number(m[1]))) continue;
    const pids = spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8', timeout: LAB_LIMITS.commandTimeoutMs });
    if (pids.status !== 0 || pids.stdout.trim() !== '') continue;
    spawnSync('ip', ['netns', 'del', name], { stdio: 'ignore', timeout: LAB_LIMITS.commandTimeoutMs });
    if (!netnsExists(name)) removed.push(name);
  }
  return removed;
}
