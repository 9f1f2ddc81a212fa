#!/usr/bin/env bats
# The collective checkpoint save: every rank of an MPI job writes its own
# shard file, rank 0 commits (tests/tools/ckpt_dist_check.c checks each
# run); then titan-ckpt reads what they wrote.

load helpers

: "${TITAN_BUILD:=$BATS_TEST_DIRNAME/../build}"
CHECK=$TITAN_BUILD/tests/tools/ckpt_dist_check
export OMP_NUM_THREADS=1

# The checkpoint ckpt_dist_check left: titan-ckpt verifies it and describes
# it.  check_result FOLDER FILES DP_SHARD
check_result() {
	run titan-ckpt verify "$1"
	expect_status 0
	run titan-ckpt info "$1"
	expect_status 0
	expect_output_has "step          3"
	expect_output_has "dp_shard=$3"
	if [ "$2" -eq 1 ]; then
		expect_output_has "1 file"
	else
		expect_output_has "$2 files"
	fi
	[ -d "$1/step-2" ] && [ ! -e "$1/step-1" ]
	titan-ckpt info --json "$1" >info.json
	expect_eq 3 "$(jq .step info.json)"
	expect_eq "$2" "$(jq .nranks info.json)"
	expect_eq 7 "$(jq -r '.tensors[] | select(.name == "W") | .shape[0]' info.json)"
}

@test "one rank without a launcher: sync, async, replica mode and a failing write" {
	[ -x "$CHECK" ] || skip "$CHECK not built (make)"
	run "$CHECK" ck
	expect_status 0
	expect_eq ok "$output"
	check_result ck 1 1
	run "$CHECK" --async ck-async
	expect_status 0
	check_result ck-async 1 1
	run "$CHECK" --replica ck-replica
	expect_status 0
	run "$CHECK" --fail-rank 0 -v ck-fail
	expect_status 0
	expect_output_has "step 2 failed as it should"
	expect_output_has "step-2.tmp/rank-00000.safetensors"
	[ ! -e ck-fail/step-2 ] && [ ! -e ck-fail/step-2.tmp ]
}

@test "N = 1, 2, 3, 4 ranks save every tensor once, sync and async" {
	need_mpirun
	for n in 1 2 3 4; do
		run ranks $n "$CHECK" -v ck$n
		expect_status 0
		expect_output_has "$n rank"
		expect_output_has ok
		# torch.chunk of 7 rows: 4 ranks each hold rows; the [3] leaves rank 3 none of it.
		check_result ck$n $n $n
		run ranks $n "$CHECK" -v --async ck$n-async
		expect_status 0
		expect_output_has ok
		check_result ck$n-async $n $n
	done
}

@test "replicas: odd ranks save nothing, the even ranks' files tile every tensor" {
	need_mpirun
	for n in 2 3 4; do
		for mode in "" --async; do
			run ranks $n "$CHECK" --replica $mode ck$n$mode
			expect_status 0
			expect_output_has ok
			check_result ck$n$mode $(((n + 1) / 2)) $(((n + 1) / 2))
			[ ! -e ck$n$mode/step-3/rank-00001.safetensors ]
		done
	done
}

@test "a write failing on one rank fails the save on every rank, and no step appears" {
	need_mpirun
	run ranks 3 "$CHECK" -v --fail-rank 2 ck
	expect_status 0
	expect_output_has ok
	expect_eq 3 "$(printf '%s\n' "$output" | grep -c 'failed as it should: rank 2: ')"
	expect_output_has "step-2.tmp/rank-00002.safetensors"
	[ -d ck/step-1 ] && [ -d ck/step-3 ] && [ ! -e ck/step-2 ] && [ ! -e ck/step-2.tmp ]
	run titan-ckpt verify ck/step-1
	expect_status 0

	run ranks 4 "$CHECK" -v --async --fail-rank 1 ck-async
	expect_status 0
	expect_eq 4 "$(printf '%s\n' "$output" | grep -c 'failed as it should: rank 1: ')"
	[ ! -e ck-async/step-2 ] && [ ! -e ck-async/step-2.tmp ]
}

@test "slices that overlap across ranks are refused by rank 0 on every rank's behalf" {
	need_mpirun
	run ranks 3 "$CHECK" -v --overlap-rank 1 ck
	expect_status 0
	expect_eq 3 "$(printf '%s\n' "$output" | grep -c "tensor 'W': the slices of ranks 0 and 1 overlap")"
	[ ! -e ck/step-2 ] && [ ! -e ck/step-2.tmp ]
}
