#!/usr/bin/env bats
# titan-gen: greedy parity with PyTorch, scoring, determinism, JSON lines,
# stop strings, the context limit and every error a user can hit.

load helpers

PYTHON=${PYTHON:-/usr/bin/python3}

setup_file() {
	# A tiny model trained for a few dozen steps on titan's own documentation.
	local d=$BATS_FILE_TMPDIR
	doc_dataset "$d"
	"$TITAN_BIN/titan-train" -q --model.dim=64 --model.n_layers=2 --model.n_heads=4 \
		--model.n_kv_heads=2 --model.vocab_size=512 --model.max_seq_len=64 \
		--training.seq_len=64 --training.local_batch_size=4 --training.threads=2 \
		--metrics.peak_flops=1e11 --training.steps=30 --data.dataset="$d/data" \
		--checkpoint.enable --checkpoint.folder="$d/ckpt"
}

ckpt() {
	echo "$BATS_FILE_TMPDIR/ckpt"
}

need_torch() {
	"$PYTHON" -c 'import torch' 2>/dev/null ||
		skip "'$PYTHON' cannot import torch (install python3-torch or set PYTHON)"
}

reference() {
	"$PYTHON" "$BATS_TEST_DIRNAME/golden/gen_reference.py" "$(ckpt)" "$@"
}

@test "titan-gen --help prints the synopsis on stdout, and the man page has it" {
	expect_synopsis_in_man titan-gen
}

@test "greedy decoding with the KV cache equals PyTorch's full forward, token for token" {
	need_torch
	for prompt in "510 97 264" "510" "510 300 12 45 99 400 7 8 9 200 201 202"; do
		echo "$prompt" >ids.txt
		titan-gen -m "$(ckpt)" --ids ids.txt --temperature 0 -n 40 --json >out.json
		got=$(jq -c .ids out.json)
		want=$(reference --ids "$prompt" --greedy 40 --eos 511 | jq -c .ids)
		expect_eq "$want" "$got"
		expect_eq "$(jq '.ids | length' out.json)" "$(jq .tokens out.json)"
	done
}

@test "--score log-probabilities match PyTorch within 1e-4" {
	need_torch
	ids="510 97 264 496 352 300 12 45 99 400 7 8 9 200 201 202 17 18 19 20"
	echo "$ids" | titan-gen -m "$(ckpt)" --score --json --ids - >got.json
	reference --ids "$ids" --score >want.json
	expect_eq 19 "$(jq .tokens got.json)"
	jq -n --slurpfile a got.json --slurpfile b want.json '
		[$a[0].logprobs, $b[0].logprobs] | transpose | map((.[0] - .[1]) | fabs) | max' >diff
	awk '{ exit !($1 < 1e-4) }' diff || { echo "max difference $(cat diff)" >&2; return 1; }
	jq -e '(.mean_nll | exp) - .perplexity | fabs < 1e-9' got.json
	jq -e '((.logprobs | add) / .tokens + .mean_nll) | fabs < 1e-9' got.json
}

@test "--score without --json prints one line a token and a summary" {
	run titan-gen -m "$(ckpt)" --score "the checkpoint"
	expect_status 0
	expect_output_has "# tokens "
	expect_output_has "perplexity"
	n=$(printf '%s\n' "$output" | grep -vc '^#')
	expect_eq "$n" "$(printf '%s\n' "$output" | sed -n 's/^# tokens \([0-9]*\) .*/\1/p')"
}

@test "the same seed gives the same text, another seed another" {
	titan-gen -m "$(ckpt)" --seed 5 --temperature 1 --top-k 0 --top-p 1 -n 40 --json "the" >a.json
	titan-gen -m "$(ckpt)" --seed 5 --temperature 1 --top-k 0 --top-p 1 -n 40 --json "the" >b.json
	titan-gen -m "$(ckpt)" --seed 6 --temperature 1 --top-k 0 --top-p 1 -n 40 --json "the" >c.json
	cmp a.json b.json
	! cmp -s a.json c.json
	OMP_NUM_THREADS=1 titan-gen -m "$(ckpt)" --seed 5 --temperature 1 --top-k 0 --top-p 1 \
		-n 40 --json "the" >d.json
	cmp a.json d.json
}

@test "streamed text is the decoded ids, byte for byte, and the JSON completion" {
	titan-gen -m "$(ckpt)" --temperature 0 -n 30 "the model" >text.out
	titan-gen -m "$(ckpt)" --temperature 0 -n 30 --json "the model" >out.json
	jq -r '.ids | map(tostring) | join(" ")' out.json >ids.txt
	titan-tok decode -t "$BATS_FILE_TMPDIR/tok.json" -o dec.out ids.txt
	# titan-gen ends the text with a newline when the model did not
	"$PYTHON" - text.out dec.out out.json <<-'EOF'
	import json, sys
	text, dec = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
	if text == dec + b"\n" and not dec.endswith(b"\n"):
	    text = dec
	assert text == dec, (text, dec)
	got = json.load(open(sys.argv[3]))["completion"]
	assert got == dec.decode("utf-8", "replace"), (got, dec)
	EOF
}

@test "--jsonl: one line out per line in, batched or not, each as if alone" {
	cat >in.jsonl <<-'EOF'
	{"prompt": "the checkpoint", "max_new_tokens": 5}
	{"prompt": "a"}

	{"prompt": "titan-train writes", "max_new_tokens": 0}
	{"ids": [510, 97, 264], "max_new_tokens": 12}
	EOF
	# --ignore-eos: the lengths must not depend on what the model samples
	titan-gen -m "$(ckpt)" --jsonl --seed 3 -n 20 --batch 3 --ignore-eos in.jsonl >b3.jsonl
	titan-gen -m "$(ckpt)" --jsonl --seed 3 -n 20 --batch 1 --ignore-eos <in.jsonl >b1.jsonl
	cmp b3.jsonl b1.jsonl
	expect_eq 4 "$(wc -l <b3.jsonl)"
	expect_eq '"the checkpoint"' "$(sed -n 1p b3.jsonl | jq .prompt)"
	expect_eq 5 "$(sed -n 1p b3.jsonl | jq .tokens)"
	expect_eq '"length"' "$(sed -n 1p b3.jsonl | jq .finish_reason)"
	expect_eq 0 "$(sed -n 3p b3.jsonl | jq .tokens)"
	expect_eq '""' "$(sed -n 3p b3.jsonl | jq .completion)"
	jq -e '.tokens <= 20 and (.ids | length) == .tokens' b3.jsonl
	# greedy: a line's completion is the single prompt's
	titan-gen -m "$(ckpt)" --jsonl --temperature 0 -n 8 in.jsonl >g.jsonl
	titan-gen -m "$(ckpt)" --temperature 0 -n 5 --json "the checkpoint" >one.json
	expect_eq "$(jq -c .ids one.json)" "$(sed -n 1p g.jsonl | jq -c .ids)"
}

@test "a prompt from standard input; --jsonl --score scores each line" {
	printf 'the model' | titan-gen -m "$(ckpt)" --temperature 0 -n 8 --json - >stdin.json
	titan-gen -m "$(ckpt)" --temperature 0 -n 8 --json "the model" >arg.json
	cmp stdin.json arg.json
	printf '{"prompt": "the model"}\n{"ids": [510, 97, 264]}\n' >in.jsonl
	titan-gen -m "$(ckpt)" --jsonl --score in.jsonl >scores.jsonl
	expect_eq 2 "$(wc -l <scores.jsonl)"
	expect_eq '"the model"' "$(sed -n 1p scores.jsonl | jq .prompt)"
	expect_eq 2 "$(sed -n 2p scores.jsonl | jq .tokens)"
	echo "510 97 264" | titan-gen -m "$(ckpt)" --score --json --ids - >one.json
	expect_eq "$(jq -c .logprobs one.json)" "$(sed -n 2p scores.jsonl | jq -c .logprobs)"
}

@test "--stop ends the completion before the stop string" {
	titan-gen -m "$(ckpt)" --temperature 0 -n 40 --ignore-eos "the" >full.out
	# a stop string from the middle of the text: three printable characters
	stop=$("$PYTHON" -c '
import sys
t = open(sys.argv[1], "rb").read()
i = next(i for i in range(6, len(t) - 3) if all(0x21 <= c < 0x7f for c in t[i:i + 3]))
sys.stdout.write(t[i:i + 3].decode())
open("want.out", "wb").write(t[:t.find(t[i:i + 3])])' full.out)
	[ ${#stop} -eq 3 ]
	titan-gen -m "$(ckpt)" --temperature 0 -n 40 --ignore-eos --stop "$stop" "the" >cut.out
	"$PYTHON" -c '
import sys
got, want = open("cut.out", "rb").read(), open("want.out", "rb").read()
assert got in (want, want + b"\n"), (got, want)'
	titan-gen -m "$(ckpt)" --temperature 0 -n 40 --ignore-eos --json --stop "$stop" "the" >cut.json
	expect_eq '"stop"' "$(jq .finish_reason cut.json)"
}

@test "generation stops at the model's context" {
	seq 1 60 | tr '\n' ' ' >ids.txt
	titan-gen -m "$(ckpt)" --ids ids.txt --temperature 0 -n 50 --ignore-eos --json >out.json
	expect_eq 4 "$(jq .tokens out.json)"
	expect_eq '"length"' "$(jq .finish_reason out.json)"
}

@test "a step directory, a folder and a checkpoint that carries its tokenizer all load" {
	step=$(ls -d "$(ckpt)"/step-* | tail -n 1)
	titan-gen -m "$step" --temperature 0 -n 10 --json "the" >a.json
	titan-gen -m "$(ckpt)" -t "$BATS_FILE_TMPDIR/tok.json" --temperature 0 -n 10 --json "the" >b.json
	cmp a.json b.json
	cp -r "$step" step-copy
	cp "$BATS_FILE_TMPDIR/tok.json" step-copy/tokenizer.json
	titan-gen -v -m step-copy --temperature 0 -n 10 --json "the" >c.json 2>err
	cmp a.json c.json
	grep -q "tokenizer: .*step-copy/tokenizer.json" err
	grep -q "decode: .* tokens/s" err
}

@test "usage errors exit 2 and name the option" {
	run titan-gen "the"
	expect_status 2
	run titan-gen -n 3 "the"
	expect_status 2
	expect_output_has "-m CKPT"
	run titan-gen -m "$(ckpt)" --temperature hot "the"
	expect_status 2
	expect_output_has "--temperature"
	run titan-gen -m "$(ckpt)" --top-p 0 "the"
	expect_status 2
	expect_output_has "--top-p"
	run titan-gen -m "$(ckpt)" --top-k -1 "the"
	expect_status 2
	run titan-gen -m "$(ckpt)" -n -1 "the"
	expect_status 2
	run titan-gen -m "$(ckpt)" "one" "two"
	expect_status 2
	run titan-gen -m "$(ckpt)" --bogus
	expect_status 2
}

@test "a prompt longer than the context is a usage error naming max_seq_len" {
	seq 1 70 | tr '\n' ' ' >ids.txt
	run titan-gen -m "$(ckpt)" --ids ids.txt
	expect_status 2
	expect_output_has "max_seq_len 64"
	run titan-gen -m "$(ckpt)" --score --ids ids.txt
	expect_status 2
	expect_output_has "max_seq_len 64"
}

@test "an unknown checkpoint is a runtime error naming it" {
	run titan-gen -m nowhere "the"
	expect_status 1
	expect_output_has "nowhere"
	mkdir empty
	run titan-gen -m empty "the"
	expect_status 1
	expect_output_has "no checkpoint"
}

@test "a tokenizer that is not the checkpoint's is refused" {
	titan-tok train -q -o big.json --vocab-size 600 "$BATS_FILE_TMPDIR/corpus.txt"
	run titan-gen -m "$(ckpt)" -t big.json "the"
	expect_status 2
	expect_output_has "600 tokens"
	head -c 20000 "$BATS_FILE_TMPDIR/corpus.txt" >small.txt
	titan-tok train -q -o other.json --vocab-size 300 small.txt
	run titan-gen -m "$(ckpt)" -t other.json "the"
	expect_status 2
	expect_output_has "sha256"
}

@test "bad ids and bad JSON lines are runtime errors naming the place" {
	echo "510 12x 7" >bad.txt
	run titan-gen -m "$(ckpt)" --ids bad.txt
	expect_status 1
	expect_output_has "bad.txt"
	echo "510 9999" >big.txt
	run titan-gen -m "$(ckpt)" --ids big.txt
	expect_status 1
	expect_output_has "9999"
	printf '{"prompt": "a"}\n{"prompt": \n' >bad.jsonl
	run titan-gen -m "$(ckpt)" --jsonl bad.jsonl
	expect_status 1
	expect_output_has "bad.jsonl:2: invalid JSON"
	printf '{"text": "a"}\n' >bad2.jsonl
	run titan-gen -m "$(ckpt)" --jsonl bad2.jsonl
	expect_status 1
	expect_output_has "bad2.jsonl:1"
	run titan-gen -m "$(ckpt)" --score --ids bad.txt
	expect_status 1
	echo 510 >one.txt
	run titan-gen -m "$(ckpt)" --score --ids one.txt
	expect_status 2
	expect_output_has "at least two"
}
