# shellcheck shell=bash
# Toolchain settings for kernel make: Rust, bindgen, libclang, ccache.
# Sourced after common.sh.
LIBCLANG_PATH=$(ls -d "$LIBCLANG_VENV"/lib/python3*/site-packages/clang/native 2>/dev/null | head -n1)
[ -n "$LIBCLANG_PATH" ] || die "libclang 18 not installed: run scripts/setup-host.sh"
export LIBCLANG_PATH
mkdir -p "$CCACHE_DIR"
export CCACHE_BASEDIR=$VMR_CACHE
export CCACHE_SLOPPINESS=time_macros,include_file_mtime,include_file_ctime
# Debian's ccache symlinks make "gcc" go through ccache for both the kernel
# and host programs (a "ccache gcc" CC would break rustc's -Clinker=$(HOSTCC)).
export PATH=/usr/lib/ccache:$PATH
# KMAKE_ARGS (ARCH=, CROSS_COMPILE=, -j) come with the lane: use_lane in common.sh.
