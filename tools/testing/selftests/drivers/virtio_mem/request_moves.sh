#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: the host changes its mind while the driver works. 16G is
# requested (in batches: at most 8G each, and 1G here, where at most 1G may be
# added and not yet online), and once the first batch is plugged the request
# drops to 0. The driver reads the request again between batches: it stops
# after the batch in flight and turns around, so the plugged size never
# reaches 16G; then it gets to 0. The other way round too: from 16G, 0 is
# requested and, once unplugging is under way, 16G again: the driver never
# gets down to 0.
#
# Each half also checks that its premise held: the request moved while the
# driver was on its way (plugged more than 0 and less than 16G; it sent fewer
# PLUGs than its 16G takes, or UNPLUGs and was below 16G), not before it
# started or after it got there. The second request of each half goes through
# the open QMP connection of a `vmctl record` (in tens of ms; a vmctl call of
# its own takes a second or two here, about as long as plugging all 16G).
#
# Expects vm0: a 16G region with 2M blocks, memhp_default_state=online_movable.
set -u
source "$(dirname "$0")/lib.sh"
requires movable vm0:16G

dir=$(mktemp -d)
mkfifo "$dir/never"
exec 9<>"$dir/never"
# The driver's plugged size, without a fork (a TCG guest forks slowly).
plugged() {
    local p
    read -r p <"/sys/bus/virtio/devices/$vdev/virtio_mem/plugged_size"
    echo "$p"
}

# start_moves FIRST SECOND COND...: requests FIRST, then SECOND as soon as
# COND succeeds (tried every 10 ms, at most 60 s, scaled), through the open
# QMP connection of a `vmctl record`, which meanwhile writes QEMU's size every
# 10 ms to $dir/rec until end_moves; sets $at to the plugged size at the
# switch. Meanwhile the driver's plugged size is sampled into $dir/sysfs.
start_moves() {
    local first=$1 second=$2
    shift 2
    mkfifo "$dir/in"
    vmctl record vm0 --interval-ms 10 <"$dir/in" >"$dir/rec" &
    rec=$!
    exec 3>"$dir/in"
    (while [ ! -e "$dir/stop" ]; do plugged; read -r -t 0.01 -u 9; done) >"$dir/sysfs" &
    sampler=$!
    echo "$first" >&3
    for _ in $(seq 1 "$(scaled 6000)"); do "$@" && break; read -r -t 0.01 -u 9; done
    at=$(plugged)
    echo "$second" >&3
}
# end_moves: ends both samplers; sets $lo and $hi to the lowest and highest
# size either saw.
end_moves() {
    exec 3>&-
    touch "$dir/stop"
    wait $rec $sampler
    read -r lo hi < <( (awk '{ print $3 }' "$dir/rec"; cat "$dir/sysfs") |
        sort -n | sed -n '1p;$p' | paste -sd' ')
    rm -f "$dir/in" "$dir/stop"
}
plugged_above() { [ "$(plugged)" -gt "$1" ]; }
plugged_below() { [ "$(plugged)" -lt "$1" ]; }

ktap_header 8
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
vdev=$(virtio_mem_devices)

start_moves 16G 0 plugged_above 0
reached=0
quiet vmem_status wait "$vdev" --size 0 --timeout 300 || reached=$?
end_moves
plugs=$(vmem_stat "$vdev" plug_ack)
ktap_diag "16G, then 0 once $at bytes were plugged: plugged between $lo and $hi, $plugs PLUGs"
ktap_check "16G then 0: the request dropped while the driver plugged (more than 0, below 16G)" \
    test "$at" -gt 0 -a "$at" -lt "$(to_bytes 16G)"
# With 1G batches 16G takes 16 PLUGs: fewer say it turned around even if the
# sampling missed the peak.
ktap_check "the driver turned around before 16G (and sent fewer PLUGs than 16G takes)" \
    test "$hi" -lt "$(to_bytes 16G)" -a "$plugs" -lt 16
ktap_eq "and gets to 0" "0 0" "$reached $(plugged)"

vmctl set-size vm0 16G >/dev/null
ktap_check "16G plugged" quiet vmem_status wait "$vdev" --size 16G --timeout 300

unplugs=$(vmem_stat "$vdev" unplug_ack)
# Once unplugging is under way, the host wants it all back.
start_moves 0 16G plugged_below "$(to_bytes 16G)"
reached=0
quiet vmem_status wait "$vdev" --size 16G --timeout 300 || reached=$?
end_moves
unplugs=$(($(vmem_stat "$vdev" unplug_ack) - unplugs))
ktap_diag "0, then 16G once $at bytes were left: plugged between $lo and $hi," \
    "$unplugs UNPLUGs"
ktap_check "0 then 16G: unplugging was under way (UNPLUGs sent, below 16G)" \
    test "$unplugs" -gt 0 -a "$at" -lt "$(to_bytes 16G)"
ktap_check "and the driver turned around before 0" test "$lo" -gt 0
ktap_eq "and gets back to 16G" "0 $(to_bytes 16G)" "$reached $(plugged)"
rm -rf "$dir"
ktap_finish
