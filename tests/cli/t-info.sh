#!/bin/bash
# qemu-img info on raw images: human and json, --backing-chain, errors.
. "$(dirname "$0")/lib.sh"

"$QEMU_IMG" create -q -f raw "$IN/a.raw" 1M
truncate -s 1G "$IN/big.raw"
qio "$IN/big.raw" "write -P 7 320k 192k"
truncate -s 0 "$IN/empty.raw"
"$QEMU_IMG" create -q -f raw "$IN/zero.raw" 0
truncate -s 3T "$IN/huge.raw"
mkdir "$IN/dir" "$IN/sub"
"$QEMU_IMG" create -q -f raw "$IN/sub/s.raw" 5M
cp "$IN/a.raw" "$IN/probed.img"

for f in a.raw big.raw empty.raw zero.raw huge.raw sub/s.raw probed.img; do
    same "info $f" info "$f"
    same "info json $f" info --output=json "$f"
    same "info chain $f" info --backing-chain "$f"
    same "info chain json $f" info --backing-chain --output=json "$f"
done
same "info -f raw" info -f raw a.raw
same "info --output json (two words)" info --output json a.raw
same "info -fraw attached" info -fraw a.raw
same "info options after filename" info a.raw --output=json -f raw
same "info -U" info -U a.raw
same "info --force-share" info --force-share --output=json a.raw
same "info absolute path" info "$IN/a.raw"

# errors
same "info missing file" info nonexist
same "info directory" info dir
same "info no file name" info
same "info two file names" info a.raw big.raw
same "info unknown format" info -f foo a.raw
same "info bad output" info --output=xml a.raw
same "info bad output, no file" info --output=foo
same "info -f, no file" info -f raw
same "info --image-opts with -f" info --image-opts -f raw driver=raw,file.filename=a.raw
same "info unknown option" info -Z a.raw
same "info missing -f argument" info a.raw -f

# qimg refuses a FIFO at once (qemu-img would block on it: not run)
mkfifo "$SCRATCH/fifo"
out=$(cd "$SCRATCH" && "$QIMG_AS_QEMU" info fifo 2>&1); rc=$?
expect_eq "info FIFO message" "$out" "qemu-img: Could not open 'fifo': 'file' driver requires 'fifo' to be a regular file"
expect_eq "info FIFO rc" "$rc" 1

# raw sizes that are not whole sectors: qemu rounds the virtual size up to 512
for n in 1 511 513 1000; do
    head -c $n /dev/zero | tr '\0' 'x' > "$IN/odd$n.raw"
    same "info of a $n-byte raw" info -f raw odd$n.raw
    same "info json of a $n-byte raw" info --output=json -f raw odd$n.raw
    same "map of a $n-byte raw" map --output=json -f raw odd$n.raw
done
