#!/bin/bash
# Files an image names (backing files, external data files): without safe
# mode qimg follows them exactly as qemu-img does (host-file disclosure
# included: CVE-2024-32498); in safe mode (QIMG_SAFE=1 until the CLI
# parses --safe) it refuses every file the user did not name, and opening
# is bounded in memory.
. "$(dirname "$0")/lib.sh"

H=$SCRATCH/host                      # stands in for /etc: files an image must not reach
mkdir -p "$H"
head -c 3000 /dev/urandom >"$H/secret.txt"
truncate -s 1M "$H/dummy1.txt"

# Run qimg as qemu-img in $IN; output in $SCRATCH/q.{out,err,rc}
q() { (cd "$IN" && "$QIMG_AS_QEMU" "$@" >"$SCRATCH/q.out" 2>"$SCRATCH/q.err"; echo $? >"$SCRATCH/q.rc"); }
qsafe() { QIMG_SAFE=1 q "$@"; }
err_has() {  # NAME RC TEXT: the last q run exited RC and said TEXT
    local rc; rc=$(cat "$SCRATCH/q.rc")
    if [ "$rc" = "$2" ] && grep -qF -- "$3" "$SCRATCH/q.err"; then pass "$1"
    else fail "$1" "rc=$rc" "$(cat "$SCRATCH/q.err")"; fi
}
ok_rc() {
    local rc; rc=$(cat "$SCRATCH/q.rc")
    if [ "$rc" = 0 ]; then pass "$1"; else fail "$1" "rc=$rc" "$(cat "$SCRATCH/q.err")"; fi
}
poke() {  # FILE OLD NEW: replace a same-length byte string in FILE
    python3 - "$@" <<'EOF'
import sys
f, old, new = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
assert len(old) == len(new)
d = open(f, 'rb').read()
assert old in d
open(f, 'wb').write(d.replace(old, new))
EOF
}

cd "$IN" || exit 1

# ---- a data file naming a host file (CVE-2024-32498) ----
"$QEMU_IMG" create -q -f qcow2 -o data_file="$H/dummy1.txt",data_file_raw=on evil-data.qcow2 1M
poke evil-data.qcow2 dummy1.txt secret.txt
same "data file: info" info evil-data.qcow2
same "data file: convert copies the host file, as qemu-img" convert -O raw evil-data.qcow2 out.raw
same "data file: check" check evil-data.qcow2
q convert -O raw evil-data.qcow2 leak.raw
if cmp -s -n 3000 "$IN/leak.raw" "$H/secret.txt"; then pass "data file: non-safe output holds the file"
else fail "data file: non-safe output holds the file"; fi
rm -f "$IN/leak.raw"
qsafe convert -O raw evil-data.qcow2 safe.raw
err_has "safe: data file refused" 1 "safe mode: image names a data file '$H/secret.txt' that was not given"
if [ -e "$IN/safe.raw" ]; then fail "safe: no output written"; else pass "safe: no output written"; fi
qsafe check evil-data.qcow2
err_has "safe: check refuses the data file" 1 "safe mode: image names a data file"
qsafe info evil-data.qcow2
ok_rc "safe: info opens no data file"
"$QEMU_IMG" info evil-data.qcow2 >"$SCRATCH/ref.out" 2>&1
if cmp -s "$SCRATCH/ref.out" "$SCRATCH/q.out"; then pass "safe: info output as qemu-img's"
else fail "safe: info output as qemu-img's" "$(diff "$SCRATCH/ref.out" "$SCRATCH/q.out")"; fi
# named by the user: allowed in safe mode
qsafe convert --image-opts "driver=qcow2,file.filename=evil-data.qcow2,data-file.filename=$H/secret.txt" -O raw named.raw
ok_rc "safe: a data file the user names opens"
if cmp -s -n 3000 "$IN/named.raw" "$H/secret.txt"; then pass "safe: user-named data file read"
else fail "safe: user-named data file read"; fi
rm -f "$IN/named.raw"
qsafe convert -O raw "json:{\"driver\":\"qcow2\",\"file\":{\"filename\":\"evil-data.qcow2\"},\"data-file\":{\"driver\":\"file\",\"filename\":\"$H/secret.txt\"}}" named2.raw
ok_rc "safe: json: data-file keys open"
rm -f "$IN/named2.raw"

# a data file name in json: or protocol form is a plain local name (CVE-2024-4467)
J='json:{"driver":"raw","file":{"filename":"a.raw"}}'
D=$(printf 'd%.0s' $(seq ${#J}))
(cd "$SCRATCH" && "$QEMU_IMG" create -q -f qcow2 -o data_file="$D" "$IN/dj.qcow2" 1M)
poke dj.qcow2 "$D" "$J"
head -c 1M /dev/urandom >a.raw
same "data file json: name not parsed: convert" convert -O raw dj.qcow2 out.raw
same "data file json: name not parsed: info" info dj.qcow2
N='nbd://127.0.0.1:1/xyz'
D=$(printf 'e%.0s' $(seq ${#N}))
(cd "$SCRATCH" && "$QEMU_IMG" create -q -f qcow2 -o data_file="$D" "$IN/dn.qcow2" 1M)
poke dn.qcow2 "$D" "$N"
same "data file nbd:// name is a local name" convert -O raw dn.qcow2 out.raw

# ---- a backing file naming a host file ----
"$QEMU_IMG" create -q -f qcow2 -u -b "$H/secret.txt" -F raw evil-back.qcow2 1M
# no backing format: the extension's type poked to an unknown one, so the
# backing file is probed (as raw)
"$QEMU_IMG" create -q -f qcow2 -u -b "$H/secret.txt" -F raw evil-probe.qcow2 1M
python3 - "$IN/evil-probe.qcow2" <<'EOF2'
import sys
d = bytearray(open(sys.argv[1], 'rb').read())
i = d.index(bytes.fromhex('e2792aca'))
d[i:i + 4] = bytes.fromhex('0badf00d')
open(sys.argv[1], 'wb').write(d)
EOF2
for img in evil-back evil-probe; do
    same "backing $img: convert as qemu-img" convert -O raw $img.qcow2 out.raw
    same "backing $img: info --backing-chain" info --backing-chain $img.qcow2
    same "backing $img: map" map --output=json $img.qcow2
    qsafe convert -O raw $img.qcow2 safe.raw
    err_has "safe: backing $img refused by convert" 1 "Could not open backing file: safe mode: image names a backing file '$H/secret.txt' that was not given"
    qsafe info --backing-chain $img.qcow2
    err_has "safe: backing $img refused by info --backing-chain" 1 "safe mode: image names a backing file"
    qsafe info $img.qcow2
    ok_rc "safe: info $img (no chain)"
done
# named by the user
qsafe convert --image-opts "driver=qcow2,file.filename=evil-back.qcow2,backing.driver=raw,backing.file.filename=$H/secret.txt" -O raw named.raw
ok_rc "safe: a backing file the user names opens"
if cmp -s -n 3000 "$IN/named.raw" "$H/secret.txt"; then pass "safe: user-named backing read"
else fail "safe: user-named backing read"; fi
rm -f "$IN/named.raw"

# json: and protocol backing names: followed as qemu-img follows them
"$QEMU_IMG" create -q -f qcow2 base.qcow2 1M
"$QEMU_IO" -f qcow2 -c 'write -P 7 0 64k' base.qcow2 >/dev/null
"$QEMU_IMG" create -q -f qcow2 -u -b 'json:{"driver":"qcow2","file":{"driver":"file","filename":"base.qcow2"}}' -F qcow2 jb.qcow2 1M
same "json: backing: info --backing-chain" info --backing-chain jb.qcow2
same "json: backing: convert" convert -O raw jb.qcow2 out.raw
same "json: backing: map" map --output=json jb.qcow2
qsafe convert -O raw jb.qcow2 safe.raw
err_has "safe: json: backing refused" 1 "safe mode: image names a backing file 'json:"
"$QEMU_IMG" create -q -f qcow2 -u -b nbd://127.0.0.1:1/x -F raw nb.qcow2 1M
same "nbd backing: info" info nb.qcow2
q convert -O raw nb.qcow2 out.raw
err_has "nbd backing: not followed to data" 1 "Could not open backing file"
qsafe convert -O raw nb.qcow2 out.raw
err_has "safe: nbd backing refused before connecting" 1 "safe mode: image names a backing file 'nbd://127.0.0.1:1/x'"

# a FIFO as backing file: an error, never a hang
mkfifo "$H/fifo"
"$QEMU_IMG" create -q -f qcow2 -u -b "$H/fifo" -F raw fifo.qcow2 1M
(cd "$IN" && timeout 20 "$QIMG_AS_QEMU" convert -O raw fifo.qcow2 out.raw >/dev/null 2>&1; echo $? >"$SCRATCH/q.rc")
rc=$(cat "$SCRATCH/q.rc")
if [ "$rc" = 1 ]; then pass "FIFO backing refused without blocking"; else fail "FIFO backing refused without blocking" "rc=$rc"; fi

# ---- commands in safe mode ----
"$QEMU_IMG" create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
"$QEMU_IO" -f qcow2 -c 'write -P 9 64k 64k' top.qcow2 >/dev/null
qsafe compare top.qcow2 base.qcow2
err_has "safe: compare refuses an image-named backing" 2 "safe mode: image names a backing file 'base.qcow2'"
qsafe commit top.qcow2
err_has "safe: commit refuses" 1 "safe mode"
qsafe rebase -b "" top.qcow2
err_has "safe: rebase (safe) refuses to read the old backing" 1 "safe mode"
qsafe map top.qcow2
err_has "safe: map refuses" 1 "safe mode"
# the user names the chain: allowed
qsafe compare --image-opts "driver=qcow2,file.filename=top.qcow2,backing.driver=qcow2,backing.file.filename=base.qcow2" "driver=qcow2,file.filename=top.qcow2,backing.driver=qcow2,backing.file.filename=base.qcow2"
ok_rc "safe: compare with a user-named chain"
# create -b and convert -B: the user names the backing file
head -c 1M /dev/urandom >src.raw
qsafe create -f qcow2 -b base.qcow2 -F qcow2 new.qcow2
ok_rc "safe: create -b"
qsafe convert -O qcow2 -B base.qcow2 -F qcow2 src.raw conv.qcow2
ok_rc "safe: convert -B"
if "$QEMU_IMG" compare -q src.raw conv.qcow2; then pass "safe: convert -B content"; else fail "safe: convert -B content"; fi
qsafe convert -O qcow2 -o data_file=conv.data src.raw conv-df.qcow2
ok_rc "safe: convert -o data_file (named by the user)"
if "$QEMU_IMG" compare -q src.raw conv-df.qcow2; then pass "safe: convert -o data_file content"; else fail "safe: convert -o data_file content"; fi
qsafe info top.qcow2
ok_rc "safe: info without the chain"
# commands that read no backing file do not open it in safe mode
for cmd in "check top.qcow2" "snapshot -l top.qcow2"; do
    qsafe $cmd
    ok_rc "safe: $cmd"
    (cd "$IN" && "$QEMU_IMG" $cmd >"$SCRATCH/ref.out" 2>&1)
    if cmp -s "$SCRATCH/ref.out" "$SCRATCH/q.out"; then pass "safe: $cmd output as qemu-img's"
    else fail "safe: $cmd output as qemu-img's" "$(diff "$SCRATCH/ref.out" "$SCRATCH/q.out")"; fi
done

# ---- the memory budget of one open ----
"$QEMU_IMG" create -q -f qcow2 big.qcow2 100T                 # an L1 table of 1.6 MB
QIMG_SAFE_MEM=1M qsafe info big.qcow2
err_has "safe: open past QIMG_SAFE_MEM refused" 1 "safe mode: opening the image needs more than 1048576 bytes of memory"
QIMG_SAFE_MEM=64M qsafe info big.qcow2
ok_rc "safe: open within QIMG_SAFE_MEM"
QIMG_SAFE_MEM=1M q info big.qcow2
ok_rc "QIMG_SAFE_MEM has no effect outside safe mode"
# the time bound: a deadline already past stops the open at its first table
QIMG_SAFE_SECONDS=0 qsafe info big.qcow2
err_has "safe: open past QIMG_SAFE_SECONDS refused" 1 "safe mode: opening the image took more than 0 seconds"
QIMG_SAFE_SECONDS=0 q info big.qcow2
ok_rc "QIMG_SAFE_SECONDS has no effect outside safe mode"
