#!/usr/bin/env bash
# Remove the kernel build output (the next build is cold). Keeps the kernel
# source, the ccache and the host tools.
source "$(dirname "$0")/common.sh"
rm -rf "$KBUILD" "$VMR_CACHE/modules"
log "removed $KBUILD"
