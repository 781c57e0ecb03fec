# perfc — a thin wrapper over CMake and the scripts in scripts/.
#   make demo    install what is missing, build, run the echo and user-service demos
#   make test    install what is missing, build, run every test
#   make check   the tests under ASan+UBSan and under TSan
#   make bench   perfc vs peers under h2load (see docs/benchmarks.md)
#   make fuzz    libFuzzer targets, FUZZ_SECONDS each (default 60; clang)
#   make soak    soak and fault tests, SOAK_SECONDS (default 600)
MAKEFLAGS += --no-print-directory
BUILD ?= build
JOBS  ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all bootstrap build demo test check bench fuzz soak install clean

all: build

bootstrap:
	@scripts/bootstrap

build: bootstrap
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

demo: build
	@scripts/demo $(BUILD)

test: build
	@scripts/run-tests $(BUILD)

check:
	@scripts/bootstrap --check
	@scripts/check

# Every comparison in docs/benchmarks.md, one script after the other (about
# 30 minutes on 2 cores; each prints "run i of n, ..., about T left");
# `make bench BENCH_SCRIPTS=run` for the headline alone. Each script checks
# every run; the target fails if any did. Then bench/tools/charts.py redraws
# docs/img/bench/*.svg from the runs (docs/benchmarks.md embeds them) and
# keeps the runs it drew in docs/img/bench/data/.
BENCH_SCRIPTS ?= run run-latency run-overhead run-streaming run-idle run-client run-users run-http
bench:
	@scripts/bootstrap --bench
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DPERFC_BUILD_PEERS=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@rc=0; i=0; n=$(words $(BENCH_SCRIPTS)); for s in $(BENCH_SCRIPTS); do \
	  i=$$((i + 1)); echo "== bench/$$s $(BUILD) (script $$i of $$n)"; bench/$$s $(BUILD) || rc=1; \
	done; \
	/usr/bin/python3 bench/tools/charts.py $(BUILD) docs/img/bench --data docs/img/bench/data || rc=1; \
	exit $$rc

fuzz:
	@scripts/bootstrap --check
	@scripts/fuzz

soak:
	@scripts/bootstrap --bench
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPERFC_BUILD_BENCH=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@scripts/soak $(BUILD)

install: build
	@cmake --install $(BUILD)

clean:
	@rm -rf $(BUILD) build-asan build-tsan build-fuzz
