# A throw-away one-node Ceph cluster for tests and benchmarks.  Source it
# (bash), then:
#
#   ceph_start DIR      one mon and one OSD (memstore, cephx off, 127.0.0.1,
#                       pool size 1, no mgr), all state under DIR; returns
#                       non-zero with a reason in $CEPH_WHY when it cannot.
#                       Sets CEPH_CONF (exported: rados, rbd, ceph, librados
#                       and qemu's block-rbd read it) and CEPH_MON_HOST.
#   ceph_pool NAME      create a replicated pool of size 1 for RBD images
#   ceph_stop           stop both daemons (by PID) and wait for them
#   ceph_missing        the packages missing for a cluster, empty when none
#
# CEPH_MEMSTORE_BYTES: the most the OSD stores (in memory), default 1 GiB.
#
# The daemons are this shell's children, each started in the foreground
# (-f) in the background, and stopped by PID: call ceph_stop from the
# caller's EXIT trap.  Nothing lives outside DIR.  Ready means a first
# `rados put` succeeded.  About 10 s and under 100 MiB on a small machine.

CEPH_PIDS=""
CEPH_WHY=""

ceph_missing() {
    local t missing=""
    for t in ceph-mon ceph-osd ceph rados rbd monmaptool; do
        command -v "$t" >/dev/null 2>&1 || missing="$missing $t"
    done
    echo "${missing# }"
}

# A TCP port nobody listens on at 127.0.0.1 (the kernel picks it).
ceph_free_port() {
    /usr/bin/python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ceph ARGS...: the ceph CLI on this cluster.  A client's first command
# can leave before its first monmap arrived and carries a zero fsid, which
# the mon refuses ("wrong fsid", EPERM): tried again, at most 5 times.
ceph_cmd() {
    local try
    for try in 1 2 3 4 5; do
        timeout 30 ceph -c "$CEPH_CONF" --connect-timeout 20 "$@" && return 0
        sleep 0.2
    done
    return 1
}

ceph_start() {
    local dir=$1
    [ -z "$(ceph_missing)" ] || { CEPH_WHY="missing $(ceph_missing)"; return 1; }
    # a kept directory (BENCH_KEEP=1) holds the last cluster: start afresh
    rm -rf "$dir/mon" "$dir/osd" "$dir/run" "$dir/log" "$dir/crash" "$dir/monmap" "$dir/ceph.conf"
    mkdir -p "$dir/mon" "$dir/osd" "$dir/run" "$dir/log" || return 1
    local port fsid osd_uuid
    port=$(ceph_free_port) || { CEPH_WHY="no free port"; return 1; }
    fsid=$(cat /proc/sys/kernel/random/uuid)
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    CEPH_MON_HOST=127.0.0.1:$port
    CEPH_CONF=$dir/ceph.conf
    export CEPH_CONF
    # msgr1 only: one port, and what librbd, rados and qemu all speak; the
    # OSD takes its own free ports from the range below.
    cat >"$CEPH_CONF" <<EOF
[global]
fsid = $fsid
mon_host = v1:$CEPH_MON_HOST
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_msgr2 = false
ms_bind_ipv6 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
auth_supported = none
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
# The OSD's own crush commands at start race with its first monmap (sent
# with a zero fsid, "wrong fsid", the OSD exits): we place it ourselves.
osd_crush_update_on_start = false
osd_class_update_on_start = false
run_dir = $dir/run
admin_socket = $dir/run/\$name.asok
log_file = $dir/log/\$name.log
pid_file = $dir/run/\$name.pid
crash_dir = $dir/crash
log_to_stderr = false
err_to_stderr = false
mon_cluster_log_to_file = false
mon_data = $dir/mon
osd_data = $dir/osd
osd_objectstore = memstore
memstore_device_bytes = ${CEPH_MEMSTORE_BYTES:-1073741824}
osd_memory_target = 134217728
ms_async_op_threads = 1
osd_op_num_shards = 1
osd_op_num_threads_per_shard = 2
mon_osd_auto_mark_in = true
osd_max_object_name_len = 256
osd_max_object_namespace_len = 64
[client]
rbd_cache = false
EOF
    monmaptool --create --fsid "$fsid" --addv a "[v1:$CEPH_MON_HOST]" \
        "$dir/monmap" >"$dir/log/setup" 2>&1 || { CEPH_WHY="monmaptool failed"; return 1; }
    ceph-mon -c "$CEPH_CONF" -i a --mkfs --monmap "$dir/monmap" >>"$dir/log/setup" 2>&1 ||
        { CEPH_WHY="ceph-mon --mkfs failed: $(tail -3 "$dir/log/setup")"; return 1; }
    ceph-mon -c "$CEPH_CONF" -i a -f >>"$dir/log/mon.out" 2>&1 &
    CEPH_PIDS="$CEPH_PIDS $!"
    # the OSD's id and data directory: `osd new` asks the mon, which also
    # tells us it answers
    local id
    id=$(ceph_cmd osd new "$osd_uuid" 2>>"$dir/log/setup") ||
        { CEPH_WHY="the mon does not answer: $(tail -3 "$dir/log/setup")"; ceph_stop; return 1; }
    ceph_cmd osd crush add "osd.$id" 1 root=default >>"$dir/log/setup" 2>&1 ||
        { CEPH_WHY="ceph osd crush add failed: $(tail -3 "$dir/log/setup")"; ceph_stop; return 1; }
    ceph-osd -c "$CEPH_CONF" -i "$id" --mkfs --osd-uuid "$osd_uuid" >>"$dir/log/setup" 2>&1 ||
        { CEPH_WHY="ceph-osd --mkfs failed: $(tail -3 "$dir/log/setup")"; ceph_stop; return 1; }
    ceph-osd -c "$CEPH_CONF" -i "$id" -f >>"$dir/log/osd.out" 2>&1 &
    CEPH_PIDS="$CEPH_PIDS $!"
    ceph_pool qimg-ready || { CEPH_WHY="creating a pool failed"; ceph_stop; return 1; }
    # ready: a first object written (the OSD is up and its PGs are active)
    local i p
    for i in $(seq 120); do
        if echo ready | timeout 10 rados -c "$CEPH_CONF" -p qimg-ready put ready - 2>/dev/null; then
            return 0
        fi
        for p in $CEPH_PIDS; do
            kill -0 "$p" 2>/dev/null && continue
            CEPH_WHY="a daemon died: $(grep -h ' -1 ' "$dir"/log/*.log | tail -3)"
            ceph_stop
            return 1
        done
        sleep 0.25
    done
    CEPH_WHY="no rados put within 30 s"
    ceph_stop
    return 1
}

ceph_pool() {
    ceph_cmd osd pool create "$1" 8 8 replicated >/dev/null 2>&1 &&
        ceph_cmd osd pool application enable "$1" rbd >/dev/null 2>&1
}

ceph_stop() {
    local p
    for p in $CEPH_PIDS; do kill "$p" 2>/dev/null; done
    for p in $CEPH_PIDS; do
        # a daemon that ignores SIGTERM for 10 s is killed
        local i
        for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    CEPH_PIDS=""
}
