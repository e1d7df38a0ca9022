#!/usr/bin/env bash
# The main job: boot a guest with virtio_mem_rust and a virtio-mem device and
# show it follow resizes. With a terminal, the guest loads the driver, shows
# what it found and leaves you in a shell; resize the device from the host
# with the vmctl command printed below (or from the guest shell:
# $VMCTL resize vm0 SIZE). Without a terminal it runs a scripted demo.
source "$(dirname "$0")/common.sh"

vmctl=$VMCTL_BIN
qmp=$VMR_CACHE/run/qmp-demo.sock
size=${VMR_DEMO_SIZE:-16G} requested=${VMR_DEMO_REQUESTED:-1G}
genv="$(guest_env) VMR_DEMO_REQUESTED=$requested"

cat <<MSG
Booting a guest (TCG, 2G of boot memory, new memory onlined movable) with a
virtio-mem-pci device "vm0": region $size, requested $requested. From another
terminal on the host:
  $vmctl --socket $qmp info vm0
  $vmctl --socket $qmp resize vm0 4G
MSG

guest=("$REPO/scripts/run-guest.sh" --qmp "$qmp" --append memhp_default_state=online_movable
       --vmem "size=$size,requested=$requested,id=vm0")
if [ -t 0 ] && [ -t 1 ]; then
    exec "${guest[@]}" -- "cd $REPO && export $genv VMR_DEMO_INTERACTIVE=1 && scripts/demo-guest.sh"
fi
exec "${guest[@]}" -- "cd $REPO && export $genv && scripts/demo-guest.sh" </dev/null
