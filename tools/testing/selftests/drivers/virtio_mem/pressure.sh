#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: unplug never pushes the guest into OOM. A 2G guest with 12G
# plugged runs a workload that holds (and at the end checks) 6G; the device is
# asked to shrink to 2G. The driver unplugs what it can, stops above the
# safety margin and says why; the workload survives with its data intact and
# nothing is OOM-killed. When the workload exits, the driver unplugs the rest
# down to 2G on its own.
#
# Expects vm0: a 12G region with 2M blocks, memhp_default_state=online_movable.
set -u
source "$(dirname "$0")/lib.sh"
requires movable vm0:12G

dir=/tmp/vmr-pressure
rm -rf "$dir"; mkdir -p "$dir"
# Prints the device's plugged size once it has not changed for $1 seconds
# (at most $2 seconds in all).
settled_size() {
    local quiet=$1 deadline=$((SECONDS + $2)) last="" since=$SECONDS now
    while [ $SECONDS -lt "$deadline" ]; do
        now=$(qmp_info vm0 size)
        if [ "$now" != "$last" ]; then last=$now since=$SECONDS; fi
        [ $((SECONDS - since)) -ge "$quiet" ] && break
        sleep 1
    done
    echo "$last"
}

ktap_header 16
ktap_check "load virtio_mem_rust" insmod "$VMR_KO_RUST"
vmctl set-size vm0 12G >/dev/null
size=$(vmctl wait vm0 12G --wait-timeout-s 300 2>&1 | tail -n1)
ktap_eq "12G plugged" "$(to_bytes 12G)" "$size"

/usr/bin/python3 "$(dirname "$0")/hold_memory.py" 6144 "$dir/ready" "$dir/stop" >"$dir/out" 2>&1 &
pid=$!
for _ in $(seq 600); do \
    [ -e "$dir/ready" ] && break; kill -0 $pid 2>/dev/null || break; sleep 1; done
ktap_check "the workload holds 6G" test -e "$dir/ready"

vdev=$(virtio_mem_devices)
udevadm monitor --kernel --property --subsystem-match=virtio >"$dir/uevents" 2>&1 &
monitor=$!
sleep 1
t0=$SECONDS
vmctl set-size vm0 2G >/dev/null
# Slower kernels (the debug lane) need a longer quiet period: a block's
# migration can take more than 20 s there while the driver keeps unplugging.
size=$(settled_size "$(scaled 20)" "$(scaled 600)")
ktap_diag "plugged size settled at $size after $((SECONDS - t0)) s; MemAvailable $(awk '/MemAvailable/ {print $2}' /proc/meminfo) kB"
ktap_check "unplugging stopped short of 2G, above the workload" \
    test "$size" -gt "$(to_bytes 2G)" -a "$size" -lt "$(to_bytes 12G)"
ktap_check "the driver says why" \
    eval "dmesg | grep -q 'virtio_mem_rust .*: unplugging stopped short of the requested size: free memory below the safety margin'"
ktap_check "the workload is alive" kill -0 $pid
ktap_eq "sysfs activity: stalled" stalled "$(vmem_attr "$vdev" activity)"
ktap_eq "sysfs reason: the margin" "free memory below the safety margin" \
    "$(vmem_attr "$vdev" reason)"
ktap_eq "sysfs plugged_size is where it stopped" "$size" "$(vmem_attr "$vdev" plugged_size)"
ktap_check "vmem-status wait --until settled returns" \
    quiet vmem_status wait "$vdev" --until settled --timeout 60
ktap_check "a uevent said it stalled, and why" \
    eval "grep -q '^VIRTIO_MEM_REASON=margin' '$dir/uevents' && grep -q '^VIRTIO_MEM_EVENT=stalled' '$dir/uevents'"

touch "$dir/stop"
wait $pid; rc=$?
ktap_diag "$(cat "$dir/out")"
ktap_eq "the workload's data is intact" 0 "$rc"
ktap_eq "nothing was OOM-killed" "" "$(dmesg | grep -iE 'out of memory|oom-kill|killed process')"
size=$(vmctl wait vm0 2G --wait-timeout-s 300 2>&1 | tail -n1)
ktap_eq "once it exited, the driver unplugged down to 2G on its own" "$(to_bytes 2G)" "$size"
ktap_check "vmem-status wait says reached" quiet vmem_status wait "$vdev" --size 2G --timeout 60
sleep 1
kill $monitor
ktap_check "a uevent said the size was reached" grep -q '^VIRTIO_MEM_EVENT=reached' "$dir/uevents"
ktap_finish
