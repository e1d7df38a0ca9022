#!/usr/bin/env bash
# Guest side of scripts/demo.sh. Environment: VMR_KO_RUST, VMCTL, VMEM_STATUS,
# VMR_DEMO_REQUESTED, VMR_DEMO_INTERACTIVE.
source "$(dirname "$0")/../tools/testing/selftests/drivers/virtio_mem/lib.sh"

# The device's view (QMP), the guest's, and the driver's (vmem-status).
show() {
    vmctl info vm0 | head -3
    grep MemTotal /proc/meminfo
    grep 'System RAM (virtio_mem)' /proc/iomem
    vmem_status
}

echo "--- loading virtio_mem_rust (requested at boot: $VMR_DEMO_REQUESTED)"
insmod "$VMR_KO_RUST"
vdev=$(virtio_mem_devices)
vmem_status wait "$vdev" --size "$VMR_DEMO_REQUESTED" --timeout 300 >/dev/null
dmesg | grep "virtio_mem_rust virtio"
show
if [ -n "${VMR_DEMO_INTERACTIVE:-}" ]; then
    echo
    echo "VMCTL=$VMCTL: try \$VMCTL resize vm0 4G, or exit to leave."
    exec bash -i
fi
# 4G+130M plugs one 2M sub-block of the last memory block; 2G unplugs.
for step in 4G 4G+130M 8G 2G; do
    echo
    echo "--- asking for $step"
    vmctl set-size vm0 "$step" >/dev/null
    # Blocks in poll() on the driver's activity attribute until the size is reached.
    vmem_status wait "$vdev" --size "$step" --timeout 300
    show
done
