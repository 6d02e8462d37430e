/**
 * Boots the test guest (the distribution kernel plus the initramfs of
 * initramfs.ts) in QEMU and follows what its /init reports.
 *
 * - Console: the guest's ttyS0 is QEMU's stdio (`-serial stdio`). Its output
 *   is read from QEMU's stdout, kept in memory and copied to a log file;
 *   writing to QEMU's stdin types on the guest's serial line (the persist
 *   scenario waits for "go" there). QEMU's own complaints go to stderr.
 * - Events: /init prints "DISKLESS-GUEST: <event> [details]" lines. A
 *   `waitForEvent` returns the next occurrence after the last one awaited,
 *   and fails at once on a "fail" event, on QEMU's exit, or on its timeout,
 *   quoting the end of the console.
 * - Network: QEMU user networking, where the guest's 10.0.2.2 is the host's
 *   127.0.0.1, so the guest reaches a server listening on loopback and
 *   nothing leaves the machine (the guest is configured statically and only
 *   ever connects to 10.0.2.2). IPv6 is off. The NIC has no option ROM:
 *   -kernel needs no network boot.
 * - Accelerator: TCG unless KVM really works (resolveAccel probes it once
 *   per host boot); DISKLESS_QEMU_ACCEL=tcg|kvm overrides.
 * - Bounded: every guest has a hard time limit after which QEMU is killed by
 *   its pid; a process exit hook kills guests still running.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, writeFileSync } from 'node:fs';
import { resolveAccel, type Accel } from '../lab-qemu.js';
import { GuestError } from './errors.js';

export const QEMU_BINARY = 'qemu-system-x86_64';
export const GUEST_EVENT_PREFIX = 'DISKLESS-GUEST:';

/** The addresses of QEMU's user-mode network (slirp defaults). */
export const SLIRP = {
  /** The host, as the guest sees it; connections to it go to the host's 127.0.0.1. */
  host: '10.0.2.2',
} as const;

export const GUEST_DEFAULTS = {
  /** The kernel, initramfs (~6 MiB packed) and a page cache for a few MiB of payload fit easily. */
  memoryMiB: 256,
  /** Hard limit of one guest's life, boot to poweroff. Under TCG a scenario takes 15-30 s. */
  timeoutMs: 150_000,
  /** Kernel console level: 4 shows errors and warnings (NBD and ext4 trouble) without the boot chatter. */
  logLevel: 4,
  payloadMiB: 4,
  /** How long the persist scenario waits for the host to restart the server and say "go". */
  waitSeconds: 120,
  /** Characters of console quoted in an error. */
  tailChars: 3_000,
} as const;

export type GuestScenario = 'reconnect' | 'persist';

export interface GuestEvent {
  name: string;
  args: string[];
  /** The whole line after the prefix. */
  text: string;
  /** Milliseconds since QEMU was started. */
  atMs: number;
}

/** Serial consoles carry CRs and ANSI escapes; events and logs are matched on the text without them. */
export function plainSerial(raw: string): string {
  // eslint-disable-next-line no-control-regex
  return raw.replace(/\x1b\[[0-9;?=]*[A-Za-z]/g, '').replace(/\r/g, '');
}

/** Parses one console line into an event, or null if it is not one. Pure. */
export function parseGuestEventLine(line: string, atMs = 0): GuestEvent | null {
  const i = line.indexOf(GUEST_EVENT_PREFIX);
  // Kernel messages may share the line's start (the console is not line-locked); the prefix may follow them.
  if (i < 0) return null;
  const text = line.slice(i + GUEST_EVENT_PREFIX.length).trim();
  const words = text.split(/\s+/).filter((w) => w.length > 0);
  if (words.length === 0) return null;
  return { name: words[0]!, args: words.slice(1), text, atMs };
}

/** Every event of a whole console text. Pure. */
export function parseGuestEvents(serial: string): GuestEvent[] {
  return plainSerial(serial)
    .split('\n')
    .map((l) => parseGuestEventLine(l))
    .filter((e): e is GuestEvent => e !== null);
}

export interface GuestCommandLine {
  /** The NBD server as the guest sees it (SLIRP.host for the host's loopback). */
  server: string;
  port: number;
  exportName: string;
  scenario: GuestScenario;
  payloadMiB?: number;
  waitSeconds?: number;
  logLevel?: number;
}

const SAFE_WORD = /^[A-Za-z0-9._:-]{1,64}$/;

/** The kernel command line for /init (see init.sh for the dl.* parameters). Pure. */
export function buildGuestCmdline(o: GuestCommandLine): string {
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(o.server)) throw new GuestError('GUEST_BAD_ARGUMENT', `server ${o.server} is not an IPv4 address`);
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) throw new GuestError('GUEST_BAD_ARGUMENT', `port ${o.port} is not in 1..65535`);
  // The command line is split on spaces by the kernel and read by a shell: keep names plain.
  if (!SAFE_WORD.test(o.exportName)) throw new GuestError('GUEST_BAD_ARGUMENT', `export name "${o.exportName}" must match ${SAFE_WORD}`);
  const mib = o.payloadMiB ?? GUEST_DEFAULTS.payloadMiB;
  if (!Number.isInteger(mib) || mib < 1 || mib > 64) throw new GuestError('GUEST_BAD_ARGUMENT', `payload of ${mib} MiB is not in 1..64`);
  const wait = o.waitSeconds ?? GUEST_DEFAULTS.waitSeconds;
  const level = o.logLevel ?? GUEST_DEFAULTS.logLevel;
  return [
    'console=ttyS0,115200n8',
    `loglevel=${level}`,
    // A panic powers the VM off at once (-no-reboot) instead of hanging until the time limit.
    'panic=-1',
    `dl.server=${o.server}`,
    `dl.port=${o.port}`,
    `dl.export=${o.exportName}`,
    `dl.scenario=${o.scenario}`,
    `dl.mib=${mib}`,
    `dl.wait=${wait}`,
  ].join(' ');
}

export interface GuestQemuArgsInput {
  name: string;
  accel: Accel;
  memoryMiB: number;
  kernel: string;
  initrd: string;
  cmdline: string;
}

/** The QEMU command line (without the binary). Pure. */
export function buildGuestQemuArgs(o: GuestQemuArgsInput): string[] {
  return [
    '-name', o.name,
    '-machine', `q35,accel=${o.accel}`,
    '-cpu', 'max',
    '-smp', '1',
    '-m', String(o.memoryMiB),
    '-nodefaults',
    '-display', 'none',
    '-monitor', 'none',
    '-serial', 'stdio',
    '-no-reboot',
    '-kernel', o.kernel,
    '-initrd', o.initrd,
    '-append', o.cmdline,
    '-netdev', 'user,id=n0,ipv6=off',
    '-device', 'virtio-net-pci,netdev=n0,romfile=',
  ];
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface BootGuestOptions {
  kernel: string;
  initramfs: string;
  cmdline: GuestCommandLine;
  /** Console copy on disk, for the test's artifacts. */
  serialLog: string;
  accel?: Accel | 'auto';
  memoryMiB?: number;
  timeoutMs?: number;
  name?: string;
}

export interface GuestVm {
  readonly pid: number;
  readonly accel: Accel;
  readonly args: readonly string[];
  readonly serialLog: string;
  /** Resolves when QEMU has exited (the guest powered off, or it was killed). */
  readonly exited: Promise<ExitInfo>;
  /** The console so far, without CRs and escapes. */
  serial(): string;
  /** Every event so far. */
  events(): GuestEvent[];
  /** The next event named `name` (or any of several names) after the last one awaited. */
  waitForEvent(name: string | readonly string[], timeoutMs: number): Promise<GuestEvent>;
  /** Types a line on the guest's serial console. */
  send(line: string): void;
  /** Waits for QEMU to exit on its own (the guest's poweroff -f). */
  waitForExit(timeoutMs: number): Promise<ExitInfo>;
  /** Kills QEMU (SIGKILL: it holds no state worth saving) and waits for it. Idempotent. */
  kill(): Promise<ExitInfo>;
}

const liveGuests = new Set<number>();
let exitHookInstalled = false;
function trackGuest(pid: number): void {
  liveGuests.add(pid);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const p of liveGuests) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  });
}

let guestCounter = 0;

export async function bootGuest(o: BootGuestOptions): Promise<GuestVm> {
  guestCounter += 1;
  const accel = await resolveAccel(o.accel ?? ((process.env.DISKLESS_QEMU_ACCEL as Accel | undefined) ?? 'auto'));
  const memoryMiB = o.memoryMiB ?? GUEST_DEFAULTS.memoryMiB;
  const timeoutMs = o.timeoutMs ?? GUEST_DEFAULTS.timeoutMs;
  const args = buildGuestQemuArgs({
    name: o.name ?? `dl-guest-${process.pid}-${guestCounter}`,
    accel, memoryMiB, kernel: o.kernel, initrd: o.initramfs, cmdline: buildGuestCmdline(o.cmdline),
  });
  writeFileSync(o.serialLog, '');
  const startedAt = Date.now();
  const child = spawn(QEMU_BINARY, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  if (child.pid === undefined) {
    const err = await new Promise<Error>((r) => child.once('error', r));
    throw new GuestError('GUEST_QEMU_FAILED', `cannot start ${QEMU_BINARY}: ${err.message}`);
  }
  const pid = child.pid;
  trackGuest(pid);

  let text = '';
  let partial = '';
  let stderr = '';
  const events: GuestEvent[] = [];
  let cursor = 0;
  let exitInfo: ExitInfo | null = null;
  let killedForTime = false;
  const listeners = new Set<() => void>();
  const notify = (): void => {
    for (const l of [...listeners]) l();
  };

  child.stdout.on('data', (b: Buffer) => {
    const chunk = plainSerial(b.toString('latin1'));
    text += chunk;
    try {
      appendFileSync(o.serialLog, chunk);
    } catch {
      // the in-memory copy is what the test reads
    }
    partial += chunk;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      const e = parseGuestEventLine(line, Date.now() - startedAt);
      if (e) events.push(e);
    }
    notify();
  });
  child.stderr.on('data', (b: Buffer) => {
    if (stderr.length < 16_384) stderr += b.toString();
  });
  // A guest that powered off closes stdin; writing later must not crash the test.
  child.stdin.on('error', () => {});

  const hardLimit = setTimeout(() => {
    killedForTime = true;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }, timeoutMs);
  const exited = new Promise<ExitInfo>((resolvePromise) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      liveGuests.delete(pid);
      clearTimeout(hardLimit);
      resolvePromise(exitInfo);
      notify();
    });
  });

  const tail = (): string => text.slice(-GUEST_DEFAULTS.tailChars);
  const exitText = (): string => {
    const e = exitInfo as ExitInfo | null;
    const why = killedForTime ? `killed after its ${timeoutMs} ms limit` : `exited (${e?.code ?? e?.signal})`;
    return `QEMU ${why}${stderr.trim() ? `; QEMU said: ${stderr.trim().slice(-1000)}` : ''}`;
  };

  const waitForEvent = (wanted: string | readonly string[], waitMs: number): Promise<GuestEvent> =>
    new Promise((resolvePromise, reject) => {
      const names: readonly string[] = typeof wanted === 'string' ? [wanted] : wanted;
      const name = names.join('" or "');
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        listeners.delete(check);
        if (timer) clearTimeout(timer);
      };
      function check(): void {
        for (let i = cursor; i < events.length; i++) {
          const e = events[i]!;
          if (names.includes(e.name)) {
            cursor = i + 1;
            done();
            resolvePromise(e);
            return;
          }
          if (e.name === 'fail') {
            cursor = i + 1;
            done();
            reject(new GuestError('GUEST_REPORTED_FAILURE', `guest failed while "${name}" was awaited: ${e.text}\n--- console ends:\n${tail()}`));
            return;
          }
        }
        if (exitInfo) {
          done();
          reject(new GuestError('GUEST_QEMU_FAILED', `${exitText()} before "${name}"\n--- console ends:\n${tail()}`));
        }
      }
      timer = setTimeout(() => {
        done();
        reject(new GuestError('GUEST_TIMEOUT', `no "${name}" within ${waitMs} ms\n--- console ends:\n${tail()}`));
      }, waitMs);
      listeners.add(check);
      check();
    });

  const waitForExit = async (waitMs: number): Promise<ExitInfo> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new GuestError('GUEST_TIMEOUT', `QEMU did not exit within ${waitMs} ms\n--- console ends:\n${tail()}`)), waitMs);
    });
    try {
      return await Promise.race([exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  };

  return {
    pid, accel, args, serialLog: o.serialLog, exited,
    serial: () => text,
    events: () => [...events],
    waitForEvent,
    send: (line: string) => {
      if (!exitInfo && child.stdin.writable) child.stdin.write(`${line}\n`);
    },
    waitForExit,
    kill: async () => {
      if (!exitInfo) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      return exited;
    },
  };
}
