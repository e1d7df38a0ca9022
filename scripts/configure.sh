#!/usr/bin/env bash
# Generate $KBUILD/.config: allnoconfig plus the lane's fragments
# (configs/*.config; the debug lane adds configs/debug/*.config), then check
# that every option the fragments ask for really is set (Kconfig silently
# drops options whose dependencies are missing, which would hide a broken
# config). Usage: configure.sh [--lane normal|debug|arm64]
source "$(dirname "$0")/common.sh"
[ "${1:-}" = --lane ] && use_lane "$2"
source "$(dirname "$0")/toolchain.sh"

mkdir -p "$KBUILD"
frag=$(mktemp)
trap 'rm -f "$frag"' EXIT
# One assignment per option, the last fragment's: the debug fragment turns on
# what the base one turns off (PROVE_LOCKING, DEBUG_VM), and both the config
# and the check below must see only the value that counts.
cat "${LANE_CONFIGS[@]}" | tac | awk '
    /^CONFIG_[A-Za-z0-9_]+=/ { opt = $0; sub(/=.*/, "", opt); if (seen[opt]++) next }
    { print }' | tac >"$frag"

# Reconfigure only when the fragment or the overlay's Kconfig files changed
# (the driver's own, and those patches/ edit: drivers/virtio/Kconfig, mm/Kconfig).
mapfile -t kconfigs < <(grep -E '(^|/)Kconfig[^/]*$' "$KSRC/.vmr-overlay-manifest" | sort)
sum=$(cat "$frag" "${kconfigs[@]/#/$KSRC/}" | sha256sum | cut -d' ' -f1)
if [ -f "$KBUILD/.config" ] && [ "$(cat "$KBUILD/.vmr-config-sum" 2>/dev/null)" = "$sum" ]; then
    exit 0
fi

log "configuring the $LANE kernel (allnoconfig + ${LANE_CONFIGS[*]#"$REPO"/})"
make -s -C "$KSRC" O="$KBUILD" "${KMAKE_ARGS[@]}" KCONFIG_ALLCONFIG="$frag" allnoconfig >/dev/null
make -s -C "$KSRC" O="$KBUILD" "${KMAKE_ARGS[@]}" olddefconfig >/dev/null

bad=0
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=n) opt=${line%%=*}
            grep -q "^$opt=" "$KBUILD/.config" && { echo "config: $opt should be off: $(grep "^$opt=" "$KBUILD/.config")" >&2; bad=1; } ;;
        CONFIG_*=*) opt=${line%%=*}
            grep -qxF "$line" "$KBUILD/.config" || { echo "config: wanted $line, got: $(grep "^$opt=" "$KBUILD/.config" || echo unset)" >&2; bad=1; } ;;
    esac
done <"$frag"
[ $bad = 0 ] || die "the $LANE kernel config does not have what ${LANE_CONFIGS[*]#"$REPO"/} asks for"
echo "$sum" >"$KBUILD/.vmr-config-sum"
log "config ok"
