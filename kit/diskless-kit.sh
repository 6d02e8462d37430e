#!/bin/sh
# diskless client kit: makes this machine bootable with its root disk on a
# diskless server (over NBD), and captures its disk as a new image version.
#
#   curl -fsS http://SERVER/kit | sh -s -- prepare
#   curl -fsS http://SERVER/kit | DISKLESS_TOKEN=... sh -s -- capture
#
# The server fills in its own URL below when it serves this script; nothing
# else is templated. Plain POSIX sh: dash, bash and busybox ash run it.
# kit/README.md describes every step.

KIT_DEFAULT_SERVER='@DISKLESS_SERVER_URL@'

usage() {
	cat <<'EOF'
usage: sh diskless-kit.sh COMMAND [options]

  prepare [--nic IFACE] [--no-install]
      Make this machine bootable with its root on the diskless server: the
      NBD client and NIC drivers in the initramfs (rebuilt and checked), the
      root file system by UUID in fstab, swap and resume off the network
      disk, the boot NIC left alone by the network manager, and
      diskless-up.service. Running it again changes nothing.

  capture [--disk DEV|FILE] [--name NAME] [--chunk-size SIZE] [--token TOKEN]
          [--freeze] [--restart] [--limit-rate RATE]
      Stream a disk (default: the one holding /) to the server as a new
      image version: chunks with their sha256, resumable (run it again after
      an interruption), verified by the sha256 of the whole.

  help

environment: DISKLESS_SERVER (server URL), DISKLESS_TOKEN (capture token)
EOF
}

# ---------------------------------------------------------------- common

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}
export PATH
LC_ALL=C
export LC_ALL
umask 022

MiB=1048576
COMMON_NIC_DRIVERS='e1000 e1000e igb ixgbe r8169 virtio_net'
MARK='# diskless:'
BACKUP_DIR=/var/backups/diskless
STEP=kit
WORK=

say() { printf '[%s] %s\n' "$STEP" "$*"; }
warn() { printf '[%s] warning: %s\n' "$STEP" "$*" >&2; }
die() {
	printf '[%s] error: %s\n' "$STEP" "$*" >&2
	exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

# A scratch directory in memory when there is one: during capture --freeze
# nothing may be written to the frozen file systems.
make_work() {
	for base in "${DISKLESS_TMPDIR:-}" /dev/shm /run "${TMPDIR:-/tmp}" /tmp; do
		[ -n "$base" ] && [ -d "$base" ] && [ -w "$base" ] || continue
		# Scratch of a kit that was killed outright (its pid is gone) is removed.
		for old in "$base"/diskless-kit.*.*; do
			[ -d "$old" ] || continue
			old_pid=${old#"$base"/diskless-kit.}
			old_pid=${old_pid%%.*}
			case "$old_pid" in '' | *[!0-9]*) continue ;; esac
			kill -0 "$old_pid" 2>/dev/null || rm -rf "$old"
		done
		WORK=$(mktemp -d "$base/diskless-kit.$$.XXXXXX" 2>/dev/null) && break
		WORK=
	done
	[ -n "$WORK" ] || die "cannot make a scratch directory (tried /dev/shm, /run, /tmp)"
}

sha_of() {
	# sha256 of a file, or of stdin without an argument.
	if [ $# -gt 0 ]; then sha256sum < "$1"; else sha256sum; fi | cut -c 1-64
}

# ---------------------------------------------------------------- prepare

CHANGED=0
TOUCHED=
FLAVOUR=
PKG=
NIC=
NIC_MAC=
NIC_DRIVER=
NO_INSTALL=0
FSTAB_NEW=

touched() {
	case "
$TOUCHED
" in
	*"
$1
"*) ;;
	*) TOUCHED="$TOUCHED
$1" ;;
	esac
}

backup() {
	# The original of a file the kit changes is kept once, outside any
	# directory whose files are all read (conf.d, modules-load.d...).
	[ -e "$1" ] || return 0
	[ -e "$BACKUP_DIR$1" ] && return 0
	mkdir -p "$BACKUP_DIR$(dirname "$1")" && cp -p "$1" "$BACKUP_DIR$1" ||
		die "cannot keep a copy of $1 in $BACKUP_DIR"
	say "kept the original of $1 as $BACKUP_DIR$1"
}

# put_file PATH MODE: writes stdin to PATH unless PATH already holds exactly that.
put_file() {
	pf_path=$1
	pf_mode=$2
	pf_new=$WORK/put.new
	cat > "$pf_new" || die "cannot stage $pf_path"
	touched "$pf_path"
	if [ -f "$pf_path" ] && [ "$(sha_of "$pf_new")" = "$(sha_of "$pf_path")" ]; then
		say "unchanged $pf_path"
		return 0
	fi
	backup "$pf_path"
	mkdir -p "$(dirname "$pf_path")" || die "cannot make $(dirname "$pf_path")"
	# Written beside the target and renamed: a crash leaves the old or the new file, never half of one.
	cp "$pf_new" "$pf_path.diskless-new" && chmod "$pf_mode" "$pf_path.diskless-new" &&
		mv -f "$pf_path.diskless-new" "$pf_path" || die "cannot write $pf_path"
	CHANGED=$((CHANGED + 1))
	say "wrote $pf_path"
}

put_link() {
	# put_link TARGET LINK: a symbolic link, as systemctl enable makes it.
	touched "$2"
	if [ -L "$2" ] && [ "$(readlink "$2")" = "$1" ]; then
		say "unchanged $2"
		return 0
	fi
	mkdir -p "$(dirname "$2")" && ln -sfn "$1" "$2" || die "cannot link $2"
	CHANGED=$((CHANGED + 1))
	say "linked $2 -> $1"
}

kernels() {
	# Kernel versions installed: those with modules and a kernel image.
	for kd in /lib/modules/*; do
		[ -d "$kd" ] || continue
		kv=${kd##*/}
		[ -e "/boot/vmlinuz-$kv" ] || [ -e "$kd/vmlinuz" ] || continue
		printf '%s\n' "$kv"
	done
}

initramfs_of() {
	# The initramfs image of kernel $1, wherever this system keeps it.
	for img in "/boot/initrd.img-$1" "/boot/initramfs-$1.img"; do
		[ -e "$img" ] && { printf '%s' "$img"; return 0; }
	done
	return 1
}

module_file() {
	# modinfo's file name of module $2 for kernel $1: a path, "(builtin)", or nothing.
	modinfo -k "$1" -F filename "$2" 2>/dev/null | head -n 1
}

detect_system() {
	STEP=system
	[ "$(id -u)" = 0 ] || die "prepare changes system files: run it as root"
	if [ -r /etc/os-release ]; then
		os=$(. /etc/os-release && printf '%s' "${PRETTY_NAME:-${NAME:-unknown}}")
	else
		os=unknown
	fi
	if have update-initramfs && [ -d /etc/initramfs-tools ]; then
		FLAVOUR=initramfs-tools
	elif have dracut; then
		FLAVOUR=dracut
	else
		die "neither initramfs-tools nor dracut is installed: no initramfs can carry the NBD client"
	fi
	if have apt-get; then PKG=apt
	elif have dnf; then PKG=dnf
	elif have yum; then PKG=yum
	else PKG=none
	fi
	have systemctl && [ -d /etc/systemd/system ] ||
		die "diskless-up.service needs systemd, which this system does not run"
	[ -n "$(kernels)" ] || die "no kernel is installed (/lib/modules/* with /boot/vmlinuz-*)"
	say "system: $os; initramfs: $FLAVOUR; packages: $PKG; kernels: $(kernels | tr '\n' ' ')"
}

detect_nic() {
	STEP=nic
	if [ -z "$NIC" ]; then
		# The NIC of the default route is the one the machine boots from.
		NIC=$(awk 'NR > 1 && $2 == "00000000" { print $1; exit }' /proc/net/route 2>/dev/null)
		[ -n "$NIC" ] || die "no default route, so the boot NIC is unknown: name it with --nic IFACE"
	fi
	[ -e "/sys/class/net/$NIC" ] || die "no network interface $NIC"
	NIC_MAC=$(cat "/sys/class/net/$NIC/address" 2>/dev/null)
	case "$NIC_MAC" in
	??:??:??:??:??:??) ;;
	*) die "$NIC has no Ethernet address" ;;
	esac
	NIC_DRIVER=
	if [ -e "/sys/class/net/$NIC/device/driver/module" ]; then
		NIC_DRIVER=$(basename "$(readlink -f "/sys/class/net/$NIC/device/driver/module")")
	elif [ -e "/sys/class/net/$NIC/device/driver" ]; then
		NIC_DRIVER=$(basename "$(readlink -f "/sys/class/net/$NIC/device/driver")")
	fi
	say "boot NIC: $NIC ($NIC_MAC, driver ${NIC_DRIVER:-unknown})"
}

nic_drivers() {
	# This machine's NIC drivers, then the common ones, each once.
	{
		for dev in /sys/class/net/*/device; do
			[ -e "$dev/driver" ] || continue
			if [ -e "$dev/driver/module" ]; then basename "$(readlink -f "$dev/driver/module")"
			else basename "$(readlink -f "$dev/driver")"
			fi
		done
		for d in $COMMON_NIC_DRIVERS; do printf '%s\n' "$d"; done
	} | awk '!seen[$0]++'
}

own_nic_drivers() {
	for dev in /sys/class/net/*/device; do
		[ -e "$dev/driver" ] || continue
		if [ -e "$dev/driver/module" ]; then basename "$(readlink -f "$dev/driver/module")"
		else basename "$(readlink -f "$dev/driver")"
		fi
	done | awk '!seen[$0]++'
}

# Drivers any installed kernel has, as modules or built in; the others cannot be added.
available_drivers() {
	for d in $(nic_drivers); do
		for kv in $(kernels); do
			if [ -n "$(module_file "$kv" "$d")" ]; then printf '%s\n' "$d"; break; fi
		done
	done
}

# fstab: device names of the boot disk (sda1, vda2, nvme0n1p1...) become
# UUIDs, because on the network the disk is /dev/nbd0; the root entry is
# always by UUID; swap entries are commented out (swap on the network disk
# would page over NBD, and hibernation cannot resume from it).
plan_fstab() {
	STEP=fstab
	FSTAB_NEW=$WORK/fstab.new
	[ -f /etc/fstab ] || { : > "$FSTAB_NEW"; return 0; }
	: > "$FSTAB_NEW"
	while IFS= read -r line || [ -n "$line" ]; do
		set -f
		# shellcheck disable=SC2086
		set -- $line
		set +f
		if [ $# -lt 3 ] || [ "${1#\#}" != "$1" ]; then
			printf '%s\n' "$line" >> "$FSTAB_NEW"
			continue
		fi
		spec=$1
		mnt=$2
		fstype=$3
		if [ "$fstype" = swap ]; then
			printf '%s swap stays off the network disk: %s\n' "$MARK" "$line" >> "$FSTAB_NEW"
			continue
		fi
		uuid=
		case "$spec" in
		UUID=*) ;;
		/dev/sd* | /dev/vd* | /dev/hd* | /dev/xvd* | /dev/nvme* | /dev/mmcblk*)
			uuid=$(blkid -s UUID -o value "$spec" 2>/dev/null)
			[ -n "$uuid" ] || die "fstab names $spec for $mnt, which has no file system UUID here; replace it by UUID=, LABEL= or PARTUUID= by hand"
			;;
		*)
			if [ "$mnt" = / ]; then
				dev=$(blkid -o device -t "$spec" 2>/dev/null | head -n 1)
				case "$spec" in /dev/*) dev=$spec ;; esac
				[ -n "$dev" ] && uuid=$(blkid -s UUID -o value "$dev" 2>/dev/null)
				[ -n "$uuid" ] || die "the root file system ($spec) has no UUID blkid can read"
			fi
			;;
		esac
		if [ -n "$uuid" ]; then
			prefix=${line%%"$spec"*}
			rest=${line#*"$spec"}
			printf '%sUUID=%s%s\n' "$prefix" "$uuid" "$rest" >> "$FSTAB_NEW"
		else
			printf '%s\n' "$line" >> "$FSTAB_NEW"
		fi
	done < /etc/fstab
}

write_fstab() {
	STEP=fstab
	[ -f /etc/fstab ] || { say "no /etc/fstab: the kernel command line's root=UUID= names the root"; return 0; }
	root_spec=$(awk '$1 !~ /^#/ && $2 == "/" { print $1 }' "$FSTAB_NEW")
	if [ -n "$root_spec" ]; then
		say "root file system: $root_spec (the server's kernel command line uses root=$root_spec)"
	else
		say "fstab has no entry for /: the kernel command line's root=UUID= names the root"
	fi
	swaps=$(grep -c "^$MARK swap stays off" "$FSTAB_NEW")
	[ "$swaps" -gt 0 ] && say "swap entries commented out: $swaps"
	if [ "$(sha_of "$FSTAB_NEW")" = "$(sha_of /etc/fstab)" ]; then
		touched /etc/fstab
		say "unchanged /etc/fstab"
		return 0
	fi
	put_file /etc/fstab 644 < "$FSTAB_NEW"
}

install_packages() {
	STEP=packages
	need=
	have curl || need="$need curl"
	if ! have nbd-client; then
		if [ "$PKG" = apt ]; then need="$need nbd-client"; else need="$need nbd"; fi
	fi
	if [ "$FLAVOUR" = initramfs-tools ]; then
		# Debian's nbd script in the initramfs calls grep, which comes with busybox.
		have busybox || [ -x /usr/lib/initramfs-tools/bin/busybox ] || need="$need busybox"
	else
		dracut_module_dir nbd >/dev/null || need="$need dracut-network"
		# dracut's network module copies ip and pgrep into the initramfs; a minimal system may lack them.
		have ip || if [ "$PKG" = apt ]; then need="$need iproute2"; else need="$need iproute"; fi
		have pgrep || if [ "$PKG" = apt ]; then need="$need procps"; else need="$need procps-ng"; fi
		need="$need$(dracut_backend_packages)"
	fi
	if [ -z "$need" ]; then
		say "installed already: curl, nbd-client$([ "$FLAVOUR" = dracut ] && printf ', dracut nbd module' || printf ', busybox')"
	else
		[ "$NO_INSTALL" = 0 ] || die "missing:$need (and --no-install was given)"
		say "installing:$need"
		case "$PKG" in
		apt)
			# shellcheck disable=SC2086
			if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need < /dev/null; then
				say "package lists may be stale: apt-get update, then again"
				apt-get update -q < /dev/null || die "apt-get update failed"
				# shellcheck disable=SC2086
				DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need < /dev/null ||
					die "apt-get install$need failed"
			fi
			;;
		dnf | yum)
			# shellcheck disable=SC2086
			"$PKG" install -y $need < /dev/null || die "$PKG install$need failed"
			;;
		*) die "no package manager to install$need with: install them by hand" ;;
		esac
		CHANGED=$((CHANGED + 1))
	fi
	have nbd-client || die "nbd-client is still missing after the install"
	have curl || die "curl is still missing after the install"
	if [ "$FLAVOUR" = initramfs-tools ]; then
		[ -e /usr/share/initramfs-tools/hooks/nbd ] || [ -e /usr/share/initramfs-tools/hooks/nbd-client ] ||
			die "nbd-client's initramfs hook (/usr/share/initramfs-tools/hooks/nbd) is missing"
		[ -e /usr/share/initramfs-tools/scripts/local-top/nbd ] ||
			die "nbd-client's initramfs script (scripts/local-top/nbd) is missing"
	else
		dracut_module_dir nbd >/dev/null || die "dracut has no nbd module even after installing dracut-network"
		dracut_module_dir network >/dev/null || die "dracut has no network module"
	fi
}

# dracut's network module brings up the network with the first of these it
# finds: NetworkManager's initrd generator, systemd-networkd (which needs a
# D-Bus daemon in the initramfs), or its legacy scripts (dhclient, arping).
# Prints the packages that backend still lacks, each with a leading space.
dracut_backend_packages() {
	for g in /usr/libexec/nm-initrd-generator /usr/lib/nm-initrd-generator /usr/lib/NetworkManager/nm-initrd-generator; do
		[ -x "$g" ] && return 0
	done
	for n in /usr/lib/systemd/systemd-networkd /lib/systemd/systemd-networkd; do
		if [ -x "$n" ]; then
			have dbus-daemon || have dbus-broker || [ -x /usr/bin/dbus-broker-launch ] ||
				if [ "$PKG" = apt ]; then printf ' dbus'; else printf ' dbus-broker'; fi
			return 0
		fi
	done
	have dhclient || if [ "$PKG" = apt ]; then printf ' isc-dhcp-client'; else printf ' dhcp-client'; fi
	have arping || have arping2 || if [ "$PKG" = apt ]; then printf ' iputils-arping'; else printf ' iputils'; fi
	return 0
}

dracut_module_dir() {
	for dmd in /usr/lib/dracut/modules.d/[0-9][0-9]"$1" /usr/lib/dracut/modules.d/[0-9][0-9]"$1"-*; do
		[ -d "$dmd" ] && { printf '%s' "$dmd"; return 0; }
	done
	return 1
}

write_modules() {
	STEP=modules
	drivers=$(available_drivers | tr '\n' ' ')
	drivers=${drivers% }
	for d in $(own_nic_drivers); do
		case " $drivers " in
		*" $d "*) ;;
		*) warn "this machine's NIC driver $d is not a module of any installed kernel (built in, or missing)" ;;
		esac
	done
	say "NIC drivers for the initramfs: $drivers"
	if [ "$FLAVOUR" = initramfs-tools ]; then
		f=/etc/initramfs-tools/modules
		{
			# Keep the file's own lines; the kit's block is rewritten in place.
			[ -f "$f" ] && awk -v mark="$MARK" '
				index($0, mark " begin") == 1 { skip = 1; next }
				index($0, mark " end") == 1 { skip = 0; next }
				!skip { print }' "$f"
			printf '%s begin: written by the diskless kit (root on NBD): the NBD client and NIC drivers\n' "$MARK"
			printf 'nbd\n'
			for d in $drivers; do printf '%s\n' "$d"; done
			printf '%s end\n' "$MARK"
		} > "$WORK/modules.new"
		put_file "$f" 644 < "$WORK/modules.new"
	else
		put_file /etc/dracut.conf.d/diskless.conf 644 <<EOF
$MARK written by the diskless kit: the root is on NBD over the network.
add_dracutmodules+=" nbd network "
add_drivers+=" nbd $drivers "
# Resume from a network disk is impossible: no resume module.
omit_dracutmodules+=" resume "
EOF
		put_file /etc/modules-load.d/diskless.conf 644 <<EOF
$MARK written by the diskless kit: the NBD client's kernel module.
nbd
EOF
	fi
}

write_resume() {
	STEP=resume
	if [ "$FLAVOUR" = initramfs-tools ]; then
		put_file /etc/initramfs-tools/conf.d/resume 644 <<EOF
$MARK written by the diskless kit: no resume from the network disk (swap stays off it).
RESUME=none
EOF
	else
		say "dracut: the resume module is omitted (/etc/dracut.conf.d/diskless.conf)"
	fi
}

# The boot NIC must keep the address the initramfs gave it: if a network
# manager takes it down or re-runs DHCP on it, the root disk goes away and
# the machine hangs.
write_network() {
	STEP=network
	did=0
	if [ -f /etc/network/interfaces ]; then
		for f in /etc/network/interfaces /etc/network/interfaces.d/*; do
			[ -f "$f" ] || continue
			awk -v nic="$NIC" -v mark="$MARK" '
				/^[ \t]*(auto|allow-hotplug|allow-auto)[ \t]/ {
					n = split($0, w, /[ \t]+/); out = ""; hit = 0
					for (i = 1; i <= n; i++) {
						if (w[i] == "") continue
						if (w[i] == nic && out != "") { hit = 1; continue }
						out = out (out == "" ? "" : " ") w[i]
					}
					if (hit) {
						print mark " the root disk is on " nic ": ifupdown does not bring it up or down: " $0
						if (split(out, rest, " ") > 1) print out
						next
					}
				}
				/^[ \t]*iface[ \t]/ && $2 == nic && $3 == "inet" && $4 == "dhcp" {
					print mark " the initramfs configures " nic " (root on NBD); was: " $0
					sub(/[ \t]+dhcp([ \t]|$)/, " manual ")
					sub(/[ \t]+$/, "")
					print; next
				}
				{ print }' "$f" > "$WORK/ifaces.new" || die "cannot read $f"
			if [ "$(sha_of "$WORK/ifaces.new")" != "$(sha_of "$f")" ]; then
				put_file "$f" 644 < "$WORK/ifaces.new"
			else
				touched "$f"
				say "ifupdown: $f leaves $NIC alone"
			fi
			did=1
		done
	fi
	if have NetworkManager || [ -d /etc/NetworkManager ]; then
		put_file /etc/NetworkManager/conf.d/90-diskless.conf 644 <<EOF
$MARK written by the diskless kit: the root disk is on this NIC; NetworkManager leaves it as the initramfs set it.
[keyfile]
unmanaged-devices=mac:$NIC_MAC
EOF
		did=1
	fi
	if networkd_in_use; then
		v=$(systemctl --version 2>/dev/null | awk 'NR == 1 { print $2 + 0 }')
		# KeepConfiguration= arrived in systemd 243; older ones spell it CriticalConnection=.
		if [ "${v:-0}" -ge 243 ]; then keep='KeepConfiguration=yes'; else keep='CriticalConnection=yes'; fi
		put_file /etc/systemd/network/10-diskless-boot.network 644 <<EOF
$MARK written by the diskless kit: the root disk is on this NIC; networkd keeps what the initramfs set.
[Match]
MACAddress=$NIC_MAC

[Network]
DHCP=ipv4
$keep
EOF
		did=1
	fi
	# Other machines booting the same image have other MACs: at each boot,
	# diskless-boot-nic marks the NIC named by BOOTIF= (iPXE) the same way, in /run.
	put_file /usr/local/sbin/diskless-boot-nic 755 <<'EOF'
#!/bin/sh
# diskless: written by the diskless kit. Keeps the network manager off the NIC
# the machine booted from (BOOTIF= on the kernel command line), whose address
# the initramfs set and which carries the root disk.
mac=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	BOOTIF=01-??-??-??-??-??-??) mac=$(printf '%s' "${arg#BOOTIF=01-}" | tr 'A-F-' 'a-f:') ;;
	esac
done
[ -n "$mac" ] || exit 0
if [ -d /etc/NetworkManager ]; then
	mkdir -p /run/NetworkManager/conf.d
	printf '[keyfile]\nunmanaged-devices=mac:%s\n' "$mac" > /run/NetworkManager/conf.d/90-diskless-boot.conf
fi
if [ -d /etc/systemd/network ]; then
	mkdir -p /run/systemd/network
	printf '[Match]\nMACAddress=%s\n\n[Network]\nDHCP=ipv4\nKeepConfiguration=yes\n' "$mac" > /run/systemd/network/10-diskless-boot.network
fi
echo "diskless: boot NIC $mac is left as the initramfs configured it"
EOF
	put_file /etc/systemd/system/diskless-boot-nic.service 644 <<'EOF'
# diskless: written by the diskless kit.
[Unit]
Description=Keep network managers off the NIC the root disk is on
DefaultDependencies=no
After=systemd-remount-fs.service
Before=network-pre.target NetworkManager.service systemd-networkd.service networking.service
Wants=network-pre.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/diskless-boot-nic
RemainAfterExit=yes

[Install]
WantedBy=sysinit.target
EOF
	put_link /etc/systemd/system/diskless-boot-nic.service /etc/systemd/system/sysinit.target.wants/diskless-boot-nic.service
	[ "$did" = 1 ] || say "no ifupdown stanza, NetworkManager or systemd-networkd configuration touches $NIC"
}

networkd_in_use() {
	for w in /etc/systemd/system/*.wants/systemd-networkd.service /etc/systemd/network/*.network; do
		[ -e "$w" ] && [ "${w##*/}" != 10-diskless-boot.network ] && return 0
	done
	[ -e /etc/systemd/network/10-diskless-boot.network ]
}

write_up_service() {
	STEP=diskless-up
	put_file /usr/local/sbin/diskless-up 755 <<'EOF'
#!/bin/sh
# diskless: written by the diskless kit. Once the OS is up, tells the diskless
# server (diskless.up=URL on the kernel command line) and prints
# DISKLESS-UP <root source> on the console.
url=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	diskless.up=*) url=${arg#diskless.up=} ;;
	esac
done
root=$(findmnt -n -o SOURCE / 2>/dev/null)
[ -n "$root" ] || root=$(awk '$2 == "/" { r = $1 } END { print r }' /proc/mounts)
echo "DISKLESS-UP ${root:-unknown}"
[ -w /dev/console ] && echo "DISKLESS-UP ${root:-unknown}" > /dev/console 2>/dev/null
case "$url" in
http://* | https://*)
	i=0
	while [ $i -lt 10 ]; do
		curl -fsS -X POST --connect-timeout 5 --max-time 15 "$url" > /dev/null && exit 0
		i=$((i + 1))
		sleep 3
	done
	echo "diskless-up: the server did not take the report at $url" >&2
	exit 1
	;;
esac
exit 0
EOF
	# DefaultDependencies=no: multi-user.target would otherwise be ordered
	# after this unit, which itself waits for multi-user.target.
	put_file /etc/systemd/system/diskless-up.service 644 <<'EOF'
# diskless: written by the diskless kit.
[Unit]
Description=Tell the diskless server this OS is up
DefaultDependencies=no
Requires=sysinit.target
Wants=network-online.target
After=sysinit.target basic.target network-online.target multi-user.target
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/diskless-up
RemainAfterExit=yes
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
EOF
	put_link /etc/systemd/system/diskless-up.service /etc/systemd/system/multi-user.target.wants/diskless-up.service
}

# The NBD keeper (kit/diskless-nbd-keeper, embedded here by the server):
# nbd-client connects the root over netlink, where -persist does nothing, so
# without it a restart of the server fails the root's I/O at once. A
# systemd-shutdown hook disconnects cleanly at power-off and reboot, so the
# server releases the disk at once.
kit_file_nbd_keeper() {
	cat <<'DISKLESS_INCLUDE_EOF'
@DISKLESS_INCLUDE:diskless-nbd-keeper@
DISKLESS_INCLUDE_EOF
}
kit_file_nbd_keeper_unit() {
	cat <<'DISKLESS_INCLUDE_EOF'
@DISKLESS_INCLUDE:diskless-nbd-keeper.service@
DISKLESS_INCLUDE_EOF
}
kit_file_nbd_disconnect() {
	cat <<'DISKLESS_INCLUDE_EOF'
@DISKLESS_INCLUDE:diskless-nbd-disconnect@
DISKLESS_INCLUDE_EOF
}

write_keeper() {
	STEP=nbd-keeper
	kit_file_nbd_keeper > "$WORK/keeper" || die "cannot stage the NBD keeper"
	case "$(head -n 1 "$WORK/keeper")" in
	'@DISKLESS_INCLUDE:'*)
		warn "this copy of the kit does not carry the NBD keeper (run it as the server serves it: curl -fsS http://SERVER/kit | sh -s -- prepare); the root will not survive a restart of the server"
		return 0
		;;
	esac
	if ! have perl; then
		warn "perl is not installed: the NBD keeper cannot run, so the root will not survive a restart of the server"
		return 0
	fi
	# systemd-shutdown reads /usr/lib/systemd/system-shutdown; before the /usr merge, /lib/systemd/system-shutdown.
	shutdown_dir=/usr/lib/systemd/system-shutdown
	[ ! -L /lib ] && [ -d /lib/systemd/system-shutdown ] && shutdown_dir=/lib/systemd/system-shutdown
	# Staged in files, not piped: put_file must run in this shell (it counts changes).
	kit_file_nbd_keeper_unit > "$WORK/keeper.service" && kit_file_nbd_disconnect > "$WORK/disconnect" ||
		die "cannot stage the NBD keeper"
	put_file /usr/local/sbin/diskless-nbd-keeper 755 < "$WORK/keeper"
	put_file /etc/systemd/system/diskless-nbd-keeper.service 644 < "$WORK/keeper.service"
	put_file "$shutdown_dir/diskless-nbd-disconnect" 755 < "$WORK/disconnect"
	put_link /etc/systemd/system/diskless-nbd-keeper.service /etc/systemd/system/sysinit.target.wants/diskless-nbd-keeper.service
}

# verify_initramfs: every kernel's initramfs holds the NBD client, the nbd
# module, and the NIC drivers that kernel has as modules. Prints what is
# missing and returns 1 when anything is.
verify_initramfs() {
	vi_ok=0
	for kv in $(kernels); do
		img=$(initramfs_of "$kv") || { say "kernel $kv has no initramfs yet"; vi_ok=1; continue; }
		if [ "$FLAVOUR" = initramfs-tools ]; then
			lsinitramfs "$img" > "$WORK/list" 2>/dev/null || { say "cannot list $img"; vi_ok=1; continue; }
		else
			lsinitrd "$img" > "$WORK/list" 2>/dev/null || { say "cannot list $img"; vi_ok=1; continue; }
		fi
		missing=
		grep -Eq '(^|[ /])s?bin/nbd-client$' "$WORK/list" || missing="$missing nbd-client"
		if [ "$FLAVOUR" = initramfs-tools ]; then
			# The nbd script, the busybox it calls, and klibc's ipconfig that configures the network.
			grep -q 'scripts/local-top/nbd$' "$WORK/list" || missing="$missing scripts/local-top/nbd"
			grep -Eq '(^|/)bin/busybox$' "$WORK/list" || missing="$missing busybox"
			grep -Eq '(^|/)bin/ipconfig$' "$WORK/list" || missing="$missing ipconfig"
		else
			# dracut's nbd and network modules: their hooks and the tools they run.
			grep -Eq '(^|/)s?bin/nbdroot$' "$WORK/list" || missing="$missing nbdroot"
			grep -Eq '(^|/)s?bin/netroot$' "$WORK/list" || missing="$missing netroot"
			grep -Eq '(^|/)s?bin/ip( ->.*)?$' "$WORK/list" || missing="$missing ip"
			grep -Eq '(^|/)s?bin/pgrep( ->.*)?$' "$WORK/list" || missing="$missing pgrep"
		fi
		found=
		for m in nbd $(available_drivers); do
			mf=$(module_file "$kv" "$m")
			case "$mf" in
			'') continue ;;
			'(builtin)') found="$found $m(builtin)"; continue ;;
			esac
			base=${mf##*/}
			base=${base%.xz}
			base=${base%.zst}
			base=${base%.gz}
			if grep -Eq "/${base%.ko}\\.ko(\\.xz|\\.zst|\\.gz)?\$" "$WORK/list"; then
				found="$found $m"
			else
				missing="$missing $m"
			fi
		done
		if [ -n "$missing" ]; then
			say "$img lacks:$missing"
			vi_ok=1
		else
			say "$img holds nbd-client and:$found"
		fi
	done
	return $vi_ok
}

# Files of the kit that go into the initramfs: a rebuild is due when one is
# newer than an image (as make would see it), when an image is missing, or
# when an image lacks what a root on NBD needs.
INITRAMFS_INPUTS='/etc/initramfs-tools/modules /etc/initramfs-tools/conf.d/resume /etc/dracut.conf.d/diskless.conf /etc/modules-load.d/diskless.conf'

initramfs_stale() {
	for kv in $(kernels); do
		img=$(initramfs_of "$kv") || { say "kernel $kv has no initramfs yet"; return 0; }
		for f in $INITRAMFS_INPUTS; do
			[ -e "$f" ] && [ -n "$(find "$f" -newer "$img" 2>/dev/null)" ] && { say "$f is newer than $img"; return 0; }
		done
	done
	return 1
}

rebuild_initramfs() {
	STEP=initramfs
	if ! initramfs_stale && verify_initramfs; then
		say "up to date: no rebuild"
	else
		if [ "$FLAVOUR" = initramfs-tools ]; then
			for kv in $(kernels); do
				initramfs_of "$kv" > /dev/null && continue
				say "update-initramfs -c -k $kv"
				update-initramfs -c -k "$kv" < /dev/null || die "update-initramfs -c -k $kv failed"
			done
			if initramfs_stale; then
				say "update-initramfs -u -k all"
				update-initramfs -u -k all < /dev/null || die "update-initramfs failed"
			fi
		else
			say "dracut -f --regenerate-all"
			dracut -f --regenerate-all < /dev/null || die "dracut failed"
		fi
		CHANGED=$((CHANGED + 1))
		verify_initramfs || die "the rebuilt initramfs lacks what a root on NBD needs (see above)"
	fi
	for kv in $(kernels); do
		img=$(initramfs_of "$kv") && touched "$img"
	done
}

cmd_prepare() {
	while [ $# -gt 0 ]; do
		case "$1" in
		--nic) [ $# -ge 2 ] || die "--nic needs an interface name"; NIC=$2; shift 2 ;;
		--no-install) NO_INSTALL=1; shift ;;
		-h | --help) usage; exit 0 ;;
		*) STEP=prepare; die "unknown option $1 (see: help)" ;;
		esac
	done
	make_work
	trap cleanup EXIT
	# Everything that can refuse is looked at before anything is changed.
	detect_system
	detect_nic
	plan_fstab
	# The initramfs configuration first: a package install that rebuilds the
	# initramfs (Debian's triggers do) then builds it as it should be.
	write_modules
	write_resume
	install_packages
	write_fstab
	write_network
	write_up_service
	write_keeper
	rebuild_initramfs
	STEP=prepare
	say "touched files (sha256):"
	printf '%s\n' "$TOUCHED" | while IFS= read -r f; do
		[ -n "$f" ] && [ -f "$f" ] && printf '  %s  %s\n' "$(sha_of "$f")" "$f"
	done
	if [ "$CHANGED" = 0 ]; then
		say "done: nothing to change, this machine was prepared already"
	else
		say "done: $CHANGED changes; run prepare again to check: it changes nothing"
	fi
}

# ---------------------------------------------------------------- capture

SERVER=
TOKEN=
DISK=
NAME=
CHUNK=$((8 * MiB))
CHUNK_ARG=
FREEZE=0
RESTART=0
LIMIT_RATE=
FROZEN=
WHOLE_PID=
HTTP_STATUS=

cleanup() {
	thaw
	[ -n "$WHOLE_PID" ] && kill "$WHOLE_PID" 2>/dev/null
	[ -n "$WORK" ] && rm -rf "$WORK"
}

thaw() {
	for mp in $FROZEN; do
		fsfreeze -u "$mp" 2>/dev/null && say "thawed $mp"
	done
	FROZEN=
}

# api METHOD PATH [curl options...]: the response body lands in $WORK/resp,
# the status in HTTP_STATUS (000 when the server could not be reached).
api() {
	api_method=$1
	api_path=$2
	shift 2
	HTTP_STATUS=$(curl -sS -o "$WORK/resp" -w '%{http_code}' --connect-timeout 10 -H "@$WORK/auth" -H 'Expect:' \
		${LIMIT_RATE:+--limit-rate "$LIMIT_RATE"} -X "$api_method" "$@" "$SERVER$api_path" 2> "$WORK/curl.err") || HTTP_STATUS=000
	case "$HTTP_STATUS" in ??? ) ;; *) HTTP_STATUS=000 ;; esac
}

server_message() {
	m=$(sed -n 's/.*"message":"\([^"]*\)".*/\1/p' "$WORK/resp" 2>/dev/null | head -n 1)
	if [ -n "$m" ]; then printf '%s' "$m"
	elif [ "$HTTP_STATUS" = 000 ]; then printf 'cannot reach %s: %s' "$SERVER" "$(cat "$WORK/curl.err" 2>/dev/null)"
	else printf 'HTTP %s' "$HTTP_STATUS"
	fi
}

json_field() {
	# A string or number field of the (flat) JSON response.
	sed -n "s/.*\"$1\":\"\\{0,1\\}\\([A-Za-z0-9_.:-]*\\).*/\\1/p" "$WORK/resp" | head -n 1
}

block_name() {
	# The kernel name of the block device with major:minor $1.
	[ -e "/sys/dev/block/$1" ] && basename "$(readlink -f "/sys/dev/block/$1")"
}

# whole_disks NAME: the disk(s) under block device NAME, through partitions
# and device-mapper (LVM, crypt) layers.
whole_disks() {
	wd_sys=/sys/class/block/$1
	[ -e "$wd_sys" ] || return 0
	if [ -e "$wd_sys/partition" ]; then
		basename "$(dirname "$(readlink -f "$wd_sys")")"
	elif [ -n "$(ls "$wd_sys/slaves" 2>/dev/null)" ]; then
		for s in "$wd_sys"/slaves/*; do [ -e "$s" ] && whole_disks "${s##*/}"; done
	else
		printf '%s\n' "$1"
	fi
}

root_disk() {
	rd_majmin=$(awk '$5 == "/" { m = $3 } END { print m }' /proc/self/mountinfo)
	rd_name=$(block_name "$rd_majmin")
	if [ -z "$rd_name" ]; then
		rd_src=$(awk '$5 == "/" { for (i = 7; i <= NF; i++) if ($i == "-") { s = $(i + 2) } } END { print s }' /proc/self/mountinfo)
		case "$rd_src" in /dev/*) rd_name=$(basename "$(readlink -f "$rd_src")") ;; esac
	fi
	[ -n "$rd_name" ] || die "cannot tell which disk holds / (not a block device?): name it with --disk"
	rd_disks=$(whole_disks "$rd_name" | awk '!seen[$0]++')
	[ -n "$rd_disks" ] || die "cannot tell which disk holds / ($rd_name): name it with --disk"
	[ "$(printf '%s\n' "$rd_disks" | wc -l)" = 1 ] || die "/ spans several disks ($(printf '%s' "$rd_disks" | tr '\n' ' ')): name one with --disk"
	printf '/dev/%s' "$rd_disks"
}

# mounts_on DISKNAME: mount points of file systems on that disk, one a line.
mounts_on() {
	awk '{ print $3, $5 }' /proc/self/mountinfo | while read -r mm mp; do
		n=$(block_name "$mm") || continue
		[ -n "$n" ] || continue
		for d in $(whole_disks "$n"); do
			[ "$d" = "$1" ] && { printf '%s\n' "$mp"; break; }
		done
	done
}

upload_chunk() {
	# upload_chunk N SHA FILE|zero: bounded retries for what may pass (network, 5xx, busy).
	uc_try=0
	while :; do
		if [ "$3" = zero ]; then
			api PUT "/capture/$UPLOAD/chunk/$1" -H "x-sha256: $2" -H 'x-zero: 1' --max-time 120
		else
			api PUT "/capture/$UPLOAD/chunk/$1" -H "x-sha256: $2" -H 'content-type: application/octet-stream' \
				--max-time 600 -T "$3"
		fi
		case "$HTTP_STATUS" in
		2??) return 0 ;;
		000 | 5?? | 429 | 408) ;;
		422) ;; # the bytes were damaged on the way: send them again
		*) die "chunk $1 refused: $(server_message)" ;;
		esac
		uc_try=$((uc_try + 1))
		[ $uc_try -lt 6 ] || die "chunk $1 failed $uc_try times: $(server_message)"
		warn "chunk $1: $(server_message); again in $((uc_try * uc_try)) s"
		sleep $((uc_try * uc_try))
	done
}

progress() {
	# progress DONE: a line per percent (or one line redrawn on a terminal).
	pct=$(( $1 * 100 / COUNT ))
	mib=$(( ($1 * CHUNK > SIZE ? SIZE : $1 * CHUNK) / MiB ))
	fmt='progress: %d/%d chunks, %d/%d MiB, %d%% (sent %d, already there %d)'
	if [ -t 2 ]; then
		# shellcheck disable=SC2059
		printf "\\r$fmt" "$1" "$COUNT" "$mib" "$((SIZE / MiB))" "$pct" "$SENT" "$KEPT" >&2
		[ "$1" = "$COUNT" ] && printf '\n' >&2
	elif [ "$pct" != "${LAST_PCT:-}" ] || [ "$1" = "$COUNT" ]; then
		# shellcheck disable=SC2059
		printf "$fmt\\n" "$1" "$COUNT" "$mib" "$((SIZE / MiB))" "$pct" "$SENT" "$KEPT" >&2
		LAST_PCT=$pct
	fi
}

cmd_capture() {
	STEP=capture
	while [ $# -gt 0 ]; do
		case "$1" in
		--disk) [ $# -ge 2 ] || die "--disk needs a device or file"; DISK=$2; shift 2 ;;
		--name) [ $# -ge 2 ] || die "--name needs a name"; NAME=$2; shift 2 ;;
		--chunk-size) [ $# -ge 2 ] || die "--chunk-size needs a size (e.g. 8M)"; CHUNK_ARG=$2; shift 2 ;;
		--token) [ $# -ge 2 ] || die "--token needs the capture token"; TOKEN=$2; shift 2 ;;
		--server) [ $# -ge 2 ] || die "--server needs a URL"; SERVER=$2; shift 2 ;;
		--limit-rate) [ $# -ge 2 ] || die "--limit-rate needs a rate (curl's form, e.g. 50M)"; LIMIT_RATE=$2; shift 2 ;;
		--freeze) FREEZE=1; shift ;;
		--restart) RESTART=1; shift ;;
		-h | --help) usage; exit 0 ;;
		*) die "unknown option $1 (see: help)" ;;
		esac
	done
	for tool in curl dd sha256sum; do have "$tool" || die "capture needs $tool"; done
	SERVER=${SERVER:-${DISKLESS_SERVER:-$KIT_DEFAULT_SERVER}}
	SERVER=${SERVER%/}
	case "$SERVER" in
	http://* | https://*) ;;
	*) die "no server URL: fetch the kit from the server, or set DISKLESS_SERVER" ;;
	esac
	TOKEN=${TOKEN:-${DISKLESS_TOKEN:-}}
	# The chunk size in bytes, or with K or M (KiB, MiB); the server has the last word on its limits.
	CHUNK_ARG=${CHUNK_ARG:-8M}
	case "$CHUNK_ARG" in
	*[!0-9KMkm]* | [!0-9]*) die "--chunk-size takes bytes, or a number with K or M (e.g. 8M)" ;;
	*[Kk]) CHUNK=$(( ${CHUNK_ARG%?} * 1024 )) ;;
	*[Mm]) CHUNK=$(( ${CHUNK_ARG%?} * MiB )) ;;
	*) CHUNK=$CHUNK_ARG ;;
	esac
	[ "$CHUNK" -gt 0 ] || die "--chunk-size must be positive"

	make_work
	# Here-documents and temporary files of the tools stay off the disk being captured (and maybe frozen).
	TMPDIR=$WORK
	export TMPDIR
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	# The token goes to curl in a header file, never on a command line others can read.
	( umask 077; printf 'Authorization: Bearer %s\n' "$TOKEN" > "$WORK/auth" ) || die "cannot write $WORK/auth"
	[ -n "$TOKEN" ] || warn "no capture token (DISKLESS_TOKEN or --token): the server will likely refuse"

	[ -n "$DISK" ] || DISK=$(root_disk) || exit 1
	if [ -b "$DISK" ]; then
		dn=$(basename "$(readlink -f "$DISK")")
		[ -r "/sys/class/block/$dn/size" ] || die "$DISK: no size in /sys/class/block/$dn"
		SIZE=$(( $(cat "/sys/class/block/$dn/size") * 512 ))
		MOUNTED=$(mounts_on "$dn" | awk '!seen[$0]++')
	elif [ -f "$DISK" ]; then
		SIZE=$(wc -c < "$DISK" | tr -d ' ')
		dn=
		MOUNTED=
	else
		die "$DISK is neither a block device nor a file"
	fi
	[ -r "$DISK" ] || die "cannot read $DISK (run as root)"
	[ "$SIZE" -gt 0 ] || die "$DISK is empty"
	COUNT=$(( (SIZE + CHUNK - 1) / CHUNK ))
	if [ -z "$NAME" ]; then
		NAME=$(hostname 2>/dev/null || cat /etc/hostname 2>/dev/null)
		NAME=$(printf '%s' "${NAME:-disk}" | tr -c 'A-Za-z0-9._-' '-' | cut -c 1-64)
	fi
	case "$NAME" in
	[A-Za-z0-9]*) ;;
	*) die "--name must start with a letter or digit" ;;
	esac
	case "$NAME" in
	*[!A-Za-z0-9._-]*) die "--name may hold only letters, digits, dot, underscore and dash" ;;
	esac
	say "disk $DISK: $SIZE bytes, $COUNT chunks of $CHUNK bytes; image name $NAME; server $SERVER"

	if [ -n "$MOUNTED" ]; then
		if [ "$FREEZE" = 1 ]; then
			have fsfreeze || die "--freeze needs fsfreeze (util-linux)"
		else
			warn "file systems of $DISK are mounted ($(printf '%s' "$MOUNTED" | tr '\n' ' ')): a copy of a running system is crash-consistent at best (as after a power cut), and files written during the copy may be torn; --freeze suspends their writes for the copy (fsfreeze), or capture from a rescue system"
		fi
	fi

	# The resume key: the same machine, disk, size, name and chunk size find their upload again.
	mid=$(cat /etc/machine-id 2>/dev/null || hostname)
	KEY=$(printf '%s|%s|%s|%s|%s' "$mid" "$DISK" "$SIZE" "$NAME" "$CHUNK" | sha_of | cut -c 1-40)
	restart=false
	[ "$RESTART" = 1 ] && restart=true
	api POST /capture -H 'content-type: application/json' --max-time 60 \
		--data-binary "{\"name\":\"$NAME\",\"size\":$SIZE,\"chunkSize\":$CHUNK,\"key\":\"$KEY\",\"restart\":$restart}"
	case "$HTTP_STATUS" in
	200 | 201) ;;
	*) die "the server refused the capture: $(server_message)" ;;
	esac
	UPLOAD=$(json_field id)
	case "$UPLOAD" in
	'' | *[!A-Za-z0-9_-]*) die "the server's answer has no upload id" ;;
	esac
	if [ "$HTTP_STATUS" = 200 ]; then
		say "resuming upload $UPLOAD: the server has $(json_field present) of $COUNT chunks"
	else
		say "upload $UPLOAD started"
	fi
	api GET "/capture/$UPLOAD/chunks" --max-time 120
	[ "$HTTP_STATUS" = 200 ] || die "cannot list the chunks the server has: $(server_message)"
	mv "$WORK/resp" "$WORK/have"

	if [ -n "$MOUNTED" ] && [ "$FREEZE" = 1 ]; then
		# Thawed by cleanup() on every exit, and by a watchdog outside this
		# process group should this shell be killed outright.
		for mp in $(printf '%s\n' "$MOUNTED" | sort -r); do
			fsfreeze -f "$mp" || die "cannot freeze $mp (its file system may not support it)"
			FROZEN="$mp $FROZEN"
			say "froze $mp"
		done
		kit_pid=$$
		frozen=$FROZEN
		setsid sh -c 'while kill -0 "$0" 2>/dev/null; do sleep 2; done; for mp in $1; do fsfreeze -u "$mp" 2>/dev/null; done' \
			"$kit_pid" "$frozen" < /dev/null > /dev/null 2>&1 &
	fi

	# The whole disk's sha256 over exactly the bytes the server holds, in one pass.
	mkfifo "$WORK/whole" || die "cannot make a fifo in $WORK"
	sha256sum < "$WORK/whole" > "$WORK/whole.sum" &
	WHOLE_PID=$!
	exec 3> "$WORK/whole"
	dd if=/dev/zero of="$WORK/zero" bs="$CHUNK" count=1 2> /dev/null || die "cannot make a chunk of zeros in $WORK"
	zero_full=$(sha_of "$WORK/zero")
	# Free space is mostly zeros. `cmp -n N FILE /dev/zero SKIP 0` (GNU
	# diffutils and busybox alike) finds a zero chunk straight on the disk:
	# no copy into memory, no hash of its own, nothing to send.
	CMP_ZERO=
	printf 'x\000' > "$WORK/cmp.probe"
	if have cmp && cmp -s -n 1 "$WORK/cmp.probe" /dev/zero 1 0 2> /dev/null && ! cmp -s -n 1 "$WORK/cmp.probe" /dev/zero 0 0 2> /dev/null; then
		CMP_ZERO=1
	fi
	exec 4< "$WORK/have"
	have_n=-1
	have_sha=
	SENT=0
	KEPT=0
	LAST_PCT=
	n=0
	while [ $n -lt $COUNT ]; do
		len=$CHUNK
		[ $(( (n + 1) * CHUNK )) -le "$SIZE" ] || len=$(( SIZE - n * CHUNK ))
		if [ "$len" = "$CHUNK" ] && [ -n "$CMP_ZERO" ] && cmp -s -n "$CHUNK" "$DISK" /dev/zero $((n * CHUNK)) 0; then
			sha=$zero_full
			cat "$WORK/zero" >&3 || die "hashing the whole disk failed"
		else
			# Few processes per chunk (dd, sha256sum, cat, curl): the rest are shell builtins.
			dd if="$DISK" of="$WORK/chunk" bs="$CHUNK" skip="$n" count=1 iflag=fullblock 2> "$WORK/dd.err" ||
				die "reading chunk $n of $DISK failed: $(tail -n 1 "$WORK/dd.err")"
			# dd's last line of statistics starts with the bytes copied.
			got=
			while IFS= read -r dd_line; do got=${dd_line%% *}; done < "$WORK/dd.err"
			[ "$got" = "$len" ] || die "chunk $n of $DISK: read ${got:-no} bytes, not $len (did the disk change size?)"
			sha=$(sha256sum < "$WORK/chunk")
			sha=${sha%% *}
			cat "$WORK/chunk" >&3 || die "hashing the whole disk failed"
		fi
		# The server's list is sorted: advance it to chunk n.
		while [ "$have_n" -ge 0 ] && [ "$have_n" -lt "$n" ] || [ "$have_n" = -1 ]; do
			if read -r have_n have_sha <&4; then
				case "$have_n" in '' | *[!0-9]*) have_n=-1; continue ;; esac
			else
				have_n=$COUNT
				have_sha=
			fi
		done
		if [ "$have_n" = "$n" ] && [ "$have_sha" = "$sha" ]; then
			KEPT=$((KEPT + 1))
		else
			if [ "$len" = "$CHUNK" ] && [ "$sha" = "$zero_full" ]; then
				upload_chunk "$n" "$sha" zero
			else
				upload_chunk "$n" "$sha" "$WORK/chunk"
			fi
			SENT=$((SENT + 1))
		fi
		n=$((n + 1))
		progress "$n"
	done
	exec 3>&- 4<&-
	wait "$WHOLE_PID"
	WHOLE_PID=
	thaw
	WHOLE=$(cut -c 1-64 "$WORK/whole.sum")
	case "$WHOLE" in
	[0-9a-f]*) [ ${#WHOLE} = 64 ] || die "no sha256 of the whole disk" ;;
	*) die "no sha256 of the whole disk" ;;
	esac
	say "sent $SENT chunks, $KEPT were on the server already; whole disk sha256 $WHOLE"
	say "finishing: the server verifies the whole disk and publishes it"
	api POST "/capture/$UPLOAD/finish" -H 'content-type: application/json' --data-binary "{\"sha256\":\"$WHOLE\"}"
	case "$HTTP_STATUS" in
	200) ;;
	*) die "finish failed: $(server_message)" ;;
	esac
	say "published: $(cat "$WORK/resp")"
	say "CAPTURED $NAME $WHOLE"
}

# ---------------------------------------------------------------- main

main() {
	# When the script comes on stdin (curl ... | sh), no command may read the rest of it.
	exec < /dev/null
	[ $# -gt 0 ] || { usage >&2; exit 2; }
	cmd=$1
	shift
	case "$cmd" in
	prepare) cmd_prepare "$@" ;;
	capture) cmd_capture "$@" ;;
	help | -h | --help) usage ;;
	*) usage >&2; exit 2 ;;
	esac
	exit 0
}

main "$@"
