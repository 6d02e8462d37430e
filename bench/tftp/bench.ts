/**
 * TFTP download benchmark: the diskless server against tftpd-hpa and
 * dnsmasq, in the same run, on loopback, all measured with the same client
 * (src/protocols/tftp/client.ts: it asks for windowsize, which no packaged
 * client here does together with blksize and timing). Run by hand:
 *
 *   npx tsc -p tsconfig.json && node dist/bench/tftp/bench.js [--repeat N] [--quick] [--json FILE]
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
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tftpGet } from '../../src/protocols/tftp/client.js';

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
  child: ChildProcess;
}

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const quick = args.includes('--quick');
const repeat = Number(flag('--repeat') ?? (quick ? 1 : 3));
const jsonOut = flag('--json');

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

function start(cmd: string, argv: string[]): ChildProcess {
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let errText = '';
  child.stderr?.on('data', (d: Buffer) => (errText += d.toString()).slice(-2000));
  child.on('exit', (code) => {
    if (code && code !== 0 && code !== null) process.stderr.write(`${cmd} exited ${code}: ${errText}\n`);
  });
  return child;
}

async function startDiskless(root: string): Promise<Peer> {
  const port = await freeUdpPort();
  const serve = join(dirname(fileURLToPath(import.meta.url)), 'serve.js');
  const child = start(process.execPath, [serve, root, String(port), HOST]);
  await waitReady(port, child, 'diskless');
  return { name: 'diskless', port, child };
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
  mbps: number;
  windowsize: number;
  seconds: number;
}

async function runJob(peer: Peer, job: Job, expected: Map<string, { size: number; sha: string }>): Promise<Measure> {
  const want = expected.get(job.file)!;
  const one = async (): Promise<number> => {
    const hash = createHash('sha256');
    const r = await tftpGet({
      host: HOST, port: peer.port, file: job.file, blksize: job.blksize, windowsize: job.windowsize, retransmitMs: 1000,
      onData: (chunk) => hash.update(chunk),
    });
    if (r.bytes !== want.size || hash.digest('hex') !== want.sha) throw new Error(`${peer.name}: ${job.file} arrived corrupted`);
    return r.windowsize;
  };
  // One unmeasured download first: file in the page cache, code paths warm (JIT), for every server alike.
  if (want.size <= 4 * MiB) await one();
  let best: Measure | undefined;
  for (let i = 0; i < repeat; i++) {
    const t0 = performance.now();
    const windows = await Promise.all(Array.from({ length: job.concurrent }, one));
    const seconds = (performance.now() - t0) / 1000;
    const mbps = (want.size * job.concurrent) / MiB / seconds;
    if (!best || mbps > best.mbps) best = { mbps, windowsize: Math.min(...windows), seconds };
  }
  return best!;
}

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

  const peers: Peer[] = [];
  const notes: string[] = [];
  const stopAll = (): void => {
    for (const p of peers) if (p.child.exitCode === null) p.child.kill('SIGTERM');
  };
  process.on('SIGINT', () => {
    stopAll();
    process.exit(130);
  });
  try {
    peers.push(await startDiskless(dir));
    for (const r of [await startTftpdHpa(dir), await startDnsmasq(dir)]) {
      if (typeof r === 'string') notes.push(r);
      else peers.push(r);
    }
    const results: Record<string, Record<string, Measure>> = {};
    for (const job of jobs) {
      results[job.name] = {};
      for (const peer of peers) results[job.name]![peer.name] = await runJob(peer, job, expected);
    }

    const names = peers.map((p) => p.name);
    const lines: string[] = [];
    lines.push(`TFTP download, loopback, best of ${repeat}; MB/s = MiB/s of payload (window granted in brackets)`);
    lines.push(['job'.padEnd(50), ...names.map((n) => n.padStart(16)), 'diskless / best peer'.padStart(22)].join(''));
    for (const job of jobs) {
      const row = results[job.name]!;
      const peerBest = Math.max(...names.filter((n) => n !== 'diskless').map((n) => row[n]!.mbps));
      const ratio = Number.isFinite(peerBest) ? (row.diskless!.mbps / peerBest).toFixed(2) : 'n/a';
      lines.push([
        job.name.padEnd(50),
        ...names.map((n) => `${row[n]!.mbps.toFixed(1)} [${row[n]!.windowsize}]`.padStart(16)),
        ratio.padStart(22),
      ].join(''));
    }
    for (const n of notes) lines.push(`note: ${n}`);
    process.stdout.write(lines.join('\n') + '\n');
    if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ repeat, results, notes }, null, 2));
  } finally {
    stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
