#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: with unplug_online=0 only offline memory is unplugged. With
# memhp_default_state=offline, 1G is plugged (8 blocks, left offline) and user
# space onlines 4 of them; asked for 130M, the driver removes and unplugs the
# 4 offline blocks, leaves the online ones alone, stops at 512M and says why.
# When user space then offlines one of the online blocks, the driver unplugs
# it at once (as the C driver), not when its back-off next retries.
#
# Expects vm0: a 4G region with 2M blocks, nothing requested at boot.
set -u
source "$(dirname "$0")/lib.sh"
requires vm0:4G

block=$(( 0x$(cat /sys/devices/system/memory/block_size_bytes) ))
n0=$(( $(qmp_info vm0 memaddr) / block ))

ktap_header 9
ktap_check "load virtio_mem_rust unplug_online=0" load_bound "$VMR_KO_RUST" unplug_online=0
vmctl set-size vm0 1G >/dev/null
size=$(vmctl wait vm0 1G --wait-timeout-s 120 2>&1 | tail -n1)
ktap_eq "1G plugged" "$(to_bytes 1G)" "$size"
for n in 0 1 2 3; do echo online_movable >/sys/devices/system/memory/memory$((n0 + n))/state; done
base_kb=$(memtotal_kb)
vmctl set-size vm0 130M >/dev/null
size=$(vmctl wait vm0 512M --wait-timeout-s 120 2>&1 | tail -n1)
ktap_eq "the 4 offline blocks are unplugged, the 4 online ones stay" "$(to_bytes 512M)" "$size"
# The device's size comes first: the driver removes the blocks after the UNPLUG.
quiet vmem_status wait "$(virtio_mem_devices)" --until settled --timeout 60
ktap_eq "and they are removed" "$(to_bytes 512M)" "$(virtio_mem_ram_bytes)"
ktap_eq "online memory is untouched (MemTotal, kB)" "$base_kb" "$(memtotal_kb)"
ktap_check "the driver says why it stopped" \
    eval "script_log | grep -q 'unplugging stopped short of the requested size: only offline memory may be unplugged'"
# Wait until the back-off's next retry is at least 10 s away (it doubles from 5 s), so that
# an unplug within 5 s can only come from the offlining.
vdev=$(virtio_mem_devices)
retry_in() {
    awk -v at="$(vmem_attr "$vdev" retry_at)" '{ print (at == "none") ? 999 : int(at - $1) }' \
        /proc/uptime
}
for _ in $(seq 120); do [ "$(retry_in)" -ge 10 ] && break; sleep 0.5; done
left=$(retry_in)
t0=$SECONDS
echo offline >/sys/devices/system/memory/memory$((n0 + 3))/state
size=$(vmctl wait vm0 384M --wait-timeout-s 5 2>&1 | tail -n1)
ktap_diag "unplugged $((SECONDS - t0)) s after the offlining;" \
    "the back-off's retry was ${left} s away"
ktap_check "a block user space offlines is unplugged at once, not at the back-off's retry" \
    test "$left" -ge 10 -a "$size" = "$(to_bytes 384M)"
vmctl set-size vm0 0 >/dev/null
for n in 0 1 2; do echo offline >/sys/devices/system/memory/memory$((n0 + n))/state; done
ktap_check "offlining the rest, everything goes" \
    eval "vmctl wait vm0 0 --wait-timeout-s 60 >/dev/null"
ktap_check "the guest is left clean for a next script (leave_clean)" leave_clean
ktap_finish
