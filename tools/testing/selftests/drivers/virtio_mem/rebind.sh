#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: unbind, bind, unload and load with memory plugged and some of it
# in use. Unbinding gives back what is free (within the safety margin) and
# leaves what is in use added and plugged, parked with the region; the next
# binding, also of a freshly loaded module, takes it over: its blocks and
# plugged sub-blocks are rediscovered (from the pages of online blocks, whose
# unplugged sub-blocks are kept offline, and STATE requests for the rest), the
# device agrees, the sysfs sizes are right, and the driver follows resizes
# again. The workload survives with its data intact, nothing is OOM-killed
# and the kernel logs no splat.
#
# Expects vm0: an 8G region with 2M blocks (sub-block mode) or 1G blocks
# (big-block mode), a 2G guest and memhp_default_state=online_movable.
set -u
source "$(dirname "$0")/lib.sh"
# scripts/test.sh runs it with 2M blocks (sub-block mode) and with 1G (big-block mode).
if [ "$(qmp_info vm0 block-size 2>/dev/null)" = $((1 << 30)) ]; then \
    requires movable vm0:8G:1G; else requires movable vm0:8G; fi

dir=$(mktemp -d)
ktap_header 32
base_kb=$(memtotal_kb)
vdev=$(virtio_mem_devices)
drv=/sys/bus/virtio/drivers/virtio_mem_rust
ktap_check "load virtio_mem_rust" insmod "$VMR_KO_RUST"
vmctl set-size vm0 4G >/dev/null
ktap_check "4G plugged" quiet vmem_status wait "$vdev" --size 4G --timeout 300

# 3G in use in a 2G guest: at least 1G of it lives in the device's memory.
/usr/bin/python3 "$(dirname "$0")/hold_memory.py" 3072 "$dir/ready" "$dir/stop" >"$dir/out" 2>&1 &
pid=$!
for _ in $(seq 600); do \
    [ -e "$dir/ready" ] && break; kill -0 $pid 2>/dev/null || break; sleep 1; done
ktap_check "the workload holds 3G" test -e "$dir/ready"

# after_unbind LABEL: what unbinding leaves (4 results).
after_unbind() {
    local plugged added
    plugged=$(qmp_info vm0 size) added=$(virtio_mem_ram_bytes)
    ktap_diag "$1: plugged $plugged, added $added"
    ktap_check "$1: free memory was given back" test "$plugged" -lt "$(to_bytes 4G)"
    ktap_check "$1: memory in use stays plugged" test "$plugged" -gt 0
    ktap_check "$1: everything plugged stays added" test "$plugged" -le "$added"
    ktap_check "$1: the driver says what stays added" \
        eval "dmesg | grep -q 'virtio_mem_rust $vdev: .* bytes stay added to the system'"
}

# after_bind LABEL: the take-over (5 results). What the driver takes for
# plugged (from the pages of online blocks, from STATE for offline ones) is
# what the device has: the resync finds nothing to fix.
after_bind() {
    ktap_check "$1: the driver took the memory over" \
        eval "dmesg | tail -n 30 | grep -q 'virtio_mem_rust $vdev: took over'"
    ktap_eq "$1: the device agrees with the driver" "" \
        "$(dmesg | grep "virtio_mem_rust $vdev: the device's plugged state of .* differs")"
    ktap_check "$1: it reaches the requested 4G again" \
        quiet vmem_status wait "$vdev" --size 4G --timeout 300
    check_sizes "$1" "$vdev" vm0 "$base_kb"
}

echo "$vdev" >"$drv/unbind"
ktap_eq "unbound" "" "$(bound_driver "$vdev")"
after_unbind "unbind"
echo "$vdev" >"$drv/bind"
ktap_eq "bound again" virtio_mem_rust "$(bound_driver "$vdev")"
after_bind "bind"
vmctl set-size vm0 6G >/dev/null
ktap_check "it follows a resize to 6G" quiet vmem_status wait "$vdev" --size 6G --timeout 300
vmctl set-size vm0 4G >/dev/null
ktap_check "and back to 4G" quiet vmem_status wait "$vdev" --size 4G --timeout 300

ktap_check "unload" rmmod virtio_mem_rust
after_unbind "unload"
ktap_check "load" insmod "$VMR_KO_RUST"
after_bind "load"
ktap_check "the workload is alive" kill -0 $pid

touch "$dir/stop"
wait $pid; rc=$?
ktap_diag "$(cat "$dir/out")"
ktap_eq "the workload's data is intact" 0 "$rc"
vmctl set-size vm0 0 >/dev/null
ktap_check "then everything is unplugged" quiet vmem_status wait "$vdev" --size 0 --timeout 300
ktap_eq "nothing stays added" 0 "$(virtio_mem_ram_bytes)"
ktap_eq "nothing was OOM-killed" "" "$(dmesg | grep -iE 'out of memory|oom-kill|killed process')"
ktap_finish
