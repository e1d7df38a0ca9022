#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: sub-block mode with partly plugged memory blocks that user space
# onlines and offlines (memhp_default_state=offline). The unplugged sub-blocks
# of an online block stay PageOffline (read from /proc/kpageflags) through
# online -> offline -> online cycles, plugging more sub-blocks into an online
# block hands exactly those pages to the kernel, and the host never backs more
# than the plugged size plus a small margin (the region is a file on the
# host's tmpfs, visible read-only at $VMR_BACKING).
# Unbind then removes the offline block, gives back the free memory of the
# online one and leaves what the kernel holds there added, plugged and parked.
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

# Pages in [$1, $1 + $2) that are slab or page tables (KPF_SLAB, KPF_PGTABLE
# in /proc/kpageflags): in use by the kernel, which cannot move them.
kernel_pages() {
    dd if=/proc/kpageflags bs=8 skip=$(($1 / page)) count=$(($2 / page)) status=none |
        od -An -v -tu8 -w8 | awk '{ if (int($1 / 2^7) % 2 || int($1 / 2^26) % 2) n++ }
            END { print n + 0 }'
}

# Expected PageOffline pages of block n1 when $1 bytes of it are plugged.
unplugged_pages() { echo $(((block - $1) / page)); }
b1=$((addr + block))

ktap_header 21
base_kb=$(memtotal_kb)
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
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

# Unbind with the full block offline and the partly plugged one online in a
# kernel zone. That block is in the guest's only ZONE_NORMAL, where the kernel
# allocates first: it soon holds slab pages and page tables, which cannot move
# (offlining it, with caches dropped, kept failing for 30 s, even with only 2M
# of it online). So the outcome is the README's unbind rule for memory in use:
# the offline block is removed and unplugged; of the online one the free
# sub-blocks are taken and unplugged, and the rest stays added and plugged,
# parked, which the driver says with the sizes. (README's partial.sh line has
# all blocks offline at unbind, which this guest cannot reach with a block in
# a kernel zone.) The test first checks that the block does hold such pages.
set_block_state $n0 offline
kpages=$(kernel_pages $b1 $block)
ktap_check "the online block holds pages that cannot move (slab, page tables: $kpages)" \
    test "$kpages" -gt 0
ktap_check "unload" rmmod virtio_mem_rust
added=$(virtio_mem_ram_bytes) plugged=$(qmp_info vm0 size)
ktap_diag "after unbind: added $added, plugged $plugged"
ktap_eq "the offline block is removed, the online one stays added" "$block" "$added"
ktap_eq "the driver says what stays added and plugged" "$(printf '%#x %#x' "$block" "$plugged")" \
    "$(dmesg | sed -n "s/.*virtio_mem_rust $vdev: \(0x[0-9a-f]*\) bytes stay added to the \
system (\(0x[0-9a-f]*\) plugged).*/\1 \2/p" | tail -n1)"
ktap_check "what stays plugged is some of the online block's 72M" \
    test "$plugged" -gt 0 -a "$plugged" -le $((72 * MIB))
ktap_eq "the rest of that block is PageOffline: the kernel keeps exactly what is plugged" \
    $(((block - plugged) / page)) "$(page_offline_count $b1 $block)"
ktap_finish
