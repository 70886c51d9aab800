#!/bin/bash
# Times qimg against qemu-img on the same command lines, in one run,
# alternating the two tools, and prints a markdown table of medians.
#
#   bench/run.sh                 full sizes (needs ~12 GiB free in BENCH_DIR)
#   BENCH_QUICK=1 bench/run.sh   small sizes, a sanity run of a few seconds
#
# Environment:
#   QIMG        the qimg binary (default build/qimg)
#   QEMU_IMG    the reference (default /usr/bin/qemu-img)
#   BENCH_DIR   scratch directory for the images (default /var/tmp/qimg-bench);
#               removed at the end unless BENCH_KEEP=1 (kept images are
#               reused when their parameters match)
#   BENCH_RUNS  runs per tool and workload (default 5; 3 with BENCH_QUICK)
#   BENCH_CACHE cold (drop the page cache before each run: needs root and a
#               writable /proc/sys/vm/drop_caches) or warm; default cold
#               when possible
#   BENCH_ONLY  names, separated by commas or spaces: run (and make the
#               inputs of) only the workloads whose name contains one of them
#               (BENCH_ONLY=commit-top50,check-prealloc)
#   BENCH_OUT   also write the table to this file
#
# Each run is also measured for its peak resident memory (GNU time's %M,
# /usr/bin/time): the table shows the largest of the runs for each tool.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
QIMG=${QIMG:-$TOP/build/qimg}
QEMU_IMG=${QEMU_IMG:-/usr/bin/qemu-img}
BENCH_DIR=${BENCH_DIR:-/var/tmp/qimg-bench}
QUICK=${BENCH_QUICK:-0}
RUNS=${BENCH_RUNS:-$([ "$QUICK" = 1 ] && echo 3 || echo 5)}
GEN="python3 $TOP/bench/gen.py"

die() { echo "bench: $*" >&2; exit 1; }
# wanted NAME...: is any of these workloads selected by BENCH_ONLY?
wanted() {
    [ -z "${BENCH_ONLY:-}" ] && return 0
    local n p
    for n in "$@"; do
        for p in ${BENCH_ONLY//,/ }; do
            case "$n" in *"$p"*) return 0 ;; esac
        done
    done
    return 1
}
[ -x "$QIMG" ] || die "no qimg binary at $QIMG (make first, or set QIMG)"
[ -x "$QEMU_IMG" ] || die "no qemu-img at $QEMU_IMG"
QIMG=$(cd "$(dirname "$QIMG")" && pwd)/$(basename "$QIMG")

can_drop_caches() { [ "$(id -u)" = 0 ] && [ -w /proc/sys/vm/drop_caches ]; }
CACHE=${BENCH_CACHE:-$(can_drop_caches && echo cold || echo warm)}
if [ "$CACHE" = cold ] && ! can_drop_caches; then
    echo "bench: cannot drop the page cache (needs root); measuring with a warm cache" >&2
    CACHE=warm
fi

if [ "$QUICK" = 1 ]; then
    SPARSE_SIZE=256M SPARSE_DATA=16M DENSE_SIZE=64M CMP_SIZE=128M CMP_DATA=32M FRAG_COUNT=2000
    CHAIN_CHUNKS=8
else
    SPARSE_SIZE=16G SPARSE_DATA=1G DENSE_SIZE=2G CMP_SIZE=4G CMP_DATA=1G FRAG_COUNT=20000
    CHAIN_CHUNKS=100
fi
QEMU_IO=${QEMU_IO:-/usr/bin/qemu-io}
CHAIN_LAYERS=10

mkdir -p "$BENCH_DIR/in" "$BENCH_DIR/out" || die "cannot create $BENCH_DIR"
HTTPD_PID="" HTTPD_CAP_PID=""
cleanup() {
    [ -n "$HTTPD_PID" ] && kill "$HTTPD_PID" 2>/dev/null && wait "$HTTPD_PID" 2>/dev/null
    [ -n "$HTTPD_CAP_PID" ] && kill "$HTTPD_CAP_PID" 2>/dev/null && wait "$HTTPD_CAP_PID" 2>/dev/null
    rm -rf "$BENCH_DIR/out"
    [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$BENCH_DIR"
}
trap cleanup EXIT
IN=$BENCH_DIR/in OUT=$BENCH_DIR/out

# make NAME GEN-ARGS...: an input image, regenerated when its parameters
# changed since a kept run.
make_input() {
    local name=$1; shift
    local stamp="$*"
    if [ -f "$IN/$name" ] && [ "$(cat "$IN/$name.stamp" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    echo "bench: generating $name ($stamp)" >&2
    rm -f "$IN/$name" "$IN/$name.stamp"
    $GEN "$@" >/dev/null || die "generating $name failed"
    echo "$stamp" > "$IN/$name.stamp"
}

wanted convert-sparse convert-qcow2 qcow2-to-raw raw-to-vhdx-sparse vhdx-sparse-to-raw \
       vdi-sparse vpc-sparse vmdk-sparse copy-limit-sparse &&
    make_input sparse.raw sparse "$IN/sparse.raw" "$SPARSE_SIZE" "$SPARSE_DATA" --seed 1
wanted convert-dense qcow2-c-zlib qcow2-c-zstd raw-to-vhdx-dense vhdx-dense-to-raw \
       vdi-dense vpc-dense vmdk-dense copy-limit-dense vmdk-stream \
       raw-to-qed-dense qed-dense-to-raw raw-to-qcow-dense http-raw-to-raw http-qcow2-to-raw \
       httpcap-raw-to-raw httpcap-qcow2-to-raw httpcap-qcow2-to-qcow2 &&
    make_input dense.raw dense "$IN/dense.raw" "$DENSE_SIZE" --seed 2
if wanted compare; then
    make_input cmp-a.raw sparse "$IN/cmp-a.raw" "$CMP_SIZE" "$CMP_DATA" --seed 3
    make_input cmp-b.raw sparse "$IN/cmp-b.raw" "$CMP_SIZE" "$CMP_DATA" --seed 3 --fill-holes
fi
wanted map && make_input frag.raw frag "$IN/frag.raw" "$FRAG_COUNT" --seed 4

# A backing chain of qcow2 images l0 (the base) .. l9 (the top), 2 GiB
# virtual: layer i holds CHAIN_CHUNKS MiB of pattern i+1, in 1 MiB pieces
# at offsets no other layer writes (written by qemu-io, deterministic).
make_chain() {
    local dir=$IN/chain stamp="chain $CHAIN_LAYERS x $CHAIN_CHUNKS MiB" i k args
    if [ "$(cat "$dir/stamp" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    echo "bench: generating the chain ($stamp)" >&2
    rm -rf "$dir" && mkdir -p "$dir" || die "cannot create $dir"
    for ((i = 0; i < CHAIN_LAYERS; i++)); do
        if ((i == 0)); then
            "$QEMU_IMG" create -q -f qcow2 "$dir/l0.qcow2" 2G
        else
            "$QEMU_IMG" create -q -f qcow2 -b "l$((i - 1)).qcow2" -F qcow2 "$dir/l$i.qcow2" 2G
        fi || die "creating layer $i failed"
        args=()
        for ((k = 0; k < CHAIN_CHUNKS; k++)); do
            args+=(-c "write -P $((i + 1)) $(((k * CHAIN_LAYERS + i) * 2))M 1M")
        done
        "$QEMU_IO" -f qcow2 "${args[@]}" "$dir/l$i.qcow2" >/dev/null || die "writing layer $i failed"
    done
    echo "$stamp" > "$dir/stamp"
}
CHAIN_TOP=l$((CHAIN_LAYERS - 1)).qcow2
# A run's copy of the chain in $OUT: hard links to the layers it only
# reads, a real copy of the one it writes.
chain_copy() {
    local written=$1 f
    for f in "$IN"/chain/*.qcow2; do
        if [ "$(basename "$f")" = "$written" ]; then cp "$f" "$OUT/"; else ln "$f" "$OUT/"; fi
    done
}
wanted rebase-chain commit-chain info-chain info-one && make_chain

# commit-top50 (issue 13): a chain of 50 qcow2 layers, top50/l0 .. l49,
# TOP50_SIZE virtual; layer i holds 128 clusters of 64 KiB of pattern
# i+1, spread evenly over the disk (one every TOP50_SIZE/128), the clusters
# of layer i at a distance of i clusters from those of layer 0: committing
# l49 into l48 has 8 MiB to copy, while every layer below holds metadata
# of its own all over the disk that the commit has no reason to read.
TOP50_SIZE=$([ "$QUICK" = 1 ] && echo 1G || echo 16G)
make_top50() {
    local dir=$IN/top50 stamp="top50 50 x 128 x 64k over $TOP50_SIZE" i k args step
    if [ "$(cat "$dir/stamp" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    echo "bench: generating the 50-layer chain ($stamp)" >&2
    rm -rf "$dir" && mkdir -p "$dir" || die "cannot create $dir"
    "$QEMU_IMG" create -q -f qcow2 "$dir/l0.qcow2" "$TOP50_SIZE" || die "creating top50 layer 0 failed"
    for ((i = 1; i < 50; i++)); do
        "$QEMU_IMG" create -q -f qcow2 -b "l$((i - 1)).qcow2" -F qcow2 "$dir/l$i.qcow2" "$TOP50_SIZE" ||
            die "creating top50 layer $i failed"
    done
    step=$(( $("$QEMU_IMG" info --output=json "$dir/l0.qcow2" |
               python3 -c 'import json, sys; print(json.load(sys.stdin)["virtual-size"])') / 128 ))
    for ((i = 0; i < 50; i++)); do
        args=()
        for ((k = 0; k < 128; k++)); do
            args+=(-c "write -P $((i + 1)) $((k * step + i * 65536)) 64k")
        done
        "$QEMU_IO" -f qcow2 "${args[@]}" "$dir/l$i.qcow2" >/dev/null || die "writing top50 layer $i failed"
    done
    echo "$stamp" > "$dir/stamp"
}
# A run's copy of the 50-layer chain: l48 and l49 (both written) copied,
# the others linked.
top50_copy() {
    local f
    for f in "$IN"/top50/*.qcow2; do
        case "$(basename "$f")" in
        l48.qcow2|l49.qcow2) cp "$f" "$OUT/" ;;
        *) ln "$f" "$OUT/" ;;
        esac
    done
}
wanted commit-top50 && make_top50

# check-prealloc, map-4k, measure-4k (issue 13): metadata-preallocated
# images made by qemu-img (sparse files: only the metadata is written):
# 1 TiB of 64 KiB clusters (16M clusters, 128 MiB of L2 tables), and
# 16 GiB of 4 KiB clusters (4M clusters, 4096 L2 tables of 4 KiB).
PREALLOC_SIZE=$([ "$QUICK" = 1 ] && echo 16G || echo 1T)
M4K_SIZE=$([ "$QUICK" = 1 ] && echo 1G || echo 16G)
make_prealloc() {   # NAME SIZE CREATE-OPTIONS
    local stamp="prealloc $2 $3"
    if [ -f "$IN/$1" ] && [ "$(cat "$IN/$1.stamp" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    echo "bench: generating $1 ($stamp)" >&2
    rm -f "$IN/$1" "$IN/$1.stamp"
    "$QEMU_IMG" create -q -f qcow2 -o "$3" "$IN/$1" "$2" || die "creating $1 failed"
    echo "$stamp" > "$IN/$1.stamp"
}
wanted check-prealloc && make_prealloc prealloc.qcow2 "$PREALLOC_SIZE" preallocation=metadata
wanted map-4k measure-4k && make_prealloc m4k.qcow2 "$M4K_SIZE" cluster_size=4k,preallocation=metadata
sync

# Workloads: name | description | arguments | check after qimg's last run
# [| preparation of $OUT before each run, not timed]
# ($IN/$OUT expanded at run time).  Plain command lines, as a user types
# them (formats probed, no -p).
WORKLOADS=(
    "convert-sparse|convert raw→raw, $SPARSE_SIZE sparse, $SPARSE_DATA scattered data|convert -O raw \$IN/sparse.raw \$OUT/t.raw|compare -f raw -F raw \$IN/sparse.raw \$OUT/t.raw"
    "convert-dense|convert raw→raw, $DENSE_SIZE dense|convert -O raw \$IN/dense.raw \$OUT/t.raw|compare -f raw -F raw \$IN/dense.raw \$OUT/t.raw"
    "compare|compare $CMP_SIZE, $CMP_DATA data, sparse vs fully allocated|compare \$IN/cmp-a.raw \$IN/cmp-b.raw|"
    "map|map --output=json, $FRAG_COUNT data extents|map --output=json \$IN/frag.raw|"
)
# qcow2 output once qimg can create qcow2
if "$QIMG" create -q -f qcow2 "$OUT/probe.qcow2" 1M >/dev/null 2>&1; then
    WORKLOADS+=("convert-qcow2|convert raw→qcow2, $SPARSE_SIZE sparse, $SPARSE_DATA data|convert -O qcow2 \$IN/sparse.raw \$OUT/t.qcow2|compare -f raw -F qcow2 \$IN/sparse.raw \$OUT/t.qcow2")
fi

# qcow2 sources (issue 3): the sparse image as qcow2, and 256 MiB of
# compressible data (base64 text of random bytes) for -c, both made by
# qemu-img so the two tools read the same files.
if "$QIMG" create -q -f qcow2 "$OUT/probe.qcow2" 1M >/dev/null 2>&1; then
    if wanted qcow2-to-raw && [ ! -f "$IN/sparse.qcow2" ]; then
        "$QEMU_IMG" convert -O qcow2 "$IN/sparse.raw" "$IN/sparse.qcow2" || die "making sparse.qcow2 failed"
    fi
    if wanted qcow2-c-zlib qcow2-c-zstd && [ ! -f "$IN/c.qcow2" ]; then
        head -c $((192 << 20)) "$IN/dense.raw" | base64 -w 0 | head -c $((256 << 20)) > "$IN/c.raw" &&
            "$QEMU_IMG" convert -f raw -O qcow2 "$IN/c.raw" "$IN/c.qcow2" || die "making c.qcow2 failed"
        rm -f "$IN/c.raw"
    fi
    WORKLOADS+=("qcow2-to-raw|convert qcow2→raw, $SPARSE_SIZE with $SPARSE_DATA data|convert -O raw \$IN/sparse.qcow2 \$OUT/t.raw|compare -f qcow2 -F raw \$IN/sparse.qcow2 \$OUT/t.raw")
    WORKLOADS+=("qcow2-c-zlib|convert qcow2→qcow2 -c (zlib)|convert -c -O qcow2 \$IN/c.qcow2 \$OUT/t.qcow2|compare -f qcow2 -F qcow2 \$IN/c.qcow2 \$OUT/t.qcow2")
    WORKLOADS+=("qcow2-c-zstd|convert qcow2→qcow2 -c (zstd)|convert -c -O qcow2 -o compression_type=zstd \$IN/c.qcow2 \$OUT/t.qcow2|compare -f qcow2 -F qcow2 \$IN/c.qcow2 \$OUT/t.qcow2")
fi

# The hypervisors' formats (issue 14): raw→vdi, raw→vpc and raw→vmdk
# (monolithicSparse) and back, on the
# sparse and the dense input; the sources in those formats made by qemu-img
# (untimed).  The copy limit: cp --sparse=always of the same raw bytes in
# the qemu-img column, qimg's raw→raw copy beside it.
for f in vdi:vdi vpc:vhd vmdk:vmdk; do
    fmt=${f%%:*} ext=${f#*:}
    for kind in sparse dense; do
        wanted "$fmt-$kind" || continue
        src=$IN/$kind.$ext
        if [ ! -f "$src" ] || [ "$src" -ot "$IN/$kind.raw" ]; then
            "$QEMU_IMG" convert -f raw -O "$fmt" "$IN/$kind.raw" "$src" || die "making $kind.$ext failed"
        fi
        [ $kind = sparse ] && what="$SPARSE_SIZE sparse, $SPARSE_DATA data" || what="$DENSE_SIZE dense"
        WORKLOADS+=("raw-to-$fmt-$kind|convert raw→$fmt, $what|convert -O $fmt \$IN/$kind.raw \$OUT/t.$ext|compare -f raw -F $fmt \$IN/$kind.raw \$OUT/t.$ext")
        WORKLOADS+=("$fmt-to-raw-$kind|convert $fmt→raw, $what|convert -O raw \$IN/$kind.$ext \$OUT/t.raw|compare -f $fmt -F raw \$IN/$kind.$ext \$OUT/t.raw")
    done
done
for kind in sparse dense; do
    [ $kind = sparse ] && what="$SPARSE_SIZE sparse, $SPARSE_DATA data" || what="$DENSE_SIZE dense"
    WORKLOADS+=("copy-limit-$kind|the copy limit: cp --sparse=always (qemu-img column) vs qimg convert raw→raw, $what|convert -O raw \$IN/$kind.raw \$OUT/t.raw|compare -f raw -F raw \$IN/$kind.raw \$OUT/t.raw||cp --sparse=always \$IN/$kind.raw \$OUT/t.raw")
done

# encryption (issue 15): the dense image into a LUKS volume and into qcow2
# with LUKS, and a LUKS volume (made by qemu-img) back to raw.  AES-NI
# through OpenSSL on every worker thread; iter-time=100 keeps the keyslot's
# PBKDF2 (timed by both tools) a small part of the run.
if "$QIMG" create -q -f luks --object secret,id=s0,data=p -o key-secret=s0,iter-time=1 "$OUT/probe.luks" 1M >/dev/null 2>&1; then
    SEC="--object secret,id=s0,data=benchpass"
    if wanted luks-to-raw; then
        make_input dense.raw dense "$IN/dense.raw" "$DENSE_SIZE" --seed 2
        if [ ! -f "$IN/dense.luks" ]; then
            for i in 1 2 3; do
                "$QEMU_IMG" convert $SEC -O luks -o key-secret=s0,iter-time=100 "$IN/dense.raw" "$IN/dense.luks" && break
            done
            [ -f "$IN/dense.luks" ] || die "making dense.luks failed"
        fi
    fi
    wanted raw-to-luks raw-to-qcow2-luks && make_input dense.raw dense "$IN/dense.raw" "$DENSE_SIZE" --seed 2
    # qemu-img's PBKDF2 timing fails now and then on a loaded machine
    # ("Unable to get accurate CPU usage"): its run is retried then
    retry() { echo "for i in 1 2 3; do \$QEMU_IMG $1 && exit 0; done; exit 1"; }
    WORKLOADS+=("raw-to-luks|convert raw→luks, $DENSE_SIZE dense|convert $SEC -O luks -o key-secret=s0,iter-time=100 \$IN/dense.raw \$OUT/t.luks|compare $SEC --image-opts driver=raw,file.filename=\$IN/dense.raw driver=luks,file.filename=\$OUT/t.luks,key-secret=s0||$(retry "convert $SEC -O luks -o key-secret=s0,iter-time=100 \$IN/dense.raw \$OUT/t.luks")")
    WORKLOADS+=("luks-to-raw|convert luks→raw, $DENSE_SIZE dense|convert $SEC --image-opts driver=luks,file.filename=\$IN/dense.luks,key-secret=s0 -O raw \$OUT/t.raw|compare $SEC --image-opts driver=raw,file.filename=\$IN/dense.raw driver=luks,file.filename=\$IN/dense.luks,key-secret=s0")
    WORKLOADS+=("raw-to-qcow2-luks|convert raw→qcow2 with LUKS, $DENSE_SIZE dense|convert $SEC -O qcow2 -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=100 \$IN/dense.raw \$OUT/t.qcow2|compare $SEC --image-opts driver=raw,file.filename=\$IN/dense.raw driver=qcow2,file.filename=\$OUT/t.qcow2,encrypt.key-secret=s0||$(retry "convert $SEC -O qcow2 -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=100 \$IN/dense.raw \$OUT/t.qcow2")")
    # serpent-256-xts (nettle in qimg and in qemu-img): the ciphers OpenSSL lacks
    if "$QIMG" create -q -f luks --object secret,id=s0,data=p -o key-secret=s0,iter-time=1,cipher-alg=serpent-256 \
           "$OUT/probe.luks" 1M >/dev/null 2>&1; then
        wanted raw-to-luks-serpent && make_input dense.raw dense "$IN/dense.raw" "$DENSE_SIZE" --seed 2
        SO="key-secret=s0,iter-time=100,cipher-alg=serpent-256"
        WORKLOADS+=("raw-to-luks-serpent|convert raw→luks serpent-256-xts (nettle), $DENSE_SIZE dense|convert $SEC -O luks -o $SO \$IN/dense.raw \$OUT/t.luks|compare $SEC --image-opts driver=raw,file.filename=\$IN/dense.raw driver=luks,file.filename=\$OUT/t.luks,key-secret=s0||$(retry "convert $SEC -O luks -o $SO \$IN/dense.raw \$OUT/t.luks")")
    fi
fi

# vhdx (issue 14): raw→vhdx of the sparse and the dense image, and back
# from vhdx copies of them made by qemu-img
if "$QIMG" create -q -f vhdx "$OUT/probe.vhdx" 1M >/dev/null 2>&1; then
    for v in sparse dense; do
        if wanted vhdx-$v-to-raw && [ ! -f "$IN/$v.vhdx" ]; then
            "$QEMU_IMG" convert -O vhdx "$IN/$v.raw" "$IN/$v.vhdx" || die "making $v.vhdx failed"
        fi
    done
    WORKLOADS+=("raw-to-vhdx-sparse|convert raw→vhdx, $SPARSE_SIZE sparse, $SPARSE_DATA data|convert -O vhdx \$IN/sparse.raw \$OUT/t.vhdx|compare -f raw -F vhdx \$IN/sparse.raw \$OUT/t.vhdx")
    WORKLOADS+=("raw-to-vhdx-dense|convert raw→vhdx, $DENSE_SIZE dense|convert -O vhdx \$IN/dense.raw \$OUT/t.vhdx|compare -f raw -F vhdx \$IN/dense.raw \$OUT/t.vhdx")
    WORKLOADS+=("vhdx-sparse-to-raw|convert vhdx→raw, $SPARSE_SIZE with $SPARSE_DATA data|convert -O raw \$IN/sparse.vhdx \$OUT/t.raw|compare -f vhdx -F raw \$IN/sparse.vhdx \$OUT/t.raw")
    WORKLOADS+=("vhdx-dense-to-raw|convert vhdx→raw, $DENSE_SIZE dense|convert -O raw \$IN/dense.vhdx \$OUT/t.raw|compare -f vhdx -F raw \$IN/dense.vhdx \$OUT/t.raw")
fi

# qed and qcow (issue 15): raw→qed and back from a qed copy made by
# qemu-img, raw→qcow, of the dense image
if "$QIMG" create -q -f qed "$OUT/probe.qed" 1M >/dev/null 2>&1; then
    if wanted qed-dense-to-raw && [ ! -f "$IN/dense.qed" ]; then
        "$QEMU_IMG" convert -O qed "$IN/dense.raw" "$IN/dense.qed" || die "making dense.qed failed"
    fi
    WORKLOADS+=("raw-to-qed-dense|convert raw→qed, $DENSE_SIZE dense|convert -O qed \$IN/dense.raw \$OUT/t.qed|compare -f raw -F qed \$IN/dense.raw \$OUT/t.qed")
    WORKLOADS+=("qed-dense-to-raw|convert qed→raw, $DENSE_SIZE dense|convert -O raw \$IN/dense.qed \$OUT/t.raw|compare -f qed -F raw \$IN/dense.qed \$OUT/t.raw")
fi
if "$QIMG" create -q -f qcow "$OUT/probe.qcow" 1M >/dev/null 2>&1; then
    WORKLOADS+=("raw-to-qcow-dense|convert raw→qcow, $DENSE_SIZE dense|convert -O qcow \$IN/dense.raw \$OUT/t.qcow|compare -f raw -F qcow \$IN/dense.raw \$OUT/t.qcow")
fi

# bochs (issue 17): a growing image bximage makes of dense data, to raw.
# qemu-img reads bochs one sector at a time (a 1-byte read of the bitmap
# for each): 256 MiB keeps its runs near a minute
BOCHS_SIZE=$([ "$QUICK" = 1 ] && echo 16M || echo 256M)
if command -v bximage >/dev/null && wanted bochs-to-raw; then
    make_input bochs-$BOCHS_SIZE.raw dense "$IN/bochs-$BOCHS_SIZE.raw" "$BOCHS_SIZE" --seed 6
    if [ ! -f "$IN/bochs-$BOCHS_SIZE.bochs" ]; then
        bximage -q -func=convert -imgmode=growing "$IN/bochs-$BOCHS_SIZE.raw" "$IN/bochs-$BOCHS_SIZE.bochs" >/dev/null ||
            die "making dense.bochs failed"
    fi
    WORKLOADS+=("bochs-to-raw|convert bochs→raw, $BOCHS_SIZE dense (bximage's)|convert -O raw \$IN/bochs-$BOCHS_SIZE.bochs \$OUT/t.raw|compare -f bochs -F raw \$IN/bochs-$BOCHS_SIZE.bochs \$OUT/t.raw")
fi
# cloop and dmg (issue 17): compressible data (base64 text of random bytes,
# about 1.3:1 with zlib, every block decoded) as a cloop made by
# create_compressed_fs (64 KiB blocks) and as a dmg of 1 MiB zlib chunks
# made by tests/cli/dmg-craft.py; both tools read the same files.
ARCHIVE_SIZE=$([ "$QUICK" = 1 ] && echo 64M || echo 1G)
make_archive_text() {
    local stamp="text $ARCHIVE_SIZE seed 7"
    [ "$(cat "$IN/text.stamp" 2>/dev/null)" = "$stamp" ] && return 0
    make_input text-src.raw dense "$IN/text-src.raw" "$ARCHIVE_SIZE" --seed 7
    base64 -w 0 "$IN/text-src.raw" | head -c "$(numfmt --from=iec "$ARCHIVE_SIZE")" > "$IN/text.raw" ||
        die "making text.raw failed"
    rm -f "$IN/text-src.raw" "$IN/text-src.raw.stamp" "$IN/text.cloop" "$IN/text.dmg"
    echo "$stamp" > "$IN/text.stamp"
}
if wanted cloop-to-raw && command -v create_compressed_fs >/dev/null; then
    make_archive_text
    if [ ! -f "$IN/text.cloop" ]; then
        echo "bench: making text.cloop with create_compressed_fs" >&2
        create_compressed_fs -q -B 65536 "$IN/text.raw" "$IN/text.cloop" >/dev/null 2>&1 ||
            die "making text.cloop failed"
    fi
    WORKLOADS+=("cloop-to-raw|convert cloop→raw, $ARCHIVE_SIZE of text, 64 KiB zlib blocks (create_compressed_fs)|convert -O raw \$IN/text.cloop \$OUT/t.raw|compare -f cloop -F raw \$IN/text.cloop \$OUT/t.raw")
fi
if wanted dmg-to-raw; then
    make_archive_text
    if [ ! -f "$IN/text.dmg" ]; then
        /usr/bin/python3 "$TOP/tests/cli/dmg-craft.py" "$IN/text.raw" "$IN/text.dmg" zlib:2048 ||
            die "making text.dmg failed"
    fi
    WORKLOADS+=("dmg-to-raw|convert dmg→raw, $ARCHIVE_SIZE of text, 1 MiB zlib chunks|convert -O raw \$IN/text.dmg \$OUT/t.raw|compare -f dmg -F raw \$IN/text.dmg \$OUT/t.raw")
fi

# check (issue 4): 16 GiB qcow2 images, 64 KiB and 4 KiB clusters, with
# 16384 writes of 64 KiB at seeded random places (1 GiB of data).
make_check_image() {   # NAME CLUSTER_SIZE
    [ -f "$IN/$1" ] && return 0
    local n=$((QUICK == 1 ? 512 : 16384)) size=$((QUICK == 1 ? 1 : 16))
    "$QEMU_IMG" create -q -f qcow2 -o cluster_size=$2 "$IN/$1" ${size}G || die "creating $1 failed"
    python3 -c "import random; r = random.Random(5)
for _ in range($n): print('write -P %d %d 64k' % (r.randrange(1, 255), r.randrange(0, $size * 16384) * 65536))" |
        "$QEMU_IO" -f qcow2 "$IN/$1" >/dev/null || die "writing $1 failed"
}
CHECK_SIZE=$([ "$QUICK" = 1 ] && echo 1G || echo 16G)
if wanted check-qcow2-64k check-qcow2-4k; then
    make_check_image check64k.qcow2 64k
    make_check_image check4k.qcow2 4k
    WORKLOADS+=("check-qcow2-64k|check, $CHECK_SIZE qcow2, 64 KiB clusters, random 64 KiB writes|check \$IN/check64k.qcow2|")
    WORKLOADS+=("check-qcow2-4k|check, $CHECK_SIZE qcow2, 4 KiB clusters, random 64 KiB writes|check \$IN/check4k.qcow2|")
fi
WORKLOADS+=("check-prealloc|check, $PREALLOC_SIZE qcow2, metadata preallocated (64 KiB clusters)|check \$IN/prealloc.qcow2|")
WORKLOADS+=("map-4k|map --output=json, $M4K_SIZE qcow2, 4 KiB clusters, metadata preallocated|map --output=json \$IN/m4k.qcow2|")
WORKLOADS+=("measure-4k|measure -O qcow2, $M4K_SIZE qcow2, 4 KiB clusters, metadata preallocated|measure -O qcow2 \$IN/m4k.qcow2|")

# The backing-chain workloads need qimg's qcow2 write path.
if "$QIMG" create -q -f qcow2 "$OUT/probe.qcow2" 1M >/dev/null 2>&1; then
    CHAIN_DATA=$((CHAIN_LAYERS * CHAIN_CHUNKS))
    WORKLOADS+=("rebase-chain|rebase onto the base of a $CHAIN_LAYERS-layer qcow2 chain, $CHAIN_DATA MiB of data|rebase -b l0.qcow2 -F qcow2 \$OUT/$CHAIN_TOP|compare -f qcow2 -F qcow2 \$OUT/$CHAIN_TOP \$IN/chain/$CHAIN_TOP|chain_copy $CHAIN_TOP")
    WORKLOADS+=("commit-chain|commit a $CHAIN_LAYERS-layer qcow2 chain into its base, $CHAIN_DATA MiB of data|commit -b l0.qcow2 \$OUT/$CHAIN_TOP|compare -f qcow2 -F qcow2 \$OUT/l0.qcow2 \$IN/chain/$CHAIN_TOP|chain_copy l0.qcow2")
    # what libvirt and OpenStack run for every image they look at: mostly
    # start-up (libraries loaded) and a few small reads
    WORKLOADS+=("info-one|info --output=json of one qcow2 (2 GiB, 100 MiB data)|info -U --output=json \$IN/chain/l0.qcow2|")
    WORKLOADS+=("info-chain|info --backing-chain of a $CHAIN_LAYERS-layer qcow2 chain, as libvirt asks|info -U --backing-chain --output=json \$IN/chain/$CHAIN_TOP|")
    WORKLOADS+=("commit-top50|commit the top of a 50-layer qcow2 chain ($TOP50_SIZE) into its parent: 128 clusters of 64 KiB|commit \$OUT/l49.qcow2|compare -f qcow2 -F qcow2 \$OUT/l48.qcow2 \$IN/top50/l49.qcow2|top50_copy")
fi

# convert -D (issue 7): a base qcow2 with DIFF_DATA of data and a source
# that is a full copy of it with 5% of the base's data clusters rewritten.
# qemu-img has no -D: its best recipe is an overlay of the source rebased
# (safe mode) onto the base, timed as the two commands together.
DIFF_SIZE=$([ "$QUICK" = 1 ] && echo 1G || echo 16G)
DIFF_DATA=$([ "$QUICK" = 1 ] && echo 128M || echo 2G)
make_diff_inputs() {
    local stamp="diff $DIFF_SIZE $DIFF_DATA"
    if [ "$(cat "$IN/diff.stamp" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    echo "bench: generating the diff inputs ($stamp)" >&2
    $GEN sparse "$IN/diff.raw" "$DIFF_SIZE" "$DIFF_DATA" --seed 6 >/dev/null &&
        "$QEMU_IMG" convert -f raw -O qcow2 "$IN/diff.raw" "$IN/diff-base.qcow2" &&
        "$QEMU_IMG" convert -f raw -O qcow2 "$IN/diff.raw" "$IN/diff-src.qcow2" || die "diff inputs"
    rm -f "$IN/diff.raw"
    "$QEMU_IMG" map --output=json "$IN/diff-base.qcow2" | python3 -c '
import json, random, sys
r = random.Random(7)
clusters = [o for e in json.load(sys.stdin) if e["data"]
            for o in range(e["start"], e["start"] + e["length"], 65536)]
for o in sorted(r.sample(clusters, len(clusters) // 20)):
    print("write -P %d %d 64k" % (r.randrange(1, 255), o))' |
        "$QEMU_IO" -f qcow2 "$IN/diff-src.qcow2" >/dev/null || die "diff source"
    echo "$stamp" > "$IN/diff.stamp"
}
if wanted convert-diff; then
    if "$QIMG" create -q -f qcow2 "$OUT/probe.qcow2" 1M >/dev/null 2>&1; then
        make_diff_inputs
        WORKLOADS+=("convert-diff|diff image: $DIFF_SIZE qcow2 with $DIFF_DATA of data vs a base differing in 5% of its clusters|convert -D \$IN/diff-base.qcow2 -F qcow2 -O qcow2 \$IN/diff-src.qcow2 \$OUT/t.qcow2|compare -f qcow2 -F qcow2 \$IN/diff-src.qcow2 \$OUT/t.qcow2||\$QEMU_IMG create -q -f qcow2 -b \$IN/diff-src.qcow2 -F qcow2 \$OUT/t.qcow2 && \$QEMU_IMG rebase -b \$IN/diff-base.qcow2 -F qcow2 \$OUT/t.qcow2")
    fi
fi

# vmdk streamOptimized (issue 14): the dense image, every grain compressed
# (incompressible data, the worst case), and back to raw from the file
# qemu-img makes of it (both tools read the same file).
if wanted vmdk-stream; then
    if "$QIMG" create -q -f vmdk -o subformat=streamOptimized "$OUT/probe.vmdk" 1M >/dev/null 2>&1; then
        stamp="dense $DENSE_SIZE seed 2"
        if [ "$(cat "$IN/dense-stream.stamp" 2>/dev/null)" != "$stamp" ]; then
            echo "bench: making dense-stream.vmdk with qemu-img" >&2
            "$QEMU_IMG" convert -f raw -O vmdk -o subformat=streamOptimized "$IN/dense.raw" \
                "$IN/dense-stream.vmdk" || die "making dense-stream.vmdk failed"
            echo "$stamp" > "$IN/dense-stream.stamp"
        fi
        WORKLOADS+=("convert-vmdk-stream|convert raw→vmdk streamOptimized, $DENSE_SIZE dense|convert -O vmdk -o subformat=streamOptimized \$IN/dense.raw \$OUT/t.vmdk|compare -f raw -F vmdk \$IN/dense.raw \$OUT/t.vmdk")
        WORKLOADS+=("vmdk-stream-to-raw|convert vmdk streamOptimized→raw, $DENSE_SIZE dense|convert -O raw \$IN/dense-stream.vmdk \$OUT/t.raw|compare -f vmdk -F raw \$IN/dense-stream.vmdk \$OUT/t.raw")
    fi
    rm -f "$OUT/probe.vmdk"
fi

# create --from (issue 7): a tree of a few thousand files, into qcow2,
# against the pipeline people use today: mke2fs -d into a sparse raw file,
# then qemu-img convert -O qcow2, with the disk size qimg picks.
TREE_SIZE=$([ "$QUICK" = 1 ] && echo 128M || echo 2G)
if wanted create-from; then
    if "$QIMG" create -q -f qcow2 --from "$TOP/bench" "$OUT/probe.qcow2" >/dev/null 2>&1; then
        stamp="tree $TREE_SIZE seed 6"
        if [ "$(cat "$IN/tree.stamp" 2>/dev/null)" != "$stamp" ]; then
            echo "bench: generating the tree ($stamp)" >&2
            rm -rf "$IN/tree" "$IN/tree.stamp"
            $GEN tree "$IN/tree" "$TREE_SIZE" --seed 6 >/dev/null || die "generating the tree failed"
            echo "$stamp" > "$IN/tree.stamp"
        fi
        # the size qimg picks (untimed), for mke2fs
        "$QIMG" create -q -f qcow2 --from "$IN/tree" "$OUT/size.qcow2" || die "create --from failed"
        TREE_DISK=$("$QEMU_IMG" info --output=json "$OUT/size.qcow2" |
                    python3 -c 'import json, sys; print(json.load(sys.stdin)["virtual-size"])')
        rm -f "$OUT/size.qcow2"
        WORKLOADS+=("create-from|create --from a $TREE_SIZE tree into ext4 in qcow2 ($((TREE_DISK >> 20)) MiB disk) vs mke2fs -t ext4 -d into a sparse raw file + qemu-img convert -O qcow2|create -f qcow2 --from \$IN/tree \$OUT/t.qcow2|check \$OUT/t.qcow2||mke2fs -q -F -t ext4 -d \$IN/tree \$OUT/raw.img $((TREE_DISK >> 10))k && \$QEMU_IMG convert -O qcow2 \$OUT/raw.img \$OUT/t.qcow2")
    fi
    rm -f "$OUT/probe.qcow2"
fi

# HTTP (issue 16): the dense image, as raw and as qcow2 (made by qemu-img),
# served by lighttpd on 127.0.0.1, converted to a local raw file.  qemu-img
# 7.2's convert over http hangs in some runs: its run is killed after
# HTTP_HANG seconds and tried again (up to 3 times), the time spent counted.
#
# httpcap-*: the same, from a second lighttpd that sends each connection at
# most NET_CAP MiB/s (connection.kbytes-per-second), as a server or a
# network path that limits each connection does (the case of the issue:
# importers that read over few connections crawl).  The cap, not the disk or
# the copy, is then the limit (2 GiB: ~40 s for one connection; the local
# copy runs at ~1 GiB/s): the time shows how many connections a tool keeps
# busy.  qemu-img 7.2 with its default -m 8 hangs against this server (at
# 2 GiB, 5 tries of 5 hung, each killed after 130 s): its command here is
# -m 1 (the known way round the hang), still killed after CAP_HANG seconds
# (3x its unhung time) and tried again, up to 5 times, the time counted.
HTTP_HANG=${HTTP_HANG:-$([ "$QUICK" = 1 ] && echo 30 || echo 300)}
NET_CAP=${BENCH_NET_CAP:-$([ "$QUICK" = 1 ] && echo 8 || echo 50)}   # MiB/s per connection
LIGHTTPD=$(command -v lighttpd || echo /usr/sbin/lighttpd)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# start_lighttpd PORT CONF-NAME [EXTRA-CONF-LINE]: lighttpd serving $IN; its pid on stdout
start_lighttpd() {
    printf 'server.document-root = "%s"\nserver.bind = "127.0.0.1"\nserver.port = %s\n%s\n' \
        "$IN" "$1" "${3:-}" > "$BENCH_DIR/$2"
    "$LIGHTTPD" -D -f "$BENCH_DIR/$2" >/dev/null 2>&1 </dev/null &
    echo $!
    for _ in $(seq 100); do
        curl -sfI "http://127.0.0.1:$1/dense.raw" >/dev/null 2>&1 && break
        sleep 0.05
    done
}
if wanted http-raw-to-raw http-qcow2-to-raw httpcap-raw-to-raw httpcap-qcow2-to-raw \
          httpcap-qcow2-to-qcow2 && [ -x "$LIGHTTPD" ]; then
    stamp="dense $DENSE_SIZE seed 2"
    if wanted http-qcow2-to-raw httpcap-qcow2-to-raw httpcap-qcow2-to-qcow2 &&
       [ "$(cat "$IN/dense-qcow2.stamp" 2>/dev/null)" != "$stamp" ]; then
        echo "bench: making dense.qcow2 with qemu-img" >&2
        "$QEMU_IMG" convert -f raw -O qcow2 "$IN/dense.raw" "$IN/dense.qcow2" || die "making dense.qcow2 failed"
        echo "$stamp" > "$IN/dense-qcow2.stamp"
    fi
    if wanted http-raw-to-raw http-qcow2-to-raw; then
        HTTP_PORT=$(free_port)
        HTTPD_PID=$(start_lighttpd "$HTTP_PORT" lighttpd.conf)
        H=http://127.0.0.1:$HTTP_PORT
    fi
    if wanted httpcap-raw-to-raw httpcap-qcow2-to-raw httpcap-qcow2-to-qcow2; then
        HTTP_CAP_PORT=$(free_port)
        HTTPD_CAP_PID=$(start_lighttpd "$HTTP_CAP_PORT" lighttpd-cap.conf \
                        "connection.kbytes-per-second = $((NET_CAP * 1024))")
        HC=http://127.0.0.1:$HTTP_CAP_PORT
        CAP_HANG=$(( $(stat -c %s "$IN/dense.raw") / (NET_CAP << 20) * 3 + 10 ))
    fi
    retry="for try in 1 2 3; do timeout $HTTP_HANG \$QEMU_IMG"
    if [ -n "$HTTPD_PID" ] && "$QIMG" info "$H/dense.raw" >/dev/null 2>&1; then
        WORKLOADS+=("http-raw-to-raw|convert raw over HTTP (lighttpd, 127.0.0.1)→local raw, $DENSE_SIZE dense|convert -O raw $H/dense.raw \$OUT/t.raw|compare -f raw -F raw \$IN/dense.raw \$OUT/t.raw||$retry convert -O raw $H/dense.raw \$OUT/t.raw; rc=\$?; [ \$rc = 124 ] || break; done; exit \$rc")
        WORKLOADS+=("http-qcow2-to-raw|convert qcow2 over HTTP (lighttpd, 127.0.0.1)→local raw, $DENSE_SIZE dense|convert -O raw $H/dense.qcow2 \$OUT/t.raw|compare -f raw -F raw \$IN/dense.raw \$OUT/t.raw||$retry convert -O raw $H/dense.qcow2 \$OUT/t.raw; rc=\$?; [ \$rc = 124 ] || break; done; exit \$rc")
    fi
    if [ -n "$HTTPD_CAP_PID" ] && "$QIMG" info "$HC/dense.raw" >/dev/null 2>&1; then
        retry="for try in 1 2 3 4 5; do timeout $CAP_HANG \$QEMU_IMG convert -m 1"
        capdesc="HTTP (lighttpd, 127.0.0.1, each connection capped at $NET_CAP MiB/s: the cap is the limit)"
        WORKLOADS+=("httpcap-raw-to-raw|convert raw over $capdesc→local raw, $DENSE_SIZE dense; qemu-img with -m 1 (its -m 8 hangs here), a hung run killed after ${CAP_HANG} s and retried, the time counted|convert -O raw $HC/dense.raw \$OUT/t.raw|compare -f raw -F raw \$IN/dense.raw \$OUT/t.raw||$retry -O raw $HC/dense.raw \$OUT/t.raw; rc=\$?; [ \$rc = 124 ] || break; done; exit \$rc")
        WORKLOADS+=("httpcap-qcow2-to-raw|convert qcow2 over $capdesc→local raw, $DENSE_SIZE dense; qemu-img with -m 1 (its -m 8 hangs here), a hung run killed after ${CAP_HANG} s and retried, the time counted|convert -O raw $HC/dense.qcow2 \$OUT/t.raw|compare -f raw -F raw \$IN/dense.raw \$OUT/t.raw||$retry -O raw $HC/dense.qcow2 \$OUT/t.raw; rc=\$?; [ \$rc = 124 ] || break; done; exit \$rc")
        # a qcow2 target is written in guest order (its layout as qemu-img's):
        # the workers read ahead of the writes (convert.c's parking)
        WORKLOADS+=("httpcap-qcow2-to-qcow2|convert qcow2 over $capdesc→local qcow2 (written in guest order), $DENSE_SIZE dense; qemu-img with -m 1 (its -m 8 hangs here), a hung run killed after ${CAP_HANG} s and retried, the time counted|convert -O qcow2 $HC/dense.qcow2 \$OUT/t.qcow2|compare -f raw -F qcow2 \$IN/dense.raw \$OUT/t.qcow2||$retry -O qcow2 $HC/dense.qcow2 \$OUT/t.qcow2; rc=\$?; [ \$rc = 124 ] || break; done; exit \$rc")
    fi
fi

# Ceph RBD (issue 16): a throw-away one-node cluster (tests/cli/lib-ceph.sh,
# its OSD keeps the objects in memory).  rbd-import: the dense image into
# a new RBD image.  rbd-incremental: an RBD volume of the same size, a
# full backup of its snapshot s1 (untimed), 5% of its 64 KiB clusters
# rewritten at random, snapshot s2; qimg writes the increment with
# convert -D --from-snapshot (reading only what changed), qemu-img's
# recipe is an overlay of the snapshot rebased onto the full backup (its
# way to write only the differences: it reads both whole).
if wanted rbd-import rbd-incremental; then
    . "$TOP/tests/cli/lib-ceph.sh"
    CEPH_MEMSTORE_BYTES=$([ "$QUICK" = 1 ] && echo $((1 << 30)) || echo $((10 << 30)))
    trap 'ceph_stop; declare -F stop_nbd >/dev/null && stop_nbd; cleanup' EXIT
    if [ -n "$(ceph_missing)" ]; then
        echo "bench: no rbd rows: missing $(ceph_missing)" >&2
    elif ! "$QEMU_IMG" --help | grep -q '^Supported formats:.* rbd'; then
        echo "bench: no rbd rows: qemu-img without rbd" >&2
    elif ! ceph_start "$BENCH_DIR/ceph"; then
        echo "bench: no rbd rows: the cluster did not start: $CEPH_WHY" >&2
    else
        ceph_pool bench || die "ceph pool"
        make_input dense.raw dense "$IN/dense.raw" "$DENSE_SIZE" --seed 2
        if wanted rbd-import; then
            WORKLOADS+=("rbd-import|convert raw→rbd, $DENSE_SIZE dense, into a new RBD image|convert -O raw \$IN/dense.raw rbd:bench/t|compare -f raw -F raw \$IN/dense.raw rbd:bench/t|rbd rm bench/t >/dev/null 2>&1; true")
        fi
        if wanted rbd-incremental; then
            echo "bench: making the rbd volume, its full backup and a 5% change" >&2
            rbd import --no-progress "$IN/dense.raw" bench/vol >/dev/null 2>&1 || die "rbd import"
            rbd snap create bench/vol@s1 >/dev/null 2>&1 || die "rbd snap create"
            "$QIMG" convert -O qcow2 rbd:bench/vol@s1 "$IN/rbd-base.qcow2" || die "full backup"
            python3 -c 'import random, sys
size = int(sys.argv[1]); r = random.Random(7); n = size // 65536
for c in sorted(r.sample(range(n), n // 20)):
    print("write -P %d %d 64k" % (r.randrange(1, 255), c * 65536))' \
                "$(stat -c %s "$IN/dense.raw")" | "$QEMU_IO" -f raw rbd:bench/vol >/dev/null ||
                die "changing the volume"
            rbd snap create bench/vol@s2 >/dev/null 2>&1 || die "rbd snap create"
            QIMG_RBD_STATS=$BENCH_DIR/rbd-stats "$QIMG" convert -D "$IN/rbd-base.qcow2" -F qcow2 \
                --from-snapshot=s1 -O qcow2 rbd:bench/vol@s2 "$OUT/probe.qcow2" || die "increment"
            echo "bench: rbd-incremental reads $(awk '/^vol@s2 read/ {print $3}' "$BENCH_DIR/rbd-stats") of $(stat -c %s "$IN/dense.raw") bytes" >&2
            rm -f "$OUT/probe.qcow2"
            WORKLOADS+=("rbd-incremental|incremental backup of an RBD snapshot, $DENSE_SIZE with 5% of its 64 KiB clusters changed since the last backup|convert -D \$IN/rbd-base.qcow2 -F qcow2 --from-snapshot=s1 -O qcow2 rbd:bench/vol@s2 \$OUT/t.qcow2|compare -f raw -F qcow2 rbd:bench/vol@s2 \$OUT/t.qcow2||\$QEMU_IMG create -q -f qcow2 -b rbd:bench/vol@s2 -F raw \$OUT/t.qcow2 && \$QEMU_IMG rebase -b \$IN/rbd-base.qcow2 -F qcow2 \$OUT/t.qcow2")
        fi
    fi
fi

# NBD (issue 16): the dense image served by nbdkit (file plugin, read-only,
# multi-conn, its default thread pool) on a unix socket, converted to a
# local raw and qcow2 by both tools.  The servers are this script's
# children, stopped at exit.
#
# nbdcap-*: the same from a second nbdkit whose rate filter caps each
# connection at NET_CAP MiB/s (connection-rate; the filter's default burst
# of 2 s at that rate per connection), so that, as over a network that
# limits each connection, the cap and not the copy is the limit.  The
# filter passes multi-conn through (checked with nbdinfo below).
NBD_PID="" NBD_CAP_PID=""
stop_nbd() {
    [ -n "$NBD_PID" ] && kill "$NBD_PID" 2>/dev/null; NBD_PID=""
    [ -n "$NBD_CAP_PID" ] && kill "$NBD_CAP_PID" 2>/dev/null; NBD_CAP_PID=""
}
# start_nbdkit NAME NBDKIT-ARGS...: nbdkit on $BENCH_DIR/NAME.sock; its pid on stdout
start_nbdkit() {
    local name=$1; shift
    rm -f "$BENCH_DIR/$name.sock" "$BENCH_DIR/$name.pid"
    nbdkit -r -U "$BENCH_DIR/$name.sock" -P "$BENCH_DIR/$name.pid" "$@" || die "nbdkit failed to start"
    for _ in $(seq 100); do [ -s "$BENCH_DIR/$name.pid" ] && break; sleep 0.05; done
    cat "$BENCH_DIR/$name.pid"
}
if wanted nbd-to-raw nbd-to-qcow2 nbdcap-to-raw nbdcap-to-qcow2 && command -v nbdkit >/dev/null &&
   "$QIMG" --help | grep -q '^Supported formats:.* nbd'; then
    make_input dense.raw dense "$IN/dense.raw" "$DENSE_SIZE" --seed 2
    trap 'stop_nbd; declare -F ceph_stop >/dev/null && ceph_stop; cleanup' EXIT
    if wanted nbd-to-raw nbd-to-qcow2; then
        NBD_PID=$(start_nbdkit nbd file "$IN/dense.raw")
        NBD_URI="nbd+unix:///?socket=$BENCH_DIR/nbd.sock"
        WORKLOADS+=("nbd-to-raw|convert NBD (nbdkit, unix socket)→raw, $DENSE_SIZE dense|convert -O raw \$NBD_URI \$OUT/t.raw|compare -f raw -F raw \$IN/dense.raw \$OUT/t.raw")
        WORKLOADS+=("nbd-to-qcow2|convert NBD (nbdkit, unix socket)→qcow2, $DENSE_SIZE dense|convert -O qcow2 \$NBD_URI \$OUT/t.qcow2|compare -f raw -F qcow2 \$IN/dense.raw \$OUT/t.qcow2")
    fi
    if wanted nbdcap-to-raw nbdcap-to-qcow2; then
        NBD_CAP_PID=$(start_nbdkit nbdcap --filter=rate file "$IN/dense.raw" \
                      connection-rate=$((NET_CAP * 8 << 20)))
        NBD_CAP_URI="nbd+unix:///?socket=$BENCH_DIR/nbdcap.sock"
        if command -v nbdinfo >/dev/null; then
            echo "bench: nbdcap: $(nbdinfo "$NBD_CAP_URI" | grep -o 'can_multi_conn: [a-z]*')" >&2
        fi
        capdesc="NBD (nbdkit, unix socket, rate filter: each connection capped at $NET_CAP MiB/s, the cap is the limit)"
        WORKLOADS+=("nbdcap-to-raw|convert $capdesc→raw, $DENSE_SIZE dense|convert -O raw \$NBD_CAP_URI \$OUT/t.raw|compare -f raw -F raw \$IN/dense.raw \$OUT/t.raw")
        WORKLOADS+=("nbdcap-to-qcow2|convert $capdesc→qcow2, $DENSE_SIZE dense|convert -O qcow2 \$NBD_CAP_URI \$OUT/t.qcow2|compare -f raw -F qcow2 \$IN/dense.raw \$OUT/t.qcow2")
    fi
fi

# vvfat (issue 17): a tree of a few thousand files (symlinks among them,
# read as the files they name) served as a FAT16 disk and converted to
# qcow2; the result checked by qemu-img check (the two tools' disks differ
# on purpose: entry order, slack).
VVFAT_TREE=$([ "$QUICK" = 1 ] && echo 64M || echo 256M)
if wanted vvfat-to-qcow2; then
    if "$QIMG" info fat:"$TOP/bench" >/dev/null 2>&1; then
        stamp="tree $VVFAT_TREE seed 8"
        if [ "$(cat "$IN/vtree.stamp" 2>/dev/null)" != "$stamp" ]; then
            echo "bench: generating the vvfat tree ($stamp)" >&2
            rm -rf "$IN/vtree" "$IN/vtree.stamp"
            $GEN tree "$IN/vtree" "$VVFAT_TREE" --seed 8 >/dev/null || die "generating the vvfat tree failed"
            echo "$stamp" > "$IN/vtree.stamp"
        fi
        WORKLOADS+=("vvfat-to-qcow2|convert fat:16: of a $VVFAT_TREE tree → qcow2|convert -O qcow2 fat:16:\$IN/vtree \$OUT/t.qcow2|check \$OUT/t.qcow2")
    fi
fi

prepare_run() {
    rm -rf "$OUT" && mkdir -p "$OUT"
    if [ -n "${1:-}" ]; then eval "$1" || die "preparing the run failed"; fi
    sync
    [ "$CACHE" = cold ] && echo 3 > /proc/sys/vm/drop_caches
}

# Peak memory through GNU time (both tools pay for its fork alike).
GNU_TIME=/usr/bin/time
[ -x "$GNU_TIME" ] && "$GNU_TIME" -f %M -o /dev/null true 2>/dev/null || GNU_TIME=""

# time_one TOOL ARGS...: "SECONDS PEAK-RSS-KiB" on stdout (seconds with 6
# decimals; the RSS "-" without GNU time); output discarded; fails (and
# prints the error) on a non-zero exit.
time_one() {
    local tool=$1; shift
    local t0 t1 rc rss=- wrap=()
    [ -n "$GNU_TIME" ] && wrap=("$GNU_TIME" -f %M -o "$BENCH_DIR/rss")
    t0=$EPOCHREALTIME
    "${wrap[@]}" "$tool" "$@" >/dev/null 2>"$BENCH_DIR/stderr"
    rc=$?
    t1=$EPOCHREALTIME
    if [ $rc -ne 0 ]; then
        echo "bench: '$tool $*' failed (exit $rc):" >&2
        cat "$BENCH_DIR/stderr" >&2
        return 1
    fi
    [ -n "$GNU_TIME" ] && rss=$(tail -1 "$BENCH_DIR/rss")
    awk -v a="$t0" -v b="$t1" -v m="$rss" 'BEGIN { printf "%.6f %s\n", b - a, m }'
}

# largest of the RSS values (KiB) on stdin, in MiB with one decimal
max_mib() { sort -g | tail -1 | awk '$1 != "-" { printf "%.1f", $1 / 1024; next } { print "" }'; }

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

rows=()
for w in "${WORKLOADS[@]}"; do
    IFS='|' read -r name desc argtext verify prep refcmd <<<"$w"
    wanted "$name" || continue
    eval "args=($argtext)"
    cmd=$(printf '%s' "$argtext" | sed 's/\$IN\///g; s/\$OUT\///g')
    ref_times=() new_times=() ref_rss=() new_rss=() failed=""
    # with a warm cache, one untimed run first so that neither tool pays
    # for reading the input into the cache
    if [ "$CACHE" = warm ]; then
        prepare_run "$prep"
        if [ -z "$refcmd" ]; then
            time_one "$QEMU_IMG" "${args[@]}" >/dev/null || failed="qemu-img failed"
        fi
    fi
    for ((i = 1; i <= RUNS && ${#failed} == 0; i++)); do
        # alternate which tool goes first
        if ((i % 2)); then order="ref new"; else order="new ref"; fi
        for who in $order; do
            prepare_run "$prep"
            if [ $who = ref ]; then
                if [ -n "$refcmd" ]; then
                    # qemu-img's recipe for work it has no one command for
                    t=$(time_one bash -c "QEMU_IMG=$QEMU_IMG; IN=$IN; OUT=$OUT; $refcmd") ||
                        { failed="qemu-img failed"; break 2; }
                else
                    t=$(time_one "$QEMU_IMG" "${args[@]}") || { failed="qemu-img failed"; break 2; }
                fi
                ref_times+=("${t% *}") ref_rss+=("${t#* }")
            else
                t=$(time_one "$QIMG" "${args[@]}") || { failed="qimg failed"; break 2; }
                new_times+=("${t% *}") new_rss+=("${t#* }")
            fi
        done
        echo "bench: $name run $i/$RUNS: qemu-img ${ref_times[-1]} s, qimg ${new_times[-1]} s" >&2
    done
    # qimg's output of the last run, checked by qemu-img (not timed)
    if [ -z "$failed" ] && [ -n "$verify" ]; then
        eval "vargs=($verify)"
        if ! "$QEMU_IMG" "${vargs[@]}" >/dev/null 2>&1; then
            failed="qimg's output differs from the source"
        fi
    fi
    if [ -n "$failed" ]; then
        rows+=("| $name | $desc | \`$cmd\` | | | $failed | | | | | |")
        continue
    fi
    ref_med=$(printf '%s\n' "${ref_times[@]}" | median)
    new_med=$(printf '%s\n' "${new_times[@]}" | median)
    ref_min=$(printf '%s\n' "${ref_times[@]}" | sort -g | head -1)
    new_min=$(printf '%s\n' "${new_times[@]}" | sort -g | head -1)
    ratio=$(awk -v a="$new_med" -v b="$ref_med" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
    ratio_min=$(awk -v a="$new_min" -v b="$ref_min" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
    ref_mib=$(printf '%s\n' "${ref_rss[@]}" | max_mib)
    new_mib=$(printf '%s\n' "${new_rss[@]}" | max_mib)
    rows+=("| $name | $desc | \`$cmd\` | $(printf '%.3f' "$ref_med") | $(printf '%.3f' "$new_med") | **$ratio** | $(printf '%.3f' "$ref_min") | $(printf '%.3f' "$new_min") | $ratio_min | $ref_mib | $new_mib |")
done

{
    echo "$RUNS runs of each tool, alternating; page cache: $CACHE."
    echo
    echo "| workload | input | command | qemu-img median (s) | qimg median (s) | qimg/qemu-img | qemu-img min (s) | qimg min (s) | ratio of mins | qemu-img peak RSS (MiB) | qimg peak RSS (MiB) |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
} | tee ${BENCH_OUT:+"$BENCH_OUT"}
