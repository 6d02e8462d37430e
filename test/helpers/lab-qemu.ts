/**
 * QEMU clients for the boot lab, with Debian 12's firmware packages:
 *
 * - `bios-ipxe`: SeaBIOS (`seabios`) running the iPXE option ROM QEMU loads by
 *   default for the NIC (`efi-virtio.rom` / `efi-e1000.rom` from `ipxe-qemu`,
 *   which holds both a legacy PXE image and an EFI driver).
 * - `uefi-ipxe`: OVMF (`ovmf`, 4 MiB build, as pflash with a per-VM copy of
 *   the variable store) running the same ROM's EFI driver, so iPXE boots.
 * - `uefi-pxe`: OVMF with `romfile=` empty on the NIC, so OVMF's own network
 *   stack (VirtioNetDxe, PxeBcDxe) does PXE: DHCP, then TFTP of the boot file.
 *
 * QEMU runs inside the lab namespace (`ip netns exec`), because a tap device
 * can only be opened from the namespace it lives in.
 *
 * Quirks met (QEMU 7.2):
 * - The option ROM must be QEMU's default one, not the same file named with
 *   `romfile=`: only for its default ROM does QEMU patch the ROM header's PCI
 *   device id to the device's (0x1000 transitional virtio-net versus 0x1041
 *   in the file), and SeaBIOS skips a ROM whose id does not match.
 * - `filter-dump` writes the virtio-net header in front of every frame when
 *   the tap uses one (fixed in QEMU 10.0, "net/dump: Correctly compute
 *   Ethernet packet offset"), so the tap is opened with `vnet_hdr=off` and the
 *   pcap holds plain Ethernet frames.
 * - `-nodefaults` drops the default CD-ROM (OVMF tried it before the NIC);
 *   `-nographic` is still needed so SeaBIOS enables its serial console.
 */
import { accessSync, constants, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LAB_LIMITS, LabError, readLog, waitForLog, type ExitInfo, type Lab, type LabChild } from './lab.js';

export type FirmwareKind = 'bios-ipxe' | 'uefi-ipxe' | 'uefi-pxe';
export const FIRMWARE_KINDS: readonly FirmwareKind[] = ['bios-ipxe', 'uefi-ipxe', 'uefi-pxe'];
export type QemuNic = 'virtio-net-pci' | 'e1000';
export type Accel = 'tcg' | 'kvm';

export const QEMU_BINARY = 'qemu-system-x86_64';

/** Debian 12 locations of the firmware files. */
export const FIRMWARE_FILES = {
  seabios: '/usr/share/seabios/bios-256k.bin',
  ovmfCode: '/usr/share/OVMF/OVMF_CODE_4M.fd',
  ovmfVars: '/usr/share/OVMF/OVMF_VARS_4M.fd',
  /** QEMU's default option ROM per NIC model (QEMU searches /usr/lib/ipxe/qemu, from ipxe-qemu). */
  nicRom: { 'virtio-net-pci': '/usr/lib/ipxe/qemu/efi-virtio.rom', e1000: '/usr/lib/ipxe/qemu/efi-e1000.rom' },
} as const;

export const QEMU_DEFAULTS = {
  memoryMiB: 256,
  nic: 'virtio-net-pci' as QemuNic,
  /** How long the KVM probe may take before KVM is judged unusable. */
  kvmProbeTimeoutMs: 30_000,
} as const;

export interface QemuOptions {
  firmware: FirmwareKind;
  /** Default: 52:54:00 followed by bytes of the pid and a counter. */
  mac?: string;
  /** MiB of guest RAM; default 256 (enough for iPXE and OVMF, not for a Linux boot). */
  memory?: number;
  nic?: QemuNic;
  /** Where the serial console goes; default `<lab.dir>/<vm>.serial`. */
  serialLog?: string;
  /** pcap of the NIC's traffic (QEMU filter-dump); default `<lab.dir>/<vm>.pcap`; false for none. */
  pcap?: string | false;
  /** An existing tap of the lab; default: a new one. */
  tap?: string;
  /** 'auto' (the default, or DISKLESS_QEMU_ACCEL) uses KVM only when a probe boot works under it. */
  accel?: Accel | 'auto';
  /**
   * SMBIOS system UUID, which firmware sends as DHCP option 97. Without it
   * QEMU's is all zeros, and so is option 97 (as in the captured fixtures).
   */
  uuid?: string;
  extraArgs?: readonly string[];
}

export interface QemuVm {
  readonly name: string;
  readonly firmware: FirmwareKind;
  readonly child: LabChild;
  readonly pid: number;
  readonly mac: string;
  readonly tap: string;
  readonly serialLog: string;
  readonly pcap: string | null;
  readonly accel: Accel;
  /** Date.now() just before QEMU was started (pcap timestamps use the same clock). */
  readonly startedAt: number;
  readonly args: readonly string[];
  /** Waits for a pattern on the serial console (ANSI escapes and CRs removed). */
  waitForSerial(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
  /** Stops QEMU (SIGTERM, then SIGKILL). */
  stop(): Promise<ExitInfo>;
}

export interface QemuArgsInput {
  name: string;
  firmware: FirmwareKind;
  accel: Accel;
  mac: string;
  memory: number;
  nic: QemuNic;
  tap: string;
  serialLog: string;
  pcap: string | null;
  /** The per-VM copy of the OVMF variable store (UEFI kinds only). */
  varsFile: string | null;
  uuid: string | null;
  extraArgs: readonly string[];
}

/** The QEMU command line (without the binary) for one lab client. Pure. */
export function buildQemuArgs(o: QemuArgsInput): string[] {
  const nicProps = [o.nic, 'netdev=n0', `mac=${o.mac}`, 'bootindex=1'];
  // Empty romfile: no option ROM, so OVMF's own PXE client drives the NIC.
  if (o.firmware === 'uefi-pxe') nicProps.push('romfile=');
  const args = [
    '-name', o.name,
    '-machine', `q35,accel=${o.accel}`,
    '-cpu', 'max',
    '-smp', '1',
    '-m', String(o.memory),
    '-nodefaults',
    '-nographic',
    '-serial', `file:${o.serialLog}`,
    '-monitor', 'none',
    '-no-reboot',
    '-boot', 'n',
  ];
  if (o.uuid) args.push('-uuid', o.uuid);
  if (o.firmware !== 'bios-ipxe') {
    if (!o.varsFile) throw new LabError('LAB_MISSING_FILE', 'UEFI firmware needs a per-VM variable store');
    args.push(
      '-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${FIRMWARE_FILES.ovmfCode}`,
      '-drive', `if=pflash,format=raw,unit=1,file=${o.varsFile}`,
    );
  }
  args.push(
    '-netdev', `tap,id=n0,ifname=${o.tap},script=no,downscript=no,vnet_hdr=off`,
    '-device', nicProps.join(','),
  );
  if (o.pcap) args.push('-object', `filter-dump,id=dump0,netdev=n0,file=${o.pcap}`);
  args.push(...o.extraArgs);
  return args;
}

/** Firmware files a kind needs that are not installed. */
export function missingFirmwareFiles(kind: FirmwareKind, nic: QemuNic = QEMU_DEFAULTS.nic): string[] {
  const need: string[] = [];
  if (kind === 'bios-ipxe') need.push(FIRMWARE_FILES.seabios, FIRMWARE_FILES.nicRom[nic]);
  if (kind === 'uefi-ipxe') need.push(FIRMWARE_FILES.ovmfCode, FIRMWARE_FILES.ovmfVars, FIRMWARE_FILES.nicRom[nic]);
  if (kind === 'uefi-pxe') need.push(FIRMWARE_FILES.ovmfCode, FIRMWARE_FILES.ovmfVars);
  return need.filter((f) => !existsSync(f));
}

// ---------------------------------------------------------------- accelerator

const PROBE_CACHE = join(tmpdir(), 'diskless-qemu-accel.json');
let accelProbe: Promise<Accel> | null = null;

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

/**
 * KVM is used only if it is really usable: on some hosts /dev/kvm exists
 * but iPXE and OVMF die with emulation failures under it. The probe boots
 * SeaBIOS with the iPXE ROM under KVM, with the NIC on a QEMU hub port that
 * leads nowhere (no host network), and requires iPXE to open the NIC. The
 * answer is cached per host boot so each test process does not repeat it.
 */
export function resolveAccel(preference: Accel | 'auto' = (process.env.DISKLESS_QEMU_ACCEL as Accel | undefined) ?? 'auto'): Promise<Accel> {
  if (preference === 'tcg' || preference === 'kvm') return Promise.resolve(preference);
  accelProbe ??= probeKvm();
  return accelProbe;
}

async function probeKvm(): Promise<Accel> {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return 'tcg';
  }
  const id = bootId();
  try {
    const cached = JSON.parse(readFileSync(PROBE_CACHE, 'utf8')) as { bootId?: string; accel?: Accel };
    if (cached.bootId === id && (cached.accel === 'kvm' || cached.accel === 'tcg')) return cached.accel;
  } catch {
    // no cache yet
  }
  const dir = mkdtempSync(join(tmpdir(), 'dl-kvm-probe-'));
  const serial = join(dir, 'probe.serial');
  const child = spawn(QEMU_BINARY, [
    '-machine', 'q35,accel=kvm', '-cpu', 'max', '-m', '128', '-nodefaults', '-nographic',
    '-serial', `file:${serial}`, '-monitor', 'none', '-no-reboot', '-boot', 'n',
    '-netdev', 'hubport,id=n0,hubid=0', '-device', 'virtio-net-pci,netdev=n0',
  ], { stdio: 'ignore' });
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.on('error', () => resolve({ code: null, signal: null }));
  });
  let accel: Accel = 'tcg';
  try {
    await waitForLog(serial, /Configuring \(net0/, { timeoutMs: QEMU_DEFAULTS.kvmProbeTimeoutMs, process: { exited } });
    accel = 'kvm';
  } catch {
    accel = 'tcg';
  } finally {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
  try {
    writeFileSync(PROBE_CACHE, JSON.stringify({ bootId: id, accel }));
  } catch {
    // a cache is an optimisation
  }
  return accel;
}

// ---------------------------------------------------------------- starting a VM

let vmCounter = 0;

function defaultMac(n: number): string {
  const b = [(process.pid >> 8) & 0xff, process.pid & 0xff, n & 0xff];
  return `52:54:00:${b.map((x) => x.toString(16).padStart(2, '0')).join(':')}`;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export async function startQemuInLab(lab: Lab, options: QemuOptions): Promise<QemuVm> {
  vmCounter += 1;
  const nic = options.nic ?? QEMU_DEFAULTS.nic;
  const missing = missingFirmwareFiles(options.firmware, nic);
  if (missing.length > 0) throw new LabError('LAB_MISSING_FILE', `${options.firmware} needs ${missing.join(', ')} (scripts/setup installs them)`);
  const mac = (options.mac ?? defaultMac(vmCounter)).toLowerCase();
  if (!MAC_RE.test(mac)) throw new LabError('LAB_COMMAND_FAILED', `bad MAC ${options.mac}`);
  if (options.uuid !== undefined && !UUID_RE.test(options.uuid)) throw new LabError('LAB_COMMAND_FAILED', `bad UUID ${options.uuid}`);
  const memory = options.memory ?? QEMU_DEFAULTS.memoryMiB;
  if (!Number.isInteger(memory) || memory < 64 || memory > 16_384) throw new LabError('LAB_COMMAND_FAILED', `memory ${memory} MiB is not in 64..16384`);
  const name = `vm${vmCounter}-${options.firmware}`;
  const tap = options.tap ?? (await lab.addTap());
  const serialLog = options.serialLog ?? join(lab.dir, `${name}.serial`);
  const pcap = options.pcap === false ? null : options.pcap ?? join(lab.dir, `${name}.pcap`);
  let varsFile: string | null = null;
  if (options.firmware !== 'bios-ipxe') {
    // OVMF writes its boot entries into the variable store: each VM gets a fresh copy.
    varsFile = join(lab.dir, `${name}-vars.fd`);
    copyFileSync(FIRMWARE_FILES.ovmfVars, varsFile);
  }
  const accel = await resolveAccel(options.accel ?? ((process.env.DISKLESS_QEMU_ACCEL as Accel | undefined) ?? 'auto'));
  const args = buildQemuArgs({
    name: `${lab.netns}-${name}`, firmware: options.firmware, accel, mac, memory, nic, tap, serialLog, pcap, varsFile,
    uuid: options.uuid ?? null,
    extraArgs: options.extraArgs ?? [],
  });
  const startedAt = Date.now();
  const child = lab.spawn(QEMU_BINARY, args, { logFile: join(lab.dir, `${name}.qemu.log`) });
  if (child.pid === undefined) throw new LabError('LAB_COMMAND_FAILED', `could not start ${QEMU_BINARY}`);
  const pid = child.pid;
  return {
    name, firmware: options.firmware, child, pid, mac, tap, serialLog, pcap, accel, startedAt, args,
    waitForSerial: async (pattern, timeoutMs) => {
      try {
        return await waitForLog(serialLog, pattern, { timeoutMs, process: child });
      } catch (e) {
        // QEMU's own complaint (bad option, tap busy) is in its log, not on the serial console.
        if (e instanceof LabError && e.code === 'LAB_PROCESS_EXITED') {
          throw new LabError('LAB_PROCESS_EXITED', `${e.message}\nQEMU said: ${readLog(child.logFile).slice(-LAB_LIMITS.tailChars)}`);
        }
        throw e;
      }
    },
    stop: () => lab.stop(child),
  };
}
