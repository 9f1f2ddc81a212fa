#!/usr/bin/env bash
# Build every tests/fuzz/fuzz_NAME.c as a libFuzzer target (clang, with
# AddressSanitizer and UndefinedBehaviorSanitizer) and run each for SECONDS.
#
#   tests/fuzz/run.sh [SECONDS]        (default 30; make fuzz FUZZ_SECONDS=N)
#
# Objects, targets and logs go to build-fuzz/.  Each target starts from its
# seeds in tests/fuzz/corpus/NAME, which are only read: what the fuzzer
# finds goes to build-fuzz/corpus/NAME, crashing inputs to
# build-fuzz/crashes/NAME/.  Prints one line per target and exits non-zero
# when a target does not build or any target crashed.
set -u

seconds=${1:-30}
case $seconds in
''|*[!0-9]*) echo "usage: tests/fuzz/run.sh [SECONDS]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/../.." || exit 1
out=build-fuzz
CC=${FUZZ_CC:-clang}

command -v "$CC" >/dev/null ||
	{ echo "tests/fuzz/run.sh: '$CC' not found (apt-get install clang)" >&2; exit 1; }
shopt -s nullglob
sources=(tests/fuzz/fuzz_*.c)
if [ ${#sources[@]} -eq 0 ]; then
	echo "tests/fuzz/run.sh: no fuzz targets (tests/fuzz/fuzz_*.c)"
	exit 0
fi

# The library is built once with coverage instrumentation and kept in an
# archive, so each target links only what it reaches; make rebuilds what
# changed.  Warnings are the project's, without -Werror: clang and gcc warn
# differently and a fuzz run should not stop on a warning.
mkdir -p "$out/logs"
makefile=$(cat <<'EOF'
SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
CFLAGS := -g -O1 $(SAN) -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter \
	-std=gnu11 -pthread -fopenmp -fno-strict-aliasing -Ilib -Ikernels -MMD -MP
LDLIBS := -ljansson -lzstd -larchive -lpcre2-8 -lopenblas -lm -pthread
# OpenMPI's flags, as the Makefile gets them (lib/dist/comm_mpi.c)
CFLAGS += $(shell pkg-config --cflags ompi-c 2>/dev/null || mpicc --showme:compile 2>/dev/null)
LDLIBS += $(shell pkg-config --libs ompi-c 2>/dev/null || mpicc --showme:link 2>/dev/null)
LIB_SRC := $(sort $(shell find lib kernels/cpu -name '*.c')) kernels/cuda_none.c
LIB_OBJ := $(LIB_SRC:%.c=$(OUT)/obj/%.o)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
all: $(FUZZ_SRC:tests/fuzz/%.c=$(OUT)/%)
.SECONDARY:
$(OUT)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
$(OUT)/libtitan.a: $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^
$(OUT)/fuzz_%: $(OUT)/obj/tests/fuzz/fuzz_%.o $(OUT)/libtitan.a
	$(CC) $(CFLAGS) -fsanitize=fuzzer $^ $(LDLIBS) -o $@
-include $(shell find $(OUT)/obj -name '*.d' 2>/dev/null)
EOF
)
fuzz_make() {
	make --no-print-directory -f - CC="$CC" OUT="$out" "$@" <<<"$makefile"
}
fuzz_make -k -j"$(nproc)" >"$out/logs/build.log" 2>&1
build_rc=$?

failed=0
printf '%-16s %12s %10s %8s  %s\n' target executions exec/s corpus result
for src in "${sources[@]}"; do
	target=$(basename "$src" .c)
	name=${target#fuzz_}
	bin=$out/$target
	log=$out/logs/$target.log
	# After a failed build, a target make could not bring up to date is
	# not run: its binary, if any, is stale.
	if [ $build_rc -ne 0 ] && ! fuzz_make -q "$bin" >/dev/null 2>&1; then
		printf '%-16s %12s %10s %8s  %s\n' "$name" - - - \
			"BUILD FAILED (see $out/logs/build.log)"
		failed=1
		continue
	fi
	corpus=$out/corpus/$name
	crashes=$out/crashes/$name
	mkdir -p "$corpus" "$crashes"
	seeds=()
	[ -d "tests/fuzz/corpus/$name" ] && seeds=("tests/fuzz/corpus/$name")
	"$bin" -max_total_time="$seconds" -max_len=65536 -timeout=30 \
		-print_final_stats=1 -artifact_prefix="$crashes/" \
		"$corpus" "${seeds[@]}" >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
	units=$(find "$corpus" -type f | wc -l)
	if [ $rc -eq 0 ]; then
		result=ok
	else
		artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
		result="CRASH (exit $rc): ${artifact:-no input saved}; log $log"
		failed=1
	fi
	printf '%-16s %12s %10s %8s  %s\n' "$name" "${execs:--}" "${rate:--}" "$units" "$result"
done
if [ $build_rc -ne 0 ]; then
	echo "tests/fuzz/run.sh: build errors, see $out/logs/build.log:" >&2
	grep -m 5 'error' "$out/logs/build.log" >&2
	failed=1
fi
exit $failed
