/**
 * bench/boot/record-trace: records the NBD trace of one real boot, the
 * fixture test/fixtures/nbd-trace/debian12-bios-boot.csv (format and method
 * in that folder's README.md). The server is not touched: the trace comes
 * from the client's side of the wire.
 *
 *   1. the Debian 12 test image (from the cache, as the e2e tests get it) in
 *      a fresh catalogue, one ephemeral client;
 *   2. our whole server (demo.js --serve) in a lab namespace, full DHCP;
 *   3. a SeaBIOS + iPXE QEMU client (TCG) whose NIC traffic QEMU's
 *      filter-dump writes to a pcap, booted until DISKLESS-UP;
 *   4. the server stopped (the overlay closes and writes its map);
 *   5. the NBD connections in the pcap decoded (nbd-trace.ts), each read
 *      classified base/overlay by replaying the writes at the overlay's
 *      cluster size, and that replay checked against the overlay's own map;
 *   6. the requests up to the marker written as CSV, with a .meta.json.
 *
 * Time: filter-dump stamps frames with QEMU's virtual clock plus the whole
 * second the filter started, so frame times are aligned to the wall clock
 * through one anchor: the client's first DHCPDISCOVER in the pcap and the
 * moment our server recorded receiving it.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Store } from '../../src/state/store.js';
import { ClusterMap, ClusterState } from '../../src/storage/cow/cluster-map.js';
import { decodeHeader, HEADER_SIZE, MAP_FILE } from '../../src/storage/cow/format.js';
import { createLab } from '../../test/helpers/lab.js';
import { DISKLESS_UP_LINE, LAB_NBD_PORT, labServerConfig, startServerInLab, untilRecorded } from '../../test/helpers/lab-boot.js';
import { decodeDhcp, decodeTcp, decodeUdp, readPcapFile } from '../../test/helpers/pcap.js';
import { buildTestImage, prepareCatalogue } from '../../test/e2e/helpers/e2e.js';
import { classifyReads, decodeNbdCapture, OverlayModel, parseTraceCsv, summarizeTrace, toCsv, type Segment } from './nbd-trace.js';
import { firstMatch, LogClock } from './timeline.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export const RECORD_DEFAULTS = {
  image: 'debian12',
  name: 'debian12-bios-boot',
  mac: '52:54:00:be:0b:02',
  outDir: join(repoRoot, 'test', 'fixtures', 'nbd-trace'),
  bootMs: 10 * 60_000,
  reportMs: 30_000,
  memoryMiB: 1024,
  /** A boot moves a few hundred MB; frames are at most 1514 bytes (the tap has no offloads). */
  maxFrames: 5_000_000,
} as const;

const HELP = `Usage: bench/boot/record-trace [--out DIR] [--name NAME] [--keep-lab]

Boots the Debian 12 test image once (SeaBIOS + iPXE, QEMU TCG, 2-4 minutes)
through our server in a lab namespace, captures the client's NIC, and writes
the NBD requests up to DISKLESS-UP to DIR/NAME.csv and DIR/NAME.meta.json
(default ${RECORD_DEFAULTS.outDir}/${RECORD_DEFAULTS.name}.*).
`;

function say(msg: string): void {
  process.stderr.write(`[record-trace] ${msg}\n`);
}

function firstLine(command: string, args: string[]): string {
  const r = spawnSync(command, args, { encoding: 'utf8', timeout: 10_000 });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n').find((l) => l.trim() !== '')?.trim() ?? 'unknown';
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { out: { type: 'string' }, name: { type: 'string' }, 'keep-lab': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('record-trace needs root (network namespace, tap device)\n');
    return 2;
  }
  const outDir = resolve(values.out ?? RECORD_DEFAULTS.outDir);
  const name = values.name ?? RECORD_DEFAULTS.name;
  if (!/^[a-z0-9][a-z0-9.-]{0,80}$/.test(name)) throw new Error(`--name: lower-case letters, digits, dots and dashes, got ${JSON.stringify(name)}`);
  const mac = RECORD_DEFAULTS.mac;
  const tmp = mkdtempSync('/var/tmp/diskless-trace-');
  try {
    say(`image: the Debian 12 test image into ${tmp}`);
    const disk = join(tmp, 'disk.raw');
    const built = await buildTestImage(disk);
    const dataDir = join(tmp, 'data');
    const version = await prepareCatalogue(dataDir, RECORD_DEFAULTS.image, disk, [mac]);
    rmSync(disk, { force: true });

    const lab = await createLab({ keepDir: values['keep-lab'] === true });
    const store = Store.open(dataDir);
    try {
      const server = await startServerInLab(lab, labServerConfig(lab, dataDir, { dhcp: 'full' }));
      const pcap = join(lab.dir, 'client.pcap');
      say('booting SeaBIOS + iPXE with the NIC captured ...');
      const vm = await lab.startQemu({ firmware: 'bios-ipxe', mac, memory: RECORD_DEFAULTS.memoryMiB, pcap });
      const clock = new LogClock({ serial: vm.serialLog }).start();
      const up = await vm.waitForSerial(DISKLESS_UP_LINE, RECORD_DEFAULTS.bootMs);
      clock.stop();
      const markerMs = firstMatch(clock.chunks('serial'), DISKLESS_UP_LINE)?.t ?? Date.now();
      const kernel = firstMatch(clock.chunks('serial'), /Linux version (\S+)/)?.match[1] ?? 'unknown';
      const events = await untilRecorded(store, mac, 'os-up', RECORD_DEFAULTS.reportMs, vm.startedAt);
      await vm.stop();
      // The overlay is closed (and its map written) when the server stops.
      await lab.stop(server);
      say(`DISKLESS-UP ${up[1]} after ${((markerMs - vm.startedAt) / 1000).toFixed(1)} s; decoding ${pcap}`);

      const frames = readPcapFile(pcap, { maxFrames: RECORD_DEFAULTS.maxFrames }).frames;
      // Anchor: the first DHCPDISCOVER as captured and as our server recorded it.
      const discoverFrame = frames.find((f) => {
        const u = decodeUdp(f);
        return u !== null && u.dport === 67 && decodeDhcp(u.payload)?.messageType === 1;
      });
      const discoverEvent = events.find((e) => e.step === 'dhcp-discover');
      if (!discoverFrame || !discoverEvent) throw new Error('no DHCPDISCOVER to align the capture with');
      const shift = discoverEvent.timeMs / 1000 - discoverFrame.time;
      const segments: Segment[] = [];
      for (const f of frames) {
        const s = decodeTcp(f);
        if (!s || (s.sport !== LAB_NBD_PORT && s.dport !== LAB_NBD_PORT)) continue;
        segments.push({
          time: f.time + shift, src: s.src, sport: s.sport, dst: s.dst, dport: s.dport, seq: s.seq,
          syn: s.flags.includes('SYN'), fin: s.flags.includes('FIN'), rst: s.flags.includes('RST'), payload: s.payload,
        });
      }
      const decoded = decodeNbdCapture(segments, LAB_NBD_PORT);
      for (const s of decoded.sessions) if (s.error) throw new Error(`connection ${s.conn} (${s.client}): ${s.error}`);
      if (decoded.records.length === 0) throw new Error('the capture holds no NBD request');

      // The overlay's own map, to check the base/overlay replay against.
      const client = store.clients.get(mac)!;
      const overlay = store.overlays.forClient(client.id);
      if (!overlay) throw new Error(`client ${mac} has no overlay`);
      const mapBytes = readFileSync(join(dataDir, overlay.dir, MAP_FILE));
      const header = decodeHeader(mapBytes.subarray(0, HEADER_SIZE), MAP_FILE);
      const map = new ClusterMap(header.clusters, Buffer.from(mapBytes.subarray(header.mapOffset, header.mapOffset + header.mapLength)));
      const model = new OverlayModel(header.clusterSize, header.virtualSize);
      classifyReads(decoded.records, model);
      let modelOnly = 0;
      let mapOnly = 0;
      let mapNotBase = 0;
      for (let c = 0; c < header.clusters; c += 1) {
        const inMap = map.get(c) !== ClusterState.BASE;
        if (inMap) mapNotBase += 1;
        if (model.isOwn(c) && !inMap) modelOnly += 1;
        if (!model.isOwn(c) && inMap) mapOnly += 1;
      }
      say(`overlay check: ${model.ownCount()} clusters left the base by the replay, ${mapNotBase} by the overlay's map; ${modelOnly} only in the replay, ${mapOnly} only in the map`);

      const origin = vm.startedAt / 1000;
      const kept = decoded.records.filter((r) => r.t * 1000 <= markerMs);
      const csv = toCsv(kept, origin);
      const summary = summarizeTrace(parseTraceCsv(csv));
      mkdirSync(outDir, { recursive: true });
      writeFileSync(join(outDir, `${name}.csv`), csv);
      const meta = {
        description: 'NBD requests of one SeaBIOS + iPXE boot of the Debian 12 test image through diskless, power-on to DISKLESS-UP',
        recordedAt: new Date(vm.startedAt).toISOString(),
        image: {
          name: version.image, version: version.version, virtualSize: header.virtualSize, fsUuid: built.fsUuid, suite: built.suite,
          packages: built.packages, kernel, buildCacheKey: built.cacheKey,
        },
        client: { firmware: 'SeaBIOS + iPXE ROM (QEMU default efi-virtio.rom)', qemu: firstLine('qemu-system-x86_64', ['--version']), accel: vm.accel, memoryMiB: RECORD_DEFAULTS.memoryMiB, nic: 'virtio-net-pci' },
        overlay: {
          clusterSize: header.clusterSize,
          replayedClusters: model.ownCount(),
          mapClusters: mapNotBase,
          onlyInReplay: modelOnly,
          onlyInMap: mapOnly,
        },
        markerS: Math.round(markerMs - vm.startedAt) / 1000,
        rootSource: up[1],
        requestsAfterMarkerLeftOut: decoded.records.length - kept.length,
        connections: decoded.sessions.map((s) => ({ conn: s.conn, requests: s.requests })),
        timeAlignment: `frame time + ${shift.toFixed(6)} s (first DHCPDISCOVER frame to the server's dhcp-discover record)`,
        summary,
        commit: spawnSync('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim() || 'unknown',
      };
      writeFileSync(join(outDir, `${name}.meta.json`), JSON.stringify(meta, null, 2) + '\n');
      say(`${kept.length} requests up to the marker written to ${join(outDir, name)}.csv (${(csv.length / 1024).toFixed(0)} KiB)`);
      process.stdout.write(JSON.stringify({ summary, overlay: meta.overlay, markerS: meta.markerS }, null, 2) + '\n');
      return modelOnly + mapOnly === 0 ? 0 : 1;
    } finally {
      store.close();
      await lab.close();
      if (values['keep-lab']) say(`lab kept: ${lab.dir}`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
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
