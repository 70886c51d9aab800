#!/usr/bin/python3
"""Write a cloop version 4 image from a raw file, from the format's
description (cloop.h of cloop 4.x): a 136-byte header (preamble with
"V4.0", block size, block count), n+1 64-bit big-endian pointers whose top
4 bits name the block's method (0 zlib, 1 none, 2 xz, 3 lz4, 4 lzo1x), and
the blocks; the header and table first, or both at the end ("last").

usage: cloop-craft.py IN OUT BLOCK_SIZE METHODS [first|last]
METHODS: comma-separated method names used for the blocks in turn.
lz4 and lzo1x blocks are written as literal runs (valid streams that the
libraries decode; python has no encoder for them)."""
import lzma
import struct
import sys
import zlib

PREAMBLE = b"#!/bin/sh\n#V4.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"
METHOD = {"zlib": 0, "none": 1, "xz": 2, "lz4": 3, "lzo1x": 4}


def lz4_literals(data):
    """One LZ4 block made of a single literal run."""
    n = len(data)
    out = bytearray([min(n, 15) << 4])
    if n >= 15:
        rest = n - 15
        while rest >= 255:
            out.append(255)
            rest -= 255
        out.append(rest)
    return bytes(out) + data


def lzo_literals(data):
    """An LZO1X stream: one literal run, then the end marker."""
    n = len(data)
    if n <= 238:
        out = bytearray([17 + n])
    else:
        # a first-byte literal run of t + 3 bytes: 0, then 255 per zero
        # byte, then the remainder, t = 15 + ...
        t = n - 3 - 15
        out = bytearray([0])
        while t > 255:
            out.append(0)
            t -= 255
        out.append(t)
    return bytes(out) + data + b"\x11\x00\x00"


def encode(method, block):
    if method == "zlib":
        return zlib.compress(block, 9)
    if method == "none":
        return block
    if method == "xz":
        return lzma.compress(block, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    if method == "lz4":
        return lz4_literals(block)
    if method == "lzo1x":
        return lzo_literals(block)
    raise SystemExit("unknown method " + method)


def main():
    src, dst, bs, methods = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",")
    where = sys.argv[5] if len(sys.argv) > 5 else "first"
    data = open(src, "rb").read()
    if len(data) % bs:
        data += bytes(bs - len(data) % bs)
    n = len(data) // bs
    header = PREAMBLE.ljust(128, b"\0") + struct.pack(">II", bs, n)
    blocks = [(methods[i % len(methods)], encode(methods[i % len(methods)], data[i * bs:(i + 1) * bs]))
              for i in range(n)]
    pos = len(header) + 8 * (n + 1) if where == "first" else 0
    table = b""
    for name, b in blocks:
        table += struct.pack(">Q", METHOD[name] << 60 | pos)
        pos += len(b)
    table += struct.pack(">Q", pos)
    body = b"".join(b for _, b in blocks)
    with open(dst, "wb") as f:
        if where == "first":
            f.write(header + table + body)
        else:
            f.write(body + table + header)


main()
