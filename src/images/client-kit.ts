/**
 * The client kit: the files an image needs to run as a diskless client with
 * its root on NBD. Pure functions from options to file contents, so they can
 * be tested and reused for images made elsewhere; build-debian.ts writes them
 * into the root it builds.
 *
 * Why each piece is there:
 * - initramfs modules: nbd, ext4 (MODULES=list adds nothing by itself), the
 *   NICs of common PCs and of QEMU, the disk controllers of VMs and PCs (so
 *   the image boots from a local disk too), and a USB keyboard for the rescue shell;
 *   nbd-client's own hook adds every network driver anyway (auto_add_modules net);
 * - fstab by UUID, pass 0: the root is mounted read-write by the initramfs
 *   (`rw` on the command line) and checking it would read it over the network
 *   at every boot; no swap, and RESUME=none, since there is no local disk;
 * - the boot NIC was configured by the initramfs (ip=, nbd-client holds the
 *   root through it): nothing may take it down or ask DHCP again, so
 *   /etc/network/interfaces has only lo, systemd-networkd stays disabled, and
 *   diskless-net tells networkd and NetworkManager (if an image adds them) to
 *   leave that NIC alone;
 * - diskless-up: the marker line on the consoles and the OS-up report
 *   (`diskless.up=URL` on the kernel command line, POST).
 */

export type InitramfsModulesMode = 'list' | 'netboot' | 'most';

/** Modules always listed in /etc/initramfs-tools/modules. */
export const KIT_INITRAMFS_MODULES = [
  'nbd',
  'ext4',
  // NICs: Intel PRO/1000 (QEMU pc), 82574 (QEMU q35), I350/I210, 10 GbE, Realtek, virtio (QEMU)
  'e1000',
  'e1000e',
  'igb',
  'ixgbe',
  'r8169',
  'virtio_pci',
  'virtio_net',
  // a local disk (virtio, SATA, NVMe): the same image also boots from a disk of
  // its own, as a VM's disk or a PC's, e.g. the machine a seed image is captured from
  'virtio_blk',
  'virtio_scsi',
  'sd_mod',
  'ahci',
  'nvme',
  // a USB keyboard in the initramfs rescue shell
  'xhci_pci',
  'ehci_pci',
  'usbhid',
  'hid_generic',
] as const;

const MODULE_NAME = /^[a-z0-9_-]{1,64}$/;

export function initramfsModulesFile(extra: readonly string[] = []): string {
  const all = [...new Set([...KIT_INITRAMFS_MODULES, ...extra])];
  for (const m of all) if (!MODULE_NAME.test(m)) throw new Error(`bad module name ${JSON.stringify(m)}`);
  return ['# diskless client kit: loaded early so the root can be mounted over NBD', ...all, ''].join('\n');
}

/** Edits initramfs.conf: MODULES, BUSYBOX=y (the nbd script calls grep), COMPRESS. */
export function editInitramfsConf(text: string, o: { modules: InitramfsModulesMode; compress: 'zstd' | 'gzip' }): string {
  const set = (s: string, key: string, value: string): string => {
    const re = new RegExp(`^${key}=.*$`, 'm');
    return re.test(s) ? s.replace(re, `${key}=${value}`) : `${s.replace(/\n?$/, '\n')}${key}=${value}\n`;
  };
  let out = set(text, 'MODULES', o.modules);
  out = set(out, 'BUSYBOX', 'y');
  out = set(out, 'COMPRESS', o.compress);
  return out;
}

export const RESUME_CONF = '# diskless client kit: there is no local disk to resume from\nRESUME=none\n';

export function fstab(rootUuid: string): string {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(rootUuid)) throw new Error(`bad UUID ${rootUuid}`);
  return [
    '# diskless client kit: the root is on NBD, mounted read-write by the initramfs.',
    '# Pass 0: checking it would read it over the network at every boot. No swap.',
    `UUID=${rootUuid} / ext4 defaults,noatime 0 0`,
    '',
  ].join('\n');
}

/** ifupdown: loopback only; the boot NIC belongs to the initramfs. */
export const NETWORK_INTERFACES = [
  '# diskless client kit: only the loopback here. The boot NIC was configured by',
  '# the initramfs and carries the root disk: a stanza for it (auto/allow-hotplug',
  '# with dhcp) would take it down or renew it under the running system.',
  'auto lo',
  'iface lo inet loopback',
  '',
  'source /etc/network/interfaces.d/*',
  '',
].join('\n');

/** The lines of an interfaces(5) file that would manage a NIC other than lo; empty when safe. */
export function unsafeInterfaceStanzas(text: string): string[] {
  const bad: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*$/, '').trim();
    const m = /^(auto|allow-hotplug|allow-auto|iface|mapping)\s+(.+)$/.exec(line);
    if (!m) continue;
    const names = m[1] === 'iface' ? [m[2]!.split(/\s+/)[0]!] : m[2]!.split(/\s+/);
    if (names.some((n) => n !== 'lo')) bad.push(line);
  }
  return bad;
}

export const HOSTS = ['127.0.0.1\tlocalhost', '::1\t\tlocalhost ip6-localhost ip6-loopback', 'ff02::1\t\tip6-allnodes', 'ff02::2\t\tip6-allrouters', ''].join('\n');

export const DISKLESS_UP_PATH = '/usr/local/sbin/diskless-up';
export const DISKLESS_NET_PATH = '/usr/local/sbin/diskless-net';

/**
 * Prints `DISKLESS-UP <root source>` and POSTs to diskless.up=URL. The
 * server's endpoint is `POST /boot/<mac>/<bootId>/up`; the boot script puts
 * the full URL on the command line.
 */
export const DISKLESS_UP_SCRIPT = `#!/bin/sh
# diskless client kit: report that this client reached multi-user.
#  1. print "DISKLESS-UP <root source>" on the console and on ttyS0;
#  2. POST to the URL given on the kernel command line as diskless.up=URL.
# The DISKLESS_* variables exist for tests only.
set -u
set -f
cmdline=\${DISKLESS_CMDLINE:-/proc/cmdline}
console=\${DISKLESS_CONSOLE:-/dev/console}
tty=\${DISKLESS_TTY:-/dev/ttyS0}
root=$(findmnt -n -o SOURCE / 2>/dev/null) || root=unknown
line="DISKLESS-UP $root"
echo "$line" >"$console" 2>/dev/null || true
# ttyS0 too, unless it is the console already (the line would show twice).
if ! grep -qw ttyS0 /sys/class/tty/console/active 2>/dev/null || [ "$tty" != /dev/ttyS0 ]; then
  timeout 5 sh -c 'echo "$1" >"$2"' sh "$line" "$tty" 2>/dev/null || true
fi
url=
for arg in $(cat "$cmdline"); do
  case "$arg" in
    diskless.up=*) url="\${arg#diskless.up=}" ;;
  esac
done
[ -n "$url" ] || exit 0
case "$url" in
  http://*|https://*) ;;
  *) echo "diskless-up: ignoring diskless.up=$url: not an http URL" >&2; exit 0 ;;
esac
if curl -fsS -X POST --max-time 10 --retry 5 --retry-delay 2 --retry-connrefused -o /dev/null "$url"; then
  echo "diskless-up: reported to $url"
else
  echo "diskless-up: could not report to $url" >&2
fi
exit 0
`;

export const DISKLESS_UP_UNIT = `[Unit]
Description=Report that this diskless client is up
# Runs once multi-user is reached; multi-user.target does not wait for it.
After=multi-user.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=${DISKLESS_UP_PATH}

[Install]
WantedBy=multi-user.target
`;

/**
 * Runs before any network manager: keeps the boot NIC (the one the
 * initramfs configured, /run/net-IFACE.conf) out of systemd-networkd's and
 * NetworkManager's hands, writes resolv.conf from what the initramfs learnt,
 * and names the host after the boot NIC when nothing else named it.
 */
export const DISKLESS_NET_SCRIPT = `#!/bin/sh
# diskless client kit: leave the boot NIC as the initramfs configured it.
# DISKLESS_ROOT and DISKLESS_HOSTNAME exist for tests only.
set -u
r=\${DISKLESS_ROOT:-}
sethost=\${DISKLESS_HOSTNAME:-hostname}
# /run/net-IFACE.conf (written by the initramfs' ipconfig) is read, not sourced:
# its values came from a DHCP server.
val() { grep -m 1 "^$1=" "$conf" | cut -d= -f2- | tr -cd 'A-Za-z0-9.:_-'; }
for conf in "$r"/run/net-*.conf; do
  [ -r "$conf" ] || continue
  DEVICE=$(val DEVICE) IPV4DNS0=$(val IPV4DNS0) IPV4DNS1=$(val IPV4DNS1) DNSDOMAIN=$(val DNSDOMAIN)
  [ -n "$DEVICE" ] && [ -r "$r/sys/class/net/$DEVICE/address" ] || continue
  mac=$(cat "$r/sys/class/net/$DEVICE/address")
  mkdir -p "$r/run/systemd/network" "$r/run/NetworkManager/conf.d"
  printf '[Match]\\nMACAddress=%s\\n\\n[Link]\\nUnmanaged=yes\\n' "$mac" >"$r/run/systemd/network/05-diskless-boot-nic.network"
  printf '[keyfile]\\nunmanaged-devices=mac:%s\\n' "$mac" >"$r/run/NetworkManager/conf.d/05-diskless-boot-nic.conf"
  if [ -n "$IPV4DNS0" ] && [ "$IPV4DNS0" != 0.0.0.0 ]; then
    {
      if [ -n "$DNSDOMAIN" ]; then echo "search $DNSDOMAIN"; fi
      echo "nameserver $IPV4DNS0"
      if [ -n "$IPV4DNS1" ] && [ "$IPV4DNS1" != 0.0.0.0 ]; then echo "nameserver $IPV4DNS1"; fi
    } >"$r/etc/resolv.conf.diskless" && mv "$r/etc/resolv.conf.diskless" "$r/etc/resolv.conf"
  fi
  case "$($sethost 2>/dev/null)" in
    ''|'(none)'|localhost) $sethost "diskless-$(echo "$mac" | tr -d :)" ;;
  esac
  break
done
exit 0
`;

export const DISKLESS_NET_UNIT = `[Unit]
Description=Keep the diskless boot NIC as the initramfs configured it
DefaultDependencies=no
After=local-fs.target
Before=network-pre.target systemd-networkd.service NetworkManager.service networking.service
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=${DISKLESS_NET_PATH}

[Install]
WantedBy=sysinit.target
`;

/** serial-getty@ttyS0 drop-in: log root in without a password (demo images only). */
export const AUTOLOGIN_DROPIN = `[Service]
# diskless client kit (autologin option): root is logged in on the serial console.
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 - $TERM
`;

/**
 * Units that would make every client download from the mirror or scrub its
 * network disk (e2scrub needs LVM snapshots, which a diskless root has not;
 * e2scrub_reap alone held multi-user back by a minute under emulation).
 */
export const DISABLED_UNITS = ['apt-daily.timer', 'apt-daily-upgrade.timer', 'e2scrub_all.timer', 'e2scrub_reap.service'] as const;
/** Network managers that must not be enabled on the boot NIC. */
export const NETWORK_MANAGER_UNITS = ['systemd-networkd.service', 'systemd-networkd.socket', 'systemd-networkd-wait-online.service'] as const;
