#!/usr/bin/python3
"""Write a dmg (UDIF) image from a raw file, from the format's description:
the data fork (the chunks' bytes), the block tables ("mish" blocks: a
204-byte header, then 40-byte chunk entries: type, comment, first sector,
sector count, offset and length of the stored bytes, the last entry of
type 0xffffffff), kept in an XML property list (resource-fork / blkx /
Data) or in a classic resource fork, and the 512-byte "koly" trailer.

usage: dmg-craft.py IN OUT PLAN [--rsrc] [--parts N] [--comment]
PLAN: comma-separated TYPE:SECTORS items used in turn until IN is covered;
TYPE one of raw, zero, ignore, zlib, bzip2, adc, lzfse (lzfse chunks hold
junk: only for refusal tests).  --parts N splits the disk into N blkx
blocks (partitions); --comment adds a comment chunk to each block."""
import base64
import bz2
import plistlib
import struct
import sys
import zlib

TYPES = {"zero": 0x00000000, "raw": 0x00000001, "ignore": 0x00000002, "adc": 0x80000004,
         "zlib": 0x80000005, "bzip2": 0x80000006, "lzfse": 0x80000007}
COMMENT, LAST = 0x7ffffffe, 0xffffffff


def adc_compress(data):
    """Greedy ADC: copies of 3..18 bytes from up to 1024 back in two bytes,
    of 4..67 bytes from up to 65536 back in three, literal runs of up to
    128 bytes after a one-byte header."""
    out, lit, i, last = bytearray(), bytearray(), 0, {}

    def flush():
        for k in range(0, len(lit), 128):
            part = lit[k:k + 128]
            out.append(0x80 | (len(part) - 1))
            out.extend(part)
        lit.clear()

    while i < len(data):
        key = bytes(data[i:i + 3])
        cand = last.get(key)
        last[key] = i
        best, dist = 0, 0
        if cand is not None and len(key) == 3 and i - cand <= 65536:
            dist = i - cand
            while best < 67 and i + best < len(data) and data[i + best] == data[i + best - dist]:
                best += 1
        if best >= 4 or (best >= 3 and dist <= 1024):
            flush()
            if best <= 18 and dist <= 1024:
                out += bytes([((best - 3) << 2) | ((dist - 1) >> 8), (dist - 1) & 0xff])
            else:
                out += bytes([0x40 | (best - 4)]) + struct.pack(">H", dist - 1)
            i += best
        else:
            lit.append(data[i])
            i += 1
    flush()
    return bytes(out)


def encode(kind, data):
    if kind == "raw":
        return data
    if kind in ("zero", "ignore"):
        return b""
    if kind == "zlib":
        return zlib.compress(data)
    if kind == "bzip2":
        return bz2.compress(data)
    if kind == "adc":
        return adc_compress(data)
    if kind == "lzfse":
        return b"bvx2" + bytes(16)
    raise SystemExit("unknown chunk type " + kind)


def mish(first_sector, sectors, chunks, data_offset=0):
    head = b"mish" + struct.pack(">IQQQII", 1, first_sector, sectors, data_offset, 0, 0)
    head += bytes(24) + struct.pack(">II", 2, 32) + bytes(128)
    head += struct.pack(">I", len(chunks))
    return head + b"".join(struct.pack(">IIQQQQ", *c) for c in chunks)


def resource_fork(blocks):
    """A classic resource fork holding the blocks as 'blkx' resources."""
    data = b"".join(struct.pack(">I", len(b)) + b for b in blocks)
    refs, pos = b"", 0
    for n, b in enumerate(blocks):
        refs += struct.pack(">hHI", n, 0xffff, pos) + bytes(4)
        pos += 4 + len(b)
    types = struct.pack(">H", 0) + b"blkx" + struct.pack(">HH", len(blocks) - 1, 2 + 8)
    map_ = bytes(16) + bytes(4) + bytes(2) + bytes(2) + struct.pack(">HH", 28, 28 + len(types) + len(refs))
    map_ += types + refs
    header = struct.pack(">IIII", 256, 256 + len(data), len(data), len(map_))
    return header.ljust(256, b"\0") + data + map_


def koly(data_len, rsrc_off, rsrc_len, xml_off, xml_len, sectors):
    k = bytearray(512)
    k[0:4] = b"koly"
    struct.pack_into(">III", k, 4, 4, 512, 1)
    struct.pack_into(">QQQQQ", k, 16, 0, 0, data_len, rsrc_off, rsrc_len)
    struct.pack_into(">II", k, 56, 1, 1)
    struct.pack_into(">QQ", k, 216, xml_off, xml_len)
    struct.pack_into(">I", k, 488, 1)
    struct.pack_into(">Q", k, 492, sectors)
    return bytes(k)


def main():
    args = sys.argv[1:]
    rsrc = "--rsrc" in args
    comment = "--comment" in args
    parts = int(args[args.index("--parts") + 1]) if "--parts" in args else 1
    src, dst, plan = args[0], args[1], [p.split(":") for p in args[2].split(",")]
    disk = open(src, "rb").read()
    if len(disk) % 512:
        disk += bytes(512 - len(disk) % 512)
    total = len(disk) // 512
    body, blocks = bytearray(), []
    per_part = -(-total // parts)
    sector, step = 0, 0
    for p in range(parts):
        first, end = sector, min(total, sector + per_part)
        chunks = [(COMMENT, 0, 0, 0, 0, 0)] if comment else []
        while sector < end:
            kind, count = plan[step % len(plan)][0], int(plan[step % len(plan)][1])
            step += 1
            count = min(count, end - sector)
            if kind in ("zero", "ignore") and any(disk[sector * 512:(sector + count) * 512]):
                kind = "raw"       # only zeros may be left out
            stored = encode(kind, disk[sector * 512:(sector + count) * 512])
            chunks.append((TYPES[kind], 0, sector - first, count, len(body), len(stored)))
            body += stored
            sector += count
        chunks.append((LAST, 0, end - first, 0, len(body), 0))
        blocks.append(mish(first, end - first, chunks))
    if rsrc:
        fork = resource_fork(blocks)
        tail = koly(len(body), len(body), len(fork), 0, 0, total)
        out = bytes(body) + fork + tail
    else:
        plist = {"resource-fork": {"blkx": [
            {"Attributes": "0x0050", "CFName": "part %d" % n, "Data": b, "ID": str(n - 1),
             "Name": "part %d" % n} for n, b in enumerate(blocks)]}}
        xml = plistlib.dumps(plist)
        tail = koly(len(body), 0, 0, len(body), len(xml), total)
        out = bytes(body) + xml + tail
    open(dst, "wb").write(out)


if __name__ == "__main__":
    main()
