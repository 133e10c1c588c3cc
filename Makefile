# pushgate - build, test, bench, demo.
#
#   make            release build of every library and program (build/release)
#   make test       dependencies if missing, ASan+UBSan build (build/test), every test
#   make test-faults  the whole fault harness (tests/faults) against the ASan build
#   make bench      release build, then the benchmarks
#   make demo       dependencies, local MariaDB + Redis, the whole stack
#   make install PREFIX=/usr/local
#   make clean

BUILD   ?= release
PREFIX  ?= /usr/local
CC      ?= cc
PYTHON  ?= /usr/bin/python3
VERSION := 0.1.0

OUT     := build/$(BUILD)
PKGS    := libevent libevent_pthreads jansson libjwt inih
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS_COMMON := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g \
                 -DPG_VERSION='"$(VERSION)"' -Icommon $(PKG_CFLAGS) $(shell mariadb_config --cflags 2>/dev/null)
ifeq ($(BUILD),test)
  CFLAGS_MODE := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LDFLAGS_MODE := -fsanitize=address,undefined
else
  # jemalloc (common/memory.c) only here: the sanitizers bring their own allocator
  CFLAGS_MODE := -O2 -DPG_JEMALLOC
  LDFLAGS_MODE :=
  LIBS_MODE := -ljemalloc
endif
CFLAGS  += $(CFLAGS_COMMON) $(CFLAGS_MODE)
LDFLAGS += $(LDFLAGS_MODE)
LIBS    := $(PKG_LIBS) -lwslay -lhiredis -lhttp_parser $(shell mariadb_config --libs 2>/dev/null) -lssl -lcrypto -lpthread -lm $(LIBS_MODE)

COMMON_SRC  := $(wildcard common/*.c)
COMMON_OBJ  := $(COMMON_SRC:%.c=$(OUT)/obj/%.o)
COMMON_LIB  := $(OUT)/libpushgate.a

# The gateway's modules (all but its main) as a library, so examples and unit
# tests can use the WebSocket hook.  Only they and the gateway see its
# headers: the daemons share nothing but common/.
GATEWAY_SRC := $(filter-out gateway/main.c,$(wildcard gateway/*.c))
GATEWAY_OBJ := $(GATEWAY_SRC:%.c=$(OUT)/obj/%.o)
GATEWAY_LIB := $(OUT)/libpushgate-gateway.a
LIBS_OWN    := $(GATEWAY_LIB) $(COMMON_LIB)
$(OUT)/obj/gateway/%.o $(OUT)/tests/% $(OUT)/bin/%: private CFLAGS += -Igateway

EXAMPLE_SRC := $(wildcard examples/*.c)
EXAMPLE_BIN := $(EXAMPLE_SRC:examples/%.c=$(OUT)/bin/%)
BENCH_SRC   := $(wildcard bench/*.c)
BENCH_BIN   := $(BENCH_SRC:bench/%.c=$(OUT)/bin/%)
UNIT_SRC    := $(wildcard tests/unit/test_*.c)
UNIT_BIN    := $(UNIT_SRC:tests/unit/%.c=$(OUT)/tests/%)
# pushgate-bench: its own folder of small modules, one binary.
BENCH_CLIENT_SRC := $(wildcard bench/client/*.c)
BENCH_CLIENT_OBJ := $(BENCH_CLIENT_SRC:%.c=$(OUT)/obj/%.o)
BENCH_CLIENT_BIN := $(OUT)/bin/pushgate-bench
DAEMON_DIRS := $(filter gateway proxy consumer ctl,$(patsubst %/,%,$(dir $(wildcard */main.c))))
DAEMON_BIN  := $(DAEMON_DIRS:%=$(OUT)/bin/pushgate-%)

.PHONY: all test unit e2e faults-short test-faults bench demo install clean deps
# Keep objects between builds (make would delete them as intermediates).
.SECONDARY:

all: $(COMMON_LIB) $(GATEWAY_LIB) $(EXAMPLE_BIN) $(BENCH_BIN) $(BENCH_CLIENT_BIN) $(UNIT_BIN) $(DAEMON_BIN)

$(OUT)/obj/%.o: %.c $(wildcard */*.h) | $(OUT)/obj
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(OUT)/obj:
	@mkdir -p $@

$(COMMON_LIB): $(COMMON_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(GATEWAY_LIB): $(GATEWAY_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(OUT)/bin/%: examples/%.c $(LIBS_OWN)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< -o $@ $(LIBS_OWN) $(LDFLAGS) $(LIBS)

$(OUT)/bin/%: bench/%.c $(LIBS_OWN)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< -o $@ $(LIBS_OWN) $(LDFLAGS) $(LIBS)

$(OUT)/obj/bench/client/%.o: bench/client/%.c $(wildcard bench/client/*.h) $(wildcard */*.h) | $(OUT)/obj
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BENCH_CLIENT_BIN): $(BENCH_CLIENT_OBJ) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BENCH_CLIENT_OBJ) -o $@ $(COMMON_LIB) $(LDFLAGS) $(LIBS)

# pushgate-bench's histogram and sequence map are compiled into their unit test.
$(OUT)/tests/test_bench_stats: bench/client/hist.c bench/client/seqmap.c $(wildcard bench/client/*.h)
# pushgate-ctl's dead-letter checks are compiled into their unit test.
$(OUT)/tests/test_dead_letter: ctl/dead_letter.c ctl/ctl.h

$(OUT)/tests/%: tests/unit/%.c $(LIBS_OWN)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< -o $@ $(LIBS_OWN) $(LDFLAGS) $(LIBS) -lcmocka

# Each daemon folder holds main.c plus its own modules.
.SECONDEXPANSION:
$(OUT)/bin/pushgate-%: $$(foreach f,$$(wildcard $$*/*.c),$(OUT)/obj/$$(basename $$(f)).o) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(filter %.o,$^) -o $@ $(COMMON_LIB) $(LDFLAGS) $(LIBS)

deps:
	@scripts/install-deps --check >/dev/null 2>&1 || scripts/install-deps

# Unit tests (cmocka), then process-level and end-to-end tests (pytest) against
# the ASan/UBSan build, with a throw-away MariaDB and Redis from tests/fixture.py.
test: deps
	$(MAKE) BUILD=release all
	$(MAKE) BUILD=test all
	$(MAKE) BUILD=test unit e2e faults-short fuzz-short

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

e2e:
	PG_BIN=$(CURDIR)/$(OUT)/bin PG_RELEASE_BIN=$(CURDIR)/build/release/bin ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e

# The fault harness (`make test` runs its short variant): the whole system under work
# orders while one part fails, every order counted by id, a table per run.
# FAULTS passes pytest arguments: FAULTS="-m short" is the quick variant.
FAULTS_RUN = PG_BIN=$(CURDIR)/build/test/bin ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(PYTHON) -m pytest -q -s -p no:cacheprovider tests/faults

test-faults: deps
	$(MAKE) BUILD=test all
	$(FAULTS_RUN) $(FAULTS)

# The short variant, part of `make test`: kill -9 of a worker and of a whole
# gateway under 2,000 orders.
faults-short:
	$(FAULTS_RUN) -m short

# The peer comparison (bench/peer.py) also needs nginx and libnginx-mod-nchan,
# bench-only packages (scripts/install-deps --bench); without them bench/run.py
# says what to install and skips that comparison.
bench: deps
	@scripts/install-deps --bench --check >/dev/null 2>&1 || scripts/install-deps --bench || \
	  echo "make bench: nginx/libnginx-mod-nchan not installed; the peer comparison will be skipped"
	$(MAKE) BUILD=release all
	PG_BIN=$(CURDIR)/build/release/bin $(PYTHON) bench/run.py

demo: deps
	$(MAKE) BUILD=release all
	PG_BIN=$(CURDIR)/build/release/bin $(PYTHON) scripts/demo.py

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/pushgate/sql $(DESTDIR)$(PREFIX)/share/pushgate/config
	for b in $(DAEMON_BIN) $(EXAMPLE_BIN); do install -m 755 $$b $(DESTDIR)$(PREFIX)/bin/; done
	install -m 644 sql/*.sql $(DESTDIR)$(PREFIX)/share/pushgate/sql/
	install -d $(DESTDIR)$(PREFIX)/share/pushgate/www
	install -m 644 gateway/www/* $(DESTDIR)$(PREFIX)/share/pushgate/www/
	-install -m 644 config/*.ini $(DESTDIR)$(PREFIX)/share/pushgate/config/ 2>/dev/null

clean:
	rm -rf build

# ---- fuzzing (tests/fuzz) ------------------------------------------------
# One libFuzzer target per parser, built with clang (ASan + UBSan) into
# build/fuzz; each runs over its seed corpus in tests/fuzz/corpus/<target>,
# and what it finds new goes to build/fuzz/corpus/<target> (the checked-in
# seeds are never written).  Crashes land in build/fuzz/artifacts/.
#   make fuzz               every target for FUZZ_SECONDS (300) each
#   make fuzz-short         each target over its corpus, then 5 s more (make test)
#   make fuzz FUZZ_TARGETS="jwt config" FUZZ_SECONDS=60
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 300
FUZZ_OUT     := build/fuzz
FUZZ_SRC     := $(wildcard tests/fuzz/*.c)
FUZZ_TARGETS ?= $(FUZZ_SRC:tests/fuzz/%.c=%)
FUZZ_BIN     := $(FUZZ_TARGETS:%=$(FUZZ_OUT)/%)
FUZZ_CFLAGS  := $(CFLAGS_COMMON) -Igateway -O1 -fno-omit-frame-pointer \
                -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_OBJ     := $(patsubst %.c,$(FUZZ_OUT)/obj/%.o,$(COMMON_SRC) $(GATEWAY_SRC))
FUZZ_LIBS    := $(FUZZ_OUT)/libpushgate-gateway.a $(FUZZ_OUT)/libpushgate.a $(PKG_LIBS) -lwslay \
                -lhiredis -lhttp_parser $(shell mariadb_config --libs 2>/dev/null) -lssl -lcrypto -lpthread -lm
FUZZ_FLAGS   ?= -max_len=8192 -timeout=10 -print_final_stats=1
FUZZ_HAVE_CC  = command -v $(FUZZ_CC) >/dev/null 2>&1 && \
                echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { (void)d; return (int)n * 0; }' | \
                $(FUZZ_CC) -x c -fsanitize=fuzzer -o /dev/null - >/dev/null 2>&1
# Runs one target ($$t): over the seeds, then for $(1) seconds.
FUZZ_ONE = mkdir -p $(FUZZ_OUT)/corpus/$$t $(FUZZ_OUT)/artifacts && \
	  $(FUZZ_OUT)/$$t $(FUZZ_FLAGS) -runs=0 -artifact_prefix=$(FUZZ_OUT)/artifacts/$$t- \
	    tests/fuzz/corpus/$$t && \
	  $(FUZZ_OUT)/$$t $(FUZZ_FLAGS) -max_total_time=$(1) -artifact_prefix=$(FUZZ_OUT)/artifacts/$$t- \
	    $(FUZZ_OUT)/corpus/$$t tests/fuzz/corpus/$$t

.PHONY: fuzz fuzz-short fuzz-build

$(FUZZ_OUT)/obj/%.o: %.c $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_OUT)/libpushgate.a: $(filter $(FUZZ_OUT)/obj/common/%,$(FUZZ_OBJ))
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_OUT)/libpushgate-gateway.a: $(filter $(FUZZ_OUT)/obj/gateway/%,$(FUZZ_OBJ))
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_OUT)/%: tests/fuzz/%.c $(wildcard tests/fuzz/*.h) $(FUZZ_OUT)/libpushgate-gateway.a $(FUZZ_OUT)/libpushgate.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< -o $@ $(FUZZ_LIBS)

fuzz-build:
	@if $(FUZZ_HAVE_CC); then $(MAKE) --no-print-directory $(FUZZ_BIN); else \
	  echo "fuzz: $(FUZZ_CC) with libFuzzer not found (scripts/install-deps installs clang); skipped"; fi

fuzz: fuzz-build
	@if $(FUZZ_HAVE_CC); then set -e; for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; $(call FUZZ_ONE,$(FUZZ_SECONDS)); done; fi

fuzz-short: fuzz-build
	@if $(FUZZ_HAVE_CC); then set -e; for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz-short $$t"; log=$(FUZZ_OUT)/$$t.short.log; \
	  if ! ( $(call FUZZ_ONE,5) ) >$$log 2>&1; then cat $$log; exit 1; fi; \
	  grep -E '^(Done|stat::number_of_executed_units)' $$log || true; done; fi
