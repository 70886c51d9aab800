#!/bin/bash
# create --from: images holding a new ext2/3/4 or FAT filesystem filled from
# a directory or a tar archive, checked by the independent tools only:
# qemu-img check and convert -O raw, e2fsck -fn / fsck.fat -n on the
# filesystem, sfdisk --dump / sgdisk -p on the partition table, and
# debugfs rdump / mcopy -s to get the tree back and compare it with the
# source (names, contents, modes, owners, link targets, mtimes; FAT: names,
# contents and mtimes at 2 s).
. "$(dirname "$0")/lib.sh"

export TZ=UTC MTOOLS_SKIP_CHECK=1
Q=$QIMG
ROOT=$([ "$(id -u)" = 0 ] && echo 1 || echo 0)
# e2fsprogs, mtools, dosfstools, fdisk and gdisk check what we make
need_cmd debugfs e2fsck mcopy fsck.fat sfdisk sgdisk

# ------------------------------------------------------------- the trees

# make_tree DIR BIG: the test tree; BIG = size of the big file in MiB
make_tree() {
    local t=$1 big=$2
    mkdir -p "$t/d1/d2/d3" "$t/sticky" "$t/empty dir"
    echo "deep file" > "$t/d1/d2/d3/file.txt"
    printf 'hello\n' > "$t/hello.txt"
    head -c "$((big << 20))" "$SCRATCH/random" > "$t/big.bin"
    # 1 GiB apparent, three 4 KiB data blocks
    truncate -s 1G "$t/sparse.img"
    for off in 0 131072 262143; do
        printf 'data at block %s' "$off" | dd of="$t/sparse.img" bs=4096 seek="$off" conv=notrunc status=none
    done
    ln -s d1/d2/d3/file.txt "$t/rel-link"
    ln -s /etc/hostname "$t/abs-link"
    ln -s nowhere/at/all "$t/dangling"
    ln "$t/hello.txt" "$t/hard1"
    ln "$t/hello.txt" "$t/d1/hard2"
    echo spaces > "$t/name with spaces"
    echo utf8 > "$t/ünïcødé-名前.txt"
    echo long > "$t/$(printf 'L%.0s' $(seq 255))"
    echo secret > "$t/private"; chmod 0600 "$t/private"
    printf '#!/bin/sh\necho hi\n' > "$t/script.sh"; chmod 0755 "$t/script.sh"
    echo suid > "$t/suid"; chmod 4755 "$t/suid"
    chmod 1777 "$t/sticky"
    mkfifo "$t/fifo"
    python3 -c "import os, sys; os.setxattr(sys.argv[1], 'user.test', b'hello xattr')" "$t/hello.txt"
    if [ "$ROOT" = 1 ]; then chown 1234:5678 "$t/private"; fi
    # times last, deepest first
    find "$t" -depth -not -type l -print0 | xargs -0 touch -h -d '2021-03-04 05:06:07'
    touch -h -d '2019-01-02 03:04:05' "$t/rel-link"
    touch -d '2020-02-02 02:02:03' "$t/hello.txt" "$t/d1/d2"
}

# A listing of a tree: one line per entry (lost+found left out).
# full: type, mode, owner (root only), size, mtime, content digest, link target
# fat: files and directories only; mtime of files at 2 s resolution
cat > "$SCRATCH/manifest.py" <<'EOF'
import hashlib, os, stat, sys
root, kind, owners = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
for dp, dns, fns in os.walk(root):
    dns.sort()
    for n in sorted(dns + fns):
        p = os.path.join(dp, n)
        rel = os.path.relpath(p, root)
        if rel == "lost+found":
            continue
        st = os.lstat(p)
        t = stat.S_IFMT(st.st_mode)
        if kind == "fat":
            if t not in (stat.S_IFREG, stat.S_IFDIR):
                continue
            line = [rel, "d" if t == stat.S_IFDIR else "f"]
            if t == stat.S_IFREG:
                line += [str(st.st_size), str(int(st.st_mtime) // 2 * 2),
                         hashlib.md5(open(p, "rb").read()).hexdigest()]
        else:
            # rdump drops setuid/setgid/sticky: those are checked by debugfs stat
            line = [rel, "%o" % (st.st_mode & ~0o7000)]
            if owners:
                line.append("%d:%d" % (st.st_uid, st.st_gid))
            if t != stat.S_IFLNK:
                line.append(str(int(st.st_mtime)))
            if t == stat.S_IFREG:
                h = hashlib.md5()
                with open(p, "rb") as f:
                    for b in iter(lambda: f.read(1 << 20), b""):
                        h.update(b)
                line += [str(st.st_size), h.hexdigest()]
            elif t == stat.S_IFLNK:
                line.append("-> " + os.readlink(p))
        print(" ".join(line))
EOF
manifest() { python3 "$SCRATCH/manifest.py" "$@"; }

head -c 64M /dev/urandom > "$SCRATCH/random"
head -c 36M "$SCRATCH/random" >> "$SCRATCH/random"     # 100 MiB
BIG=$SCRATCH/big SMALL=$SCRATCH/small
make_tree "$BIG" 100
make_tree "$SMALL" 1
# FAT has no sparse files: its trees leave the 1 GiB file out (a copy of
# the trees made of hard links: each source inode still has one name per tree)
FATSMALL=$SCRATCH/fatsmall FATBIG=$SCRATCH/fatbig
cp -al "$SMALL" "$FATSMALL" && rm "$FATSMALL/sparse.img"
cp -al "$BIG" "$FATBIG" && rm "$FATBIG/sparse.img"

# ------------------------------------------------------------- checking

# The filesystem of a built image as a raw file: $SCRATCH/fs.raw
# (converted by qemu-img, partition cut out by its sfdisk offsets).
# extract NAME IMG FMT PART
extract() {
    local name=$1 img=$2 fmt=$3 part=$4
    rm -f "$SCRATCH/disk.raw" "$SCRATCH/fs.raw"
    if [ "$fmt" = qcow2 ]; then
        check "$name: qemu-img check" "$QEMU_IMG" check -q "$img"
    fi
    "$QEMU_IMG" convert -f "$fmt" -O raw "$img" "$SCRATCH/disk.raw" || { fail "$name: convert -O raw"; return 1; }
    if [ "$part" = none ]; then
        mv "$SCRATCH/disk.raw" "$SCRATCH/fs.raw"
        return 0
    fi
    local dump start size
    dump=$(sfdisk --dump "$SCRATCH/disk.raw" 2>&1)
    case "$part" in
        mbr) expected="label: dos" ;;
        gpt) expected="label: gpt" ;;
    esac
    if grep -q "$expected" <<<"$dump" && grep -q 'disk.raw1 : start=' <<<"$dump"; then
        pass "$name: sfdisk --dump shows a $part partition"
    else
        fail "$name: sfdisk --dump shows a $part partition" "$dump"
    fi
    if [ "$part" = gpt ]; then
        if sgdisk -v "$SCRATCH/disk.raw" 2>&1 | grep -q "No problems found" &&
           sgdisk -p "$SCRATCH/disk.raw" 2>&1 | grep -qE '^ +1 +2048 '; then
            pass "$name: sgdisk -v and -p"
        else
            fail "$name: sgdisk -v and -p" "$(sgdisk -v "$SCRATCH/disk.raw" 2>&1; sgdisk -p "$SCRATCH/disk.raw" 2>&1)"
        fi
    fi
    start=$(sed -n 's/.*disk.raw1 : start= *\([0-9]*\),.*/\1/p' <<<"$dump")
    size=$(sed -n 's/.*disk.raw1 : .*size= *\([0-9]*\),.*/\1/p' <<<"$dump")
    dd if="$SCRATCH/disk.raw" of="$SCRATCH/fs.raw" bs=512 skip="$start" count="$size" conv=sparse status=none
    rm -f "$SCRATCH/disk.raw"
    # an MBR names the FAT type of its partition (FAT12 0x01, FAT16 LBA 0x0e, FAT32 LBA 0x0c)
    local bits want type
    # the type string of the boot sector: at 54 (FAT12/16) or 82 (FAT32)
    bits=$( (dd if="$SCRATCH/fs.raw" bs=1 skip=54 count=5 status=none
             dd if="$SCRATCH/fs.raw" bs=1 skip=82 count=5 status=none) | grep -ao 'FAT[0-9][0-9]' | head -1)
    bits=${bits#FAT}
    if [ "$part" = mbr ] && [ -n "$bits" ]; then
        case $bits in 12) want=1 ;; 16) want=e ;; *) want=c ;; esac
        type=$(sed -n 's/.*disk.raw1 : .*type=\([0-9a-f]*\).*/\1/p' <<<"$dump")
        expect_eq "$name: MBR type for FAT$bits" "$type" "$want"
    fi
}

# verify_ext NAME IMG FMT PART SRC FSTYPE
verify_ext() {
    local name=$1 img=$2 fmt=$3 part=$4 src=$5 fstype=$6
    extract "$name" "$img" "$fmt" "$part" || return
    local out
    out=$(e2fsck -fn "$SCRATCH/fs.raw" 2>&1)
    if [ $? = 0 ]; then pass "$name: e2fsck -fn clean"; else fail "$name: e2fsck -fn clean" "$(tail -15 <<<"$out")"; fi
    local feats
    feats=$(dumpe2fs -h "$SCRATCH/fs.raw" 2>/dev/null | grep '^Filesystem features')
    case $fstype in
        ext4) grep -q extent <<<"$feats" ;;
        ext3) grep -q has_journal <<<"$feats" && ! grep -q extent <<<"$feats" ;;
        ext2) ! grep -q has_journal <<<"$feats" && ! grep -q extent <<<"$feats" ;;
    esac && pass "$name: $fstype features" || fail "$name: $fstype features" "$feats"
    rm -rf "$SCRATCH/out" && mkdir "$SCRATCH/out"
    debugfs -R "rdump / $SCRATCH/out" "$SCRATCH/fs.raw" >/dev/null 2>&1
    # rdump puts the root's entries straight into out/
    local a b
    a=$(manifest "$src" full "$ROOT" | grep -v -e '^fifo ')
    b=$(manifest "$SCRATCH/out" full "$ROOT")
    if [ "$a" = "$b" ]; then pass "$name: rdump gives the tree back"; else fail "$name: rdump gives the tree back" "$(diff <(echo "$a") <(echo "$b") | head -20)"; fi
    # what rdump does not show: the fifo, hard links, xattr, sparse allocation
    local ls
    ls=$(debugfs -R "stat /fifo" "$SCRATCH/fs.raw" 2>/dev/null | head -1)
    grep -q "Type: FIFO" <<<"$ls" && pass "$name: fifo" || fail "$name: fifo" "$ls"
    ls=$(debugfs -R "stat /hard1" "$SCRATCH/fs.raw" 2>/dev/null)
    grep -q "Links: 3" <<<"$ls" && pass "$name: hard links share one inode" || fail "$name: hard links share one inode" "$(head -3 <<<"$ls")"
    ls=$(debugfs -R "ea_get /hello.txt user.test" "$SCRATCH/fs.raw" 2>/dev/null)
    grep -q "hello xattr" <<<"$ls" && pass "$name: xattr" || fail "$name: xattr" "$ls"
    ls=$(debugfs -R "stat /suid" "$SCRATCH/fs.raw" 2>/dev/null | head -1; debugfs -R "stat /sticky" "$SCRATCH/fs.raw" 2>/dev/null | head -1)
    grep -q "Mode:  04755" <<<"$ls" && grep -q "Mode:  01777" <<<"$ls" && pass "$name: setuid and sticky bits" || fail "$name: setuid and sticky bits" "$ls"
    local blocks
    blocks=$(debugfs -R "stat /sparse.img" "$SCRATCH/fs.raw" 2>/dev/null | sed -n 's/.*Blockcount: \([0-9]*\).*/\1/p')
    if [ -n "$blocks" ] && [ "$blocks" -le 256 ]; then pass "$name: sparse file stays sparse"; else fail "$name: sparse file stays sparse" "blockcount '$blocks'"; fi
}

# verify_fat NAME IMG FMT PART SRC
verify_fat() {
    local name=$1 img=$2 fmt=$3 part=$4 src=$5
    extract "$name" "$img" "$fmt" "$part" || return
    local out
    out=$(fsck.fat -n "$SCRATCH/fs.raw" 2>&1)
    if [ $? = 0 ]; then pass "$name: fsck.fat -n clean"; else fail "$name: fsck.fat -n clean" "$(tail -15 <<<"$out")"; fi
    rm -rf "$SCRATCH/out" && mkdir "$SCRATCH/out"
    LC_ALL=C.UTF-8 mcopy -s -m -n -i "$SCRATCH/fs.raw" '::*' "$SCRATCH/out/" >/dev/null 2>&1
    local a b
    a=$(manifest "$src" fat 0)
    b=$(LC_ALL=C.UTF-8 manifest "$SCRATCH/out" fat 0)
    if [ "$a" = "$b" ]; then pass "$name: mcopy -s gives the tree back"; else fail "$name: mcopy -s gives the tree back" "$(diff <(echo "$a") <(echo "$b") | head -20)"; fi
}

# build NAME EXPECTED_RC ARGS...: run qimg create, keep its output
build() {
    local name=$1; shift
    "$Q" create "$@" >"$SCRATCH/build.out" 2>"$SCRATCH/build.err"
    local rc=$?
    if [ $rc = 0 ]; then pass "$name: built"; else fail "$name: built" "$(cat "$SCRATCH/build.err")"; fi
    return $rc
}

W=$SCRATCH/w
mkdir -p "$W"

# ------------------------------------------------------ the combinations

# ext4 qcow2, whole disk, the big tree
if build "ext4 qcow2" -f qcow2 --from "$BIG" "$W/a.qcow2"; then
    line=$(cat "$SCRATCH/build.out")
    case "$line" in
        "Creating '$W/a.qcow2' (qcow2, ext4, "*" MiB) from '$BIG'") pass "ext4 qcow2: says what it chose" ;;
        *) fail "ext4 qcow2: says what it chose" "$line" ;;
    esac
    vsize=$("$QEMU_IMG" info --output=json "$W/a.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    alloc=$(du -k "$W/a.qcow2" | cut -f1)
    # 1 GiB sparse + 100 MiB: the image holds ~100 MiB, the disk far less than 1 GiB
    if [ "$vsize" -lt $((400 << 20)) ] && [ "$alloc" -lt $((160 << 10)) ]; then
        pass "ext4 qcow2: small disk, sparse data not allocated"
    else
        fail "ext4 qcow2: small disk, sparse data not allocated" "virtual $vsize, file $alloc KiB"
    fi
    verify_ext "ext4 qcow2" "$W/a.qcow2" qcow2 none "$BIG" ext4
fi
rm -f "$W"/*

# vfat raw in an MBR partition, the big tree: symlinks and the fifo skipped
if build "vfat raw mbr" -f raw --fs vfat --partition mbr --from "$FATBIG" "$W/b.raw"; then
    if grep -q "skipped: fat[0-9]* cannot hold symbolic links" "$SCRATCH/build.err" &&
       grep -q "fifo' skipped" "$SCRATCH/build.err"; then
        pass "vfat raw mbr: warns about what FAT cannot hold"
    else
        fail "vfat raw mbr: warns about what FAT cannot hold" "$(cat "$SCRATCH/build.err")"
    fi
    verify_fat "vfat raw mbr" "$W/b.raw" raw mbr "$FATBIG"
fi
rm -f "$W"/*

if build "ext2 raw gpt" -f raw --fs ext2 --partition gpt --from "$SMALL" "$W/c.raw"; then
    verify_ext "ext2 raw gpt" "$W/c.raw" raw gpt "$SMALL" ext2
fi
rm -f "$W"/*

if build "ext3 qcow2 mbr" -f qcow2 --fs ext3 --partition mbr --label TESTLABEL --from "$SMALL" "$W/d.qcow2"; then
    verify_ext "ext3 qcow2 mbr" "$W/d.qcow2" qcow2 mbr "$SMALL" ext3
    lbl=$(dumpe2fs -h "$SCRATCH/fs.raw" 2>/dev/null | sed -n 's/^Filesystem volume name: *//p')
    expect_eq "ext3 qcow2 mbr: label" "$lbl" TESTLABEL
fi
rm -f "$W"/*

if build "ext4 raw gpt +extra" -f raw --partition gpt --size +64M --from "$SMALL" "$W/e.raw"; then
    verify_ext "ext4 raw gpt +extra" "$W/e.raw" raw gpt "$SMALL" ext4
    free=$(dumpe2fs -h "$SCRATCH/fs.raw" 2>/dev/null | sed -n 's/^Free blocks: *//p')
    bs=$(dumpe2fs -h "$SCRATCH/fs.raw" 2>/dev/null | sed -n 's/^Block size: *//p')
    if [ -n "$free" ] && [ $((free * bs)) -ge $((60 << 20)) ]; then pass "ext4 raw gpt +extra: the extra space is free"; else fail "ext4 raw gpt +extra: the extra space is free" "free $free x $bs"; fi
fi
rm -f "$W"/*

if build "vfat qcow2 gpt" -f qcow2 --fs vfat --partition gpt --size 64M --label QIMGTEST --from "$FATSMALL" "$W/f.qcow2"; then
    vsize=$("$QEMU_IMG" info --output=json "$W/f.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    expect_eq "vfat qcow2 gpt: the size given" "$vsize" $((64 << 20))
    verify_fat "vfat qcow2 gpt" "$W/f.qcow2" qcow2 gpt "$FATSMALL"
    lbl=$(MTOOLS_SKIP_CHECK=1 mlabel -s -i "$SCRATCH/fs.raw" :: 2>&1)
    case "$lbl" in *QIMGTEST*) pass "vfat qcow2 gpt: label" ;; *) fail "vfat qcow2 gpt: label" "$lbl" ;; esac
fi
rm -f "$W"/*

# vfat: a big file with many names needs the room of all its copies
mkdir -p "$SCRATCH/links"
head -c 8M "$SCRATCH/random" > "$SCRATCH/links/a"
for i in 1 2 3 4 5 6; do ln "$SCRATCH/links/a" "$SCRATCH/links/l$i"; done
if build "vfat hard links as copies" -f raw --fs vfat --from "$SCRATCH/links" "$W/l.raw"; then
    grep -q "6 hard links stored as separate copies" "$SCRATCH/build.err" &&
        pass "vfat hard links as copies: warned" || fail "vfat hard links as copies: warned" "$(cat "$SCRATCH/build.err")"
    verify_fat "vfat hard links as copies" "$W/l.raw" raw none "$SCRATCH/links"
fi
rm -f "$W"/*

# ------------------------------------------------------------------ tar

tar --sort=name --xattrs -C "$SMALL" -cf "$SCRATCH/small.tar" .
if build "tar file ext4 qcow2" -f qcow2 --from "$SCRATCH/small.tar" "$W/t.qcow2"; then
    verify_ext "tar file ext4 qcow2" "$W/t.qcow2" qcow2 none "$SMALL" ext4
fi
rm -f "$W"/*
if "$Q" create -f raw --fs ext2 --from - "$W/t.raw" < <(cat "$SCRATCH/small.tar" | gzip -1) \
        >"$SCRATCH/build.out" 2>"$SCRATCH/build.err"; then
    pass "tar.gz on stdin ext2 raw: built"
    verify_ext "tar.gz on stdin ext2 raw" "$W/t.raw" raw none "$SMALL" ext2
else
    fail "tar.gz on stdin ext2 raw: built" "$(cat "$SCRATCH/build.err")"
fi
rm -f "$W"/*

# a tar whose members come in any order, parents missing
mkdir -p "$SCRATCH/shuf/a/b"; echo x > "$SCRATCH/shuf/a/b/f"; echo y > "$SCRATCH/shuf/top"
touch -d '2022-01-01 00:00:00' "$SCRATCH/shuf/a/b/f" "$SCRATCH/shuf/a/b" "$SCRATCH/shuf/a"
tar -C "$SCRATCH/shuf" -cf "$SCRATCH/shuf.tar" ./a/b/f ./top ./a/b ./a
if build "tar out of order" -f qcow2 --from "$SCRATCH/shuf.tar" "$W/s.qcow2"; then
    extract "tar out of order" "$W/s.qcow2" qcow2 none &&
    check "tar out of order: e2fsck -fn" e2fsck -fn "$SCRATCH/fs.raw"
    m=$(debugfs -R "stat /a/b" "$SCRATCH/fs.raw" 2>/dev/null | sed -n 's/^ *mtime: .*-- \(.*\)/\1/p')
    expect_eq "tar out of order: directory time applied after its content" "$m" "Sat Jan  1 00:00:00 2022"
fi
rm -f "$W"/*

# devices (as root), sockets, an ext lost+found in the source, progress
mkdir -p "$SCRATCH/dev/lost+found"
echo found > "$SCRATCH/dev/lost+found/x"
python3 -c "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])" "$SCRATCH/dev/sock"
if [ "$ROOT" = 1 ]; then mknod "$SCRATCH/dev/null" c 1 3; mknod "$SCRATCH/dev/loop" b 7 0; fi
if "$Q" create -p -f qcow2 --from "$SCRATCH/dev" "$W/n.qcow2" >"$SCRATCH/build.out" 2>"$SCRATCH/build.err"; then
    pass "special files: built"
    grep -q "(100.00/100%)" "$SCRATCH/build.out" && pass "-p prints progress" || fail "-p prints progress" "$(od -c "$SCRATCH/build.out" | tail -3)"
    extract "special files" "$W/n.qcow2" qcow2 none
    check "special files: e2fsck -fn" e2fsck -fn "$SCRATCH/fs.raw"
    l=$(debugfs -R "ls -l /" "$SCRATCH/fs.raw" 2>/dev/null)
    grep -q '140755 .* sock$' <<<"$l" && pass "special files: socket" || fail "special files: socket" "$l"
    if [ "$ROOT" = 1 ]; then
        s=$(debugfs -R "stat /null" "$SCRATCH/fs.raw" 2>/dev/null; debugfs -R "stat /loop" "$SCRATCH/fs.raw" 2>/dev/null)
        grep -q "Type: character special" <<<"$s" && grep -q "Device major/minor number: 01:03" <<<"$s" &&
            grep -q "Type: block special" <<<"$s" && pass "special files: devices" || fail "special files: devices" "$s"
    fi
    c=$(debugfs -R "cat /lost+found/x" "$SCRATCH/fs.raw" 2>/dev/null)
    expect_eq "special files: lost+found of the source merged" "$c" found
else
    fail "special files: built" "$(cat "$SCRATCH/build.err")"
fi
if "$Q" create -q -f raw --fs vfat --from "$SCRATCH/dev" "$W/n.raw" 2>"$SCRATCH/build.err"; then
    grep -q "'$SCRATCH/dev/sock' skipped: fat[0-9]* cannot hold sockets" "$SCRATCH/build.err" &&
        pass "vfat: sockets skipped with a warning" || fail "vfat: sockets skipped with a warning" "$(cat "$SCRATCH/build.err")"
else
    fail "vfat: special files" "$(cat "$SCRATCH/build.err")"
fi
rm -f "$W"/*

# ---------------------------------------------------------- reproducible

for fmt in qcow2 raw; do
    part=$([ $fmt = raw ] && echo gpt || echo none)
    SOURCE_DATE_EPOCH=1600000000 "$Q" create -q -f $fmt --partition $part --from "$SMALL" "$W/r1.$fmt" &&
    sleep 1 &&
    SOURCE_DATE_EPOCH=1600000000 "$Q" create -q -f $fmt --partition $part --from "$SMALL" "$W/r2.$fmt"
    check "reproducible $fmt ($part): byte-identical" cmp "$W/r1.$fmt" "$W/r2.$fmt"
done
"$Q" create -q -f raw --fs vfat --partition gpt --reproducible --from "$FATSMALL" "$W/v1.raw" 2>/dev/null &&
    sleep 1 && "$Q" create -q -f raw --fs vfat --partition gpt --reproducible --from "$FATSMALL" "$W/v2.raw" 2>/dev/null
check "reproducible vfat (--reproducible): byte-identical" cmp "$W/v1.raw" "$W/v2.raw"
# times later than SOURCE_DATE_EPOCH are clamped to it
SOURCE_DATE_EPOCH=1600000000 "$Q" create -q -f raw --from "$SMALL" "$W/r.raw"
m=$(debugfs -R "stat /big.bin" "$W/r.raw" 2>/dev/null | sed -n 's/^ *mtime: 0x\([0-9a-f]*\).*/\1/p')
expect_eq "reproducible: mtime clamped" "$((16#${m:-0}))" 1600000000
rm -f "$W"/*

# the image written inside its own source is not copied into itself
mkdir -p "$SCRATCH/self" && echo self > "$SCRATCH/self/f"
if (cd "$SCRATCH/self" && "$Q" create -q -f raw --from . img.raw); then
    l=$(debugfs -R "ls /" "$SCRATCH/self/img.raw" 2>/dev/null)
    if grep -q ' f ' <<<"$l" && ! grep -q 'qimg' <<<"$l"; then pass "output inside the source: not copied"; else fail "output inside the source: not copied" "$l"; fi
else
    fail "output inside the source: built"
fi

# --------------------------------------------------------------- errors

echo keep > "$W/old.qcow2"
rc=0; "$Q" create -f qcow2 --from "$SCRATCH/nonexistent" "$W/old.qcow2" 2>"$SCRATCH/err" || rc=$?
expect_eq "missing source: exit 1" "$rc" 1
grep -q "Could not open '$SCRATCH/nonexistent': No such file or directory" "$SCRATCH/err" &&
    pass "missing source: message" || fail "missing source: message" "$(cat "$SCRATCH/err")"
expect_eq "missing source: existing file untouched" "$(cat "$W/old.qcow2")" keep

rc=0; "$Q" create -f qcow2 --from "$SMALL" --size 1M "$W/old.qcow2" 2>"$SCRATCH/err" || rc=$?
expect_eq "too small --size: exit 1" "$rc" 1
grep -q "too small" "$SCRATCH/err" && pass "too small --size: message" || fail "too small --size: message" "$(cat "$SCRATCH/err")"
expect_eq "too small --size: existing file untouched" "$(cat "$W/old.qcow2")" keep

rc=0; "$Q" create -f qcow2 --from "$SMALL" --fs xfs "$W/x.qcow2" 2>"$SCRATCH/err" || rc=$?
expect_eq "unknown --fs: exit 1" "$rc" 1
grep -q "Unknown filesystem type 'xfs'" "$SCRATCH/err" && pass "unknown --fs: message" || fail "unknown --fs: message" "$(cat "$SCRATCH/err")"

rc=0; "$Q" create -f nosuchfmt --from "$SMALL" "$W/x.img" 2>"$SCRATCH/err" || rc=$?
expect_eq "unknown format: exit 1" "$rc" 1
grep -q "Unknown file format 'nosuchfmt'" "$SCRATCH/err" && pass "unknown format: message" || fail "unknown format: message" "$(cat "$SCRATCH/err")"
rc=0; "$Q" create -f qcow2 -o nosuchopt=1 --from "$SMALL" "$W/x.qcow2" 2>"$SCRATCH/err" || rc=$?
expect_eq "unknown -o option: exit 1" "$rc" 1
rc=0; "$Q" create -f qcow2 --from "$SMALL" --partition apm "$W/x.qcow2" 2>"$SCRATCH/err" || rc=$?
expect_eq "unknown --partition: exit 1" "$rc" 1
rc=0; "$Q" create -f qcow2 -b base.qcow2 --from "$SMALL" "$W/x.qcow2" 2>"$SCRATCH/err" || rc=$?
expect_eq "--from with -b: exit 1" "$rc" 1
rc=0; "$Q" create -f qcow2 --from "$SCRATCH/random" "$W/x.qcow2" 2>"$SCRATCH/err" || rc=$?
expect_eq "not a directory nor an archive: exit 1" "$rc" 1
[ ! -e "$W/x.qcow2" ] && pass "failed builds leave no file" || fail "failed builds leave no file" "$(ls -la "$W")"

# without --from, create is qemu-img's (the options are unknown there)
same "create -p without --from is refused as qemu-img does" create -p -f raw a.raw 1M
same "create --fs without --from is refused as qemu-img does" create --fs ext4 -f raw a.raw 1M
