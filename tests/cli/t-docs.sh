#!/bin/bash
# The man page is generated from the command table, and --help lists the
# same command synopses as qemu-img 7.2.
. "$(dirname "$0")/lib.sh"

if diff -q <("$TOP/scripts/gen-man.sh") "$TOP/docs/qimg.1" >/dev/null; then
    pass "man page matches the command table"
else
    fail "man page matches the command table" "run scripts/gen-man.sh > docs/qimg.1"
fi

synopses() { sed -n '/^Command syntax:/,/^$/p' | grep '^  '; }
ours=$("$QIMG_AS_QEMU" --help | synopses)
theirs=$("$QEMU_IMG" --help | synopses)
expect_eq "--help lists qemu-img's synopses" "$ours" "$theirs"

rc=0; "$QIMG" --help >/dev/null || rc=$?
expect_eq "--help exits 0" "$rc" 0
rc=0; "$QIMG_AS_QEMU" info -h >/dev/null || rc=$?
expect_eq "per-command -h exits 0" "$rc" 0

first=$("$QIMG_AS_QEMU" --version | head -1)
case "$first" in
    "qemu-img version 7.2.0 "*) pass "--version as qemu-img starts with qemu-img version 7.2.0" ;;
    *) fail "--version as qemu-img starts with qemu-img version 7.2.0" "$first" ;;
esac
first=$("$QIMG" --version | head -1)
case "$first" in
    "qimg version "*) pass "--version as qimg names qimg" ;;
    *) fail "--version as qimg names qimg" "$first" ;;
esac
# libguestfs decides whether to pass -U by grepping --help
if "$QIMG_AS_QEMU" --help | grep -sqE -- '\binfo\b.*-U\b'; then
    pass "--help shows info's -U (libguestfs probe)"
else
    fail "--help shows info's -U (libguestfs probe)"
fi
