/**
 * Captures what real firmware sends when it network-boots, as fixtures for
 * the DHCP, TFTP and HTTP codecs: run by `scripts/capture-fixtures`, which
 * writes test/fixtures/pcap/<kind>.pcap, <kind>.golden.txt and README.md.
 *
 * Each firmware kind boots in a lab against dnsmasq (an ordinary DHCP and
 * TFTP server, deliberately without the iPXE speed-ups, so the captures show
 * the firmware's default behaviour) and Python's http.server, until iPXE has
 * run the boot script. QEMU's filter-dump records the NIC's traffic; the
 * fixture keeps only the boot requests (see trimCapture), the timings are
 * measured on the whole capture.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createLab, sweepStaleLabs, type Lab } from './lab.js';
import { FIRMWARE_KINDS, type FirmwareKind } from './lab-qemu.js';
import { prepareBootRoot, startDnsmasq, startHttpServer } from './lab-peers.js';
import {
  classifyFrames, decodeDhcp, decodeTftp, dumpPcap, readPcapFile, writePcap,
  DHCP_MESSAGE_TYPE_NAMES, type ClassifiedFrame, type DecodedDhcp, type Pcap, type PcapFrame,
} from './pcap.js';

export const CAPTURE_DEFAULTS = {
  /** A fixed subnet and fixed MACs keep the fixtures comparable between captures. */
  subnet: '10.77.77.0/24',
  macs: { 'bios-ipxe': '52:54:00:d1:00:01', 'uefi-ipxe': '52:54:00:d1:00:02', 'uefi-pxe': '52:54:00:d1:00:03' } as Record<FirmwareKind, string>,
  /** Per firmware kind, from QEMU start to the boot script's marker (TCG is slow). */
  bootTimeoutMs: 300_000,
  /** Packets of each TFTP transfer kept after its request: OACK, the first window of DATA and the ACKs. */
  tftpPacketsPerTransfer: 8,
  /** Time left after the marker for the last HTTP segments to be captured. */
  settleMs: 1_000,
} as const;

export const CAPTURE_MARKER = 'DL-CAPTURE-MARKER';

// ---------------------------------------------------------------- trimming

/**
 * Keeps what a codec test needs and nothing bulky: every DHCP packet (the
 * client's requests and the server's replies that explain them), every TFTP
 * request with the first packets of its transfer (not whole files), and the
 * first segment of each HTTP request and response. Frames after `until`
 * (seconds, pcap clock) are dropped.
 */
export function trimCapture(pcap: Pcap, until = Number.POSITIVE_INFINITY): PcapFrame[] {
  const kept: PcapFrame[] = [];
  const perTransfer = new Map<string, number>();
  const httpSeen = new Set<string>();
  for (const c of classifyFrames(pcap)) {
    if (c.frame.time > until) break;
    if (c.kind === 'dhcp') kept.push(c.frame);
    else if (c.kind === 'tftp' && c.udp) {
      const u = c.udp;
      if (u.dport === 69) {
        kept.push(c.frame);
        perTransfer.set(`${u.src}:${u.sport}`, 0);
        continue;
      }
      const key = perTransfer.has(`${u.src}:${u.sport}`) ? `${u.src}:${u.sport}` : `${u.dst}:${u.dport}`;
      const n = perTransfer.get(key) ?? 0;
      if (n < CAPTURE_DEFAULTS.tftpPacketsPerTransfer) kept.push(c.frame);
      perTransfer.set(key, n + 1);
    } else if (c.kind === 'http' && c.tcp) {
      const t = c.tcp;
      const flow = `${t.src}:${t.sport}>${t.dst}:${t.dport}:${t.payload.subarray(0, 4).toString('latin1')}`;
      if (!httpSeen.has(flow)) {
        httpSeen.add(flow);
        kept.push(c.frame);
      }
    }
  }
  return kept;
}

// ---------------------------------------------------------------- analysis

export interface DhcpClientPacket {
  time: number;
  /** 'firmware' until the client says it is iPXE (option 77 or 175). */
  stage: 'firmware' | 'ipxe';
  dhcp: DecodedDhcp;
}

export interface TftpRequest {
  time: number;
  file: string;
  options: Array<[string, string]>;
  /** What the server answered and the client then did, e.g. "OACK tsize=..., client ERROR 0". */
  exchange: string[];
  /** Largest DATA payload seen (the negotiated block size, when the file is big enough). */
  blockSize: number | null;
  dataPackets: number;
  bytes: number;
  /** Time of the transfer's last packet. */
  end: number;
}

export interface HttpRequest {
  time: number;
  head: string[];
}

export interface CaptureAnalysis {
  kind: FirmwareKind;
  startedAt: number;
  markerAt: number;
  frames: number;
  dhcp: DhcpClientPacket[];
  serverReplies: Array<{ time: number; type: number | null; xid: number }>;
  tftp: TftpRequest[];
  http: HttpRequest[];
}

function option(d: DecodedDhcp, code: number): Buffer | undefined {
  return d.options.find((o) => o.code === code)?.data;
}

export function analyseCapture(kind: FirmwareKind, pcap: Pcap, startedAt: number, markerAt: number): CaptureAnalysis {
  const classified = classifyFrames(pcap);
  const dhcp: DhcpClientPacket[] = [];
  const serverReplies: CaptureAnalysis['serverReplies'] = [];
  for (const c of classified) {
    if (c.kind !== 'dhcp' || !c.udp) continue;
    const d = decodeDhcp(c.udp.payload);
    if (!d) continue;
    if (d.op === 1) {
      const ipxe = option(d, 77)?.toString('latin1') === 'iPXE' || option(d, 175) !== undefined;
      dhcp.push({ time: c.frame.time, stage: ipxe ? 'ipxe' : 'firmware', dhcp: d });
    } else {
      serverReplies.push({ time: c.frame.time, type: d.messageType, xid: d.xid });
    }
  }
  return {
    kind, startedAt, markerAt, frames: pcap.frames.length, dhcp, serverReplies,
    tftp: tftpRequests(classified),
    http: classified
      .filter((c) => c.kind === 'http' && c.tcp && /^[A-Z]+ /.test(c.tcp.payload.toString('latin1', 0, 8)) && !c.tcp.payload.toString('latin1', 0, 5).startsWith('HTTP/'))
      .map((c) => ({ time: c.frame.time, head: c.tcp!.payload.toString('latin1').split('\r\n\r\n')[0]!.split('\r\n') })),
  };
}

function tftpRequests(classified: ClassifiedFrame[]): TftpRequest[] {
  const out: TftpRequest[] = [];
  const byClient = new Map<string, TftpRequest>();
  for (const c of classified) {
    if (c.kind !== 'tftp' || !c.udp) continue;
    const u = c.udp;
    const t = decodeTftp(u.payload);
    if (!t) continue;
    if (u.dport === 69 && t.opcode === 1) {
      const req: TftpRequest = { time: c.frame.time, file: t.filename!, options: t.options ?? [], exchange: [], blockSize: null, dataPackets: 0, bytes: 0, end: c.frame.time };
      out.push(req);
      byClient.set(`${u.src}:${u.sport}`, req);
      continue;
    }
    const fromClient = byClient.get(`${u.src}:${u.sport}`);
    const req = fromClient ?? byClient.get(`${u.dst}:${u.dport}`);
    if (!req) continue;
    req.end = c.frame.time;
    if (t.opcode === 3) {
      req.dataPackets += 1;
      req.bytes += t.dataLength!;
      req.blockSize = Math.max(req.blockSize ?? 0, t.dataLength!);
    }
    // The negotiation: everything up to the first DATA, and any error.
    if (t.opcode === 6) req.exchange.push(`server OACK ${t.options!.map(([k, v]) => `${k}=${v}`).join(' ')}`);
    else if (t.opcode === 5) req.exchange.push(`${fromClient ? 'client' : 'server'} ERROR ${t.errorCode} ${JSON.stringify(t.errorMessage)}`);
    else if (t.opcode === 4 && req.dataPackets === 0) req.exchange.push(`client ACK ${t.block}`);
  }
  return out;
}

// ---------------------------------------------------------------- README

const KIND_TITLES: Record<FirmwareKind, string> = {
  'bios-ipxe': 'SeaBIOS with the iPXE option ROM (`ipxe-qemu` efi-virtio.rom, legacy image)',
  'uefi-ipxe': 'OVMF with the iPXE option ROM (the same ROM\'s EFI driver)',
  'uefi-pxe': 'OVMF\'s own PXE client (no option ROM), then the iPXE it loads over TFTP',
};

const s = (seconds: number): string => `${seconds.toFixed(2)} s`;

function describeStage(packets: DhcpClientPacket[]): string[] {
  if (packets.length === 0) return [];
  const lines: string[] = [];
  const types = packets.map((p) => DHCP_MESSAGE_TYPE_NAMES[p.dhcp.messageType ?? 0] ?? '?').join(', ');
  lines.push(`  - packets: ${types}`);
  const first = packets[0]!.dhcp;
  const show = (code: number, label: string, fmt: (b: Buffer) => string): void => {
    const values = [...new Set(packets.map((p) => {
      const b = option(p.dhcp, code);
      return b === undefined ? '(absent)' : fmt(b);
    }))];
    lines.push(`  - ${label}: ${values.join(' / ')}`);
  };
  const str = (b: Buffer): string => `\`${b.toString('latin1')}\``;
  const u16s = (b: Buffer): string => Array.from({ length: b.length >> 1 }, (_, i) => b.readUInt16BE(i * 2)).join(', ');
  show(60, 'option 60 (vendor class)', str);
  show(93, 'option 93 (client arch)', u16s);
  show(94, 'option 94 (NII)', (b) => (b.length === 3 ? `type ${b[0]} v${b[1]}.${b[2]}` : b.toString('hex')));
  show(97, 'option 97 (machine id)', (b) => `${b.length} bytes, type ${b[0]}`);
  show(77, 'option 77 (user class)', str);
  show(175, 'option 175 (iPXE encapsulated)', (b) => {
    const subs: string[] = [];
    for (let off = 0; off + 2 <= b.length;) {
      const code = b[off]!;
      const len = b[off + 1]!;
      subs.push(`${code}=${b.subarray(off + 2, off + 2 + len).toString('hex')}`);
      off += 2 + len;
    }
    return subs.join(' ');
  });
  show(55, 'option 55 (parameter request list)', (b) => Array.from(b).join(' '));
  show(57, 'option 57 (max message size)', (b) => (b.length === 2 ? String(b.readUInt16BE(0)) : b.toString('hex')));
  show(61, 'option 61 (client id)', (b) => b.toString('hex'));
  lines.push(`  - option order in the first packet: ${first.options.map((o) => o.code).join(' ')}`);
  lines.push(`  - flags: ${[...new Set(packets.map((p) => `0x${p.dhcp.flags.toString(16).padStart(4, '0')}`))].join(' / ')}; secs: ${packets.map((p) => p.dhcp.secs).join(', ')}; xids: ${[...new Set(packets.map((p) => `0x${p.dhcp.xid.toString(16)}`))].join(', ')}`);
  return lines;
}

function firstOf(packets: DhcpClientPacket[], type: number): DhcpClientPacket | undefined {
  return packets.find((p) => p.dhcp.messageType === type);
}

export function timingLines(a: CaptureAnalysis): string[] {
  const t0 = a.startedAt / 1000;
  const lines: string[] = [];
  const at = (t: number): string => `+${s(t - t0)}`;
  for (const stage of ['firmware', 'ipxe'] as const) {
    const ps = a.dhcp.filter((p) => p.stage === stage);
    const discover = firstOf(ps, 1);
    const request = firstOf(ps, 3);
    if (!discover) continue;
    const offer = a.serverReplies.find((r) => r.type === 2 && r.xid === discover.dhcp.xid && r.time >= discover.time);
    const ack = request && a.serverReplies.find((r) => r.type === 5 && r.xid === request.dhcp.xid && r.time >= request.time);
    const parts = [`DISCOVER at ${at(discover.time)}`];
    if (offer) parts.push(`first OFFER ${at(offer.time)}`);
    parts.push(`${ps.filter((p) => p.dhcp.messageType === 1).length} DISCOVER in all`);
    if (request) parts.push(`REQUEST ${at(request.time)}${offer ? ` (${s(request.time - offer.time)} after the OFFER)` : ''}`);
    if (ack) parts.push(`ACK ${at(ack.time)} (${s(ack.time - discover.time)} from the first DISCOVER)`);
    lines.push(`- ${stage === 'firmware' ? 'firmware' : 'iPXE'} DHCP: ${parts.join(', ')}`);
  }
  for (const r of a.tftp) {
    lines.push(`- TFTP \`${r.file}\` (${r.options.map(([k, v]) => `${k}=${v}`).join(' ') || 'no options'}): request at ${at(r.time)}, ${r.dataPackets} DATA packets, ${r.bytes} bytes, done at ${at(r.end)} (${s(r.end - r.time)})`);
  }
  for (const h of a.http) lines.push(`- HTTP \`${h.head[0]}\` at ${at(h.time)}`);
  lines.push(`- boot script's marker on the serial console at ${at(a.markerAt / 1000)}`);
  return lines;
}

export function renderReadme(analyses: Array<CaptureAnalysis & { kept?: number }>, meta: { accel: string; versions: string[] }): string {
  const out: string[] = [
    '# Firmware packet captures',
    '',
    'Real packets from the PXE firmware and iPXE builds the project boots, captured by',
    '`scripts/capture-fixtures` (run as root; it rewrites this file, the `.pcap` files and the',
    '`.golden.txt` dumps). Each client boots in a lab network namespace against dnsmasq and',
    'Python\'s http.server until iPXE runs the boot script; QEMU\'s `filter-dump` records the',
    'NIC. dnsmasq runs with `--no-ping` but without iPXE option 175.176 and without router',
    'advertisements, so the timings show what firmware does against an ordinary DHCP server.',
    '',
    `Captured with: ${meta.versions.join('; ')}. Accelerator: ${meta.accel}.`,
    '',
    '## What each file holds',
    '',
    'The fixtures are trimmed: every DHCP packet (client requests and dnsmasq\'s replies), every',
    `TFTP read request with the first ${CAPTURE_DEFAULTS.tftpPacketsPerTransfer} packets of its transfer, and the first segment of each`,
    'HTTP request and response. ARP, IPv6 and TCP handshakes are left out. Each `<name>.golden.txt`',
    'is the readable dump of `<name>.pcap` made by `dumpPcap()` in `test/helpers/pcap.ts` (DHCP',
    'options by number with their values); `test/interop/lab-fixtures.test.ts` keeps the two in sync.',
    '',
    '| file | client | frames kept | of captured |',
    '| --- | --- | --- | --- |',
  ];
  for (const a of analyses) out.push(`| \`${a.kind}.pcap\` | ${KIND_TITLES[a.kind]} | ${a.kept ?? '?'} | ${a.frames} |`);
  out.push('');
  for (const a of analyses) {
    out.push(`## ${a.kind}: ${KIND_TITLES[a.kind]}`, '');
    for (const stage of ['firmware', 'ipxe'] as const) {
      const ps = a.dhcp.filter((p) => p.stage === stage);
      if (ps.length === 0) continue;
      out.push(`- DHCP from ${stage === 'firmware' ? 'the firmware' : 'iPXE'}:`, ...describeStage(ps));
    }
    for (const r of a.tftp) {
      out.push(`- TFTP RRQ \`${r.file}\` options: ${r.options.map(([k, v]) => `${k}=${v}`).join(' ') || '(none)'}`);
      if (r.exchange.length) out.push(`  - then: ${r.exchange.join('; ')}`);
      if (r.dataPackets) out.push(`  - ${r.dataPackets} DATA packets, largest ${r.blockSize} bytes, ${r.bytes} bytes in all`);
    }
    for (const h of a.http) out.push(`- HTTP request: \`${h.head.join(' | ')}\``);
    out.push('', 'Timings under the accelerator above, from QEMU start:', '', ...timingLines(a), '');
  }
  out.push(...QUIRK_NOTES, '');
  return out.join('\n');
}

/** Observations that hold across captures; the numbers above are regenerated, these are checked by hand. */
const QUIRK_NOTES = [
  '## Notes for docs/firmware-quirks.md',
  '',
  'Read from the captures above (the numbers in them are regenerated; these notes were checked',
  'by hand against the golden dumps and hold for the package versions named at the top).',
  '',
  '- **The iPXE ROM is iPXE from its first packet.** With QEMU\'s iPXE option ROM (`bios-ipxe`,',
  '  `uefi-ipxe`) the very first DISCOVER already carries option 77 `iPXE` and option 175, so a',
  '  server sees no separate PXE stage and must answer with the script URL at once. A real PC\'s',
  '  BIOS PXE ROM would be handed `undionly.kpxe`; no capture here shows such a ROM.',
  '- **Telling the stages apart:** OVMF\'s PXE sends option 60 `PXEClient:Arch:00007:UNDI:003000`',
  '  and option 94 UNDI 3.0, iPXE sends `...UNDI:003010` / 3.10 (UEFI) or `PXEClient:Arch:00000:UNDI:002001`',
  '  / 2.1 (BIOS). Only iPXE sends options 77, 175 and 61 (client id = 01 + MAC); option 93 is 0',
  '  (BIOS) or 7 (x64 UEFI) in both stages.',
  '- **iPXE option 175** holds 177 (bus id: 01 = PCI, then vendor 1af4, device 1000 of the NIC),',
  '  235 (version 1.0.0) and one flag per built-in feature (HTTP = 19, iSCSI = 17, EFI = 36,',
  '  PXE-EXT = 16 with value 2 on BIOS...), matching the "Features:" line iPXE prints.',
  '- **iPXE waits for proxyDHCP, then for IPv6.** Without option 175.176 = 1 in the OFFER, iPXE',
  '  sends a second DISCOVER about 1 s later and its REQUEST about 2 s after that (about 3 s of',
  '  DORA). Then it sits in "Configuring" until IPv6 autoconfiguration gives up (router',
  '  solicitations unanswered), about 13 s, before it fetches the script. Option 175.176 = 1 and',
  '  a router advertisement on the link remove both: the lab smoke test reaches the boot',
  '  script about 4 s after QEMU starts `bios-ipxe`.',
  '- **iPXE\'s `secs` field is not seconds** under TCG: 4, 10, 18 in packets about 0, 1 and 3 s',
  '  apart. Do not use it for anything. iPXE also puts options 54 and 50 last in its REQUEST.',
  '- **OVMF\'s PXE DHCP:** broadcast flag set, no client id, option 97 with an all-zero GUID',
  '  (QEMU without `-uuid`; `startQemu({ uuid })` sets one), a 35-entry parameter request list',
  '  (including 128-135 but not 175), maximum message size 1472 in the DISCOVER but 65280 in the',
  '  REQUEST, and about 4 s between the OFFER and its REQUEST (it collects offers, proxyDHCP',
  '  included, before choosing).',
  '- **OVMF\'s PXE TFTP** asks first with `tsize=0 blksize=1468 windowsize=4`, and on the OACK',
  '  (`blksize` and `tsize`) aborts with ERROR 8 "User aborted the transfer": a size probe, to be',
  '  treated as normal. It then asks again with `blksize=1468 windowsize=4` and no `tsize`. dnsmasq',
  '  2.90 does not implement `windowsize` (RFC 7440), so its OACK leaves it out and the transfer',
  '  runs lock-step; even so `snponly.efi` (174 KB) takes about 0.1 s.',
  '- **dnsmasq NUL-terminates option 67** (the dump shows `+NUL`); both OVMF and iPXE accept it.',
  '- The MACs are fixed per kind (52:54:00:d1:00:01..03) and the lab subnet is 10.77.77.0/24;',
  '  transaction ids and times change with every capture.',
];

// ---------------------------------------------------------------- the capture run

export interface CaptureOptions {
  outDir: string;
  kinds: FirmwareKind[];
  keep: boolean;
}

function packageVersions(): string[] {
  const names = ['qemu-system-x86', 'seabios', 'ovmf', 'ipxe', 'ipxe-qemu', 'dnsmasq-base'];
  const r = spawnSyncText('dpkg-query', ['-W', '-f=${Package} ${Version}\\n', ...names]);
  return r.split('\n').filter(Boolean);
}

function spawnSyncText(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? r.stdout : '';
}

async function captureOne(lab: Lab, kind: FirmwareKind, marker: string, log: (m: string) => void): Promise<{ pcap: Pcap; analysis: CaptureAnalysis; accel: string }> {
  const vm = await lab.startQemu({ firmware: kind, mac: CAPTURE_DEFAULTS.macs[kind] });
  log(`${kind}: QEMU pid ${vm.pid} (${vm.accel}), serial ${vm.serialLog}`);
  await vm.waitForSerial(new RegExp(`${marker} platform=\\S+ mac=${vm.mac}`), CAPTURE_DEFAULTS.bootTimeoutMs);
  const markerAt = Date.now();
  log(`${kind}: boot script ran after ${((markerAt - vm.startedAt) / 1000).toFixed(1)} s`);
  await new Promise((r) => setTimeout(r, CAPTURE_DEFAULTS.settleMs));
  await vm.stop();
  const pcap = readPcapFile(vm.pcap!);
  return { pcap, analysis: analyseCapture(kind, pcap, vm.startedAt, markerAt), accel: vm.accel };
}

export async function runCapture(options: CaptureOptions, log: (m: string) => void = (m) => process.stderr.write(`${m}\n`)): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('capture-fixtures needs root (network namespaces, tap devices)');
  const swept = sweepStaleLabs();
  if (swept.length) log(`removed stale lab namespaces: ${swept.join(' ')}`);
  mkdirSync(options.outDir, { recursive: true });
  const lab = await createLab({ subnet: CAPTURE_DEFAULTS.subnet, keepDir: options.keep });
  log(`lab ${lab.netns}, directory ${lab.dir}`);
  try {
    const root = prepareBootRoot(lab, { marker: CAPTURE_MARKER });
    const http = await startHttpServer(lab, { root: root.httpRoot });
    await startDnsmasq(lab, { tftpRoot: root.tftpRoot, bootScriptUrl: http.url(root.scriptName) });
    const analyses: Array<CaptureAnalysis & { kept: number }> = [];
    let accel = 'tcg';
    for (const kind of options.kinds) {
      const r = await captureOne(lab, kind, root.marker, log);
      accel = r.accel;
      const kept = trimCapture(r.pcap, r.analysis.markerAt / 1000 + CAPTURE_DEFAULTS.settleMs / 1000);
      const bytes = writePcap(kept, { linkType: r.pcap.linkType });
      writeFileSync(join(options.outDir, `${kind}.pcap`), bytes);
      const trimmed: Pcap = { linkType: r.pcap.linkType, snapLen: 65535, frames: kept.map((f, i) => ({ ...f, index: i + 1 })) };
      writeFileSync(join(options.outDir, `${kind}.golden.txt`), dumpPcap(trimmed, `${kind}.pcap`));
      analyses.push({ ...r.analysis, kept: kept.length });
      log(`${kind}: kept ${kept.length} of ${r.pcap.frames.length} frames (${bytes.length} bytes)`);
    }
    writeFileSync(join(options.outDir, 'README.md'), renderReadme(analyses, { accel, versions: packageVersions() }));
  } finally {
    const report = await lab.close();
    log(`lab closed: namespace removed=${report.namespaceRemoved}${options.keep ? `, kept ${lab.dir}` : ''}`);
  }
}

function parseArgs(argv: string[]): CaptureOptions {
  const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  const o: CaptureOptions = { outDir: join(repo, 'test', 'fixtures', 'pcap'), kinds: [...FIRMWARE_KINDS], keep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--keep') o.keep = true;
    else if (a === '--out') o.outDir = resolve(argv[++i] ?? '');
    else if (a === '--only') {
      const kinds = (argv[++i] ?? '').split(',');
      const bad = kinds.filter((k) => !FIRMWARE_KINDS.includes(k as FirmwareKind));
      if (bad.length) throw new Error(`unknown firmware kind ${bad.join(', ')}; known: ${FIRMWARE_KINDS.join(', ')}`);
      o.kinds = kinds as FirmwareKind[];
    } else throw new Error(`unknown argument ${a}; usage: capture-fixtures [--only kind,...] [--out dir] [--keep]`);
  }
  return o;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runCapture(parseArgs(process.argv.slice(2))).catch((e: unknown) => {
    process.stderr.write(`capture-fixtures: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  });
}
