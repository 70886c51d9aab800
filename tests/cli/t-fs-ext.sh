#!/bin/bash
# The ext2/3/4 driver through the CLI: create --from for each type (what
# mke2fs would make: features, journal; e2fsck -fn and debugfs rdump on a
# raw copy made by qemu-img convert), reproducible builds of each type, a
# large directory made by mke2fs (hashed) and grown by copy-in, writable
# opens refused (dirty, needing recovery, features we do not write) with the
# image untouched, and hostile images answered with errors in bounded time.
. "$(dirname "$0")/lib.sh"
PATH=$PATH:/usr/sbin:/sbin

need_cmd mke2fs debugfs e2fsck dumpe2fs   # scripts/install-deps

W=$SCRATCH/w
mkdir -p "$W"
cd "$W" || exit 1
q() { timeout 60 "$QIMG" "$@"; }
raw_of() { rm -f "$2" && "$QEMU_IMG" convert -O raw "$1" "$2"; }
fsck_ok() { e2fsck -fn "$1" >"$1.fsck" 2>&1; }
features() { dumpe2fs -h "$1" 2>/dev/null | sed -n 's/^Filesystem features: *//p'; }

# ------------------------------------------------------------ the tree
T=$W/tree
mkdir -p "$T/d/e" "$T/many"
echo hello > "$T/a.txt"
head -c 2000000 /dev/urandom > "$T/d/rand"
truncate -s 20M "$T/d/sparse"
echo end >> "$T/d/sparse"
ln -s a.txt "$T/link"
ln -s "/$(printf 'long%.0s' $(seq 1 40))" "$T/longlink"
ln "$T/a.txt" "$T/d/e/hard"
for i in $(seq 1 300); do echo "$i" > "$T/many/entry-$i"; done
touch -d '2001-02-03 04:05:06.123456789' "$T/a.txt"

same_tree() {   # debugfs rdump of the raw image gives the tree back
    local raw=$1 out=$W/rdump.$$
    rm -rf "$out" && mkdir "$out"
    debugfs -R "rdump / $out" "$raw" >/dev/null 2>&1 && rm -rf "$out/lost+found" &&
        diff -r --no-dereference "$T" "$out" >/dev/null && rm -rf "$out"
}

# ------------------------------------------------------------ create --from
for fs in ext2 ext3 ext4; do
    rm -f $fs.qcow2
    check "create --from --fs $fs" q create -f qcow2 --from "$T" --fs $fs $fs.qcow2
    raw_of $fs.qcow2 $fs.raw
    check "$fs: e2fsck -fn clean" fsck_ok $fs.raw
    check "$fs: debugfs rdump gives the tree back" same_tree $fs.raw
    f=$(features $fs.raw)
    case $fs in
    ext2) expect_eq "ext2: mke2fs's features" "$f" \
              "ext_attr resize_inode dir_index filetype sparse_super large_file" ;;
    ext3) expect_eq "ext3: mke2fs's features" "$f" \
              "has_journal ext_attr resize_inode dir_index filetype sparse_super large_file" ;;
    ext4) expect_eq "ext4: mke2fs's features" "$f" \
              "has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink extra_isize metadata_csum" ;;
    esac
    expect_eq "$fs: qimg ls sees the type" "$(q ls "$fs.qcow2" /d/e | head -1 | grep -c hard)" 1
    st=$(debugfs -R 'stat /a.txt' $fs.raw 2>/dev/null)
    # 256-byte inodes (mke2fs's default for every type) keep nanoseconds
    check "$fs: nanosecond mtime" grep -q 'mtime: 0x3a7b8372:1d6f3454' <<<"$st"
    blocks=$(debugfs -R 'stat /d/sparse' $fs.raw 2>/dev/null | sed -n 's/.*Blockcount: \([0-9]*\).*/\1/p')
    check "$fs: the sparse file stays sparse ($blocks sectors)" test "${blocks:-99999}" -lt 200
    # reproducible: two builds of the same tree are the same bytes
    rm -f $fs-r1.qcow2 $fs-r2.qcow2
    q create -f qcow2 --from "$T" --fs $fs --reproducible $fs-r1.qcow2 >/dev/null 2>&1
    sleep 1
    q create -f qcow2 --from "$T" --fs $fs --reproducible $fs-r2.qcow2 >/dev/null 2>&1
    raw_of $fs-r1.qcow2 $fs-r1.raw && raw_of $fs-r2.qcow2 $fs-r2.raw
    check "$fs: reproducible builds are byte-identical" cmp -s $fs-r1.raw $fs-r2.raw
    check "$fs: reproducible build is e2fsck clean" fsck_ok $fs-r1.raw
    rm -f $fs-r1.* $fs-r2.* $fs.raw
done

# ------------------------------------------------------------ copy-in into a hashed directory
mkdir -p big/wide
for i in $(seq 1 3000); do : > "big/wide/mke2fs-made-entry-number-$i"; done
truncate -s 64M big.raw && mke2fs -q -F -t ext4 -d big big.raw && e2fsck -fyD big.raw >/dev/null 2>&1
check "e2fsck -D made a hashed directory" sh -c "debugfs -R 'stat /wide' big.raw 2>/dev/null | grep -q 'Flags: 0x81000'"
"$QEMU_IMG" convert -O qcow2 big.raw big.qcow2
mkdir -p cin
for i in $(seq 1 500); do echo "$i" > "cin/added-$i"; done
check "copy-in 500 files into the hashed directory" q copy-in big.qcow2 cin/* /wide
raw_of big.qcow2 big2.raw
check "hashed directory: e2fsck -fn clean" fsck_ok big2.raw
expect_eq "hashed directory: new file readable" "$(debugfs -R 'cat /wide/added-377' big2.raw 2>/dev/null)" 377
expect_eq "hashed directory: qimg ls counts them" "$(q ls big.qcow2 /wide | wc -l)" 3500

# ------------------------------------------------------------ refusals
refused() {   # NAME DEBUGFS_CMD [MKE2FS_OPTS]
    local name=$1 cmd=$2 opts=${3:-}
    rm -f r.raw && truncate -s 16M r.raw && mke2fs -q -F -t ext4 $opts r.raw &&
        { [ -z "$cmd" ] || debugfs -w -R "$cmd" r.raw >/dev/null 2>&1; }
    local before; before=$(sha r.raw)
    echo x > x.txt
    if q copy-in -f raw r.raw x.txt / >out 2>err; then
        fail "copy-in refused: $name" "it succeeded"
    elif ! grep -q "$4" err; then
        fail "copy-in refused: $name" "message: $(cat err)"
    else
        pass "copy-in refused: $name"
    fi
    expect_eq "refused copy-in leaves the image untouched: $name" "$(sha r.raw)" "$before"
    check "read-only ls still works: $name" q ls -f raw r.raw /
}
refused "not cleanly unmounted" "ssv state 0" "" "not clean"
refused "errors" "ssv state 3" "" "not clean"
refused "journal needs recovery" "feature needs_recovery" "" "needs recovery"
refused "orphan inodes" "ssv last_orphan 12" "" "orphan"
refused "inline_data" "" "-O inline_data" "inline_data"
refused "casefold" "" "-O casefold" "casefold"

# ------------------------------------------------------------ hostile images
mkdir -p hsrc/dir && echo data > hsrc/dir/f && head -c 100000 /dev/urandom > hsrc/file
truncate -s 8M h.raw && mke2fs -q -F -t ext4 -d hsrc h.raw
debugfs -w -R 'sif /dir/f size 0x1000000000000000' h.raw >/dev/null 2>&1
debugfs -w -R 'sif /file block[5] 0xfffff000' h.raw >/dev/null 2>&1
debugfs -w -R 'ln /dir /dir/self' h.raw >/dev/null 2>&1
check_fail "hostile: exabyte file gives an error" q cat -f raw h.raw /dir/f
check_fail "hostile: extent past the device gives an error" q cat -f raw h.raw /file
mkdir -p hout
rc=0; timeout 60 "$QIMG" copy-out -f raw h.raw /dir hout >/dev/null 2>&1 || rc=$?
check "hostile: copy-out of a self-containing directory ends (rc $rc)" test $rc -ne 124

# ------------------------------------------------------------ sizes chosen
# Without --size the driver's minimum must hold trees of every shape.
python3 - <<'PY'
import os
os.makedirs('shapes/empty')
d = 'shapes/inodes'; os.makedirs(d)
for i in range(8000): open('%s/f%05d' % (d, i), 'w').close()
for i in range(1500): os.makedirs('shapes/dirs/d%04d' % i)
p = 'shapes/deep'
for i in range(60): p += '/level%03d' % i
os.makedirs(p)
d = 'shapes/links'; os.makedirs(d)
for i in range(1500): os.symlink('/' + 't' * 199, '%s/l%04d' % (d, i))
d = 'shapes/xattrs'; os.makedirs(d)
for i in range(200):
    f = '%s/x%03d' % (d, i); open(f, 'w').write('x')
    try: os.setxattr(f, 'user.big', b'v' * 3000)
    except OSError: pass
PY
for shape in empty inodes dirs deep links xattrs; do
    rm -f s.qcow2
    check "minimum size holds a tree of $shape" q create -f qcow2 --from shapes/$shape s.qcow2
    raw_of s.qcow2 s.raw
    check "minimum size, $shape: e2fsck -fn clean" fsck_ok s.raw
done
