#!/bin/bash
# Growing a twoGbMaxExtent VMDK past its last extent (beyond qemu-img,
# which resizes no vmdk): the last extent filled to 2 GiB, new extent files
# named as VMware and qemu-img name a split disk's ("NAME-s004.vmdk",
# "NAME-f004.vmdk"), the descriptor as qemu-img writes one for that size;
# read back by qemu-img, qemu-io and libvmdk.  A streamOptimized disk is
# not grown (a stream is written once, front to back).
. "$(dirname "$0")/lib.sh"
cd "$IN" || exit 1

# the descriptor without its CID line
desc_body() { grep -v '^CID=' "$1"; }
libvmdk_at() {   # IMAGE OFFSET: the media size and 4 bytes at OFFSET
    "$DEB_PYTHON" -c 'import sys, pyvmdk
h = pyvmdk.handle(); h.open(sys.argv[1]); h.open_extent_data_files()
print(h.get_media_size(), h.read_buffer_at_offset(4, int(sys.argv[2])).hex())' "$@"
}

for sub in twoGbMaxExtentSparse twoGbMaxExtentFlat; do
    rm -rf g ref && mkdir g ref
    "$QEMU_IMG" create -q -f vmdk -o subformat=$sub,adapter_type=lsilogic g/d.vmdk 1G
    "$QEMU_IO" -f vmdk -c 'write -P 1 0 1M' -c 'write -P 2 1023M 1M' g/d.vmdk >/dev/null
    "$QEMU_IMG" convert -O raw g/d.vmdk "$SCRATCH/ref.raw"
    for to in 5G 6G; do
        out=$("$QIMG_AS_QEMU" resize g/d.vmdk $to 2>&1)
        expect_eq "grow $sub to $to" "$out" "Image resized."
        truncate -s $to "$SCRATCH/ref.raw"
        rm -rf ref && mkdir ref
        "$QEMU_IMG" create -q -f vmdk -o subformat=$sub,adapter_type=lsilogic ref/d.vmdk $to
        expect_eq "grow $sub to $to: the descriptor qemu-img writes for $to" \
            "$(desc_body g/d.vmdk)" "$(desc_body ref/d.vmdk)"
        expect_eq "grow $sub to $to: the extent files qemu-img makes for $to" \
            "$(cd g && ls)" "$(cd ref && ls)"
        check "grow $sub to $to: qemu-img check" "$QEMU_IMG" check -q g/d.vmdk
        check "grow $sub to $to: qemu-img compare" "$QEMU_IMG" compare -q g/d.vmdk "$SCRATCH/ref.raw"
    done
    "$QEMU_IO" -f vmdk -c 'write -P 7 4607M 2M' g/d.vmdk >/dev/null
    check "grow $sub: qemu-io writes across the new extents" \
        "$QEMU_IO" -f vmdk -c 'read -P 7 4607M 2M' -c 'read -P 2 1023M 1M' -c 'read -P 0 1G 1M' g/d.vmdk
    qio "$SCRATCH/ref.raw" 'write -P 7 4607M 2M'
    check "grow $sub: qimg reads what qemu-io wrote" "$QIMG" compare -q g/d.vmdk "$SCRATCH/ref.raw"
    if has_pymod "libvmdk reads a grown $sub disk" pyvmdk; then
        expect_eq "grow $sub: libvmdk reads it" "$(libvmdk_at g/d.vmdk $((4608 << 20)))" \
            "6442450944 07070707"
    fi
done

# a file in the way: refused, the disk as it was, that file untouched
rm -rf g && mkdir g
"$QEMU_IMG" create -q -f vmdk -o subformat=twoGbMaxExtentSparse g/d.vmdk 1G
echo keep > g/d-s003.vmdk
cp g/d.vmdk "$SCRATCH/desc.before"
out=$("$QIMG_AS_QEMU" resize g/d.vmdk 5G 2>&1)
case $out in *"Could not create the VMDK extent 'd-s003.vmdk'"*)
    pass "grow onto an existing extent name: refused" ;;
    *) fail "grow onto an existing extent name: refused" "$out" ;; esac
check "refused grow: the descriptor unchanged" cmp g/d.vmdk "$SCRATCH/desc.before"
expect_eq "refused grow: the file in the way untouched, no file left behind" \
    "$(cat g/d-s003.vmdk; cd g && ls)" "keep
d-s001.vmdk
d-s003.vmdk
d.vmdk"
check "refused grow: qemu-img check" "$QEMU_IMG" check -q g/d.vmdk
expect_eq "refused grow: the size" "$("$QEMU_IMG" info --output=json g/d.vmdk | grep -m1 '"virtual-size"')" \
    '    "virtual-size": 1073741824,'

# streamOptimized: refused with the reason
"$QEMU_IMG" create -q -f vmdk -o subformat=streamOptimized s.vmdk 1M
out=$("$QIMG_AS_QEMU" resize s.vmdk 2M 2>&1)
expect_eq "streamOptimized grow refused" "$out" \
    "qemu-img: Growing a streamOptimized VMDK is not supported: convert it to another subformat, resize that, convert back"
