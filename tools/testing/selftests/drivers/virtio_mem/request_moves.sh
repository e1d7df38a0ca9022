#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: the host changes its mind while the driver works. 16G is
# requested (two batches of 8G), and right after the request drops to 0. The
# driver reads the request again between batches: it stops after the batch in
# flight and turns around, so the plugged size never reaches 16G; then it gets
# to 0. The other way round too: from 16G, 0 is requested and, once unplugging
# is under way, 16G again: the driver never gets down to 0.
#
# Expects vm0: a 16G region with 2M blocks, memhp_default_state=online_movable.
set -u
source "$(dirname "$0")/lib.sh"
requires movable vm0:16G

# Samples the driver's plugged size until it is idle at $1 bytes; prints the
# lowest and highest size seen.
watch_plugged() {
    local want=$1 lo= hi=0 p
    for _ in $(seq 1 "$(scaled 3000)"); do
        p=$(vmem_attr "$vdev" plugged_size)
        [ -z "$lo" ] || [ "$p" -lt "$lo" ] && lo=$p
        [ "$p" -gt "$hi" ] && hi=$p
        [ "$p" = "$want" ] && [ "$(vmem_attr "$vdev" activity)" = idle ] && break
        sleep 0.1
    done
    echo "$lo $hi"
}

ktap_header 6
ktap_check "load virtio_mem_rust" insmod "$VMR_KO_RUST"
vdev=$(virtio_mem_devices)
vmctl set-size vm0 16G >/dev/null
sleep 0.5
vmctl set-size vm0 0 >/dev/null
read -r lo hi < <(watch_plugged 0)
ktap_diag "16G, then 0: plugged between $lo and $hi"
ktap_check "16G then 0: the driver turns around before 16G" test "$hi" -lt "$(to_bytes 16G)"
ktap_eq "and gets to 0" 0 "$(vmem_attr "$vdev" plugged_size)"
vmctl set-size vm0 16G >/dev/null
ktap_check "16G plugged" quiet vmem_status wait "$vdev" --size 16G --timeout 300
vmctl set-size vm0 0 >/dev/null
# Once unplugging is under way, the host wants it all back.
for _ in $(seq 1 "$(scaled 600)"); do
    dip=$(vmem_attr "$vdev" plugged_size)
    [ "$dip" -lt "$(to_bytes 16G)" ] && break
    sleep 0.1
done
vmctl set-size vm0 16G >/dev/null
read -r lo hi < <(watch_plugged "$(to_bytes 16G)")
ktap_diag "0, then 16G once $dip bytes were left: plugged between $lo and $hi afterwards"
ktap_check "0 then 16G: the driver turns around before 0" test "$lo" -gt 0
ktap_eq "and gets back to 16G" "$(to_bytes 16G)" "$(vmem_attr "$vdev" plugged_size)"
ktap_finish
