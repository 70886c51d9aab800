# qimg - GNU make build.  `make` builds build/qimg, build/libqimg.{a,so};
# `make check` runs every test; `make demo` shows qimg at work.
# Sources are found by wildcard: a new driver, backend or command is a new
# file, nothing to register here.

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
MANDIR  ?= $(PREFIX)/share/man
PKGDIR  ?= $(LIBDIR)/pkgconfig

CC      ?= cc
CLANG   ?= clang
B       := build

VERSION := $(shell sed -n 's/^\#define QIMG_VERSION_STRING "\(.*\)"/\1/p' include/qimg.h)

# Optional libraries, found with pkg-config (all installed by scripts/install-deps).
PKGS    := $(shell for p in zlib libzstd libdeflate ext2fs com_err libarchive; do pkg-config --exists $$p 2>/dev/null && echo $$p; done)
PKG_CFLAGS := $(if $(PKGS),$(shell pkg-config --cflags $(PKGS)))
# libarchive is opened at run time, when an archive is read (src/fs/archive-dl.h)
LINK_PKGS  := $(filter-out libarchive,$(PKGS))
PKG_LIBS   := $(if $(LINK_PKGS),$(shell pkg-config --libs $(LINK_PKGS)))
# libdeflate's Debian package ships no .pc file: fall back to the header.
ifeq ($(filter libdeflate,$(PKGS)),)
ifneq ($(wildcard /usr/include/libdeflate.h),)
PKGS += libdeflate
PKG_LIBS += -ldeflate
endif
endif
HAVE_DEFS := $(foreach p,$(PKGS),-DHAVE_$(shell echo $(p) | tr a-z- A-Z_)=1)

WARN    := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wvla -Wno-format-truncation
CFLAGS  ?= -O2 -g
ALL_CFLAGS := -std=gnu11 $(WARN) $(CFLAGS) -fPIC -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
              -Iinclude -Isrc/lib -Isrc/fs $(PKG_CFLAGS) $(HAVE_DEFS) -DQIMG_VERSION='"$(VERSION)"'
LIBS    := $(PKG_LIBS) -lpthread -lm -ldl
# unit tests write tar files with libarchive themselves
TEST_LIBS := $(LIBS) $(if $(filter libarchive,$(PKGS)),$(shell pkg-config --libs libarchive))

LIB_SRC := $(sort $(wildcard src/lib/*.c src/io/*.c src/formats/*.c src/formats/*/*.c src/fs/*.c))
CLI_SRC := $(sort $(wildcard src/cli/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(B)/obj/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(B)/obj/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test-*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

# Sanitizer build of the library and unit tests (ASan + UBSan).
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SAN_LIB_OBJ := $(LIB_SRC:%.c=$(B)/san/%.o)
SAN_UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/san-tests/%)

FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz-*.c))
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(B)/fuzz/%)
FUZZ_FLAGS := -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer -O1 -g
FUZZ_OBJ_FLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -O1 -g
FUZZ_CFLAGS = $(filter-out -Werror -Wno-format-truncation,$(ALL_CFLAGS))
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(B)/fuzzobj/%.o)

# keep sanitizer objects between runs
.SECONDARY:

.PHONY: all deps check demo install clean fuzz bench unit san-unit fuzz-build soak

all: deps $(B)/qimg $(B)/libqimg.a $(B)/libqimg.so $(B)/qimg.pc

deps:
	@./scripts/install-deps

$(B)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

# The command line uses include/qimg.h only: it is built without the
# library's private include paths, so reaching past the API fails to compile.
CLI_CFLAGS = $(filter-out -Isrc/lib -Isrc/fs,$(ALL_CFLAGS))
$(B)/obj/src/cli/%.o: src/cli/%.c
	@mkdir -p $(@D)
	$(CC) $(CLI_CFLAGS) -MMD -MP -c $< -o $@

$(B)/san/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -O1 -MMD -MP -c $< -o $@

$(B)/libqimg.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/libqimg.so: $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libqimg.so.0 -o $@ $^ $(LIBS)

$(B)/qimg: $(CLI_OBJ) $(B)/libqimg.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(B)/libqimg.a $(LIBS)

# The .pc file names the install paths: made at build time for the default
# PREFIX and again by install for the PREFIX given there.
PC_SED = sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCDIR@|$(INCDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' -e 's|@LIBS@|$(PKG_LIBS) -lpthread -lm -ldl|'

$(B)/qimg.pc: qimg.pc.in include/qimg.h
	$(PC_SED) $< > $@

$(B)/tests/%: tests/unit/%.c $(B)/libqimg.a tests/unit/unit.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(B)/libqimg.a $(TEST_LIBS)

$(B)/san-tests/%: tests/unit/%.c $(SAN_LIB_OBJ) tests/unit/unit.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -O1 -Itests/unit -o $@ $< $(SAN_LIB_OBJ) $(TEST_LIBS)

unit: $(UNIT_BIN)
san-unit: $(SAN_UNIT_BIN)

# The library is compiled once for all fuzz targets (instrumented, not linked
# with libFuzzer's main); each target links those objects.
$(B)/fuzzobj/%.o: %.c
	@mkdir -p $(@D)
	$(CLANG) $(FUZZ_CFLAGS) $(FUZZ_OBJ_FLAGS) -MMD -MP -c $< -o $@

$(B)/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_OBJ)
	@mkdir -p $(@D)
	$(CLANG) $(FUZZ_CFLAGS) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_LIB_OBJ) $(LIBS)

fuzz-build: $(FUZZ_BIN)

check: all unit san-unit fuzz-build
	@B=$(B) tests/run-tests.sh

fuzz: deps fuzz-build
	@B=$(B) FUZZ_SECONDS=$${FUZZ_SECONDS:-600} tests/fuzz/run.sh long

# Randomized comparisons with qemu-img (tests/soak/): convert, and rebase/
# commit/compare on chains, side by side for SOAK_SECONDS each.
soak: all
	@s=$${SOAK_SECONDS:-300}; QIMG=$(CURDIR)/$(B)/qimg tests/soak/convert.py 1 $$s & \
	QIMG=$(CURDIR)/$(B)/qimg tests/soak/chains.py 1 $$s; r=$$?; wait $$! && exit $$r

demo: all
	@QIMG=$(CURDIR)/$(B)/qimg scripts/demo.sh

bench: all
	@bench/run.sh

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR) $(DESTDIR)$(PKGDIR) $(DESTDIR)$(MANDIR)/man1
	install -m 755 $(B)/qimg $(DESTDIR)$(BINDIR)/qimg
	install -m 644 $(B)/libqimg.a $(DESTDIR)$(LIBDIR)/libqimg.a
	install -m 755 $(B)/libqimg.so $(DESTDIR)$(LIBDIR)/libqimg.so.0
	ln -sf libqimg.so.0 $(DESTDIR)$(LIBDIR)/libqimg.so
	install -m 644 include/qimg.h $(DESTDIR)$(INCDIR)/qimg.h
	$(PC_SED) qimg.pc.in > $(DESTDIR)$(PKGDIR)/qimg.pc
	install -m 644 docs/qimg.1 $(DESTDIR)$(MANDIR)/man1/qimg.1

clean:
	rm -rf $(B)

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(SAN_LIB_OBJ:.o=.d) $(FUZZ_LIB_OBJ:.o=.d)
