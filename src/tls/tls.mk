# src/tls/tls.mk - libsockserver_tls, TLS on OpenSSL 3 (included by the
# top Makefile).  A separate library with its own header and .pc, so that
# libsockserver itself never links OpenSSL (libevent's libevent_openssl).
#
#   make TLS=openssl   builds it (libssl-dev, OpenSSL 3, needed)
#   make TLS=no        does not
#   make               builds it when pkg-config finds libssl >= 3
#
# The TLS examples (http_file_server --tls, echo_server --tls) and tests
# come with it; without it, those say "built without TLS" and the tests
# skip.

TLS_FOUND := $(shell pkg-config --exists 'libssl >= 3' 2>/dev/null && echo openssl)
TLS       ?= $(if $(TLS_FOUND),openssl,no)

TLS_SRC    := $(wildcard src/tls/*.c)
TLS_OBJ    := $(TLS_SRC:src/tls/%.c=$(BUILD)/tls/obj/%.o)
TLS_PIC    := $(TLS_SRC:src/tls/%.c=$(BUILD)/tls/pic/%.o)
TLS_STATIC := $(BUILD)/libsockserver_tls.a
TLS_SHARED := $(BUILD)/libsockserver_tls.so.$(VERSION)
TLS_SONAME := libsockserver_tls.so.$(SOVERSION)
TLS_CFLAGS  = $(shell pkg-config --cflags libssl libcrypto 2>/dev/null)
TLS_LIBS    = $(shell pkg-config --libs libssl libcrypto 2>/dev/null)

.PHONY: tls tls-line install-tls

# One line per build saying which way it went.
tls-line:
	@echo "TLS: $(if $(filter openssl,$(TLS)),openssl $(shell pkg-config --modversion libssl 2>/dev/null): $(TLS_SHARED) (make TLS=no to skip),off: $(if $(filter no,$(TLS)),TLS=no,no libssl >= 3 (apt-get install libssl-dev)); make TLS=openssl builds libsockserver_tls)"

ifeq ($(TLS),openssl)
lib: tls
tls: tls-line $(TLS_STATIC) $(TLS_SHARED) $(BUILD)/libsockserver_tls.so \
	$(BUILD)/sockserver-tls.pc

# The examples that offer --tls, and how they link it.
TLS_EXAMPLES := $(BUILD)/examples/http_file_server $(BUILD)/examples/echo_server
$(TLS_EXAMPLES): EX_CFLAGS = -DEXAMPLE_TLS $(TLS_CFLAGS)
$(TLS_EXAMPLES): EX_LIBS = $(TLS_STATIC) $(TLS_LIBS)
$(TLS_EXAMPLES): $(TLS_STATIC)
else
# What the TLS tests read to say why they skip (tests/test_tls.sh); a
# library left from an earlier build with TLS goes, so nothing tests it.
lib: tls-line $(BUILD)/tls-off
$(BUILD)/tls-off: FORCE | $(BUILD)/obj
	@rm -f $(TLS_STATIC) $(TLS_SHARED) $(BUILD)/libsockserver_tls.so*
	@echo "$(if $(filter no,$(TLS)),made with TLS=no,no libssl >= 3 found)" > $@
.PHONY: FORCE
FORCE:
endif

$(BUILD)/tls/obj $(BUILD)/tls/pic:
	mkdir -p $@

$(BUILD)/tls/obj/%.o: src/tls/%.c | $(BUILD)/tls/obj
	$(CC) $(CFLAGS) $(TLS_CFLAGS) -fvisibility=hidden -c $< -o $@

$(BUILD)/tls/pic/%.o: src/tls/%.c | $(BUILD)/tls/pic
	$(CC) $(CFLAGS) $(TLS_CFLAGS) -fvisibility=hidden -fPIC -c $< -o $@

$(TLS_STATIC): $(TLS_OBJ)
	$(AR) rcs $@ $^

# Linked against the core's shared library (never into it): a program
# using both loads one libsockserver.
$(TLS_SHARED): $(TLS_PIC) $(SHARED) $(BUILD)/$(LINKNAME)
	$(CC) -shared -Wl,-soname,$(TLS_SONAME) -o $@ $(TLS_PIC) \
	  -L$(BUILD) -lsockserver $(TLS_LIBS) $(LDLIBS)

$(BUILD)/libsockserver_tls.so: $(TLS_SHARED)
	ln -sf $(notdir $(TLS_SHARED)) $(BUILD)/$(TLS_SONAME)
	ln -sf $(TLS_SONAME) $@

$(BUILD)/sockserver-tls.pc: src/tls/tls.mk | $(BUILD)/obj
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCDIR)' '' \
	  'Name: sockserver-tls' \
	  'Description: TLS on OpenSSL 3 for libsockserver stream servers' \
	  'Version: $(VERSION)' 'Requires: sockserver = $(VERSION)' \
	  'Requires.private: libssl libcrypto' \
	  'Libs: -L$${libdir} -lsockserver_tls' 'Cflags: -I$${includedir}' > $@

# The in-process TLS tests (cmocka), part of make test, asan, tsan and
# valgrind when TLS is built.
ifeq ($(TLS),openssl)
TEST_BIN += $(BUILD)/tests/test_tls
# test-run's prerequisites were read before this file: name it there too.
test-run: $(BUILD)/tests/test_tls
$(BUILD)/tests/test_tls: tests/tls/test_tls.c $(TEST_SUPPORT) tests/support.h \
		include/sockserver_tls.h $(TLS_STATIC) $(STATIC) | $(BUILD)/tests
	$(CC) $(CFLAGS) $(TLS_CFLAGS) -Itests $< $(TEST_SUPPORT) $(TLS_STATIC) \
	  $(STATIC) -lcmocka $(TLS_LIBS) $(LDLIBS) -o $@
endif

install-tls: tls
	install -d $(DESTDIR)$(INCDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PCDIR)
	install -m 644 include/sockserver_tls.h $(DESTDIR)$(INCDIR)/
	install -m 644 $(TLS_STATIC) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(TLS_SHARED) $(DESTDIR)$(LIBDIR)/
	ln -sf $(notdir $(TLS_SHARED)) $(DESTDIR)$(LIBDIR)/$(TLS_SONAME)
	ln -sf $(TLS_SONAME) $(DESTDIR)$(LIBDIR)/libsockserver_tls.so
	install -m 644 $(BUILD)/sockserver-tls.pc $(DESTDIR)$(PCDIR)/

# The TLS rows of make bench (bench/tls/run.sh): against a hand-written
# OpenSSL server, per server CPU-second.
ifeq ($(TLS),openssl)
TLS_BENCH_DIR := $(BUILD)/bench/tls
TLS_BENCH_BIN := $(addprefix $(TLS_BENCH_DIR)/,ref_tls tls_load sks_tls_echo tls_heap)
.PHONY: bench-tls
bench: bench-tls
bench-tls: $(TLS_BENCH_BIN)
	@BENCH_BIN=$(TLS_BENCH_DIR) BENCH_SECONDS=$(BENCH_SECONDS) bench/tls/run.sh

$(TLS_BENCH_DIR):
	mkdir -p $@

$(TLS_BENCH_DIR)/ref_tls $(TLS_BENCH_DIR)/tls_load: $(TLS_BENCH_DIR)/%: bench/tls/%.c | $(TLS_BENCH_DIR)
	$(CC) $(CFLAGS) $(TLS_CFLAGS) $< $(TLS_LIBS) $(LDLIBS) -o $@

$(TLS_BENCH_DIR)/sks_tls_echo $(TLS_BENCH_DIR)/tls_heap: $(TLS_BENCH_DIR)/%: bench/tls/%.c \
		$(EX_COMMON) $(TLS_STATIC) $(STATIC) | $(TLS_BENCH_DIR)
	$(CC) $(CFLAGS) $(TLS_CFLAGS) -Iexamples $< $(EX_COMMON) $(TLS_STATIC) $(STATIC) \
	  $(TLS_LIBS) $(LDLIBS) -o $@
endif
