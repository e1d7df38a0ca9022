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
# VMR_PRESSURE_GB=6 (the debug lane, where migration is several times slower)
# scales it all: a 6G region, a 3G workload, a request of 1G. The same paths
# run; the margin is what stops the driver either way.
set -u
source "$(dirname "$0")/lib.sh"
gb=${VMR_PRESSURE_GB:-12}
[ $((gb % 6)) = 0 ] || { echo "VMR_PRESSURE_GB must be a multiple of 6, not $gb" >&2; exit 1; }
region=${gb}G low=$((gb / 6))G hold_mb=$((gb * 512))
requires movable vm0:$region

dir=/tmp/vmr-pressure
rm -rf "$dir"; mkdir -p "$dir"
# Prints the device's plugged size once it has not changed for $1 seconds
# (at most $2 seconds in all); fails (printing the last size) if it did not
# settle in that time.
settled_size() {
    local quiet=$1 deadline=$((SECONDS + $2)) last="" since=$SECONDS now
    while [ $SECONDS -lt "$deadline" ]; do
        now=$(qmp_info vm0 size)
        if [ "$now" != "$last" ]; then last=$now since=$SECONDS; fi
        if [ $((SECONDS - since)) -ge "$quiet" ]; then echo "$last"; return 0; fi
        sleep 1
    done
    echo "$last"
    return 1
}

ktap_header 17
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
vmctl set-size vm0 $region >/dev/null
size=$(vmctl wait vm0 $region --wait-timeout-s 300 2>&1 | tail -n1)
ktap_eq "$region plugged" "$(to_bytes $region)" "$size"

/usr/bin/python3 "$(dirname "$0")/hold_memory.py" $hold_mb "$dir/ready" "$dir/stop" \
    >"$dir/out" 2>&1 &
pid=$!
for _ in $(seq 600); do \
    [ -e "$dir/ready" ] && break; kill -0 $pid 2>/dev/null || break; sleep 1; done
ktap_check "the workload holds $((hold_mb >> 10))G" test -e "$dir/ready"

vdev=$(virtio_mem_devices)
# What the driver can give back: MemAvailable (with the workload in use, the
# region plugged and 2G of boot memory) down to its margin.
avail0=$(mem_available)
udevadm monitor --kernel --property --subsystem-match=virtio >"$dir/uevents" 2>&1 &
monitor=$!
sleep 1
t0=$SECONDS
vmctl set-size vm0 $low >/dev/null
# Until the driver has seen the request and says it stopped working on it
# (stalled, here), then a quiet period that the plugged size must hold: the
# driver's word is not taken alone, but it spares the test a quiet period longer
# than a block's migration (more than 20 s on the debug lane), which is what
# the test waited before.
settled=settled
quiet vmem_status wait "$vdev" --size $low --until settled --timeout 600 || settled="did not settle"
size=$(settled_size "$(scaled 5)" "$(scaled 60)") || settled="did not settle"
# The driver takes online memory only while MemAvailable stays above its
# margin (README, unplug_margin_mb), a 128M memory block at a time here: so it
# stops with MemAvailable between the margin and the margin plus a block. In
# plugged size, every byte unplugged being a byte less available, that is
# region - (avail0 - margin), up to a block above, where avail0 is MemAvailable
# with the workload in use in the 2G of boot memory and the region plugged.
# Tolerances: 64M on MemAvailable (what the kernel allocates or frees between
# the driver's last look and ours), 384M on the plugged size (MemAvailable also
# drifts over the minute of unplugging: 234M here once). The margin is read at
# the stop: the watermarks shrink with ZONE_MOVABLE.
margin=$(default_margin) avail=$(mem_available)
want=$(($(to_bytes $region) - (avail0 - margin)))
tol=$((64 << 20)) size_tol=$((384 << 20)) mb=$((128 << 20))
ktap_diag "plugged size: $settled at $size after $((SECONDS - t0)) s; expected $want" \
    "to $((want + mb)) +- $size_tol (MemAvailable before $avail0, now $avail, margin $margin)"
ktap_check "unplugging settled short of $low, where the margin says (less than a block above it)" \
    test "$settled" = settled -a "$size" -gt "$(to_bytes $low)" \
    -a "$avail" -lt $((margin + mb + tol)) \
    -a "$size" -ge $((want - size_tol)) -a "$size" -le $((want + mb + size_tol))
ktap_check "MemAvailable is not below the margin (less $((tol >> 20))M)" \
    test "$avail" -ge $((margin - tol))
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
size=$(vmctl wait vm0 $low --wait-timeout-s 300 2>&1 | tail -n1)
ktap_eq "once it exited, the driver unplugged down to $low on its own" "$(to_bytes $low)" "$size"
ktap_check "vmem-status wait says reached" quiet vmem_status wait "$vdev" --size $low --timeout 60
sleep 1
kill $monitor
ktap_check "a uevent said the size was reached" grep -q '^VIRTIO_MEM_EVENT=reached' "$dir/uevents"
ktap_finish
