#!/usr/bin/env bash
# `make bench`: one kernel, one guest, the C driver and virtio_mem_rust side
# by side. Each driver gets an 8G and a 16G device of its own (2M blocks,
# auto-onlined movable); plugging 0 -> 8G and 0 -> 16G is timed until the
# device reports the size and MemTotal shows it. Prints both times and the
# ratio Rust/C (below 1.0: ours is faster).
#
# Then unplug, in one guest per driver (the kernel has one online-page
# callback, which each driver needs for unplugging online memory): 16G -> 0
# idle, and 12G -> 2G while a workload holds 6G of the 2G+12G guest. Prints
# the time to settle, the final plugged size, OOM kills and whether the
# workload survived with its data.
source "$(dirname "$0")/common.sh"
"$REPO/scripts/setup-host.sh"
"$REPO/scripts/build.sh" >/dev/null
(cd "$REPO/tools/vmctl" && cargo build --release --quiet)

genv=$(guest_env)
vmems=()
for d in c8:8G r8:8G c16:16G r16:16G; do
    vmems+=(--vmem "size=${d#*:},block=2M,id=${d%%:*}")
done
"$REPO/scripts/run-guest.sh" --mem 4G --timeout 1800 --append memhp_default_state=online_movable \
    "${vmems[@]}" -- "cd $REPO && export $genv && scripts/bench-guest.sh" </dev/null

echo
printf '%-16s %-26s %10s %12s %6s %s\n' "driver" "unplug" "settle (ms)" "final (MiB)" "OOMs" "workload ok"
for drv in virtio_mem virtio_mem_rust; do
    "$REPO/scripts/run-guest.sh" --mem 2G --timeout 1800 --append memhp_default_state=online_movable \
        --vmem size=16G,block=2M,id=vm0 -- "cd $REPO && export $genv && scripts/bench-unplug-guest.sh $drv" \
        </dev/null | grep -E '^virtio_mem|^bench:'
done
