#!/bin/bash
# Files inside images: qimg ls, cat, copy-out and copy-in on ext4 (made by
# mke2fs -d) and FAT (mkfs.fat + mcopy), in raw, qcow2 and a qcow2 overlay,
# on the whole disk and on MBR (sfdisk) and GPT (sgdisk) partitions.
# Everything qimg writes is checked by e2fsck -fn, debugfs, fsck.fat -n and
# mtools on a raw copy made by qemu-img convert.
. "$(dirname "$0")/lib.sh"
export MTOOLS_SKIP_CHECK=1 TZ=UTC
PATH=$PATH:/usr/sbin:/sbin

need_cmd mke2fs debugfs e2fsck mkfs.fat fsck.fat mcopy mdir sfdisk sgdisk python3   # scripts/install-deps

W=$SCRATCH/w
mkdir -p "$W"
cd "$W" || exit 1
q() { "$QIMG" "$@"; }
# qimg command with a time limit: hostile images must end quickly
qt() { timeout 30 "$QIMG" "$@"; }

# ------------------------------------------------------------ the trees
mk_tree() {   # the ext tree: everything ext can hold
    local t=$1
    mkdir -p "$t/dir/sub/deep" "$t/empty dir"
    echo hello > "$t/a.txt"
    printf 'line %d\n' $(seq 1 2000) > "$t/dir/lines"
    head -c 300000 /dev/urandom > "$t/dir/sub/random.bin"
    truncate -s 8M "$t/sparse"
    echo tail >> "$t/sparse"
    printf 'x' > "$t/dir/sub/deep/one"
    echo spaced > "$t/name with spaces"
    echo utf > "$t/$(printf 'caf\xc3\xa9')"
    ln -s a.txt "$t/link"
    ln -s dir/sub "$t/dirlink"
    ln -s /nonexistent/abs "$t/dangling"
    ln "$t/a.txt" "$t/dir/hardlink"
    chmod 4750 "$t/dir/lines"
    chmod 700 "$t/dir/sub"
    chmod 1777 "$t/empty dir"
    touch -h -d '2020-01-02 03:04:05' "$t/a.txt" "$t/link" "$t/dir/sub/random.bin"
    touch -d '2019-07-08 09:10:12' "$t/dir/sub" "$t/dir"
}
mk_fat_tree() {   # what FAT can hold: no links, even-second times
    local t=$1
    mkdir -p "$t/Dir/Sub" "$t/Empty"
    echo hello > "$t/a.txt"
    printf 'line %d\n' $(seq 1 2000) > "$t/Dir/lines.txt"
    head -c 300000 /dev/urandom > "$t/Dir/Sub/random.bin"
    echo long > "$t/A long file name.text"
    touch -d '2020-01-02 03:04:06' "$t/a.txt" "$t/Dir/Sub/random.bin" "$t/A long file name.text"
    touch -d '2021-05-06 07:08:10' "$t/Dir/lines.txt"
    touch -d '2019-07-08 09:10:12' "$t/Dir/Sub" "$t/Dir" "$t/Empty"
}
mk_tree tree
mk_fat_tree ftree
mkdir -p cin/sub
echo copied > cin/new.txt
ln cin/new.txt cin/sub/new-hard
ln -s ../new.txt cin/sub/rel-link
truncate -s 6M cin/holes
echo end >> cin/holes
head -c 1000000 /dev/urandom > cin/sub/data
chmod 640 cin/new.txt
touch -d '2018-02-03 04:05:06' cin/new.txt cin/sub/data
python3 -c 'import os; os.setxattr("cin/new.txt", "user.note", b"kept")' 2>/dev/null || true
mkdir -p fin/Sub
echo copied > fin/new.txt
head -c 200000 /dev/urandom > fin/Sub/data.bin
touch -d '2018-02-03 04:05:06' fin/new.txt fin/Sub/data.bin fin/Sub

check "mke2fs -d" mke2fs -q -F -t ext4 -d tree ext.raw 24M
rm -f fat.raw
check "mkfs.fat" mkfs.fat -C fat.raw 24576
check "mcopy -s" mcopy -s -m -i fat.raw ftree/* ::/

# disks with a partition table: ext on MBR partition 1, FAT on GPT partition 1
truncate -s 30M mbr.raw
echo 'start=2048, type=83' | sfdisk -q mbr.raw >/dev/null 2>&1
dd if=ext.raw of=mbr.raw bs=1M seek=1 conv=notrunc status=none
truncate -s 30M gpt.raw
sgdisk -n 1:0:0 -t 1:0700 gpt.raw >/dev/null 2>&1
dd if=fat.raw of=gpt.raw bs=1M seek=1 conv=notrunc status=none

# each as raw, qcow2 and a qcow2 overlay on a qcow2 base
for n in ext fat mbr gpt; do
    "$QEMU_IMG" convert -f raw -O qcow2 $n.raw $n.qcow2
    "$QEMU_IMG" convert -f raw -O qcow2 $n.raw $n-base.qcow2
    "$QEMU_IMG" create -q -f qcow2 -b $n-base.qcow2 -F qcow2 $n-ov.qcow2
done
variants() { echo "$1.raw:raw $1.qcow2:qcow2 $1-ov.qcow2:qcow2"; }
part_of() { case $1 in mbr|gpt) echo "--partition 1" ;; *) echo "" ;; esac; }
kind_of() { case $1 in ext|mbr) echo ext ;; *) echo fat ;; esac; }

# --------------------------------------------------------------- ls
# "name mode size" of every entry below / as debugfs sees it, and as qimg does
debugfs_listing() {   # image(raw) offset
    local img=$1 off=$2 f=$1
    if [ "$off" != 0 ]; then
        f=$img.part
        dd if="$img" of="$f" bs=1M skip=1 status=none
    fi
    python3 - "$f" <<'EOF'
import subprocess, sys
img = sys.argv[1]
out = []
def walk(path):
    r = subprocess.run(["debugfs", "-R", "ls -p " + (path or "/"), img],
                       capture_output=True)
    for line in r.stdout.decode("utf-8", "surrogateescape").splitlines():
        f = line.split("/")
        if len(f) < 7: continue
        name, mode, size = "/".join(f[5:-2]), int(f[2], 8), f[-2]
        if name in (".", "..") or name == "": continue
        if (mode & 0o170000) == 0o040000: size = "-"
        full = path + "/" + name
        out.append("%s %o %s" % (full, mode, size))
        if (mode & 0o170000) == 0o040000: walk(full)
walk("")
print("\n".join(sorted(out)))
EOF
}
qimg_listing() {   # args for qimg ls
    "$QIMG" ls -R --output=json "$@" | python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    size = "-" if e["type"] == "directory" else str(e["size"])
    out.append("%s %o %s" % (e["name"], e["mode"], size))
print("\n".join(sorted(out)))'
}
want=$(debugfs_listing ext.raw 0 2>/dev/null)
[ -n "$want" ] || fail "debugfs lists the ext tree"
for n in ext mbr; do
    for v in $(variants $n); do
        img=${v%:*} fmt=${v#*:}
        expect_eq "ls -R json = debugfs ($img)" "$(qimg_listing -f $fmt $(part_of $n) $img)" "$want"
    done
done
# FAT: names from mdir, sizes from the tree
want=$(mdir -/ -b -i fat.raw ::/ | sed 's|^::||; s|/$||' | sort)
for n in fat gpt; do
    for v in $(variants $n); do
        img=${v%:*} fmt=${v#*:}
        expect_eq "ls -R = mdir ($img)" "$(q ls -R -f $fmt $(part_of $n) $img | sort)" "$want"
    done
done
expect_eq "ls names of /" "$(q ls -f raw ext.raw | tr '\n' ' ')" \
    "a.txt $(printf 'caf\xc3\xa9') dangling dir dirlink empty dir link lost+found name with spaces sparse "
expect_eq "ls -l of a file" "$(q ls -l -f raw ext.raw /a.txt)" "-rw-r--r-- 2 0 0 6 2020-01-02 03:04 /a.txt"
expect_eq "ls -l of a symlink" "$(q ls -l -f raw ext.raw /link)" "lrwxrwxrwx 1 0 0 5 2020-01-02 03:04 /link -> a.txt"
expect_eq "ls -l setuid and sticky" "$(q ls -l -f raw ext.raw / | grep 'empty dir' | cut -c1-10) $(q ls -l -f raw ext.raw /dir | grep lines | cut -c1-10)" \
    "drwxrwxrwt -rwsr-x---"
expect_eq "ls through a symlinked directory" "$(q ls -f raw ext.raw /dirlink | tr '\n' ' ')" "deep random.bin "
expect_eq "ls with . and .." "$(q ls -f raw ext.raw dir/./sub/../sub/deep/.. | tr '\n' ' ')" "deep random.bin "
json=$(q ls --output=json -f raw ext.raw /dir/sub)
expect_eq "ls json keys" "$(printf '%s' "$json" | python3 -c 'import json,sys; e=json.load(sys.stdin)[1]; print(sorted(e.items()))')" \
    "[('gid', 0), ('mode', 33188), ('mtime', 1577934245), ('name', 'random.bin'), ('nlink', 1), ('size', 300000), ('type', 'file'), ('uid', 0)]"
expect_eq "ls json symlink target" "$(q ls --output=json -f raw ext.raw /link | python3 -c 'import json,sys; e=json.load(sys.stdin)[0]; print(e["type"], e["target"])')" \
    "symlink a.txt"

# --------------------------------------------------------------- cat
for n in ext mbr fat gpt; do
    for v in $(variants $n); do
        img=${v%:*} fmt=${v#*:} ok=1
        if [ "$(kind_of $n)" = ext ]; then t=tree; files="a.txt dir/lines dir/sub/random.bin sparse link dirlink/random.bin"
        else t=ftree; files="a.txt Dir/lines.txt Dir/Sub/random.bin"; fi
        for f in $files; do
            q cat -f $fmt $(part_of $n) $img "/$f" | cmp -s - "$t/$f" || { ok=0; echo "    cat $f differs"; }
        done
        [ $ok = 1 ] && pass "cat = the files ($img)" || fail "cat = the files ($img)"
    done
done

# ----------------------------------------------------------- copy-out
same_tree() {   # name, tree, copy: content, symlink targets, modes, mtimes
    local name=$1 a=$2 b=$3 modes=${4:-yes}
    if ! diff -r --no-dereference "$a" "$b" >/dev/null 2>&1; then
        fail "$name: content" "$(diff -r --no-dereference "$a" "$b" 2>&1 | head -5)"
        return
    fi
    # modes=yes: modes, times, link counts; rdump: modes and times of all but
    # symlinks (debugfs rdump keeps neither hard links nor symlink times);
    # no: times only (FAT)
    local fa fb fmt='%n %Y' skip=()
    [ "$modes" = yes ] && fmt='%n %a %Y %h'
    [ "$modes" = rdump ] && fmt='%n %a %Y' && skip=(! -type l)
    fa=$(cd "$a" && find . -mindepth 1 "${skip[@]}" -print0 | sort -z | xargs -0 stat -c "$fmt")
    fb=$(cd "$b" && find . -mindepth 1 "${skip[@]}" -print0 | sort -z | xargs -0 stat -c "$fmt")
    expect_eq "$name: modes and times" "$fb" "$fa"
}
for n in ext mbr fat gpt; do
    for v in $(variants $n); do
        img=${v%:*} fmt=${v#*:}
        rm -rf out && mkdir out
        if ! q copy-out -f $fmt $(part_of $n) $img / out; then
            fail "copy-out / ($img)"
            continue
        fi
        rm -rf out/lost+found
        if [ "$(kind_of $n)" = ext ]; then
            same_tree "copy-out / ($img)" tree out
            blocks=$(stat -c %b out/sparse)
            [ "$blocks" -le 64 ] && pass "copy-out keeps sparse files sparse ($img)" ||
                fail "copy-out keeps sparse files sparse ($img)" "$blocks blocks"
        else
            same_tree "copy-out / ($img)" ftree out no
        fi
    done
done
rm -rf out && mkdir out
check "copy-out of several paths" q copy-out -f qcow2 ext-ov.qcow2 /dir/sub /a.txt /dirlink out
expect_eq "copy-out of several paths: names" "$(ls out | tr '\n' ' ')" "a.txt dirlink sub "
cmp -s out/sub/random.bin tree/dir/sub/random.bin && pass "copy-out of a subdirectory" || fail "copy-out of a subdirectory"
check_fail "copy-out into a missing directory" q copy-out -f raw ext.raw /a.txt nowhere
# a symlink in the image never leads copy-out outside the local directory
mkdir -p out2/victim && ln -s ../victim out2/escape
q copy-out -f raw ext.raw /dirlink out2/escape >/dev/null 2>&1
[ -z "$(ls out2/victim)" ] && pass "copy-out writes through no local symlink" || fail "copy-out writes through no local symlink"

# ------------------------------------------------------------ copy-in
ext_verify() {   # name, image(qcow2 or raw), fmt, offset(MiB): fsck clean and content back
    local name=$1 img=$2 fmt=$3 off=$4
    "$QEMU_IMG" convert -f "$fmt" -O raw "$img" check.raw
    if [ "$off" != 0 ]; then dd if=check.raw of=check.fs bs=1M skip="$off" status=none; else mv check.raw check.fs; fi
    check "$name: e2fsck -fn clean" e2fsck -fn check.fs
    rm -rf back && mkdir back
    debugfs -R "rdump /dir/cin back" check.fs >/dev/null 2>&1
    same_tree "$name: debugfs rdump" cin back/cin rdump
    local i1 i2
    i1=$(debugfs -R "ls -l /dir/cin" check.fs 2>/dev/null | awk '$NF == "new.txt" {print $1}')
    i2=$(debugfs -R "ls -l /dir/cin/sub" check.fs 2>/dev/null | awk '$NF == "new-hard" {print $1}')
    [ -n "$i1" ] && [ "$i1" = "$i2" ] && pass "$name: hard link kept" || fail "$name: hard link kept" "$i1 $i2"
    x=$(debugfs -R "stat /dir/cin/sub/rel-link" check.fs 2>/dev/null | grep -c 'Fast link dest: "../new.txt"')
    expect_eq "$name: symlink target" "$x" 1
    local x
    x=$(debugfs -R "ea_get /dir/cin/new.txt user.note" check.fs 2>/dev/null)
    case "$x" in *kept*) pass "$name: xattr" ;; *) fail "$name: xattr" "$x" ;; esac
    x=$(debugfs -R "stat /dir/cin/holes" check.fs 2>/dev/null | sed -n 's/.*Blockcount: \([0-9]*\).*/\1/p')
    [ "${x:-999}" -le 64 ] && pass "$name: sparse file stays sparse" || fail "$name: sparse file stays sparse" "blockcount $x"
}
fat_verify() {
    local name=$1 img=$2 fmt=$3 off=$4
    "$QEMU_IMG" convert -f "$fmt" -O raw "$img" check.raw
    if [ "$off" != 0 ]; then dd if=check.raw of=check.fs bs=1M skip="$off" status=none; else mv check.raw check.fs; fi
    check "$name: fsck.fat -n clean" fsck.fat -n check.fs
    rm -rf back && mkdir back
    mcopy -s -m -i check.fs ::/Dir/fin back/ >/dev/null 2>&1
    same_tree "$name: mcopy" fin back/fin no
}
for n in ext mbr fat gpt; do
    off=0; [ -n "$(part_of $n)" ] && off=1
    for v in $(variants $n); do
        img=${v%:*} fmt=${v#*:}
        base_sum=$(sha $n-base.qcow2)
        if [ "$(kind_of $n)" = ext ]; then
            check "copy-in ($img)" q copy-in -f $fmt $(part_of $n) $img cin /dir
            ext_verify "copy-in ($img)" $img $fmt $off
        else
            check "copy-in ($img)" q copy-in -f $fmt $(part_of $n) $img fin /Dir
            fat_verify "copy-in ($img)" $img $fmt $off
        fi
        if [ "$img" = $n-ov.qcow2 ]; then
            expect_eq "copy-in leaves the base untouched ($n)" "$(sha $n-base.qcow2)" "$base_sum"
            check "qemu-img check of the overlay ($n)" "$QEMU_IMG" check -q $img
        fi
    done
done
# again into the same place: files replaced, directories merged
echo changed > cin/new.txt
check "copy-in again replaces files" q copy-in -f raw ext.raw cin /dir
expect_eq "copy-in again: new content" "$(q cat -f raw ext.raw /dir/cin/new.txt)" "changed"
expect_eq "copy-in again: hard link to the new file" "$(q cat -f raw ext.raw /dir/cin/sub/new-hard)" "changed"
check "copy-in again: e2fsck -fn" e2fsck -fn ext.raw
check_fail "copy-in onto a file path" q copy-in -f raw ext.raw cin /a.txt
check_fail "copy-in with -U" q copy-in -U -f raw ext.raw cin /dir

# dirty filesystems are refused and left alone
cp ext.raw dirty-ext.raw
debugfs -w -R "ssv state 0" dirty-ext.raw >/dev/null 2>&1
before=$(sha dirty-ext.raw)
out=$(q copy-in -f raw dirty-ext.raw cin / 2>&1); rc=$?
expect_eq "dirty ext4: copy-in refused" "$rc" 1
case "$out" in *"not clean"*) pass "dirty ext4: message" ;; *) fail "dirty ext4: message" "$out" ;; esac
expect_eq "dirty ext4: image unchanged" "$(sha dirty-ext.raw)" "$before"
check "dirty ext4: still readable" q cat -f raw dirty-ext.raw /a.txt
cp fat.raw dirty-fat.raw
b=$(od -An -tu1 -j37 -N1 dirty-fat.raw | tr -d ' ')
printf "\\$(printf %o $((b | 1)))" | dd of=dirty-fat.raw bs=1 seek=37 conv=notrunc status=none
before=$(sha dirty-fat.raw)
out=$(q copy-in -f raw dirty-fat.raw fin / 2>&1); rc=$?
expect_eq "dirty FAT: copy-in refused" "$rc" 1
case "$out" in *dirty*|*"not cleanly"*) pass "dirty FAT: message" ;; *) fail "dirty FAT: message" "$out" ;; esac
expect_eq "dirty FAT: image unchanged" "$(sha dirty-fat.raw)" "$before"

# a copy that runs out of space stops with an error and leaves a clean
# filesystem without the half-copied file
mkdir -p full && echo small > full/a && head -c 12000000 /dev/urandom > full/z
mke2fs -q -F -t ext4 full-ext.raw 8M >/dev/null 2>&1
out=$(q copy-in -f raw full-ext.raw full / 2>&1); rc=$?
expect_eq "ext full: copy-in fails" "$rc" 1
check "ext full: e2fsck -fn clean" e2fsck -fn full-ext.raw
expect_eq "ext full: what was copied stays, the partial file does not" \
    "$(q ls -f raw full-ext.raw /full | tr '\n' ' ')" "a "
rm -f full-fat.raw && mkfs.fat -C full-fat.raw 8192 >/dev/null
out=$(q copy-in -f raw full-fat.raw full / 2>&1); rc=$?
expect_eq "FAT full: copy-in fails" "$rc" 1
check "FAT full: fsck.fat -n clean" fsck.fat -n full-fat.raw
expect_eq "FAT full: what was copied stays, the partial file does not" \
    "$(mdir -/ -b -i full-fat.raw ::/ | tr '\n' ' ')" "::/full/ ::/full/a "

# --------------------------------------------------------------- errors
err_is() {   # name, expected message, qimg args...
    local name=$1 want=$2 out rc; shift 2
    out=$(qt "$@" 2>&1 >/dev/null); rc=$?
    if [ $rc = 1 ] && [ "$out" = "$want" ]; then pass "$name"; else fail "$name" "rc $rc: $out" "expected: $want"; fi
}
err_is "missing path" "qimg: '/nope/x': No such file or directory" cat -f raw ext.raw /nope/x
err_is "path through a file" "qimg: '/a.txt/x': Not a directory" ls -f raw ext.raw /a.txt/x
err_is "cat of a directory" "qimg: '/dir': Is a directory" cat -f raw ext.raw /dir
err_is "no such partition" "qimg: mbr.raw: partition 2 not found" ls -f raw --partition 2 mbr.raw
err_is "no partition table" "qimg: ext.raw: no partition table (no MBR or GPT found)" ls -f raw --partition 1 ext.raw
err_is "a partitioned disk without --partition" \
    "qimg: mbr.raw: no ext2/3/4 or FAT filesystem found (the disk has a partition table: choose a partition, --partition N)" \
    ls -f raw mbr.raw
truncate -s 1M zero.raw
err_is "not a filesystem" "qimg: zero.raw: no ext2/3/4 or FAT filesystem found" ls -f raw zero.raw
err_is "bad partition number" "qimg: Invalid partition number 'x'" ls -f raw --partition x mbr.raw
err_is "not enough arguments" "qimg: Expecting an image file name
Try 'qimg --help' for more information" ls

# hostile partition tables
cp gpt.raw badcrc.raw
printf 'X' | dd of=badcrc.raw bs=1 seek=$((512 + 60)) conv=notrunc status=none
check "GPT with a bad primary header: the backup is used" q ls -f raw --partition 1 badcrc.raw
last=$(( $(stat -c %s badcrc.raw) - 512 ))
printf 'X' | dd of=badcrc.raw bs=1 seek=$((last + 60)) conv=notrunc status=none
err_is "GPT with bad CRCs" "qimg: badcrc.raw: GPT header at sector 1: bad CRC (and no valid backup GPT)" \
    ls -f raw --partition 1 badcrc.raw
cp gpt.raw huge.raw
python3 - huge.raw <<'EOF'
import sys, zlib, struct
f = open(sys.argv[1], "r+b")
size = f.seek(0, 2)
for lba in (1, size // 512 - 1):
    f.seek(lba * 512); h = bytearray(f.read(92))
    h[80:84] = struct.pack("<I", 0x40000000)
    h[16:20] = b"\0\0\0\0"
    h[16:20] = struct.pack("<I", zlib.crc32(bytes(h)))
    f.seek(lba * 512); f.write(h)
EOF
err_is "GPT with a huge entry count" \
    "qimg: huge.raw: GPT header at sector 1: 1073741824 partition entries of 128 bytes are too many (and no valid backup GPT)" \
    ls -f raw --partition 1 huge.raw
truncate -s 8M loop.raw
printf '2048,4096,83\n8192,,5\n10240,2048,83\n14336,2048,83\n' | sfdisk -q loop.raw >/dev/null 2>&1
python3 - loop.raw <<'EOF'
import sys, struct
f = open(sys.argv[1], "r+b")
f.seek(446 + 16 + 8); ext = struct.unpack("<I", f.read(4))[0]
f.seek(ext * 512 + 446 + 16 + 8); second = ext + struct.unpack("<I", f.read(4))[0]
f.seek(second * 512 + 446 + 16); f.write(bytes([0, 0, 0, 0, 5, 0, 0, 0]) + struct.pack("<II", 0, 100))
EOF
err_is "extended partition loop" \
    "qimg: loop.raw: the chain of logical partitions loops (sector 8192 seen twice)" \
    ls -f raw --partition 7 loop.raw

# a directory loop (a directory entry naming an ancestor)
cp ext.raw dloop.raw
debugfs -w -R "ln /dir /dir/sub/deep/up" dloop.raw >/dev/null 2>&1
out=$(qt ls -R -f raw dloop.raw / 2>&1 >/dev/null); rc=$?
case "$rc:$out" in 1:*loop*) pass "directory loop: ls -R errors" ;; *) fail "directory loop: ls -R errors" "rc $rc: $out" ;; esac
rm -rf out && mkdir out
out=$(qt copy-out -f raw dloop.raw /dir out 2>&1); rc=$?
case "$rc:$out" in 1:*loop*) pass "directory loop: copy-out errors" ;; *) fail "directory loop: copy-out errors" "rc $rc: $out" ;; esac
# symlink loops are cut at 40
cp ext.raw sloop.raw
debugfs -w -R "symlink /l1 /l2" sloop.raw >/dev/null 2>&1
debugfs -w -R "symlink /l2 /l1" sloop.raw >/dev/null 2>&1
err_is "symlink loop" "qimg: '/l1/x': Too many levels of symbolic links" cat -f raw sloop.raw /l1/x
# a FAT subdirectory whose entry points back at its parent's cluster
rm -f floop.raw && mkfs.fat -C floop.raw 8192 >/dev/null && mmd -i floop.raw ::/DIR ::/DIR/SUB
python3 - floop.raw <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b"); b = f.read(512)
bps, spc, res, nf = struct.unpack("<H", b[11:13])[0], b[13], struct.unpack("<H", b[14:16])[0], b[16]
roots, fsz = struct.unpack("<H", b[17:19])[0], struct.unpack("<H", b[22:24])[0]
rootoff = (res + nf * fsz) * bps; dataoff = rootoff + roots * 32
f.seek(rootoff); root = f.read(roots * 32)
dircl = [struct.unpack("<H", root[i + 26:i + 28])[0] for i in range(0, len(root), 32) if root[i:i + 11] == b"DIR        "][0]
off = dataoff + (dircl - 2) * spc * bps
f.seek(off); d = f.read(spc * bps)
for i in range(0, len(d), 32):
    if d[i:i + 11] == b"SUB        ":
        f.seek(off + i + 26); f.write(struct.pack("<H", dircl))
PY
out=$(qt ls -R -f raw floop.raw / 2>&1 >/dev/null); rc=$?
case "$rc:$out" in 1:*loop*) pass "FAT directory loop: ls -R errors" ;; *) fail "FAT directory loop: ls -R errors" "rc $rc: $out" ;; esac
rm -rf out && mkdir out
out=$(qt copy-out -f raw floop.raw / out 2>&1); rc=$?
case "$rc:$out" in 1:*loop*) pass "FAT directory loop: copy-out errors" ;; *) fail "FAT directory loop: copy-out errors" "rc $rc: $out" ;; esac
long=$(printf 'n%.0s' $(seq 1 300))
err_is "a name longer than 255 bytes" "qimg: '/$long': a name in the path is too long" cat -f raw ext.raw "/$long"
err_is "copy-in into a missing image" "qimg: Could not open 'nofile.raw': Could not open 'nofile.raw': No such file or directory" \
    copy-in -f raw nofile.raw cin /
# copy-out without privileges: owners are the caller's, the rest as before
if [ "$(id -u)" != 0 ]; then
    SKIP_WHAT="copy-out as an unprivileged user" skip "needs root"
elif has_cmd "copy-out as an unprivileged user" setpriv; then
    chmod 711 "$SCRATCH" "$W"
    rm -rf nobody && mkdir nobody && chmod 777 nobody
    cp ext-base.qcow2 nb.qcow2 && chmod 644 nb.qcow2
    if setpriv --reuid=65534 --regid=65534 --clear-groups "$QIMG" copy-out -f qcow2 nb.qcow2 / nobody; then
        rm -rf nobody/lost+found
        same_tree "copy-out as an unprivileged user" tree nobody
        expect_eq "copy-out as an unprivileged user: owner" "$(stat -c %u nobody/a.txt)" 65534
    else
        fail "copy-out as an unprivileged user"
    fi
fi
