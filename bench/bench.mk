# bench/bench.mk - the benchmarks (included by the top Makefile).
#
#   make bench            the full run: every scenario, one table, then the
#                         per-request costs (bench-syscalls); under 5 minutes
#   make bench-quick      a ~30-second smoke run of the main scenarios
#   make bench-syscalls   system calls and instructions per request only
#   make bench-slowloris  the HTTP example under slowhttptest (every model,
#                         slowloris and slow read): the attack figures
#   make bench-upgrade    whoami_server upgraded 10 times under load, per
#                         model: failed connections, time to ready
#   BENCH_SECONDS=N       seconds measured per run (default 1; each server runs twice)
#
# Everything is built into $(BUILD)/bench/ with the library's flags; results
# land in $(BUILD)/bench/results/.  See docs/BENCHMARKS.md.

BENCH_DIR     := $(BUILD)/bench
BENCH_SECONDS ?= 1
BENCH_BIN     := $(addprefix $(BENCH_DIR)/,loadgen ref_thread ref_fork \
                   ref_epoll ref_udp sks_echo shutdown_latency \
                   fiber_switch fiber_switch_portable)
BENCH_ENV      = BENCH_BIN=$(BENCH_DIR) BENCH_SECONDS=$(BENCH_SECONDS)

.PHONY: bench bench-quick bench-syscalls bench-build bench-slowloris bench-upgrade

bench-build: $(BENCH_BIN)

bench: bench-build
	@$(BENCH_ENV) bench/run.sh full
	@$(MAKE) --no-print-directory bench-slowloris
	@$(MAKE) --no-print-directory bench-upgrade

# The same run as tests/test_slowloris.sh (its assertions included); the
# figures go to the screen and to $(BENCH_DIR)/results/slowloris.txt.
bench-slowloris: $(BUILD)/examples/http_file_server | $(BENCH_DIR)
	@mkdir -p $(BENCH_DIR)/results
	@echo "slow clients against examples/http_file_server (docs/HTTP.md):"
	@BUILD=$(BUILD) tests/test_slowloris.sh | grep -E 'figures:|slowhttptest:|skipped|failure' \
	  | tee $(BENCH_DIR)/results/slowloris.txt

# Zero-downtime upgrades (docs/DEPLOYMENT.md, section 4): the load of
# tests/test_upgrade.c, unpaced; figures on the screen and in
# $(BENCH_DIR)/results/upgrade.txt.
bench-upgrade: $(BENCH_DIR)/upgrade_bench $(BUILD)/examples/whoami_server
	@mkdir -p $(BENCH_DIR)/results
	@$(BENCH_DIR)/upgrade_bench $(BUILD)/examples/whoami_server \
	  | tee $(BENCH_DIR)/results/upgrade.txt

$(BENCH_DIR)/upgrade_bench: bench/upgrade_bench.c tests/upgrade_drive.c \
		tests/upgrade_drive.h | $(BENCH_DIR)
	$(CC) $(CFLAGS) -Itests bench/upgrade_bench.c tests/upgrade_drive.c \
	  $(LDLIBS) -o $@

bench-quick: bench-build
	@$(BENCH_ENV) bench/run.sh quick

bench-syscalls: bench-build
	@$(BENCH_ENV) bench/syscalls.sh

$(BENCH_DIR):
	mkdir -p $@

# The load generator and the hand-written servers owe the library nothing.
$(BENCH_DIR)/loadgen: bench/loadgen.c bench/net.c bench/net.h | $(BENCH_DIR)
	$(CC) $(CFLAGS) bench/loadgen.c bench/net.c $(LDLIBS) -o $@

$(BENCH_DIR)/ref_%: bench/ref_%.c bench/net.c bench/net.h | $(BENCH_DIR)
	$(CC) $(CFLAGS) $< bench/net.c $(LDLIBS) -o $@

# The library's servers: the examples' echo handler and start-up contract.
$(BENCH_DIR)/sks_echo: bench/sks_echo.c $(EX_COMMON) examples/common.h $(STATIC) \
		| $(BENCH_DIR)
	$(CC) $(CFLAGS) -Iexamples $< $(EX_COMMON) $(STATIC) $(LDLIBS) -o $@

$(BENCH_DIR)/shutdown_latency: bench/shutdown_latency.c bench/net.c bench/net.h \
		$(STATIC) | $(BENCH_DIR)
	$(CC) $(CFLAGS) $< bench/net.c $(STATIC) $(LDLIBS) -o $@

# The fiber context switch: the library's (this architecture's hand-written
# one), and the portable fallback forced, built from the fiber files alone.
$(BENCH_DIR)/fiber_switch: bench/fiber_switch.c $(STATIC) | $(BENCH_DIR)
	$(CC) $(CFLAGS) $< $(STATIC) $(LDLIBS) -o $@

$(BENCH_DIR)/fiber_switch_portable: bench/fiber_switch.c $(FIBER_SRC) src/internal.h \
		| $(BENCH_DIR)
	$(CC) $(CFLAGS) -DSKS_FIBER_PORTABLE $< $(FIBER_SRC) $(LDLIBS) -o $@
