#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: two devices in one guest, one per NUMA node; the memory each
# plugs lands on its device's node (ACPI proximity domain -> node).
#
# Expects vm0 on node 0 and vm1 on node 1, each with 1G requested at boot.
set -u
source "$(dirname "$0")/lib.sh"
requires movable vm0:4G:2M:1G vm1:4G:1G:2G

node_kb() { sed -n "s/^Node $1 MemTotal: *\([0-9]*\) kB/\1/p" \
    "/sys/devices/system/node/node$1/meminfo"; }

ktap_header 6
n0=$(node_kb 0) n1=$(node_kb 1)
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
for qid in vm0 vm1; do
    want=$(qmp_info "$qid" requested-size)
    ktap_eq "$qid: plugged the requested size" "$want" \
        "$(vmctl wait "$qid" "$want" --wait-timeout-s 120 2>&1 | tail -n1)"
done
want_kb=$(( $(qmp_info vm0 requested-size) / 1024 ))
sleep 1
ktap_eq "node 0 grew by vm0's memory (kB)" "$want_kb" $(( $(node_kb 0) - n0 ))
ktap_eq "node 1 grew by vm1's memory (kB)" "$(( $(qmp_info vm1 requested-size) / 1024 ))" \
    $(( $(node_kb 1) - n1 ))
ktap_eq "/proc/iomem has both devices' memory" \
    "$(( $(qmp_info vm0 size) + $(qmp_info vm1 size) ))" "$(virtio_mem_ram_bytes)"
ktap_finish
