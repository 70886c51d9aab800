#!/bin/bash
# Backing chains end to end: rebase (safe, onto another base, flatten,
# unsafe) and commit (top, -b middle, -d) on qcow2 chains of depth 1 to 10
# with data at every layer.  qemu-img runs on one copy of the chain and
# qimg on another: same output, same guest content, the same map for every
# image touched, and `qemu-img check` clean on qimg's images.
. "$(dirname "$0")/lib.sh"
Q=$QEMU_IMG
# depths 6 to 9 add nothing 5 and 10 do not (CHAIN_DEPTHS="$(seq 10)" runs
# them all); the soak test walks random chains for longer
DEPTHS=${CHAIN_DEPTHS:-"1 2 3 4 5 10"}
REF=$SCRATCH/run.ref/work
NEW=$SCRATCH/run.new/work

# Layer i of a chain: patterns unique to the layer, a partial-cluster
# write, zero writes (the v3 zero flag) and explicit zero data, so that
# layers overlap each other in different ways.
layer_data() {
    local f=$1 i=$2 c=()
    c+=(-c "write -P $((i + 1)) $((i * 320))k 200k")
    c+=(-c "write -P $((0x40 + i)) $((3072 + i * 37))k 5000")
    case $((i % 3)) in
    1) c+=(-c "write -z $(((i * 448) % 3400 + 100))k 70k") ;;
    2) c+=(-c "write -P 0 $(((i * 512 + 1000) % 3000))k 64k") ;;
    esac
    "$QEMU_IO" -f qcow2 "${c[@]}" "$f" >/dev/null
}

# mkchain DIR DEPTH [BASE_SIZE]: l0.qcow2 (the base) up to lDEPTH.qcow2 (the
# top), each backed by the one below with a relative name.
mkchain() {
    local dir=$1 depth=$2 bsize=${3:-4M} i
    rm -rf "$dir" && mkdir -p "$dir" || return 1
    "$Q" create -q -f qcow2 ${CREATE_OPTS:+-o "$CREATE_OPTS"} "$dir/l0.qcow2" "$bsize" || return 1
    if [ "$bsize" = 4M ]; then
        layer_data "$dir/l0.qcow2" 0 || return 1
    else
        "$QEMU_IO" -f qcow2 -c "write -P 1 0 200k" -c "write -P 2 1M 65k" "$dir/l0.qcow2" >/dev/null || return 1
    fi
    for ((i = 1; i <= depth; i++)); do
        "$Q" create -q -f qcow2 ${CREATE_OPTS:+-o "$CREATE_OPTS"} -b "l$((i - 1)).qcow2" -F qcow2 \
            "$dir/l$i.qcow2" 4M || return 1
        layer_data "$dir/l$i.qcow2" "$i" || return 1
    done
}

# A base with other content for "rebase onto a different base".
mkother() {
    "$Q" create -q -f qcow2 "$1" 4M &&
    "$QEMU_IO" -f qcow2 -c "write -P 0x77 0 1M" -c "write -P 0x78 2500k 300k" \
        -c "write -z 3M 128k" "$1" >/dev/null
}

# qemu-img commit copies with a block job whose requests run concurrently:
# which cluster gets which host offset varies from run to run.  After a
# commit, maps are compared without host offsets (extents that only
# differed by them merged).
no_offsets() {
    sed -e 's/, "offset": [0-9]*//' -e 's/^\[//' -e 's/\]$//' -e 's/},$/}/' |
    awk -F', ' '{
        k = $0; sub(/"start": [0-9]*, "length": [0-9]*, /, "", k)
        match($0, /"length": [0-9]*/); len = substr($0, RSTART + 10, RLENGTH - 10)
        match($0, /"start": [0-9]*/); st = substr($0, RSTART + 9, RLENGTH - 9)
        if (k == pk) { plen += len; next }
        if (NR > 1) print pst, plen, pk
        pk = k; pst = st; plen = len
    } END { print pst, plen, pk }'
}
MAPFILTER=cat

# After `same`: qimg's copy of each image is clean for qemu-img check, maps
# as qemu's does, and reads the same guest content as qemu's copy.
verify() {
    local name=$1; shift
    local img ok why
    for img in "$@"; do
        ok=1 why=""
        if ! out=$(cd "$NEW" && "$Q" check "$img" 2>&1); then
            ok=0 why="check: $out"
        fi
        if ! (cd "$REF" && "$Q" map --output=json "$img" | $MAPFILTER) >"$SCRATCH/map.ref" 2>&1 ||
           ! (cd "$NEW" && "$Q" map --output=json "$img" | $MAPFILTER) >"$SCRATCH/map.new" 2>&1; then
            ok=0 why="$why map failed"
        elif ! cmp -s "$SCRATCH/map.ref" "$SCRATCH/map.new"; then
            ok=0 why="$why map differs: $(diff "$SCRATCH/map.ref" "$SCRATCH/map.new" | head -6)"
        fi
        if ! out=$("$Q" compare "$REF/$img" "$NEW/$img" 2>&1); then
            ok=0 why="$why compare: $out"
        fi
        if [ $ok = 1 ]; then pass "$name:$img"; else fail "$name:$img" "$why"; fi
    done
}

# The guest content as raw bytes, both copies: cmp.
verify_raw() {
    local name=$1 img=$2
    rm -f "$SCRATCH/a.raw" "$SCRATCH/b.raw"
    if "$Q" convert -O raw "$REF/$img" "$SCRATCH/a.raw" &&
       "$Q" convert -O raw "$NEW/$img" "$SCRATCH/b.raw" &&
       cmp -s "$SCRATCH/a.raw" "$SCRATCH/b.raw"; then
        pass "$name:raw"
    else
        fail "$name:raw" "raw contents of $img differ"
    fi
}

# What the header records (backing name and format) in both copies.
verify_backing() {
    local name=$1 img=$2 a b
    a=$(cd "$REF" && "$Q" info -U "$img" | grep '^backing file')
    b=$(cd "$NEW" && "$Q" info -U "$img" | grep '^backing file')
    expect_eq "$name:header" "${b//$NEW/W}" "${a//$REF/W}"
}

# Guest content of the top before the operation, to check it is kept.
snapshot_top() { "$Q" convert -O raw "$IN/$1" "$SCRATCH/before.raw"; }
verify_kept() {
    local name=$1 img=$2
    if "$Q" convert -O raw "$NEW/$img" "$SCRATCH/after.raw" &&
       cmp -s "$SCRATCH/before.raw" "$SCRATCH/after.raw"; then
        pass "$name:kept"
    else
        fail "$name:kept" "guest content of $img changed"
    fi
}

rm -rf "$IN" && mkdir -p "$IN"
for d in $DEPTHS; do
    mkchain "$IN" "$d" || { fail "mkchain-$d"; continue; }
    mkother "$IN/other.qcow2"
    top=l$d.qcow2 below=l$((d - 1)).qcow2 mid=l$((d / 2)).qcow2
    snapshot_top "$top"

    # rebase, safe, onto the base (skips the layers in between)
    same "d$d-rebase-base" rebase -b l0.qcow2 -F qcow2 "$top"
    verify "d$d-rebase-base" "$top"; verify_raw "d$d-rebase-base" "$top"
    verify_backing "d$d-rebase-base" "$top"; verify_kept "d$d-rebase-base" "$top"
    # onto a base with other content
    same "d$d-rebase-other" rebase -b other.qcow2 -F qcow2 "$top"
    verify "d$d-rebase-other" "$top"; verify_raw "d$d-rebase-other" "$top"
    verify_kept "d$d-rebase-other" "$top"
    # flatten
    same "d$d-rebase-flat" rebase -b "" "$top"
    verify "d$d-rebase-flat" "$top"; verify_raw "d$d-rebase-flat" "$top"
    verify_backing "d$d-rebase-flat" "$top"; verify_kept "d$d-rebase-flat" "$top"
    # unsafe: header only
    same "d$d-rebase-u" rebase -u -b l0.qcow2 -F qcow2 "$top"
    verify "d$d-rebase-u" "$top"; verify_backing "d$d-rebase-u" "$top"
    # commit into the immediate backing file; the top is emptied
    same "d$d-commit" commit "$top"
    MAPFILTER=no_offsets verify "d$d-commit" "$top" "$below"; verify_raw "d$d-commit" "$top"
    verify_kept "d$d-commit" "$top"
    # commit -d: the top keeps its data
    same "d$d-commit-d" commit -d "$top"
    MAPFILTER=no_offsets verify "d$d-commit-d" "$top" "$below"; verify_kept "d$d-commit-d" "$top"
    # commit -b into the base and into a middle layer
    same "d$d-commit-b-base" commit -b l0.qcow2 "$top"
    MAPFILTER=no_offsets verify "d$d-commit-b-base" $(for ((i = 0; i <= d; i++)); do echo "l$i.qcow2"; done)
    verify_kept "d$d-commit-b-base" "$top"
    if [ "$d" -ge 2 ]; then
        same "d$d-commit-b-mid" commit -b "$mid" "$top"
        MAPFILTER=no_offsets verify "d$d-commit-b-mid" $(for ((i = 0; i <= d; i++)); do echo "l$i.qcow2"; done)
        verify_kept "d$d-commit-b-mid" "$top"
        # a middle layer of the chain as the image
        same "d$d-commit-mid" commit "$below"
        MAPFILTER=no_offsets verify "d$d-commit-mid" "$top" "$below"
        same "d$d-rebase-mid" rebase -b l0.qcow2 -F qcow2 "$below"
        verify "d$d-rebase-mid" "$top" "$below"
    fi
done

# ---- options, on a 3-deep chain
mkchain "$IN" 3 || fail mkchain-3
mkother "$IN/other.qcow2"
snapshot_top l3.qcow2
for opts in "-q" "-p" "-t none" "-T none" "-t writethrough -T directsync" "-U" "-f qcow2" "-fqcow2 -p"; do
    # shellcheck disable=SC2086
    same "opt[$opts]-rebase" rebase $opts -b l1.qcow2 -F qcow2 l3.qcow2
    verify "opt[$opts]-rebase" l3.qcow2; verify_kept "opt[$opts]-rebase" l3.qcow2
    # shellcheck disable=SC2086
    same "opt[$opts]-rebase-other" rebase $opts -b other.qcow2 -F qcow2 l3.qcow2
done
same rebase-p-u     rebase -p -u -b l0.qcow2 -F qcow2 l3.qcow2
same rebase-p-flat  rebase -p -b "" l3.qcow2
verify rebase-p-flat l3.qcow2
same rebase-F-raw   rebase -b l0.qcow2 -F raw l3.qcow2
same rebase-F-bad   rebase -b l0.qcow2 -F nosuch l3.qcow2
same rebase-no-F    rebase -b l0.qcow2 l3.qcow2
same rebase-missing rebase -b nosuch.qcow2 -F qcow2 l3.qcow2
same rebase-same    rebase -b l2.qcow2 -F qcow2 l3.qcow2
verify rebase-same l3.qcow2
same rebase-self    rebase -b l3.qcow2 -F qcow2 l3.qcow2
same rebase-image-opts rebase -b l0.qcow2 -F qcow2 --image-opts driver=qcow2,file.filename=l3.qcow2
verify rebase-image-opts l3.qcow2
for opts in "-q" "-t none" "-t unsafe" "-d -q" "-r 100M" "-f qcow2" "-b l1.qcow2 -q"; do
    # shellcheck disable=SC2086
    same "opt[$opts]-commit" commit $opts l3.qcow2
    MAPFILTER=no_offsets verify "opt[$opts]-commit" l3.qcow2 l2.qcow2 l1.qcow2
done
same commit-b-missing commit -b nosuch.qcow2 l3.qcow2
same commit-b-self    commit -b l3.qcow2 l3.qcow2
same commit-b-base-abs commit -b "$IN/l0.qcow2" l3.qcow2
same commit-base      commit l0.qcow2
same commit-image-opts commit --image-opts driver=qcow2,file.filename=l3.qcow2
MAPFILTER=no_offsets verify commit-image-opts l3.qcow2 l2.qcow2

# commit -p: qemu's progress depends on timing (how often its job loop
# polls); check its shape: starts at 0, ends at 100, then the message.
out=$(cd "$IN" && cp l3.qcow2 p.qcow2 && "$QIMG_AS_QEMU" commit -p -d p.qcow2 | tr '\r' '\n')
first=$(printf '%s\n' "$out" | head -1) last=$(printf '%s\n' "$out" | grep -v '^$' | tail -2 | tr '\n' '|')
expect_eq commit-p-first "$first" "    (0.00/100%)"
expect_eq commit-p-last "$last" "    (100.00/100%)|Image committed.|"
# -r: the rate holds (1 MiB of data at 4 MiB/s: at least 0.2 s)
rm -f "$IN/p.qcow2"
mkchain "$SCRATCH/rate" 1
"$QEMU_IO" -f qcow2 -c "write -P 9 0 1M" "$SCRATCH/rate/l1.qcow2" >/dev/null
t0=$EPOCHREALTIME
"$QIMG_AS_QEMU" commit -q -r 4M "$SCRATCH/rate/l1.qcow2"
t1=$EPOCHREALTIME
expect_eq commit-rate-slow "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a >= 0.2) }')" 1

# ---- other image options: version 2 (no zero clusters; emptied cluster
# by cluster), subclusters, small clusters, 1-bit refcounts, lazy refcounts
for o in compat=0.10 extended_l2=on cluster_size=4k refcount_bits=1 lazy_refcounts=on; do
    CREATE_OPTS=$o mkchain "$IN" 3 || { fail "mkchain-$o"; continue; }
    mkother "$IN/other.qcow2"
    snapshot_top l3.qcow2
    same "$o-rebase-base" rebase -b l0.qcow2 -F qcow2 l3.qcow2
    verify "$o-rebase-base" l3.qcow2; verify_kept "$o-rebase-base" l3.qcow2
    same "$o-rebase-other" rebase -b other.qcow2 -F qcow2 l3.qcow2
    verify "$o-rebase-other" l3.qcow2; verify_kept "$o-rebase-other" l3.qcow2
    same "$o-rebase-flat" rebase -b "" l3.qcow2
    verify "$o-rebase-flat" l3.qcow2; verify_kept "$o-rebase-flat" l3.qcow2
    same "$o-rebase-u-flat" rebase -u -b "" l3.qcow2
    verify_backing "$o-rebase-u-flat" l3.qcow2
    same "$o-commit" commit l3.qcow2
    MAPFILTER=no_offsets verify "$o-commit" l3.qcow2 l2.qcow2; verify_kept "$o-commit" l3.qcow2
    same "$o-commit-b" commit -b l0.qcow2 l3.qcow2
    MAPFILTER=no_offsets verify "$o-commit-b" l0.qcow2 l1.qcow2 l2.qcow2 l3.qcow2
done

# ---- a smaller base grows; a longer top over a shorter backing
mkchain "$IN" 2 2M || fail mkchain-small
snapshot_top l2.qcow2
same small-base-commit commit l2.qcow2
MAPFILTER=no_offsets verify small-base-commit l2.qcow2 l1.qcow2
same small-base-commit-b commit -b l0.qcow2 l2.qcow2
MAPFILTER=no_offsets verify small-base-commit-b l0.qcow2 l1.qcow2 l2.qcow2; verify_kept small-base-commit-b l2.qcow2
same small-base-rebase rebase -b l0.qcow2 -F qcow2 l2.qcow2
verify small-base-rebase l2.qcow2; verify_kept small-base-rebase l2.qcow2
same small-base-rebase-other rebase -b other.qcow2 -F qcow2 l1.qcow2
"$Q" create -q -f qcow2 "$IN/small.qcow2" 1M
"$QEMU_IO" -f qcow2 -c "write -P 0x55 0 1M" "$IN/small.qcow2" >/dev/null
same onto-smaller rebase -b small.qcow2 -F qcow2 l2.qcow2
verify onto-smaller l2.qcow2; verify_kept onto-smaller l2.qcow2

# ---- relative and absolute names
mkdir -p "$IN/sub" "$SCRATCH/abs"
mkchain "$IN/sub" 2
mkchain "$SCRATCH/abs" 0
snapshot_top sub/l2.qcow2
same rel-rebase rebase -b l0.qcow2 -F qcow2 sub/l2.qcow2
verify rel-rebase sub/l2.qcow2; verify_backing rel-rebase sub/l2.qcow2; verify_kept rel-rebase sub/l2.qcow2
same rel-rebase-dotdot rebase -b ../other.qcow2 -F qcow2 sub/l2.qcow2
verify rel-rebase-dotdot sub/l2.qcow2; verify_backing rel-rebase-dotdot sub/l2.qcow2
same rel-rebase-cwd rebase -b sub/l0.qcow2 -F qcow2 sub/l2.qcow2
same abs-rebase rebase -b "$SCRATCH/abs/l0.qcow2" -F qcow2 sub/l2.qcow2
verify abs-rebase sub/l2.qcow2; verify_backing abs-rebase sub/l2.qcow2; verify_kept abs-rebase sub/l2.qcow2
same abs-rebase-u rebase -u -b "$SCRATCH/abs/l0.qcow2" -F qcow2 sub/l2.qcow2
verify_backing abs-rebase-u sub/l2.qcow2
same rel-rebase-u rebase -u -b ./l1.qcow2 -F qcow2 sub/l2.qcow2
verify_backing rel-rebase-u sub/l2.qcow2
same rel-commit-b commit -b l0.qcow2 sub/l2.qcow2
MAPFILTER=no_offsets verify rel-commit-b sub/l0.qcow2 sub/l1.qcow2 sub/l2.qcow2
same rel-commit-b-path commit -b sub/l0.qcow2 sub/l2.qcow2
# unsafe rebase works without the old backing file
rm "$IN/sub/l1.qcow2"
same u-no-old rebase -u -b l0.qcow2 -F qcow2 sub/l2.qcow2
verify u-no-old sub/l2.qcow2; verify_backing u-no-old sub/l2.qcow2
same safe-no-old rebase -b l0.qcow2 -F qcow2 sub/l2.qcow2
same commit-no-old commit sub/l2.qcow2

# ---- hostile chains: clear errors, no hang
rm -rf "$IN" && mkdir -p "$IN"
# both tools under a timeout, through wrappers that keep the program name
printf '#!/bin/sh\nexec timeout 20 %s "$@"\n' "$Q" >"$SCRATCH/ref-t"
printf '#!/bin/sh\nexec timeout 20 %s "$@"\n' "$QIMG_AS_QEMU" >"$SCRATCH/new-t"
chmod +x "$SCRATCH/ref-t" "$SCRATCH/new-t"
same_t() { QEMU_IMG=$SCRATCH/ref-t QIMG_AS_QEMU=$SCRATCH/new-t same "$@"; }
"$Q" create -q -f qcow2 "$IN/a.qcow2" 1M
"$Q" rebase -u -b a.qcow2 -F qcow2 "$IN/a.qcow2"
"$Q" create -q -f qcow2 "$IN/b.qcow2" 1M
"$Q" create -q -f qcow2 -u -b b.qcow2 -F qcow2 "$IN/c.qcow2" 1M
"$Q" rebase -u -b c.qcow2 -F qcow2 "$IN/b.qcow2"
"$Q" create -q -f qcow2 "$IN/ok.qcow2" 1M
"$Q" create -q -f qcow2 -u -b c.qcow2 -F qcow2 "$IN/x.qcow2" 1M
for img in a.qcow2 c.qcow2; do
    same_t "loop-$img-rebase-u" rebase -u -b ok.qcow2 -F qcow2 "$img"
    same_t "loop-$img-info" info --backing-chain "$img"
done
# qemu-img fails on a loop through the image it opens read-write (its own
# lock) and hangs on the others; qimg names the loop
for args in "commit a.qcow2" "rebase -b ok.qcow2 -F qcow2 a.qcow2" "commit c.qcow2" \
            "rebase -b ok.qcow2 -F qcow2 c.qcow2" "commit x.qcow2" "rebase -b ok.qcow2 -F qcow2 x.qcow2" \
            "commit -b b.qcow2 x.qcow2" "rebase -b a.qcow2 -F qcow2 ok.qcow2"; do
    # shellcheck disable=SC2086
    out=$(cd "$IN" && timeout 10 "$QIMG_AS_QEMU" $args 2>&1); rc=$?
    case "$rc:$out" in
    "1:qemu-img: Could not open"*"creates an infinite loop.") pass "loop[$args]" ;;
    *) fail "loop[$args]" "rc=$rc: $out" ;;
    esac
done
"$Q" create -q -f qcow2 -u -b /dev/null -F raw "$IN/dev.qcow2" 1M
"$Q" create -q -f qcow2 -u -b /dev/null -F qcow2 "$IN/devq.qcow2" 1M
mkdir "$IN/dir"
"$Q" create -q -f qcow2 -u -b dir -F qcow2 "$IN/dir.qcow2" 1M
"$Q" create -q -f qcow2 -u -b dir -F raw "$IN/dirr.qcow2" 1M
for img in dev.qcow2 devq.qcow2 dir.qcow2 dirr.qcow2; do
    same_t "hostile-$img-commit" commit "$img"
    same_t "hostile-$img-rebase" rebase -b ok.qcow2 -F qcow2 "$img"
    same_t "hostile-$img-rebase-u" rebase -u -b ok.qcow2 -F qcow2 "$img"
    same_t "hostile-$img-onto" rebase -b "${img%%.qcow2}" -F qcow2 ok.qcow2
done
same_t hostile-onto-dev rebase -b /dev/null -F qcow2 ok.qcow2
same_t hostile-onto-dir rebase -b dir -F raw ok.qcow2
# a FIFO: qemu-img blocks on it; qimg must not
mkfifo "$IN/fifo"
"$Q" create -q -f qcow2 -u -b fifo -F raw "$IN/fifo.qcow2" 1M
for args in "commit fifo.qcow2" "rebase -b ok.qcow2 -F qcow2 fifo.qcow2" \
            "rebase -b fifo -F raw ok.qcow2" "commit -b fifo fifo.qcow2"; do
    # shellcheck disable=SC2086
    out=$(cd "$IN" && timeout 10 "$QIMG_AS_QEMU" $args 2>&1); rc=$?
    if [ $rc = 1 ] && [ -n "$out" ]; then pass "fifo[$args]"; else fail "fifo[$args]" "rc=$rc: $out"; fi
done
# deeper than qimg's limit of 1000 layers: refused with a message
mkdir "$IN/deep"
"$Q" create -q -f qcow2 "$IN/deep/d0.qcow2" 1M
for ((i = 1; i <= 1001; i++)); do
    "$Q" create -q -f qcow2 -u -b "d$((i - 1)).qcow2" -F qcow2 "$IN/deep/d$i.qcow2" 1M
done
for args in "commit d1001.qcow2" "rebase -b d0.qcow2 -F qcow2 d1001.qcow2"; do
    # shellcheck disable=SC2086
    out=$(cd "$IN/deep" && timeout 60 "$QIMG_AS_QEMU" $args 2>&1); rc=$?
    case "$out" in
    *"too long"*) [ $rc = 1 ] && pass "deep[$args]" || fail "deep[$args]" "rc=$rc" ;;
    *) fail "deep[$args]" "rc=$rc: $out" ;;
    esac
done
