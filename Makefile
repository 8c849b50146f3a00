# libsockserver - a plain Makefile: out-of-tree build/, automatic header
# dependencies.  `make`, `make test`, `make demo`, `make install`.

CC      ?= cc
PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
PCDIR   ?= $(LIBDIR)/pkgconfig
BUILD   ?= build

VERSION   := 0.1.0
SOVERSION := 0

WARN    := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS  ?= -O2 -g
# SAN: sanitizer flags, for compiling and linking (see asan/tsan below).
SAN     ?=
override CFLAGS += -std=c11 -D_POSIX_C_SOURCE=200809L $(PLATFORM_CFLAGS) $(WARN) -Iinclude -MMD -MP $(SAN)
LDLIBS  := $(SAN) -lpthread -lm

LIB_SRC := $(wildcard src/*.c)
# Assembly: the fiber context switch, one file per architecture (each
# assembles to nothing elsewhere).
LIB_ASM := $(wildcard src/*.S)
LIB_OBJ := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o) $(LIB_ASM:src/%.S=$(BUILD)/obj/%.o)
LIB_PIC := $(LIB_SRC:src/%.c=$(BUILD)/pic/%.o) $(LIB_ASM:src/%.S=$(BUILD)/pic/%.o)
STATIC  := $(BUILD)/libsockserver.a

# The platform (UNAME_S=Darwin make -n shows another's choices): the macro
# that exposes the BSD socket API beside POSIX's, and how a shared library
# is named.  _POSIX_C_SOURCE alone hides it on macOS and the BSDs; glibc
# and musl expose it through the sources' own _GNU_SOURCE.  macOS has no
# soname: a .dylib records its install name and versions instead.
UNAME_S ?= $(shell uname -s)
ifeq ($(UNAME_S),Darwin)
PLATFORM_CFLAGS := -D_DARWIN_C_SOURCE
SHARED   := $(BUILD)/libsockserver.$(VERSION).dylib
SONAME   := libsockserver.$(SOVERSION).dylib
LINKNAME := libsockserver.dylib
SOFLAGS  := -dynamiclib -install_name $(LIBDIR)/$(SONAME) \
	-compatibility_version $(VERSION) -current_version $(VERSION)
else
PLATFORM_CFLAGS := $(if $(filter FreeBSD DragonFly,$(UNAME_S)),-D__BSD_VISIBLE=1) \
	$(if $(filter NetBSD,$(UNAME_S)),-D_NETBSD_SOURCE) \
	$(if $(filter OpenBSD,$(UNAME_S)),-D_BSD_SOURCE)
SHARED   := $(BUILD)/libsockserver.so.$(VERSION)
SONAME   := libsockserver.so.$(SOVERSION)
LINKNAME := libsockserver.so
SOFLAGS  := -shared -Wl,-soname,$(SONAME)
endif

# Optional headers that change what a file compiles to: valgrind's client
# requests (src/fiber_stack.c, tests/support.c, tests/test_fiber.c).  What
# is found is recorded in $(OPT_HEADERS_STAMP), rewritten only when it
# changes, and those files depend on it: a header installed after a first
# build (make demo, then make valgrind on a new machine) rebuilds them,
# which its packaged mtime would not.
OPT_HEADERS := $(wildcard /usr/include/valgrind/memcheck.h /usr/include/valgrind/valgrind.h)
OPT_HEADERS_STAMP := $(BUILD)/optional-headers
$(shell mkdir -p $(BUILD) && { [ -f $(OPT_HEADERS_STAMP) ] && \
  [ "$$(cat $(OPT_HEADERS_STAMP))" = "$(OPT_HEADERS)" ] || \
  echo "$(OPT_HEADERS)" > $(OPT_HEADERS_STAMP); })

EX_COMMON := examples/common.c
EX_SRC  := $(filter-out $(EX_COMMON),$(wildcard examples/*.c))
EX_BIN  := $(EX_SRC:examples/%.c=$(BUILD)/examples/%)

TEST_SUPPORT := tests/support.c tests/support_proc.c
TEST_SRC := $(filter-out $(TEST_SUPPORT),$(wildcard tests/test_*.c))
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
# Scripted tests (real client programs); they print cmocka-style summaries.
TEST_SCRIPTS := $(wildcard tests/test_*.sh)

.PHONY: all lib examples test check-cmocka check-sanitizers demo install uninstall clean asan tsan check-fresh

all: lib examples

lib: $(STATIC) $(SHARED) $(BUILD)/$(LINKNAME) $(BUILD)/sockserver.pc

$(BUILD)/obj/%.o: src/%.c | $(BUILD)/obj
	$(CC) $(CFLAGS) -fvisibility=hidden -c $< -o $@

$(BUILD)/pic/%.o: src/%.c | $(BUILD)/pic
	$(CC) $(CFLAGS) -fvisibility=hidden -fPIC -c $< -o $@

$(BUILD)/obj/%.o: src/%.S | $(BUILD)/obj
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/pic/%.o: src/%.S | $(BUILD)/pic
	$(CC) $(CFLAGS) -fPIC -c $< -o $@

$(BUILD)/obj/fiber_stack.o $(BUILD)/pic/fiber_stack.o: $(OPT_HEADERS_STAMP)

$(STATIC): $(LIB_OBJ)
	$(AR) rcs $@ $^

$(SHARED): $(LIB_PIC)
	$(CC) $(SOFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/$(LINKNAME): $(SHARED)
	ln -sf $(notdir $(SHARED)) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

examples: $(EX_BIN)

# EX_CFLAGS, EX_LIBS: what an example that offers TLS adds (src/tls/tls.mk).
$(BUILD)/examples/%: examples/%.c $(EX_COMMON) $(STATIC) | $(BUILD)/examples
	$(CC) $(CFLAGS) $(EX_CFLAGS) -Iexamples $< $(EX_COMMON) $(EX_LIBS) $(STATIC) $(LDLIBS) -o $@

$(BUILD)/obj $(BUILD)/pic $(BUILD)/examples $(BUILD)/tests:
	mkdir -p $@

# What the tests need is listed once, in tests/packages.  As root on
# Debian, tests/need_packages.sh installs what is missing (cmocka, and the
# programs the scripted tests drive); as another user it prints the one
# apt-get line to run, and the tests that cannot run are skipped with that
# reason.  Only cmocka cannot be done without.
check-cmocka:
	@tests/need_packages.sh test
	@printf '#include <stdarg.h>\n#include <stddef.h>\n#include <setjmp.h>\n#include <stdint.h>\n#include <cmocka.h>\nint main(void){return 0;}\n' \
	  | $(CC) -x c - -o /dev/null -lcmocka 2>/dev/null \
	  || { echo "cmocka is missing: run  sudo apt-get install libcmocka-dev"; exit 1; }

# clang and its sanitizer runtimes, for make asan and make tsan.
check-sanitizers:
	@tests/need_packages.sh sanitizers

# Every header, not -MMD: with several sources on one command line, -MMD
# records only the last one's, and some tests read src/internal.h.
$(BUILD)/tests/%: tests/%.c $(TEST_SUPPORT) tests/support.h $(wildcard include/*.h src/*.h) \
		$(STATIC) $(OPT_HEADERS_STAMP) | $(BUILD)/tests
	$(CC) $(CFLAGS) -Itests $< $(TEST_SUPPORT) $(TEST_EXTRA) $(STATIC) -lcmocka $(LDLIBS) -o $@

# The upgrade test's load generator, shared with its benchmark.
$(BUILD)/tests/test_upgrade: TEST_EXTRA := tests/upgrade_drive.c
$(BUILD)/tests/test_upgrade: tests/upgrade_drive.c tests/upgrade_drive.h

# The fiber switch's portable fallback, forced on this architecture so that
# it is tested here too: the test links the fiber files without the
# library, and without the assembly files, so no hand-written switch can
# stand in for it (compat.c has the stacks' mapping flags).
FIBER_SRC := src/fiber_switch.c src/fiber_stack.c src/fiber_ctx_portable.c \
	src/compat.c
TEST_BIN  += $(BUILD)/tests/test_fiber_portable
$(BUILD)/tests/test_fiber_portable: tests/test_fiber.c $(FIBER_SRC) src/internal.h src/compat.h \
		$(OPT_HEADERS_STAMP) | $(BUILD)/tests
	$(CC) $(CFLAGS) -DSKS_FIBER_PORTABLE $< $(FIBER_SRC) -lcmocka $(LDLIBS) -o $@

# The aarch64 switch (and the fallback there), cross-built static with the
# cmocka subset in tests/cross and run under qemu-user by
# tests/test_fiber_aarch64.sh, part of make test (make test-aarch64, in
# tests/portable.mk, runs the rest of the suite there).
AARCH64_CC  ?= aarch64-linux-gnu-gcc
AARCH64_FIBER_BIN := $(BUILD)/aarch64/test_fiber $(BUILD)/aarch64/test_fiber_portable
AARCH64_CFLAGS := -O2 -g -static -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) \
	-Iinclude -Itests/cross
$(AARCH64_FIBER_BIN): tests/test_fiber.c tests/cross/cmocka.h $(FIBER_SRC) \
		src/fiber_ctx_aarch64.S src/internal.h src/compat.h
	@mkdir -p $(@D)
	$(AARCH64_CC) $(AARCH64_CFLAGS) $(if $(findstring portable,$@),-DSKS_FIBER_PORTABLE) \
	  $< $(FIBER_SRC) src/fiber_ctx_aarch64.S -lm -o $@

.PHONY: aarch64-fiber-build
aarch64-fiber-build: $(AARCH64_FIBER_BIN)

# Each test binary and script runs in turn; any failure fails `make test`,
# which ends with "tests: N passed, N failed, N skipped" (tests/run_tests.sh).
# The run is a second make: check-cmocka may have just installed a
# package (libssl-dev) that decides what is built (src/tls/tls.mk).
test: check-cmocka
	@$(MAKE) --no-print-directory test-run

# lib too: the TLS tests check the shared libraries and .pc files.
.PHONY: test-run
test-run: lib $(TEST_BIN) examples
	@BUILD=$(BUILD) ./tests/run_tests.sh $(TEST_BIN) $(TEST_SCRIPTS)

demo: all
	@./examples/demo.sh $(BUILD)/examples

# The whole suite under AddressSanitizer + UBSan (leak detection on), and
# under ThreadSanitizer, each in its own build directory.
asan: check-sanitizers
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	$(MAKE) BUILD=build/asan CC=clang CFLAGS="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" test

tsan: check-sanitizers
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	$(MAKE) BUILD=build/tsan CC=clang CFLAGS="-O1 -g" SAN="-fsanitize=thread" test

# pkg-config adds Libs.private to Libs for --static, and -lsockserver would
# still find the .so next to the .a: only -static (the whole program
# static) makes `pkg-config --static` mean a static link.  To link just
# this library statically, use -l:libsockserver.a (README).
$(BUILD)/sockserver.pc: Makefile | $(BUILD)/obj
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCDIR)' '' \
	  'Name: sockserver' \
	  "Description: Python's socketserver for C: servers, hooks, handlers, mixins" \
	  'Version: $(VERSION)' 'Libs: -L$${libdir} -lsockserver' \
	  'Libs.private: -static -lpthread -lm' 'Cflags: -I$${includedir}' > $@

# Installing into the system as root (no DESTDIR) refreshes the dynamic
# linker's cache, so that a program linked against the new library starts
# without LD_LIBRARY_PATH (for a LIBDIR that /etc/ld.so.conf lists).
LDCONFIG = if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

install: lib $(BUILD)/sockserver.pc
	install -d $(DESTDIR)$(INCDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PCDIR)
	install -m 644 include/sockserver.h $(DESTDIR)$(INCDIR)/
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(SHARED) $(DESTDIR)$(LIBDIR)/
	ln -sf $(notdir $(SHARED)) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/$(LINKNAME)
	install -m 644 $(BUILD)/sockserver.pc $(DESTDIR)$(PCDIR)/
	@$(if $(filter openssl,$(TLS)),$(MAKE) --no-print-directory install-tls)
	@$(LDCONFIG)

uninstall:
	rm -f $(DESTDIR)$(INCDIR)/sockserver.h $(DESTDIR)$(LIBDIR)/libsockserver.a \
	      $(DESTDIR)$(LIBDIR)/$(LINKNAME) $(DESTDIR)$(LIBDIR)/$(SONAME) \
	      $(DESTDIR)$(LIBDIR)/$(notdir $(SHARED)) $(DESTDIR)$(PCDIR)/sockserver.pc
	rm -f $(DESTDIR)$(INCDIR)/sockserver_tls.h $(DESTDIR)$(LIBDIR)/libsockserver_tls.* \
	      $(DESTDIR)$(PCDIR)/sockserver-tls.pc
	@$(LDCONFIG)

clean:
	rm -rf build

# A maintainer check, not part of make test: a pristine Debian 12 root
# (debootstrap) runs the README's make demo and make test, then .ci/run,
# and the README's example after make install.  Root and network needed;
# see tests/check_fresh.sh.
check-fresh:
	@tests/check_fresh.sh

# Benchmarks, the reliability suite and the other-platform runs keep their
# rules beside their code.
-include src/tls/tls.mk
-include bench/bench.mk
-include tests/reliability.mk
-include tests/portable.mk

-include $(LIB_OBJ:.o=.d) $(LIB_PIC:.o=.d) $(TLS_OBJ:.o=.d) $(TLS_PIC:.o=.d)
