# shellcheck shell=bash
# Common settings for every script in scripts/. Source it, do not run it.
#
# Everything generated (kernel source, build output, ccache, tool installs)
# lives outside the checkout, under $VMR_CACHE, so that warm rebuilds stay
# warm across clones and the checkout holds only what we wrote.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VMR_CACHE=${VMR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/virtio-mem-rust}
KVER_WANT=${KVER_WANT:-7.3.4-1~bpo13+1}
KDEB_SHA256=${KDEB_SHA256:-703e369ddd4cce971452f5a593ee55df3a5c10c83caf0fa0df039633ed181ee3}
KSRC=$VMR_CACHE/linux            # unpacked kernel tree with our overlay applied
PRISTINE=$VMR_CACHE/pristine     # pristine copies of kernel files we patch or overlay
LIBCLANG_VENV=$VMR_CACHE/venv    # python venv: libclang 18, virtme-ng
export CCACHE_DIR=${CCACHE_DIR:-$VMR_CACHE/ccache}
export PATH=$LIBCLANG_VENV/bin:$HOME/.cargo/bin:$PATH

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The repository's directories that scripts/overlay.sh lays over the kernel tree
# (scripts/series.sh exports the same files).
OVERLAY_ROOTS=(rust drivers include tools/testing Documentation)
overlay_files() { # every file of the overlay roots, relative to $REPO, sorted
    local roots=() r
    for r in "${OVERLAY_ROOTS[@]}"; do [ ! -d "$REPO/$r" ] || roots+=("./$r"); done
    (cd "$REPO" && find "${roots[@]}" -type f ! -name '*.orig' ! -name '*.rej' |
        sed 's|^\./||' | LC_ALL=C sort)
}

# Three kernels are built from the same tree: the "normal" lane (x86_64,
# configs/*.config and configs/x86_64/*.config), the "debug" lane (the same
# plus configs/debug/*.config: lockdep, DEBUG_VM, KFENCE, DEBUG_PAGEALLOC,
# ...), which finds locking and memory bugs the normal kernel lets pass, and
# the "arm64" lane (configs/*.config and configs/arm64/*.config, cross-built
# with Debian's gcc-aarch64-linux-gnu and booted under qemu-system-aarch64).
# Each lane has its own build directory and staged modules; the source tree
# and the ccache are shared. use_lane sets:
#   LANE, KBUILD (O= build output), KMODS (staged modules), LANE_CONFIGS
#   (fragments, later ones override earlier ones), LANE_TIME_FACTOR (how
#   much slower its guests are; test timeouts are multiplied by it),
#   LANE_ARCH (x86_64 or arm64), KIMAGE (the kernel image the guests boot),
#   KIMAGE_TARGET (its make target) and KMAKE_ARGS (ARCH=, CROSS_COMPILE=, -j).
use_lane() {
    case "$1" in
        normal) KBUILD=$VMR_CACHE/build KMODS=$VMR_CACHE/modules LANE_TIME_FACTOR=1 LANE_ARCH=x86_64
                LANE_CONFIGS=("$REPO"/configs/*.config "$REPO"/configs/x86_64/*.config) ;;
        debug) KBUILD=$VMR_CACHE/build-debug KMODS=$VMR_CACHE/modules-debug LANE_TIME_FACTOR=3 LANE_ARCH=x86_64
                LANE_CONFIGS=("$REPO"/configs/*.config "$REPO"/configs/x86_64/*.config "$REPO"/configs/debug/*.config) ;;
        # An arm64 guest under TCG on an x86_64 host runs about half as fast as an x86_64 one.
        arm64) KBUILD=$VMR_CACHE/build-arm64 KMODS=$VMR_CACHE/modules-arm64 LANE_TIME_FACTOR=2 LANE_ARCH=arm64
                LANE_CONFIGS=("$REPO"/configs/*.config "$REPO"/configs/arm64/*.config) ;;
        # clang 19 (LLVM=-19): Rust in this kernel allows KASAN only with clang. Generic KASAN,
        # inline, on the normal lane's options (configs/kasan/ says why not the debug lane's).
        kasan) KBUILD=$VMR_CACHE/build-kasan KMODS=$VMR_CACHE/modules-kasan LANE_TIME_FACTOR=3 LANE_ARCH=x86_64
                LANE_CONFIGS=("$REPO"/configs/*.config "$REPO"/configs/x86_64/*.config "$REPO"/configs/kasan/*.config) ;;
        *) die "unknown lane '$1' (normal, debug, arm64 or kasan)" ;;
    esac
    case $LANE_ARCH in
        x86_64) KIMAGE=$KBUILD/arch/x86/boot/bzImage KIMAGE_TARGET=bzImage
                KMAKE_ARGS=(ARCH=x86_64 -j"$(nproc)") ;;
        arm64) KIMAGE=$KBUILD/arch/arm64/boot/Image KIMAGE_TARGET=Image
                KMAKE_ARGS=(ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- -j"$(nproc)") ;;
    esac
    [ "$1" != kasan ] || KMAKE_ARGS+=(LLVM=-19)
    LANE=$1
    # Scripts started from here (configure.sh from build.sh) build the same lane.
    export VMR_LANE=$1
}
use_lane "${VMR_LANE:-normal}"

# The Debian mirror this machine is already configured with, read from its
# apt sources (deb822 .sources or one-line .list). Never hard-coded.
debian_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        uri=$(awk '
            /^[[:space:]]*$/ { if (u != "" && s ~ /(^| )(bookworm|trixie|stable)( |$)/) { print u; exit } u = ""; s = ""; next }
            /^URIs:/ { u = $2 }
            /^Suites:/ { $1 = ""; s = $0 }
            END { if (u != "" && s ~ /(^| )(bookworm|trixie|stable)( |$)/) print u }' "$f" | head -n1)
        [ -n "$uri" ] && { echo "${uri%/}"; return 0; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i+1) ~ /^(bookworm|trixie|stable)$/) { print $i; exit } } }' "$f")
        [ -n "$uri" ] && { echo "${uri%/}"; return 0; }
    done
    return 1
}

# Private apt state for one extra suite: its own sources, lists and cache,
# so the machine's apt configuration is never touched. With --with-system the
# machine's own sources are read too (needed to install with dependencies).
# Usage: private_apt [--with-system] SUITE -- apt-get args...
private_apt() {
    local parts=/dev/null
    if [ "$1" = --with-system ]; then parts=/etc/apt/sources.list.d; shift; fi
    local suite=$1; shift; [ "${1:-}" = -- ] && shift
    local mirror dir
    mirror=$(debian_mirror) || die "cannot find a Debian mirror in this machine's apt sources"
    local tag=only; [ "$parts" = /dev/null ] || tag=sys
    dir=$VMR_CACHE/apt/$suite-$tag
    mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/etc/preferences.d"
    {
        printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' "$mirror" "$suite"
        [ "$parts" != /dev/null ] && [ -r /etc/apt/sources.list ] && cat /etc/apt/sources.list
        true
    } >"$dir/etc/sources.list"
    apt-get -o Dir::Etc::SourceList="$dir/etc/sources.list" \
        -o Dir::Etc::SourceParts="$parts" \
        -o APT::Sandbox::User=root \
        -o Dir::Etc::Preferences="$dir/etc/preferences" \
        -o Dir::Etc::PreferencesParts="$dir/etc/preferences.d" \
        -o Dir::State::Lists="$dir/lists" \
        -o Dir::Cache::Archives="$dir/archives" \
        -o Dir::Cache::pkgcache="$dir/pkgcache.bin" \
        -o Dir::Cache::srcpkgcache="$dir/srcpkgcache.bin" \
        -o APT::Get::List-Cleanup=0 \
        "$@"
}

# Where the guests find what they need, all on the host filesystem they see:
# the two drivers' modules of the current lane, vmctl and vmem-status, and the
# lane's time factor; VMR_RELAY says that run-guest.sh's ttyS1 relay is there.
# Prints "VAR=value ..." for `export` in a guest command
# line.
# (The host's vmctl stays the x86_64 build; an arm64 guest gets the tools
# cross-built for it by scripts/build-tools.sh.)
VMCTL_BIN=$REPO/tools/vmctl/target/release/vmctl
VMEM_STATUS_BIN=$REPO/tools/vmem-status/target/release/vmem-status
# The Rust target the guest's user space runs on.
guest_rust_target() {
    case $LANE_ARCH in x86_64) echo x86_64-unknown-linux-gnu ;; arm64) echo aarch64-unknown-linux-gnu ;; esac
}
guest_tool() { # NAME: the tool's binary for the current lane's guests
    if [ "$LANE_ARCH" = x86_64 ]; then
        echo "$REPO/tools/$1/target/release/$1"
    else
        echo "$REPO/tools/$1/target/$(guest_rust_target)/release/$1"
    fi
}
guest_env() {
    local kver moddir
    kver=$(cat "$KBUILD/include/config/kernel.release")
    moddir=$KMODS/lib/modules/$kver/kernel/drivers/virtio
    echo "VMR_KO_RUST=$moddir/virtio_mem_rust/virtio_mem_rust.ko VMR_KO_C=$moddir/virtio_mem.ko VMR_KO_PIN=$KMODS/vmr_pin_page.ko VMCTL=$(guest_tool vmctl) VMEM_STATUS=$(guest_tool vmem-status) VMR_TIME_FACTOR=$LANE_TIME_FACTOR VMR_KERNEL=$KIMAGE VMR_ARCH=$LANE_ARCH VMR_RELAY=1"
}
