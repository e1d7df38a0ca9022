#!/usr/bin/env bash
# Check the patch series scripts/series.sh exports (it runs first). Three
# results, each "ok N - ..." or "not ok N - ...", then
# "series: N passed, N failed"; exits non-zero on a failure.
#
# 1. git am: the patches (not the cover letter) apply with `git am
#    --whitespace=error-all` to the pristine 7.3 tree (the checkout in
#    $VMR_CACHE/series/pristine, which series.sh unpacked from the .deb and
#    never changes: it is put back to its base commit, and git status must
#    show nothing, before the patches are applied, and put back again after),
#    and give the tree series.sh committed.
# 2. overlay: the tree after the last patch equals, for every file the
#    overlay touches, what scripts/overlay.sh makes of the pristine tree
#    (run on a scratch copy of the files it patches, VMR_CACHE pointed at
#    $VMR_CACHE/series/check/overlay: $KSRC is not touched), content and
#    executable bit; and the series changes no other file. So the kernel the
#    normal lane builds is the series' result.
# 3. checkpatch: scripts/checkpatch.pl --strict (of the pristine tree) on
#    each patch: no ERROR, and every WARNING and CHECK type left on a patch
#    is one patches/README explains for that patch ("- `NAME` `TYPE`" lines,
#    NAME as in patches/series.map), and patches/README explains nothing
#    checkpatch no longer reports. Its SPDX validation (spdxcheck.py) needs
#    Python's ply and git modules: Debian's python3-ply and python3-git for
#    /usr/bin/python3, which is put first in checkpatch's PATH.
source "$(dirname "$0")/common.sh"
source "$REPO/scripts/ktap.sh"

SERIES_DIR=$VMR_CACHE/series
BASE_REPO=$SERIES_DIR/pristine
OUT=$SERIES_DIR/out
work=$SERIES_DIR/check
IDENT=(-c "user.name=virtio-mem-rust developers" -c "user.email=virtio-mem-rust@invalid")

finish() {
    ktap_summary series
    exit
}
# The pristine checkout back at its base commit, as series.sh expects it.
restore_base() {
    [ -d "$BASE_REPO/.git" ] || return 0
    git -C "$BASE_REPO" am --abort >/dev/null 2>&1 || true
    git -C "$BASE_REPO" checkout -q -f --detach base
    git -C "$BASE_REPO" clean -q -f -d -x
}
trap restore_base EXIT

rm -rf "$work"
mkdir -p "$work"

echo "TAP version 13"
echo "1..3"
if ! "$REPO/scripts/series.sh" "$OUT" >"$work/series.log" 2>&1; then
    tail -n 20 "$work/series.log" | diag
    for c in "git am" overlay checkpatch; do result 1 "$c: scripts/series.sh failed"; done
    finish
fi
mapfile -t patches < <(ls "$OUT"/[0-9][0-9][0-9][0-9]-*.patch | grep -v '/0000-')
# The map's entry names, in order: patch N is entry N.
mapfile -t names < <(awk '$1 !~ /^#/ && NF { print $1 }' "$REPO/patches/series.map")

# --- 1. git am on the pristine tree ------------------------------------------
am=$BASE_REPO
rc=0
restore_base >"$work/am.log" 2>&1 || rc=1
if [ $rc = 0 ] && [ -n "$(git -C "$am" status --porcelain --ignored | head -n 5 | tee -a "$work/am.log")" ]; then
    echo "the pristine checkout is not clean" >>"$work/am.log"; rc=1
fi
[ $rc != 0 ] || git -C "$am" "${IDENT[@]}" am -q --whitespace=error-all "${patches[@]}" >>"$work/am.log" 2>&1 || rc=1
if [ $rc = 0 ]; then
    got=$(git -C "$am" rev-list --count base..HEAD)
    [ "$got" = ${#patches[@]} ] || { echo "git am made $got commits of ${#patches[@]} patches" >>"$work/am.log"; rc=1; }
    [ "$(git -C "$am" rev-parse 'HEAD^{tree}')" = "$(git -C "$BASE_REPO" rev-parse 'series^{tree}')" ] ||
        { echo "the tree after git am is not the one series.sh committed" >>"$work/am.log"; rc=1; }
fi
[ $rc = 0 ] || tail -n 20 "$work/am.log" | diag
result $rc "git am: ${#patches[@]} patches apply to a clean 7.3 tree"
if [ $rc != 0 ]; then
    result 1 "overlay: no tree to compare (git am failed)"
else
    # --- 2. the series' result is the overlay's ------------------------------
    ovl=$work/overlay
    mkdir -p "$ovl/linux"
    mapfile -t targets < <(sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "$REPO"/patches/*.patch | sort -u)
    # The pristine copies of the files the patches edit (a file a patch
    # creates has none: overlay.sh marks it absent).
    mapfile -t existing < <(for t in "${targets[@]}"; do
        git -C "$BASE_REPO" cat-file -e "base:$t" 2>/dev/null && echo "$t"; done)
    git -C "$BASE_REPO" archive base -- "${existing[@]}" | tar -x -C "$ovl/linux"
    touch "$ovl/linux/.vmr-unpacked"
    rc=0
    VMR_CACHE=$ovl "$REPO/scripts/overlay.sh" >"$work/overlay.log" 2>&1 || rc=1
    bad=()
    if [ $rc = 0 ]; then
        while IFS= read -r f; do
            if ! cmp -s "$ovl/linux/$f" "$am/$f"; then bad+=("$f differs"); continue; fi
            x1=0 x2=0
            [ -x "$ovl/linux/$f" ] && x1=1
            [ -x "$am/$f" ] && x2=1
            [ $x1 = $x2 ] || bad+=("$f: executable bit")
        done <"$ovl/linux/.vmr-overlay-manifest"
        while IFS= read -r f; do
            grep -qxF "$f" "$ovl/linux/.vmr-overlay-manifest" || bad+=("$f: changed by the series, not by the overlay")
        done < <(git -C "$am" diff --name-only base HEAD)
    else
        bad+=("overlay.sh failed: $(tail -n 1 "$work/overlay.log")")
    fi
    [ ${#bad[@]} = 0 ] || { rc=1; printf '%s\n' "${bad[@]}" | head -n 20 | diag; }
    result $rc "overlay: the tree after the last patch is the overlay's ($(wc -l <"$ovl/linux/.vmr-overlay-manifest") files)"
fi

# --- 3. checkpatch ------------------------------------------------------------
if ! /usr/bin/python3 -c 'import ply, git' 2>/dev/null; then
    echo "python3-ply and python3-git are missing: checkpatch would skip SPDX validation (scripts/setup-host.sh installs them)" | diag
    result 1 "checkpatch: cannot validate SPDX lines"
    finish
fi
mkdir -p "$work/checkpatch"
# Run from the pristine tree, as a reviewer would before applying the
# series (checkpatch reads the tree: spdxcheck, its CamelCase seed).
restore_base
# Two at a time: checkpatch is slow on the driver's patch.
printf '%s\n' "${patches[@]}" | PATH=/usr/bin:$PATH xargs -P "$(nproc)" -I{} sh -c \
    'cd "$1" && perl scripts/checkpatch.pl --strict --show-types "$2" >"$3/$(basename "$2").log" 2>&1; true' \
    sh "$BASE_REPO" {} "$work/checkpatch"
accepted=$(sed -n 's/^- `\([a-z_0-9]*\)` `\([A-Z]*:[A-Z_0-9]*\)`.*/\1 \2/p' "$REPO/patches/README")
rc=0
found=""
for i in "${!patches[@]}"; do
    p=${patches[$i]} name=${names[$i]:-?}
    log=$work/checkpatch/$(basename "$p").log
    if ! grep -q '^total: ' "$log"; then
        echo "$(basename "$p"): checkpatch did not finish" | diag; rc=1; continue
    fi
    summary=$(sed -n 's/^total: \(.*\), [0-9]* lines checked$/\1/p' "$log")
    echo "# $(basename "$p") ($name): $summary"
    types=$(grep -o '^\(ERROR\|WARNING\|CHECK\):[A-Z_0-9]*:' "$log" | sed 's/:$//' | sort | uniq -c || true)
    [ -z "$types" ] || sed 's/^/#   /' <<<"$types"
    grep -q '^ERROR:' "$log" && { grep -A3 '^ERROR:' "$log" | diag; rc=1; }
    while read -r _ type; do
        [ -n "$type" ] || continue
        case $type in ERROR:*) continue ;; esac
        found+="$name $type"$'\n'
        grep -qxF "$name $type" <<<"$accepted" || { echo "  $type is not explained in patches/README for $name:" | diag; grep -A2 "^$type:" "$log" | head -n 12 | diag; rc=1; }
    done <<<"$types"
done
# And no explanation is left over from a warning that is gone.
while read -r entry; do
    [ -z "$entry" ] || grep -qxF "$entry" <<<"$found" ||
        { echo "patches/README explains \`${entry% *}\` \`${entry#* }\`, which checkpatch no longer reports" | diag; rc=1; }
done <<<"$accepted"
result $rc "checkpatch --strict: no ERROR, every WARNING and CHECK explained in patches/README, no other explained"

finish
