#!/usr/bin/env bash
# The one command to run on a machine with a GPU: build with CUDA, run the
# GPU checks (tests/gpu/checks.sh test, then bench: what make test-cuda and
# make bench-cuda run, then profile: where a step's time goes, where ncu
# is; then, with time to spare, the pack bench on this machine's cores),
# then print a summary.  Exits non-zero on any failure or mismatch.
#
#   tests/gpu/run.sh            # from the repository root
#
# Where build/gpu-bundle.tar.xz is (tests/gpu/bundle.sh, made on a machine
# that builds and carried here), nothing is built: it is unpacked afresh
# into build/gpu-bundle and the checks run from there (BUILD=build/gpu-bundle,
# its env.sh for its tools and CUDA's libraries, its CPU parity runs).
# Otherwise the build needs titan's build dependencies here.
#
set -u
cd "$(dirname "$0")/../.." || exit 1

out=${OUT:-build}
log=$out/gpu-run.log
mkdir -p "$out" build
: >"$log"
status=0
start=$(date +%s)
deadline=${TITAN_GPU_DEADLINE:-540}
test_limit=${TITAN_GPU_STEP_SECONDS:-150}
bench_limit=${TITAN_GPU_STEP_SECONDS:-330}

# shellcheck disable=SC2317  # called by the EXIT trap
summary() {
	echo
	echo "summary ($(($(date +%s) - start)) s; log: $log):"
	grep -iE '^(ok|not ok) |^# cuda|relative error|passed|failed|^parity|MFU|: PyTorch|max relative loss difference|timed out|^(gpt2|llama3) +(english|lines|jsonl) ' \
		"$log" | sed 's/^/  /'
	grep -A12 '^profile: ' "$log" | sed 's/^/  /'
}
trap summary EXIT

# step NAME LIMIT COMMAND...: run it under its limit, unless the run is
# past its deadline
step() {
	local name=$1 limit=$2 rc
	shift 2
	printf '%-12s ' "$name"
	if (($(date +%s) - start > deadline)); then
		echo "skipped: past the run's deadline of $deadline s" | tee -a "$log"
		status=1
		return 1
	fi
	echo "== $name ($*)" >>"$log"
	timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
	rc=$?
	if [ $rc -eq 0 ]; then
		echo ok
		return 0
	fi
	if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
		echo "$name: timed out after $limit s" | tee -a "$log"
	else
		echo "FAILED (exit $rc, see $log)"
	fi
	status=1
	return 1
}

# use_bundle: unpack the carried bundle, take its environment (in this
# shell, not under step's timeout: what it exports must stay)
use_bundle() {
	rm -rf build/gpu-bundle
	tar -C build -xJf build/gpu-bundle.tar.xz ||
		python3 -m tarfile -e build/gpu-bundle.tar.xz build || return 1
	echo "bundle made from $(tr '\n' ' ' <build/gpu-bundle/stamp)"
	# shellcheck source=/dev/null
	. build/gpu-bundle/env.sh
	export TITAN_GPU_CPU_LOSSES=$PWD/build/gpu-bundle/losses
	# the programs sit in .real/, not where they would look for share/
	export TITAN_SHARE=$PWD/share/titan
	LD_LIBRARY_PATH=$TITAN_BUNDLE_LIBS ldd build/gpu-bundle/bin/.real/titan-train |
		grep 'not found' && return 1
	return 0
}

{ nvidia-smi -L 2>/dev/null || echo "nvidia-smi: no GPU listed"; } | sed 's/^/# /'
if [ -f build/gpu-bundle.tar.xz ]; then
	printf '%-12s ' bundle
	if ! use_bundle >>"$log" 2>&1; then
		echo "FAILED: the carried build/gpu-bundle.tar.xz does not run here (see $log)"
		exit 1
	fi
	echo ok
	export BUILD=build/gpu-bundle
else
	step build 180 make -j"$(nproc)" CUDA=1 all || exit 1
	export BUILD=build
fi
step test-cuda "$test_limit" tests/gpu/checks.sh test
step bench-cuda "$bench_limit" tests/gpu/checks.sh bench
step profile 120 tests/gpu/checks.sh profile
# Last, CPU only and only with time to spare: titan-pack against titan-tok
# on this machine's cores, where the bundle carries the inputs.
if [ -d "$BUILD/data" ] && (($(date +%s) - start < deadline - 60)); then
	step pack-bench 90 env TITAN_DATA="$PWD/$BUILD/data" TITAN_BIN="$PWD/$BUILD/bin" \
		TITAN_BUILD="$PWD/$BUILD" TITAN_BENCH_RUNS=2 tests/bench/pack_bench.sh
fi
exit $status
