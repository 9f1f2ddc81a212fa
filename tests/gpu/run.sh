#!/usr/bin/env bash
# The one command to run on a machine with a GPU: build with CUDA, run
# make test-cuda (the probe, every CUDA op against the CPU backend, NCCL
# collectives) and make bench-cuda, then print a summary.  Exits non-zero
# on any failure or mismatch.
#
#   tests/gpu/run.sh            # from the repository root
set -u
cd "$(dirname "$0")/../.." || exit 1

log=build/gpu-run.log
mkdir -p build
: >"$log"
status=0
step() {
	local name=$1
	shift
	printf '%-12s ' "$name"
	if "$@" >>"$log" 2>&1; then
		echo ok
	else
		echo "FAILED (see $log)"
		status=1
	fi
}

nvidia-smi -L 2>/dev/null | sed 's/^/# /' || echo "# nvidia-smi: no GPU listed"
step build make -j"$(nproc)" CUDA=1 all
step test-cuda make --no-print-directory test-cuda
step bench-cuda make --no-print-directory bench-cuda
echo
echo "summary:"
grep -E '^(ok|not ok) |^# cuda|relative error|passed|failed|^parity|MFU|: PyTorch' "$log" | sed 's/^/  /'
exit $status
