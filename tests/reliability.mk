# tests/reliability.mk - the reliability suite (included by the Makefile;
# see docs/RELIABILITY.md):
#   make valgrind      the whole cmocka suite under memcheck, forked
#                      children included; any error or definite/indirect
#                      leak fails
#   make fuzz          each libFuzzer target for FUZZ_SECONDS (default 60)
#                      from its committed seed corpus
#   make fuzz-regress  every committed corpus input once through the
#                      libFuzzer builds (make test replays them too:
#                      tests/test_fuzz_corpus.c)
#   make soak          every server variant under mixed load for
#                      SOAK_SECONDS in all (default 60)

.PHONY: valgrind check-valgrind fuzz fuzz-build fuzz-regress check-fuzzer soak

# ------------------------------------------------------------------ valgrind
# Memcheck follows fork() by itself (a forked child is still under it;
# --trace-children=yes adds exec'd programs); each process logs to its own
# file (%p), so a report from a forked child is not lost in the parent's
# stderr, and every log is checked after the run.
VALGRIND_DIR     := $(BUILD)/valgrind
VALGRIND_TIMEOUT ?= 1800
VALGRIND_FLAGS   := --leak-check=full --show-leak-kinds=definite,indirect \
	--errors-for-leak-kinds=definite,indirect --error-exitcode=1 \
	--trace-children=yes --child-silent-after-fork=no --num-callers=30

check-valgrind:
	@tests/need_packages.sh valgrind
	@command -v valgrind >/dev/null || { echo "valgrind is missing: run  sudo apt-get install valgrind"; exit 1; }

valgrind: check-cmocka check-valgrind
	@$(MAKE) --no-print-directory $(TEST_BIN) examples
	@rm -rf $(VALGRIND_DIR) && mkdir -p $(VALGRIND_DIR)
	@TEST_TIMEOUT=$(VALGRIND_TIMEOUT) \
	  TEST_WRAP="valgrind $(VALGRIND_FLAGS) --log-file=$(VALGRIND_DIR)/{}.%p.log" \
	  ./tests/run_tests.sh $(TEST_BIN); rc=$$?; \
	reports=$$(grep -l 'ERROR SUMMARY: [1-9]' $(VALGRIND_DIR)/*.log); \
	for l in $$(echo $$reports | tr ' ' '\n' | head -n 5); do echo "== $$l"; cat $$l; done; \
	[ -z "$$reports" ] || echo "memcheck reports in $$(echo $$reports | wc -w) processes:" \
	  $$(echo $$reports | tr ' ' '\n' | head -n 20) "(first 5 shown above)"; \
	echo "processes checked: $$(grep -l 'ERROR SUMMARY' $(VALGRIND_DIR)/*.log | wc -l)" \
	  "(and $$(grep -L 'ERROR SUMMARY' $(VALGRIND_DIR)/*.log | wc -l) killed by SIGKILL, unchecked)"; \
	[ $$rc -eq 0 ] && [ -z "$$reports" ]

# ------------------------------------------------------------------ fuzzing
# The library is compiled with coverage for libFuzzer (fuzzer-no-link) and
# ASan+UBSan into build/fuzz; each tests/fuzz/fuzz_NAME.c links into
# build/fuzz/fuzz_NAME.  A run's new inputs go to build/fuzz/corpus/NAME;
# the committed seeds in tests/fuzz/corpus/NAME are only read.  A crash is
# saved as build/fuzz/artifacts/NAME-crash-*: fix it, then commit the
# input to tests/fuzz/corpus/NAME so every later run replays it.
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build/fuzz
FUZZ_NAMES   := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN     := $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_CFLAGS  := -O1 -g -fno-omit-frame-pointer
FUZZ_SAN     := address,undefined -fno-sanitize-recover=all
FUZZ_MAXLEN  ?= 4096

check-fuzzer:
	@tests/need_packages.sh sanitizers
	@printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){(void)d;(void)n;return 0;}\n' \
	  | clang -x c - -fsanitize=fuzzer,address -o /dev/null 2>/dev/null \
	  || { echo "libFuzzer is missing: run  sudo apt-get install clang libclang-rt-14-dev"; exit 1; }

fuzz-build: check-fuzzer
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_DIR) CC=clang CFLAGS="$(FUZZ_CFLAGS)" \
	  SAN="-fsanitize=fuzzer-no-link,$(FUZZ_SAN)" $(FUZZ_DIR)/libsockserver.a
	@$(MAKE) --no-print-directory $(FUZZ_BIN)

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_DIR)/libsockserver.a
	clang $(FUZZ_CFLAGS) -std=c11 $(WARN) -Iinclude -fsanitize=fuzzer,$(FUZZ_SAN) \
	  $< $(FUZZ_DIR)/libsockserver.a -lpthread -lm -o $@

fuzz: fuzz-build
	@mkdir -p $(FUZZ_DIR)/artifacts
	@for t in $(FUZZ_NAMES); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t; \
	  echo "== fuzz_$$t for $(FUZZ_SECONDS) s"; \
	  dict=; [ -f tests/fuzz/$$t.dict ] && dict=-dict=tests/fuzz/$$t.dict; \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(FUZZ_DIR)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_MAXLEN) \
	    -timeout=10 -print_final_stats=1 $$dict \
	    -artifact_prefix=$(FUZZ_DIR)/artifacts/$$t- \
	    $(FUZZ_DIR)/corpus/$$t tests/fuzz/corpus/$$t >$(FUZZ_DIR)/$$t.log 2>&1; \
	  rc=$$?; sed -e '/Recommended dictionary/,/End of recommended/d' -e '/^#[0-9]/d' \
	    $(FUZZ_DIR)/$$t.log | tail -n 40; \
	  grep -e '^#[0-9]*.*DONE' $(FUZZ_DIR)/$$t.log; \
	  [ $$rc -eq 0 ] || { echo "fuzz_$$t FAILED (log: $(FUZZ_DIR)/$$t.log)"; exit 1; }; \
	done; echo "fuzz: $(words $(FUZZ_NAMES)) passed, 0 failed"

fuzz-regress: fuzz-build
	@set -e; n=0; for t in $(FUZZ_NAMES); do \
	  $(FUZZ_DIR)/fuzz_$$t -runs=0 tests/fuzz/corpus/$$t >$(FUZZ_DIR)/regress-$$t.log 2>&1 \
	    || { cat $(FUZZ_DIR)/regress-$$t.log; echo "fuzz-regress: fuzz_$$t FAILED"; exit 1; }; \
	  k=$$(ls tests/fuzz/corpus/$$t | wc -l); n=$$((n + k)); \
	  echo "fuzz_$$t: $$k inputs replayed"; \
	done; echo "fuzz-regress: $$n passed, 0 failed"

# ------------------------------------------------------------------ soak
SOAK_SECONDS ?= 60

soak: check-cmocka
	@$(MAKE) --no-print-directory $(BUILD)/tests/soak
	SOAK_SECONDS=$(SOAK_SECONDS) $(BUILD)/tests/soak
