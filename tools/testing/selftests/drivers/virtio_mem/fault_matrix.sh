#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: a device that lies. One fault per case, for every request kind
# (PLUG, UNPLUG, UNPLUG_ALL, STATE) and every answer a device can give
# instead of the right one (debugfs `inject`, see the driver's fault.rs):
#   nack, busy, error  a definite refusal; the device never saw the request
#   timeout            no answer; the device never saw the request
#   undefined, short   the device acted; its answer is a type the protocol
#                      does not define, or one byte long
#   lost, late         the device acted; its answer never comes, or comes
#                      after the timeout (the virtqueue is busy until then)
# Every case, in both modes (the block size picks it), against a region that
# is a file on the host's tmpfs (which the host allocates only where the guest
# writes), holds:
#   (a) the host's allocated bytes of the region never exceed what the device
#       says is plugged, sampled during and after the fault; after an UNPLUG
#       or UNPLUG_ALL fault the guest fills the free memory of ZONE_MOVABLE
#       (the region's) first, so that pages given back by mistake are written
#       to;
#   (b) MemTotal never exceeds the boot memory plus what is plugged;
#   (c) a workload's data (checked at the end) survives every case;
#   (d) the driver converges once the fault is over (a definite refusal or a
#       missing answer: it retries, after a resync where one is due;
#       debugfs retry_now spares the test the back-off), or, after an
#       undefined or short answer, it stops and says why, and the next
#       binding takes over and converges; it never says idle while short of
#       the request.
# The fault must have been injected (the driver logs each): a case whose
# fault never hit its request fails. A table of the cases ends the output.
#
# STATE requests come from a resync: the case arms an ERROR to a PLUG too.
# UNPLUG_ALL comes at unbind when nothing is added and the device has memory
# plugged: the case arms a lost PLUG answer too (the device plugs what the
# driver does not know of) and unbinds before the retry; the next binding
# finds what is left plugged and unplugs it all.
#
# VMR_FAULTS picks the faults (default: all eight), VMR_REQUESTS the request
# kinds (default: all four).
# The samples are taken by fault_sampler.py, which says how.
#
# Expects vm0: a 2G region with 2M blocks (sub-block mode) or 128M blocks
# (big-block mode), backed by a host file at $VMR_BACKING,
# memhp_default_state=online_movable.
set -u
source "$(dirname "$0")/lib.sh"
# A device block of a whole memory block (128M) makes big-block mode, with big blocks of a
# memory block: the same paths as 1G big blocks, at an eighth of the cost per case.
if [ "$(qmp_info vm0 block-size 2>/dev/null)" = $((128 << 20)) ]; then
    requires movable env:VMR_BACKING vm0:2G:128M
    mode=bbm
else
    requires movable env:VMR_BACKING vm0:2G
    mode=sbm
fi
# One memory block (one big block) per case: an UNPLUG of a whole block is one request.
base=$((512 << 20)) step=$((128 << 20))

faults=${VMR_FAULTS:-nack busy error timeout undefined short lost late}
requests=${VMR_REQUESTS:-plug unplug unplug_all state}
n_cases=$(($(wc -w <<<"$faults") * $(wc -w <<<"$requests")))
dir=/tmp/vmr-matrix
rm -rf "$dir"; mkdir -p "$dir"
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug

ktap_header $((2 + 4 * n_cases + 1))
base_kb=$(memtotal_kb)
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
vdev=$(virtio_mem_devices)
dbg=/sys/kernel/debug/virtio_mem_rust-$vdev
drvdir=/sys/bus/virtio/drivers/virtio_mem_rust

# What the device says it has plugged: its config, read live (sysfs).
device_size() { vmem_attr "$vdev" device_plugged_size; }

# Writes to all free memory of ZONE_MOVABLE, where the region's memory is
# (online_movable) and where movable allocations go first, and 64M more (a
# file on a tmpfs of its own), then frees it: pages the driver gave back by
# mistake are written to.
fill_free() {
    local pages mb
    pages=$(awk '/^Node .* zone +Movable/ { m = 1; next } /^Node / { m = 0 }
        m && $1 == "pages" && $2 == "free" { n += $3 } END { print n + 0 }' /proc/zoneinfo)
    mb=$((pages * $(getconf PAGESIZE) / (1 << 20) + 64))
    mkdir -p "$dir/fill"
    mountpoint -q "$dir/fill" || mount -t tmpfs -o size=2G none "$dir/fill"
    dd if=/dev/zero of="$dir/fill/f" bs=1M count=$mb status=none 2>/dev/null
    rm -f "$dir/fill/f"
}

rebind() {
    echo "$vdev" >"$drvdir/unbind" && echo "$vdev" >"$drvdir/bind" &&
        [ "$(bound_driver "$vdev")" = virtio_mem_rust ]
}

# converge TARGET: waits until the driver has TARGET plugged and says idle.
# A device that stops is bound again (the next binding takes over); one that
# waits or stalls is made to retry now. Prints what it took ("" if nothing).
converge() {
    local target=$1 deadline=$((SECONDS + $(scaled 120))) did="" act
    while [ $SECONDS -lt "$deadline" ]; do
        quiet vmem_status wait "$vdev" --until settled --timeout 30 || true
        act=$(vmem_attr "$vdev" activity)
        if [ "$act" = idle ] && [ "$(vmem_attr "$vdev" plugged_size)" = "$target" ] &&
            [ "$(device_size)" = "$target" ]; then
            echo "$did"; return 0
        fi
        case $act in
            stopped) did+="stopped ($(vmem_attr "$vdev" reason)), rebound; "
                     rebind || { echo "${did}rebind failed"; return 1; } ;;
            *) [[ "$did" == *retried* ]] || did+="retried; "
               echo 1 >"$dbg/retry_now"; sleep 0.5 ;;
        esac
        [ -d "$dbg" ] || sleep 0.5
    done
    echo "${did}did not converge to $target (activity $(vmem_attr "$vdev" activity)," \
        "plugged $(vmem_attr "$vdev" plugged_size))"
    return 1
}

arm() { echo "$1" >"$dbg/inject"; }

vmctl set-size vm0 $base >/dev/null
converge $base >/dev/null
ktap_eq "$mode: the base size, $((base >> 20))M, plugged (QMP)" $base "$(qmp_info vm0 size)"
# The workload: its pages may sit in plugged memory (online_movable).
dd if=/dev/urandom of="$dir/work" bs=1M count=128 status=none
sum=$(sha256sum <"$dir/work")

table=()
for req in $requests; do
    for fault in $faults; do
        c="$mode $req $fault" t0=$SECONDS
        rm -f "$dir/stop" "$dir/sampling"
        python3 "$(dirname "$0")/fault_sampler.py" "$vdev" "$VMR_BACKING" "$base_kb" "$dir/stop" \
            "$dir/sampling" >"$dir/samples" &
        spid=$!
        # The fault comes once the sampler samples (python's start under TCG takes seconds).
        for _ in $(seq $((100 * VMR_TIME_FACTOR))); do [ -e "$dir/sampling" ] && break; sleep 0.1; done
        mark=$(dmesg_mark)
        case $req in
            plug) arm "plug $fault"; target=$((base + step)) ;;
            unplug) arm "unplug $fault"; target=$((base - step)) ;;
            state) arm "plug error"; arm "state $fault"; target=$((base + step)) ;;
            unplug_all)
                # Nothing added, then a PLUG whose answer is lost: the device has memory
                # plugged that the driver does not track, and unbind unplugs it all.
                vmctl set-size vm0 0 >/dev/null; converge 0 >/dev/null
                arm "plug lost"; arm "unplug_all $fault"; target=$step ;;
        esac
        vmctl set-size vm0 $target >/dev/null
        quiet vmem_status wait "$vdev" --until settled --timeout 60 || true
        if [ "$req" = unplug_all ]; then
            echo "$vdev" >"$drvdir/unbind"
            [ -z "$(bound_driver "$vdev")" ] || ktap_diag "$c: still bound after unbind"
            echo "$vdev" >"$drvdir/bind"
        fi
        case $req in unplug|unplug_all) fill_free ;; esac
        did=$(converge $target); conv=$?
        touch "$dir/stop"; wait $spid
        log=$(dmesg_since "$mark")
        # The driver's line for this case's own fault (not the PLUG ones some cases arm too).
        case $req in
            plug) what="PLUG of" ;; unplug) what="UNPLUG of" ;;
            unplug_all) what="UNPLUG_ALL" ;; state) what="STATE of" ;;
        esac
        injected=$(grep -ci "virtio_mem_rust $vdev: injecting $fault for $what" <<<"$log")
        read -r host_over mt_over idle_short samples <"$dir/samples" ||
            { host_over=unknown mt_over=unknown idle_short=unknown samples=0; }
        # Which outcome each fault must have: undefined and short answers stop the device
        # (but for UNPLUG_ALL, which comes at unbind: the binding ends anyway).
        want_stop=0 outcome="converged"
        case $req:$fault in
            unplug_all:*) ;;
            *:undefined|*:short) want_stop=1 outcome="stopped, was bound again and converged" ;;
        esac
        stopped=0; [[ "$did" == *stopped* ]] && stopped=1
        ktap_check "$c: the fault was injected, and the driver $outcome" \
            test "$injected" -ge 1 -a "$conv" = 0 -a "$stopped" = "$want_stop"
        most="most: $host_over bytes, $samples samples"
        ktap_check "$c: (a) the host never held more than the device had plugged ($most)" \
            test "$samples" -gt 0 -a "$host_over" -le 0
        ktap_check "$c: (b) MemTotal never exceeded boot plus plugged (most: $mt_over bytes)" \
            test "$samples" -gt 0 -a "$mt_over" -le 0
        ktap_check "$c: (d) never idle short of the request" test "$idle_short" = 0
        table+=("$(printf '| %-4s | %-10s | %-9s | %14s | %3d s | %s' "$mode" "$req" "$fault" \
            "$host_over" $((SECONDS - t0)) "${did:-converged at once}")")
        echo clear >"$dbg/inject"
        vmctl set-size vm0 $base >/dev/null
        converge $base >/dev/null || ktap_diag "$c: did not get back to the base size"
    done
done
ktap_eq "(c) the workload's data survived every case" "$sum" "$(sha256sum <"$dir/work")"
ktap_diag "| mode | request    | fault     | host - plugged | time  | what the driver did"
for row in "${table[@]}"; do ktap_diag "$row"; done
vmctl set-size vm0 0 >/dev/null
converge 0 >/dev/null
mountpoint -q "$dir/fill" && umount "$dir/fill"
ktap_finish
