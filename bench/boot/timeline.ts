/**
 * Where a boot's time goes, read from logs as they grow: the serial console
 * (both stacks), dnsmasq's and the HTTP server's logs (the reference stack).
 *
 * None of these logs carries usable timestamps (the kernel's are relative to
 * its own start, iPXE and dnsmasq on stderr print none, http.server's have
 * whole seconds), so LogClock polls the files and stamps each new piece of
 * text with the wall clock when it was first seen. A milestone is the first
 * match of a pattern; its time is the stamp of the piece holding the end of
 * the match, so a pattern may span lines (iPXE's progress output breaks
 * "initrd.img... 59%  ok" over two lines on SeaBIOS's console).
 *
 * Resolution: the poll interval (50 ms) plus QEMU's chardev buffering, far
 * below the seconds the phases take.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

/** A piece of text as first seen, at `t` (ms since the epoch). */
export interface Chunk {
  t: number;
  text: string;
}

export const CLOCK_DEFAULTS = {
  pollMs: 50,
  /** Bytes read per file per poll at most (a boot's console is well under 1 MiB). */
  maxReadBytes: 1 << 20,
  /** Text kept per file; beyond it the oldest pieces are dropped. */
  maxKeptChars: 8 << 20,
} as const;

/**
 * Terminal escapes are removed (patterns are written for the text a person
 * reads), and so are carriage returns. An escape cut by the end of a read is
 * held back until its end arrives, so it never leaks half-removed.
 */
export function splitPlain(carry: string, raw: string): { text: string; carry: string } {
  let s = carry + raw;
  let rest = '';
  const esc = s.lastIndexOf('\x1b');
  // An escape near the end without its final byte: keep it for the next read.
  if (esc >= 0 && s.length - esc < 32 && !/^\x1b(\[[0-9;?=]*[A-Za-z]|[()][A-Za-z0-9]|[^[()])/.test(s.slice(esc))) {
    rest = s.slice(esc);
    s = s.slice(0, esc);
  }
  // eslint-disable-next-line no-control-regex
  const text = s.replace(/\x1b\[[0-9;?=]*[A-Za-z]/g, '').replace(/\x1b[()][A-Za-z0-9]/g, '').replace(/\x1b./g, '').replace(/\r/g, '');
  return { text, carry: rest };
}

interface Followed {
  path: string;
  offset: number;
  carry: string;
  chunks: Chunk[];
  kept: number;
}

/** Follows files as they grow and stamps what they gain (see the file comment). */
export class LogClock {
  private readonly files = new Map<string, Followed>();
  private timer: NodeJS.Timeout | null = null;
  private readonly buf = Buffer.alloc(CLOCK_DEFAULTS.maxReadBytes);

  constructor(
    files: Record<string, string>,
    private readonly pollMs: number = CLOCK_DEFAULTS.pollMs,
    private readonly now: () => number = Date.now,
  ) {
    for (const [name, path] of Object.entries(files)) this.files.set(name, { path, offset: 0, carry: '', chunks: [], kept: 0 });
  }

  /** Adds a file to follow (from its start). */
  follow(name: string, path: string): void {
    if (!this.files.has(name)) this.files.set(name, { path, offset: 0, carry: '', chunks: [], kept: 0 });
  }

  start(): this {
    if (this.timer) return this;
    const tick = (): void => {
      this.poll();
      this.timer = setTimeout(tick, this.pollMs);
    };
    tick();
    return this;
  }

  /** Reads what the files gained since the last poll. */
  poll(): void {
    for (const f of this.files.values()) {
      let fd: number;
      try {
        fd = openSync(f.path, 'r');
      } catch {
        continue; // not created yet
      }
      try {
        const size = fstatSync(fd).size;
        if (size < f.offset) f.offset = 0; // truncated and rewritten
        if (size === f.offset) continue;
        const n = readSync(fd, this.buf, 0, Math.min(this.buf.length, size - f.offset), f.offset);
        if (n <= 0) continue;
        f.offset += n;
        const { text, carry } = splitPlain(f.carry, this.buf.subarray(0, n).toString('latin1'));
        f.carry = carry;
        if (text.length === 0) continue;
        f.chunks.push({ t: this.now(), text });
        f.kept += text.length;
        while (f.kept > CLOCK_DEFAULTS.maxKeptChars && f.chunks.length > 1) f.kept -= f.chunks.shift()!.text.length;
      } finally {
        closeSync(fd);
      }
    }
  }

  /** A last poll, then no more. */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.poll();
  }

  chunks(name: string): readonly Chunk[] {
    return this.files.get(name)?.chunks ?? [];
  }
}

/** The text of some chunks and, for each chunk, the offset where it ends. */
function joined(chunks: readonly Chunk[]): { text: string; ends: number[] } {
  let text = '';
  const ends: number[] = [];
  for (const c of chunks) {
    text += c.text;
    ends.push(text.length);
  }
  return { text, ends };
}

/** When `pattern` first matched (the stamp of the chunk holding the end of the match), or undefined. */
export function firstMatch(chunks: readonly Chunk[], pattern: RegExp): { t: number; match: RegExpExecArray } | undefined {
  const { text, ends } = joined(chunks);
  const m = new RegExp(pattern.source, pattern.flags.replace('g', '')).exec(text);
  if (!m) return undefined;
  const end = m.index + Math.max(1, m[0].length);
  // First chunk whose end is at or past the match's end.
  let lo = 0;
  let hi = ends.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ends[mid]! >= end) hi = mid;
    else lo = mid + 1;
  }
  return { t: chunks[lo]!.t, match: m };
}

export interface Milestone {
  id: string;
  /** What a reader sees on the console at that moment. */
  label: string;
  pattern: RegExp;
}

/**
 * What the serial console shows of a boot, in order, the same for both
 * stacks (the image, iPXE and firmware are the same; only the servers
 * differ). iPXE's progress output holds backspaces, digits and '%' between
 * a file name and its "ok".
 */
export const SERIAL_MILESTONES: readonly Milestone[] = [
  { id: 'ipxe', label: 'iPXE starts', pattern: /iPXE initialising devices|iPXE \d+\.\d+\.\d+\S* -- Open Source/ },
  { id: 'ipxe-dhcp', label: 'iPXE has its address (DHCP, and the IPv6 wait)', pattern: /Configuring \(net0 [^)]*\)[.\s]*ok/ },
  { id: 'script', label: 'boot script fetched', pattern: /Configuring \(net0[\s\S]*?\nhttps?:\/\/\S+\.\.\.[ \n\x08\d%]*ok/ },
  { id: 'kernel', label: 'kernel fetched', pattern: /\/vmlinuz\.\.\.[ \n\x08\d%]*ok/ },
  { id: 'initrd', label: 'initramfs fetched', pattern: /\/initrd\.img\.\.\.[ \n\x08\d%]*ok/ },
  { id: 'linux', label: 'Linux prints its banner', pattern: /Linux version \d/ },
  { id: 'nbd', label: 'NBD connected (nbd0 sized)', pattern: /nbd0: detected capacity change/ },
  { id: 'root', label: 'root file system mounted', pattern: /EXT4-fs \(nbd0(p\d+)?\): mounted filesystem/ },
  { id: 'systemd', label: 'systemd starts', pattern: /Welcome to [^\n]*(Debian|Linux)/ },
  { id: 'multi-user', label: 'multi-user reached', pattern: /Reached target[^\n]*Multi-User System/ },
  { id: 'marker', label: 'DISKLESS-UP printed', pattern: /DISKLESS-UP \S+/ },
];

/** Seconds from `startedAt` (ms since the epoch) of each milestone seen, rounded to ms. */
export function milestoneTimes(chunks: readonly Chunk[], startedAt: number, milestones: readonly Milestone[] = SERIAL_MILESTONES): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of milestones) {
    const hit = firstMatch(chunks, m.pattern);
    if (hit) out[m.id] = seconds(hit.t - startedAt);
  }
  return out;
}

export function seconds(ms: number): number {
  return Math.round(ms) / 1000;
}

/**
 * The phases of a boot, each between two serial milestones ('start' is
 * power-on). They add up to the total when every milestone was seen.
 */
export const PHASES: ReadonlyArray<{ id: string; label: string; from: string; to: string }> = [
  { id: 'firmware-dhcp', label: 'power-on to iPXE address (firmware, iPXE, DHCP, IPv6 wait)', from: 'start', to: 'ipxe-dhcp' },
  { id: 'script', label: 'boot script', from: 'ipxe-dhcp', to: 'script' },
  { id: 'kernel', label: 'kernel download', from: 'script', to: 'kernel' },
  { id: 'initrd', label: 'initramfs download', from: 'kernel', to: 'initrd' },
  { id: 'to-nbd', label: 'kernel and initramfs up to the NBD connection', from: 'initrd', to: 'nbd' },
  { id: 'root', label: 'NBD connected to root mounted', from: 'nbd', to: 'root' },
  { id: 'to-systemd', label: 'root mounted to systemd', from: 'root', to: 'systemd' },
  { id: 'userspace', label: 'systemd to DISKLESS-UP', from: 'systemd', to: 'marker' },
];

/** Seconds spent in each phase whose two ends were seen. */
export function phaseDurations(times: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of PHASES) {
    const a = p.from === 'start' ? 0 : times[p.from];
    const b = times[p.to];
    if (a !== undefined && b !== undefined) out[p.id] = Math.round((b - a) * 1000) / 1000;
  }
  return out;
}

/** The kernel command line the console printed ("Command line: ..."), if any. */
export function consoleCommandLine(chunks: readonly Chunk[]): string | undefined {
  return firstMatch(chunks, /Command line: ([^\n]*)\n/)?.match[1]?.trim();
}

/**
 * A command line with what must differ between two boots of one client
 * replaced: the NBD export name (ours is a per-boot token) and the boot
 * path in the OS-up report URL (ours names the boot id).
 */
export function normalizeCommandLine(line: string): string {
  return line
    .split(/\s+/)
    .filter(Boolean)
    .map((arg) => {
      const nbd = /^nbdroot=([^,]+),([^,]+),(.+)$/.exec(arg);
      if (nbd) return `nbdroot=${nbd[1]},<export>,${nbd[3]}`;
      const up = /^diskless\.up=(https?:\/\/[^/]+)\//.exec(arg);
      if (up) return `diskless.up=${up[1]}/<boot>`;
      return arg;
    })
    .join(' ');
}
