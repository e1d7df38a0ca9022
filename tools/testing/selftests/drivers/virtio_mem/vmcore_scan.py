#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Reads the whole crash dump (/proc/vmcore, an ELF64 core file) the way a
dump tool copies it, and reports on a physical range [START, END):

  bytes=N         bytes read from all PT_LOAD segments (the whole dump)
  range_bytes=N   bytes of segments inside the range
  markers=N       occurrences of MARKER there
  zero_pages=N    4K pages there that read as zeroes

Usage: vmcore_scan.py MARKER START END [VMCORE]
"""
import struct
import sys

PT_LOAD = 1
CHUNK = 1 << 20


def main():
    marker = sys.argv[1].encode()
    start, end = int(sys.argv[2], 0), int(sys.argv[3], 0)
    path = sys.argv[4] if len(sys.argv) > 4 else "/proc/vmcore"
    total = in_range = markers = zero_pages = 0
    zero = bytes(4096)
    with open(path, "rb", buffering=0) as f:
        ehdr = f.read(64)
        if ehdr[:4] != b"\x7fELF" or ehdr[4] != 2:
            sys.exit("not an ELF64 core")
        phoff, = struct.unpack_from("<Q", ehdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        f.seek(phoff)
        phdrs = [struct.unpack("<IIQQQQQQ", f.read(phentsize)[:56]) for _ in range(phnum)]
        for p_type, _, offset, _, paddr, filesz, _, _ in phdrs:
            if p_type != PT_LOAD:
                continue
            f.seek(offset)
            done = 0
            while done < filesz:
                data = f.read(min(CHUNK, filesz - done))
                if not data:
                    sys.exit("short read at %#x" % (paddr + done))
                addr = paddr + done
                if addr < end and addr + len(data) > start:
                    lo = max(start - addr, 0)
                    hi = min(end - addr, len(data))
                    part = data[lo:hi]
                    in_range += len(part)
                    markers += part.count(marker)
                    for i in range(0, len(part), 4096):
                        if part[i:i + 4096] == zero:
                            zero_pages += 1
                done += len(data)
                total += len(data)
    print("bytes=%d range_bytes=%d markers=%d zero_pages=%d"
          % (total, in_range, markers, zero_pages))


if __name__ == "__main__":
    main()
