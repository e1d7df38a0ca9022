#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: the C driver's module parameters force_bbm and bbm_block_size:
# with 1G big blocks forced on a 2M-block device, the driver plugs whole big
# blocks only (2G+100M requested -> 2G plugged), and unplugs whole big blocks
# only: 1G+900M keeps 2G plugged (removing a big block would go below the
# request), 1G unplugs one, MemTotal and /proc/iomem following, and the
# driver's sysfs sizes agreeing.
set -u
source "$(dirname "$0")/lib.sh"
requires movable vm0:8G

ktap_header 13
base_kb=$(memtotal_kb)
vdev=$(virtio_mem_devices)
ktap_check "load with force_bbm=1 bbm_block_size=1G" \
    load_bound "$VMR_KO_RUST" force_bbm=1 bbm_block_size=$((1 << 30))
ktap_eq "big block size logged" 0x40000000 "$(logged "$vdev" "big block size")"
vmctl set-size vm0 2G+100M >/dev/null
ktap_eq "plugged whole big blocks" "$(to_bytes 2G)" \
    "$(vmctl wait vm0 2G --wait-timeout-s 300 2>&1 | tail -n1)"
kb=$(wait_memtotal_kb $((base_kb + (2 << 20))) 120)
ktap_eq "MemTotal grew by 2G (kB)" $((2 << 20)) $((kb - base_kb))
quiet vmem_status wait "$vdev" --size 2G+100M --timeout 60
check_sizes "2G+100M" "$vdev" vm0 "$base_kb"
vmctl set-size vm0 1G+900M >/dev/null
# "Nothing happened" only once the driver has looked: activity reads "pending"
# until its run loop has seen the new request, and settles when it is done.
settled=settled
quiet vmem_status wait "$vdev" --until settled --size 1G+900M --timeout 60 || settled="not settled"
ktap_diag "1G+900M: $settled, activity $(vmem_attr "$vdev" activity)," \
    "reason: $(vmem_attr "$vdev" reason)"
ktap_eq "1G+900M: the driver settles with no big block unplugged (QMP, sysfs)" \
    "settled $(to_bytes 2G) $(to_bytes 2G)" \
    "$settled $(qmp_info vm0 size) $(vmem_attr "$vdev" plugged_size)"
vmctl set-size vm0 1G >/dev/null
ktap_eq "1G: unplugged a whole big block" "$(to_bytes 1G)" \
    "$(vmctl wait vm0 1G --wait-timeout-s 300 2>&1 | tail -n1)"
kb=$(wait_memtotal_kb $((base_kb + (1 << 20))) 120)
ktap_eq "MemTotal follows (kB)" $((1 << 20)) $((kb - base_kb))
ktap_eq "System RAM (virtio_mem) is 1G" "$(to_bytes 1G)" "$(virtio_mem_ram_bytes)"
quiet vmem_status wait "$vdev" --size 1G --timeout 60
check_sizes "1G" "$vdev" vm0 "$base_kb"
ktap_check "the guest is left clean for a next script (leave_clean)" leave_clean
ktap_finish
