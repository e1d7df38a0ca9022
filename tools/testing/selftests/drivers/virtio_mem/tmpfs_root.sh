# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
# Sourced by a guest test that puts the machine to sleep: it re-runs the
# test in a root on tmpfs.
#
# Why: the guest's root is virtio-9p (virtme-ng), and net/9p/trans_virtio.c
# has no freeze/restore. Any sleep cycle that suspends devices (s2idle, S3,
# even /sys/power/pm_test=devices) resets the 9p device on resume while its
# virtqueue is never set up again, so the next read from / waits forever
# (the hang the issue saw: the shell never printed again). Everything the
# test runs after the first sleep must therefore already be in memory: the
# binaries it calls with their libraries, the test scripts, the modules and
# vmctl/vmem-status, copied to a tmpfs that becomes the test's root. The
# same goes for virtme-ng's virtio-serial ports, which carry the script's
# output and exit code: after a sleep cycle, writes to them block for good
# (virtio_console sets its queues up again, but the port is never reported
# open by the host again), nor does the guest's QMP port. So the test writes
# to the second serial port, ttyS1 (an 8250 UART, which survives), which
# scripts/run-guest.sh prints after the guest ends; vmctl goes through it to
# the host (scripts/serial-relay.py runs it against QEMU's QMP socket there);
# and the test ends with leave_tmpfs_root: it writes its exit code there and
# the relay stops the guest.
#
# Usage, first thing in the test (before sourcing lib.sh):
#   source "$(dirname "$0")/tmpfs_root.sh"; in_tmpfs_root "$0" "$@"
# and last:
#   leave_tmpfs_root $?

# Commands the tests and lib.sh use, besides bash's builtins.
TMPFS_ROOT_CMDS=(bash cat sed grep awk sleep date getconf insmod rmmod dmesg
    mount mountpoint timeout head tail tr wc cut sort rtcwake sha256sum dd rm
    mkdir ls stat env seq chmod cp swapon swapoff mkswap od basename dirname
    readlink expr xargs find touch uname nproc stty ps)

in_tmpfs_root() {
    local script=$1 root=/run/vmr-root dir bin lib chroot
    shift
    [ -n "${VMR_IN_TMPFS_ROOT:-}" ] && return 0
    chroot=$(PATH=$PATH:/usr/sbin:/sbin command -v chroot) || \
        { echo "# tmpfs root: no chroot" >&2; exit 1; }
    dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    mkdir -p $root && mount -t tmpfs -o size=512M vmr-root $root || exit 1
    mkdir -p $root/{bin,lib,lib64,tests,ko,proc,sys,dev,tmp,run,usr}
    ln -s ../bin $root/usr/bin
    ln -s ../bin $root/sbin
    ln -s ../lib $root/usr/lib
    for bin in "${TMPFS_ROOT_CMDS[@]}" "$VMCTL" "$VMEM_STATUS"; do
        bin=$(PATH=$PATH:/usr/sbin:/sbin command -v "$bin") || \
            { echo "# tmpfs root: no $bin" >&2; continue; }
        cp -L "$bin" $root/bin/
        # ldd prints "name => /path (addr)" and "/lib64/ld-linux... (addr)".
        ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
            mkdir -p "$root$(dirname "$lib")"
            cp -Ln "$lib" "$root$lib" 2>/dev/null
        done
    done
    cp "$dir"/*.sh $root/tests/
    cp "$script" $root/tests/ 2>/dev/null
    cp "$VMR_KO_RUST" "$VMR_KO_C" $root/ko/
    # udevd reads its rules and runs its helpers from / when a uevent comes
    # (the driver's memory blocks send some): after the first sleep it would
    # hang in 9p for good, and the freezer cannot freeze a task stuck there,
    # so every later suspend would fail. Memory is onlined by the kernel
    # (memhp_default_state) in these tests; nothing needs udev.
    udevadm control --exit 2>/dev/null || pkill -x systemd-udevd
    # Raw, without echo: the relay's answers are read, not echoed back. A
    # wake-up source, so that the relay can end a suspend-to-idle.
    stty -F /dev/ttyS1 raw -echo clocal 115200 || exit 1
    echo enabled >/sys/class/tty/ttyS1/power/wakeup || exit 1
    mount -t proc proc $root/proc
    mount -t sysfs sysfs $root/sys
    mount -t devtmpfs devtmpfs $root/dev
    mountpoint -q /sys/kernel/debug && mount -t debugfs debugfs $root/sys/kernel/debug
    VMR_IN_TMPFS_ROOT=1 VMR_KO_RUST=/ko/${VMR_KO_RUST##*/} VMR_KO_C=/ko/${VMR_KO_C##*/} \
        VMCTL=/bin/${VMCTL##*/} VMEM_STATUS=/bin/${VMEM_STATUS##*/} PATH=/bin \
        exec "$chroot" $root /bin/bash "/tests/${script##*/}" "$@" >/dev/ttyS1 2>&1 3</dev/ttyS1
}

# vmctl ARGS... on the host, through the relay on ttyS1: prints what it
# printed, returns its exit code.
host_vmctl() {
    local line
    echo "vmr-host: $*" >/dev/ttyS1
    while IFS= read -r line <&3; do
        case "$line" in
            "vmr-host-done: "*) return "${line#vmr-host-done: }" ;;
            vmr-wake) ;;
            *) echo "$line" ;;
        esac
    done
    return 1
}

# Puts the guest to sleep (STATE: freeze, mem or disk, as /sys/power/state
# takes it) and has the host wake it up (scripts/serial-relay.py); returns
# the status of the write, i.e. whether the sleep happened.
sleep_and_wake() {
    echo "vmr-host-wake" >/dev/ttyS1
    echo "$1" >/sys/power/state
}

# Ends the test with exit code $1: says so on ttyS1, and the relay stops
# QEMU (the script's own exit code would go to a virtio-serial port that may
# be gone, and vng's init waits to send it).
leave_tmpfs_root() {
    echo "vmr-exit: $1"
    sleep 600
}
