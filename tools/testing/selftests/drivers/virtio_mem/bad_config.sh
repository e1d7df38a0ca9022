#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: a device whose configuration makes no sense for this guest is
# refused at probe with a message naming the field, and nothing is lost: the
# device stays unbound, the module unloads and loads cleanly.
#
# The guest is booted with 4-level paging (46 physical address bits for the
# kernel) and a device placed at 80 TiB, beyond what it can hotplug.
set -u
source "$(dirname "$0")/lib.sh"
requires vm0:1G

ktap_header 6
vdev=$(virtio_mem_devices)
ktap_check "a virtio-mem device is present" test -n "$vdev"
ktap_check "load virtio_mem_rust, binding nothing" load_unbound "$VMR_KO_RUST"
msg=$(dmesg | grep "virtio_mem_rust $vdev: refusing device" || true)
ktap_diag "$msg"
ktap_check "probe refused the device with a message" test -n "$msg"
ktap_check "the message names the fields and the pluggable range" \
    grep -q "addr/region_size: region \[0x500000000000-.*outside the pluggable physical range" \
    <<<"$msg"
ktap_eq "the device is not bound" "" "$(bound_driver "$vdev")"
ktap_check "unload and load again, binding nothing" \
    eval 'rmmod virtio_mem_rust && load_unbound "$VMR_KO_RUST" && rmmod virtio_mem_rust'
ktap_finish
