#!/bin/bash
# Global command line behaviour and errors shared by the commands.
. "$(dirname "$0")/lib.sh"

"$QEMU_IMG" create -q -f raw "$IN/a.raw" 1M

same "no arguments" 
same "unknown command" foo
same "unknown global option" -Z info a.raw
same "global option missing argument" -T
same "command after file" a.raw info
for cmd in info map check create resize; do
    same "$cmd unknown option" $cmd --no-such-option a.raw
    same "$cmd unknown short option" $cmd -Z a.raw
done
# measure lets getopt complain and shows the help (ours by design): rc 0
for opt in -Z --no-such-option --size; do
    run_in_copy ref "$QEMU_IMG" measure $opt
    run_in_copy new "$QIMG_AS_QEMU" measure $opt
    expect_eq "measure $opt stderr" "$(cat "$SCRATCH/run.new/err")" "$(cat "$SCRATCH/run.ref/err")"
    expect_eq "measure $opt rc" "$(cat "$SCRATCH/run.new/rc")" "$(cat "$SCRATCH/run.ref/rc")"
done
same "info -f missing argument" info -f
same "map --output missing argument" map a.raw --output
same "check -r missing argument" check a.raw -r
same "create -o missing argument" create a.raw -o
same "resize -h alone: not enough arguments" resize -h
# help is ours by design: rc 0 and the usage line
for cmd in info map check measure create resize; do
    out=$("$QIMG_AS_QEMU" $cmd -h a.raw 1M 2>&1); rc=$?
    expect_eq "$cmd -h rc" "$rc" 0
    case "$out" in *"usage: qemu-img"*) pass "$cmd -h usage" ;; *) fail "$cmd -h usage" "$out" ;; esac
done
out=$("$QIMG_AS_QEMU" -V 2>&1); rc=$?
expect_eq "-V rc" "$rc" 0
case "$out" in "qemu-img version 7.2.0"*) pass "-V text" ;; *) fail "-V text" "$out" ;; esac

# -T/--trace: qimg has no trace events; warnings and errors as qemu-img's
printf 'foo\n# comment\nbar*\n' > "$IN/events"
same "trace: unknown event warns" -T foo info a.raw
same "trace: wildcard is silent" -T 'enable=foo*' info a.raw
same "trace: events file" -T events=events info a.raw
same "trace: missing events file" -T events=/nonexistent/ev info a.raw
same "trace: bad parameter" -T enable=foo,bogus=1 info a.raw

# --safe (qimg's): accepted before and after the command name and through
# QIMG_SAFE=1, taken out before the command's options are parsed; an
# argument "--safe" after "--" is left alone; --help shows it only as qimg
plain=$("$QIMG" info "$IN/a.raw" 2>&1)
expect_eq "--safe before the command" "$("$QIMG" --safe info "$IN/a.raw" 2>&1)" "$plain"
expect_eq "--safe after the command" "$("$QIMG" info --safe "$IN/a.raw" 2>&1)" "$plain"
expect_eq "--safe after the file" "$("$QIMG" info "$IN/a.raw" --safe 2>&1)" "$plain"
expect_eq "QIMG_SAFE=1" "$(QIMG_SAFE=1 "$QIMG" info "$IN/a.raw" 2>&1)" "$plain"
out=$(cd "$IN" && "$QIMG" info -- --safe 2>&1)
expect_eq "--safe after -- is a file name" "$out" \
    "qimg: Could not open '--safe': Could not open '--safe': No such file or directory"
case "$("$QIMG" --help)" in *"'--safe'"*) pass "--help shows --safe" ;;
    *) fail "--help shows --safe" ;; esac
case "$("$QIMG_AS_QEMU" --help)" in *"--safe"*) fail "--help as qemu-img hides --safe" ;;
    *) pass "--help as qemu-img hides --safe" ;; esac

# A storage backend named as the format of a new image: qemu-img takes it as a
# format that cannot create (not as an unknown one)
for f in null-co blkdebug quorum vvfat http; do
    same "create -f $f" create -f "$f" new.img 1M
    same "convert -O $f" convert -O "$f" a.raw new.img
    same "measure -O $f" measure -O "$f" a.raw
    same "dd -O $f" dd -O "$f" if=a.raw of=new.img
done
# ... and storage that can: the file protocol makes a plain file, nbd tries
# to open the name as an export; neither measures
same "create -f file" create -f file new.img 1M
same "convert -O file" convert -O file a.raw new.img
same "dd -O file" dd -O file if=a.raw of=new.img
for f in file nbd; do
    same "measure -O $f" measure -O "$f" a.raw
done
same "create -f nbd" create -f nbd new.img 1M
same "convert -O nbd" convert -O nbd a.raw new.img
same "dd -O nbd" dd -O nbd if=a.raw of=new.img
