# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
# Helpers for the virtio-mem guest tests: KTAP output, module loading, QMP.
#
# The tests run inside a guest booted by scripts/run-guest.sh and expect:
#   VMR_KO_RUST  path of virtio_mem_rust.ko
#   VMR_KO_C     path of the C driver's virtio_mem.ko
#   VMR_KO_PIN   path of the test helper vmr_pin_page.ko (holds pages, see pin_page/)
#   VMCTL        path of the vmctl binary (speaks QMP over the guest's port)
#   VMEM_STATUS  path of the vmem-status binary (reads the driver's sysfs state)

source "$(dirname "${BASH_SOURCE[0]}")/sizes.sh"

KTAP_N=0
KTAP_PASS=0
KTAP_FAIL=0
KTAP_SKIP=0

ktap_header() { echo "TAP version 13"; echo "1..$1"; }

ktap_result() { # ok|not ok, description
    KTAP_N=$((KTAP_N + 1))
    echo "$1 $KTAP_N $2"
}
ktap_pass() { KTAP_PASS=$((KTAP_PASS + 1)); ktap_result ok "$1"; }
ktap_fail() { KTAP_FAIL=$((KTAP_FAIL + 1)); ktap_result "not ok" "$1"; }
ktap_skip() { KTAP_SKIP=$((KTAP_SKIP + 1)); ktap_result ok "$1 # SKIP $2"; }
ktap_diag() { echo "# $*"; }

# ktap_check DESC CMD...: pass if the command succeeds.
ktap_check() {
    local desc=$1; shift
    if "$@"; then ktap_pass "$desc"; else ktap_fail "$desc"; fi
}

# ktap_eq DESC EXPECTED ACTUAL
ktap_eq() {
    if [ "$2" = "$3" ]; then
        ktap_pass "$1"
    else
        ktap_diag "$1: expected '$2', got '$3'"
        ktap_fail "$1"
    fi
}

ktap_finish() {
    ktap_diag "totals: pass:$KTAP_PASS fail:$KTAP_FAIL skip:$KTAP_SKIP"
    [ "$KTAP_FAIL" = 0 ]
}

vmctl() { "$VMCTL" --port-name org.qemu.qmp0 "$@"; }

# Runs a command with its standard output discarded.
quiet() { "$@" >/dev/null; }

# The value of KEY in `vmctl info ID`.
qmp_info() { vmctl info "$1" | sed -n "s/^$2=//p"; }

# The virtio device names (virtioN) of all virtio-mem devices (device id 24).
virtio_mem_devices() {
    local d
    for d in /sys/bus/virtio/devices/*; do
        [ "$(cat "$d/device" 2>/dev/null)" = 0x0018 ] && basename "$d"
    done
}

# The driver bound to virtio device $1, or nothing.
bound_driver() {
    local link=/sys/bus/virtio/devices/$1/driver
    [ -L "$link" ] && basename "$(readlink "$link")"
}

# The last value driver $1 logged for device $2 under label $3
# (e.g. "start address"), from the kernel log.
logged_by() {
    dmesg | sed -n "s/.*\] $1 $2: $3: //p" | tail -n1
}

# The same for our driver.
logged() { logged_by virtio_mem_rust "$@"; }

# Kernel log lines that mean something went badly wrong.
kernel_splats() {
    dmesg | grep -E 'BUG:|WARNING:|Oops|Call Trace:|general protection|kernel panic|Out of memory' || true
}

hex_to_dec() { printf '%d' "$1"; }

# MemTotal in kB.
memtotal_kb() { sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo; }

# Bytes of all "System RAM (virtio_mem)" ranges in /proc/iomem.
virtio_mem_ram_bytes() {
    local total=0 range start end
    while read -r range; do
        start=0x${range%-*} end=0x${range#*-}
        total=$((total + end - start + 1))
    done < <(sed -n 's/^ *\([0-9a-f]*-[0-9a-f]*\) : System RAM (virtio_mem)$/\1/p' /proc/iomem)
    echo "$total"
}

# Waits up to $2 seconds until MemTotal is $1 kB; prints the last value seen.
wait_memtotal_kb() {
    local want=$1 deadline=$((SECONDS + $2)) now
    while now=$(memtotal_kb); [ "$now" != "$want" ] && [ $SECONDS -lt "$deadline" ]; do
        sleep 0.05
    done
    echo "$now"
}

# Allocated bytes of the region's backing file on the host (seen read-only at
# $VMR_BACKING), or nothing if it cannot be read.
backing_allocated() {
    local expr
    expr=$(stat -c '%b * %B' "$VMR_BACKING") && echo $((expr))
}

# Number of PageOffline pages (KPF_OFFLINE in /proc/kpageflags) in the
# physical range [$1, $1 + $2) (bytes).
page_offline_count() {
    local page kpf_offline=23
    page=$(getconf PAGESIZE)
    dd if=/proc/kpageflags bs=8 skip=$(($1 / page)) count=$(($2 / page)) status=none |
        od -An -v -tu8 -w8 | awk -v bit=$kpf_offline \
            '{ if (int($1 / 2^bit) % 2 == 1) n++ } END { print n + 0 }'
}

# State of memory block $1 (online/offline), and setting it to $2
# (online_movable, online_kernel, offline, ...).
block_state() { cat /sys/devices/system/memory/memory$1/state; }
set_block_state() { echo "$2" >/sys/devices/system/memory/memory$1/state; }

# Attribute $2 of virtio_mem_rust's sysfs group of device $1.
vmem_attr() { cat "/sys/bus/virtio/devices/$1/virtio_mem/$2"; }

vmem_status() { "$VMEM_STATUS" "$@"; }

# Counter $2 (a line of the `stats` attribute) of device $1.
vmem_stat() { sed -n "s/^$2 //p" "/sys/bus/virtio/devices/$1/virtio_mem/stats"; }

# check_sizes LABEL DEV QID BASE_KB: the driver's plugged_size is the device's
# plugged size over QMP, and its online_size is what MemTotal grew by since
# BASE_KB (2 results).
check_sizes() {
    ktap_eq "$1: sysfs plugged_size is the device's size" "$(qmp_info "$3" size)" "$(vmem_attr "$2" plugged_size)"
    ktap_eq "$1: sysfs online_size is the MemTotal delta (kB)" $(($(memtotal_kb) - $4)) \
        $(($(vmem_attr "$2" online_size) / 1024))
}
