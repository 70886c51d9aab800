#!/bin/bash
# convert: messages and exit codes against qemu-img 7.2; outputs checked
# byte for byte and for sparseness against qemu-img's.
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

# ---- sources ----
truncate -s 1M a
qio a 'write -P 1 0 64k'
truncate -s 512k small
# sparse, data at odd places, zero blocks written as data, data at EOF
truncate -s 64M sp
qio sp 'write -P 5 0 4k'
qio sp 'write -P 6 1049088 3k'             # unaligned inside a block
qio sp 'write -P 0 5M 1M'                 # all-zero data: must become a hole
qio sp 'write -P 7 8M 2M'
qio sp 'write -P 0 8454144 8k'             # a zero run inside data
qio sp 'write -P 0 9M 1k'                 # a short zero run (< -S) inside data
qio sp 'write -P 8 20975616 1'              # a single byte
qio sp 'write -P 9 67104768 4k'             # data right at EOF
head -c 1000 /dev/zero | tr '\0' 'q' > u1000
truncate -s 1048583 u1m7; printf 'xyz' | dd of=u1m7 bs=1 seek=1048580 conv=notrunc 2>/dev/null
truncate -s 100M big
for i in $(seq 0 37); do qio big "write -P $((i + 1)) $((i * 2621440)) 1M"; done
truncate -s 10M zeros

# ---- messages and exit codes ----
same no-args            convert
same one-name           convert a
same compress-raw       convert -c -O raw a o
same sparse-not-512     convert -S 100 a o
same sparse-too-big     convert -S 32M a o
same sparse-huge        convert -S 3G a o
same sparse-range       convert -S 9E a o
same sparse-neg         convert -S -1 a o
same sparse-junk        convert -S abc a o
same sparse-fraction    convert -S 1.5 a o
same coroutines-0       convert -m 0 a o
same coroutines-17      convert -m 17 a o
same coroutines-junk    convert -m abc a o
same coroutines-1x      convert -m 1x a o
same coroutines-hex     convert -m 0x10 a o
same n-with-o           convert -n -o size=1M a small
same tiz-without-n      convert --target-is-zero a o
same backing-raw        convert -B x a o
same backing-raw-F      convert -B x -F raw a o
same copy-and-compress  convert -C -c a o
same copy-and-sparse    convert -C -S 0 a o
same copy-and-salvage   convert --salvage -C a o
same missing-O          convert -O
same n-smaller          convert -n a small
same bad-out-fmt        convert -O foo a o
same bad-in-fmt         convert -f foo a o
same missing-source     convert nonexist o
same missing-dir        convert a /nonexistent-dir/o
same tiz-with-backing   convert -n --target-is-zero -B x a small
same rate-junk          convert -r abc a o
same rate-neg           convert -r -1 a o
same rate-range         convert -r 9E a o
same src-cache          convert -T foo a o
same src-cache-first    convert -T foo nonexist o
same tio-without-n      convert --target-image-opts a o
same snapshot-raw       convert -l foo a o
same snapshot-bad-key   convert -l snapshot.foo=1 a o
same bad-create-opt     convert -o foo=bar a o
same bad-opt-list       convert -o ,foo a o
same bad-option         convert -x a o
same bitmaps-raw        convert --bitmaps a o
same skip-broken-alone  convert --skip-broken-bitmaps a o
same concat-backing     convert -B x -F raw a a o
same concat-snapshot    convert -l x a a o
same imgopts-and-f      convert --image-opts -f raw a o
same o-help             convert -O raw -o help
same o-help-qcow2       convert -O qcow2 -o help
same o-help-one-name    convert -O qcow2 -o help a
same o-help-target      convert -O qcow2 -o help a o
same o-help-q-target    convert -o '?' a o
same o-help-not-item    convert -o size=1,,help a o
same bad-typed-opt      convert -O qcow2 -o cluster_size=abc a o
same c-raw              convert -O raw -c a o
same backing-raw        convert -O raw -B a -F raw a o
same open-fails-first   convert -c nonexist o
same n-missing-target   convert -n a nonexist
same bad-fmt-before-c   convert -O foo -c a o
same opt-before-c       convert -o foo=bar -c a o
same object-bad         convert --object foo a o

# ---- outputs: identical bytes, at least as sparse as qemu-img's ----
allocated() {   # data bytes as qemu-img map reports them
    "$QEMU_IMG" map -f raw --output=json "$1" |
        sed -n 's/.*"length": \([0-9]*\),.*"data": true.*/\1/p' | awk '{s += $1} END {print s + 0}'
}
# run qemu-img and qimg with the same arguments (output file last) and compare
conv_same() {   # name, args... (the last one is the output name)
    local name=$1; shift
    local out=${!#}
    same "$name" convert "$@"
    local ref=$SCRATCH/run.ref/work/$out new=$SCRATCH/run.new/work/$out
    if ! cmp -s "$ref" "$new"; then
        fail "$name-data" "outputs differ: convert $*"
        return
    fi
    local ra na
    ra=$(allocated "$ref"); na=$(allocated "$new")
    if [ "$na" -le "$ra" ]; then pass "$name-data"; else fail "$name-data" "qimg allocates $na bytes, qemu-img $ra"; fi
}
conv_same plain          a o
conv_same sparse         sp o
conv_same sparse-fmt     -f raw -O raw sp o
conv_same sparse-S-8k    -S 8k sp o
conv_same sparse-S-512   -S 512 sp o
conv_same sparse-S-16M   -S 16M sp o
conv_same unaligned-1000 u1000 o
conv_same unaligned-1m7  u1m7 o
conv_same all-zero       zeros o
conv_same concat         u1000 sp u1m7 a o
conv_same concat-same    a a a o
conv_same m1             -m 1 sp o
conv_same m16            -m 16 sp o
conv_same W              -W sp o
conv_same W-m16          -W -m 16 big o
conv_same copy-offload   -C sp o
conv_same cache-modes    -f raw -t none -T none sp o
conv_same rate           -r 1G a o
conv_same force-share    -U sp o
conv_same image-opts     --image-opts driver=raw,file.filename=sp o
conv_same prealloc       -o preallocation=falloc a o
conv_same progress       -p a o
conv_same progress-big   -p big o
conv_same progress-zero  -p zeros o
conv_same progress-quiet -p -q sp o
conv_same quiet          -q sp o
conv_same overwrite      sp a

# -S 0: every byte written, the output is fully allocated
same S0 convert -S 0 sp o
if cmp -s "$SCRATCH/run.ref/work/o" "$SCRATCH/run.new/work/o"; then pass S0-data; else fail S0-data; fi
blocks=$(stat -c %b "$SCRATCH/run.new/work/o")
if [ $((blocks * 512)) -ge $((64 << 20)) ]; then pass S0-allocated; else fail S0-allocated "$blocks blocks"; fi

# -n into an existing larger target full of other data
printf '\377%.0s' $(seq 4096) > ff4k
for i in $(seq 0 1023); do cat ff4k; done > target   # 4 MiB of 0xff
cp a target-copy
same n-into-larger convert -n a target
if cmp -s "$SCRATCH/run.ref/work/target" "$SCRATCH/run.new/work/target"; then pass n-into-larger-data; else fail n-into-larger-data; fi
same n-sparse convert -n -f raw -O raw u1000 target
if cmp -s "$SCRATCH/run.ref/work/target" "$SCRATCH/run.new/work/target"; then pass n-sparse-data; else fail n-sparse-data; fi
same n-image-opts convert -n --target-image-opts a driver=raw,file.filename=target
if cmp -s "$SCRATCH/run.ref/work/target" "$SCRATCH/run.new/work/target"; then pass n-image-opts-data; else fail n-image-opts-data; fi
# --target-is-zero: a zero target (holes) is filled with the data only
truncate -s 64M zt
same target-is-zero convert -n --target-is-zero sp zt
if cmp -s "$SCRATCH/run.ref/work/zt" "$SCRATCH/run.new/work/zt" && cmp -s sp "$SCRATCH/run.new/work/zt"; then
    pass target-is-zero-data; else fail target-is-zero-data; fi

# ---- a convert that fails or is killed leaves no target ----
rm -f "$SCRATCH/o"
"$QIMG" convert a "$SCRATCH/nodir/o" 2>/dev/null
if [ ! -e "$SCRATCH/nodir/o" ]; then pass no-dir-no-file; else fail no-dir-no-file; fi
"$QIMG" convert -t foo a "$SCRATCH/o" 2>/dev/null
if [ ! -e "$SCRATCH/o" ] && [ -z "$(ls -A "$SCRATCH" | grep qimg- | grep -v test)" ]; then
    pass bad-cache-no-file; else fail bad-cache-no-file "$(ls -a "$SCRATCH")"; fi
truncate -s 1G "$SCRATCH/huge"
for i in 0 1 2 3 4 5 6 7; do qio "$SCRATCH/huge" "write -P $((i + 1)) $((i * 128))M 8M"; done
"$QIMG" convert -r 16M "$SCRATCH/huge" "$SCRATCH/killed" &
pid=$!
sleep 1
kill -9 $pid; wait $pid 2>/dev/null
if [ ! -e "$SCRATCH/killed" ]; then pass killed-no-file; else fail killed-no-file; fi
rm -f "$SCRATCH"/.killed.* "$SCRATCH/huge"

# qemu-img itself agrees with what qimg wrote
rm -f "$SCRATCH/o2"
"$QIMG" convert u1000 sp u1m7 "$SCRATCH/o2"
cat u1000 > "$SCRATCH/expect"; truncate -s 1024 "$SCRATCH/expect"
cat sp >> "$SCRATCH/expect"; cat u1m7 >> "$SCRATCH/expect"; truncate -s $((1024 + (64 << 20) + 1049088)) "$SCRATCH/expect"
if cmp -s "$SCRATCH/expect" "$SCRATCH/o2"; then pass concat-layout; else fail concat-layout; fi
expect_eq concat-qemu-compare "$("$QEMU_IMG" compare -f raw -F raw "$SCRATCH/expect" "$SCRATCH/o2" 2>&1)" "Images are identical."

# a target whose backing file cannot be opened: qemu-img opens the target
# with its backing file and fails (missing; encrypted, as no secret can be
# given for it); a new target is left behind
rm -f "$IN"/*
"$QEMU_IMG" create -q -f raw "$IN/src.raw" 1M
"$QEMU_IMG" create -q -f qcow2 -u -b gone.qcow2 -F qcow2 "$IN/nb.qcow2" 1M
same convert-n-backing-missing convert -n -O qcow2 src.raw nb.qcow2
ref_rc convert-n-backing-missing 1
"$QEMU_IMG" create -q -f qcow2 --object secret,id=s0,data=pw -o encrypt.format=aes,encrypt.key-secret=s0 "$IN/eb.qcow2" 1M
same convert-B-encrypted-backing convert --object secret,id=s0,data=pw -O qcow2 -B eb.qcow2 -F qcow2 src.raw out.qcow2
ref_rc convert-B-encrypted-backing 1
check convert-B-encrypted-backing-leaves-target test -f "$SCRATCH/run.new/work/out.qcow2"
