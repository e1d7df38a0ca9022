#!/usr/bin/env bash
# Build the kernel (bzImage + modules) with our overlay, out of tree in
# $KBUILD. The first build is "cold", later ones "warm"; both times go to the
# build log ($VMR_CACHE/build-times.log) and are printed.
source "$(dirname "$0")/common.sh"
"$REPO/scripts/fetch-kernel.sh"
"$REPO/scripts/overlay.sh"
"$REPO/scripts/configure.sh"
source "$REPO/scripts/toolchain.sh"

# "cold": nothing compiled in the build directory yet; the ccache hit rate
# printed with the time says whether the compiler cache helped.
kind=warm
[ -f "$KBUILD/init/main.o" ] || kind=cold
ccache -z >/dev/null

log "building kernel ($kind build, $(nproc) jobs)"
start=$(date +%s)
rc=0
make -C "$KSRC" O="$KBUILD" "${KMAKE_ARGS[@]}" bzImage modules >"$VMR_CACHE/build-last.log" 2>&1 || rc=$?
secs=$(( $(date +%s) - start ))
# Our own code must build without warnings: show any, fail on errors.
grep -E -A6 '(^|: )(warning|error)(\[[A-Z0-9]+\])?:' "$VMR_CACHE/build-last.log" | head -n 200 >&2 || true
if [ $rc != 0 ]; then
    tail -n 40 "$VMR_CACHE/build-last.log" >&2
    die "kernel build failed after ${secs}s (full log: $VMR_CACHE/build-last.log)"
fi

# Stage the modules where the guest scripts find them.
rm -rf "$VMR_CACHE/modules"
make -s -C "$KSRC" O="$KBUILD" "${KMAKE_ARGS[@]}" INSTALL_MOD_PATH="$VMR_CACHE/modules" \
    INSTALL_MOD_STRIP=1 modules_install >/dev/null
# The guest tests' own helper module (tools/testing/.../pin_page), built out of tree against
# this kernel and staged next to the others.
ext=$VMR_CACHE/ext/pin_page
rm -rf "$ext"; mkdir -p "$ext"
cp "$REPO"/tools/testing/selftests/drivers/virtio_mem/pin_page/{Kbuild,*.c} "$ext"/
make -s -C "$KSRC" O="$KBUILD" "${KMAKE_ARGS[@]}" M="$ext" modules >"$VMR_CACHE/build-ext.log" 2>&1 ||
    { cat "$VMR_CACHE/build-ext.log" >&2; die "building the test helper module failed"; }
if grep -E '(warning|error):' "$VMR_CACHE/build-ext.log" >&2; then die "the test helper module has warnings"; fi
cp "$ext/vmr_pin_page.ko" "$VMR_CACHE/modules/"

kver=$(cat "$KBUILD/include/config/kernel.release")
hits=$(ccache --print-stats 2>/dev/null | awk -F'\t' '$1 == "direct_cache_hit" || $1 == "preprocessed_cache_hit" { h += $2 } $1 == "cache_miss" { m = $2 } END { printf "%d/%d", h, h + m }')
line=$(printf '%s %s build of %s: %dm%02ds (ccache hits %s)' "$(date -u +%FT%TZ)" "$kind" "$kver" \
    $((secs / 60)) $((secs % 60)) "$hits")
echo "$line" >>"$VMR_CACHE/build-times.log"
echo "build time: $line"
