#!/bin/bash
# Names as qemu-img reads them: file:NAME with colons in NAME, protocol
# prefixes ("Unknown protocol 'x'"), json:/--image-opts filenames taken
# literally, backing names resolved next to the image (info's "(actual
# path: ...)", also under blkdebug), rebase -u -F with every driver name
# qemu knows, backing format names cut as qemu stores them, and amend of
# backing_file/backing_fmt when they do not change.
. "$(dirname "$0")/lib.sh"
need_cmd "$QEMU_IMG" "$QEMU_IO"

# same_files NAME FILE...: after `same`, both tools left these files
# byte for byte alike
same_files() {
    local name=$1 f; shift
    for f in "$@"; do
        if [ -e "$SCRATCH/run.ref/work/$f" ] && cmp -s "$SCRATCH/run.ref/work/$f" "$SCRATCH/run.new/work/$f"; then
            pass "$name: $f identical"
        else
            fail "$name: $f differs or is missing"
        fi
    done
}
# no_file NAME FILE: after `same`, neither tool created FILE
no_file() {
    if [ ! -e "$SCRATCH/run.ref/work/$2" ] && [ ! -e "$SCRATCH/run.new/work/$2" ]; then
        pass "$1: no $2"
    else
        fail "$1: $2 was created"
    fi
}
# qcheck NAME FILE: qemu-img check finds nothing wrong in what qimg wrote
qcheck() { check "$1: qemu-img check" "$QEMU_IMG" check -q "$SCRATCH/run.new/work/$2"; }
# in_in CMD...: run a preparation step in $IN; a failure is a FAIL line
in_in() { (cd "$IN" && "$@" >/dev/null 2>&1) || fail "setup: $*"; }

# ---- fixtures
in_in "$QEMU_IMG" create -f qcow2 base.qcow2 1M
in_in "$QEMU_IO" -f qcow2 -c "write -P 0x11 0 192k" base.qcow2
in_in "$QEMU_IMG" create -f qcow2 -b base.qcow2 -F qcow2 file:a:b
in_in "$QEMU_IO" -f qcow2 -c "write -P 0x22 64k 64k" ./a:b
in_in "$QEMU_IMG" create -f raw file:c:d 512k
in_in "$QEMU_IO" -f raw -c "write -P 0x33 4k 8k" ./c:d
mkdir -p "$IN/sub" "$IN/x:y"
in_in "$QEMU_IMG" create -f qcow2 sub/base.qcow2 1M
in_in "$QEMU_IO" -f qcow2 -c "write -P 0x44 0 64k" sub/base.qcow2
in_in "$QEMU_IMG" create -f qcow2 -b base.qcow2 -F qcow2 sub/top.qcow2
in_in "$QEMU_IMG" create -f qcow2 -b ../base.qcow2 -F qcow2 sub/up.qcow2
in_in "$QEMU_IMG" create -f qcow2 -b ./base.qcow2 -F qcow2 sub/dot.qcow2
in_in "$QEMU_IMG" create -f qcow2 -b base.qcow2 -F qcow2 file:sub/t:op.qcow2
in_in "$QEMU_IMG" create -f qcow2 -u -b img:base.qcow2 -F qcow2 sub/colon.qcow2 1M
in_in "$QEMU_IMG" create -f qcow2 "file:x:y/in.qcow2" 1M
in_in "$QEMU_IMG" create -f qcow2 -b in.qcow2 -F qcow2 "file:x:y/over.qcow2"
in_in "$QEMU_IMG" create -f qcow2 -b "$IN/base.qcow2" -F qcow2 abs.qcow2
printf '[inject-error]\nevent = "vmstate_load"\nerrno = "5"\n' > "$IN/rules.cfg"

# ---- file:NAME: NAME is the local file, colons and all; "./NAME" is how
# qemu names it from then on
for n in file:a:b ./a:b file:./a:b file:c:d ./c:d file:sub/t:op.qcow2 sub/t:op.qcow2 \
         "file:$IN/a:b" "$IN/a:b" "file:x:y/over.qcow2" "x:y/over.qcow2"; do
    same_ro "info $n" info "$n"
    same_ro "info json $n" info --output=json "$n"
    same_ro "info chain $n" info --backing-chain "$n"
    same_ro "info chain json $n" info --backing-chain --output=json "$n"
done
for n in file:a:b file:c:d file:sub/t:op.qcow2; do
    same_ro "check $n" check "$n"
    same_ro "check json $n" check --output=json "$n"
    same_ro "map $n" map "$n"
    same_ro "map json $n" map --output=json "$n"
    same_ro "measure $n" measure -O qcow2 "$n"
    same_ro "compare $n with itself" compare "$n" "$n"
    same_ro "snapshot -l $n" snapshot -l "$n"
done
same_ro "info -f qcow2 file:a:b" info -f qcow2 file:a:b
same_ro "info -f raw file:c:d" info -f raw file:c:d
same_ro "compare file:a:b file:c:d" compare file:a:b file:c:d
same_ro "compare -f/-F" compare -f qcow2 -F raw file:a:b file:c:d
same_ro "info file: of a missing name" info file:no:such
same_ro "info file: of a missing plain name" info file:nosuch
same_ro "info file:" info file:
same_ro "info file:// name" info file://a:b
same_ro "info of an empty name" info ""
same_ro "info json: empty filename" info "json:{'driver':'qcow2','file':{'filename':''}}"
same_ro "info json: file without filename" info "json:{'driver':'qcow2','file':{'driver':'file'}}"
same_ro "info json: protocol, empty filename" info "json:{'driver':'file','filename':''}"
same "create qcow2 file:" create -f qcow2 file: 1M
same "create raw file:" create -f raw file: 1M

# convert from and to file: names: the same bytes
same "convert file:a:b to file:e:f" convert -O qcow2 file:a:b file:e:f
same_files "convert file:a:b to file:e:f" e:f
qcheck "convert file:a:b to file:e:f" e:f
same "convert file:c:d to raw file:g:h" convert -f raw -O raw file:c:d file:g:h
same_files "convert file:c:d to raw file:g:h" g:h
same "convert file:a:b -B base" convert -O qcow2 -B base.qcow2 -F qcow2 file:a:b file:e:f
same_files "convert file:a:b -B base" e:f
qcheck "convert file:a:b -B base" e:f
same "convert -n into file:c:d" convert -n -O raw base.qcow2 file:c:d
same_files "convert -n into file:c:d" c:d
same "convert two file: sources" convert -O raw file:c:d file:a:b file:i:j
same_files "convert two file: sources" i:j

# create under file: names (the header names the backing file as given)
same "create qcow2 file:e:f" create -f qcow2 file:e:f 1M
same_files "create qcow2 file:e:f" e:f
same "create raw file:e:f" create -f raw file:e:f 1M
same_files "create raw file:e:f" e:f
same "create file:e:f -b base" create -f qcow2 -b base.qcow2 -F qcow2 file:e:f
same_files "create file:e:f -b base" e:f
same "create -b file:a:b" create -f qcow2 -b file:a:b -F qcow2 t.qcow2
same_files "create -b file:a:b" t.qcow2
same "create -b ./a:b" create -f qcow2 -b ./a:b -F qcow2 t.qcow2
same_files "create -b ./a:b" t.qcow2
same "create in sub over base" create -f qcow2 -b base.qcow2 -F qcow2 file:sub/e:f
same_files "create in sub over base" sub/e:f
same "create -q file:e:f" create -q -f qcow2 file:e:f 64k
same_files "create -q file:e:f" e:f

# every command that writes, on file:a:b (and the file it leaves)
same "check -r all file:a:b" check -r all file:a:b
same_files "check -r all file:a:b" a:b
same "resize file:a:b" resize file:a:b 2M
same_files "resize file:a:b" a:b
same "resize raw file:c:d" resize -f raw file:c:d 1M
same_files "resize raw file:c:d" c:d
same "snapshot -c file:a:b" snapshot -c s1 file:a:b
qcheck "snapshot -c file:a:b" a:b     # the snapshot's time differs
same "amend file:a:b" amend -o compat=0.10 file:a:b
same_files "amend file:a:b" a:b
same "commit file:a:b" commit file:a:b
same_files "commit file:a:b" a:b base.qcow2
same "rebase -u file:a:b" rebase -u -b "" file:a:b
same_files "rebase -u file:a:b" a:b
same "rebase file:a:b onto nothing" rebase -b "" file:a:b
same_files "rebase file:a:b onto nothing" a:b
same "rebase file:sub/t:op.qcow2" rebase -b base.qcow2 -F qcow2 file:sub/t:op.qcow2
same_files "rebase file:sub/t:op.qcow2" sub/t:op.qcow2
same "bitmap --add file:a:b" bitmap --add file:a:b bm0
same_files "bitmap --add file:a:b" a:b
same "dd from file:a:b" dd if=file:a:b of=out.raw -O raw
same_files "dd from file:a:b" out.raw

# ---- protocol prefixes: a colon before any slash names a protocol
for n in a:b c:d image:top.qcow2 "a b:c" :x FILE:a:b File:c:d raw:x qcow2:x json :json \
         vvfat:x quorum:x throttle:x "$(printf 'p%.0s' $(seq 200)):x" null-co:x \
         null-co://x blkdebug:x blkdebug: blkdebug::a:b blkdebug::file:a:b \
         blkdebug::./a:b "blkdebug:rules.cfg:file:a:b" "blkdebug::$IN/a:b"; do
    same_ro "info $n" info "$n"
done
for cmd in check map measure snapshot\ -l "compare base.qcow2" "convert -O raw"; do
    # shellcheck disable=SC2086
    same_ro "$cmd a:b" $cmd a:b
done
same_ro "convert -O raw out of a:b" convert -O raw a:b nope.raw
same "create a:b" create -f qcow2 e:f 1M
no_file "create a:b" e:f
same "create raw a:b" create -f raw e:f 1M
no_file "create raw a:b" e:f
same "create a:b without size" create -f qcow2 e:f
same "create unknown format, a:b" create -f foo e:f 1M
same "create json: name" create -f qcow2 "json:{'file':{'filename':'e'}}" 1M
no_file "create json: name" e
same "create null-co://" create -f raw null-co:// 1M
same "create blkdebug::x" create -f qcow2 blkdebug::x 1M
no_file "create blkdebug::x" x
same "create blkdebug:x" create -f qcow2 blkdebug:x 1M
same "create -b img:base" create -f qcow2 -b img:base -F qcow2 t.qcow2
no_file "create -b img:base" t.qcow2
same "create -u -b img:base" create -f qcow2 -u -b img:base -F qcow2 t.qcow2 1M
same_files "create -u -b img:base" t.qcow2
same "convert into a:b" convert -O qcow2 base.qcow2 e:f
no_file "convert into a:b" e:f
same "convert into json:" convert -O qcow2 base.qcow2 "json:{}"
same "convert into null-co://" convert -O raw base.qcow2 null-co://
same "convert into blkdebug::x" convert -O raw base.qcow2 blkdebug::x
same "convert -n into a:b" convert -n -O raw base.qcow2 e:f
same "convert into a:b with bad -o" convert -O qcow2 -o foo=bar base.qcow2 e:f
same "resize a:b" resize a:b 2M
same "commit a:b" commit a:b
same "amend a:b" amend -o compat=0.10 a:b
same "rebase -u a:b" rebase -u -b "" a:b
same "snapshot -c a:b" snapshot -c s a:b

# a backing name with a protocol prefix is opened by it, as qemu does
same_ro "info colon backing" info sub/colon.qcow2
same_ro "info chain colon backing" info --backing-chain sub/colon.qcow2
same_ro "convert colon backing" convert -O raw sub/colon.qcow2 nope.raw
same_ro "map colon backing" map sub/colon.qcow2
same_ro "compare colon backing" compare sub/colon.qcow2 base.qcow2

# ---- json: and --image-opts filenames are literal: no protocol, no "file:"
for j in "{'driver':'qcow2','file':{'filename':'a:b'}}" "{'file':{'filename':'a:b'}}" \
         "{'file':{'filename':'file:a:b'}}" "{'driver':'qcow2','file':{'driver':'file','filename':'a:b'}}" \
         "{'driver':'raw','file':{'filename':'c:d'}}" "{'filename':'a:b'}" "{'filename':'file:a:b'}" \
         "{'driver':'qcow2','file':{'filename':'sub/t:op.qcow2'}}" \
         "{'driver':'qcow2','file':{'filename':'blkdebug::a:b'}}" \
         "{'driver':'qcow2','file':{'driver':'file','filename':'file:a:b'}}" \
         "{'driver':'qcow2','file':{'filename':'x:y/over.qcow2'}}"; do
    same_ro "info json:$j" info "json:$j"
    same_ro "info chain json:$j" info --backing-chain "json:$j"
    same_ro "info --output=json json:$j" info --output=json "json:$j"
done
for o in driver=qcow2,file.filename=a:b file.filename=a:b file.filename=file:a:b \
         driver=qcow2,file.driver=file,file.filename=file:a:b driver=raw,file.filename=c:d \
         driver=qcow2,file.filename=sub/t:op.qcow2; do
    same_ro "info --image-opts $o" info --image-opts "$o"
    same_ro "info chain --image-opts $o" info --backing-chain --image-opts "$o"
done
# (its backing name resolves to "a:base.qcow2": protocol "a", as in qemu)
same "convert from json: a:b" convert -O raw "json:{'driver':'qcow2','file':{'filename':'a:b'}}" out.raw
no_file "convert from json: a:b" out.raw
same "convert from json: c:d" convert -O raw "json:{'driver':'raw','file':{'filename':'c:d'}}" out.raw
same_files "convert from json: c:d" out.raw
# -f wins over the driver a json: name gives, as in qemu
same_ro "info -f raw over json: qcow2" info -f raw "json:{'driver':'qcow2','file':{'filename':'base.qcow2'}}"
same_ro "info -f qcow2 over json: raw" info -f qcow2 "json:{'driver':'raw','file':{'filename':'base.qcow2'}}"
same_ro "info -f foo over json:" info -f foo "json:{'driver':'raw','file':{'filename':'base.qcow2'}}"
same_ro "info -f qcow2 over json: foo" info -f qcow2 "json:{'driver':'foo','file':{'filename':'base.qcow2'}}"
same_ro "info -f raw over json: file" info -f raw "json:{'driver':'file','filename':'base.qcow2'}"

# ---- blkdebug: its image from the name string or image.*; never a bare
# "image" (a node name) nor "filename"
bd="{'driver':'qcow2','file':{'driver':'blkdebug'"
for j in "$bd,'image':{'driver':'file','filename':'a:b'}}}" "$bd,'image':'a:b'}}" \
         "$bd,'filename':'blkdebug::a:b'}}" "$bd,'filename':'a:b'}}" \
         "$bd,'image':{'filename':'file:a:b'}}}" \
         "$bd,'config':'rules.cfg','image':{'driver':'file','filename':'sub/top.qcow2'}}}" \
         "$bd,'image':{'driver':'file','filename':'sub/top.qcow2'}}}" \
         "$bd,'image':{'driver':'file','filename':'x:y/over.qcow2'}}}" \
         "$bd,'image':{'driver':'file','filename':'sub/t:op.qcow2'}}}"; do
    same_ro "info json:$j" info "json:$j"
    same_ro "info --output=json json:$j" info --output=json "json:$j"
done

# ---- relative backing names resolve next to the image: "(actual path: ...)"
for n in sub/top.qcow2 ./sub/top.qcow2 sub/up.qcow2 sub/dot.qcow2 abs.qcow2 \
         "$IN/sub/top.qcow2" "file:sub/top.qcow2" "file:./sub/top.qcow2" \
         "blkdebug::sub/top.qcow2" "blkdebug::./sub/top.qcow2" "blkdebug::$IN/sub/top.qcow2" \
         "blkdebug:rules.cfg:sub/top.qcow2" "blkdebug::file:sub/t:op.qcow2" \
         "blkdebug::x:y/over.qcow2" "blkdebug::./x:y/over.qcow2"; do
    same_ro "info $n" info "$n"
    same_ro "info json $n" info --output=json "$n"
    same_ro "info chain $n" info --backing-chain "$n"
    same_ro "info chain json $n" info --backing-chain --output=json "$n"
    same_ro "map $n" map --output=json "$n"
    same_ro "compare $n" compare "$n" sub/base.qcow2
done
for j in "{'driver':'qcow2','file':{'filename':'sub/top.qcow2'}}" \
         "{'driver':'qcow2','file':{'filename':'$IN/sub/top.qcow2'}}" \
         "$bd,'image':{'driver':'file','filename':'$IN/sub/top.qcow2'}}}" \
         "$bd,'image':{'driver':'file','filename':'sub/top.qcow2'},'align':4096}}"; do
    same_ro "map json:$j" map --output=json "json:$j"
    same_ro "compare json:$j" compare "json:$j" sub/base.qcow2
done
for j in "{'driver':'qcow2','file':{'filename':'sub/top.qcow2'}}" \
         "{'driver':'qcow2','file':{'filename':'$IN/sub/top.qcow2'}}" \
         "$bd,'image':{'driver':'file','filename':'$IN/sub/top.qcow2'}}}" \
         "$bd,'image':{'driver':'file','filename':'sub/top.qcow2'},'align':4096}}"; do
    same_ro "info chain json:$j" info --backing-chain "json:$j"
done
# qemu prints its own json:{...} name for a node it cannot name by a file:
# the options that decide what it reads, typed as the json: text gave them
in_in "$QEMU_IMG" create -f raw r.raw 1M
for j in "$bd,'image':{'driver':'file','filename':'$IN/sub/top.qcow2'},'set-state':[{'event':'read_aio','new_state':42}]}}" \
         "$bd,'image':{'driver':'file','filename':'sub/top.qcow2'},'align':4096}}" \
         "$bd,'image':{'driver':'file','filename':'sub/top.qcow2'},'align':4096,'max-transfer':65536}}" \
         "$bd,'config':'rules.cfg','image':{'driver':'file','filename':'$IN/sub/top.qcow2'},'align':512}}" \
         "$bd,'image':{'filename':'sub/top.qcow2','locking':'off'},'inject-error':[{'event':'l2_load','once':true,'immediately':false}]}}" \
         "{'file':{'driver':'blkdebug','image':{'filename':'sub/top.qcow2'},'align':512}}" \
         "{'driver':'raw','offset':512,'size':4096,'file':{'filename':'r.raw'}}" \
         "{'driver':'raw','size':4096,'file':{'driver':'file','filename':'r.raw','locking':'off'}}" \
         "{'driver':'raw','file':{'driver':'null-co'}}" \
         "{'driver':'raw','file':{'driver':'null-co','size':1048576}}" \
         "{'driver':'raw','file':{'driver':'null-aio','read-zeroes':true,'latency-ns':5}}" \
         "{'driver':'raw','size':512,'file':{'driver':'blkdebug','config':'rules.cfg','image':{'driver':'blkdebug','image':{'filename':'r.raw'}}}}"; do
    same_ro "info json:$j" info "json:$j"
    same_ro "info chain json:$j" info --backing-chain "json:$j"
    same_ro "info --output=json json:$j" info --output=json "json:$j"
done
for o in driver=raw,offset=512,size=4096,file.filename=r.raw \
         driver=qcow2,file.driver=blkdebug,file.image.filename=sub/top.qcow2,file.align=4096,file.image.locking=off \
         driver=raw,file.driver=null-aio,file.size=1M driver=raw,file.driver=null-co; do
    same_ro "info --image-opts $o" info --image-opts "$o"
done
# the same chain read through the filter: the bytes of the plain chain
same "convert through blkdebug" convert -O raw "blkdebug::sub/top.qcow2" out.raw
same_files "convert through blkdebug" out.raw
same "convert through json blkdebug" convert -O raw "json:$bd,'image':{'driver':'file','filename':'sub/top.qcow2'},'align':4096}}" out.raw
same_files "convert through json blkdebug" out.raw
same "rebase -b through blkdebug" rebase -b "" "blkdebug::sub/top.qcow2"
same_files "rebase -b through blkdebug" sub/top.qcow2
same "commit through blkdebug" commit "blkdebug::sub/top.qcow2"
same_files "commit through blkdebug" sub/top.qcow2 sub/base.qcow2

# ---- rebase -u -F: every driver name qemu-img knows is recorded (cut to
# 15 characters, as qemu stores it); others are refused
for f in blkdebug blklogwrites blkverify bochs cloop compress copy-before-write copy-on-read \
         dmg file ftp ftps gluster host_cdrom host_device http https iscsi iser luks nbd nfs \
         null-aio null-co nvme parallels preallocate qcow qcow2 qed quorum raw rbd replication \
         snapshot-access ssh throttle vdi vhdx vmdk vpc vvfat; do
    same "rebase -u -F $f" rebase -u -b /some/backing/file/path -F "$f" base.qcow2
    same_files "rebase -u -F $f" base.qcow2
done
for f in blkreplay nbd+unix json foo QCOW2 ""; do
    same "rebase -u -F '$f'" rebase -u -b /some/backing/file/path -F "$f" base.qcow2
    same_files "rebase -u -F '$f'" base.qcow2
done
same_ro "info of a cut backing format" info "$SCRATCH/run.new/work/base.qcow2"
for f in copy-before-write snapshot-access nbd; do
    same "create -u -F $f" create -f qcow2 -u -b /x -F "$f" t.qcow2 1M
    same_files "create -u -F $f" t.qcow2
    same "amend after create -u -F $f" amend -o compat=0.10 t.qcow2
done
in_in "$QEMU_IMG" create -f qcow2 -u -b /x -F copy-before-write long.qcow2 1M
same "amend keeps the cut format" amend -o backing_file=/x,backing_fmt=copy-before-wri long.qcow2
same_files "amend keeps the cut format" long.qcow2
same "amend with the uncut format" amend -o backing_file=/x,backing_fmt=copy-before-write long.qcow2

# ---- amend: backing_file/backing_fmt accepted when they do not change
in_in "$QEMU_IMG" create -f qcow2 t.qcow2 1M
in_in "$QEMU_IMG" create -f qcow2 -b t.qcow2 -F qcow2 top.qcow2
in_in "$QEMU_IMG" create -f qcow2 -b base.qcow2 -F raw nofmt.qcow2
# the format extension's magic changed: a backing file without a format
printf '\x12\x34\x56\x78' | dd of="$IN/nofmt.qcow2" bs=1 seek=112 conv=notrunc status=none
for o in backing_file=t.qcow2,backing_fmt=qcow2 backing_file=t.qcow2 backing_fmt=qcow2 \
         backing_file=./t.qcow2,backing_fmt=qcow2 backing_file=t.qcow2,backing_fmt=raw \
         backing_file=,backing_fmt=qcow2 "backing_file=t.qcow2,backing_fmt=qcow2,compat=0.10" \
         "backing_file=t.qcow2,backing_fmt=qcow2,size=2M" "backing_file=t.qcow2,backing_fmt=qcow2,lazy_refcounts=on" \
         "backing_file=x,lazy_refcounts=on" "backing_file=x,compat=0.42" "backing_file=x,refcount_bits=3" \
         "backing_file=x,data_file=y" "backing_file=t.qcow2,backing_fmt=qcow2,foo=bar"; do
    same "amend top $o" amend -o "$o" top.qcow2
    same_files "amend top $o" top.qcow2
done
for o in backing_file=base.qcow2 backing_file=base.qcow2,backing_fmt=raw backing_file=base.qcow2,backing_fmt= \
         "backing_file=base.qcow2,compat=0.10"; do
    same "amend no-format $o" amend -o "$o" nofmt.qcow2
    same_files "amend no-format $o" nofmt.qcow2
done
for o in backing_file= backing_fmt= backing_file=t.qcow2 "backing_file=,compat=0.10"; do
    same "amend no backing $o" amend -o "$o" t.qcow2
    same_files "amend no backing $o" t.qcow2
done
same "amend unchanged backing via file:" amend -o backing_file=base.qcow2,backing_fmt=qcow2 file:a:b
same_files "amend unchanged backing via file:" a:b

# ---- a protocol named as the image (json: "driver": "file", -f file): its
# bytes are the image, shown by the protocol's name, never probed
pj="json:{'driver':'file','filename':'base.qcow2'}"
for a in "info $pj" "info --output=json $pj" "info --backing-chain json:{'driver':'file','filename':'a:b'}" \
         "check $pj" "map --output=json $pj" "compare $pj base.qcow2" "measure -O qcow2 $pj" \
         "snapshot -l $pj" "info json:{'driver':'null-co','size':4096}" \
         "info json:{'driver':'blkdebug','image':{'filename':'base.qcow2'}}" \
         "info json:{'driver':'blkdebug','image':{'filename':'base.qcow2'},'align':4096}" \
         "info json:{'driver':'file','filename':'base.qcow2','locking':'off'}" \
         "info -f file base.qcow2" "info -f file file:a:b" "info -f file a:b" "info -f null-co null-co://" \
         "info -f null-co x" "info -f blkdebug blkdebug::base.qcow2" "info -f blkdebug base.qcow2" \
         "info -f file json:{'filename':'base.qcow2'}" "info -f null-co json:{'size':4096}" \
         "map -f file base.qcow2" "info --backing-chain -f file a:b"; do
    # shellcheck disable=SC2086
    same_ro "${a}" $a
done
same_ro "info --image-opts driver=file,filename=base.qcow2" info --image-opts driver=file,filename=base.qcow2
same_ro "info --image-opts driver=null-aio,size=1M,read-zeroes=on" info --image-opts driver=null-aio,size=1M,read-zeroes=on
same "convert a protocol named as the image" convert -O raw "$pj" out.raw
same_files "convert a protocol named as the image" out.raw
same "convert -f file" convert -f file -O qcow2 base.qcow2 out.qcow2
same_files "convert -f file" out.qcow2
same "resize a protocol named as the image" resize "$pj" 2M
same_files "resize a protocol named as the image" base.qcow2

# ---- a backing name recorded with "file:" is read as qemu reads it
in_in "$QEMU_IMG" create -f qcow2 -u -b file:a:b -F qcow2 fb.qcow2 1M
in_in "$QEMU_IMG" create -f qcow2 -u -b file:base.qcow2 -F qcow2 sub/fb2.qcow2 1M
for a in "info --backing-chain fb.qcow2" "info --backing-chain --output=json fb.qcow2" \
         "info --backing-chain sub/fb2.qcow2" "compare fb.qcow2 file:a:b" "map --output=json fb.qcow2"; do
    # shellcheck disable=SC2086
    same_ro "$a" $a
done
same "convert over a file: backing" convert -O raw fb.qcow2 out.raw
same_files "convert over a file: backing" out.raw
same "rebase onto a:b" rebase -b a:b -F qcow2 fb.qcow2
same_files "rebase onto a:b" fb.qcow2
same "rebase -u onto a:b" rebase -u -b a:b -F qcow2 fb.qcow2
same_files "rebase -u onto a:b" fb.qcow2
same "rebase onto file:a:b" rebase -b file:a:b -F qcow2 sub/fb2.qcow2
same_files "rebase onto file:a:b" sub/fb2.qcow2
same "commit -b file:a:b" commit -b file:a:b fb.qcow2
same_files "commit -b file:a:b" fb.qcow2 a:b
same "convert -B file:a:b" convert -O qcow2 -B file:a:b -F qcow2 fb.qcow2 out.qcow2
same_files "convert -B file:a:b" out.qcow2
same "create through blkdebug: over base" create -f qcow2 -b base.qcow2 -F qcow2 blkdebug::sub/n.qcow2

# ---- rebase: option checks and names, as qemu-img makes them
in_in "$QEMU_IMG" create -f qcow2 -b base.qcow2 -F qcow2 rt.qcow2
in_in "$QEMU_IMG" create -f raw rr.raw 1M
while IFS= read -r line; do
    eval "set -- $line"
    same "rebase $line" rebase "$@"
    [ -e "$SCRATCH/run.ref/work/rt.qcow2" ] && same_files "rebase $line" rt.qcow2
done <<'CASES'
-u -b base.qcow2 rt.qcow2
-b base.qcow2 rt.qcow2
-u -F qcow2 rt.qcow2
-F qcow2 rt.qcow2
-u -b '' -F qcow2 rt.qcow2
-b '' -F qcow2 rt.qcow2
-u -b base.qcow2 -F foo rt.qcow2
-b base.qcow2 -F nbd rt.qcow2
-b base.qcow2 -F raw rt.qcow2
-b base.qcow2 -F file rt.qcow2
-u -b base.qcow2 -F qcow2 -f foo rt.qcow2
-u -b base.qcow2 -F qcow2 -f raw rr.raw
-u -b base.qcow2 -F qcow2 -t foo rt.qcow2
-u -b base.qcow2 -F qcow2 -T foo rt.qcow2
-u rt.qcow2
rt.qcow2
-b base.qcow2 -F qcow2
-b base.qcow2 -F qcow2 rt.qcow2 x
-u -b nonexist -F qcow2 rt.qcow2
-b nonexist -F qcow2 rt.qcow2
-b a:b -F qcow2 rt.qcow2
-b file:nonexist -F qcow2 rt.qcow2
-u -b base.qcow2 -F qcow2 --image-opts driver=qcow2,file.filename=rt.qcow2
-u -b base.qcow2 -F qcow2 -f qcow2 --image-opts driver=qcow2,file.filename=rt.qcow2
-b base.qcow2 -F qcow2 "json:{'driver':'file','filename':'rt.qcow2'}"
-u -b base.qcow2 -F qcow2 "json:{'driver':'raw','file':{'filename':'rt.qcow2'}}"
-u -b base.qcow2 -F qcow2 "json:{'driver':'qcow2','file':{'driver':'blkdebug','image':{'filename':'rt.qcow2'}}}"
CASES
# Deliberate difference: qemu-img resolves a relative new backing name
# against the overlay's own name, "blkdebug::rt.qcow2" giving the name
# "blkdebug:sub/base.qcow2" it then fails to open; qimg resolves it next to
# the image under the filter, as the image itself will: the same image as
# qemu-img's rebase of the plain file.
run_in_copy ref "$QEMU_IMG" rebase -b sub/base.qcow2 -F qcow2 rt.qcow2
run_in_copy new "$QIMG_AS_QEMU" rebase -b sub/base.qcow2 -F qcow2 \
    "json:{'driver':'qcow2','file':{'driver':'blkdebug','image':{'filename':'rt.qcow2'}}}"
expect_eq "rebase under blkdebug, relative new backing: exit code" "$(cat "$SCRATCH/run.new/rc")" 0
same_files "rebase under blkdebug, relative new backing" rt.qcow2
