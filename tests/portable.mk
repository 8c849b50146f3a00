# tests/portable.mk - the suite on another libc, on another CPU and
# without /proc (included by the Makefile; CI runs all three):
#   make test-musl      the library and the examples built with musl-gcc
#                       into build/musl; the whole cmocka suite (cmocka
#                       compiled for musl from Debian's source package) and
#                       the scripted example tests run against them
#   make test-aarch64   the library cross-built with aarch64-linux-gnu-gcc
#                       into build/aarch64; AARCH64_TESTS run under
#                       qemu-aarch64 (user-mode emulation)
#   make test-noproc    the native suite with /proc hidden
# The first two install what they need (tests/packages, groups musl and
# aarch64) when run as root on Debian, so that a fresh Debian 12 machine
# needs no setup.

.PHONY: test-musl check-musl musl-cmocka test-aarch64 check-aarch64

# The test binaries of the native build, under another build directory.
sks_tests_in = $(patsubst $(BUILD)/%,$(1)/%,$(TEST_BIN))
# musl has no ucontext, which the fiber switch's forced portable fallback
# needs for a fiber's first entry; musl builds use the hand-written switch.
# And no libsockserver_tls (TLS=no below): no test_tls.
MUSL_TESTS = $(filter-out %/test_fiber_portable %/test_tls,$(call sks_tests_in,$(MUSL_BUILD)))

# ------------------------------------------------------------------ musl
# Debian has no cmocka built for musl, but cmocka is one C file: it is
# compiled here from Debian's own source package (apt-get source, with a
# private deb-src list, so the machine's apt configuration is untouched).
# The defines are those cmocka's CMake checks find on musl.
MUSL_BUILD  := build/musl
MUSL_CMOCKA := $(MUSL_BUILD)/cmocka
MUSL_CMOCKA_DEFS := -DHAVE_SIGNAL_H -DHAVE_STRINGS_H -DHAVE_INTTYPES_H \
	-DHAVE_MALLOC_H -DHAVE_SIGLONGJMP -DHAVE_STRSIGNAL -DHAVE_STRUCT_TIMESPEC \
	-DHAVE_CLOCK_REALTIME -DHAVE_GCC_THREAD_LOCAL_STORAGE
# TLS=no: Debian's OpenSSL is built for glibc; test_tls.sh skips, as
# tests/skips_allowed allows.
MUSL_MAKE := $(MAKE) --no-print-directory BUILD=$(MUSL_BUILD) CC=musl-gcc TLS=no \
	CFLAGS="-O2 -g -I$(CURDIR)/$(MUSL_CMOCKA)/include" \
	LDLIBS="-L$(CURDIR)/$(MUSL_CMOCKA) -lpthread -lm"

check-musl:
	@tests/need_packages.sh --strict musl

musl-cmocka: check-musl $(MUSL_CMOCKA)/libcmocka.a

$(MUSL_CMOCKA)/libcmocka.a:
	@rm -rf $(MUSL_CMOCKA) && mkdir -p $(MUSL_CMOCKA)/apt/lists/partial $(MUSL_CMOCKA)/apt/parts
	@. /etc/os-release && printf '%s\n' 'Types: deb-src' \
	  'URIs: http://deb.debian.org/debian' "Suites: $$VERSION_CODENAME" \
	  'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
	  > $(MUSL_CMOCKA)/apt/parts/src.sources
	@apt="apt-get -q -o Dir::Etc::SourceList=/dev/null \
	  -o Dir::Etc::SourceParts=$(CURDIR)/$(MUSL_CMOCKA)/apt/parts \
	  -o Dir::State::Lists=$(CURDIR)/$(MUSL_CMOCKA)/apt/lists"; \
	cd $(MUSL_CMOCKA) && { $$apt update >apt/log 2>&1 && \
	  $$apt source --download-only cmocka >>apt/log 2>&1; } || \
	  { cat apt/log; echo "cannot fetch cmocka's Debian source package (apt-get source cmocka)"; exit 1; }
	@cd $(MUSL_CMOCKA) && tar xf $$(ls cmocka_*.orig.tar.* | grep -v '\.asc$$') && \
	  mv cmocka-*/include cmocka-*/src . && \
	  rm -rf cmocka-*/ cmocka_* apt
	musl-gcc -O2 -std=gnu99 -D_GNU_SOURCE $(MUSL_CMOCKA_DEFS) -I$(MUSL_CMOCKA)/include \
	  -c $(MUSL_CMOCKA)/src/cmocka.c -o $(MUSL_CMOCKA)/cmocka.o
	$(AR) rcs $@ $(MUSL_CMOCKA)/cmocka.o

test-musl: musl-cmocka
	@$(MUSL_MAKE) all $(MUSL_TESTS)
	@BUILD=$(MUSL_BUILD) ./tests/run_tests.sh $(MUSL_TESTS) $(TEST_SCRIPTS)

# ------------------------------------------------------------------ aarch64
# Debian's cross compiler, and cmocka and the C library for arm64 from
# Debian's multiarch packages (libcmocka-dev:arm64 brings libc6:arm64, and
# with it /lib/ld-linux-aarch64.so.1, which qemu-aarch64 finds by itself;
# `qemu-aarch64 -L /usr/aarch64-linux-gnu` hangs in pthread_create with
# qemu 7.2, so the cross toolchain's sysroot is not used at run time).
#
# The tests left out need what user-mode emulation does not give:
# test_examples and test_mixins exec the example programs (an aarch64
# program cannot exec another without binfmt_misc); test_pool,
# test_threading and test_fiber_model count this process's threads, and
# qemu adds its own; test_faults's connection resets arrive differently
# through qemu's socket layer.  Add a test here by its name.  The fiber loop runs here
# on the hand-written aarch64 switch (tests/test_fiber_aarch64.sh runs
# the switch's own tests, in make test).
AARCH64_BUILD := build/aarch64
AARCH64_CC    ?= aarch64-linux-gnu-gcc
AARCH64_LIBS  := /usr/lib/aarch64-linux-gnu
AARCH64_TESTS ?= test_address test_stream test_tcp test_udp test_unix \
	test_hooks test_lifecycle test_drain test_activation test_forking \
	test_prefork test_proxy test_sendfile test_fuzz_corpus test_tables \
	test_fiber_loop
AARCH64_BIN   := $(AARCH64_TESTS:%=$(AARCH64_BUILD)/tests/%)

check-aarch64:
	@if [ "$$(id -u)" = 0 ] && command -v dpkg >/dev/null; then dpkg --add-architecture arm64; fi
	@tests/need_packages.sh --strict aarch64

test-aarch64: check-aarch64
	@$(MAKE) --no-print-directory BUILD=$(AARCH64_BUILD) CC=$(AARCH64_CC) TLS=no \
	  LDLIBS="-L$(AARCH64_LIBS) -lpthread -lm" $(AARCH64_BIN)
	@TEST_WRAP=qemu-aarch64 ./tests/run_tests.sh $(AARCH64_BIN)

# ------------------------------------------------------------------ no /proc
# The native suite where /proc is not mounted, as on the BSDs and macOS
# and in some containers: a private mount namespace puts an empty tmpfs
# over /proc.  What needs /proc says so and skips; the rest must pass.
.PHONY: test-noproc
test-noproc: check-cmocka
	@$(MAKE) --no-print-directory lib $(TEST_BIN) examples
	@unshare -m true 2>/dev/null || \
	  { echo "test-noproc: skipped: unshare -m is not permitted here (needs root, CAP_SYS_ADMIN)"; exit 0; }; \
	unshare -m sh -c 'mount -t tmpfs none /proc && BUILD=$(BUILD) exec ./tests/run_tests.sh $(TEST_BIN) $(TEST_SCRIPTS)'

# ------------------------------------------------------------------ fallbacks
# Every portable fallback of src/compat.c forced on Linux (SKS_PORTABLE):
# the library, the examples and the whole suite built so into
# build/portable, the cmocka suite (test_examples, the example contract,
# among it) and the scripted tests run against them.
PORTABLE_BUILD := build/portable
.PHONY: test-portable check-compat
test-portable: check-compat check-cmocka
	@$(MAKE) --no-print-directory BUILD=$(PORTABLE_BUILD) \
	  CFLAGS="$(CFLAGS) -DSKS_PORTABLE" all $(call sks_tests_in,$(PORTABLE_BUILD))
	@BUILD=$(PORTABLE_BUILD) ./tests/run_tests.sh $(call sks_tests_in,$(PORTABLE_BUILD)) $(TEST_SCRIPTS)

# Nothing in the library or its examples outside the portability pair
# (src/compat.c, src/compat.h) and the fiber loop's epoll backend
# (src/fiber_poller_epoll.c) names a Linux-only call, type or constant;
# comment lines may.  The second line is the fiber model's: epoll and
# eventfd (the poll backend stands in), the CPU affinity mask, and the
# stack mapping's flags.
COMPAT_NAMES := accept4 pipe2 SOCK_CLOEXEC SOCK_NONBLOCK MSG_NOSIGNAL \
	SO_NOSIGPIPE sendfile sigtimedwait pthread_tryjoin_np SO_DOMAIN \
	MSG_ERRQUEUE IP_RECVERR IPV6_RECVERR strerrorname_np pthread_getattr_np \
	epoll_create epoll_create1 epoll_ctl epoll_wait epoll_pwait epoll_event \
	EPOLLIN EPOLLOUT EPOLLET EPOLLRDHUP EPOLLONESHOT POLLRDHUP eventfd \
	EFD_CLOEXEC EFD_NONBLOCK sched_getaffinity cpu_set_t CPU_COUNT \
	MAP_NORESERVE MAP_STACK MADV_NOHUGEPAGE
COMPAT_FILES := src/compat.c src/compat.h src/fiber_poller_epoll.c
COMPAT_SCOPE := $(filter-out $(COMPAT_FILES),$(wildcard src/*.c src/*.h)) \
	include/sockserver.h $(wildcard examples/*.c examples/*.h)
check-compat:
	@bad=$$(grep -nwE '$(subst $(eval ) ,|,$(strip $(COMPAT_NAMES)))' $(COMPAT_SCOPE) | \
	  grep -vE '^[^:]+:[0-9]+:[[:space:]]*(/\*|\*|//)'); \
	if [ -n "$$bad" ]; then echo "$$bad"; \
	  echo "check-compat: Linux-only names outside $(COMPAT_FILES) (above)"; exit 1; fi; \
	echo "check-compat: no Linux-only name outside $(COMPAT_FILES) ($(words $(COMPAT_NAMES)) names, $(words $(COMPAT_SCOPE)) files)"
