#!/bin/bash
# convert -l and measure -l: an internal snapshot read instead of the active
# state (by name, by id, snapshot.id=/snapshot.name=), against qemu-img:
# messages and exit codes, the data and allocation of what convert writes,
# and snapshots whose L1 table differs in size from the active one.
. "$(dirname "$0")/lib.sh"
need_cmd "$QEMU_IMG" "$QEMU_IO"

# same_convert NAME ARGS...: `same`, then the two targets (o) hold the same
# data, the same allocation, and ours checks clean
same_convert() {
    local name=$1; shift
    same "$name" "$@"
    local a=$SCRATCH/run.ref/work/o b=$SCRATCH/run.new/work/o
    [ -e "$a" ] || return 0
    if "$QEMU_IMG" compare -q "$a" "$b" 2>/dev/null; then pass "$name: data"
    else fail "$name: data" "qemu-img compare differs"; fi
    expect_eq "$name: size" "$("$QEMU_IMG" info --output=json "$b" | grep '"virtual-size"')" \
        "$("$QEMU_IMG" info --output=json "$a" | grep '"virtual-size"')"
    expect_eq "$name: map" "$("$QEMU_IMG" map --output=json "$b" 2>&1)" \
        "$("$QEMU_IMG" map --output=json "$a" 2>&1)"
    case "$*" in *"-O raw"*) ;; *) check "$name: check" "$QEMU_IMG" check -q "$b" ;; esac
}

# t.qcow2: s1 taken at 64 MiB, then the disk grown to 3 GiB and written
# beyond the old end (s2), then the active state changed again
fresh
mk t.qcow2 64M
qw t.qcow2 "write -P 0x11 0 1M" "write -P 0x12 60M 1M" "write -c -P 0x13 8M 64k"
"$QEMU_IMG" snapshot -c s1 "$IN/t.qcow2"
qw t.qcow2 "write -P 0x21 512k 1M"
"$QEMU_IMG" resize -q "$IN/t.qcow2" 3G
qw t.qcow2 "write -P 0x31 2G 1M"
"$QEMU_IMG" snapshot -c s2 "$IN/t.qcow2"
qw t.qcow2 "write -z 0 64k" "write -P 0x41 2G 64k" "discard 60M 1M"
"$QEMU_IMG" create -q -f raw "$IN/r.raw" 1M

for l in s1 1 s2 2 snapshot.name=s1 snapshot.id=2 snapshot.id=1,snapshot.name=s1; do
    same_convert "convert -l $l" convert -O qcow2 -l "$l" t.qcow2 o
done
same_convert "convert -l s1 -O raw" convert -O raw -l s1 t.qcow2 o
same_convert "convert -l s1 -c" convert -c -O qcow2 -l s1 t.qcow2 o
# the snapshot's bytes themselves, read by qemu-io from our target
out=$("$QEMU_IO" -f qcow2 -c "read -P 0x11 0 1M" -c "read -P 0x12 60M 1M" \
      -c "read -P 0x13 8M 64k" -c "read -P 0 2G 1M" "$SCRATCH/run.new/work/o" 2>&1)
case $out in *fail*|*error*) fail "s1 content" "$out" ;; *) pass "s1 content" ;; esac

for l in snapshot.id=1,snapshot.name=s2 nosuch snapshot.id=9 snapshot.name=1 \
         snapshot.foo=1 "snapshot.id=1,,x" ""; do
    same "convert -l '$l'" convert -O qcow2 -l "$l" t.qcow2 o
done
same "convert -l: target left alone" convert -O qcow2 -l nosuch t.qcow2 r.raw
same "convert -l on raw" convert -O qcow2 -l s1 r.raw o
same "convert -l -f raw" convert -O qcow2 -l s1 -f raw t.qcow2 o
same "convert -l, two sources" convert -O qcow2 -l s1 t.qcow2 t.qcow2 o
same_convert "convert -l snapshot.id=, two sources" convert -O qcow2 -l snapshot.id=1 t.qcow2 t.qcow2 o
same "convert -l, two sources, missing" convert -O qcow2 -l s1 t.qcow2 nofile o
same_convert "convert -l --image-opts" convert -O qcow2 -l s2 --image-opts \
    driver=qcow2,file.filename=t.qcow2 o

for l in s1 2 snapshot.name=s2 nosuch; do
    same_ro "measure -l $l" measure -l "$l" t.qcow2
    same_ro "measure -l $l json" measure --output=json -O qcow2 -l "$l" t.qcow2
done
same_ro "measure -l raw" measure -l s1 r.raw

# a snapshot of a disk since shrunk: its larger L1 table, the smaller size
fresh
mk k.qcow2 64M
qw k.qcow2 "write -P 5 0 1M" "write -P 6 40M 1M"
"$QEMU_IMG" snapshot -c old "$IN/k.qcow2"
"$QEMU_IMG" resize -q --shrink "$IN/k.qcow2" 32M
same_convert "shrunk since" convert -O qcow2 -l old k.qcow2 o
same_ro "shrunk since: measure" measure -l old k.qcow2

# an overlay's snapshot: what it does not hold comes from the backing file
fresh
mk b.qcow2 16M
qw b.qcow2 "write -P 7 0 16M"
mk o.qcow2 16M -b b.qcow2 -F qcow2
qw o.qcow2 "write -P 8 1M 1M"
"$QEMU_IMG" snapshot -c s "$IN/o.qcow2"
qw o.qcow2 "write -P 9 0 4M"
mv "$IN/o.qcow2" "$IN/top.qcow2"
same_convert "overlay" convert -O qcow2 -l s top.qcow2 o
same_convert "overlay -B" convert -O qcow2 -B b.qcow2 -F qcow2 -l s top.qcow2 o

# hostile snapshot entries: the L1 table's offset and size
hostile_bases
SNAP_ENTRY() { peek64 "$IN/t.qcow2" 64; }
fresh snap
e=$(SNAP_ENTRY)
poke64 "$IN/t.qcow2" "$e" 12345
same "L1 offset unaligned" convert -O raw -l s1 t.qcow2 o
fresh snap
poke64 "$IN/t.qcow2" "$e" $((1 << 40))
same_convert "L1 past the end" convert -O qcow2 -l s1 t.qcow2 o
fresh snap
poke64 "$IN/t.qcow2" "$e" $(((1 << 63) - 65536))
same "L1 offset overflows" convert -O raw -l s1 t.qcow2 o
fresh snap
poke32 "$IN/t.qcow2" $((e + 8)) $((1 << 30))
same "L1 too large" convert -O raw -l s1 t.qcow2 o
fresh snap
poke32 "$IN/t.qcow2" $((e + 8)) 0
same_convert "L1 empty" convert -O qcow2 -l s1 t.qcow2 o
