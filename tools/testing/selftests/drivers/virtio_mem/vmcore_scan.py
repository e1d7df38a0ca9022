#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Reads the whole crash dump (/proc/vmcore, an ELF64 core file) the way a
dump tool copies it, and reports on a physical range [START, END):

  bytes=N         bytes read from all PT_LOAD segments (the whole dump)
  range_bytes=N   bytes of segments inside the range
  markers=N       occurrences of MARKER there
  zero_pages=N    4K pages there that read as zeroes

and, given a second range [HOLE_START, HOLE_END) (memory that must not be
touched), the same for it:

  hole_bytes=N        bytes of segments inside it: the dump lists them, so a
                      dump tool reads them
  hole_zero_pages=N   4K pages there that read as zeroes

Usage: vmcore_scan.py MARKER START END [HOLE_START HOLE_END [VMCORE]]
"""
import struct
import sys

PT_LOAD = 1
CHUNK = 1 << 20


def scan(data, addr, start, end, marker=None):
    """(bytes, markers, zero pages) of data, read at addr, inside [start, end)."""
    if not (addr < end and addr + len(data) > start):
        return 0, 0, 0
    part = data[max(start - addr, 0):min(end - addr, len(data))]
    zero = bytes(4096)
    zeroes = sum(1 for i in range(0, len(part), 4096) if part[i:i + 4096] == zero)
    return len(part), part.count(marker) if marker else 0, zeroes


def main():
    marker = sys.argv[1].encode()
    start, end = int(sys.argv[2], 0), int(sys.argv[3], 0)
    hole = (int(sys.argv[4], 0), int(sys.argv[5], 0)) if len(sys.argv) > 5 else None
    path = sys.argv[6] if len(sys.argv) > 6 else "/proc/vmcore"
    total = in_range = markers = zero_pages = hole_bytes = hole_zero_pages = 0
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
                n, m, z = scan(data, addr, start, end, marker)
                in_range += n
                markers += m
                zero_pages += z
                if hole:
                    n, _, z = scan(data, addr, hole[0], hole[1])
                    hole_bytes += n
                    hole_zero_pages += z
                done += len(data)
                total += len(data)
    report = "bytes=%d range_bytes=%d markers=%d zero_pages=%d" % (
        total, in_range, markers, zero_pages)
    if hole:
        report += " hole_bytes=%d hole_zero_pages=%d" % (hole_bytes, hole_zero_pages)
    print(report)


if __name__ == "__main__":
    main()
