#!/usr/bin/env bats
# titan-train: the configuration contract, training that learns, exact
# resume, signals, checkpoints, metrics, and every error a user can hit.

load helpers

# A small model that trains in a second: every run below uses it.
TINY="--model.dim=64 --model.n_layers=2 --model.n_heads=4 --model.n_kv_heads=2
 --model.vocab_size=512 --training.seq_len=64 --training.local_batch_size=4
 --training.threads=2 --metrics.peak_flops=1e11 --metrics.log_freq=1"

setup_file() {
	local d=$BATS_FILE_TMPDIR
	doc_dataset "$d"
}

# train ARGS...: titan-train on the tiny model and the documentation dataset.
train() {
	# shellcheck disable=SC2086
	titan-train $TINY --data.dataset="$BATS_FILE_TMPDIR/data" "$@"
}

# losses FILE: the train losses of a metrics JSONL file, one a line.
losses() {
	jq -r 'select(.loss != null) | "\(.step) \(.loss)"' "$1"
}

@test "titan-train --help prints the synopsis on stdout, and the man page has it" {
	expect_synopsis_in_man titan-train
}

@test "--print-config merges defaults, flavor, file and overrides, and reads back the same" {
	printf '{"training": {"steps": 7}, "model": {"n_layers": 3}}\n' >cfg.json
	run titan-train -c cfg.json --training.steps=9 --print-config
	expect_status 0
	printf '%s\n' "$output" >merged.json
	expect_eq 9 "$(jq .training.steps merged.json)"
	expect_eq 3 "$(jq .model.n_layers merged.json)"
	expect_eq 256 "$(jq .model.dim merged.json)"
	expect_eq '"debugmodel"' "$(jq .model.flavor merged.json)"
	titan-train -c merged.json --print-config >again.json
	cmp merged.json again.json
}

@test "every flavor loads and --list-flavors names them" {
	run titan-train --list-flavors
	expect_status 0
	for f in debugmodel llama3_1b llama3_3b llama3_8b llama3_70b llama3_405b; do
		expect_output_has "$f"
		titan-train --model.flavor=$f --training.seq_len=1024 --print-config >/dev/null
	done
	expect_eq 32 "$(titan-train --model.flavor=llama3_8b --print-config | jq .model.n_layers)"
}

@test "an unknown key is a usage error that suggests the closest key" {
	run titan-train --training.stpes=3 --print-config
	expect_status 2
	expect_output_has "training.stpes"
	expect_output_has "did you mean 'training.steps'"
	printf '{"optimizer": {"lr": "fast"}}\n' >bad.json
	run titan-train -c bad.json --print-config
	expect_status 2
	expect_output_has "bad.json"
	expect_output_has "optimizer.lr"
}

@test "bad values name the key: a word for a number, an unknown mask, seq_len past the model" {
	run titan-train --training.steps=many --print-config
	expect_status 2
	expect_output_has "training.steps"
	run titan-train --data.mask=diagonal --print-config
	expect_status 2
	expect_output_has "causal"
	run titan-train --training.seq_len=4096 --print-config
	expect_status 2
	expect_output_has "max_seq_len"
	run titan-train --model.flavor=debugmdl --print-config
	expect_status 2
	expect_output_has "debugmodel"
}

@test "missing data: no dataset is a usage error, a missing directory a runtime error" {
	run titan-train --training.steps=1
	expect_status 2
	expect_output_has "data.dataset"
	run titan-train --training.steps=1 --data.dataset=nowhere
	expect_status 1
	expect_output_has "nowhere"
}

@test "a dataset with more tokens than the model's vocabulary is refused" {
	run train --model.vocab_size=256 --training.steps=1
	expect_status 2
	expect_output_has "vocab_size"
}

@test "training lowers the loss and writes every metric, as JSONL and TensorBoard events" {
	run train --training.steps=40 --optimizer.lr=3e-3 --metrics.jsonl=m.jsonl \
		--metrics.tensorboard=tb --validation.freq=20 --validation.steps=2
	expect_status 0
	expect_output_has "loss"
	expect_output_has "tps"
	# the corpus is the documentation, which changes: ask for a clear fall,
	# not a figure
	first=$(jq -r 'select(.step == 1) | .loss' m.jsonl)
	last=$(jq -r 'select(.step == 40 and .loss != null) | .loss' m.jsonl)
	awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.5) }' ||
		{ echo "loss did not fall: $first -> $last" >&2; return 1; }
	for k in step loss lr grad_norm tps tflops mfu mem_peak_gib elapsed_s; do
		expect_eq true "$(jq -s "map(select(.loss != null)) | all(has(\"$k\"))" m.jsonl)"
	done
	expect_eq 2 "$(jq -s 'map(select(.val_loss != null)) | length' m.jsonl)"
	ls tb/events.out.tfevents.* >/dev/null
}

@test "the same seed gives bit-identical losses" {
	train --training.steps=4 --metrics.jsonl=a.jsonl -q
	train --training.steps=4 --metrics.jsonl=b.jsonl -q
	expect_eq "$(losses a.jsonl)" "$(losses b.jsonl)"
}

@test "resume is exact: 20 steps straight equal 10 + resume + 10, bit for bit" {
	common="--training.steps=20 --lr_scheduler.warmup_steps=3 --checkpoint.enable --checkpoint.interval=10"
	train $common --checkpoint.folder=straight --metrics.jsonl=straight.jsonl -q
	[ -d straight/step-10 ]
	# a fresh process picks up the state of step 10 and trains steps 11..20
	train $common --checkpoint.folder=resumed --checkpoint.load=straight/step-10 \
		--metrics.jsonl=resumed.jsonl -q
	expect_eq "$(losses straight.jsonl | sed -n '11,20p')" "$(losses resumed.jsonl)"
	expect_eq 10 "$(losses resumed.jsonl | wc -l)"
	# and the resumed run's own checkpoint resumes too: nothing left to do
	run train $common --checkpoint.folder=resumed
	expect_status 0
	expect_output_has "nothing to do"
}

@test "async checkpoints and keep_latest_k keep the newest step directories" {
	train --training.steps=6 --checkpoint.enable --checkpoint.folder=ck --checkpoint.interval=1 \
		--checkpoint.keep_latest_k=2 --checkpoint.async -q
	expect_eq "step-5 step-6" "$(ls ck | tr '\n' ' ' | sed 's/ $//')"
	[ -f ck/step-6/manifest.json ]
	expect_eq 6 "$(jq .extra.train_state.step ck/step-6/manifest.json)"
}

@test "activation checkpointing trains the same losses with less activation memory" {
	run train --training.steps=3 --metrics.jsonl=none.jsonl
	expect_status 0
	run train --training.steps=3 --metrics.jsonl=full.jsonl --activation_checkpoint.mode=full
	expect_status 0
	expect_eq "$(losses none.jsonl)" "$(losses full.jsonl)"
	held=$(printf '%s\n' "$output" | sed -n 's/.*activations \([0-9.]*\) MiB (activation_checkpoint.mode=full; none would hold \([0-9.]*\) MiB).*/\1 \2/p')
	[ -n "$held" ]
	awk -v a="${held% *}" -v b="${held#* }" 'BEGIN { exit !(a < b) }'
}

@test "SIGTERM finishes the step, saves a checkpoint and exits 0" {
	# exec: the signal must reach titan-train itself, not a subshell
	# shellcheck disable=SC2086
	(exec titan-train $TINY --data.dataset="$BATS_FILE_TMPDIR/data" --training.steps=100000 \
		--checkpoint.enable --checkpoint.folder=ck --checkpoint.interval=100000 \
		--metrics.jsonl=m.jsonl 2>err.txt) &
	pid=$!
	for _ in $(seq 100); do
		[ -s m.jsonl ] && break
		sleep 0.1
	done
	kill -TERM $pid
	wait $pid
	step=$(ls ck | sed -n 's/^step-//p')
	[ -n "$step" ]
	expect_eq "$step" "$(jq -s 'map(select(.loss != null)) | last | .step' m.jsonl)"
	grep -q "stopped by a signal" err.txt
}

@test "a loss that blows up stops the run with the step named and exit 1" {
	run train --training.steps=50 --optimizer.lr=1e6 --training.max_norm=0 \
		--checkpoint.enable --checkpoint.folder=ck --checkpoint.interval=1
	expect_status 1
	expect_output_has "step"
	expect_output_has "stopping before the update"
	# the checkpoints on disk are all from steps before the bad one
	bad=$(printf '%s\n' "$output" | sed -n 's/.*step \([0-9]*\): .*stopping.*/\1/p')
	last=$(ls ck | sed -n 's/^step-//p' | sort -n | tail -1)
	[ "$last" -lt "$bad" ]
}

@test "checkpoint.load=latest with no checkpoint is an error naming the folder" {
	run train --training.steps=1 --checkpoint.folder=empty --checkpoint.load=latest
	expect_status 1
	expect_output_has "empty"
}

@test "resuming on a dataset from another tokenizer is refused" {
	train --training.steps=2 --checkpoint.enable --checkpoint.folder=ck -q
	"$TITAN_BIN/titan-tok" train -q -o tok2.json --vocab-size 300 "$BATS_FILE_TMPDIR/corpus.txt"
	titan-pack -q -t tok2.json -o data2 --lines "$BATS_FILE_TMPDIR/corpus.txt"
	run titan-train $TINY --data.dataset=data2 --training.steps=4 --checkpoint.enable \
		--checkpoint.folder=ck
	expect_status 2
	expect_output_has "another tokenizer"
}

@test "gradient accumulation: 2 micro-batches of 4 train as one batch of 8" {
	train --training.steps=5 --training.local_batch_size=8 --metrics.jsonl=one.jsonl -q
	train --training.steps=5 --training.local_batch_size=4 --training.global_batch_size=8 \
		--metrics.jsonl=two.jsonl -q
	# the same windows and the same mean; only the order of sums differs
	paste <(losses one.jsonl) <(losses two.jsonl) | awk '{
		d = $2 - $4; if (d < 0) d = -d
		if ($1 != $3 || d > 1e-5 * $2) { print "step " $1 ": " $2 " vs " $4; bad = 1 } }
		END { exit bad }'
	run train --training.steps=1 --training.local_batch_size=4 --training.global_batch_size=6
	expect_status 2
	expect_output_has "global_batch_size"
}

@test "matmul_dtype=bfloat16: bf16 GEMM operands track the fp32 loss curve; the device path and a resume agree bit for bit" {
	common="--training.steps=30 --optimizer.lr=3e-3"
	train $common --metrics.jsonl=f32.jsonl -q
	train $common --training.matmul_dtype=bfloat16 --metrics.jsonl=bf16.jsonl -q \
		--checkpoint.enable --checkpoint.interval=15 --checkpoint.folder=bf16ck
	train $common --training.matmul_dtype=bfloat16 --device cpu-fenced \
		--metrics.jsonl=fenced.jsonl -q
	# rounding the operands moves the losses, by bf16's tolerance at most
	paste <(losses f32.jsonl) <(losses bf16.jsonl) | awk '{
		d = ($2 - $4) / $2; if (d < 0) d = -d; if (d > m) m = d
		if ($2 == $4) same++ }
		END { if (m >= 1e-2 || same == NR) { print "max relative difference " m ", " same + 0 " identical"; exit 1 } }'
	expect_eq "$(losses bf16.jsonl)" "$(losses fenced.jsonl)"
	# the bf16 weight copies the optimizer writes are remade from a
	# checkpoint: a resumed run is the straight one, bit for bit
	train $common --training.matmul_dtype=bfloat16 --checkpoint.enable \
		--checkpoint.interval=15 --checkpoint.folder=resumed \
		--checkpoint.load="$(pwd)/bf16ck/step-15" --metrics.jsonl=resumed.jsonl -q
	expect_eq "$(losses bf16.jsonl | sed -n '16,30p')" "$(losses resumed.jsonl)"
	run train --training.steps=1 --training.matmul_dtype=fp8
	expect_status 2
	expect_output_has "bfloat16"
}
