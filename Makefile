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

# Quiet build lines ("CC file"); V=1 shows the commands.
ifeq ($(V),1)
Q :=
say = @true
else
Q := @
say = @printf '  %-7s %s\n' $(1) $(2)
endif

VERSION := $(shell sed -n 's/^\#define QIMG_VERSION_STRING "\(.*\)"/\1/p' include/qimg.h)

# The configure step (scripts/configure) writes $(B)/config.mk and
# $(B)/config.h after scripts/install-deps has installed what is missing.
# config.mk is included below: when it is missing or older than the scripts,
# make runs the rule that builds it and then restarts, so the flags are read
# only after the packages exist.  Every object depends on config.h, which is
# rewritten only when the configuration changes.  WITHOUT="zstd ..." builds
# without those features (see config-matrix).
CONFIG_GOALS := $(filter-out clean help,$(or $(MAKECMDGOALS),all))
ifneq ($(CONFIG_GOALS),)
-include $(B)/config.mk
endif
CONFIG_H := $(B)/config.h

# Use both cores (or all) unless the caller chose -j.
ifeq ($(filter -j%,$(MAKEFLAGS)),)
MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 2)
endif

WARN    := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wvla -Wno-format-truncation
CFLAGS  ?= -O2 -g
ALL_CFLAGS := -std=gnu11 $(WARN) $(CFLAGS) -fPIC -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
              -include $(CONFIG_H) -Iinclude -Isrc/lib -Isrc/fs $(CONFIG_CFLAGS) \
              -DQIMG_VERSION='"$(VERSION)"'
LIBS    := $(CONFIG_LIBS) -lpthread -lm -ldl
# unit tests write tar files with libarchive themselves
TEST_LIBS := $(LIBS) $(CONFIG_TEST_LIBS)

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

.PHONY: all configure config-matrix deps check demo install clean fuzz bench unit san-unit fuzz-build soak

all: $(B)/qimg $(B)/libqimg.a $(B)/libqimg.so $(B)/qimg.pc

deps:
	@./scripts/install-deps

# The configure step.  WITHOUT is part of the configuration: a variant
# build uses its own B (see config-matrix).
$(B)/config.mk: scripts/configure scripts/install-deps
	@./scripts/install-deps || echo "qimg: building without the packages that are missing"
	@B=$(B) WITHOUT="$(WITHOUT)" QUIET=$(QUIET) ./scripts/configure
	@touch $@   # configure keeps an unchanged file's time: without this it would run on every make
$(CONFIG_H): $(B)/config.mk
	@test -f $@ || { rm -f $(B)/config.mk; echo "qimg: run make again: $@ was removed"; exit 1; }

# Print the configuration again (and pick up libraries installed since).
configure:
	@B=$(B) WITHOUT="$(WITHOUT)" ./scripts/configure

# The command line uses include/qimg.h only: it is built without the
# library's private include paths, so reaching past the API fails to compile.
CLI_CFLAGS = $(filter-out -Isrc/lib -Isrc/fs,$(ALL_CFLAGS))
$(B)/obj/src/cli/%.o: src/cli/%.c $(CONFIG_H)
	@mkdir -p $(@D)
	$(call say,CC,$<)
	$(Q)$(CC) $(CLI_CFLAGS) -MMD -MP -c $< -o $@

$(B)/obj/%.o: %.c $(CONFIG_H)
	@mkdir -p $(@D)
	$(call say,CC,$<)
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

# curl.c reaches libcurl through a table (src/io/curl-dl.h), which hides
# libcurl's compile-time checks of curl_easy_setopt's argument types: a
# second compile with libcurl's own declarations keeps them (object dropped).
$(B)/obj/src/io/curl.o: src/io/curl.c $(CONFIG_H)
	@mkdir -p $(@D)
	$(call say,CC,$<)
	$(Q)$(CC) $(ALL_CFLAGS) -DQIMG_CURL_TYPECHECK -c $< -o /dev/null
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(B)/san/%.o: %.c $(CONFIG_H)
	@mkdir -p $(@D)
	$(call say,CC-SAN,$<)
	$(Q)$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -O1 -MMD -MP -c $< -o $@

$(B)/libqimg.a: $(LIB_OBJ)
	@rm -f $@
	$(call say,AR,$@)
	$(Q)ar rcs $@ $^

$(B)/libqimg.so: $(LIB_OBJ)
	$(call say,LD,$@)
	$(Q)$(CC) -shared -Wl,-soname,libqimg.so.0 -o $@ $^ $(LIBS)

$(B)/qimg: $(CLI_OBJ) $(B)/libqimg.a
	$(call say,LD,$@)
	$(Q)$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(B)/libqimg.a $(LIBS)

# The .pc file names the install paths: made at build time for the default
# PREFIX and again by install for the PREFIX given there.
PC_SED = sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCDIR@|$(INCDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' -e 's|@LIBS@|$(LIBS)|'

# config.mk: Libs.private lists the libraries this configuration links
$(B)/qimg.pc: qimg.pc.in include/qimg.h $(B)/config.mk
	$(Q)$(PC_SED) $< > $@

$(B)/tests/%: tests/unit/%.c $(B)/libqimg.a tests/unit/unit.h
	@mkdir -p $(@D)
	$(call say,CC-TEST,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(B)/libqimg.a $(TEST_LIBS)

$(B)/san-tests/%: tests/unit/%.c $(SAN_LIB_OBJ) tests/unit/unit.h
	@mkdir -p $(@D)
	$(call say,CC-TEST,$@)
	$(Q)$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -O1 -Itests/unit -o $@ $< $(SAN_LIB_OBJ) $(TEST_LIBS)

unit: $(UNIT_BIN)
san-unit: $(SAN_UNIT_BIN)

# The library is compiled once for all fuzz targets (instrumented, not linked
# with libFuzzer's main); each target links those objects.
$(B)/fuzzobj/%.o: %.c $(CONFIG_H)
	@mkdir -p $(@D)
	$(call say,CC-FUZZ,$<)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) $(FUZZ_OBJ_FLAGS) -MMD -MP -c $< -o $@

$(B)/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_OBJ)
	@mkdir -p $(@D)
	$(call say,LD-FUZZ,$@)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_LIB_OBJ) $(LIBS)

fuzz-build: $(FUZZ_BIN)

# A build without each optional library must still compile with -Werror and
# link: each variant in its own directory, unoptimised (quick), binary only.
MATRIX_FEATURES := zlib libdeflate zstd bzip2 lzma lz4 lzo plist ext2fs libarchive openssl nettle libnbd libcurl librbd
config-matrix: $(B)/qimg
	@for f in $(MATRIX_FEATURES) all; do \
	    w=$$f; [ $$f = all ] && w="$(MATRIX_FEATURES)"; d=$(B)/without-$$f; \
	    $(MAKE) --no-print-directory B=$$d WITHOUT="$$w" CFLAGS=-O0 QUIET=1 $$d/qimg >$$d.log 2>&1 || \
	        { echo "config-matrix: the build without $$f failed:"; tail -20 $$d.log; exit 1; }; \
	    echo "config-matrix: without $$f: $$($$d/qimg --help | grep '^Built without' || echo '(nothing left out)')"; \
	done

check: all unit san-unit fuzz-build config-matrix
	@B=$(B) tests/run-tests.sh

fuzz: fuzz-build
	@B=$(B) FUZZ_SECONDS=$${FUZZ_SECONDS:-600} tests/fuzz/run.sh long

# Randomized comparisons with qemu-img (tests/soak/): convert, and rebase/
# commit/compare on chains, side by side for SOAK_SECONDS each.
soak: all
	@s=$${SOAK_SECONDS:-300}; QIMG=$(CURDIR)/$(B)/qimg tests/soak/convert.py 1 $$s & \
	QIMG=$(CURDIR)/$(B)/qimg tests/soak/chains.py 1 $$s; r=$$?; wait $$! && exit $$r

demo: all
	@QIMG=$(CURDIR)/$(B)/qimg scripts/demo.sh

# QEMU's own qemu-iotests with qemu-img replaced by qimg (long, not part of
# check; FMT=qcow2|raw, IOTESTS=group or tests, IOTESTS_JOBS): scripts/iotests.sh
.PHONY: iotests
iotests: deps $(B)/qimg
	@QIMG=$(CURDIR)/$(B)/qimg scripts/iotests.sh

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
