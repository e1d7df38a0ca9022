#!/usr/bin/env bash
# The test suite: everything it needs is installed and built first. Runs
# the tools' own tests (vmctl, vmem-status; cargo fmt --check and clippy
# -D warnings count as one result each), the patch series' checks
# (series-check.sh), then boots guests with real QEMU virtio-mem-pci devices
# and runs the kselftests in tools/testing/selftests/drivers/virtio_mem/
# there, then the kernel's own entry points (kernel-checks.sh: kunit.py over
# the normal lane's boot, CLIPPY=1, make rustdoc, make rustfmtcheck). Every
# KTAP result is counted; a "# SKIP" result as skipped, not passed. The last
# line is "N passed, N failed, N skipped".
#
# Two depths, one suite (VMR_DEPTH):
#   check  (make check, .ci/run): the normal lane runs every guest test; the
#          debug and arm64 lanes run what only they find (DEBUG_TESTS and
#          ARM64_TESTS below, with the reasons); kernel-checks.sh parses the
#          normal lane's KUnit output. Its budget: 40 minutes warm, 60 cold.
#   all    (make check-all): every guest test on every lane (arm64: all but
#          the three that need what only x86_64 has), and kunit.py run on a
#          kernel of its own as well (KUnit's defaults: no SMP, no NUMA, no
#          modules, a configuration no lane builds).
#
# The guest tests run on three kernels: the normal one, the debug lane's
# (lockdep, DEBUG_VM, KFENCE, DEBUG_PAGEALLOC, Rust debug assertions and
# overflow checks) and the arm64 lane's (the same tree cross-built for arm64,
# booted under qemu-system-aarch64 -M virt); make check-all adds a fourth, the
# KASAN lane's (x86_64 built with clang 19, generic KASAN: configs/kasan/),
# which runs every guest test. Each lane's results go to
# test-results/LANE/ (the normal lane's to test-results/) and its totals get a
# line of their own. Besides each script's own check of the kernel log (lib.sh),
# every guest's whole kernel console is scanned on the host (console_check).
# Every phase's time is printed when it ends and again at the end, with the
# whole run's time against the budget.
source "$(dirname "$0")/common.sh"

DEPTH=${VMR_DEPTH:-check}
case $DEPTH in check|all) ;; *) die "VMR_DEPTH must be check or all, not '$DEPTH'" ;; esac
run_start=$(date +%s)
# A run is warm when every lane's kernel was built before (its build directory and the
# ccache are there), cold otherwise; the budget differs.
warmth=warm
for l in normal debug arm64; do
    (use_lane "$l"; [ -f "$KBUILD/init/main.o" ]) || warmth=cold
done

times=()
phase_done() { # NAME START (date +%s)
    local s=$(( $(date +%s) - $2 ))
    times+=("$(printf '%-26s %3dm%02ds' "$1" $((s / 60)) $((s % 60)))")
    echo "time: ${times[-1]}"
}

t=$(date +%s); "$REPO/scripts/setup-host.sh"; phase_done setup "$t"
t=$(date +%s); "$REPO/scripts/build.sh"; phase_done "build (normal kernel)" "$t"
normal_built=1
# A debug kernel that does not build fails the debug lane only: the normal
# lane still runs and reports.
debug_built=1
t=$(date +%s); "$REPO/scripts/build.sh" --lane debug || debug_built=0; phase_done "build (debug kernel)" "$t"
# The arm64 lane needs its kernel, its own root and the tools built for it;
# like the debug lane, it fails alone.
arm64_built=1
t=$(date +%s)
{ "$REPO/scripts/build.sh" --lane arm64 && "$REPO/scripts/rootfs.sh" arm64 >/dev/null &&
  "$REPO/scripts/build-tools.sh" --lane arm64; } || arm64_built=0
phase_done "build (arm64 kernel, root)" "$t"
# make check-all only: the KASAN lane (x86_64 built with clang 19, generic KASAN; see
# configs/kasan/), which runs every guest test. It fails alone too.
lanes="normal debug arm64"
if [ "$DEPTH" = all ]; then
    lanes+=" kasan"
    kasan_built=1
    t=$(date +%s); "$REPO/scripts/build.sh" --lane kasan || kasan_built=0
    phase_done "build (kasan kernel)" "$t"
fi

passed=0 failed=0 skipped=0 lane_passed=0 lane_failed=0 lane_skipped=0
results=$VMR_CACHE/test-results
rm -rf "$results"; mkdir -p "$results/debug" "$results/arm64" "$results/kasan"

count() { # NAME PASSED FAILED [SKIPPED]
    local s=${4:-0}
    passed=$((passed + $2)); failed=$((failed + $3)); skipped=$((skipped + s))
    lane_passed=$((lane_passed + $2)); lane_failed=$((lane_failed + $3))
    lane_skipped=$((lane_skipped + s))
    printf '== %s: %d passed, %d failed, %d skipped\n' "$1" "$2" "$3" "$s"
}

# --- the tools: vmctl (QMP, host or guest) and vmem-status (guest) ----------
# tool_check NAME LOG CARGO-ARGS...: runs cargo in tools/NAME, its output to
# LOG; prints the output if it fails. Its status is cargo's.
tool_check() {
    local name=$1 log=$2; shift 2
    (cd "$REPO/tools/$name" && cargo "$@") >"$log" 2>&1 && return 0
    echo "$name: cargo $* failed:"; head -n 60 "$log"; return 1
}
cargo_tests() { # NAME: builds tools/NAME, runs its tests, checks it with rustfmt and clippy
    local name=$1 log=$results/$1.log p f i
    log "$name: cargo test, fmt, clippy"
    if (cd "$REPO/tools/$name" && cargo build --release --quiet && cargo test --release --quiet) \
            >"$log" 2>&1; then :; fi
    # "test result: ok. N passed; N failed; N ignored; ...": an ignored test is a skipped one.
    local re='^test result: .* \([0-9]\+\) passed; \([0-9]\+\) failed; \([0-9]\+\) ignored.*'
    p=$(sed -n "s/$re/\\1/p" "$log" | paste -sd+ | bc)
    f=$(sed -n "s/$re/\\2/p" "$log" | paste -sd+ | bc)
    i=$(sed -n "s/$re/\\3/p" "$log" | paste -sd+ | bc)
    if [ -z "$p" ]; then tail -n 30 "$log"; p=0 f=1 i=0; fi
    [ "$f" = 0 ] || grep -E '^(test .* FAILED|failures:|---- )' "$log" | head -n 20
    # Formatting and lints: one result each.
    if tool_check "$name" "$results/$name-fmt.log" fmt --check; then
        p=$((p + 1)); else f=$((f + 1)); fi
    if tool_check "$name" "$results/$name-clippy.log" clippy --release --all-targets --quiet -- -D warnings; then
        p=$((p + 1)); else f=$((f + 1)); fi
    count "$name" "$p" "$f" "$i"
}
t=$(date +%s)
cargo_tests vmctl
cargo_tests vmem-status
phase_done "host cargo tests" "$t"

# host_script NAME LINES SCRIPT [ARGS...]: runs scripts/SCRIPT, its output to NAME.log, and
# counts the "NAME: N passed, N failed" line it ends with (one failure if it printed none);
# shows its failures and diagnostics, at most LINES (not checkpatch's "0 errors, 0 warnings,
# 0 checks").
host_script() {
    local name=$1 lines=$2 script=$3 log=$results/$1.log r; shift 3
    "$REPO/scripts/$script" "$@" >"$log" 2>&1 || true
    r=$(sed -n "s/^$name: \([0-9]*\) passed, \([0-9]*\) failed\$/\1 \2/p" "$log")
    if [ -z "$r" ]; then tail -n 20 "$log"; r="0 1"; fi
    grep -E '^(not ok|# )' "$log" | grep -v ': 0 errors, 0 warnings, 0 checks$' | head -n "$lines" || true
    # shellcheck disable=SC2086
    count "$name" $r
}

# --- the abstractions' compile_fail examples, built against this kernel -------
log "compile_fail examples"
host_script compile-fail 20 compile-fail.sh

# --- the patch series (make series): git am, the overlay's tree, checkpatch ----
log "patch series checks"
t=$(date +%s)
host_script series 30 series-check.sh
phase_done "patch series checks" "$t"

# --- guest tests ---------------------------------------------------------------
tests=$REPO/tools/testing/selftests/drivers/virtio_mem

# What each lane runs. The normal lane runs every guest test at both depths. make check's
# debug and arm64 lanes run what they find that the normal lane cannot (make check-all runs
# every test there too):
#
# The debug lane (lockdep, DEBUG_VM, KFENCE, DEBUG_PAGEALLOC, Rust debug assertions and
# overflow checks) finds lock order and page-state bugs: the tests whose paths take the
# hotplug locks against user space or against the kernel's own onlining and offlining, touch
# pages of online memory, or change the machine's life. no-device: the KUnit suites with
# Rust's debug assertions and overflow checks; probe: bind, unbind and bind again of both
# modes (the region, its notifiers and the online-page callback registered and released under
# the hotplug locks) and the C driver after ours; unplug-online-block: alloc_contig_range,
# PageOffline and offlining of a partly plugged block, with user space offlining and onlining
# it; pressure: unplug of online memory while a workload holds it (migration, the margin);
# rebind: unbind with memory in use, the parked region, take-over; lost-answer and
# lost-answer-bbm: the resync and the pages kept after an answer that never came; online-race
# and flap: user space onlining and offlining against the driver; bbm-unmovable:
# offline_and_remove_memory around a pinned page; stopped: a stopped device unbound, its
# parked region guarding onlining; suspend: the PM notifier, freeze and restore; kdump-rust:
# the vmcore callback in a capture kernel. Left to make check-all: the plug paths and sizes
# (plug, offline, bbm, numa, partial, unplug-all, unplug, unplug-offline, host-limit,
# request-moves, big-*), backing checks (backing), the config refusal (bad-config), the C
# driver's kdump (kdump-c) and big-block rebind (rebind-bbm): the same locks and page paths
# as the tests above, at more sizes.
DEBUG_TESTS=" no-device probe unplug-online-block pressure rebind lost-answer lost-answer-bbm online-race flap bbm-unmovable stopped fault-matrix fault-matrix-bbm suspend kdump-rust "
#
# The arm64 lane finds what differs on another architecture (see README, "The arm64 lane"):
# a device tree machine whose node comes from the region's address (probe, which compares
# features and node with the C driver), the usable region 1G ahead (plug, with a partly
# plugged block), page migration and PageOffline of online memory (unplug-online-block), the
# vmcore list made at load without CRASH_HOTPLUG (kdump-rust) and the KUnit suites there
# (no-device). make check-all runs ARM64_ALL: everything but numa (nodes from ACPI SRAT;
# arm64's virt machine describes nodes in its device tree, where the device's node id means
# nothing), bad-config (x86's phys-bits) and suspend (ACPI S3; the tests' sleeps and wake-ups
# go through the 8250's ttyS1), which cannot run there.
ARM64_TESTS=" probe no-device plug unplug-online-block kdump-rust "
ARM64_ALL=" probe no-device kselftest plug offline bbm backing partial unplug-all unplug unplug-offline unplug-online-block pressure host-limit rebind rebind-bbm lost-answer lost-answer-bbm online-race flap bbm-unmovable stopped fault-matrix fault-matrix-bbm kdump-rust kdump-c request-moves big-memmap big-staged "

# The normal lane can run in two parts, one in each stream (see the end), to keep both about
# as long: NORMAL_B runs after the debug and arm64 lanes, the rest before the kernel checks.
# Empty now: measured on 2026-12-03 (a warm make check of 9f2d64f), the normal lane and the
# kernel checks took 42 minutes, the debug and arm64 lanes 43.5, and moving suspend, kdump-c
# and kdump-16t over (3 minutes) made the second stream the longer one by that much.
NORMAL_B=" "

in_list() { [[ "$1" == *" $2 "* ]]; }

# console_check FILE CRASH: one result. The guest's kernel console (run-guest.sh
# --console-log: every message at KERN_NOTICE or above, from the first second of boot to
# power-off) has no splat: lib.sh's KERNEL_SPLAT_RE, with the lockdep report lib.sh accepts
# handled as in the guest (kernel_log_filter). It sees what a script's own check cannot:
# what is printed after its last result (module unload, power-off) or in a capture kernel.
# With CRASH=1 (the kdump guests) the crash the test triggers is expected: what the kernel
# prints from "sysrq: Trigger a crash" to the capture kernel's start of the guest command
# is left out. A console without the guest command's start was not captured, and fails.
console_check() {
    local file=$1 crash=$2 start='vmr: guest command starts'
    (
        source "$tests/lib.sh"
        log=$(tr -d '\r' <"$file" | awk -v crash="$crash" -v start="$start" '
            crash == 1 && /sysrq: Trigger a crash/ { skip = 1 }
            skip && index($0, start) { skip = 0 }
            !skip' | kernel_log_filter)
        if ! grep -qF "$start" "$file"; then
            echo "# console: no \"$start\" in $file: the console was not captured"
            exit 1
        fi
        grep -a 'vmr: accepted lockdep report' <<<"$log" | sed 's/^/# console: /' || true
        splats=$(grep -aE "$KERNEL_SPLAT_RE" <<<"$log") || exit 0
        sed 's/^/# console: /' <<<"$splats" | head -n 20
        echo "# console: from the first of them ($file):"
        grep -a -m1 -A40 -F -x -e "$(head -n1 <<<"$splats")" <<<"$log" | sed 's/^/# console:   /'
        exit 1
    )
}

# lane_runs NAME: whether the current lane (and part) runs the guest test NAME (the lists above).
lane_runs() {
    case $LANE in
        arm64) in_list "$ARM64_ALL" "$1" || return 1
               [ "$DEPTH" = all ] || in_list "$ARM64_TESTS" "$1" ;;
        debug) [ "$DEPTH" = all ] || in_list "$DEBUG_TESTS" "$1" ;;
        kasan) [ "$DEPTH" = all ] ;;
        normal) case ${PART:-} in
                    a) ! in_list "$NORMAL_B" "$1" ;;
                    b) in_list "$NORMAL_B" "$1" ;;
                esac ;;
    esac
}

# guest NAME NSCRIPTS "run-guest options" "guest command"
# NSCRIPTS: how many KTAP test scripts the command runs (a script that never
# printed its header counts as one failure). Runs on the kernel of $LANE
# (guest_tests below); its guest gets $LANE_TIME_FACTOR times the time. Counts
# the top-level KTAP results ("# SKIP" ones as skipped) and one more: the
# host's scan of the guest's console (console_check). Set for one call:
#   expect_crash=1          the guest crashes on purpose (kdump)
#   required="A.sh B.sh"    (the kselftest guest) these scripts must run, not skip
#   shared=1                (a shared boot, see shared) a script that skipped is a failure
guest() {
    local name=$1 nscripts=$2 opts=$3 gcmd=$4 out=$results/$1.log
    [[ "$name" == *+* ]] || lane_runs "$name" || return 0
    [ "$LANE" = normal ] || { out=$results/$LANE/$1.log; name=$LANE/$1; }
    log "guest test: $name"
    local rc=0 t0=$SECONDS attempt
    # A second attempt only when QEMU itself died (its own assertion or abort) before the guest
    # command started: none of the test ran, the first attempt is kept beside the log, and the
    # retry is printed. Seen once (the CI run of 537fdc9): QEMU 10.0's msix_table_mmio_write assertion three
    # seconds into a debug guest's boot, before any module was loaded.
    for attempt in 1 2; do
        rc=0
        # shellcheck disable=SC2086
        "$REPO/scripts/run-guest.sh" --lane "$LANE" --timeout $((600 * LANE_TIME_FACTOR)) $opts \
            --console-log "${out%.log}.console" \
            -- "cd $REPO && . $genv_file && $gcmd" </dev/null >"$out" 2>&1 || rc=$?
        [ "$attempt" = 1 ] && [ "$rc" != 0 ] || break
        grep -qF 'vmr: guest command starts' "${out%.log}.console" && break
        grep -aqE '^qemu-system-[a-z0-9_]+: .*(Assertion .* failed|[Aa]borted)' "$out" || break
        echo "# $name: QEMU died before the guest command started; second attempt (first: ${out%.log}.first.log):"
        grep -aE '^qemu-system-' "$out" | tail -n 3 | sed 's/^/#   /'
        mv "$out" "${out%.log}.first.log"
    done
    guest_times+=("$(printf '%-34s %4ds' "$name" $((SECONDS - t0)))")
    # Top-level KTAP lines only (subtests are indented).
    local plan ok notok skip
    plan=$( (grep -aE '^1\.\.[0-9]+$' "$out" || true) | sed 's/^1\.\.//' | paste -sd+ | bc)
    ok=$(grep -acE '^ok [0-9]+' "$out" || true)
    skip=$(grep -acE '^ok [0-9]+ .*# SKIP' "$out" || true)
    notok=$(grep -acE '^not ok [0-9]+' "$out" || true)
    plan=${plan:-0}
    grep -aE '^(not ok|# )' "$out" | head -n 40 || true
    local missing=$(( plan - ok - notok ))
    local headers
    headers=$(grep -ac '^TAP version' "$out" || true)
    if [ "$headers" -lt "$nscripts" ]; then
        echo "$name: only $headers of $nscripts test scripts started"
        missing=$(( missing + nscripts - headers ))
    fi
    if [ "$missing" -gt 0 ] || [ "$plan" = 0 ]; then
        echo "$name: guest exited with $rc after $((ok + notok)) of $plan results; last output:"
        tail -n 25 "$out"
        [ "$missing" -gt 0 ] || missing=1
        notok=$((notok + missing))
    elif [ "$rc" != 0 ] && [ "$notok" = 0 ]; then
        echo "$name: guest exited with $rc"; tail -n 25 "$out"; notok=1
    fi
    # In a shared boot every script must run: one that skipped found the guest not as its
    # shape or not clean (the script before did not leave it so).
    if [ -n "${shared:-}" ]; then
        local skipped_scripts
        skipped_scripts=$(grep -ac '^1\.\.0 # SKIP' "$out" || true)
        if [ "$skipped_scripts" -gt 0 ]; then
            echo "$name: $skipped_scripts script(s) of this shared boot skipped:"
            grep -a '^1\.\.0 # SKIP' "$out" | sed 's/^/#   /'
            notok=$((notok + skipped_scripts))
        fi
    fi
    # A script the guest was booted for must run: a skipped one is a failure here.
    local r
    for r in ${required:-}; do
        if ! grep -aqE "^ok [0-9]+ .*: $r\$" "$out"; then
            echo "$name: $r did not run here (skipped or failed), but this guest is made for it"
            notok=$((notok + 1))
        fi
    done
    if console_check "${out%.log}.console" "${expect_crash:-0}"; then ok=$((ok + 1))
    else notok=$((notok + 1)); fi
    count "$name" $((ok - skip)) "$notok" "$skip"
}

# shared "run-guest options" NAME "guest command" [NAME "guest command"]...: the guest
# tests that the current lane runs of these, in one boot when more than one (named by
# theirs, joined by "+"), in the order given. They need the same guest, and each script
# checks at its start that the guest is as a fresh boot leaves it (lib.sh: requires) and
# leaves it so (leave_clean); a script that skipped counts as a failure. A boot under TCG
# costs 10 to 30 seconds, and more on the debug lane.
shared() {
    local opts=$1 names=() cmds=() cmd="rc=0" i; shift
    while [ $# -gt 0 ]; do
        if lane_runs "$1"; then names+=("$1"); cmds+=("$2"); fi
        shift 2
    done
    case ${#names[@]} in
        0) return 0 ;;
        1) guest "${names[0]}" 1 "$opts" "${cmds[0]}"; return ;;
    esac
    for i in "${!cmds[@]}"; do cmd+="; ${cmds[$i]} || rc=1"; done
    shared=1 guest "$(IFS=+; echo "${names[*]}")" "${#names[@]}" "$opts" "$cmd; exit \$rc"
}

# Every guest test, on the kernel of the current lane (lane_tests below). The
# list is kept unindented so that it stays easy to compare and merge.
guest_tests() {
guest probe 1 "--nodes 2 --vmem size=16G,block=2M,node=0,id=vm0 --vmem size=4G,block=1G,node=1,id=vm1" \
    "VMR_DEVICES='vm0 vm1' $tests/probe.sh"
# With kunit.autorun=1 the kernel runs the KUnit suites as kunit.py's own kernels do: the
# built-in ones at boot, the module's at its load. Its log after no_device.sh (which loads the
# module) is printed with a "kunit-kmsg| " prefix for kernel-checks.sh, which gives it to
# kunit.py parse: the suites through the kernel's own entry point, on this lane's kernel.
guest no-device 2 "--append kunit.autorun=1" \
    "$tests/no_device.sh; dmesg >/tmp/kmsg; $tests/kunit.sh; rc=\$?; sed 's/^/kunit-kmsg| /' /tmp/kmsg; exit \$rc"
# The same scripts through the kernel's own entry point (kselftest's install and its
# run_kselftest.sh, which prints the plan that `make run_tests` does not), in one guest
# that has what a few of them need (kunit.sh, in_use.sh: the one guest in_use.sh runs in,
# which is why it must not skip here); the others skip themselves
# (lib.sh: requires), and the runner's KTAP counts each script as one result. Its output is
# kept in the guest until the end: the runner and its output filter write to the console at
# once, and their lines came out cut into each other.
required="kunit.sh in_use.sh" guest kselftest 1 "--vmem size=4G,block=2M,id=vm0" \
    "make -s --no-print-directory -C $KSRC/tools/testing/selftests TARGETS=drivers/virtio_mem INSTALL_PATH=/tmp/ksft install >/dev/null && /tmp/ksft/run_kselftest.sh >/tmp/ktap 2>&1; rc=\$?; cat /tmp/ktap; exit \$rc"
guest plug 1 "--append memhp_default_state=online_movable --vmem size=16G,block=2M,requested=1G,id=vm0" \
    "$tests/plug.sh"
guest offline 1 "--vmem size=8G,block=2M,id=vm0" "$tests/offline.sh"
guest numa 1 "--nodes 2 --append memhp_default_state=online_movable --vmem size=4G,block=2M,requested=1G,node=0,id=vm0 --vmem size=4G,block=1G,requested=2G,node=1,id=vm1" \
    "$tests/numa.sh"
# The region of this one is backed by a file on the host's tmpfs.
backing=/dev/shm/vmr-backing-$$-$LANE${PART:-}
limit=$VMR_CACHE/run/limit-$$-$LANE${PART:-}
# Runs on exit, under set -e: every step must succeed whatever is left.
cleanup() {
    rm -f "$backing"
    if mountpoint -q "$limit"; then umount "$limit"; fi
    if [ -d "$limit" ]; then rmdir "$limit"; fi
}
trap cleanup EXIT
rm -f "$backing"
guest backing 1 "--append memhp_default_state=online_movable --rodir /mnt=/dev/shm --vmem size=16G,block=2M,id=vm0,backend=file:$backing" \
    "VMR_BACKING=/mnt/${backing##*/} $tests/backing.sh"
rm -f "$backing"
guest partial 1 "--rodir /mnt=/dev/shm --vmem size=4G,block=2M,id=vm0,backend=file:$backing" \
    "VMR_BACKING=/mnt/${backing##*/} $tests/partial.sh"
rm -f "$backing"
shared "--vmem size=4G,block=2M,id=vm0" unplug-all "$tests/unplug_all.sh" \
    unplug-offline "$tests/unplug_offline.sh" stopped "$tests/stopped.sh"
guest unplug 1 "--append memhp_default_state=online_movable --rodir /mnt=/dev/shm --vmem size=16G,block=2M,id=vm0,backend=file:$backing" \
    "VMR_BACKING=/mnt/${backing##*/} $tests/unplug.sh"
rm -f "$backing"
# unplug-online-block last: it leaves a block online in a kernel zone (lib.sh: leave_clean).
shared "--append memhp_default_state=online_movable --vmem size=4G,block=2M,id=vm0" \
    flap "$tests/flap.sh" unplug-online-block "$tests/unplug_online_block.sh"
# The debug lane's pressure guest is half the size (pressure.sh: VMR_PRESSURE_GB): its
# migration is several times slower, and the paths are the same.
pgb=12; [ "$LANE" != debug ] || pgb=6
guest pressure 1 "--append memhp_default_state=online_movable --vmem size=${pgb}G,block=2M,id=vm0" \
    "VMR_PRESSURE_GB=$pgb $tests/pressure.sh"
guest bad-config 1 "--phys-bits 52 --maxmem 90T --vmem size=1G,memaddr=$((80 << 40)),id=vm0" \
    "$tests/bad_config.sh"

# The host cannot back all of the request: the region is a file on a 3G tmpfs
# (mounted here) of which a filler file takes 1324M, and the device
# preallocates when it plugs; the guest deletes the filler through the share.
# QEMU warns on its standard error when preallocation fails, into the middle
# of the guest's output: the guest keeps the KTAP lines until the end.
mkdir -p "$limit"
mount -t tmpfs -o size=3G vmr-limit "$limit"
fallocate -l 1324M "$limit/filler"
guest host-limit 1 "--append memhp_default_state=online_movable --rwdir /mnt=$limit --vmem size=4G,block=2M,id=vm0,backend=file:$limit/region,prealloc=on" \
    "VMR_BACKING=/mnt/region VMR_HOST_LIMIT=$((3 << 30)) $tests/host_limit.sh >/tmp/ktap 2>&1; rc=\$?; cat /tmp/ktap; exit \$rc"
umount "$limit"; rmdir "$limit"

shared "--append memhp_default_state=online_movable --vmem size=8G,block=2M,id=vm0" \
    bbm "$tests/bbm.sh" rebind "$tests/rebind.sh" lost-answer "$tests/lost_answer.sh"
shared "--append memhp_default_state=online_movable --vmem size=8G,block=1G,id=vm0" \
    rebind-bbm "$tests/rebind.sh" lost-answer-bbm "$tests/lost_answer.sh"
# Races and lifecycle (issue 11): user space onlines blocks the driver just emptied (the
# region is a host tmpfs file, checked for backing), flaps a partly plugged block while the
# driver plugs into it, a page that cannot move in big-block mode, a stopped device unbound.
rm -f "$backing"
guest online-race 1 "--rodir /mnt=/dev/shm --vmem size=8G,block=2M,id=vm0,backend=file:$backing" \
    "VMR_BACKING=/mnt/${backing##*/} $tests/online_race.sh"
rm -f "$backing"
guest bbm-unmovable 1 "--append memhp_default_state=online_movable --vmem size=4G,block=1G,id=vm0" \
    "$tests/bbm_unmovable.sh"
# A device that lies (issue 22): one fault per case, every request kind and answer, both modes
# (big-block mode with big blocks of 128M: the same paths as 1G ones, cheaper per case), the
# region a host tmpfs file whose allocation is checked against what the device has plugged.
# Which faults, by the driver path each takes (Failed in the driver; an answer's bytes are read
# by protocol.rs answer_of):
#   nack, busy          a refusal (run.rs smaller_plugs: the same for both): back off, and a
#                       plug is retried in smaller pieces;
#   error               a resync with STATE, then the retry;
#   timeout, lost       no answer: Failed::Timeout, the range kept as if done, a resync; lost is
#                       the harder one (the device did act), timeout differs only in that;
#   late                a timeout whose buffer comes back later: the virtqueue busy meanwhile;
#   undefined, short    Failed::Nonsense: the device stopped, the next binding takes over; a
#                       short answer is undefined in answer_of (KUnit: protocol's
#                       short_answers_are_undefined), and the same from there on.
# make check's normal lane runs one fault per path (nack error lost late undefined); its
# debug lane the two whose paths change the device's life, with the locks and page state the
# debug kernel checks (undefined: the stop, unbind and take-over; late: the busy virtqueue);
# the ERROR's resync is the one lost-answer runs there. make check-all runs all eight on
# every lane.
# Which requests: a mode's own code sends PLUG and UNPLUG and undoes them (sbm/plug.rs,
# sbm/unplug.rs, bbm/mod.rs), so both modes run those. UNPLUG_ALL is sent by code both modes
# share (run.rs at take-over, handover.rs at unbind), with nothing added; a STATE answer is
# read by device.rs (query, resync_range), and its failure goes up unchanged through either
# mode's resync (the mode only picks the ranges asked). make check runs those two in
# sub-block mode only; make check-all in both.
mfaults="nack error lost late undefined"
[ "$LANE" != debug ] || mfaults="undefined late"
bbm_requests="plug unplug"
[ "$DEPTH" != all ] || mfaults="" bbm_requests=""
rm -f "$backing"
guest fault-matrix 1 "--append memhp_default_state=online_movable --rodir /mnt=/dev/shm --vmem size=2G,block=2M,id=vm0,backend=file:$backing" \
    "VMR_FAULTS='$mfaults' VMR_BACKING=/mnt/${backing##*/} $tests/fault_matrix.sh"
rm -f "$backing"
guest fault-matrix-bbm 1 "--append memhp_default_state=online_movable --rodir /mnt=/dev/shm --vmem size=2G,block=128M,id=vm0,backend=file:$backing" \
    "VMR_FAULTS='$mfaults' VMR_REQUESTS='$bbm_requests' VMR_BACKING=/mnt/${backing##*/} $tests/fault_matrix.sh"
rm -f "$backing"
# The machine's life around the driver (issue 13): suspend-to-idle, S3 and hibernation for
# both drivers in one guest (which runs from a root on tmpfs: 9p and virtio-serial do not
# survive a sleep); kdump with each driver, the region backed by a host tmpfs file that must
# not grow while the dump is read.
# The debug lane sleeps with our driver only: the C driver's side is the normal lane's
# reference, and on the debug kernel it doubled the lane's longest guest. make check's debug
# lane sleeps in S3 only: suspend-to-idle runs the same driver callbacks (suspend.sh says
# where), and a sleep with its resizes takes a minute and a half there.
sdrv="rust c" sleeps=""
[ "$LANE" != debug ] || { sdrv=rust; [ "$DEPTH" = all ] || sleeps=mem; }
guest suspend 1 "--append memhp_default_state=online_movable --vmem size=4G,block=2M,id=vm0" \
    "VMR_DRIVERS='$sdrv' VMR_SLEEPS='$sleeps' $tests/suspend.sh"
for drv in rust c; do
    rm -f "$backing"
    expect_crash=1 guest kdump-$drv 2 "--append crashkernel=384M --append memhp_default_state=online_movable --rodir /mnt=/dev/shm --vmem size=4G,block=2M,id=vm0,backend=file:$backing,prealloc=on" \
        "VMR_DRIVER=$drv VMR_BACKING=/mnt/${backing##*/} $tests/kdump.sh"
done
# A 16 TiB region (QEMU reserve=off, 46 physical address bits): the tables sized by the region
# come from kvmalloc (kmalloc of more than 4 MiB warns), in sub-block mode and in the capture
# kernel, where one byte per device block is 8 MiB.
rm -f "$backing"
expect_crash=1 guest kdump-16t 2 "--phys-bits 46 --append crashkernel=384M --append memhp_default_state=online_movable --rodir /mnt=/dev/shm --vmem size=16T,block=2M,id=vm0,backend=file:$backing,prealloc=on" \
    "VMR_DRIVER=rust VMR_REGION=16T VMR_BACKING=/mnt/${backing##*/} $tests/kdump.sh"
rm -f "$backing"
guest request-moves 1 "--append memhp_default_state=online_movable --vmem size=16G,block=2M,id=vm0" \
    "$tests/request_moves.sh"
guest big-memmap 1 "--append memhp_default_state=online_movable --append memory_hotplug.memmap_on_memory=1 --vmem size=64G,block=2M,id=vm0" \
    "VMR_MEMMAP=1 $tests/big.sh"
guest big-staged 1 "--mem 1G --append memhp_default_state=online_movable --vmem size=64G,block=2M,id=vm0" \
    "VMR_MEMMAP=0 $tests/big.sh"
}

declare -A lane_totals
guest_times=()
# The guest tests of one lane, in a subshell of their own: its output, phase times, guest
# times and totals ("P F S") go to files in $results (lane-LANE.*), which the run adds up.
lane_tests() { # LANE [PART]: PART a or b of the normal lane (NORMAL_B)
    (
        use_lane "$1"
        PART=${2:-}
        local tag=$1${PART:+-$PART}
        lane_passed=0 lane_failed=0 lane_skipped=0 times=() guest_times=()
        built=${1}_built
        if [ "${!built}" = 1 ]; then
            # The guest's environment from a file next to the lane's modules (which every
            # guest sees, the arm64 ones through a share): in the command it took a quarter
            # of the kernel command line, whose 2048 bytes the command travels in, and the
            # no-device and kdump guests' commands no longer fitted on arm64. One per part:
            # the other part's guests may read theirs meanwhile.
            genv_file=$KMODS/vmr-guest-env${PART:+-$PART}
            echo "export $(guest_env)" >"$genv_file"
            local t; t=$(date +%s)
            guest_tests
            phase_done "guest tests ($tag)" "$t"
        else
            count "$tag: kernel build" 0 1
        fi
        echo "$tag: $lane_passed passed, $lane_failed failed, $lane_skipped skipped"
        printf '%s\n' "${times[@]}" >"$results/lane-$tag.times"
        printf '%s\n' "${guest_times[@]}" >"$results/lane-$tag.guests"
        echo "$lane_passed $lane_failed $lane_skipped" >"$results/lane-$tag.totals"
    )
}
# kernel_checks: kunit.py parses the KUnit output of the normal lane's no-device guest (so
# it runs after that lane); make check-all also has kunit.py build and run a kernel of its own.
kernel_checks() {
    log "kernel checks (kunit.py, clippy, rustdoc, rustfmtcheck)"
    local t; t=$(date +%s)
    local args=(--kunit-log "$results/no-device.log")
    [ "$DEPTH" = check ] || args+=(--kunit-run)
    host_script kernel-checks 30 kernel-checks.sh "${args[@]}"
    phase_done "kernel checks (kunit.py)" "$t"
}

# Two streams at once, of about the same length: the normal lane but NORMAL_B and the kernel
# checks in one; the debug lane, the arm64 lane and the normal lane's NORMAL_B in the other. A
# guest under TCG keeps about one of the machine's two cores busy (the driver's worker,
# onlining and most of the tests are one thread), so two guests at a time take about the time
# of one. The second stream's output is kept in a file and shown when it ends.
second_out=$results/lanes-debug-arm64-normal-b.out
{ lane_tests debug; lane_tests arm64; [ "$DEPTH" != all ] || lane_tests kasan; lane_tests normal b; } \
    >"$second_out" 2>&1 &
second_pid=$!
lane_tests normal a
kernel_checks
wait "$second_pid" || true
log "the second stream's output (debug, arm64, normal lane's NORMAL_B):"
cat "$second_out"
for lane in $lanes; do
    lp=0 lf=0 ls=0
    parts=("$lane"); [ "$lane" != normal ] || parts=(normal-a normal-b)
    for tag in "${parts[@]}"; do
        read -r p f sk <"$results/lane-$tag.totals" || { p=0 f=1 sk=0; }
        lp=$((lp + p)) lf=$((lf + f)) ls=$((ls + sk))
        mapfile -t -O "${#times[@]}" times <"$results/lane-$tag.times"
        mapfile -t -O "${#guest_times[@]}" guest_times <"$results/lane-$tag.guests"
    done
    passed=$((passed + lp)); failed=$((failed + lf)); skipped=$((skipped + ls))
    lane_totals[$lane]="$lp passed, $lf failed, $ls skipped"
done

echo "test logs: $results (debug lane: $results/debug, arm64 lane: $results/arm64${kasan_built:+, kasan lane: $results/kasan})"
printf 'guest: %s\n' "${guest_times[@]}"
printf 'time: %s\n' "${times[@]}"
# The whole run against its budget (make check only: check-all has none).
total=$(( $(date +%s) - run_start ))
line=$(printf 'whole run (%s, %s) %dm%02ds' "$DEPTH" "$warmth" $((total / 60)) $((total % 60)))
if [ "$DEPTH" = check ]; then
    budget=40; [ "$warmth" = warm ] || budget=60
    if [ "$total" -le $((budget * 60)) ]; then line+=" of a ${budget}m budget: within it"
    else line+=" of a ${budget}m budget: OVER by $(( (total - budget * 60 + 59) / 60 ))m"; fi
fi
echo "time: $line"
for lane in $lanes; do echo "$lane lane: ${lane_totals[$lane]}"; done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
