#!/bin/bash
# Regenerates its seeds in tests/fuzz/corpus/ (committed; run this
# only to change it).  Seeds: trivial files, the small real images of
# shared/testdata (bzip2, kept when under 64 KiB unpacked) and small images
# made by qemu-img 7.2, some with data written by qemu-io and some with
# hostile backing names.  The whole corpus stays under 1 MiB.
set -eu
cd "$(dirname "$0")"
TESTDATA=${TESTDATA:-$(cd ../.. && pwd)/../shared/testdata}
QEMU_IMG=${QEMU_IMG:-qemu-img}
QEMU_IO=${QEMU_IO:-qemu-io}
OUT=corpus
mkdir -p "$OUT"   # other seeds in it (added by hand) are kept
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# trivial inputs
: > "$OUT/empty"
head -c 512 /dev/zero > "$OUT/zero-512"
python3 -c 'import sys; sys.stdout.buffer.write(bytes((i * 7) & 0xff for i in range(4096)))' > "$OUT/raw-4k"

# compressed streams for fuzz-codec: a size byte (0x07: 4 KiB out), then
# the stream of 4 KiB of text in each codec
python3 - "$OUT" <<'PY'
import bz2, sys, zlib
out = sys.argv[1]
text = b"".join(b"cluster %d sector %d\n" % (i, i * 7) for i in range(400))[:4096]
def raw(level):
    c = zlib.compressobj(level, zlib.DEFLATED, -12, 9)
    return c.compress(text) + c.flush()
g = zlib.compressobj(6, zlib.DEFLATED, 31)
seeds = {"codec-deflate": raw(6), "codec-zlib": zlib.compress(text),
         "codec-gzip": g.compress(text) + g.flush(), "codec-bzip2": bz2.compress(text)}
for name, data in seeds.items():
    open(f"{out}/{name}", "wb").write(b"\x07" + data)
open(f"{out}/codec-text", "wb").write(text)
PY
if command -v zstd >/dev/null; then
    { printf '\007'; zstd -q -c "$OUT/codec-text"; } > "$OUT/codec-zstd"
fi
rm -f "$OUT/codec-text"
# the codecs of cloop 4 and dmg: xz (python's lzma), lz4 and lzo1x (the
# libraries through ctypes), ADC (dmg-craft.py's encoder)
/usr/bin/python3 - "$OUT" "$(cd ../cli && pwd)/dmg-craft.py" <<'PY'
import ctypes, importlib.util, lzma, sys
out = sys.argv[1]
text = b"".join(b"cluster %d sector %d\n" % (i, i * 7) for i in range(400))[:4096]
buf = ctypes.create_string_buffer(8192)
n = ctypes.CDLL("liblz4.so.1").LZ4_compress_default(text, buf, len(text), 8192)
open(f"{out}/codec-lz4", "wb").write(b"\x07" + buf.raw[:n])
size, work = ctypes.c_size_t(0), ctypes.create_string_buffer(1 << 17)
ctypes.CDLL("liblzo2.so.2").lzo1x_1_compress(text, len(text), buf, ctypes.byref(size), work)
open(f"{out}/codec-lzo1x", "wb").write(b"\x07" + buf.raw[:size.value])
open(f"{out}/codec-xz", "wb").write(b"\x07" + lzma.compress(text, check=lzma.CHECK_CRC32))
spec = importlib.util.spec_from_file_location("dc", sys.argv[2])
dc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dc)
open(f"{out}/codec-adc", "wb").write(b"\x07" + dc.adc_compress(text))
PY

# cloop (version 2 by create_compressed_fs, version 4 by cloop-craft.py:
# every block method, header first and last) and dmg (dmg-craft.py: every
# chunk type qimg reads, property list and resource fork) from 20 KiB of
# random bytes, zeros and text
{ head -c 3000 /dev/urandom; head -c 4000 /dev/zero; seq 1 3000; } > "$tmp/archive.raw"
truncate -s 20480 "$tmp/archive.raw"
if command -v create_compressed_fs >/dev/null; then
    create_compressed_fs -q -B 1024 "$tmp/archive.raw" "$OUT/cloop2-cff.cloop" >/dev/null 2>&1
fi
/usr/bin/python3 ../cli/cloop-craft.py "$tmp/archive.raw" "$OUT/cloop4-methods.cloop" 2048 zlib,none,xz,lz4,lzo1x first
/usr/bin/python3 ../cli/cloop-craft.py "$tmp/archive.raw" "$OUT/cloop4-last.cloop" 4096 zlib,xz last
/usr/bin/python3 ../cli/dmg-craft.py "$tmp/archive.raw" "$OUT/dmg-mixed.dmg" adc:5,zlib:7,bzip2:9,raw:2,zero:3 --comment
/usr/bin/python3 ../cli/dmg-craft.py "$tmp/archive.raw" "$OUT/dmg-rsrc.dmg" zlib:8,adc:8,raw:1 --rsrc --parts 2

# real images from other tools
if [ -d "$TESTDATA" ]; then
    for f in "$TESTDATA"/*.bz2; do
        b=$(basename "$f" .bz2)
        bzcat "$f" > "$tmp/$b"
        [ "$(stat -c %s "$tmp/$b")" -le 65536 ] && cp "$tmp/$b" "$OUT/real-$b"
    done
fi

# images made by qemu-img (small clusters keep them small)
mk() { "$QEMU_IMG" create -q "$@"; }
io() { local f=$1 fmt=$2; shift 2; for c in "$@"; do "$QEMU_IO" -f "$fmt" -c "$c" "$f" >/dev/null; done; }
mk -f qcow2 -o cluster_size=512 "$OUT/qcow2-data" 1M
io "$OUT/qcow2-data" qcow2 'write -P 0x11 0 2k' 'write -z 4k 1k'
"$QEMU_IMG" snapshot -c snap1 "$OUT/qcow2-data"
mk -f qcow2 -o cluster_size=512,compat=0.10 "$OUT/qcow2-v2" 1M
mk -f qcow2 -o cluster_size=512 -u -b qcow2-data -F qcow2 "$OUT/qcow2-backing-rel" 1M
mk -f qcow2 -o cluster_size=512 -u -b /etc/passwd -F raw "$OUT/qcow2-backing-host" 1M
mk -f qcow2 -o cluster_size=512 -u -F raw \
   -b 'json:{"driver":"raw","file":{"driver":"file","filename":"/etc/passwd"}}' "$OUT/qcow2-backing-json" 1M
mk -f qcow2 -o cluster_size=16384,extended_l2=on "$OUT/qcow2-subclusters" 1M
io "$OUT/qcow2-subclusters" qcow2 'write -P 0x12 1k 1k'
mk -f qcow "$OUT/qcow-data" 1M
io "$OUT/qcow-data" qcow 'write -P 0x22 0 1k'
mk -f vdi "$OUT/vdi" 1M
mk -f vpc "$OUT/vpc" 1M
mk -f vpc -o subformat=fixed "$OUT/vpc-fixed" 64k
# a dynamic VHD with 4 KiB blocks (qemu-img makes only 2 MiB ones), two allocated
python3 - "$OUT/vpc-small-blocks" <<'PY'
import struct, sys
def checksum(b): return (~sum(b)) & 0xffffffff
size, bs, n = 1 << 20, 4096, 256
bat_off = 1536
first = (bat_off + n * 4 + 511) // 512          # first block's sector
foot = bytearray(512)
struct.pack_into(">8sIIQI4sI4sQQHBBI", foot, 0, b"conectix", 2, 0x10000, 512, 0, b"qem2",
                 0x50003, b"Wi2k", size, size, 1, 16, 128, 3)
struct.pack_into(">I", foot, 64, checksum(foot))
dyn = bytearray(1024)
struct.pack_into(">8sQQIII", dyn, 0, b"cxsparse", 2**64 - 1, bat_off, 0x10000, n, bs)
struct.pack_into(">I", dyn, 36, checksum(dyn))
bat = [0xffffffff] * n
bat[0], bat[5] = first, first + 1 + bs // 512
blocks = b""
for pat in (0x44, 0x55):
    blocks += b"\xff" * 512 + bytes([pat]) * bs
table = b"".join(struct.pack(">I", e) for e in bat)
table += b"\xff" * (first * 512 - bat_off - len(table))
open(sys.argv[1], "wb").write(foot + dyn + table + blocks + foot)
PY
# a differencing VHD (4 KiB blocks, one allocated with half its sectors
# present) naming its parent by W2ru, W2ku, MacX and the unicode name
python3 - "$OUT/vpc-diff" <<'PY'
import struct, sys
def checksum(b): return (~sum(b)) & 0xffffffff
size, bs, n = 1 << 16, 4096, 16
bat_off, loc_off = 1536, 2048
foot = bytearray(512)
struct.pack_into(">8sIIQI4sI4sQQHBBI", foot, 0, b"conectix", 2, 0x10000, 512, 0, b"qem2",
                 0x50003, b"Wi2k", size, size, 1, 16, 8, 4)
foot[68:84] = bytes(range(16))
struct.pack_into(">I", foot, 64, checksum(foot))
dyn = bytearray(1024)
struct.pack_into(">8sQQIII", dyn, 0, b"cxsparse", 2**64 - 1, bat_off, 0x10000, n, bs)
dyn[40:56] = bytes(range(16, 32))
name = "parent.vhd".encode("utf-16-be")
dyn[64:64 + len(name)] = name
locs = [(b"W2ru", ".\\parent.vhd".encode("utf-16-le")),
        (b"W2ku", "C:\\vm\\parent.vhd".encode("utf-16-le")),
        (b"MacX", b"file://localhost/vm/parent.vhd")]
data = b""
for i, (code, d) in enumerate(locs):
    struct.pack_into(">4sIIIQ", dyn, 576 + 24 * i, code, 512, len(d), 0, loc_off + 512 * i)
    data += d + bytes(512 - len(d))
struct.pack_into(">I", dyn, 36, checksum(dyn))
first = (loc_off + len(data)) // 512
bat = [0xffffffff] * n
bat[2] = first
table = b"".join(struct.pack(">I", e) for e in bat)
table += b"\xff" * (loc_off - bat_off - len(table))
block = b"\x0f\xf0" + bytes(510) + b"\x5a" * bs
open(sys.argv[1], "wb").write(foot + dyn + table + data + block + foot)
PY
mk -f vmdk "$OUT/vmdk-sparse" 1M
mk -f vmdk -o subformat=streamOptimized "$OUT/vmdk-stream" 1M
mk -f vmdk -o subformat=monolithicFlat "$tmp/flat.vmdk" 64k
cp "$tmp/flat.vmdk" "$OUT/vmdk-descriptor"
# a small hosted sparse extent by hand: 4 KiB grains, 16-entry tables,
# redundant directory, zeroed-grain entries (one data grain, one zeroed),
# its descriptor embedded; and a descriptor of ZERO extents
python3 - "$OUT/vmdk-zeroed" "$OUT/vmdk-desc-zero" <<'PY'
import struct, sys
desc = (b'# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n'
        b'createType="monolithicSparse"\n\n# Extent description\nRW 64 SPARSE "x"\n')
f = bytearray(24 * 512)
f[0:4] = b"KDMV"
struct.pack_into("<IIQQQQIQQQ", f, 4, 2, 0x7, 64, 8, 1, 2, 16, 3, 5, 8)
f[73:77] = b"\n \r\n"
f[512:512 + len(desc)] = desc
struct.pack_into("<I", f, 3 * 512, 4)          # redundant directory -> table at 4
struct.pack_into("<I", f, 5 * 512, 6)          # directory -> table at 6
for t in (4, 6):
    struct.pack_into("<II", f, t * 512, 8, 1)  # grain 0 at sector 8, grain 1 zeroed
f[8 * 512:12 * 512] = bytes((i * 13) & 0xff for i in range(4096))
open(sys.argv[1], "wb").write(bytes(f[:12 * 512]))
open(sys.argv[2], "wb").write(b'# Disk DescriptorFile\nversion=1\nCID=2\nparentCID=ffffffff\n'
                              b'createType="monolithicFlat"\n\n# Extent description\n'
                              b'RW 100 ZERO\nRDONLY 28 ZERO\n')
# a COWD (VMDK3) file as the image (qemu reads its CID in sector 1): 64
# one-sector grains, one grain table, two grains; and a streamOptimized file
# as VMware streams it (grain directory at the end, footer, end-of-stream
# marker), with one compressed grain
python3 - "$OUT/vmdk-cowd" "$OUT/vmdk-stream-footer" <<'PY'
import struct, sys, zlib
img = bytearray(b"COWD" + struct.pack("<10I", 1, 3, 64, 1, 4, 1, 0, 0, 0, 0))
img = img.ljust(512, b"\0") + b"CID=0000abcd\nparentCID=ffffffff\n".ljust(1536, b"\0")
img += struct.pack("<I", 5).ljust(512, b"\0") + bytes(16384)
struct.pack_into("<II", img, 5 * 512, 37, 38)
img += b"\x11" * 512 + b"\x22" * 512
open(sys.argv[1], "wb").write(img)
def hdr(gd):
    h = b"KDMV" + struct.pack("<IIQQQQIQQQB", 3, 0x30001, 128, 128, 1, 1, 512, 0, gd, 3, 0)
    return (h + b"\n \r\n" + struct.pack("<H", 1)).ljust(512, b"\0")
desc = b'# Disk DescriptorFile\nversion=1\nCID=11223344\nparentCID=ffffffff\ncreateType="streamOptimized"\n\nRW 128 SPARSE "s.vmdk"\n'
data = zlib.compress(b"grain text " * 5957 + b"x" * 9)
grain = (struct.pack("<QI", 0, len(data)) + data).ljust((12 + len(data) + 511) // 512 * 512, b"\0")
out = hdr(2 ** 64 - 1) + desc.ljust(512, b"\0") + b"\0" * 512 + grain
gt_marker = struct.pack("<QII", 4, 0, 1).ljust(512, b"\0")
gt_at = len(out) // 512 + 1
out += gt_marker + struct.pack("<I", 3).ljust(2048, b"\0")
gd_at = len(out) // 512 + 1
out += struct.pack("<QII", 1, 0, 2).ljust(512, b"\0") + struct.pack("<I", gt_at).ljust(512, b"\0")
out += struct.pack("<QII", 1, 0, 3).ljust(512, b"\0") + hdr(gd_at) + bytes(512)
open(sys.argv[2], "wb").write(out)
PY
mk -f parallels -o cluster_size=4k "$OUT/parallels" 1M
io "$OUT/parallels" parallels 'write -P 0x66 0 1k'
# the old magic (BAT in sectors), 512-byte clusters, one sector: what little
# room the corpus has left; the fuzzer grows it
python3 - "$OUT/parallels-v1" <<'PY'
import struct, sys
h = b"WithoutFreeSpace" + struct.pack("<IIIIIQIIIQ", 2, 16, 1, 1, 2, 2, 0, 0, 0, 0)
h += struct.pack("<II", 0, 0)
open(sys.argv[1], "wb").write(h + bytes(512 - len(h)))
PY
mk -f qed -o cluster_size=4k "$OUT/qed" 1M
# qed with data, zero clusters and a backing name; qcow compressed and over
# a backing file (512-byte clusters)
mk -f raw "$OUT/base.raw" 1M      # only while the two are written
mk -f qed -o cluster_size=4k,table_size=2 -b base.raw -F raw "$OUT/qed-data" 1M
io "$OUT/qed-data" qed 'write -P 0x31 0 6k' 'write -z 64k 8k'
mk -f qcow -b base.raw -F raw "$OUT/qcow-backing" 64k
io "$OUT/qcow-backing" qcow 'write -P 0x32 512 1k'
rm -f "$OUT/base.raw"
printf 'compressible %.0s' $(seq 1 300) > "$tmp/text.raw"
"$QEMU_IMG" convert -c -f raw -O qcow "$tmp/text.raw" "$OUT/qcow-compressed" || true
# bochs growing images by hand (bximage's smallest is 10 MiB): 4 KiB
# extents, a 16-entry catalog, two extents with some sectors written;
# versions 2 and 1 of the header
python3 - "$OUT/bochs-data" "$OUT/bochs-v1" <<'PY'
import struct, sys
def image(version):
    h = bytearray(512)
    h[0:22], h[32:39], h[48:55] = b"Bochs Virtual HD Image", b"Redolog", b"Growing"
    struct.pack_into("<IIIII", h, 64, version, 512, 16, 1, 4096)
    struct.pack_into("<Q", h, 0x54 if version == 0x10000 else 0x58, 65536)
    cat = [0xffffffff] * 16
    cat[0], cat[9] = 1, 0
    body = b"".join(struct.pack("<I", e) for e in cat)
    for bits, fill in ((0x81, 0x21), (0x0f, 0x43)):
        body += bytes([bits]) + bytes(511) + bytes([fill]) * 4096
    return bytes(h) + body
open(sys.argv[1], "wb").write(image(0x20000))
open(sys.argv[2], "wb").write(image(0x10000))
PY
# UML cow files of each header version (8 sectors, two written) over a
# backing file that is not there
for v in 1 2 3 3b; do
    ALIGN=512 python3 ../cli/cow-craft.py "$v" "$OUT/cow-v$v" base.raw 4096 0 1:0x5a 6:0x6b
done
total=$(cat "$OUT"/* | wc -c)
echo "corpus: $(ls "$OUT" | wc -l) files, $total bytes"
[ "$total" -le 1048576 ] || { echo "corpus over 1 MiB" >&2; exit 1; }
