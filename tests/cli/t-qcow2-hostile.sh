#!/bin/bash
# Hostile qcow2 images: single fields of small qemu-made images patched.
# Where qemu-img's answer is sane the output must be the same; elsewhere
# qimg must refuse cleanly (exit 1, one error line, no crash).
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

hostile_bases   # $SCRATCH/{base,comp,snap}.qcow2

# be64/be32/be16, poke, fresh SRC, hdr_be: lib.sh

# qimg fails with exit 1 and one line on stderr naming the file
refuses() {
    local name=$1; shift
    local err rc
    err=$("$QIMG_AS_QEMU" "$@" 2>&1 >/dev/null); rc=$?
    [ -n "${VERBOSE:-}" ] && echo "    $name: $err"
    if [ $rc -eq 1 ] && [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] && [ -n "$err" ]; then
        pass "$name"
    else
        fail "$name" "rc=$rc" "$err"
    fi
}

# --------------------------------------------- header fields: same as qemu
hdr_be 4 32 4;                         same version-4 info t.qcow2
hdr_be 20 32 8;                        same cluster-bits-8 info t.qcow2
hdr_be 20 32 22;                       same cluster-bits-22 info t.qcow2
hdr_be 20 32 0xffffffff;               same cluster-bits-huge info t.qcow2
hdr_be 36 32 0xffffffff;               same l1-size-huge info t.qcow2
hdr_be 36 32 0x00400001;               same l1-size-over-32m info t.qcow2
hdr_be 40 64 0x30200;                  same l1-offset-unaligned info t.qcow2
hdr_be 40 64 0xffffffffffff0000;       same l1-offset-huge info t.qcow2
hdr_be 48 64 0x1234567890abcdef;       same reftable-offset-unaligned info t.qcow2
hdr_be 48 64 0xffffffffffff0000;       same reftable-offset-huge info t.qcow2
hdr_be 56 32 0xffffffff;               same reftable-clusters-huge info t.qcow2
hdr_be 56 32 0x00020001;               same reftable-clusters-over-8m info t.qcow2
hdr_be 56 32 0;                        same reftable-clusters-0 info t.qcow2
hdr_be 60 32 0xffffffff;               same snapshots-count-huge info t.qcow2
hdr_be 60 32 65537;                    same snapshots-count-65537 info t.qcow2
hdr_be 64 64 0x30200 snap;             same snapshots-offset-unaligned info t.qcow2
hdr_be 8 64 0xffffffffffffffff;        same backing-offset-huge info t.qcow2
fresh base; be64 512 | poke t.qcow2 8; be32 0xffffffff | poke t.qcow2 16
same backing-name-too-long info t.qcow2
fresh base; be64 512 | poke t.qcow2 8; be32 1024 | poke t.qcow2 16
same backing-name-1024 info t.qcow2
hdr_be 100 32 0xffffffff;              same header-length-huge info t.qcow2
hdr_be 100 32 80;                      same header-length-short info t.qcow2
hdr_be 100 32 108;                     same header-length-misplaced-ext info t.qcow2
hdr_be 96 32 7;                        same refcount-order-7 info t.qcow2
hdr_be 32 32 3;                        same crypt-method-3 info t.qcow2
hdr_be 32 32 1;                        same aes-info info t.qcow2
hdr_be 32 32 1;                        same aes-refused-for-io convert -O raw t.qcow2 o.raw
hdr_be 72 64 0x20;                     same unknown-incompat-bit info t.qcow2
hdr_be 72 64 0x8000000000000100;       same unknown-incompat-bits info t.qcow2
# names of unknown bits come from the feature name table
fresh base; printf '\x05' | poke t.qcow2 $((0x139)); be64 0x30 | poke t.qcow2 72
same unknown-incompat-named info t.qcow2
fresh base; printf '\x05' | poke t.qcow2 $((0x139)); be64 0x120 | poke t.qcow2 72
same unknown-incompat-named-and-not info t.qcow2
hdr_be 72 64 0x8;                      same compression-bit-with-zlib info t.qcow2
fresh base; printf '\x01' | poke t.qcow2 104
same zstd-without-bit info t.qcow2
fresh base; printf '\x07' | poke t.qcow2 104
same compression-type-7 info t.qcow2
hdr_be 24 64 0xffffffffffffffff;       same size-huge info t.qcow2
hdr_be 24 64 0x0001000000000000;       same size-l1-too-small info t.qcow2
# extension lengths past the first cluster
fresh base; be32 0x7fffffff | poke t.qcow2 $((0x74))
same ext-length-huge info t.qcow2
fresh base; be32 0xfff0 | poke t.qcow2 $((0x74))
same ext-length-past-cluster info t.qcow2
# state bits
hdr_be 72 64 0x1;                      same dirty-info info t.qcow2
hdr_be 72 64 0x2;                      same corrupt-info info t.qcow2
hdr_be 72 64 0x2;                      same corrupt-read convert -O raw t.qcow2 o.raw
hdr_be 72 64 0x2;                      same corrupt-no-rw-open resize t.qcow2 2M
hdr_be 72 64 0x4;                      same data-file-bit-no-name-info info t.qcow2

# ------------------------------------ tables and entries: qimg's own rule
# an L1 table bigger than the file (qemu reads zeros past its end)
hdr_be 36 32 0x00100000;               refuses l1-past-eof info t.qcow2
# the L1 entry -> L2 table past EOF, unaligned
L1=$((0x30000))
fresh base; be64 0x80000000ffff0000 | poke t.qcow2 $L1
refuses l2-past-eof convert -O raw t.qcow2 o.raw
same l2-past-eof-info info t.qcow2
fresh base; be64 0x8000000000050200 | poke t.qcow2 $L1
refuses l2-unaligned convert -O raw t.qcow2 o.raw
refuses l2-unaligned-map map t.qcow2
# an L2 entry -> data past EOF, unaligned, huge
L2=$(( 0x$(od -An -t x8 --endian=big -j $L1 -N 8 "$SCRATCH/base.qcow2" | tr -d ' ') & 0x00fffffffffffe00 ))
l2e_at() { fresh base; be64 "$1" | poke t.qcow2 "$L2"; }
# data past EOF reads as zeros, as in qemu (block status says zero too)
l2e_at 0x8000000fffff0000;             same data-past-eof convert -O raw t.qcow2 o.raw
l2e_at 0x8000000fffff0000;             same data-past-eof-map map --output=json t.qcow2
l2e_at 0xbfffffffffff0000;             same data-huge-offset-map map --output=json t.qcow2
l2e_at 0x8000000000050200;             refuses data-unaligned convert -O raw t.qcow2 o.raw
l2e_at 0x40003fffffff0000;             refuses compressed-huge-offset convert -O raw t.qcow2 o.raw
# a compressed descriptor past EOF, and one over the header (garbage data)
CL2=$(( $(peek64 "$SCRATCH/comp.qcow2" $((0x30000))) & 0x00fffffffffffe00 ))
fresh comp; be64 $(( 0x4000000000000000 | (0xff << 54) | 0xfffff00 )) | poke t.qcow2 "$CL2"
refuses compressed-past-eof convert -O raw t.qcow2 o.raw
fresh comp; be64 $(( 0x4000000000000000 | 0 )) | poke t.qcow2 "$CL2"
refuses compressed-over-header convert -O raw t.qcow2 o.raw
fresh comp; CDATA=$(( $(peek64 "$SCRATCH/comp.qcow2" "$CL2") & ((1 << 54) - 1) ))
head -c 64 /dev/zero | tr '\0' '\377' | poke t.qcow2 "$CDATA"
refuses compressed-garbage convert -O raw t.qcow2 o.raw
# snapshot table entries: extra data too large (refused with qemu's hint),
# and a table past EOF (read as zeros, as qemu does; see also
# t-qcow2-snaprepair.sh)
SN=$(peek64 "$SCRATCH/snap.qcow2" 64)
fresh snap; be32 0x7fffffff | poke t.qcow2 $((SN + 36))
same snapshot-extra-huge info t.qcow2
fresh snap; be16 0xffff | poke t.qcow2 $((SN + 14))
same snapshot-name-past-eof info t.qcow2
hdr_be 60 32 5 snap;                   same snapshots-past-eof info t.qcow2
# a file shorter than the header
head -c 20 "$SCRATCH/base.qcow2" > t.qcow2
refuses truncated-header info t.qcow2
# still fine: the good images
cp "$SCRATCH/comp.qcow2" t.qcow2
same good-compressed-read convert -O raw t.qcow2 o.raw

echo done
