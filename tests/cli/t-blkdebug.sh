#!/bin/bash
# The null-co and blkdebug storage backends against qemu-img: info, map,
# convert from and to null-co, and convert, check (-r), map, snapshot
# (-c, -d, -a), commit (into the base, and the emptying of the top),
# amend -o refcount_bits and rebase with errors injected by blkdebug rules
# (qemu's rules file format).  After a failure, what the command left
# behind must be what qemu leaves (its check: leaks and errors alike, the
# close-time "Failed to flush ..." reports), or less: a convert that failed
# leaves no target that looks complete.
. "$(dirname "$0")/lib.sh"

if [ ! -x "$QEMU_IO" ]; then
    echo "SKIP t-blkdebug: no qemu-io to write test data"
    exit 0
fi

"$QEMU_IMG" create -q -f qcow2 "$IN/img.qcow2" 4M
"$QEMU_IO" -c 'write -P 0x11 0 1M' -c 'write -P 0x22 2M 64k' "$IN/img.qcow2" >/dev/null
"$QEMU_IMG" create -q -f raw "$IN/r.raw" 1M
"$QEMU_IO" -f raw -c 'write -P 0x33 0 4k' "$IN/r.raw" >/dev/null

rule() {   # rule FILE EVENT [KEY VALUE]... : one inject-error section
    local f=$IN/$1 ev=$2; shift 2
    { echo '[inject-error]'; echo "event = \"$ev\""
      while [ $# -ge 2 ]; do echo "$1 = \"$2\""; shift 2; done; } >"$f"
}
printf '' >"$IN/empty.cfg"

# ---- null-co
same "info null-co://" info null-co://
same "info --output=json null-co://" info --output=json null-co://
same "info null-aio://" info null-aio://
same "info null-co:// with a name" info null-co://x
same "map null-co:// (human)" map null-co://
same "resize null-co:// (unsupported)" resize null-co:// 2G
same "check null-co:// (no check)" check null-co://
same "compare null-co:// null-aio://" compare null-co:// null-aio://
same "convert -n to null-co://" convert -n -O raw img.qcow2 null-co://
same "convert null-co:// to qcow2" convert -O qcow2 null-co:// out.qcow2
expect_eq "convert null-co:// to qcow2: same map" \
    "$("$QEMU_IMG" map --output=json "$SCRATCH/run.new/work/out.qcow2" 2>&1)" \
    "$("$QEMU_IMG" map --output=json "$SCRATCH/run.ref/work/out.qcow2" 2>&1)"

# ---- blkdebug: names and rules files
same "info blkdebug: no rules" info blkdebug:empty.cfg:img.qcow2
same "info blkdebug: empty rules name" info blkdebug::img.qcow2
same "info --output=json blkdebug: raw" info --output=json blkdebug::r.raw
same "map blkdebug: raw" map --output=json blkdebug::r.raw
same "map blkdebug: qcow2" map blkdebug::img.qcow2
same "blkdebug: no image part" info blkdebug:img.qcow2
same "blkdebug: missing rules file" info blkdebug:nonexist.cfg:img.qcow2
printf 'garbage\n' >"$IN/bad1.cfg"
same "rules: no group" info blkdebug:bad1.cfg:img.qcow2
printf '[inject-error]\ngarbage\n' >"$IN/bad2.cfg"
same "rules: bare word" info blkdebug:bad2.cfg:img.qcow2
printf '[inject-error]\nevent = "read_aio"\n  \n' >"$IN/bad3.cfg"
same "rules: blank line with spaces" info blkdebug:bad3.cfg:img.qcow2
printf '[nosuch]\nevent = "read_aio"\n' >"$IN/bad4.cfg"
same "rules: unknown group" info blkdebug:bad4.cfg:img.qcow2
printf '[inject-error\nevent = "read_aio"\n' >"$IN/bad5.cfg"
same "rules: unclosed group" info blkdebug:bad5.cfg:img.qcow2
rule bad6.cfg nosuch_event
same "rules: unknown event" info blkdebug:bad6.cfg:img.qcow2
printf '[inject-error]\nerrno = "5"\n' >"$IN/bad7.cfg"
same "rules: no event" info blkdebug:bad7.cfg:img.qcow2
rule bad8.cfg read_aio errno ""
same "rules: errno not a number" info blkdebug:bad8.cfg:img.qcow2
rule bad9.cfg read_aio once maybe
same "rules: once not a bool" info blkdebug:bad9.cfg:img.qcow2
rule bad10.cfg read_aio iotype bogus
same "rules: unknown iotype" info blkdebug:bad10.cfg:img.qcow2
rule bad11.cfg read_aio bogus 1
same "rules: unknown key" info blkdebug:bad11.cfg:img.qcow2
printf '# a comment\n\n[inject-error "r1"]\nevent = "read_aio"\n' >"$IN/ok1.cfg"
same "rules: comment and section id" info blkdebug:ok1.cfg:img.qcow2
rule none.cfg none
same "event none: armed at open (probe fails)" info blkdebug:none.cfg:img.qcow2

# ---- injected errors: convert (one worker, as qemu's messages depend on order)
no_target() {   # NAME FILE: a failed convert left no file of that name
    if [ -e "$SCRATCH/run.new/work/$2" ]; then fail "$1" "$2 left behind"; else pass "$1"; fi
}
for ev in read_aio l2_load refblock_load write_aio flush_to_disk pwritev cluster_alloc \
          l1_update l2_update refblock_update_part; do
    for once in on off; do
        rule ev.cfg $ev once $once
        same "convert, $ev once=$once" convert -m 1 -O raw blkdebug:ev.cfg:img.qcow2 out.raw
        if [ "$(cat "$SCRATCH/run.ref/rc")" != 0 ]; then
            no_target "convert, $ev once=$once: no target" out.raw
        else
            check "convert, $ev once=$once: content" cmp "$SCRATCH/run.new/work/out.raw" "$SCRATCH/run.ref/work/out.raw"
        fi
        same "check, $ev once=$once" check blkdebug:ev.cfg:img.qcow2
        same "map, $ev once=$once" map --output=json blkdebug:ev.cfg:img.qcow2
    done
done
rule sector.cfg read_aio sector 4096
same "convert, error at one sector" convert -m 1 -O raw blkdebug:sector.cfg:img.qcow2 out.raw
rule errno.cfg read_aio errno 28
same "convert, errno 28" convert -m 1 -O raw blkdebug:errno.cfg:img.qcow2 out.raw
rule iot.cfg l2_load iotype flush
same "convert, rule for flushes only" convert -m 1 -O raw blkdebug:iot.cfg:img.qcow2 out.raw
# state machine: l2_load moves to state 2, where reads fail
printf '[set-state]\nevent = "l2_load"\nstate = "1"\nnew_state = "2"\n[inject-error]\nevent = "read_aio"\nstate = "2"\n' >"$IN/state.cfg"
same "convert, set-state then inject" convert -m 1 -O raw blkdebug:state.cfg:img.qcow2 out.raw
printf '[set-state]\nevent = "l2_load"\nstate = "3"\nnew_state = "2"\n[inject-error]\nevent = "read_aio"\nstate = "2"\n' >"$IN/state2.cfg"
same "convert, state never reached" convert -m 1 -O raw blkdebug:state2.cfg:img.qcow2 out.raw

# ---- injected errors in the target: convert -n into a qcow2 behind
# blkdebug (new L2 tables in qemu's order: cluster, refcounts, table,
# L1 entry; the cluster given back when a step fails; nothing read back)
"$QEMU_IMG" create -q -f qcow2 "$IN/tgt.qcow2" 4M
for spec in l1_update:on l1_update:off l2_load:on l2_load:off l2_alloc_write:on l2_alloc_write:off \
            refblock_alloc:on refblock_load:off refblock_update_part:off reftable_update:off \
            pwritev:on pwritev:off pwritev_zero:off cluster_alloc:on cluster_alloc:off \
            flush_to_disk:off write_aio:on l2_update:on l2_update:off; do
    ev=${spec%:*} once=${spec#*:}
    rule t.cfg $ev once $once
    same "convert -n into blkdebug, $ev once=$once" convert -m 1 -n -O qcow2 img.qcow2 blkdebug:t.cfg:tgt.qcow2
    check_same "convert -n into blkdebug, $ev once=$once: target checks alike" tgt.qcow2
    expect_eq "convert -n into blkdebug, $ev once=$once: target maps alike" \
        "$("$QEMU_IMG" map --output=json "$SCRATCH/run.new/work/tgt.qcow2" 2>&1)" \
        "$("$QEMU_IMG" map --output=json "$SCRATCH/run.ref/work/tgt.qcow2" 2>&1)"
done

# ---- injected errors: snapshot, and the image left behind must check alike
check_same() {   # NAME FILE: qemu-img check of both results agree
    expect_eq "$1" "$("$QEMU_IMG" check "$SCRATCH/run.new/work/$2" 2>&1 | sed 's|.*/work/||'; echo "rc=$?")" \
        "$("$QEMU_IMG" check "$SCRATCH/run.ref/work/$2" 2>&1 | sed 's|.*/work/||'; echo "rc=$?")"
}
for spec in l1_update:on l1_update:off read_aio:off write_aio:off flush_to_disk:on flush_to_disk:off \
            cluster_alloc:on cluster_alloc:off reftable_update:off pwritev:on l2_update:on \
            l2_alloc_write:off refblock_load:on l2_load:off refblock_update_part:on \
            refblock_update_part:off; do
    # (l2_load once=on: qemu leaks the new snapshot's L1 copy, qimg frees it)
    ev=${spec%:*} once=${spec#*:}
    rule ev.cfg $ev once $once
    same "snapshot -c, $ev once=$once" snapshot -c s1 blkdebug:ev.cfg:img.qcow2
    check_same "snapshot -c, $ev once=$once: image checks alike" img.qcow2
done

# ---- injected errors: snapshot -d (qemu's order: the entry leaves the
# table, then references drop, the L1 table is freed - a failure there
# only leaks), snapshot -a and check -r: messages, exit codes, and the
# image left behind (check, snapshot list)
"$QEMU_IMG" create -q -f qcow2 "$IN/sd.qcow2" 16M
"$QEMU_IO" -c 'write -P 1 0 1M' "$IN/sd.qcow2" >/dev/null
"$QEMU_IMG" snapshot -c s1 "$IN/sd.qcow2"
"$QEMU_IO" -c 'write -P 2 512k 1M' "$IN/sd.qcow2" >/dev/null
snaps_same() {   # NAME: both results list the same snapshots
    expect_eq "$1" "$("$QEMU_IMG" snapshot -l "$SCRATCH/run.new/work/sd.qcow2" | cut -c1-30)" \
        "$("$QEMU_IMG" snapshot -l "$SCRATCH/run.ref/work/sd.qcow2" | cut -c1-30)"
}
for spec in l1_update:on l1_update:off l2_load:on l2_load:off l2_update:on refblock_alloc:on \
            refblock_alloc:off refblock_load:on refblock_load:off reftable_update:off \
            pwritev:on pwritev:off cluster_alloc:on cluster_alloc:off flush_to_disk:off \
            read_aio:off; do
    ev=${spec%:*} once=${spec#*:}
    rule sd.cfg $ev once $once
    same "snapshot -d, $ev once=$once" snapshot -d s1 blkdebug:sd.cfg:sd.qcow2
    check_same "snapshot -d, $ev once=$once: image checks alike" sd.qcow2
    snaps_same "snapshot -d, $ev once=$once: same snapshots"
    same "snapshot -a, $ev once=$once" snapshot -a s1 blkdebug:sd.cfg:sd.qcow2
    check_same "snapshot -a, $ev once=$once: image checks alike" sd.qcow2
    same "check -r all, $ev once=$once" check -r all blkdebug:sd.cfg:sd.qcow2
    check_same "check -r all, $ev once=$once: image checks alike" sd.qcow2
done
rule sd.cfg l2_load
same "snapshot -d, l2_load: message" snapshot -d s1 blkdebug:sd.cfg:sd.qcow2
ref_rc "snapshot -d, l2_load" 1
# an entry whose L1 table offset is invalid is refused before the table
# changes (qemu validates it first): the image stays as it was
cp "$IN/sd.qcow2" "$IN/sdbad.qcow2"
poke64 "$IN/sdbad.qcow2" "$(peek64 "$IN/sdbad.qcow2" 64)" $(($(peek64 "$IN/sdbad.qcow2" "$(peek64 "$IN/sdbad.qcow2" 64)") + 512))
same "snapshot -d, L1 offset invalid" snapshot -d s1 sdbad.qcow2
ref_rc "snapshot -d, L1 offset invalid" 1
check "snapshot -d, L1 offset invalid: file unchanged" cmp "$SCRATCH/run.new/work/sdbad.qcow2" "$IN/sdbad.qcow2"

# ---- injected errors: commit into a backing file behind blkdebug
"$QEMU_IMG" create -q -f qcow2 "$IN/base.qcow2" 4M
"$QEMU_IO" -c 'write -P 0x11 0 1M' "$IN/base.qcow2" >/dev/null
: >"$IN/w.cfg"
(cd "$IN" && "$QEMU_IMG" create -q -f qcow2 -b blkdebug:w.cfg:base.qcow2 -F qcow2 top.qcow2)
(cd "$IN" && "$QEMU_IO" -c 'write -P 0x22 512k 1M' top.qcow2 >/dev/null)   # rules name relative to the cwd
for once in on; do
    rule w.cfg write_aio once $once
    same "commit, write_aio once=$once" commit top.qcow2
    # our workers write in parallel: blocks other than the failed one may
    # have reached the base (qemu's job stops earlier); base must be sound
    check "commit, write_aio: base checks clean" "$QEMU_IMG" check "$SCRATCH/run.new/work/base.qcow2"
    check "commit failed: top left as it was" cmp "$SCRATCH/run.new/work/top.qcow2" "$IN/top.qcow2"
done
: >"$IN/w.cfg"
same "commit through blkdebug, no rules" commit top.qcow2
check "commit through blkdebug: same content" "$QEMU_IMG" compare "$SCRATCH/run.new/work/base.qcow2" "$SCRATCH/run.ref/work/base.qcow2"

# ---- injected errors: commit of a top image behind blkdebug, which is
# then emptied: each step of the rebuild (dirty bit, L1 wipe, new tables,
# refcounts, clean bit) fails in turn; the message, the close-time cache
# flush reports, and what the top holds afterwards (check, data, map) are
# qemu's.  A failure after the old tables are wiped leaves a top that must
# not check clean.
"$QEMU_IMG" create -q -f qcow2 "$IN/cbase.qcow2" 4M
"$QEMU_IO" -c 'write -P 0x11 0 1M' "$IN/cbase.qcow2" >/dev/null
(cd "$IN" && "$QEMU_IMG" create -q -f qcow2 -b cbase.qcow2 -F qcow2 ctop.qcow2 &&
     "$QEMU_IO" -c 'write -P 0x22 512k 1M' ctop.qcow2 >/dev/null) || fail "make ctop.qcow2"
after_commit() {   # NAME [copy]: top and base of both runs check, read and map alike
    local f
    for f in ctop cbase; do
        if [ $f = cbase ] && [ "${2:-}" = copy ]; then
            # a failed copy: our workers may have copied more than qemu's
            # job before it stopped; the base must be sound
            check "$1: base checks clean" "$QEMU_IMG" check "$SCRATCH/run.new/work/cbase.qcow2"
            continue
        fi
        expect_eq "$1: $f checks alike" \
            "$("$QEMU_IMG" check "$SCRATCH/run.new/work/$f.qcow2" 2>&1 | sed 's|.*/work/||'; echo "rc=$?")" \
            "$("$QEMU_IMG" check "$SCRATCH/run.ref/work/$f.qcow2" 2>&1 | sed 's|.*/work/||'; echo "rc=$?")"
    done
    expect_eq "$1: top maps alike" \
        "$(cd "$SCRATCH/run.new/work" && "$QEMU_IMG" map --output=json -U ctop.qcow2 2>&1)" \
        "$(cd "$SCRATCH/run.ref/work" && "$QEMU_IMG" map --output=json -U ctop.qcow2 2>&1)"
    check "$1: top reads alike" "$QEMU_IMG" compare -U \
        "$SCRATCH/run.new/work/ctop.qcow2" "$SCRATCH/run.ref/work/ctop.qcow2"
}
for spec in l1_update:off empty_image_prepare:off reftable_update:off refblock_alloc:off \
            refblock_alloc:on refblock_load:on refblock_load:off refblock_update_part:off \
            pwritev:on pwritev:off pwritev_zero:off flush_to_os:off cluster_alloc:off \
            l2_load:off read_aio:on; do
    ev=${spec%:*} once=${spec#*:}
    rule c.cfg $ev once $once
    same "commit, top emptied, $ev once=$once" commit blkdebug:c.cfg:ctop.qcow2
    case $ev in read_aio|l2_load) after_commit "commit, $ev once=$once" copy ;;
                *) after_commit "commit, $ev once=$once" ;; esac
done
rule c.cfg refblock_load iotype write
same "commit, top emptied, refblock_load writes only (refcount flush at close)" \
    commit blkdebug:c.cfg:ctop.qcow2
ref_rc "commit, refblock_load writes only" 1
rule c.cfg l2_load iotype write
same "commit, l2_load writes only: dirty bit fails" commit blkdebug:c.cfg:ctop.qcow2
after_commit "commit, l2_load writes only"
rule c.cfg l1_update
same "commit -d: never emptied" commit -d blkdebug:c.cfg:ctop.qcow2
ref_rc "commit -d" 0
same "commit, json: name in the message" commit \
    'json:{"driver":"qcow2","file":{"driver":"blkdebug","config":"c.cfg","image":{"driver":"file","filename":"ctop.qcow2"}}}'
ref_rc "commit, json: name" 1

# ---- injected errors: amend -o refcount_bits (the new blocks and table
# are allocated through the old structures, freed there again when the
# change fails): messages, close-time cache reports, and the image left
# behind (check: the leaks qemu leaves, or none)
"$QEMU_IMG" create -q -f qcow2 "$IN/rc.qcow2" 16M
"$QEMU_IO" -c 'write -P 1 0 1M' -c 'write -P 2 4M 64k' "$IN/rc.qcow2" >/dev/null
for bits in 1 8 64; do
    for spec in refblock_alloc:on refblock_alloc:off refblock_load:off refblock_update_part:on \
                refblock_update_part:off pwritev:on pwritev:off cluster_alloc:off l1_update:off; do
        ev=${spec%:*} once=${spec#*:}
        rule a.cfg $ev once $once
        same "amend refcount_bits=$bits, $ev once=$once" amend -o refcount_bits=$bits blkdebug:a.cfg:rc.qcow2
        check_same "amend refcount_bits=$bits, $ev once=$once: image checks alike" rc.qcow2
        expect_eq "amend refcount_bits=$bits, $ev once=$once: same file size" \
            "$(stat -c %s "$SCRATCH/run.new/work/rc.qcow2")" "$(stat -c %s "$SCRATCH/run.ref/work/rc.qcow2")"
    done
done
rule a.cfg refblock_alloc
same "amend refcount_bits=8, refblock_alloc" amend -o refcount_bits=8 blkdebug:a.cfg:rc.qcow2
ref_rc "amend refcount_bits=8, refblock_alloc" 1

# ---- injected errors: rebase (safe: copies what differs, then the header).
# The new backing file is read through blkdebug (a top named blkdebug:...
# would have qemu resolve the new backing name against that name).
"$QEMU_IMG" create -q -f qcow2 "$IN/old.qcow2" 4M
"$QEMU_IO" -c 'write -P 0x11 0 2M' "$IN/old.qcow2" >/dev/null
"$QEMU_IMG" create -q -f qcow2 "$IN/new.qcow2" 4M
"$QEMU_IO" -c 'write -P 0x33 1M 2M' "$IN/new.qcow2" >/dev/null
(cd "$IN" && "$QEMU_IMG" create -q -f qcow2 -b old.qcow2 -F qcow2 rtop.qcow2 &&
     "$QEMU_IO" -c 'write -P 0x22 3M 64k' rtop.qcow2 >/dev/null) || fail "make rtop.qcow2"
# (l2_load once=on: a read-ahead hint must not load the L2 table first)
for spec in read_aio:on read_aio:off l2_load:off l2_load:on refblock_load:off pwritev:on \
            pwritev:off l2_update:off cluster_alloc:off; do
    ev=${spec%:*} once=${spec#*:}
    rule r.cfg $ev once $once
    same "rebase, new backing $ev once=$once" rebase -b blkdebug:r.cfg:new.qcow2 -F qcow2 rtop.qcow2
    # qemu stops at the first failed read; qimg may have copied a few
    # chunks into the overlay before it: sound, and read as before
    # (run where the rules file is: a rebase that worked names it relatively)
    check "rebase, $ev once=$once: image checks clean" \
        sh -c "cd '$SCRATCH/run.new/work' && '$QEMU_IMG' check rtop.qcow2"
    # the overlay reads as it did (a failed rebase: through the old backing file)
    check "rebase, $ev once=$once: content unchanged" \
        sh -c "cd '$SCRATCH/run.new/work' && '$QEMU_IMG' compare rtop.qcow2 '$IN/rtop.qcow2'"
done

# ---- json: and --image-opts give the blkdebug node its rules inline
same "json: blkdebug inject-error" convert -m 1 -O raw \
    'json:{"driver":"qcow2","file":{"driver":"blkdebug","image":{"driver":"file","filename":"img.qcow2"},"inject-error":[{"event":"l2_load"}]}}' out.raw
same "image-opts blkdebug inject-error" convert -m 1 --image-opts -O raw \
    driver=qcow2,file.driver=blkdebug,file.image.filename=img.qcow2,file.inject-error.0.event=read_aio out.raw

# ---- the filter over a format node: map shows the node's layers and host
# offsets through it, as qemu-img does (qemu-iotests 204)
for o in "" --output=json; do
    same "map${o:+ $o} through blkdebug over a qcow2 with a backing file" map $o --image-opts \
        driver=blkdebug,image.driver=qcow2,image.file.driver=file,image.file.filename=ctop.qcow2,align=4k
    same "map${o:+ $o} through blkdebug over a qcow2 (json:)" map $o \
        'json:{"driver":"blkdebug","image":{"driver":"qcow2","file":{"driver":"file","filename":"ctop.qcow2"}}}'
done
