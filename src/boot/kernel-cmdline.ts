/**
 * The kernel command line that boots an image with its root on our NBD
 * server. Two initramfs flavours read different arguments:
 *
 * - initramfs-tools (Debian, Ubuntu) with nbd-client's hook
 *   (/usr/share/initramfs-tools/scripts/local-top/nbd): only the three-field
 *   form `nbdroot=SERVER,EXPORT,nbd0` names the device, which lets
 *   `root=UUID=...` work; it connects to the default port 10809. The
 *   two-field form reads its second field as a port (docs/firmware-quirks.md).
 * - dracut's nbd module: `root=nbd:SERVER:PORT/EXPORT` plus `rd.neednet=1`.
 *
 * The network: iPXE already holds an address from DHCP, so the script passes
 * it on with `ip=` (client:server:gateway:netmask:hostname:device:autoconf)
 * and names the boot NIC by MAC with `BOOTIF=01-aa-bb-...`; both initramfs
 * flavours then configure that NIC without a second DHCP exchange. Values
 * written as `${...}` are iPXE settings expanded by iPXE itself.
 */
import { BootError } from './errors.js';

export type InitramfsFlavour = 'initramfs-tools' | 'dracut';

/** The NBD port Debian's initramfs hook connects to when nbdroot names none. */
export const NBD_DEFAULT_PORT = 10809;

export interface NbdRoot {
  server: string;
  port: number;
  exportName: string;
}

export interface CommandLineOptions {
  flavour: InitramfsFlavour;
  nbd: NbdRoot;
  /** The root file system: by UUID (preferred), or a partition number of the NBD disk (0 = whole disk). */
  root: { uuid: string } | { partition: number };
  /**
   * 'ipxe': the address iPXE got, as iPXE variables (for scripts).
   * 'dhcp': the initramfs asks DHCP again.
   */
  network: 'ipxe' | 'dhcp';
  /** Initrd file name the EFI stub loads (UEFI needs it; BIOS ignores it). */
  initrdName?: string;
  consoles?: string[];
  hostname?: string;
  /** Extra arguments, image's then client's, appended in order. */
  extra?: string[];
}

/** Characters that would split or re-quote an argument on the command line or in an iPXE script. */
const UNSAFE = /[\s"'`$\\;|&<>(){}#]/;

export function assertSafeToken(what: string, value: string): string {
  if (value.length === 0 || value.length > 255 || UNSAFE.test(value) || /[\x00-\x1f\x7f]/.test(value)) {
    throw new BootError('BOOT_UNSAFE_VALUE', `${what} ${JSON.stringify(value)} cannot be placed on a kernel command line`);
  }
  return value;
}

export function kernelCommandLine(o: CommandLineOptions): string {
  const server = assertSafeToken('NBD server', o.nbd.server);
  const exportName = assertSafeToken('export name', o.nbd.exportName);
  if (!Number.isInteger(o.nbd.port) || o.nbd.port < 1 || o.nbd.port > 65535) {
    throw new BootError('BOOT_UNSAFE_VALUE', `NBD port ${o.nbd.port} is not a TCP port`);
  }
  const args: string[] = [];
  if (o.initrdName) args.push(`initrd=${assertSafeToken('initrd name', o.initrdName)}`);
  for (const c of o.consoles ?? []) args.push(`console=${assertSafeToken('console', c)}`);

  const hostname = o.hostname ? assertSafeToken('host name', o.hostname) : '';
  if (o.network === 'ipxe') {
    // ip=<client>:<server>:<gateway>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>
    // The device stays empty: BOOTIF names the NIC by MAC.
    args.push(`ip=\${ip}::\${gateway}:\${netmask}:${hostname}::off:\${dns}`, 'BOOTIF=01-${mac:hexhyp}');
  } else {
    args.push('ip=dhcp');
  }

  let rootArg: string;
  if ('uuid' in o.root) {
    rootArg = `root=UUID=${assertSafeToken('root UUID', o.root.uuid)}`;
  } else {
    const p = o.root.partition;
    if (!Number.isInteger(p) || p < 0 || p > 128) throw new BootError('BOOT_NO_ROOT', `partition ${p} is not a partition number`);
    rootArg = p === 0 ? 'root=/dev/nbd0' : `root=/dev/nbd0p${p}`;
  }

  if (o.flavour === 'initramfs-tools') {
    if (o.nbd.port !== NBD_DEFAULT_PORT) {
      // SERVER:PORT/EXPORT is the only form with a port, and it cannot name the
      // device, so it needs root=/dev/nbd0pN rather than root=UUID=.
      if ('uuid' in o.root) {
        throw new BootError('BOOT_NO_ROOT', `initramfs-tools' nbd hook can use root=UUID only on port ${NBD_DEFAULT_PORT}; give a partition number instead`);
      }
      args.push(`nbdroot=${server}:${o.nbd.port}/${exportName}`, rootArg);
    } else {
      args.push(`nbdroot=${server},${exportName},nbd0`, rootArg);
    }
  } else {
    // dracut: root=nbd:SRV:PORT/EXPORT mounts the whole device; a file system
    // inside a partition table is named by root= and the disk by netroot=.
    if (!('uuid' in o.root) && o.root.partition === 0) {
      args.push(`root=nbd:${server}:${o.nbd.port}/${exportName}`);
    } else {
      args.push(`netroot=nbd:${server}:${o.nbd.port}/${exportName}`, rootArg);
    }
    args.push('rd.neednet=1');
  }
  // The root is a network disk: keep systemd's GPT auto-generator from scanning it at every boot.
  args.push('rw', 'systemd.gpt_auto=0');
  for (const e of o.extra ?? []) args.push(assertSafeToken('extra kernel argument', e));
  return args.join(' ');
}
