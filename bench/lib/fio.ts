/**
 * fio jobs against an NBD URI (fio's `nbd` engine, built on libnbd: one
 * connection per job, `iodepth` requests in flight on it) and the parsing of
 * fio's JSON output (`--output-format=json`).
 */

export interface FioJob {
  /** Short id used in tables and file names. */
  id: string;
  /** fio `rw=` */
  rw: 'read' | 'write' | 'randread' | 'randwrite';
  /** fio `bs=` in bytes */
  blockSize: number;
  iodepth: number;
  description: string;
}

/** The four jobs every NBD server is measured with. */
export const NBD_JOBS: readonly FioJob[] = [
  { id: 'seq-read', rw: 'read', blockSize: 1 << 20, iodepth: 8, description: 'sequential read, 1 MiB, qd 8' },
  { id: 'rand-read', rw: 'randread', blockSize: 4096, iodepth: 32, description: 'random read, 4 KiB, qd 32' },
  { id: 'rand-write', rw: 'randwrite', blockSize: 4096, iodepth: 32, description: 'random write, 4 KiB, qd 32' },
  { id: 'seq-write', rw: 'write', blockSize: 1 << 20, iodepth: 8, description: 'sequential write, 1 MiB, qd 8' },
];

export function isWriteJob(job: FioJob): boolean {
  return job.rw === 'write' || job.rw === 'randwrite';
}

/**
 * Every server sees the same offsets in the same order: a fixed seed, and no
 * random map (fio then draws offsets with replacement instead of covering the
 * device once per pass, which a time-based job would otherwise wrap around
 * unevenly). No ramp time: the CPU seconds of the server are sampled around
 * the whole fio run, so the bytes must cover the whole run too.
 */
export const FIO_RANDSEED = 20240611;

export function fioArgs(job: FioJob, uri: string, runtimeSeconds: number, outputFile: string): string[] {
  return [
    `--name=${job.id}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${job.rw}`,
    `--bs=${job.blockSize}`,
    `--iodepth=${job.iodepth}`,
    '--numjobs=1',
    '--time_based',
    `--runtime=${runtimeSeconds}`,
    '--norandommap',
    '--randrepeat=1',
    `--randseed=${FIO_RANDSEED}`,
    '--group_reporting',
    '--output-format=json',
    `--output=${outputFile}`,
  ];
}

/** One direction (read or write) of one fio job, as the tables use it. */
export interface FioFigures {
  /** Bytes moved during the job. */
  bytes: number;
  /** Bytes per second. */
  bandwidth: number;
  iops: number;
  /** Completion latency percentiles in nanoseconds; undefined when fio gave none. */
  clatP50Ns: number | undefined;
  clatP99Ns: number | undefined;
  clatP999Ns: number | undefined;
  /** Job runtime fio reports, milliseconds. */
  runtimeMs: number;
  /** fio's own CPU use (the client), percent of one CPU. */
  clientUsrPct: number;
  clientSysPct: number;
}

type Json = Record<string, unknown>;

function obj(v: unknown, what: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`fio JSON: ${what} is not an object`);
  return v as Json;
}

function num(v: unknown, what: string): number {
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n)) throw new Error(`fio JSON: ${what} is not a number`);
  return n;
}

/**
 * Parses fio's JSON report for one job. fio may print lines before the JSON
 * (the nbd engine says "fio: connected to NBD server" on the same stream),
 * so parsing starts at the first line that opens an object.
 */
export function parseFioJson(text: string, direction: 'read' | 'write'): FioFigures {
  const start = text.search(/^\{/m);
  if (start < 0) throw new Error('fio JSON: no JSON object in the output');
  const doc = obj(JSON.parse(text.slice(start)), 'report');
  const jobs = doc.jobs;
  if (!Array.isArray(jobs) || jobs.length === 0) throw new Error('fio JSON: no jobs');
  const job = obj(jobs[0], 'jobs[0]');
  const err = num(job.error ?? 0, 'jobs[0].error');
  if (err !== 0) throw new Error(`fio reported error ${err} for job ${String(job.jobname)}`);
  const d = obj(job[direction], `jobs[0].${direction}`);
  const clat = d.clat_ns === undefined ? undefined : obj(d.clat_ns, 'clat_ns');
  const pct = clat?.percentile === undefined ? undefined : obj(clat.percentile, 'clat_ns.percentile');
  const p = (key: string): number | undefined => (pct && pct[key] !== undefined ? num(pct[key], `percentile ${key}`) : undefined);
  return {
    bytes: num(d.io_bytes, 'io_bytes'),
    bandwidth: num(d.bw_bytes, 'bw_bytes'),
    iops: num(d.iops, 'iops'),
    clatP50Ns: p('50.000000'),
    clatP99Ns: p('99.000000'),
    clatP999Ns: p('99.900000'),
    runtimeMs: num(d.runtime, 'runtime'),
    clientUsrPct: num(job.usr_cpu ?? 0, 'usr_cpu'),
    clientSysPct: num(job.sys_cpu ?? 0, 'sys_cpu'),
  };
}
