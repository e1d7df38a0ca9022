#!/usr/bin/env bash
# The main job: boot a guest with virtio_mem_rust and a virtio-mem device.
# With a terminal, the guest loads the driver, shows what it found and
# leaves you in a shell; resize the device from the host with the vmctl
# command printed below (or from the guest shell: $VMCTL resize vm0 SIZE).
# Without a terminal it runs a scripted demo and exits.
source "$(dirname "$0")/common.sh"

kver=$(cat "$KBUILD/include/config/kernel.release")
ko=$VMR_CACHE/modules/lib/modules/$kver/kernel/drivers/virtio/virtio_mem_rust/virtio_mem_rust.ko
vmctl=$REPO/tools/vmctl/target/release/vmctl
qmp=$VMR_CACHE/run/qmp-demo.sock
size=${VMR_DEMO_SIZE:-16G} requested=${VMR_DEMO_REQUESTED:-1G}

show='echo "--- loading virtio_mem_rust"; insmod '"$ko"'; sleep 1;
dmesg | grep "virtio_mem_rust virtio"; echo "--- the device as QEMU sees it:"; '"$vmctl"' --port-name org.qemu.qmp0 info vm0'

cat <<MSG
Booting a guest (TCG, 2G of boot memory) with a virtio-mem-pci device "vm0":
region $size, requested $requested. From another terminal on the host:
  $vmctl --socket $qmp info vm0
  $vmctl --socket $qmp resize vm0 4G
MSG

if [ -t 0 ] && [ -t 1 ]; then
    exec "$REPO/scripts/run-guest.sh" --qmp "$qmp" --vmem "size=$size,requested=$requested,id=vm0" \
        -- "$show; echo; echo 'VMCTL=$vmctl: try \$VMCTL resize vm0 2G, or exit to leave.'; VMCTL=$vmctl exec bash -i"
fi
exec "$REPO/scripts/run-guest.sh" --qmp "$qmp" --vmem "size=$size,requested=$requested,id=vm0" \
    -- "$show; echo '--- asking QEMU for 2G: requested-size follows; size (plugged) stays until the plug path lands'; $vmctl --port-name org.qemu.qmp0 set-size vm0 2G; sleep 1; $vmctl --port-name org.qemu.qmp0 info vm0" </dev/null
