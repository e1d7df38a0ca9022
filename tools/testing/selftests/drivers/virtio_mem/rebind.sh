#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: unbind, bind, unload and load with memory plugged and some of it
# in use. Unbinding gives back what is free (within the safety margin) and
# leaves what is in use added and plugged, parked with the region; the next
# binding, also of a freshly loaded module, takes it over: its blocks and
# plugged sub-blocks are rediscovered (from the pages of online blocks, whose
# unplugged sub-blocks are kept offline, and STATE requests for the rest), the
# device agrees, the sysfs sizes are right, and the driver follows resizes
# again. The workload survives with its data intact, nothing is OOM-killed
# and the kernel logs no splat.
#
# Expects vm0: an 8G region with 2M blocks (sub-block mode) or 1G blocks
# (big-block mode), a 2G guest and memhp_default_state=online_movable.
set -u
source "$(dirname "$0")/lib.sh"
# scripts/test.sh runs it with 2M blocks (sub-block mode) and with 1G (big-block mode).
if [ "$(qmp_info vm0 block-size 2>/dev/null)" = $((1 << 30)) ]; then \
    requires movable vm0:8G:1G; else requires movable vm0:8G; fi

dir=$(mktemp -d)
ktap_header 35
base_kb=$(memtotal_kb)
vdev=$(virtio_mem_devices)
drv=/sys/bus/virtio/drivers/virtio_mem_rust
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
step=$(vmem_attr "$vdev" memory_block_size) unit=$(vmem_attr "$vdev" block_size)
[ "$unit" -le "$step" ] || step=$unit
vmctl set-size vm0 4G >/dev/null
ktap_check "4G plugged" quiet vmem_status wait "$vdev" --size 4G --timeout 300

# 3G in use in a 2G guest: at least 1G of it lives in the device's memory.
/usr/bin/python3 "$(dirname "$0")/hold_memory.py" 3072 "$dir/ready" "$dir/stop" >"$dir/out" 2>&1 &
pid=$!
for _ in $(seq 600); do \
    [ -e "$dir/ready" ] && break; kill -0 $pid 2>/dev/null || break; sleep 1; done
ktap_check "the workload holds 3G" test -e "$dir/ready"

# before_unbind: what unbinding may give back: MemAvailable now (4G plugged,
# the workload's 3G in use), and where the kernel log stands.
before_unbind() { avail0=$(mem_available) mark=$(dmesg_mark); }

# after_unbind LABEL: what unbinding leaves (4 results). It gives back free
# memory as unplugging does, down to the safety margin: every byte unplugged
# is a byte less available, so it stops at 4G - (avail0 - margin), up to one
# step above (what one step takes: a 128M memory block, or a 1G big block);
# 256M of tolerance either way for what the kernel allocates or frees
# meanwhile (50M seen here; MemAvailable drifted by 234M over pressure.sh's
# minute of unplugging). That is also at least what the workload holds beyond
# the 2G of boot memory (1G).
after_unbind() {
    local plugged added margin want msg hex='0x[0-9a-f]*'
    local tol=$((256 << 20)) mb=$step
    local re="s/.*: \\($hex\\) bytes stay added to the system (\\($hex\\) plugged).*/\\1 \\2/p"
    plugged=$(qmp_info vm0 size) added=$(virtio_mem_ram_bytes)
    margin=$(default_margin)
    want=$(($(to_bytes 4G) - (avail0 - margin)))
    [ "$want" -ge "$(to_bytes 1G)" ] || want=$(to_bytes 1G)
    ktap_diag "$1: plugged $plugged, added $added; expected plugged $want to" \
        "$((want + mb)) +- $tol (MemAvailable before $avail0, margin $margin)"
    ktap_check "$1: free memory was given back, down to the margin" \
        test "$plugged" -ge $((want - tol)) -a "$plugged" -le $((want + mb + tol)) \
        -a "$plugged" -ge "$(to_bytes 1G)"
    ktap_check "$1: everything plugged stays added" test "$plugged" -le "$added"
    # That unbind's own message, with the sizes it leaves.
    msg=$(dmesg_since "$mark" | grep "virtio_mem_rust $vdev: .* bytes stay added to the system")
    ktap_diag "$1: $msg"
    ktap_eq "$1: the driver says what stays added and plugged" \
        "$(printf '%#x %#x' "$added" "$plugged")" \
        "$(sed -n "$re" <<<"$msg" | tail -n1)"
    ktap_eq "$1: MemTotal grew by what stays plugged, no more (kB)" $((plugged / 1024)) \
        $(($(memtotal_kb) - base_kb))
}

# after_bind LABEL: the take-over (5 results). What the driver takes for
# plugged (from the pages of online blocks, from STATE for offline ones) is
# what the device has: the resync finds nothing to fix.
after_bind() {
    ktap_check "$1: the driver took the memory over" \
        eval "dmesg_since $mark | grep -q 'virtio_mem_rust $vdev: took over'"
    ktap_eq "$1: the device agrees with the driver" "" "$(dmesg_since "$mark" |
        grep "virtio_mem_rust $vdev: the device's plugged state of .* differs")"
    ktap_check "$1: it reaches the requested 4G again" \
        quiet vmem_status wait "$vdev" --size 4G --timeout 300
    check_sizes "$1" "$vdev" vm0 "$base_kb"
}

before_unbind
echo "$vdev" >"$drv/unbind"
ktap_eq "unbound" "" "$(bound_driver "$vdev")"
after_unbind "unbind"
echo "$vdev" >"$drv/bind"
ktap_eq "bound again" virtio_mem_rust "$(bound_driver "$vdev")"
after_bind "bind"
vmctl set-size vm0 6G >/dev/null
ktap_check "it follows a resize to 6G" quiet vmem_status wait "$vdev" --size 6G --timeout 300
vmctl set-size vm0 4G >/dev/null
ktap_check "and back to 4G" quiet vmem_status wait "$vdev" --size 4G --timeout 300

before_unbind
ktap_check "unload" rmmod virtio_mem_rust
after_unbind "unload"
# A probe that fails after taking the parked region over parks it again: the next load still
# takes it over (a region dropped there would stay reserved, and no driver could bind).
ktap_check "a load whose probe fails after taking the region over binds nothing" \
    load_unbound "$VMR_KO_RUST" fail_probe_after_claim=1
ktap_check "and is unloaded" rmmod virtio_mem_rust
ktap_check "load" load_bound "$VMR_KO_RUST"
after_bind "load"
ktap_check "the workload is alive" kill -0 $pid

touch "$dir/stop"
wait $pid; rc=$?
ktap_diag "$(cat "$dir/out")"
ktap_eq "the workload's data is intact" 0 "$rc"
vmctl set-size vm0 0 >/dev/null
ktap_check "then everything is unplugged" quiet vmem_status wait "$vdev" --size 0 --timeout 300
ktap_eq "nothing stays added" 0 "$(virtio_mem_ram_bytes)"
ktap_eq "nothing was OOM-killed" "" "$(script_log | grep -iE 'out of memory|oom-kill|killed process')"
ktap_check "the guest is left clean for a next script (leave_clean)" leave_clean
ktap_finish
