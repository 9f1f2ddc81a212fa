#!/usr/bin/env bats
# titan-pack: corpus to dataset and back, the command-line contract, and
# every error a user can hit.

load helpers

# pack_q ARGS...: titan-pack quietly with GPT-2's tokenizer and no val split.
pack_q() {
	titan-pack -q -t "$(tokjson gpt2)" --val-fraction 0 "$@"
}

# decoded DIR [ARGS...]: the decoded train split of DIR (GPT-2).
decoded() {
	local dir=$1
	shift
	titan-pack cat "$dir" --decode -t "$(tokjson gpt2)" "$@"
}

# flip_byte FILE OFFSET: invert the bits of one byte in place.
flip_byte() {
	local b
	b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	printf "\\$(printf '%03o' $((255 - b)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

@test "titan-pack --help prints every command on stdout and exits 0" {
	run titan-pack --help
	expect_status 0
	expect_output_has "titan-pack [pack] -t TOK -o OUTDIR"
	expect_output_has "titan-pack info OUTDIR"
	expect_output_has "titan-pack cat OUTDIR"
	expect_output_has "titan-pack verify OUTDIR"
}

@test "titan-pack without arguments, or with an unknown command, is a usage error" {
	run titan-pack
	expect_status 2
	run titan-pack frobnicate
	expect_status 2
	expect_output_has "unknown command 'frobnicate'"
}

@test "every command's --help synopsis is the man page's" {
	man=$BATS_TEST_DIRNAME/../man/man1/titan-pack.1
	for cmd in pack info cat verify; do
		run titan-pack $cmd --help
		expect_status 0
		line=$(printf '%s\n' "$output" | sed -n 's/^usage: //p')
		grep -qxF ".B $line" "$man" || { echo "synopsis of '$cmd' not in the man page: $line" >&2; return 1; }
	done
}

@test "usage errors: no tokenizer, no -o, no input, a bad flag value" {
	need_data tokenizers/gpt2/tokenizer.json
	printf 'hello' > a.txt
	run titan-pack -o out a.txt
	expect_status 2
	expect_output_has "no tokenizer given (-t TOK)"
	run titan-pack -t "$(tokjson gpt2)" a.txt
	expect_status 2
	expect_output_has "no output directory given (-o OUTDIR)"
	run titan-pack -t "$(tokjson gpt2)" -o out
	expect_status 2
	expect_output_has "no input given"
	run titan-pack -t "$(tokjson gpt2)" -o out --val-fraction 1.5 a.txt
	expect_status 2
	expect_output_has "--val-fraction must be a number in [0, 1]"
	run titan-pack -t "$(tokjson gpt2)" -o out --format xml a.txt
	expect_status 2
	run titan-pack -t "$(tokjson gpt2)" -o out --nope a.txt
	expect_status 2
	expect_output_has "try 'titan-pack --help'"
	[ ! -e out ]
}

@test "text files round-trip: cat --decode gives back the concatenated inputs" {
	need_data corpus/kjv.txt
	pack_q -o out "$TITAN_DATA/corpus/kjv.txt" "$TITAN_DATA/corpus/tinyshakespeare.txt"
	decoded out > back.txt
	cat "$TITAN_DATA/corpus/kjv.txt" "$TITAN_DATA/corpus/tinyshakespeare.txt" | cmp - back.txt
	run titan-pack info --json out
	expect_status 0
	expect_eq 2 "$(printf '%s' "$output" | jq .splits.train.documents)"
}

@test "--lines round-trips with cat --decode --lines, one document per line" {
	need_data corpus/tinyshakespeare.txt
	pack_q -o out --lines "$TITAN_DATA/corpus/tinyshakespeare.txt"
	decoded out --lines | cmp - "$TITAN_DATA/corpus/tinyshakespeare.txt"
	expect_eq 40000 "$(titan-pack info --json out | jq .splits.train.documents)"
}

@test "JSONL round-trips: cat --decode --jsonl gives the input's texts in order" {
	need_data corpus/tinyshakespeare.jsonl
	pack_q -o out "$TITAN_DATA/corpus/tinyshakespeare.jsonl"
	decoded out --jsonl | jq -c .text > back.txt
	jq -c .text "$TITAN_DATA/corpus/tinyshakespeare.jsonl" | cmp - back.txt
}

@test "a .json.gz corpus packs without unpacking and round-trips" {
	need_data corpus/tinyshakespeare.jsonl
	gzip -c "$TITAN_DATA/corpus/tinyshakespeare.jsonl" > c4-like.json.gz
	pack_q -o out c4-like.json.gz
	decoded out --jsonl | jq -c .text > back.txt
	jq -c .text "$TITAN_DATA/corpus/tinyshakespeare.jsonl" | cmp - back.txt
}

@test "many .json.gz inputs, read ahead on threads, keep their order; stdin takes its turn" {
	need_data corpus/tinyshakespeare.jsonl
	split -n l/6 -d "$TITAN_DATA/corpus/tinyshakespeare.jsonl" part.
	for i in 0 1 3 5; do gzip part.0$i; done
	mv part.02 part.02.jsonl
	mv part.04 stdin.jsonl
	in=(part.00.gz part.01.gz part.02.jsonl part.03.gz - part.05.gz)
	pack_q -o t1 --threads 1 --format jsonl "${in[@]}" < stdin.jsonl
	pack_q -o t3 --threads 3 --format jsonl "${in[@]}" < stdin.jsonl
	diff -r t1 t3
	# a pipe among them is read when its turn comes
	pack_q -o t5 --threads 3 --format jsonl part.00.gz <(cat part.01.gz) part.02.jsonl part.03.gz - part.05.gz < stdin.jsonl
	diff -r t1 t5
	# how far ahead the next files are read changes nothing in the dataset
	for size in 1K 1G; do
		pack_q -o "a$size" --threads 3 --read-ahead "$size" --format jsonl "${in[@]}" < stdin.jsonl
		diff -r t1 "a$size"
	done
	decoded t3 --jsonl | jq -c .text > back.txt
	jq -c .text "$TITAN_DATA/corpus/tinyshakespeare.jsonl" | cmp - back.txt
	# A damaged file among them is named, after those before it were read.
	head -c 3000 part.03.gz > part.03.gz.cut && mv part.03.gz.cut part.03.gz
	run pack_q -o t4 --threads 3 --format jsonl "${in[@]}" < stdin.jsonl
	expect_status 1
	expect_output_has "part.03.gz"
	[ ! -e t4 ]
}

@test "a .tar.zst of text files: one document per member, each decoding to the member" {
	need_data corpus/archive_sample.tar.zst
	command -v zstd >/dev/null || skip "zstd is not installed"
	arc=$TITAN_DATA/corpus/archive_sample.tar.zst
	pack_q -o out "$arc"
	members=$(zstd -dc "$arc" | tar -tf - | grep -v '/$')
	expect_eq 6 "$(printf '%s\n' "$members" | wc -l)"
	expect_eq 6 "$(titan-pack info --json out | jq .splits.train.documents)"
	i=0
	for m in $members; do
		zstd -dc "$arc" | tar -xOf - "$m" > want
		decoded out --doc $i > got
		cmp want got
		i=$((i + 1))
	done
}

@test "--from-ids on titan-tok's u32 stream gives the same dataset, byte for byte" {
	need_data corpus/tinyshakespeare.jsonl
	need_data corpus/kjv.txt
	tok=$(tokjson llama3)
	# kjv.txt is one long document: read, encoded and stored in pieces
	in=("$TITAN_DATA/corpus/tinyshakespeare.jsonl" "$TITAN_DATA/corpus/kjv.txt")
	titan-pack -q -t "$tok" -o a --val-fraction 0.1 --shard-tokens 100000 "${in[@]}"
	titan-tok encode -q -t "$tok" --format u32 "${in[@]}" |
		titan-pack -q -t "$tok" -o b --val-fraction 0.1 --shard-tokens 100000 --from-ids -
	diff -r a b
	[ "$(titan-pack info --json a | jq .splits.train.shards)" -gt 1 ]
	[ "$(titan-pack info --json a | jq .splits.val.documents)" -gt 0 ]
}

@test "--from-ids refuses a stream cut inside a document and an id past the vocabulary" {
	need_data tokenizers/gpt2/tokenizer.json
	printf 'Hello world' | titan-tok encode -q -t "$(tokjson gpt2)" --format u32 | head -c 8 > cut.u32
	run pack_q -o out --from-ids cut.u32
	expect_status 1
	expect_output_has "'cut.u32': ends inside a document"
	printf '\377\377\377\177\377\377\377\377' > big.u32
	run pack_q -o out --from-ids big.u32
	expect_status 1
	expect_output_has "past the vocabulary"
	printf 'abc' > odd.u32
	run pack_q -o out --from-ids odd.u32
	expect_status 1
	expect_output_has "trailing byte"
	[ ! -e out ]
}

@test "the dataset does not depend on the thread count" {
	need_data corpus/tinyshakespeare.jsonl
	in=$TITAN_DATA/corpus/tinyshakespeare.jsonl
	titan-pack -q -t "$(tokjson gpt2)" -o t1 --threads 1 --val-fraction 0.05 --shard-tokens 50000 "$in" "$TITAN_DATA/corpus/kjv.txt"
	titan-pack -q -t "$(tokjson gpt2)" -o t2 --threads 2 --val-fraction 0.05 --shard-tokens 50000 "$in" "$TITAN_DATA/corpus/kjv.txt"
	diff -r t1 t2
}

@test "documents get Llama 3's BOS and EOS, GPT-2's EOS only; --no-bos/--no-eos drop them" {
	need_data tokenizers/llama3/tokenizer.json
	printf 'Hello world\n' > a.txt
	titan-pack -q -t "$(tokjson llama3)" -o l3 --lines --val-fraction 0 a.txt
	expect_eq "128000 9906 1917 128001" "$(titan-pack cat l3)"
	expect_eq "9906 1917" "$(titan-pack cat l3 --strip)"
	expect_eq true "$(titan-pack info --json l3 | jq .tokenizer.bos.added)"
	pack_q -o g2 --lines a.txt
	expect_eq "15496 995 50256" "$(titan-pack cat g2)"
	expect_eq false "$(titan-pack info --json g2 | jq .tokenizer.bos.added)"
	titan-pack -q -t "$(tokjson llama3)" -o none --lines --val-fraction 0 --no-bos --no-eos a.txt
	expect_eq "9906 1917" "$(titan-pack cat none)"
	expect_eq false "$(titan-pack info --json none | jq .tokenizer.eos.added)"
}

@test "the split follows --val-fraction and --seed, and cat --split val reads it" {
	need_data corpus/tinyshakespeare.jsonl
	in=$TITAN_DATA/corpus/tinyshakespeare.jsonl
	titan-pack -q -t "$(tokjson gpt2)" -o s0 --val-fraction 0.2 "$in"
	titan-pack -q -t "$(tokjson gpt2)" -o s1 --val-fraction 0.2 --seed 1 "$in"
	val=$(titan-pack info --json s0 | jq .splits.val.documents)
	[ "$val" -gt 1200 ] && [ "$val" -lt 1700 ]
	! diff -r s0 s1 >/dev/null
	expect_eq "$val" "$(titan-pack cat s0 --split val | wc -l)"
	# Every document lands in one split or the other, none lost.
	{ decoded s0 --jsonl; decoded s0 --jsonl --split val; } | jq -r .text | sort > got
	jq -r .text "$in" | sort | cmp - got
}

@test "info shows the tokenizer, dtype and per-split counts; --json has the same facts" {
	need_data corpus/tinyshakespeare.jsonl
	pack_q -o out "$TITAN_DATA/corpus/tinyshakespeare.jsonl"
	run titan-pack info out
	expect_status 0
	expect_output_has "dtype          u16"
	expect_output_has "vocab size     50257"
	run titan-pack info --json out
	expect_status 0
	j=$output
	expect_eq u16 "$(jq -r .dtype <<<"$j")"
	expect_eq 50257 "$(jq .tokenizer.vocab_size <<<"$j")"
	expect_eq 50256 "$(jq .tokenizer.eos.id <<<"$j")"
	expect_eq 64 "$(jq -r '.tokenizer.sha256 | length' <<<"$j")"
	expect_eq 7222 "$(jq .splits.train.documents <<<"$j")"
	expect_eq 0 "$(jq .splits.val.documents <<<"$j")"
	[ "$(jq .splits.train.tokens <<<"$j")" -gt 300000 ]
	[ "$(jq .splits.train.bytes <<<"$j")" -gt 0 ]
	[ "$(jq '.splits.train.compression_ratio > 1' <<<"$j")" = true ]
}

@test "cat prints ids, one document a line, as u32 or as JSON; --doc picks one" {
	need_data tokenizers/gpt2/tokenizer.json
	printf 'Hello world\nHello\n' > a.txt
	pack_q -o out --lines a.txt
	expect_eq "$(printf '15496 995 50256\n15496 50256')" "$(titan-pack cat out)"
	expect_eq "15496 50256" "$(titan-pack cat out --doc 1)"
	expect_eq '{"ids":[15496,50256]}' "$(titan-pack cat out --doc 1 --jsonl)"
	expect_eq "Hello" "$(decoded out --doc 1)"
	titan-pack cat out --strip --format u32 | titan-tok decode -t "$(tokjson gpt2)" --format u32 --lines > back.txt
	cmp a.txt back.txt
	run titan-pack cat out --doc 2
	expect_status 1
	expect_output_has "--doc 2: the split has 2 document(s)"
	run titan-pack cat out --decode
	expect_status 2
	run titan-pack cat out --split test
	expect_status 2
	expect_output_has "unknown split 'test'"
}

@test "cat --decode refuses a tokenizer other than the dataset's" {
	need_data tokenizers/llama3/tokenizer.json
	printf 'Hello' > a.txt
	pack_q -o out a.txt
	run titan-pack cat out --decode -t "$(tokjson llama3)"
	expect_status 1
	expect_output_has "is not the tokenizer"
}

@test "verify passes a sound dataset and names the shard of a flipped byte" {
	need_data corpus/tinyshakespeare.jsonl
	pack_q -o out "$TITAN_DATA/corpus/tinyshakespeare.jsonl"
	run titan-pack verify out
	expect_status 0
	expect_output_has "ok: 1 shards,"
	shard=$(ls out/*.shard | head -n 1)
	flip_byte "$shard" $(( $(stat -c %s "$shard") / 2 ))
	run titan-pack verify out
	expect_status 1
	expect_output_has "$(basename "$shard")"
}

@test "an invalid JSON line stops with file:line, unless --skip-bad counts it" {
	need_data tokenizers/gpt2/tokenizer.json
	printf '{"text":"Hello"}\n{"text": oops}\n{"text":"world"}\n' > in.jsonl
	run pack_q -o out in.jsonl
	expect_status 1
	expect_output_has "titan-pack: in.jsonl:2: invalid JSON"
	[ ! -e out ]
	run titan-pack -t "$(tokjson gpt2)" -o out --skip-bad in.jsonl
	expect_status 0
	expect_output_has "skipped 1 invalid JSON line"
	expect_output_has "packed 2 documents"
}

@test "a missing input and a truncated archive are errors naming them; no OUTDIR" {
	need_data corpus/archive_sample.tar.zst
	run pack_q -o out missing.txt
	expect_status 1
	expect_output_has "'missing.txt'"
	head -c 100000 "$TITAN_DATA/corpus/archive_sample.tar.zst" > cut.tar.zst
	run pack_q -o out cut.tar.zst
	expect_status 1
	expect_output_has "cut.tar.zst"
	[ -z "$(ls -A | grep -v cut.tar.zst)" ]
}

@test "an empty corpus is an error and leaves no OUTDIR" {
	need_data tokenizers/gpt2/tokenizer.json
	: > empty.jsonl
	run pack_q -o out empty.jsonl
	expect_status 1
	expect_output_has "empty corpus"
	[ -z "$(ls -A | grep -v empty.jsonl)" ]
	run sh -c ": | titan-pack -q -t '$(tokjson gpt2)' --from-ids -o out -"
	expect_status 1
	expect_output_has "empty corpus"
	[ ! -e out ]
}

@test "an existing OUTDIR is a usage error unless --force replaces it" {
	need_data tokenizers/gpt2/tokenizer.json
	printf 'one' > a.txt
	printf 'two' > b.txt
	pack_q -o out a.txt
	run pack_q -o out b.txt
	expect_status 2
	expect_output_has "'out' exists"
	expect_eq one "$(decoded out)"
	pack_q -o out --force b.txt
	expect_eq two "$(decoded out)"
	[ -z "$(ls -A | grep -v -e '^out$' -e '\.txt$')" ]
}

@test "a run killed mid-pack leaves no OUTDIR, only OUTDIR.tmp.PID" {
	need_data corpus/kjv.txt
	for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
		cat "$TITAN_DATA/corpus/kjv.txt"
	done > big.txt
	titan-pack -q -t "$(tokjson llama3)" -o out --lines --threads 1 big.txt &
	pid=$!
	# Kill it once it has started writing (the tokenizer loads first).
	for i in $(seq 400); do
		ls -d out.tmp.* >/dev/null 2>&1 && break
		sleep 0.05
	done
	sleep 0.2
	kill -KILL $pid 2>/dev/null || skip "the run finished before it was killed"
	wait $pid && skip "the run finished before it was killed"
	[ ! -e out ]
	[ -d "out.tmp.$pid" ]
	# A later run is not disturbed by the leftover.
	printf 'hello' > small.txt
	pack_q -o out small.txt
	expect_eq hello "$(decoded out)"
}

@test "the summary line counts documents and tokens; progress shows on a tty" {
	need_data corpus/tinyshakespeare.jsonl
	run titan-pack -t "$(tokjson gpt2)" -o out --val-fraction 0 "$TITAN_DATA/corpus/tinyshakespeare.jsonl"
	expect_status 0
	expect_output_has "titan-pack: packed 7222 documents, 330807 tokens (train 330807 / val 0) from 1.2 MB in"
	expect_output_has "s of it compressing)"
	run env TITAN_FORCE_TTY=1 titan-pack -t "$(tokjson gpt2)" -o out2 --val-fraction 0 --threads 1 "$TITAN_DATA/corpus/kjv.txt" "$TITAN_DATA/corpus/tinyshakespeare.jsonl" "$TITAN_DATA/corpus/tinyshakespeare.txt" --lines
	expect_status 0
	expect_output_has "docs"
	run titan-pack -q -t "$(tokjson gpt2)" -o out3 "$TITAN_DATA/corpus/tinyshakespeare.jsonl"
	expect_status 0
	expect_eq "" "$output"
}

@test "the word pack is optional; --zstd-level changes the bytes, not the tokens" {
	need_data corpus/tinyshakespeare.jsonl
	in=$TITAN_DATA/corpus/tinyshakespeare.jsonl
	titan-pack pack -q -t "$(tokjson gpt2)" -o a "$in"
	titan-pack -q -t "$(tokjson gpt2)" -o b "$in"
	diff -r a b
	titan-pack -q -t "$(tokjson gpt2)" -o c --zstd-level 19 "$in"
	titan-pack verify c
	cmp <(titan-pack cat a) <(titan-pack cat c)
	[ "$(titan-pack info --json c | jq .splits.train.bytes)" -lt "$(titan-pack info --json a | jq .splits.train.bytes)" ]
	titan-pack -q -t "$(tokjson gpt2)" -o e --zstd-level -3 "$in"
	titan-pack verify e
	cmp <(titan-pack cat a) <(titan-pack cat e)
	[ "$(titan-pack info --json e | jq .splits.train.bytes)" -gt "$(titan-pack info --json a | jq .splits.train.bytes)" ]
	run titan-pack -q -t "$(tokjson gpt2)" -o d --zstd-level 30 "$in"
	expect_status 2
	run titan-pack -q -t "$(tokjson gpt2)" -o d --zstd-level -8 "$in"
	expect_status 2
	expect_output_has "--zstd-level must be -7 to 19, got -8"
}

@test "--read-ahead takes a size; anything else is a usage error that creates nothing" {
	need_data corpus/tinyshakespeare.jsonl
	for bad in 0 -1M 12X 1e99; do
		run titan-pack -q -t "$(tokjson gpt2)" -o d --read-ahead "$bad" "$TITAN_DATA/corpus/tinyshakespeare.jsonl"
		expect_status 2
		expect_output_has "--read-ahead: '$bad' is not a size"
		[ ! -e d ]
	done
}
