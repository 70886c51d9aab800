#!/bin/bash
# qemu's image locks: qimg and qemu keep out of each other's way.
# qemu-nbd serving a raw image refuses to share "resize"; a resize must then
# fail in qimg exactly as in qemu-img, and -U / readers must still work.
. "$(dirname "$0")/lib.sh"
need_cmd qemu-nbd

img=$SCRATCH/locked.img
sock=$SCRATCH/nbd.sock
"$QEMU_IMG" create -f raw "$img" 1M >/dev/null || fail "create"
pidfile=$SCRATCH/nbd.pid
if ! qemu-nbd -f raw -k "$sock" --pid-file="$pidfile" --fork "$img"; then
    fail "qemu-nbd holds the image"; exit 0
fi
trap 'kill "$(cat "$pidfile")" 2>/dev/null; rm -rf "$SCRATCH"' EXIT

cd "$SCRATCH"
ref_err=$("$QEMU_IMG" resize -f raw locked.img 2M 2>&1 >/dev/null); ref_rc=$?
new_err=$("$QIMG_AS_QEMU" resize -f raw locked.img 2M 2>&1 >/dev/null); new_rc=$?
expect_eq "resize of a locked image: message" "$new_err" "$ref_err"
expect_eq "resize of a locked image: exit code" "$new_rc" "$ref_rc"
case "$new_err" in *'Failed to get "resize" lock'*) pass "lock conflict detected" ;;
    *) fail "lock conflict detected" "$new_err" ;; esac

# readers of a raw image share everything
if "$QIMG" map -f raw locked.img >/dev/null 2>&1; then pass "reader opens a locked raw image"
else fail "reader opens a locked raw image"; fi
size=$(stat -c %s locked.img)
expect_eq "locked image untouched" "$size" 1048576

# wait until the holder is really gone (a loaded machine may take seconds)
nbd_pid=$(cat "$pidfile")
kill "$nbd_pid"
for _ in $(seq 100); do kill -0 "$nbd_pid" 2>/dev/null || break; sleep 0.1; done
# once the holder is gone, our resize works and qemu sees it
if "$QIMG" resize -f raw locked.img 2M >/dev/null 2>&1; then pass "resize after unlock"
else fail "resize after unlock"; fi
expect_eq "size after resize" "$(stat -c %s locked.img)" 2097152
