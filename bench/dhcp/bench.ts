/**
 * DHCP benchmark: whole DORA exchanges per second against the diskless DHCP
 * server and dnsmasq, each in its turn inside a network namespace this bench
 * creates and removes. Run by hand, as root (bench/README.md, bench/dhcp/README.md):
 *
 *   npx tsc -p tsconfig.json && node dist/bench/dhcp/bench.js [--seconds 5] [--rounds 2]
 *       [--concurrency 64] [--macs 20000] [--servers diskless,dnsmasq] [--json FILE]
 *
 * Topology: namespace S holds one end of a veth pair (10.77.0.1/16) and the
 * server; namespace C holds the other end (10.77.0.2/16) and
 * bench/dhcp/load-client.ts. Nothing is bound to a host interface. Both
 * servers hand out 10.77.1.0 - 10.77.254.254 with a one-hour lease and a
 * boot file, keep leases in memory (dnsmasq `--leasefile-ro`, ours an
 * InMemoryLeaseStore) and do not ping before offering (dnsmasq `--no-ping`;
 * ours never does). Servers alternate within each round so background load
 * spreads over both.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ProcessRegistry, sleep, treeCpuSeconds } from '../lib/proc.js';
import { fmt, fmtInt, markdownTable } from '../lib/table.js';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
};
const SECONDS = Number(opt('seconds', '5'));
const ROUNDS = Number(opt('rounds', '2'));
const CONCURRENCY = opt('concurrency', '64');
const MACS = opt('macs', '20000');
const SERVERS = opt('servers', 'diskless,dnsmasq').split(',');
const JSON_OUT = opt('json', '');
const DNSMASQ = '/usr/sbin/dnsmasq';

const tag = String(process.pid % 100000);
const NS_S = `dlb-dhcp-s-${tag}`;
const NS_C = `dlb-dhcp-c-${tag}`;
const VETH_S = `dlbs${tag}`;
const VETH_C = `dlbc${tag}`;
const SERVER_IP = '10.77.0.1';
const CLIENT_IP = '10.77.0.2';
const SUBNET = '10.77.0.0/16';
const RANGE = ['10.77.1.0', '10.77.254.254'] as const;

const registry = new ProcessRegistry();
const work = mkdtempSync(join(tmpdir(), 'dlb-dhcp-'));

function ip(...a: string[]): void {
  const r = spawnSync('ip', a, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${a.join(' ')}: ${r.stderr.trim()}`);
}

function setupNetwork(): void {
  ip('netns', 'add', NS_S);
  ip('netns', 'add', NS_C);
  ip('link', 'add', VETH_S, 'type', 'veth', 'peer', 'name', VETH_C);
  ip('link', 'set', VETH_S, 'netns', NS_S);
  ip('link', 'set', VETH_C, 'netns', NS_C);
  ip('-n', NS_S, 'addr', 'add', `${SERVER_IP}/16`, 'dev', VETH_S);
  ip('-n', NS_C, 'addr', 'add', `${CLIENT_IP}/16`, 'dev', VETH_C);
  for (const [ns, dev] of [[NS_S, VETH_S], [NS_C, VETH_C]] as const) {
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', ns, 'link', 'set', dev, 'up');
  }
}

function teardownNetwork(): void {
  // Deleting a namespace deletes the veth end in it, and with it the pair.
  for (const ns of [NS_S, NS_C]) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
}

function inNs(ns: string, cmd: string[], stdio: 'pipe' | 'ignore' = 'pipe'): ChildProcess {
  // `ip netns exec` enters the namespace and execs the command: the pid is the command's.
  const child = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['ignore', stdio, stdio] });
  if (child.pid) registry.add(child.pid);
  return child;
}

async function startServer(name: string): Promise<ChildProcess> {
  if (name === 'diskless') {
    const child = inNs(NS_S, [
      process.execPath,
      join(here, 'serve.js'),
      '--interface', VETH_S,
      '--address', SERVER_IP,
      '--subnet', SUBNET,
      '--range', `${RANGE[0]}-${RANGE[1]}`,
    ]);
    const ready = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 10_000);
      child.stdout!.on('data', (d: Buffer) => {
        if (d.toString().includes('ready')) {
          clearTimeout(timer);
          resolve(true);
        }
      });
      child.on('exit', () => resolve(false));
    });
    child.stderr!.on('data', (d: Buffer) => process.stderr.write(`[diskless] ${d}`));
    if (!ready) throw new Error('the diskless DHCP server did not start');
    return child;
  }
  if (name === 'dnsmasq') {
    if (!existsSync(DNSMASQ)) throw new Error(`${DNSMASQ} is not installed`);
    const child = inNs(NS_S, [
      DNSMASQ,
      '--keep-in-foreground',
      '--conf-file=/dev/null',
      '--port=0',
      `--interface=${VETH_S}`,
      '--bind-interfaces',
      `--dhcp-range=${RANGE[0]},${RANGE[1]},255.255.0.0,1h`,
      '--dhcp-lease-max=100000',
      '--dhcp-authoritative',
      '--dhcp-boot=undionly.kpxe',
      '--no-ping',
      '--leasefile-ro',
      `--pid-file=${join(work, 'dnsmasq.pid')}`,
      '--user=root',
      '--log-facility=-',
      '--quiet-dhcp',
    ]);
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    await sleep(700);
    if (child.exitCode !== null) throw new Error(`dnsmasq exited: ${err.trim()}`);
    return child;
  }
  throw new Error(`unknown server ${name}`);
}

interface LoadResult {
  exchanges: number;
  failed: number;
  naks: number;
  seconds: number;
  perSecond: number;
  p50ms: number | null;
  p99ms: number | null;
}

async function runLoad(seed: number): Promise<LoadResult> {
  const child = inNs(NS_C, [
    process.execPath,
    join(here, 'load-client.js'),
    '--bind', CLIENT_IP,
    '--seconds', String(SECONDS),
    '--concurrency', CONCURRENCY,
    '--macs', MACS,
    '--mac-seed', String(seed),
  ]);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  if (child.pid) await registry.stop(child.pid);
  if (code !== 0) throw new Error(`load client failed (${code}): ${err.trim()}`);
  return JSON.parse(out.trim().split('\n').at(-1)!) as LoadResult;
}

interface Row {
  server: string;
  round: number;
  result?: LoadResult;
  cpuSeconds?: number;
  error?: string;
}

const rows: Row[] = [];
let cleaning = false;
async function cleanup(): Promise<void> {
  if (cleaning) return;
  cleaning = true;
  await registry.stopAll();
  teardownNetwork();
  rmSync(work, { recursive: true, force: true });
}
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    registry.killAllNow();
    teardownNetwork();
    process.exit(130);
  });
}

try {
  if (process.getuid?.() !== 0) throw new Error('the DHCP bench needs root (network namespaces)');
  setupNetwork();
  for (let round = 1; round <= ROUNDS; round++) {
    const order = round % 2 === 1 ? SERVERS : [...SERVERS].reverse();
    for (const name of order) {
      const row: Row = { server: name, round };
      rows.push(row);
      let server: ChildProcess | undefined;
      try {
        server = await startServer(name);
        const cpu0 = treeCpuSeconds(server.pid!);
        // A fresh MAC set per run, so no server sees clients the other one leased.
        row.result = await runLoad(round * 10 + SERVERS.indexOf(name));
        const cpu1 = treeCpuSeconds(server.pid!);
        if (cpu0 !== undefined && cpu1 !== undefined) row.cpuSeconds = cpu1 - cpu0;
      } catch (e) {
        row.error = (e as Error).message;
      } finally {
        if (server?.pid) await registry.stop(server.pid);
      }
      console.error(`[bench/dhcp] round ${round} ${name}: ${row.error ?? `${fmt(row.result!.perSecond, 0)} exchanges/s`}`);
    }
  }
} catch (e) {
  console.error(`[bench/dhcp] ${(e as Error).message}`);
  process.exitCode = 1;
} finally {
  await cleanup();
}

// Report: the mean over rounds per server, and the ratio to dnsmasq.
const summary = SERVERS.map((name) => {
  const ok = rows.filter((r) => r.server === name && r.result);
  const mean = (f: (r: Row) => number | undefined): number | undefined => {
    const v = ok.map(f).filter((x): x is number => x !== undefined);
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : undefined;
  };
  return {
    name,
    runs: ok.length,
    perSecond: mean((r) => r.result!.perSecond),
    p50: mean((r) => r.result!.p50ms ?? undefined),
    p99: mean((r) => r.result!.p99ms ?? undefined),
    failed: ok.reduce((n, r) => n + r.result!.failed, 0),
    cpuPerK: mean((r) => (r.cpuSeconds !== undefined && r.result!.exchanges > 0 ? (r.cpuSeconds / r.result!.exchanges) * 1000 : undefined)),
    error: rows.find((r) => r.server === name && r.error)?.error,
  };
});
const base = summary.find((s) => s.name === 'dnsmasq')?.perSecond;
const table = markdownTable(
  ['server', 'runs', 'DORA/s', '× dnsmasq', 'p50 ms', 'p99 ms', 'failed', 'server CPU s per 1000'],
  summary.map((s) => [
    s.name,
    String(s.runs),
    fmtInt(s.perSecond),
    s.perSecond !== undefined && base ? `${(s.perSecond / base).toFixed(2)}×` : '–',
    fmt(s.p50, 2),
    fmt(s.p99, 2),
    String(s.failed),
    fmt(s.cpuPerK, 3),
  ]),
  [false, true, true, true, true, true, true, true],
);
console.log(`DHCP DORA exchanges, ${SECONDS} s x ${ROUNDS} rounds, ${CONCURRENCY} in flight, ${MACS} MACs per run\n`);
console.log(table);
for (const s of summary) if (s.error) console.log(`\n${s.name}: ${s.error}`);
if (JSON_OUT) writeFileSync(JSON_OUT, JSON.stringify({ seconds: SECONDS, rounds: ROUNDS, rows, summary }, null, 2));
