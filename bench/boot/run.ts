/**
 * bench/boot: power-on to multi-user of a disk-less Debian client, through
 * our server and through a reference stack of well-known servers (dnsmasq,
 * Python's http.server, nbd-server), on the same image in the same run.
 * Run by hand (bench/boot/README.md):
 *
 *   bench/boot/run [--rounds N] [--firmware bios|uefi|both] [--json] ...
 *
 * Each boot is a fresh lab (network namespace), a fresh server stack and a
 * fresh QEMU client (TCG), from power-on until the image prints
 * `DISKLESS-UP` on its serial console. Boots run one at a time; within a
 * round the stacks alternate which goes first, so a drift in the machine's
 * load does not always land on the same one.
 *
 * Reported per stack and firmware: the total, the phases as the serial
 * console shows them (the same patterns for both stacks), the servers' side
 * (our boot timeline; dnsmasq's and http.server's logs), and ours/reference
 * as a ratio of times (below 1: ours is faster).
 */
import { spawnSync } from 'node:child_process';
import { createReadStream, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { readVersionBoot } from '../../src/boot/service.js';
import { Store } from '../../src/state/store.js';
import { missingFirmwareFiles } from '../../test/helpers/lab-qemu.js';
import { buildTestImage, prepareCatalogue } from '../../test/e2e/helpers/e2e.js';
import { fmt, markdownTable } from '../lib/table.js';
import { bootDiskless, bootReference, FIRMWARE_KIND, FIRMWARES, referenceCommandLine, STACKS, type BenchContext, type BootSample, type Firmware, type StackId } from './stacks.js';
import { normalizeCommandLine, PHASES, SERIAL_MILESTONES } from './timeline.js';

export const BOOT_BENCH_DEFAULTS = {
  rounds: 1,
  image: 'debian12',
  mac: '52:54:00:be:0b:01',
  /** One subnet for every lab (one lab at a time), so both stacks' command lines can be equal. */
  subnet: '10.77.231.0/24',
  maxRounds: 20,
} as const;

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const REQUIRED = ['ip', 'qemu-system-x86_64', 'dnsmasq', 'nbd-server', 'python3'] as const;

interface Options {
  rounds: number;
  firmwares: Firmware[];
  stacks: StackId[];
  json: boolean;
  routerAdverts: boolean;
  outDir: string;
  tmpParent: string;
  keepLabs: boolean;
  /** Re-render this saved report (its summary and markdown) instead of booting. */
  fromJson?: string;
}

const HELP = `Usage: bench/boot/run [options]

Power-on to DISKLESS-UP of a disk-less Debian 12 client (QEMU, TCG), through
diskless and through a reference stack (dnsmasq, python3 http.server,
nbd-server copyonwrite), on the same image; one boot at a time, 2-4 minutes each.

  --rounds N            boots per stack and firmware (default ${BOOT_BENCH_DEFAULTS.rounds}, at most ${BOOT_BENCH_DEFAULTS.maxRounds})
  --firmware F          bios (SeaBIOS + iPXE ROM), uefi (OVMF + iPXE EFI ROM) or both (default)
  --stacks LIST         diskless,reference (default both)
  --router-adverts      IPv6 router advertisements on the link in both stacks (default off in both: iPXE
                        then waits 13-20 s for IPv6 at every boot, in both)
  --json                print the JSON report on stdout instead of the markdown one
  --out DIR             where the JSON and markdown results go (default bench/results)
  --tmp DIR             parent of the temporary directory with the catalogue (default /var/tmp)
  --keep-labs           keep each lab's directory (server logs, serial consoles)
  --from-json FILE      boot nothing: recompute the summary of a saved report and write its
                        .json and .md again (after a change to how boots are summed up)
  -h, --help            this text
`;

class UsageError extends Error {}

function parseOptions(argv: string[]): Options | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      rounds: { type: 'string' },
      firmware: { type: 'string' },
      stacks: { type: 'string' },
      'router-adverts': { type: 'boolean' },
      json: { type: 'boolean' },
      out: { type: 'string' },
      tmp: { type: 'string' },
      'keep-labs': { type: 'boolean' },
      'from-json': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return 'help';
  const rounds = values.rounds === undefined ? BOOT_BENCH_DEFAULTS.rounds : Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > BOOT_BENCH_DEFAULTS.maxRounds) throw new UsageError(`--rounds: a whole number from 1 to ${BOOT_BENCH_DEFAULTS.maxRounds}`);
  const fw = values.firmware ?? 'both';
  if (fw !== 'bios' && fw !== 'uefi' && fw !== 'both') throw new UsageError('--firmware: bios, uefi or both');
  const stacks = (values.stacks ?? STACKS.join(',')).split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = stacks.filter((s) => !STACKS.includes(s as StackId));
  if (unknown.length > 0 || stacks.length === 0) throw new UsageError(`--stacks: a list of ${STACKS.join(', ')}`);
  return {
    rounds,
    firmwares: fw === 'both' ? [...FIRMWARES] : [fw],
    stacks: STACKS.filter((s) => stacks.includes(s)),
    json: values.json === true,
    routerAdverts: values['router-adverts'] === true,
    outDir: resolve(values.out ?? join(repoRoot, 'bench', 'results')),
    tmpParent: resolve(values.tmp ?? '/var/tmp'),
    keepLabs: values['keep-labs'] === true,
    ...(values['from-json'] !== undefined ? { fromJson: resolve(values['from-json']) } : {}),
  };
}

function progress(msg: string): void {
  process.stderr.write(`[bench/boot] ${msg}\n`);
}

function have(command: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', command], { stdio: 'ignore' }).status === 0;
}

function firstLine(command: string, args: string[]): string {
  const r = spawnSync(command, args, { encoding: 'utf8', timeout: 10_000 });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n').find((l) => l.trim() !== '')?.trim() ?? 'unknown';
}

/** Reads a file whole (into the page cache), so the first boot does not pay for a cold cache the others skip. */
function warm(path: string): Promise<void> {
  return new Promise((ok, fail) => {
    createReadStream(path, { highWaterMark: 1 << 20 }).on('data', () => undefined).on('error', fail).on('end', () => ok());
  });
}

// ---------------------------------------------------------------- summary

export interface Cell {
  boots: number;
  failed: number;
  meanS?: number;
  minS?: number;
  maxS?: number;
  /** Mean seconds per phase (timeline.ts PHASES). */
  phases: Record<string, number>;
  /** Mean seconds from power-on per server-side event. */
  server: Record<string, number>;
}

export interface Summary {
  /** firmware -> stack -> cell */
  cells: Record<string, Record<string, Cell>>;
  /** firmware -> ours/reference of the mean totals (times: below 1 is faster). */
  ratios: Record<string, number | undefined>;
  /** firmware -> phase -> ours/reference of the phase means. */
  phaseRatios: Record<string, Record<string, number | undefined>>;
  /**
   * Per firmware (the EFI stub puts the image name first), whether every
   * boot's command line is the same once normalized; absent when fewer than
   * two stacks printed one.
   */
  commandLinesEqual: Record<string, boolean>;
}

/** Phases shorter than this (in both stacks) get no ratio: 50 ms polls make it noise. */
const MIN_PHASE_FOR_RATIO_S = 0.5;

const mean = (xs: number[]): number | undefined => (xs.length === 0 ? undefined : Math.round((xs.reduce((a, b) => a + b, 0) / xs.length) * 1000) / 1000);

function meanBy(samples: BootSample[], pick: (s: BootSample) => Record<string, number>): Record<string, number> {
  const keys = [...new Set(samples.flatMap((s) => Object.keys(pick(s))))];
  const out: Record<string, number> = {};
  for (const k of keys) {
    const m = mean(samples.map((s) => pick(s)[k]).filter((v): v is number => v !== undefined));
    if (m !== undefined) out[k] = m;
  }
  return out;
}

export function timeRatio(ours: number | undefined, reference: number | undefined): number | undefined {
  if (ours === undefined || reference === undefined || !(reference > 0) || !(ours >= 0)) return undefined;
  return Math.round((ours / reference) * 1000) / 1000;
}

export function summarize(samples: readonly BootSample[]): Summary {
  const cells: Summary['cells'] = {};
  const ratios: Summary['ratios'] = {};
  const phaseRatios: Summary['phaseRatios'] = {};
  for (const fw of FIRMWARES) {
    const row: Record<string, Cell> = {};
    for (const st of STACKS) {
      const all = samples.filter((s) => s.firmware === fw && s.stack === st);
      if (all.length === 0) continue;
      const ok = all.filter((s) => s.ok && s.totalS !== undefined);
      const totals = ok.map((s) => s.totalS!);
      row[st] = {
        boots: all.length,
        failed: all.length - ok.length,
        ...(totals.length ? { meanS: mean(totals)!, minS: Math.min(...totals), maxS: Math.max(...totals) } : {}),
        phases: meanBy(ok, (s) => s.phases),
        server: meanBy(ok, (s) => s.server),
      };
    }
    if (Object.keys(row).length === 0) continue;
    cells[fw] = row;
    ratios[fw] = timeRatio(row.diskless?.meanS, row.reference?.meanS);
    // A phase of a few hundredths of a second (the script) is all poll granularity: no ratio.
    const phaseRatio = (id: string): number | undefined => {
      const [a, b] = [row.diskless?.phases[id], row.reference?.phases[id]];
      return a !== undefined && b !== undefined && Math.max(a, b) >= MIN_PHASE_FOR_RATIO_S ? timeRatio(a, b) : undefined;
    };
    phaseRatios[fw] = Object.fromEntries(PHASES.map((p) => [p.id, phaseRatio(p.id)]));
  }
  const commandLinesEqual: Record<string, boolean> = {};
  for (const fw of FIRMWARES) {
    const withLine = samples.filter((s) => s.firmware === fw && s.commandLine);
    if (new Set(withLine.map((s) => s.stack)).size < 2) continue;
    commandLinesEqual[fw] = new Set(withLine.map((s) => normalizeCommandLine(s.commandLine!))).size === 1;
  }
  return { cells, ratios, phaseRatios, commandLinesEqual };
}

// ---------------------------------------------------------------- report

interface Report {
  startedAt: string;
  finishedAt: string;
  settings: Record<string, unknown>;
  host: Record<string, unknown>;
  versions: Record<string, string>;
  commit: string;
  imageUnchanged: boolean;
  samples: BootSample[];
  summary: Summary;
}

const ratioText = (r: number | undefined): string => (r === undefined ? '–' : `${r.toFixed(2)}`);

export function renderMarkdown(r: Report): string {
  const out: string[] = [];
  const s = r.summary;
  out.push(`# Boot benchmark: power-on to DISKLESS-UP, ours and a reference stack (${r.startedAt})`, '');
  out.push(`Image: ${String(r.settings.image)} (${String(r.settings.imageBytes)} bytes raw, root ${String(r.settings.root)}); QEMU ${r.versions.qemu}, TCG, ${String(r.settings.memoryMiB)} MiB; ${String(r.settings.rounds)} round(s); router advertisements ${r.settings.routerAdverts ? 'on' : 'off'} in both stacks.`);
  out.push(`Reference: dnsmasq ${r.versions.dnsmasq} (DHCP, TFTP), ${r.versions.python} http.server, nbd-server ${r.versions['nbd-server']} (copyonwrite = true, sparse_cow = false, max_threads = 1). Commit ${r.commit}; load average at start ${(r.host.loadavgStart as number[]).map((x) => x.toFixed(2)).join(' ')}.`, '');
  out.push('## Total (seconds, power-on to the marker on the serial console)', '');
  const totalRows: string[][] = [];
  for (const [fw, row] of Object.entries(s.cells)) {
    for (const [st, c] of Object.entries(row)) {
      totalRows.push([fw, st, `${c.boots - c.failed}/${c.boots}`, fmt(c.meanS, 1), fmt(c.minS, 1), fmt(c.maxS, 1), st === 'diskless' ? ratioText(s.ratios[fw]) : '']);
    }
  }
  out.push(markdownTable(['firmware', 'stack', 'ok boots', 'mean', 'min', 'max', 'ours/ref'], totalRows, [false, false, true, true, true, true, true]), '');
  out.push('ours/ref is a ratio of times: below 1.00 ours is faster.', '');

  out.push('## Where the time goes (serial console, mean seconds per phase)', '');
  const fws = Object.keys(s.cells);
  const headers = ['phase', ...fws.flatMap((fw) => [`${fw} ours`, `${fw} ref`, 'ours/ref'])];
  const rows = PHASES.map((p) => [p.label, ...fws.flatMap((fw) => [fmt(s.cells[fw]?.diskless?.phases[p.id], 1), fmt(s.cells[fw]?.reference?.phases[p.id], 1), ratioText(s.phaseRatios[fw]?.[p.id])])]);
  out.push(markdownTable(headers, rows, headers.map((_, i) => i > 0)), '');
  out.push(`Milestones: ${SERIAL_MILESTONES.map((m) => `${m.id} = ${m.label}`).join('; ')}.`, '');

  out.push('## The servers\' side (mean seconds from power-on)', '');
  const keys = ['dhcp-discover', 'dhcp-offer', 'dhcp-ack', 'script', 'kernel', 'initrd', 'nbd-connect', 'os-up'];
  const sh = ['event', ...fws.flatMap((fw) => [`${fw} ours`, `${fw} ref`])];
  out.push(markdownTable(sh, keys.map((k) => [k, ...fws.flatMap((fw) => [fmt(s.cells[fw]?.diskless?.server[k], 1), fmt(s.cells[fw]?.reference?.server[k], 1)])]), sh.map((_, i) => i > 0)), '');
  out.push('Ours: the boot timeline our server recorded (os-up = the client\'s report, just after the marker). Reference: dnsmasq\'s log (DHCP), http.server\'s access log (script, kernel, initrd; logged when the response starts), nbd-connect = the kernel sizing nbd0 on the console (nbd-server 3.24 logs only to syslog), os-up = the marker.', '');

  out.push('## Kernel command lines', '');
  const compared = Object.entries(s.commandLinesEqual);
  if (compared.length === 0) out.push('Not compared (fewer than two stacks printed one).');
  for (const [fw, equal] of compared) {
    out.push(equal
      ? `- ${fw}: equal on every boot apart from the NBD export name and the boot path in the OS-up URL.`
      : `- ${fw}: **the command lines differ beyond the export name:** see the samples in the JSON report.`);
  }
  for (const fw of Object.keys(s.cells)) {
    const ours = r.samples.find((x) => x.firmware === fw && x.stack === 'diskless' && x.commandLine)?.commandLine;
    const ref = r.samples.find((x) => x.firmware === fw && x.stack === 'reference' && x.commandLine)?.commandLine;
    if (ours) out.push('', `${fw}, ours as printed: \`${ours}\``);
    if (ref) out.push('', `${fw}, reference as printed: \`${ref}\``);
  }
  out.push('', `Image version file unchanged after all boots: ${r.imageUnchanged ? 'yes' : '**no**'}.`, '');

  out.push('## Boots', '');
  out.push(markdownTable(['round', 'firmware', 'stack', 'total s', 'load', 'result'],
    r.samples.map((x) => [String(x.round), x.firmware, x.stack, fmt(x.totalS, 1), x.load.toFixed(2), x.ok ? `ok (${x.rootSource ?? '?'})` : `failed: ${(x.error ?? 'no marker').replace(/\s+/g, ' ').slice(0, 160)}`]),
    [true, false, false, true, true, false]), '');
  return out.join('\n');
}

function stamp(d: Date): string {
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

function gitDescribe(): string {
  const head = spawnSync('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  if (head.status !== 0) return 'unknown';
  const dirty = spawnSync('git', ['-C', repoRoot, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' });
  return head.stdout.trim() + (dirty.stdout?.trim() ? ' (with uncommitted changes)' : '');
}

// ---------------------------------------------------------------- main

export async function main(argv: string[]): Promise<number> {
  let opts: Options | 'help';
  try {
    opts = parseOptions(argv);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (opts === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  if (opts.fromJson) {
    const report = JSON.parse(readFileSync(opts.fromJson, 'utf8')) as Report;
    if (!Array.isArray(report.samples)) throw new Error(`${opts.fromJson} is not a bench/boot report`);
    report.summary = summarize(report.samples);
    const md = renderMarkdown(report);
    writeFileSync(opts.fromJson, JSON.stringify(report, null, 2) + '\n');
    writeFileSync(opts.fromJson.replace(/\.json$/, '') + '.md', md);
    process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : md);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench/boot needs root (network namespaces, tap devices)\n');
    return 2;
  }
  const missing = [...REQUIRED.filter((c) => !have(c)), ...opts.firmwares.flatMap((f) => missingFirmwareFiles(FIRMWARE_KIND[f]))];
  if (missing.length > 0) {
    process.stderr.write(`missing: ${missing.join(', ')} (scripts/setup installs them)\n`);
    return 2;
  }

  const startedAt = new Date();
  const loadavgStart = loadavg();
  const tmpRoot = mkdtempSync(join(opts.tmpParent, 'diskless-bench-boot-'));
  let cleaned = false;
  const cleanup = (): void => {
    if (cleaned) return;
    cleaned = true;
    rmSync(tmpRoot, { recursive: true, force: true });
  };
  // The labs tear themselves down on exit and on signals (test/helpers/lab.ts); the catalogue goes here.
  process.once('exit', cleanup);

  try {
    progress(`image: the Debian 12 test image (from the cache in /var/cache/diskless-test, else built) into ${tmpRoot}`);
    const disk = join(tmpRoot, 'disk.raw');
    const built = await buildTestImage(disk);
    const dataDir = join(tmpRoot, 'data');
    const version = await prepareCatalogue(dataDir, BOOT_BENCH_DEFAULTS.image, disk, [BOOT_BENCH_DEFAULTS.mac]);
    rmSync(disk, { force: true });
    const store = Store.open(dataDir);
    const clientName = store.clients.get(BOOT_BENCH_DEFAULTS.mac)?.name ?? 'bench-pc';
    store.close();
    const vb = readVersionBoot(version.bootInfo);
    if (!vb.ok) throw new Error(`the image version cannot boot: ${vb.reason}`);
    const versionFile = join(dataDir, version.path);
    progress('warming the page cache (image version file, kernel, initramfs)');
    for (const f of [versionFile, join(dataDir, vb.boot.kernelFile), join(dataDir, vb.boot.initrdFile)]) await warm(f);
    const before = statSync(versionFile);

    const ctx: BenchContext = {
      dataDir, version, mac: BOOT_BENCH_DEFAULTS.mac, clientName, subnet: BOOT_BENCH_DEFAULTS.subnet,
      routerAdverts: opts.routerAdverts, keepLabs: opts.keepLabs, say: progress,
    };
    // Built before any boot, so a problem with it shows at once.
    const referenceLine = referenceCommandLine({ version, mac: BOOT_BENCH_DEFAULTS.mac, clientName }, 'SERVER');
    const samples: BootSample[] = [];
    // Boots done so far, on disk as they finish: a failure late in a long run does not lose them.
    mkdirSync(opts.outDir, { recursive: true });
    const name = `boot-${stamp(startedAt)}`;
    const partial = join(opts.outDir, `${name}.partial.json`);
    for (let round = 1; round <= opts.rounds; round += 1) {
      for (const fw of opts.firmwares) {
        // Alternate which stack goes first, round by round.
        const order = round % 2 === 1 ? opts.stacks : [...opts.stacks].reverse();
        for (const st of order) {
          progress(`round ${round}/${opts.rounds}: ${fw} through ${st} (load ${loadavg()[0]!.toFixed(2)}) ...`);
          let sample: BootSample;
          try {
            sample = st === 'diskless' ? await bootDiskless(ctx, fw, round) : await bootReference(ctx, fw, round);
          } catch (e) {
            sample = { stack: st, firmware: fw, round, ok: false, error: (e as Error).message.slice(0, 2000), startedAt: new Date().toISOString(), load: loadavg()[0]!, serial: {}, phases: {}, server: {} };
          }
          samples.push(sample);
          writeFileSync(partial, JSON.stringify({ startedAt: startedAt.toISOString(), samples }, null, 2) + '\n');
          progress(sample.ok
            ? `  ${fw} ${st}: DISKLESS-UP after ${fmt(sample.totalS, 1)} s (${Object.entries(sample.serial).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')})`
            : `  ${fw} ${st}: FAILED: ${sample.error ?? 'no marker'}`);
        }
      }
    }
    const after = statSync(versionFile);
    const report: Report = {
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      settings: {
        rounds: opts.rounds,
        firmwares: opts.firmwares.map((f) => `${f} (${FIRMWARE_KIND[f]})`),
        stacks: opts.stacks,
        routerAdverts: opts.routerAdverts,
        image: `${version.image} version ${version.version}`,
        imageBytes: after.size,
        root: vb.boot.root.uuid !== undefined ? `UUID=${vb.boot.root.uuid}` : `partition ${String(vb.boot.root.partition)}`,
        imageBuild: { cached: built.cached },
        memoryMiB: 1024,
        mac: BOOT_BENCH_DEFAULTS.mac,
        subnet: BOOT_BENCH_DEFAULTS.subnet,
        referenceCommandLine: referenceLine,
        cache: 'The image version file, kernel and initramfs are read whole before the first boot; both stacks serve the very same files, so both read a warm page cache.',
      },
      host: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', kernel: release(), node: process.version, loadavgStart, loadavgEnd: loadavg() },
      versions: {
        qemu: firstLine('qemu-system-x86_64', ['--version']).replace(/^QEMU emulator version /, ''),
        dnsmasq: firstLine('dnsmasq', ['--version']).replace(/^Dnsmasq version /, '').split(/\s+/)[0] ?? 'unknown',
        'nbd-server': firstLine('nbd-server', ['-V']).replace(/^This is nbd-server version /, ''),
        python: firstLine('/usr/bin/python3', ['--version']),
        diskless: (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version?: string }).version ?? 'unknown',
      },
      commit: gitDescribe(),
      imageUnchanged: after.mtimeMs === before.mtimeMs && after.size === before.size,
      samples,
      summary: summarize(samples),
    };
    const md = renderMarkdown(report);
    writeFileSync(join(opts.outDir, `${name}.json`), JSON.stringify(report, null, 2) + '\n');
    writeFileSync(join(opts.outDir, `${name}.md`), md);
    rmSync(partial, { force: true });
    process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : md);
    progress(`results: ${join(opts.outDir, name)}.{json,md} (${((Date.now() - startedAt.getTime()) / 1000).toFixed(0)} s)`);
    return samples.every((x) => x.ok) && report.imageUnchanged ? 0 : 1;
  } finally {
    cleanup();
  }
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
