#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: sub-block mode with partly plugged memory blocks that user space
# onlines and offlines (memhp_default_state=offline). The unplugged sub-blocks
# of an online block stay PageOffline (read from /proc/kpageflags) through
# online -> offline -> online cycles, plugging more sub-blocks into an online
# block hands exactly those pages to the kernel, and the host never backs more
# than the plugged size plus a small margin (the region is a file on the
# host's tmpfs, visible read-only at $VMR_BACKING).
# Unbind then removes the offline block and keeps the online one.
#
# Expects vm0: a 4G region with 2M blocks, nothing requested at boot.
set -u
source "$(dirname "$0")/lib.sh"
requires env:VMR_BACKING vm0:4G

MIB=$((1 << 20)) margin=$((64 << 20))
block=$(( 0x$(cat /sys/devices/system/memory/block_size_bytes) ))
addr=$(qmp_info vm0 memaddr)
n0=$((addr / block)) n1=$((addr / block + 1))
page=$(getconf PAGESIZE)

# Expected PageOffline pages of block n1 when $1 bytes of it are plugged.
unplugged_pages() { echo $(((block - $1) / page)); }
b1=$((addr + block))

ktap_header 19
base_kb=$(memtotal_kb)
ktap_check "load virtio_mem_rust" insmod "$VMR_KO_RUST"
vdev=$(virtio_mem_devices)
vmctl set-size vm0 130M >/dev/null
size=$(vmctl wait vm0 130M --wait-timeout-s 120 2>&1 | tail -n1)
ktap_eq "130M plugged: a whole block and one 2M sub-block" "$(to_bytes 130M)" "$size"
ktap_eq "both blocks are added offline" "offline offline" "$(block_state $n0) $(block_state $n1)"

set_block_state $n1 online_movable
kb=$(wait_memtotal_kb $((base_kb + 2048)) 30)
ktap_eq "onlining the partly plugged block adds its 2M (kB)" 2048 $((kb - base_kb))
ktap_eq "its 126M unplugged stay PageOffline" "$(unplugged_pages $((2 * MIB)))" \
    "$(page_offline_count $b1 $block)"

ktap_check "user space offlines the partly plugged block" set_block_state $n1 offline
kb=$(wait_memtotal_kb "$base_kb" 30)
ktap_eq "MemTotal is back to the boot size (kB)" 0 $((kb - base_kb))
ktap_check "and onlines it again, to a kernel zone" set_block_state $n1 online_kernel
kb=$(wait_memtotal_kb $((base_kb + 2048)) 30)
ktap_eq "its 2M are back (kB)" 2048 $((kb - base_kb))
ktap_eq "its unplugged pages are still PageOffline" "$(unplugged_pages $((2 * MIB)))" \
    "$(page_offline_count $b1 $block)"

# More sub-blocks into the online block, and a whole block (offline).
vmctl set-size vm0 200M >/dev/null
size=$(vmctl wait vm0 200M --wait-timeout-s 120 2>&1 | tail -n1)
ktap_eq "200M plugged" "$(to_bytes 200M)" "$size"
kb=$(wait_memtotal_kb $((base_kb + 72 * 1024)) 30)
ktap_eq "the online block has 72M in use now (kB)" $((72 * 1024)) $((kb - base_kb))
ktap_eq "and 56M PageOffline" "$(unplugged_pages $((72 * MIB)))" "$(page_offline_count $b1 $block)"
set_block_state $n0 online_movable
kb=$(wait_memtotal_kb $((base_kb + 200 * 1024)) 30)
ktap_eq "with the full block online too: MemTotal grew by 200M (kB)" $((200 * 1024)) \
    $((kb - base_kb))

# Use the memory, then look at what the host had to back.
mkdir -p /tmp/vmr-fill && mount -t tmpfs -o size=1G none /tmp/vmr-fill
# 1G of the 2G+200M guest: some of it lands in the device's memory.
dd if=/dev/zero of=/tmp/vmr-fill/f bs=1M count=1000 status=none
sync
a=$(backing_allocated)
rm -f /tmp/vmr-fill/f; umount /tmp/vmr-fill
ktap_diag "allocated on the host: ${a:-unknown} bytes (plugged $size, margin $margin)"
ktap_check "the host backs at most the plugged size plus $((margin >> 20))M" \
    test -n "$a" -a "${a:-0}" -le $((size + margin))

# Unbind with the full block offline and the partly plugged one online (in a
# kernel zone, where offlining may fail): the offline block is removed and
# unplugged; the online one is given back if its pages can be moved, and
# otherwise stays added (and plugged), parked for the next binding, which the
# driver says. Either way nothing plugged is left unused.
set_block_state $n0 offline
ktap_check "unload" rmmod virtio_mem_rust
added=$(virtio_mem_ram_bytes) plugged=$(qmp_info vm0 size)
ktap_diag "after unbind: added $added, plugged $plugged"
ktap_check "at most the online block stays added" test "$added" -le "$block"
ktap_check "everything still plugged is added" test "$plugged" -le "$added"
if [ "$added" -gt 0 ]; then
    ktap_check "the driver says what stays added" \
        eval "dmesg | grep -q 'virtio_mem_rust $vdev: 0x8000000 bytes stay added'"
else
    ktap_check "the region is released" eval "! grep -q ' : $vdev\$' /proc/iomem"
fi
ktap_finish
