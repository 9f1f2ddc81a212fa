#!/usr/bin/env bash
# The GPU checks over the programs in $BUILD (default build), what make
# test-cuda and make bench-cuda run, so that tests/gpu/run.sh can run them
# where there is no make:
#   test   the backend's probe, every CUDA op against the CPU backend, the
#          communication checks over NCCL (one rank per GPU; one process
#          without mpirun), and the trainer's cuda test (which must train on
#          the GPU to the CPU's losses); each check runs whether or not the
#          one before passed, and any failure fails the whole
#   bench  the probe, then tests/gpu/train_check.sh (parity runs, each op
#          alone, tokens/s and MFU next to PyTorch)
#   profile  tests/gpu/profile.sh: a step's GPU time, kernel by kernel
#
#   BUILD=build tests/gpu/checks.sh test|bench|profile
set -u
cd "$(dirname "$0")/../.." || exit 1
build=${BUILD:-build}
[ -d "$build/bin" ] || { echo "tests/gpu/checks.sh: no '$build/bin': build first" >&2; exit 2; }
bin=$(cd "$build/bin" && pwd)
abs_build=$(cd "$build" && pwd)
export TITAN_REQUIRE_CUDA=1

case ${1:-} in
test)
	st=0
	"$build/tests/test_cuda" || st=1
	"$build/tests/test_cuda_ops" || st=1
	n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
	[ "$n" -gt 0 ] || n=1
	if command -v mpirun >/dev/null; then
		OMP_NUM_THREADS=1 timeout 180 mpirun --allow-run-as-root --oversubscribe \
			-x TITAN_REQUIRE_CUDA -x OMP_NUM_THREADS -np "$n" \
			"$build/tests/tools/comm_check" --nccl || st=1
	else
		OMP_NUM_THREADS=1 timeout 180 "$build/tests/tools/comm_check" --nccl || st=1
	fi
	TITAN_DATA=${TITAN_DATA:-} TITAN_BIN=$bin TITAN_BUILD=$abs_build \
		bats --tap -f 'device cuda' tests/titan-train-device.bats || st=1
	exit $st
	;;
bench)
	"$build/tests/test_cuda" || exit 1
	TITAN_BIN=$bin TITAN_BUILD=$abs_build exec tests/gpu/train_check.sh
	;;
profile)
	TITAN_BIN=$bin TITAN_BUILD=$abs_build exec tests/gpu/profile.sh
	;;
*)
	echo "usage: BUILD=DIR tests/gpu/checks.sh test|bench|profile" >&2
	exit 2
	;;
esac
