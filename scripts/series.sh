#!/usr/bin/env bash
# Export the work as a patch series (git format-patch) against the pristine
# 7.3 tree, one commit per entry of patches/series.map, with a cover letter.
#
# The overlay (rust/, drivers/, include/, tools/testing/, Documentation/ and
# patches/*.patch) stays the form the work is developed in; the series is
# generated from it and never edited by hand:
#
# 1. A git repository of the pristine tree, unpacked once from the kernel
#    .deb into $VMR_CACHE/series/pristine (one commit, tag "base"), reused
#    while the .deb is the same.
# 2. For each line of patches/series.map, in order, the overlay files and
#    patch files it names are put into a commit on top of the previous one
#    (git plumbing on a private index: the pristine work tree is not
#    touched). Every overlay file and every patch file must be named exactly
#    once, so the series cannot silently leave part of the work out.
# 3. git format-patch writes the series and a cover letter (0000) from
#    patches/series/cover into the output directory, whose path is printed.
#
# Usage: series.sh [OUTDIR]   (default: $VMR_CACHE/series/out)
# Env: SERIES_PREFIX (default "RFC PATCH"), the subject prefix.
# scripts/series-check.sh checks the result.
source "$(dirname "$0")/common.sh"

SERIES_DIR=$VMR_CACHE/series
BASE_REPO=$SERIES_DIR/pristine
OUT=${1:-$SERIES_DIR/out}
MAP=$REPO/patches/series.map
MSGS=$REPO/patches/series
PREFIX=${SERIES_PREFIX:-RFC PATCH}
# A project identity, not a person: authors, committer and Signed-off-by.
IDENT_NAME="virtio-mem-rust developers"
IDENT_EMAIL="virtio-mem-rust@invalid"
export GIT_AUTHOR_NAME=$IDENT_NAME GIT_AUTHOR_EMAIL=$IDENT_EMAIL
export GIT_COMMITTER_NAME=$IDENT_NAME GIT_COMMITTER_EMAIL=$IDENT_EMAIL

# 1. The pristine tree as a git repository.
ensure_base() {
    local deb stamp tmp
    "$REPO/scripts/fetch-kernel.sh" --deb-only # downloads it if needed, checks its sha256
    deb=$(ls "$VMR_CACHE"/deb/linux-source-7.3_*.deb | head -n1)
    stamp=$BASE_REPO/.git/vmr-base
    if [ "$(cat "$stamp" 2>/dev/null)" = "$(basename "$deb")" ] &&
        git -C "$BASE_REPO" rev-parse -q --verify refs/tags/base >/dev/null; then
        return 0
    fi
    log "unpacking $(basename "$deb") into $BASE_REPO (once)"
    tmp=$BASE_REPO.tmp
    rm -rf "$BASE_REPO" "$tmp"
    mkdir -p "$tmp"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards './usr/src/linux-source-7.3*.tar.xz' |
        tar -xJ -C "$tmp" --strip-components=1
    # -f: Debian's top-level .gitignore ignores everything, and the kernel's
    # ignores some files it ships; the base must be the whole tarball.
    # A fixed date and identity make the base commit, and so every commit of
    # the series, the same on every machine.
    git -C "$tmp" init -q
    git -C "$tmp" config gc.auto 0
    git -C "$tmp" add -A -f
    GIT_AUTHOR_DATE="2000-01-01T00:00:00Z" GIT_COMMITTER_DATE="2000-01-01T00:00:00Z" \
        git -C "$tmp" commit -q -m "Linux 7.3 ($(basename "$deb" .deb))"
    git -C "$tmp" tag base
    basename "$deb" >"$tmp/.git/vmr-base"
    mv "$tmp" "$BASE_REPO"
}
ensure_base

# 2. One commit per line of the map.
# The series' dates: the project's last commit, so that the same work gives
# the same patches.
date=$(git -C "$REPO" log -1 --format=%cI 2>/dev/null || date -R)
export GIT_AUTHOR_DATE=$date GIT_COMMITTER_DATE=$date
export GIT_DIR=$BASE_REPO/.git
export GIT_INDEX_FILE=$SERIES_DIR/index
rm -f "$GIT_INDEX_FILE"
git read-tree base

declare -A claimed=()
claim() { # FILE (relative to $REPO) ENTRY
    [ -z "${claimed[$1]:-}" ] || die "series.map: $1 is in both $2 and ${claimed[$1]}"
    claimed[$1]=$2
}
parent=$(git rev-parse base)
n=0
while read -r msg specs <&3; do
    case "$msg" in ''|'#'*) continue ;; esac
    [ -f "$MSGS/$msg" ] || die "series.map: no message file patches/series/$msg"
    n=$((n + 1))
    for spec in $specs; do
        # shellcheck disable=SC2206 # a glob, expanded in the repo
        matches=($(cd "$REPO" && compgen -G "$spec" || true))
        [ ${#matches[@]} -gt 0 ] || die "series.map: $spec ($msg) matches nothing"
        for m in "${matches[@]}"; do
            m=${m%/}
            if [[ $m == patches/*.patch ]]; then
                claim "$m" "$msg"
                git apply --cached "$REPO/$m" || die "$m does not apply on top of the patches before it in series.map"
            elif [ -d "$REPO/$m" ] || [ -f "$REPO/$m" ]; then
                mapfile -t files < <(overlay_files | awk -v m="$m" '$0 == m || index($0, m "/") == 1')
                [ ${#files[@]} -gt 0 ] || die "series.map: $m ($msg) is not under the overlay roots"
                for f in "${files[@]}"; do claim "$f" "$msg"; done
                # Into the index in one go (the index holds the whole tree).
                paste <(for f in "${files[@]}"; do [ -x "$REPO/$f" ] && echo 100755 || echo 100644; done) \
                      <(printf '%s\n' "${files[@]/#/$REPO/}" | git hash-object -w --stdin-paths) \
                      <(printf '%s\n' "${files[@]}") |
                    awk -F'\t' '{ printf "%s %s\t%s\n", $1, $2, $3 }' | git update-index --add --index-info
            else
                die "series.map: $m ($msg) is neither a patch file nor an overlay file or directory"
            fi
        done
    done
    tree=$(git write-tree)
    [ "$tree" != "$(git rev-parse "$parent^{tree}")" ] || die "series.map: $msg changes nothing"
    parent=$(git interpret-trailers --trailer "Signed-off-by: $IDENT_NAME <$IDENT_EMAIL>" "$MSGS/$msg" |
        git commit-tree "$tree" -p "$parent")
done 3<"$MAP"
[ $n -gt 0 ] || die "series.map has no patches"

missing=()
while IFS= read -r f; do [ -n "${claimed[$f]:-}" ] || missing+=("$f"); done \
    < <(overlay_files; (cd "$REPO" && ls patches/*.patch))
[ ${#missing[@]} = 0 ] || die "not in patches/series.map: ${missing[*]}"
git update-ref refs/heads/series "$parent"
rm -f "$GIT_INDEX_FILE"

# 3. The patches and the cover letter (subject: the cover file's first
# paragraph; the rest is its body, followed by git's shortlog and diffstat).
git config branch.series.description "$(cat "$MSGS/cover")"
rm -rf "$OUT"
mkdir -p "$OUT"
git format-patch -q -o "$OUT" --cover-letter --cover-from-description=subject \
    --subject-prefix="$PREFIX" base..series
log "$n patches and a cover letter against $(git log -1 --format=%s base)"
(cd "$OUT" && ls)
echo "series: $OUT"
