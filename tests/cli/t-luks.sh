#!/bin/bash
# The luks format against qemu-img and cryptsetup: what qimg creates with
# each cipher, mode, IV generator and hash is shown, read and written by
# qemu-img alike (and dumped by cryptsetup); qemu-img's and cryptsetup's
# volumes read and written by qimg; secrets (wrong, missing, encrypted
# with keyid/iv); measure, resize, map; amend of keyslots with qemu-img's
# messages; hostile headers refused as qemu refuses them, and PBKDF2
# counts no one could wait for refused at once (qemu-img spends them).
. "$(dirname "$0")/lib.sh"
need_cmd python3

# qemu-img times PBKDF2 with getrusage() and fails now and then on a
# loaded machine ("Unable to get accurate CPU usage"): its runs here are
# retried on that message alone
retry_qemu_img_pbkdf2

S0=(--object secret,id=s0,data=abc)
SS=(--object secret,id=s0,data=abc --object secret,id=s1,data=def --object secret,id=s2,data=ghi)
io() { echo "driver=luks,file.filename=$1,key-secret=${2:-s0}"; }

SRC=$SCRATCH/src.raw
python3 - "$SRC" <<'PY'
import sys
b = bytearray(3 << 20)
for i in range(0, len(b), 4096):
    b[i:i + 15] = b"sector %08d" % (i // 512)
b[(1 << 20) + 77:(1 << 20) + 5000] = b"\x5a" * 4923
open(sys.argv[1], "wb").write(b)
PY

# ---- images qimg creates, one per option set
sets=("" "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv"
      "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=plain,hash-alg=sha1"
      "cipher-alg=aes-256,cipher-mode=ecb" "cipher-alg=aes-128,hash-alg=sha512"
      "cipher-alg=aes-256,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha384")
n=0
for o in "${sets[@]}"; do
    n=$((n + 1)); f=q$n.luks
    "$QIMG" create -q -f luks "${S0[@]}" -o key-secret=s0,iter-time=10${o:+,$o} "$IN/$f" 3M
    check "create $f ($o)" test -s "$IN/$f"
    same_ro "info $f" info "$f"
    same_ro "info json $f" info --output=json "$f"
    same_ro "info image-opts $f" info "${S0[@]}" --image-opts "$(io $f)"
    if command -v cryptsetup >/dev/null; then
        check "cryptsetup luksDump $f" cryptsetup luksDump "$IN/$f"
        check "cryptsetup isLuks $f" cryptsetup isLuks --type luks1 "$IN/$f"
        # unlocking keyslot 0 checks its key material and the digest (not
        # for ECB: qemu names it "ecb-plain64", which the kernel refuses)
        case $o in *ecb*) ;; *) check "cryptsetup unlocks $f" bash -c "printf abc | cryptsetup luksDump --dump-master-key -q --key-file - '$IN/$f'"
        check_fail "cryptsetup refuses a wrong passphrase for $f" \
            bash -c "printf abd | cryptsetup luksDump --dump-master-key -q --key-file - '$IN/$f'" ;;
        esac
    fi
    # qimg writes, qemu-img reads; qemu-img writes, qimg reads
    "$QIMG" convert -n "${S0[@]}" -f raw "$SRC" --target-image-opts "$(io "$IN/$f")"
    check "qimg writes $f" test $? = 0
    check "qemu-img reads what qimg wrote in $f" \
        "$QEMU_IMG" compare "${S0[@]}" --image-opts "driver=raw,file.filename=$SRC" "$(io "$IN/$f")"
    "$QEMU_IO" "${S0[@]}" --image-opts "$(io "$IN/$f")" -c 'write -P 0x3c 1024 70144' >/dev/null
    cp "$SRC" "$SCRATCH/ref.raw"
    "$QEMU_IO" -f raw -c 'write -P 0x3c 1024 70144' "$SCRATCH/ref.raw" >/dev/null
    check "qimg reads what qemu-io wrote in $f" \
        "$QIMG" compare "${S0[@]}" --image-opts "driver=raw,file.filename=$SCRATCH/ref.raw" "$(io "$IN/$f")"
    same_ro "convert $f to raw" convert "${S0[@]}" --image-opts "$(io $f)" -O raw "$SCRATCH/out-$n.raw"
done
check "the last convert read the data" cmp "$SCRATCH/out-$n.raw" "$SCRATCH/ref.raw"

# ---- aes-192-cbc: qemu-img 7.2 aborts on it (its 96000 bytes of key
# material are not whole sectors: "Assertion `QEMU_IS_ALIGNED(len,
# sectorsize)' failed"); qimg pads them to sectors as cryptsetup does
"$QIMG" create -q -f luks "${S0[@]}" -o key-secret=s0,iter-time=10,cipher-alg=aes-192,cipher-mode=cbc "$SCRATCH/a192.luks" 3M
"$QIMG" convert -n "${S0[@]}" -f raw "$SRC" --target-image-opts "$(io "$SCRATCH/a192.luks")"
"$QIMG" convert "${S0[@]}" --image-opts "$(io "$SCRATCH/a192.luks")" -O raw "$SCRATCH/a192.raw"
check "aes-192-cbc: what qimg writes reads back" cmp "$SCRATCH/a192.raw" "$SRC"
if command -v cryptsetup >/dev/null; then
    check "aes-192-cbc: cryptsetup unlocks it" \
        bash -c "printf abc | cryptsetup luksDump --dump-master-key -q --key-file - '$SCRATCH/a192.luks'"
fi

# ---- unaligned requests: whole 512-byte sectors read and written (qemu-io
# aborts on them: "Assertion `QEMU_IS_ALIGNED(len, sectorsize)' failed")
same "dd with 1000-byte blocks" dd "${S0[@]}" --image-opts -O raw if="$(io q1.luks)" of=dd.raw bs=1000 count=3
U=$SCRATCH/unaligned.luks
cp "$IN/q1.luks" "$U"
printf 'twenty-one bytes here' > "$SCRATCH/tiny.raw"
"$QIMG" dd "${S0[@]}" --image-opts -f raw -O raw if="$SCRATCH/tiny.raw" of="$(io "$U")" bs=21 count=1 seek=33 conv=notrunc 2>/dev/null ||
    "$QIMG" convert -n "${S0[@]}" -f raw "$SCRATCH/tiny.raw" --target-image-opts "$(io "$U")" 2>/dev/null
"$QIMG" convert "${S0[@]}" --image-opts "$(io "$U")" -O raw "$SCRATCH/unaligned.raw"
check "an unaligned write reads back" grep -q "twenty-one bytes here" "$SCRATCH/unaligned.raw"

# ---- a volume qemu-img creates (its PBKDF2 timing fails now and then
# on a loaded machine with "Unable to get accurate CPU usage": retried)
made=no
for try in 1 2 3; do
    if "$QEMU_IMG" create -q -f luks "${S0[@]}" -o key-secret=s0,iter-time=10,cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv \
        "$IN/qemu.luks" 3M 2>/dev/null; then made=yes; break; fi
done
if [ $made = yes ]; then
    same_ro "info of qemu's volume" info --output=json qemu.luks
    "$QIMG" convert -n "${S0[@]}" -f raw "$SRC" --target-image-opts "$(io "$IN/qemu.luks")"
    check "qemu-img reads what qimg wrote in its volume" \
        "$QEMU_IMG" compare "${S0[@]}" --image-opts "driver=raw,file.filename=$SRC" "$(io "$IN/qemu.luks")"
else
    skip "qemu-img could not create a luks volume here"
fi

# ---- convert into and out of luks
"$QIMG" convert "${S0[@]}" -O luks -o key-secret=s0,iter-time=10 "$SRC" "$SCRATCH/conv.luks"
check "convert raw to luks" test $? = 0
check "qemu-img reads the converted volume" \
    "$QEMU_IMG" compare "${S0[@]}" --image-opts "driver=raw,file.filename=$SRC" "$(io "$SCRATCH/conv.luks")"
"$QIMG" convert "${S0[@]}" --image-opts "$(io "$SCRATCH/conv.luks")" -O qcow2 "$SCRATCH/conv.qcow2"
check "convert luks to qcow2" "$QEMU_IMG" compare -f raw -F qcow2 "$SRC" "$SCRATCH/conv.qcow2"

# ---- secrets: missing, wrong, unknown, encrypted
same "no key-secret" convert -f luks q1.luks -O raw out.raw
same "no key-secret probed" convert q1.luks -O raw out.raw
same "wrong password" convert --object secret,id=s0,data=abd --image-opts "$(io q1.luks)" -O raw out.raw
same "no such secret" convert --image-opts "$(io q1.luks)" -O raw out.raw
same "not a secret" convert --object throttle-group,id=s0 --image-opts "$(io q1.luks)" -O raw out.raw
same "secret in base64" convert --object secret,id=s0,data=YWJj,format=base64 --image-opts "$(io q1.luks)" -O raw out.raw
printf abc > "$IN/pass.txt"
same "secret from a file" convert --object secret,id=s0,file=pass.txt --image-opts "$(io q1.luks)" -O raw out.raw
if command -v openssl >/dev/null; then
    key=kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk
    ct=$(printf abc | openssl enc -aes-256-cbc -K "$(printf %s $key | od -An -tx1 | tr -d ' \n')" \
         -iv 00112233445566778899aabbccddeeff | base64)
    same "secret encrypted with keyid/iv" convert --object secret,id=k,data=$key \
        --object "secret,id=s0,data=$ct,format=base64,keyid=k,iv=ABEiM0RVZneImaq7zN3u/w==" \
        --image-opts "$(io q1.luks)" -O raw out.raw
    same "encrypted secret without iv" convert --object secret,id=k,data=$key \
        --object "secret,id=s0,data=$ct,format=base64,keyid=k" --image-opts "$(io q1.luks)" -O raw out.raw
    same "encrypted secret, raw text" convert --object secret,id=k,data=$key \
        --object "secret,id=s0,data=$ct,keyid=k,iv=ABEiM0RVZneImaq7zN3u/w==" --image-opts "$(io q1.luks)" -O raw out.raw
else
    skip "openssl missing: encrypted secrets not tested"
fi
# a secret's text never appears in what qimg prints
out=$("$QIMG" convert --object secret,id=s0,data=TopSecretWord --image-opts "$(io "$IN/q1.luks")" -O raw "$SCRATCH/x.raw" 2>&1)
case $out in *TopSecretWord*) fail "the passphrase is not printed" "$out" ;; *) pass "the passphrase is not printed" ;; esac

# ---- create errors
same "create without key-secret" create -f luks c.luks 1M
same "create with an unknown secret" create -f luks -o key-secret=nope c.luks 1M
for bad in cipher-alg=foo cipher-mode=foo ivgen-alg=foo ivgen-hash-alg=foo hash-alg=foo iter-time=abc \
           cipher-alg=aes-128,ivgen-alg=essiv,ivgen-hash-alg=sha1 ivgen-alg=essiv,ivgen-hash-alg=sha512; do
    same "create $bad" create -f luks "${S0[@]}" -o key-secret=s0,$bad c.luks 1M
done
same "create -o help" create -f luks -o help

# ---- measure, map, resize, check
same_ro "measure size" measure -O luks "${S0[@]}" -o key-secret=s0 --size 1G
same_ro "measure size json" measure --output=json -O luks "${S0[@]}" -o key-secret=s0,cipher-alg=aes-128,cipher-mode=cbc --size 1G
same_ro "measure without key-secret" measure -O luks --size 1G
same_ro "measure of a file" measure -O luks "${S0[@]}" -o key-secret=s0 -f raw "$SRC"
same_ro "map json" map --output=json "${S0[@]}" --image-opts "$(io q2.luks)"
same_ro "map human (no offsets)" map "${S0[@]}" --image-opts "$(io q2.luks)"
same_ro "map without secret" map q2.luks
same_ro "check" check "${S0[@]}" --image-opts "$(io q2.luks)"
same "resize +1M" resize "${S0[@]}" --image-opts "$(io q2.luks)" +1M
cp "$IN/q2.luks" "$SCRATCH/grow.luks"
"$QIMG" resize "${S0[@]}" --image-opts "$(io "$SCRATCH/grow.luks")" 5M >/dev/null
expect_eq "resize: the size qemu-img sees" \
    "$("$QEMU_IMG" info --output=json "$SCRATCH/grow.luks" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')" 5242880
"$QEMU_IO" "${S0[@]}" --image-opts "$(io "$SCRATCH/grow.luks")" -c 'write -P 0x11 4M 1M' >/dev/null
"$QIMG" convert "${S0[@]}" --image-opts "$(io "$SCRATCH/grow.luks")" -O raw "$SCRATCH/grow.raw"
check "resize: qemu-io's write past the old end reads back" \
    "$QEMU_IO" -f raw -c 'read -P 0x11 4M 1M' "$SCRATCH/grow.raw"
same "shrink needs --shrink" resize "${S0[@]}" --image-opts "$(io q2.luks)" 1M

# ---- amend: keyslots
for o in "state=active,new-secret=s1,keyslot=0" "state=active,new-secret=s1,keyslot=9,iter-time=10" \
         "state=active" "state=active,new-secret=s1,old-secret=s0" "state=inactive,keyslot=0" \
         "state=inactive" "state=inactive,keyslot=1" "state=inactive,old-secret=s0" \
         "state=inactive,old-secret=s1" "state=inactive,keyslot=0,old-secret=s1" \
         "state=inactive,new-secret=s1" "state=inactive,iter-time=5,keyslot=0" "keyslot=0" "state=foo" \
         "state=active,new-secret=nos,iter-time=10" "state=inactive,old-secret=nos" "bogus=1" \
         "state=active,new-secret=s1,iter-time=10" "state=active,new-secret=s1,keyslot=3,iter-time=10"; do
    same "amend $o" amend "${SS[@]}" --image-opts "$(io q1.luks)" -o "$o"
done
# --force: a new secret overwrites an active keyslot; an inactive one is
# erased again without complaint (qemu-iotests 293)
for o in "state=active,new-secret=s1,keyslot=0,iter-time=10" "state=inactive,keyslot=1"; do
    same "amend --force $o" amend "${SS[@]}" --image-opts "$(io q1.luks)" -o "$o" --force
    ref_rc "amend --force $o" 0
done
cp "$IN/q1.luks" "$SCRATCH/force.luks"
"$QIMG" amend "${SS[@]}" --image-opts "$(io "$SCRATCH/force.luks")" -o state=active,new-secret=s1,keyslot=0,iter-time=10 --force
check "amend --force: qemu-img opens keyslot 0 with the new secret" \
    "$QEMU_IMG" compare "${SS[@]}" --image-opts "$(io "$IN/q1.luks")" "$(io "$SCRATCH/force.luks" s1)"
check_fail "amend --force: the old secret no longer opens it" \
    "$QEMU_IMG" compare "${SS[@]}" --image-opts "$(io "$IN/q1.luks")" "$(io "$SCRATCH/force.luks")"
same "amend without the secret" amend "${SS[@]}" -f luks q1.luks -o state=inactive,keyslot=0
same "amend -o help" amend -f luks -o help
A=$SCRATCH/amend.luks
cp "$IN/q1.luks" "$A"
"$QIMG" amend "${SS[@]}" --image-opts "$(io "$A")" -o state=active,new-secret=s1,keyslot=5,iter-time=10
check "amend: qemu-img opens keyslot 5 with the new secret" \
    "$QEMU_IMG" compare "${SS[@]}" --image-opts "$(io "$IN/q1.luks")" "$(io "$A" s1)"
"$QIMG" amend "${SS[@]}" --image-opts "$(io "$A" s1)" -o state=inactive,keyslot=0
check "amend: keyslot 0 erased" test $? = 0
check_fail "amend: the old secret no longer opens it" \
    "$QEMU_IMG" compare "${SS[@]}" --image-opts "$(io "$A")" "$(io "$IN/q1.luks")"
check_fail "amend: erasing the last keyslot is refused" \
    "$QIMG" amend "${SS[@]}" --image-opts "$(io "$A" s1)" -o state=inactive,old-secret=s1
"$QIMG" amend "${SS[@]}" --image-opts "$(io "$A" s1)" -o state=inactive,old-secret=s1 --force
check "amend --force erases the last keyslot" test $? = 0
expect_eq "amend: no active keyslot left" "$("$QEMU_IMG" info "$A" | grep -c 'active: true')" 0

# ---- hostile headers
H=$IN/h
mkdir -p "$H"
cp "$IN/q1.luks" "$H/base"
python3 - "$H" <<'PY'
import struct, sys
d = sys.argv[1]
base = open(d + "/base", "rb").read()
be32 = lambda v: struct.pack(">I", v)
def w(name, patches):
    b = bytearray(base)
    for off, data in patches:
        b[off:off + len(data)] = data
    open("%s/%s.luks" % (d, name), "wb").write(b)
s0 = 208
w("version3", [(6, struct.pack(">H", 3))])
w("cipher-name-unterminated", [(8, b"a" * 32)])
w("cipher-mode-unterminated", [(40, b"b" * 32)])
w("hash-unterminated", [(72, b"c" * 32)])
w("serpent", [(8, b"serpent\0")])
w("mode-foo", [(40, b"foo-plain64\0")])
w("mode-no-dash", [(40, b"xtsplain64\0\0\0\0")])
w("ivgen-bogus", [(40, b"xts-bogus\0\0\0")])
w("essiv-no-hash", [(40, b"cbc-essiv\0\0\0")])
w("essiv-bad-hash", [(40, b"cbc-essiv:foo\0\0\0")])
w("hash-foo", [(72, b"foo\0\0\0")])
w("key-bytes-33", [(108, be32(33))])
w("key-bytes-0", [(108, be32(0))])
w("key-bytes-huge", [(108, be32(0xffffffff))])
w("payload-0", [(104, be32(0))])
w("payload-8", [(104, be32(8))])
w("mk-iter-0", [(164, be32(0))])
w("slot-state", [(s0, be32(0x1234))])
w("slot-iter-0", [(s0 + 4, be32(0))])
w("slot-stripes", [(s0 + 44, be32(3999))])
w("slot-offset-0", [(s0 + 40, be32(0))])
w("slot-overlap", [(s0 + 48 + 40, be32(9))])
w("slot-past-payload", [(s0 + 40, be32(4039))])
w("slot-material", [(4096 + 100, b"\xff" * 16)])
w("mk-digest", [(112, b"\0" * 20)])
w("mk-iter-huge", [(164, be32(0xffffffff))])
w("slot-iter-huge", [(s0 + 4, be32(0xffffffff))])
PY
# qemu has serpent (nettle) and finds the passphrase wrong; so does qimg
# built with nettle (without it, it knows the name only and says so)
with_nettle=yes
case $("$QIMG" --help) in *"Built without"*nettle*) with_nettle=no ;; esac
for f in "$H"/*.luks; do
    b=h/$(basename "$f")
    case $b in *huge.luks) continue ;; *serpent.luks) [ $with_nettle = yes ] || continue ;; esac
    same_ro "hostile info $b" info "$b"
    same_ro "hostile open $b" convert "${S0[@]}" --image-opts "$(io "$b")" -O raw "$SCRATCH/h.raw"
done
for b in mk-iter-huge slot-iter-huge; do
    start=$(date +%s)
    out=$(timeout 60 "$QIMG" convert "${S0[@]}" --image-opts "$(io "$H/$b.luks")" -O raw "$SCRATCH/h.raw" 2>&1); rc=$?
    expect_eq "$b: refused" "$rc" 1
    case $out in *"4294967295 PBKDF2 iterations"*QIMG_LUKS_MAX_ITERS*) pass "$b: the error says why" ;;
                 *) fail "$b: the error says why" "$out" ;; esac
    check "$b: in bounded time" test $(( $(date +%s) - start )) -lt 5
done
same_ro "info of a header with a huge count" info h/slot-iter-huge.luks
out=$(QIMG_LUKS_MAX_ITERS=100 "$QIMG" convert "${S0[@]}" --image-opts "$(io "$IN/q1.luks")" -O raw "$SCRATCH/h.raw" 2>&1)
case $out in *"more than qimg spends"*) pass "QIMG_LUKS_MAX_ITERS lowers the cap" ;;
             *) fail "QIMG_LUKS_MAX_ITERS lowers the cap" "$out" ;; esac

# ---- cryptsetup's volumes
if has_cmd "cryptsetup volumes" cryptsetup; then
    C=$SCRATCH/cs1.img
    truncate -s 8M "$C"
    printf abc | cryptsetup luksFormat -q --type luks1 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
        --cipher aes-cbc-essiv:sha256 --key-size 256 --key-file - "$C"
    check "cryptsetup luksFormat --type luks1" test $? = 0
    "$QEMU_IO" "${S0[@]}" --image-opts "$(io "$C")" -c 'write -P 0x77 512 1M' >/dev/null
    "$QIMG" convert "${S0[@]}" --image-opts "$(io "$C")" -O raw "$SCRATCH/cs1.raw"
    check "cryptsetup's LUKS1: qimg reads what qemu-io wrote" \
        "$QEMU_IO" -f raw -c 'read -P 0x77 512 1M' "$SCRATCH/cs1.raw"
    same_ro "cryptsetup's LUKS1: info" info --output=json "$C"
    "$QIMG" convert -n "${S0[@]}" -f raw "$SRC" --target-image-opts "$(io "$C")"
    "$QEMU_IMG" convert "${S0[@]}" --image-opts "$(io "$C")" -O raw "$SCRATCH/cs1b.raw"
    check "cryptsetup's LUKS1: qemu-img reads what qimg wrote" cmp -n 3145728 "$SCRATCH/cs1b.raw" "$SRC"
    # the kernel's dm-crypt decrypts what qimg wrote
    if [ "$(id -u)" = 0 ] && loop=$(losetup -f --show "$IN/q2.luks" 2>/dev/null); then
        name=qimg-t-luks-$$
        if printf abc | cryptsetup open --type luks1 --key-file - "$loop" "$name" 2>/dev/null; then
            "$QIMG" convert "${S0[@]}" --image-opts "$(io "$IN/q2.luks")" -O raw "$SCRATCH/q2.raw"
            check "dm-crypt reads qimg's volume as qimg does" cmp -n 3145728 "/dev/mapper/$name" "$SCRATCH/q2.raw"
            cryptsetup close "$name"
        else
            SKIP_WHAT="dm-crypt" skip "cryptsetup open fails here (no device mapper)"
        fi
        losetup -d "$loop"
    else
        SKIP_WHAT="dm-crypt" skip "not root or no loop device"
    fi
fi

# ---- LUKS2 (cryptsetup's default type; qemu-img 7.2 sees raw there):
# read and written with -f luks, pbkdf2 keyslots; argon2 named when refused
if has_cmd "LUKS2 volumes" cryptsetup; then
    L2=$SCRATCH/l2.img
    truncate -s 20M "$L2"
    printf abc | cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file - "$L2"
    check "cryptsetup luksFormat --type luks2" test $? = 0
    same_ro "LUKS2 probes as raw, as in qemu-img" info "$L2"
    "$QIMG" info -f luks "$L2" > "$SCRATCH/l2.info" 2>&1
    check "info -f luks of a LUKS2 volume" grep -q "cipher alg: aes-256" "$SCRATCH/l2.info"
    check "LUKS2: the uuid cryptsetup wrote" grep -q "$(cryptsetup luksUUID "$L2")" "$SCRATCH/l2.info"
    "$QIMG" convert -n "${S0[@]}" -f raw "$SRC" --target-image-opts "$(io "$L2")"
    "$QIMG" convert "${S0[@]}" --image-opts "$(io "$L2")" -O raw "$SCRATCH/l2.raw"
    check "LUKS2: what qimg writes reads back" cmp -n 3145728 "$SCRATCH/l2.raw" "$SRC"
    out=$("$QIMG" convert --object secret,id=s0,data=abd --image-opts "$(io "$L2")" -O raw "$SCRATCH/x.raw" 2>&1)
    case $out in *"Invalid password, cannot unlock any keyslot"*) pass "LUKS2: wrong passphrase" ;;
                 *) fail "LUKS2: wrong passphrase" "$out" ;; esac
    # data cryptsetup encrypted itself (offline, in user space), in 512-
    # and 4096-byte sectors, decrypts to what it was
    python3 -c '
import sys
b = bytearray(24 << 20)
for i in range(0, len(b), 512):
    b[i:i + 12] = b"blk%09d" % (i // 512)
open(sys.argv[1], "wb").write(b)' "$SCRATCH/plain.img"
    for ss in 512 4096; do
        cp "$SCRATCH/plain.img" "$SCRATCH/re$ss.img"
        if printf abc | timeout 60 cryptsetup reencrypt -q --encrypt --type luks2 --sector-size $ss \
               --reduce-device-size 16M --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file - \
               "$SCRATCH/re$ss.img" >/dev/null 2>&1; then
            "$QIMG" convert "${S0[@]}" --image-opts "$(io "$SCRATCH/re$ss.img")" -O raw "$SCRATCH/re$ss.raw"
            check "LUKS2 with $ss-byte sectors: cryptsetup's encryption decrypts" \
                cmp -n 8388608 "$SCRATCH/re$ss.raw" "$SCRATCH/plain.img"
        else
            SKIP_WHAT="LUKS2 $ss-byte sectors" skip "cryptsetup reencrypt --encrypt fails here"
        fi
    done
    A2=$SCRATCH/argon.img
    truncate -s 20M "$A2"
    printf abc | cryptsetup luksFormat -q --type luks2 --pbkdf argon2id --pbkdf-memory 32 \
        --pbkdf-force-iterations 4 --key-file - "$A2"
    out=$("$QIMG" convert "${S0[@]}" --image-opts "$(io "$A2")" -O raw "$SCRATCH/x.raw" 2>&1)
    case $out in *argon2id*"OpenSSL 3.0 has no Argon2"*) pass "LUKS2 argon2id: the error names it" ;;
                 *) fail "LUKS2 argon2id: the error names it" "$out" ;; esac
    printf abc | cryptsetup luksAddKey -q --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file - "$A2" \
        <(printf abc) >/dev/null 2>&1
    if cryptsetup luksDump "$A2" | grep -q pbkdf2; then
        "$QIMG" convert "${S0[@]}" --image-opts "$(io "$A2")" -O raw "$SCRATCH/x.raw" 2>/dev/null
        check "LUKS2: a pbkdf2 keyslot beside an argon2id one opens" test $? = 0
    fi
    # a damaged checksum
    cp "$L2" "$SCRATCH/l2bad.img"
    printf 'X' | dd of="$SCRATCH/l2bad.img" bs=1 seek=5000 conv=notrunc status=none
    out=$("$QIMG" info -f luks "$SCRATCH/l2bad.img" 2>&1)
    case $out in *"LUKS2 header checksum mismatch"*) pass "LUKS2: a damaged header is refused" ;;
                 *) fail "LUKS2: a damaged header is refused" "$out" ;; esac
fi
