# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
# Sizes like 2G, 130M, 4G+130M (binary suffixes K, M, G, T) -> bytes.
# Shared by the guest tests and scripts/run-guest.sh.
to_bytes() {
    local total=0 part n
    IFS=+ read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        n=${part%[KkMmGgTt]}
        case "$part" in
            *[Kk]) n=$((n << 10)) ;; *[Mm]) n=$((n << 20)) ;;
            *[Gg]) n=$((n << 30)) ;; *[Tt]) n=$((n << 40)) ;;
        esac
        total=$((total + n))
    done
    echo "$total"
}
