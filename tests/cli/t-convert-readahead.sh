#!/bin/bash
# convert's read-ahead under ordered writes (src/lib/convert.c, "parking"):
# a worker whose unit is read before its turn to write parks the buffer and
# reads on.  The source is nbdkit's sh plugin over a unix socket: its first
# unit answers 0.6 s late, so every other unit is read before its turn.
# Judged by the server's request log (units past the workers' count are
# read while the first is still pending: the read-ahead happened), by the
# data, by qemu-img check, and by the qcow2 target's layout (its map with
# host offsets equals the one of -m 1 and of qemu-img: writes stayed in
# guest order).  Errors while units are parked: a failed read and a failed
# write end as qemu-img's, with the same message and exit code and the
# same bytes in the target (nothing written after the failure).
. "$(dirname "$0")/lib.sh"
need_cmd nbdkit
[ -e "$(nbdkit --dump-config 2>/dev/null | sed -n 's/^plugindir=//p')/nbdkit-sh-plugin.so" ] ||
    { skip "nbdkit's sh plugin missing"; exit 0; }
[ -e "$(nbdkit --dump-config 2>/dev/null | sed -n 's/^filterdir=//p')/nbdkit-log-filter.so" ] ||
    { skip "nbdkit's log filter missing"; exit 0; }
cd "$SCRATCH" || exit 1

MiB=$((1 << 20))
trap 'stop_servers; rm -rf "$SCRATCH"' EXIT

# 32 MiB: random data, a 4 MiB hole at 6 MiB (reported as such: zero
# units), 64 KiB of zeros inside the data at 16.5 MiB (left out by -S),
# text at 20 MiB
head -c $((32 * MiB)) /dev/urandom >src.raw
dd if=/dev/zero of=src.raw bs=1M seek=6 count=4 conv=notrunc status=none
dd if=/dev/zero of=src.raw bs=64k seek=264 count=1 conv=notrunc status=none
# 6 MiB of text at 20 MiB: clusters that compress
yes "qimg read-ahead" | head -c $((6 * MiB)) | dd of=src.raw bs=1M seek=20 conv=notrunc status=none

# The plugin: the read of the first unit sleeps 0.5 s or $SCRATCH/delay's
# seconds (not the probes of a few bytes); with $SCRATCH/jitter there, every read sleeps 0-40 ms at random;
# a read touching $SCRATCH/fail-at's offset (when set) fails with EIO.
cat >slow.sh <<'EOF'
#!/bin/bash
D=$(dirname "$0")
case "$1" in
    thread_model) echo parallel ;;
    can_multi_conn | can_extents) exit 0 ;;
    get_size) stat -c %s "$D/src.raw" ;;
    pread)
        if [ "$4" = 0 ] && [ "$3" = 2097152 ]; then sleep "$(cat "$D/delay" 2>/dev/null || echo 0.5)"; fi
        if [ -e "$D/jitter" ]; then sleep "0.0$((RANDOM % 5))"; fi
        if [ -s "$D/fail-at" ]; then
            f=$(cat "$D/fail-at")
            if [ "$4" -le "$f" ] && [ $(($4 + $3)) -gt "$f" ]; then
                echo "EIO injected" >&2
                exit 1
            fi
        fi
        dd if="$D/src.raw" iflag=skip_bytes,count_bytes skip="$4" count="$3" status=none ;;
    extents)
        # the hole [6 MiB, 10 MiB), data around it
        s=$4 e=$(($4 + $3)) hs=6291456 he=10485760
        if [ $s -lt $hs ]; then echo "$s $(( (e < hs ? e : hs) - s ))"; s=$hs; fi
        if [ $s -lt $e ] && [ $s -lt $he ]; then
            echo "$s $(( (e < he ? e : he) - s )) hole,zero"
            s=$he
        fi
        if [ $s -lt $e ]; then echo "$s $((e - s))"; fi ;;
    *) exit 2 ;;
esac
EOF
chmod +x slow.sh
nbdkit -U "$SCRATCH/s.sock" -P "$SCRATCH/k.pid" --filter=log sh "$SCRATCH/slow.sh" \
    logfile="$SCRATCH/log.txt" 2>server.err ||
    { fail "nbdkit starts" "$(cat server.err)"; exit 0; }
# the pid file is written when the server is ready
for _ in $(seq 100); do [ -s k.pid ] && break; sleep 0.05; done
[ -s k.pid ] || { fail "nbdkit starts" "no pid file"; exit 0; }
SERVER_PIDS+=("$(cat k.pid)")
SRC="nbd+unix:///?socket=$SCRATCH/s.sock"

# read_ahead_seen <LOG: while the read of [0, 2 MiB) was pending, a read at
# 12 MiB or beyond started.  With 4 workers the first units are [0, 2 MiB),
# 2, 4 and 10 MiB (the hole needs no writing into a new qcow2); without
# read-ahead, the workers of units 1-3 wait for unit 0 to be written before
# any of them reads again.
read_ahead_seen() {
    local line key= seen=0
    while IFS= read -r line; do
        if [ -z "$key" ]; then
            [[ $line =~ (connection=[0-9]+)\ Read\ (id=[0-9]+)\ offset=0x0\ count=0x200000\ \.\.\. ]] &&
                key="${BASH_REMATCH[1]} ...Read ${BASH_REMATCH[2]} return"
            continue
        fi
        [[ $line == *"$key"* ]] && break
        [[ $line =~ \ Read\ id=[0-9]+\ offset=(0x[0-9a-f]+)\  ]] &&
            [ $((BASH_REMATCH[1])) -ge $((12 * MiB)) ] && seen=1
    done
    [ $seen = 1 ]
}
# map_offsets IMG: qemu-img's map of a qcow2, host offsets included
map_offsets() { "$QEMU_IMG" map --output=json "$1"; }

# ---- qcow2 target, 4 workers: read ahead, in guest order
logstart=$(($(wc -l <log.txt) + 1))
if "$QIMG" convert -m 4 -O qcow2 "$SRC" m4.qcow2 2>err; then
    pass "convert -m 4 to qcow2 from the slow source"
    tail -n "+$logstart" log.txt >m4.log
    if read_ahead_seen <m4.log; then pass "units read ahead while the first was pending"
    else fail "units read ahead while the first was pending" "$(grep ' Read ' m4.log | head -30)"; fi
    check "-m 4: qcow2 target checks clean" "$QEMU_IMG" check -q m4.qcow2
    check "-m 4: data identical to the source" "$QEMU_IMG" compare -q -f raw -F qcow2 src.raw m4.qcow2
    "$QIMG" convert -m 1 -O qcow2 "$SRC" m1.qcow2 2>/dev/null || fail "convert -m 1"
    "$QEMU_IMG" convert -O qcow2 "$SRC" ref.qcow2 2>/dev/null || fail "qemu-img convert"
    expect_eq "-m 4: layout (map with host offsets) as -m 1's" \
        "$(map_offsets m4.qcow2)" "$(map_offsets m1.qcow2)"
    expect_eq "-m 4: layout as qemu-img's" "$(map_offsets m4.qcow2)" "$(map_offsets ref.qcow2)"
else
    fail "convert -m 4 to qcow2 from the slow source" "$(cat err)"
fi

# ---- uneven reads (every one 0-40 ms late), 8 workers: parked and
# written in every order, always the same image
: >jitter
for run in 1 2 3; do
    if ! "$QIMG" convert -m 8 -O qcow2 "$SRC" j.qcow2 2>err; then
        fail "uneven source, run $run" "$(cat err)"
        break
    fi
    if ! "$QEMU_IMG" compare -q -f raw -F qcow2 src.raw j.qcow2 ||
       [ "$(map_offsets j.qcow2)" != "$(map_offsets m1.qcow2)" ] ||
       ! "$QEMU_IMG" check -q j.qcow2; then
        fail "uneven source, run $run: data, layout or check differs" \
            "$(diff <(map_offsets m1.qcow2) <(map_offsets j.qcow2))"
        break
    fi
    [ $run = 3 ] && pass "uneven source, -m 8: 3 runs identical to -m 1 (data, layout, check)"
done
rm -f jitter

# ---- -c: compressed units park with their clusters, written in order
# (compressed clusters land where -m 1 and qemu-img put them)
# (-c asks the block status of every cluster, each a round trip to the
# plugin: large clusters, and the first unit waits longer)
logstart=$(($(wc -l <log.txt) + 1))
echo 1 >delay
if "$QIMG" convert -c -m 4 -O qcow2 -o cluster_size=512k "$SRC" c4.qcow2 2>err; then
    rm delay
    tail -n "+$logstart" log.txt >c4.log
    if read_ahead_seen <c4.log; then pass "-c: units read ahead while the first was pending"
    else fail "-c: units read ahead while the first was pending" "$(grep ' Read ' c4.log | head -30)"; fi
    check "-c -m 4: checks clean" "$QEMU_IMG" check -q c4.qcow2
    check "-c -m 4: data identical" "$QEMU_IMG" compare -q -f raw -F qcow2 src.raw c4.qcow2
    "$QIMG" convert -c -m 1 -O qcow2 -o cluster_size=512k "$SRC" c1.qcow2 2>/dev/null || fail "convert -c -m 1"
    "$QEMU_IMG" convert -c -O qcow2 -o cluster_size=512k "$SRC" cref.qcow2 2>/dev/null || fail "qemu-img convert -c"
    expect_eq "-c -m 4: layout as -m 1's" "$(map_offsets c4.qcow2)" "$(map_offsets c1.qcow2)"
    expect_eq "-c -m 4: layout as qemu-img's" "$(map_offsets c4.qcow2)" "$(map_offsets cref.qcow2)"
    expect_eq "-c -m 4: file size as qemu-img's" "$(stat -c %s c4.qcow2)" "$(stat -c %s cref.qcow2)"
else
    fail "convert -c -m 4 from the slow source" "$(cat err)"
fi
rm -f delay

# ---- -S 0 (zeros written as data) and -p into raw: progress ends at 100%
if "$QIMG" convert -m 8 -S 0 -p -O qcow2 "$SRC" s0.qcow2 >progress 2>err; then
    check "-S 0 -m 8: data identical" "$QEMU_IMG" compare -q -f raw -F qcow2 src.raw s0.qcow2
    "$QIMG" convert -m 1 -S 0 -O qcow2 "$SRC" s0-m1.qcow2 2>/dev/null || fail "convert -S 0 -m 1"
    expect_eq "-S 0 -m 8: layout as -m 1's" "$(map_offsets s0.qcow2)" "$(map_offsets s0-m1.qcow2)"
    expect_eq "-p: last progress line" "$(tr '\r' '\n' <progress | grep -v '^$' | tail -1)" \
        "    (100.00/100%)"
else
    fail "convert -S 0 -p -m 8" "$(cat err)"
fi

# ---- a read fails while units are parked: qemu-img's message and exit
# code, nothing written into the (existing) target
echo $((10 * MiB + 4096)) >fail-at
"$QEMU_IMG" create -q -f raw ref-err.raw 32M
"$QEMU_IMG" create -q -f raw err.raw 32M
"$QEMU_IMG" convert -n -O raw "$SRC" ref-err.raw >/dev/null 2>ref.err; ref_rc=$?
"$QIMG_AS_QEMU" convert -m 4 -n -O raw "$SRC" err.raw >/dev/null 2>our.err; rc=$?
expect_eq "read error: exit code as qemu-img's" "$rc" "$ref_rc"
expect_eq "read error: message as qemu-img's" "$(cat our.err)" "$(cat ref.err)"
grep -q "error while reading at byte $((10 * MiB))" our.err ||
    fail "read error: names the unit" "$(cat our.err)"
check "read error: target left as qemu-img leaves it" cmp ref-err.raw err.raw
: >fail-at

# ---- a write fails while units are parked (blkdebug on the target at
# 12 MiB): the units before it written, none after, as qemu-img
cat >wfail.conf <<EOF
[inject-error]
event = "none"
iotype = "write"
sector = "$((12 * MiB / 512))"
EOF
"$QEMU_IMG" create -q -f raw ref-w.raw 32M
"$QEMU_IMG" create -q -f raw w.raw 32M
"$QEMU_IMG" convert -n -O raw "$SRC" "blkdebug:wfail.conf:ref-w.raw" >/dev/null 2>ref.err; ref_rc=$?
"$QIMG_AS_QEMU" convert -m 4 -n -O raw "$SRC" "blkdebug:wfail.conf:w.raw" >/dev/null 2>our.err
rc=$?
expect_eq "write error: exit code as qemu-img's" "$rc" "$ref_rc"
expect_eq "write error: message as qemu-img's" "$(cat our.err)" "$(cat ref.err)"
check "write error: target bytes as qemu-img's" cmp ref-w.raw w.raw
check "write error: the units before it were written" cmp -n $((12 * MiB)) src.raw w.raw
