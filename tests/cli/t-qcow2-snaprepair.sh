#!/bin/bash
# Damaged qcow2 snapshot tables: qemu-img 7.2 opens such an image for a
# check tolerantly (the check reads the table itself), reports and with
# -r all repairs what it can: too many entries (the ones beyond 65536
# dropped), extra data over 1024 bytes (cut), a table beyond 64 MiB (the
# entries beyond dropped), version 3 entries without the disk size in
# their extra data ("incomplete", the table rewritten); an unaligned table
# offset stops the check.  Bytes past the end of the file read as zeros.
# qemu-img and qimg run on copies of the same image: check (human, json),
# -r leaks, -r all, then info, snapshot -l and convert (plain opens keep
# qemu's errors) must be the same; after -r all both files are the same
# byte for byte, qemu-img check is clean where it is on qemu's result, and
# the guest data (of the disk and of a snapshot) is what it was.
. "$(dirname "$0")/lib.sh"
need_cmd python3

REF=$SCRATCH/run.ref/work
NEW=$SCRATCH/run.new/work
SNTAB=$SCRATCH/sntab.py

# sntab.py IMG SPEC...: write a new snapshot table for IMG (16-bit
# refcounts, refcount block 0 covers the file).  Each SPEC is one entry:
#   keep:N[,field=value...]  entry N of the current table
#   empty[,field=value...]   an entry with no L1 table
# fields: l1off l1size date id name extra (size of the extra data, bytes
# kept up to it, zeros after) idlen namelen (lengths written without the
# bytes: what follows is read as the string) znamelen (a name of that many
# zero bytes).  @dup=K repeats the last entry K times, @nb=N writes N as
# the header count, @off=X only sets the header offset.  The new table
# goes at the end of the file with refcount 1 (zeros written as holes),
# the old table's clusters get refcount 0.
cat >"$SNTAB" <<'EOF'
import struct, sys
img = sys.argv[1]
d = bytearray(open(img, 'rb').read())
rd = lambda fmt, off: struct.unpack_from(fmt, d, off)
cs = 1 << rd('>I', 20)[0]
nb, snoff = rd('>I', 60)[0], rd('>Q', 64)[0]
rb0 = rd('>Q', rd('>Q', 48)[0])[0] & ~0x1ff
assert rd('>I', 96)[0] == 4 if rd('>I', 4)[0] == 3 else True
old, off = [], snoff
for i in range(nb):
    l1o, l1s, idl, nl, ds, dn, vmc, vms, eds = rd('>QIHHIIQII', off)
    p = off + 40
    old.append(dict(l1off=l1o, l1size=l1s, date=ds, datens=dn, vmc=vmc, vms=vms,
                    extra=bytes(d[p:p + eds]), id=bytes(d[p + eds:p + eds + idl]),
                    name=bytes(d[p + eds + idl:p + eds + idl + nl])))
    off = (p + eds + idl + nl + 7) & ~7
oldlen = off - snoff
ents, hdr_nb, hdr_off = [], None, None
for spec in sys.argv[2:]:
    if spec.startswith('@'):
        k, v = spec[1:].split('=')
        if k == 'nb': hdr_nb = int(v, 0)
        elif k == 'off': hdr_off = int(v, 0)
        elif k == 'dup': ents += [ents[-1]] * int(v, 0)
        continue
    parts = spec.split(',')
    if parts[0].startswith('keep:'):
        e = dict(old[int(parts[0][5:])])
    else:
        e = dict(l1off=0, l1size=0, date=0, datens=0, vmc=0, vms=0, extra=b'\0' * 24,
                 id=b'', name=b'')
    for kv in parts[1:]:
        k, v = kv.split('=', 1)
        if k in ('id', 'name'): e[k] = v.encode()
        elif k == 'znamelen': e['name'] = b'\0' * int(v, 0)
        elif k == 'extra': n = int(v, 0); e['extra'] = (e['extra'] + b'\0' * n)[:n]
        else: e[k] = int(v, 0)
    ents.append(e)
tab = bytearray()
for e in ents:
    tab += b'\0' * (-len(tab) % 8)
    tab += struct.pack('>QIHHIIQII', e['l1off'], e['l1size'], e.get('idlen', len(e['id'])),
                       e.get('namelen', len(e['name'])), e['date'], e['datens'], e['vmc'],
                       e['vms'], len(e['extra'])) + e['extra'] + e['id'] + e['name']
setref = lambda c, v: struct.pack_into('>H', d, rb0 + 2 * c, v)
if hdr_off is None:
    for c in range(snoff // cs, (snoff + oldlen - 1) // cs + 1 if nb else 0): setref(c, 0)
    end = -(-len(d) // cs) * cs
    d += b'\0' * (end - len(d)) + tab
    if tab: d += b'\0' * (-len(d) % cs)
    for c in range(end // cs, len(d) // cs): setref(c, 1)
    assert len(d) // cs <= cs // 2
    struct.pack_into('>Q', d, 64, end if tab else 0)
    struct.pack_into('>I', d, 60, len(ents))
else:
    struct.pack_into('>Q', d, 64, hdr_off)
if hdr_nb is not None: struct.pack_into('>I', d, 60, hdr_nb)
with open(img, 'wb') as f:
    z = bytes(65536)
    for o in range(0, len(d), 65536):
        if d[o:o + 65536] != z[:len(d[o:o + 65536])]:
            f.seek(o); f.write(d[o:o + 65536])
    f.truncate(len(d))
EOF

# A 4 MiB image with three snapshots (s1..s3), data written between them.
make_base() {   # make_base FILE [create options]
    local f=$1; shift
    "$QEMU_IMG" create -q -f qcow2 "$@" "$f" 4M || fail "create $f"
    "$QEMU_IO" -f qcow2 -c 'write -P 1 0 64k' "$f" >/dev/null
    "$QEMU_IMG" snapshot -c s1 "$f"
    "$QEMU_IO" -f qcow2 -c 'write -P 2 64k 64k' "$f" >/dev/null
    "$QEMU_IMG" snapshot -c s2 "$f"
    "$QEMU_IO" -f qcow2 -c 'write -P 3 128k 64k' "$f" >/dev/null
    "$QEMU_IMG" snapshot -c s3 "$f"
    "$QEMU_IO" -f qcow2 -c 'write -P 4 0 32k' "$f" >/dev/null
}
BASE3=$SCRATCH/base3.qcow2
BASE2=$SCRATCH/base2.qcow2
make_base "$BASE3"
make_base "$BASE2" -o compat=0.10
# the data of a base image: FILE.disk.raw, FILE.s1.raw (snapshot s1)
base_data() {
    "$QEMU_IMG" convert -O raw "$1" "$1.disk.raw"
    "$QEMU_IMG" convert -O raw -l snapshot.name=s1 "$1" "$1.s1.raw" 2>/dev/null
}
base_data "$BASE3"
base_data "$BASE2"
TABLE3=$(od -An -tu8 --endian=big -j 64 -N 8 "$BASE3" | tr -d ' ')

# damaged NAME BASE SPEC...: the test image $IN/t.qcow2
damaged() {
    local name=$1 base=$2; shift 2
    rm -rf "${IN:?}"/*
    cp "$base" "$IN/t.qcow2"
    CUR_BASE=$base
    python3 "$SNTAB" "$IN/t.qcow2" "$@" || fail "$name: build the image" "$*"
}

# After `same ... check -r all t.qcow2`: the same file, qemu-img check as
# on qemu's result, and when clean, the disk and snapshot s1 as before.
after_repair() {
    local name=$1
    if cmp -s "$REF/t.qcow2" "$NEW/t.qcow2"; then pass "$name: same file as qemu-img's"
    else fail "$name: same file as qemu-img's" "$(cmp "$REF/t.qcow2" "$NEW/t.qcow2" 2>&1 | head -1)"; fi
    # QUICK=1: the same file is all (qemu-img needs seconds per command
    # over 65536 snapshots; its double check was part of the output)
    [ "${QUICK:-0}" = 1 ] && return 0
    local a b
    a=$("$QEMU_IMG" check "$REF/t.qcow2" >/dev/null 2>&1; echo $?)
    b=$("$QEMU_IMG" check "$NEW/t.qcow2" >/dev/null 2>&1; echo $?)
    expect_eq "$name: qemu-img check after -r all" "$b" "$a"
    [ "$a" = 0 ] || return 0
    rm -f "$SCRATCH/after.raw"
    "$QEMU_IMG" convert -O raw "$NEW/t.qcow2" "$SCRATCH/after.raw"
    cmp -s "$CUR_BASE.disk.raw" "$SCRATCH/after.raw"
    expect_eq "$name: disk data unchanged" "$?" 0
    if "$QEMU_IMG" snapshot -l "$NEW/t.qcow2" | grep -q ' s1 '; then
        rm -f "$SCRATCH/after.raw"
        "$QEMU_IMG" convert -O raw -l snapshot.name=s1 "$NEW/t.qcow2" "$SCRATCH/after.raw"
        cmp -s "$CUR_BASE.s1.raw" "$SCRATCH/after.raw"
        expect_eq "$name: snapshot s1 data unchanged" "$?" 0
    fi
}


# every_view NAME RC: all the commands on $IN/t.qcow2; RC: qemu's check
every_view() {
    local name=$1 rc=$2
    same "$name: check" check t.qcow2
    ref_rc "$name: check" "$rc"
    same "$name: check json" check --output=json t.qcow2
    same "$name: info" info t.qcow2
    same "$name: snapshot -l" snapshot -l t.qcow2
    same "$name: convert" convert -O raw t.qcow2 out.raw
    same "$name: check -r leaks" check -r leaks t.qcow2
    same "$name: check -r all" check -r all t.qcow2
    after_repair "$name"
    same "$name: check -r all json" check -r all --output=json t.qcow2
}

# --- entries without the disk size (v3: incomplete; v2: fine)
damaged "incomplete entry" "$BASE3" keep:0 keep:1,extra=8 keep:2
every_view "incomplete entry" 2
damaged "incomplete entries" "$BASE3" keep:0,extra=0 keep:1,extra=16 keep:2,extra=40
every_view "incomplete entries" 2
damaged "v2 short extra data" "$BASE2" keep:0,extra=0 keep:1,extra=8 keep:2
every_view "v2 short extra data" 0
# the upgrade to v3 writes such a table anew (else it would be incomplete)
same_new_file() {
    if cmp -s "$REF/t.qcow2" "$NEW/t.qcow2"; then pass "$1: same file as qemu-img's"
    else fail "$1: same file as qemu-img's" "$(cmp "$REF/t.qcow2" "$NEW/t.qcow2" 2>&1 | head -1)"; fi
    expect_eq "$1: qemu-img check of qimg's file" \
        "$("$QEMU_IMG" check "$NEW/t.qcow2" 2>&1)" "$("$QEMU_IMG" check "$REF/t.qcow2" 2>&1)"
}
for spec in "keep:0,extra=0 keep:1,extra=8 keep:2" "keep:0,extra=16 keep:1,extra=0 keep:2,extra=40" \
            "keep:0 keep:1 keep:2"; do
    damaged "v2 upgrade, extra ${spec//keep:/}" "$BASE2" $spec
    same "v2 upgrade, extra ${spec//keep:/}" amend -o compat=1.1 t.qcow2
    same_new_file "v2 upgrade, extra ${spec//keep:/}"
done
# entries with more extra data than qemu knows: kept by apply and delete
for op in "-a s1" "-d s2" "-d s1"; do
    damaged "extra 40 and 1000: snapshot $op" "$BASE3" keep:0,extra=40 keep:1,extra=1000 keep:2
    same "extra 40 and 1000: snapshot $op" snapshot $op t.qcow2
    same_new_file "extra 40 and 1000: snapshot $op"
done

# the table's corruptions count apart from the refcounts': -r leaks still
# repairs a COPIED flag, a rebuild does not count them twice
damaged "incomplete, a leak, a COPIED flag" "$BASE3" keep:0 keep:1,extra=8 keep:2
python3 - "$IN/t.qcow2" <<'EOF2'
import struct, sys
d = bytearray(open(sys.argv[1], 'rb').read())
l1 = struct.unpack_from('>Q', d, 40)[0]
l2 = struct.unpack_from('>Q', d, l1)[0] & 0x00fffffffffffe00
struct.pack_into('>Q', d, l2, struct.unpack_from('>Q', d, l2)[0] & ~(1 << 63))
rb = struct.unpack_from('>Q', d, struct.unpack_from('>Q', d, 48)[0])[0]
struct.pack_into('>H', d, rb, 2)
open(sys.argv[1], 'wb').write(d)
EOF2
every_view "incomplete, a leak, a COPIED flag" 2
BASE4K=$SCRATCH/base4k.qcow2
"$QEMU_IMG" create -q -f qcow2 -o cluster_size=4096 "$BASE4K" 4M
for i in 1 2 3 4 5 6; do
    "$QEMU_IO" -f qcow2 -c "write -P $i $((i * 8))k 8k" "$BASE4K" >/dev/null
    "$QEMU_IMG" snapshot -c "snap$i" "$BASE4K"
done
base_data "$BASE4K"
damaged "4k clusters, count 100 for 6" "$BASE4K" keep:0 keep:1 keep:2 keep:3 keep:4 keep:5 @nb=100
same "4k clusters, count 100 for 6: check" check t.qcow2
ref_rc "4k clusters, count 100 for 6: check" 2
same "4k clusters, count 100 for 6: check -r all" check -r all t.qcow2
same "4k clusters, count 100 for 6: check -r all json" check -r all --output=json t.qcow2
damaged "4k clusters, mixed" "$BASE4K" keep:0 keep:1,extra=8 keep:2 keep:3,extra=0 keep:4 \
    keep:5,extra=3000
same "4k clusters, mixed: check" check t.qcow2
same "4k clusters, mixed: check -r all" check -r all t.qcow2
after_repair "4k clusters, mixed"

# --- extra data over 1024 bytes: the open fails, the check cuts it
damaged "extra data 1025" "$BASE3" keep:0 keep:1,extra=1025 keep:2
every_view "extra data 1025" 1
damaged "extra data 2000, 1100" "$BASE3" keep:0 keep:1,extra=2000 keep:2,extra=1100
every_view "extra data 2000, 1100" 1
damaged "extra data and incomplete" "$BASE3" keep:0,extra=8 keep:1,extra=1030 keep:2,extra=0
every_view "extra data and incomplete" 1
damaged "v2 extra data 4096" "$BASE2" keep:0 keep:1 keep:2,extra=4096
every_view "v2 extra data 4096" 1

# --- the header count larger than the table: zeros (or garbage) read
damaged "count 5 for 3 entries" "$BASE3" keep:0 keep:1 keep:2 @nb=5
every_view "count 5 for 3 entries" 2
damaged "count 300, table at the end" "$BASE3" keep:0 keep:1 keep:2 @nb=300
every_view "count 300, table at the end" 2
# qemu reads entries from the guest data after the table, cuts a huge
# extra data, then the new table would overwrite the old one's region:
# the image is marked corrupt and the check fails
damaged "count 65537 over guest data" "$BASE3" "@off=$TABLE3" @nb=65537
same "count 65537 over guest data: check" check t.qcow2
ref_rc "count 65537 over guest data: check" 1
same "count 65537 over guest data: info" info t.qcow2
same "count 65537 over guest data: check -r all" check -r all t.qcow2
after_repair "count 65537 over guest data"

# --- more than 65536 entries (qemu-img takes seconds over 65536 snapshots:
# the fewest commands)
damaged "65537 entries" "$BASE3" keep:0 keep:1 keep:2 empty @dup=65533
same "65537 entries: check" check t.qcow2
ref_rc "65537 entries: check" 1
same "65537 entries: check -r leaks" check -r leaks t.qcow2
same "65537 entries: info" info t.qcow2
damaged "65540 counted, 65537 there" "$BASE3" keep:0 keep:1 keep:2 empty @dup=65533 @nb=65540
same "65540 counted: check -r all" check -r all t.qcow2
QUICK=1 after_repair "65540 counted"

# --- a table beyond 64 MiB (names of zeros: a sparse file)
damaged "table over 64 MiB" "$BASE3" keep:0 keep:1 keep:2 empty,znamelen=65535 @dup=1021 \
    empty @dup=1100
same "table over 64 MiB: check" check t.qcow2
ref_rc "table over 64 MiB: check" 1
same "table over 64 MiB: info" info t.qcow2
same "table over 64 MiB: check -r all" check -r all t.qcow2
after_repair "table over 64 MiB"
damaged "64 MiB with 40-byte entries" "$BASE3" keep:0 keep:1 keep:2 empty,znamelen=65535 \
    @dup=1021 empty,extra=0 @dup=1636
same "64 MiB with 40-byte entries: check" check t.qcow2
ref_rc "64 MiB with 40-byte entries: check" 1
same "64 MiB with 40-byte entries: check -r all" check -r all t.qcow2
after_repair "64 MiB with 40-byte entries"
# entries whose extra data is cut count with 1024 bytes towards the limit
damaged "64 MiB and cut extra data" "$BASE3" keep:0 keep:1 keep:2 empty,znamelen=65535 \
    @dup=1021 empty,extra=2000 @dup=62
same "64 MiB and cut extra data: check -r all" check -r all t.qcow2
after_repair "64 MiB and cut extra data"

# --- the table offset
damaged "table past the end of the file" "$BASE3" keep:0 keep:1 keep:2 @off=0x1000000
every_view "table past the end of the file" 2
damaged "table offset unaligned" "$BASE3" keep:0 keep:1 keep:2 "@off=$((TABLE3 + 8))"
every_view "table offset unaligned" 1

# --- id and name read past the end of the file (the table is the last cluster)
damaged "name past the end of the file" "$BASE3" keep:0 keep:1 keep:2,namelen=65500
every_view "name past the end of the file" 2
damaged "id past the end of the file" "$BASE3" keep:0 keep:1 keep:2,idlen=65500
every_view "id past the end of the file" 2

# --- an entry's L1 table (reported, not repaired)
damaged "snapshot L1 unaligned" "$BASE3" keep:0 keep:1,l1off=0x60001 keep:2
every_view "snapshot L1 unaligned" 2
damaged "snapshot L1 past the end" "$BASE3" keep:0 keep:1,l1off=0x1000000 keep:2
every_view "snapshot L1 past the end" 2
damaged "snapshot L1 too large" "$BASE3" keep:0 keep:1,l1size=0x400001 keep:2
every_view "snapshot L1 too large" 2
