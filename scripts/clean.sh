#!/usr/bin/env bash
# Remove the kernel build output of both lanes (the next builds are cold).
# Keeps the kernel source, the ccache and the host tools.
source "$(dirname "$0")/common.sh"
for lane in normal debug; do
    use_lane $lane
    rm -rf "$KBUILD" "$KMODS"
    log "removed $KBUILD"
done
