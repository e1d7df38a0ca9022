#!/usr/bin/env bash
# Checks through the kernel's own entry points. Results "ok N - ..." or
# "not ok N - ...", then "kernel-checks: N passed, N failed"; exits non-zero on
# a failure.
#
# Usage: kernel-checks.sh [--kunit-log LOG] [--kunit-run]   (at least one)
#
# 1. KUnit, one result per KUnit suite of the overlay (every `kunit_tests(NAME)`
#    in rust/, drivers/ and patches/): it ran, and passed.
#    --kunit-log LOG: kunit.py parse over a normal lane guest's kernel log
#      (scripts/test.sh's no-device guest prints it with a "kunit-kmsg| "
#      prefix: the built-in suites' KTAP from boot, the module's from its load).
#      No kernel of its own: this is what make check runs.
#    --kunit-run: kunit.py run --arch=x86_64 --kunitconfig=drivers/virtio/virtio_mem_rust
#      on a kernel of its own ($VMR_CACHE/build-kunit: Kconfig's defaults and the
#      .kunitconfig: no SMP, no NUMA, no modules, the driver built in, a
#      configuration none of the lanes builds; QEMU under TCG: kunit.py asks for
#      KVM first, and this machine's /dev/kvm cannot boot a stock kernel, so
#      kunit.py runs in a mount namespace where /dev/kvm is /dev/null and QEMU
#      falls back to TCG). make check-all runs it; it adds the CLIPPY=1 and
#      rustdoc checks in that configuration too.
# 2. CLIPPY=1: the kernel crate and the driver compiled again by
#    clippy-driver, with the kernel's lint set, in the normal lane's
#    configuration (and the KUnit kernel's with --kunit-run): no rustc or
#    clippy warning in a file of the overlay (one in an upstream file is shown,
#    not counted).
# 3. make rustdoc, in the same configurations: no warning in a file of the
#    overlay, and the new modules (kernel::virtio, kernel::memory_hotplug,
#    kernel::sysfs, kernel::power, kernel::crash_dump and, in the normal lane's,
#    its VmcoreHandler) documented.
# 4. make rustfmtcheck: rustfmt has nothing to change in the tree.
source "$(dirname "$0")/common.sh"
source "$REPO/scripts/toolchain.sh"
source "$REPO/scripts/ktap.sh"
# Every step's status is a result, not a reason to stop.
set +e

kunit_log= kunit_run=0
while [ $# -gt 0 ]; do
    case "$1" in
        --kunit-log) kunit_log=$2; shift 2 ;;
        --kunit-run) kunit_run=1; shift ;;
        *) die "kernel-checks.sh: unknown option $1" ;;
    esac
done
[ -n "$kunit_log" ] || [ $kunit_run = 1 ] || die "kernel-checks.sh: --kunit-log LOG or --kunit-run"

KUNIT_BUILD=$VMR_CACHE/build-kunit
KUNITCONFIG=drivers/virtio/virtio_mem_rust
work=$VMR_CACHE/test-results/kernel-checks
rm -rf "$work"; mkdir -p "$work"
make_k() { make -C "$KSRC" O="$KUNIT_BUILD" ARCH=x86_64 -j"$(nproc)" "$@"; }
use_lane normal
make_n() { make -C "$KSRC" O="$KBUILD" "${KMAKE_ARGS[@]}" "$@"; }

# The overlay's .rs files, relative to the source tree.
ours=$(overlay_files | grep '\.rs$')
# warnings_in_ours LOG...: the warnings of the logs whose location is a file
# of the overlay, each with its location line.
warnings_in_ours() {
    awk -v ours="$ours" -v ksrc="$KSRC/" '
        BEGIN { n = split(ours, f, "\n"); for (i = 1; i <= n; i++) mine[f[i]] = 1 }
        /^(warning|error)(\[[^]]*\])?: / { msg = $0; next }
        msg != "" && /^ *--> / {
            loc = $2; sub(/:[0-9]+:[0-9]+$/, "", loc)
            if (index(loc, ksrc) == 1) loc = substr(loc, length(ksrc) + 1)
            if (loc in mine) print msg "\n    " $2
            msg = ""
        }' "$@"
}

echo "TAP version 13"
"$REPO/scripts/overlay.sh" >/dev/null
suites=$(cd "$REPO" && grep -rhoE 'kunit_tests\([a-z0-9_]+\)' rust drivers patches | sed 's/.*(\(.*\))/\1/' | sort -u)
nsuites=$(wc -l <<<"$suites")
echo "1..$(( (kunit_run + (${#kunit_log} > 0)) * nsuites + 3 ))"

# suite_results HOW LOG: one result per suite, from kunit.py's output LOG (its
# "[HH:MM:SS] ===== [PASSED] NAME =====" lines).
suite_results() {
    local how=$1 log=$2 s st
    for s in $suites; do
        st=$(sed -n "s/^\[[0-9:]*\] =* \[\([A-Z]*\)\] $s =*$/\1/p" "$log" | head -n1)
        [ "$st" = PASSED ]; result $? "$how: suite $s ${st:-did not run}"
    done
}

# --- 1. KUnit ---------------------------------------------------------------
if [ -n "$kunit_log" ]; then
    log "kunit.py parse over $kunit_log"
    # The kernel log has one KTAP document per run: the built-in suites' at boot and each
    # module's at its load. kunit.py parse reads one document (the first, to its end), so
    # each goes to it alone; other kernel messages between and inside them are left out
    # (a document's lines are KTAP's: versions, plans, results, indented subtests, "#").
    sed -n 's/^kunit-kmsg| //p' "$kunit_log" >"$work/kmsg.log"
    awk -v dir="$work" '
        { line = $0; sub(/^\[[ 0-9.]*\] /, "", line) }
        line ~ /^K?TAP version [0-9]+$/ { n++ }
        n && line ~ /^ *(K?TAP version [0-9]+|1\.\.[0-9]+|(not )?ok [0-9]+( .*)?|# .*)$/ {
            print line > (dir "/ktap-" n ".log")
        }' "$work/kmsg.log"
    : >"$work/kunit-parse.log"
    for f in "$work"/ktap-*.log; do
        [ -e "$f" ] || { echo "no KUnit output in $kunit_log" | diag; break; }
        (cd "$KSRC" && python3 tools/testing/kunit/kunit.py parse "$f") >>"$work/kunit-parse.log" 2>&1
    done
    grep -E 'Testing complete|ERROR' "$work/kunit-parse.log" | sed 's/^\[[0-9:]*\] //' | diag
    suite_results "kunit.py parse (normal lane)" "$work/kunit-parse.log"
fi
if [ $kunit_run = 1 ]; then
    log "kunit.py run (builds $KUNIT_BUILD)"
    kunit_cmd=(python3 tools/testing/kunit/kunit.py run --arch=x86_64 --kunitconfig="$KUNITCONFIG"
               --build_dir="$KUNIT_BUILD" --jobs="$(nproc)" --timeout=900)
    if [ -e /dev/kvm ]; then
        (cd "$KSRC" && unshare --mount sh -c 'mount --bind /dev/null /dev/kvm && exec "$@"' sh "${kunit_cmd[@]}")
    else
        (cd "$KSRC" && "${kunit_cmd[@]}")
    fi >"$work/kunit.log" 2>&1
    kunit_rc=$?
    sed -n 's/^\[[0-9:]*\] //p' "$work/kunit.log" | grep -E '^Testing complete|^ERROR' | diag
    [ $kunit_rc = 0 ] || tail -n 30 "$work/kunit.log" | diag
    suite_results "kunit.py run" "$work/kunit.log"
fi

# --- 2. clippy ----------------------------------------------------------------
log "CLIPPY=1: the kernel crate and the driver"
# The command line changes (clippy-driver for rustc), so kbuild compiles both again. (The
# normal lane's next build compiles them again with rustc: about two minutes.)
rc=0
make_n CLIPPY=1 rust/kernel.o "$KUNITCONFIG/" >"$work/clippy-normal.log" 2>&1 || {
    rc=1; tail -n 30 "$work/clippy-normal.log" | diag; }
if [ $kunit_run = 1 ]; then
    make_k CLIPPY=1 rust/kernel.o "$KUNITCONFIG/" >"$work/clippy.log" 2>&1 || {
        rc=1; tail -n 30 "$work/clippy.log" | diag; }
fi
w=$(warnings_in_ours "$work"/clippy*.log)
[ -z "$w" ] || diag <<<"$w"
others=$(cat "$work"/clippy*.log | grep -cE '^warning(\[[^]]*\])?: ' || true)
[ "$others" = 0 ] || echo "clippy: $others warnings in all (upstream's included): $work/clippy*.log" | diag
[ -z "$w" ] || rc=1
result $rc "CLIPPY=1 build: no rustc or clippy warning in the overlay's Rust files"

# --- 3. rustdoc ---------------------------------------------------------------
log "make rustdoc"
rc=0
builds=("$KBUILD")
make_n rustdoc >"$work/rustdoc-normal.log" 2>&1 || {
    rc=1; tail -n 30 "$work/rustdoc-normal.log" | diag; }
if [ $kunit_run = 1 ]; then
    builds+=("$KUNIT_BUILD")
    make_k rustdoc >"$work/rustdoc.log" 2>&1 || { rc=1; tail -n 30 "$work/rustdoc.log" | diag; }
fi
w=$(warnings_in_ours "$work"/rustdoc*.log)
[ -z "$w" ] || { rc=1; diag <<<"$w"; }
for m in virtio memory_hotplug sysfs power crash_dump crash_dump/trait.VmcoreHandler.html; do
    for b in "${builds[@]}"; do
        f=$b/Documentation/output/rust/rustdoc/kernel/$m
        [ "${f%.html}" != "$f" ] || f=$f/index.html
        # No PROC_VMCORE in KUnit's defaults.
        [ "$b" = "$KUNIT_BUILD" ] && [[ $m == *Vmcore* ]] && continue
        [ -s "$f" ] || { rc=1; echo "not documented: ${f#"$VMR_CACHE"/}" | diag; }
    done
done
result $rc "make rustdoc: no warning in the overlay's Rust files, the new modules documented"

# --- 4. rustfmtcheck ------------------------------------------------------------
log "make rustfmtcheck"
rc=0
make_n rustfmtcheck >"$work/rustfmt.log" 2>&1 || { rc=1; grep '^Diff in' "$work/rustfmt.log" | sort -u | diag; }
result $rc "make rustfmtcheck: nothing to reformat"

ktap_summary kernel-checks
