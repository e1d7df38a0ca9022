#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: the host cannot back all of the request, then can. The region
# is a file on a size-limited tmpfs on the host, with the device's
# prealloc=on: a PLUG the host cannot allocate is answered BUSY. A filler
# file takes part of the tmpfs, so the host can back less than the request.
# The driver plugs what the host can back (it halves refused plugs down to a
# memory block), stops short with activity "waiting" and reason "device busy",
# says so in a uevent and retries with back-off. The guest never touches
# memory that is not plugged (QEMU would get SIGBUS on the full tmpfs). Once
# the filler is deleted (through the read-write share), a retry plugs the
# rest; shrinking to 0 gives the host its memory back.
#
# Expects vm0: a 4G region with 2M blocks, prealloc=on, backed by the file
# $VMR_BACKING on a tmpfs of $VMR_HOST_LIMIT bytes, shared read-write at the
# directory of $VMR_BACKING, which holds the filler file "filler";
# memhp_default_state=online_movable.
set -u
source "$(dirname "$0")/lib.sh"
requires movable env:VMR_BACKING env:VMR_HOST_LIMIT vm0:4G

dir=$(dirname "$VMR_BACKING")
filler=$dir/filler
block=$(( 0x$(cat /sys/devices/system/memory/block_size_bytes) ))
request=3G

ktap_header 21
base_kb=$(memtotal_kb)
vdev=$(virtio_mem_devices)
ktap_check "the filler file is there" test -f "$filler"
free=$(( VMR_HOST_LIMIT - $(stat -c %s "$filler") ))
ktap_diag "the host can back $free bytes of the $(to_bytes $request) requested"
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"

udevadm monitor --kernel --property --subsystem-match=virtio >/tmp/vmr-uevents 2>&1 &
monitor=$!
sleep 1
vmctl set-size vm0 "$request" >/dev/null
ktap_check "vmem-status wait --until settled returns" \
    quiet vmem_status wait "$vdev" --until settled --timeout 300
size=$(qmp_info vm0 size)
ktap_diag "plugged $size bytes; $(grep -c 'PLUG of .* failed (device busy)' <(dmesg)) PLUGs refused so far"
ktap_check "plugged all but less than a memory block of what the host can back" \
    test "$size" -le "$free" -a "$size" -gt $((free - block))
ktap_eq "sysfs activity: waiting" waiting "$(vmem_attr "$vdev" activity)"
ktap_eq "sysfs reason: device busy" "device busy" "$(vmem_attr "$vdev" reason)"
busy=$(vmem_stat "$vdev" plug_busy)
ktap_check "sysfs stats count the refused plugs" test "${busy:-0}" -gt 0
uptime_s=$(cut -d' ' -f1 /proc/uptime)
ktap_check "sysfs retry_at is in the future" \
    awk -v at="$(vmem_attr "$vdev" retry_at)" -v now="$uptime_s" 'BEGIN { exit !(at > now) }'
check_sizes "stopped short" "$vdev" vm0 "$base_kb"
ktap_check "the driver said it tries smaller pieces" \
    eval "dmesg | grep -q 'virtio_mem_rust .*: the device refused a plug of 0x[0-9a-f]* bytes; trying smaller pieces'"
ktap_check "a uevent said it stalled, and why" \
    eval "grep -q '^VIRTIO_MEM_REASON=device-busy' /tmp/vmr-uevents && grep -q '^VIRTIO_MEM_EVENT=stalled' /tmp/vmr-uevents"

t0=$SECONDS
ktap_check "the host frees memory (the filler goes)" rm "$filler"
ktap_check "a retry plugs the rest" quiet vmem_status wait "$vdev" --size "$request" --timeout 330
ktap_diag "reached $request $((SECONDS - t0)) s after the filler went"
ktap_eq "device plugged size" "$(to_bytes $request)" "$(qmp_info vm0 size)"
check_sizes "$request" "$vdev" vm0 "$base_kb"
ktap_eq "sysfs reason: none" none "$(vmem_attr "$vdev" reason)"
sleep 1
kill $monitor
ktap_check "a uevent said the size was reached" grep -q '^VIRTIO_MEM_EVENT=reached' /tmp/vmr-uevents

vmctl set-size vm0 0 >/dev/null
ktap_check "shrinking to 0 is done" quiet vmem_status wait "$vdev" --size 0 --timeout 300
a=$(backing_allocated)
ktap_check "the host backs nothing of the region any more (${a:-unknown} bytes)" \
    test -n "$a" -a "${a:-1}" = 0
ktap_finish
