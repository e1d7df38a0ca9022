#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: the region is reserved while the device is bound (as the C
# driver does it), and a device whose memory is still in use is refused.
#
# The C driver plugs and adds the requested memory, then is unbound: it cannot
# take that memory back and leaves it added. Binding virtio_mem_rust then must
# fail with a message instead of touching (or unplugging) memory in use.
set -u
source "$(dirname "$0")/lib.sh"
requires vm0:4G

ktap_header 10
vdev=$(virtio_mem_devices)
addr=$(qmp_info vm0 memaddr)
region=$(qmp_info vm0 region-size)
range=$(printf '%x-%x' "$addr" $((addr + region - 1)))

ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
ktap_check "the region is reserved under the device's name" \
    grep -q "^ *$range : $vdev\$" /proc/iomem
ktap_check "unload virtio_mem_rust" rmmod virtio_mem_rust
ktap_check "the reservation is released on unbind" eval "! grep -q '^ *$range : ' /proc/iomem"

vmctl set-size vm0 512M >/dev/null
ktap_check "load the C driver" load_bound "$VMR_KO_C"
ktap_check "the C driver plugs the requested size" \
    "$VMCTL" --port-name org.qemu.qmp0 wait vm0 "$(qmp_info vm0 requested-size)" \
    --wait-timeout-s 120
echo "$vdev" >/sys/bus/virtio/drivers/virtio_mem/unbind
ktap_check "the C driver left its memory added" grep -q "System RAM (virtio_mem)" /proc/iomem

ktap_check "virtio_mem_rust loads and leaves the device unbound" load_unbound "$VMR_KO_RUST"
msg=$(dmesg | grep "virtio_mem_rust $vdev: refusing device: its region" || true)
ktap_diag "$msg"
ktap_check "virtio_mem_rust refuses the device, saying why" test -n "$msg"
ktap_eq "the memory stays plugged" "$(qmp_info vm0 requested-size)" "$(qmp_info vm0 size)"
ktap_finish
