#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: in a guest without a virtio-mem device the module loads and
# unloads cleanly and binds nothing.
set -u
source "$(dirname "$0")/lib.sh"
requires nodevice

ktap_header 4
ktap_eq "no virtio-mem device present" "" "$(virtio_mem_devices)"
ktap_check "load virtio_mem_rust, binding nothing" load_unbound "$VMR_KO_RUST"
ktap_check "driver registered on the virtio bus" test -d /sys/bus/virtio/drivers/virtio_mem_rust
ktap_check "unload virtio_mem_rust" rmmod virtio_mem_rust
ktap_finish
