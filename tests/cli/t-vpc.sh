#!/bin/bash
# The VHD ("vpc") driver: qemu-made dynamic and fixed disks read, shown and
# converted as qemu-img does; the real Virtual PC image; hostile footers and
# dynamic headers refused with qemu's messages.
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

# the footer's checksum: one's complement of the byte sum, field as zero
fix_footer() {   # fix_footer FILE OFFSET-OF-FOOTER
    poke32 "$1" $(($2 + 64)) 0
    local sum
    sum=$(od -An -v -tu1 -j "$2" -N 512 "$1" | tr -s ' ' '\n' | awk '{s+=$1} END {print s}')
    poke32 "$1" $(($2 + 64)) $(((~sum) & 0xffffffff))
}

# ------------------------------------------------ qemu-made images, read
"$QEMU_IMG" create -q -f vpc d.vhd 10M || fail "create d.vhd"
"$QEMU_IO" -f vpc -c "write -P 0x11 1M 64k" -c "write -P 0 3M 4k" -c "write -P 0x22 9M 512" \
    d.vhd >/dev/null || fail "write d.vhd"
"$QEMU_IMG" create -q -f vpc -o subformat=fixed f.vhd 5M || fail "create f.vhd"
"$QEMU_IO" -f vpc -c "write -P 0x33 1M 4k" f.vhd >/dev/null || fail "write f.vhd"
"$QEMU_IMG" create -q -f vpc -o force_size=on fs.vhd 10M || fail "create fs.vhd"

for f in d.vhd fs.vhd; do
    same_ro "info $f" info "$f"
    same_ro "info json $f" info --output=json "$f"
    same_ro "map $f" map "$f"
    same_ro "map json $f" map --output=json "$f"
done
# qemu probes a fixed disk as raw (no header at offset 0) and convert then
# copies the footer into the guest disk; qimg knows it by its footer
# (a documented difference): it shows and converts it as qemu-img -f vpc
expect_eq "info fixed probed: vpc" "$("$QIMG_AS_QEMU" info f.vhd)" "$("$QEMU_IMG" info -f vpc f.vhd)"
expect_eq "info json fixed probed: vpc" "$("$QIMG_AS_QEMU" info --output=json f.vhd)" \
    "$("$QEMU_IMG" info -f vpc --output=json f.vhd)"
"$QEMU_IMG" convert -f vpc -O raw f.vhd "$SCRATCH/ref.raw" || fail "qemu convert -f vpc f.vhd"
"$QIMG" convert -O raw f.vhd "$SCRATCH/new.raw" || fail "qimg convert f.vhd"
check "convert fixed probed: no footer in the guest data" cmp "$SCRATCH/ref.raw" "$SCRATCH/new.raw"
# ...but only a valid footer of a fixed disk as large as the file
tail_case() {   # tail_case NAME: t.raw probes as raw, as with qemu
    same_ro "$1" info t.raw
    expect_eq "$1: raw" "$("$QIMG" info t.raw | sed -n 's/^file format: //p')" raw
}
fsize=$(stat -c %s f.vhd)
cp f.vhd t.raw; truncate -s $((fsize + 512)) t.raw
dd if=f.vhd of=t.raw bs=512 skip=$((fsize / 512 - 1)) seek=$((fsize / 512)) conv=notrunc status=none
tail_case "footer of another size"
cp f.vhd t.raw; poke32 t.raw $((fsize - 512 + 64)) 1;            tail_case "footer checksum wrong"
cp f.vhd t.raw; poke32 t.raw $((fsize - 512 + 60)) 3; fix_footer t.raw $((fsize - 512))
tail_case "dynamic disk type in a last-sector footer"
cp f.vhd t.raw; poke64 t.raw $((fsize - 512 + 48)) $((1 << 62)); fix_footer t.raw $((fsize - 512))
tail_case "footer size huge"
same_ro "info -f vpc fixed" info -f vpc f.vhd
same_ro "info json -f vpc fixed" info -f vpc --output=json f.vhd
same_ro "map -f vpc fixed" map -f vpc --output=json f.vhd
same_ro "check vpc" check d.vhd
same_ro "-f vpc on a raw file" info -f vpc "$SCRATCH/bin/qemu-img"

for f in d.vhd fs.vhd; do
    "$QEMU_IMG" convert -O raw "$f" "$SCRATCH/ref.raw" || fail "qemu convert $f"
    "$QIMG" convert -O raw "$f" "$SCRATCH/new.raw" || fail "qimg convert $f"
    check "convert $f to raw" cmp "$SCRATCH/ref.raw" "$SCRATCH/new.raw"
    "$QIMG" convert -O qcow2 "$f" "$SCRATCH/new.qcow2" || fail "qimg convert $f to qcow2"
    check "convert $f to qcow2: compare" "$QEMU_IMG" compare -q "$f" "$SCRATCH/new.qcow2"
done
"$QEMU_IMG" convert -f vpc -O raw f.vhd "$SCRATCH/ref.raw" || fail "qemu convert f.vhd"
"$QIMG" convert -f vpc -O raw f.vhd "$SCRATCH/new.raw" || fail "qimg convert f.vhd"
check "convert -f vpc fixed to raw" cmp "$SCRATCH/ref.raw" "$SCRATCH/new.raw"
same_ro "compare vpc with raw" compare -f vpc -F raw d.vhd "$SCRATCH/new.raw"

# ------------------------------------------------ the creator decides the size
# Virtual PC and qemu use the CHS geometry, Hyper-V ("win "), disk2vhd and
# force_size ("qem2") current_size, and every creator does at the CHS maximum
for app in "win " "d2v " "vs  " "vpc "; do
    cp d.vhd c.vhd
    printf '%s' "$app" | poke c.vhd 28
    poke64 c.vhd 48 $((9 << 20))
    fix_footer c.vhd 0
    same_ro "size by creator '$app'" info c.vhd
done
cp d.vhd c.vhd
poke32 c.vhd 56 $((0xffff10ff))
poke64 c.vhd 48 $((0x1FE00000200))
fix_footer c.vhd 0
same_ro "over 2040 GiB" info c.vhd

# the open option force_size_calc overrides the creator (and names the
# image by a json:{...} as qemu does); the largest geometry still wins
for mode in chs current_size bad; do
    for f in d.vhd fs.vhd; do
        same_ro "force_size_calc=$mode $f" info --image-opts "driver=vpc,force_size_calc=$mode,file.filename=$f"
    done
done
same_ro "force_size_calc json" info --output=json \
    'json:{"driver": "vpc", "force_size_calc": "current_size", "file": {"driver": "file", "filename": "d.vhd"}}'

# ------------------------------------------------ hostile images
# footer_be / dyn_be FIELD WIDTH VALUE: h.vhd = d.vhd with one field set
footer_be() { cp d.vhd h.vhd; "be$2" "$3" | poke h.vhd "$1"; fix_footer h.vhd 0; }
dyn_be() { cp d.vhd h.vhd; "be$2" "$3" | poke h.vhd $((512 + $1)); }
hostile() {   # hostile NAME: same error as qemu, exit 1, within 2 s
    same_ro "$1" info h.vhd
    expect_eq "$1 (exit code)" "$(cat "$SCRATCH/ro.ref/rc")" 1
}
cp d.vhd h.vhd; poke32 h.vhd 64 $((0x1234));  hostile "footer checksum wrong"
cp d.vhd h.vhd; poke64 h.vhd 0 0; poke64 h.vhd $(($(stat -c %s d.vhd) - 512)) 0
same_ro "no cookie anywhere" info -f vpc h.vhd
footer_be 60 32 4
out=$("$QIMG_AS_QEMU" info h.vhd 2>&1); rc=$?
# qemu reads a differencing disk as if it had no parent; qimg reads through
# it (t-vpc-diff.sh), and one that names none is an error
expect_eq "differencing without a parent" "$rc: $out" \
    "1: qemu-img: Could not open 'h.vhd': Differencing VHD image names no parent"
footer_be 56 32 $((0xffff10ff)); be64 $((3 << 40)) | poke h.vhd 48; fix_footer h.vhd 0
hostile "size 3 TiB"
dyn_be 0 64 0;                                      hostile "dynamic header magic"
dyn_be 32 32 $((3 << 20));                          hostile "block size not a power of two"
dyn_be 32 32 256;                                   hostile "block size 256"
dyn_be 28 32 $((0x40000000));                       hostile "max table entries huge"
dyn_be 28 32 $((0x1fffffff));                       hostile "max table entries 2^29-1"
dyn_be 28 32 1;                                     hostile "page table too small"
dyn_be 16 64 $((0x10000000));                       hostile "BAT past EOF"
dyn_be 16 64 $((0x7ffffffffffffe00));               hostile "BAT offset huge"
size=$(stat -c %s d.vhd)
cp d.vhd h.vhd; poke32 h.vhd 1536 $((size / 512)); hostile "block past EOF"
head -c $((size - 1024)) d.vhd > h.vhd;             hostile "truncated image"
head -c $((size - 513)) d.vhd > h.vhd;              same_ro "footer copy cut" info h.vhd

# ------------------------------------------------ the real Virtual PC image
real=${TESTDATA:-$TOP/../shared/testdata}/virtualpc-dynamic.vhd.bz2
if ! has_cmd "real Virtual PC image" bzcat; then
    :   # counted as a SKIP by has_cmd
elif [ -r "$real" ]; then
    bzcat "$real" > vp.vhd
    same_ro "real: info" info vp.vhd
    same_ro "real: info json" info --output=json vp.vhd
    same_ro "real: map" map --output=json vp.vhd
    # README: 127 GiB, no data written.  Hashing all of it takes minutes:
    # check that every byte qimg reads is zero and the size is the README's
    # (SHA-256 of that many zeros: 2a4f06d5c9672ce7...) only when asked.
    expect_eq "real: size" "$("$QIMG" info --output=json vp.vhd | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')" 136363130880
    expect_eq "real: all zero" "$("$QIMG" map --output=json vp.vhd | grep -c '"data": true')" 0
    if [ -n "${QIMG_SLOW_TESTS:-}" ]; then
        "$QIMG" convert -O raw vp.vhd "$SCRATCH/vp.raw" || fail "convert real"
        expect_eq "real: content" "$(sha "$SCRATCH/vp.raw" | cut -c1-16)" 2a4f06d5c9672ce7
    fi
else
    SKIP_WHAT="$TEST_NAME real image" skip "no ../shared/testdata"
fi

# ------------------------------------------------ 4 KiB blocks (the fuzz seed)
cp "$TOP/tests/fuzz/corpus/vpc-small-blocks" sb.vhd
same_ro "small blocks: map" map --output=json sb.vhd
"$QEMU_IMG" convert -O raw sb.vhd "$SCRATCH/ref.raw" || fail "qemu convert sb.vhd"
"$QIMG" convert -O raw sb.vhd "$SCRATCH/new.raw" || fail "qimg convert sb.vhd"
check "small blocks: convert" cmp "$SCRATCH/ref.raw" "$SCRATCH/new.raw"

# ------------------------------------------------ create and write
# mask FILE: the file with the footers' timestamp, checksum and UUID zeroed
# (qemu randomises them)
mask() {
    python3 - "$1" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
for base in {0, len(d) - 512}:
    if d[base:base + 8] == b"conectix":
        d[base + 24:base + 28] = bytes(4)
        d[base + 64:base + 84] = bytes(20)
sys.stdout.buffer.write(d)
PY
}
if has_cmd "$TEST_NAME create" python3; then
    # qimg also takes backing_file and backing_fmt (a differencing disk)
    # and azure
    out=$("$QIMG_AS_QEMU" create -f vpc -o help | grep -v '^  backing_f\|^  azure=')
    expect_eq "create -o help" "$out" "$("$QEMU_IMG" create -f vpc -o help)"
    expect_eq "create -o help: options beyond qemu-img" \
        "$("$QIMG_AS_QEMU" create -f vpc -o help | grep -c '^  backing_f\|^  azure=')" 3
    same "create bad subformat" create -f vpc -o subformat=foo x.vhd 1M
    same "create too large" create -f vpc x.vhd 2041G
    for size in 0 1000 100000 10M 1G 127G 200G 2040G; do
        for o in subformat=dynamic force_size=on subformat=fixed subformat=fixed,force_size=on; do
            case $o,$size in *fixed*,1G|*fixed*,127G|*fixed*,200G|*fixed*,2040G) continue ;; esac
            rm -f "$SCRATCH/q.vhd" "$SCRATCH/n.vhd"
            "$QEMU_IMG" create -q -f vpc -o "$o" "$SCRATCH/q.vhd" "$size" || fail "qemu create $o $size"
            "$QIMG" create -q -f vpc -o "$o" "$SCRATCH/n.vhd" "$size" || fail "qimg create $o $size"
            check "create $o $size: same bytes" cmp <(mask "$SCRATCH/q.vhd") <(mask "$SCRATCH/n.vhd")
        done
    done
    "$QEMU_IMG" create -q -f raw src.raw 20M || fail "create src.raw"
    qio src.raw "write -P 0x41 0 1M"; qio src.raw "write -P 0x42 3M 5k"
    qio src.raw "write -P 0 6M 1M"; qio src.raw "write -P 0x43 19M 1M"
    for o in subformat=dynamic force_size=on subformat=fixed subformat=fixed,force_size=on; do
        rm -f "$SCRATCH/q.vhd" n.vhd
        "$QEMU_IMG" convert -O vpc -o "$o" src.raw "$SCRATCH/q.vhd" || fail "qemu convert $o"
        "$QIMG" convert -O vpc -o "$o" src.raw n.vhd || fail "qimg convert $o"
        check "convert -O vpc $o: compare" "$QEMU_IMG" compare -q -f raw -F vpc src.raw n.vhd
        check "convert -O vpc $o: same bytes as qemu's" cmp <(mask "$SCRATCH/q.vhd") <(mask n.vhd)
        same_ro "convert -O vpc $o: check" check -f vpc n.vhd
    done
    # writes into an existing image: a qemu-made dynamic disk, partly
    # allocated, overwritten by qimg (convert -n), then read by qemu
    "$QEMU_IMG" create -q -f vpc w.vhd 20M || fail "create w.vhd"
    "$QEMU_IO" -f vpc -c "write -P 0x77 2M 3M" w.vhd >/dev/null || fail "write w.vhd"
    "$QEMU_IMG" create -q -f raw w.raw "$("$QEMU_IMG" info --output=json w.vhd |
        sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')" || fail "create w.raw"
    qio w.raw "write -P 0x41 0 1M"; qio w.raw "write -P 0x42 3M 5k"; qio w.raw "write -P 0x43 19M 1M"
    "$QIMG" convert -n -f raw -O vpc w.raw w.vhd || fail "convert -n into w.vhd"
    check "convert -n into a qemu-made vpc: compare" "$QEMU_IMG" compare -q -f raw -F vpc w.raw w.vhd
fi

# ------------------------------------------------ azure=on (beyond qemu-img)
# Microsoft's recipe is qemu-img's subformat=fixed,force_size on a raw image
# resized by hand to whole MiB; azure=on is that disk, rounded here
if has_cmd "$TEST_NAME azure" python3; then
    for size in 1000000 5M 1G 1073741825; do
        rm -f "$SCRATCH/q.vhd" "$SCRATCH/n.vhd"
        mib=$(( ($("$QIMG" create -q -f raw "$SCRATCH/s.raw" "$size" && stat -c %s "$SCRATCH/s.raw") + (1 << 20) - 1) >> 20 ))
        "$QEMU_IMG" create -q -f vpc -o subformat=fixed,force_size=on "$SCRATCH/q.vhd" "${mib}M" ||
            fail "qemu create $mib MiB"
        "$QIMG" create -q -f vpc -o azure=on "$SCRATCH/n.vhd" "$size" || fail "qimg create azure $size"
        check "azure=on $size: qemu-img's fixed,force_size disk of $mib MiB" \
            cmp <(mask "$SCRATCH/q.vhd") <(mask "$SCRATCH/n.vhd")
    done
    head -c 5000000 /dev/urandom > az.raw
    "$QIMG" convert -O vpc -o azure=on az.raw az.vhd || fail "convert -o azure=on"
    out=$(python3 - az.vhd <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read()
f = d[-512:]
b = bytearray(f); b[64:68] = bytes(4)
print(len(d) - 512, f[0:8].decode(), struct.unpack(">I", f[8:12])[0],
      hex(struct.unpack(">I", f[12:16])[0]), hex(struct.unpack(">Q", f[16:24])[0]),
      f[28:32].decode(), f[36:40].decode(), struct.unpack(">Q", f[48:56])[0],
      struct.unpack(">I", f[60:64])[0], struct.unpack(">I", f[64:68])[0] == (~sum(b)) & 0xffffffff)
PY
)
    expect_eq "convert -o azure=on: footer as Azure checks it" "$out" \
        "5242880 conectix 2 0x10000 0xffffffffffffffff qem2 Wi2k 5242880 2 True"
    truncate -s 5242880 az.raw
    check "convert -o azure=on: qemu-img reads the data" "$QEMU_IMG" compare -q -f raw -F vpc az.raw az.vhd
    expect_eq "convert -o azure=on: probed as vpc" "$("$QIMG" info az.vhd | sed -n 's/^file format: //p')" vpc
    for o in azure=on,subformat=dynamic azure=on,force_size=off; do
        out=$("$QIMG" create -q -f vpc -o "$o" x.vhd 1M 2>&1)
        case $out in *"azure=on"*) pass "create -o $o refused" ;; *) fail "create -o $o refused" "$out" ;; esac
    done
fi

# ------------------------------------------------ resize and measure (beyond qemu-img)
"$QEMU_IMG" create -q -f vpc rz.vhd 30M || fail "create rz.vhd"
"$QEMU_IO" -f vpc -c "write -P 0x61 0 30M" rz.vhd >/dev/null || fail "write rz.vhd"
"$QEMU_IMG" convert -f vpc -O raw rz.vhd rz.raw
# 3000M needs a BAT larger than its room before the first block: it moves
check "resize a dynamic disk to 3000M (the BAT moves)" "$QIMG" resize -q rz.vhd 3000M
expect_eq "resize: size" "$("$QEMU_IMG" info --output=json rz.vhd | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')" \
    $((3000 << 20))
check "resize: qemu-img reads the data" "$QEMU_IMG" compare -q -f vpc -F raw rz.vhd rz.raw
"$QIMG" bench -q -w -f vpc -c 1 -d 1 -s 1M -o 2900M --pattern=0x62 rz.vhd >/dev/null
truncate -s 3000M rz.raw; qio rz.raw "write -P 0x62 2900M 1M"
check "resize: a block written past the moved BAT" "$QEMU_IMG" compare -q -f vpc -F raw rz.vhd rz.raw
check "resize --shrink to 7M" "$QIMG" resize -q --shrink rz.vhd 7M
truncate -s 7M rz.raw
check "resize --shrink: qemu-img reads the data" "$QEMU_IMG" compare -q -f vpc -F raw rz.vhd rz.raw
if has_pymod "$TEST_NAME libvhdi resize" pyvhdi; then
    out=$("$DEB_PYTHON" -c 'import pyvhdi,sys; f=pyvhdi.file(); f.open(sys.argv[1]); d=f.read_buffer(f.get_media_size()); print(len(d), d == open(sys.argv[2], "rb").read())' rz.vhd rz.raw)
    expect_eq "resize: libvhdi reads the data" "$out" "7340032 True"
fi
# a fixed disk: grown, then shrunk
"$QEMU_IMG" create -q -f vpc -o subformat=fixed rf.vhd 3M && "$QEMU_IO" -f vpc -c "write -P 0x63 0 3M" rf.vhd >/dev/null
"$QEMU_IMG" convert -f vpc -O raw rf.vhd rf.raw
check "resize a fixed disk +5M" "$QIMG" resize -q -f vpc rf.vhd +5M
check "resize fixed: data then zeros" "$QEMU_IMG" compare -q -f vpc -F raw rf.vhd rf.raw
expect_eq "resize fixed: the file" "$(stat -c %s rf.vhd)" $(( $(stat -c %s rf.raw) + (5 << 20) + 512 ))
expect_eq "resize fixed: still probed as vpc" "$("$QIMG" info rf.vhd | sed -n 's/^file format: //p')" vpc
check "resize fixed --shrink 1M" "$QIMG" resize -q -f vpc --shrink rf.vhd 1M
truncate -s 1M rf.raw
check "resize fixed --shrink: data" "$QEMU_IMG" compare -q -f vpc -F raw rf.vhd rf.raw
expect_eq "resize fixed --shrink: the file" "$(stat -c %s rf.vhd)" $(( (1 << 20) + 512 ))
# measure: what create makes, and a copy within it
m() { "$QIMG" measure --output=json -O vpc "$@" | sed -n 's/.*"required": \([0-9]*\).*/\1/p'; }
for o in subformat=dynamic subformat=fixed force_size=on azure=on; do
    rm -f "$SCRATCH/m.vhd"
    "$QIMG" create -q -f vpc -o "$o" "$SCRATCH/m.vhd" 100M
    expect_eq "measure -o $o --size: an empty image" "$(m -o "$o" --size 100M)" "$(stat -c %s "$SCRATCH/m.vhd")"
    rm -f "$SCRATCH/m.vhd"
    "$QIMG" convert -O vpc -o "$o" src.raw "$SCRATCH/m.vhd"
    check "measure -o $o of src.raw: the copy fits" test "$(stat -c %s "$SCRATCH/m.vhd")" -le "$(m -o "$o" src.raw)"
done
