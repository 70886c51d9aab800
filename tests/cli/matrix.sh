# The rows of matrix.tbl and their fixtures, for the generic tests
# (t-matrix-*.sh).  Source it after lib.sh.
#   FMT[i], OPTS[i]   row i's format and create options ("-" for none)
#   ROWS              the row numbers; label I: "FORMAT OPTIONS"
#   co I              CO=(-o OPTIONS) or () for row I
#   BACKING[i]        1 when qemu-img says the format has a backing file
#   CHECK_RC[i]       what qemu-img check exits with on a clean image
# Fixtures in $FIX, made by qemu-img and qemu-io:
#   a<i>.<fmt>   4 MiB: data, zeroes, a discard, the last KiB written
#   b<i>.<fmt>   a<i> with one byte changed
#   d<i>.raw     a<i>'s guest data
#   base<i>.<fmt>, top<i>.<fmt> (backing base<i>, relative), top<i>.raw
# use FILE...: $IN holds just copies of these fixtures.
TBL=${MATRIX_TBL:-$(dirname "${BASH_SOURCE[0]}")/matrix.tbl}   # MATRIX_TBL: a table of a few rows while working on them

FMT=() OPTS=()
while read -r fmt opts _; do
    case $fmt in '' | '#'*) continue ;; esac
    FMT+=("$fmt") OPTS+=("${opts:--}")
done <"$TBL"
[ ${#FMT[@]} -gt 1 ] || { fail "matrix.tbl has rows"; exit 0; }
ROWS=${!FMT[*]}

# vpc_unrandom FILE: the file with the fields qemu fills at random zeroed
# (each footer's timestamp, checksum and UUID)
vpc_unrandom() {
    local m=$SCRATCH/unrandom.$BASHPID base size
    cp "$1" "$m"
    size=$(stat -c %s "$m")
    for base in 0 $((size - 512)); do
        [ "$(head -c $((base + 8)) "$m" | tail -c 8)" = conectix ] || continue
        head -c 4 /dev/zero | dd of="$m" bs=1 seek=$((base + 24)) conv=notrunc status=none
        head -c 20 /dev/zero | dd of="$m" bs=1 seek=$((base + 64)) conv=notrunc status=none
    done
    cat "$m"
    rm -f "$m"
}

# vmdk_unrandom FILE: the file with its descriptor's CID (random) masked;
# the NUL padding after the text is dropped (a CID is 1 to 8 digits)
vmdk_unrandom() { sed -e 's/^CID=[0-9a-f]*$/CID=x/' -e 's/^parentCID=[0-9a-f]*$/parentCID=x/' "$1" | tr -d '\000'; }
# vhdx_unrandom FILE: the file with what differs between two writers
# zeroed: the headers' checksums, sequence numbers and GUIDs, the log
# region (entries carry the log GUID) and the virtual disk id
vhdx_unrandom() {
    python3 -c '
import struct, sys
f = bytearray(open(sys.argv[1], "rb").read())
for h in (65536, 131072):
    f[h + 4:h + 64] = bytes(60)
ll, lo = struct.unpack_from("<IQ", f, 65536 + 68)
f[lo:lo + ll] = bytes(len(f[lo:lo + ll]))
r = 196608
for i in range(struct.unpack_from("<I", f, r + 8)[0]):
    e = r + 16 + 32 * i
    if f[e:e + 4] == bytes.fromhex("06a27c8b"):
        m = struct.unpack_from("<Q", f, e + 16)[0]
for i in range(struct.unpack_from("<H", f, m + 10)[0]):
    e = m + 32 + 32 * i
    if f[e:e + 4] == bytes.fromhex("ab12cabe"):
        o, l = struct.unpack_from("<II", f, e + 16)
        f[m + o:m + o + l] = bytes(l)
sys.stdout.buffer.write(f)
' "$1"
}

# same_bytes FMT A B: the files are equal but for what the format fills
# at random when it is created (vdi: the image and snapshot UUIDs; vpc: see
# vpc_unrandom)
same_bytes() {
    case $1 in
    vdi) cmp -s <(head -c 392 "$2"; tail -c +425 "$2") <(head -c 392 "$3"; tail -c +425 "$3") ;;
    vpc) cmp -s <(vpc_unrandom "$2") <(vpc_unrandom "$3") ;;
    vmdk) cmp -s <(vmdk_unrandom "$2") <(vmdk_unrandom "$3") ;;
    vhdx) cmp -s <(vhdx_unrandom "$2") <(vhdx_unrandom "$3") ;;
    *) cmp -s "$2" "$3" ;;
    esac
}
# grows_beyond_qemu FMT: qimg grows images of FMT where qemu-img cannot
# resize them at all (issue 14); the generic tests check the result
# compress_exits_1_in_qemu FMT: qemu-img 7.2 writes a compressed image of
# FMT and then exits 1 (qcow refuses its end-of-stream marker); qimg exits 0
compress_exits_1_in_qemu() { case $1 in qcow) return 0 ;; *) return 1 ;; esac; }
grows_beyond_qemu() { case $1 in vdi | vpc | parallels | vhdx | vmdk) return 0 ;; *) return 1 ;; esac; }
# shrinks_beyond_qemu FMT: qimg shrinks images of FMT (--shrink) where
# qemu-img cannot resize them at all
shrinks_beyond_qemu() { case $1 in vdi | vpc | parallels | vhdx) return 0 ;; *) return 1 ;; esac; }
# measures_beyond_qemu FMT: qimg measures FMT where qemu-img cannot
measures_beyond_qemu() { case $1 in vdi | vpc | parallels | vhdx | vmdk) return 0 ;; *) return 1 ;; esac; }
# full_alloc_opts ROW: how the generic measure test makes row ROW's "fully
# allocated" image with qemu-img: nothing (the default) when every byte of
# an image made with the row's options is written by qemu-io; create
# options when the format has a fully allocated subformat that differs
# (vhdx: writing every byte of a dynamic image is not what qemu measures);
# "none" when qemu-img cannot make one (a vhdx subformat=fixed with ZERO
# blocks: every block written is added at the end of the file)
full_alloc_opts() {
    case ${FMT[$1]},${OPTS[$1]} in
    vhdx,*subformat=fixed*) echo none ;;
    vhdx,*) echo subformat=fixed,block_state_zero=off ;;
    esac
}
# measure_size FMT: the virtual size the generic measure test uses
measure_size() { case $1 in vhdx) echo 1G ;; *) echo 16M ;; esac; }
# maps_beyond_qemu FMT: qemu-img has no block status for FMT (every byte is
# data, human map refused); qimg's map tells data from zeros and holes, so
# the generic tests check that map against the guest data instead
maps_beyond_qemu() { case $1 in vhdx) return 0 ;; *) return 1 ;; esac; }
# probes_beyond_qemu ROW: qimg probes row ROW's images by a format where
# qemu-img says raw (a fixed VHD, known by its footer): the generic tests
# name the format to both tools and check the probe apart
probes_beyond_qemu() { [ "${FMT[$1]}" = vpc ] && case ${OPTS[$1]} in *subformat=fixed*) true ;; *) false ;; esac; }
# maps_beyond_qemu FMT: qemu-img has no block status for FMT (every byte is
# data, human map refused); qimg's map tells data from zeros and holes, so
# the generic tests check that map against the guest data instead
maps_beyond_qemu() { case $1 in vhdx) return 0 ;; *) return 1 ;; esac; }
# Encrypted rows: a row whose options name the secret s0 (key-secret=s0 for
# luks, encrypt.key-secret=s0 for qcow2) has every command of its own carry
# SEC (the --object defining s0; empty for the other rows) and open its
# images by `img`: a json: name holding the secret (the plain name for the
# other rows, so that their command lines stay as they were).
#   sec I [J]         SEC for a command on rows I and J
#   img I FILE        how to name FILE of row I
#   img_top I T B     the same for T over its backing file B
#   random_bytes I    row I's files differ at random between two writers
#                     (LUKS salts, master key and UUID; qimg also spends its
#                     own PBKDF2 iteration counts): compared by guest data
SECRET_DATA=matrix-secret SEC=()
key_opt() { case ,${OPTS[$1]}, in *,encrypt.key-secret=s0,*) echo encrypt.key-secret ;; *,key-secret=s0,*) echo key-secret ;; esac; }
sec() {
    SEC=()
    local i
    for i in "$@"; do [ -n "$(key_opt "$i")" ] && SEC=(--object "secret,id=s0,data=$SECRET_DATA"); done
    return 0
}
img_json() { echo "{\"file\": {\"filename\": \"$2\"}, \"$1\": \"s0\"${3-}}"; }
img() {
    local k; k=$(key_opt "$1")
    if [ -n "$k" ]; then echo "json:$(img_json "$k" "$2")"; else echo "$2"; fi
}
img_top() {
    local k; k=$(key_opt "$1")
    if [ -n "$k" ]; then echo "json:$(img_json "$k" "$2" ", \"backing\": $(img_json "$k" "$3")")"; else echo "$2"; fi
}
random_bytes() { case ${FMT[$1]},${OPTS[$1]} in luks,* | qcow2,*encrypt.format=luks*) return 0 ;; *) return 1 ;; esac; }

# qemu-img times PBKDF2 with getrusage() when it creates a LUKS header and
# fails now and then on a loaded machine ("Unable to get accurate CPU
# usage"): its runs are retried on that message alone (as in t-luks.sh)
retry_qemu_img_pbkdf2

label() { if [ "${OPTS[$1]}" = - ]; then echo "${FMT[$1]}"; else echo "${FMT[$1]} ${OPTS[$1]}"; fi; }
co() { CO=(); [ "${OPTS[$1]}" = - ] || CO=(-o "${OPTS[$1]}"); }
has_backing() { "$QEMU_IMG" create -f "$1" -o help 2>/dev/null | grep -q '^ *backing_file='; }
# io FILE FORMAT qemu-io commands...
io() {
    local file=$1 fmt=$2 c args=(); shift 2
    for c in "$@"; do args+=(-c "$c"); done
    "$QEMU_IO" "${SEC[@]}" -f "$fmt" "${args[@]}" "$file" >/dev/null || fail "qemu-io $file $*"
}

# creates_beyond_qemu FMT: qemu-img reads FMT but can neither create nor
# write it (bochs); its fixtures are made by the format's own tool from raw
# ones (native_fixture), and the generic tests check what qimg writes of
# FMT by what qemu-img reads of it, and that both tools refuse what qimg
# cannot do either (compression, resize)
creates_beyond_qemu() { case $1 in bochs) return 0 ;; *) return 1 ;; esac; }
# native_fixtures_only FMT: qemu-img cannot create FMT; its fixtures come
# from the format's own tool (bochs; cloop, which neither tool writes:
# every write is refused alike and the generic tests diff the errors; dmg,
# the same, its fixtures built from the specification by dmg-craft.py,
# zlib and raw chunks, which qemu-img reads; cow, see qemu_lacks_format)
native_fixtures_only() { case $1 in bochs | cloop | dmg | cow) return 0 ;; *) return 1 ;; esac; }
# qemu_lacks_format FMT: qemu-img 7.2 does not know FMT at all (UML cow):
# the generic tests judge qimg's reading by the guest data the fixture was
# made from and by the format's own reader (independent_raw), and what
# qimg writes of FMT by that reader
qemu_lacks_format() { case $1 in cow) return 0 ;; *) return 1 ;; esac; }
# independent_raw FMT IMAGE OUT: OUT = IMAGE's guest data as the format's
# own tool reads it (uml_moo merges a cow file with its backing file)
independent_raw() {
    case $1 in
    cow) rm -f "$3"; uml_moo "$2" "$3" >/dev/null 2>&1 ;;
    *) return 1 ;;
    esac
}
# native_fixture FMT RAW OUT: OUT in FMT with RAW's guest data, made by the
# format's own tool
native_fixture() {
    case $1 in
    bochs) bximage -q -func=convert -imgmode=growing "$2" "$3" >/dev/null 2>&1 ;;
    cloop) create_compressed_fs -q -B 65536 "$2" "$3" >/dev/null 2>&1 ;;
    dmg) "$DEB_PYTHON" "$TOP/tests/cli/dmg-craft.py" "$2" "$3" zlib:256,raw:64,zlib:8 ;;
    *) return 1 ;;
    esac
}
native_tool() {
    case $1 in
    bochs) echo bximage ;; cloop) echo create_compressed_fs ;; dmg) echo "$DEB_PYTHON" ;;
    cow) echo uml_mkcow uml_moo ;;
    esac
}
# make_cow_fixtures I: row I's a<i>: uml_mkcow's cow over a raw backing
# file (COW_BASE[i]) with part of the guest data, the rest (overlapping
# the backing file's data, written zeros, a last partial KiB) written into
# the cow by qimg; d<i> the same writes by qemu-io on a copy of the
# backing file, which uml_moo's merge of a<i> must equal; b<i> a<i> with
# one byte changed; ma<i>, mb<i> uml_moo's merges of a<i> and b<i>
make_cow_fixtures() {
    local i=$1 a=$FIX/a$1.cow base=$FIX/cowbase$1.raw
    COW_BASE[i]=$base
    "$QEMU_IMG" create -q -f raw "$base" 4M
    io "$base" raw "write -P 0x11 0 64k" "write -P 0x99 996k 16k" "write -P 0x33 3M 256k"
    uml_mkcow "$a" "$base" >/dev/null || { fail "uml_mkcow makes a$i.cow"; return 0; }
    cp "$base" "$FIX/d$i.raw"
    io "$FIX/d$i.raw" raw "write -P 0x22 1000k 8k" "write -z 3M 64k" "write -P 0x44 4095k 1k"
    qimg_io "$a" w:1024000:8192:0x22 z:3145728:65536 w:4193280:1024:0x44 || fail "qimg writes into a$i.cow"
    independent_raw cow "$a" "$FIX/ma$i.raw"
    check "$(label "$i") fixture: uml_moo reads what qimg wrote into uml_mkcow's cow" \
        cmp "$FIX/ma$i.raw" "$FIX/d$i.raw"
    cp "$a" "$FIX/b$i.cow"
    qimg_io "$FIX/b$i.cow" w:1234567:1:0x77 || fail "qimg writes into b$i.cow"
    independent_raw cow "$FIX/b$i.cow" "$FIX/mb$i.raw"
    BACKING[i]=0
}
# make_native_fixtures I: row I's a<i>, b<i> and d<i> through raw files
make_native_fixtures() {
    local i=$1 fm=${FMT[$1]} r=$FIX/native$1.raw
    # shellcheck disable=SC2046
    has_cmd "$(label "$i") fixtures" $(native_tool "$fm") || return 0
    [ "$fm" = cow ] && { make_cow_fixtures "$i"; return 0; }
    "$QEMU_IMG" create -q -f raw "$r" 4M
    io "$r" raw "write -P 0x11 0 64k" "write -P 0x22 1000k 8k" "write -z 2M 128k" \
        "write -P 0x33 3M 256k" "discard 3M 64k" "write -P 0x44 4095k 1k"
    native_fixture "$fm" "$r" "$FIX/a$i.$fm" || { fail "$(native_tool "$fm") makes a$i.$fm"; return 0; }
    "$QEMU_IMG" convert -f "$fm" -O raw "$FIX/a$i.$fm" "$FIX/d$i.raw" || fail "guest data of $(label "$i")"
    CHECK_RC[i]=$("$QEMU_IMG" check -f "$fm" "$FIX/a$i.$fm" >/dev/null 2>&1; echo $?)
    io "$r" raw "write -P 0x77 1234567 1"
    native_fixture "$fm" "$r" "$FIX/b$i.$fm" || fail "$(native_tool "$fm") makes b$i.$fm"
    rm -f "$r"
    BACKING[i]=0
}

# qemu_noise FMT: a pattern for the lines qemu-img prints on stderr each
# time it opens FMT that no output compares with (Debian's qemu-img on dmg:
# its bzip2 and lzfse modules are missing); $QEMU_IMG leaves them out
qemu_noise() { case $1 in dmg) echo '^qemu: module block-block-dmg-' ;; esac; }
quiet_qemu_img() {
    local real=$QEMU_IMG fm pats=()
    for fm in "${FMT[@]}"; do [ -n "$(qemu_noise "$fm")" ] && pats+=(-e "$(qemu_noise "$fm")"); done
    [ ${#pats[@]} -gt 0 ] || return 0
    QEMU_IMG=$SCRATCH/bin/qemu-img-quiet
    cat >"$QEMU_IMG" <<QUIET
#!/bin/bash
"$real" "\$@" 2>"$SCRATCH/quiet.err"; rc=\$?
grep -v ${pats[*]@Q} "$SCRATCH/quiet.err" >&2
exit \$rc
QUIET
    chmod +x "$QEMU_IMG"
}
quiet_qemu_img

FIX=$SCRATCH/fix
mkdir -p "$FIX"
BACKING=() CHECK_RC=() COW_BASE=()
make_fixtures() {
    local i fm a
    for i in $ROWS; do
        fm=${FMT[$i]} a=$FIX/a$i.${FMT[$i]}
        BACKING[i]=0   # also for a row whose fixtures could not be made
        if native_fixtures_only "$fm"; then
            make_native_fixtures "$i"
            continue
        fi
        co "$i"
        sec "$i"
        "$QEMU_IMG" create -q -f "$fm" "${SEC[@]}" "${CO[@]}" "$a" 4M || { fail "create $(label "$i")"; continue; }
        io "$(img "$i" "$a")" "$fm" "write -P 0x11 0 64k" "write -P 0x22 1000k 8k" "write -z 2M 128k" \
            "write -P 0x33 3M 256k" "discard 3M 64k" "write -P 0x44 4095k 1k"
        "$QEMU_IMG" convert "${SEC[@]}" -f "$fm" -O raw "$(img "$i" "$a")" "$FIX/d$i.raw" || fail "guest data of $(label "$i")"
        CHECK_RC[i]=$("$QEMU_IMG" check "${SEC[@]}" -f "$fm" "$(img "$i" "$a")" >/dev/null 2>&1; echo $?)
        cp "$a" "$FIX/b$i.$fm"
        io "$(img "$i" "$FIX/b$i.$fm")" "$fm" "write -P 0x77 1234567 1"
        BACKING[i]=0
        has_backing "$fm" || continue
        BACKING[i]=1
        "$QEMU_IMG" create -q -f "$fm" "${SEC[@]}" "${CO[@]}" "$FIX/base$i.$fm" 4M
        io "$(img "$i" "$FIX/base$i.$fm")" "$fm" "write -P 0x55 0 2M" "write -P 0x56 3M 64k"
        (cd "$FIX" && "$QEMU_IMG" create -q -f "$fm" "${SEC[@]}" "${CO[@]}" -b "base$i.$fm" -F "$fm" "top$i.$fm" 4M) ||
            fail "create top of $(label "$i")"
        io "$(img_top "$i" "$FIX/top$i.$fm" "$FIX/base$i.$fm")" "$fm" "write -P 0x66 512k 64k" "write -z 1M 64k" "discard 1536k 64k"
        "$QEMU_IMG" convert "${SEC[@]}" -f "$fm" -O raw "$(img_top "$i" "$FIX/top$i.$fm" "$FIX/base$i.$fm")" "$FIX/top$i.raw" || fail "guest data of top $(label "$i")"
    done
}
make_fixtures

use() { rm -rf "${IN:?}"/*; local x; for x in "$@"; do cp -a "$FIX/$x" "$IN/"; done; }
