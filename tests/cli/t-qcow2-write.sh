#!/bin/bash
# qcow2 write path against qemu-img: for every option set qimg writes an
# image (convert into a fresh or an existing image, convert -c, -W, dd,
# bench -w) and qemu-img check must find no error and no leak while
# qemu-img compare finds the content identical to the source.  Also:
# overwriting qemu-written images, copy-on-write over backing chains,
# resize, commit, rebase -u and a kill -9 in the middle of a convert.
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

SIZE=$((5 * 1024 * 1024 + 3 * 512))
# source: data, zero runs and holes at aligned and unaligned places
truncate -s $SIZE src.raw
qio src.raw "write -P 0x11 0 300k"
qio src.raw "write -P 0x22 301k 5k"
qio src.raw "write -z 400k 200k"
qio src.raw "write -P 0x33 1000k 1M"
qio src.raw "write -P 0x44 2047k 3k"
qio src.raw "write -P 0x55 3000k 513"
qio src.raw "write -P 0x66 4000k 700k"
qio src.raw "write -P 0x77 $((SIZE - 1024)) 1024"

# same_views NAME FILE: qimg's info (human, json), map (json, human) and
# measure -O qcow2 of an image print what qemu-img's print for it
same_views() {
    local name=$1 img=$2 view x y what=""
    for view in "info" "info --output=json" "map --output=json" "map" "measure -O qcow2"; do
        x=$("$QEMU_IMG" $view "$img" 2>&1; echo "rc=$?")
        y=$("$QIMG_AS_QEMU" $view "$img" 2>&1; echo "rc=$?")
        [ "$x" = "$y" ] || what="$what$view differs:\n$(diff <(echo "$x") <(echo "$y") | head -8)\n"
    done
    if [ -z "$what" ]; then pass "$name: info, map, measure"; else fail "$name: info, map, measure" "$(printf "$what")"; fi
}

# ok_image NAME FILE [REFERENCE]: no errors, no leaks, same content; and
# qimg describes the image as qemu-img does
ok_image() {
    local name=$1 img=$2 ref=${3:-src.raw} out rc
    same_views "$name" "$img"
    out=$("$QEMU_IMG" check "$img" 2>&1); rc=$?
    if [ $rc != 0 ]; then
        fail "$name check" "qemu-img check rc=$rc" "$(echo "$out" | head -5)"
        return
    fi
    if "$QEMU_IMG" compare -q "$ref" "$img" >/dev/null 2>&1; then
        pass "$name"
    else
        fail "$name compare" "$("$QEMU_IMG" compare "$ref" "$img" 2>&1 | head -3)"
    fi
}

OPTSETS=("" "cluster_size=512" "cluster_size=4k" "cluster_size=2M" "compat=0.10"
         "refcount_bits=1" "refcount_bits=8" "refcount_bits=64" "lazy_refcounts=on"
         "extended_l2=on" "compression_type=zstd" "preallocation=metadata"
         "preallocation=full" "data_file=DATA")

for o in "${OPTSETS[@]}"; do
    tag=${o:-default}
    rm -f t.qcow2 t.data
    opts=${o/DATA/t.data}
    # into an image qemu-img created, then again over what it holds
    if "$QEMU_IMG" create -q -f qcow2 ${opts:+-o "$opts"} t.qcow2 $SIZE; then
        "$QIMG" convert -n -O qcow2 src.raw t.qcow2 || fail "convert-n $tag" "convert failed"
        ok_image "convert-n $tag" t.qcow2
        "$QIMG" convert -n -W -m 8 -O qcow2 src.raw t.qcow2 || fail "convert-n-W $tag" "convert failed"
        ok_image "convert-n-W $tag" t.qcow2
    else
        fail "create $tag" "qemu-img create failed"
    fi
    # qimg creates the target
    rm -f c.qcow2 t.data
    "$QIMG" convert -O qcow2 ${opts:+-o "$opts"} src.raw c.qcow2 || fail "convert $tag" "convert failed"
    ok_image "convert $tag" c.qcow2
    # compressed (not with an external data file)
    case $o in *data_file*|*preallocation*) continue ;; esac
    rm -f z.qcow2
    "$QIMG" convert -c -O qcow2 ${opts:+-o "$opts"} src.raw z.qcow2 || fail "convert-c $tag" "convert failed"
    ok_image "convert-c $tag" z.qcow2
    rm -f z.qcow2
    "$QIMG" convert -c -W -m 8 -O qcow2 ${opts:+-o "$opts"} src.raw z.qcow2 ||
        fail "convert-c-W $tag" "convert failed"
    ok_image "convert-c-W $tag" z.qcow2
done

# compressed clusters really are compressed, and an image of them is
# overwritten in place correctly
"$QIMG" convert -c -O qcow2 src.raw cz.qcow2
expect_eq convert-c-compressed "$("$QEMU_IMG" check cz.qcow2 | grep -c '100.00% compressed')" 1
"$QIMG" convert -n -O qcow2 src.raw cz.qcow2
ok_image convert-over-compressed cz.qcow2

# dd into a new qcow2 image
rm -f d.qcow2
"$QIMG" dd -O qcow2 if=src.raw of=d.qcow2 bs=64k || fail dd-qcow2 "dd failed"
ok_image dd-qcow2 d.qcow2

# bench -w (parallel, unaligned requests) against qemu-img bench on a copy
bench_pair() {
    local name=$1 img=$2; shift 2
    cp "$img" b-qemu.qcow2 && cp "$img" b-qimg.qcow2
    "$QEMU_IMG" bench -w "$@" b-qemu.qcow2 >/dev/null 2>&1 || { fail "$name" "qemu-img bench failed"; return; }
    "$QIMG" bench -w "$@" b-qimg.qcow2 >/dev/null 2>&1 || { fail "$name" "qimg bench failed"; return; }
    ok_image "$name" b-qimg.qcow2 b-qemu.qcow2
}
"$QEMU_IMG" convert -O qcow2 src.raw q.qcow2
"$QEMU_IMG" convert -O qcow2 -o extended_l2=on src.raw qx.qcow2
"$QEMU_IMG" create -q -f qcow2 e.qcow2 $SIZE
for args in "-c 60 -s 1000 -S 70000 -o 300" "-c 200 -s 4096 -S 8192 -o 512" \
            "-c 15 -s 200000 -S 300000 -o 7" "-c 300 -s 512 -S 2048"; do
    bench_pair "bench-w-empty $args" e.qcow2 $args --pattern=90 -d 16
    bench_pair "bench-w-data $args" q.qcow2 $args --pattern=91 -d 16
    bench_pair "bench-w-extl2 $args" qx.qcow2 $args --pattern=92 -d 16
done

# copy-on-write over a backing chain (3 deep): partial clusters and
# subclusters read the rest from below
"$QEMU_IMG" convert -O qcow2 src.raw base.qcow2
"$QEMU_IMG" create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
"$QEMU_IO" -f qcow2 -c "write -P 0xab 100k 64k" -c "write -z 1M 300k" mid.qcow2 >/dev/null
for o in "" "extended_l2=on" "compat=0.10" "cluster_size=4k"; do
    tag=${o:-default}
    rm -f top.qcow2
    "$QEMU_IMG" create -q -f qcow2 -b mid.qcow2 -F qcow2 ${o:+-o "$o"} top.qcow2
    bench_pair "cow-chain $tag" top.qcow2 -c 80 -s 1500 -S 65000 -o 100 --pattern=93 -d 8
    # convert from the chain
    rm -f fc.qcow2
    "$QIMG" convert -O qcow2 ${o:+-o "$o"} b-qimg.qcow2 fc.qcow2
    ok_image "convert-from-chain $tag" fc.qcow2 b-qemu.qcow2
done
# a qcow2 target with -B: only the top layer is written
"$QEMU_IO" -f qcow2 -c "write -P 7 100k 300k" -c "write -z 1M 200k" -c "discard 2M 128k" \
    -c "write -P 9 3000k 1k" top.qcow2 >/dev/null
for c in "" "-c"; do
    rm -f ob.qcow2 ob-ref.qcow2
    "$QIMG" convert $c -B mid.qcow2 -F qcow2 -O qcow2 top.qcow2 ob.qcow2
    "$QEMU_IMG" convert $c -B mid.qcow2 -F qcow2 -O qcow2 top.qcow2 ob-ref.qcow2
    ok_image "convert-B$c" ob.qcow2 top.qcow2
    [ -z "$c" ] && expect_eq "convert-B-map" "$("$QEMU_IMG" map --output=json ob.qcow2)" \
        "$("$QEMU_IMG" map --output=json ob-ref.qcow2)"
done

# overwrite a qemu-written image: data over data, zeros and holes over data
# (zero clusters, freed clusters), partial clusters; reference: the source
"$QEMU_IMG" create -q -f qcow2 ow.qcow2 $SIZE
"$QEMU_IO" -f qcow2 -c "write -P 0xee 0 $SIZE" ow.qcow2 >/dev/null
"$QIMG" convert -n -O qcow2 src.raw ow.qcow2
ok_image overwrite-data ow.qcow2
"$QEMU_IMG" create -q -f qcow2 -o compat=0.10 ow2.qcow2 $SIZE
"$QEMU_IO" -f qcow2 -c "write -P 0xee 0 $SIZE" ow2.qcow2 >/dev/null
"$QIMG" convert -n -O qcow2 src.raw ow2.qcow2
ok_image overwrite-data-v2 ow2.qcow2

# resize: grow and shrink as qemu-img does
resize_case() {
    local name=$1; shift
    cp q.qcow2 r-qemu.qcow2 && cp q.qcow2 r-qimg.qcow2
    "$QEMU_IMG" resize -q r-qemu.qcow2 "$@" || { fail "$name" "qemu-img resize failed"; return; }
    "$QIMG" resize -q r-qimg.qcow2 "$@" || { fail "$name" "qimg resize failed"; return; }
    ok_image "$name" r-qimg.qcow2 r-qemu.qcow2
    expect_eq "$name size" "$("$QEMU_IMG" info r-qimg.qcow2 | grep 'virtual size')" \
        "$("$QEMU_IMG" info r-qemu.qcow2 | grep 'virtual size')"
}
resize_case resize-grow +3M
resize_case resize-grow-l1 +100G
resize_case resize-shrink --shrink -2M
resize_case resize-shrink-unaligned --shrink 1000k

# commit empties the top image; rebase -u rewrites the backing name
"$QEMU_IMG" convert -O qcow2 src.raw cb.qcow2
"$QEMU_IMG" create -q -f qcow2 -b cb.qcow2 -F qcow2 ct.qcow2
"$QEMU_IO" -f qcow2 -c "write -P 0x5a 64k 1M" ct.qcow2 >/dev/null
cp src.raw c-ref.raw
qio c-ref.raw "write -P 0x5a 64k 1M"
"$QIMG" commit -q ct.qcow2 || fail commit "commit failed"
ok_image commit-base cb.qcow2 c-ref.raw
ok_image commit-top ct.qcow2 c-ref.raw
expect_eq commit-top-empty "$("$QEMU_IMG" map --output=json ct.qcow2 | grep -c '"depth": 0')" 0
"$QEMU_IMG" convert -O qcow2 src.raw nb.qcow2
"$QIMG" rebase -u -b nb.qcow2 -F qcow2 ct.qcow2 || fail rebase-u "rebase failed"
expect_eq rebase-u-name "$("$QEMU_IMG" info ct.qcow2 | grep '^backing file:')" "backing file: nb.qcow2"
ok_image rebase-u ct.qcow2 src.raw

# lazy refcounts: the dirty bit is gone after a clean close
"$QEMU_IMG" create -q -f qcow2 -o lazy_refcounts=on lz.qcow2 $SIZE
"$QIMG" convert -n -O qcow2 src.raw lz.qcow2
expect_eq lazy-clean "$("$QEMU_IMG" info lz.qcow2 | grep 'corrupt:')" "    corrupt: false"
ok_image lazy-refcounts lz.qcow2

# the layout of a fresh convert equals qemu-img's, byte for byte: the
# allocator places refcount blocks and grows the refcount table as qemu
# (512 B clusters: a block per 128 KiB, the table grows at 8 MiB)
truncate -s 12M lay.raw
"$QEMU_IO" -f raw -c "write -P 0x3c 0 12M" lay.raw >/dev/null
for o in "" "cluster_size=512" "cluster_size=512,refcount_bits=64" "cluster_size=4k" "cluster_size=1k,refcount_bits=1" "lazy_refcounts=on"; do
    rm -f lay-qemu.qcow2 lay-qimg.qcow2
    "$QEMU_IMG" convert -O qcow2 ${o:+-o "$o"} lay.raw lay-qemu.qcow2
    "$QIMG" convert -O qcow2 ${o:+-o "$o"} lay.raw lay-qimg.qcow2
    check "layout of convert ${o:-default} equals qemu-img's" cmp lay-qemu.qcow2 lay-qimg.qcow2
done
rm -f lay.raw lay-qemu.qcow2 lay-qimg.qcow2

# -t writethrough: every request is on disk (data and metadata) when it
# completes, as with qemu-img: killed at the 30th pwrite of a sequential
# bench, the requests before the kill read back (writeback keeps the L2
# table in memory until the end: none would)
if has_cmd "writethrough kill" strace; then
    "$QEMU_IMG" create -q -f qcow2 wt.qcow2 2M
    (strace -f -o /dev/null -e trace=pwrite64 -e inject=pwrite64:signal=KILL:when=30 \
        "$QIMG" bench -w -t writethrough -c 20 -d 1 -s 4096 -S 65536 --pattern=90 wt.qcow2 >/dev/null 2>&1) 2>/dev/null
    durable=0
    for i in $(seq 0 19); do
        out=$("$QEMU_IO" -f qcow2 -c "read -P 90 $((i * 65536)) 4096" wt.qcow2 2>&1)
        case $out in *"Pattern verification failed"*) break ;; "read 4096/4096"*) durable=$((i + 1)) ;; *) break ;; esac
    done
    expect_eq "writethrough: requests before the kill are durable" "$([ $durable -ge 5 ] && echo yes || echo "no ($durable)")" yes
    "$QEMU_IMG" check wt.qcow2 >check.out 2>&1; rc=$?
    if [ $rc = 0 ] || [ $rc = 3 ]; then pass writethrough-kill-check; else fail writethrough-kill-check "check rc=$rc" "$(head -5 check.out)"; fi
    rm -f wt.qcow2
fi

# a kill -9 in the middle of a convert leaves at worst leaked clusters
truncate -s 256M big.raw
"$QEMU_IO" -f raw -c "write -P 0x42 0 96M" -c "write -P 0x43 128M 96M" big.raw >/dev/null
"$QEMU_IMG" create -q -f qcow2 -o cluster_size=4k big.qcow2 256M
"$QEMU_IO" -f qcow2 -c "write -P 0x41 32M 64M" big.qcow2 >/dev/null
# rate-limited so that the kill lands in the middle (about 1 s of work)
"$QIMG" convert -n -m 4 -r 192M -O qcow2 big.raw big.qcow2 &
pid=$!
sleep 0.5
kill -9 $pid 2>/dev/null || fail crash-kill9-timing "convert ended before the kill"
wait $pid 2>/dev/null
"$QEMU_IMG" check big.qcow2 >check.out 2>&1; rc=$?
if [ $rc = 0 ] || [ $rc = 3 ]; then pass crash-kill9; else fail crash-kill9 "check rc=$rc" "$(head -5 check.out)"; fi
rm -f big.raw big.qcow2
