#!/bin/bash
# make demo: a short end-to-end tour of qimg on raw images, each step
# printed before it runs.  Uses a scratch directory that is removed after.
set -euo pipefail
QIMG=${QIMG:-$(cd "$(dirname "$0")/.." && pwd)/build/qimg}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/qimg-demo.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
cd "$DIR"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

echo "qimg demo in $DIR"
step "$QIMG" create -f raw disk.raw 64M
echo "(writing 1 MiB of data at 0 and at 40 MiB)"
head -c 1048576 /dev/urandom > chunk
dd if=chunk of=disk.raw bs=1M seek=0 conv=notrunc status=none
dd if=chunk of=disk.raw bs=1M seek=40 conv=notrunc status=none
step "$QIMG" info disk.raw
step "$QIMG" info --output=json disk.raw
step "$QIMG" map disk.raw
step "$QIMG" convert -p -f raw -O raw disk.raw copy.raw
step "$QIMG" compare disk.raw copy.raw
step "$QIMG" map --output=json copy.raw
step "$QIMG" measure -O raw copy.raw
step "$QIMG" dd -f raw -O raw bs=1M count=2 skip=40 if=disk.raw of=slice.raw
step cmp slice.raw <(head -c 2097152 <(cat chunk /dev/zero))
step "$QIMG" resize -f raw copy.raw 128M
step "$QIMG" compare disk.raw copy.raw
set +e
step "$QIMG" check copy.raw
echo "(exit code $?: raw images have no metadata to check, as with qemu-img)"
echo
echo "demo finished: every step succeeded"
