#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: user space races the driver to online memory blocks the driver
# has just emptied. With user space onlining memory (no auto-onlining), 3G is
# requested: the driver adds 1G offline and waits. Then the request drops to 0
# while a loop onlines every offline block of the region as fast as it can,
# and the driver (debugfs remove_delay_ms) waits 300 ms between the last
# UNPLUG of a block and its removal, while user space tries to online each
# such block (it finds them in the driver's debugfs block dump). A block
# onlined in that window would hand memory the device no longer backs to the
# page allocator: the driver's region must refuse it. Throughout, MemTotal
# never exceeds boot memory plus the device's plugged size, and the host
# never backs more than the plugged size plus 64M (the region is a file on
# the host's tmpfs, read-only at $VMR_BACKING). At 0 nothing is left.
#
# Expects vm0: an 8G region with 2M blocks, nothing requested at boot, no
# auto-onlining.
set -u
source "$(dirname "$0")/lib.sh"
requires env:VMR_BACKING vm0:8G

margin=$((64 << 20))
block=$(( 0x$(cat /sys/devices/system/memory/block_size_bytes) ))
addr=$(qmp_info vm0 memaddr)
stop=/tmp/online_race.stop refused=/tmp/online_race.refused samples=/tmp/online_race.bad

ktap_header 12
base_kb=$(memtotal_kb)
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
vdev=$(virtio_mem_devices)
echo 300 >"/sys/kernel/debug/virtio_mem_rust-$vdev/remove_delay_ms"
dump=/sys/kernel/debug/virtio_mem_rust-$vdev/blocks
vmctl set-size vm0 3G >/dev/null
ktap_check "3G requested: 1G added offline, then the driver waits" \
    quiet vmem_status wait "$vdev" --until settled --timeout 120
ktap_eq "the driver waits for onlining" "added memory waits to be onlined" \
    "$(vmem_attr "$vdev" reason)"
ktap_eq "1G is added" "$(to_bytes 1G)" "$(virtio_mem_ram_bytes)"

# Onlines, as soon as the driver's block dump (debugfs) shows one, every block
# that is offline with nothing plugged: the driver has just unplugged it and
# is about to remove it. Counts the refusals.
onliner() {
    local at state plugged n f
    while [ ! -e "$stop" ]; do
        while read -r at state plugged _; do
            [ "$state" = offline ] && [ "${plugged%%/*}" = 0 ] || continue
            n=$((at / block)) f=/sys/devices/system/memory/memory$((at / block))/state
            if ! echo online_movable 2>/dev/null >"$f"; then
                [ -e "$f" ] && echo "memory$n" >>"$refused"
            fi
        done < <(grep -v '^#' "$dump")
    done
}

# Samples the device's plugged size (read live from its config, not over QMP,
# whose port serves one client at a time), then MemTotal and the host's
# backing: neither may exceed what the device backs (the size only shrinks
# meanwhile).
sampler() {
    local size kb alloc
    while [ ! -e "$stop" ]; do
        size=$(vmem_attr "$vdev" device_plugged_size)
        kb=$(memtotal_kb)
        alloc=$(backing_allocated)
        if [ $((kb - base_kb)) -gt $((size / 1024)) ] || [ "$alloc" -gt $((size + margin)) ]; then
            echo "plugged $size, MemTotal +$((kb - base_kb)) kB, host allocated $alloc" >>"$samples"
        fi
    done
}

rm -f "$stop" "$refused" "$samples"
touch "$refused" "$samples"
onliner &
on_pid=$!
sampler &
sa_pid=$!
vmctl set-size vm0 0 >/dev/null
ktap_check "0 reached" quiet vmem_status wait "$vdev" --size 0 --timeout 300
touch "$stop"
wait "$on_pid" "$sa_pid"
ktap_check "user space tried to online emptied blocks and was refused" test -s "$refused"
ktap_diag "onlining refused $(wc -l <"$refused") times"
bad=$(head -n 5 "$samples")
[ -z "$bad" ] || ktap_diag "$bad"
ktap_eq "MemTotal and the host's backing never exceeded the plugged size" "" "$bad"
ktap_eq "MemTotal is back to boot memory (kB)" "$base_kb" "$(memtotal_kb)"
ktap_eq "no System RAM (virtio_mem) is left" 0 "$(virtio_mem_ram_bytes)"
ktap_check "the host backs at most 64M" test "$(backing_allocated)" -le $margin
check_sizes "0" "$vdev" vm0 "$base_kb"
ktap_finish
