#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
# Sampler for fault_matrix.sh: until STOP_FILE exists, samples what the
# device says is plugged (its config's plugged_size, read live through sysfs
# device_plugged_size), the host's allocated bytes of the region's backing
# file (9p passes the host's block count through), MemTotal, and the driver's
# published state. Then prints one line:
#   HOST_OVER MEMTOTAL_OVER IDLE_SHORT SAMPLES
# HOST_OVER: the most bytes the host file held beyond what the device said is
# plugged; MEMTOTAL_OVER: the most bytes MemTotal held beyond BASE_KB plus
# that; IDLE_SHORT: how often sysfs said idle with plugged_size short of
# requested_size, twice in a row 0.2 s apart (the files are not read at one
# instant). The plugged size is read before and after the others and the
# larger one taken, so that a request completing between the reads does not
# count. While the device is unbound there is nothing to read (nor added).
#
# It creates READY_FILE after its first sample (the test waits for it before
# the fault), and takes one more sample after STOP_FILE appears.
#
# Usage: fault_sampler.py VDEV BACKING BASE_KB STOP_FILE READY_FILE
import os
import sys
import time

vdev, backing, base_kb, stop_file, ready_file = sys.argv[1:6]
base_kb = int(base_kb)
attrs = f"/sys/bus/virtio/devices/{vdev}/virtio_mem"


def attr(name):
    with open(f"{attrs}/{name}") as f:
        return f.read().strip()


def memtotal():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise OSError("no MemTotal")


def idle_short():
    return attr("activity") == "idle" and attr("plugged_size") != attr("requested_size")


host_over = mt_over = None
short = samples = 0
stopping = False
while True:
    # The last round starts after the stop file appeared: the state at the end is sampled too.
    stopping = stopping or os.path.exists(stop_file)
    try:
        s1 = int(attr("device_plugged_size"))
        a = os.stat(backing).st_blocks * 512
        m = memtotal()
        s2 = int(attr("device_plugged_size"))
        s = max(s1, s2)
        if idle_short():
            time.sleep(0.2)
            if idle_short():
                short += 1
    except (OSError, ValueError):
        if stopping:
            break
        time.sleep(0.05)
        continue
    samples += 1
    if samples == 1:
        with open(ready_file, "w") as f:
            f.write("sampling\n")
    host_over = a - s if host_over is None else max(host_over, a - s)
    mt_over = m - base_kb * 1024 - s if mt_over is None else max(mt_over, m - base_kb * 1024 - s)
    if stopping:
        break
    time.sleep(0.05)
print(host_over if host_over is not None else 0, mt_over if mt_over is not None else 0, short, samples)
