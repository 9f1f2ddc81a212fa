# titan - build, test and install.  `make help` lists the targets.
#
# Sources are found by wildcard: lib/**.c and kernels/cpu/**.c (with
# kernels/attention_tiles.c and attention_ranges.c, which the backends share) make
# build/libtitan.a, cmd/titan-X.c makes build/bin/titan-X, and
# tests/unit/test_X.c makes build/tests/test_X.  CUDA=1 (the default when
# nvcc is on PATH) adds kernels/cuda/*.cu and links cuBLAS and NCCL.

PREFIX ?= /usr/local
BUILD ?= build
CC ?= cc
NVCC ?= nvcc
CUDA ?= $(if $(shell command -v $(NVCC) 2>/dev/null),1,0)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell command -v $(NVCC) 2>/dev/null))
TITAN_DATA ?= $(abspath $(CURDIR)/../shared/data)
# Debian's python3, which has python3-torch (the golden files, the benchmark)
PYTHON ?= /usr/bin/python3

WARN = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CFLAGS ?= -O2 -g
ALL_CFLAGS = $(CFLAGS) $(WARN) -std=gnu11 -D_GNU_SOURCE -pthread -fopenmp -fno-strict-aliasing -Ilib -Ikernels -MMD -MP
LDLIBS = -ljansson -lzstd -larchive -lpcre2-8 -lopenblas -lm -pthread
# MPI (lib/dist/comm_mpi.c): OpenMPI's flags from pkg-config, else from its
# compiler wrapper.  --as-needed: only tools that use the communicator load
# libmpi, whose start-up is not free.
MPI_CFLAGS := $(shell pkg-config --cflags ompi-c 2>/dev/null || mpicc --showme:compile 2>/dev/null)
MPI_LIBS := $(shell pkg-config --libs ompi-c 2>/dev/null || mpicc --showme:link 2>/dev/null)
ALL_CFLAGS += $(MPI_CFLAGS)
LDLIBS += -Wl,--as-needed $(MPI_LIBS) -Wl,--no-as-needed
NVCCFLAGS ?= -O2 -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=sm_80 \
	     -gencode arch=compute_90,code=compute_90
# the CUDA sources are held to the C sources' warnings
NVCC_WARN = -Xcompiler -Wall,-Wextra --Werror all-warnings

# Quiet rules, as git prints them; V=1 shows the commands.
ifeq ($(V),1)
Q =
say = @true
else
Q = @
say = @printf '  %-6s %s\n'
endif

LIB_SRC := $(sort $(shell find lib $(wildcard kernels/cpu) -name '*.c')) kernels/attention_tiles.c \
	kernels/attention_ranges.c
CMD_SRC := $(sort $(wildcard cmd/titan-*.c))
TEST_SRC := $(sort $(wildcard tests/unit/test_*.c))
BENCH_SRC := $(sort $(wildcard tests/bench/bench_*.c))
TOOL_SRC := $(sort $(wildcard tests/tools/*.c))
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
CU_SRC := $(sort $(wildcard kernels/cuda/*.cu))

ifeq ($(CUDA),1)
ALL_CFLAGS += -DTITAN_CUDA=1 -I$(CUDA_HOME)/include
LIB_SRC += kernels/cuda_host.c
# --as-needed: a tool that never calls the CUDA backend does not load its
# libraries (cuBLASLt alone adds 0.1 s to every start).
LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 \
	-Wl,--as-needed -lcublasLt -lcublas -lnccl -lcudart -lstdc++ -Wl,--no-as-needed
CU_OBJ := $(CU_SRC:%.cu=$(BUILD)/obj/%.o)
else
LIB_SRC += kernels/cuda_none.c
CU_OBJ :=
endif

# ar keeps one member per file name: two library sources with the same name
# would silently lose one.
DUP_SRC := $(shell printf '%s\n' $(notdir $(LIB_SRC)) | sort | uniq -d)
ifneq ($(DUP_SRC),)
$(error library sources share a file name: $(DUP_SRC))
endif

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
BINS := $(CMD_SRC:cmd/%.c=$(BUILD)/bin/%)
TESTS := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
BENCHES := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)
TOOLS := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tests/tools/%)
LIBA := $(BUILD)/libtitan.a

# Keep the objects of tools and tests: make would delete them as
# intermediates of the pattern rules and rebuild them every time.
.SECONDARY:

.PHONY: all test unit asan bench golden demo install uninstall clean deps test-deps fuzz \
	test-cuda bench-cuda gpu-bundle unicode-tables help
all: $(BINS) $(TESTS) $(BENCHES) $(TOOLS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(say) CC $<
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.cu
	@mkdir -p $(@D)
	$(say) NVCC $<
	$(Q)$(NVCC) $(NVCCFLAGS) $(NVCC_WARN) -MMD -MP -Ilib -Ikernels -c $< -o $@

$(LIBA): $(LIB_OBJ) $(CU_OBJ)
	@rm -f $@
	$(say) AR $@
	$(Q)$(AR) rcs $@ $^

# cmd/cli.c: the command-line conventions every tool links in.
$(BUILD)/bin/%: $(BUILD)/obj/cmd/%.o $(BUILD)/obj/cmd/cli.o $(LIBA)
	@mkdir -p $(@D)
	$(say) LINK $@
	$(Q)$(CC) $(ALL_CFLAGS) $< $(BUILD)/obj/cmd/cli.o $(LIBA) $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIBA)
	@mkdir -p $(@D)
	$(say) LINK $@
	$(Q)$(CC) $(ALL_CFLAGS) $< $(LIBA) $(LDLIBS) -o $@

# tests/tools: small programs the CLI tests drive (not tests themselves).
$(BUILD)/tests/tools/%: $(BUILD)/obj/tests/tools/%.o $(LIBA)
	@mkdir -p $(@D)
	$(say) LINK $@
	$(Q)$(CC) $(ALL_CFLAGS) $< $(LIBA) $(LDLIBS) -o $@

$(BUILD)/bench/%: $(BUILD)/obj/tests/bench/%.o $(LIBA)
	@mkdir -p $(@D)
	$(say) LINK $@
	$(Q)$(CC) $(ALL_CFLAGS) $< $(LIBA) $(LDLIBS) -o $@

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# deps: install what is missing (apt-get as root), or print the line to run.
deps:
	@share/titan/deps.sh build
test-deps:
	@share/titan/deps.sh test

# test: every unit test and every bats file; closes with "N passed, N failed".
test: test-deps
	@$(MAKE) --no-print-directory all
	@TITAN_BUILD=$(abspath $(BUILD)) tests/ref/setup.sh
	@TITAN_DATA=$(TITAN_DATA) TITAN_BIN=$(abspath $(BUILD)/bin) TITAN_BUILD=$(abspath $(BUILD)) \
		tests/run.sh $(BUILD)/tests $(sort $(wildcard tests/*.bats))

unit: all
	@TITAN_DATA=$(TITAN_DATA) tests/run.sh $(BUILD)/tests

# asan: the unit tests under AddressSanitizer and UndefinedBehaviorSanitizer.
asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan CUDA=0 \
		CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
		build-asan/tests-built
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 TITAN_DATA=$(TITAN_DATA) \
		tests/run.sh build-asan/tests
build-asan/tests-built: $(TESTS)
	@touch $@

# fuzz: build the libFuzzer targets (clang) and run each for FUZZ_SECONDS.
FUZZ_SECONDS ?= 30
fuzz:
	@share/titan/deps.sh fuzz
	@tests/fuzz/run.sh $(FUZZ_SECONDS)

# bench: tokenizer throughput against tiktoken and Hugging Face tokenizers,
# packing against raw encoding, the loader's tokens/s, training and sampling
# against PyTorch, the memory model against the process's resident peak, and
# data-parallel scaling from 1 to 2 ranks with its communication share.
bench: all
	@TITAN_BUILD=$(abspath $(BUILD)) tests/ref/setup.sh
	@TITAN_DATA=$(TITAN_DATA) TITAN_BIN=$(abspath $(BUILD)/bin) TITAN_BUILD=$(abspath $(BUILD)) \
		tests/bench/run.sh
	@TITAN_DATA=$(TITAN_DATA) TITAN_BIN=$(abspath $(BUILD)/bin) TITAN_BUILD=$(abspath $(BUILD)) \
		tests/bench/pack_bench.sh
	@echo; echo "loader (build/bench/bench_loader: 50M synthetic tokens, seq 1024, batch 8):"
	@$(BUILD)/bench/bench_loader
	@echo
	@TITAN_BIN=$(abspath $(BUILD)/bin) TITAN_BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON) \
		tests/bench/train_bench.sh
	@echo
	@TITAN_BIN=$(abspath $(BUILD)/bin) TITAN_BUILD=$(abspath $(BUILD)) tests/bench/mem_bench.sh
	@echo
	@TITAN_DATA=$(TITAN_DATA) TITAN_BIN=$(abspath $(BUILD)/bin) TITAN_BUILD=$(abspath $(BUILD)) \
		tests/bench/dist_bench.sh
	@echo
	@TITAN_DATA=$(TITAN_DATA) TITAN_BIN=$(abspath $(BUILD)/bin) TITAN_BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON) \
		tests/bench/gen_bench.sh

# golden: regenerate the PyTorch reference files that test_golden compares
# against (make test only reads them).
golden:
	$(PYTHON) tests/golden/make_golden.py tests/golden

# demo: install what is missing, build, and run the pipeline on the King
# James Bible (Debian's bible-kjv-text).
demo:
	@share/titan/deps.sh demo
	@$(MAKE) --no-print-directory all
	@TITAN_BIN=$(abspath $(BUILD)/bin) TITAN_BUILD=$(abspath $(BUILD)) share/titan/demo.sh

# test-cuda, bench-cuda: the GPU checks (tests/gpu/checks.sh says what
# each runs): the probe, every CUDA op against the CPU backend, NCCL, the
# trainer's cuda test; the parity runs, each op alone beside PyTorch's, and
# tokens/s and MFU (tests/gpu/train_check.sh).  tests/gpu/run.sh runs them
# all in one go.  PREBUILT=1: use what is in $(BUILD) without building.
test-cuda bench-cuda:
	@[ -n "$(PREBUILT)" ] || $(MAKE) --no-print-directory CUDA=1 all
	@BUILD=$(BUILD) TITAN_DATA=$(TITAN_DATA) tests/gpu/checks.sh $(@:-cuda=)

# gpu-bundle: build/gpu-bundle, what a lent GPU machine without titan's
# build dependencies needs to run tests/gpu/run.sh (tests/gpu/bundle.sh).
gpu-bundle:
	@tests/gpu/bundle.sh

# unicode-tables: regenerate lib/tok/unicode_tables.c from the Unicode
# Character Database (Debian package unicode-data).
unicode-tables:
	python3 lib/tok/mkunicode.py /usr/share/unicode > lib/tok/unicode_tables.c.tmp
	mv lib/tok/unicode_tables.c.tmp lib/tok/unicode_tables.c

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man7 \
		$(DESTDIR)$(PREFIX)/share/titan
	install -m 755 $(BINS) $(DESTDIR)$(PREFIX)/bin
	for s in 1 5 7; do for f in man/man$$s/*.$$s; do [ -e "$$f" ] && \
		install -m 644 "$$f" $(DESTDIR)$(PREFIX)/share/man/man$$s; done; done; true
	cp -R share/titan/. $(DESTDIR)$(PREFIX)/share/titan/

uninstall:
	rm -f $(BINS:$(BUILD)/bin/%=$(DESTDIR)$(PREFIX)/bin/%)
	rm -rf $(DESTDIR)$(PREFIX)/share/titan

clean:
	rm -rf build build-asan build-fuzz

help:
	@echo "make            build every tool into $(BUILD)/bin (CUDA=$(CUDA))"
	@echo "make demo       install missing packages, build, run the demo pipeline"
	@echo "make test       install missing test packages, build, run all tests"
	@echo "make asan       unit tests under ASan + UBSan"
	@echo "make bench      benchmarks against the reference implementations"
	@echo "make golden     regenerate tests/golden from the PyTorch reference"
	@echo "make fuzz       run each fuzz target for FUZZ_SECONDS (default 30)"
	@echo "make install    install into PREFIX (default /usr/local)"
	@echo "make CUDA=1     also build the CUDA backend (needs nvcc)"
	@echo "make test-cuda bench-cuda   the GPU checks (tests/gpu/run.sh runs both)"
	@echo "make gpu-bundle the CUDA build and what it needs, for a GPU machine without"
	@echo "                titan's build dependencies (build/gpu-bundle.tar.xz)"
