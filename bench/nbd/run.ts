/**
 * bench/nbd: fio against our NBD server and its peers, side by side in one
 * run, reported as ratios to the best peer. Run by hand (bench/README.md):
 *
 *   bench/nbd/run [--short] [--servers a,b] [--jobs a,b] [--clients N] ...
 *
 * For each job, each server in turn is started fresh on a loopback port with
 * fresh copy-on-write state over the same golden image, fio runs against it,
 * and the server's CPU seconds are read from /proc around the fio run. Jobs
 * are the outer loop so that a drift in the machine's background load spreads
 * over all servers instead of landing on one. Then each server's memory is
 * sampled with 1 and with N clients connected.
 *
 * Every process the bench starts is ended by pid at the end, on error and on
 * SIGINT/SIGTERM; the temporary directory is removed.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream, closeSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync, existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { fioArgs, isWriteJob, NBD_JOBS, parseFioJson, type FioJob } from '../lib/fio.js';
import { descendants, drainDirtyPages, ProcessRegistry, sleep, treeCpuSeconds, treeMemory, waitFor, type TreeMemory } from '../lib/proc.js';
import { bestOf, fmt, fmtInt, fmtRatio, markdownTable, ratioToBest, type Better } from '../lib/table.js';
import { countFiles, disklessAt, logTail, SERVERS, settleAfterStop, type Role, type ServerSpec, type StartedServer } from './servers.js';

/** Defaults, and the limits that keep a run bounded. */
export const DEFAULTS = {
  runtimeSeconds: 20,
  shortRuntimeSeconds: 5,
  imageBytes: 1 << 30,
  clients: 16,
  exportName: 'bench',
  /** Concurrent connections each server must accept during the fio jobs. */
  fioMaxClients: 8,
} as const;
const LIMITS = {
  minImageBytes: 64 << 20,
  maxImageBytes: 64 * 2 ** 30,
  maxRuntimeSeconds: 600,
  maxClients: 256,
  /** fio gets this much beyond its runtime to connect, finish and write its report. */
  fioGraceMs: 60_000,
  /** Time for one step of the memory test (connecting K clients). */
  holdStepMs: 60_000,
  /** Memory is sampled after this pause, once the server has settled. */
  memorySettleMs: 500,
} as const;
/** Golden image layout: in every stripe the first half is random data, the second half a hole. */
const STRIPE_BYTES = 16 << 20;

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

interface Options {
  runtimeSeconds: number;
  imageBytes: number;
  servers: ServerSpec[];
  jobs: FioJob[];
  clients: number;
  outDir: string;
  tmpParent: string;
  keepTemp: boolean;
}

const HELP = `Usage: bench/nbd/run [options]

fio (engine nbd) against diskless and its peer NBD servers, as ratios to the best peer.

  --short             ${DEFAULTS.shortRuntimeSeconds} s per job instead of ${DEFAULTS.runtimeSeconds} s (about 3 minutes in all)
  --runtime SECONDS   seconds per fio job (default ${DEFAULTS.runtimeSeconds})
  --size SIZE         golden image size, e.g. 512M, 2G (default 1G; half data, half holes)
  --servers LIST      comma-separated server ids (default all): ${SERVERS.map((s) => s.id).join(', ')}
  --compare DIRS      comma-separated roots of other builds of diskless (bin/ and dist/, e.g. a copy
                      of the tree before a change), run as reference rows diskless@NAME beside ours
  --jobs LIST         comma-separated job ids (default all): ${NBD_JOBS.map((j) => j.id).join(', ')}
  --clients N         connections for the memory-per-client test (default ${DEFAULTS.clients}; 0 skips it)
  --out DIR           where the JSON and markdown results go (default bench/results)
  --tmp DIR           parent of the temporary directory (default ${tmpdir()})
  --keep-temp         keep the temporary directory (golden image, server logs)
  -h, --help          this text
`;

class UsageError extends Error {}

function parseSize(text: string): number {
  const m = /^(\d+)([KMGT]?)i?B?$/i.exec(text.trim());
  if (!m) throw new UsageError(`--size: not a size: ${text}`);
  const mult = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[(m[2] ?? '').toUpperCase()] ?? 1;
  const n = Number(m[1]) * mult;
  if (n < LIMITS.minImageBytes || n > LIMITS.maxImageBytes || n % (1 << 20) !== 0) {
    throw new UsageError(`--size: must be a whole number of MiB between 64M and 64G, got ${text}`);
  }
  return n;
}

function pick<T extends { id: string }>(all: readonly T[], list: string | undefined, what: string): T[] {
  if (list === undefined) return [...all];
  const ids = list.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = ids.filter((id) => !all.some((x) => x.id === id));
  if (unknown.length > 0) throw new UsageError(`--${what}: unknown ${unknown.join(', ')} (known: ${all.map((x) => x.id).join(', ')})`);
  return all.filter((x) => ids.includes(x.id));
}

/** The servers with a reference row of ours for each build in `list` (--compare), placed right after ours. */
function withCompared(servers: ServerSpec[], list: string | undefined): ServerSpec[] {
  if (list === undefined) return servers;
  const extra: ServerSpec[] = [];
  for (const dir of list.split(',').map((s) => s.trim()).filter(Boolean)) {
    const root = resolve(dir);
    if (!existsSync(join(root, 'bin', 'diskless')) || !existsSync(join(root, 'dist', 'src', 'cli', 'main.js'))) {
      throw new UsageError(`--compare: ${root} has no bin/diskless and dist/src/cli/main.js`);
    }
    const id = `diskless@${basename(root)}`;
    if (extra.some((s) => s.id === id)) throw new UsageError(`--compare: two builds named ${basename(root)}`);
    extra.push(disklessAt(id, 'reference', root));
  }
  const at = servers.findIndex((s) => s.role === 'ours');
  return at < 0 ? [...extra, ...servers] : [...servers.slice(0, at + 1), ...extra, ...servers.slice(at + 1)];
}

function parseOptions(argv: string[]): Options | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      short: { type: 'boolean' },
      runtime: { type: 'string' },
      size: { type: 'string' },
      servers: { type: 'string' },
      jobs: { type: 'string' },
      compare: { type: 'string' },
      clients: { type: 'string' },
      out: { type: 'string' },
      tmp: { type: 'string' },
      'keep-temp': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return 'help';
  let runtimeSeconds: number = values.short ? DEFAULTS.shortRuntimeSeconds : DEFAULTS.runtimeSeconds;
  if (values.runtime !== undefined) {
    runtimeSeconds = Number(values.runtime);
    if (!Number.isInteger(runtimeSeconds) || runtimeSeconds < 1 || runtimeSeconds > LIMITS.maxRuntimeSeconds) {
      throw new UsageError(`--runtime: a whole number of seconds from 1 to ${LIMITS.maxRuntimeSeconds}`);
    }
  }
  const clients = values.clients === undefined ? DEFAULTS.clients : Number(values.clients);
  if (!Number.isInteger(clients) || clients < 0 || clients > LIMITS.maxClients || clients === 1) {
    throw new UsageError(`--clients: 0 (skip) or 2 to ${LIMITS.maxClients}`);
  }
  return {
    runtimeSeconds,
    imageBytes: values.size === undefined ? DEFAULTS.imageBytes : parseSize(values.size),
    servers: withCompared(pick(SERVERS, values.servers, 'servers'), values.compare),
    jobs: pick(NBD_JOBS, values.jobs, 'jobs'),
    clients,
    outDir: resolve(values.out ?? join(repoRoot, 'bench', 'results')),
    tmpParent: resolve(values.tmp ?? tmpdir()),
    keepTemp: values['keep-temp'] === true,
  };
}

// ---------------------------------------------------------------- results

type Status = 'ok' | 'failed' | 'skipped';

interface JobRow {
  job: string;
  server: string;
  role: Role;
  status: Status;
  error?: string;
  /** MB = 10^6 bytes. */
  mbPerSecond?: number;
  iops?: number;
  p50Ms?: number;
  p99Ms?: number;
  p999Ms?: number;
  bytes?: number;
  runtimeMs?: number;
  /** Server CPU (user + system, whole process tree) during the fio run. */
  cpuSeconds?: number;
  /** cpuSeconds per 10^9 bytes moved. */
  cpuSecondsPerGB?: number;
  /** fio's own CPU, percent of one CPU. */
  clientCpuPercent?: number;
  load1AtStart?: number;
  ratios?: { throughput?: number; p99?: number; cpuPerGB?: number };
}

interface MemoryRow {
  server: string;
  role: Role;
  status: Status;
  error?: string;
  clients: number;
  idle?: TreeMemory;
  one?: TreeMemory;
  many?: TreeMemory;
  /** (PSS with N clients - PSS with 1) / (N - 1). */
  pssKiBPerClient?: number;
  rssKiBPerClient?: number;
  /** For ours: files in its --cow directory with 1 and with N clients connected. */
  overlayFilesOne?: number;
  overlayFilesMany?: number;
  ratioPerClient?: number;
}

function describe(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ').slice(0, 400);
}

function progress(msg: string): void {
  process.stderr.write(`[bench/nbd] ${msg}\n`);
}

function have(command: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', command], { stdio: 'ignore' }).status === 0;
}

function firstLine(command: string, args: string[]): string {
  const r = spawnSync(command, args, { encoding: 'utf8', timeout: 10_000 });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n').find((l) => l.trim() !== '')?.trim() ?? 'unknown';
}

async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

// ---------------------------------------------------------------- golden image

/**
 * A sparse raw image: in each 16 MiB stripe, 8 MiB of random bytes, then an
 * 8 MiB hole. Random data so no layer can shortcut zeros on the data parts;
 * holes so servers that see sparseness meet some.
 */
function makeGoldenImage(path: string, size: number): void {
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, size);
    const chunk = Buffer.allocUnsafe(1 << 20);
    for (let stripe = 0; stripe < size; stripe += STRIPE_BYTES) {
      const dataEnd = Math.min(stripe + STRIPE_BYTES / 2, size);
      for (let pos = stripe; pos < dataEnd; pos += chunk.length) {
        randomFillSync(chunk);
        writeSync(fd, chunk, 0, Math.min(chunk.length, dataEnd - pos), pos);
      }
    }
  } finally {
    closeSync(fd);
  }
}

/** SHA-256 of a file; reading it whole also leaves it in the page cache. */
function sha256File(path: string): Promise<string> {
  return new Promise((resolveHash, reject) => {
    const h = createHash('sha256');
    createReadStream(path, { highWaterMark: 1 << 20 })
      .on('data', (b) => h.update(b))
      .on('error', reject)
      .on('end', () => resolveHash(h.digest('hex')));
  });
}

// ---------------------------------------------------------------- one fio run

class Bench {
  readonly registry = new ProcessRegistry();
  readonly runsDir: string;
  private runCount = 0;

  constructor(
    readonly opts: Options,
    readonly tmpRoot: string,
    readonly base: string,
  ) {
    this.runsDir = join(tmpRoot, 'runs');
    mkdirSync(this.runsDir);
  }

  private newRunDir(label: string): string {
    this.runCount += 1;
    const d = join(this.runsDir, `${String(this.runCount).padStart(3, '0')}-${label}`);
    mkdirSync(d);
    return d;
  }

  /** Starts `server` fresh; the caller stops it with stopServer. */
  private async startServer(server: ServerSpec, runDir: string, maxClients: number): Promise<{ started: StartedServer; port: number }> {
    const port = await freePort();
    const started = await server.start({
      base: this.base,
      runDir,
      port,
      exportName: DEFAULTS.exportName,
      maxClients,
      repoRoot,
      registry: this.registry,
    });
    return { started, port };
  }

  private async stopServer(pid: number, port: number, runDir: string): Promise<void> {
    await this.registry.stop(pid);
    await settleAfterStop(port);
    if (!this.opts.keepTemp) rmSync(runDir, { recursive: true, force: true });
  }

  async runJob(job: FioJob, server: ServerSpec): Promise<JobRow> {
    const row: JobRow = { job: job.id, server: server.id, role: server.role, status: 'failed', load1AtStart: loadavg()[0] };
    const missing = server.commands.filter((c) => !have(c));
    if (missing.length > 0) return { ...row, status: 'skipped', error: `not installed: ${missing.join(', ')}` };
    const runDir = this.newRunDir(`${job.id}-${server.id}`);
    let pid: number | undefined;
    let port = 0;
    try {
      // Every server starts with the page cache as clean as the last: the
      // writes of earlier runs are written back first, not during this one.
      await drainDirtyPages();
      row.load1AtStart = loadavg()[0];
      const s = await this.startServer(server, runDir, DEFAULTS.fioMaxClients);
      pid = s.started.pid;
      port = s.port;
      const output = join(runDir, 'fio.json');
      const uri = `nbd://127.0.0.1:${port}/${DEFAULTS.exportName}`;
      const cpu0 = treeCpuSeconds(pid);
      const fio = await this.runFio(fioArgs(job, uri, this.opts.runtimeSeconds, output), runDir);
      // nbd-server's per-connection child may still be exiting; let it be reaped so its CPU lands in cutime.
      await waitFor(() => descendants(pid as number).every((d) => d.state !== 'Z'), 1000);
      const cpu1 = treeCpuSeconds(pid);
      if (fio.code !== 0) throw new Error(`fio exit ${fio.code}: ${fio.stderr || logTail(s.started.logFile)}`);
      const f = parseFioJson(readFileSync(output, 'utf8'), isWriteJob(job) ? 'write' : 'read');
      if (f.bytes === 0) throw new Error(`fio moved no data: ${fio.stderr || logTail(s.started.logFile)}`);
      if (cpu0 === undefined || cpu1 === undefined) throw new Error(`server process ${pid} ended during the run: ${logTail(s.started.logFile)}`);
      const cpu = cpu1 - cpu0;
      return {
        ...row,
        status: 'ok',
        mbPerSecond: f.bandwidth / 1e6,
        iops: f.iops,
        p50Ms: f.clatP50Ns === undefined ? undefined : f.clatP50Ns / 1e6,
        p99Ms: f.clatP99Ns === undefined ? undefined : f.clatP99Ns / 1e6,
        p999Ms: f.clatP999Ns === undefined ? undefined : f.clatP999Ns / 1e6,
        bytes: f.bytes,
        runtimeMs: f.runtimeMs,
        cpuSeconds: cpu,
        cpuSecondsPerGB: cpu / (f.bytes / 1e9),
        clientCpuPercent: f.clientUsrPct + f.clientSysPct,
      };
    } catch (e) {
      return { ...row, status: 'failed', error: describe(e) };
    } finally {
      if (pid !== undefined) await this.stopServer(pid, port, runDir);
      else if (!this.opts.keepTemp) rmSync(runDir, { recursive: true, force: true });
    }
  }

  private async runFio(args: string[], runDir: string): Promise<{ code: number | null; stderr: string }> {
    const errFile = join(runDir, 'fio.err');
    const fd = openSync(errFile, 'w');
    const child = spawn('fio', args, { stdio: ['ignore', 'ignore', fd] });
    closeSync(fd);
    if (child.pid !== undefined) this.registry.add(child.pid);
    const limit = this.opts.runtimeSeconds * 1000 + LIMITS.fioGraceMs;
    const code = await new Promise<number | null>((resolveCode) => {
      const timer = setTimeout(() => {
        if (child.pid !== undefined) void this.registry.stop(child.pid);
      }, limit);
      child.once('error', () => {
        clearTimeout(timer);
        resolveCode(-1);
      });
      child.once('exit', (c) => {
        clearTimeout(timer);
        resolveCode(c);
      });
    });
    if (child.pid !== undefined) await this.registry.stop(child.pid);
    const stderr = existsSync(errFile) ? readFileSync(errFile, 'utf8').trim().split('\n').slice(-4).join(' / ') : '';
    return { code, stderr };
  }

  // -------------------------------------------------------------- memory per client

  async runMemory(server: ServerSpec, python: string | undefined): Promise<MemoryRow> {
    const n = this.opts.clients;
    const row: MemoryRow = { server: server.id, role: server.role, status: 'failed', clients: n };
    const missing = server.commands.filter((c) => !have(c));
    if (missing.length > 0) return { ...row, status: 'skipped', error: `not installed: ${missing.join(', ')}` };
    if (python === undefined) return { ...row, status: 'skipped', error: 'no python3 with the libnbd binding (python3-libnbd)' };
    const runDir = this.newRunDir(`memory-${server.id}`);
    let pid: number | undefined;
    let port = 0;
    let holder: ReturnType<typeof spawn> | undefined;
    try {
      const s = await this.startServer(server, runDir, n + 4);
      pid = s.started.pid;
      port = s.port;
      await sleep(LIMITS.memorySettleMs);
      row.idle = treeMemory(pid);
      const uri = `nbd://127.0.0.1:${port}/${DEFAULTS.exportName}`;
      holder = spawn(python, [join(repoRoot, 'bench', 'lib', 'nbd-hold.py'), uri], { stdio: ['pipe', 'pipe', 'pipe'] });
      if (holder.pid !== undefined) this.registry.add(holder.pid);
      const lines = lineReader(holder);
      const ask = async (cmd: string, expect: string): Promise<void> => {
        holder?.stdin?.write(cmd + '\n');
        const answer = await lines.next(LIMITS.holdStepMs);
        if (answer !== expect) throw new Error(`client holder answered ${JSON.stringify(answer)} to "${cmd}" (${logTail(s.started.logFile, 3)})`);
      };
      await ask('open 1', 'ok 1');
      await sleep(LIMITS.memorySettleMs);
      row.one = treeMemory(pid);
      if (s.started.overlayDir !== undefined) row.overlayFilesOne = countFiles(s.started.overlayDir);
      await ask(`open ${n}`, `ok ${n}`);
      await sleep(LIMITS.memorySettleMs);
      row.many = treeMemory(pid);
      if (s.started.overlayDir !== undefined) row.overlayFilesMany = countFiles(s.started.overlayDir);
      await ask('quit', 'bye');
      if (!row.one || !row.many) throw new Error('server process ended during the memory test');
      row.pssKiBPerClient = (row.many.pssKiB - row.one.pssKiB) / (n - 1);
      row.rssKiBPerClient = (row.many.rssKiB - row.one.rssKiB) / (n - 1);
      row.status = 'ok';
      return row;
    } catch (e) {
      return { ...row, status: 'failed', error: describe(e) };
    } finally {
      if (holder?.pid !== undefined) await this.registry.stop(holder.pid);
      if (pid !== undefined) await this.stopServer(pid, port, runDir);
      else if (!this.opts.keepTemp) rmSync(runDir, { recursive: true, force: true });
    }
  }
}

/** Lines from a child's stdout, one at a time, each wait bounded. */
function lineReader(child: ReturnType<typeof spawn>): { next(timeoutMs: number): Promise<string | undefined> } {
  const queue: string[] = [];
  const waiters: ((l: string | undefined) => void)[] = [];
  let closed = false;
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => {
    stderr = (stderr + b.toString()).slice(-2000);
  });
  if (child.stdout) {
    const rl = createInterface({ input: child.stdout });
    rl.on('line', (l) => {
      const w = waiters.shift();
      if (w) w(l);
      else queue.push(l);
    });
    rl.on('close', () => {
      closed = true;
      for (const w of waiters.splice(0)) w(undefined);
    });
  }
  return {
    next(timeoutMs) {
      const l = queue.shift();
      if (l !== undefined) return Promise.resolve(l);
      if (closed) return Promise.resolve(stderr ? `(ended) ${stderr.trim().split('\n').slice(-1)[0]}` : undefined);
      return new Promise((resolveLine) => {
        const timer = setTimeout(() => {
          const i = waiters.indexOf(done);
          if (i >= 0) waiters.splice(i, 1);
          resolveLine(`(no answer in ${timeoutMs} ms)`);
        }, timeoutMs);
        const done = (x: string | undefined): void => {
          clearTimeout(timer);
          resolveLine(x === undefined && stderr ? `(ended) ${stderr.trim().split('\n').slice(-1)[0]}` : x);
        };
        waiters.push(done);
      });
    },
  };
}

function findPython(): string | undefined {
  // The libnbd binding is a Debian package, so the system interpreter has it even where another python3 comes first on PATH.
  for (const py of ['/usr/bin/python3', 'python3']) {
    if (spawnSync(py, ['-c', 'import nbd'], { stdio: 'ignore', timeout: 10_000 }).status === 0) return py;
  }
  return undefined;
}

// ---------------------------------------------------------------- ratios and report

const METRICS: { key: 'throughput' | 'p99' | 'cpuPerGB'; better: Better; value(r: JobRow): number | undefined }[] = [
  { key: 'throughput', better: 'higher', value: (r) => r.mbPerSecond },
  { key: 'p99', better: 'lower', value: (r) => r.p99Ms },
  { key: 'cpuPerGB', better: 'lower', value: (r) => r.cpuSecondsPerGB },
];

/** Fills each row's ratios against the best `peer` row of its job. */
function addRatios(rows: JobRow[]): void {
  const peers = rows.filter((r) => r.role === 'peer' && r.status === 'ok');
  for (const m of METRICS) {
    const best = bestOf(peers.map(m.value), m.better);
    for (const r of rows) {
      if (r.status !== 'ok') continue;
      r.ratios ??= {};
      r.ratios[m.key] = ratioToBest(m.value(r), best, m.better);
    }
  }
}

function bestPeerName(rows: JobRow[], m: (typeof METRICS)[number]): string {
  const peers = rows.filter((r) => r.role === 'peer' && r.status === 'ok');
  const best = bestOf(peers.map(m.value), m.better);
  return peers.find((r) => m.value(r) === best)?.server ?? '–';
}

function roleMark(role: Role): string {
  return role === 'ours' ? ' (ours)' : role === 'reference' ? ' (ref)' : '';
}

/** Rows that did not run, as notes under a table (keeps the table narrow). */
function failureNotes(rows: readonly { server: string; status: Status; error?: string }[]): string[] {
  return rows.filter((r) => r.status !== 'ok').map((r) => `- ${r.server} ${r.status}: ${r.error ?? 'no reason given'}`);
}

function jobTable(rows: JobRow[]): string {
  const headers = ['server', 'MB/s', 'IOPS', 'p99 ms', 'CPU s', 'CPU s/GB', 'MB/s ×best', 'p99 ×best', 'CPU/GB ×best', 'load'];
  const body = rows.map((r) =>
    r.status !== 'ok'
      ? [`${r.server}${roleMark(r.role)}`, r.status, '', '', '', '', '', '', '', fmt(r.load1AtStart, 1)]
      : [
          `${r.server}${roleMark(r.role)}`,
          fmt(r.mbPerSecond, 1),
          fmtInt(r.iops),
          fmt(r.p99Ms, 2),
          fmt(r.cpuSeconds, 2),
          fmt(r.cpuSecondsPerGB, 2),
          fmtRatio(r.ratios?.throughput),
          fmtRatio(r.ratios?.p99),
          fmtRatio(r.ratios?.cpuPerGB),
          fmt(r.load1AtStart, 1),
        ],
  );
  const notes = failureNotes(rows);
  return markdownTable(headers, body, [false, true, true, true, true, true, true, true, true, true]) + (notes.length ? '\n\n' + notes.join('\n') : '');
}

function memoryTable(rows: MemoryRow[]): string {
  const headers = ['server', 'idle PSS KiB', '1 client PSS KiB', `N clients PSS KiB`, 'PSS KiB/client', 'RSS KiB/client', 'procs (N)', '×best'];
  const body = rows.map((r) =>
    r.status !== 'ok'
      ? [`${r.server}${roleMark(r.role)}`, r.status, '', '', '', '', '', '']
      : [
          `${r.server}${roleMark(r.role)}`,
          fmtInt(r.idle?.pssKiB),
          fmtInt(r.one?.pssKiB),
          fmtInt(r.many?.pssKiB),
          fmt(r.pssKiBPerClient, 0),
          fmt(r.rssKiBPerClient, 0),
          String(r.many?.processes ?? '–'),
          fmtRatio(r.ratioPerClient),
        ],
  );
  const notes = failureNotes(rows);
  return markdownTable(headers, body, [false, true, true, true, true, true, true, true]) + (notes.length ? '\n\n' + notes.join('\n') : '');
}

interface Report {
  startedAt: string;
  finishedAt: string;
  settings: {
    runtimeSeconds: number;
    imageBytes: number;
    imageLayout: string;
    clients: number;
    jobs: FioJob[];
    servers: { id: string; role: Role; settings: string }[];
    cache: string;
  };
  host: { cpus: number; cpuModel: string; kernel: string; node: string; loadavgStart: number[]; loadavgEnd: number[] };
  versions: Record<string, string>;
  commit: string;
  baseUnchanged: boolean | undefined;
  jobs: JobRow[];
  memory: MemoryRow[];
}

function renderMarkdown(r: Report): string {
  const out: string[] = [];
  const s = r.settings;
  out.push(`# NBD benchmark ${r.startedAt}`);
  out.push('');
  out.push(
    `fio engine nbd on loopback, ${s.runtimeSeconds} s per job, golden image ${s.imageBytes / 2 ** 20} MiB (${s.imageLayout}). ` +
      `Host: ${r.host.cpus} CPUs (${r.host.cpuModel}), Linux ${r.host.kernel}, Node ${r.host.node}, load ${r.host.loadavgStart.map((x) => x.toFixed(2)).join(' ')} at start, ` +
      `${r.host.loadavgEnd.map((x) => x.toFixed(2)).join(' ')} at end. Commit ${r.commit}. ${s.cache}`,
  );
  out.push('');
  out.push(
    'Ratios (×best) compare with the best **peer** of the job (a server doing the same job: base image behind a copy-on-write overlay; rows marked (ref) are never the best): ' +
      'MB/s ×best = value / best; p99 ×best and CPU/GB ×best = best / value. 1.00× is as good as the best peer, above is better, below is worse. ' +
      'MB = 10^6 bytes; CPU s is the server process tree\'s user + system time during the fio run, from /proc; CPU s/GB divides it by 10^9 bytes moved. ' +
      'load is the 1-minute load average when the row started: the machine is shared, so figures taken under load are noisy.',
  );
  out.push('');
  const ours = r.jobs.filter((j) => j.role === 'ours');
  if (ours.length > 0) {
    out.push('## Ours against the best peer');
    out.push('');
    const body = s.jobs.map((job) => {
      const rows = r.jobs.filter((x) => x.job === job.id);
      const o = rows.find((x) => x.role === 'ours');
      if (!o || o.status !== 'ok') return [job.id, bestPeerName(rows, METRICS[0]!), o?.status ?? 'not run', '', '', ''];
      return [job.id, bestPeerName(rows, METRICS[0]!), fmt(o.mbPerSecond, 1), fmtRatio(o.ratios?.throughput), fmtRatio(o.ratios?.p99), fmtRatio(o.ratios?.cpuPerGB)];
    });
    out.push(markdownTable(['job', 'best peer (MB/s)', 'ours MB/s', 'MB/s ×best', 'p99 ×best', 'CPU/GB ×best'], body, [false, false, true, true, true, true]));
    out.push('');
  }
  for (const job of s.jobs) {
    out.push(`## ${job.id}: ${job.description}`);
    out.push('');
    out.push(jobTable(r.jobs.filter((x) => x.job === job.id)));
    out.push('');
  }
  if (r.memory.length > 0) {
    out.push(`## Memory per connected client (N = ${s.clients})`);
    out.push('');
    out.push(
      'Each client connects, writes 4 KiB at its own offset and reads it back, and stays connected. PSS/RSS summed over the server\'s processes; ' +
        'per client = (N clients - 1 client) / (N - 1). ×best = best peer / value. nbdkit-cow and qemu-nbd share one overlay between all clients; ' +
        'nbd-server forks a process with its own diff file per client.',
    );
    out.push('');
    out.push(memoryTable(r.memory));
    const o = r.memory.find((m) => m.role === 'ours' && m.status === 'ok');
    if (o?.overlayFilesOne !== undefined && o.overlayFilesMany !== undefined) {
      out.push(
        '',
        `Ours had ${o.overlayFilesOne} file(s) in its --cow directory with 1 client and ${o.overlayFilesMany} with ${s.clients}: ` +
          (o.overlayFilesMany > o.overlayFilesOne
            ? `its overlay state grows per client (${fmt((o.overlayFilesMany - o.overlayFilesOne) / (s.clients - 1), 1)} file(s) per client).`
            : o.overlayFilesMany === 0
              ? 'it kept no files there (overlay state elsewhere or in memory), so the directory says nothing about per-client overlays.'
              : 'all clients of `export` shared the same overlay files, so this measures connection state, not a private overlay per client.'),
      );
    }
    out.push('');
  }
  out.push('## Servers');
  out.push('');
  for (const sv of s.servers) out.push(`- **${sv.id}**${roleMark(sv.role)}: ${sv.settings}`);
  out.push('');
  out.push(`Versions: ${Object.entries(r.versions).map(([k, v]) => `${k}: ${v}`).join('; ')}.`);
  out.push('');
  out.push(
    r.baseUnchanged === undefined
      ? 'The golden image was not checked after the runs.'
      : r.baseUnchanged
        ? 'The golden image had the same SHA-256 after all runs as before: no server wrote to it.'
        : '**The golden image changed during the runs: some server wrote through to the base.**',
  );
  out.push('');
  return out.join('\n');
}

function stamp(d: Date): string {
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

// ---------------------------------------------------------------- main

export async function main(argv: string[]): Promise<number> {
  let opts: Options | 'help';
  try {
    opts = parseOptions(argv);
  } catch (e) {
    process.stderr.write(`${describe(e)}\n\n${HELP}`);
    return 2;
  }
  if (opts === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  if (!have('fio')) {
    process.stderr.write('fio is not installed (scripts/setup installs it)\n');
    return 2;
  }
  const startedAt = new Date();
  const loadavgStart = loadavg();
  const tmpRoot = mkdtempSync(join(opts.tmpParent, 'diskless-bench-nbd-'));
  const base = join(tmpRoot, 'base.raw');
  const bench = new Bench(opts, tmpRoot, base);

  // Whatever happens, the servers end and the temporary directory goes.
  let cleaned = false;
  const cleanupNow = (): void => {
    if (cleaned) return;
    cleaned = true;
    bench.registry.killAllNow();
    if (!opts.keepTemp) rmSync(tmpRoot, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    progress(`${sig}: stopping servers and removing ${tmpRoot}`);
    cleanupNow();
    process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('exit', cleanupNow);

  try {
    progress(`golden image ${opts.imageBytes / 2 ** 20} MiB in ${tmpRoot}`);
    makeGoldenImage(base, opts.imageBytes);
    // Reading the whole image warms the page cache for every server alike (dropping caches is not possible in a container).
    const hashBefore = await sha256File(base);

    const jobRows: JobRow[] = [];
    for (const job of opts.jobs) {
      const rows: JobRow[] = [];
      for (const server of opts.servers) {
        progress(`${job.id} ${server.id} ...`);
        const row = await bench.runJob(job, server);
        progress(
          row.status === 'ok'
            ? `${job.id} ${server.id}: ${fmt(row.mbPerSecond)} MB/s, ${fmtInt(row.iops)} IOPS, p99 ${fmt(row.p99Ms, 2)} ms, CPU ${fmt(row.cpuSeconds, 2)} s`
            : `${job.id} ${server.id}: ${row.status}: ${row.error}`,
        );
        rows.push(row);
      }
      addRatios(rows);
      jobRows.push(...rows);
    }

    const memRows: MemoryRow[] = [];
    if (opts.clients > 0) {
      const python = findPython();
      for (const server of opts.servers) {
        progress(`memory ${server.id} with 1 and ${opts.clients} clients ...`);
        const row = await bench.runMemory(server, python);
        progress(row.status === 'ok' ? `memory ${server.id}: ${fmt(row.pssKiBPerClient, 0)} KiB PSS per client` : `memory ${server.id}: ${row.status}: ${row.error}`);
        memRows.push(row);
      }
      const best = bestOf(memRows.filter((m) => m.role === 'peer' && m.status === 'ok').map((m) => m.pssKiBPerClient), 'lower');
      for (const m of memRows) if (m.status === 'ok') m.ratioPerClient = ratioToBest(Math.max(m.pssKiBPerClient ?? 0, 1), best, 'lower');
    }

    const hashAfter = await sha256File(base);
    const report: Report = {
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      settings: {
        runtimeSeconds: opts.runtimeSeconds,
        imageBytes: opts.imageBytes,
        imageLayout: 'each 16 MiB stripe: 8 MiB random data, 8 MiB hole',
        clients: opts.clients,
        jobs: opts.jobs,
        servers: opts.servers.map((s) => ({ id: s.id, role: s.role, settings: s.settings })),
        cache:
          'Page cache: the golden image is read whole before the runs, so every server reads it warm; caches are not dropped between runs, but before each run what earlier runs left dirty is written back (sync, then a wait until under 32 MiB is dirty), so no run pays for the writeback of another.',
      },
      host: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', kernel: release(), node: process.version, loadavgStart, loadavgEnd: loadavg() },
      versions: {
        fio: firstLine('fio', ['--version']),
        nbdkit: have('nbdkit') ? firstLine('nbdkit', ['--version']) : 'not installed',
        'nbd-server': have('nbd-server') ? firstLine('nbd-server', ['-V']).replace(/^This is nbd-server version /, '') : 'not installed',
        'qemu-nbd': have('qemu-nbd') ? firstLine('qemu-nbd', ['--version']) : 'not installed',
        diskless: (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version?: string }).version ?? 'unknown',
      },
      commit: gitDescribe(),
      baseUnchanged: hashAfter === hashBefore,
      jobs: jobRows,
      memory: memRows,
    };
    const md = renderMarkdown(report);
    mkdirSync(opts.outDir, { recursive: true });
    const name = `nbd-${stamp(startedAt)}`;
    writeFileSync(join(opts.outDir, `${name}.json`), JSON.stringify(report, null, 2) + '\n');
    writeFileSync(join(opts.outDir, `${name}.md`), md);
    process.stdout.write(md);
    progress(`results: ${join(opts.outDir, name)}.{json,md} (${((Date.now() - startedAt.getTime()) / 1000).toFixed(0)} s)`);
    return report.baseUnchanged ? 0 : 1;
  } finally {
    await bench.registry.stopAll();
    cleanupNow();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

function gitDescribe(): string {
  const head = spawnSync('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  if (head.status !== 0) return 'unknown';
  const dirty = spawnSync('git', ['-C', repoRoot, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' });
  return head.stdout.trim() + (dirty.stdout?.trim() ? ' (with uncommitted changes)' : '');
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exitCode = 70;
    },
  );
}
