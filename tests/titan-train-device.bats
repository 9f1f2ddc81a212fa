#!/usr/bin/env bats
# titan-train's device path: the model, gradients, optimizer state and
# activations in a backend's own memory, reached from the host only through
# uploads and downloads.  cpu-fenced runs the CPU kernels over memory the
# host cannot touch outside an op, so every run here proves that the path a
# GPU takes reads nothing behind the backend's back, and that it computes
# what the CPU computes, bit for bit.

load helpers

TINY="--model.dim=64 --model.n_layers=2 --model.n_heads=4 --model.n_kv_heads=2
 --model.vocab_size=512 --training.seq_len=64 --training.local_batch_size=4
 --training.threads=2 --metrics.peak_flops=1e11 --metrics.log_freq=1"

setup_file() {
	doc_dataset "$BATS_FILE_TMPDIR"
}

train() {
	# shellcheck disable=SC2086
	titan-train $TINY --data.dataset="$BATS_FILE_TMPDIR/data" "$@"
}

losses() {
	jq -r 'select(.loss != null) | "\(.step) \(.loss) \(.grad_norm)"' "$1"
}

val_losses() {
	jq -r 'select(.val_loss != null) | "\(.step) \(.val_loss)"' "$1"
}

@test "cpu-fenced trains the CPU's losses, gradient norms and validation losses, bit for bit" {
	common="--training.steps=12 --optimizer.lr=3e-3 --training.max_norm=0.5
		--data.mask=block_causal --validation.freq=6 --validation.steps=2
		--activation_checkpoint.mode=selective --training.global_batch_size=8"
	train $common --metrics.jsonl=cpu.jsonl -q
	train $common --device cpu-fenced --metrics.jsonl=fenced.jsonl -q
	expect_eq 12 "$(losses cpu.jsonl | wc -l)"
	expect_eq "$(losses cpu.jsonl)" "$(losses fenced.jsonl)"
	expect_eq 2 "$(val_losses cpu.jsonl | wc -l)"
	expect_eq "$(val_losses cpu.jsonl)" "$(val_losses fenced.jsonl)"
}

@test "cpu-fenced with tied embeddings and full activation checkpointing matches the CPU" {
	common="--training.steps=6 --model.tie_embeddings=true --activation_checkpoint.mode=full"
	train $common --metrics.jsonl=cpu.jsonl -q
	train $common --training.device=cpu-fenced --metrics.jsonl=fenced.jsonl -q
	expect_eq "$(losses cpu.jsonl)" "$(losses fenced.jsonl)"
}

@test "checkpoints from the device path are the CPU's, byte for byte, and resume either way" {
	common="--training.steps=8 --checkpoint.enable --checkpoint.interval=4"
	train $common --checkpoint.folder=cpu --metrics.jsonl=cpu.jsonl -q
	train $common --device cpu-fenced --checkpoint.folder=fenced -q
	for f in cpu/step-4/*.safetensors cpu/step-8/*.safetensors; do
		cmp "$f" "fenced/${f#cpu/}"
	done
	# the CPU's step 4 resumed on the device path gives the CPU's steps 5..8
	train $common --device cpu-fenced --checkpoint.folder=resumed \
		--checkpoint.load=cpu/step-4 --metrics.jsonl=resumed.jsonl -q
	expect_eq "$(losses cpu.jsonl | sed -n '5,8p')" "$(losses resumed.jsonl)"
	cmp cpu/step-8/rank-00000.safetensors resumed/step-8/rank-00000.safetensors
}

@test "the device path reports the CPU's peak memory, and the device's own figures" {
	run train --training.steps=2 --device cpu-fenced -v
	expect_status 0
	fenced=$(printf '%s\n' "$output" | sed -n 's/.*peak memory \([0-9.]*\) MiB.*/\1/p')
	expect_output_has "device cpu-fenced"
	expect_output_has "reserved"
	run train --training.steps=2
	expect_status 0
	cpu=$(printf '%s\n' "$output" | sed -n 's/.*peak memory \([0-9.]*\) MiB.*/\1/p')
	expect_eq "$cpu" "$fenced"
}

@test "--device names the backend: the last word wins, an unknown one is a usage error" {
	run titan-train --training.device=cuda --device cpu --print-config
	expect_status 0
	expect_eq '"cpu"' "$(printf '%s\n' "$output" | jq .training.device)"
	run titan-train --device tpu --print-config
	expect_status 2
	expect_output_has "training.device"
	expect_output_has "cpu-fenced"
}

@test "--device cuda: without CUDA a usage error, without a GPU a runtime error, on a GPU the CPU's losses" {
	run train --training.steps=3 --device cuda --metrics.jsonl=cuda.jsonl
	# make test-cuda sets TITAN_REQUIRE_CUDA: there a GPU is expected, and
	# only training on it passes
	if [ -n "${TITAN_REQUIRE_CUDA:-}" ] && [ "$status" -ne 0 ]; then
		echo "TITAN_REQUIRE_CUDA is set but training on cuda failed: $output" >&2
		return 1
	fi
	case $status in
	2) expect_output_has "no CUDA backend" ;;
	1) expect_output_has "cuda" ;;
	0)
		# a GPU is here: the fp32 twin tracks the CPU to rounding
		train --training.steps=3 --metrics.jsonl=cpu.jsonl -q
		paste <(losses cpu.jsonl) <(losses cuda.jsonl) | awk '{
			d = $2 - $5; if (d < 0) d = -d
			if (d > 1e-4 * $2) { print "step " $1 ": " $2 " vs " $5; bad = 1 } }
			END { exit bad }'
		;;
	*) echo "unexpected status $status: $output" >&2; return 1 ;;
	esac
}

# on_ranks N ARGS...: the tiny model on N ranks of one thread each.
on_ranks() {
	local n=$1
	shift
	# shellcheck disable=SC2086
	ranks "$n" titan-train $TINY --training.threads=1 --data.dataset="$BATS_FILE_TMPDIR/data" "$@"
}

# fenced_like_cpu STEPS ARGS...: STEPS steps on 4 ranks with ARGS, on the
# CPU and on cpu-fenced: the same losses and gradient norms, bit for bit.
fenced_like_cpu() {
	local steps=$1
	shift
	rm -f cpu.jsonl fenced.jsonl
	on_ranks 4 --training.steps="$steps" "$@" --metrics.jsonl=cpu.jsonl -q
	on_ranks 4 --training.steps="$steps" "$@" --device cpu-fenced --metrics.jsonl=fenced.jsonl -q
	expect_eq "$steps" "$(losses cpu.jsonl | wc -l)"
	expect_eq "$(losses cpu.jsonl)" "$(losses fenced.jsonl)"
}

@test "FSDP, HSDP and DDP on the device path: collectives staged through the host give the CPU's run, bit for bit" {
	need_mpirun
	fenced_like_cpu 6 --training.local_batch_size=1
	fenced_like_cpu 6 --training.local_batch_size=1 --parallelism.data_parallel_replicate_degree=2
	fenced_like_cpu 6 --training.local_batch_size=1 --parallelism.data_parallel_replicate_degree=4
}

@test "pipeline parallel with FSDP on the device path gives the CPU's run and checkpoints" {
	need_mpirun
	common="--training.local_batch_size=4 --training.steps=6 --parallelism.pipeline_parallel_degree=2
		--parallelism.pipeline_parallel_microbatch_size=1 --parallelism.data_parallel_shard_degree=2
		--checkpoint.enable --checkpoint.interval=3"
	# shellcheck disable=SC2086
	on_ranks 4 $common --checkpoint.folder=cpu --metrics.jsonl=cpu.jsonl -q
	# shellcheck disable=SC2086
	on_ranks 4 $common --checkpoint.folder=fenced --device cpu-fenced \
		--metrics.jsonl=fenced.jsonl -q
	expect_eq 6 "$(losses cpu.jsonl | wc -l)"
	expect_eq "$(losses cpu.jsonl)" "$(losses fenced.jsonl)"
	for f in cpu/step-6/*.safetensors; do
		cmp "$f" "fenced/${f#cpu/}"
	done
}

@test "tensor, sequence and context parallel on the device path give the CPU's run, bit for bit" {
	need_mpirun
	fenced_like_cpu 4 --training.local_batch_size=2 --parallelism.tensor_parallel_degree=2
	fenced_like_cpu 4 --training.local_batch_size=2 --parallelism.tensor_parallel_degree=2 \
		--parallelism.sequence_parallel=false
	fenced_like_cpu 4 --training.local_batch_size=2 --parallelism.context_parallel_degree=2 \
		--data.mask=block_causal
	fenced_like_cpu 4 --training.local_batch_size=2 --parallelism.context_parallel_degree=2 \
		--parallelism.tensor_parallel_degree=2
}

@test "bench_ops times every op on the CPU and on fenced memory, and refuses what it lacks" {
	bench=${TITAN_BUILD:-$BATS_TEST_DIRNAME/../build}/bench/bench_ops
	for device in cpu cpu-fenced; do
		run "$bench" --device "$device" --small
		expect_status 0
		expect_output_has "bench_ops: $device"
		for op in "matmul bwd bf16" "attention bwd bf16" "cross-entropy + grad" \
			"cast to bf16" adamw; do
			expect_output_has "$op"
		done
		[ "$(printf '%s\n' "$output" | grep -c ' ms ')" -eq 18 ]
	done
	run "$bench" --device tpu
	expect_status 2
	expect_output_has "cpu, cpu-fenced or cuda"
}
