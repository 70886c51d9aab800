#!/bin/bash
# make iotests: QEMU's own qemu-iotests as a conformance measure for qimg.
#
#   scripts/iotests.sh                  # the `auto` group, qcow2 then raw
#   FMT=raw IOTESTS=quick scripts/iotests.sh
#   IOTESTS="001 013 qcow2-internal-snapshots" scripts/iotests.sh
#
# The tests come from Debian's qemu source package (the one matching the
# installed qemu-utils), fetched with `apt-get source` into IOTESTS_DIR,
# outside the tree.  Each format is run twice with the real qemu-io and
# qemu-nbd: once with the real qemu-img, which gives the baseline of tests
# that pass on this machine (cached per qemu version, format and selection),
# then the baseline-passing tests again with qemu-img replaced by qimg.
# There is no qemu-system here: QEMU_PROG and QSD_PROG point at a stub that
# fails, so tests needing a VM fail in the baseline and are left out.
#
# Environment: QIMG (default build/qimg), FMT (qcow2 and raw), IOTESTS
# (group names and/or test names, default auto), IOTESTS_JOBS (parallel
# tests, default 1), IOTESTS_DIR (default /var/tmp/qimg-iotests),
# IOTESTS_CMD_TIMEOUT (seconds one qemu-img call may take, default 300).
# Exit status: 0 all baseline-passing tests pass with qimg, 1 some fail,
# 2 the suite could not be set up or run.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QIMG=${QIMG:-$ROOT/build/qimg}
DIR=${IOTESTS_DIR:-/var/tmp/qimg-iotests}
FMTS=${FMT:-qcow2 raw}
SELECTION=${IOTESTS:-auto}
JOBS=${IOTESTS_JOBS:-1}
CMD_TIMEOUT=${IOTESTS_CMD_TIMEOUT:-300}

die() { echo "iotests: $*" >&2; exit 2; }
say() { echo "iotests: $*"; }

[ -x "$QIMG" ] || die "no qimg binary at $QIMG (run make first)"
for prog in qemu-img qemu-io qemu-nbd python3 timeout; do
    command -v "$prog" >/dev/null || die "$prog not found (qemu-utils and python3 are needed)"
done
mkdir -p "$DIR" || die "cannot create $DIR"
DIR=$(cd "$DIR" && pwd)

# The source version of the installed qemu-utils (a binNMU suffix dropped).
QEMU_SRC_VERSION=$(dpkg-query -W -f='${source:Version}' qemu-utils 2>/dev/null) ||
    die "qemu-utils is not installed as a Debian package"
QEMU_UPSTREAM=${QEMU_SRC_VERSION#*:}
QEMU_UPSTREAM=${QEMU_UPSTREAM%-*}
SRC="$DIR/src/qemu-$QEMU_UPSTREAM"
IOTESTS_SRC="$SRC/tests/qemu-iotests"

# --- fetching the test suite -------------------------------------------------

deb_src_enabled() {
    [ -n "$(apt-cache showsrc qemu 2>/dev/null | head -1)" ]
}

# Add deb-src next to every deb entry of the Debian archive.
enable_deb_src() {
    local f=/etc/apt/sources.list.d/debian.sources
    if [ -f "$f" ] && grep -q '^Types: deb$' "$f"; then
        say "enabling deb-src in $f"
        sed -i 's/^Types: deb$/Types: deb deb-src/' "$f" || return 1
    fi
    f=/etc/apt/sources.list
    if [ -f "$f" ] && grep -q '^deb ' "$f" && ! grep -q '^deb-src ' "$f"; then
        say "adding deb-src lines to $f"
        sed -n 's/^deb /deb-src /p' "$f" >> "$f" || return 1
    fi
    apt-get update -qq || return 1
}

fetch_source() {
    [ -x "$IOTESTS_SRC/check" ] && return 0
    [ "$(id -u)" -eq 0 ] ||
        die "qemu's source is not in $DIR/src yet; fetching it needs root (apt-get source qemu)"
    export DEBIAN_FRONTEND=noninteractive
    if ! command -v dpkg-source >/dev/null; then
        say "installing dpkg-dev (for apt-get source)"
        apt-get install -y -qq --no-install-recommends dpkg-dev >/dev/null ||
            die "cannot install dpkg-dev"
    fi
    if ! deb_src_enabled; then
        enable_deb_src || die "cannot enable deb-src in the apt sources"
        deb_src_enabled || die "apt knows no source package qemu even with deb-src"
    fi
    say "fetching qemu $QEMU_SRC_VERSION source into $DIR/src"
    mkdir -p "$DIR/src" || die "cannot create $DIR/src"
    (cd "$DIR/src" &&
        { apt-get source -qq "qemu=$QEMU_SRC_VERSION" || apt-get source -qq qemu; }) \
        > "$DIR/fetch.log" 2>&1 || die "apt-get source qemu failed (see $DIR/fetch.log)"
    if [ ! -x "$IOTESTS_SRC/check" ]; then
        # a newer source than the binaries: take whatever directory it unpacked
        local found
        found=$(ls -d "$DIR"/src/qemu-*/tests/qemu-iotests 2>/dev/null | tail -1)
        [ -n "$found" ] || die "no tests/qemu-iotests in the fetched source"
        IOTESTS_SRC=$found
    fi
}

# --- one run of ./check --------------------------------------------------------

# A scratch "build tree" for one qemu-img: check is a symlink into the source
# (so it finds the tests there) and keeps its state and scratch files here.
# $1 label, $2 the qemu-img binary to test.
make_build_dir() {
    local build="$DIR/build-$1" img=$2
    rm -rf "$build" && mkdir -p "$build/tests/qemu-iotests" "$build/bin" "$build/real" ||
        die "cannot create $build"
    ln -s "$IOTESTS_SRC/check" "$build/tests/qemu-iotests/check"
    # named qemu-img so that its messages say qemu-img:, as qemu-img's do
    ln -s "$img" "$build/real/qemu-img"
    # a hung call fails its test instead of stopping the whole run
    cat > "$build/bin/qemu-img" <<EOF
#!/bin/sh
exec timeout -k 10 $CMD_TIMEOUT "$build/real/qemu-img" "\$@"
EOF
    cat > "$build/bin/qemu-system" <<'EOF'
#!/bin/sh
# no qemu-system on this machine: answer the machine list, refuse to run
[ "$1 $2" = "-machine help" ] && exit 0
echo "qemu-system is not installed: tests that need a VM cannot run" >&2
exit 1
EOF
    chmod +x "$build/bin/qemu-img" "$build/bin/qemu-system"
}

# Run check for one format; TAP on stdout goes to $4, diffs to $4.diffs.
# $1 label, $2 format, $3 check's selection arguments (one string), $4 tap file.
run_check() {
    local build="$DIR/build-$1" fmt=$2 args=$3 tap=$4 rc
    local scratch="$build/scratch-$fmt"
    rm -rf "$scratch" && mkdir -p "$scratch"
    # shellcheck disable=SC2086
    (cd "$build/tests/qemu-iotests" &&
        QEMU_IMG_PROG="$build/bin/qemu-img" \
        QEMU_IO_PROG=$(command -v qemu-io) \
        QEMU_NBD_PROG=$(command -v qemu-nbd) \
        QEMU_PROG="$build/bin/qemu-system" \
        QSD_PROG="$build/bin/qemu-system" \
        TEST_DIR="$scratch" \
        ./check -tap --color=off -j "$JOBS" "-$fmt" $args) > "$tap" 2> "$tap.diffs"
    rc=$?
    # check exits 1 when a test fails; anything else without results is a setup error
    grep -q "^ok \|^not ok " "$tap" && return 0
    echo "iotests: ./check -$fmt $args exited $rc with no results:" >&2
    tail -20 "$tap" "$tap.diffs" >&2
    return 1
}

# For each failing test, the first lines its output has that qemu-img's has
# not (+) and the other way round (-), from the unified diffs check printed.
# $1 the diffs file; test names on stdin.
diff_excerpts() {
    awk '
        NR == FNR { want[$1] = 1; next }
        /^--- / { name = $2; sub(/.*\//, "", name); sub(/\.out.*/, "", name)
                  shown = 0; next }
        /^\+\+\+ / { next }
        /^[-+]/ && (name in want) && shown < 3 {
            print "    " name ": " substr($0, 1, 110); shown++ }
    ' - "$1"
}

tests_with() {  # $1 tap file, $2 status (pass|fail|skip): test names, one a line
    case $2 in
        pass) sed -n 's/^ok [^ ]* \([^ ]*\)$/\1/p' "$1" ;;
        fail) sed -n 's/^not ok [^ ]* \([^ ]*\)$/\1/p' "$1" ;;
        skip) sed -n 's/^ok [^ ]* \([^ ]*\) # SKIP.*/\1/p' "$1" ;;
    esac
}

# Groups go to -g, test names (files in the suite) are passed as they are.
selection_args() {
    local groups="" tests="" w
    for w in $SELECTION; do
        if [ -f "$IOTESTS_SRC/$w" ] || [ -f "$IOTESTS_SRC/tests/$w" ]; then
            tests="$tests $w"
        else
            groups="${groups:+$groups,}$w"
        fi
    done
    echo "${groups:+-g $groups}$tests"
}

# --- main -----------------------------------------------------------------------

# one run at a time: runs share the scratch build directories
exec 9> "$DIR/lock" || die "cannot create $DIR/lock"
flock -n 9 || die "another iotests run is using $DIR"
fetch_source
make_build_dir baseline "$(command -v qemu-img)"
make_build_dir qimg "$QIMG"
ARGS=$(selection_args)
KEY=$(echo "$SELECTION" | tr -s ' /' '__')
# a long list of tests is named by its hash (a file name has at most 255 bytes)
if [ ${#KEY} -gt 100 ]; then
    KEY="${KEY:0:40}-$(printf '%s' "$SELECTION" | sha256sum | cut -c1-16)"
fi
REPORT="$DIR/report.txt"
: > "$REPORT"
say "qemu-iotests from qemu $QEMU_SRC_VERSION, selection: $SELECTION, jobs: $JOBS"
status=0
for fmt in $FMTS; do
    base_tap="$DIR/baseline-$QEMU_SRC_VERSION-$fmt-$KEY.tap"
    if [ -s "$base_tap" ]; then
        say "$fmt: baseline cached in $base_tap"
    else
        say "$fmt: baseline run with $(command -v qemu-img) (this takes a while)"
        run_check baseline "$fmt" "$ARGS" "$base_tap.tmp" || { status=2; continue; }
        mv "$base_tap.tmp" "$base_tap" && mv "$base_tap.tmp.diffs" "$base_tap.diffs"
    fi
    mapfile -t passing < <(tests_with "$base_tap" pass)
    if [ ${#passing[@]} -eq 0 ]; then
        echo "iotests: $fmt: no test passes with qemu-img itself; nothing to compare" >&2
        status=2
        continue
    fi
    say "$fmt: ${#passing[@]} tests pass with qemu-img; running them with qimg"
    qimg_tap="$DIR/qimg-$fmt.tap"
    run_check qimg "$fmt" "${passing[*]}" "$qimg_tap" || { status=2; continue; }
    mapfile -t failing < <(printf '%s\n' "${passing[@]}" |
                               grep -vxF -f <(tests_with "$qimg_tap" pass) | sort)
    npass=$(( ${#passing[@]} - ${#failing[@]} ))
    {
        echo "$fmt: $npass of ${#passing[@]} baseline-passing tests pass with qimg"
        if [ ${#failing[@]} -gt 0 ]; then
            echo "$fmt: failing with qimg: ${failing[*]}"
            printf '%s\n' "${failing[@]}" | diff_excerpts "$qimg_tap.diffs"
            echo "$fmt: diffs in $qimg_tap.diffs, outputs in $DIR/build-qimg/scratch-$fmt"
        fi
    } | tee -a "$REPORT"
    [ ${#failing[@]} -eq 0 ] || [ $status -ne 0 ] || status=1
done
say "report written to $REPORT"
exit $status
