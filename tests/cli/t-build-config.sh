#!/bin/bash
# The configure step and builds without optional libraries.
#  - build/config.h names every optional library that is installed;
#  - qimg --help lists the formats and storage backends (sorted, as qemu-img
#    lists its drivers) and, as qimg, the codecs;
#  - each variant that `make config-matrix` built (build/without-X) says what
#    it lacks, and a missing codec is a clear error, never a wrong image.
. "$(dirname "$0")/lib.sh"
B=$(dirname "$QIMG")
CONFIG_H=$B/config.h

if [ ! -f "$CONFIG_H" ]; then
    fail "config.h exists" "$CONFIG_H missing"
    exit 0
fi
pass "config.h exists"

# Each library found on this machine must be in the configuration.
have_pc() { pkg-config --exists "$1" 2>/dev/null; }
built_with() { grep -q "^#define $1 1" "$CONFIG_H"; }   # MACRO
expect_have() {   # MACRO PRESENT(yes/no)
    if built_with "$1"; then got=yes; else got=no; fi
    expect_eq "config.h: $1 matches the machine" "$got" "$2"
}
if command -v pkg-config >/dev/null; then
    have_pc zlib && z=yes || z=no;          expect_have HAVE_ZLIB $z
    have_pc libzstd && z=yes || z=no;       expect_have HAVE_LIBZSTD $z
    [ -e /usr/include/libdeflate.h ] && z=yes || z=no; expect_have HAVE_LIBDEFLATE $z
    [ -e /usr/include/bzlib.h ] && z=yes || z=no;      expect_have HAVE_BZIP2 $z
    have_pc ext2fs && have_pc com_err && z=yes || z=no; expect_have HAVE_EXT2FS $z
    have_pc libarchive && z=yes || z=no;    expect_have HAVE_LIBARCHIVE $z
    have_pc libcrypto && z=yes || z=no;     expect_have HAVE_OPENSSL $z
    have_pc nettle && z=yes || z=no;        expect_have HAVE_NETTLE $z
    have_pc libnbd && z=yes || z=no;        expect_have HAVE_LIBNBD $z
    have_pc libcurl && z=yes || z=no;       expect_have HAVE_LIBCURL $z
else
    skip "pkg-config missing: installed libraries not compared with config.h"
fi

# Libraries that serve one backend or command are opened on first use
# (src/lib/dl.h), not linked: a plain run never loads them, a run that needs
# one does.
needed=$(readelf -d "$QIMG" 2>/dev/null | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')
if [ -z "$needed" ]; then
    fail "readelf lists qimg's libraries" "nothing listed"
fi
# every library opened on first use, by its file name's start
DL_LIBS="libcurl libnbd libarchive librbd librados libcrypto libplist libbz2 liblzma liblz4 liblzo2 libext2fs libcom_err libnettle libz libdeflate libzstd"
for lib in $DL_LIBS; do
    case " $needed" in *" $lib."* | *" $lib-"*) fail "$lib is not linked" "$needed" ;;
                       *) pass "$lib is not linked" ;; esac
done
loaded() {   # LIB COMMAND...: the libraries the dynamic loader opened
    LD_DEBUG=libs "${@:2}" 2>&1 >/dev/null | grep -c "calling init: .*/$1[.-]" || true
}
"$QEMU_IMG" create -f qcow2 "$SCRATCH/plain.qcow2" 1M >/dev/null || fail "make plain.qcow2"
for lib in $DL_LIBS; do
    expect_eq "info of a local image does not load $lib" "$(loaded $lib "$QIMG" info "$SCRATCH/plain.qcow2")" 0
done
if built_with HAVE_LIBCURL; then
    n=$(loaded libcurl "$QIMG" info http://127.0.0.1:1/x.img)
    expect_eq "info of an http URL loads libcurl" "$n" 1
fi
if built_with HAVE_LIBNBD; then
    n=$(loaded libnbd "$QIMG" info nbd://127.0.0.1:1/x)
    expect_eq "info of an nbd URL loads libnbd" "$n" 1
fi
if built_with HAVE_OPENSSL; then
    n=$(loaded libcrypto "$QIMG" create -f luks --object secret,id=s0,data=pw \
        -o key-secret=s0,iter-time=10 "$SCRATCH/new.luks" 1M)
    expect_eq "create of a luks image loads libcrypto" "$n" 1
    check "the luks image opens with its key" "$QEMU_IMG" info --object secret,id=s0,data=pw \
        --image-opts "driver=luks,key-secret=s0,file.filename=$SCRATCH/new.luks"
fi
if built_with HAVE_PLIST && has_pymod dmg-craft plistlib; then
    head -c 51200 /dev/urandom > "$SCRATCH/dmg.raw"
    "$DEB_PYTHON" "$TOP/tests/cli/dmg-craft.py" "$SCRATCH/dmg.raw" "$SCRATCH/xml.dmg" raw:100 ||
        fail "make xml.dmg"
    n=$(loaded libplist "$QIMG" info "$SCRATCH/xml.dmg")
    expect_eq "info of a dmg with an XML property list loads libplist" "$n" 1
fi
# the codecs of dmg and cloop 4: each loaded by reading a block of its kind
if built_with HAVE_BZIP2 && has_pymod dmg-craft plistlib bz2; then
    "$DEB_PYTHON" "$TOP/tests/cli/dmg-craft.py" "$SCRATCH/dmg.raw" "$SCRATCH/bz2.dmg" bzip2:100 ||
        fail "make bz2.dmg"
    n=$(loaded libbz2 "$QIMG" convert -O raw "$SCRATCH/bz2.dmg" "$SCRATCH/bz2.raw")
    expect_eq "reading a dmg's bzip2 chunks loads libbz2" "$n" 1
    check "the bzip2 dmg reads back" cmp "$SCRATCH/bz2.raw" "$SCRATCH/dmg.raw"
fi
head -c 16384 /dev/urandom > "$SCRATCH/cloop.raw"
for m in xz:HAVE_LZMA:liblzma lz4:HAVE_LZ4:liblz4 lzo1x:HAVE_LZO:liblzo2; do
    IFS=: read -r method macro lib <<<"$m"
    built_with "$macro" || continue
    "$DEB_PYTHON" "$TOP/tests/cli/cloop-craft.py" "$SCRATCH/cloop.raw" "$SCRATCH/$method.cloop" 4096 "$method" ||
        fail "make $method.cloop"
    expect_eq "info of a cloop does not load $lib" "$(loaded $lib "$QIMG" info "$SCRATCH/$method.cloop")" 0
    n=$(loaded $lib "$QIMG" convert -O raw "$SCRATCH/$method.cloop" "$SCRATCH/$method.raw")
    expect_eq "reading a cloop's $method blocks loads $lib" "$n" 1
    check "the $method cloop reads back" cmp "$SCRATCH/$method.raw" "$SCRATCH/cloop.raw"
done
if built_with HAVE_EXT2FS; then
    mkdir -p "$SCRATCH/tree/sub" && echo hello > "$SCRATCH/tree/sub/f"
    n=$(loaded libext2fs "$QIMG" create -q -f qcow2 --fs ext4 --from "$SCRATCH/tree" "$SCRATCH/fs.qcow2")
    expect_eq "create --from --fs ext4 loads libext2fs" "$n" 1
    expect_eq "info of an ext4 image does not load libext2fs" \
        "$(loaded libext2fs "$QIMG" info "$SCRATCH/fs.qcow2")" 0
    n=$(loaded libext2fs "$QIMG" ls "$SCRATCH/fs.qcow2" /sub)
    expect_eq "ls of an ext4 image loads libext2fs" "$n" 1
    expect_eq "cat reads the file back" "$("$QIMG" cat "$SCRATCH/fs.qcow2" /sub/f)" hello
fi
if built_with HAVE_NETTLE && built_with HAVE_OPENSSL; then
    n=$(loaded libnettle "$QIMG" create -f luks --object secret,id=s0,data=pw \
        -o key-secret=s0,iter-time=10 "$SCRATCH/aes.luks" 1M)
    expect_eq "create of an aes luks image does not load libnettle" "$n" 0
    n=$(loaded libnettle "$QIMG" create -f luks --object secret,id=s0,data=pw \
        -o key-secret=s0,iter-time=10,cipher-alg=serpent-256 "$SCRATCH/serpent.luks" 1M)
    expect_eq "create of a serpent luks image loads libnettle" "$n" 1
    check "the serpent image opens with its key" "$QEMU_IMG" info --object secret,id=s0,data=pw \
        --image-opts "driver=luks,key-secret=s0,file.filename=$SCRATCH/serpent.luks"
fi
# qcow2's compressed clusters: zstd and deflate (libdeflate, else zlib)
head -c 1048576 "$QIMG" > "$SCRATCH/c.raw"
if built_with HAVE_LIBZSTD; then
    "$QEMU_IMG" convert -f raw -O qcow2 -c -o compression_type=zstd "$SCRATCH/c.raw" "$SCRATCH/z.qcow2" ||
        fail "make z.qcow2"
    expect_eq "info of a zstd qcow2 does not load libzstd" "$(loaded libzstd "$QIMG" info "$SCRATCH/z.qcow2")" 0
    n=$(loaded libzstd "$QIMG" convert -O raw "$SCRATCH/z.qcow2" "$SCRATCH/z.raw")
    expect_eq "reading zstd clusters loads libzstd" "$n" 1
    check "the zstd qcow2 reads back" cmp "$SCRATCH/z.raw" "$SCRATCH/c.raw"
fi
deflate_lib=
built_with HAVE_ZLIB && deflate_lib=libz
built_with HAVE_LIBDEFLATE && deflate_lib=libdeflate
if [ -n "$deflate_lib" ]; then
    n=$(loaded $deflate_lib "$QIMG" convert -c -O qcow2 "$SCRATCH/c.raw" "$SCRATCH/d.qcow2")
    expect_eq "convert -c loads $deflate_lib" "$n" 1
    expect_eq "info of a compressed qcow2 does not load $deflate_lib" \
        "$(loaded $deflate_lib "$QIMG" info "$SCRATCH/d.qcow2")" 0
    check "the compressed qcow2 reads back" "$QEMU_IMG" compare -f raw -F qcow2 "$SCRATCH/c.raw" "$SCRATCH/d.qcow2"
fi

# --help: one sorted list of formats and backends.
list=$("$QIMG" --help | sed -n 's/^Supported formats: //p')
expect_eq "--help: formats and backends sorted" "$list" "$(tr ' ' '\n' <<<"$list" | sort | tr '\n' ' ' | sed 's/ $//')"
for name in raw qcow2 file null-co null-aio blkdebug; do
    case " $list " in *" $name "*) pass "--help lists $name" ;; *) fail "--help lists $name" "$list" ;; esac
done
check "--help as qimg names the codecs" bash -c "'$QIMG' --help | grep -q '^Compression codecs: '"
check_fail "--help as qemu-img does not" bash -c "'$QIMG_AS_QEMU' --help | grep -q '^Compression codecs'"

# The variants.
cd "$SCRATCH" || exit 1
head -c 307200 "$QIMG" > data.raw
"$QEMU_IMG" convert -f raw -O qcow2 -c -o compression_type=zstd data.raw zstd.qcow2 || fail "make zstd.qcow2"
"$QEMU_IMG" convert -f raw -O qcow2 -c data.raw zlib.qcow2 || fail "make zlib.qcow2"
for f in zlib libdeflate zstd bzip2 ext2fs libarchive openssl nettle libnbd libcurl all; do
    v=$B/without-$f/qimg
    if [ ! -x "$v" ]; then
        skip "$v not built (make config-matrix)"
        continue
    fi
    lacking=$("$v" --help | sed -n 's/^Built without: //p')
    if [ $f = all ]; then
        # every library configure knows, in its order
        known=$(sed -n '/^features="/,/^"/p' "$TOP/scripts/configure" | grep : | cut -d: -f1 |
                tr '\n' ' ' | sed 's/ $//')
        expect_eq "without all: --help says so" "$lacking" "$known"
    else
        case " $lacking " in *" $f "*) pass "without $f: --help says so" ;;
                             *) fail "without $f: --help says so" "$lacking" ;; esac
    fi
    # zstd images: read when zstd is there, refused at open with the reason otherwise
    out=$("$v" convert -O raw zstd.qcow2 "zstd-$f.raw" 2>&1); rc=$?
    case $f in
    zstd|all)
        expect_eq "without $f: zstd image refused" "$rc" 1
        case $out in *"built without libzstd"*) pass "without $f: the error names libzstd" ;;
                     *) fail "without $f: the error names libzstd" "$out" ;; esac ;;
    *)
        expect_eq "without $f: zstd image read" "$rc" 0
        check "without $f: zstd image content" cmp "zstd-$f.raw" data.raw ;;
    esac
    # http, https, ftp, ftps need libcurl: without it a clear error at open
    out=$("$v" info http://127.0.0.1:1/x.qcow2 2>&1); rc=$?
    expect_eq "without $f: http fails" "$rc" 1
    case $f in
    libcurl|all)
        case $out in *"built without libcurl"*) pass "without $f: the error names libcurl" ;;
                     *) fail "without $f: the error names libcurl" "$out" ;; esac ;;
    *)  case $out in *"Couldn't connect to server"*) pass "without $f: http tried" ;;
                     *) fail "without $f: http tried" "$out" ;; esac ;;
    esac
    # NBD needs libnbd: without it an nbd name is refused clearly
    if [ $f = libnbd ] || [ $f = all ]; then
        out=$("$v" info nbd://127.0.0.1:1/x 2>&1); rc=$?
        expect_eq "without $f: nbd refused" "$rc" 1
        case $out in *"NBD is not available in this build (it needs libnbd)"*) pass "without $f: the nbd error says why" ;;
                     *) fail "without $f: the nbd error says why" "$out" ;; esac
    fi
    # encryption needs OpenSSL: without it a luks volume is refused clearly
    out=$("$v" create -q -f luks --object secret,id=s0,data=x -o key-secret=s0,iter-time=1 "luks-$f.img" 1M 2>&1); rc=$?
    case $f in
    openssl|all)
        expect_eq "without $f: luks create refused" "$rc" 1
        case $out in *"encryption is not available"*) pass "without $f: the error says why" ;;
                     *) fail "without $f: the error says why" "$out" ;; esac ;;
    *)  expect_eq "without $f: luks create" "$rc" 0 ;;
    esac
    # serpent, twofish, cast5 need nettle beside OpenSSL
    out=$("$v" create -q -f luks --object secret,id=s0,data=x -o key-secret=s0,iter-time=1,cipher-alg=serpent-256 \
          "serpent-$f.img" 1M 2>&1); rc=$?
    case $f in
    openssl|all)
        expect_eq "without $f: serpent refused" "$rc" 1 ;;
    nettle)
        expect_eq "without $f: serpent refused" "$rc" 1
        case $out in *"serpent-256 in xts mode is not available in qimg (built without nettle)"*)
                         pass "without $f: the serpent error says why" ;;
                     *) fail "without $f: the serpent error says why" "$out" ;; esac ;;
    *)  expect_eq "without $f: serpent luks create" "$rc" 0 ;;
    esac
    # writing compressed clusters needs deflate (libdeflate or zlib)
    out=$("$v" convert -c -O qcow2 data.raw "c-$f.qcow2" 2>&1); rc=$?
    if [ $f = all ]; then
        expect_eq "without all: convert -c fails" "$rc" 1
        case $out in *"compression is not available"*) pass "without all: the error says why" ;;
                     *) fail "without all: the error says why" "$out" ;; esac
        check_fail "without all: no half-written target" test -e "c-$f.qcow2"
    else
        expect_eq "without $f: convert -c" "$rc" 0
        check "without $f: compressed image checks clean" "$QEMU_IMG" check "c-$f.qcow2"
        check "without $f: compressed image reads back" "$QEMU_IMG" compare -f raw -F qcow2 data.raw "c-$f.qcow2"
        check "without $f: reads qemu's zlib image" "$v" compare zlib.qcow2 data.raw
    fi
done
