#!/usr/bin/env bash
# Build the guest tools (vmctl, vmem-status) for the guests of a lane. For
# x86_64 they are the host's own release builds; for arm64 they are
# cross-built (rustup's aarch64-unknown-linux-gnu standard library, linked by
# Debian's aarch64-linux-gnu-gcc against the cross glibc, which is bookworm's
# as in the guest's root).
# Usage: build-tools.sh [--lane normal|debug|arm64]
source "$(dirname "$0")/common.sh"
[ "${1:-}" = --lane ] && use_lane "$2"

target=$(guest_rust_target)
args=(--release --quiet)
if [ "$LANE_ARCH" != x86_64 ]; then
    args+=(--target "$target")
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
fi
for tool in vmctl vmem-status; do
    (cd "$REPO/tools/$tool" && cargo build "${args[@]}") || die "building $tool for $target failed"
    [ -x "$(guest_tool "$tool")" ] || die "no $(guest_tool "$tool") after the build"
done
log "guest tools built for $target"
