#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: the device stops answering sensibly (debugfs garble_answers
# turns an answer into a value the protocol does not define), so the driver
# stops; then it is unbound without giving anything back. 130M is plugged in
# two offline blocks, one of them with only 2M plugged. After unbind user
# space onlines both: the partly plugged block must still keep its 126M
# unplugged offline (the parked region keeps protecting it), MemTotal grows by
# 130M, not 256M. The next binding takes the memory over and gets to 0.
#
# Expects vm0: a 4G region with 2M blocks, no auto-onlining.
set -u
source "$(dirname "$0")/lib.sh"
requires vm0:4G

MIB=$((1 << 20)) page=$(getconf PAGESIZE)
block=$(( 0x$(cat /sys/devices/system/memory/block_size_bytes) ))
addr=$(qmp_info vm0 memaddr)
n0=$((addr / block)) n1=$((addr / block + 1)) b1=$((addr + block))

ktap_header 12
base_kb=$(memtotal_kb)
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
vdev=$(virtio_mem_devices)
vmctl set-size vm0 130M >/dev/null
ktap_check "130M plugged" quiet vmem_status wait "$vdev" --size 130M --timeout 120
ktap_eq "both blocks are added offline" "offline offline" "$(block_state $n0) $(block_state $n1)"
echo 1 >"/sys/kernel/debug/virtio_mem_rust-$vdev/garble_answers"
vmctl set-size vm0 132M >/dev/null
ktap_check "a garbled answer stops the device" \
    eval "vmem_status wait $vdev --until settled --timeout 60 >/dev/null; [ \"\$(vmem_attr $vdev activity)\" = stopped ]"
ktap_check "unbind" rmmod virtio_mem_rust
ktap_eq "the blocks stay added" "$((2 * block))" "$(virtio_mem_ram_bytes)"
set_block_state $n0 online_movable
set_block_state $n1 online_movable
kb=$(wait_memtotal_kb $((base_kb + 130 * 1024)) 30)
ktap_eq "user space onlines them: MemTotal grows by the 130M plugged (kB)" $((130 * 1024)) \
    $((kb - base_kb))
ktap_eq "the 126M unplugged stay PageOffline" $((126 * MIB / page)) \
    "$(page_offline_count $b1 $block)"
ktap_check "the next binding takes over" load_bound "$VMR_KO_RUST"
vmctl set-size vm0 0 >/dev/null
ktap_check "and gets to 0" quiet vmem_status wait "$vdev" --size 0 --timeout 300
ktap_eq "MemTotal is back (kB)" "$base_kb" "$(memtotal_kb)"
ktap_check "the guest is left clean for a next script (leave_clean)" leave_clean
ktap_finish
