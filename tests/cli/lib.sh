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
    local a=$SCRATCH/run.ref b=$SCRATCH/run.new ok=1 what=""
    # qemu-img prints its own version string in some messages: never compared
    for f in out err rc; do
        if ! cmp -s "$a/$f" "$b/$f"; then
            ok=0
            what="$what $f differs:\n$(diff "$a/$f" "$b/$f" | head -20)\n"
        fi
    done
    if [ $ok = 1 ]; then pass "$name"; else fail "$name" "qemu-img $*" "$(printf "$what")"; fi
}

# Deterministic test data: write PATTERN byte at OFFSET for LENGTH (qemu-io).
qio() { "$QEMU_IO" -f raw -c "$2" "$1" >/dev/null; }
