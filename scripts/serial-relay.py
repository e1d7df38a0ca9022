#!/usr/bin/env python3
"""Host side of the guest's second serial port (ttyS1), for tests that put the
guest to sleep (see tools/testing/selftests/drivers/virtio_mem/tmpfs_root.sh).

virtme-ng's virtio-serial ports, which carry the script's output and the
guest's QMP port, do not come back after a sleep cycle; the 8250 UART does.
This relay connects to QEMU's socket for ttyS1 and
- appends every line the guest writes to LOG (run-guest.sh prints it when the
  guest is gone), except
- `vmr-host: ARGS...`: runs `vmctl --socket QMP ARGS...` on the host and sends
  the output back, then `vmr-host-done: RC`;
- `vmr-host-wake`: the guest is about to sleep; wake it up, as a host would:
  from suspend-to-RAM (QEMU's run state `suspended`) with QMP `system_wakeup`,
  from suspend-to-idle (the guest armed ttyS1 as a wake-up source) with a
  line `vmr-wake` on the port; until the guest writes its next line;
- `vmr-exit: N` (kept in LOG): the test is over; QEMU is told to quit (the
  guest's own power-off is not relied on: a debug guest was seen to hang in
  it after its last sleep).

Usage: serial-relay.py SOCKET QMP VMCTL LOG
"""
import os
import shlex
import socket
import subprocess
import sys
import threading
import time


def main():
    sock_path, qmp, vmctl, log_path = sys.argv[1:5]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # QEMU creates the socket when it starts: wait for it (as long as QEMU
    # might take to start under a loaded host).
    for _ in range(600):
        try:
            s.connect(sock_path)
            break
        except OSError:
            time.sleep(0.1)
    else:
        return 1
    buf = b""
    send = threading.Lock()
    awake = threading.Event()
    awake.set()

    def vmctl_run(*args):
        return subprocess.run([vmctl, "--socket", qmp] + list(args),
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, check=False)

    def waker():
        # Give the guest time to get to sleep; then nudge it every second.
        for _ in range(300):
            if awake.wait(2):
                return
            status = vmctl_run("raw", '{"execute": "query-status"}').stdout
            if b'"suspended"' in status:
                vmctl_run("raw", '{"execute": "system_wakeup"}')
            with send:
                s.sendall(b"vmr-wake\n")

    with open(log_path, "ab", buffering=0) as log:
        while True:
            data = s.recv(4096)
            if not data:
                return 0
            buf += data.replace(b"\r", b"")
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                awake.set()
                if line == b"vmr-host-wake":
                    awake.clear()
                    threading.Thread(target=waker, daemon=True).start()
                    continue
                if line.startswith(b"vmr-exit: "):
                    log.write(line + b"\n")
                    time.sleep(1)
                    vmctl_run("raw", '{"execute": "quit"}')
                    continue
                if not line.startswith(b"vmr-host: "):
                    log.write(line + b"\n")
                    continue
                args = shlex.split(line[len(b"vmr-host: "):].decode())
                res = vmctl_run(*args)
                out = res.stdout.replace(b"\r", b"")
                if out and not out.endswith(b"\n"):
                    out += b"\n"
                with send:
                    s.sendall(out + b"vmr-host-done: %d\n" % res.returncode)


if __name__ == "__main__":
    sys.exit(main())
