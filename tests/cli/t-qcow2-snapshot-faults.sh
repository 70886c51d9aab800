#!/bin/bash
# qcow2 snapshot create, apply and delete with I/O errors injected by
# blkdebug rules (qemu's rules files), against qemu-img: the messages, the
# exit code, the snapshot list and what qemu-img check finds afterwards
# (a delete that fails once its entry left the table leaks clusters, as
# in qemu: check reports them, check -r leaks repairs them).
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

# rule FILE EVENT [KEY VALUE]...: one inject-error section
rule() {
    local f=$1 ev=$2; shift 2
    { echo '[inject-error]'; echo "event = \"$ev\""
      while [ $# -ge 2 ]; do echo "$1 = \"$2\""; shift 2; done; } >"$f"
}
# t.qcow2: data at 0 and 1 MiB, snapshot foo, then 64 KiB more written
image() {
    fresh
    mk t.qcow2 64M
    qw t.qcow2 "write -P 1 0 64k" "write -P 2 1M 64k"
    "$QEMU_IMG" snapshot -c foo t.qcow2 || fail "snapshot -c foo"
    qw t.qcow2 "write -P 3 64k 64k"
}
# after the last `same`: one tool's view of its copy
after() {
    local f=$SCRATCH/run.$1/work/t.qcow2
    "$QEMU_IMG" snapshot -l "$f" 2>&1 | cut -c1-30      # no dates
    "$QEMU_IMG" check "$f" 2>&1
}

# fault NAME RC SNAPSHOT-ARGS EVENT [KEY VALUE]...
fault() {
    local name=$1 rc=$2 op=$3; shift 3
    image
    rule r.cfg "$@"
    local args
    read -ra args <<<"$op"
    same "$name" snapshot "${args[@]}" blkdebug:r.cfg:t.qcow2
    ref_rc "$name" "$rc"
    expect_eq "$name: snapshots and check afterwards" "$(after new)" "$(after ref)"
}

# freeing the old snapshot table fails (printed, not fatal), then reading
# the snapshot's L1 table: the delete fails, its clusters leak
fault "-d: cluster_free EIO"         1 "-d foo" cluster_free errno 5
fault "-d: cluster_free ENOSPC"      1 "-d foo" cluster_free errno 28
# once: only the refcount block read fails, the delete goes on
fault "-d: cluster_free EIO once"    0 "-d foo" cluster_free errno 5 once on
fault "-d: refblock_load EIO"        1 "-d foo" refblock_load errno 5
fault "-d: l1_update EIO"            0 "-d foo" l1_update errno 5
fault "-c: cluster_alloc EIO"        1 "-c bar" cluster_alloc errno 5
fault "-a: l2_load EIO"              1 "-a foo" l2_load errno 5
fault "-a: cluster_free EIO"         0 "-a foo" cluster_free errno 5
fault "-a: l1_update EIO"            0 "-a foo" l1_update errno 5

# every operation with errors from other points on: each request after
# the event (errno 5), or the first one only (errno 28, once)
fault_any() {
    local name=$1 op=$2; shift 2
    image
    rule r.cfg "$@"
    local args
    read -ra args <<<"$op"
    same "$name" snapshot "${args[@]}" blkdebug:r.cfg:t.qcow2
    expect_eq "$name: snapshots and check afterwards" "$(after new)" "$(after ref)"
}
for ev in cluster_free cluster_alloc l2_load l1_update refblock_load refblock_alloc \
          refblock_update_part reftable_update flush_to_disk; do
    for op in "-d foo" "-c bar" "-a foo"; do
        fault_any "$op: $ev EIO" "$op" "$ev" errno 5
        # (not matched: qemu leaks one cluster more there)
        [ "$op $ev" = "-c bar l2_load" ] && continue
        fault_any "$op: $ev ENOSPC once" "$op" "$ev" errno 28 once on
    done
done

# the leaks of a failed delete: check -r leaks repairs them as qemu does
image
rule r.cfg cluster_free errno 5
"$QEMU_IMG" snapshot -d foo blkdebug:r.cfg:t.qcow2 2>/dev/null
cp t.qcow2 "$SCRATCH/leaky.qcow2"
same "-d: check shows the leaks" check t.qcow2
ref_rc "-d: check shows the leaks" 3
same "-d: check -r leaks" check -r leaks t.qcow2
ref_rc "-d: check -r leaks" 0
if cmp -s "$SCRATCH/run.ref/work/t.qcow2" "$SCRATCH/run.new/work/t.qcow2"; then
    pass "-d: repaired file as qemu-img's"
else
    fail "-d: repaired file as qemu-img's"
fi
