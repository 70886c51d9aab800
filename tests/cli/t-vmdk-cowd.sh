#!/bin/bash
# VMDK3 / COWD (vmfsSparse) and seSparse extents against qemu-img 7.2, which
# reads both and creates neither: images built here from the layout (see
# src/formats/vmdk/cowd.c and sesparse.c) read, shown, mapped and checked
# alike; delta disks over a base qemu-img made; hostile headers and tables
# refused with qemu's messages, within 2 s and 1 GiB; qemu's crash on a
# granularity of 0 is an error here.
. "$(dirname "$0")/lib.sh"
need_cmd python3

# ---- the builders: mk.py cowd|se DIR NAME CAPACITY [field=value ...]
cat > "$SCRATCH/mk.py" <<'PY'
import struct, sys

def descriptor(ctype, ext_type, cap, extent, parent=None):
    cid, pcid = ("2b2b2b2b", parent[1]) if parent else ("1a1a1a1a", "ffffffff")
    s = "# Disk DescriptorFile\nversion=1\nCID=%s\nparentCID=%s\n" % (cid, pcid)
    s += 'createType="%s"\n' % ctype
    if parent:
        s += 'parentFileNameHint="%s"\n' % parent[0]
    s += '\n# Extent description\nRW %d %s "%s"\n\n# The Disk Data Base\n#DDB\n\n' % (cap, ext_type, extent)
    s += 'ddb.virtualHWVersion = "4"\nddb.adapterType = "lsilogic"\n'
    return s

def pattern(k, n):
    return bytes(((k * 37 + i) % 251) + 1 for i in range(n))

def cowd(cap, gran, opts, grains):
    gd_entries = opts.get("gd_entries", (cap + 4096 * gran - 1) // (4096 * gran))
    gd_sector = opts.get("gd_sector", 4)
    hdr = b"COWD" + struct.pack("<10I", 1, 3, opts.get("capacity", cap), opts.get("gran", gran),
                                 gd_sector, gd_entries, 0, 0, 0, 0)
    img = bytearray(hdr.ljust(512, b"\0"))
    nxt = 4 + (gd_entries * 4 + 511) // 512
    gd = [0] * gd_entries
    img = img.ljust(nxt * 512, b"\0")
    for g in grains if gd_entries else []:
        i = g // 4096
        if not gd[i]:
            gd[i] = nxt
            nxt += 32
    img = img.ljust(nxt * 512, b"\0")
    for k, g in enumerate(grains if gd_entries else []):
        struct.pack_into("<I", img, gd[g // 4096] * 512 + (g % 4096) * 4, nxt)
        img += pattern(k, gran * 512)
        nxt += gran
    struct.pack_into("<%dI" % gd_entries, img, 4 * 512, *gd)
    for off, val in opts.get("poke32", []):
        struct.pack_into("<I", img, off, val)
    return img

def se(cap, opts, entries):
    ngt = max(1, (cap + 4096 * 8 - 1) // (4096 * 8))
    gds = max(1, (ngt * 8 + 511) // 512)
    h = dict(magic=0xcafebabe, version=0x0000000200000001, capacity=cap, grain=8, gt_size=64,
             flags=0, r1=0, r2=0, r3=0, r4=0, vol_off=1, vol_size=1, jh_off=2, jh_size=2,
             j_off=4, j_size=4, gd_off=8, gd_size=gds, gt_off=8 + gds, gt_total=64 * ngt,
             fb_off=0, fb_size=0, bm_off=0, bm_size=0, grains_off=8 + gds + 64 * ngt, grains_size=0)
    names = list(h)
    vol = dict(vmagic=0xcafecafe, free=0, txn=0, replay=0)
    for k, v in opts.items():
        if k in h: h[k] = v
        if k in vol: vol[k] = v
    img = bytearray(struct.pack("<26Q", *[h[n] for n in names]).ljust(512, b"\0"))
    img += struct.pack("<4Q", *vol.values()).ljust(512, b"\0")
    gd_off, gt_off, data_off = 8 * 512, (8 + gds) * 512, (8 + gds + 64 * ngt) * 512
    img = img.ljust(data_off, b"\0")
    for i in range(ngt):
        struct.pack_into("<Q", img, gd_off + 8 * i, 0x1000000000000000 | i)
    idx = 0
    for g, kind in entries:
        if kind == "data":
            e = 0x3000000000000000 | ((idx & 0xfff) << 48) | (idx >> 12)
            img += pattern(idx + 11, 4096)
            idx += 1
        else:
            e = {"zero": 0x2000000000000000, "unmapped": 0x1000000000000000}.get(kind, kind)
        struct.pack_into("<Q", img, gt_off + 8 * g, e)
    for off, val in opts.get("poke64", []):
        struct.pack_into("<Q", img, off, val)
    return img

kind, d, name, cap = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4], 0)
opts = {}
for a in sys.argv[5:]:
    k, v = a.split("=", 1)
    if k in ("poke32", "poke64"):
        opts.setdefault(k, []).append(tuple(int(x, 0) for x in v.split(":")))
    elif k == "parent":
        opts[k] = v.split(":")
    else:
        opts[k] = int(v, 0)
parent = opts.pop("parent", None)
if kind == "cowd":
    gran = opts.pop("granularity", 8)
    last = cap // gran - 1
    grains = opts.pop("grains", None)
    glist = [0, 3, 4097 if cap // gran > 4097 else 1, last] if grains is None else [0, 5]
    ext = name + "-delta.vmdk" if parent else name + "-flat.cowd"
    open(d + "/" + ext, "wb").write(cowd(cap, gran, opts, sorted(set(glist))))
    open(d + "/" + name + ".vmdk", "w").write(descriptor("vmfsSparse", "VMFSSPARSE", cap, ext, parent))
else:
    last = cap // 8 - 1
    glist = [(0, "data"), (1, "zero"), (2, "unmapped"), (5, "data"), (last, "data")]
    if "entry5" in opts:
        glist[3] = (5, opts.pop("entry5"))
    ext = name + "-sesparse.vmdk"
    open(d + "/" + ext, "wb").write(se(cap, opts, glist))
    open(d + "/" + name + ".vmdk", "w").write(descriptor("seSparse", "SESPARSE", cap, ext, parent))
PY
mk() { python3 "$SCRATCH/mk.py" "$1" "$IN" "${@:2}" || fail "building $2"; }

# ---- well-formed images
mk cowd c1 8192 granularity=8            # 4 MiB, 4 KiB grains
mk cowd c2 40000 granularity=1           # vmfsSparse's own 512-byte grains, two tables
mk se s1 8192                            # 4 MiB: data, zero, unmapped, unallocated grains
mk se s2 80000                           # three grain tables
for f in c1 c2 s1 s2; do
    same_ro "info $f" info "$f.vmdk"
    same_ro "info json $f" info --output=json "$f.vmdk"
    same_ro "map $f" map "$f.vmdk"
    same_ro "map json $f" map --output=json "$f.vmdk"
    same_ro "compare $f with itself" compare "$f.vmdk" "$f.vmdk"
    same "convert $f to raw" convert -O raw "$f.vmdk" out.raw
    "$QEMU_IMG" convert -O raw "$IN/$f.vmdk" "$SCRATCH/ref.raw"
    "$QIMG" convert -O raw "$IN/$f.vmdk" "$SCRATCH/new.raw"
    check "guest bytes of $f" cmp "$SCRATCH/ref.raw" "$SCRATCH/new.raw"
    same "convert $f to qcow2" convert -O qcow2 "$f.vmdk" out.qcow2
done
# the data really is where the layout says (not all zeros by accident)
"$QIMG" convert -O raw "$IN/s1.vmdk" "$SCRATCH/s1.raw"
check "s1 has data" test "$(head -c 4096 "$SCRATCH/s1.raw" | tr -d '\0' | wc -c)" -gt 0

# a COWD file as the image: qemu reads the CID in its second sector
cp "$IN/c1-flat.cowd" "$IN/bare.cowd"
same_ro "COWD without a descriptor" info bare.cowd
printf 'CID=0000abcd\nparentCID=ffffffff\n' | dd of="$IN/bare.cowd" bs=512 seek=1 conv=notrunc status=none
same_ro "COWD with a CID" info bare.cowd
same_ro "COWD with a CID, map" map --output=json bare.cowd

# seSparse is read-only in qemu: every read-write open is refused
same "seSparse resize" resize s1.vmdk 8M
same "seSparse write" convert -n -O vmdk c1.vmdk s1.vmdk

# ---- delta disks over a monolithicSparse base made by qemu-img
"$QEMU_IMG" create -q -f vmdk "$IN/base.vmdk" 4M
"$QEMU_IO" -c "write -P 0x61 0 4M" "$IN/base.vmdk" >/dev/null
bcid=$(sed -n 's/^CID=//p' "$IN/base.vmdk" | head -1 | tr -d '\0')
[ -n "$bcid" ] || bcid=$(strings "$IN/base.vmdk" | sed -n 's/^CID=//p' | head -1)
mk cowd cd 8192 granularity=8 grains=1 "parent=base.vmdk:$bcid"
mk se sd 8192 "parent=base.vmdk:$bcid"
for f in cd sd; do
    same_ro "info $f (delta)" info --backing-chain "$f.vmdk"
    same_ro "map $f (delta)" map --output=json "$f.vmdk"
    same "convert $f (delta) to raw" convert -O raw "$f.vmdk" out.raw
done
"$QIMG" convert -O raw "$IN/cd.vmdk" "$SCRATCH/cd.raw"
check "cowd delta shows the base" test "$(head -c 8192 "$SCRATCH/cd.raw" | tail -c 4096 | tr -d 'a' | wc -c)" = 0

# ---- writes (qemu writes COWD extents): the extent files come out the same
python3 -c 'import random, sys; r = random.Random(3); b = bytearray(4 << 20)
for o in (0, 5000, 70000, 1 << 20, (4 << 20) - 700): b[o:o + 600] = r.randbytes(600)
open(sys.argv[1], "wb").write(b)' "$IN/w.raw"
for f in c1 c2 cd; do
    same "convert -n -S 512 into $f" convert -n -S 512 -O vmdk w.raw "$f.vmdk"
    ext=$(sed -n 's/^RW [0-9]* VMFSSPARSE "\(.*\)"$/\1/p' "$IN/$f.vmdk")
    check "convert -n into $f: the extent as qemu's" cmp "$SCRATCH/run.ref/work/$ext" "$SCRATCH/run.new/work/$ext"
    check "convert -n into $f: guest data" "$QEMU_IMG" compare -q "$SCRATCH/run.new/work/$f.vmdk" \
        "$SCRATCH/run.ref/work/$f.vmdk"
done
# a directory entry without a grain table: qemu 7.2 writes the table over
# the header (sector 0) and the image is lost; qimg refuses the write
mk cowd nogt 65536 granularity=8 poke32=2052:0
truncate -s 32M "$SCRATCH/w32.raw"
printf 'data in the second table' | dd of="$SCRATCH/w32.raw" bs=1 seek=$((20 << 20)) conv=notrunc status=none
"$QIMG" convert -n -O vmdk "$SCRATCH/w32.raw" "$IN/nogt.vmdk" 2>"$SCRATCH/nogt.err"
check "no grain table: refused" grep -q "Operation not supported" "$SCRATCH/nogt.err"
same_ro "no grain table: the image still opens" info nogt.vmdk

# ---- check (once the vmdk driver checks at all)
mk cowd cbad 8192 granularity=8 poke32=$((5 * 512 + 12)):99999   # grain 3 past EOF
mk se sbad 8192 entry5=0x4000000000000000
mk se sbad2 8192 entry5=0x0000000000000007
if "$QIMG" check "$IN/base.vmdk" 2>&1 | grep -q "does not support checks"; then
    SKIP_WHAT="$TEST_NAME check" skip "the vmdk driver has no check yet"
else
    same_ro "check c1" check c1.vmdk
    same_ro "check s1" check s1.vmdk
    same_ro "check: COWD grain after EOF" check cbad.vmdk
    same_ro "check json: COWD grain after EOF" check --output=json cbad.vmdk
    same_ro "check: seSparse entry of an unknown type" check sbad.vmdk
fi
same "read: seSparse entry of an unknown type" convert -O raw sbad.vmdk out.raw
same "read: seSparse unallocated entry with bits" convert -O raw sbad2.vmdk out.raw

# ---- hostile headers: qemu's messages and exit codes, in bounded time and memory
bounded() {   # NAME ARGS...: both tools alike, and qimg within 2 s CPU and 1 GiB
    local name=$1; shift
    same "$name" "$@"
    (cd "$IN" && ulimit -v 1048576 -t 2 && "$QIMG" "$@" >/dev/null 2>&1; echo $? >"$SCRATCH/b.rc")
    local rc; rc=$(cat "$SCRATCH/b.rc")
    check "$name: an exit code, not a signal ($rc)" test "$rc" -lt 128
}
hostile() {   # NAME KIND CAP ARGS...
    local name=$1; shift
    mk "$1" h "${@:2}"
    bounded "$name: info" info h.vmdk
    bounded "$name: convert" convert -O raw h.vmdk out.raw
}
hostile "COWD granularity over 1 GiB" cowd 8192 gran=0x200001
# qemu 7.2 divides by zero here too (the table's span overflows 32 bits)
mk cowd h 8192 gran=0x200000
bounded "COWD granularity 1 GiB: info" info h.vmdk
(cd "$IN" && ulimit -v 1048576 -t 2 && "$QIMG" convert -O raw h.vmdk "$SCRATCH/g.raw"; echo $? >"$SCRATCH/g.rc")
expect_eq "COWD granularity 1 GiB: qimg reads it" "$(cat "$SCRATCH/g.rc")" 0
hostile "COWD directory of 32 Mi + 1 entries" cowd 8192 gd_entries=0x2000001
hostile "COWD directory of 32 Mi entries past EOF" cowd 8192 gd_entries=0x2000000
hostile "COWD directory of 0 entries" cowd 8192 gd_entries=0
hostile "COWD directory far past EOF" cowd 8192 gd_sector=0x7fffffff
hostile "COWD capacity beyond the directory" cowd 8192 capacity=0xffffffff
hostile "COWD grain table past EOF" cowd 8192 poke32=2048:0x7ffffff0
hostile "seSparse magic" se 8192 magic=1
hostile "seSparse version" se 8192 version=3
hostile "seSparse grain size" se 8192 grain=16
hostile "seSparse grain table size" se 8192 gt_size=32
hostile "seSparse flags" se 8192 flags=1
hostile "seSparse reserved" se 8192 r2=5
hostile "seSparse header padding" se 8192 poke64=400:1
hostile "seSparse volatile magic" se 8192 vmagic=5
hostile "seSparse journal to replay" se 8192 replay=1
hostile "seSparse volatile padding" se 8192 poke64=600:1
hostile "seSparse volatile header past EOF" se 8192 vol_off=0x100000
hostile "seSparse volatile header offset overflow" se 8192 vol_off=0xfffffffffffffff
hostile "seSparse directory of 32 Mi + 64 entries" se 8192 gd_size=0x80001
hostile "seSparse directory size cut to 32 bits" se 8192 gd_size=0x20000000
hostile "seSparse directory past EOF" se 8192 gd_off=0xffffffffffff
hostile "seSparse directory entry of another kind" se 8192 poke64=4096:0x2000000000000000
hostile "seSparse grain table index over 32 bits" se 8192 poke64=4096:0x10000000ffffffff
hostile "seSparse grains far away" se 8192 grains_off=0x7fffffffffffff

# qemu 7.2 divides by zero on a COWD granularity of 0 (SIGFPE): qimg shows
# the same info and fails reads with an error
mk cowd z 8192 gran=0
"$QEMU_IMG" info "$IN/z.vmdk" | grep -v "cluster size: 0" >"$SCRATCH/z.ref"
"$QIMG_AS_QEMU" info "$IN/z.vmdk" >"$SCRATCH/z.new"
check "COWD granularity 0: info as qemu (but the extent's cluster size of 0)" cmp "$SCRATCH/z.ref" "$SCRATCH/z.new"
(cd "$IN" && ulimit -v 1048576 -t 2 && "$QIMG" convert -O raw z.vmdk "$SCRATCH/z.raw" 2>"$SCRATCH/z.err"; echo $? >"$SCRATCH/z.rc")
expect_eq "COWD granularity 0: read fails (exit 1)" "$(cat "$SCRATCH/z.rc")" 1
check "COWD granularity 0: a message" grep -q "Input/output error" "$SCRATCH/z.err"
