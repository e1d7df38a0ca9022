#!/usr/bin/env bash
# Guest side of `make bench` (see scripts/bench.sh): times plugging with the
# C driver and with virtio_mem_rust in the same guest, on devices of their own.
set -u
source "$(dirname "$0")/../tools/testing/selftests/drivers/virtio_mem/lib.sh"

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# The virtio device (virtioN) whose region starts at QMP device $1's memaddr,
# as driver $2 logged it.
vdev_of() {
    local want v
    want=$(qmp_info "$1" memaddr)
    for v in $(virtio_mem_devices); do
        [ "$(logged_by "$2" "$v" "start address")" = "$(printf '0x%x' "$want")" ] && echo "$v"
    done
}

insmod "$VMR_KO_C"
for q in r8 r16; do
    echo "$(vdev_of "$q" virtio_mem)" >/sys/bus/virtio/drivers/virtio_mem/unbind
done
insmod "$VMR_KO_RUST"
for q in c8 c16; do [ "$(bound_driver "$(vdev_of "$q" virtio_mem)")" = virtio_mem ] || { echo "bench: $q not on the C driver"; exit 1; }; done
for q in r8 r16; do [ "$(bound_driver "$(vdev_of "$q" virtio_mem_rust)")" = virtio_mem_rust ] || { echo "bench: $q not on virtio_mem_rust"; exit 1; }; done

# time_plug QID SIZE: ms until the device's size and MemTotal both show SIZE more.
time_plug() {
    local bytes t0 base size kb
    bytes=$(to_bytes "$2") base=$(memtotal_kb)
    t0=$(now_ms)
    vmctl set-size "$1" "$2" >/dev/null
    # Polled: the size-change events come at most once a second, late by up to that.
    size=$(vmctl wait "$1" "$2" --poll-ms 100 --wait-timeout-s 600 2>&1 | tail -n1)
    kb=$(wait_memtotal_kb $((base + bytes / 1024)) 600)
    [ "$size" = "$bytes" ] && [ "$kb" = $((base + bytes / 1024)) ] || { echo "bench: $1 did not reach $2"; return 1; }
    echo $(( $(now_ms) - t0 ))
}

# $1 says who goes first in this guest: "c" (C, then Rust, for both sizes) or
# "r". Each run adds memory to the guest, so the later run of a pair finds more
# memory there (about 10% slower); bench.sh runs one guest of each order.
# Prints "SIZE C_MS RUST_MS" per size.
for size in 8G 16G; do
    if [ "${1:-c}" = c ]; then
        c=$(time_plug "c${size%G}" "$size") || exit 1
        r=$(time_plug "r${size%G}" "$size") || exit 1
    else
        r=$(time_plug "r${size%G}" "$size") || exit 1
        c=$(time_plug "c${size%G}" "$size") || exit 1
    fi
    echo "result $size $c $r"
done
