#!/usr/bin/env python3
"""Deterministic input images for bench/run.sh (the same seed gives the
same bytes on every machine).

  gen.py sparse PATH SIZE DATA [--seed N] [--fill-holes]
      a raw file of SIZE bytes holding about DATA bytes of pseudo-random
      data in scattered extents (64 KiB..1 MiB, 64 KiB aligned) and holes
      elsewhere; --fill-holes writes the holes as zeros (same content,
      fully allocated)
  gen.py dense PATH SIZE [--seed N]
      SIZE bytes of pseudo-random data, no holes
  gen.py frag PATH COUNT [--seed N]
      COUNT data extents of 4..16 KiB separated by holes of 4..64 KiB
  gen.py tree DIR TOTAL [--seed N]
      a directory tree of about TOTAL bytes of pseudo-random data: a few
      thousand files (most 1..64 KiB, some 64 KiB..4 MiB, a few of
      16..128 MiB) in two levels of directories, plus symlinks and fixed
      mtimes

Sizes take K, M, G suffixes (powers of 1024).
"""
import argparse
import os
import random

KIB = 1024
MIB = 1024 * KIB
POOL_SIZE = 16 * MIB


def parse_size(text):
    units = {"k": KIB, "m": MIB, "g": 1024 * MIB, "t": 1024 * 1024 * MIB}
    t = text.strip().lower()
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


class Source:
    """Pseudo-random bytes from a seeded pool; each block gets its index
    stamped in so that no two blocks are equal (no accidental dedup)."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.pool = self.rng.randbytes(POOL_SIZE)
        self.counter = 0

    def block(self, length):
        out = bytearray()
        while len(out) < length:
            n = min(length - len(out), MIB)
            start = self.rng.randrange(0, POOL_SIZE - n + 1)
            chunk = bytearray(self.pool[start:start + n])
            self.counter += 1
            stamp = (self.counter | 1 << 63).to_bytes(8, "little")
            chunk[:min(8, n)] = stamp[:min(8, n)]
            out += chunk
        return bytes(out)


def write_at(fd, offset, data):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def fill_zeros(fd, start, end):
    zeros = bytes(MIB)
    while start < end:
        n = min(end - start, MIB)
        write_at(fd, start, zeros[:n])
        start += n


def gen_sparse(path, size, data, seed, fill_holes):
    src = Source(seed)
    slot = MIB
    nslots = size // slot
    slots = src.rng.sample(range(nslots), nslots)
    extents = []
    total = 0
    for s in slots:
        if total >= data:
            break
        length = src.rng.randrange(1, 17) * 64 * KIB
        pos = src.rng.randrange(0, (slot - length) // (64 * KIB) + 1) * 64 * KIB
        extents.append((s * slot + pos, length))
        total += length
    extents.sort()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        cursor = 0
        for off, length in extents:
            if fill_holes:
                fill_zeros(fd, cursor, off)
            write_at(fd, off, src.block(length))
            cursor = off + length
        if fill_holes:
            fill_zeros(fd, cursor, size)
    finally:
        os.close(fd)
    return len(extents), total


def gen_dense(path, size, seed):
    src = Source(seed)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        off = 0
        while off < size:
            n = min(size - off, 4 * MIB)
            write_at(fd, off, src.block(n))
            off += n
    finally:
        os.close(fd)


def gen_frag(path, count, seed):
    src = Source(seed)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        off = 0
        for _ in range(count):
            off += src.rng.randrange(1, 17) * 4 * KIB          # hole
            length = src.rng.randrange(1, 5) * 4 * KIB         # data
            write_at(fd, off, src.block(length))
            off += length
        os.ftruncate(fd, off + 64 * KIB)                       # a final hole
    finally:
        os.close(fd)


def gen_tree(root, total, seed):
    src = Source(seed)
    rng = src.rng
    os.makedirs(root, exist_ok=True)
    dirs = []
    for i in range(16):
        for j in range(rng.randrange(2, 8)):
            d = os.path.join(root, "dir%02d" % i, "sub%d" % j)
            os.makedirs(d, exist_ok=True)
            dirs.append(d)
    done = files = 0
    while done < total:
        r = rng.random()
        if r < 0.90:
            size = rng.randrange(1, 65) * KIB - rng.randrange(0, KIB)
        elif r < 0.995:
            size = rng.randrange(64 * KIB, 4 * MIB)
        else:
            size = rng.randrange(16 * MIB, 128 * MIB)
        size = min(size, total - done)
        path = os.path.join(rng.choice(dirs), "file%05d.bin" % files)
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, 4 * MIB)
                f.write(src.block(n))
                left -= n
        if files % 50 == 0:
            os.symlink(os.path.basename(path), path + ".link")
        done += size
        files += 1
    stamp = 1700000000
    for dp, dns, fns in os.walk(root, topdown=False):
        for n in fns + dns:
            os.utime(os.path.join(dp, n), (stamp, stamp), follow_symlinks=False)
    os.utime(root, (stamp, stamp))
    return files, done


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["sparse", "dense", "frag", "tree"])
    ap.add_argument("path")
    ap.add_argument("args", nargs="+")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fill-holes", action="store_true")
    a = ap.parse_args()
    if a.kind == "sparse":
        n, total = gen_sparse(a.path, parse_size(a.args[0]), parse_size(a.args[1]),
                              a.seed, a.fill_holes)
        print(f"{a.path}: {n} extents, {total} data bytes")
    elif a.kind == "dense":
        gen_dense(a.path, parse_size(a.args[0]), a.seed)
    elif a.kind == "tree":
        n, total = gen_tree(a.path, parse_size(a.args[0]), a.seed)
        print(f"{a.path}: {n} files, {total} data bytes")
    else:
        gen_frag(a.path, int(a.args[0]), a.seed)


if __name__ == "__main__":
    main()
