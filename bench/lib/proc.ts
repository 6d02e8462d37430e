/**
 * What the benchmarks read about server processes from /proc (Linux only):
 * CPU seconds of a process tree, its memory, whether a port is listening,
 * and a registry that ends every process a bench started, by pid, even when
 * the bench fails half-way.
 *
 * Field numbers follow proc(5), "/proc/[pid]/stat": (14) utime, (15) stime,
 * (16) cutime, (17) cstime, (22) starttime, all in clock ticks.
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { spawnSync } from 'node:child_process';

/** What one /proc/<pid>/stat line says, times in clock ticks. */
export interface ProcStat {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
  utime: number;
  stime: number;
  /** CPU of children this process has waited for (reaped). */
  cutime: number;
  cstime: number;
  /** Ticks after boot; with the pid it names one process (pids are reused). */
  starttime: number;
}

/**
 * Parses a /proc/<pid>/stat line. The command name sits in parentheses and
 * may itself hold spaces and ')', so fields are counted from the last ')'.
 */
export function parseProcStat(line: string): ProcStat {
  const open = line.indexOf('(');
  const close = line.lastIndexOf(')');
  if (open < 0 || close < open) throw new Error(`not a /proc stat line: ${line.slice(0, 80)}`);
  const pid = Number(line.slice(0, open).trim());
  const rest = line.slice(close + 2).trim().split(/\s+/);
  // rest[0] is field 3 (state), so field n is rest[n - 3].
  const field = (n: number): number => {
    const v = Number(rest[n - 3]);
    if (!Number.isFinite(v)) throw new Error(`/proc stat field ${n} missing or not a number`);
    return v;
  };
  return {
    pid,
    comm: line.slice(open + 1, close),
    state: rest[0] ?? '?',
    ppid: field(4),
    utime: field(14),
    stime: field(15),
    cutime: field(16),
    cstime: field(17),
    starttime: field(22),
  };
}

export function readProcStat(pid: number): ProcStat | undefined {
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

let ticks: number | undefined;
/** sysconf(_SC_CLK_TCK); 100 on every Linux this runs on, asked once anyway. */
export function clockTicksPerSecond(): number {
  if (ticks === undefined) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const n = Number(r.stdout?.trim());
    ticks = r.status === 0 && Number.isInteger(n) && n > 0 ? n : 100;
  }
  return ticks;
}

/** Every live process, for walking parent links. */
function allStats(): ProcStat[] {
  const out: ProcStat[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = readProcStat(Number(name));
    if (s) out.push(s);
  }
  return out;
}

/** The pids below `pid` (children, grandchildren...), nearest first. */
export function descendants(pid: number): ProcStat[] {
  const stats = allStats();
  const byParent = new Map<number, ProcStat[]>();
  for (const s of stats) {
    const list = byParent.get(s.ppid);
    if (list) list.push(s);
    else byParent.set(s.ppid, [s]);
  }
  const out: ProcStat[] = [];
  const queue = [pid];
  // Bounded by the number of processes: each pid is visited once.
  const seen = new Set<number>([pid]);
  while (queue.length > 0) {
    const p = queue.shift() as number;
    for (const c of byParent.get(p) ?? []) {
      if (seen.has(c.pid)) continue;
      seen.add(c.pid);
      out.push(c);
      queue.push(c.pid);
    }
  }
  return out;
}

/**
 * CPU seconds (user + system) spent so far by a server and everything below
 * it: the root's own time, the time of children it has already reaped
 * (cutime/cstime; nbd-server forks one child per connection), and the whole
 * time of descendants still alive. A live child's time is counted once: it
 * moves into the root's cutime only when it is reaped, and then it is no
 * longer among the live descendants. Threads are inside their process's
 * utime/stime already. Undefined when the root is gone.
 */
export function treeCpuSeconds(pid: number): number | undefined {
  const root = readProcStat(pid);
  if (!root) return undefined;
  let t = root.utime + root.stime + root.cutime + root.cstime;
  for (const d of descendants(pid)) t += d.utime + d.stime + d.cutime + d.cstime;
  return t / clockTicksPerSecond();
}

function kib(text: string, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** Memory of a process tree in KiB: RSS summed (counts shared pages once per process) and PSS summed (shares them out). */
export interface TreeMemory {
  processes: number;
  rssKiB: number;
  pssKiB: number;
}

export function treeMemory(pid: number): TreeMemory | undefined {
  if (!readProcStat(pid)) return undefined;
  const pids = [pid, ...descendants(pid).map((d) => d.pid)];
  const m: TreeMemory = { processes: 0, rssKiB: 0, pssKiB: 0 };
  for (const p of pids) {
    try {
      m.rssKiB += kib(readFileSync(`/proc/${p}/status`, 'utf8'), 'VmRSS');
      m.pssKiB += kib(readFileSync(`/proc/${p}/smaps_rollup`, 'utf8'), 'Pss');
      m.processes += 1;
    } catch {
      // The process ended between the listing and the read.
    }
  }
  return m;
}

/**
 * The socket inodes listening on a TCP port in this network namespace, from
 * /proc/net/tcp{,6} (state 0A is LISTEN). Reading the tables instead of
 * connecting means a readiness probe opens no NBD session (nbd-server would
 * fork a child for it).
 */
export function listeningInodes(port: number): string[] {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const out: string[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      if (cols.length < 10) continue;
      if (cols[1]?.endsWith(`:${hexPort}`) && cols[3] === '0A') out.push(cols[9] as string);
    }
  }
  return out;
}

export function isListening(port: number): boolean {
  return listeningInodes(port).length > 0;
}

/**
 * True when the process (or one below it) holds a socket listening on the
 * port: a port picked free a moment ago may have been taken by someone else,
 * and the bench must not measure a stranger.
 */
export function isListeningBy(pid: number, port: number): boolean {
  const inodes = new Set(listeningInodes(port).map((i) => `socket:[${i}]`));
  if (inodes.size === 0) return false;
  for (const p of [pid, ...descendants(pid).map((d) => d.pid)]) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${p}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (inodes.has(readlinkSync(`/proc/${p}/fd/${fd}`))) return true;
      } catch {
        // Closed meanwhile.
      }
    }
  }
  return false;
}

/** True while the process exists and is not a zombie. */
export function isAlive(pid: number, starttime?: number): boolean {
  const s = readProcStat(pid);
  if (!s || s.state === 'Z' || s.state === 'X') return false;
  return starttime === undefined || s.starttime === starttime;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until `check()` is true, polling; false when `timeoutMs` passed first. */
export async function waitFor(check: () => boolean, timeoutMs: number, pollMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (check()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(pollMs);
  }
}

/** Dirty plus under-writeback page cache in bytes, from /proc/meminfo; undefined when it cannot be read. */
export function dirtyBytes(meminfo?: string): number | undefined {
  let text = meminfo;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/meminfo', 'utf8');
    } catch {
      return undefined;
    }
  }
  let total = 0;
  let seen = 0;
  for (const m of text.matchAll(/^(Dirty|Writeback):\s+(\d+) kB$/gm)) {
    total += Number(m[2]) * 1024;
    seen++;
  }
  return seen === 2 ? total : undefined;
}

/**
 * Writes back what earlier runs left dirty in the page cache (sync(1)) and
 * waits until less than `belowBytes` is dirty or under writeback, for at
 * most `timeoutMs` in all: otherwise the kernel's writeback of one server's
 * data runs during, and is throttled onto, the next server's run.
 */
export async function drainDirtyPages(timeoutMs = 30_000, belowBytes = 32 << 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  spawnSync('sync', [], { stdio: 'ignore', timeout: timeoutMs });
  await waitFor(() => (dirtyBytes() ?? 0) < belowBytes, Math.max(0, deadline - Date.now()), 100);
}

/** How long a process gets to end after SIGTERM before SIGKILL. */
export const TERM_GRACE_MS = 5000;

/**
 * Every process a bench starts is registered here with its start time, and
 * ended by pid: its descendants first (nbd-server's per-connection
 * children), then itself; SIGTERM, then SIGKILL after a grace period. The
 * start time guards against signalling a reused pid.
 */
export class ProcessRegistry {
  private readonly entries = new Map<number, number | undefined>();

  add(pid: number): void {
    this.entries.set(pid, readProcStat(pid)?.starttime);
  }

  has(pid: number): boolean {
    return this.entries.has(pid);
  }

  /** Ends a registered process and its descendants; a pid never registered (or already stopped) is left alone. */
  async stop(pid: number): Promise<void> {
    if (!this.entries.has(pid)) return;
    const start = this.entries.get(pid);
    this.entries.delete(pid);
    if (!isAlive(pid, start)) return;
    const family = [...descendants(pid).reverse(), readProcStat(pid)].filter((s): s is ProcStat => s !== undefined);
    for (const s of family) signal(s.pid, 'SIGTERM');
    const gone = await waitFor(() => family.every((s) => !isAlive(s.pid, s.starttime)), TERM_GRACE_MS);
    if (!gone) for (const s of family) if (isAlive(s.pid, s.starttime)) signal(s.pid, 'SIGKILL');
    await waitFor(() => family.every((s) => !isAlive(s.pid, s.starttime)), TERM_GRACE_MS);
  }

  async stopAll(): Promise<void> {
    for (const pid of [...this.entries.keys()]) await this.stop(pid);
  }

  /** Last resort when the bench itself is exiting and cannot wait: SIGKILL by pid. */
  killAllNow(): void {
    for (const [pid, start] of this.entries) {
      if (!isAlive(pid, start)) continue;
      for (const d of descendants(pid)) signal(d.pid, 'SIGKILL');
      signal(pid, 'SIGKILL');
    }
    this.entries.clear();
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}
