#!/usr/bin/env bash
# Lay the repository over the unpacked kernel tree in $KSRC, idempotently.
#
# - Files under the overlay roots (OVERLAY_ROOTS in common.sh: rust/,
#   drivers/, include/, tools/testing/, Documentation/) are copied only when
#   their content differs, so an unchanged file keeps its timestamp and make
#   rebuilds only what changed.
# - patches/*.patch edit existing kernel files. Each patched file is
#   regenerated from its pristine copy plus every patch that touches it,
#   so re-running never applies a patch twice and an edited patch replaces
#   the old result.
# - Files the overlay placed earlier but the repo no longer has are put back
#   to their pristine state (or deleted when the kernel never had them).
source "$(dirname "$0")/common.sh"

[ -f "$KSRC/.vmr-unpacked" ] || die "no kernel tree in $KSRC: run scripts/fetch-kernel.sh first"
mkdir -p "$PRISTINE"
manifest=$KSRC/.vmr-overlay-manifest
touch "$manifest"

# Save the pristine version of a kernel file (or a marker that it did not exist).
save_pristine() {
    local rel=$1
    [ -e "$PRISTINE/$rel" ] || [ -e "$PRISTINE/$rel.vmr-absent" ] && return 0
    mkdir -p "$(dirname "$PRISTINE/$rel")"
    if [ -e "$KSRC/$rel" ]; then cp -p "$KSRC/$rel" "$PRISTINE/$rel"; else touch "$PRISTINE/$rel.vmr-absent"; fi
}

# Install $1 (a file) as kernel path $2 if the content differs.
install_if_changed() {
    local src=$1 rel=$2
    if ! cmp -s "$src" "$KSRC/$rel"; then
        save_pristine "$rel"
        mkdir -p "$(dirname "$KSRC/$rel")"
        cp "$src" "$KSRC/$rel"
        echo "  updated $rel"
    fi
}

new_manifest=$(mktemp)
trap 'rm -f "$new_manifest"; rm -rf "${gen:-}"' EXIT

# 1. Plain overlay files.
cd "$REPO"
while IFS= read -r rel; do
    install_if_changed "$REPO/$rel" "$rel"
    echo "$rel" >>"$new_manifest"
done < <(overlay_files)

# 2. Patches on existing kernel files, regenerated from pristine copies.
gen=$(mktemp -d)
mapfile -t patches < <(ls "$REPO"/patches/*.patch 2>/dev/null | sort)
if [ ${#patches[@]} -gt 0 ]; then
    mapfile -t targets < <(sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "${patches[@]}" | sort -u)
    for rel in "${targets[@]}"; do
        save_pristine "$rel"
        mkdir -p "$(dirname "$gen/$rel")"
        [ -e "$PRISTINE/$rel" ] && cp "$PRISTINE/$rel" "$gen/$rel"
    done
    for p in "${patches[@]}"; do
        patch -s -p1 -d "$gen" --no-backup-if-mismatch -r - <"$p" ||
            die "patch $(basename "$p") does not apply to the pristine kernel tree"
    done
    for rel in "${targets[@]}"; do
        install_if_changed "$gen/$rel" "$rel"
        echo "$rel" >>"$new_manifest"
    done
fi

# 3. Restore what the previous overlay touched and this one no longer does.
sort -u -o "$new_manifest" "$new_manifest"
while IFS= read -r rel; do
    [ -n "$rel" ] || continue
    grep -qxF "$rel" "$new_manifest" && continue
    if [ -e "$PRISTINE/$rel.vmr-absent" ]; then
        rm -f "$KSRC/$rel"; echo "  removed $rel"
    elif [ -e "$PRISTINE/$rel" ]; then
        cp -p "$PRISTINE/$rel" "$KSRC/$rel"; echo "  restored $rel"
    fi
done <"$manifest"
cp "$new_manifest" "$manifest"
log "overlay applied ($(wc -l <"$manifest") files)"
