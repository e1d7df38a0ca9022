#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: virtio_mem_rust binds every virtio-mem device and reports the
# configuration QEMU reports over QMP; load, unload and load again work.
#
# Expects the guest to have been booted with the devices named in
# VMR_DEVICES (QMP ids, e.g. "vm0 vm1") and NUMA nodes as QEMU set up.
# Last, the C driver (virtio_mem.ko, the reference) is loaded on the same
# devices and must have found the same layout.
set -u
source "$(dirname "$0")/lib.sh"
requires vm0:16G:2M:0

read -ra qids <<<"${VMR_DEVICES:-vm0}"
per_dev=8
c_per_dev=7
ktap_header $(( 3 + ${#qids[@]} * per_dev + 5 + 1 + ${#qids[@]} * c_per_dev + 3 ))

ktap_check "QMP reachable from the guest" quiet vmctl list
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"

mapfile -t vdevs < <(virtio_mem_devices)
ktap_eq "one virtio device per virtio-mem-pci device" "${#qids[@]}" "${#vdevs[@]}"

# Match QMP devices to virtio devices by the start address both report.
for qid in "${qids[@]}"; do
    memaddr=$(qmp_info "$qid" memaddr)
    vdev=
    for v in "${vdevs[@]}"; do
        addr=$(logged "$v" "start address")
        [ -n "$addr" ] && [ "$(hex_to_dec "$addr")" = "$memaddr" ] && vdev=$v
    done
    if [ -z "$vdev" ]; then
        for ((k = 0; k < per_dev; k++)); do \
            ktap_fail "$qid: no bound device reports start address $memaddr"; done
        continue
    fi
    ktap_diag "$qid is $vdev"
    ktap_eq "$qid: bound to virtio_mem_rust" virtio_mem_rust "$(bound_driver "$vdev")"
    ktap_eq "$qid: start address matches QMP memaddr" "$memaddr" \
        "$(hex_to_dec "$(logged "$vdev" "start address")")"
    ktap_eq "$qid: region size matches QMP" "$(qmp_info "$qid" region-size)" \
        "$(hex_to_dec "$(logged "$vdev" "region size")")"
    ktap_eq "$qid: device block size matches QMP" "$(qmp_info "$qid" block-size)" \
        "$(hex_to_dec "$(logged "$vdev" "device block size")")"
    ktap_eq "$qid: requested size matches QMP" "$(qmp_info "$qid" requested-size)" \
        "$(hex_to_dec "$(logged "$vdev" "requested size")")"
    ktap_eq "$qid: plugged size matches QMP size" "$(qmp_info "$qid" size)" \
        "$(hex_to_dec "$(logged "$vdev" "plugged size")")"
    # The device's node id is an ACPI proximity domain (VIRTIO_MEM_F_ACPI_PXM): a guest without
    # ACPI (arm64 on QEMU's virt machine from its device tree) cannot translate it, and both
    # drivers take the node of the region's address instead (compared with the C driver below).
    if [ -d /sys/firmware/acpi ]; then
        ktap_eq "$qid: node matches QMP node" "$(qmp_info "$qid" node)" "$(logged "$vdev" "nid")"
    else
        ktap_skip "$qid: node matches QMP node" \
            "no ACPI: the device's node id (a PXM) has no meaning here"
    fi
    ktap_eq "$qid: unplugged memory reported inaccessible" yes \
        "$(logged "$vdev" "unplugged memory is inaccessible")"
done

# Unload, check that every device is unbound, load again.
ktap_check "unload virtio_mem_rust" rmmod virtio_mem_rust
left=0
for v in "${vdevs[@]}"; do [ -n "$(bound_driver "$v")" ] && left=$((left + 1)); done
ktap_eq "no device bound after unload" 0 "$left"
ktap_check "load virtio_mem_rust again" load_bound "$VMR_KO_RUST"
bound=0
for v in "${vdevs[@]}"; do \
    [ "$(bound_driver "$v")" = virtio_mem_rust ] && bound=$((bound + 1)); done
ktap_eq "every device bound again after reload" "${#vdevs[@]}" "$bound"

# Side by side with the C driver: same devices, same view of them, the same features
# negotiated (which depend on the kernel: ACPI_PXM only with ACPI NUMA).
declare -A features
for v in "${vdevs[@]}"; do features[$v]=$(cat "/sys/bus/virtio/devices/$v/features"); done
ktap_check "unload virtio_mem_rust before loading the C driver" rmmod virtio_mem_rust
ktap_check "load the C driver virtio_mem" load_bound "$VMR_KO_C"
for v in "${vdevs[@]}"; do
    ktap_eq "$v: bound to the C driver" virtio_mem "$(bound_driver "$v")"
    for label in "start address" "region size" "device block size" "nid" "memory block size"; do
        ktap_eq "$v: C driver logs the same $label" "$(logged "$v" "$label")" \
            "$(logged_by virtio_mem "$v" "$label")"
    done
    ktap_eq "$v: C driver negotiates the same features" "${features[$v]}" \
        "$(cat "/sys/bus/virtio/devices/$v/features")"
done

# A big block no region can hold (bbm_block_size=2^63, a power of two) is refused at probe with
# a message, not taken (2 * 2^63 overflows: a panic with overflow checks, the debug lane's).
mark=$(dmesg_mark)
ktap_check "unload the C driver" rmmod virtio_mem
ktap_check "load with force_bbm=1 bbm_block_size=2^63: every device refused" \
    load_unbound "$VMR_KO_RUST" force_bbm=1 bbm_block_size=9223372036854775808
refused=$(dmesg_since "$mark" |
    grep -c "virtio_mem_rust .*: refusing device: big blocks of 0x8000000000000000 bytes")
ktap_eq "each with a message" "${#vdevs[@]}" "$refused"
rmmod virtio_mem_rust

ktap_finish
