#!/usr/bin/env python3
"""Randomized comparison of rebase, commit and compare with qemu-img.

Builds a random backing chain (tests/soak/convert.py's layers), copies it
twice, and runs the same operation with each tool on its own copy:
- rebase (safe) onto a lower layer, or with -b "" (standalone);
- commit of the top into a lower layer (-b), sometimes with -d;
- compare of two random layers (the output and exit status must be equal).
After rebase the top must read as it did before; after commit the base must
read as the top did; qemu-img check must be clean; exit statuses must agree.
Failing cases are kept under SOAK_DIR/chains-fail-SEED-CASE.

    tests/soak/chains.py [SEED [SECONDS]]
"""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert import QEMU, QIMG, make_layer, run, soak  # noqa: E402


def raw_export(path, out):
    run(QEMU, "convert", "-O", "raw", path, out)


def same_content(a, b):
    return run(QEMU, "compare", a, b, check=False).returncode == 0


def one_case(rng, work, seed, case):
    size = rng.choice([1 << 20, 5 << 20, 17 << 20]) + rng.choice([0, 0, 512])
    depth = rng.randint(1, 4)
    os.makedirs(os.path.join(work, "orig"))
    layers = []
    for i in range(depth + 1):
        path = os.path.join(work, "orig", "l%d.qcow2" % i)
        make_layer(rng, path, size, layers[-1] if layers else None)
        layers.append(path)
    names = [os.path.basename(p) for p in layers]
    top = names[-1]
    before = os.path.join(work, "top-before.raw")
    raw_export(layers[-1], before)
    for tool in ("ref", "new"):
        shutil.copytree(os.path.join(work, "orig"), os.path.join(work, tool))
    op = rng.choice(["rebase", "rebase", "commit", "commit", "compare"])
    if op == "rebase":
        k = rng.randint(-1, depth - 2)       # -1: no backing file at all
        args = ["rebase", "-b", names[k] if k >= 0 else ""]
        if k >= 0:
            args += ["-F", "qcow2"]
        args.append(top)
    elif op == "commit":
        k = rng.randint(0, depth - 1)
        args = ["commit", "-q", "-b", names[k]] + (["-d"] if rng.random() < 0.3 else []) + [top]
    else:
        a, b = rng.sample(names, 2)
        args = ["compare"] + (["-s"] if rng.random() < 0.3 else []) + [a, b]
    r1 = run(QEMU, *args, check=False, cwd=os.path.join(work, "ref"))
    r2 = run(QIMG, *args, check=False, cwd=os.path.join(work, "new"))
    what = "seed %d case %d: depth %d, %s" % (seed, case, depth, " ".join(repr(a) if a == "" else a for a in args))
    if r1.returncode != r2.returncode:
        return "exit status", what + "\n  qemu-img %d: %s  qimg %d: %s" % (
            r1.returncode, r1.stdout + r1.stderr, r2.returncode, r2.stdout + r2.stderr)
    if op == "compare":
        if (r1.stdout, r1.stderr) != (r2.stdout, r2.stderr):
            return "output", what + "\n  qemu-img: %r\n  qimg:     %r" % (r1.stdout + r1.stderr, r2.stdout + r2.stderr)
        return None
    if r1.returncode:
        return None
    d = os.path.join(work, "new")
    if op == "rebase":
        if not same_content(before, os.path.join(d, top)):
            return "content", what + ": the top no longer reads as before"
        checked = [top]
    else:
        base = args[3]
        if not same_content(before, os.path.join(d, base)):
            return "content", what + ": the base does not read as the top did"
        checked = [base]
    for name in checked:
        k = run(QEMU, "check", os.path.join(d, name), check=False)
        if k.returncode != 0:
            return "check", what + ": " + name + "\n  " + k.stdout.strip()
    for name in names:
        i1 = run(QEMU, "info", "--output=json", "-U", os.path.join(work, "ref", name), check=False).stdout
        i2 = run(QEMU, "info", "--output=json", "-U", os.path.join(d, name), check=False).stdout
        strip = lambda s: "\n".join(l for l in s.splitlines() if "actual-size" not in l and "filename" not in l)
        if strip(i1) != strip(i2):
            return "info", what + ": " + name
    return None


if __name__ == "__main__":
    sys.exit(soak(one_case, "chains-"))
