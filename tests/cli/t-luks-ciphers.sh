#!/bin/bash
# The luks ciphers OpenSSL lacks (serpent, twofish, cast5, aes-192 in XTS
# mode), which qimg runs through nettle: for each algorithm, mode and IV
# generator here, qemu-img reads what qimg writes and qimg what qemu-img
# writes, byte for byte; an independent reader (luks1-gcrypt.py: libgcrypt
# and hashlib) unlocks and decrypts qimg's volumes; cryptsetup dumps their
# headers; the combinations qemu-img refuses are refused with its message
# and exit code, at create time and in headers read.
. "$(dirname "$0")/lib.sh"
need_cmd python3

S0=(--object secret,id=s0,data=abc)
io() { echo "driver=luks,file.filename=$1,key-secret=s0"; }

# a build without nettle names what it lacks, and that is all it can do
case $("$QIMG" --help) in
*"Built without"*nettle*)
    out=$("$QIMG" create -f luks "${S0[@]}" -o key-secret=s0,cipher-alg=serpent-256 "$SCRATCH/n.luks" 1M 2>&1)
    case $out in *"serpent-256 in xts mode is not available in qimg (built without nettle)"*)
        pass "without nettle: serpent refused, the error says why" ;;
        *) fail "without nettle: serpent refused, the error says why" "$out" ;; esac
    skip "qimg built without nettle"
    exit 0 ;;
esac

# qemu-img's PBKDF2 timing fails now and then on a loaded machine
retry_qemu_img_pbkdf2

# ---- what qemu-img refuses, refused alike (before any volume is in $IN:
# `same` copies it)
for bad in cipher-alg=cast5-128,cipher-mode=xts \
           cipher-alg=cast5-128,cipher-mode=cbc,ivgen-alg=essiv \
           cipher-alg=cast5-128,cipher-mode=xts,ivgen-alg=essiv,ivgen-hash-alg=sha1 \
           cipher-alg=serpent-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha1 \
           cipher-alg=serpent-256,cipher-mode=ecb,ivgen-alg=essiv,ivgen-hash-alg=sha384 \
           cipher-alg=twofish-192,cipher-mode=xts,ivgen-alg=essiv,ivgen-hash-alg=sha512 \
           cipher-alg=sm4; do
    same "create $bad" create -f luks "${S0[@]}" -o key-secret=s0,iter-time=10,$bad c.luks 1M
    ref_rc "create $bad" 1
done
for bad in cipher-alg=cast5-128,cipher-mode=xts cipher-alg=cast5-128,cipher-mode=xts,ivgen-alg=essiv,ivgen-hash-alg=sha1 \
           cipher-alg=twofish-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha224; do
    same "qcow2 create $bad" create -f qcow2 "${S0[@]}" \
        -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10,encrypt.${bad//,/,encrypt.} c.qcow2 1M
    ref_rc "qcow2 create $bad" 1
    expect_eq "qcow2 create $bad: a file left as by qemu-img" "$(ls "$SCRATCH/run.new/work")" "$(ls "$SCRATCH/run.ref/work")"
done

# measure: qemu-img makes the header in memory, so it checks the secret
# and the cipher as create does (a valid one costs qemu-img 2.4 s of
# PBKDF2 calibration: t-luks measures those)
for o in key-secret=nope key-secret=s0,cipher-alg=cast5-128,cipher-mode=xts \
         key-secret=s0,cipher-alg=cast5-128,cipher-mode=cbc,ivgen-alg=essiv \
         key-secret=s0,cipher-alg=aes-128,ivgen-alg=essiv,ivgen-hash-alg=sha1; do
    same_ro "measure $o" measure -O luks "${S0[@]}" -o $o --size 1G
    expect_eq "measure $o: refused" "$(cat "$SCRATCH/ro.ref/rc")" 1
done
for o in key-secret=s0,cipher-alg=cast5-128,cipher-mode=xts \
         key-secret=s0,cipher-alg=serpent-128,ivgen-alg=essiv,ivgen-hash-alg=sha1; do
    same_ro "qcow2 measure $o" measure -O qcow2 "${S0[@]}" -o encrypt.format=luks,encrypt.${o//,/,encrypt.} --size 1G
done

SRC=$SCRATCH/src.raw
python3 - "$SRC" <<'PY'
import sys
b = bytearray(2 << 20)
for i in range(0, len(b), 512):
    b[i:i + 16] = b"sector %09d" % (i // 512)
b[(1 << 20) + 100:(1 << 20) + 9000] = b"\xa5" * 8900
open(sys.argv[1], "wb").write(b)
PY

gcrypt=yes
python3 -c 'import ctypes.util, sys; sys.exit(0 if ctypes.util.find_library("gcrypt") else 1)' ||
    { gcrypt=no; SKIP_WHAT="independent reader" skip "libgcrypt missing"; }

# alg mode ivgen ivhash (- for none) and whether qemu-img creates one too
# (its PBKDF2 calibration costs 2.4 s a volume: four of them; qemu-io
# writes into every volume qimg made)
sets=("serpent-256 xts plain64 - both" "twofish-128 xts plain64 - both" "cast5-128 cbc plain64 - both"
      "serpent-128 cbc essiv sha256 both" "aes-192 xts plain64 - qimg" "twofish-256 ctr plain64 - qimg"
      "cast5-128 ctr essiv md5 qimg" "serpent-192 xts plain - qimg" "twofish-256 ecb plain64 - qimg")
n=0
for s in "${sets[@]}"; do
    read -r alg mode ivgen ivhash who <<<"$s"
    n=$((n + 1))
    o=cipher-alg=$alg,cipher-mode=$mode,ivgen-alg=$ivgen
    spec=$mode-$ivgen
    if [ "$ivhash" != - ]; then o=$o,ivgen-hash-alg=$ivhash; spec=$spec:$ivhash; fi
    name="$alg $spec"

    # qimg creates and writes; qemu-img, the independent reader and
    # cryptsetup read
    q=q$n.luks
    "$QIMG" create -q -f luks "${S0[@]}" -o key-secret=s0,iter-time=10,$o "$IN/$q" 2M
    check "$name: qimg creates" test -s "$IN/$q"
    "$QIMG" convert -n "${S0[@]}" -f raw "$SRC" --target-image-opts "$(io "$IN/$q")"
    check "$name: qimg writes" test $? = 0
    check "$name: qemu-img reads what qimg wrote" \
        "$QEMU_IMG" compare "${S0[@]}" --image-opts "driver=raw,file.filename=$SRC" "$(io "$IN/$q")"
    same_ro "$name: info" info --output=json "$q"
    if [ $gcrypt = yes ]; then
        python3 "$TOP/tests/cli/luks1-gcrypt.py" "$IN/$q" abc "$SCRATCH/g.raw"
        check "$name: libgcrypt decrypts what qimg wrote" cmp -n 2097152 "$SCRATCH/g.raw" "$SRC"
    fi
    if command -v cryptsetup >/dev/null; then
        cryptsetup luksDump "$IN/$q" >"$SCRATCH/dump" 2>&1
        check "$name: cryptsetup dumps the header" \
            grep -qx "Cipher name: *${alg%-*}.Cipher mode: *$spec" <(tr '\n\t' '. ' <"$SCRATCH/dump" | grep -o "Cipher name:[^.]*.Cipher mode:[^.]*")
    fi
    # qemu-io writes into it, qimg reads
    "$QEMU_IO" "${S0[@]}" --image-opts "$(io "$IN/$q")" -c 'write -P 0x3c 1536 66048' >/dev/null
    "$QIMG" convert "${S0[@]}" --image-opts "$(io "$IN/$q")" -O raw "$SCRATCH/w.raw"
    check "$name: qimg reads what qemu-io wrote" \
        "$QEMU_IO" -f raw -c 'read -P 0x3c 1536 66048' "$SCRATCH/w.raw"
    check "$name: and what was around it" cmp -n 1536 "$SCRATCH/w.raw" "$SRC"

    # qemu-img creates and writes, qimg reads (and the independent reader,
    # which shows it agrees with qemu-img too)
    [ "$who" = both ] || continue
    e=e$n.luks
    if "$QEMU_IMG" create -q -f luks "${S0[@]}" -o key-secret=s0,iter-time=10,$o "$IN/$e" 2M 2>"$SCRATCH/err"; then
        "$QEMU_IMG" convert -n "${S0[@]}" -f raw "$SRC" --target-image-opts "$(io "$IN/$e")"
        "$QIMG" convert "${S0[@]}" --image-opts "$(io "$IN/$e")" -O raw "$SCRATCH/e.raw"
        check "$name: qimg reads what qemu-img wrote" cmp "$SCRATCH/e.raw" "$SRC"
        same_ro "$name: info of qemu-img's" info "$e"
        if [ $gcrypt = yes ]; then
            python3 "$TOP/tests/cli/luks1-gcrypt.py" "$IN/$e" abc "$SCRATCH/g.raw"
            check "$name: libgcrypt decrypts what qemu-img wrote" cmp -n 2097152 "$SCRATCH/g.raw" "$SRC"
        fi
    else
        fail "$name: qemu-img creates" "$(cat "$SCRATCH/err")"
    fi
done
same_ro "check" check "${S0[@]}" --image-opts "$(io q1.luks)"

# ---- amend: a keyslot added by qimg to a serpent and a cast5 volume
# (its key material encrypted with that cipher) opens in qemu-img
SS=("${S0[@]}" --object secret,id=s1,data=def)
for q in q1 q3; do
    "$QIMG" amend "${SS[@]}" --image-opts "$(io "$IN/$q.luks")" -o state=active,new-secret=s1,keyslot=4,iter-time=10
    check "amend $q: keyslot added" test $? = 0
    check "amend $q: qemu-img opens it with the new secret" "$QEMU_IMG" compare "${SS[@]}" \
        --image-opts "$(io "$IN/$q.luks")" "driver=luks,file.filename=$IN/$q.luks,key-secret=s1"
    if [ $gcrypt = yes ]; then
        python3 "$TOP/tests/cli/luks1-gcrypt.py" "$IN/$q.luks" def "$SCRATCH/g.raw"
        "$QIMG" convert "${S0[@]}" --image-opts "$(io "$IN/$q.luks")" -O raw "$SCRATCH/w.raw"
        check "amend $q: libgcrypt opens it with the new secret" cmp -n 2097152 "$SCRATCH/g.raw" "$SCRATCH/w.raw"
    fi
done
if [ $gcrypt = yes ]; then
    check_fail "libgcrypt reader: a wrong passphrase does not unlock" \
        python3 "$TOP/tests/cli/luks1-gcrypt.py" "$IN/q1.luks" abd "$SCRATCH/g.raw"
fi

# ---- qcow2 with serpent, both ways
QO=encrypt.format=luks,encrypt.key-secret=s0,encrypt.cipher-alg=serpent-256,encrypt.iter-time=10
qio2() { echo "driver=qcow2,file.filename=$1,encrypt.key-secret=s0"; }
"$QIMG" convert "${S0[@]}" -f raw -O qcow2 -o $QO "$SRC" "$IN/s.qcow2"
check "qcow2 serpent: qemu-img reads what qimg wrote" \
    "$QEMU_IMG" compare "${S0[@]}" --image-opts "driver=raw,file.filename=$SRC" "$(qio2 "$IN/s.qcow2")"
same_ro "qcow2 serpent: check" check "${S0[@]}" --image-opts "$(qio2 s.qcow2)"
"$QEMU_IO" "${S0[@]}" --image-opts "$(qio2 "$IN/s.qcow2")" -c 'write -P 0x5e 64k 64k' >/dev/null
"$QIMG" convert "${S0[@]}" --image-opts "$(qio2 "$IN/s.qcow2")" -O raw "$SCRATCH/s.raw"
check "qcow2 serpent: qimg reads what qemu-io wrote" "$QEMU_IO" -f raw -c 'read -P 0x5e 64k 64k' "$SCRATCH/s.raw"

# ---- headers naming what qemu refuses: the same errors when read
python3 - "$IN" <<'PY'
import struct, sys
d = sys.argv[1]
def patch(src, dst, off, data):
    b = bytearray(open("%s/%s" % (d, src), "rb").read())
    b[off:off + len(data)] = data
    open("%s/%s" % (d, dst), "wb").write(b)
patch("q3.luks", "cast5-xts.luks", 40, b"xts-plain64\0")          # key 16: 8 per half
patch("q3.luks", "cast5-essiv.luks", 40, b"cbc-essiv:sha256\0")
patch("q4.luks", "serpent-essiv-sha1.luks", 40, b"cbc-essiv:sha1\0\0\0")
b = bytearray(open(d + "/q1.luks", "rb").read())                  # serpent-256 xts ...
b[8:16] = b"cast5\0\0\0"; b[40:52] = b"xts-plain64\0"; b[108:112] = struct.pack(">I", 32)
open(d + "/cast5-xts-32.luks", "wb").write(b)
PY
for h in cast5-xts:"Algorithm 'cast5' with key size 8 bytes not supported" \
         cast5-essiv:"Cipher cast5-128 not supported with essiv" \
         serpent-essiv-sha1:"No Serpent cipher with key size 20 available" \
         cast5-xts-32:"Unsupported cipher mode xts"; do
    msg=${h#*:}; h=${h%%:*}
    same_ro "header $h: info" info "$h.luks"
    same_ro "header $h: open" convert "${S0[@]}" --image-opts "$(io "$h.luks")" -O raw "$SCRATCH/h.raw"
    check "header $h: qemu-img's message is: $msg" grep -qF "$msg" "$SCRATCH/ro.ref/err"
done
