#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
# Workload for the unplug-under-pressure test: holds N MiB of anonymous memory
# filled with a known pattern, writes "ready" to READY_FILE, waits until
# STOP_FILE exists, then checks every MiB. Exits 0 if the data is intact.
import os
import sys
import time

mib, ready_file, stop_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
pattern = os.urandom(1 << 20)
held = [bytearray(pattern) for _ in range(mib)]
with open(ready_file, "w") as f:
    f.write("ready\n")
while not os.path.exists(stop_file):
    time.sleep(0.5)
bad = sum(1 for chunk in held if chunk != pattern)
print(f"hold_memory: {mib} MiB held, {bad} MiB changed")
sys.exit(1 if bad else 0)
