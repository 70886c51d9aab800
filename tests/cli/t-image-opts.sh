#!/bin/bash
# One option tree per name: plain paths, json:{...} and --image-opts give
# the same tree, its parts reach the right layer (format, file, backing,
# data-file), and options nobody takes get qemu-img's errors.
. "$(dirname "$0")/lib.sh"

cd "$IN" || exit 1
"$QEMU_IMG" create -q -f qcow2 a.qcow2 1M
"$QEMU_IO" -f qcow2 -c 'write -P 5 0 128k' a.qcow2 >/dev/null
"$QEMU_IMG" create -q -f qcow2 base.qcow2 1M
"$QEMU_IO" -f qcow2 -c 'write -P 1 0 1M' base.qcow2 >/dev/null
"$QEMU_IMG" create -q -f qcow2 other.qcow2 1M
"$QEMU_IO" -f qcow2 -c 'write -P 2 0 1M' other.qcow2 >/dev/null
"$QEMU_IMG" create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
"$QEMU_IMG" create -q -f qcow2 -o data_file=d.raw df.qcow2 1M
"$QEMU_IO" -f qcow2 -c 'write -P 3 0 64k' df.qcow2 >/dev/null
head -c 1M /dev/urandom >other.raw

# ---- json: names ----
while IFS= read -r name; do
    same "json info: $name" info "$name"
done <<'EOF'
json:{"driver":"qcow2","file":{"driver":"file","filename":"a.qcow2"}}
json:{"file":{"filename":"a.qcow2"}}
json:{"driver":"qcow2","file":{"driver":"file","filename":"a.qcow2"},"foo":"bar"}
json:{"driver":"qcow2","file":{"driver":"file","filename":"a.qcow2","foo":"bar"}}
json:{"driver":"raw","file":{"filename":"a.qcow2"},"foo":"bar"}
json:{"driver":"file","filename":"a.qcow2","foo":"bar"}
json:{"filename":"a.qcow2"}
json:{"file":"a.qcow2"}
json:{"driver":"qcow2","filename":"a.qcow2"}
json:{"driver":"qcow2","file":"a.qcow2"}
json:{"driver":"bogus","file":{"filename":"a.qcow2"}}
json:{"driver":"qcow2","file":{"driver":"bogus","filename":"a.qcow2"}}
json:{"driver":"qcow2","file":{"filename":"a.qcow2"},"lazy-refcounts":"maybe"}
json:{"driver":"qcow2","file":{"filename":"top.qcow2"},"backing":{"file":{"filename":"other.qcow2"}}}
EOF

# ---- --image-opts ----
while IFS= read -r opts; do
    same "image-opts info: $opts" info --image-opts "$opts"
    same "image-opts map: $opts" map --output=json --image-opts "$opts"
done <<'EOF'
driver=qcow2,file.driver=file,file.filename=a.qcow2
file.filename=a.qcow2
driver=qcow2,file.driver=file,file.filename=a.qcow2,foo=bar
driver=qcow2,file.filename=a.qcow2,file.foo=bar
driver=qcow2,file.filename=a.qcow2,aaa=4,zzz=3,bar=2,foo=1
driver=qcow2,file=a.qcow2
filename=a.qcow2
driver=qcow2,filename=a.qcow2
driver=bogus,file.filename=a.qcow2
driver=qcow2,file.driver=bogus,file.filename=a.qcow2
driver=qcow2,file.filename=a.qcow2,l2-cache-size=1M,cache-size=2M,lazy-refcounts=on,overlap-check=none,cache-clean-interval=10
driver=qcow2,file.filename=a.qcow2,l2-cache-size=lots
driver=raw,file.filename=a.qcow2,node-name=n1,read-only=on,discard=unmap,detect-zeroes=on,cache.direct=off,file.node-name=f1
driver=qcow2,file.filename=top.qcow2,backing=null
driver=qcow2,file.filename=top.qcow2,backing.file.filename=other.qcow2
driver=qcow2,file.filename=top.qcow2,backing.driver=qcow2,backing.file.filename=other.qcow2,backing.foo=1
driver=qcow2,file.filename=top.qcow2,backing.driver=qcow2,backing.file.filename=other.qcow2,backing.file.foo=1
driver=qcow2,file.filename=top.qcow2,backing.file.filename=nonexist.qcow2
driver=raw,file.filename=a.qcow2,backing.file.filename=other.qcow2
driver=qcow2,file.filename=a.qcow2,data-file.filename=other.raw
driver=qcow2,file.filename=df.qcow2,data-file.filename=other.raw
driver=qcow2,file.filename=df.qcow2,data-file.filename=other.raw,data-file.foo=1
driver=qcow2,file.filename=df.qcow2,data-file=other.raw
driver=qcow2,file.filename=a.qcow2,data-file=x
EOF

# raw's offset and size: a window of the file, named as qemu names it
head -c 100000 /dev/urandom >r.bin
while IFS= read -r opts; do
    same "raw window info: $opts" info --image-opts "$opts"
    same "raw window info json: $opts" info --output=json --image-opts "$opts"
    same "raw window map: $opts" map --output=json --image-opts "$opts"
    same "raw window convert: $opts" convert -O raw --image-opts "$opts" out.raw
    same "raw window compare: $opts" compare --image-opts "$opts" "driver=raw,file.filename=r.bin"
done <<'EOF'
driver=raw,file.filename=r.bin,offset=512
driver=raw,file.filename=r.bin,offset=1024,size=5120
driver=raw,file.driver=file,file.filename=r.bin,size=5120
driver=raw,file.filename=r.bin,offset=99000,size=5000
driver=raw,file.filename=r.bin,size=1000
driver=raw,file.filename=r.bin,offset=200000
driver=raw,file.filename=r.bin,offset=abc
EOF
same "raw window json: name" info 'json:{"driver":"raw","file":{"driver":"file","filename":"r.bin"},"offset":"0","size":"1024"}'
(cd "$IN" && "$QIMG_AS_QEMU" convert -O raw --image-opts "driver=raw,file.filename=r.bin,offset=1024,size=5120" "$SCRATCH/w.raw")
if cmp -s "$SCRATCH/w.raw" <(tail -c +1025 "$IN/r.bin" | head -c 5120); then pass "raw window content"
else fail "raw window content"; fi

# "backing": null (json only): no backing image
for name in 'json:{"driver":"qcow2","file":{"filename":"top.qcow2"},"backing":null}' \
            'json:{"driver":"qcow2","file":{"filename":"top.qcow2"},"l2-cache-size":null}'; do
    same "null: map $name" map --output=json "$name"
    same "null: convert $name" convert -O raw "$name" out.raw
    same "null: info --backing-chain $name" info --backing-chain "$name"
done

# the user's backing and data-file subtrees reach the data
same "convert with a user-named backing" convert -O raw --image-opts \
    "driver=qcow2,file.filename=top.qcow2,backing.driver=qcow2,backing.file.filename=other.qcow2" out.raw
same "convert with a user-named data file" convert -O raw --image-opts \
    "driver=qcow2,file.filename=df.qcow2,data-file.filename=other.raw" out.raw
same "compare a json: name with --image-opts" compare \
    'json:{"driver":"qcow2","file":{"filename":"top.qcow2"},"backing":{"driver":"qcow2","file":{"filename":"other.qcow2"}}}' other.qcow2
same "commit into a json: named chain" commit \
    'json:{"driver":"qcow2","file":{"driver":"file","filename":"top.qcow2"}}'

# storage names with prefixes and nested storage nodes are the storage
# backends' (another branch): here only their arrival is checked
if [ -e "$TOP/src/lib/io-opts-temp.c" ]; then
    echo "SKIP file:NAME, blkdebug subtree (storage backends not on this branch)"
else
    cp a.qcow2 'c:o:l.qcow2'
    same "file: prefix with colons" info 'file:c:o:l.qcow2'
    same "blkdebug under qcow2" info \
        'json:{"driver":"qcow2","file":{"driver":"blkdebug","image":{"driver":"file","filename":"a.qcow2"}}}'
    same "blkdebug under qcow2 (image-opts)" info --image-opts \
        'driver=qcow2,file.driver=blkdebug,file.image.filename=a.qcow2'
    same "blkdebug unknown option" info --image-opts \
        'driver=qcow2,file.driver=blkdebug,file.image.filename=a.qcow2,file.foo=1'
fi
