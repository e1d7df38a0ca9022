#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: virtio_mem_rust plugs the size requested at boot when it probes,
# then follows the device as it grows: after every resize over QMP the
# device's plugged size reaches the request exactly, also when it is not a
# multiple of the 128M memory block (4G+130M: a block with one 2M sub-block
# plugged; 4G+200M: more sub-blocks plugged into that online block), and the
# guest's view agrees: MemTotal grew by that much, and the "System RAM
# (virtio_mem)" ranges in /proc/iomem cover it in whole memory blocks. The
# driver's sysfs attributes agree too (plugged_size is the device's size,
# online_size the MemTotal delta), `vmem-status wait` returns once the size is
# reached, and poll() on `activity` wakes up when it is.
#
# Expects vm0: a 16G region with 2M blocks and 1G requested at boot, and
# memhp_default_state=online_movable. Ends by unloading with memory plugged
# but not in use: all of it is given back, and loading again plugs it again.
set -u
source "$(dirname "$0")/lib.sh"
requires movable vm0:16G:2M:1G

steps=(1G 4G 4G+130M 4G+200M 16G)
block=$(( 0x$(cat /sys/devices/system/memory/block_size_bytes) ))
ktap_header $(( 1 + ${#steps[@]} * 8 + 1 + 8 ))
base_kb=$(memtotal_kb)
vdev=$(virtio_mem_devices)
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"

first=1
for step in "${steps[@]}"; do
    request=$step expect=$(to_bytes "$step")
    blocks_bytes=$(( (expect + block - 1) / block * block ))
    poller=
    if [ $first = 1 ]; then
        first=0
        ktap_diag "requested at boot: $request"
    else
        if [ "$step" = 16G ]; then
            # Woken by poll() alone: no timer in the poller.
            rm -f /tmp/vmr-armed
            "$(dirname "$0")/poll_activity.py" "$vdev" idle 300 /tmp/vmr-armed \
                >/tmp/vmr-poll.out 2>&1 &
            poller=$!
            while [ ! -f /tmp/vmr-armed ]; do sleep 0.05; done
        fi
        vmctl set-size vm0 "$request" >/dev/null
    fi
    t0=$SECONDS
    size=$(vmctl wait vm0 "$expect" --wait-timeout-s 300 2>&1 | tail -n1)
    ktap_eq "$request: device plugged size" "$expect" "$size"
    kb=$(wait_memtotal_kb $((base_kb + expect / 1024)) 120)
    ktap_eq "$request: MemTotal grew by the plugged size (kB)" $((expect / 1024)) $((kb - base_kb))
    ktap_eq "$request: System RAM (virtio_mem) in /proc/iomem (whole blocks)" "$blocks_bytes" \
        "$(virtio_mem_ram_bytes)"
    ktap_eq "$request: requested size unchanged" "$(to_bytes "$request")" \
        "$(qmp_info vm0 requested-size)"
    ktap_check "$request: vmem-status wait says reached" \
        quiet vmem_status wait "$vdev" --size "$request" --timeout 60
    check_sizes "$request" "$vdev" vm0 "$base_kb"
    ktap_eq "$request: activity is idle" idle "$(vmem_attr "$vdev" activity)"
    if [ -n "$poller" ]; then
        ktap_check "$request: poll() on activity woke up when the size was reached" wait "$poller"
        ktap_diag "poller: $(cat /tmp/vmr-poll.out)"
    fi
    ktap_diag "$request: converged in $((SECONDS - t0)) s"
done

# Unload with memory plugged but not in use: unbinding gives all of it back
# (offlined, removed and unplugged), and loading again plugs it again.
ktap_check "unload with memory plugged" rmmod virtio_mem_rust
ktap_eq "unbinding gave all memory back" 0 "$(qmp_info vm0 size)"
ktap_eq "nothing stays added" 0 "$(virtio_mem_ram_bytes)"
ktap_check "the region is released" eval "! grep -q ' : $vdev\$' /proc/iomem"
ktap_check "load again" load_bound "$VMR_KO_RUST"
ktap_check "the requested size is plugged again" \
    quiet vmem_status wait "$vdev" --size 16G --timeout 300
check_sizes "loaded again" "$vdev" vm0 "$base_kb"
ktap_finish
