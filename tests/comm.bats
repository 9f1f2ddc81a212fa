#!/usr/bin/env bats
# comm: the communication layer (dist/comm.h) on several ranks under
# mpirun, and on one rank (the self backend) without a launcher.  Each test
# runs tests/tools/comm_check, which checks every operation against values
# it computes itself and prints "ok" on rank 0.

load helpers

: "${TITAN_BUILD:=$BATS_TEST_DIRNAME/../build}"
CHECK=$TITAN_BUILD/tests/tools/comm_check

setup() {
	cd "$BATS_TEST_TMPDIR" || return 1
	[ -x "$CHECK" ] || skip "'$CHECK' not built (run make)"
}

@test "without a launcher comm_check is one rank on the self backend" {
	run env -u OMPI_COMM_WORLD_SIZE -u PMIX_RANK -u PMI_RANK "$CHECK"
	expect_status 0
	expect_eq ok "$output"
}

@test "every operation on 1 rank over MPI" {
	need_mpirun
	run ranks 1 "$CHECK"
	expect_status 0
	expect_output_has ok
}

@test "every operation on 2 ranks" {
	need_mpirun
	run ranks 2 "$CHECK"
	expect_status 0
	expect_output_has ok
}

@test "every operation on 3 ranks (sizes not divisible by the rank count)" {
	need_mpirun
	run ranks 3 "$CHECK"
	expect_status 0
	expect_output_has ok
}

@test "every operation on 4 ranks" {
	need_mpirun
	run ranks 4 "$CHECK"
	expect_status 0
	expect_output_has ok
}

@test "a 2x2 mesh: row and column communicators split from the world" {
	need_mpirun
	run ranks 4 "$CHECK" --mesh 2x2
	expect_status 0
	expect_output_has ok
}

@test "a failure on one rank stops every rank" {
	need_mpirun
	run ranks 2 "$CHECK" --mesh 3x1
	expect_status 1
	expect_output_has "does not make 2 ranks"
}

@test "a rank that hangs makes the others time out, and the job ends" {
	need_mpirun
	local start=$SECONDS
	run ranks 3 "$CHECK" --hang-rank 1 --timeout 3
	local took=$((SECONDS - start))
	expect_status 1
	expect_output_has "comm 'world' (rank 0 of 3): all_reduce of 1 float timed out after 3 s"
	expect_output_has "another rank died or hangs"
	[ "$took" -lt 60 ] || { echo "the job took $took s to end" >&2; return 1; }
}

@test "--nccl runs the checks on the GPU, or says why not" {
	need_mpirun
	run ranks 1 "$CHECK" --nccl
	expect_status 0
	case $output in
	*"skipped:"*)
		local why=${output#*skipped: }
		skip "${why%%$'\n'*}"
		;;
	esac
	expect_output_has ok
}
