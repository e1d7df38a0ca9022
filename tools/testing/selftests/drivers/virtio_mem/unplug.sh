#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: unplug in an idle guest. 16G is plugged (auto-onlined to
# ZONE_MOVABLE), then the device shrinks to 4G, 4G+130M and 0; every step
# converges exactly, MemTotal follows, the "System RAM (virtio_mem)" ranges
# cover the plugged size in whole blocks, and the host gets the memory back:
# after a 6G workload ran (and ended) at 16G, the region's backing file on the
# host's tmpfs (read-only at $VMR_BACKING) holds no more than the plugged size
# plus a small margin once unplugged. The driver's sysfs attributes agree
# after every step (plugged_size is the device's size, online_size the
# MemTotal delta, activity idle), and poll() on `activity` wakes up when the
# shrink to 4G is done. At 0 the guest is back to its boot size with no
# virtio-mem memory left added.
#
# Expects vm0: a 16G region with 2M blocks, memhp_default_state=online_movable.
set -u
source "$(dirname "$0")/lib.sh"
requires movable env:VMR_BACKING vm0:16G

margin=$((64 << 20))
block=$(( 0x$(cat /sys/devices/system/memory/block_size_bytes) ))

steps=(16G 4G 4G+130M 0)
ktap_header $(( 1 + ${#steps[@]} * 8 + 1 + 1 ))
base_kb=$(memtotal_kb)
vdev=$(virtio_mem_devices)
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
for step in "${steps[@]}"; do
    expect=$(to_bytes "$step")
    poller=
    if [ "$step" = 4G ]; then
        # Woken by poll() alone: no timer in the poller.
        rm -f /tmp/vmr-armed
        "$(dirname "$0")/poll_activity.py" "$vdev" idle 300 /tmp/vmr-armed >/tmp/vmr-poll.out 2>&1 &
        poller=$!
        while [ ! -f /tmp/vmr-armed ]; do sleep 0.05; done
    fi
    t0=$SECONDS
    vmctl set-size vm0 "$step" >/dev/null
    size=$(vmctl wait vm0 "$expect" --wait-timeout-s 300 2>&1 | tail -n1)
    ktap_eq "$step: device plugged size" "$expect" "$size"
    # The device's size comes first: the driver removes emptied blocks after the UNPLUG.
    ktap_check "$step: vmem-status wait says reached" \
        quiet vmem_status wait "$vdev" --size "$step" --timeout 60
    kb=$(wait_memtotal_kb $((base_kb + expect / 1024)) 120)
    ktap_eq "$step: MemTotal follows (kB)" $((expect / 1024)) $((kb - base_kb))
    ktap_eq "$step: System RAM (virtio_mem) covers it in whole blocks" \
        $(( (expect + block - 1) / block * block )) "$(virtio_mem_ram_bytes)"
    check_sizes "$step" "$vdev" vm0 "$base_kb"
    ktap_eq "$step: activity is idle" idle "$(vmem_attr "$vdev" activity)"
    if [ -n "$poller" ]; then
        ktap_check "$step: poll() on activity woke up when the size was reached" wait "$poller"
        ktap_diag "poller: $(cat /tmp/vmr-poll.out)"
    fi
    a=$(backing_allocated)
    ktap_diag "$step: converged in $((SECONDS - t0)) s; ${a:-unknown} bytes allocated on the host"
    ktap_check "$step: the host backs at most the plugged size plus $((margin >> 20))M" \
        test -n "$a" -a "${a:-0}" -le $((expect + margin))
    if [ "$step" = 16G ]; then
        # Touch most of it: a 6G file on a tmpfs, then gone again.
        mkdir -p /tmp/vmr-fill && mount -t tmpfs -o size=7G none /tmp/vmr-fill
        dd if=/dev/zero of=/tmp/vmr-fill/f bs=1M count=6144 status=none
        sync
        ktap_diag "with a 6G workload: $(backing_allocated) bytes allocated on the host"
        rm -f /tmp/vmr-fill/f; umount /tmp/vmr-fill
    fi
done
ktap_eq "at 0 nothing of the region is added" "" "$(grep 'System RAM (virtio_mem)' /proc/iomem)"
ktap_finish
