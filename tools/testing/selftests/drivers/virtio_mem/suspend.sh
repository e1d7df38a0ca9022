#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: system sleep with memory plugged, for both drivers side by side
# (VMR_DRIVERS, default "rust c"), in one guest: real suspend-to-idle (woken
# by a line on ttyS1, a wake-up source) and real suspend-to-RAM (ACPI S3,
# woken by the host with QMP system_wakeup; QEMU offers persistent suspend
# whenever the machine can wake from S3), each followed by resizes up and
# down whose sizes must agree (sysfs, QMP, MemTotal), with a workload's data
# checked across; hibernation is refused with a message. For our driver also
# S3 as if the device did not keep plugged memory (debugfs
# hide_persistent_suspend): refused with the reason in sysfs while memory is
# plugged, allowed with nothing plugged.
#
# VMR_SLEEPS (default "freeze mem") picks the sleeps with resizes after them:
# the driver's callbacks are the same for both (virtio_pci_common.c: .suspend
# and .resume are virtio_pci_suspend and virtio_pci_resume, which freeze and
# restore the device); what differs is the platform's part. A sleep left out
# has its results skipped.
#
# Runs in a root on tmpfs (tmpfs_root.sh: the guest's 9p root and
# virtio-serial ports do not survive a sleep). Expects vm0: a 4G region with
# 2M blocks, memhp_default_state=online_movable.
set -u
[ -n "${VMR_IN_TMPFS_ROOT:-}" ] || {
    # Checked on the guest's own root, before the move (vmctl then runs through the relay).
    source "$(dirname "$0")/lib.sh"
    requires movable env:VMR_RELAY vm0:4G
    source "$(dirname "$0")/tmpfs_root.sh"
    in_tmpfs_root "$0" "$@"
}
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/tmpfs_root.sh"

drivers=${VMR_DRIVERS:-rust c}
sleeps=" ${VMR_SLEEPS:-freeze mem} "
MIB=$((1 << 20))

# What the kernel logged since this driver's turn began.
new_log() { dmesg | tail -n +$((since + 1)); }

# The sizes agree after a resize to $2: QMP's size, MemTotal's growth and, for
# our driver, sysfs plugged_size and online_size (3 results).
sizes_agree() { # label size driver
    local want kb
    want=$(to_bytes "$2")
    ktap_eq "$3: $1: the device has $2 plugged (QMP)" "$want" \
        "$(vmctl wait vm0 "$2" --wait-timeout-s 120 2>&1 | tail -n1)"
    kb=$(wait_memtotal_kb $((base_kb + want / 1024)) 60)
    ktap_eq "$3: $1: MemTotal grew by $2 (kB)" $((want / 1024)) $((kb - base_kb))
    if [ "$3" = rust ]; then
        quiet vmem_status wait "$vdev" --size "$2" --timeout 60
        ktap_eq "$3: $1: sysfs plugged_size and online_size" "$want $want" \
            "$(vmem_attr "$vdev" plugged_size) $(vmem_attr "$vdev" online_size)"
    else
        ktap_skip "$3: $1: sysfs plugged_size and online_size" "the C driver has no sysfs state"
    fi
}

per_driver=31
ktap_header $((per_driver * $(wc -w <<<"$drivers")))
base_kb=$(memtotal_kb)
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
for drv in $drivers; do
    case $drv in
        rust) ko=$VMR_KO_RUST mod=virtio_mem_rust ;;
        c) ko=$VMR_KO_C mod=virtio_mem ;;
    esac
    since=$(dmesg | wc -l)
    ktap_check "$drv: load $mod" load_bound "$ko"
    vdev=$(virtio_mem_devices)
    vmctl set-size vm0 512M >/dev/null
    sizes_agree "before sleeping" 512M "$drv"
    # A workload whose pages may sit in the plugged memory (online_movable).
    dd if=/dev/urandom of=/tmp/work bs=1M count=192 status=none
    sum=$(sha256sum </tmp/work)

    plugged=512M
    if [[ "$sleeps" == *" freeze "* ]]; then
        ktap_check "$drv: suspend-to-idle with 512M plugged" sleep_and_wake freeze
        vmctl set-size vm0 768M >/dev/null
        sizes_agree "after suspend-to-idle, up" 768M "$drv"
        vmctl set-size vm0 256M >/dev/null
        sizes_agree "after suspend-to-idle, down" 256M "$drv"
        ktap_eq "$drv: the workload's data survived suspend-to-idle" "$sum" "$(sha256sum </tmp/work)"
        plugged=256M
    else
        for what in "suspend-to-idle with 512M plugged" "after suspend-to-idle, up: 3 results" \
            "after suspend-to-idle, down: 3 results" "the workload's data survived suspend-to-idle"; do
            n=1; [[ "$what" != *": 3 results" ]] || n=3
            for _ in $(seq $n); do
                ktap_skip "$drv: ${what%: 3 results}" "not in VMR_SLEEPS: S3 runs the same callbacks"
            done
        done
    fi

    if [[ "$sleeps" == *" mem "* ]]; then
        ktap_check "$drv: S3 with $plugged plugged (the device keeps it plugged)" sleep_and_wake mem
        ktap_check "$drv: S3 was entered" \
            eval "new_log | grep -q 'Waking up from system sleep state S3'"
        vmctl set-size vm0 640M >/dev/null
        sizes_agree "after S3, up" 640M "$drv"
        vmctl set-size vm0 128M >/dev/null
        sizes_agree "after S3, down" 128M "$drv"
        ktap_eq "$drv: the workload's data survived S3" "$sum" "$(sha256sum </tmp/work)"
    else
        for what in "S3 with memory plugged" "S3 was entered" "after S3, up: 3 results" \
            "after S3, down: 3 results" "the workload's data survived S3"; do
            n=1; [[ "$what" != *": 3 results" ]] || n=3
            for _ in $(seq $n); do
                ktap_skip "$drv: ${what%: 3 results}" "not in VMR_SLEEPS: suspend-to-idle runs the same callbacks"
            done
        done
        # Where the refusals below start from.
        vmctl set-size vm0 128M >/dev/null
        vmctl wait vm0 128M --wait-timeout-s 120 >/dev/null 2>&1
        [ "$drv" != rust ] || quiet vmem_status wait "$vdev" --size 128M --timeout 60
    fi

    if [ "$drv" = rust ]; then
        knob=/sys/kernel/debug/virtio_mem_rust-$vdev/hide_persistent_suspend
        echo 1 >"$knob"
        ktap_check "$drv: without persistent suspend, S3 with memory plugged is refused" \
            eval "! sleep_and_wake mem"
        ktap_check "$drv: the refusal is logged with the reason" \
            eval "new_log | grep -q '$mod $vdev: suspend refused: memory is plugged'"
        ktap_check "$drv: and shown in sysfs reason" \
            eval "vmem_attr $vdev reason | grep -q '^suspend refused'"
        ktap_eq "$drv: the driver stays idle with 128M plugged" "idle $(to_bytes 128M)" \
            "$(vmem_attr "$vdev" activity) $(vmem_attr "$vdev" plugged_size)"
        vmctl set-size vm0 0 >/dev/null
        quiet vmem_status wait "$vdev" --size 0 --timeout 120
        ktap_check "$drv: with nothing plugged, S3 is allowed" sleep_and_wake mem
        ktap_eq "$drv: and sysfs reason is none again" none "$(vmem_attr "$vdev" reason)"
        echo 0 >"$knob"
        vmctl set-size vm0 128M >/dev/null
        quiet vmem_status wait "$vdev" --size 128M --timeout 120
    else
        for what in "S3 with memory plugged is refused" "the refusal is logged with the reason" \
            "and shown in sysfs reason" "the driver stays idle with 128M plugged" \
            "with nothing plugged, S3 is allowed" "and sysfs reason is none again"; do
            ktap_skip "$drv: without persistent suspend, $what" \
                "QEMU offers persistent suspend whenever S3 works; only our driver can hide it"
        done
    fi

    ktap_check "$drv: hibernation is refused" eval "! echo disk >/sys/power/state"
    if [ "$drv" = rust ]; then
        ktap_check "$drv: with a message" \
            eval "new_log | grep -q '$mod $vdev: hibernation refused'"
    else
        ktap_check "$drv: with a message" \
            eval "new_log | grep -q '$mod $vdev: hibernation is not supported'"
    fi
    rm -f /tmp/work
    vmctl set-size vm0 0 >/dev/null
    vmctl wait vm0 0 --wait-timeout-s 120 >/dev/null 2>&1
    ktap_eq "$drv: MemTotal is back (kB)" "$base_kb" "$(wait_memtotal_kb "$base_kb" 60)"
    ktap_check "$drv: unload $mod" rmmod "$mod"
done
ktap_finish
leave_tmpfs_root $?
