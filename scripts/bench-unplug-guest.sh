#!/usr/bin/env bash
# Guest side of the unplug part of `make bench` (see scripts/bench.sh): with
# driver $1 (virtio_mem or virtio_mem_rust) on device vm0 (16G region), times
# 16G -> 0 in an idle guest, then 12G -> 2G while a workload holds 6G of the
# 2G+12G guest. Prints one line per case: time to settle (ms), final plugged
# size (MiB), OOM kills, and whether the workload survived with its data.
# With "idle" as $2, only the first case runs.
set -u
source "$(dirname "$0")/../tools/testing/selftests/drivers/virtio_mem/lib.sh"

drv=$1 ko=$VMR_KO_RUST
[ "$drv" = virtio_mem ] && ko=$VMR_KO_C
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# Prints "MS SIZE": ms until the plugged size stopped changing for $1 s (not
# counting those $1 s) or reached $target, at most $2 s, and that size.
settle() {
    local quiet=$1 deadline=$((SECONDS + $2)) last="" t_last t0 now
    t0=$(now_ms) t_last=$t0
    while [ $SECONDS -lt "$deadline" ]; do
        now=$(qmp_info vm0 size)
        if [ "$now" != "$last" ]; then last=$now t_last=$(now_ms); fi
        [ $(( $(now_ms) - t_last )) -ge $((quiet * 1000)) ] && break
        [ "$now" = "$target" ] && break
        sleep 0.2
    done
    echo "$((t_last - t0)) $last"
}
# One "Killed process" line per kill (the "oom-kill:" line before it is the same kill).
ooms() { dmesg | grep -c 'Killed process' || true; }

insmod "$ko"
vmctl set-size vm0 16G >/dev/null
vmctl wait vm0 16G --wait-timeout-s 600 >/dev/null 2>&1 || { echo "bench: $drv did not plug 16G"; exit 1; }
target=0
vmctl set-size vm0 0 >/dev/null
read -r ms settled < <(settle 30 900)
printf '%-16s %-26s %10s %12s %6s %s\n' "$drv" "16G -> 0, idle" "$ms" "$((settled >> 20))" "$(ooms)" "-"
[ "${2:-}" = idle ] && exit 0

vmctl set-size vm0 12G >/dev/null
vmctl wait vm0 12G --wait-timeout-s 600 >/dev/null 2>&1 || { echo "bench: $drv did not plug 12G"; exit 1; }
dir=/tmp/vmr-bench; rm -rf "$dir"; mkdir -p "$dir"
/usr/bin/python3 "$(dirname "$0")/../tools/testing/selftests/drivers/virtio_mem/hold_memory.py" \
    6144 "$dir/ready" "$dir/stop" >"$dir/out" 2>&1 &
pid=$!
for _ in $(seq 600); do [ -e "$dir/ready" ] && break; kill -0 $pid 2>/dev/null || break; sleep 1; done
target=$(to_bytes 2G)
vmctl set-size vm0 2G >/dev/null
read -r ms settled < <(settle 30 900)
touch "$dir/stop"
if wait $pid; then survived=yes; else survived=no; fi
printf '%-16s %-26s %10s %12s %6s %s\n' "$drv" "12G -> 2G, 6G workload" "$ms" "$((settled >> 20))" "$(ooms)" "$survived"
