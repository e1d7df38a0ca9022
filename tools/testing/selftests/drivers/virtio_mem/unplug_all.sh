#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: memory the device has plugged without a driver adding it.
# With memhp_default_state=offline, 130M plugged leaves a full and a partly
# plugged block offline. Unbinding removes both (a partly plugged block must
# never be onlined without the driver) and, with nothing left added, unplugs
# everything. Then the C driver plugs 100M (one partly plugged block, left
# offline) and is unloaded: it removes the block but leaves it plugged. The
# next bind of virtio_mem_rust sees memory plugged from before, unplugs it all
# (UNPLUG_ALL) and plugs the request again.
#
# Expects vm0: a 4G region with 2M blocks, nothing requested at boot.
set -u
source "$(dirname "$0")/lib.sh"
requires vm0:4G

block=$(( 0x$(cat /sys/devices/system/memory/block_size_bytes) ))

ktap_header 12
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
vdev=$(virtio_mem_devices)
vmctl set-size vm0 130M >/dev/null
size=$(vmctl wait vm0 130M --wait-timeout-s 120 2>&1 | tail -n1)
# The device's size comes first: the driver adds the blocks after the PLUG.
quiet vmem_status wait "$vdev" --size 130M --timeout 60
ktap_eq "130M plugged, in two blocks" "$(to_bytes 130M) $((2 * block))" \
    "$size $(virtio_mem_ram_bytes)"
ktap_check "unload with both blocks offline" rmmod virtio_mem_rust
ktap_eq "no memory of the region is left added" "" "$(grep "System RAM (virtio_mem)" /proc/iomem)"
ktap_eq "the device has nothing plugged" 0 "$(qmp_info vm0 size)"

vmctl set-size vm0 100M >/dev/null
load_bound "$VMR_KO_C"
vmctl wait vm0 100M --wait-timeout-s 120 >/dev/null 2>&1
rmmod virtio_mem
ktap_eq "the C driver left 100M plugged and nothing added" "$(to_bytes 100M) " \
    "$(qmp_info vm0 size) $(grep "System RAM (virtio_mem)" /proc/iomem)"
ktap_check "load virtio_mem_rust again" load_bound "$VMR_KO_RUST"
ktap_check "it sees the memory plugged from before" \
    eval "script_log | grep -q 'virtio_mem_rust $vdev: unplugging all memory is required'"
size=$(vmctl wait vm0 100M --wait-timeout-s 120 2>&1 | tail -n1)
ktap_eq "it plugs the 100M requested" "$(to_bytes 100M)" "$size"
ktap_check "after unplugging all of it first" \
    eval "script_log | grep -q 'virtio_mem_rust $vdev: unplugged all memory plugged from before'"
quiet vmem_status wait "$vdev" --size 100M --timeout 60
ktap_eq "one partly plugged block is added" "$block" "$(virtio_mem_ram_bytes)"
ktap_check "the guest is left clean for a next script (leave_clean)" leave_clean
ktap_finish
