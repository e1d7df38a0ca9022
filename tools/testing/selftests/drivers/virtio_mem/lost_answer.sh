#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: the device acts on a request but its answer does not come in
# time. QEMU always answers at once, so the driver's debugfs knob
# `lose_answers` drops answers that did come: the device has acted, the driver
# sees a timeout. Any timeout is handled that way.
#
# A lost PLUG answer: the device plugged memory that the driver does not know
# of. The driver waits (reason: the device did not answer in time), then
# resynchronizes with STATE requests, unplugs what the device plugged in
# vain, and plugs the request again, in smaller pieces (a host slower than the
# timeout for a big plug must not see the same plug again and again).
#
# A lost UNPLUG answer: the device may have unplugged the memory, so the
# driver must never use it again. The driver takes it as unplugged and keeps
# its pages offline (a sub-block) or removed (a big block). Right away its
# sizes match the device's and MemTotal. Then it carries on down to the
# request.
#
# Expects vm0: an 8G region with 2M blocks (sub-block mode) or 1G blocks
# (big-block mode), memhp_default_state=online_movable.
set -u
source "$(dirname "$0")/lib.sh"
# scripts/test.sh runs it with 2M blocks (sub-block mode) and with 1G (big-block mode).
if [ "$(qmp_info vm0 block-size 2>/dev/null)" = $((1 << 30)) ]; then \
    requires movable vm0:8G:1G; else requires movable vm0:8G; fi

mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
ktap_header 19
base_kb=$(memtotal_kb)
vdev=$(virtio_mem_devices)
knob=/sys/kernel/debug/virtio_mem_rust-$vdev/lose_answers
timeout_reason="device did not answer in time"

ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
vmctl set-size vm0 1G >/dev/null
ktap_check "1G plugged" quiet vmem_status wait "$vdev" --size 1G --timeout 300
ktap_eq "lose_answers is 0" 0 "$(cat "$knob")"

# A lost PLUG answer.
echo 1 >"$knob"
vmctl set-size vm0 2G >/dev/null
ktap_check "2G: the driver stops short" quiet vmem_status wait "$vdev" --until settled --timeout 300
ktap_eq "2G: reason: no answer in time" "$timeout_reason" "$(vmem_attr "$vdev" reason)"
ktap_eq "2G: the answer was dropped" 0 "$(cat "$knob")"
ktap_check "2G: the retry gets there" quiet vmem_status wait "$vdev" --size 2G --timeout 300
check_sizes "2G" "$vdev" vm0 "$base_kb"
ktap_check "2G: the resync unplugged what the device had plugged in vain" \
    eval "script_log | grep -q 'virtio_mem_rust $vdev: the device.s plugged state of .* differs from the driver.s; sending UNPLUG'"
if [ "$(vmem_attr "$vdev" mode)" = sub-block ]; then
    ktap_check "2G: the plug is tried again in smaller pieces" \
        eval "script_log | grep -q 'virtio_mem_rust $vdev: the device did not answer in time to a plug of 0x40000000 bytes; trying smaller pieces'"
else
    ktap_skip "2G: the plug is tried again in smaller pieces" "one big block cannot be split"
fi

# A lost UNPLUG answer.
echo 1 >"$knob"
vmctl set-size vm0 1G >/dev/null
ktap_check "1G: the driver stops short" quiet vmem_status wait "$vdev" --until settled --timeout 300
ktap_check "1G: it takes the memory as unplugged" \
    eval "script_log | grep -q 'virtio_mem_rust $vdev: no definite answer to the UNPLUG of .*: taking it as unplugged'"
check_sizes "1G, no answer" "$vdev" vm0 "$base_kb"
ktap_check "1G: the retry gets there" quiet vmem_status wait "$vdev" --size 1G --timeout 300
check_sizes "1G" "$vdev" vm0 "$base_kb"
ktap_diag "stats: resyncs $(vmem_stat "$vdev" resyncs), plug_failed $(vmem_stat "$vdev" plug_failed), unplug_failed $(vmem_stat "$vdev" unplug_failed)"
ktap_check "the guest is left clean for a next script (leave_clean)" leave_clean
ktap_finish
