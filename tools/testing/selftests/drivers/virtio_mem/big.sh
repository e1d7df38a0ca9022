#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: plugging that is safe in a small guest. A 64G region is asked to
# plug everything at once.
#
# With memory_hotplug.memmap_on_memory=1 (VMR_MEMMAP=1) each block holds its
# own memmap, so a 2G guest takes all 64G: MemTotal grows by at least 98% of
# it (the rest is the memmap), with no allocation failure and no OOM.
# Without it (VMR_MEMMAP=0) the memmap comes out of the guest's kernel memory;
# the driver plugs block after block while the next block's memmap fits in
# the free kernel memory above the page allocator's reserves, then stalls and
# says why, again without an allocation failure or OOM. It must get as far as
# that rule allows, not stop short: once its plugged size has stayed put
# through a few retries (every 5 s), the free memory of the kernel zones is
# less than the reserves (at least 32M) plus one block's memmap (2M for 128M),
# give or take 32M for what the kernel allocates or frees meanwhile (its
# caches, reclaim).
# On a KASAN kernel (generic, the KASAN lane) every block onlined also takes
# its shadow, an eighth of it (16M for 128M), from the kernel's memory: then
# the driver stalls the same way with memmap_on_memory too, where that rule
# counts the shadow alone, and without it, memmap and shadow.
#
# Expects vm0: a 64G region (ram backend, reserve=off) with 2M blocks and
# memhp_default_state=online_movable.
set -u
source "$(dirname "$0")/lib.sh"
requires movable env:VMR_MEMMAP vm0:64G

# What one 128M block takes from the kernel's memory: its memmap (without memmap_on_memory)
# and on a generic KASAN kernel its shadow.
block_cost=0
[ "$VMR_MEMMAP" = 1 ] || block_cost=$((2 << 20))
! kasan_generic || block_cost=$((block_cost + (16 << 20)))
ktap_header $((7 + 3 * VMR_MEMMAP))
base_kb=$(memtotal_kb)
vdev=$(virtio_mem_devices)
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
ktap_eq "memmap_on_memory as the kernel says" "$VMR_MEMMAP" "$(vmem_attr "$vdev" memmap_on_memory)"
if [ "$VMR_MEMMAP" = 1 ]; then
    # Refusals halve the plug limit down to a partly plugged block's least: the second block
    # must still get more than its memmap (2M) when it is added, or the region vetoes onlining
    # it and what is plugged into it later stays offline for good.
    mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
    block=$(( 0x$(cat /sys/devices/system/memory/block_size_bytes) ))
    n0=$(( $(qmp_info vm0 memaddr) / block ))
    vmctl set-size vm0 128M >/dev/null
    quiet vmem_status wait "$vdev" --size 128M --timeout 120
    echo "plug busy 6" >"/sys/kernel/debug/virtio_mem_rust-$vdev/inject"
    vmctl set-size vm0 192M >/dev/null
    for _ in $(seq 60); do
        vmem_status wait "$vdev" --size 192M --timeout 1 >/dev/null 2>&1 && break
        echo 1 >"/sys/kernel/debug/virtio_mem_rust-$vdev/retry_now"
    done
    ktap_eq "192M plugged after six refusals" $((192 << 20)) "$(vmem_attr "$vdev" plugged_size)"
    ktap_eq "both blocks online" "online online" "$(block_state $n0) $(block_state $((n0 + 1)))"
    ktap_eq "online_size: all of it but the two blocks' memmap (2M each)" $((188 << 20)) \
        "$(vmem_attr "$vdev" online_size)"
fi
t0=$SECONDS
vmctl set-size vm0 64G >/dev/null
vmem_status wait "$vdev" --until settled --size 64G --timeout 900 >/dev/null
plugged=$(vmem_attr "$vdev" plugged_size) kb=$(memtotal_kb)
ktap_diag "settled after $((SECONDS - t0)) s: plugged $plugged, MemTotal +$((kb - base_kb)) kB, activity $(vmem_attr "$vdev" activity), reason: $(vmem_attr "$vdev" reason)"
ktap_diag "$(grep -E 'MemFree|MemAvailable' /proc/meminfo | tr -s ' ' | paste -sd' ')"
if [ "$block_cost" = 0 ]; then
    ktap_eq "all 64G plugged" "$(to_bytes 64G)" "$plugged"
    ktap_check "MemTotal grew by at least 98% of it" \
        test $((kb - base_kb)) -ge $(($(to_bytes 64G) / 1024 * 98 / 100))
else
    # Converged: the plugged size unchanged for 20 s (four retries), at most 300 s more.
    since=$SECONDS deadline=$((SECONDS + $(scaled 300)))
    while [ $((SECONDS - since)) -lt "$(scaled 20)" ] && [ $SECONDS -lt "$deadline" ]; do
        sleep 1
        now=$(vmem_attr "$vdev" plugged_size)
        [ "$now" = "$plugged" ] || { plugged=$now since=$SECONDS; }
    done
    free=$(free_kernel_memory) reserve=$(total_reserve)
    [ "$reserve" -ge $((32 << 20)) ] || reserve=$((32 << 20))
    tol=$((32 << 20))
    ktap_diag "converged at $plugged (for $((SECONDS - since)) s): free kernel memory $free," \
        "reserves $reserve, a block's cost $block_cost, MemTotal +$(($(memtotal_kb) - base_kb)) kB"
    ktap_check "it plugged until the next block's memmap did not fit, then stalled" \
        test "$(vmem_attr "$vdev" activity)" = stalled -a $((SECONDS - since)) -ge "$(scaled 20)" \
        -a "$plugged" -gt 0 -a "$free" -lt $((reserve + block_cost + tol))
    ktap_eq "and says why" "memmap of the next block does not fit in free kernel memory" \
        "$(vmem_attr "$vdev" reason)"
fi
check_sizes "64G" "$vdev" vm0 "$base_kb"
ktap_eq "no allocation failure or OOM" "" \
    "$(dmesg | grep -iE 'page allocation failure|out of memory|oom-kill')"
ktap_finish
