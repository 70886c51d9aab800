#!/usr/bin/env python3
"""Every format's parsers under hostile input, within time and memory bounds.

Takes each image in the fuzz seed corpus (tests/fuzz/corpus), derives a fixed
set of damaged copies (header integers set to extreme values, bytes flipped,
the file cut short), and runs qimg's reading commands on each one with 1 GiB
of address space and a time limit.  Each run must end by itself: exit code 0
or 1 (qemu-img's codes; check may also answer 2 or 3), never a signal or the
time limit, and a failure must say why on stderr.

The damage is derived from the file's name only (a seeded generator), so a
failure names a case that reproduces: rerun with HOSTILE_KEEP=DIR to keep the
damaged files.

usage: hostile-bounds.py QIMG CORPUS_DIR SCRATCH_DIR
"""
import hashlib
import os
import random
import resource
import shutil
import subprocess
import sys
import time

MEMORY_LIMIT = 1 << 30          # bytes of address space
TIME_LIMIT = 2.0                # seconds of CPU time per command
WALL_LIMIT = 20.0               # generous: the machine may be busy
MUTANTS_PER_IMAGE = 12
EXTREMES = [0xffffffff, 0x7fffffff, 0x80000000, 0, 1, 0xfffffe00, 0x10000]

# (name, args) with {img} for the image and {out} for a scratch target;
# the format is probed, as a user's command line would.
COMMANDS = [
    ("info", ["info", "{img}"]),
    ("info-json", ["info", "--output=json", "{img}"]),
    ("map", ["map", "--output=json", "{img}"]),
    ("check", ["check", "{img}"]),
    ("dd", ["dd", "if={img}", "of={out}", "bs=64k", "count=16", "-O", "raw"]),
]
# check: 2 corruptions, 3 leaks, 63 a format without checks
ACCEPTED_EXIT = {"check": {0, 1, 2, 3, 63}}


CPU_LIMIT = int(TIME_LIMIT) + 1
OUTPUT_LIMIT = 64 << 20         # output that grows without bound is a defect too


def limits():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT, CPU_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT, OUTPUT_LIMIT))


# The limits are set by util-linux's prlimit, which sets them on itself and
# then runs the command in the same process: a preexec_fn makes Python fork
# its whole interpreter for every one of the ~12,000 runs (15 ms each here,
# against 4 ms for the spawn Python uses otherwise).
PRLIMIT = shutil.which("prlimit")
LIMITED = [PRLIMIT, f"--as={MEMORY_LIMIT}", f"--cpu={CPU_LIMIT}", "--core=0",
           f"--fsize={OUTPUT_LIMIT}", "--"] if PRLIMIT else []


def mutants(name, data):
    """Yield (label, bytes) damaged copies of data, the same every run."""
    rng = random.Random(hashlib.sha256(name.encode()).digest())
    head = min(len(data), 4096)
    if head < 8:
        return
    for i in range(MUTANTS_PER_IMAGE):
        buf = bytearray(data)
        kind = i % 4
        if kind in (0, 1):
            # an aligned integer in the header set to an extreme value
            off = rng.randrange(0, head - 4) & ~3
            val = rng.choice(EXTREMES)
            order = "little" if kind == 0 else "big"
            buf[off:off + 4] = val.to_bytes(4, order)
            yield f"{order}32@{off:#x}={val:#x}", bytes(buf)
        elif kind == 2:
            # a 64-bit field with its high half set (sizes, offsets)
            off = rng.randrange(0, head - 8) & ~7
            order = rng.choice(["little", "big"])
            val = rng.choice([0xffffffffffffffff, 0x7fffffffffff0000,
                              0x0000ffff00000000])
            buf[off:off + 8] = val.to_bytes(8, order)
            yield f"{order}64@{off:#x}={val:#x}", bytes(buf)
        else:
            # the file cut short at a random point
            cut = rng.randrange(1, len(data))
            yield f"cut@{cut:#x}", bytes(buf[:cut])


def run_one(qimg, args, scratch):
    out = os.path.join(scratch, "out.raw")
    try:
        os.unlink(out)
    except FileNotFoundError:
        pass
    with open(os.path.join(scratch, "stdout"), "wb") as so, \
         open(os.path.join(scratch, "stderr"), "wb") as se:
        t0 = time.monotonic()
        try:
            p = subprocess.run(LIMITED + [qimg] + [a.replace("{out}", out) for a in args],
                               stdout=so, stderr=se, stdin=subprocess.DEVNULL,
                               preexec_fn=None if LIMITED else limits,
                               timeout=WALL_LIMIT, cwd=scratch)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        except (OSError, subprocess.SubprocessError) as e:
            rc = f"not started ({e})"
        dt = time.monotonic() - t0
    with open(os.path.join(scratch, "stderr"), "rb") as f:
        err = f.read(4096)
    return rc, dt, err


def main():
    qimg, corpus, scratch = (os.path.abspath(a) for a in sys.argv[1:4])
    keep = os.environ.get("HOSTILE_KEEP")
    failures = 0
    cases = 0
    for name in sorted(os.listdir(corpus)):
        path = os.path.join(corpus, name)
        if not os.path.isfile(path) or name.startswith("codec-"):
            continue
        with open(path, "rb") as f:
            data = f.read()
        bad = []
        for label, buf in mutants(name, data):
            img = os.path.join(scratch, "img")
            with open(img, "wb") as f:
                f.write(buf)
            for cname, args in COMMANDS:
                cases += 1
                rc, dt, err = run_one(qimg, [a.replace("{img}", img) for a in args],
                                      scratch)
                ok_codes = ACCEPTED_EXIT.get(cname, {0, 1})
                why = None
                if rc == "timeout":
                    why = f"still running after {WALL_LIMIT:.0f} s"
                elif isinstance(rc, str):
                    why = rc
                elif rc < 0:
                    why = f"killed by signal {-rc}"
                elif rc not in ok_codes:
                    why = f"exit code {rc}"
                elif rc == 1 and cname != "check" and not err.strip():
                    why = "failed without a message"
                if why:
                    bad.append(f"{label} {cname}: {why}; stderr: "
                               f"{err.decode(errors='replace').strip()[:200]}")
                    if keep:
                        os.makedirs(keep, exist_ok=True)
                        shutil.copy(img, os.path.join(keep, f"{name}.{label}"))
        if bad:
            failures += 1
            print(f"FAIL hostile-bounds {name}")
            for b in bad[:10]:
                print(f"    {b}")
        else:
            print(f"PASS hostile-bounds {name}")
    print(f"# {cases} runs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
