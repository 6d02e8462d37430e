/**
 * TFTP download benchmark: the diskless server against tftpd-hpa and
 * dnsmasq, in the same run, on loopback, all measured with the same
 * client. Run by hand:
 *
 *   npx tsc -p tsconfig.json && node dist/bench/tftp/bench.js [--repeat N] [--warmup N] [--quick] [--json FILE]
 *       [--server NAME=PATH/serve.js ...] [--floor] [--client c|node] [--pin same|split|none] [--cpu N]
 *
 * `--server` adds another build of the diskless server (its compiled
 * bench/tftp/serve.js), e.g. the one before a change, to the same run.
 * `--floor` adds `node-floor` (floor.ts): the least a Node.js program does
 * to serve TFTP, to tell the server's own cost from the runtime's.
 *
 * The client (`--client`): by default tftp-get.c, compiled at start with
 * the machine's cc, for every job. In lock-step each block costs a round
 * trip through the client as well as the server; the Node.js client
 * (src/protocols/tftp/client.ts, `--client node`) spends about as much per
 * block as the servers do, which squeezes every server towards the same
 * figure. Boot firmware (iPXE, OVMF) is a C loop too. The C client also
 * reports the server's CPU per block, counted by `perf stat -e task-clock
 * -p` for the duration of each download (threads and forked children),
 * when perf can; otherwise from /proc, at clock-tick resolution, without
 * children a server does not wait for (tftpd-hpa's).
 *
 * CPU placement (`--pin`): a lock-step download is a ping-pong between two
 * processes, and where the scheduler puts them changes its speed tenfold on
 * a virtual machine (a wake-up on another, idle vCPU costs an
 * inter-processor interrupt through the hypervisor: about 10 MiB/s for
 * every server, against 100-190 on one vCPU). `same` (the default) runs
 * the client and every server on one CPU (`--cpu`, default the last), so a
 * round trip costs what the two processes and the kernel spend; `split`
 * puts the client on another CPU (wake-ups across CPUs, as a real link
 * has); `none` leaves it to the scheduler, which moves a long transfer
 * between both placements.
 *
 * The machine is assumed shared and noisy, so: every server and the client
 * are warmed up alike first (JIT, page cache); each job runs its repetitions
 * round-robin over the servers, starting with a different server each time,
 * so a change of background load falls on all of them; the table gives the
 * median of the repetitions (the best is in the JSON), and the load average
 * before and after.
 *
 * Each server runs in its own process on 127.0.0.1: the diskless server via
 * bench/tftp/serve.ts on a high port; tftpd-hpa by hand (`in.tftpd -L -s
 * ROOT -a 127.0.0.1:PORT`, never the system service); dnsmasq with DNS and
 * DHCP off (`--port=0`, no dhcp-range) and TFTP on 127.0.0.1 only. dnsmasq
 * has no option for its TFTP port, so it needs 127.0.0.1:69 free and root;
 * otherwise it is skipped and the report says why.
 *
 * A server that does not acknowledge windowsize (tftpd-hpa 5.2, dnsmasq
 * 2.90) runs that job lock-step; the report shows the window it granted.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tftpGet } from '../../src/protocols/tftp/client.js';
import { treeCpuSeconds } from '../lib/proc.js';
import { buildFastClient, fastClientPath, perfTaskClockAvailable, runFastClient, tasksetAvailable } from './fast-client.js';

const HOST = '127.0.0.1';
const MiB = 1024 * 1024;

interface Job {
  name: string;
  file: string;
  blksize: number;
  windowsize: number;
  concurrent: number;
}

interface Peer {
  name: string;
  port: number;
  child: ChildProcess & { errText: () => string };
}

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const flags = (name: string): string[] => args.flatMap((a, i) => (a === name && args[i + 1] !== undefined ? [args[i + 1]!] : []));
const quick = args.includes('--quick');
const repeat = Number(flag('--repeat') ?? (quick ? 1 : 5));
const warmup = Number(flag('--warmup') ?? (quick ? 1 : 3));
const jsonOut = flag('--json');
const extraServers = flags('--server').map((spec) => {
  const eq = spec.indexOf('=');
  if (eq <= 0) throw new Error(`--server wants NAME=PATH/serve.js, not ${spec}`);
  const path = resolve(spec.slice(eq + 1));
  if (!existsSync(path)) throw new Error(`--server ${spec}: ${path} does not exist`);
  return { name: spec.slice(0, eq), serve: path };
});
if (args.includes('--floor')) extraServers.push({ name: 'node-floor', serve: join(dirname(fileURLToPath(import.meta.url)), 'floor.js') });
if (!Number.isInteger(repeat) || repeat < 1 || !Number.isInteger(warmup) || warmup < 0) throw new Error('--repeat wants an integer >= 1, --warmup >= 0');
const clientKind = flag('--client') ?? 'c';
if (clientKind !== 'c' && clientKind !== 'node') throw new Error(`--client wants c or node, not ${clientKind}`);
const pinMode = flag('--pin') ?? 'same';
if (pinMode !== 'same' && pinMode !== 'split' && pinMode !== 'none') throw new Error(`--pin wants same, split or none, not ${pinMode}`);
const cpus = availableParallelism();
const serverCpu = Number(flag('--cpu') ?? cpus - 1);
if (!Number.isInteger(serverCpu) || serverCpu < 0 || serverCpu >= cpus) throw new Error(`--cpu wants a CPU number below ${cpus}`);
/** CPUs for the servers and for the client; undefined: not pinned. */
const placement = ((): { server: number | undefined; client: number | undefined; note?: string } => {
  if (pinMode === 'none') return { server: undefined, client: undefined };
  if (!tasksetAvailable()) return { server: undefined, client: undefined, note: 'taskset is missing: nothing pinned' };
  if (pinMode === 'same') return { server: serverCpu, client: serverCpu };
  if (cpus < 2) return { server: serverCpu, client: serverCpu, note: 'one CPU: --pin split runs as same' };
  return { server: serverCpu, client: serverCpu === 0 ? 1 : 0 };
})();

const jobs: Job[] = [
  { name: '1 MiB, blksize 1468, windowsize 1', file: 'f1m.bin', blksize: 1468, windowsize: 1, concurrent: 1 },
  { name: '1 MiB, blksize 1468, windowsize 16', file: 'f1m.bin', blksize: 1468, windowsize: 16, concurrent: 1 },
  { name: '32 MiB, blksize 1468, windowsize 1', file: 'f32m.bin', blksize: 1468, windowsize: 1, concurrent: 1 },
  { name: '32 MiB, blksize 1468, windowsize 16', file: 'f32m.bin', blksize: 1468, windowsize: 16, concurrent: 1 },
  { name: '20 x 1 MiB at once, blksize 1468, windowsize 1', file: 'f1m.bin', blksize: 1468, windowsize: 1, concurrent: 20 },
  { name: '20 x 1 MiB at once, blksize 1468, windowsize 16', file: 'f1m.bin', blksize: 1468, windowsize: 16, concurrent: 20 },
];

function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.once('error', reject);
    s.bind(0, HOST, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function udpPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.once('error', () => resolve(false));
    s.bind(port, HOST, () => s.close(() => resolve(true)));
  });
}

/** Waits until a TFTP server answers (an error for a missing file is an answer). */
async function waitReady(port: number, child: ChildProcess, name: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}`);
    try {
      await tftpGet({ host: HOST, port, file: 'ready.txt', retransmitMs: 200, maxRetries: 1 });
      return;
    } catch (err) {
      if ((err as { code?: string }).code === 'TFTP_PEER_ERROR') return;
    }
  }
  throw new Error(`${name} did not answer on ${HOST}:${port}`);
}

/** Starts a server, on the servers' CPU when pinned (taskset execs it: the pid is the server's). */
function start(cmd: string, argv: string[]): ChildProcess & { errText: () => string } {
  const pinned = placement.server === undefined ? [cmd, ...argv] : ['taskset', '-c', String(placement.server), cmd, ...argv];
  const child = spawn(pinned[0]!, pinned.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let errText = '';
  child.stderr?.on('data', (d: Buffer) => {
    errText = (errText + d.toString()).slice(-4000);
  });
  child.on('exit', (code) => {
    if (code && code !== 0 && code !== null) process.stderr.write(`${cmd} exited ${code}: ${errText}\n`);
  });
  return Object.assign(child, { errText: () => errText });
}

/** SIGTERM, and the exit awaited (at most 5 s): a diskless server prints its stats as it exits. */
function stop(peer: Peer): Promise<void> {
  const { child } = peer;
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve();
    }, 5000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

async function startDiskless(root: string, name = 'diskless', serve = join(dirname(fileURLToPath(import.meta.url)), 'serve.js')): Promise<Peer> {
  const port = await freeUdpPort();
  const child = start(process.execPath, [serve, root, String(port), HOST]);
  await waitReady(port, child, name);
  return { name, port, child };
}

async function startTftpdHpa(root: string): Promise<Peer | string> {
  const bin = '/usr/sbin/in.tftpd';
  const port = await freeUdpPort();
  const argv = ['-L', '-s', root, '-a', `${HOST}:${port}`];
  // As root it would switch to "nobody"; the files are world-readable, so that works too.
  const child = start(bin, argv);
  try {
    await waitReady(port, child, 'tftpd-hpa');
  } catch (err) {
    child.kill('SIGTERM');
    return `tftpd-hpa not run: ${(err as Error).message}`;
  }
  return { name: 'tftpd-hpa', port, child };
}

async function startDnsmasq(root: string): Promise<Peer | string> {
  if (process.getuid?.() !== 0) return 'dnsmasq not run: its TFTP port is fixed at 69, which needs root';
  if (!(await udpPortFree(69))) return 'dnsmasq not run: 127.0.0.1:69 is in use';
  const argv = [
    '--keep-in-foreground', '--conf-file=/dev/null', '--port=0', '--enable-tftp', `--tftp-root=${root}`,
    `--listen-address=${HOST}`, '--bind-interfaces', '--interface=lo', '--pid-file=', '--log-facility=-', '--quiet-tftp',
    '--tftp-max=200', '--user=root',
  ];
  const child = start('/usr/sbin/dnsmasq', argv);
  try {
    await waitReady(69, child, 'dnsmasq');
  } catch (err) {
    child.kill('SIGTERM');
    return `dnsmasq not run: ${(err as Error).message}`;
  }
  return { name: 'dnsmasq', port: 69, child };
}

interface Measure {
  /** Median of the repetitions. */
  mbps: number;
  best: number;
  runs: number[];
  windowsize: number;
  /** Server CPU microseconds per DATA block sent, over all repetitions (when measured). */
  serverUsPerBlock: number | undefined;
  /** Client CPU microseconds per DATA block received (C client only). */
  clientUsPerBlock: number | undefined;
}

interface Run {
  mbps: number;
  windowsize: number;
  blocks: number;
  serverCpuSeconds: number | undefined;
  clientCpuSeconds: number | undefined;
}

let clientBinary = '';
const usePerf = clientKind === 'c' && perfTaskClockAvailable();

/** One repetition of a job against one server with the C client: every concurrent download in one tftp-get. */
async function runFast(peer: Peer, job: Job, dir: string, want: { size: number }): Promise<Run> {
  const pid = peer.child.pid!;
  const before = usePerf ? undefined : treeCpuSeconds(pid);
  const r = await runFastClient({
    binary: clientBinary, host: HOST, port: peer.port, file: job.file, blksize: job.blksize, windowsize: job.windowsize,
    concurrent: job.concurrent, retransmitMs: 1000, expected: join(dir, job.file), cpu: placement.client, perfPid: usePerf ? pid : undefined,
  });
  if (r.bytes !== want.size * job.concurrent) throw new Error(`${peer.name}: ${job.file} arrived with ${r.bytes} bytes`);
  const after = usePerf ? undefined : treeCpuSeconds(pid);
  const serverCpuSeconds = usePerf ? r.serverCpuSeconds : before !== undefined && after !== undefined ? after - before : undefined;
  return {
    mbps: r.bytes / MiB / r.seconds, windowsize: r.windowsize, blocks: r.blocks, serverCpuSeconds, clientCpuSeconds: r.userSeconds + r.systemSeconds,
  };
}

/** The same with the Node.js client, in this process: MiB/s over all its concurrent downloads. */
async function runNode(peer: Peer, job: Job, expected: Map<string, { size: number; sha: string }>): Promise<Run> {
  const want = expected.get(job.file)!;
  let blocks = 0;
  const one = async (): Promise<number> => {
    const hash = createHash('sha256');
    const r = await tftpGet({
      host: HOST, port: peer.port, file: job.file, blksize: job.blksize, windowsize: job.windowsize, retransmitMs: 1000,
      onData: (chunk) => hash.update(chunk),
    });
    if (r.bytes !== want.size || hash.digest('hex') !== want.sha) throw new Error(`${peer.name}: ${job.file} arrived corrupted`);
    blocks += r.packets;
    return r.windowsize;
  };
  const cpu0 = treeCpuSeconds(peer.child.pid!);
  const t0 = performance.now();
  const windows = await Promise.all(Array.from({ length: job.concurrent }, one));
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = treeCpuSeconds(peer.child.pid!);
  return {
    mbps: (want.size * job.concurrent) / MiB / seconds, windowsize: Math.min(...windows), blocks,
    serverCpuSeconds: cpu0 !== undefined && cpu1 !== undefined ? cpu1 - cpu0 : undefined, clientCpuSeconds: undefined,
  };
}

function runOnce(peer: Peer, job: Job, dir: string, expected: Map<string, { size: number; sha: string }>): Promise<Run> {
  return clientKind === 'c' ? runFast(peer, job, dir, expected.get(job.file)!) : runNode(peer, job, expected);
}

/**
 * Sum over runs divided by blocks, in microseconds; undefined when any run
 * lacks the figure, or when nothing was counted (a server whose forked
 * children /proc cannot see, or runs shorter than a clock tick).
 */
function perBlockUs(runs: Run[], pick: (r: Run) => number | undefined): number | undefined {
  let cpu = 0;
  let blocks = 0;
  for (const r of runs) {
    const v = pick(r);
    if (v === undefined) return undefined;
    cpu += v;
    blocks += r.blocks;
  }
  return blocks > 0 && cpu > 0 ? (cpu / blocks) * 1e6 : undefined;
}

function median(values: number[]): number {
  const v = [...values].sort((a, b) => a - b);
  const mid = v.length >> 1;
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

const load = (): string => loadavg().map((x) => x.toFixed(2)).join(' ');

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tftp-bench-'));
  // tftpd-hpa and dnsmasq may read as "nobody".
  chmodSync(dir, 0o755);
  const expected = new Map<string, { size: number; sha: string }>();
  for (const [file, size] of [['f1m.bin', MiB], ['f32m.bin', 32 * MiB]] as const) {
    const data = randomBytes(size);
    writeFileSync(join(dir, file), data, { mode: 0o644 });
    expected.set(file, { size, sha: createHash('sha256').update(data).digest('hex') });
  }
  writeFileSync(join(dir, 'ready.txt'), 'ready\n', { mode: 0o644 });
  if (clientKind === 'c') {
    clientBinary = fastClientPath(dir);
    const why = buildFastClient(clientBinary);
    if (why) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`cannot build the C client (${why}); --client node measures with the Node.js client instead`);
    }
  } else if (placement.client !== undefined) {
    // The Node.js client runs in this process: pin it (every thread) to the client's CPU.
    spawnSync('taskset', ['-a', '-p', '-c', String(placement.client), String(process.pid)], { stdio: 'ignore' });
  }

  const peers: Peer[] = [];
  const notes: string[] = [];
  const stopAll = (): void => {
    for (const p of peers) if (p.child.exitCode === null) p.child.kill('SIGTERM');
  };
  let stats: Record<string, unknown> = {};
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.on(signal, () => {
      stopAll();
      rmSync(dir, { recursive: true, force: true });
      process.exit(code);
    });
  }
  try {
    peers.push(await startDiskless(dir));
    for (const extra of extraServers) peers.push(await startDiskless(dir, extra.name, extra.serve));
    for (const r of [await startTftpdHpa(dir), await startDnsmasq(dir)]) {
      if (typeof r === 'string') notes.push(r);
      else peers.push(r);
    }
    const loadStart = load();
    // Warm-up, unmeasured: JIT of the client and of the servers written in
    // JavaScript, page cache, both window sizes; every server alike.
    for (let i = 0; i < warmup; i++) {
      for (const peer of peers) {
        for (const job of jobs.filter((j) => j.file === 'f1m.bin' && j.concurrent === 1)) await runOnce(peer, job, dir, expected);
      }
    }
    const results: Record<string, Record<string, Measure>> = {};
    for (const job of jobs) {
      const runs = new Map<string, Run[]>(peers.map((p) => [p.name, []]));
      // Round-robin, each repetition led by the next server.
      for (let i = 0; i < repeat; i++) {
        for (let k = 0; k < peers.length; k++) {
          const peer = peers[(i + k) % peers.length]!;
          runs.get(peer.name)!.push(await runOnce(peer, job, dir, expected));
        }
      }
      results[job.name] = {};
      for (const [name, r] of runs) {
        const mbps = r.map((x) => x.mbps);
        results[job.name]![name] = {
          mbps: median(mbps), best: Math.max(...mbps), runs: mbps, windowsize: Math.min(...r.map((x) => x.windowsize)),
          serverUsPerBlock: perBlockUs(r, (x) => x.serverCpuSeconds), clientUsPerBlock: perBlockUs(r, (x) => x.clientCpuSeconds),
        };
      }
    }
    const loadEnd = load();

    const names = peers.map((p) => p.name);
    const others = names.filter((n) => n !== 'diskless' && !extraServers.some((e) => e.name === n));
    const lines: string[] = [];
    const ours = ['diskless', ...extraServers.map((e) => e.name)];
    const where = placement.server === undefined ? 'not pinned' : placement.client === placement.server
      ? `client and servers on CPU ${placement.server}` : `servers on CPU ${placement.server}, client on CPU ${placement.client}`;
    lines.push(`TFTP download, loopback, ${clientKind === 'c' ? 'C client (tftp-get.c)' : 'Node.js client (client.ts)'}, ${where}`);
    lines.push(`median of ${repeat} (round-robin, after ${warmup} warm-up rounds); MiB/s of payload (window granted in brackets)`);
    lines.push(`load average ${loadStart} at start, ${loadEnd} at end`);
    const ratioHeads = ours.map((n) => `${n} / best peer`.padStart(Math.max(22, n.length + 14)));
    lines.push(['job'.padEnd(50), ...names.map((n) => n.padStart(16)), ...ratioHeads].join(''));
    for (const job of jobs) {
      const row = results[job.name]!;
      const peerBest = Math.max(...others.map((n) => row[n]!.mbps));
      const ratios = ours.map((n, i) => (Number.isFinite(peerBest) ? (row[n]!.mbps / peerBest).toFixed(2) : 'n/a').padStart(ratioHeads[i]!.length));
      lines.push([
        job.name.padEnd(50),
        ...names.map((n) => `${row[n]!.mbps.toFixed(1)} [${row[n]!.windowsize}]`.padStart(16)),
        ...ratios,
      ].join(''));
    }
    // Server CPU per block: steadier than MiB/s on a shared machine. Lower is better; the ratio is best peer / ours.
    const how = usePerf ? 'perf stat -e task-clock -p, threads and forked children' : '/proc, clock ticks; children a server does not wait for are missed';
    lines.push('');
    lines.push(`server CPU microseconds per DATA block, all repetitions (${how})`);
    lines.push(['job'.padEnd(50), ...names.map((n) => n.padStart(16)), ...ratioHeads].join(''));
    for (const job of jobs) {
      const row = results[job.name]!;
      const us = (n: string): number | undefined => row[n]!.serverUsPerBlock;
      const peerBest = Math.min(...others.map((n) => us(n) ?? Infinity));
      const ratios = ours.map((n, i) => {
        const v = us(n);
        return (v !== undefined && v > 0 && Number.isFinite(peerBest) ? (peerBest / v).toFixed(2) : 'n/a').padStart(ratioHeads[i]!.length);
      });
      lines.push([job.name.padEnd(50), ...names.map((n) => (us(n)?.toFixed(2) ?? 'n/a').padStart(16)), ...ratios].join(''));
    }
    if (clientKind === 'c') {
      const clientUs = jobs.map((j) => {
        const v = names.map((n) => results[j.name]![n]!.clientUsPerBlock).filter((x): x is number => x !== undefined);
        return v.length > 0 ? `${Math.min(...v).toFixed(2)}-${Math.max(...v).toFixed(2)}` : 'n/a';
      });
      lines.push(`client CPU microseconds per block, per job: ${clientUs.join(', ')}`);
    }
    if (placement.note) notes.push(placement.note);
    for (const n of notes) lines.push(`note: ${n}`);
    // What the diskless servers' transfers did (bench/tftp/serve.ts prints it as it exits).
    await Promise.all(peers.map(stop));
    for (const p of peers) {
      const m = /^stats (.*)$/m.exec(p.child.errText());
      if (!m) continue;
      stats = { ...stats, [p.name]: JSON.parse(m[1]!) as unknown };
      lines.push(`${p.name}: ${m[1]}`);
    }
    process.stdout.write(lines.join('\n') + '\n');
    if (jsonOut) writeFileSync(jsonOut, JSON.stringify({
      repeat, warmup, client: clientKind, placement, serverCpuFrom: usePerf ? 'perf' : 'proc', loadavg: { start: loadStart, end: loadEnd }, results, notes, stats,
    }, null, 2));
  } finally {
    stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
