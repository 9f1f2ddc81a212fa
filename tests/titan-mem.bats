#!/usr/bin/env bats
# titan-mem: the table and the JSON, the prediction against the peak
# titan-train measures, the largest batch that fits, and impossible layouts.

load helpers

setup_file() {
	local d=$BATS_FILE_TMPDIR
	doc_dataset "$d"
}

@test "titan-mem --help prints the synopsis on stdout, and the man page has it" {
	expect_synopsis_in_man titan-mem
}

@test "the table names every row, the total and whether it fits" {
	run titan-mem --training.seq_len=256 --training.local_batch_size=8 --training.threads=2 \
		--device-memory 1GiB
	expect_status 0
	for row in parameters gradients "AdamW moments" activations "logits and loss" \
		"backward scratch" "attention workspace" total "tracked by the trainer" \
		"device memory 1.00 GiB: fits" "largest training.local_batch_size that fits"; do
		expect_output_has "$row"
	done
}

@test "--json gives total_bytes for the largest rank and a breakdown that sums to it" {
	run titan-mem --json --training.seq_len=256 --training.local_batch_size=8
	expect_status 0
	printf '%s\n' "$output" >m.json
	total=$(jq .total_bytes m.json)
	sum=$(jq '[.breakdown[]] | add' m.json)
	expect_eq "$total" "$sum"
	expect_eq true "$(jq .fits m.json)"
	expect_eq 0 "$(jq '.model_only | length' m.json)"
}

# One step of titan-train on the documentation dataset: the peak its tracker
# measured (the metrics file's mem_peak_gib, in bytes).
measured_peak() {
	titan-train -q --data.dataset="$BATS_FILE_TMPDIR/data" --training.steps=1 \
		--training.threads=2 --metrics.peak_flops=1e11 --metrics.jsonl=m.jsonl "$@" >&2 || return 1
	jq -r 'select(.mem_peak_gib != null) | .mem_peak_gib * 1073741824 | floor' m.jsonl | tail -n 1
}

@test "the prediction is within 5% of titan-train's measured peak on 12 configs" {
	local configs=(
		"--model.vocab_size=512 --training.seq_len=64 --training.local_batch_size=4"
		"--model.vocab_size=512 --training.seq_len=128 --training.local_batch_size=8 --activation_checkpoint.mode=full"
		"--model.vocab_size=512 --training.seq_len=128 --training.local_batch_size=8 --activation_checkpoint.mode=selective"
		"--model.vocab_size=512 --training.seq_len=256 --training.local_batch_size=2 --activation_checkpoint.mode=selective --activation_checkpoint.selective_every=3"
		"--model.vocab_size=600 --training.seq_len=100 --training.local_batch_size=3 --model.tie_embeddings=true"
		"--model.dim=64 --model.n_layers=2 --model.n_heads=4 --model.n_kv_heads=2 --model.vocab_size=512 --training.seq_len=64 --training.local_batch_size=4"
		"--model.dim=128 --model.n_layers=4 --model.n_heads=4 --model.n_kv_heads=1 --model.vocab_size=1024 --training.seq_len=128 --training.local_batch_size=4"
		"--model.dim=128 --model.n_layers=4 --model.n_heads=4 --model.n_kv_heads=1 --model.vocab_size=1024 --training.seq_len=128 --training.local_batch_size=4 --activation_checkpoint.mode=full"
		"--model.dim=384 --model.n_layers=3 --model.n_heads=6 --model.n_kv_heads=2 --model.vocab_size=4000 --training.seq_len=64 --training.local_batch_size=2 --activation_checkpoint.mode=selective"
		"--model.dim=192 --model.n_layers=6 --model.n_heads=3 --model.n_kv_heads=3 --model.vocab_size=512 --training.seq_len=512 --training.local_batch_size=1 --activation_checkpoint.mode=full"
		"--model.dim=256 --model.n_layers=2 --model.n_heads=8 --model.n_kv_heads=4 --model.vocab_size=512 --training.seq_len=32 --training.local_batch_size=16 --model.ffn_dim_multiplier=1.3"
		"--model.vocab_size=512 --training.seq_len=64 --training.local_batch_size=2 --training.global_batch_size=4 --data.mask=block_causal"
	)
	local c pred got
	printf '# %14s %14s %8s  %s\n' predicted measured "diff %" config >&3
	for c in "${configs[@]}"; do
		# shellcheck disable=SC2086
		pred=$(titan-mem --json $c | jq .tracked_bytes)
		# shellcheck disable=SC2086
		got=$(measured_peak $c)
		[ -n "$pred" ] && [ -n "$got" ] || { echo "no figure for: $c" >&2; return 1; }
		awk -v p="$pred" -v g="$got" -v c="$c" 'BEGIN {
			d = 100 * (p - g) / g
			printf "# %14d %14d %8.3f  %s\n", p, g, d, c
			exit !(d < 5 && d > -5) }' >&3 ||
			{ echo "off by more than 5%: $c (predicted $pred, measured $got)" >&2; return 1; }
	done
}

@test "the largest batch that fits does fit, and one more does not" {
	run titan-mem --json --training.seq_len=256 --device-memory 512MiB
	expect_status 0
	best=$(printf '%s\n' "$output" | jq .max_local_batch_size)
	[ "$best" -gt 1 ]
	run titan-mem --json --training.seq_len=256 --device-memory 512MiB \
		--training.local_batch_size="$best"
	expect_eq true "$(printf '%s\n' "$output" | jq .fits)"
	run titan-mem --json --training.seq_len=256 --device-memory 512MiB \
		--training.local_batch_size=$((best + 1))
	expect_eq false "$(printf '%s\n' "$output" | jq .fits)"
	run titan-mem --training.seq_len=256 --training.local_batch_size=$((best + 1)) \
		--device-memory 512MiB
	expect_output_has "does not fit"
}

@test "parallel layouts: FSDP shards the state, pp stages are listed, rows are marked model only" {
	run titan-mem --json --model.flavor=llama3_8b --training.device=cuda --precision bf16 \
		--training.seq_len=8192 --training.local_batch_size=2 \
		--activation_checkpoint.mode=selective --world-size 8
	expect_status 0
	printf '%s\n' "$output" >m.json
	expect_eq 8 "$(jq .parallelism.dp_shard m.json)"
	expect_eq bf16 "$(jq -r .precision m.json)"
	[ "$(jq .breakdown.fsdp_all_gather m.json)" -gt 0 ]
	[ "$(jq '.model_only | length' m.json)" -gt 0 ]
	run titan-mem --model.flavor=llama3_8b --training.device=cuda --training.seq_len=4096 \
		--training.local_batch_size=8 --parallelism.pipeline_parallel_degree=4 \
		--parallelism.tensor_parallel_degree=2 --world-size 16 --pp-schedule gpipe
	expect_status 0
	expect_output_has "pp stage"
	expect_output_has "model only, not yet measured"
}

@test "on cuda the largest op's scratch is a row; bf16 GEMMs keep bf16 copies of the weights" {
	run titan-mem --json --model.flavor=llama3_1b --training.device=cuda \
		--training.seq_len=2048 --training.local_batch_size=8
	expect_status 0
	fp32=$(printf '%s\n' "$output" | jq .breakdown.op_scratch)
	expect_eq float32 "$(printf '%s\n' "$output" | jq -r .matmul_dtype)"
	expect_eq 0 "$(printf '%s\n' "$output" | jq .breakdown.bf16_weights)"
	run titan-mem --json --model.flavor=llama3_1b --training.device=cuda \
		--training.seq_len=2048 --training.local_batch_size=8 --training.matmul_dtype=bfloat16
	expect_status 0
	printf '%s\n' "$output" >bf16.json
	bf16=$(jq .breakdown.op_scratch bf16.json)
	# llama3_1b ties its embeddings: every weight but the final norm's
	# 2048 feeds a GEMM, 2 bytes each
	expect_eq $((2 * ($(jq .model_params bf16.json) - 2048))) "$(jq .breakdown.bf16_weights bf16.json)"
	# never the whole dout (2 bytes x 16384 tokens x 128256): here the
	# head's chunk of 2048 rows of it is the largest
	[ "$fp32" -gt 0 ] && [ "$bf16" -ge $((2 * 2048 * 128256)) ] &&
		[ "$bf16" -lt $((2 * 16384 * 128256)) ] ||
		{ echo "fp32 op scratch $fp32, bf16 $bf16"; false; }
	# 256 tokens: the head's GEMM is the largest, its copy of dout (2 bytes
	# x 256 x 128256, rounded up to the cache's size classes), not its
	# weight nor its input (kept in bf16, their own rows)
	run titan-mem --json --model.flavor=llama3_1b --training.device=cuda \
		--training.seq_len=256 --training.local_batch_size=1 --training.matmul_dtype=bfloat16
	bf16=$(printf '%s\n' "$output" | jq .breakdown.op_scratch)
	[ "$bf16" -ge $((2 * 256 * 128256)) ] && [ "$bf16" -lt $((2 * 128256 * 2048)) ] ||
		{ echo "bf16 op scratch at 256 tokens $bf16"; false; }
	# the fp32 attention's two score buffers stay within the 512 MiB budget
	[ "$fp32" -gt 0 ] && [ "$fp32" -lt $((640 << 20)) ] || { echo "fp32 op scratch $fp32"; false; }
	run titan-mem --model.flavor=llama3_1b --training.device=cuda --training.matmul_dtype=bfloat16
	expect_output_has "op scratch (largest op)"
	expect_output_has "bf16 GEMM weight copies"
	expect_output_has "bf16 GEMM operands on cuda"
	run titan-mem --json
	expect_eq 0 "$(printf '%s\n' "$output" | jq .breakdown.op_scratch)"
}

@test "impossible layouts are usage errors that name the constraint" {
	run titan-mem --parallelism.tensor_parallel_degree=3
	expect_status 2
	expect_output_has "tp=3 does not divide model.n_heads=16"
	run titan-mem --parallelism.pipeline_parallel_degree=4
	expect_status 2
	expect_output_has "pp=4 does not divide model.n_layers=6"
	run titan-mem --parallelism.data_parallel_shard_degree=2 --world-size 8
	expect_status 2
	expect_output_has "needs 2 ranks, there are 8"
	run titan-mem --device-memory lots
	expect_status 2
	expect_output_has "--device-memory: 'lots' is not a size"
	run titan-mem --pp-schedule zigzag
	expect_status 2
	expect_output_has "--pp-schedule"
}
