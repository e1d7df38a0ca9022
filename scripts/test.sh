#!/usr/bin/env bash
# The test suite: everything it needs is installed and built first. Runs
# the tools' own tests (vmctl, vmem-status; cargo fmt --check and clippy
# -D warnings count as one result each), the patch series' checks
# (series-check.sh), the kernel's own entry points on a kernel of their own
# (kernel-checks.sh: kunit.py, CLIPPY=1, make rustdoc, make rustfmtcheck),
# then boots guests with real QEMU virtio-mem-pci devices and runs the
# kselftests in tools/testing/selftests/drivers/virtio_mem/ there. Every KTAP result is
# counted; the last line is "N passed, N failed".
#
# The guest tests run three times: on the normal kernel, on the debug lane's
# (lockdep, DEBUG_VM, KFENCE, DEBUG_PAGEALLOC, Rust debug assertions and
# overflow checks), and on the arm64 lane's (the same tree cross-built for
# arm64, booted under qemu-system-aarch64 -M virt, a subset of the tests:
# ARM64_TESTS below). Each lane's results go to test-results/LANE/ (the
# normal lane's to test-results/) and its totals get a line of their own.
# Every phase's time is printed when it ends and again at the end.
source "$(dirname "$0")/common.sh"

times=()
phase_done() { # NAME START (date +%s)
    local s=$(( $(date +%s) - $2 ))
    times+=("$(printf '%-26s %3dm%02ds' "$1" $((s / 60)) $((s % 60)))")
    echo "time: ${times[-1]}"
}

t=$(date +%s); "$REPO/scripts/setup-host.sh"; phase_done setup "$t"
t=$(date +%s); "$REPO/scripts/build.sh"; phase_done "build (normal kernel)" "$t"
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

passed=0 failed=0 lane_passed=0 lane_failed=0
results=$VMR_CACHE/test-results
rm -rf "$results"; mkdir -p "$results/debug" "$results/arm64"

count() { # NAME PASSED FAILED
    passed=$((passed + $2)); failed=$((failed + $3))
    lane_passed=$((lane_passed + $2)); lane_failed=$((lane_failed + $3))
    printf '== %s: %d passed, %d failed\n' "$1" "$2" "$3"
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
    local name=$1 log=$results/$1.log p f
    log "$name: cargo test, fmt, clippy"
    if (cd "$REPO/tools/$name" && cargo build --release --quiet && cargo test --release --quiet) \
            >"$log" 2>&1; then :; fi
    p=$(sed -n 's/^test result: .* \([0-9]\+\) passed; \([0-9]\+\) failed.*/\1/p' "$log" | paste -sd+ | bc)
    f=$(sed -n 's/^test result: .* \([0-9]\+\) passed; \([0-9]\+\) failed.*/\2/p' "$log" | paste -sd+ | bc)
    if [ -z "$p" ]; then tail -n 30 "$log"; p=0 f=1; fi
    [ "$f" = 0 ] || grep -E '^(test .* FAILED|failures:|---- )' "$log" | head -n 20
    # Formatting and lints: one result each.
    if tool_check "$name" "$results/$name-fmt.log" fmt --check; then
        p=$((p + 1)); else f=$((f + 1)); fi
    if tool_check "$name" "$results/$name-clippy.log" clippy --release --all-targets --quiet -- -D warnings; then
        p=$((p + 1)); else f=$((f + 1)); fi
    count "$name" "$p" "$f"
}
t=$(date +%s)
cargo_tests vmctl
cargo_tests vmem-status
phase_done "host cargo tests" "$t"

# host_script NAME SCRIPT LINES: runs scripts/SCRIPT, its output to NAME.log, and counts the
# "NAME: N passed, N failed" line it ends with (one failure if it printed none); shows its
# failures and diagnostics, at most LINES (not checkpatch's "0 errors, 0 warnings, 0 checks").
host_script() {
    local name=$1 log=$results/$1.log r
    "$REPO/scripts/$2" >"$log" 2>&1 || true
    r=$(sed -n "s/^$name: \([0-9]*\) passed, \([0-9]*\) failed\$/\1 \2/p" "$log")
    if [ -z "$r" ]; then tail -n 20 "$log"; r="0 1"; fi
    grep -E '^(not ok|# )' "$log" | grep -v ': 0 errors, 0 warnings, 0 checks$' | head -n "$3" || true
    # shellcheck disable=SC2086
    count "$name" $r
}

# --- the abstractions' compile_fail examples, built against this kernel -------
log "compile_fail examples"
host_script compile-fail compile-fail.sh 20

# --- the patch series (make series): git am, the overlay's tree, checkpatch ----
log "patch series checks"
t=$(date +%s)
host_script series series-check.sh 30
phase_done "patch series checks" "$t"

# --- the kernel's own entry points: kunit.py, CLIPPY=1, rustdoc, rustfmtcheck ----
log "kernel checks (kunit.py, clippy, rustdoc, rustfmtcheck)"
t=$(date +%s)
host_script kernel-checks kernel-checks.sh 30
phase_done "kernel checks (kunit.py)" "$t"

# --- guest tests ---------------------------------------------------------------
tests=$REPO/tools/testing/selftests/drivers/virtio_mem

# The tests the arm64 lane runs: everything that does not need what only the
# x86_64 guest has, but for tests that take a path another one here takes too.
# Left out: numa (nodes from ACPI SRAT; arm64's virt machine describes nodes
# in its device tree, where the device's node id means nothing), bad-config
# (x86's phys-bits) and suspend (ACPI S3; the tests' sleeps and wake-ups go
# through the 8250's ttyS1); repeats: backing, host-limit, unplug-offline,
# lost-answer-bbm, bbm-unmovable, request-moves, big-staged.
ARM64_TESTS=" probe no-device in-use plug offline bbm partial unplug-all unplug unplug-online-block pressure rebind rebind-bbm lost-answer online-race flap stopped kdump-rust kdump-c big-memmap "

# What the debug lane leaves out, to keep the whole run inside CI's 90 minutes with the arm64
# lane: kdump-c (the C driver's kdump; ours runs), backing (the host's backing checked as
# unplug.sh checks it, with the same driver paths) and rebind-bbm (the hand-over that
# rebind.sh runs in sub-block mode; lost-answer-bbm and bbm-unmovable take big-block mode's
# paths on this kernel). Together about 7 of its 42 minutes.
DEBUG_SKIP=" kdump-c backing rebind-bbm "

# guest NAME NSCRIPTS "run-guest options" "guest command"
# NSCRIPTS: how many KTAP test scripts the command runs (a script that never
# printed its header counts as one failure). Runs on the kernel of $LANE
# (guest_tests below); its guest gets $LANE_TIME_FACTOR times the time.
guest() {
    local name=$1 nscripts=$2 opts=$3 gcmd=$4 out=$results/$1.log
    [ "$LANE" != arm64 ] || [[ "$ARM64_TESTS" == *" $name "* ]] || return 0
    [ "$LANE" != debug ] || [[ "$DEBUG_SKIP" != *" $name "* ]] || return 0
    [ "$LANE" = normal ] || { out=$results/$LANE/$1.log; name=$LANE/$1; }
    log "guest test: $name"
    local rc=0
    # shellcheck disable=SC2086
    "$REPO/scripts/run-guest.sh" --lane "$LANE" --timeout $((600 * LANE_TIME_FACTOR)) $opts \
        -- "cd $REPO && export $genv && $gcmd" </dev/null >"$out" 2>&1 || rc=$?
    # Top-level KTAP lines only (subtests are indented).
    local plan ok notok
    plan=$( (grep -aE '^1\.\.[0-9]+$' "$out" || true) | sed 's/^1\.\.//' | paste -sd+ | bc)
    ok=$(grep -acE '^ok [0-9]+' "$out" || true)
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
    count "$name" "$ok" "$notok"
}

# Every guest test, on the kernel of the current lane (lane_tests below). The
# list is kept unindented so that it stays easy to compare and merge.
guest_tests() {
guest probe 1 "--nodes 2 --vmem size=16G,block=2M,node=0,id=vm0 --vmem size=4G,block=1G,node=1,id=vm1" \
    "VMR_DEVICES='vm0 vm1' $tests/probe.sh"
guest no-device 2 "" "$tests/no_device.sh; $tests/kunit.sh"
# The same scripts through the kernel's own entry point (kselftest's install and its
# run_kselftest.sh, which prints the plan that `make run_tests` does not), in one guest
# that has what a few of them need (kunit.sh, in_use.sh); the others skip themselves
# (lib.sh: requires), and the runner's KTAP counts each script as one result. Its output is
# kept in the guest until the end: the runner and its output filter write to the console at
# once, and their lines came out cut into each other.
guest kselftest 1 "--vmem size=4G,block=2M,id=vm0" \
    "make -s --no-print-directory -C $KSRC/tools/testing/selftests TARGETS=drivers/virtio_mem INSTALL_PATH=/tmp/ksft install >/dev/null && /tmp/ksft/run_kselftest.sh >/tmp/ktap 2>&1; rc=\$?; cat /tmp/ktap; exit \$rc"
guest in-use 1 "--vmem size=4G,id=vm0" "$tests/in_use.sh"
guest plug 1 "--append memhp_default_state=online_movable --vmem size=16G,block=2M,requested=1G,id=vm0" \
    "$tests/plug.sh"
guest offline 1 "--vmem size=8G,block=2M,id=vm0" "$tests/offline.sh"
guest bbm 1 "--append memhp_default_state=online_movable --vmem size=8G,block=2M,id=vm0" "$tests/bbm.sh"
guest numa 1 "--nodes 2 --append memhp_default_state=online_movable --vmem size=4G,block=2M,requested=1G,node=0,id=vm0 --vmem size=4G,block=1G,requested=2G,node=1,id=vm1" \
    "$tests/numa.sh"
# The region of this one is backed by a file on the host's tmpfs.
backing=/dev/shm/vmr-backing-$$
limit=$VMR_CACHE/run/limit-$$
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
guest unplug-all 1 "--vmem size=4G,block=2M,id=vm0" "$tests/unplug_all.sh"
guest unplug 1 "--append memhp_default_state=online_movable --rodir /mnt=/dev/shm --vmem size=16G,block=2M,id=vm0,backend=file:$backing" \
    "VMR_BACKING=/mnt/${backing##*/} $tests/unplug.sh"
rm -f "$backing"
guest unplug-offline 1 "--vmem size=4G,block=2M,id=vm0" "$tests/unplug_offline.sh"
guest unplug-online-block 1 "--append memhp_default_state=online_movable --vmem size=4G,block=2M,id=vm0" \
    "$tests/unplug_online_block.sh"
guest pressure 1 "--append memhp_default_state=online_movable --vmem size=12G,block=2M,id=vm0" "$tests/pressure.sh"
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

guest rebind 1 "--append memhp_default_state=online_movable --vmem size=8G,block=2M,id=vm0" "$tests/rebind.sh"
guest rebind-bbm 1 "--append memhp_default_state=online_movable --vmem size=8G,block=1G,id=vm0" "$tests/rebind.sh"
guest lost-answer 1 "--append memhp_default_state=online_movable --vmem size=8G,block=2M,id=vm0" "$tests/lost_answer.sh"
guest lost-answer-bbm 1 "--append memhp_default_state=online_movable --vmem size=8G,block=1G,id=vm0" "$tests/lost_answer.sh"
# Races and lifecycle (issue 11): user space onlines blocks the driver just emptied (the
# region is a host tmpfs file, checked for backing), flaps a partly plugged block while the
# driver plugs into it, a page that cannot move in big-block mode, a stopped device unbound.
rm -f "$backing"
guest online-race 1 "--rodir /mnt=/dev/shm --vmem size=8G,block=2M,id=vm0,backend=file:$backing" \
    "VMR_BACKING=/mnt/${backing##*/} $tests/online_race.sh"
rm -f "$backing"
guest flap 1 "--append memhp_default_state=online_movable --vmem size=4G,block=2M,id=vm0" "$tests/flap.sh"
guest bbm-unmovable 1 "--append memhp_default_state=online_movable --vmem size=4G,block=1G,id=vm0" \
    "$tests/bbm_unmovable.sh"
guest stopped 1 "--vmem size=4G,block=2M,id=vm0" "$tests/stopped.sh"
# The machine's life around the driver (issue 13): suspend-to-idle, S3 and hibernation for
# both drivers in one guest (which runs from a root on tmpfs: 9p and virtio-serial do not
# survive a sleep); kdump with each driver, the region backed by a host tmpfs file that must
# not grow while the dump is read.
guest suspend 1 "--append memhp_default_state=online_movable --vmem size=4G,block=2M,id=vm0" \
    "$tests/suspend.sh"
for drv in rust c; do
    rm -f "$backing"
    guest kdump-$drv 2 "--append crashkernel=384M --append memhp_default_state=online_movable --rodir /mnt=/dev/shm --vmem size=4G,block=2M,id=vm0,backend=file:$backing,prealloc=on" \
        "VMR_DRIVER=$drv VMR_BACKING=/mnt/${backing##*/} $tests/kdump.sh"
done
rm -f "$backing"
guest request-moves 1 "--append memhp_default_state=online_movable --vmem size=16G,block=2M,id=vm0" \
    "$tests/request_moves.sh"
guest big-memmap 1 "--append memhp_default_state=online_movable --append memory_hotplug.memmap_on_memory=1 --vmem size=64G,block=2M,id=vm0" \
    "VMR_MEMMAP=1 $tests/big.sh"
guest big-staged 1 "--mem 1G --append memhp_default_state=online_movable --vmem size=64G,block=2M,id=vm0" \
    "VMR_MEMMAP=0 $tests/big.sh"
}

declare -A lane_totals
lane_tests() { # LANE
    use_lane "$1"
    genv=$(guest_env)
    lane_passed=0 lane_failed=0
    local t; t=$(date +%s)
    guest_tests
    phase_done "guest tests ($1 lane)" "$t"
    lane_totals[$1]="$lane_passed passed, $lane_failed failed"
    echo "$1 lane: ${lane_totals[$1]}"
}
lane_tests normal
for lane in debug arm64; do
    built=${lane}_built
    if [ "${!built}" = 1 ]; then
        lane_tests $lane
    else
        lane_passed=0 lane_failed=0
        count "$lane lane: kernel build" 0 1
        lane_totals[$lane]="$lane_passed passed, $lane_failed failed"
    fi
done

echo "test logs: $results (debug lane: $results/debug, arm64 lane: $results/arm64)"
printf 'time: %s\n' "${times[@]}"
for lane in normal debug arm64; do echo "$lane lane: ${lane_totals[$lane]}"; done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
