#!/usr/bin/env bash
# Generate $KBUILD/.config: allnoconfig plus configs/*.config, then check that
# every option the fragment asks for really is set (Kconfig silently drops
# options whose dependencies are missing, which would hide a broken config).
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/toolchain.sh"

mkdir -p "$KBUILD"
frag=$(mktemp)
trap 'rm -f "$frag"' EXIT
cat "$REPO"/configs/*.config >"$frag"

# Reconfigure only when the fragment or the overlay's Kconfig files changed.
sum=$(cat "$frag" "$KSRC"/drivers/virtio/virtio_mem_rust/Kconfig | sha256sum | cut -d' ' -f1)
if [ -f "$KBUILD/.config" ] && [ "$(cat "$KBUILD/.vmr-config-sum" 2>/dev/null)" = "$sum" ]; then
    exit 0
fi

log "configuring kernel (allnoconfig + configs/*.config)"
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
[ $bad = 0 ] || die "the kernel config does not have what configs/*.config asks for"
echo "$sum" >"$KBUILD/.vmr-config-sum"
log "config ok"
