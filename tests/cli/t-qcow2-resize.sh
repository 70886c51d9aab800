#!/bin/bash
# qemu-img resize on qcow2 with --preallocation=metadata|falloc|full: the
# same command by qemu-img and qimg on copies of the same image, then the
# results compared by qemu-img (info, map, check), by size and allocation
# on the host, and byte for byte.
. "$(dirname "$0")/lib.sh"

qimg_c() { "$QEMU_IMG" create -q -f qcow2 "$@"; }
qwrite() { "$QEMU_IO" -c "$2" "$1" >/dev/null; }

# Logical ranges of a file that hold blocks on the host, merged, with
# "u" for fallocated (unwritten) ones: the allocation, without the extent
# tree blocks that st_blocks also counts (they depend on fragmentation).
alloc_ranges() {
    filefrag -v -b4096 "$1" 2>/dev/null | awk '
        /^ *[0-9]+:/ { gsub(/[:.]+/, " "); split($0, a, " "); f = ($0 ~ /unwritten/) ? "u" : "w";
                       if (f == pf && a[2] == pe + 1) { pe = a[3]; next }
                       if (pf != "") print ps "-" pe pf; ps = a[2]; pe = a[3]; pf = f }
        END { if (pf != "") print ps "-" pe pf }'
}

# The image files a command left in the two copies must be equal: bytes,
# size, host allocation, and qemu-img's info, map and check of them.  Block
# status of fallocated areas and "disk size" depend on the filesystem's
# state (writeback, extent tree blocks), so info and map look at copies
# that have every zero block as a hole; the allocation is compared above.
same_result() {
    local name=$1; shift
    local a=$SCRATCH/run.ref/work b=$SCRATCH/run.new/work f what=""
    for f in "$@"; do
        local x y
        x=$(stat -c %s "$a/$f"); y=$(stat -c %s "$b/$f")
        [ "$x" = "$y" ] || what="$what $f: size $x vs $y\n"
        x=$(alloc_ranges "$a/$f"); y=$(alloc_ranges "$b/$f")
        [ "$x" = "$y" ] || what="$what $f: allocation differs\n$(diff <(echo "$x") <(echo "$y") | head -6)\n"
        cmp -s "$a/$f" "$b/$f" || what="$what $f: bytes differ\n"
        rm -rf "$SCRATCH/norm" && mkdir -p "$SCRATCH/norm/a" "$SCRATCH/norm/b"
        cp -a "$a/." "$SCRATCH/norm/a/" && cp -a "$b/." "$SCRATCH/norm/b/"
        cp --sparse=always "$a/$f" "$SCRATCH/norm/a/$f" && cp --sparse=always "$b/$f" "$SCRATCH/norm/b/$f"
        for view in "info --output=json" "map --output=json" "check" "info"; do
            x=$(cd "$SCRATCH/norm/a" && "$QEMU_IMG" $view "$f" 2>&1 | grep -v 'actual-size\|^disk size'; echo "rc=$?")
            y=$(cd "$SCRATCH/norm/b" && "$QEMU_IMG" $view "$f" 2>&1 | grep -v 'actual-size\|^disk size'; echo "rc=$?")
            [ "$x" = "$y" ] || what="$what $f: qemu-img $view differs\n$(diff <(echo "$x") <(echo "$y") | head -10)\n"
        done
    done
    if [ -z "$what" ]; then pass "$name"; else fail "$name" "$(printf "$what")"; fi
}

# A qemu-written image with data in it, at the given size and options.
make_img() {
    local f=$1 size=$2; shift 2
    qimg_c "$@" "$IN/$f" "$size"
    qwrite "$IN/$f" "write -P 0x11 0 300k"
    qwrite "$IN/$f" "write -P 0x22 $(( ${size%k} * 512 )) 4k"
}

make_img def.qcow2 1024k
make_img c4k.qcow2 1024k -o cluster_size=4k
make_img c512.qcow2 1024k -o cluster_size=512,refcount_bits=1
make_img v2.qcow2 1024k -o compat=0.10
make_img r64.qcow2 1024k -o refcount_bits=64,lazy_refcounts=on
make_img extl2.qcow2 1024k -o extended_l2=on
make_img zstd.qcow2 1024k -o compression_type=zstd
make_img c2m.qcow2 1024k -o cluster_size=2M
make_img odd.qcow2 1000k                     # ends in the middle of a cluster
qimg_c "$IN/odd-empty.qcow2" 1000k           # ... whose last cluster is unallocated
make_img odd-extl2.qcow2 1000k -o extended_l2=on
qimg_c "$IN/empty.qcow2" 0
qimg_c -o preallocation=metadata "$IN/pm.qcow2" 1M
qimg_c -o preallocation=full "$IN/pf.qcow2" 1M
"$QEMU_IMG" create -q -f raw "$IN/base.raw" 2M
"$QEMU_IO" -f raw -c "write -P 0x33 0 2M" "$IN/base.raw" >/dev/null
qimg_c -b base.raw -F raw "$IN/ovl.qcow2" 1000k
qimg_c -b base.raw -F raw -o extended_l2=on "$IN/ovl-extl2.qcow2" 1000k
qimg_c -b base.raw -F raw -o compat=0.10 "$IN/ovl-v2.qcow2" 1000k
# compressed clusters
"$QEMU_IMG" convert -q -c -O qcow2 -f raw "$IN/base.raw" "$IN/comp.qcow2"
# an image whose refcount table must grow to cover the new area
qimg_c -o cluster_size=512 "$IN/grow.qcow2" 64k
qwrite "$IN/grow.qcow2" "write -P 0x44 0 60k"

for mode in off metadata falloc full; do
    # (`same` sets the global f: loop over img)
    for img in def c4k c512 v2 r64 extl2 zstd c2m odd odd-empty odd-extl2 empty pm pf ovl ovl-extl2 ovl-v2 comp; do
        sizes=+3M       # 1100k too (a partly covered last cluster) where it matters
        case $img in def|extl2|c2m|odd*|ovl*) sizes="+3M 1100k" ;; esac
        for size in $sizes; do
            same "resize --preallocation=$mode $img $size" resize --preallocation=$mode $img.qcow2 $size
            same_result "resize --preallocation=$mode $img $size: image" $img.qcow2
        done
    done
    same "resize --preallocation=$mode grow +40M" resize --preallocation=$mode grow.qcow2 +40M
    same_result "resize --preallocation=$mode grow +40M: image" grow.qcow2
    # the L1 table grows too (4 KiB clusters: 2 MiB per L2 table)
    same "resize --preallocation=$mode -f qcow2 c4k +40M" resize --preallocation=$mode -f qcow2 c4k.qcow2 +40M
    same_result "resize --preallocation=$mode c4k +40M: image" c4k.qcow2
done

# external data files
for mode in off metadata falloc full; do
    rm -f "$IN"/df*
    (cd "$IN" && qimg_c -o data_file=df.raw df.qcow2 1M)
    qwrite "$IN/df.qcow2" "write -P 0x55 64k 64k"
    same "resize --preallocation=$mode data_file" resize --preallocation=$mode df.qcow2 +1M
    same_result "resize --preallocation=$mode data_file: image" df.qcow2 df.raw
    rm -f "$IN"/df*
    (cd "$IN" && qimg_c -o data_file=df.raw,data_file_raw=on df.qcow2 1M)
    same "resize --preallocation=$mode data_file_raw" resize --preallocation=$mode df.qcow2 +1M
    same_result "resize --preallocation=$mode data_file_raw: image" df.qcow2 df.raw
done
rm -f "$IN"/df*

# refusals
same "resize --preallocation shrink" resize --preallocation=falloc --shrink def.qcow2 512k
same "resize --preallocation same size" resize --preallocation=metadata def.qcow2 1M
same "resize --preallocation bad mode" resize --preallocation=bogus def.qcow2 +1M
qimg_c -o compat=0.10 "$IN/v2snap.qcow2" 1M
"$QEMU_IMG" snapshot -c s1 "$IN/v2snap.qcow2"
same "resize --preallocation v2 with snapshots" resize --preallocation=full v2snap.qcow2 +1M
same_result "resize --preallocation v2 with snapshots: image" v2snap.qcow2
qimg_c "$IN/snap.qcow2" 1M
qwrite "$IN/snap.qcow2" "write -P 0x66 0 128k"
"$QEMU_IMG" snapshot -c s1 "$IN/snap.qcow2"
for mode in metadata falloc; do
    same "resize --preallocation=$mode with a snapshot" resize --preallocation=$mode snap.qcow2 +1M
    same_result "resize --preallocation=$mode with a snapshot: image" snap.qcow2
done

# shrinking into a cluster leaves its tail as it is (qemu 7.2 does not
# zero it: the old data shows again after growing back), in both tools
qimg_c "$IN/tail.qcow2" 1M
qwrite "$IN/tail.qcow2" "write -P 0x77 0 1M"
same "resize --shrink into a cluster" resize --shrink tail.qcow2 1000k
same_result "resize --shrink into a cluster: image" tail.qcow2
same "resize --shrink into an extended L2 subcluster" resize --shrink extl2.qcow2 1001k
same_result "resize --shrink into an extended L2 subcluster: image" extl2.qcow2

# shrinking over many refcount blocks: those left counting nothing but
# themselves leave the table, the file ends where qemu's does
qimg_c -o cluster_size=512 "$IN/many.qcow2" 12M
qwrite "$IN/many.qcow2" "write -P 0x78 0 12M"
for size in 1M 8100k; do
    same "resize --shrink over refcount blocks to $size" resize --shrink many.qcow2 $size
    same_result "resize --shrink over refcount blocks to $size: image" many.qcow2
done

# read back what qimg preallocated: the old data is still there, the new
# area reads as zeros (and the guest sees the backing file where qemu does)
for mode in metadata falloc full; do
    for img in odd ovl ovl-extl2 comp; do
        rm -rf "$SCRATCH/rb" && mkdir -p "$SCRATCH/rb" && cp "$IN/$img.qcow2" "$IN/base.raw" "$SCRATCH/rb/"
        cp "$IN/$img.qcow2" "$SCRATCH/rb/$img-ref.qcow2"
        (cd "$SCRATCH/rb" && "$QIMG" resize --preallocation=$mode $img.qcow2 +1M >/dev/null &&
            "$QEMU_IMG" resize --preallocation=$mode $img-ref.qcow2 +1M >/dev/null)
        check "resize --preallocation=$mode $img: compare with qemu-img's" \
            "$QEMU_IMG" compare "$SCRATCH/rb/$img.qcow2" "$SCRATCH/rb/$img-ref.qcow2"
    done
done
