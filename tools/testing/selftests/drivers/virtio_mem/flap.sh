#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: the driver plugs and unplugs sub-blocks of a partly plugged
# online block while user space offlines and onlines that very block in a
# loop. Handing pages over (plug) and taking them back (unplug) must be atomic
# with respect to offlining, which drops the references of the unplugged
# pages and takes them back if it is cancelled: a hand-over between that
# drop and the offline, or a check and a free on either side of it, corrupts
# page reference counts (the debug kernel reports "Bad page" or a VM_BUG).
# After 10 rounds of 200M -> 256M -> 200M the sizes agree, exactly the 56M
# unplugged are PageOffline (in that block, or in the other one if the driver
# found the flapping block in a transition), and the kernel log is clean.
#
# Expects vm0: a 4G region with 2M blocks, memhp_default_state=online_movable.
set -u
source "$(dirname "$0")/lib.sh"
requires movable vm0:4G

MIB=$((1 << 20)) page=$(getconf PAGESIZE)
block=$(( 0x$(cat /sys/devices/system/memory/block_size_bytes) ))
addr=$(qmp_info vm0 memaddr)
n1=$((addr / block + 1))
stop=/tmp/flap.stop flaps=/tmp/flap.count

ktap_header 9
base_kb=$(memtotal_kb)
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
vdev=$(virtio_mem_devices)
vmctl set-size vm0 200M >/dev/null
ktap_check "200M: one block and a partly plugged one" \
    quiet vmem_status wait "$vdev" --size 200M --timeout 120

# Offlines and onlines the partly plugged block until told to stop; counts the
# cycles that got through.
flapper() {
    local f=/sys/devices/system/memory/memory$n1/state
    while [ ! -e "$stop" ]; do
        echo offline 2>/dev/null >"$f" && echo online_movable 2>/dev/null >"$f" && echo >>"$flaps"
        [ "$(cat "$f")" = online ] || echo online_movable 2>/dev/null >"$f"
    done
}

rm -f "$stop" "$flaps"
touch "$flaps"
flapper &
pid=$!
ok=0
for round in 1 2 3 4 5 6 7 8 9 10; do
    vmctl set-size vm0 256M >/dev/null
    vmem_status wait "$vdev" --size 256M --timeout 120 >/dev/null || break
    vmctl set-size vm0 200M >/dev/null
    vmem_status wait "$vdev" --size 200M --timeout 120 >/dev/null || break
    ok=$round
done
touch "$stop"
wait "$pid"
ktap_eq "10 rounds of plugging and unplugging into the flapping block" 10 "$ok"
ktap_diag "user space offlined and onlined the block $(wc -l <"$flaps") times meanwhile"
ktap_check "and got through at least once" test -s "$flaps"
ktap_eq "both blocks are online" "online online" "$(block_state $((n1 - 1))) $(block_state $n1)"
ktap_eq "the 56M unplugged are PageOffline" $((56 * MIB / page)) \
    "$(page_offline_count $addr $((2 * block)))"
check_sizes "200M" "$vdev" vm0 "$base_kb"
ktap_check "the guest is left clean for a next script (leave_clean)" leave_clean
ktap_finish
