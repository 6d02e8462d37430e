#!/bin/sh
# Builds the test guest's initramfs: static busybox, the distribution's
# nbd-client with the shared libraries it loads, the kernel modules the guest
# needs (NBD, ext4, virtio-net, with their dependencies) and init.sh as /init.
#
#   build-initramfs.sh KERNEL_VERSION INIT_SCRIPT OUTPUT.cpio.gz
#
# Needs no root: the archive is written with cpio's --owner, and /dev is a
# devtmpfs mounted by /init, so no device node has to be created here.
# Environment (for other distributions' layouts):
#   GUEST_MODULE_ROOT  the root under which lib/modules/<version> lives (default /)
#   GUEST_BUSYBOX      a statically linked busybox (default: the one on PATH)
#   GUEST_NBD_CLIENT   nbd-client (default: the one on PATH or /usr/sbin)
set -eu

if [ "$#" -ne 3 ]; then
  echo "usage: $0 KERNEL_VERSION INIT_SCRIPT OUTPUT.cpio.gz" >&2
  exit 64
fi
kver=$1
init_script=$2
out=$3
module_root=${GUEST_MODULE_ROOT:-/}
PATH=$PATH:/usr/sbin:/sbin
busybox=${GUEST_BUSYBOX:-$(command -v busybox)}
nbd_client=${GUEST_NBD_CLIENT:-$(command -v nbd-client)}

# The modules the guest loads. Only these and their dependencies go in.
# nbd: the device; ext4: the file system on the export (pulls jbd2, mbcache,
# crc16 and, through its softdep, crc32c); virtio_pci + virtio_net: the NIC.
MODULES="virtio_pci virtio_net nbd ext4"

fail() { echo "build-initramfs: $*" >&2; exit 1; }

[ -f "$init_script" ] || fail "no init script at $init_script"
[ -n "$busybox" ] && [ -x "$busybox" ] || fail "busybox not found"
[ -n "$nbd_client" ] && [ -x "$nbd_client" ] || fail "nbd-client not found"
[ -d "$module_root/lib/modules/$kver" ] || fail "no modules for kernel $kver under $module_root"
# A dynamically linked busybox would need its libraries too; Debian's
# busybox-static is what the guest expects.
if ldd "$busybox" >/dev/null 2>&1; then fail "$busybox is dynamically linked; install busybox-static"; fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/dl-initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
mkdir -p "$stage/bin" "$stage/sbin" "$stage/dev" "$stage/proc" "$stage/sys" "$stage/mnt" "$stage/tmp" "$stage/run" "$stage/modules"

cp "$busybox" "$stage/bin/busybox"
cp "$init_script" "$stage/init"
chmod 0755 "$stage/init" "$stage/bin/busybox"

# nbd-client and every library the dynamic loader resolves for it (ldd lists
# the loader itself as an absolute path without "=>").
cp "$nbd_client" "$stage/sbin/nbd-client"
ldd "$nbd_client" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }' | while read -r lib; do
  [ -f "$lib" ] || fail "library $lib of nbd-client is missing"
  mkdir -p "$stage$(dirname "$lib")"
  cp -L "$lib" "$stage$lib"
done

# Modules in load order, from modprobe's own dependency resolution. The
# parameters modprobe prints come from the host's /etc/modprobe.d and are
# dropped; /init passes its own. Compressed modules are unpacked because
# busybox insmod reads plain ELF only.
list="$stage/modules/load.list"
: > "$list"
n=0
for m in $MODULES; do
  modprobe -d "$module_root" -S "$kver" --show-depends "$m" > "$stage/deps.txt" || fail "modprobe cannot resolve $m for $kver"
  while read -r verb path _rest; do
    [ "$verb" = insmod ] || continue   # "builtin X" lines need nothing
    base=$(basename "$path")
    name=${base%%.ko*}
    grep -qx "$name" "$list" 2>/dev/null && continue
    n=$((n + 1))
    dest="$stage/modules/$name.ko"
    case "$path" in
      *.ko) cp "$path" "$dest" ;;
      *.ko.xz) xz -dc "$path" > "$dest" ;;
      *.ko.zst) zstd -qdc "$path" > "$dest" ;;
      *.ko.gz) gzip -dc "$path" > "$dest" ;;
      *) fail "unknown module file $path" ;;
    esac
    echo "$name" >> "$list"
  done < "$stage/deps.txt"
done
rm -f "$stage/deps.txt"
[ "$n" -gt 0 ] || fail "no module files found (are they all built in?)"
for m in nbd ext4 virtio_net; do
  grep -qx "$m" "$list" || grep -q "/$m.ko" "$module_root/lib/modules/$kver/modules.builtin" || fail "module $m is neither a module nor built in"
done

mkdir -p "$(dirname "$out")"
tmp_out="$out.tmp.$$"
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --owner=0:0 --quiet) | gzip -1 > "$tmp_out"
mv "$tmp_out" "$out"
echo "build-initramfs: $out ($(wc -c < "$out") bytes, modules: $(tr '\n' ' ' < "$list"))"
