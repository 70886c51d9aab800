#!/bin/bash
# The nbd storage backend against qemu-img 7.2, over servers this test starts
# as its own children: qemu-nbd on unix sockets in the scratch directory and
# nbdkit on 127.0.0.1 free ports (one with TLS, a certificate made here with
# openssl).  Every name form for info, map, compare, check, convert (both
# ways), create and resize, diffed against qemu-img byte for byte; written
# exports compared byte for byte and read back by nbdcopy; maps judged by
# nbdinfo --map too; bad names, refused connections, wrong exports and TLS
# failures: qemu's error, non-zero exit, nothing written.
. "$(dirname "$0")/lib.sh"
need_cmd qemu-nbd nbdkit nbdinfo nbdcopy openssl
if ! "$QIMG" --help | grep -q '^Supported formats:.* nbd'; then
    skip "qimg built without libnbd"; exit 0
fi

SRV=$SCRATCH/srv
mkdir -p "$SRV"
trap 'stop_servers; rm -rf "$SCRATCH"' EXIT

free_port() {
    "$DEB_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_qemu_nbd SOCKET PIDFILE ARGS...: qemu-nbd forks once it listens
start_qemu_nbd() {
    local sock=$1 pidf=$2; shift 2
    qemu-nbd -k "$sock" --pid-file="$pidf" --fork "$@" || return 1
    SERVER_PIDS+=("$(cat "$pidf")")
}
# start_nbdkit PORT PIDFILE ARGS...: nbdkit writes its pid file when ready
start_nbdkit() {
    local port=$1 pidf=$2; shift 2
    nbdkit -P "$pidf" -i 127.0.0.1 -p "$port" "$@" || return 1
    for _ in $(seq 100); do [ -s "$pidf" ] && break; sleep 0.05; done
    SERVER_PIDS+=("$(cat "$pidf")")
}

# ---- the exports: 4 MiB of data, holes and zeros
mkexport() {
    "$QEMU_IMG" create -q -f raw "$1" 4M
    qio "$1" "write -P 0x11 0 64k"
    qio "$1" "write -P 0x22 1M 512k"
    qio "$1" "write -z 2M 64k"
    qio "$1" "write -P 0x33 3M 4k"
}
mkexport "$SRV/q.pristine"
cp "$SRV/q.pristine" "$SRV/q.raw"
cp "$SRV/q.pristine" "$SRV/k.pristine"
cp "$SRV/q.pristine" "$SRV/k.raw"

SOCK=$SCRATCH/q.sock
start_qemu_nbd "$SOCK" "$SCRATCH/q.pid" -f raw -x exp --persistent --shared=4 "$SRV/q.raw" ||
    { fail "qemu-nbd starts"; exit 0; }
PORT=$(free_port)
start_nbdkit "$PORT" "$SCRATCH/k.pid" file "$SRV/k.raw" || { fail "nbdkit starts"; exit 0; }

Q="nbd+unix:///exp?socket=$SOCK"
K="nbd://127.0.0.1:$PORT"

# ---- info: every name form, human and json
for n in "$Q" "nbd+unix:///exp?socket=$SOCK#frag" "nbd:unix:$SOCK:exportname=exp" \
         "$K" "$K/" "nbd+tcp://127.0.0.1:$PORT" "nbd:127.0.0.1:$PORT" \
         "nbd:127.0.0.1:$PORT:exportname=any" "nbd://user@127.0.0.1:$PORT/a%2Fb" \
         "json:{\"driver\":\"nbd\",\"server\":{\"type\":\"inet\",\"host\":\"127.0.0.1\",\"port\":\"$PORT\"}}" \
         "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"$SOCK\"},\"export\":\"exp\"}}" \
         "json:{\"driver\":\"nbd\",\"host\":\"127.0.0.1\",\"port\":\"$PORT\",\"reconnect-delay\":2}" \
         "json:{\"driver\":\"nbd\",\"path\":\"$SOCK\",\"export\":\"exp\"}" \
         "json:{\"driver\":\"raw\",\"offset\":512,\"file\":{\"driver\":\"nbd\",\"server\":{\"port\":\"$PORT\",\"host\":\"127.0.0.1\",\"type\":\"inet\"},\"export\":\"e\"}}" \
         "json:{\"driver\":\"raw\",\"size\":512,\"file\":{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"$SOCK\"},\"export\":\"exp\",\"reconnect-delay\":3}}" \
         "json:{\"driver\":\"raw\",\"offset\":1024,\"file\":{\"filename\":\"nbd:127.0.0.1:$PORT:exportname=x\"}}"; do
    same_ro "info $n" info "$n"
    same_ro "info json $n" info --output=json "$n"
done
same_ro "info --image-opts unix" info --image-opts "driver=nbd,server.type=unix,server.path=$SOCK,export=exp"
same_ro "info --image-opts raw over inet" info --image-opts \
    "driver=raw,file.driver=nbd,file.server.type=inet,file.server.host=127.0.0.1,file.server.port=$PORT"
same_ro "info -f raw" info -f raw "$K"

# ---- errors: bad names, refused connections, wrong exports, bad options
DEAD=$(free_port)
for n in "nbd://127.0.0.1:$DEAD/x" "nbd:127.0.0.1:$DEAD" "nbd+unix:///x?socket=$SCRATCH/none.sock" \
         "nbd+unix:///wrong?socket=$SOCK" "nbd:unix:$SOCK" "nbd+unix://?socket=$SOCK" \
         "nbd://127.0.0.1:$PORT?x=y" "nbd+unix:///exp" "nbd+unix://h/exp?socket=$SOCK" \
         "nbd+unix:///exp?socket=$SOCK&a=b" "nbd+unix:///x?socket=/a;b=1" "nbd://:$PORT" \
         "nbd://127.0.0.1:99999" "nbd://127.0.0.1:abc" "nbd://h:/x" "nbd://[::1/x" \
         "nbd://127.0.0.1:$PORT/a b" "nbd://127.0.0.1:$PORT/%zz" "nbd://127.0.0.1:$PORT/é" \
         "nbd:" "nbd:127.0.0.1" "nbd::" "nbd:[::1" "nbd:127.0.0.1:$PORT:exportname=" \
         "nbd://nonexistent.invalid/x" "NBD://127.0.0.1:$PORT" \
         "json:{\"driver\":\"nbd\"}" \
         "json:{\"driver\":\"nbd\",\"server\":{\"type\":\"inet\",\"host\":\"127.0.0.1\"}}" \
         "json:{\"driver\":\"nbd\",\"server\":{\"type\":\"bogus\"}}" \
         "json:{\"driver\":\"nbd\",\"server\":{\"host\":\"127.0.0.1\",\"port\":\"1\"}}" \
         "json:{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\"}}" \
         "json:{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"/x\"},\"host\":\"x\"}" \
         "json:{\"driver\":\"nbd\",\"path\":\"/x\",\"host\":\"x\"}" \
         "json:{\"driver\":\"nbd\",\"path\":\"/x\",\"port\":\"1\"}" \
         "json:{\"driver\":\"nbd\",\"server\":{\"type\":\"inet\",\"host\":\"127.0.0.1\",\"port\":\"$PORT\"},\"bogus\":1}" \
         "json:{\"driver\":\"nbd\",\"server\":{\"type\":\"inet\",\"host\":\"127.0.0.1\",\"port\":\"$PORT\",\"extra\":1}}" \
         "json:{\"driver\":\"nbd\",\"server\":{\"type\":\"inet\",\"host\":\"127.0.0.1\",\"port\":\"$PORT\"},\"tls-creds\":\"nope\"}" \
         "json:{\"driver\":\"nbd\",\"server\":{\"type\":\"inet\",\"host\":\"127.0.0.1\",\"port\":\"$PORT\"},\"x-dirty-bitmap\":\"qemu:nope\"}"; do
    same_ro "error: $n" info "$n"
done
same_ro "error: convert from a refused connection" convert -O raw "nbd://127.0.0.1:$DEAD" "$SCRATCH/never.raw"
check_fail "nothing written after a refused connection" test -e "$SCRATCH/never.raw"
same_ro "error: convert from a wrong export" convert -O qcow2 "nbd+unix:///nope?socket=$SOCK" "$SCRATCH/never.qcow2"
check_fail "nothing written after a wrong export" test -e "$SCRATCH/never.qcow2"

# open-timeout: a server that comes up late is waited for; one that never
# does fails after the timeout with qemu's error
LSOCK=$SCRATCH/late.sock
( sleep 0.5; qemu-nbd -k "$LSOCK" --pid-file="$SCRATCH/late.pid" --fork --persistent -f raw \
      "$SRV/q.pristine" ) &
starter=$!
out=$("$QIMG" info --image-opts "driver=nbd,server.type=unix,server.path=$LSOCK,open-timeout=5" 2>&1)
wait "$starter"
[ -s "$SCRATCH/late.pid" ] && SERVER_PIDS+=("$(cat "$SCRATCH/late.pid")")
case $out in *"virtual size: 4 MiB"*) pass "open-timeout waits for a late server" ;;
    *) fail "open-timeout waits for a late server" "$out" ;; esac
same_ro "open-timeout runs out" info --image-opts \
    "driver=nbd,server.type=unix,server.path=$SCRATCH/never.sock,open-timeout=1"

# ---- map: qemu-nbd (zeros reported) and nbdkit, judged by nbdinfo --map too
for n in "$Q" "$K"; do
    same_ro "map $n" map "$n"
    same_ro "map json $n" map --output=json "$n"
done
# the extents qimg reports agree with what the server says
map_agrees() {
    "$QIMG" map --output=json "$1" >"$SCRATCH/m.json" 2>&1 &&
    nbdinfo --map --json "$1" >"$SCRATCH/i.json" 2>&1 &&
    "$DEB_PYTHON" - "$SCRATCH/m.json" "$SCRATCH/i.json" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1])); theirs = json.load(open(sys.argv[2]))
def at(lst, off, k):
    for e in lst:
        s = e["start"] if "start" in e else e["offset"]
        if s <= off < s + e["length"]:
            return e
for e in theirs:
    for off in (e["offset"], e["offset"] + e["length"] - 1):
        o = at(ours, off, "start")
        hole, zero = bool(e["type"] & 1), bool(e["type"] & 2)
        if o is None or o["data"] != (not hole) or o["zero"] != zero:
            sys.exit("disagree at %d: %r vs %r" % (off, o, e))
PY
}
check "map agrees with nbdinfo --map (qemu-nbd)" map_agrees "$Q"
check "map agrees with nbdinfo --map (nbdkit)" map_agrees "$K"

# ---- read-only commands
same_ro "compare nbd and local" compare "$Q" "$SRV/q.pristine"
same_ro "compare two exports" compare "$K" "nbd:unix:$SOCK:exportname=exp"
qio "$SCRATCH/diff.raw" "write -P 0 0 4M" 2>/dev/null || "$QEMU_IMG" create -q -f raw "$SCRATCH/diff.raw" 4M
same_ro "compare with a difference" compare "$K" "$SCRATCH/diff.raw"
same_ro "check of raw over nbd" check "$K"
same_ro "resize refused" resize -f raw "$K" 8M
same_ro "resize to the same size" resize -f raw "$K" 4M
same_ro "shrink refused" resize -f raw --shrink "$K" 1M

# ---- writing: each tool on a fresh export, the export's bytes compared
# same_export NAME SERVED-FILE ARGS...: run both tools, the export reset
# before each, and compare outputs and what each left in the export (each
# tool run through the command in RUN_WITH, when set).
RUN_WITH=()
same_export() {
    local name=$1 file=$2; shift 2
    local pristine=${PRISTINE:-${file%.raw}.pristine}
    cp "$pristine" "$file"
    (cd "$SCRATCH" && ${RUN_WITH[@]+"${RUN_WITH[@]}"} "$QEMU_IMG" "$@" >"$SCRATCH/e.ref.out" 2>&1; echo $? >>"$SCRATCH/e.ref.out")
    cp "$file" "$SCRATCH/e.ref.img"
    cp "$pristine" "$file"
    (cd "$SCRATCH" && ${RUN_WITH[@]+"${RUN_WITH[@]}"} "$QIMG_AS_QEMU" "$@" >"$SCRATCH/e.new.out" 2>&1; echo $? >>"$SCRATCH/e.new.out")
    if ! cmp -s "$SCRATCH/e.ref.out" "$SCRATCH/e.new.out"; then
        fail "$name" "$(diff "$SCRATCH/e.ref.out" "$SCRATCH/e.new.out" | head -10)"
    elif ! cmp -s "$SCRATCH/e.ref.img" "$file"; then
        fail "$name" "the exports differ: $(cmp "$SCRATCH/e.ref.img" "$file" | head -1)"
    else
        pass "$name"
    fi
}
"$QEMU_IMG" create -q -f raw "$SCRATCH/src.raw" 4M
qio "$SCRATCH/src.raw" "write -P 0x5a 512k 1M"
qio "$SCRATCH/src.raw" "write -P 0x6b 3M 64k"
"$QEMU_IMG" convert -f raw -O qcow2 "$SCRATCH/src.raw" "$SCRATCH/src.qcow2"
for t in "$Q" "$K"; do
    f=$SRV/k.raw; [ "$t" = "$Q" ] && f=$SRV/q.raw
    same_export "convert -n raw to $t" "$f" convert -n -f raw -O raw src.raw "$t"
    same_export "convert -n qcow2 to $t" "$f" convert -n -f qcow2 -O raw src.qcow2 "$t"
    same_export "convert raw to $t (create)" "$f" convert -f raw -O raw src.raw "$t"
    same_export "convert -n -W -m 8 to $t" "$f" convert -n -W -m 8 -f qcow2 -O raw src.qcow2 "$t"
    same_export "create raw on $t" "$f" create -f raw "$t" 4M
    same_export "create smaller raw on $t" "$f" create -f raw "$t" 1M
    same_export "create larger raw on $t refused" "$f" create -f raw "$t" 8M
    same_export "create with preallocation refused on $t" "$f" create -f raw -o preallocation=full "$t" 4M
    same_export "create qcow2 on $t" "$f" create -f qcow2 "$t" 4M
    same_export "create too large qcow2 on $t refused" "$f" create -f qcow2 "$t" 64M
    same_export "convert qcow2 into qcow2 on $t" "$f" convert -f qcow2 -O qcow2 src.qcow2 "$t"
done
# what qimg wrote, read by an independent client
cp "$SRV/k.pristine" "$SRV/k.raw"
"$QIMG" convert -n -f raw -O raw "$SCRATCH/src.raw" "$K" >/dev/null 2>&1
check "nbdcopy reads what qimg wrote" nbdcopy "$K" "$SCRATCH/copy.raw"
check "the export holds the source" cmp "$SCRATCH/copy.raw" "$SCRATCH/src.raw"

# ---- reading: convert from each export to local raw and qcow2
for n in "$Q" "$K" "nbd:unix:$SOCK:exportname=exp"; do
    cp "$SRV/q.pristine" "$SRV/q.raw"; cp "$SRV/k.pristine" "$SRV/k.raw"
    same "convert $n to raw" convert -O raw "$n" out.raw
    "$QIMG" convert -O raw "$n" "$SCRATCH/out.raw" >/dev/null 2>&1
    check "convert $n to raw: the bytes" cmp "$SCRATCH/out.raw" "$SRV/q.pristine"
    same "convert $n to qcow2" convert -O qcow2 "$n" out.qcow2
    "$QIMG" convert -O qcow2 "$n" "$SCRATCH/out.qcow2" >/dev/null 2>&1
    check "convert $n to qcow2: check" "$QEMU_IMG" check -q "$SCRATCH/out.qcow2"
    check "convert $n to qcow2: compare" "$QEMU_IMG" compare -q "$SCRATCH/out.qcow2" "$SRV/q.pristine"
done
nbdcopy "$K" "$SCRATCH/nbdcopy.raw"
"$QIMG" convert -O raw -m 8 "$K" "$SCRATCH/m8.raw" >/dev/null 2>&1
check "parallel convert equals nbdcopy's copy" cmp "$SCRATCH/m8.raw" "$SCRATCH/nbdcopy.raw"

# ---- a qcow2 inside an export, and a qcow2 overlay over an nbd backing
cp "$SRV/k.pristine" "$SRV/k.raw"
"$QEMU_IMG" create -q -f qcow2 "$K" 4M
"$QEMU_IO" -f qcow2 -c "write -P 0x77 64k 64k" "$K" >/dev/null
cp "$SRV/k.raw" "$SRV/k.qcow2img"
same_ro "info of a qcow2 in an export" info "$K"
same_ro "info -f qcow2 in an export" info -f qcow2 --output=json "$K"
same_ro "check of a qcow2 in an export" check -f qcow2 "$K"
same_ro "map of a qcow2 in an export" map -f qcow2 --output=json "$K"
same_ro "compare a qcow2 in an export" compare -f qcow2 -F qcow2 "$K" "$SRV/k.qcow2img"
PRISTINE=$SRV/k.qcow2img same_export "resize of a qcow2 in an export" "$SRV/k.raw" resize -f qcow2 "$K" 8M
PRISTINE=$SRV/k.qcow2img same_export "write into a qcow2 in an export" "$SRV/k.raw" \
    convert -n -f raw -O qcow2 src.raw "$K"
# an image in an export whose backing name is relative: NBD has no directory
"$QEMU_IMG" create -q -f qcow2 -u -b base.raw -F raw "$K" 4M
same_ro "info --backing-chain, relative backing inside an export" info --backing-chain "$K"
same_ro "convert, relative backing inside an export" convert -O raw "$K" "$SCRATCH/rel.raw"
cp "$SRV/q.pristine" "$SRV/q.raw"
"$QEMU_IMG" create -q -f qcow2 -b "$Q" -F raw "$IN/over.qcow2"
"$QEMU_IO" -f qcow2 -c "write -P 0x44 0 4k" "$IN/over.qcow2" >/dev/null
same_ro "info --backing-chain over an nbd backing" info --backing-chain over.qcow2
same_ro "map over an nbd backing" map --output=json over.qcow2
same "convert an overlay of an nbd backing" convert -O raw over.qcow2 flat.raw
check "convert an overlay of an nbd backing: same bytes" cmp "$SCRATCH/run.ref/work/flat.raw" "$SCRATCH/run.new/work/flat.raw"
same "rebase -b '' of an overlay of an nbd backing" rebase -b "" over.qcow2
check "rebase -b '' over an nbd backing: same image" cmp "$SCRATCH/run.ref/work/over.qcow2" "$SCRATCH/run.new/work/over.qcow2"
same_ro "compare an overlay with its nbd backing" compare over.qcow2 "$Q"
err=$(cd "$IN" && "$QIMG" --safe convert -O raw over.qcow2 "$SCRATCH/safe.raw" 2>&1)
case $err in *"safe mode: image names a backing file"*) pass "safe mode refuses an nbd backing the image names" ;;
    *) fail "safe mode refuses an nbd backing the image names" "$err" ;; esac
check "safe mode with the backing given" bash -c "cd '$IN' && '$QIMG' --safe convert -O raw --image-opts \
    'driver=qcow2,file.filename=over.qcow2,backing.driver=raw,backing.file.driver=nbd,backing.file.server.type=unix,backing.file.server.path=$SOCK,backing.file.export=exp' '$SCRATCH/safe.raw'"

# ---- dirty bitmaps and allocation depth through x-dirty-bitmap
"$QEMU_IMG" create -q -f qcow2 "$SRV/bm.qcow2" 4M
"$QEMU_IO" -f qcow2 -c "write -P 1 0 1M" "$SRV/bm.qcow2" >/dev/null
"$QEMU_IMG" bitmap --add "$SRV/bm.qcow2" b0
"$QEMU_IO" -f qcow2 -c "write -P 2 512k 64k" -c "write -P 3 3M 128k" "$SRV/bm.qcow2" >/dev/null
BSOCK=$SCRATCH/b.sock
if start_qemu_nbd "$BSOCK" "$SCRATCH/b.pid" -f qcow2 -r -B b0 --persistent "$SRV/bm.qcow2"; then
    B="driver=nbd,server.type=unix,server.path=$BSOCK"
    same_ro "map of a dirty bitmap" map --output=json --image-opts "$B,x-dirty-bitmap=qemu:dirty-bitmap:b0"
    same_ro "map of a dirty bitmap (human)" map --image-opts "$B,x-dirty-bitmap=qemu:dirty-bitmap:b0"
    same_ro "map of base:allocation on the same export" map --output=json --image-opts "$B"
    same_ro "a bitmap the export lacks" map --output=json --image-opts "$B,x-dirty-bitmap=qemu:dirty-bitmap:nope"
    same_ro "writing to a read-only export" convert -n -O raw "$SCRATCH/src.raw" "nbd+unix://?socket=$BSOCK"
else
    fail "qemu-nbd -B starts"
fi
"$QEMU_IMG" create -q -f qcow2 "$SRV/base.qcow2" 4M
"$QEMU_IO" -f qcow2 -c "write 0 2M" "$SRV/base.qcow2" >/dev/null
"$QEMU_IMG" create -q -f qcow2 -b "$SRV/base.qcow2" -F qcow2 "$SRV/top.qcow2" 4M
"$QEMU_IO" -f qcow2 -c "write 1M 2M" "$SRV/top.qcow2" >/dev/null
ASOCK=$SCRATCH/a.sock
if start_qemu_nbd "$ASOCK" "$SCRATCH/a.pid" -f qcow2 -r -A --persistent "$SRV/top.qcow2"; then
    A="driver=nbd,server.type=unix,server.path=$ASOCK"
    same_ro "map of qemu:allocation-depth" map --output=json --image-opts "$A,x-dirty-bitmap=qemu:allocation-depth"
    same_ro "map of base:allocation with -A" map --output=json --image-opts "$A"
else
    fail "qemu-nbd -A starts"
fi

# ---- TLS: a CA, a server and a client certificate made here
PKI=$SCRATCH/pki
mkdir -p "$PKI/server" "$PKI/client" "$PKI/other"
mkcert() {   # mkcert DIR CA-DIR server|client
    local d=$1 ca=$2 who=$3
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$d/$who-key.pem" -out "$d/$who.csr" \
        -subj "/CN=localhost" 2>/dev/null &&
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=%s\n' \
        "$([ "$who" = server ] && echo serverAuth || echo clientAuth)" >"$d/$who.ext" &&
    openssl x509 -req -in "$d/$who.csr" -CA "$ca/ca-cert.pem" -CAkey "$ca/ca-key.pem" \
        -CAcreateserial -out "$d/$who-cert.pem" -days 2 -extfile "$d/$who.ext" 2>/dev/null
}
mkca() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$1/ca-key.pem" -out "$1/ca-cert.pem" \
        -days 2 -subj "/CN=qimg test CA" -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
TPORT=$(free_port)
if mkca "$PKI" && mkca "$PKI/other" && mkcert "$PKI/server" "$PKI" server &&
   mkcert "$PKI/client" "$PKI" client && cp "$PKI/ca-cert.pem" "$PKI/server/" &&
   cp "$PKI/ca-cert.pem" "$PKI/client/" && mkcert "$PKI/other" "$PKI/other" client &&
   start_nbdkit "$TPORT" "$SCRATCH/t.pid" --tls=require --tls-certificates="$PKI/server" \
       file "$SRV/k.pristine" --readonly; then
    OBJ="tls-creds-x509,id=tls0,dir=$PKI/client,endpoint=client"
    T="driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$TPORT"
    same_ro "TLS: info with tls-creds" info --object "$OBJ" --image-opts "$T,tls-creds=tls0"
    same_ro "TLS: info by host name" info --object "$OBJ" --image-opts \
        "driver=nbd,server.type=inet,server.host=localhost,server.port=$TPORT,tls-creds=tls0"
    same_ro "TLS: map with tls-creds" map --output=json --object "$OBJ" --image-opts "$T,tls-creds=tls0"
    same_ro "TLS: required but not given" info "nbd://127.0.0.1:$TPORT"
    same_ro "TLS: unknown creds" info --image-opts "$T,tls-creds=tls0"
    same_ro "TLS: not a creds object" info --object secret,id=s0,data=x --image-opts "$T,tls-creds=s0"
    out=$("$QIMG" info --object "$OBJ" "nbds://127.0.0.1:$TPORT" 2>&1)
    case $out in *"image: nbds://127.0.0.1:$TPORT"*"virtual size: 4 MiB"*) pass "TLS: nbds:// with the creds object" ;;
        *) fail "TLS: nbds:// with the creds object" "$out" ;; esac
    out=$("$QIMG" info "nbds://127.0.0.1:$TPORT?tls-creds=tls0" --object "$OBJ" 2>&1)
    "$QIMG" convert -O raw --object "$OBJ" "nbds://127.0.0.1:$TPORT/?tls-creds=tls0" "$SCRATCH/tls.raw" >/dev/null 2>&1
    check "TLS: convert from nbds:// reads the export" cmp "$SCRATCH/tls.raw" "$SRV/k.pristine"
    # a client whose CA did not sign the server's certificate
    cp "$PKI/other/ca-cert.pem" "$PKI/other/ca-cert.pem.keep"
    BAD="tls-creds-x509,id=bad,dir=$PKI/other,endpoint=client"
    "$QEMU_IMG" info --object "$BAD" --image-opts "$T,tls-creds=bad" >/dev/null 2>&1; ref=$?
    "$QIMG" convert -O raw --object "$BAD" --image-opts "$T,tls-creds=bad" "$SCRATCH/bad.raw" >"$SCRATCH/bad.err" 2>&1; rc=$?
    expect_eq "TLS: an unknown CA fails as in qemu-img" "$rc" "$ref"
    check "TLS: the failure says so" grep -qi "tls\|certificate\|handshake" "$SCRATCH/bad.err"
    check_fail "TLS: nothing written after the failure" test -e "$SCRATCH/bad.raw"
    out=$("$QIMG" info "nbds://127.0.0.1:$PORT" 2>&1); rc=$?
    expect_eq "TLS: nbds:// to a server without TLS fails" "$rc" 1
else
    fail "TLS setup (openssl, nbdkit --tls)"
fi
# TLS with a pre-shared key (tls-creds-psk: DIR/keys.psk, username)
mkdir -p "$PKI/psk"
PPORT=$(free_port)
if printf 'alice:%s\n' "$(openssl rand -hex 32)" >"$PKI/psk/keys.psk" &&
   start_nbdkit "$PPORT" "$SCRATCH/p.pid" --tls=require --tls-psk="$PKI/psk/keys.psk" \
       file "$SRV/k.pristine" --readonly; then
    POBJ="tls-creds-psk,id=p0,dir=$PKI/psk,username=alice,endpoint=client"
    P="driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$PPORT,tls-creds=p0"
    same_ro "TLS-PSK: info" info --object "$POBJ" --image-opts "$P"
    same_ro "TLS-PSK: compare" compare --object "$POBJ" --image-opts "$P" "driver=raw,file.filename=$SRV/k.pristine"
    printf 'alice:%s\n' "$(openssl rand -hex 32)" >"$PKI/psk/wrong.psk"
    mkdir -p "$PKI/wrong" && mv "$PKI/psk/wrong.psk" "$PKI/wrong/keys.psk"
    "$QIMG" info --object "tls-creds-psk,id=p0,dir=$PKI/wrong,username=alice,endpoint=client" \
        --image-opts "$P" >/dev/null 2>&1; rc=$?
    expect_eq "TLS-PSK: a wrong key fails" "$rc" 1
else
    fail "TLS-PSK setup (nbdkit --tls-psk)"
fi

# ---- server.type=fd: a socket the parent connected and passed down (fd 5),
# as a management tool hands qemu-img one; and server.type=vsock
cat >"$SCRATCH/withfd.py" <<'PY'
import os, socket, subprocess, sys
# withfd.py WHAT CMD...: CMD runs with fd 5 set up as WHAT says: a unix
# socket path or HOST:PORT connected to a server, file:PATH (not a socket),
# closed (a socket whose peer is gone), listen:PATH (a listening socket)
what, cmd = sys.argv[1], sys.argv[2:]
if what.startswith("file:"):
    s = open(what[5:], "rb")
elif what == "closed":
    s, peer = socket.socketpair(); peer.close()
elif what.startswith("listen:"):
    s = socket.socket(socket.AF_UNIX); s.bind(what[7:]); s.listen(1)
elif what.startswith("/"):
    s = socket.socket(socket.AF_UNIX); s.connect(what)
else:
    host, port = what.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
os.dup2(s.fileno(), 5)
sys.exit(subprocess.call(cmd, pass_fds=(5,)))
PY
# same_fd NAME WHAT ARGS...: both tools, each given its own fd 5 (WHAT)
same_fd() {
    local name=$1 what=$2; shift 2
    local a=$SCRATCH/ro.ref b=$SCRATCH/ro.new
    rm -f "$SCRATCH/l.sock"
    (cd "$IN" && "$DEB_PYTHON" "$SCRATCH/withfd.py" "$what" "$QEMU_IMG" "$@" >"$a/out" 2>"$a/err"; echo $? >"$a/rc")
    rm -f "$SCRATCH/l.sock"
    (cd "$IN" && "$DEB_PYTHON" "$SCRATCH/withfd.py" "$what" "$QIMG_AS_QEMU" "$@" >"$b/out" 2>"$b/err"; echo $? >"$b/rc")
    judge_runs "$name" "$a" "$b" "$@"
}
cp "$SRV/q.pristine" "$SRV/q.raw"; cp "$SRV/k.pristine" "$SRV/k.raw"
FQ='json:{"driver":"nbd","server":{"type":"fd","str":"5"},"export":"exp"}'
FK='json:{"driver":"nbd","server":{"type":"fd","str":"5"}}'
FRK='json:{"driver":"raw","file":{"driver":"nbd","server":{"type":"fd","str":"5"}}}'
for w in "$SOCK" "127.0.0.1:$PORT"; do
    F=$FK; [ "$w" = "$SOCK" ] && F=$FQ
    same_fd "fd $w: info" "$w" info "$F"
    same_fd "fd $w: info json" "$w" info --output=json "$F"
    same_fd "fd $w: map" "$w" map "$F"
    same_fd "fd $w: map json" "$w" map --output=json "$F"
    same_fd "fd $w: compare" "$w" compare "$F" "$SRV/q.pristine"
    same_fd "fd $w: convert to raw" "$w" convert -O raw "$F" "$SCRATCH/fd.raw"
    check "fd $w: convert to raw: the bytes" cmp "$SCRATCH/fd.raw" "$SRV/q.pristine"
    same_fd "fd $w: convert -m 8 -W to qcow2" "$w" convert -m 8 -W -O qcow2 "$F" "$SCRATCH/fd.qcow2"
    check "fd $w: convert to qcow2: compare" "$QEMU_IMG" compare -q "$SCRATCH/fd.qcow2" "$SRV/q.pristine"
done
same_fd "fd: info --image-opts" "$SOCK" info --image-opts "driver=nbd,server.type=fd,server.str=5,export=exp"
same_fd "fd: info of raw over it" "127.0.0.1:$PORT" info "$FRK"
same_fd "fd: map of raw over it" "127.0.0.1:$PORT" map --output=json "$FRK"
if [ -n "${POBJ:-}" ]; then
    same_fd "fd: TLS-PSK" "127.0.0.1:$PPORT" info --object "$POBJ" \
        'json:{"driver":"nbd","server":{"type":"fd","str":"5"},"tls-creds":"p0"}'
    same_fd "fd: TLS required but not given" "127.0.0.1:$PPORT" info "$FK"
fi
RUN_WITH=("$DEB_PYTHON" "$SCRATCH/withfd.py" "127.0.0.1:$PORT")
same_export "fd: convert -n into an export" "$SRV/k.raw" convert -n -f raw -O raw src.raw "$FRK"
same_export "fd: convert -n -m 8 into an export" "$SRV/k.raw" convert -n -m 8 -f qcow2 -O raw src.qcow2 "$FRK"
same_export "fd: resize to the same size" "$SRV/k.raw" resize -f raw "$FRK" 4M
RUN_WITH=()
# the errors: not a number, out of range, not open, not a socket (the
# descriptor is closed, as qemu does: on fd 2 the message is lost), a
# socket that is no NBD connection, keys missing or unexpected
for str in '"x"' '""' '"5 "' '"0x5"' '"99999999999"' '"2147483648"' '"-2147483649"' '"-1"' '"1000"' \
           '"1"' '"2"' 'true' '{"a":1}'; do
    same_ro "fd error: str $str" info "json:{\"driver\":\"nbd\",\"server\":{\"type\":\"fd\",\"str\":$str}}"
done
same_fd "fd error: a regular file" "file:$SRV/q.pristine" info "$FK"
same_fd "fd error: a socket whose peer is gone" closed info "$FK"
same_fd "fd error: a listening socket" "listen:$SCRATCH/l.sock" info "$FK"
same_fd "fd error: a wrong export" "$SOCK" info 'json:{"driver":"nbd","server":{"type":"fd","str":"5"},"export":"nope"}'
for j in '{"type":"fd"}' '{"type":"fd","str":"5","x":1}' '{"type":"fd","x":{"a":1}}' '{"type":"fd","str":"5","port":"1"}' \
         '{"type":"vsock"}' '{"type":"vsock","cid":"2"}' '{"type":"vsock","port":"1"}' \
         '{"type":"vsock","cid":"x","port":"1"}' '{"type":"vsock","cid":"2","port":"y"}' \
         '{"type":"vsock","cid":"-0","port":"y"}' '{"type":"vsock","cid":" 2","port":"y"}' \
         '{"type":"vsock","cid":"4294967295","port":"y"}' '{"type":"vsock","cid":"4294967296","port":"1"}' \
         '{"type":"vsock","cid":"","port":""}' '{"type":"vsock","cid":"2","port":"1","str":"5"}' \
         '{"type":"vsock","cid":{"a":1},"port":"1"}' '{"type":"inet","x":1}' '{"type":"unix","x":1}' \
         '{"type":{"a":1}}' '{"type":"inet","host":{"a":1},"port":"1"}'; do
    same_ro "server error: $j" info "json:{\"driver\":\"nbd\",\"server\":$j}"
done
same_ro "fd error: with a host key" info 'json:{"driver":"nbd","server":{"type":"fd","str":"5"},"host":"x"}'
# vsock: a kernel without it (socket() refused, through a preload shim),
# a peer that is not there (our own cid), and a real export where the
# kernel has a loopback transport
same_ro "vsock error: missing keys (--image-opts)" info --image-opts "driver=nbd,server.type=vsock,server.cid=2"
if printf '%s\n' '#define _GNU_SOURCE' '#include <dlfcn.h>' '#include <errno.h>' '#include <sys/socket.h>' \
       'int socket(int d, int t, int p) { static int (*real)(int, int, int);' \
       '  if (d == AF_VSOCK) { errno = EAFNOSUPPORT; return -1; }' \
       '  if (!real) real = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket"); return real(d, t, p); }' \
       >"$SCRATCH/novsock.c" && cc -shared -fPIC -o "$SCRATCH/novsock.so" "$SCRATCH/novsock.c" -ldl 2>/dev/null; then
    LD_PRELOAD=$SCRATCH/novsock.so same_ro "vsock error: the kernel has none" info \
        'json:{"driver":"nbd","server":{"type":"vsock","cid":"2","port":"10809"}}'
else
    SKIP_WHAT="vsock without kernel support" skip "no C compiler for the preload shim"
fi
if [ -e /dev/vsock ]; then
    CID=$("$DEB_PYTHON" -c 'import fcntl, struct; f = open("/dev/vsock", "rb"); print(struct.unpack("I", fcntl.ioctl(f, 0x7b9, b"\0" * 4))[0])' 2>/dev/null)
    [ -n "$CID" ] && same_ro "vsock error: nobody at our own cid" info --image-opts \
        "driver=nbd,server.type=vsock,server.cid=$CID,server.port=10809,export=e"
fi
VPORT=$((20000 + RANDOM % 20000))
if [ -d /sys/module/vsock_loopback ] &&
   nbdkit --vsock -p "$VPORT" -P "$SCRATCH/v.pid" file "$SRV/q.pristine" --readonly; then
    for _ in $(seq 100); do [ -s "$SCRATCH/v.pid" ] && break; sleep 0.05; done
    SERVER_PIDS+=("$(cat "$SCRATCH/v.pid")")
    V="json:{\"driver\":\"nbd\",\"server\":{\"type\":\"vsock\",\"cid\":\"1\",\"port\":\"$VPORT\"}}"
    same_ro "vsock: info" info "$V"
    same_ro "vsock: map" map --output=json "$V"
    "$QIMG" convert -O raw "$V" "$SCRATCH/v.raw" >/dev/null 2>&1
    check "vsock: convert reads the export" cmp "$SCRATCH/v.raw" "$SRV/q.pristine"
else
    SKIP_WHAT="vsock export" skip "the kernel has no vsock loopback (vsock_loopback)"
fi

# ---- write-through (-t writethrough / directsync): as qemu, every write
# and zero carries NBD_CMD_FLAG_FUA where the server takes it, else a flush
# follows it; the requests, logged by nbdkit's log filter, compared with
# qemu-img's.  The server without FUA is nbdkit's eval plugin over a file
# (the fua filter's fuamode=none is refused by nbdkit 1.32).
LSOCK=$SCRATCH/log.sock NSOCK=$SCRATCH/nofua.sock
"$QEMU_IMG" create -q -f raw "$SRV/w.raw" 4M
"$QEMU_IMG" create -q -f raw "$SRV/n.raw" 4M
if nbdkit -U "$LSOCK" -P "$SCRATCH/l.pid" --filter=log file "$SRV/w.raw" logfile="$SCRATCH/fua.log" &&
   nbdkit -U "$NSOCK" -P "$SCRATCH/n.pid" --filter=log eval get_size='echo 4194304' \
       pread="dd if='$SRV/n.raw' skip=\$4 count=\$3 iflag=skip_bytes,count_bytes status=none" \
       pwrite="dd of='$SRV/n.raw' seek=\$4 conv=notrunc oflag=seek_bytes status=none" \
       can_write='exit 0' can_flush='exit 0' flush='exit 0' can_fua='echo none' \
       logfile="$SCRATCH/nofua.log"; then
    for f in l n; do
        for _ in $(seq 100); do [ -s "$SCRATCH/$f.pid" ] && break; sleep 0.05; done
        SERVER_PIDS+=("$(cat "$SCRATCH/$f.pid")")
    done
    # requests TOOL LOG ARGS...: run TOOL ARGS, print the write-side requests
    # it made (Write, Zero, Trim, Flush with their flags) as the log has them
    requests() {
        local tool=$1 log=$2; shift 2
        local n0; n0=$(wc -l <"$log")
        (cd "$SCRATCH" && "$tool" "$@" >/dev/null 2>&1)
        sleep 0.1
        tail -n +$((n0 + 1)) "$log" | grep -aE ' (Write|Zero|Trim|Flush) id=' |
            sed -E 's/^.* connection=[0-9]+ //; s/ id=[0-9]+//'
    }
    # same_requests NAME SORT LOG ARGS...: qemu-img and qimg make the same
    # requests (SORT=sort: as a set, for a multi-conn server)
    same_requests() {
        local name=$1 order=$2 log=$3; shift 3
        requests "$QEMU_IMG" "$log" "$@" | $order >"$SCRATCH/req.ref"
        requests "$QIMG_AS_QEMU" "$log" "$@" | $order >"$SCRATCH/req.new"
        if [ ! -s "$SCRATCH/req.ref" ]; then
            fail "$name" "qemu-img made no request"
        elif cmp -s "$SCRATCH/req.ref" "$SCRATCH/req.new"; then
            pass "$name"
        else
            fail "$name" "$(diff "$SCRATCH/req.ref" "$SCRATCH/req.new" | head -10)"
        fi
    }
    WL="nbd+unix://?socket=$LSOCK" NL="nbd+unix://?socket=$NSOCK"
    for t in "" "-t writeback" "-t writethrough" "-t directsync" "-t unsafe"; do
        # shellcheck disable=SC2086
        same_requests "requests of convert -n $t (FUA server)" sort "$SCRATCH/fua.log" \
            convert -n $t -f raw -O raw src.raw "$WL"
        # shellcheck disable=SC2086
        same_requests "requests of convert -n $t (no FUA)" cat "$SCRATCH/nofua.log" \
            convert -n $t -f raw -O raw src.raw "$NL"
    done
    same_requests "requests of create (FUA server)" cat "$SCRATCH/fua.log" create -f raw "$WL" 4M
    same_requests "requests of create (no FUA)" cat "$SCRATCH/nofua.log" create -f raw "$NL" 4M
    same_requests "requests of convert -t writethrough (create, no FUA)" cat "$SCRATCH/nofua.log" \
        convert -t writethrough -f raw -O raw src.raw "$NL"
    # what the requests are, independently of qemu-img
    requests "$QIMG" "$SCRATCH/fua.log" convert -n -t writethrough -m 4 -f qcow2 -O raw src.qcow2 "$WL" >"$SCRATCH/req"
    w=$(grep -cE '^(Write|Zero) ' "$SCRATCH/req"); f=$(grep -cE '^(Write|Zero) .*fua=1' "$SCRATCH/req")
    check "writethrough: every write and zero has FUA ($f of $w)" test "$w" -gt 0 -a "$f" -eq "$w"
    check "the source is in the export" cmp "$SRV/w.raw" "$SCRATCH/src.raw"
    requests "$QIMG" "$SCRATCH/fua.log" convert -n -m 4 -f qcow2 -O raw src.qcow2 "$WL" >"$SCRATCH/req"
    check "writeback: writes without FUA, then a flush" bash -c "grep -qE '^(Write|Zero) ' '$SCRATCH/req' &&
        ! grep -q 'fua=1' '$SCRATCH/req' && tail -1 '$SCRATCH/req' | grep -q '^Flush'"
    requests "$QIMG" "$SCRATCH/nofua.log" convert -n -t directsync -f qcow2 -O raw src.qcow2 "$NL" >"$SCRATCH/req"
    check "no FUA: each write followed by a flush" "$DEB_PYTHON" -c '
import sys
lines = open(sys.argv[1]).read().split("\n")[:-1]
writes = [i for i, l in enumerate(lines) if l.startswith(("Write ", "Zero "))]
sys.exit(not writes or "fua=1" in "".join(lines) or
         any(not lines[i + 1].startswith("Flush") for i in writes if i + 1 < len(lines)) or
         not lines[-1].startswith("Flush"))' "$SCRATCH/req"
    check "no FUA: the source is in the export" cmp "$SRV/n.raw" "$SCRATCH/src.raw"
else
    SKIP_WHAT="write-through requests" skip "nbdkit's log filter or eval plugin missing"
fi
