#!/usr/bin/env python3
"""Write User-Mode Linux cow files of every header version, from the layout
UML's cow_user.c reads (uml_mkcow writes only version 3), for t-cow.sh and
the fuzz corpus; uml_moo, which reads all of them, is the independent check.

  cow-craft.py VERSION OUT BACKING SIZE MTIME [SECTOR:BYTE ...]
VERSION: 1, 2, 3 or 3b (the unpacked 64-bit layout of 3); ALIGN=n in the
environment sets version 3's alignment (4096).  Each SECTOR:BYTE writes the
sector filled with BYTE and sets its bit.
"""
import os
import struct
import sys

MAGIC = 0x4F4F4F4D


def name_field(name, length):
    raw = name.encode()
    assert len(raw) < length
    return raw + bytes(length - len(raw))


def round_up(v, a):
    return (v + a - 1) // a * a


def craft(version, backing, size, mtime, align=4096, sector=512):
    if version == "1":       # host order (little-endian), 256-byte name
        head = struct.pack("<II", MAGIC, 1) + name_field(backing, 256) + \
            struct.pack("<IQi", mtime, size, sector)
        bitmap_off, bitmap_len = len(head), (size + sector - 1) // (8 * sector)
        data_off = round_up(bitmap_off + bitmap_len, sector)
    elif version == "2":     # big-endian, 4096-byte name
        head = struct.pack(">II", MAGIC, 2) + name_field(backing, 4096) + \
            struct.pack(">IQi", mtime, size, sector)
        bitmap_off, bitmap_len = len(head), (size + sector - 1) // (8 * sector)
        data_off = round_up(bitmap_off + bitmap_len, sector)
    else:
        if version == "3":
            head = struct.pack(">IIIQIII", MAGIC, 3, mtime, size, sector, align, 0) + \
                name_field(backing, 4096)
        else:                # 3b: mtime a 64-bit field, padding to 8 bytes
            head = struct.pack(">IIqQIII", MAGIC, 3, mtime << 32, size, sector, align, 0) + \
                name_field(backing, 4096) + bytes(4)
        bitmap_off = round_up(len(head), align)
        bitmap_len = ((size + sector - 1) // sector + 7) // 8
        data_off = round_up(bitmap_off + bitmap_len, align)
    out = bytearray(data_off + size)
    out[:len(head)] = head
    return out, bitmap_off, data_off


def main():
    version, out_name, backing, size, mtime = sys.argv[1:6]
    size, mtime = int(size, 0), int(mtime, 0)
    img, bitmap_off, data_off = craft(version, backing, size, mtime,
                                      int(os.environ.get("ALIGN", "4096")))
    for w in sys.argv[6:]:
        sec, byte = (int(x, 0) for x in w.split(":"))
        img[data_off + sec * 512:data_off + (sec + 1) * 512] = bytes([byte]) * 512
        img[bitmap_off + sec // 8] |= 1 << (sec % 8)
    with open(out_name, "wb") as f:
        f.write(img)


if __name__ == "__main__":
    main()
