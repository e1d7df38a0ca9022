#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: big-block mode with a page that cannot be migrated. With 3 big
# blocks of 1G plugged and online, a test helper (vmr_pin_page) takes and
# holds a page in the top big block. Offlining that block would retry its
# migration forever (a kernel worker never gets the signal that stops it),
# so the driver must not try: asked for 2G it unplugs a lower big block, for
# 1G the other lower one, and for 0 it stalls with the reason, while its
# sysfs state keeps answering and a later resize is followed. Once the page
# is let go, 0 is reached.
#
# Then a big block whose offlining fails half way (the helper refuses one of its memory
# blocks): its memory blocks are online again, as with the C driver.
#
# Then, with unplug_online=0 and user space onlining memory: of 2 big blocks
# added offline, user space onlines the top one; asked for 1G, the driver
# unplugs the lower, offline one.
#
# Expects vm0: a 4G region with 1G blocks, memhp_default_state=online_movable.
set -u
source "$(dirname "$0")/lib.sh"
requires movable env:VMR_KO_PIN vm0:4G:1G

GIB=$((1 << 30))
block=$(( 0x$(cat /sys/devices/system/memory/block_size_bytes) ))
addr=$(qmp_info vm0 memaddr)
top=$((addr + 2 * GIB))

# Whether the big block at $1 is added (System RAM (virtio_mem) covers it).
bb_added() {
    local range start end
    while read -r range; do
        start=$((0x${range%-*})) end=$((0x${range#*-}))
        [ "$start" -le "$1" ] && [ "$1" -le "$end" ] && return 0
    done < <(sed -n 's/^ *\([0-9a-f]*-[0-9a-f]*\) : System RAM (virtio_mem)$/\1/p' /proc/iomem)
    return 1
}

ktap_header 22
base_kb=$(memtotal_kb)
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
vdev=$(virtio_mem_devices)
vmctl set-size vm0 3G >/dev/null
ktap_check "3G plugged" quiet vmem_status wait "$vdev" --size 3G --timeout 300
ktap_check "a page of the top big block is taken and held" \
    eval "insmod $VMR_KO_PIN && echo $((top + (64 << 20))) >/sys/module/vmr_pin_page/parameters/pin"
vmctl set-size vm0 2G >/dev/null
ktap_check "2G reached" quiet vmem_status wait "$vdev" --size 2G --timeout 300
ktap_check "the top big block stays" bb_added $top
ktap_check "a lower one went" eval "! bb_added $((addr + GIB))"
vmctl set-size vm0 1G >/dev/null
ktap_check "1G reached, the top big block stays" \
    eval "vmem_status wait $vdev --size 1G --timeout 300 >/dev/null && bb_added $top"
vmctl set-size vm0 0 >/dev/null
ktap_check "0: the driver stops short" quiet vmem_status wait "$vdev" --until settled --timeout 300
ktap_eq "and says why" "blocks hold unmovable pages" \
    "$(timeout "$(scaled 5)" cat "/sys/bus/virtio/devices/$vdev/virtio_mem/reason")"
check_sizes "stalled at 1G" "$vdev" vm0 "$base_kb"
vmctl set-size vm0 2G >/dev/null
ktap_check "a later request (2G) is followed" quiet vmem_status wait "$vdev" --size 2G --timeout 300
rmmod vmr_pin_page
vmctl set-size vm0 0 >/dev/null
ktap_check "with the page let go, 0 is reached" \
    quiet vmem_status wait "$vdev" --size 0 --timeout 300

# Offlining a big block that fails after some of its memory blocks went offline: the helper
# refuses the offlining of the fifth memory block of the upper of two big blocks. The kernel
# onlines the first four again (its rollback, which the region must let through although the
# driver took their pages first), the driver gives the pages back and unplugs the lower big
# block instead. As the C driver, nothing of the big block stays offline.
vmctl set-size vm0 2G >/dev/null
ktap_check "2G plugged again" quiet vmem_status wait "$vdev" --size 2G --timeout 300
upper=$((addr + GIB)) mark=$(dmesg_mark)
insmod "$VMR_KO_PIN" &&
    echo $((upper + 4 * block)) >/sys/module/vmr_pin_page/parameters/veto_offline
vmctl set-size vm0 1G >/dev/null
ktap_check "1G reached with the upper big block's offlining refused" \
    eval "vmem_status wait $vdev --size 1G --timeout 300 >/dev/null && dmesg_since $mark | grep -q 'vmr_pin_page: refusing to offline'"
ktap_check "the upper big block stays" bb_added $upper
states=$(for ((n = upper / block; n < (upper + GIB) / block; n++)); do block_state $n; done |
    sort | uniq -c | xargs)
ktap_eq "all 8 of its memory blocks are online again" "8 online" "$states"
ktap_eq "MemTotal grew by the 1G plugged (kB)" $((GIB / 1024)) $(($(memtotal_kb) - base_kb))
rmmod vmr_pin_page
vmctl set-size vm0 0 >/dev/null
ktap_check "with the refusal gone, 0 is reached" \
    quiet vmem_status wait "$vdev" --size 0 --timeout 300

# unplug_online=0: an online top big block, an offline one below it.
rmmod virtio_mem_rust
echo offline >/sys/devices/system/memory/auto_online_blocks
ktap_check "load virtio_mem_rust unplug_online=0" load_bound "$VMR_KO_RUST" unplug_online=0
vmctl set-size vm0 2G >/dev/null
ktap_check "2G plugged, offline" quiet vmem_status wait "$vdev" --size 2G --timeout 300
for ((n = (addr + GIB) / block; n < (addr + 2 * GIB) / block; n++)); do
    echo online_movable >/sys/devices/system/memory/memory$n/state
done
vmctl set-size vm0 1G >/dev/null
ktap_check "1G: the lower, offline big block is unplugged" \
    eval "vmem_status wait $vdev --size 1G --timeout 300 >/dev/null && ! bb_added $addr && bb_added $((addr + GIB))"
ktap_finish
