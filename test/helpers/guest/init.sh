#!/bin/busybox sh
# /init of the test guest. It takes its orders from the kernel command line,
# drives the kernel's NBD client with nbd-client, and reports every step on
# the serial console as one line "DISKLESS-GUEST: <event> [details]", which
# the host harness (guest.ts) parses. It always ends with poweroff -f.
#
# Command line parameters (all dl.*):
#   dl.server=IP      the NBD server as the guest sees it (10.0.2.2: the host)
#   dl.port=N         its TCP port
#   dl.export=NAME    the export name (NBD_OPT_GO / NBD_OPT_EXPORT_NAME)
#   dl.scenario=S     reconnect | persist
#   dl.mib=N          size of the payload file written, in MiB
#   dl.wait=N         seconds the persist scenario waits for the host's "go"
#
# Events: up, connected <bytes> [queue limits], mounted, wrote <file> <sha256>, synced,
# disconnected, reconnected, readback <file> ok|bad <sha256>, await-restart,
# persist-* (see the persist scenario), done, fail <step> <why>.

/bin/busybox mkdir -p /proc /sys /dev /bin /sbin /usr/bin /usr/sbin
/bin/busybox mount -t devtmpfs devtmpfs /dev
# The archive holds no /dev/console (it is built without root), so the kernel
# started init without stdio: take the console now.
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp

say() { echo "DISKLESS-GUEST: $*"; }
fail() {
  say "fail $1 $2"
  echo "--- dmesg (last 40 lines)"
  dmesg | tail -n 40
  echo "--- end"
  sync
  poweroff -f
  sleep 5
  exit 1
}

# dl.* parameters from the kernel command line, nothing else.
for word in $(cat /proc/cmdline); do
  case "$word" in
    dl.server=*) SERVER=${word#*=} ;;
    dl.port=*) PORT=${word#*=} ;;
    dl.export=*) EXPORT=${word#*=} ;;
    dl.scenario=*) SCENARIO=${word#*=} ;;
    dl.mib=*) MIB=${word#*=} ;;
    dl.wait=*) WAIT=${word#*=} ;;
  esac
done
: "${SERVER:?}" "${PORT:?}" "${EXPORT:?}" "${SCENARIO:=reconnect}" "${MIB:=4}" "${WAIT:=120}"
DEV=/dev/nbd0

# Modules in the order build-initramfs.sh resolved them. nbds_max=1: one
# device is all the guest needs; max_part=0: the export is a bare file system.
while read -r m; do
  case "$m" in
    nbd) insmod /modules/nbd.ko nbds_max=1 max_part=0 || fail modules "insmod nbd" ;;
    # The SSE 4.2 variant refuses CPUs without it; crc32c_generic serves then.
    crc32c-intel) insmod /modules/crc32c-intel.ko 2>/dev/null || true ;;
    *) insmod "/modules/$m.ko" || fail modules "insmod $m" ;;
  esac
done < /modules/load.list

# QEMU user networking: the guest is 10.0.2.15, the host 10.0.2.2. Static,
# so no DHCP round trip and no DNS.
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ]; do
  i=$((i + 1)); [ "$i" -le 50 ] || fail net "no eth0"
  sleep 0.1
done
ip link set eth0 up || fail net "eth0 up"
ip addr add 10.0.2.15/24 dev eth0 || fail net "address"
ip route add default via 10.0.2.2 || fail net "route"
say "up $(uname -r)"

# nbd-client 3.24: "nbd-client -N name host port device". By default it sets
# the device up through netlink and returns at once.
connect() {
  nbd-client -N "$EXPORT" "$SERVER" "$PORT" "$DEV" "$@" || return 1
  i=0
  while [ "$(cat /sys/block/nbd0/size)" = 0 ]; do
    i=$((i + 1)); [ "$i" -le 100 ] || return 1
    sleep 0.1
  done
}
size_bytes() { echo $(($(cat /sys/block/nbd0/size) * 512)); }
# The largest request the kernel will send, for the record.
queue_limits() { q=/sys/block/nbd0/queue; echo "max_sectors_kb=$(cat $q/max_sectors_kb) max_hw_sectors_kb=$(cat $q/max_hw_sectors_kb) block=$(cat $q/logical_block_size)"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
connected_pid() { cat /sys/block/nbd0/pid 2>/dev/null || true; }

# Drops clean page cache and dentries, so later reads go to the server.
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

write_payload() { # file MiB
  dd if=/dev/urandom of="/mnt/$1" bs=1M count="$2" 2>/dev/null || fail write "dd $1"
  say "wrote $1 $(sha "/mnt/$1")"
}

read_back() { # file expected-sha
  [ -f "/mnt/$1" ] || { say "readback $1 bad missing"; return 1; }
  got=$(sha "/mnt/$1")
  if [ "$got" = "$2" ]; then say "readback $1 ok $got"; else say "readback $1 bad $got"; return 1; fi
}

scenario_reconnect() {
  connect || fail connect "nbd-client exit $?"
  say "connected $(size_bytes) $(queue_limits)"
  mount -t ext4 "$DEV" /mnt || fail mount "first mount"
  say mounted
  write_payload payload.bin "$MIB"
  A=$(sha /mnt/payload.bin)
  sync
  umount /mnt || fail umount "first umount"
  say synced
  nbd-client -d "$DEV" || fail disconnect "nbd-client -d exit $?"
  i=0
  while [ -n "$(connected_pid)" ] || [ "$(cat /sys/block/nbd0/size)" != 0 ]; do
    i=$((i + 1)); [ "$i" -le 100 ] || fail disconnect "device still connected"
    sleep 0.1
  done
  say disconnected
  drop_caches
  connect || fail reconnect "nbd-client exit $?"
  say "reconnected $(size_bytes)"
  mount -t ext4 "$DEV" /mnt || fail mount "second mount"
  say mounted
  read_back payload.bin "$A" || fail readback payload.bin
  # A write on the second connection too, so the host sees both.
  write_payload second.bin 1
  sync
  umount /mnt || fail umount "second umount"
  nbd-client -d "$DEV" || fail disconnect "second nbd-client -d exit $?"
  say done
}

# The server is restarted while the guest holds the device mounted.
# nbd-client 3.24 reconnects (-persist) only on the ioctl path (-nonetlink):
# set up through netlink it returns right away and nothing watches the
# connection. The host answers "await-restart" by restarting the server and
# then writes "go" on the serial line.
scenario_persist() {
  # -nofork keeps nbd-client on the console, so its reconnect messages show.
  nbd-client -N "$EXPORT" "$SERVER" "$PORT" "$DEV" -nonetlink -persist -nofork &
  i=0
  while [ "$(cat /sys/block/nbd0/size)" = 0 ]; do
    i=$((i + 1)); [ "$i" -le 100 ] || fail connect "nbd-client -persist did not connect"
    sleep 0.1
  done
  say "connected $(size_bytes) pid=$(connected_pid)"
  mount -t ext4 "$DEV" /mnt || fail mount "first mount"
  say mounted
  write_payload payload.bin "$MIB"
  A=$(sha /mnt/payload.bin)
  sync
  say synced
  stty -echo 2>/dev/null
  say await-restart
  answer=
  read -r -t "$WAIT" answer || true
  [ "$answer" = go ] || fail persist "no go from the host within ${WAIT}s (got '$answer')"
  say "persist-resumed pid=$(connected_pid) size=$(size_bytes)"
  # Reads after the restart must come from the server, not the page cache.
  drop_caches
  if read_back payload.bin "$A"; then
    if dd if=/dev/urandom of=/mnt/second.bin bs=1M count=1 2>/dev/null && sync; then
      say "wrote second.bin $(sha /mnt/second.bin)"
      say persist-ok
    else
      say "persist-write-failed"
    fi
  else
    say persist-read-failed
  fi
  # Whatever happened to the old connection, a fresh one must see the data
  # written before the restart.
  umount /mnt 2>/dev/null || umount -l /mnt 2>/dev/null || true
  nbd-client -d "$DEV" 2>/dev/null || true
  i=0
  while [ -n "$(connected_pid)" ]; do
    i=$((i + 1)); [ "$i" -le 100 ] || fail disconnect "device still connected after the restart"
    sleep 0.1
  done
  say disconnected
  drop_caches
  connect || fail reconnect "nbd-client exit $?"
  say "reconnected $(size_bytes)"
  mount -t ext4 "$DEV" /mnt || fail mount "mount after the restart"
  say mounted
  read_back payload.bin "$A" || fail readback payload.bin
  if [ -f /mnt/second.bin ]; then say "present second.bin $(sha /mnt/second.bin)"; fi
  umount /mnt || fail umount "last umount"
  nbd-client -d "$DEV" || fail disconnect "last nbd-client -d exit $?"
  say done
}

case "$SCENARIO" in
  reconnect) scenario_reconnect ;;
  persist) scenario_persist ;;
  *) fail args "unknown scenario $SCENARIO" ;;
esac
sync
poweroff -f
