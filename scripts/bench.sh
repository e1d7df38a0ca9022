#!/usr/bin/env bash
# `make bench`: one kernel, one guest, the C driver and virtio_mem_rust side
# by side. Each driver gets an 8G and a 16G device of its own (2M blocks,
# auto-onlined movable); plugging 0 -> 8G and 0 -> 16G is timed until the
# device reports the size and MemTotal shows it. Runs twice, C first in one
# guest and ours first in the other, and prints the mean times and the ratio
# Rust/C (below 1.0: ours is faster).
#
# Then unplug, in one guest per driver (the kernel has one online-page
# callback, which each driver needs for unplugging online memory): 16G -> 0
# idle, and 12G -> 2G while a workload holds 6G of the 2G+12G guest. Prints
# the time to settle, the final plugged size, OOM kills and whether the
# workload survived with its data.
#
# Then a timeline, one guest per driver: requested size, plugged size and
# MemTotal sampled every 200 ms through one resize sequence (plug, a partly
# plugged block, unplug idle, unplug under a workload and after it), written to
# bench-results/timeline.csv (and the steps to timeline-phases.csv) and drawn
# by scripts/bench-plot.sh into bench-results/timeline.svg.
#
# Then the same on the arm64 lane's kernel (qemu-system-aarch64): the plug
# table, and the idle unplug.
#
# `scripts/bench.sh PART...` runs some of it: plug, unplug, timeline, arm64.
source "$(dirname "$0")/common.sh"
"$REPO/scripts/setup-host.sh"

# plug_bench: the plug table of the current lane (two guests, each order once).
plug_bench() {
    local genv vmems=() d first out size c r
    genv=$(guest_env)
    for d in c8:8G r8:8G c16:16G r16:16G; do
        vmems+=(--vmem "size=${d#*:},block=2M,id=${d%%:*}")
    done
    # Two guests: C goes first in one, ours in the other; the times are averaged.
    declare -A c_ms r_ms
    for first in c r; do
        out=$("$REPO/scripts/run-guest.sh" --lane "$LANE" --mem 4G --timeout $((1800 * LANE_TIME_FACTOR)) \
            --append memhp_default_state=online_movable \
            "${vmems[@]}" -- "cd $REPO && export $genv && scripts/bench-guest.sh $first" </dev/null)
        grep '^bench:' <<<"$out" && exit 1
        while read -r _ size c r; do
            c_ms[$size]=$(( ${c_ms[$size]:-0} + c )) r_ms[$size]=$(( ${r_ms[$size]:-0} + r ))
            printf '  (%s first) 0 -> %-4s C %5d ms, Rust %5d ms\n' "$first" "$size" "$c" "$r"
        done < <(grep '^result ' <<<"$out" | tr -d '\r')
    done
    printf '%-10s %10s %10s %8s\n' "plug ($LANE_ARCH)" "C (ms)" "Rust (ms)" "Rust/C"
    for size in 8G 16G; do
        [ -n "${c_ms[$size]:-}" ] || die "no result for 0 -> $size"
        c=$(( c_ms[$size] / 2 )) r=$(( r_ms[$size] / 2 ))
        printf '%-10s %10d %10d %8s\n' "0 -> $size" "$c" "$r" "$(echo "scale=2; $r / $c" | bc)"
    done
}

# unplug_bench [idle]: the unplug table of the current lane, one guest per driver
# (the kernel has one online-page callback, which each driver needs for
# unplugging online memory); "idle" leaves out the case under a workload.
unplug_bench() {
    local genv drv
    genv=$(guest_env)
    echo
    printf '%-16s %-26s %10s %12s %6s %s\n' "driver ($LANE_ARCH)" "unplug" "settle (ms)" "final (MiB)" "OOMs" "workload ok"
    for drv in virtio_mem virtio_mem_rust; do
        "$REPO/scripts/run-guest.sh" --lane "$LANE" --mem 2G --timeout $((1800 * LANE_TIME_FACTOR)) \
            --append memhp_default_state=online_movable --vmem size=16G,block=2M,id=vm0 \
            -- "cd $REPO && export $genv && scripts/bench-unplug-guest.sh $drv ${1:-}" \
            </dev/null | grep -E '^virtio_mem|^bench:'
    done
}

# timeline_bench: the timeline of both drivers, its CSV files and picture.
timeline_bench() {
    local genv drv out oom workload out_dir=$REPO/bench-results
    genv=$(guest_env)
    mkdir -p "$out_dir"
    echo "driver,t_s,requested_mib,plugged_mib,memtotal_mib" >"$out_dir/timeline.csv"
    echo "driver,t_s,phase" >"$out_dir/timeline-phases.csv"
    echo "driver,oom_kills,workload" >"$out_dir/timeline-summary.csv"
    echo
    for drv in virtio_mem virtio_mem_rust; do
        out=$("$REPO/scripts/run-guest.sh" --lane "$LANE" --mem 2G --timeout $((2400 * LANE_TIME_FACTOR)) \
            --append memhp_default_state=online_movable --vmem size=8G,block=2M,id=vm0 \
            -- "cd $REPO && export $genv && scripts/bench-timeline-guest.sh $drv" </dev/null | tr -d '\r')
        grep -q "^workload,$drv," <<<"$out" || die "timeline of $drv did not finish: $(tail -n 20 <<<"$out")"
        sed -n 's/^sample,//p' <<<"$out" >>"$out_dir/timeline.csv"
        sed -n 's/^phase,//p' <<<"$out" >>"$out_dir/timeline-phases.csv"
        oom=$(sed -n "s/^oom-kills,$drv,//p" <<<"$out")
        workload=$(sed -n "s/^workload,$drv,//p" <<<"$out")
        echo "$drv,$oom,$workload" >>"$out_dir/timeline-summary.csv"
        printf 'timeline %-16s %5s samples, %s OOM kills, workload %s\n' "$drv" \
            "$(grep -c "^sample,$drv," <<<"$out")" "$oom" "$workload"
    done
    "$REPO/scripts/bench-plot.sh" "$out_dir"
}

parts=" ${*:-plug unplug timeline arm64} "
"$REPO/scripts/build.sh" >/dev/null
"$REPO/scripts/build-tools.sh"
[[ $parts != *" plug "* ]] || plug_bench
[[ $parts != *" unplug "* ]] || unplug_bench
[[ $parts != *" timeline "* ]] || timeline_bench

# The same kernel tree on arm64 (qemu-system-aarch64 -M virt under TCG): plug
# and idle unplug, ours against C in the same guests.
[[ $parts == *" arm64 "* ]] || exit 0
echo
use_lane arm64
"$REPO/scripts/build.sh" >/dev/null
"$REPO/scripts/rootfs.sh" arm64 >/dev/null
"$REPO/scripts/build-tools.sh" --lane arm64
plug_bench
unplug_bench idle
