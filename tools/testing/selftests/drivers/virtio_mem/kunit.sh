#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: the KUnit suites of the abstractions (built in) and of the
# driver (in the module) pass. Each suite is run through debugfs; its KTAP
# results are passed on as subtests, and every case it plans must have
# reported "ok" (a suite that ran no case fails).
set -u
source "$(dirname "$0")/lib.sh"
requires

# suite:minimum number of cases
suites=(rust_kernel_virtio:5 rust_kernel_power:1 rust_kernel_memory_hotplug_region:4 \
    virtio_mem_rust_config:6 virtio_mem_rust_protocol:6 virtio_mem_rust_plug:4 \
    virtio_mem_rust_mode:2 virtio_mem_rust_sbm:8 virtio_mem_rust_bbm:2 virtio_mem_rust_status:2 \
    virtio_mem_rust_error:1 virtio_mem_rust_backoff:3 virtio_mem_rust_power:1 \
    virtio_mem_rust_fault:3 rust_kernel_workqueue_arc:2)
ktap_header $(( ${#suites[@]} + 1 ))
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
# It runs with no device (scripts/test.sh's no-device guest) or with a fresh
# one (the kselftest guest), which the driver must then bind.
if [ -n "$(virtio_mem_devices)" ]; then load=load_bound; else load=load_unbound; fi
ktap_check "load virtio_mem_rust" $load "$VMR_KO_RUST"
for entry in "${suites[@]}"; do
    s=${entry%%:*} want=${entry##*:}
    dir=/sys/kernel/debug/kunit/$s
    if [ ! -w "$dir/run" ]; then
        ktap_fail "KUnit suite $s is registered"
        continue
    fi
    echo 1 >"$dir/run"
    sed 's/^/    /' "$dir/results"
    plan=$(sed -n 's/^ *1\.\.\([0-9]\+\)$/\1/p' "$dir/results" | tail -n1)
    cases_ok=$(grep -cE '^    ok [0-9]+ ' "$dir/results" || true)
    cases_bad=$(grep -cE '^    not ok [0-9]+ ' "$dir/results" || true)
    if grep -qE "^ok [0-9]+ $s\$" "$dir/results" && [ "$cases_bad" = 0 ] && \
        [ "${plan:-0}" -ge "$want" ] && [ "$cases_ok" = "$plan" ]; then
        ktap_pass "KUnit suite $s: $cases_ok of $plan cases ok"
    else
        note="$s: plan ${plan:-none} (at least $want expected), $cases_ok ok, $cases_bad not ok"
        ktap_diag "$note"
        ktap_fail "KUnit suite $s"
    fi
done
# Leave the guest as found, for the next script of a kselftest run.
rmmod virtio_mem_rust 2>/dev/null
ktap_finish
