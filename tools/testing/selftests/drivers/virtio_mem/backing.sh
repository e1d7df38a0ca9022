#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: the guest never touches unplugged memory. The region is backed
# by a file on the host's tmpfs, which the host only allocates where it is
# written; the test sees that file read-only at $VMR_BACKING (9p passes the
# host's block count through). After a partial plug (4G+130M of 16G) and a
# workload that fills most of the plugged memory, the file's allocated bytes
# stay within the plugged size plus a small margin.
set -u
source "$(dirname "$0")/lib.sh"
requires movable env:VMR_BACKING vm0:16G

margin=$((64 << 20))

ktap_header 5
ktap_check "the backing file is visible" test -f "$VMR_BACKING"
ktap_check "load virtio_mem_rust" load_bound "$VMR_KO_RUST"
vmctl set-size vm0 4G+130M >/dev/null
size=$(vmctl wait vm0 4G+130M --wait-timeout-s 300 2>&1 | tail -n1)
ktap_eq "plugged 4G+130M of the 16G region (a block with one 2M sub-block)" \
    "$(to_bytes 4G+130M)" "$size"
ktap_diag "allocated on the host after plugging: $(backing_allocated) bytes"

# Use the plugged memory: a 3G file on the guest's own tmpfs.
mkdir -p /tmp/vmr-fill && mount -t tmpfs -o size=4G none /tmp/vmr-fill
ktap_check "a 3G workload fits in the plugged memory" \
    dd if=/dev/zero of=/tmp/vmr-fill/f bs=1M count=3072 status=none
sync
a=$(backing_allocated)
note="allocated on the host with the workload: ${a:-unknown} bytes (plugged $size, margin $margin)"
ktap_diag "$note"
ktap_check "allocated bytes stay within the plugged size plus $((margin >> 20))M" \
    test -n "$a" -a "${a:-0}" -le $((size + margin))
rm -f /tmp/vmr-fill/f; umount /tmp/vmr-fill
ktap_finish
