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
#   VMR_TIME_FACTOR  how much slower this kernel is than the normal one (the
#                debug lane's lockdep and DEBUG_PAGEALLOC under TCG); every
#                --timeout / --wait-timeout-s given to vmctl and vmem-status
#                and every wait_memtotal_kb bound is multiplied by it
#
# Run by kselftest instead (`make -C tools/testing/selftests
# TARGETS=drivers/virtio_mem run_tests`, or an installed run_kselftest.sh) in
# any guest, the modules come from the running kernel's module directory and
# the tools from PATH, and every script first checks that the guest is the
# one it was written for (`requires`, below): if not, it is skipped as a whole.
#
# Every script ends with ktap_finish, which checks the kernel log as its last
# result (kernel_log_check); ktap_header counts that result in the plan.

source "$(dirname "${BASH_SOURCE[0]}")/sizes.sh"

: "${VMR_KO_RUST:=$(modinfo -n virtio_mem_rust 2>/dev/null)}"
: "${VMR_KO_C:=$(modinfo -n virtio_mem 2>/dev/null)}"
: "${VMR_KO_PIN:=$(modinfo -n vmr_pin_page 2>/dev/null)}"
: "${VMCTL:=$(command -v vmctl)}"
: "${VMEM_STATUS:=$(command -v vmem-status)}"

KTAP_N=0
KTAP_PASS=0
KTAP_FAIL=0
KTAP_SKIP=0

# ktap_header N: N results of the test's own, plus the kernel log check.
ktap_header() { echo "TAP version 13"; echo "1..$(($1 + 1))"; }

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

# kselftest's exit code for a skipped test.
KSFT_SKIP=4

# requires NEED...: skips the whole script (KTAP "1..0 # SKIP", exit code 4)
# unless this guest has every NEED, one of:
#   QID:SIZE[:BLOCK[:REQUESTED[:PLUGGED]]]  a virtio-mem device with QMP id
#                 QID, that region size, device block size (default 2M),
#                 requested size (default 0) and plugged size (default 0): a
#                 device as the guest booted with it, which no script before
#                 changed; and no virtio-mem driver bound yet
#   movable       new memory is onlined movable (memhp_default_state)
#   env:VAR       VAR is set (a host-side path or value scripts/test.sh gives)
#   nodevice      no virtio-mem device at all
#   crashkernel   memory reserved for a crash kernel
# and always: neither driver loaded. Every script lists what scripts/test.sh
# boots it with; a guest with less or other devices skips it. So a guest that
# runs several scripts in one boot (scripts/test.sh: shared) checks before each
# that the last one left it as a fresh boot would (leave_clean); that guest
# counts a skipped script as a failure.
requires() {
    local need missing=()
    [ -n "$VMR_KO_RUST" ] || missing+=("virtio_mem_rust.ko (VMR_KO_RUST or an installed module)")
    [ -n "$VMR_KO_C" ] || \
        missing+=("the C driver's virtio_mem.ko, the reference (VMR_KO_C or an installed module)")
    for need in "$@"; do
        case "$need" in
            movable)
                [ "$(cat /sys/devices/system/memory/auto_online_blocks 2>/dev/null)" \
                    = online_movable ] ||
                    missing+=("memhp_default_state=online_movable") ;;
            env:*)
                local var=${need#env:}
                [ -n "${!var:-}" ] || missing+=("$var set") ;;
            nodevice)
                [ -z "$(virtio_mem_devices)" ] || missing+=("no virtio-mem device") ;;
            crashkernel)
                [ "$(cat /sys/kernel/kexec_crash_size 2>/dev/null || echo 0)" -gt 0 ] ||
                    missing+=("crashkernel= memory") ;;
            *:*)
                local qid size block requested plugged info
                IFS=: read -r qid size block requested plugged <<<"$need"
                block=${block:-2M} requested=${requested:-0} plugged=${plugged:-0}
                if [ -z "$VMCTL" ] || ! info=$("$VMCTL" info "$qid" 2>/dev/null); then
                    missing+=("$qid (vmctl and the guest's QMP port)")
                elif [ "$(sed -n 's/^region-size=//p' <<<"$info")" != "$(to_bytes "$size")" ] ||
                     [ "$(sed -n 's/^block-size=//p' <<<"$info")" != "$(to_bytes "$block")" ] ||
                     [ "$(sed -n 's/^requested-size=//p' <<<"$info")" \
                         != "$(to_bytes "$requested")" ] ||
                     [ "$(sed -n 's/^size=//p' <<<"$info")" != "$(to_bytes "$plugged")" ]; then
                    missing+=("$qid with a $size region, $block blocks, $requested requested, $plugged plugged")
                fi ;;
        esac
    done
    # A device some driver already drives, or a driver loaded, is not the fresh guest a
    # script starts from.
    local v m
    for v in $(virtio_mem_devices); do
        [ -z "$(bound_driver "$v")" ] || missing+=("$v unbound")
    done
    for m in virtio_mem_rust virtio_mem; do
        [ ! -d "/sys/module/$m" ] || missing+=("$m not loaded")
    done
    if [ ${#missing[@]} = 0 ]; then
        # Where this script's kernel log starts (script_log): a boot may be shared.
        VMR_SCRIPT_MARK=$(dmesg_mark)
        # For checking the requirements against a guest without running the test.
        [ -z "${VMR_REQUIRES_ONLY:-}" ] || { echo "requires: met"; exit 0; }
        return 0
    fi
    echo "TAP version 13"
    echo "1..0 # SKIP this guest lacks: $(IFS=';'; echo "${missing[*]}")"
    exit $KSFT_SKIP
}

ktap_finish() {
    kernel_log_check
    ktap_diag "totals: pass:$KTAP_PASS fail:$KTAP_FAIL skip:$KTAP_SKIP"
    [ "$KTAP_FAIL" = 0 ]
}

VMR_TIME_FACTOR=${VMR_TIME_FACTOR:-1}

# $1 seconds on this kernel: for a test's own waits and quiet periods.
scaled() { echo $(($1 * VMR_TIME_FACTOR)); }

# Runs a command with the value of each --timeout / --wait-timeout-s option
# multiplied by VMR_TIME_FACTOR.
with_scaled_timeouts() {
    local args=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --timeout|--wait-timeout-s) args+=("$1" "$(scaled "$2")"); shift 2 ;;
            *) args+=("$1"); shift ;;
        esac
    done
    "${args[@]}"
}

# In a root on tmpfs (a test that sleeps, see tmpfs_root.sh) the guest's QMP
# port does not survive a sleep: vmctl runs on the host, through ttyS1.
vmctl() {
    if [ -n "${VMR_IN_TMPFS_ROOT:-}" ]; then
        with_scaled_timeouts host_vmctl "$@"
    else
        with_scaled_timeouts "$VMCTL" --port-name org.qemu.qmp0 "$@"
    fi
}

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

# The driver a module (.ko file $1) registers on the virtio bus: its name,
# which both drivers' file names are (no modinfo: the root on tmpfs has none).
module_driver() { local name=${1##*/}; echo "${name%%.ko*}"; }

# load_bound KO [PARAM...]: loads module KO (an insmod that succeeds says
# nothing of probe: a refused device leaves it loaded) and waits until every
# virtio-mem device is bound to its driver. Binding is synchronous in insmod
# for virtio, but the wait is bounded, not skipped (10 s, scaled). Fails, with
# a diagnostic naming each device and its driver, if one is not bound or
# there is no device at all.
load_bound() {
    local drv v d left devs deadline
    drv=$(module_driver "$1")
    insmod "$@" || return
    devs=$(virtio_mem_devices)
    [ -n "$devs" ] || { ktap_diag "$drv: no virtio-mem device to bind"; return 1; }
    deadline=$((SECONDS + $(scaled 10)))
    while :; do
        left=""
        for v in $devs; do
            [ "$(bound_driver "$v")" = "$drv" ] || left+=" $v"
        done
        [ -n "$left" ] || return 0
        [ $SECONDS -lt "$deadline" ] || break
        sleep 0.1
    done
    for v in $left; do
        d=$(bound_driver "$v")
        ktap_diag "$drv loaded but $v is not bound to it (bound to: ${d:-no driver})"
    done
    return 1
}

# load_unbound KO [PARAM...]: loads module KO where it must bind nothing (no
# device, or one it refuses): it registers its driver on the virtio bus and
# no device is bound to it once insmod returned (the probe of the devices
# present ran in insmod).
load_unbound() {
    local drv dir bound
    drv=$(module_driver "$1")
    dir=/sys/bus/virtio/drivers/$drv
    insmod "$@" || return
    [ -d "$dir" ] || { ktap_diag "$drv loaded but registered no virtio driver"; return 1; }
    bound=$(cd "$dir" && echo virtio*)
    [ "$bound" = "virtio*" ] && return 0
    ktap_diag "$drv loaded and bound $bound, but should bind nothing"
    return 1
}

# The last value driver $1 logged for device $2 under label $3
# (e.g. "start address"), from the kernel log.
logged_by() {
    dmesg | sed -n "s/.*\] $1 $2: $3: //p" | tail -n1
}

# The same for our driver.
logged() { logged_by virtio_mem_rust "$@"; }

# Kernel log lines that mean something went badly wrong: warnings and BUGs
# (KFENCE, sleeping in atomic context, bad page state, invalid wait context:
# all "BUG: ..."), lockdep reports ("WARNING: possible circular locking
# dependency", "... recursive locking", "WARNING: inconsistent lock state",
# "WARNING: suspicious RCU usage", older "INFO: possible ..."), oopses, stack
# dumps ("Call Trace:" on x86, "Call trace:" on arm64), panics, the OOM
# killer.
KERNEL_SPLAT_RE='WARNING:|BUG:|kernel BUG at|INFO: possible|INFO: trying to register non-static key'
KERNEL_SPLAT_RE+='|Bad page|sleeping function called from invalid context|Oops|Call [Tt]race:'
KERNEL_SPLAT_RE+='|general protection|[Kk]ernel panic|Out of memory'

# The kernel log (dmesg) without the one lockdep report we accept, which is
# replaced by a line saying so ("vmr: accepted ...").
#
# The accepted report: "possible circular locking dependency" between
# kn->active#NN (a memory block's sysfs file, memoryN/state, held by a
# user-space write that onlines or offlines the block) and mem_hotplug_lock
# (taken by offline_and_remove_memory / try_remove_memory, which removes
# memory block devices and so drains their sysfs files). The C driver
# triggers the same report; it is the core's: the sysfs writer only
# try-locks the device hotplug lock (lock_device_hotplug_sysfs) and restarts
# the syscall if it is taken, so the two cannot deadlock. (Lockdep sees the
# removal side only when the file is in use while its block goes: kernfs
# annotates draining only then, so the report is rare.) A report counts as
# that one only if every lock class of its cycle (the two it is about, the
# dependency chain and the unsafe scenario; the locks the task holds are
# listed as well and are not part of the cycle) is one kn->active class,
# mem_hotplug_lock or cpu_hotplug_lock, the first two are in it, and nothing
# else in it looks like a splat. (cpu_hotplug_lock joins the cycle when
# lockdep learned the writer's side through onlining: mem_hotplug_begin takes
# it right before mem_hotplug_lock, so the chain reads kn->active -->
# cpu_hotplug_lock --> mem_hotplug_lock; the writer still holds the device
# hotplug lock there, which breaks it the same way.) Any other
# lockdep report fails. Lockdep turns itself off after its first report, so
# the rest of a guest where this one fired is not checked by lockdep.
#
# A report ends with its stack dump: on x86 "Call Trace:" and frames between
# "<TASK>" and "</TASK>"; on arm64 "Call trace:" and frames (" fn+0x1c/0x40")
# with no end marker, so there it ends before the first line that is not a
# frame. The stack dump's own "Call trace:" line is part of the report, not a
# splat of its own.
kernel_log() { dmesg | kernel_log_filter; }
# The same filter over any kernel log on its standard input (scripts/test.sh runs it on the
# host over a guest's whole console).
kernel_log_filter() {
    awk -v splat="$KERNEL_SPLAT_RE" '
        function flush(  k, nkn, i, class) {
            nkn = 0; for (k in kn) { nkn++; class = substr(k, 2, length(k) - 2) }
            if (!bad && nkn == 1 && hp) {
                print ts " vmr: accepted lockdep report " class " <-> mem_hotplug_lock (a known false positive of the core; lockdep is off from here)"
            } else {
                for (i = 1; i <= n; i++) print buf[i]
            }
            inrep = 0; n = 0; bad = 0; hp = 0; held = 0; frames = 0; split("", kn)
        }
        {
            text = $0; sub(/^\[[ 0-9.]*\] /, "", text)
            # arm64: the report ended with its last frame; this line is not part of it.
            if (inrep && frames) {
                if (text ~ /^ *[^ ]+\+0x[0-9a-f]+\/0x[0-9a-f]+/) { buf[++n] = $0; next }
                flush()
            }
            if (!inrep && text ~ /WARNING: possible circular locking dependency/) {
                inrep = 1; ts = $0; sub(/\].*/, "]", ts)
                buf[++n] = $0; next
            }
            if (!inrep) { print; next }
            buf[++n] = $0
            if (text ~ /<\/TASK>/) { flush(); next }
            if (text ~ /^Call trace:/) { frames = 1; next }
            if (text ~ splat && text !~ /^Call [Tt]race:/) bad = 1
            if (text ~ /locks? held by/) held = 1
            if (text ~ /stack backtrace:/) held = 0
            if (held) next
            t = text
            while (match(t, /\(kn->active(#[0-9]+)?\)/)) {
                kn[substr(t, RSTART, RLENGTH)] = 1
                t = substr(t, 1, RSTART - 1) substr(t, RSTART + RLENGTH)
            }
            while (match(t, /\(mem_hotplug_lock\)/)) {
                hp = 1
                t = substr(t, 1, RSTART - 1) substr(t, RSTART + RLENGTH)
            }
            while (match(t, /\(cpu_hotplug_lock\)/))
                t = substr(t, 1, RSTART - 1) substr(t, RSTART + RLENGTH)
            # Any other lock class: "(name){usage}" or "lock(name);".
            if (t ~ /\)\{/ || t ~ /lock\(/) bad = 1
        }
        # A report cut off before its stack dump is not the accepted one.
        END { if (inrep) { if (!frames) bad = 1; flush() } }'
}

# The last result of every script: no splat in the kernel log. A guest that
# runs several scripts checks each line once: a script looks only at what
# was logged after the previous script's check, whose time is kept with the
# boot's id (so that a mark from another boot never hides anything).
KERNEL_LOG_MARK=/tmp/vmr-kernel-log-checked

# Succeeds if the kernel log still starts at the boot: its first records are
# at time 0, up to the kernel's banner ("Linux version ...", the first record
# on x86; arm64 logs "Booting Linux on physical CPU ..." before it). A ring
# buffer that wrapped has lost its oldest records, and a splat may have been
# among them.
kernel_log_from_boot() {
    dmesg | awk '/^\[ *0\.0+\]( *\[[^]]*\])? Linux version / { ok = 1; exit }
        /^\[ *[0-9.]+\]/ && !/^\[ *0\.0+\]/ { exit }
        END { exit !ok }'
}

kernel_log_check() {
    local boot since log splats wrapped=""
    if ! kernel_log_from_boot; then
        wrapped=1
        ktap_diag "the kernel log does not start at the boot (no \"Linux version\" record" \
            "at time 0 before any later one): the ring buffer wrapped and lost its oldest" \
            "records, which this check cannot see; its first record now:" \
            "$(dmesg | head -n1) (boot the guest with a larger log_buf_len)"
    fi
    boot=$(cat /proc/sys/kernel/random/boot_id)
    since=$(sed -n "s/^$boot //p" "$KERNEL_LOG_MARK" 2>/dev/null)
    since=${since:--1}
    # Lines of a multi-line record have no time of their own: the record's.
    log=$(kernel_log | awk -v since="$since" '
        /^\[ *[0-9.]+\]/ { t = $0; sub(/^\[ */, "", t); sub(/\].*/, "", t) }
        t + 0 > since + 0')
    since=$(grep -o '^\[ *[0-9.]*\]' <<<"$log" | tail -n1 | tr -d '[] ')
    [ -z "$since" ] || echo "$boot $since" >"$KERNEL_LOG_MARK"
    grep 'vmr: accepted lockdep report' <<<"$log" | \
        while IFS= read -r line; do ktap_diag "$line"; done
    splats=$(grep -E "$KERNEL_SPLAT_RE" <<<"$log" || true)
    if [ -z "$splats" ] && [ -z "$wrapped" ]; then
        ktap_pass "kernel log: no warnings, BUGs, lockdep reports or oopses"
        return
    elif [ -z "$splats" ]; then
        ktap_fail "kernel log: no warnings, BUGs, lockdep reports or oopses"
        return
    fi
    while IFS= read -r line; do ktap_diag "$line"; done <<<"$splats"
    ktap_diag "kernel log from the first of them:"
    grep -m1 -A80 -F -x -e "$(head -n1 <<<"$splats")" <<<"$log" | \
        while IFS= read -r line; do ktap_diag "  $line"; done
    ktap_fail "kernel log: no warnings, BUGs, lockdep reports or oopses"
}

# The page allocator's reserves (totalreserve_pages) in bytes, as the kernel
# computes them (calculate_totalreserve_pages): per zone its high watermark
# plus its largest lowmem reserve, at most its managed pages.
total_reserve() {
    awk -v page="$(getconf PAGESIZE)" '
        function zone_done() { if (inzone) t += (m > managed ? managed : m); m = 0; managed = 0 }
        /^Node .*, zone/ { zone_done(); inzone = 1 }
        $1 == "high" { m += $2 }
        $1 == "managed" { managed = $2 }
        $1 == "protection:" {
            gsub(/[(),]/, " "); max = 0
            for (i = 2; i <= NF; i++) if ($i + 0 > max) max = $i + 0
            m += max
        }
        END { zone_done(); printf "%.0f\n", t * page }
    ' /proc/zoneinfo
}

# The driver's default margin (README, unplug_margin_mb: 0 means four times
# totalreserve_pages, at least 128M) in bytes.
default_margin() {
    local m
    m=$((4 * $(total_reserve)))
    echo $((m > (128 << 20) ? m : 128 << 20))
}

# Free memory in all zones but ZONE_MOVABLE (where the kernel allocates its
# own data, the memmap of added memory too), in bytes.
free_kernel_memory() {
    awk -v page="$(getconf PAGESIZE)" '
        /^Node .*, zone/ { movable = ($NF == "Movable") }
        $1 == "pages" && $2 == "free" && !movable { t += $3 }
        END { printf "%.0f\n", t * page }
    ' /proc/zoneinfo
}

# MemAvailable in bytes.
mem_available() { echo $(($(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo) * 1024)); }

# The number of lines in the kernel log now, and the lines logged after such a
# mark: for a message that must come from a given step, not an earlier one.
# Whether the kernel has generic KASAN (the KASAN lane), whose shadow of memory going online
# comes from the kernel's memory (mm/kasan/generic.c says so at boot).
kasan_generic() { dmesg | grep -q 'KernelAddressSanitizer initialized (generic)'; }

dmesg_mark() { dmesg | wc -l; }
dmesg_since() { dmesg | tail -n +$(($1 + 1)); }
# The kernel log since this script's start (requires): in a shared boot, not the
# scripts' before it.
script_log() { dmesg_since "${VMR_SCRIPT_MARK:-0}"; }

# leave_clean [QID...]: a script's last step before ktap_finish (whose log check
# then covers it), so that the next script of a shared boot finds the guest as a
# fresh boot leaves it (requires): each device (default vm0) asked for 0 and
# with nothing plugged, and neither driver loaded. Memory still plugged with no
# driver bound is unplugged by ours, loaded for it. Fails, saying why, if it
# could not.
leave_clean() {
    local q m rc=0
    [ $# -gt 0 ] || set -- vm0
    for q in "$@"; do vmctl set-size "$q" 0 >/dev/null || rc=1; done
    if [ -z "$(for v in $(virtio_mem_devices); do bound_driver "$v"; done)" ] &&
        [ -n "$(for q in "$@"; do [ "$(qmp_info "$q" size)" = 0 ] || echo "$q"; done)" ]; then
        [ ! -d /sys/module/virtio_mem ] || rmmod virtio_mem || rc=1
        [ ! -d /sys/module/virtio_mem_rust ] || rmmod virtio_mem_rust || rc=1
        load_bound "$VMR_KO_RUST" || rc=1
    fi
    for q in "$@"; do
        vmctl wait "$q" 0 --wait-timeout-s 300 >/dev/null 2>&1 ||
            { ktap_diag "leave_clean: $q still has $(qmp_info "$q" size) bytes plugged"; rc=1; }
    done
    for m in virtio_mem_rust virtio_mem; do
        [ ! -d "/sys/module/$m" ] || rmmod "$m" ||
            { ktap_diag "leave_clean: $m cannot be unloaded"; rc=1; }
    done
    return $rc
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

# Waits up to $2 seconds (times VMR_TIME_FACTOR) until MemTotal is $1 kB;
# prints the last value seen.
wait_memtotal_kb() {
    local want=$1 deadline=$((SECONDS + $(scaled "$2"))) now
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

vmem_status() { with_scaled_timeouts "$VMEM_STATUS" "$@"; }

# Counter $2 (a line of the `stats` attribute) of device $1.
vmem_stat() { sed -n "s/^$2 //p" "/sys/bus/virtio/devices/$1/virtio_mem/stats"; }

# check_sizes LABEL DEV QID BASE_KB: the driver's plugged_size is the device's
# plugged size over QMP, and its online_size is what MemTotal grew by since
# BASE_KB (2 results).
check_sizes() {
    ktap_eq "$1: sysfs plugged_size is the device's size" "$(qmp_info "$3" size)" \
        "$(vmem_attr "$2" plugged_size)"
    ktap_eq "$1: sysfs online_size is the MemTotal delta (kB)" $(($(memtotal_kb) - $4)) \
        $(($(vmem_attr "$2" online_size) / 1024))
}
