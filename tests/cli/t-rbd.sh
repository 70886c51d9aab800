#!/bin/bash
# The rbd storage backend against a throw-away one-node Ceph cluster
# (tests/cli/lib-ceph.sh), every command diffed against qemu-img 7.2's
# block-rbd on the same cluster; data judged by `rbd export` / `rbd info`.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-ceph.sh"

missing=$(ceph_missing)
[ -z "$missing" ] || { skip "missing $missing"; exit 0; }
"$QEMU_IMG" --help 2>/dev/null | grep -q '^Supported formats:.* rbd' ||
    { skip "qemu-img without rbd (qemu-block-extra)"; exit 0; }
[ "$(sed -n 's/^#define HAVE_LIBRBD //p' "$TOP/build/config.h")" = 1 ] ||
    { skip "qimg built without librbd"; exit 0; }

trap 'ceph_stop; rm -rf "$SCRATCH"' EXIT
if ! ceph_start "$SCRATCH/ceph"; then
    fail "ceph cluster" "$CEPH_WHY" "$(tail -5 "$SCRATCH"/ceph/log/*.log 2>/dev/null)"
    exit 0
fi
ceph_pool p || fail "pool p"
D=$SCRATCH/data
mkdir -p "$D"

# rsame NAME ARGS...: both tools run ARGS, "%" in an argument standing for
# an image of their own (ref-N / new-N, N counting the calls) and "^" for
# their prefix (ref / new: "^-sn" names an image each tool has); output,
# errors and exit code compared with those names put back.
RN=0
rsame() {
    local name=$1 a=$SCRATCH/r.ref b=$SCRATCH/r.new t; shift
    RN=$((RN + 1))
    mkdir -p "$a" "$b"
    local ra=() rb=()
    for t in "$@"; do
        t=${t//%/^-$RN}
        ra+=("${t//^/ref}"); rb+=("${t//^/new}")
    done
    # the two tools at once: each works on its own images
    (cd "$D" && "$QEMU_IMG" "${ra[@]}" >"$a/out" 2>"$a/err"; echo $? >"$a/rc") &
    local ref=$!
    (cd "$D" && "$QIMG_AS_QEMU" "${rb[@]}" >"$b/out" 2>"$b/err"; echo $? >"$b/rc")
    wait $ref
    sed -i "s/ref-$RN/%/g; s/ref-/^-/g" "$a/out" "$a/err"
    sed -i "s/new-$RN/%/g; s/new-/^-/g" "$b/out" "$b/err"
    local f what=""
    for f in out err rc; do
        cmp -s "$a/$f" "$b/$f" || what="$what $f differs:
$(diff "$a/$f" "$b/$f" | head -20)
"
    done
    if [ -z "$what" ]; then pass "$name"; else fail "$name" "qemu-img $*" "$what"; fi
    LAST=$RN
}
# Same images for both tools (read-only commands)
same_rbd() {
    local name=$1; shift
    local a=$SCRATCH/s.ref b=$SCRATCH/s.new f what=""
    mkdir -p "$a" "$b"
    # read-only: the two tools at once
    (cd "$D" && "$QEMU_IMG" "$@" >"$a/out" 2>"$a/err"; echo $? >"$a/rc") &
    local ref=$!
    (cd "$D" && "$QIMG_AS_QEMU" "$@" >"$b/out" 2>"$b/err"; echo $? >"$b/rc")
    wait $ref
    for f in out err rc; do
        cmp -s "$a/$f" "$b/$f" || what="$what $f differs:
$(diff "$a/$f" "$b/$f" | head -20)
"
    done
    if [ -z "$what" ]; then pass "$name"; else fail "$name" "qemu-img $*" "$what"; fi
}
export_sha() { rbd export "$1" - 2>/dev/null | sha256sum | cut -d' ' -f1; }
rbd_size() { rbd info --format json "$1" 2>/dev/null | "$DEB_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["size"])'; }

# ---- a source: 24 MiB with data in a few places, as raw and qcow2
"$QEMU_IMG" create -q -f raw "$D/src.raw" 24M
"$QEMU_IO" -f raw -c "write -P 0x11 0 1M" -c "write -P 0x22 5M 3M" -c "write -P 0x33 20M 64k" \
    "$D/src.raw" >/dev/null || fail "write src.raw"
"$QEMU_IMG" convert -O qcow2 "$D/src.raw" "$D/src.qcow2" || fail "src.qcow2"
SRC_SHA=$(sha "$D/src.raw")

# ---- the image both tools read: written by rbd itself
rbd import --no-progress "$D/src.raw" p/img >/dev/null 2>&1 || fail "rbd import"
rbd snap create p/img@s1 >/dev/null 2>&1 || fail "rbd snap create"
CONF=$CEPH_CONF
MON=${CEPH_MON_HOST}

same_rbd "info string" info rbd:p/img
same_rbd "info json" info --output=json rbd:p/img
same_rbd "info conf=" info "rbd:p/img:conf=$CONF"
same_rbd "info id= and a ceph setting" info "rbd:p/img:id=admin:rbd_cache=false"
same_rbd "info mon_host=" info "rbd:p/img:mon_host=$MON"
same_rbd "info snapshot" info rbd:p/img@s1
same_rbd "info -f raw" info -f raw rbd:p/img
same_rbd "info json: file" info 'json:{"driver":"raw","file":{"driver":"rbd","pool":"p","image":"img"}}'
same_rbd "info json: snapshot" info --output=json 'json:{"driver":"raw","file":{"driver":"rbd","pool":"p","image":"img","snapshot":"s1","conf":"'"$CONF"'"}}'
same_rbd "info --image-opts file" info --image-opts "driver=raw,file.driver=rbd,file.pool=p,file.image=img,file.user=admin"
same_rbd "info --image-opts server" info --image-opts "driver=raw,file.driver=rbd,file.pool=p,file.image=img,file.server.0.host=127.0.0.1,file.server.0.port=${MON#*:}"
same_rbd "info --image-opts driver=rbd" info --image-opts "driver=rbd,pool=p,image=img"
same_rbd "info --image-opts driver=rbd json" info --output=json --image-opts "driver=rbd,pool=p,image=img,namespace="
same_rbd "map --image-opts driver=rbd" map --image-opts "driver=rbd,pool=p,image=img"
same_rbd "info json: filename (deprecated form)" info 'json:{"driver":"raw","file":{"driver":"rbd","filename":"rbd:p/img:rbd_cache=false"}}'
same_rbd "map --image-opts filename" map --image-opts "file.driver=rbd,file.filename=rbd:p/img"
same_rbd "map" map rbd:p/img
same_rbd "map json" map --output=json -f raw rbd:p/img
same_rbd "snapshot -l" snapshot -l rbd:p/img
same_rbd "compare rbd with local" compare -f raw -F raw rbd:p/img "$D/src.raw"
same_rbd "compare rbd with qcow2" compare rbd:p/img src.qcow2
same_rbd "compare snapshot" compare rbd:p/img@s1 rbd:p/img

# ---- errors: clear, non-zero, nothing written
same_rbd "missing image" info rbd:p/nope
same_rbd "missing pool" info rbd:nopool/img
same_rbd "missing snapshot" info rbd:p/img@nope
same_rbd "bad conf" info "rbd:p/img:conf=$SCRATCH/no.conf"
same_rbd "unknown ceph setting" info "rbd:p/img:no_such_setting=1"
same_rbd "setting without value" info "rbd:p/img:conf"
same_rbd "no pool" info "rbd:img"
same_rbd "missing namespace" info "rbd:p/ns/img"
same_rbd "unknown option" info --image-opts "driver=raw,file.driver=rbd,file.pool=p,file.image=img,file.bogus=1"
same_rbd "no image option" info --image-opts "driver=raw,file.driver=rbd,file.pool=p"
same_rbd "auth-client-required none" info --image-opts "driver=raw,file.driver=rbd,file.pool=p,file.image=img,file.auth-client-required.0=none"
same_rbd "auth-client-required bad" info --image-opts "driver=raw,file.driver=rbd,file.pool=p,file.image=img,file.auth-client-required.0=bogus"
same_rbd "key-secret missing" info --image-opts "driver=raw,file.driver=rbd,file.pool=p,file.image=img,file.key-secret=nokey"
same_rbd "check raw on rbd" check -f raw rbd:p/img
rsame "convert into a missing pool" convert -O raw src.raw rbd:nopool/%
expect_eq "nothing written to a missing pool" "$(rbd ls p | grep -c "^new-$LAST")" 0

# ---- create
rsame "create raw" create -f raw rbd:p/% 16M
expect_eq "create raw: rbd size" "$(rbd_size p/new-$LAST)" "$(rbd_size p/ref-$LAST)"
same_rbd "map new raw" map --output=json rbd:p/ref-$LAST
same_rbd "map new raw (ours)" map --output=json rbd:p/new-$LAST
rsame "create existing" create -f raw rbd:p/img 1M
rsame "create object size" create -f raw -o cluster_size=64k rbd:p/% 1M
expect_eq "create object size: order" "$(rbd info p/new-$LAST | grep -o 'order [0-9]*')" "order 16"
rsame "create bad object size" create -f raw -o cluster_size=1000 rbd:p/% 1M
rsame "create qcow2" create -f qcow2 rbd:p/% 16M
same_rbd "info qcow2 on rbd" info rbd:p/new-$LAST
rsame "create -f rbd" create -f rbd -o cluster_size=64k rbd:p/% 1M
expect_eq "create -f rbd: order" "$(rbd info p/new-$LAST | grep -o 'order [0-9]*')" "order 16"
rsame "create -f rbd of a local name" create -f rbd %.img 1M
expect_eq "create -f rbd of a local name: nothing" "$(ls "$D" | grep -c "new-$LAST")" 0
rsame "create -f rbd with a backing file" create -f rbd -b src.raw -F raw rbd:p/% 1M
rsame "convert -O rbd" convert -O rbd src.qcow2 rbd:p/%
expect_eq "convert -O rbd: data" "$(export_sha p/new-$LAST)" "$SRC_SHA"
same_rbd "check qcow2 on rbd" check rbd:p/new-$LAST

# ---- convert both ways
rsame "convert qcow2 -> rbd" convert -O raw src.qcow2 rbd:p/%
expect_eq "convert qcow2 -> rbd: data (rbd export)" "$(export_sha p/new-$LAST)" "$SRC_SHA"
same_rbd "map converted" map --output=json rbd:p/new-$LAST
rsame "convert -m 8 -W qcow2 -> rbd" convert -m 8 -W -O raw src.qcow2 rbd:p/%
expect_eq "convert -W: data" "$(export_sha p/new-$LAST)" "$SRC_SHA"
rbd create --size 24M p/ref-n >/dev/null 2>&1 && rbd create --size 24M p/new-n >/dev/null 2>&1 ||
    fail "rbd create for -n"
rsame "convert -n into rbd" convert -n -O raw src.raw rbd:p/^-n
expect_eq "convert -n: data" "$(export_sha p/new-n)" "$SRC_SHA"
rsame "convert rbd -> qcow2" convert -O qcow2 rbd:p/img %.qcow2
expect_eq "convert rbd -> qcow2: data" "$("$QEMU_IMG" compare -q "$D/new-$LAST.qcow2" "$D/src.raw" && echo same)" same
same_rbd "check converted qcow2" check "new-$LAST.qcow2"
rsame "convert rbd snapshot -> raw" convert -O raw rbd:p/img@s1 %.raw
expect_eq "convert snapshot: data" "$(sha "$D/new-$LAST.raw")" "$SRC_SHA"
rsame "convert qcow2 into a qcow2 on rbd" convert -O qcow2 src.raw rbd:p/%
same_rbd "check qcow2 written into rbd" check rbd:p/new-$LAST
expect_eq "qcow2 on rbd: data" "$("$QEMU_IMG" compare -q "rbd:p/new-$LAST" "$D/src.raw" && echo same)" same

# ---- resize
rbd import --no-progress "$D/src.raw" p/ref-rs >/dev/null 2>&1
rbd import --no-progress "$D/src.raw" p/new-rs >/dev/null 2>&1
rsame "resize" resize -f raw rbd:p/^-rs 32M
expect_eq "resize: rbd size" "$(rbd_size p/new-rs)" $((32 << 20))
rsame "resize --shrink" resize -f raw --shrink rbd:p/^-rs 8M
expect_eq "shrink: rbd size" "$(rbd_size p/new-rs)" $((8 << 20))
rsame "resize snapshot" resize -f raw rbd:p/img@s1 64M

# ---- snapshots at the protocol level (qemu's fallback from raw to rbd)
for t in ref new; do rbd import --no-progress "$D/src.raw" p/$t-sn >/dev/null 2>&1; done
rsame "snapshot -c" snapshot -c a rbd:p/^-sn
rsame "snapshot -c again" snapshot -c a rbd:p/^-sn
rsame "snapshot -c b" snapshot -c b rbd:p/^-sn
rsame "snapshot -l two" snapshot -l rbd:p/^-sn
"$QEMU_IO" -f raw -c "write -P 0x77 0 64k" rbd:p/ref-sn >/dev/null
"$QEMU_IO" -f raw -c "write -P 0x77 0 64k" rbd:p/new-sn >/dev/null
rsame "snapshot -a" snapshot -a a rbd:p/^-sn
expect_eq "snapshot -a: data back" "$(export_sha p/new-sn)" "$SRC_SHA"
rsame "snapshot -a missing" snapshot -a nope rbd:p/^-sn
rsame "snapshot -d" snapshot -d b rbd:p/^-sn
rsame "snapshot -d missing" snapshot -d b rbd:p/^-sn
expect_eq "snapshot -d: rbd snap ls" "$(rbd snap ls p/new-sn | awk 'NR>1 {print $2}')" "a"

# ---- incremental backup (qimg only): convert -D PREV --from-snapshot=S1
# IMG@S2 reads only what changed between the snapshots
rbd create --size 32M p/vol >/dev/null 2>&1 || fail "rbd create vol"
"$QEMU_IO" -f raw -c "write -P 0x41 0 32M" rbd:p/vol >/dev/null || fail "fill vol"
rbd snap create p/vol@b0 >/dev/null 2>&1
"$QIMG" convert -O qcow2 rbd:p/vol@b0 "$D/b0.qcow2" || fail "full backup"
# 5% of 32 MiB changed: 1 MiB written, 512 KiB discarded, 128 KiB zeroed
"$QEMU_IO" -f raw -c "write -P 0x42 3M 1M" -c "discard 17M 512k" -c "write -z 30M 128k" \
    rbd:p/vol >/dev/null || fail "change vol"
rbd snap create p/vol@b1 >/dev/null 2>&1
rm -f "$D/stats"
QIMG_RBD_STATS=$D/stats "$QIMG" convert -D b0.qcow2 --from-snapshot=b0 rbd:p/vol@b1 \
    -O qcow2 "$D/b1.qcow2"
expect_eq "incremental: exit code" "$?" 0
read_bytes=$(awk '/^vol@b1 read/ {print $3}' "$D/stats")
check "incremental: read at most 10% ($read_bytes bytes)" test "${read_bytes:-999999999}" -le $(((32 << 20) / 10))
rbd export --no-progress p/vol@b1 "$D/b1.raw" >/dev/null 2>&1
expect_eq "incremental: chain reads as the snapshot" \
    "$("$QEMU_IMG" compare -q "$D/b1.qcow2" "$D/b1.raw" && echo same)" same
same_rbd "incremental: check" check b1.qcow2
expect_eq "incremental: backing file" \
    "$("$QEMU_IMG" info --output=json "$D/b1.qcow2" | grep -c '"backing-filename": "b0.qcow2"')" 1
allocated=$("$QEMU_IMG" map --output=json "$D/b1.qcow2" | grep -c '"depth": 0, "present": true')
check "incremental: only changed clusters in the increment" test "$allocated" -ge 1 -a "$allocated" -le 3
# a second increment on top of the first
"$QEMU_IO" -f raw -c "write -P 0x43 8M 64k" rbd:p/vol >/dev/null
rbd snap create p/vol@b2 >/dev/null 2>&1
"$QIMG" convert -D b1.qcow2 --from-snapshot=b1 rbd:p/vol@b2 -O qcow2 "$D/b2.qcow2" ||
    fail "second increment"
rbd export --no-progress p/vol@b2 "$D/b2.raw" >/dev/null 2>&1
expect_eq "second increment: chain reads as the snapshot" \
    "$("$QEMU_IMG" compare -q "$D/b2.qcow2" "$D/b2.raw" && echo same)" same
"$QIMG" convert -O raw "$D/b2.qcow2" "$D/chain.raw" || fail "convert the chain"
expect_eq "second increment: qimg convert of the chain = rbd export" "$(sha "$D/chain.raw")" "$(sha "$D/b2.raw")"
# refused: no -D, a source that cannot tell, a missing snapshot
check_fail "--from-snapshot without -D" "$QIMG" convert --from-snapshot=b0 rbd:p/vol@b1 -O qcow2 "$D/x.qcow2"
check_fail "--from-snapshot on a local source" "$QIMG" convert -D b0.qcow2 --from-snapshot=b0 "$D/b1.raw" -O qcow2 "$D/x.qcow2"
check_fail "--from-snapshot of a missing snapshot" "$QIMG" convert -D b0.qcow2 --from-snapshot=nope rbd:p/vol@b1 -O qcow2 "$D/x.qcow2"
expect_eq "refused: no target left" "$(ls "$D"/x.qcow2 "$D"/.x.qcow2* 2>/dev/null | wc -l)" 0
