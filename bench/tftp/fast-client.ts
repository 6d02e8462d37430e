/**
 * The benchmark's C client (tftp-get.c beside this file): built with the
 * machine's C compiler, run once per measured repetition, its one JSON line
 * read back. Optionally pinned to a CPU (taskset) and wrapped in `perf stat
 * -e task-clock -p SERVER`, which counts the server's CPU time (its threads
 * and the children it forks, as tftpd-hpa does per transfer) for exactly
 * the duration of the download.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** bench/tftp/tftp-get.c in the source tree (this module runs from dist/bench/tftp). */
export const FAST_CLIENT_SOURCE = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'tftp', 'tftp-get.c');

/** What tftp-get prints for a finished run (see the comment at the top of tftp-get.c). */
export interface FastClientResult {
  bytes: number;
  seconds: number;
  blksize: number;
  windowsize: number;
  packets: number;
  blocks: number;
  acks: number;
  discarded: number;
  timeouts: number;
  userSeconds: number;
  systemSeconds: number;
  /** CPU seconds of the server during the run, when perf counted them. */
  serverCpuSeconds?: number;
}

export interface FastClientRun {
  binary: string;
  host: string;
  port: number;
  file: string;
  blksize?: number;
  windowsize?: number;
  concurrent?: number;
  retransmitMs?: number;
  maxRetries?: number;
  /** A local copy of the file: every block is compared with it. */
  expected?: string;
  /** taskset -c CPU. */
  cpu?: number;
  /** perf stat -p this pid for the run's duration. */
  perfPid?: number;
}

/**
 * Compiles tftp-get.c to `out` with `cc -O2`; returns undefined when it
 * built, or why not (no compiler, compile errors).
 */
export function buildFastClient(out: string, source = FAST_CLIENT_SOURCE, cc = process.env.CC ?? 'cc'): string | undefined {
  if (!existsSync(source)) return `${source} is missing`;
  const r = spawnSync(cc, ['-O2', '-Wall', '-Wextra', '-o', out, source], { encoding: 'utf8' });
  if (r.error) return `${cc}: ${r.error.message}`;
  if (r.status !== 0) return `${cc} failed: ${(r.stderr || r.stdout).trim().slice(0, 2000)}`;
  return undefined;
}

let perfWorks: boolean | undefined;
/** Whether `perf stat -e task-clock` can count here (a software event: no hardware counters needed). */
export function perfTaskClockAvailable(): boolean {
  perfWorks ??= spawnSync('perf', ['stat', '-x,', '-e', 'task-clock', 'true'], { encoding: 'utf8' }).status === 0;
  return perfWorks;
}

let tasksetWorks: boolean | undefined;
export function tasksetAvailable(): boolean {
  tasksetWorks ??= spawnSync('taskset', ['-c', '0', 'true']).status === 0;
  return tasksetWorks;
}

/**
 * The task-clock figure of `perf stat -x,` output, in seconds: a line like
 * `98.61,msec,task-clock,98612707,100.00,0.475,CPUs utilized`. Undefined
 * when perf counted nothing (`<not counted>`) or printed no such line.
 */
export function parsePerfTaskClock(stderr: string): number | undefined {
  for (const line of stderr.split('\n')) {
    const f = line.split(',');
    if (f[2] !== 'task-clock') continue;
    const v = Number(f[0]);
    if (!Number.isFinite(v)) return undefined;
    const unit = f[1];
    return unit === 'msec' ? v / 1e3 : unit === 'usec' ? v / 1e6 : unit === 'nsec' || unit === '' ? v / 1e9 : undefined;
  }
  return undefined;
}

/** The last line of tftp-get's stdout, checked: a result, or an Error with the client's message. */
export function parseFastClientOutput(stdout: string): FastClientResult {
  const line = stdout.trim().split('\n').pop() ?? '';
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`tftp-get printed no result: ${JSON.stringify(stdout.slice(0, 300))}`);
  }
  if (j.ok !== true) throw new Error(`tftp-get: ${String(j.error ?? 'failed')}`);
  const num = (k: string): number => {
    const v = j[k];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`tftp-get result without ${k}: ${line}`);
    return v;
  };
  return {
    bytes: num('bytes'), seconds: num('seconds'), blksize: num('blksize'), windowsize: num('windowsize'), packets: num('packets'),
    blocks: num('blocks'), acks: num('acks'), discarded: num('discarded'), timeouts: num('timeouts'),
    userSeconds: num('userSeconds'), systemSeconds: num('systemSeconds'),
  };
}

/** Runs tftp-get once (asynchronously: a server in this process can answer it). */
export function runFastClient(o: FastClientRun): Promise<FastClientResult> {
  const argv: string[] = [];
  if (o.blksize !== undefined) argv.push('-b', String(o.blksize));
  if (o.windowsize !== undefined) argv.push('-w', String(o.windowsize));
  if (o.concurrent !== undefined) argv.push('-c', String(o.concurrent));
  if (o.retransmitMs !== undefined) argv.push('-t', String(o.retransmitMs));
  if (o.maxRetries !== undefined) argv.push('-r', String(o.maxRetries));
  if (o.expected !== undefined) argv.push('-e', o.expected);
  argv.push(o.host, String(o.port), o.file);
  let cmd = [o.binary, ...argv];
  if (o.cpu !== undefined) cmd = ['taskset', '-c', String(o.cpu), ...cmd];
  if (o.perfPid !== undefined) cmd = ['perf', 'stat', '-x,', '-e', 'task-clock', '-p', String(o.perfPid), '--', ...cmd];
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-8000)));
    child.once('error', reject);
    child.once('close', () => {
      try {
        const r = parseFastClientOutput(out);
        if (o.perfPid !== undefined) {
          const cpu = parsePerfTaskClock(err);
          if (cpu !== undefined) r.serverCpuSeconds = cpu;
        }
        resolvePromise(r);
      } catch (e) {
        reject(new Error(`${(e as Error).message}${err ? ` (stderr: ${err.trim().slice(0, 500)})` : ''}`));
      }
    });
  });
}

/** Where the bench puts the binary it builds. */
export function fastClientPath(dir: string): string {
  return join(dir, 'tftp-get');
}
