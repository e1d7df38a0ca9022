#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Waits until a virtio_mem_rust device's `activity` attribute reads WANT,
woken only by poll() (sysfs_notify), never by a timer: exits 0 with the number
of wake-ups once it does, 1 if no wake-up comes within TIMEOUT seconds.

Usage: poll_activity.py DEVICE WANT TIMEOUT [READY_FILE]
READY_FILE is created once the first read armed the poll, so that a test can
trigger the change only after that."""
import os
import select
import sys
import time

dev, want, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
ready = sys.argv[4] if len(sys.argv) > 4 else None
path = f"/sys/bus/virtio/devices/{dev}/virtio_mem/activity"
fd = os.open(path, os.O_RDONLY)
os.read(fd, 64)  # arms the notification
if ready:
    open(ready, "w").close()
p = select.poll()
p.register(fd, select.POLLPRI | select.POLLERR)
deadline = time.monotonic() + timeout
wakeups = 0
seen = []
while True:
    left = deadline - time.monotonic()
    if left <= 0 or not p.poll(left * 1000):
        print(f"no wake-up within {timeout} s; seen: {seen}", file=sys.stderr)
        sys.exit(1)
    wakeups += 1
    os.lseek(fd, 0, os.SEEK_SET)
    value = os.read(fd, 64).decode().strip()
    seen.append(value)
    if value == want:
        print(f"{wakeups} wake-ups: {' '.join(seen)}")
        sys.exit(0)
