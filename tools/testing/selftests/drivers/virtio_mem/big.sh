#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: plugging that is safe in a small guest. A 64G region is asked to
# plug everything at once.
#
# With memory_hotplug.memmap_on_memory=1 (VMR_MEMMAP=1) each block holds its
# own memmap, so a 2G guest takes all 64G: MemTotal grows by at least 98% of
# it (the rest is the memmap), with no allocation failure and no OOM.
# Without it (VMR_MEMMAP=0) the memmap comes out of the guest's kernel memory;
# the driver plugs block after block while the next block's memmap fits above
# the safety margin, then stalls and says why, again without an allocation
# failure or OOM.
#
# Expects vm0: a 64G region (ram backend, reserve=off) with 2M blocks and
# memhp_default_state=online_movable.
set -u
source "$(dirname "$0")/lib.sh"
requires movable env:VMR_MEMMAP vm0:64G

ktap_header 7
base_kb=$(memtotal_kb)
vdev=$(virtio_mem_devices)
ktap_check "load virtio_mem_rust" insmod "$VMR_KO_RUST"
ktap_eq "memmap_on_memory as the kernel says" "$VMR_MEMMAP" "$(vmem_attr "$vdev" memmap_on_memory)"
t0=$SECONDS
vmctl set-size vm0 64G >/dev/null
vmem_status wait "$vdev" --until settled --size 64G --timeout 900 >/dev/null
plugged=$(vmem_attr "$vdev" plugged_size) kb=$(memtotal_kb)
ktap_diag "settled after $((SECONDS - t0)) s: plugged $plugged, MemTotal +$((kb - base_kb)) kB, activity $(vmem_attr "$vdev" activity), reason: $(vmem_attr "$vdev" reason)"
ktap_diag "$(grep -E 'MemFree|MemAvailable' /proc/meminfo | tr -s ' ' | paste -sd' ')"
if [ "$VMR_MEMMAP" = 1 ]; then
    ktap_eq "all 64G plugged" "$(to_bytes 64G)" "$plugged"
    ktap_check "MemTotal grew by at least 98% of it" \
        test $((kb - base_kb)) -ge $(($(to_bytes 64G) / 1024 * 98 / 100))
else
    ktap_check "it plugged a good part, then stalled" \
        test "$plugged" -ge "$(to_bytes 2G)" -a "$(vmem_attr "$vdev" activity)" = stalled
    ktap_eq "and says why" "memmap of the next block does not fit in free kernel memory" \
        "$(vmem_attr "$vdev" reason)"
fi
check_sizes "64G" "$vdev" vm0 "$base_kb"
ktap_eq "no allocation failure or OOM" "" \
    "$(dmesg | grep -iE 'page allocation failure|out of memory|oom-kill')"
ktap_finish
