#!/usr/bin/env bash
# Checks through the kernel's own entry points, on a kernel of their own:
# $VMR_CACHE/build-kunit, x86_64, built by kunit.py from Kconfig's defaults and
# drivers/virtio/virtio_mem_rust/.kunitconfig (no SMP, no NUMA, no modules,
# the driver built in: a configuration none of the lanes builds). Results
# "ok N - ..." or "not ok N - ...", then "kernel-checks: N passed, N failed";
# exits non-zero on a failure.
#
# 1. kunit.py run --arch=x86_64 --kunitconfig=drivers/virtio/virtio_mem_rust
#    (QEMU under TCG: kunit.py asks for KVM first, and this machine's
#    /dev/kvm cannot boot a stock kernel, so kunit.py runs in a mount
#    namespace where /dev/kvm is /dev/null and QEMU falls back to TCG): one
#    result per KUnit suite of the overlay (every `kunit_tests(NAME)` in rust/
#    and drivers/): it ran, and passed.
# 2. CLIPPY=1: the kernel crate and the driver compiled again by
#    clippy-driver, with the kernel's lint set, in this configuration and in
#    the normal lane's (which has what this one leaves out: NUMA, ACPI,
#    kdump): no rustc or clippy warning in a file of the overlay (one in an
#    upstream file is shown, not counted).
# 3. make rustdoc, in this configuration and in the normal lane's: no warning
#    in a file of the overlay, and the new modules (kernel::virtio,
#    kernel::memory_hotplug, kernel::sysfs, kernel::power, kernel::crash_dump
#    and, in the normal lane's, its VmcoreHandler) documented.
# 4. make rustfmtcheck: rustfmt has nothing to change in the tree.
source "$(dirname "$0")/common.sh"
source "$REPO/scripts/toolchain.sh"
source "$REPO/scripts/ktap.sh"
# Every step's status is a result, not a reason to stop.
set +e

KUNIT_BUILD=$VMR_CACHE/build-kunit
KUNITCONFIG=drivers/virtio/virtio_mem_rust
work=$VMR_CACHE/test-results/kernel-checks
rm -rf "$work"; mkdir -p "$work"
make_k() { make -C "$KSRC" O="$KUNIT_BUILD" ARCH=x86_64 -j"$(nproc)" "$@"; }

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
suites=$(cd "$REPO" && grep -rhoE 'kunit_tests\([a-z0-9_]+\)' rust drivers | sed 's/.*(\(.*\))/\1/' | sort -u)
echo "1..$(( $(wc -l <<<"$suites") + 3 ))"

# --- 1. kunit.py ------------------------------------------------------------
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
for s in $suites; do
    st=$(sed -n "s/^\[[0-9:]*\] =* \[\([A-Z]*\)\] $s =*$/\1/p" "$work/kunit.log" | head -n1)
    [ "$st" = PASSED ]; result $? "kunit.py: suite $s ${st:-did not run}"
done

# --- 2. clippy ----------------------------------------------------------------
log "CLIPPY=1: the kernel crate and the driver"
# The command line changes (clippy-driver for rustc), so kbuild compiles both again.
rc=0
make_k CLIPPY=1 rust/kernel.o "$KUNITCONFIG/" >"$work/clippy.log" 2>&1 || {
    rc=1; tail -n 30 "$work/clippy.log" | diag; }
# The kernel crate and the driver in the normal lane's configuration too. (Its next build
# compiles them again with rustc: about two minutes.)
use_lane normal
make -C "$KSRC" O="$KBUILD" "${KMAKE_ARGS[@]}" CLIPPY=1 rust/kernel.o "$KUNITCONFIG/" >"$work/clippy-normal.log" 2>&1 || {
    rc=1; tail -n 30 "$work/clippy-normal.log" | diag; }
w=$(warnings_in_ours "$work/clippy.log" "$work/clippy-normal.log")
[ -z "$w" ] || diag <<<"$w"
others=$(cat "$work"/clippy*.log | grep -cE '^warning(\[[^]]*\])?: ' || true)
[ "$others" = 0 ] || echo "clippy: $others warnings in all (upstream's included): $work/clippy*.log" | diag
[ -z "$w" ] || rc=1
result $rc "CLIPPY=1 build: no rustc or clippy warning in the overlay's Rust files"

# --- 3. rustdoc ---------------------------------------------------------------
log "make rustdoc"
rc=0
make_k rustdoc >"$work/rustdoc.log" 2>&1 || { rc=1; tail -n 30 "$work/rustdoc.log" | diag; }
make -C "$KSRC" O="$KBUILD" "${KMAKE_ARGS[@]}" rustdoc >"$work/rustdoc-normal.log" 2>&1 || {
    rc=1; tail -n 30 "$work/rustdoc-normal.log" | diag; }
w=$(warnings_in_ours "$work/rustdoc.log" "$work/rustdoc-normal.log")
[ -z "$w" ] || { rc=1; diag <<<"$w"; }
for m in virtio memory_hotplug sysfs power crash_dump crash_dump/trait.VmcoreHandler.html; do
    for b in "$KUNIT_BUILD" "$KBUILD"; do
        f=$b/Documentation/output/rust/rustdoc/kernel/$m
        [ "${f%.html}" != "$f" ] || f=$f/index.html
        [ "$b" = "$KUNIT_BUILD" ] && [[ $m == *Vmcore* ]] && continue
        [ -s "$f" ] || { rc=1; echo "not documented: ${f#"$VMR_CACHE"/}" | diag; }
    done
done
result $rc "make rustdoc: no warning in the overlay's Rust files, the new modules documented"

# --- 4. rustfmtcheck ------------------------------------------------------------
log "make rustfmtcheck"
rc=0
make_k rustfmtcheck >"$work/rustfmt.log" 2>&1 || { rc=1; grep '^Diff in' "$work/rustfmt.log" | sort -u | diag; }
result $rc "make rustfmtcheck: nothing to reformat"

ktap_summary kernel-checks
