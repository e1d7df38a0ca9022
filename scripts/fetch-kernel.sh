#!/usr/bin/env bash
# Fetch Debian's linux-source-7.3 from trixie-backports with a private apt
# state, check its sha256 and unpack it into $KSRC (once).
# With --deb-only: fetch and check the .deb only (scripts/series.sh unpacks
# its own copy).
source "$(dirname "$0")/common.sh"
deb_only=0; [ "${1:-}" = --deb-only ] && deb_only=1

stamp=$KSRC/.vmr-unpacked
if [ $deb_only = 0 ] && [ -f "$stamp" ]; then
    log "kernel source already unpacked: $(cat "$stamp")"
    exit 0
fi

dl=$VMR_CACHE/deb
mkdir -p "$dl"
deb=$(ls "$dl"/linux-source-7.3_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
    log "fetching linux-source-7.3 from trixie-backports"
    private_apt trixie-backports -- -qq update
    want=linux-source-7.3=$KVER_WANT
    if ! (cd "$dl" && private_apt trixie-backports -- -qq download "$want"); then
        newest=$(private_apt trixie-backports -- -qq madison linux-source-7.3 | awk -F'|' 'NR==1 { gsub(/ /, "", $2); print $2 }')
        [ -n "$newest" ] || die "linux-source-7.3 is not offered by trixie-backports"
        printf 'WARNING: linux-source-7.3 %s is no longer offered; using %s instead\n' "$KVER_WANT" "$newest" >&2
        (cd "$dl" && private_apt trixie-backports -- -qq download "linux-source-7.3=$newest")
        KDEB_SHA256=
    fi
    deb=$(ls "$dl"/linux-source-7.3_*.deb | head -n1)
fi
if [ -n "$KDEB_SHA256" ] && [[ $deb == *"${KVER_WANT//\~/%7e}"* || $deb == *"$KVER_WANT"* ]]; then
    echo "$KDEB_SHA256  $deb" | sha256sum -c --quiet - || { rm -f "$deb"; die "checksum mismatch for $deb"; }
    log "sha256 ok: $(basename "$deb")"
else
    log "WARNING: no pinned checksum for $(basename "$deb"); sha256 $(sha256sum "$deb" | cut -d' ' -f1)"
fi
[ $deb_only = 0 ] || exit 0

tmp=$VMR_CACHE/unpack.tmp
rm -rf "$tmp" && mkdir -p "$tmp"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards './usr/src/linux-source-7.3*.tar.xz'
tarball=$(ls "$tmp"/usr/src/linux-source-7.3*.tar.xz)
log "unpacking $(basename "$tarball")"
rm -rf "$KSRC" "$PRISTINE"
mkdir -p "$KSRC"
tar -xJf "$tarball" -C "$KSRC" --strip-components=1
rm -rf "$tmp"
basename "$deb" >"$stamp"
log "kernel source in $KSRC"
