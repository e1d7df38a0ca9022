#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: a partly unplugged online block. Two blocks are plugged and
# auto-onlined to ZONE_MOVABLE; shrinking to 200M unplugs 56M of the upper one
# sub-block by sub-block (its pages migrated away and made PageOffline). User
# space offlines that block (the driver releases its unplugged pages so that
# offlining skips them) and onlines it again, to a kernel zone: the unplugged
# pages stay PageOffline throughout (/proc/kpageflags). Growing to 256M again
# hands exactly those pages back; shrinking to 128M then unplugs and removes
# the lower block, which is movable, in one piece. After each step the
# driver's sysfs sizes agree: plugged_size is the device's size and
# online_size what MemTotal grew by, also while user space offlines and
# onlines the block.
#
# Expects vm0: a 4G region with 2M blocks, memhp_default_state=online_movable.
set -u
source "$(dirname "$0")/lib.sh"
requires movable vm0:4G

MIB=$((1 << 20)) page=$(getconf PAGESIZE)
block=$(( 0x$(cat /sys/devices/system/memory/block_size_bytes) ))
addr=$(qmp_info vm0 memaddr)
n1=$((addr / block + 1)) b1=$((addr + block))

ktap_header 23
base_kb=$(memtotal_kb)
vdev=$(virtio_mem_devices)
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
vmctl set-size vm0 256M >/dev/null
size=$(vmctl wait vm0 256M --wait-timeout-s 120 2>&1 | tail -n1)
ktap_eq "256M plugged and online" "$(to_bytes 256M) $((base_kb + 256 * 1024))" \
    "$size $(wait_memtotal_kb $((base_kb + 256 * 1024)) 30)"
vmctl set-size vm0 200M >/dev/null
size=$(vmctl wait vm0 200M --wait-timeout-s 120 2>&1 | tail -n1)
ktap_eq "200M plugged: 56M of the upper block unplugged" "$(to_bytes 200M)" "$size"
ktap_eq "MemTotal shrank by 56M (kB)" $((200 * 1024)) \
    $(( $(wait_memtotal_kb $((base_kb + 200 * 1024)) 30) - base_kb ))
ktap_eq "those 56M are PageOffline" $((56 * MIB / page)) "$(page_offline_count $b1 $block)"
quiet vmem_status wait "$vdev" --size 200M --timeout 60
check_sizes "200M" "$vdev" vm0 "$base_kb"
ktap_check "user space offlines the partly unplugged block" set_block_state $n1 offline
ktap_eq "MemTotal lost its 72M (kB)" $((128 * 1024)) \
    $(( $(wait_memtotal_kb $((base_kb + 128 * 1024)) 30) - base_kb ))
check_sizes "offlined" "$vdev" vm0 "$base_kb"
ktap_check "and onlines it again, to a kernel zone" set_block_state $n1 online_kernel
ktap_eq "its 72M are back (kB)" $((200 * 1024)) \
    $(( $(wait_memtotal_kb $((base_kb + 200 * 1024)) 30) - base_kb ))
ktap_eq "its unplugged 56M are still PageOffline" $((56 * MIB / page)) \
    "$(page_offline_count $b1 $block)"
check_sizes "onlined again" "$vdev" vm0 "$base_kb"
vmctl set-size vm0 256M >/dev/null
size=$(vmctl wait vm0 256M --wait-timeout-s 120 2>&1 | tail -n1)
# The device's size comes first: the driver hands the pages over after the PLUG.
quiet vmem_status wait "$vdev" --size 256M --timeout 60
ktap_eq "256M again: the 56M are plugged and in use" "$(to_bytes 256M) 0" \
    "$size $(page_offline_count $b1 $block)"
check_sizes "256M again" "$vdev" vm0 "$base_kb"
vmctl set-size vm0 128M >/dev/null
size=$(vmctl wait vm0 128M --wait-timeout-s 120 2>&1 | tail -n1)
# The device's size comes first: the driver removes the block after the UNPLUG.
quiet vmem_status wait "$vdev" --size 128M --timeout 60
ktap_eq "128M: the lower (movable) block is unplugged and removed" "$(to_bytes 128M) $block" \
    "$size $(virtio_mem_ram_bytes)"
ktap_eq "the upper one stays online" "online" "$(block_state $n1)"
check_sizes "128M" "$vdev" vm0 "$base_kb"
# Not left clean (lib.sh: leave_clean): a block onlined to a kernel zone may hold kernel
# allocations that never move, so the device may not get back to 0. A boot it shares runs it
# last (scripts/test.sh).
ktap_finish
