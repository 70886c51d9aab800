#!/bin/bash
# qemu-img map on raw images: holes and data at odd places, ranges, errors.
. "$(dirname "$0")/lib.sh"

"$QEMU_IMG" create -q -f raw "$IN/a.raw" 1M
truncate -s 1G "$IN/big.raw"
qio "$IN/big.raw" "write -P 1 320k 192k"
qio "$IN/big.raw" "write -P 2 1073741823 1"
truncate -s 10M "$IN/holes.raw"
qio "$IN/holes.raw" "write -P 1 8k 4k"
qio "$IN/holes.raw" "write -P 2 1M 1M"
qio "$IN/holes.raw" "write -P 3 5M 513"
truncate -s 0 "$IN/empty.raw"
dd if=/dev/urandom of="$IN/full.raw" bs=64k count=4 status=none
cp "$IN/holes.raw" "$IN/probed.img"

for f in a.raw big.raw holes.raw empty.raw full.raw probed.img; do
    same "map $f" map "$f"
    same "map json $f" map --output=json "$f"
done
same "map range json" map --start-offset=64k --max-length=400k --output=json big.raw
same "map range human" map --start-offset=64k --max-length=400k big.raw
same "map odd start" map --start-offset=1.5k --output=json big.raw
same "map odd start human" map --start-offset=1.5k big.raw
same "map start in data" map --start-offset=0x100200 --output=json holes.raw
same "map odd range" map -f raw --output=json --max-length 5000k --start-offset 9k holes.raw
same "map max-length 0" map --max-length=0 --output=json big.raw
same "map max-length 0 human" map --max-length=0 big.raw
same "map start at end" map --start-offset=1G --output=json big.raw
same "map start past end" map --start-offset=2G --output=json big.raw
same "map start past end human" map --start-offset=2G big.raw
same "map max-length past end" map --max-length=4G --output=json holes.raw
same "map -U" map -U --output=json holes.raw
same "map --image-opts" map --image-opts driver=raw,file.filename=holes.raw

for v in -1 1x 16E 8E 1.5 ''; do
    same "map bad start '$v'" map "--start-offset=$v" big.raw
    same "map bad length '$v'" map "--max-length=$v" big.raw
done
same "map missing file" map nonexist
same "map no file" map
same "map two files" map a.raw big.raw
same "map bad output" map --output=foo a.raw
same "map bad output, no file" map --output=foo
same "map unknown format" map -f foo a.raw
