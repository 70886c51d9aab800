# Shared helpers for the shell tests.  Source it first:  . tests/cli/lib.sh
#
# Every check prints "PASS <name>" or "FAIL <name>"; the runner counts them.
# The tool under test runs through a symlink named qemu-img, so its output
# must equal qemu-img's byte for byte, program name included.
#
#   same NAME ARGS...       run "qemu-img ARGS" and "qimg-as-qemu-img ARGS" in
#                           two copies of $IN (files prepared by the test) and
#                           compare stdout, stderr and exit code
#   check NAME CMD...       PASS when CMD succeeds
#   check_fail NAME CMD...  PASS when CMD fails
#   expect_eq NAME A B      PASS when the strings are equal
#   same_ro NAME ARGS...    like same, but both tools read the very same $IN
#   skip REASON             SKIP line for this script (counted by the runner)
#   need_cmd TOOL...        skip the whole script when a tool is missing
# and helpers to make and patch images (mk, qw, fresh, peek*/poke*, be*).
set -u
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
QIMG=${QIMG:-$TOP/build/qimg}
QEMU_IMG=${QEMU_IMG:-/usr/bin/qemu-img}
QEMU_IO=${QEMU_IO:-/usr/bin/qemu-io}
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/qimg-test.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p "$SCRATCH/bin" "$SCRATCH/in"
ln -s "$QIMG" "$SCRATCH/bin/qemu-img"
QIMG_AS_QEMU=$SCRATCH/bin/qemu-img
IN=$SCRATCH/in
export LC_ALL=C TZ=UTC

TEST_NAME=$(basename "$0" .sh)

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1"; shift; [ $# -gt 0 ] && printf '    %s\n' "$@"; return 0; }

check() {
    local name=$1; shift
    if "$@" >/dev/null 2>&1; then pass "$name"; else fail "$name" "command failed: $*"; fi
}

check_fail() {
    local name=$1; shift
    if "$@" >/dev/null 2>&1; then fail "$name" "command succeeded: $*"; else pass "$name"; fi
}

# skip REASON: this script (or, with SKIP_WHAT set, one part of it) is not
# run; the runner counts the line, it never counts as a pass.
skip() { echo "SKIP ${SKIP_WHAT:-$TEST_NAME}: $*"; }

# Servers a test starts: add each PID to SERVER_PIDS (a child, or a daemon's
# pid file); stop_servers, called from the EXIT trap, ends them all and waits
# for each (children reaped, others polled for up to 2.5 s).
SERVER_PIDS=()
stop_servers() {
    local p
    for p in "${SERVER_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${SERVER_PIDS[@]}"; do
        wait "$p" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    done
}

# need_cmd TOOL...: every tool must be on PATH, otherwise the script skips
# and exits (a missing tool is never a pass).
need_cmd() {
    local t missing=()
    for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    skip "missing ${missing[*]}"
    exit 0
}

# Debian's own interpreter: the independent readers (python3-libvmdk's
# pyvmdk, python3-libvhdi's pyvhdi, python3-vmdkstream's VMDKstream) are
# Debian packages, importable from it and not from a python3 that another
# installation (pyenv) puts first on PATH.
DEB_PYTHON=${DEB_PYTHON:-/usr/bin/python3}

# has_pymod WHAT MODULE...: true when Debian's python imports every module;
# otherwise prints a SKIP line for WHAT.
has_pymod() {
    local what=$1 m; shift
    for m in "$@"; do
        "$DEB_PYTHON" -c "import $m" >/dev/null 2>&1 ||
            { SKIP_WHAT=$what skip "missing python module $m"; return 1; }
    done
}

# retry_qemu_img_pbkdf2: from here on $QEMU_IMG retries a run that fails
# with "Unable to get accurate CPU usage" alone.  qemu-img times PBKDF2 with
# getrusage() when it makes a LUKS header, and that fails in about 4 runs
# of 10 on this machine whatever the iter-time; 20 tries make a spurious
# failure a one-in-10^8 event.  Other failures are returned at once.
retry_qemu_img_pbkdf2() {
    local real=$QEMU_IMG
    QEMU_IMG=$SCRATCH/bin/qemu-img-retry
    cat >"$QEMU_IMG" <<RETRY
#!/bin/bash
for try in \$(seq 20); do
    "$real" "\$@" >"$SCRATCH/retry.out" 2>"$SCRATCH/retry.err"; rc=\$?
    grep -q "Unable to get accurate CPU usage" "$SCRATCH/retry.err" || break
done
cat "$SCRATCH/retry.out"; cat "$SCRATCH/retry.err" >&2; exit \$rc
RETRY
    chmod +x "$QEMU_IMG"
}

# has_cmd TOOL...: true when every tool is on PATH; otherwise prints a SKIP
# line for WHAT (the first argument) so that one part of a script can skip.
has_cmd() {
    local what=$1 t; shift
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || { SKIP_WHAT=$what skip "missing $t"; return 1; }
    done
}

expect_eq() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "got:      $2" "expected: $3"; fi
}

# Run one tool in a fresh copy of $IN; output in $SCRATCH/run.<tag>/{out,err,rc}
run_in_copy() {
    local tag=$1 tool=$2; shift 2
    local dir=$SCRATCH/run.$tag
    rm -rf "$dir" && mkdir -p "$dir/work"
    cp -a "$IN/." "$dir/work/"
    (cd "$dir/work" && "$tool" "$@" >"$dir/out" 2>"$dir/err"; echo $? >"$dir/rc")
}

same() {
    local name=$1; shift
    run_in_copy ref "$QEMU_IMG" "$@"
    run_in_copy new "$QIMG_AS_QEMU" "$@"
    judge_runs "$name" "$SCRATCH/run.ref" "$SCRATCH/run.new" "$@"
}

# judge_runs NAME REF NEW ARGS...: PASS when the two run directories hold the
# same out, err and rc; else FAIL with the command (ARGS) and the diffs.
judge_runs() {
    local name=$1 a=$2 b=$3 f what=""; shift 3
    for f in out err rc; do
        cmp -s "$a/$f" "$b/$f" || what="$what $f differs:
$(diff "$a/$f" "$b/$f" | head -20)
"
    done
    if [ -z "$what" ]; then pass "$name"; else fail "$name" "qemu-img $*" "$what"; fi
}

# Deterministic test data: write PATTERN byte at OFFSET for LENGTH (qemu-io).
qio() { "$QEMU_IO" -f raw -c "$2" "$1" >/dev/null; }

# same_ro NAME ARGS...: like `same`, but both tools read the very same files
# in $IN (read-only commands): "disk size" depends on how a copy's blocks
# fall on the host file system.
same_ro() {
    local name=$1; shift
    local a=$SCRATCH/ro.ref b=$SCRATCH/ro.new
    mkdir -p "$a" "$b"
    (cd "$IN" && "$QEMU_IMG" "$@" >"$a/out" 2>"$a/err"; echo $? >"$a/rc")
    (cd "$IN" && "$QIMG_AS_QEMU" "$@" >"$b/out" 2>"$b/err"; echo $? >"$b/rc")
    judge_runs "$name" "$a" "$b" "$@"
}

# fails_bounded NAME CMD...: CMD must fail with a message on stderr, within 2 s
# of CPU and 1 GiB of address space, and not by a signal
fails_bounded() {
    local name=$1; shift
    (ulimit -v 1048576 -t 2; "$@" >"$SCRATCH/b.out" 2>"$SCRATCH/b.err")
    local rc=$?
    if [ $rc -ge 1 ] && [ $rc -lt 128 ] && [ -s "$SCRATCH/b.err" ]; then
        pass "$name"
    else
        fail "$name" "exit $rc: $(head -3 "$SCRATCH/b.err")"
    fi
}

# ref_rc NAME RC: the exit code qemu-img gave in the last `same` is RC; each
# case states it, so that a damage that missed its target cannot pass.
ref_rc() { expect_eq "$1 (exit code $2)" "$(cat "$SCRATCH/run.ref/rc")" "$2"; }

# ---- images made by qemu-img / qemu-io in $IN
# fresh [SRC]: empty $IN; with SRC, $IN/t.qcow2 = a copy of $SCRATCH/SRC.qcow2
fresh() {
    rm -rf "${IN:?}"/*
    [ $# -eq 0 ] || cp "$SCRATCH/$1.qcow2" "$IN/t.qcow2"
}
# mk FILE SIZE [create options]: a qcow2 image made by qemu-img in $IN
# (relative data_file names are created relative to the working directory)
mk() {
    local f=$1 size=$2; shift 2
    (cd "$IN" && "$QEMU_IMG" create -q -f qcow2 "$@" "$f" "$size") || fail "create $f"
}
# qw FILE qemu-io commands...: on a qcow2 image (FILE relative to $IN)
qw() {
    local f=$1; shift
    local args=() c
    for c in "$@"; do args+=(-c "$c"); done
    # qemu opens relative data files relative to the working directory
    (cd "$IN" && "$QEMU_IO" -f qcow2 "${args[@]}" "$f" >/dev/null) || fail "qemu-io $f $*"
}
sha() { sha256sum "$1" | cut -d' ' -f1; }

# ---- big-endian fields of an image (offsets in decimal)
peek64() { od -An -tu8 --endian=big -j "$2" -N 8 "$1" | tr -d ' '; }
peek32() { od -An -tu4 --endian=big -j "$2" -N 4 "$1" | tr -d ' '; }
poke_hex() {   # poke_hex FILE OFFSET HEXDIGITS (2*bytes digits, big-endian)
    printf "$(echo "$3" | sed 's/../\\x&/g')" |
        dd of="$1" bs=1 seek="$2" conv=notrunc status=none || fail "poke $*"
}
poke64() { poke_hex "$1" "$2" "$(printf '%016x' "$3")"; }
poke32() { poke_hex "$1" "$2" "$(printf '%08x' "$3")"; }
poke16() { poke_hex "$1" "$2" "$(printf '%04x' "$3")"; }
poke8() { poke_hex "$1" "$2" "$(printf '%02x' "$3")"; }
# be64/be32/be16 VALUE: the bytes on stdout; poke FILE OFFSET < bytes
be64() { printf "$(printf '%016x' "$1" | sed 's/../\\x&/g')"; }
be32() { printf "$(printf '%08x' "$1" | sed 's/../\\x&/g')"; }
be16() { printf "$(printf '%04x' "$1" | sed 's/../\\x&/g')"; }
poke() { dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
# hostile_bases: small qemu-made images to patch, $SCRATCH/base.qcow2 (1 MiB,
# 128 KiB written), comp.qcow2 (the same compressed), snap.qcow2 (snapshot s1)
hostile_bases() {
    local b=$SCRATCH/base.qcow2
    "$QEMU_IMG" create -q -f qcow2 "$b" 1M || fail "create base.qcow2"
    "$QEMU_IO" -f qcow2 -c "write -P 0xaa 0 128k" "$b" >/dev/null || fail "write base.qcow2"
    "$QEMU_IMG" convert -c -O qcow2 "$b" "$SCRATCH/comp.qcow2" || fail "make comp.qcow2"
    cp "$b" "$SCRATCH/snap.qcow2"
    "$QEMU_IMG" snapshot -c s1 "$SCRATCH/snap.qcow2" || fail "make snap.qcow2"
}
# hdr_be FIELD-OFFSET WIDTH VALUE [SRC]: t.qcow2 = SRC (base) with one field set
hdr_be() {
    fresh "${4:-base}"
    "be$2" "$3" | poke "$IN/t.qcow2" "$1"
}

# ---- qcow2 images to damage (64 KiB clusters, fresh layout)
COPIED=$((1 << 63))
MASK=$((0x00fffffffffffe00))
# mkbase: $B = reftable, refblock, L1, L2, data; offsets of each
mkbase() {
    fresh
    mk b.qcow2 64M
    qw b.qcow2 "write -P 1 0 1M" "write -P 2 10M 64k" "write 5M 4k"
    B=$IN/b.qcow2
    REFT=$(peek64 "$B" 48)
    REFB=$(($(peek64 "$B" "$REFT") & MASK))
    L1=$(peek64 "$B" 40)
    L2=$(($(peek64 "$B" "$L1") & MASK))
    D0=$(($(peek64 "$B" "$L2") & MASK))      # data cluster of guest cluster 0
    DC=$((D0 >> 16))
}
# mkx: $X with extended L2 entries; XL2 its L2 table, XD0 guest cluster 0
mkx() {
    fresh
    mk x.qcow2 8M -o extended_l2=on
    qw x.qcow2 "write -P 1 0 4k" "write -P 1 64k 64k"
    X=$IN/x.qcow2
    XL2=$(($(peek64 "$X" "$(peek64 "$X" 40)") & MASK))
    XD0=$(($(peek64 "$X" "$XL2") & MASK))
}
# mks: $S with snapshot s1 sharing clusters; SN its entry, SL1 its L1 table,
# SREFB the first refblock
mks() {
    fresh
    mk s.qcow2 16M
    qw s.qcow2 "write -P 1 0 2M"
    "$QEMU_IMG" snapshot -c s1 "$IN/s.qcow2"
    qw s.qcow2 "write -P 3 1M 64k"
    S=$IN/s.qcow2
    SN=$(peek64 "$S" 64)                       # first snapshot entry
    SL1=$(peek64 "$S" "$SN")
    SREFB=$(($(peek64 "$S" "$(peek64 "$S" 48)") & MASK))
}

need_cmd "$QEMU_IMG" "$QEMU_IO"   # the oracle

# poke_le / poke_be FILE OFFSET BYTES VALUE: an integer field, little- or
# big-endian
poke_int() {
    python3 -c 'import sys; f, o, n, v, e = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3]), int(sys.argv[4], 0), sys.argv[5]
d = bytearray(open(f, "rb").read()); d[o:o + n] = v.to_bytes(n, e); open(f, "wb").write(d)' "$@" ||
        fail "poke $*"
}
poke_le() { poke_int "$@" little; }
poke_be() { poke_int "$@" big; }
# qimg_io IMAGE OP...: writes through libqimg (partial clusters, zero
# writes): w:OFF:LEN:BYTE writes LEN bytes of BYTE, z:OFF:LEN zeroes
LIBQIMG=${QIMG%/*}/libqimg.so
qimg_io() {
    python3 - "$LIBQIMG" "$@" <<'PY'
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.qimg_last_error.restype = ctypes.c_char_p
img = ctypes.c_void_p()
if lib.qimg_open(ctypes.byref(img), sys.argv[2].encode(), None, 1) < 0:
    sys.exit("open: " + lib.qimg_last_error().decode())
for op in sys.argv[3:]:
    f = op.split(":")
    off, n = int(f[1], 0), int(f[2], 0)
    if f[0] == "w":
        r = lib.qimg_write(img, ctypes.c_uint64(off), bytes([int(f[3], 0)]) * n, ctypes.c_size_t(n))
    else:
        r = lib.qimg_write_zeroes(img, ctypes.c_uint64(off), ctypes.c_uint64(n), 0)
    if r < 0:
        sys.exit(op + ": " + lib.qimg_last_error().decode())
if lib.qimg_close(img) < 0:
    sys.exit("close: " + lib.qimg_last_error().decode())
PY
}
# qemu_io_ops FMT IMAGE OP...: the same operations through qemu-io
qemu_io_ops() {
    local fmt=$1 img=$2 args=() k a b c; shift 2
    for op in "$@"; do
        IFS=: read -r k a b c <<< "$op"
        if [ "$k" = w ]; then args+=(-c "write -P $c $a $b"); else args+=(-c "write -z $a $b"); fi
    done
    "$QEMU_IO" -f "$fmt" "${args[@]}" "$img" >/dev/null || fail "qemu-io $img $*"
}
