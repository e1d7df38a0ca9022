#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: with memhp_default_state=offline, user space onlines the added
# memory blocks itself, some to ZONE_MOVABLE and some to a kernel zone.
# Plugging still converges, and memory that is added but not yet online never
# exceeds the driver's limit (1G for 128M memory blocks) by more than a block.
set -u
source "$(dirname "$0")/lib.sh"
requires vm0:8G

limit=$((1 << 30)) block=$(( $(printf '%d' 0x$(cat /sys/devices/system/memory/block_size_bytes)) ))
addr=$(qmp_info vm0 memaddr) region=$(qmp_info vm0 region-size)
first=$((addr / block)) last=$(((addr + region) / block - 1))

# Offline bytes of the device's memory blocks; onlines them as it goes, every
# other one to a kernel zone.
max_offline=0
online_pass() {
    local n state off=0 i=0
    for ((n = first; n <= last; n++)); do
        [ -e /sys/devices/system/memory/memory$n/state ] || continue
        state=$(cat /sys/devices/system/memory/memory$n/state)
        [ "$state" = offline ] || continue
        off=$((off + block))
    done
    [ $off -gt $max_offline ] && max_offline=$off
    for ((n = first; n <= last; n++)); do
        [ -e /sys/devices/system/memory/memory$n/state ] || continue
        [ "$(cat /sys/devices/system/memory/memory$n/state)" = offline ] || continue
        if [ $((n % 2)) = 0 ]; then
            echo online_movable >/sys/devices/system/memory/memory$n/state
        else
            echo online_kernel >/sys/devices/system/memory/memory$n/state
        fi
        i=$((i + 1))
    done
}

ktap_header 5
base_kb=$(memtotal_kb)
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
vmctl set-size vm0 4G >/dev/null
want=$(to_bytes 4G)
deadline=$((SECONDS + 300))
while [ "$(qmp_info vm0 size)" != "$want" ] || [ "$(virtio_mem_ram_bytes)" != "$want" ]; do
    [ $SECONDS -lt $deadline ] || break
    online_pass
    sleep 0.5
done
online_pass
ktap_eq "plugging converged to 4G with user space onlining" "$want" "$(qmp_info vm0 size)"
ktap_diag "most memory added but offline at once: $max_offline bytes (limit $limit)"
ktap_check "added-but-offline memory stayed within the limit" \
    test "$max_offline" -le $((limit + block))
kb=$(wait_memtotal_kb $((base_kb + want / 1024)) 60)
ktap_eq "all of it is online: MemTotal grew by 4G (kB)" $((want / 1024)) $((kb - base_kb))
# The zone of each online block of the device (valid_zones of an online block is its zone).
normal=0 movable=0
for ((n = first; n <= last; n++)); do
    z=/sys/devices/system/memory/memory$n/valid_zones
    [ -e "$z" ] || continue
    case "$(cat "$z")" in Normal) normal=$((normal + 1)) ;; \
        Movable) movable=$((movable + 1)) ;; esac
done
ktap_diag "device memory blocks: $normal in Normal, $movable in Movable"
ktap_check "some blocks went to a kernel zone, some to ZONE_MOVABLE" \
    test $normal -gt 0 -a $movable -gt 0
ktap_finish
