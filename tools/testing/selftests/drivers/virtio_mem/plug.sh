#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Guest test: virtio_mem_rust plugs the size requested at boot when it probes,
# then follows the device as it grows: after every resize over QMP the
# device's plugged size reaches the request exactly, also when it is not a
# multiple of the 128M memory block (4G+130M: a block with one 2M sub-block
# plugged; 4G+200M: more sub-blocks plugged into that online block), and the
# guest's view agrees: MemTotal grew by that much, and the "System RAM
# (virtio_mem)" ranges in /proc/iomem cover it in whole memory blocks.
#
# Expects vm0: a 16G region with 2M blocks and 1G requested at boot, and
# memhp_default_state=online_movable. Ends by unbinding with memory plugged.
set -u
source "$(dirname "$0")/lib.sh"

steps=(1G 4G 4G+130M 4G+200M 16G)
block=$(( 0x$(cat /sys/devices/system/memory/block_size_bytes) ))
ktap_header $(( 1 + ${#steps[@]} * 4 + 5 ))
base_kb=$(memtotal_kb)
vdev=$(virtio_mem_devices)
ktap_check "load virtio_mem_rust" insmod "$VMR_KO_RUST"

first=1
for step in "${steps[@]}"; do
    request=$step expect=$(to_bytes "$step")
    blocks_bytes=$(( (expect + block - 1) / block * block ))
    if [ $first = 1 ]; then
        first=0
        ktap_diag "requested at boot: $request"
    else
        vmctl set-size vm0 "$request" >/dev/null
    fi
    t0=$SECONDS
    size=$(vmctl wait vm0 "$expect" --wait-timeout-s 300 2>&1 | tail -n1)
    ktap_eq "$request: device plugged size" "$expect" "$size"
    kb=$(wait_memtotal_kb $((base_kb + expect / 1024)) 120)
    ktap_eq "$request: MemTotal grew by the plugged size (kB)" $((expect / 1024)) $((kb - base_kb))
    ktap_eq "$request: System RAM (virtio_mem) in /proc/iomem (whole blocks)" "$blocks_bytes" "$(virtio_mem_ram_bytes)"
    ktap_eq "$request: requested size unchanged" "$(to_bytes "$request")" "$(qmp_info vm0 requested-size)"
    ktap_diag "$request: converged in $((SECONDS - t0)) s"
done

# Unbind with memory plugged: it stays in use, so the region stays reserved
# and binding again is refused rather than unplugging memory in use.
ktap_check "unload with memory plugged" rmmod virtio_mem_rust
ktap_check "the driver says the memory stays added" eval "dmesg | grep -q 'virtio_mem_rust $vdev: .* stay added to the system'"
ktap_check "the region stays reserved" grep -q " : $vdev\$" /proc/iomem
insmod "$VMR_KO_RUST"
ktap_eq "binding again is refused" "" "$(bound_driver "$vdev")"
splats=$(kernel_splats)
[ -z "$splats" ] || ktap_diag "$splats"
ktap_eq "no kernel warnings or oopses" "" "$splats"
ktap_finish
