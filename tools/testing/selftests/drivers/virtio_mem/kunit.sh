#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: the KUnit suites of the abstractions (built in, run at boot)
# and of the driver (run when the module loads) all pass. Their KTAP results
# are read from debugfs and passed on as subtests.
set -u
source "$(dirname "$0")/lib.sh"

suites=(rust_kernel_virtio virtio_mem_rust_config)
ktap_header $(( ${#suites[@]} + 1 ))
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
ktap_check "load virtio_mem_rust (runs its KUnit suites)" insmod "$VMR_KO_RUST"
for s in "${suites[@]}"; do
    f=/sys/kernel/debug/kunit/$s/results
    if [ ! -r "$f" ]; then
        ktap_fail "KUnit suite $s ran"
        continue
    fi
    sed 's/^/    /' "$f"
    if grep -q "^not ok" "$f" || ! grep -qE "^ok [0-9]+ $s" "$f"; then
        ktap_fail "KUnit suite $s"
    else
        ktap_pass "KUnit suite $s ($(grep -cE '^    ok ' "$f") cases)"
    fi
done
ktap_finish
