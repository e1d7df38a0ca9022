#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: kdump with a virtio-mem device, for one driver (VMR_DRIVER: rust
# or c). The script runs twice, as two KTAP scripts: in the guest, and again
# in the capture kernel that the crash boots (the same kernel image, VMR_KERNEL,
# with the guest's own command line, so it runs this script from the same
# 9p root).
#
# In the guest: a capture kernel is loaded (crashkernel= reserved), the
# driver plugs 400M (three whole memory blocks and 16M of a fourth, whose other
# 112M stay unplugged although the block is in the crashed kernel's list of
# memory to dump), a workload fills tmpfs with a marker, and the kernel
# crashes (sysrq c).
#
# In the capture kernel: the driver binds in kdump mode: no plug, unplug or
# UNPLUG_ALL (the device keeps its 400M, over QMP), only STATE requests,
# sysfs activity `kdump` (ours). Reading the whole dump completes (with ours,
# although the first STATE answer comes late), the marker is in the region,
# and the host's backing file (tmpfs, VMR_BACKING) does not
# grow: unplugged memory is never touched. That the unplugged part of the
# fourth block reads as zeroes proves nothing by itself (unplugged memory
# reads as zeroes whoever reads it); what makes the backing check count is
# that the dump lists that part (the crashed kernel found it unplugged, as
# PageOffline, and the dump has 112M of it), so reading the dump would touch
# it unless the driver answers its pages as not RAM. With our driver, the
# script then unbinds it and reads the dump again without any virtio-mem
# driver: that touches the unplugged memory (the host allocates it), which is
# what the drivers prevent.
#
# VMR_REGION (default 4G) is the region's size: with 16T (QEMU reserve=off,
# the guest booted with 46 physical address bits) the driver's tables sized by
# the region (the capture kernel's one byte per device block: 8 MiB) must come
# from kvmalloc, with no warning; the dump is scanned in the region's first 4G,
# where the memory is plugged.
#
# Expects vm0: a 4G (VMR_REGION) region with 2M blocks backed by VMR_BACKING, with
# prealloc=on (QEMU allocates what it plugs, so reading plugged memory never
# makes the host allocate), boot parameters crashkernel=384M and
# memhp_default_state=online_movable.
set -u
source "$(dirname "$0")/lib.sh"
# The capture kernel has no crash kernel memory of its own.
region=${VMR_REGION:-4G}
if [ -e /proc/vmcore ]; then requires env:VMR_KERNEL env:VMR_BACKING vm0:$region:2M:400M:400M; \
    else requires crashkernel movable env:VMR_KERNEL env:VMR_BACKING vm0:$region; fi

drv=${VMR_DRIVER:-rust}
case $drv in
    rust) ko=$VMR_KO_RUST mod=virtio_mem_rust ;;
    c) ko=$VMR_KO_C mod=virtio_mem ;;
esac
scan=$(dirname "$0")/vmcore_scan.py
MIB=$((1 << 20))
# Built at run time, so that no file (this script's page cache) holds it.
marker=VMR-KDUMP-$((6 * 7))-MARK

# The unplugged part of the fourth block: its first 16M are plugged.
hole_start() { echo $((addr + 3 * 128 * MIB + 16 * MIB)); }
hole_size=$((112 * MIB))

# Reads the whole dump; prints vmcore_scan.py's report on the region and on
# the unplugged part of the fourth block.
scan_region() {
    python3 "$scan" "$marker" "$addr" $((addr + $(to_bytes 4G))) \
        "$(hole_start)" $(($(hole_start) + hole_size))
}

if [ ! -e /proc/vmcore ]; then
    # --- the guest, before the crash ---
    ktap_header 8
    ktap_check "crashkernel memory is reserved" test "$(cat /sys/kernel/kexec_crash_size)" -gt 0
    # kexec_file_load (-s): the kernel parses the bzImage or Image itself
    # (kexec_load would need /proc/kcore). A kernel with CRASH_HOTPLUG (x86_64)
    # keeps the loaded capture kernel's list of memory to dump current as
    # memory is added; without it (arm64) the list is made at load time, so
    # the capture kernel is loaded after the plug, as kexec-tools' udev rule
    # would load it again.
    load_capture() {
        ktap_check "the capture kernel is loaded" \
            kexec -s -p "$VMR_KERNEL" \
            --append="$(cat /proc/cmdline) irqpoll nr_cpus=1 reset_devices"
    }
    crash_hotplug=$(cat /sys/devices/system/memory/crash_hotplug 2>/dev/null || echo 0)
    [ "$crash_hotplug" = 1 ] && load_capture
    ktap_check "$drv: load $mod" load_bound "$ko"
    vmctl set-size vm0 400M >/dev/null
    ktap_eq "$drv: 400M plugged (QMP)" "$(to_bytes 400M)" \
        "$(vmctl wait vm0 400M --wait-timeout-s 120 2>&1 | tail -n1)"
    [ "$crash_hotplug" = 1 ] || load_capture
    block=$(( 0x$(cat /sys/devices/system/memory/block_size_bytes) ))
    ktap_eq "$drv: four memory blocks are added" $((4 * block)) "$(virtio_mem_ram_bytes)"
    addr=$(qmp_info vm0 memaddr)
    ktap_eq "$drv: the last 112M of the fourth block are unplugged (PageOffline)" \
        $((hole_size / $(getconf PAGESIZE))) "$(page_offline_count "$(hole_start)" $hole_size)"
    # Movable allocations go to ZONE_MOVABLE, i.e. the plugged memory, first.
    mkdir -p /run/vmr-kdump && mount -t tmpfs -o size=1G none /run/vmr-kdump
    yes "$marker" | head -c $((300 * MIB)) >/run/vmr-kdump/fill
    ktap_check "the workload wrote its marker" grep -q "$marker" /run/vmr-kdump/fill
    ktap_eq "the host backs the 400M plugged (prealloc)" $((400 * MIB)) "$(backing_allocated)"
    ktap_finish
    echo c >/proc/sysrq-trigger
    sleep 600
fi

# --- the capture kernel ---
ktap_header 14
# The crashed kernel's ELF core header: on the command line (x86_64) or in the device tree (arm64).
ktap_check "this is a capture kernel (elfcorehdr given)" \
    eval "grep -q 'elfcorehdr=' /proc/cmdline || test -e /sys/firmware/devicetree/base/chosen/linux,elfcorehdr"
addr=$(qmp_info vm0 memaddr)
before=$(qmp_info vm0 size)
ktap_eq "the device still has 400M plugged" "$(to_bytes 400M)" "$before"
allocated=$(backing_allocated)
ktap_check "$drv: load $mod" load_bound "$ko"
vdev=$(virtio_mem_devices)
if [ "$drv" = rust ]; then
    ktap_check "$drv: binds in kdump mode" \
        eval "dmesg | grep -q '$mod $vdev: memory hot(un)plug disabled in kdump kernel'"
    ktap_eq "$drv: sysfs activity is kdump" kdump "$(vmem_attr "$vdev" activity)"
else
    ktap_check "$drv: binds in kdump mode" \
        eval "dmesg | grep -q '$mod $vdev: memory hot(un)plug disabled in kdump kernel'"
    ktap_skip "$drv: sysfs activity is kdump" "the C driver has no sysfs state"
fi
sleep 2
ktap_eq "$drv: the device's size did not change (no UNPLUG_ALL, QMP)" "$before" \
    "$(qmp_info vm0 size)"
# Ours: the first STATE answer comes late (debugfs inject: no answer in time, and the
# virtqueue busy until the answer comes, 8 s later). The pages asked meanwhile must not be
# taken for unplugged for good: the dump must still be whole (the marker in it).
if [ "$drv" = rust ]; then
    mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
    echo "state late 1" >"/sys/kernel/debug/virtio_mem_rust-$vdev/inject"
fi
mark=$(dmesg_mark)
report=$(scan_region)
ktap_diag "dump read with $drv: $report"
eval "$report"
ktap_check "$drv: reading the whole dump completes" test "${bytes:-0}" -gt $((1 << 30))
ktap_check "$drv: the marker is in the region's memory" test "${markers:-0}" -gt 0
if [ "$drv" = rust ]; then
    ktap_check "$drv: a STATE answer came late while the dump was read" \
        eval "dmesg_since $mark | grep -q 'virtio_mem_rust $vdev: injecting Late for STATE'"
else
    ktap_skip "$drv: a STATE answer came late while the dump was read" \
        "the C driver has no fault injection"
fi
ktap_eq "$drv: the dump lists the unplugged 112M (reading it would touch them), as zeroes" \
    "$hole_size $((hole_size / 4096))" "${hole_bytes:-0} ${hole_zero_pages:-0}"
ktap_eq "$drv: the host allocated nothing for the region while the dump was read" \
    "$allocated" "$(backing_allocated)"
ktap_eq "$drv: the device's size did not change while the dump was read" "$before" \
    "$(qmp_info vm0 size)"
if [ "$drv" = rust ]; then
    ktap_eq "$drv: only STATE requests were sent" "0 0 0" \
        "$(vmem_stat "$vdev" plug_ack) $(vmem_stat "$vdev" unplug_ack) $(vmem_stat "$vdev" unplug_all_ack)"
    # The control: without any virtio-mem driver, reading the dump touches the
    # unplugged 112M of the fourth block, and the host allocates them.
    rmmod "$mod"
    report=$(scan_region)
    ktap_diag "dump read without a virtio-mem driver: $report"
    ktap_eq "without a driver, reading the dump makes the host back all four blocks" \
        $((4 * 128 * MIB)) "$(backing_allocated)"
else
    ktap_skip "$drv: only STATE requests were sent" "the C driver has no request counters"
    ktap_skip "without a driver, reading the dump makes the host back all four blocks" \
        "shown in the run with our driver"
fi
ktap_finish
