#!/bin/bash
# convert reads each source once: data the page cache does not hold is read
# with O_DIRECT, the rest through the cache (QIMG_IO_STREAM in src/io/file.c).
# Whatever path a read takes, the output must be right: cold, warm, partly
# cached and freshly written (dirty) sources, clusters too small to align,
# compressed clusters, backing chains, external data files, an unaligned
# raw tail.  And a cold source must not end up in the page cache.
. "$(dirname "$0")/lib.sh"
need_cmd python3
cd "$SCRATCH" || exit 1

# Drop a file's clean pages from the page cache (no root needed).
uncache() {
    python3 -c '
import os, sys
for name in sys.argv[1:]:
    fd = os.open(name, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)' "$@"
}
cached_pages() { fincore --noheadings --raw --output PAGES "$1"; }

# Can this kernel tell what is cached (cachestat, Linux 6.5)?  Without it
# qimg reads through the cache as before, and the cold source ends up cached.
have_cachestat=$(python3 -c '
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/proc/self/exe", os.O_RDONLY)
rng = (ctypes.c_uint64 * 2)(0, 4096); st = (ctypes.c_uint64 * 5)()
print(1 if libc.syscall(451, fd, rng, st, 0) == 0 else 0)')

# The reference: qemu-img's raw output, and qimg's, byte for byte.
both_to_raw() {
    local name=$1; shift
    rm -f ref.raw new.raw
    "$QEMU_IMG" convert -O raw "$@" ref.raw >/dev/null 2>&1 || { fail "$name: qemu-img convert"; return; }
    uncache "${@: -1}"
    if ! "$QIMG" convert -O raw "$@" new.raw 2>err; then
        fail "$name: qimg convert" "$(cat err)"; return
    fi
    check "$name: same bytes as qemu-img's" cmp ref.raw new.raw
}

# qcow2 with data, zero clusters and holes: 24 MiB of data in 64 MiB.
"$QEMU_IMG" create -q -f qcow2 src.qcow2 64M
"$QEMU_IO" -f qcow2 -c 'write -P 0x11 0 8M' -c 'write -P 0x22 9M 5M' -c 'write -z 20M 2M' \
    -c 'write -P 0x33 30M 7M' -c 'write -P 0x44 50M 4M' -c 'write -P 0 60M 1M' src.qcow2 >/dev/null

# cold: the data goes around the cache
uncache src.qcow2
both_to_raw "cold qcow2" src.qcow2
after=$(cached_pages src.qcow2)
if [ "$have_cachestat" = 1 ]; then
    # metadata, small read-ahead windows at the start and the one 2 MiB
    # unit they touch: a few hundred pages of the 6000+ of data
    check "cold qcow2: data not left in the page cache ($after pages)" test "$after" -lt 1500
else
    check "cold qcow2: no cachestat, read through the cache ($after pages)" test "$after" -gt 6000
fi

# warm: read from the cache, which stays as it was
cat src.qcow2 >/dev/null
before=$(cached_pages src.qcow2)
rm -f new.raw
check "warm qcow2: convert" "$QIMG" convert -O raw src.qcow2 new.raw
check "warm qcow2: same bytes" cmp ref.raw new.raw
expect_eq "warm qcow2: page cache kept" "$(cached_pages src.qcow2)" "$before"

# partly cached: every other MiB of the file in the cache
uncache src.qcow2
for i in $(seq 0 2 30); do dd if=src.qcow2 of=/dev/null bs=1M skip=$i count=1 status=none; done
rm -f new.raw
check "partly cached qcow2: convert" "$QIMG" convert -O raw src.qcow2 new.raw
check "partly cached qcow2: same bytes" cmp ref.raw new.raw

# several threads and out-of-order writes, cold
for opts in "-O raw -m 1" "-O raw -m 8 -W" "-O raw -S 0" "-O qcow2" "-O qcow2 -c"; do
    rm -f new.img
    uncache src.qcow2
    if "$QIMG" convert $opts src.qcow2 new.img 2>err; then
        check "cold qcow2 $opts: identical" "$QEMU_IMG" compare -f qcow2 src.qcow2 new.img
    else
        fail "cold qcow2 $opts: convert" "$(cat err)"
    fi
done

# freshly written, not yet on disk: the dirty pages are what counts
python3 - <<'EOF'
import os
fd = os.open("dirty.raw", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.pwrite(fd, bytes(range(256)) * 4096 * 12, 0)          # 12 MiB
os.pwrite(fd, b"\x5a" * (3 << 20), 20 << 20)             # 3 MiB at 20 MiB
os.ftruncate(fd, 32 << 20)
os.close(fd)
EOF
rm -f new.qcow2
check "dirty raw: convert" "$QIMG" convert -f raw -O qcow2 dirty.raw new.qcow2
check "dirty raw: identical" "$QEMU_IMG" compare -f raw -F qcow2 dirty.raw new.qcow2

# 512-byte clusters: reads not aligned for O_DIRECT go through the cache
"$QEMU_IMG" convert -f qcow2 -O qcow2 -o cluster_size=512 src.qcow2 small.qcow2
both_to_raw "cold qcow2, 512-byte clusters" small.qcow2

# compressed clusters
"$QEMU_IMG" convert -c -f qcow2 -O qcow2 src.qcow2 comp.qcow2
both_to_raw "cold compressed qcow2" comp.qcow2

# a 3-deep backing chain, every layer cold
"$QEMU_IMG" create -q -f qcow2 l0.qcow2 64M
"$QEMU_IO" -f qcow2 -c 'write -P 0x61 0 16M' -c 'write -P 0x62 40M 8M' l0.qcow2 >/dev/null
"$QEMU_IMG" create -q -f qcow2 -b l0.qcow2 -F qcow2 l1.qcow2
"$QEMU_IO" -f qcow2 -c 'write -P 0x63 4M 4M' -c 'write -z 42M 1M' l1.qcow2 >/dev/null
"$QEMU_IMG" create -q -f qcow2 -b l1.qcow2 -F qcow2 l2.qcow2
"$QEMU_IO" -f qcow2 -c 'write -P 0x64 6M 12M' l2.qcow2 >/dev/null
uncache l0.qcow2 l1.qcow2
both_to_raw "cold backing chain" l2.qcow2

# an external data file, cold
"$QEMU_IMG" create -q -f qcow2 -o data_file=ext.data ext.qcow2 32M
"$QEMU_IO" -f qcow2 -c 'write -P 0x71 1M 10M' -c 'write -P 0x72 20M 3M' ext.qcow2 >/dev/null
uncache ext.data
both_to_raw "cold external data file" ext.qcow2

# a raw source whose size is not a multiple of 4 KiB
head -c $(((10 << 20) + 1000)) /dev/urandom >odd.raw
both_to_raw "cold raw, unaligned tail" -f raw odd.raw
rm -f new.qcow2
uncache odd.raw
check "cold raw to qcow2: convert" "$QIMG" convert -f raw -O qcow2 odd.raw new.qcow2
check "cold raw to qcow2: identical" "$QEMU_IMG" compare -f raw -F qcow2 odd.raw new.qcow2

# -T none reads everything with O_DIRECT already
rm -f new.raw
uncache src.qcow2
check "cold qcow2 -T none: convert" "$QIMG" convert -T none -O raw src.qcow2 new.raw
check "cold qcow2 -T none: identical" "$QEMU_IMG" compare -f qcow2 -F raw src.qcow2 new.raw

# -c reads each unit's data clusters in runs; sources of odd sizes put
# their boundaries inside those runs and inside clusters
head -c 1000 /dev/urandom >s1.raw
head -c $(((1 << 20) + 7)) /dev/urandom >s2.raw
"$QEMU_IMG" create -q -f qcow2 s3.qcow2 3M
"$QEMU_IO" -f qcow2 -c 'write -P 0x5c 64k 200k' -c 'write -z 1M 64k' -c 'write -P 0x5d 2M 1M' s3.qcow2 >/dev/null
uncache s1.raw s2.raw s3.qcow2
rm -f new.qcow2 ref.raw
"$QEMU_IMG" convert -O raw s1.raw s2.raw s3.qcow2 ref.raw
check "-c, three sources: convert" "$QIMG" convert -c -O qcow2 s1.raw s2.raw s3.qcow2 new.qcow2
check "-c, three sources: identical to qemu-img's raw" "$QEMU_IMG" compare -f raw -F qcow2 ref.raw new.qcow2
check "-c, three sources: check clean" "$QEMU_IMG" check -q new.qcow2

# an explicit -T: that cache mode, as qemu-img (writeback: through the cache)
rm -f new.raw
uncache src.qcow2
check "cold qcow2 -T writeback: convert" "$QIMG" convert -T writeback -O raw src.qcow2 new.raw
check "cold qcow2 -T writeback: identical" "$QEMU_IMG" compare -f qcow2 -F raw src.qcow2 new.raw
after=$(cached_pages src.qcow2)
check "cold qcow2 -T writeback: read through the cache ($after pages)" test "$after" -gt 6000
