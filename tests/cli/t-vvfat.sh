#!/bin/bash
# vvfat (fat:[12|16|32:][floppy:][rw:]DIR): a FAT disk made from a directory.
# - info and map (human, json, -f vvfat, --image-opts, json:) and the open
#   errors as qemu-img prints them;
# - convert byte for byte as qemu-img's for trees qemu-img lays out right
#   (one entry per directory: qemu-img's order is the host's readdir order,
#   ours is sorted by name; qemu-img leaks file bytes into cluster slack);
# - every FAT type and floppy: fsck.fat -n clean, mcopy -s gives the tree
#   back (diff -r), FAT32 included, which qemu-img gets wrong;
# - cluster slack is zero (an independent reader of the FAT in python);
# - two converts are byte-identical after every file was read, and the host
#   tree (sizes, mtimes, atimes) is unchanged;
# - hostile trees: symlinks out of the tree, dangling, to a directory,
#   FIFOs, files over 4 GiB, bad names, deep nesting, 100k entries: a clear
#   error or success, bounded in time and memory.
. "$(dirname "$0")/lib.sh"
need_cmd qemu-img
T=$IN            # trees live in $IN: same_ro runs both tools there

mktree() { rm -rf "${T:?}/$1"; mkdir -p "$T/$1"; }

# the tree most checks use: long and unusual names, nesting, empty and
# large files
mktree t
(
    cd "$T/t" || exit 1
    mkdir -p "Sub Dir/nested/deeper" empty.dir "ünïcödé dir"
    echo hi > a.txt
    echo "long name" > "A long file name with spaces.text"
    echo one > Case; echo two > case; echo three > CASE
    echo x > "abcdefghij.txt"; echo y > "abcdefghik.txt"; echo z > "ABCDEFGH.TXT"
    echo u > "日本語.txt"; echo v > ".hidden"; echo w > "x.tar.gz"; echo q > "a+b=c,d;e"
    : > "Sub Dir/empty file"
    head -c 3000000 /dev/urandom > "Sub Dir/nested/large.bin"
    head -c 8192 /dev/urandom > "Sub Dir/nested/deeper/exactly one cluster"
    head -c 8193 /dev/urandom > "ünïcödé dir/one cluster and a byte"
    for i in $(seq 1 40); do echo "$i" > "Sub Dir/file number $i.txt"; done
) || exit 1
# a small tree for floppies
mktree small
(cd "$T/small" && mkdir -p d/e && echo small > "d/e/Small File.txt" && echo top > TOP.TXT &&
    head -c 20000 /dev/urandom > d/blob) || exit 1
# one entry per directory: qemu-img's layout is ours (a file of whole
# clusters: qemu-img fills the slack of a last cluster with stale bytes)
mktree one
(cd "$T/one" && mkdir -p "Sub Dir/two" && head -c 16384 /dev/urandom > "Sub Dir/two/Data File.bin") ||
    exit 1

# ---- info, map and open errors as qemu-img
for v in "" 12: 16: floppy: 12:floppy: 16:floppy: rw: floppy:16:; do
    same_ro "info fat:${v}t" info "fat:${v}one"
done
same_ro "info json fat:" info --output=json fat:one
same_ro "info -f vvfat" info -f vvfat fat:one
same_ro "info -f vvfat json" info -f vvfat --output=json fat:12:one
same_ro "info --image-opts" info --image-opts driver=vvfat,dir=one,label=HELLO
same_ro "info json: raw over vvfat" info 'json:{"driver":"raw","file":{"driver":"vvfat","dir":"one","fat-type":12}}'
same_ro "info json: vvfat" info 'json:{"driver":"vvfat","dir":"one","floppy":true}'
same_ro "map fat:" map fat:one
same_ro "map json fat:" map --output=json fat:one
same_ro "map -f vvfat json" map -f vvfat --output=json fat:floppy:one
same_ro "missing dir" info fat:nothing-here
same_ro "empty name" info fat:
same_ro "no dir option" info 'json:{"driver":"vvfat"}'
same_ro "unknown option" info 'json:{"driver":"vvfat","dir":"one","x":1}'
same_ro "bad fat-type" info --image-opts driver=vvfat,dir=one,fat-type=13
same_ro "fat-type not a number" info --image-opts driver=vvfat,dir=one,fat-type=x
same_ro "long label" info --image-opts driver=vvfat,dir=one,label=ABCDEFGHIJKL
same_ro "write without rw:" bench -w -c 1 -o 1M fat:one
mkdir -p "$T/big" && head -c 2000000 /dev/zero > "$T/big/zeros"
same_ro "too large for a floppy" info fat:12:floppy:big

# same_raw A B: two sparse raw files hold the same bytes (compared up to
# the end of their last data extent, the rest being holes in both: cmp of
# 504 MiB of zeros costs seconds)
data_end() {
    "$QIMG" map -f raw --output=json "$1" |
        sed -n 's/.*"start": \([0-9]*\), "length": \([0-9]*\),.*"data": true.*/\1 \2/p' |
        awk '{ e = $1 + $2 } END { print e + 0 }'
}
same_raw() {
    local ea eb
    ea=$(data_end "$1") eb=$(data_end "$2")
    [ "$ea" = "$eb" ] && [ "$(stat -c %s "$1")" = "$(stat -c %s "$2")" ] &&
        cmp -s -n "$ea" "$1" "$2"
}

# ---- convert: qemu-img's bytes where qemu-img is right
cmp_convert() {   # NAME SOURCE-ARGS...
    local name=$1; shift
    rm -f "$SCRATCH/q.raw" "$SCRATCH/m.raw"
    (cd "$T" && "$QEMU_IMG" convert -O raw "$@" "$SCRATCH/q.raw" 2>&1) >"$SCRATCH/q.err"
    (cd "$T" && "$QIMG_AS_QEMU" convert -O raw "$@" "$SCRATCH/m.raw" 2>&1) >"$SCRATCH/m.err"
    if same_raw "$SCRATCH/q.raw" "$SCRATCH/m.raw" && cmp -s "$SCRATCH/q.err" "$SCRATCH/m.err"; then
        pass "$name"
    else
        fail "$name" "$(cmp "$SCRATCH/q.raw" "$SCRATCH/m.raw" 2>&1 | head -2)" "$(diff "$SCRATCH/q.err" "$SCRATCH/m.err")"
    fi
}
for v in "" 12: floppy: 12:floppy:; do
    cmp_convert "convert fat:${v} as qemu-img" "fat:${v}one"
done
cmp_convert "convert with a label as qemu-img" --image-opts driver=vvfat,dir=one,label=abc.d
# FAT times are local time, as qemu-img writes them
TZ=America/New_York cmp_convert "convert in another time zone as qemu-img" fat:12:floppy:one

# ---- fsck.fat and mcopy on every type (the FAT volume itself: a raw
# window of the disk at the partition for hard disks)
volume() {   # OUT TYPE FLOPPY TREE: the FAT volume as a file
    local out=$1 type=$2 floppy=$3 tree=$4 opts
    opts="driver=vvfat,dir=$T/$tree,fat-type=$type,floppy=$floppy"
    if [ "$floppy" = on ]; then
        "$QIMG" convert -O raw --image-opts "$opts" "$out"
    else
        "$QIMG" convert -O raw --image-opts "driver=raw,offset=32256,file.${opts//,/,file.}" "$out"
    fi
}
if has_cmd "fsck.fat and mtools" fsck.fat mcopy; then
    for spec in "16 off t" "12 off t" "32 off t" "0 off t" "0 on small" "12 on small" "16 on small"; do
        set -- $spec
        name="fat-type=$1 floppy=$2"
        rm -f "$SCRATCH/vol"
        if ! volume "$SCRATCH/vol" "$1" "$2" "$3"; then
            fail "$name: convert"
            continue
        fi
        check "$name: fsck.fat -n clean" fsck.fat -n "$SCRATCH/vol"
        out=$(fsck.fat -n "$SCRATCH/vol" 2>&1 | tail -n +2)
        case $out in *"files,"*clusters) case $(printf '%s\n' "$out" | wc -l) in 1) pass "$name: fsck.fat says nothing";; *) fail "$name: fsck.fat says nothing" "$out";; esac;;
                     *) fail "$name: fsck.fat says nothing" "$out";; esac
        rm -rf "$SCRATCH/back" && mkdir "$SCRATCH/back"
        # mtools turns long names into the locale's charset
        if LC_ALL=C.UTF-8 mcopy -s -i "$SCRATCH/vol" ::/ "$SCRATCH/back/" 2>"$SCRATCH/mcopy.err" &&
            diff -r "$T/$3" "$SCRATCH/back" >"$SCRATCH/diff" 2>&1; then
            pass "$name: mcopy -s gives the tree back"
        else
            fail "$name: mcopy -s gives the tree back" "$(head -5 "$SCRATCH/mcopy.err" "$SCRATCH/diff")"
        fi
    done
    # qemu-img's FAT32 is what we do not want to be: keep knowing why
    rm -f "$SCRATCH/q32"
    "$QEMU_IMG" convert -O raw --image-opts "driver=raw,offset=32256,file.driver=vvfat,file.dir=$T/one,file.fat-type=32" "$SCRATCH/q32" 2>/dev/null
    check_fail "qemu-img's FAT32 fails fsck.fat (why we differ)" fsck.fat -n "$SCRATCH/q32"
fi

# ---- slack: every file's last cluster is zero after its end (an
# independent FAT reader: the BPB, the root, chains and directories)
slack_check() {   # VOLUME
    "$DEB_PYTHON" - "$1" <<'EOF'
import mmap, struct, sys
f = open(sys.argv[1], 'rb')
d = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)   # sparse: read what is used
bps, spc, rsv, nf, rootn = struct.unpack_from('<HBHBH', d, 11)
tot = struct.unpack_from('<H', d, 19)[0] or struct.unpack_from('<I', d, 32)[0]
fsz = struct.unpack_from('<H', d, 22)[0] or struct.unpack_from('<I', d, 36)[0]
rootsec = (rootn * 32 + bps - 1) // bps
data = rsv + nf * fsz + rootsec
ncl = (tot - data) // spc
kind = 12 if ncl < 4085 else 16 if ncl < 65525 else 32
fat = d[rsv * bps:(rsv + fsz) * bps]
cs = bps * spc
def nxt(c):
    if kind == 12:
        w = struct.unpack_from('<H', fat, c + c // 2)[0]
        v = w >> 4 if c & 1 else w & 0xfff
        return None if v >= 0xff8 else v
    if kind == 16:
        v = struct.unpack_from('<H', fat, 2 * c)[0]
        return None if v >= 0xfff8 else v
    v = struct.unpack_from('<I', fat, 4 * c)[0] & 0x0fffffff
    return None if v >= 0x0ffffff8 else v
def chain(c):
    out = []
    while c is not None and len(out) <= ncl:
        out.append(c); c = nxt(c)
    return out
def clus(c):
    o = (data + (c - 2) * spc) * bps
    return d[o:o + cs]
bad = files = 0
def walk(raw, top):
    global bad, files
    for i in range(0, len(raw), 32):
        e = raw[i:i + 32]
        if e[0] == 0: break
        if e[0] == 0xe5 or e[11] == 0x0f or e[11] & 0x08: continue
        if e[:2] in (b'. ', b'..'): continue
        c = struct.unpack_from('<H', e, 26)[0] | struct.unpack_from('<H', e, 20)[0] << 16
        size = struct.unpack_from('<I', e, 28)[0]
        if e[11] & 0x10:
            walk(b''.join(clus(x) for x in chain(c)), False)
        elif c:
            files += 1
            last = clus(chain(c)[-1])
            used = size % cs or cs
            if any(last[used:]): bad += 1
if kind == 32:
    walk(b''.join(clus(x) for x in chain(struct.unpack_from('<I', d, 44)[0])), True)
else:
    walk(d[(rsv + nf * fsz) * bps:data * bps], True)
print(f"{files} {bad}")
EOF
}
for spec in "16 off t" "32 off t" "12 on small"; do
    set -- $spec
    rm -f "$SCRATCH/vol"
    volume "$SCRATCH/vol" "$1" "$2" "$3"
    r=$(slack_check "$SCRATCH/vol")
    case $r in
        *" 0") [ "${r% 0}" -ge 3 ] && pass "fat-type=$1: slack is zero ($r)" ||
                   fail "fat-type=$1: slack is zero" "only ${r% 0} files read";;
        *) fail "fat-type=$1: slack is zero" "files, bad: $r";;
    esac
done
# qemu-img's slack holds another file's bytes: keep knowing why
mktree leak
(cd "$T/leak" && head -c 8000 /dev/zero | tr '\0' 'A' > a && echo hi > b) || exit 1
rm -f "$SCRATCH/ql"
"$QEMU_IMG" convert -O raw --image-opts "driver=raw,offset=32256,file.driver=vvfat,file.dir=$T/leak" "$SCRATCH/ql"
r=$(slack_check "$SCRATCH/ql")
volume "$SCRATCH/ml" 16 off leak
expect_eq "slack: ours zero where qemu-img's leaks ($r)" "$(slack_check "$SCRATCH/ml")" "2 0"

# ---- the host tree untouched (atimes too), and reproducible
snapshot() { (cd "$T/t" && find . -printf '%p %s %T@ %A@ %i\n' | sort); }
snapshot >/dev/null      # the first walk may update directory atimes (relatime)
before=$(snapshot)
rm -f "$SCRATCH/r1" "$SCRATCH/r2"
"$QIMG" convert -O raw fat:"$T/t" "$SCRATCH/r1"
expect_eq "a convert leaves the tree unchanged (sizes, mtimes, atimes)" "$(snapshot)" "$before"
(cd "$T/t" && find . -type f -exec cat {} + >/dev/null)
"$QIMG" convert -O raw fat:"$T/t" "$SCRATCH/r2"
check "two converts are the same bytes (every file read in between)" same_raw "$SCRATCH/r1" "$SCRATCH/r2"
rm -f "$SCRATCH/r1" "$SCRATCH/r2"

# ---- rw: writes never reach the directory
rm -f "$SCRATCH/src.raw"
"$QEMU_IMG" create -q -f raw "$SCRATCH/src.raw" 504M
"$QEMU_IO" -f raw -c "write -P 0x5a 0 4M" "$SCRATCH/src.raw" >/dev/null
before=$(snapshot)
check "convert -n onto fat:rw: succeeds" "$QIMG" convert -n -O raw "$SCRATCH/src.raw" fat:rw:"$T/t"
expect_eq "fat:rw: writes left the tree unchanged" "$(snapshot)" "$before"
same_ro "rw: on a read-only open" info fat:rw:one
check_fail "a read-write open without rw: is refused" "$QIMG" bench -w -c 1 fat:"$T/t"

# ---- hostile trees: clear errors, bounded
errs() {   # NAME WANTED-TEXT ARGS...: fails with the text, in 5 s and 1 GiB
    local name=$1 want=$2; shift 2
    local out rc
    out=$(ulimit -v 1048576; timeout 5 "$QIMG" "$@" 2>&1); rc=$?
    case $rc:$out in
        1:*"$want"*) pass "$name";;
        *) fail "$name" "rc=$rc: $out";;
    esac
}
mktree h && echo a > "$T/h/f"
ln -s f "$T/h/inside"
check "a symlink to a file inside the tree is read" "$QIMG" info fat:"$T/h"
ln -s /etc/passwd "$T/h/out"
errs "symlink out of the tree" "points out of the directory" info fat:"$T/h"
rm "$T/h/out"; ln -s ../../x "$T/h/up"
errs "symlink up out of the tree" "points out of the directory" info fat:"$T/h"
rm "$T/h/up"; ln -s nothing "$T/h/dangling"
errs "dangling symlink" "could not follow the symbolic link" info fat:"$T/h"
rm "$T/h/dangling"; mkdir "$T/h/d"; ln -s d "$T/h/dlink"
errs "symlink to a directory" "points to a directory" info fat:"$T/h"
rm "$T/h/dlink"; mkfifo "$T/h/fifo"
errs "FIFO" "is not a regular file or a directory" info fat:"$T/h"
rm "$T/h/fifo"; truncate -s 5G "$T/h/huge"
errs "file over 4 GiB" "is too large for FAT" info fat:"$T/h"
rm "$T/h/huge"; echo x > "$T/h/a:b"
errs "name FAT cannot store" "cannot be stored on FAT" info fat:"$T/h"
rm "$T/h/a:b"; printf x > "$T/h/$(printf 'bad\377')"
errs "name that is not UTF-8" "is not valid UTF-8" info fat:"$T/h"
rm -f "$T/h/bad"*
errs "FAT32 floppy" "a floppy cannot hold FAT32" info fat:32:floppy:"$T/h"
mktree root && (cd "$T/root" && seq 1 300 | sed 's/^/a long file name /' | xargs -d '\n' touch)
errs "root directory full" "the root directory has too many entries" info fat:"$T/root"
check "the same root fits FAT32" "$QIMG" info fat:32:"$T/root"
# the bulk trees on tmpfs when there is one: creating 100k files on a busy
# disk costs seconds that measure nothing of ours
BULK=$(mktemp -d /dev/shm/qimg-vvfat.XXXXXX 2>/dev/null || mktemp -d "$SCRATCH/bulk.XXXXXX")
trap 'rm -rf "$SCRATCH" "$BULK"' EXIT
mkdir "$BULK/deep"
"$DEB_PYTHON" -c 'import os, sys
os.chdir(sys.argv[1])
for i in range(2100):
    os.mkdir("d"); os.chdir("d")' "$BULK/deep"
errs "deep nesting past PATH_MAX" "is too long" info fat:"$BULK/deep"
mkdir "$BULK/many"
"$DEB_PYTHON" - "$BULK/many" <<'EOF'
import os, sys
for d in range(50):
    p = f"{sys.argv[1]}/dir{d:02}"
    os.mkdir(p)
    for f in range(1340):
        os.close(os.open(f"{p}/file number {f}.txt", os.O_CREAT | os.O_WRONLY))
EOF
out=$( (ulimit -v 1048576; timeout 10 "$QIMG" info fat:"$BULK/many") 2>&1)
case $out in *"virtual size: 504 MiB"*) pass "67k entries in 50 directories";; *) fail "67k entries in 50 directories" "$out";; esac
"$DEB_PYTHON" -c 'import os, sys
os.mkdir(sys.argv[1])
for f in range(33000):
    os.close(os.open(f"{sys.argv[1]}/{f}", os.O_CREAT | os.O_WRONLY))' "$BULK/many/flat"
errs "100k entries, 33k in one directory: over FAT's 65536 slots" "has too many entries for FAT" info fat:32:"$BULK/many"
