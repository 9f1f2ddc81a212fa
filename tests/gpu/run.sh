#!/usr/bin/env bash
# The one command to run on a machine with a GPU: build with CUDA, run
# make test-cuda (the probe, every CUDA op against the CPU backend, NCCL
# collectives) and make bench-cuda, then print a summary.  Exits non-zero
# on any failure or mismatch.
#
#   tests/gpu/run.sh            # from the repository root
#
# A lent GPU's time is short and its command is cut off at a limit: every
# step has its own (TITAN_GPU_STEP_SECONDS, default 240, the build 180),
# the whole run stops starting steps after TITAN_GPU_DEADLINE seconds
# (default 540), the log goes to $OUT when that is set (what comes back
# from a lent machine) and the summary is printed however the run ends.
set -u
cd "$(dirname "$0")/../.." || exit 1

out=${OUT:-build}
log=$out/gpu-run.log
mkdir -p "$out" build
: >"$log"
status=0
start=$(date +%s)
deadline=${TITAN_GPU_DEADLINE:-540}
step_limit=${TITAN_GPU_STEP_SECONDS:-240}

# shellcheck disable=SC2317  # called by the EXIT trap
summary() {
	echo
	echo "summary ($(($(date +%s) - start)) s; log: $log):"
	grep -iE '^(ok|not ok) |^# cuda|relative error|passed|failed|^parity|MFU|: PyTorch|max relative loss difference|timed out' \
		"$log" | sed 's/^/  /'
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

nvidia-smi -L 2>/dev/null | sed 's/^/# /' || echo "# nvidia-smi: no GPU listed"
if step build 180 make -j"$(nproc)" CUDA=1 all; then
	step test-cuda "$step_limit" make --no-print-directory test-cuda
	step bench-cuda "$step_limit" make --no-print-directory bench-cuda
fi
exit $status
