#!/usr/bin/env bash
# Guest side of the timeline of `make bench` (see scripts/bench.sh): with
# driver $1 (virtio_mem or virtio_mem_rust) on device vm0 (8G region, 2M
# blocks, in a 2G guest onlining movable), one resize sequence while `vmctl
# record` samples the device's requested and plugged size and the guest's
# MemTotal every 100 ms:
#   0 -> 4G, 4G -> 4G+130M (a memory block partly plugged), 4G+130M -> 1G
#   idle, 1G -> 6G, then a workload takes 4G and the request goes to 0 (the
#   driver must stop short of OOM), and the workload ends (how soon does the
#   driver give back the rest?).
# Prints "sample,DRIVER,T_S,REQUESTED_MIB,PLUGGED_MIB,MEMTOTAL_MIB" and
# "phase,DRIVER,T_S,TEXT" lines (T_S: seconds since the recorder started),
# then "oom-kills,DRIVER,N" and "workload,DRIVER,ok|lost".
set -u
source "$(dirname "$0")/../tools/testing/selftests/drivers/virtio_mem/lib.sh"

drv=$1 ko=$VMR_KO_RUST
[ "$drv" = virtio_mem ] && ko=$VMR_KO_C
dir=/tmp/vmr-timeline
rm -rf "$dir"; mkdir -p "$dir"
record=$dir/record phases=$dir/phases
# The recorder and this script are what measures: the OOM killer is to pick the workload.
echo -1000 >/proc/$$/oom_score_adj

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { local ms=$(( $(now_ms) - t0 )); printf '%d.%03d' $((ms / 1000)) $((ms % 1000)); }
phase() { echo "phase,$drv,$(secs),$*" >>"$phases"; }
# The guest has one QMP port, which one vmctl at a time can open: `vmctl record` samples
# the device every 100 ms and takes the requests from a FIFO between two samples.
# Its lines: T_MS REQUESTED SIZE MEMTOTAL_KB.
last_plugged() { tail -n1 "$record" | awk 'NF == 4 { print int($3 / 1048576) }'; }

# wait_plugged MIB MAX_S: until the plugged size is MIB, or MAX_S seconds.
wait_plugged() {
    local deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ] && [ "$(last_plugged)" != "$1" ]; do sleep 0.2; done
}
# settle MIB QUIET_S MAX_S: until the plugged size is MIB or has not changed
# for QUIET_S seconds, at most MAX_S.
settle() {
    local deadline=$((SECONDS + $3)) last="" since=$SECONDS now
    while [ $SECONDS -lt $deadline ]; do
        now=$(last_plugged)
        [ "$now" = "$1" ] && return
        if [ "$now" != "$last" ]; then last=$now since=$SECONDS; fi
        [ $((SECONDS - since)) -ge "$2" ] && return
        sleep 0.2
    done
}
request() { phase "$1"; echo "$2" >&3; }

insmod "$ko"
mkfifo "$dir/requests"
# Read-write, so that opening it does not wait for the other end; closed in the children,
# so that closing it here is the recorder's end of input.
exec 3<>"$dir/requests"
t0=$(now_ms)
"$VMCTL" --port-name org.qemu.qmp0 record vm0 --interval-ms 100 --meminfo \
    <"$dir/requests" >"$record" 3>&- &
recorder=$!
sleep 2
request "plug 4G" 4G;                 wait_plugged 4096 600; sleep 3
request "4G+130M: a block partly plugged" 4G+130M; wait_plugged 4226 600; sleep 3
request "unplug idle to 1G" 1G;       settle 1024 20 600; sleep 3
request "plug 6G" 6G;                 wait_plugged 6144 600; sleep 3
phase "workload takes 4G"
(echo 0 >/proc/self/oom_score_adj
 exec /usr/bin/python3 "$(dirname "$0")/../tools/testing/selftests/drivers/virtio_mem/hold_memory.py" \
     4096 "$dir/ready" "$dir/stop") >"$dir/workload" 2>&1 3>&- &
pid=$!
for _ in $(seq 600); do [ -e "$dir/ready" ] && break; kill -0 $pid 2>/dev/null || break; sleep 0.5; done
# Marks the moment the workload is gone if that is before it is told to stop.
(while kill -0 $pid 2>/dev/null; do sleep 0.1; done
 [ -e "$dir/stop" ] || phase "workload OOM-killed") 3>&- &
watcher=$!
sleep 2
request "unplug to 0 under the workload" 0; settle 0 30 600
if kill -0 $pid 2>/dev/null; then phase "workload ends"; fi
touch "$dir/stop"
if wait $pid; then workload=ok; else workload=lost; fi
wait $watcher
settle 0 180 600; sleep 3
exec 3>&-
wait $recorder || echo "bench: vmctl record failed"
awk -v d="$drv" 'NF == 4 { printf "sample,%s,%.3f,%d,%d,%d\n", d, $1 / 1000, $2 / 1048576, $3 / 1048576, $4 / 1024 }' "$record"
cat "$phases"
# One "Killed process" line per kill (the "oom-kill:" line before it is the same kill).
echo "oom-kills,$drv,$(dmesg | grep -c 'Killed process' || true)"
echo "workload,$drv,$workload"
