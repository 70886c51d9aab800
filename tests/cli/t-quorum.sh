#!/bin/bash
# The quorum storage backend against qemu-img: json:{...} names of images
# over quorum (children nested, vote-threshold, read-pattern, blkverify,
# rewrite-corrupted) in info and map; a relative backing name next to a
# quorum node (no directory: "cannot determine actual path", and the
# errors of commands that must open the backing file); reads where the
# children disagree (threshold 1 and 2, fifo, blkverify's fatal mismatch,
# a tie, a majority of three); writes to every child; rewrite-corrupted
# repairing the child that disagreed; option errors.
. "$(dirname "$0")/lib.sh"

if [ ! -x "$QEMU_IO" ]; then
    echo "SKIP t-quorum: no qemu-io to write test data"
    exit 0
fi

quorum() {   # quorum FORMAT THRESHOLD 'EXTRA' CHILD...: a json: name
    local fmt=$1 thr=$2 extra=$3 kids="" c; shift 3
    for c in "$@"; do kids="$kids${kids:+,}{'driver':'file','filename':'$c'}"; done
    echo "json:{'driver':'$fmt','file':{'driver':'quorum','vote-threshold':$thr$extra,'children':[$kids]}}"
}

# qcow2 images with a relative backing name (iotest 110's last case), and
# without a backing file
"$QEMU_IMG" create -q -f qcow2 "$IN/t.qcow2.base" 1M
"$QEMU_IMG" create -q -f qcow2 -b t.qcow2.base -F qcow2 "$IN/t.qcow2"
"$QEMU_IO" -c 'write -P 7 0 100k' "$IN/t.qcow2" >/dev/null
cp "$IN/t.qcow2" "$IN/t.qcow2.copy"
"$QEMU_IMG" create -q -f qcow2 "$IN/q1" 1M
"$QEMU_IO" -c 'write -P 9 0 64k' -c 'write -P 3 512k 4k' "$IN/q1" >/dev/null
cp "$IN/q1" "$IN/q2"

# raw replicas: a (reference), b (same), c (first sector differs), d (a
# byte at 70000 differs, in its own host block)
"$QEMU_IMG" create -q -f raw "$IN/a" 1M
qio "$IN/a" 'write -P 1 0 64k'
cp "$IN/a" "$IN/b"
cp "$IN/a" "$IN/c"
qio "$IN/c" 'write -P 2 0 512'
cp "$IN/a" "$IN/d"
qio "$IN/d" 'write -P 3 70000 10'

TQ=$(quorum qcow2 1 '' t.qcow2 t.qcow2.copy)

# ---- names and the backing name next to a quorum node
same_ro "info qcow2 over quorum: relative backing" info "$TQ"
same_ro "info --output=json qcow2 over quorum" info --output=json "$TQ"
same_ro "info -U qcow2 over quorum" info -U "$TQ"
same_ro "info --backing-chain: no absolute backing name" info --backing-chain "$TQ"
ro_rc() { expect_eq "$1 (exit code $2)" "$(cat "$SCRATCH/ro.ref/rc")" "$2"; }
ro_rc "info --backing-chain: no absolute backing name" 1
same_ro "map: backing cannot be opened" map "$TQ"
ro_rc "map: backing cannot be opened" 1
same_ro "check: backing cannot be opened" check "$TQ"
same_ro "info raw over quorum" info "$(quorum raw 2 '' a b)"
same_ro "info --output=json raw over quorum" info --output=json "$(quorum raw 2 '' a b)"
same_ro "info name with read-pattern fifo" info "$(quorum raw 1 ",'read-pattern':'fifo'" a b)"
same_ro "info name with every option" \
    info "$(quorum raw 2 ",'read-pattern':'quorum','blkverify':false,'rewrite-corrupted':false" a b)"
same_ro "info name with blkverify" info "$(quorum raw 2 ",'blkverify':true" a b)"
same_ro "info name: threshold as a string" info "$(quorum raw "'2'" '' a b)"
same_ro "info name: children as an object" \
    info "json:{'driver':'raw','file':{'driver':'quorum','vote-threshold':1,'children':{'0':{'driver':'file','filename':'a'}}}}"
same_ro "info name: a qcow2 child node" \
    info "json:{'driver':'raw','file':{'driver':'quorum','vote-threshold':1,'children':[{'driver':'qcow2','file':{'driver':'file','filename':'q1'}}]}}"
same_ro "info --image-opts qcow2 over quorum" info --image-opts \
    "driver=qcow2,file.driver=quorum,file.vote-threshold=1,file.children.0.driver=file,file.children.0.filename=t.qcow2,file.children.1.driver=file,file.children.1.filename=t.qcow2.copy"
same_ro "map --output=json raw over quorum: no host offsets" map --output=json "$(quorum raw 1 '' a d)"
same_ro "map raw over quorum: no host file" map "$(quorum raw 1 '' a d)"
same_ro "map qcow2 over quorum" map --output=json "$(quorum qcow2 2 '' q1 q2)"

# ---- reads
Q12=$(quorum qcow2 2 '' q1 q2)
same "convert from qcow2 over quorum" convert -O qcow2 "$Q12" out.qcow2
expect_eq "convert from quorum: same data as the child" \
    "$("$QEMU_IMG" compare -f qcow2 -F qcow2 "$SCRATCH/run.new/work/out.qcow2" "$IN/q1" 2>&1)" \
    "Images are identical."
check "convert from quorum: qemu-img check of the target" \
    "$QEMU_IMG" check -q "$SCRATCH/run.new/work/out.qcow2"
same_ro "compare qcow2 over quorum with its child" compare "$Q12" q1
for args in "1 c" "2 c" "2 b" "1 d" "2 d"; do
    set -- $args
    same "convert, threshold $1, children a and $2" convert -O raw "$(quorum raw $1 '' a $2)" out.raw
    if [ "$(cat "$SCRATCH/run.ref/rc")" = 0 ]; then
        expect_eq "convert, threshold $1, a and $2: same data" \
            "$(sha "$SCRATCH/run.new/work/out.raw")" "$(sha "$SCRATCH/run.ref/work/out.raw")"
    fi
    same_ro "compare, threshold $1, children a and $2" compare "$(quorum raw $1 '' a $2)" a
done
ro_rc "compare, threshold 2, a and d: read error" 4
same_ro "fifo: the first child answers" compare "$(quorum raw 1 ",'read-pattern':'fifo'" a c)" a
same_ro "fifo: the first child answers (reversed)" compare "$(quorum raw 1 ",'read-pattern':'fifo'" c a)" a
same_ro "a tie: the later child's version wins" compare "$(quorum raw 1 '' a c)" c
same_ro "three children: the majority wins" compare "$(quorum raw 2 '' c a b)" a
same_ro "three children, threshold 3: no quorum" compare "$(quorum raw 3 '' c a b)" a
same_ro "blkverify: a mismatch is fatal" compare "$(quorum raw 2 ",'blkverify':true" a c)" a
same "blkverify: mismatch inside a block" convert -O raw "$(quorum raw 2 ",'blkverify':true" a d)" out.raw
ref_rc "blkverify: mismatch inside a block" 1
same_ro "blkverify: children that agree" compare "$(quorum raw 2 ",'blkverify':true" a b)" a
same_ro "read error of a child (threshold 1)" compare \
    "json:{'driver':'raw','file':{'driver':'quorum','vote-threshold':1,'children':[{'driver':'blkdebug','inject-error':[{'event':'none'}],'image':{'driver':'file','filename':'a'}},{'driver':'file','filename':'b'}]}}" a
same_ro "read error of a child (threshold 2)" compare \
    "json:{'driver':'raw','file':{'driver':'quorum','vote-threshold':2,'children':[{'driver':'blkdebug','inject-error':[{'event':'none'}],'image':{'driver':'file','filename':'a'}},{'driver':'file','filename':'b'}]}}" a

# ---- writes and rewrite-corrupted
"$QEMU_IMG" create -q -f raw "$IN/w1" 1M
cp "$IN/w1" "$IN/w2"
same "convert -n into raw over quorum" convert -n -O raw d "$(quorum raw 2 '' w1 w2)"
for f in w1 w2; do
    expect_eq "convert -n into quorum: $f written" "$(sha "$SCRATCH/run.new/work/$f")" "$(sha "$IN/d")"
done
# one child fails every write: enough successes or not; the other child
# gets what was written (the source differs from the target in its first
# request only, so no later request races with the failure)
for thr in 1 2; do
    same "convert -n, a failing child, threshold $thr" convert -n -O raw c \
        "json:{'driver':'raw','file':{'driver':'quorum','vote-threshold':$thr,'children':[{'driver':'blkdebug','inject-error':[{'event':'none','iotype':'write'}],'image':{'driver':'file','filename':'w1'}},{'driver':'file','filename':'w2'}]}}"
    for f in w1 w2; do
        expect_eq "convert -n, a failing child, threshold $thr: $f as qemu leaves it" \
            "$(sha "$SCRATCH/run.new/work/$f")" "$(sha "$SCRATCH/run.ref/work/$f")"
    done
done
ref_rc "convert -n, a failing child, threshold 2" 1
expect_eq "convert -n, a failing child: the other child written" \
    "$(sha "$SCRATCH/run.new/work/w2")" "$(sha "$IN/c")"
cp "$IN/q1" "$IN/q3"
printf 'X' | dd of="$IN/q3" bs=1 seek=$((0x30005)) conv=notrunc 2>/dev/null   # in the L1 table
RW=$(quorum qcow2 2 ",'rewrite-corrupted':true" q1 q2 q3)
same "check -r all, rewrite-corrupted: the odd child repaired" check -r all "$RW"
expect_eq "rewrite-corrupted: q3 repaired as qemu does" \
    "$(sha "$SCRATCH/run.new/work/q3")" "$(sha "$SCRATCH/run.ref/work/q3")"
expect_eq "rewrite-corrupted: q3 equals q1" "$(sha "$SCRATCH/run.new/work/q3")" "$(sha "$IN/q1")"
same "rewrite-corrupted needs write access" check "$RW"
same "three children with one odd, threshold 3" check "$(quorum qcow2 3 '' q1 q2 q3)"

# ---- option errors
C2="'children':[{'driver':'file','filename':'a'},{'driver':'file','filename':'b'}]"
err_case() { same_ro "error: $1" info "json:{'driver':'raw','file':{'driver':'quorum'$2}}"; }
err_case "no options" ""
err_case "no vote-threshold" ",$C2"
err_case "vote-threshold 0" ",$C2,'vote-threshold':0"
err_case "vote-threshold -1" ",$C2,'vote-threshold':-1"
err_case "vote-threshold over children" ",$C2,'vote-threshold':3"
err_case "vote-threshold not a number" ",$C2,'vote-threshold':'x'"
err_case "vote-threshold 1.5" ",$C2,'vote-threshold':1.5"
err_case "no children" ",'vote-threshold':1"
err_case "empty children" ",'vote-threshold':1,'children':[]"
err_case "children as node names" ",'vote-threshold':1,'children':['a','b']"
err_case "a child as a node name" ",'vote-threshold':1,'children':[{'driver':'file','filename':'a'},'x']"
err_case "children.2 given" ",$C2,'vote-threshold':1,'children.2':'x'"
err_case "a child without driver" ",'vote-threshold':1,'children':[{'filename':'a'}]"
err_case "a child's unknown option" ",'vote-threshold':1,'children':[{'driver':'file','filename':'a','foo':1}]"
err_case "a child without file name" ",'vote-threshold':1,'children':[{'driver':'file','filename':'a'}],'children.1.driver':'file'"
err_case "a missing child" ",'vote-threshold':1,'children':[{'driver':'file','filename':'nonexist'}],'foo':1"
err_case "bad read-pattern" ",$C2,'vote-threshold':1,'read-pattern':'foo'"
err_case "read-pattern a number" ",$C2,'vote-threshold':1,'read-pattern':1"
err_case "threshold before read-pattern" ",$C2,'vote-threshold':3,'read-pattern':'x'"
err_case "blkverify with threshold 1" ",$C2,'vote-threshold':1,'blkverify':true"
err_case "blkverify not a bool" ",$C2,'vote-threshold':1,'blkverify':'x'"
err_case "blkverify ignored in fifo mode" ",$C2,'vote-threshold':1,'read-pattern':'fifo','blkverify':'x'"
err_case "rewrite-corrupted with blkverify" ",$C2,'vote-threshold':2,'rewrite-corrupted':true,'blkverify':true"
err_case "rewrite-corrupted read-only" ",$C2,'vote-threshold':1,'rewrite-corrupted':true"
err_case "rewrite-corrupted ignored in fifo mode" ",$C2,'vote-threshold':1,'rewrite-corrupted':true,'read-pattern':'fifo'"
err_case "unknown option" ",$C2,'vote-threshold':1,'foo':1"
err_case "a filename" ",$C2,'vote-threshold':1,'filename':'x'"
err_case "children sizes differ" ",'vote-threshold':1,'children':[{'driver':'file','filename':'a'},{'driver':'file','filename':'t.qcow2'}]"

# ---- quorum as the image node itself, and not a protocol
QT="json:{'driver':'quorum','vote-threshold':1,'children':[{'driver':'file','filename':'a'}]}"
same_ro "info quorum as the top node" info "$QT"
same_ro "info --output=json quorum as the top node" info --output=json "$QT"
same_ro "map quorum as the top node" map "$QT"
same_ro "compare quorum as the top node" \
    compare "json:{'driver':'quorum','vote-threshold':2,'children':[{'driver':'file','filename':'a'},{'driver':'file','filename':'c'}]}" a
same_ro "info --image-opts driver=quorum" info --image-opts \
    "driver=quorum,vote-threshold=1,children.0.filename=a,children.0.driver=file"
same_ro "quorum: is no protocol prefix" info quorum:a
same_ro "-f quorum with a file name" info -f quorum a
