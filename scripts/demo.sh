#!/bin/bash
# make demo: the backup workflow qimg is made for, end to end, each step
# explained and printed before it runs.  A directory becomes a full backup
# image, a working disk on top of it changes, thin incremental snapshots are
# taken with convert -B, a differential one with convert -D; the chain is
# inspected, shortened with rebase and folded with commit, one file is taken
# back out and the whole disk restored to raw and compared.
# Works in a scratch directory that is removed afterwards; exits non-zero at
# the first step that fails.
set -uo pipefail
QIMG=${QIMG:-$(cd "$(dirname "$0")/.." && pwd)/build/qimg}
[ -x "$QIMG" ] || { echo "demo: no qimg at $QIMG (run make first)" >&2; exit 1; }
DIR=$(mktemp -d "${TMPDIR:-/tmp}/qimg-demo.XXXXXX") || exit 1
trap 'rm -rf "$DIR"' EXIT
cd "$DIR" || exit 1
# qimg run through this function shows up as "qimg" in the printed commands
qimg() { "$QIMG" "$@"; }

if [ -t 1 ]; then BOLD=$'\033[1m'; OFF=$'\033[0m'; else BOLD=; OFF=; fi
fail() { echo "demo: FAILED: $*" >&2; exit 1; }
say() { printf '\n%s\n' "$*"; }
# Print a command, run it, stop the demo if it fails.
step() {
    printf '%s$ %s%s\n' "$BOLD" "$*" "$OFF"
    "$@" || fail "$* (exit $?)"
}
# Like step, for a command that is expected to exit with status $1.
step_status() {
    local want=$1 got
    shift
    printf '%s$ %s%s\n' "$BOLD" "$*" "$OFF"
    "$@"
    got=$?
    [ "$got" -eq "$want" ] || fail "$* exited $got, expected $want"
}
disk_size() {  # bytes an image takes on the host, from qimg info
    qimg info --output=json "$1" | sed -n 's/.*"actual-size": \([0-9]*\).*/\1/p'
}
chain() {  # the images of a backing chain and what each one is backed by
    printf "%s\$ qimg info --backing-chain %s | grep -E '^(image|backing file):'%s\n" \
        "$BOLD" "$1" "$OFF"
    qimg info --backing-chain "$1" > chain.txt || fail "info --backing-chain $1"
    grep -E '^(image|backing file):' chain.txt || fail "no chain in info's output"
}
show_sizes() {
    local f size
    for f in "$@"; do
        size=$(disk_size "$f") && [ -n "$size" ] || fail "qimg info $f"
        printf '    %-12s %6s KiB on disk\n' "$f" $(( size / 1024 ))
    done
}

echo "qimg demo: a backup workflow, in $DIR"

say "1. Some files to protect: a config file, a note, a 2 MiB photo."
mkdir -p data/etc data/home/me || fail "mkdir"
echo "port=80" > data/etc/app.conf || fail "write app.conf"
echo "buy milk" > data/home/me/notes.txt || fail "write notes.txt"
head -c 2097152 /dev/urandom > data/home/me/photo.jpg || fail "write photo.jpg"
step find data -type f

say "2. The full backup: an ext4 filesystem filled from the directory, no root or loop device."
step qimg create -f qcow2 --from data full.qcow2
step qimg ls -l full.qcow2 /home/me

say "3. A working disk on top of it (a thin overlay); day 1 changes a file in it."
step qimg create -q -f qcow2 -b full.qcow2 -F qcow2 work.qcow2
echo "port=8080" > app.conf || fail "write app.conf"
step qimg copy-in work.qcow2 app.conf /etc
step qimg cat work.qcow2 /etc/app.conf

say "4. Snapshot 1: convert -B copies only what the working disk changed, as an overlay of the full backup."
step qimg convert -O qcow2 -B full.qcow2 -F qcow2 work.qcow2 snap1.qcow2
echo "(the working disk restarts on top of the new snapshot)"
step qimg create -q -f qcow2 -b snap1.qcow2 -F qcow2 work.qcow2

say "5. Day 2: a new note and a new photo; snapshot 2 on top of snapshot 1."
echo "buy milk and bread" > notes.txt || fail "write notes.txt"
head -c 1048576 /dev/urandom > photo2.jpg || fail "write photo2.jpg"
step qimg copy-in work.qcow2 notes.txt photo2.jpg /home/me
step qimg convert -O qcow2 -B snap1.qcow2 -F qcow2 work.qcow2 snap2.qcow2
step qimg create -q -f qcow2 -b snap2.qcow2 -F qcow2 work.qcow2
echo "(what day 2 looks like, kept aside to check the restore against at the end)"
step qimg convert -O raw work.qcow2 expected.raw
echo "Each snapshot holds only its own changes:"
show_sizes full.qcow2 snap1.qcow2 snap2.qcow2

say "6. The chain, as qemu-img shows it."
step qimg info --backing-chain snap2.qcow2

say "7. Every snapshot is a point in time: the config file as it was in the full backup and in snapshot 1."
step qimg cat full.qcow2 /etc/app.conf
step qimg cat snap1.qcow2 /etc/app.conf
echo "(compare finds where they first differ and exits 1)"
step_status 1 qimg compare full.qcow2 snap1.qcow2
step qimg ls snap2.qcow2 /home/me

say "8. A differential backup: convert -D keeps only what differs from the full backup (qimg only)."
step qimg convert -D full.qcow2 -O qcow2 snap2.qcow2 diff.qcow2
echo "(one overlay of the full backup holding the changes of both days)"
show_sizes diff.qcow2
echo "(diff.qcow2 on the full backup reads exactly as the whole chain: compare exits 0)"
step qimg compare diff.qcow2 snap2.qcow2

say "9. Take one file back out: the note as it was on day 1, from snapshot 1."
mkdir restored || fail "mkdir restored"
step qimg copy-out snap1.qcow2 /home/me/notes.txt restored
step cat restored/notes.txt

say "10. Retire snapshot 1: rebase snapshot 2 straight onto the full backup, keeping its content."
step qimg rebase -b full.qcow2 -F qcow2 snap2.qcow2
step qimg compare snap2.qcow2 expected.raw
step rm snap1.qcow2
chain snap2.qcow2

say "11. Fold snapshot 2 into the full backup with commit: full.qcow2 alone now holds day 2."
step qimg commit snap2.qcow2
step qimg check full.qcow2

say "12. Full restore: the backup back to a raw disk, checked against what day 2 looked like."
step qimg convert -O raw full.qcow2 restore.raw
step qimg compare restore.raw expected.raw
step qimg cat restore.raw /home/me/notes.txt
say "demo finished: every step succeeded"
