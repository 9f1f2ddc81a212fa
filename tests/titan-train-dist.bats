#!/usr/bin/env bats
# titan-train on several ranks (mpirun): every data-, tensor-, pipeline-
# and context-parallel layout follows the single-rank loss curve,
# checkpoints load into any layout, memory is what titan-mem predicts, and
# a rank that dies or hangs stops the run.

load helpers

# The tiny model of titan-train.bats, one thread a rank.
TINY="--model.dim=64 --model.n_layers=2 --model.n_heads=4 --model.n_kv_heads=2
 --model.vocab_size=512 --training.seq_len=64 --training.threads=1
 --metrics.peak_flops=1e11 --metrics.log_freq=1"

setup_file() {
	command -v mpirun >/dev/null 2>&1 || return 0
	doc_dataset "$BATS_FILE_TMPDIR"
	# the reference: one rank, a global batch of 4 sequences, 20 steps
	titan-train $TINY --data.dataset="$BATS_FILE_TMPDIR/data" -q \
		--training.local_batch_size=4 --training.steps=20 \
		--metrics.jsonl="$BATS_FILE_TMPDIR/single.jsonl"
}

setup() {
	cd "$BATS_TEST_TMPDIR" || return 1
	need_mpirun
}

# train_on N ARGS...: titan-train on N ranks with the tiny model.
train_on() {
	local n=$1
	shift
	# shellcheck disable=SC2086
	ranks "$n" titan-train $TINY --data.dataset="$BATS_FILE_TMPDIR/data" "$@"
}

# same_losses REFERENCE RUN [FIRST]: the train losses of two metrics files
# agree step by step to a relative 1e-4 (from step FIRST on, default 1),
# and RUN has every step of REFERENCE from FIRST on.
same_losses() {
	jq -rn --argjson first "${3:-1}" --slurpfile ref "$1" --slurpfile got "$2" '
		def losses: map(select(.loss != null and .step >= $first) | {key: (.step | tostring), value: .loss}) | from_entries;
		($ref | losses) as $a | ($got | losses) as $b
		| if ($a | length) == 0 then "no steps"
		  elif ($a | keys) != ($b | keys) then "steps differ: \($a | keys) vs \($b | keys)"
		  else ([$a | keys[] | (($a[.] - $b[.]) / $a[.] | fabs)] | max) as $d
		       | if $d < 1e-4 then "ok" else "max relative difference \($d)" end end'
}

# parity N ARGS...: 20 steps on N ranks match the single-rank run.
parity() {
	local n=$1
	shift
	train_on "$n" -q --training.steps=20 --metrics.jsonl=run.jsonl "$@"
	expect_eq ok "$(same_losses "$BATS_FILE_TMPDIR/single.jsonl" run.jsonl)"
}

@test "DDP on 2 ranks follows the single-rank loss curve" {
	parity 2 --training.local_batch_size=2 --parallelism.data_parallel_replicate_degree=2
}

@test "DDP on 4 ranks follows the single-rank loss curve" {
	parity 4 --training.local_batch_size=1 --parallelism.data_parallel_replicate_degree=4
}

@test "FSDP on 2 ranks follows the single-rank loss curve" {
	parity 2 --training.local_batch_size=2
}

@test "FSDP on 4 ranks follows the single-rank loss curve" {
	parity 4 --training.local_batch_size=1
}

@test "HSDP 2 x 2 follows the single-rank loss curve" {
	parity 4 --training.local_batch_size=1 --parallelism.data_parallel_replicate_degree=2
}

@test "tensor parallel on 2 ranks, with and without sequence parallel, follows the curve" {
	parity 2 --training.local_batch_size=4 --parallelism.tensor_parallel_degree=2
	parity 2 --training.local_batch_size=4 --parallelism.tensor_parallel_degree=2 \
		--parallelism.sequence_parallel=false
}

@test "under FSDP 2 x TP 2 with sequence parallel titan-mem predicts the peak" {
	local wide="--model.dim=256 --model.n_heads=8 --model.n_kv_heads=4"
	# shellcheck disable=SC2086
	train_on 4 --training.local_batch_size=2 --training.steps=1 $wide \
		--parallelism.tensor_parallel_degree=2 2>four.err
	grep -q "tensor parallel over 2 ranks with sequence parallel" four.err
	# shellcheck disable=SC2086
	titan-mem $TINY $wide --training.local_batch_size=2 --parallelism.tensor_parallel_degree=2 \
		--world-size 4 --json >mem.json
	grep -q "measured $(jq .tracked_bytes mem.json | awk '{ printf "%.1f", $1 / 1048576 }') MiB" four.err ||
		{ jq .tracked_bytes mem.json >&2; grep memory four.err >&2; return 1; }
}

@test "tensor parallel on 4 ranks follows the single-rank loss curve (4 kv heads)" {
	titan-train $TINY --data.dataset="$BATS_FILE_TMPDIR/data" -q --model.n_kv_heads=4 \
		--training.local_batch_size=4 --training.steps=20 --metrics.jsonl=one.jsonl
	train_on 4 -q --training.steps=20 --metrics.jsonl=run.jsonl --model.n_kv_heads=4 \
		--training.local_batch_size=4 --parallelism.tensor_parallel_degree=4
	expect_eq ok "$(same_losses one.jsonl run.jsonl)"
}

@test "FSDP 2 x TP 2 and DDP 2 x TP 2 follow the single-rank loss curve" {
	parity 4 --training.local_batch_size=2 --parallelism.tensor_parallel_degree=2
	parity 4 --training.local_batch_size=2 --parallelism.tensor_parallel_degree=2 \
		--parallelism.data_parallel_replicate_degree=2
}

@test "tensor parallel with tied embeddings and full activation checkpointing follows the curve" {
	titan-train $TINY --data.dataset="$BATS_FILE_TMPDIR/data" -q --model.tie_embeddings=true \
		--training.local_batch_size=4 --training.steps=20 --metrics.jsonl=one.jsonl
	train_on 2 -q --training.steps=20 --metrics.jsonl=run.jsonl --model.tie_embeddings=true \
		--training.local_batch_size=4 --parallelism.tensor_parallel_degree=2 \
		--activation_checkpoint.mode=full
	expect_eq ok "$(same_losses one.jsonl run.jsonl)"
}

@test "a checkpoint saved under FSDP 2 x TP 2 resumes on one rank and under FSDP 4" {
	train_on 4 -q --training.local_batch_size=2 --training.steps=20 \
		--parallelism.tensor_parallel_degree=2 --checkpoint.enable=true \
		--checkpoint.folder=ck --checkpoint.interval=10
	titan-ckpt verify -q ck/step-10
	expect_eq 2 "$(titan-ckpt info --json ck/step-10 | jq .layout.tp)"
	titan-ckpt reshard -q ck/step-10 cut --layout dp_shard=2,tp=2
	expect_eq "$(jq -c '.tensors | map_values(.shards | map([.file, .start, .shape]))' ck/step-10/manifest.json)" \
		"$(jq -c '.tensors | map_values(.shards | map([.file, .start, .shape]))' cut/manifest.json)"
	titan-train $TINY --data.dataset="$BATS_FILE_TMPDIR/data" -q --training.local_batch_size=4 \
		--training.steps=20 --checkpoint.load=ck/step-10 --metrics.jsonl=one.jsonl
	expect_eq ok "$(same_losses "$BATS_FILE_TMPDIR/single.jsonl" one.jsonl 11)"
	train_on 4 -q --training.local_batch_size=1 --training.steps=20 \
		--checkpoint.load=ck/step-10 --metrics.jsonl=four.jsonl
	expect_eq ok "$(same_losses "$BATS_FILE_TMPDIR/single.jsonl" four.jsonl 11)"
}

@test "FSDP with full activation checkpointing follows the single-rank loss curve" {
	parity 2 --training.local_batch_size=2 --activation_checkpoint.mode=full
}

@test "FSDP keeping layers gathered, with gradient accumulation, follows the curve" {
	parity 2 --training.local_batch_size=1 --training.global_batch_size=4 \
		--parallelism.fsdp_reshard_after_forward=never
}

@test "bf16 GEMMs follow the single-rank bf16 curve under FSDP (layers freed or kept, tied), TP 2 x PP 2 and CP 2" {
	local bf16="--training.matmul_dtype=bfloat16" tied="--model.tie_embeddings=true"
	# shellcheck disable=SC2086
	titan-train $TINY --data.dataset="$BATS_FILE_TMPDIR/data" -q $bf16 \
		--training.local_batch_size=4 --training.steps=20 --metrics.jsonl=one.jsonl
	# shellcheck disable=SC2086
	titan-train $TINY --data.dataset="$BATS_FILE_TMPDIR/data" -q $bf16 $tied \
		--training.local_batch_size=4 --training.steps=20 --metrics.jsonl=one-tied.jsonl
	# the layers' one gathered buffer has one bf16 copy: each layer's
	# gather must make it stale; a recomputed layer remakes its bf16 inputs
	# shellcheck disable=SC2086
	train_on 2 --training.steps=20 --metrics.jsonl=run.jsonl $bf16 \
		--training.local_batch_size=2 --activation_checkpoint.mode=selective 2>fsdp.err
	expect_eq ok "$(same_losses one.jsonl run.jsonl)"
	# shellcheck disable=SC2086
	train_on 2 -q --training.steps=20 --metrics.jsonl=run.jsonl $bf16 $tied \
		--training.local_batch_size=1 --training.global_batch_size=4 \
		--parallelism.fsdp_reshard_after_forward=never
	expect_eq ok "$(same_losses one-tied.jsonl run.jsonl)"
	# shellcheck disable=SC2086
	train_on 4 -q --training.steps=20 --metrics.jsonl=run.jsonl $bf16 \
		--training.local_batch_size=4 --parallelism.tensor_parallel_degree=2 \
		--parallelism.pipeline_parallel_degree=2
	expect_eq ok "$(same_losses one.jsonl run.jsonl)"
	# shellcheck disable=SC2086
	train_on 2 -q --training.steps=20 --metrics.jsonl=run.jsonl $bf16 \
		--training.local_batch_size=4 --parallelism.context_parallel_degree=2
	expect_eq ok "$(same_losses one.jsonl run.jsonl)"
	# titan-mem counts the bf16 copies of the weights and activations (the
	# printed MiB agree)
	grep -q 'memory: predicted \([0-9.]*\) MiB (titan-mem), measured \1 MiB' fsdp.err ||
		{ grep memory fsdp.err >&2; return 1; }
	# a tp rank's share of the FFN and of the heads smaller than the model
	# dim: forward's scratch must still hold the norms' outputs
	local narrow="--model.n_heads=8 --model.n_kv_heads=4 --model.ffn_hidden=64"
	# shellcheck disable=SC2086
	titan-train $TINY $narrow --data.dataset="$BATS_FILE_TMPDIR/data" -q $bf16 \
		--training.local_batch_size=4 --training.steps=10 --metrics.jsonl=narrow.jsonl
	# shellcheck disable=SC2086
	train_on 4 $narrow --training.steps=10 --metrics.jsonl=tp4.jsonl $bf16 \
		--training.local_batch_size=4 --parallelism.tensor_parallel_degree=4 2>tp.err
	expect_eq ok "$(same_losses narrow.jsonl tp4.jsonl)"
	grep -q 'memory: predicted \([0-9.]*\) MiB (titan-mem), measured \1 MiB' tp.err ||
		{ grep memory tp.err >&2; return 1; }
}

@test "FSDP on 3 ranks cuts rows unevenly and still follows the curve (tied embeddings)" {
	titan-train $TINY --data.dataset="$BATS_FILE_TMPDIR/data" -q --model.tie_embeddings=true \
		--training.local_batch_size=3 --training.steps=20 --metrics.jsonl=one.jsonl
	train_on 3 -q --training.steps=20 --metrics.jsonl=run.jsonl --model.tie_embeddings=true \
		--training.local_batch_size=1 --activation_checkpoint.mode=selective
	expect_eq ok "$(same_losses one.jsonl run.jsonl)"
}

@test "a checkpoint saved under FSDP 4 resumes under FSDP 2 and on one rank" {
	# the schedule depends on training.steps: the saving run has the same
	train_on 4 -q --training.local_batch_size=1 --training.steps=20 \
		--checkpoint.enable=true --checkpoint.folder=ck --checkpoint.interval=10
	titan-ckpt verify -q ck/step-10
	run titan-ckpt info --json ck/step-10
	expect_eq 4 "$(jq .layout.dp_shard <<<"$output")"
	expect_eq 4 "$(jq '.files | length' <<<"$output")"
	# the trainer's FSDP pieces are the slices titan-ckpt cuts for the layout
	titan-ckpt reshard -q ck/step-10 cut --layout dp_shard=4
	expect_eq "$(jq -c '.tensors | map_values(.shards | map([.file, .start, .shape]))' ck/step-10/manifest.json)" \
		"$(jq -c '.tensors | map_values(.shards | map([.file, .start, .shape]))' cut/manifest.json)"

	train_on 2 -q --training.local_batch_size=2 --training.steps=20 \
		--checkpoint.load=ck/step-10 --metrics.jsonl=two.jsonl
	expect_eq ok "$(same_losses "$BATS_FILE_TMPDIR/single.jsonl" two.jsonl 11)"
	expect_eq 11 "$(jq -rs 'map(select(.loss != null)) | .[0].step' two.jsonl)"

	titan-train $TINY --data.dataset="$BATS_FILE_TMPDIR/data" -q --training.local_batch_size=4 \
		--training.steps=20 --checkpoint.load=ck/step-10 --metrics.jsonl=one.jsonl
	expect_eq ok "$(same_losses "$BATS_FILE_TMPDIR/single.jsonl" one.jsonl 11)"
}

@test "a checkpoint saved on one rank resumes under HSDP; async saves match sync ones" {
	titan-train $TINY --data.dataset="$BATS_FILE_TMPDIR/data" -q --training.local_batch_size=4 \
		--training.steps=20 --checkpoint.enable=true --checkpoint.folder=one \
		--checkpoint.interval=10
	rm -r one/step-20
	train_on 4 -q --training.local_batch_size=1 --training.steps=20 \
		--parallelism.data_parallel_replicate_degree=2 --checkpoint.enable=true \
		--checkpoint.folder=one --checkpoint.async=true --metrics.jsonl=hsdp.jsonl
	expect_eq ok "$(same_losses "$BATS_FILE_TMPDIR/single.jsonl" hsdp.jsonl 11)"
	titan-ckpt verify -q one/step-20
	# only the first replica writes: 2 files
	expect_eq 2 "$(titan-ckpt info --json one/step-20 | jq '.files | length')"
	train_on 2 -q --training.local_batch_size=2 --training.steps=20 \
		--checkpoint.enable=true --checkpoint.folder=two --checkpoint.load=one/step-10 \
		--checkpoint.interval=100
	run titan-ckpt diff one/step-20 two/step-20 --tolerance 1e-5
	expect_status 0
}

@test "under FSDP the model states divide by the ranks and titan-mem predicts the peak" {
	local one four wide="--model.dim=256 --model.n_heads=8 --model.n_kv_heads=4"
	# shellcheck disable=SC2086
	train_on 1 --training.local_batch_size=1 --training.steps=2 $wide 2>one.err
	# shellcheck disable=SC2086
	train_on 4 --training.local_batch_size=1 --training.steps=2 $wide 2>four.err
	one=$(sed -n 's/.*memory: parameters \([0-9.]*\) MiB.*/\1/p' one.err)
	four=$(sed -n 's/.*memory: parameters \([0-9.]*\) MiB.*/\1/p' four.err)
	# a quarter, give or take the padding of rows that do not divide
	awk -v a="$one" -v b="$four" 'BEGIN { exit !(b * 4 >= a * 0.97 && b * 4 <= a * 1.05) }' ||
		{ echo "parameters: 1 rank $one MiB, 4 ranks $four MiB" >&2; return 1; }
	for f in one.err four.err; do
		grep -q 'memory: predicted \([0-9.]*\) MiB (titan-mem), measured \1 MiB' "$f" ||
			{ grep memory "$f" >&2; return 1; }
	done
	# titan-mem says the same without training
	# shellcheck disable=SC2086
	titan-mem $TINY $wide --training.local_batch_size=1 --world-size 4 --json >mem.json
	grep -q "measured $(jq .tracked_bytes mem.json | awk '{ printf "%.1f", $1 / 1048576 }') MiB" four.err ||
		{ jq .tracked_bytes mem.json >&2; grep memory four.err >&2; return 1; }
}

@test "rank 0 logs for the run; -v makes every rank log" {
	run train_on 2 --training.local_batch_size=2 --training.steps=1
	expect_status 0
	expect_eq 1 "$(grep -c '^step    1' <<<"$output")"
	expect_output_has "parallelism: 2 ranks (mpi), pp=1 x dp_replicate=1 x dp_shard=2 x cp=1 x tp=1: FSDP"
	expect_output_has "global)"
	run train_on 2 --training.local_batch_size=2 --training.steps=1 -v
	expect_status 0
	expect_eq 2 "$(grep -c '^step    1' <<<"$output")"
}

@test "a layout that does not match the ranks launched is one clear usage error" {
	run train_on 3 --training.local_batch_size=1 --parallelism.data_parallel_replicate_degree=2
	[ "$status" -ne 0 ]
	expect_output_has "world size 3 is not a multiple of pp=1 x dp_replicate=2 x cp=1 x tp=1 = 2"
	expect_eq 1 "$(grep -c 'titan-train: world size' <<<"$output")"

	run train_on 2 --training.local_batch_size=1 --parallelism.data_parallel_shard_degree=4
	[ "$status" -ne 0 ]
	expect_output_has "layout pp=1,dp_replicate=1,dp_shard=4,cp=1,tp=1 needs 4 ranks, there are 2"

	run train_on 2 --training.local_batch_size=1 --training.seq_len=62 \
		--parallelism.context_parallel_degree=2
	expect_status 2
	expect_output_has "context parallel: training.seq_len 62 is not a multiple of 2 x cp = 4"
	expect_eq 1 "$(grep -c 'titan-train: .*context parallel' <<<"$output")"

	run train_on 2 --training.local_batch_size=1 --parallelism.pipeline_parallel_degree=2 \
		--model.tie_embeddings=true
	[ "$status" -ne 0 ]
	expect_output_has "pipeline parallel needs untied embeddings"

	run train_on 2 --training.local_batch_size=3 --parallelism.pipeline_parallel_degree=2 \
		--parallelism.pipeline_parallel_microbatch_size=2
	[ "$status" -ne 0 ]
	expect_output_has "pipeline_parallel_microbatch_size 2 does not divide training.local_batch_size 3"

	run train_on 4 --training.local_batch_size=1 --parallelism.pipeline_parallel_degree=4 \
		--model.n_layers=2
	[ "$status" -ne 0 ]
	expect_output_has "pp=4 does not divide model.n_layers=2"

	run train_on 4 --training.local_batch_size=1 --parallelism.tensor_parallel_degree=4
	[ "$status" -ne 0 ]
	expect_output_has "tp=4 does not divide model.n_kv_heads=2"
}

# rank_pid MARK R: the pid of world rank R of the run whose command line has MARK.
rank_pid() {
	local p
	for p in $(pgrep -f -- "$1"); do
		if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# wait_for PATTERN MARK: until a path matches the glob PATTERN (at most
# 60 s).  Else the run whose command line has MARK is stopped, so that no
# rank outlives the test, and the test fails.
wait_for() {
	local i
	for i in $(seq 600); do
		compgen -G "$1" >/dev/null && return 0
		sleep 0.1
	done
	echo "nothing matched '$1' within 60 s" >&2
	pkill -KILL -f -- "$2" || true
	return 1
}

@test "a rank that hangs makes the others stop after comm.train_timeout_seconds" {
	local start pid job status=0
	start=$(date +%s)
	train_on 2 --training.local_batch_size=1 --training.steps=1000000 --metrics.log_freq=1000 \
		--comm.train_timeout_seconds=3 --metrics.jsonl="$PWD/hang.jsonl" >out 2>&1 &
	job=$!
	wait_for hang.jsonl "$PWD/hang.jsonl"
	pid=$(rank_pid "$PWD/hang.jsonl" 1)
	kill -STOP "$pid"
	wait "$job" || status=$?
	kill -CONT "$pid" 2>/dev/null || true
	[ "$status" -ne 0 ]
	[ $(($(date +%s) - start)) -lt 120 ]
	grep -q "rank 0 of 2: .*comm '.*' (rank 0 of 2): .* timed out after 3 s: another rank died or hangs" out ||
		{ cat out >&2; return 1; }
}

@test "a rank that dies stops the run, and the last complete checkpoint stays loadable" {
	local pid job status=0
	train_on 2 -q --training.local_batch_size=1 --training.steps=1000000 \
		--checkpoint.enable=true --checkpoint.folder="$PWD/die" --checkpoint.interval=20 \
		--checkpoint.keep_latest_k=2 --checkpoint.async=true >out 2>&1 &
	job=$!
	# a complete step directory (keep_latest_k prunes each soon after)
	wait_for 'die/step-[0-9]*[0-9]' "$PWD/die"
	pid=$(rank_pid "$PWD/die" 1)
	kill -KILL "$pid"
	wait "$job" || status=$?
	[ "$status" -ne 0 ]
	grep -q "rank 1 .* exited on signal 9" out || { cat out >&2; return 1; }
	titan-ckpt verify -q die
	train_on 2 -q --training.local_batch_size=1 --checkpoint.folder="$PWD/die" \
		--checkpoint.load=latest --training.steps="$(( $(titan-ckpt info --json die | jq .step) + 1 ))"
}

@test "SIGTERM to one rank stops every rank at the same step, with a checkpoint" {
	local pid job status=0 step
	train_on 2 --training.local_batch_size=1 --training.steps=1000000 --metrics.log_freq=1000 \
		--checkpoint.enable=true --checkpoint.folder="$PWD/term" --checkpoint.interval=1000000 \
		--metrics.jsonl="$PWD/term.jsonl" >out 2>&1 &
	job=$!
	wait_for term.jsonl "$PWD/term.jsonl"
	pid=$(rank_pid "$PWD/term.jsonl" 1)
	kill -TERM "$pid"
	wait "$job" || status=$?
	[ "$status" -eq 0 ] || { cat out >&2; return 1; }
	grep -q "stopped by a signal after step [0-9]*; checkpoint saved" out || { cat out >&2; return 1; }
	step=$(sed -n 's/.*stopped by a signal after step \([0-9]*\).*/\1/p' out)
	titan-ckpt verify -q "term/step-$step"
	expect_eq 2 "$(titan-ckpt info --json "term/step-$step" | jq '.files | length')"
}

@test "titan-gen --tp 2 and --tp 4 give one rank's greedy text, JSON lines and scores" {
	local n
	train_on 4 -q --training.local_batch_size=2 --training.steps=10 --model.n_kv_heads=4 \
		--parallelism.tensor_parallel_degree=2 --checkpoint.enable=true --checkpoint.folder=ck
	titan-gen -m ck --temperature 0 -n 30 "the manual page" >one.txt
	printf '{"prompt": "titan", "max_new_tokens": 9}\n{"prompt": "a rank", "max_new_tokens": 5}\n' >in.jsonl
	titan-gen -m ck --seed 7 --jsonl <in.jsonl >one.jsonl
	for n in 2 4; do
		ranks "$n" titan-gen -m ck --tp "$n" --temperature 0 -n 30 "the manual page" >tp.txt
		cmp one.txt tp.txt
		ranks "$n" titan-gen -m ck --tp "$n" --seed 7 --jsonl <in.jsonl >tp.jsonl
		cmp one.jsonl tp.jsonl
	done
	# scores agree to float rounding (each rank's logits come from its own matmul)
	echo "the manual page says" | titan-gen -m ck --score - >one.score
	echo "the manual page says" | ranks 2 titan-gen -m ck --tp 2 --score - >tp.score
	paste one.score tp.score | awk -F'\t' '/^[0-9]/ { d = $2 - $4; if (d < 0) d = -d;
		if (d > 1e-4) { print "token " NR ": " $2 " vs " $4; bad = 1 } } END { exit bad }'

	run ranks 2 titan-gen -m ck --tp 3 "x"
	[ "$status" -ne 0 ]
	expect_output_has "--tp 3 with 2 ranks: launch as many ranks as --tp says"
	run titan-gen -m ck --tp 2 "x"
	expect_status 2
	expect_output_has "--tp 2 with 1 rank"
}

# The pipeline tests use 4 layers: every stage of pp 2 and 4 holds some.
DEEP="--model.n_layers=4"

setup_deep_reference() {
	[ -e "$BATS_FILE_TMPDIR/deep.jsonl" ] && return 0
	# shellcheck disable=SC2086
	titan-train $TINY $DEEP --data.dataset="$BATS_FILE_TMPDIR/data" -q \
		--training.local_batch_size=4 --training.steps=20 \
		--metrics.jsonl="$BATS_FILE_TMPDIR/deep.jsonl"
}

# pipeline N ARGS...: 20 steps of the 4-layer model on N ranks match one rank.
pipeline() {
	local n=$1
	shift
	setup_deep_reference
	# shellcheck disable=SC2086
	train_on "$n" -q $DEEP --training.steps=20 --metrics.jsonl=run.jsonl "$@"
	expect_eq ok "$(same_losses "$BATS_FILE_TMPDIR/deep.jsonl" run.jsonl)"
}

# resumes_on_one REFERENCE ARGS...: ck/step-10 resumed on one rank (ARGS:
# the model's) follows REFERENCE from step 11.
resumes_on_one() {
	local ref=$1
	shift
	titan-train $TINY "$@" --data.dataset="$BATS_FILE_TMPDIR/data" -q \
		--training.local_batch_size=4 --training.steps=20 --checkpoint.load=ck/step-10 \
		--metrics.jsonl=one.jsonl
	expect_eq ok "$(same_losses "$ref" one.jsonl 11)"
}

@test "pipeline parallel on 2 and 4 ranks, 1F1B, GPipe and Interleaved1F1B, follows the single-rank curve" {
	local s
	for s in 1F1B GPipe Interleaved1F1B; do
		pipeline 2 --training.local_batch_size=4 --parallelism.pipeline_parallel_degree=2 \
			--parallelism.pipeline_parallel_schedule=$s
	done
	for s in 1F1B GPipe; do
		pipeline 4 --training.local_batch_size=4 --parallelism.pipeline_parallel_degree=4 \
			--parallelism.pipeline_parallel_schedule=$s \
			--parallelism.pipeline_parallel_microbatch_size=2
	done
	# interleaved over 4 ranks: 8 layers, 2 stages of 1 layer a rank
	titan-train $TINY --data.dataset="$BATS_FILE_TMPDIR/data" -q --model.n_layers=8 \
		--training.local_batch_size=4 --training.steps=20 --metrics.jsonl=eight.jsonl
	train_on 4 -q --model.n_layers=8 --training.local_batch_size=4 --training.steps=20 \
		--metrics.jsonl=run.jsonl --parallelism.pipeline_parallel_degree=4 \
		--parallelism.pipeline_parallel_schedule=Interleaved1F1B
	expect_eq ok "$(same_losses eight.jsonl run.jsonl)"
}

@test "Interleaved1F1B: stages of pipeline_parallel_layers_per_stage, with TP, DDP, CP and AC" {
	# 4 stages of 1 layer over 2 ranks, selective activation checkpointing
	pipeline 2 --training.local_batch_size=4 --parallelism.pipeline_parallel_degree=2 \
		--parallelism.pipeline_parallel_schedule=Interleaved1F1B \
		--parallelism.pipeline_parallel_layers_per_stage=1 --activation_checkpoint.mode=selective
	pipeline 4 --training.local_batch_size=4 --parallelism.pipeline_parallel_degree=2 \
		--parallelism.pipeline_parallel_schedule=Interleaved1F1B \
		--parallelism.tensor_parallel_degree=2
	pipeline 4 --training.local_batch_size=2 --parallelism.pipeline_parallel_degree=2 \
		--parallelism.pipeline_parallel_schedule=Interleaved1F1B \
		--parallelism.data_parallel_replicate_degree=2
	pipeline 4 --training.local_batch_size=4 --parallelism.pipeline_parallel_degree=2 \
		--parallelism.pipeline_parallel_schedule=Interleaved1F1B \
		--parallelism.context_parallel_degree=2 --activation_checkpoint.mode=full
}

@test "under every pipeline schedule titan-mem predicts each stage's peak" {
	local s
	setup_deep_reference
	for s in 1F1B GPipe Interleaved1F1B; do
		# shellcheck disable=SC2086
		train_on 2 -v $DEEP --training.local_batch_size=4 --training.steps=1 \
			--parallelism.pipeline_parallel_degree=2 \
			--parallelism.pipeline_parallel_schedule=$s 2>two.err
		expect_eq 2 "$(grep -c 'memory: predicted \([0-9.]*\) MiB (titan-mem), measured \1 MiB' two.err)" ||
			{ grep memory two.err >&2; return 1; }
	done
	grep -q "pipeline rank 0 of 2, 4 activation sets: F0.0 F1.0 F0.1 F1.1 F2.0 B0.1" two.err
}

@test "pipeline layouts that do not cut evenly are one clear usage error" {
	run train_on 2 --training.local_batch_size=3 --model.n_layers=4 \
		--parallelism.pipeline_parallel_degree=2 \
		--parallelism.pipeline_parallel_schedule=Interleaved1F1B
	expect_status 2
	expect_output_has "Interleaved1F1B: 3 micro-batches are not a multiple of the 2 pipeline ranks"
	run train_on 2 --training.local_batch_size=2 --model.n_layers=4 \
		--parallelism.pipeline_parallel_degree=2 --parallelism.pipeline_parallel_layers_per_stage=3
	expect_status 2
	expect_output_has "pipeline_parallel_layers_per_stage 3: model.n_layers=4 is not cut into a multiple of pp=2 stages"
	run train_on 2 --training.local_batch_size=2 --model.n_layers=4 \
		--parallelism.pipeline_parallel_degree=2 --parallelism.pipeline_parallel_layers_per_stage=1
	expect_status 2
	expect_output_has "pipeline_parallel_schedule 1F1B runs one stage a rank, not 2"
	run train_on 2 --training.local_batch_size=2 --model.n_layers=2 \
		--parallelism.pipeline_parallel_degree=2 \
		--parallelism.pipeline_parallel_schedule=Interleaved1F1B
	expect_status 2
	expect_output_has "pp=2 x 2 stages a rank does not divide model.n_layers=2"
}

@test "a checkpoint saved under Interleaved1F1B resumes on one rank and under PP 2 with 1F1B" {
	setup_deep_reference
	# shellcheck disable=SC2086
	train_on 2 -q $DEEP --training.local_batch_size=4 --training.steps=20 \
		--parallelism.pipeline_parallel_degree=2 \
		--parallelism.pipeline_parallel_schedule=Interleaved1F1B \
		--checkpoint.enable=true --checkpoint.folder=ck --checkpoint.interval=10
	titan-ckpt verify -q ck/step-10
	expect_eq '{"cp":1,"dp_replicate":1,"dp_shard":1,"pp":2,"pp_stages":2,"tp":1}' \
		"$(titan-ckpt info --json ck/step-10 | jq -c .layout)"
	# shellcheck disable=SC2086
	resumes_on_one "$BATS_FILE_TMPDIR/deep.jsonl" $DEEP
	# shellcheck disable=SC2086
	train_on 2 -q $DEEP --training.local_batch_size=4 --training.steps=20 \
		--parallelism.pipeline_parallel_degree=2 --checkpoint.load=ck/step-10 \
		--metrics.jsonl=two.jsonl
	expect_eq ok "$(same_losses "$BATS_FILE_TMPDIR/deep.jsonl" two.jsonl 11)"
	# layers 0 and 2 on pp rank 0, 1 and 3 on pp rank 1; titan-ckpt
	# writes the same files
	local where='[.tensors[] | select(.name | test("^layers\\.[0-9]+\\.attention\\.wq"))
		| "\(.name) \([.shards[].file] | join(","))"] | join(";")'
	expect_eq "layers.0.attention.wq.weight rank-00000.safetensors;layers.1.attention.wq.weight rank-00001.safetensors;layers.2.attention.wq.weight rank-00000.safetensors;layers.3.attention.wq.weight rank-00001.safetensors" \
		"$(titan-ckpt info --json ck/step-10 | jq -r "$where")"
	titan-ckpt reshard -q --layout pp=2,pp_stages=2 ck/step-10 re
	expect_eq "$(titan-ckpt info --json ck/step-10 | jq -r "$where")" \
		"$(titan-ckpt info --json re | jq -r "$where")"
}

@test "pipeline parallel with activation checkpointing and accumulation follows the curve" {
	pipeline 2 --training.local_batch_size=2 --training.global_batch_size=4 \
		--parallelism.pipeline_parallel_degree=2 --activation_checkpoint.mode=full
}

@test "PP 2 x FSDP 2, PP 2 x TP 2 and PP 2 x FSDP 2 x TP 2 follow the single-rank curve" {
	pipeline 4 --training.local_batch_size=2 --parallelism.pipeline_parallel_degree=2
	pipeline 4 --training.local_batch_size=4 --parallelism.pipeline_parallel_degree=2 \
		--parallelism.tensor_parallel_degree=2
	pipeline 8 --training.local_batch_size=2 --parallelism.pipeline_parallel_degree=2 \
		--parallelism.tensor_parallel_degree=2
}

@test "a checkpoint saved under PP 2 x TP 2 resumes on one rank and under FSDP 4" {
	setup_deep_reference
	# shellcheck disable=SC2086
	train_on 4 -q $DEEP --training.local_batch_size=4 --training.steps=20 \
		--parallelism.pipeline_parallel_degree=2 --parallelism.tensor_parallel_degree=2 \
		--checkpoint.enable=true --checkpoint.folder=ck --checkpoint.interval=10
	titan-ckpt verify -q ck/step-10
	expect_eq '{"cp":1,"dp_replicate":1,"dp_shard":1,"pp":2,"tp":2}' \
		"$(titan-ckpt info --json ck/step-10 | jq -c .layout)"
	# shellcheck disable=SC2086
	resumes_on_one "$BATS_FILE_TMPDIR/deep.jsonl" $DEEP
	# shellcheck disable=SC2086
	train_on 4 -q $DEEP --training.local_batch_size=1 --training.steps=20 \
		--checkpoint.load=ck/step-10 --metrics.jsonl=four.jsonl
	expect_eq ok "$(same_losses "$BATS_FILE_TMPDIR/deep.jsonl" four.jsonl 11)"
}

@test "context parallel on 2 and 4 ranks follows the single-rank curve (document and causal masks)" {
	parity 2 --training.local_batch_size=4 --parallelism.context_parallel_degree=2
	parity 4 --training.local_batch_size=4 --parallelism.context_parallel_degree=4
	titan-train $TINY --data.dataset="$BATS_FILE_TMPDIR/data" -q --data.mask=causal \
		--training.local_batch_size=4 --training.steps=20 --metrics.jsonl=one.jsonl
	train_on 2 -q --training.steps=20 --metrics.jsonl=run.jsonl --data.mask=causal \
		--training.local_batch_size=4 --parallelism.context_parallel_degree=2
	expect_eq ok "$(same_losses one.jsonl run.jsonl)"
}

@test "CP 2 x TP 2, FSDP 2 x CP 2 and CP 2 with full activation checkpointing follow the curve" {
	parity 4 --training.local_batch_size=4 --parallelism.context_parallel_degree=2 \
		--parallelism.tensor_parallel_degree=2
	parity 4 --training.local_batch_size=2 --parallelism.context_parallel_degree=2
	parity 2 --training.local_batch_size=4 --parallelism.context_parallel_degree=2 \
		--activation_checkpoint.mode=full
}

@test "PP 2 x CP 2 and PP 2 x FSDP 2 x CP 2 x TP 2 (16 ranks, selective AC) follow the single-rank curve" {
	pipeline 4 --training.local_batch_size=4 --parallelism.pipeline_parallel_degree=2 \
		--parallelism.context_parallel_degree=2
	pipeline 16 --training.local_batch_size=2 --parallelism.pipeline_parallel_degree=2 \
		--parallelism.context_parallel_degree=2 --parallelism.tensor_parallel_degree=2 \
		--activation_checkpoint.mode=selective
}

@test "a checkpoint saved under FSDP 2 x CP 2 resumes on one rank and under CP 2 x TP 2" {
	train_on 4 -q --training.local_batch_size=2 --training.steps=20 \
		--parallelism.context_parallel_degree=2 --checkpoint.enable=true \
		--checkpoint.folder=ck --checkpoint.interval=10
	titan-ckpt verify -q ck/step-10
	expect_eq '{"cp":2,"dp_replicate":1,"dp_shard":2,"pp":1,"tp":1}' \
		"$(titan-ckpt info --json ck/step-10 | jq -c .layout)"
	resumes_on_one "$BATS_FILE_TMPDIR/single.jsonl"
	train_on 4 -q --training.local_batch_size=4 --training.steps=20 \
		--parallelism.context_parallel_degree=2 --parallelism.tensor_parallel_degree=2 \
		--checkpoint.load=ck/step-10 --metrics.jsonl=cptp.jsonl
	expect_eq ok "$(same_losses "$BATS_FILE_TMPDIR/single.jsonl" cptp.jsonl 11)"
}

@test "under CP 2 each rank holds half the activations and titan-mem predicts the peak" {
	local one two wide="--model.dim=256 --model.n_heads=8 --model.n_kv_heads=4 --training.seq_len=256"
	# shellcheck disable=SC2086
	train_on 1 --training.local_batch_size=2 --training.steps=1 $wide 2>one.err
	# shellcheck disable=SC2086
	train_on 2 --training.local_batch_size=2 --training.steps=1 $wide \
		--parallelism.context_parallel_degree=2 2>two.err
	grep -q "ring attention over 2 ranks (128 tokens each)" two.err
	one=$(sed -n 's/.*activations \([0-9.]*\) MiB.*/\1/p' one.err)
	two=$(sed -n 's/.*activations \([0-9.]*\) MiB.*/\1/p' two.err)
	# half, plus the ring's blocks in flight
	awk -v a="$one" -v b="$two" 'BEGIN { exit !(b <= a * 0.6 && b >= a * 0.5) }' ||
		{ echo "activations: 1 rank $one MiB, 2 cp ranks $two MiB" >&2; return 1; }
	grep -q 'memory: predicted \([0-9.]*\) MiB (titan-mem), measured \1 MiB' two.err ||
		{ grep memory two.err >&2; return 1; }
	# shellcheck disable=SC2086
	titan-mem $TINY $wide --training.local_batch_size=2 \
		--parallelism.context_parallel_degree=2 --world-size 2 --json >mem.json
	grep -q "measured $(jq .tracked_bytes mem.json | awk '{ printf "%.1f", $1 / 1048576 }') MiB" two.err ||
		{ jq .tracked_bytes mem.json >&2; grep memory two.err >&2; return 1; }
}
