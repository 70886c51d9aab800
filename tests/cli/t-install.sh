#!/bin/bash
# make install puts the tool, libraries, header, pkg-config file and man page
# under DESTDIR/PREFIX, and a program builds against the installed library.
. "$(dirname "$0")/lib.sh"
dest=$SCRATCH/dest
# B as the Makefile spells it (relative to the tree): an absolute B names
# the objects differently, so make would rebuild them and write their
# dependency files with absolute targets that later builds never match
bdir=$(realpath --relative-to="$TOP" "$(dirname "$QIMG")")
if make -s -C "$TOP" install DESTDIR="$dest" PREFIX=/opt/qimg B="$bdir" >/dev/null 2>&1; then
    pass "make install"
else
    fail "make install"; exit 0
fi
for f in opt/qimg/bin/qimg opt/qimg/lib/libqimg.a opt/qimg/lib/libqimg.so opt/qimg/include/qimg.h \
         opt/qimg/lib/pkgconfig/qimg.pc opt/qimg/share/man/man1/qimg.1; do
    if [ -e "$dest/$f" ]; then pass "installed $f"; else fail "installed $f"; fi
done
cat > "$SCRATCH/prog.c" <<'C'
#include <qimg.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    qimg_image *img;
    if (qimg_open(&img, argv[1], "raw", 0) < 0) { fprintf(stderr, "%s\n", qimg_last_error()); return 1; }
    printf("%llu\n", (unsigned long long)qimg_size(img));
    return qimg_close(img) < 0;
}
C
export PKG_CONFIG_SYSROOT_DIR=$dest PKG_CONFIG_LIBDIR=$dest/opt/qimg/lib/pkgconfig
if cc -o "$SCRATCH/prog" "$SCRATCH/prog.c" $(pkg-config --cflags qimg) \
      -L"$dest/opt/qimg/lib" -Wl,-Bstatic -lqimg -Wl,-Bdynamic $(pkg-config --libs --static qimg | sed 's/-L[^ ]*//g; s/-lqimg//') 2>"$SCRATCH/cc.err"; then
    pass "program links against the installed library"
else
    fail "program links against the installed library" "$(head -5 "$SCRATCH/cc.err")"; exit 0
fi
truncate -s 3M "$SCRATCH/disk.raw"
expect_eq "library reports the size" "$("$SCRATCH/prog" "$SCRATCH/disk.raw")" 3145728
