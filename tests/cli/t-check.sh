#!/bin/bash
# qemu-img check on raw images (no check: rc 63) and its argument errors.
. "$(dirname "$0")/lib.sh"

"$QEMU_IMG" create -q -f raw "$IN/a.raw" 1M
mkdir "$IN/dir"

same "check" check a.raw
same "check -f raw" check -f raw a.raw
same "check json" check --output=json a.raw
same "check -q" check -q a.raw
same "check -r leaks (probed raw warning)" check -r leaks a.raw
same "check -r all" check -r all a.raw
same "check -r all -f raw" check -f raw -r all a.raw
same "check -r twice" check -r leaks -r all -f raw a.raw
same "check -T none" check -T none a.raw
same "check -U" check -U a.raw
same "check --image-opts" check --image-opts driver=raw,file.filename=a.raw
same "check bad -r" check -r foo a.raw
same "check -r eats the file name" check -r a.raw
same "check bad -T" check -T foo a.raw
same "check bad -T, no file" check -T foo
same "check -r with -U" check -r leaks -U a.raw
same "check bad output" check --output=foo a.raw
same "check bad output, no file" check --output=foo
same "check unknown format" check -f foo a.raw
same "check missing file" check nonexist
same "check missing file -q" check -q nonexist
same "check directory" check dir
same "check no file" check
same "check two files" check a.raw b.raw
