#!/bin/bash
# qcow2 feature bits against qemu-img: unknown incompatible bits named from
# the image's feature name table (entries cut short, an empty name ending
# it, bit numbers past 63, a later table replacing an earlier one, other
# extensions read on the way), unknown autoclear bits cleared by a
# read-write open (not by a read-only one, nor by commit's reopen of its
# base), unknown compatible bits kept, and what such a header update
# writes: qemu's own feature table (only above 4 KiB clusters), unknown
# extensions in reverse order, an ignored bitmaps extension dropped.
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

# ---- building the extension area of a header (from offset 112, v3)
# ext MAGIC HEXDATA: one extension, padded to 8 bytes, as hex digits
ext() {
    local len=$((${#2} / 2))
    printf '%08x%08x%s' "$1" "$len" "$2"
    printf '%*s' $(((8 - len % 8) % 8 * 2)) '' | tr ' ' 0
}
# feat TYPE BIT NAME: one feature table entry (48 bytes)
feat() {
    printf '%02x%02x' "$1" "$2"
    printf '%s' "$3" | od -An -tx1 -v | tr -d ' \n'
    printf '%*s' $(((46 - ${#3}) * 2)) '' | tr ' ' 0
}
hex() { printf '%s' "$1" | od -An -tx1 -v | tr -d ' \n'; }
# set_exts FILE HEX...: the extensions of FILE replaced by these, then the
# end (at EXT_AT, default 112: the header's length)
set_exts() {
    local f=$1; shift
    local all
    all=$(printf '%s' "$@")0000000000000000
    printf "$(echo "$all" | sed 's/../\\x&/g')" | poke "$f" "${EXT_AT:-112}"
}
# base FILE [create options]: a 64 MiB image by qemu-img, 64 KiB written
base() {
    local f=$1; shift
    mk "$f" 64M "$@"
    qw "$f" "write -P 7 0 64k"
}
FT=0x6803f857
BITMAPS_EXT=0x23852875
CRYPTO_EXT=0x0537be77

# ============================================== unknown incompatible bits
# unsupported NAME INCOMPAT HEX...: t.qcow2 with these bits and extensions
unsupported() {
    local name=$1 bits=$2; shift 2
    fresh; base t.qcow2
    set_exts t.qcow2 "$@"
    poke64 t.qcow2 72 "$bits"
    same "$name" info t.qcow2
    ref_rc "$name" 1
}
unsupported "no table" $((1 << 63))
unsupported "no name for the bit" $((1 << 63)) "$(ext $FT "$(feat 0 62 other)")"
# an entry cut short: the name as far as the extension goes
unsupported "short entry" $((1 << 63)) "$(ext $FT "003f$(hex 'Test feature')")"
unsupported "short names" $((7 << 61)) "$(ext $FT "$(feat 0 61 test1)003e$(hex test2)")"
unsupported "46-char name" $((1 << 63)) "$(ext $FT "$(feat 0 63 0123456789012345678901234567890123456789abcdef)")"
unsupported "three names" $((7 << 61)) \
    "$(ext $FT "$(feat 0 61 test1)$(feat 0 62 test2)$(feat 0 63 test3)")"
# compatible and autoclear entries do not name incompatible bits
unsupported "other types" $((7 << 61)) \
    "$(ext $FT "$(feat 1 61 test1)$(feat 0 62 test2)$(feat 2 63 test3)$(feat 3 60 test4)")"
# an entry with an empty name ends the table
unsupported "empty name ends" $((3 << 62)) \
    "$(ext $FT "$(feat 0 62 t62)$(feat 0 0 '')$(feat 0 63 t63)")"
# bit 127: qemu shifts modulo 64
unsupported "bit 127" $((1 << 63)) "$(ext $FT "$(feat 0 127 big)")"
unsupported "two entries one bit" $((1 << 63)) "$(ext $FT "$(feat 0 63 one)$(feat 0 63 two)")"
# a later table replaces the first
unsupported "later table" $((3 << 62)) "$(ext $FT "$(feat 0 62 first)")" "$(ext $FT "$(feat 0 63 second)")"
unsupported "empty table" $((1 << 63)) "$(ext $FT "")"
# the walk reads the other extensions: their warnings show, an invalid
# one ends it before the table
unsupported "ignored bitmaps ext first" $((1 << 63)) \
    "$(ext $BITMAPS_EXT "$(printf '%048x' 1)")" "$(ext $FT "$(feat 0 63 named)")"
unsupported "invalid crypto ext first" $((1 << 63)) \
    "$(ext $CRYPTO_EXT "$(printf '%032x' 1)")" "$(ext $FT "$(feat 0 63 named)")"
unsupported "long backing format first" $((1 << 63)) \
    "$(ext 0xe2792aca "$(hex 0123456789abcdefgh)")" "$(ext $FT "$(feat 0 63 named)")"
unsupported "data file ext first" $((1 << 63)) \
    "$(ext 0x44415441 "$(hex ab)")" "$(ext $FT "$(feat 0 63 named)")"
# known bits among the unknown ones are not named
unsupported "known and unknown" $((0x8000000000000001)) "$(ext $FT "$(feat 0 63 named)")"

# ======================================== autoclear and compatible bits
# both tools' copies of FILE after the last `same`: byte for byte equal
same_file() {
    if cmp -s "$SCRATCH/run.ref/work/$2" "$SCRATCH/run.new/work/$2"; then
        pass "$1: $2 as qemu-img leaves it"
    else
        fail "$1: $2 as qemu-img leaves it" "$(cmp "$SCRATCH/run.ref/work/$2" "$SCRATCH/run.new/work/$2" 2>&1)"
    fi
}
# the header cluster (64 KiB) only, where timestamps differ further on
same_header() {
    if cmp -s -n 65536 "$SCRATCH/run.ref/work/$2" "$SCRATCH/run.new/work/$2"; then
        pass "$1: $2's header as qemu-img leaves it"
    else
        fail "$1: $2's header as qemu-img leaves it"
    fi
}
# a header field (8 bytes at OFFSET) of one tool's copy, in hex
field_of() { od -An -tx1 -j "$3" -N 8 "$SCRATCH/run.$1/work/$2" | tr -d ' \n'; }
autoclear_of() { field_of "$1" "$2" 88; }
x64() { printf '%016x' "$1"; }

# t.qcow2 with autoclear bits 5 and 63 and compatible bit 62; o.qcow2 over
# it with autoclear bit 63
bits_images() {
    fresh
    base t.qcow2
    poke64 t.qcow2 88 $(((1 << 63) | (1 << 5)))
    poke64 t.qcow2 80 $((1 << 62))
    mk o.qcow2 64M -b t.qcow2 -F qcow2
    qw o.qcow2 "write -P 8 64k 64k"
    poke64 o.qcow2 88 $((1 << 63))
    truncate -s 1M r.raw
}
KEEP=$(x64 $(((1 << 63) | (1 << 5))))
B63=$(x64 $((1 << 63)))
ZERO=$(x64 0)
# op NAME WHAT-IN-T WHAT-IN-O ARGS...: the autoclear bits each file keeps
op() {
    local name=$1 t_bits=$2 o_bits=$3; shift 3
    bits_images
    same "$name" "$@"
    ${SAME_T:-same_file} "$name" t.qcow2
    same_file "$name" o.qcow2
    expect_eq "$name: t.qcow2 autoclear" "$(autoclear_of ref t.qcow2)" "$t_bits"
    expect_eq "$name: o.qcow2 autoclear" "$(autoclear_of ref o.qcow2)" "$o_bits"
    local compat
    compat=$(field_of ref t.qcow2 80)
    expect_eq "$name: t.qcow2 keeps compatible bit 62" $(((0x$compat >> 62) & 1)) 1
}
op "info"           $KEEP $B63 info t.qcow2
op "check"          $KEEP $B63 check t.qcow2
op "map"            $KEEP $B63 map o.qcow2
op "convert from"   $KEEP $B63 convert -O raw o.qcow2 out.raw
op "check -r leaks" $ZERO $B63 check -r leaks t.qcow2
op "check -r all"   $ZERO $B63 check -r all t.qcow2
op "resize"         $ZERO $B63 resize t.qcow2 +1M
op "rebase -u"      $KEEP $ZERO rebase -u -b t.qcow2 -F qcow2 o.qcow2
op "rebase"         $ZERO $B63 rebase -b '' t.qcow2
op "amend"          $ZERO $B63 amend -o lazy_refcounts=on t.qcow2
# (qimg leaves the bytes of a cluster it frees, qemu discards them)
SAME_T=same_header op "convert -n to"  $ZERO $B63 convert -n -O qcow2 r.raw t.qcow2
# commit reopens its base read-write: the base keeps its bits
op "commit"         $KEEP $ZERO commit o.qcow2
op "commit -b"      $KEEP $ZERO commit -b t.qcow2 o.qcow2
op "commit -d"      $KEEP $ZERO commit -d o.qcow2
# snapshot -c: the snapshot table holds a time, the header does not
bits_images
same "snapshot -c" snapshot -c s1 t.qcow2
same_header "snapshot -c" t.qcow2
expect_eq "snapshot -c: autoclear cleared" "$(autoclear_of ref t.qcow2)" "$ZERO"
# bitmap --add sets the bitmaps bit and clears the rest
bits_images
same "bitmap --add" bitmap --add t.qcow2 bm
same_file "bitmap --add" t.qcow2
expect_eq "bitmap --add: autoclear" "$(autoclear_of ref t.qcow2)" "$(x64 1)"

# ============================================ what a header update writes
# t.qcow2 with unknown extensions around a feature table of its own and
# unknown autoclear bit 40 (or none)
custom() {
    fresh
    base t.qcow2 "$@"
    set_exts t.qcow2 "$(ext 0x11111111 aa)" "$(ext $FT "$(feat 1 61 custom)")" "$(ext 0x22222222 bbbb)"
}
for c in 65536 4096; do
    for bits in 0 $((1 << 40)); do
        for args in "rebase -u -b '' t.qcow2" "amend -o lazy_refcounts=on t.qcow2" \
                    "check -r all t.qcow2" "resize t.qcow2 +1M"; do
            name="cluster $c, autoclear $bits: ${args%% t.qcow2*}"
            custom -o cluster_size=$c
            poke64 t.qcow2 88 "$bits"
            eval "same \"\$name\" $args"
            same_file "$name" t.qcow2
        done
    done
done
# no room for qemu's table: the open fails, nothing changes
fresh
mk t.qcow2 1M -o cluster_size=8192
poke64 t.qcow2 88 $((1 << 40))
set_exts t.qcow2 "$(ext 0x11111111 "$(printf '%*s' 15400 '' | tr ' ' 0)")"
same "no room for the table" check -r all t.qcow2
ref_rc "no room for the table" 1
same_file "no room for the table" t.qcow2

# a bitmaps extension without the autoclear bit: ignored with a warning
# and a note; a read-write open drops it
fresh
mk t.qcow2 64M
"$QEMU_IMG" bitmap --add t.qcow2 bm || fail "bitmap --add"
poke64 t.qcow2 88 0
same "ignored bitmaps: check" check t.qcow2
ref_rc "ignored bitmaps: check" 3
same "ignored bitmaps: check -r all" check -r all t.qcow2
same_file "ignored bitmaps: check -r all" t.qcow2
same "ignored bitmaps: info" info t.qcow2
same_file "ignored bitmaps: info" t.qcow2

# the known autoclear bit "raw external data" without an external data
# file: refused by every open but info's (which does no I/O)
fresh
base t.qcow2
poke64 t.qcow2 88 2
for args in "info t.qcow2" "check t.qcow2" "check -r all t.qcow2" "map t.qcow2" \
            "convert -O raw t.qcow2 o.raw" "resize t.qcow2 +1M"; do
    read -ra a <<<"$args"
    same "data-file-raw alone: ${a[0]}" "${a[@]}"
    same_file "data-file-raw alone: ${a[0]}" t.qcow2
done

# ================================================ header fields beyond ours
# header_length 104 (no compression type byte) and 120/176 (fields qemu
# does not know, kept by a header update after its own)
hdr_len() {   # hdr_len LENGTH: t.qcow2 with that header length, its
    fresh     # extension area moved after it, unknown fields 0xab
    base t.qcow2
    poke32 t.qcow2 100 "$1"
    if [ "$1" -gt 112 ]; then
        printf '%*s' $(($1 - 112)) '' | tr ' ' '\253' | poke t.qcow2 112
    fi
    EXT_AT=$1 set_exts t.qcow2 "$(ext $FT "$(feat 0 0 'dirty bit')")" "$(ext 0x11111111 aa)"
    poke64 t.qcow2 88 $((1 << 40))
}
for len in 104 120 176; do
    for args in "rebase -u -b '' t.qcow2" "amend -o lazy_refcounts=on t.qcow2" \
                "check -r all t.qcow2" "info t.qcow2" "bitmap --add t.qcow2 bm"; do
        name="header length $len: ${args%% t.qcow2*}"
        hdr_len $len
        eval "same \"\$name\" $args"
        same_file "$name" t.qcow2
    done
done
# a downgrade to v2 drops them: qemu writes them where a v2 reader looks
# for extensions, and its image does not open any more (qimg's does)
hdr_len 120
"$QIMG_AS_QEMU" amend -o compat=0.10 t.qcow2 2>&1
expect_eq "header length 120: downgrade: qemu-img check of qimg's file" \
    "$("$QEMU_IMG" check t.qcow2 2>&1 | head -1)" "No errors were found on the image."
expect_eq "header length 120: downgrade: version 2" "$(peek32 t.qcow2 4)" 2
