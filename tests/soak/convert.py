#!/usr/bin/env python3
"""Randomized comparison of `qimg convert` with `qemu-img convert`.

Builds random qcow2 images and backing chains with qemu-img and qemu-io
(cluster sizes 512 B to 2 MiB, compat 0.10, extended L2, zstd, compressed
layers; writes, zero writes, discards, zero-filled data), converts each with
random options (-O raw/qcow2, -c, -S, -m, -W, -B, target cluster size and
format options) by both tools, half the time from a cold page cache, and
reports any qimg output that does not read as its source, any difference in
exit status, any qimg output that `qemu-img check` flags, and (without -W)
any qcow2 map that differs.  A qemu-img output that does not read as its
source is listed too (seen once, with -W) but does not fail the run.
Failing cases are kept under SOAK_DIR/fail-SEED-CASE.

    tests/soak/convert.py [SEED [SECONDS]]      (make soak: 2 seeds, 300 s)

Environment: QIMG (default build/qimg), QEMU_IMG, QEMU_IO, SOAK_DIR
(default /var/tmp/qimg-soak).  Exits 1 when qimg's content, exit status or
check differed; map differences are listed but known to occur (see
docs/architecture.md, "Known layout differences").
"""
import os
import random
import shutil
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QIMG = os.environ.get("QIMG", os.path.join(TOP, "build", "qimg"))
QEMU = os.environ.get("QEMU_IMG", "qemu-img")
QIO = os.environ.get("QEMU_IO", "qemu-io")
DIR = os.environ.get("SOAK_DIR", "/var/tmp/qimg-soak")


def run(*args, check=True, cwd=None):
    r = subprocess.run(args, capture_output=True, text=True, cwd=cwd)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s %s" % (" ".join(args), r.stdout, r.stderr))
    return r


def uncache(*names):
    """Drop the files' clean pages from the page cache (no root needed)."""
    for name in names:
        fd = os.open(name, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def make_layer(rng, path, size, backing=None):
    opts = ["cluster_size=%d" % rng.choice([512, 4096, 65536, 65536, 2 << 20])]
    v2 = rng.random() < 0.2
    if v2:
        opts.append("compat=0.10")
    elif rng.random() < 0.2 and not opts[0].endswith(("=512", "=4096")):
        opts.append("extended_l2=on")
    if not v2 and rng.random() < 0.2:
        opts.append("compression_type=zstd")
    args = [QEMU, "create", "-q", "-f", "qcow2", "-o", ",".join(opts)]
    if backing:
        args += ["-b", os.path.basename(backing), "-F", "qcow2"]
    run(*args, path, str(size))
    cmds = []
    for _ in range(rng.randint(1, 12)):
        off = rng.randrange(0, size // 512) * 512
        length = min(rng.choice([512, 4096, 65536, 300000, 1 << 20, 3 << 20]), size - off)
        length -= length % 512
        if length <= 0:
            continue
        k = rng.random()
        if k < 0.6:
            cmds += ["-c", "write -P %d %d %d" % (rng.randint(1, 255), off, length)]
        elif k < 0.8:
            cmds += ["-c", "write -z %d %d" % (off, length)]
        elif k < 0.9:
            cmds += ["-c", "discard %d %d" % (off, length)]
        else:
            cmds += ["-c", "write -P 0 %d %d" % (off, length)]
    if cmds:
        run(QIO, "-f", "qcow2", *cmds, path)
    if backing is None and not v2 and rng.random() < 0.2:
        run(QEMU, "convert", "-c", "-O", "qcow2", path, path + ".c")
        os.replace(path + ".c", path)


def convert_options(rng, depth, base):
    fmt = rng.choice(["raw", "qcow2", "qcow2"])
    opts = ["-O", fmt]
    if fmt == "qcow2":
        if rng.random() < 0.3:
            opts.append("-c")
        o = []
        if rng.random() < 0.3:
            o.append("cluster_size=%d" % rng.choice([4096, 65536, 1 << 20]))
        if rng.random() < 0.1:
            o.append("compat=0.10")
        elif rng.random() < 0.1 and "-c" not in opts:
            o.append("extended_l2=on")
        if rng.random() < 0.1:
            o.append("refcount_bits=%d" % rng.choice([1, 8, 64]))
        if o:
            opts += ["-o", ",".join(o)]
        # -B names the source's own backing file: the content must match
        if depth == 1 and rng.random() < 0.3:
            opts += ["-B", base, "-F", "qcow2"]
    if rng.random() < 0.3:
        opts += ["-S", str(rng.choice([0, 512, 4096, 65536]))]
    if rng.random() < 0.3:
        opts += ["-m", str(rng.randint(1, 16))]
    if rng.random() < 0.2:
        opts.append("-W")
    return fmt, opts


def one_case(rng, work, seed, case):
    size = rng.choice([1 << 20, 5 << 20, 17 << 20, 33 << 20]) + rng.choice([0, 0, 512, 3584])
    depth = rng.choice([0, 0, 1, 2])
    chain = []
    for i in range(depth + 1):
        path = os.path.join(work, "l%d.qcow2" % i)
        make_layer(rng, path, size, chain[-1] if chain else None)
        chain.append(path)
    fmt, opts = convert_options(rng, depth, "l0.qcow2")
    # sometimes a second source, raw or qcow2, of an odd size: the two are
    # concatenated (no -B then: it would apply to both)
    sources = [chain[-1]]
    if "-B" not in opts and rng.random() < 0.15:
        extra = os.path.join(work, "x.img")
        xsize = rng.choice([1000, 65536 + 512, 3 << 20])
        if rng.random() < 0.5:
            with open(extra, "wb") as f:
                f.write(rng.randbytes(xsize // 2) + bytes(xsize - xsize // 2))
        else:
            run(QEMU, "create", "-q", "-f", "qcow2", extra, str(xsize - xsize % 512 or 512))
            run(QIO, "-f", "qcow2", "-c", "write -P 7 0 %d" % min(xsize - xsize % 512, 65536), extra)
        sources.append(extra)
    ref, new = os.path.join(work, "ref." + fmt), os.path.join(work, "new." + fmt)
    r1 = run(QEMU, "convert", *opts, *sources, ref, check=False, cwd=work)
    if rng.random() < 0.5:
        uncache(*chain)
    r2 = run(QIMG, "convert", *opts, *sources, new, check=False, cwd=work)
    what = "seed %d case %d: size %d, depth %d, convert %s %s" % (
        seed, case, size, depth, " ".join(opts), " ".join(os.path.basename(x) for x in sources))
    if r1.returncode != r2.returncode:
        return "exit status", what + "\n  qemu-img: %s  qimg: %s" % (r1.stderr, r2.stderr)
    if r1.returncode:
        return None
    # -B only ever names the source's own backing file: the output must read
    # as the source does
    if len(sources) == 1:
        c = run(QEMU, "compare", chain[-1], new, check=False)
        if c.returncode != 0:
            return "content", what + "\n  " + c.stdout.strip()
        c = run(QEMU, "compare", chain[-1], ref, check=False)
        if c.returncode != 0:   # seen once with -W: qemu-img's own output was wrong
            return "qemu-img content", what + "\n  " + c.stdout.strip()
    else:
        c = run(QEMU, "compare", ref, new, check=False)
        if c.returncode != 0:
            return "content", what + " (two sources)\n  " + c.stdout.strip()
    if fmt == "qcow2":
        k = run(QEMU, "check", new, check=False)
        if k.returncode != 0:
            return "check", what + "\n  " + k.stdout.strip()
        if "-W" not in opts:
            m1 = run(QEMU, "map", "--output=json", ref, check=False).stdout
            m2 = run(QEMU, "map", "--output=json", new, check=False).stdout
            if m1 != m2:
                return "map", what
    elif open(ref, "rb").read() != open(new, "rb").read():
        return "raw bytes", what
    return None


def soak(one_case, prefix, tolerated=()):
    """Run one_case(rng, work, seed, case) for SECONDS (argv: SEED SECONDS);
    keep failing cases as DIR/PREFIXfail-SEED-CASE.  Exit status 1 when a
    difference not in `tolerated` was found."""
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 300
    rng = random.Random(seed)
    os.makedirs(DIR, exist_ok=True)
    work = os.path.join(DIR, "%swork-%d" % (prefix, seed))
    counts, serious, case, start = {}, 0, 0, time.time()
    while time.time() - start < seconds:
        case += 1
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        found = one_case(rng, work, seed, case)
        if found:
            kind, what = found
            counts[kind] = counts.get(kind, 0) + 1
            serious += kind not in tolerated
            print("%s differs: %s" % (kind, what), flush=True)
            shutil.copytree(work, os.path.join(DIR, "%sfail-%d-%d" % (prefix, seed, case)),
                            dirs_exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    print("seed %d: %d cases, %s" % (seed, case, ", ".join(
        "%d %s" % (v, k) for k, v in sorted(counts.items())) or "no differences"))
    return 1 if serious else 0


if __name__ == "__main__":
    sys.exit(soak(one_case, "", tolerated=("map", "qemu-img content")))
