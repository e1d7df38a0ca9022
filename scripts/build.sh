#!/usr/bin/env bash
# Build the kernel (bzImage or arm64 Image, and modules) with our overlay, out of tree in
# $KBUILD. The first build is "cold", later ones "warm"; both times go to the
# build log ($VMR_CACHE/build-times.log) and are printed.
# Usage: build.sh [--lane normal|debug|arm64] (default: normal, or $VMR_LANE)
source "$(dirname "$0")/common.sh"
[ "${1:-}" = --lane ] && use_lane "$2"
"$REPO/scripts/fetch-kernel.sh"
"$REPO/scripts/overlay.sh"
"$REPO/scripts/configure.sh"
source "$REPO/scripts/toolchain.sh"
# The normal lane keeps its old log name; other lanes get their own.
blog=$VMR_CACHE/build-last.log
[ "$LANE" = normal ] || blog=$VMR_CACHE/build-$LANE-last.log

# "cold": nothing compiled in the build directory yet; the ccache hit rate
# printed with the time says whether the compiler cache helped.
kind=warm
[ -f "$KBUILD/init/main.o" ] || kind=cold
ccache -z >/dev/null

log "building the $LANE kernel ($kind build, $(nproc) jobs)"
start=$(date +%s)
rc=0
make -C "$KSRC" O="$KBUILD" "${KMAKE_ARGS[@]}" "$KIMAGE_TARGET" modules >"$blog" 2>&1 || rc=$?
secs=$(( $(date +%s) - start ))
# Our own code must build without warnings: show any, fail on errors.
grep -E -A6 '(^|: )(warning|error)(\[[A-Z0-9]+\])?:' "$blog" | head -n 200 >&2 || true
if [ $rc != 0 ]; then
    tail -n 40 "$blog" >&2
    die "$LANE kernel build failed after ${secs}s (full log: $blog)"
fi

# Stage the modules where the guest scripts find them.
rm -rf "$KMODS"
make -s -C "$KSRC" O="$KBUILD" "${KMAKE_ARGS[@]}" INSTALL_MOD_PATH="$KMODS" \
    INSTALL_MOD_STRIP=1 modules_install >/dev/null
# The guest tests' own helper module (tools/testing/.../pin_page), built out of tree against
# this kernel and staged next to the others.
ext=$VMR_CACHE/ext-$LANE/pin_page
rm -rf "$ext"; mkdir -p "$ext"
cp "$REPO"/tools/testing/selftests/drivers/virtio_mem/pin_page/{Kbuild,*.c} "$ext"/
make -s -C "$KSRC" O="$KBUILD" "${KMAKE_ARGS[@]}" M="$ext" modules >"$ext.log" 2>&1 ||
    { cat "$ext.log" >&2; die "building the test helper module failed"; }
if grep -E '(warning|error):' "$ext.log" >&2; then die "the test helper module has warnings"; fi
cp "$ext/vmr_pin_page.ko" "$KMODS/"

kver=$(cat "$KBUILD/include/config/kernel.release")
hits=$(ccache --print-stats 2>/dev/null | awk -F'\t' '$1 == "direct_cache_hit" || $1 == "preprocessed_cache_hit" { h += $2 } $1 == "cache_miss" { m = $2 } END { printf "%d/%d", h, h + m }')
line=$(printf '%s %s lane, %s build of %s: %dm%02ds (ccache hits %s)' "$(date -u +%FT%TZ)" "$LANE" "$kind" "$kver" \
    $((secs / 60)) $((secs % 60)) "$hits")
echo "$line" >>"$VMR_CACHE/build-times.log"
echo "build time: $line"
