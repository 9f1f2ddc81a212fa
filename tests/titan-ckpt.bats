#!/usr/bin/env bats
# titan-ckpt: info, verify, the exports (checked by independent readers),
# import, reshard round trips, diff, and every error a user can hit.

load helpers

TINY="--model.dim=64 --model.n_layers=2 --model.n_heads=4 --model.n_kv_heads=2
 --model.vocab_size=512 --training.seq_len=32 --training.local_batch_size=4
 --training.threads=2 --metrics.log_freq=1 --metrics.peak_flops=1e11"
: "${PYTHON:=/usr/bin/python3}"
GOLDEN=$BATS_TEST_DIRNAME/golden

# One trained checkpoint (step 6, with Llama 3.1 RoPE scaling so that the
# exports carry it) that every test reads.
setup_file() {
	local d=$BATS_FILE_TMPDIR
	doc_dataset "$d"
	# shellcheck disable=SC2086
	"$TITAN_BIN/titan-train" -q $TINY --data.dataset="$d/data" --training.steps=6 \
		--model.rope_scaling=true --checkpoint.enable=true --checkpoint.interval=3 \
		--checkpoint.folder="$d/ckpt"
}

train() {
	# shellcheck disable=SC2086
	titan-train $TINY --data.dataset="$BATS_FILE_TMPDIR/data" --model.rope_scaling=true "$@"
}

CKPT() { echo "$BATS_FILE_TMPDIR/ckpt/step-6"; }

need_torch() {
	"$PYTHON" -c 'import torch, numpy' 2>/dev/null ||
		skip "$PYTHON has no torch/numpy (Debian: apt-get install python3-torch python3-numpy)"
}

need_numpy() {
	"$PYTHON" -c 'import numpy' 2>/dev/null ||
		skip "$PYTHON has no numpy (Debian: apt-get install python3-numpy)"
}

@test "titan-ckpt --help prints every synopsis on stdout, and the man page has them" {
	expect_synopsis_in_man titan-ckpt
	for c in info verify export import reshard diff; do
		run titan-ckpt $c --help
		expect_status 0
		expect_output_has "usage: titan-ckpt $c"
	done
}

@test "info names the step, the model, the layout and every tensor; --json agrees" {
	run titan-ckpt info "$BATS_FILE_TMPDIR/ckpt"
	expect_status 0
	expect_output_has "step          6"
	expect_output_has "dim 64, 2 layers, 4 heads (2 kv)"
	expect_output_has "tokenizer     tokenizer.json"
	expect_output_has "layers.1.feed_forward.w2.weight"
	expect_output_has "optim.exp_avg_sq.output.weight"
	titan-ckpt info --json "$(CKPT)" >info.json
	expect_eq 6 "$(jq .step info.json)"
	expect_eq 64 "$(jq .model.dim info.json)"
	expect_eq 1 "$(jq .nranks info.json)"
	expect_eq 1 "$(jq .layout.dp_shard info.json)"
	# 2 layers x 9 + embeddings + norm + output, and two moments of each
	expect_eq 63 "$(jq '.tensors | length' info.json)"
	expect_eq '[512,64]' "$(jq -c '.tensors[] | select(.name == "tok_embeddings.weight") | .shape' info.json)"
}

@test "verify passes a sound checkpoint and names the file and tensor of a flipped byte" {
	run titan-ckpt verify "$(CKPT)"
	expect_status 0
	expect_output_has "ok:"
	run titan-ckpt verify -q "$(CKPT)"
	expect_status 0
	expect_eq "" "$output"
	cp -r "$(CKPT)" bad
	f=bad/rank-00000.safetensors
	size=$(stat -c %s $f)
	# a byte near the end: inside the last tensor's data
	printf '\x7f' | dd of=$f bs=1 seek=$((size - 3)) conv=notrunc status=none
	run titan-ckpt verify bad
	expect_status 1
	expect_output_has "rank-00000.safetensors"
	expect_output_has "optim.exp_avg_sq"
	cp -r "$(CKPT)" short
	truncate -s 1000 short/rank-00000.safetensors
	run titan-ckpt verify short
	expect_status 1
	expect_output_has "rank-00000.safetensors"
}

@test "export --to consolidated holds the weights exactly; diff --weights-only agrees" {
	run titan-ckpt export --to consolidated "$(CKPT)" model.safetensors
	expect_status 0
	[ -f model.safetensors ]
	run titan-ckpt diff --weights-only "$(CKPT)" model.safetensors
	expect_status 0
	expect_output_has "0 above tolerance"
	# optimizer state is not in an export: a full diff says so and fails
	run titan-ckpt diff "$(CKPT)" model.safetensors
	expect_status 1
	expect_output_has "optim.exp_avg.output.weight"
}

@test "hf export then import gives back every weight bit for bit, and training goes on from it" {
	titan-ckpt export --to hf "$(CKPT)" hf
	for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json; do
		[ -f hf/$f ] || { echo "missing hf/$f" >&2; return 1; }
	done
	expect_eq '"LlamaForCausalLM"' "$(jq '.architectures[0]' hf/config.json)"
	expect_eq 2 "$(jq .num_key_value_heads hf/config.json)"
	expect_eq '"llama3"' "$(jq .rope_scaling.rope_type hf/config.json)"
	titan-ckpt import --from hf hf back
	run titan-ckpt diff --weights-only "$(CKPT)" back
	expect_status 0
	expect_output_has "0 above tolerance"
	# the import is a checkpoint titan-train continues from (fresh moments)
	run train --model.flavor="$PWD/back/model.json" --checkpoint.load="$PWD/back" \
		--training.steps=2 --checkpoint.folder=more
	expect_status 0
	expect_output_has "model weights only"
}

@test "the hf export gives transformers' logits: a PyTorch Llama in the rotate-half convention agrees within 1e-5" {
	need_torch
	titan-ckpt export --to hf "$(CKPT)" hf
	echo "3 17 250 9 41 77 300 2 5 128 64 1" >ids.txt
	"$TITAN_BUILD/tests/tools/ckpt_logits" "$(CKPT)" ids.txt titan_logits.safetensors
	run "$PYTHON" "$GOLDEN/hf_reference.py" hf ids.txt titan_logits.safetensors --tol 1e-5
	expect_status 0
}

@test "bf16 and sharded hf exports: the index covers every tensor" {
	titan-ckpt export --to hf --dtype bf16 --max-shard-size 100KB "$(CKPT)" hf16
	[ -f hf16/model.safetensors.index.json ]
	expect_eq '"bfloat16"' "$(jq .torch_dtype hf16/config.json)"
	n=$(jq '.weight_map | length' hf16/model.safetensors.index.json)
	expect_eq 21 "$n"
	titan-ckpt import --from hf hf16 back16
	run titan-ckpt diff --weights-only --tolerance 0.02 "$(CKPT)" back16
	expect_status 0
}

@test "the gguf export reads back in an independent reader, tensor for tensor" {
	need_numpy
	run titan-ckpt export --to gguf "$(CKPT)" model.gguf
	expect_status 0
	run "$PYTHON" "$GOLDEN/gguf_reader.py" model.gguf --compare "$(CKPT)"
	expect_status 0
	titan-ckpt export --to gguf --dtype f16 "$(CKPT)" model16.gguf
	run "$PYTHON" "$GOLDEN/gguf_reader.py" model16.gguf --compare "$(CKPT)"
	expect_status 0
	run "$PYTHON" "$GOLDEN/gguf_reader.py" model.gguf --meta
	expect_status 0
	expect_output_has "general.architecture"
	expect_output_has "tokenizer.ggml.merges"
}

@test "reshard to fsdp x tp x pp and back is lossless, and verify passes each" {
	run titan-ckpt reshard "$(CKPT)" split --layout dp_shard=3,tp=2,pp=2
	expect_status 0
	titan-ckpt verify split
	expect_eq 12 "$(ls split/rank-*.safetensors | wc -l)"
	expect_eq 12 "$(titan-ckpt info --json split | jq .nranks)"
	run titan-ckpt diff "$(CKPT)" split
	expect_status 0
	titan-ckpt reshard split whole --layout dp_shard=1
	titan-ckpt verify whole
	run titan-ckpt diff "$(CKPT)" whole
	expect_status 0
	expect_output_has "63 identical"
}

@test "training resumed from a resharded checkpoint continues exactly as from the original" {
	titan-ckpt reshard "$(CKPT)" split --layout dp_shard=2,tp=2
	train --checkpoint.load="$(CKPT)" --training.steps=8 --metrics.jsonl=a.jsonl -q
	train --checkpoint.load="$PWD/split" --training.steps=8 --metrics.jsonl=b.jsonl -q
	expect_eq "$(jq -c 'select(.loss) | .loss' a.jsonl)" "$(jq -c 'select(.loss) | .loss' b.jsonl)"
}

@test "diff reports the tensors above the tolerance and exits 1" {
	titan-ckpt diff "$BATS_FILE_TMPDIR/ckpt/step-3" "$(CKPT)" >out.txt && return 1
	grep -q "above tolerance" out.txt
	grep -q "layers.0.attention.wq.weight" out.txt
	run titan-ckpt diff --tolerance 1e9 "$BATS_FILE_TMPDIR/ckpt/step-3" "$(CKPT)"
	expect_status 0
}

@test "usage errors exit 2 and name what was wrong" {
	run titan-ckpt info
	expect_status 2
	run titan-ckpt export "$(CKPT)" out
	expect_status 2
	expect_output_has "--to"
	run titan-ckpt export --to onnx "$(CKPT)" out
	expect_status 2
	expect_output_has "onnx"
	run titan-ckpt export --to hf --dtype f8 "$(CKPT)" out
	expect_status 2
	run titan-ckpt reshard "$(CKPT)" out --layout tp=3
	expect_status 2
	expect_output_has "tp=3"
	run titan-ckpt reshard "$(CKPT)" out --layout dp_shard=2,zz=4
	expect_status 2
	expect_output_has "zz"
	run titan-ckpt reshard "$(CKPT)" out --layout pp=3
	expect_status 2
	expect_output_has "n_layers"
	[ ! -e out ]
	mkdir taken
	run titan-ckpt export --to hf "$(CKPT)" taken
	expect_status 2
	expect_output_has "taken"
	run titan-ckpt diff --tolerance -1 "$(CKPT)" "$(CKPT)"
	expect_status 2
}

@test "bad inputs exit 1 naming the file, and leave nothing at the destination" {
	run titan-ckpt info nowhere
	expect_status 1
	expect_output_has "nowhere"
	cp -r "$(CKPT)" nomanifest && rm nomanifest/manifest.json
	run titan-ckpt export --to hf nomanifest out
	expect_status 1
	[ ! -e out ] && [ ! -e out.tmp ]
	titan-ckpt export --to hf "$(CKPT)" hf
	jq '.model_type = "mistral" | .architectures = ["MistralForCausalLM"]' hf/config.json >c && mv c hf/config.json
	run titan-ckpt import --from hf hf imported
	expect_status 1
	expect_output_has "config.json"
	expect_output_has "mistral"
	[ ! -e imported ]
	titan-ckpt export --to hf "$(CKPT)" hf2
	truncate -s 5000 hf2/model.safetensors
	run titan-ckpt import --from hf hf2 imported
	expect_status 1
	expect_output_has "model.safetensors"
	[ ! -e imported ]
	# a -t that is not a tokenizer.json is a bad option value
	run titan-ckpt export --to gguf -t /dev/null "$(CKPT)" x.gguf
	expect_status 2
	expect_output_has "/dev/null"
	[ ! -e x.gguf ]
}
