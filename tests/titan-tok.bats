#!/usr/bin/env bats
# titan-tok: the command-line contract and every error a user can hit.

load helpers

@test "titan-tok --help prints the commands on stdout and exits 0" {
	run titan-tok --help
	expect_status 0
	expect_output_has "titan-tok encode -t TOK"
	expect_output_has "titan-tok train -o OUT"
}

@test "titan-tok without a command is a usage error" {
	run titan-tok
	expect_status 2
}

@test "an unknown command is a usage error that names it" {
	run titan-tok frobnicate
	expect_status 2
	expect_output_has "titan-tok: unknown command 'frobnicate'"
}

@test "an unknown option is a usage error that points at the help" {
	run titan-tok encode --nope
	expect_status 2
	expect_output_has "unknown option '--nope'"
	expect_output_has "try 'titan-tok encode --help'"
}

@test "encode without a tokenizer is a usage error" {
	run titan-tok encode
	expect_status 2
	expect_output_has "no tokenizer given (-t TOK)"
}

@test "a bad --format and a negative --threads are usage errors" {
	need_data tokenizers/gpt2/tokenizer.json
	run titan-tok encode -t "$(tokjson gpt2)" --format xml
	expect_status 2
	expect_output_has "unknown --format 'xml'"
	run titan-tok encode -t "$(tokjson gpt2)" --threads -1
	expect_status 2
	run titan-tok encode -t "$(tokjson gpt2)" --threads two
	expect_status 2
	expect_output_has "expects an integer, got 'two'"
	run titan-tok encode -t "$(tokjson gpt2)" --read-ahead lots
	expect_status 2
	expect_output_has "--read-ahead: 'lots' is not a size"
	run titan-tok train -o t.json --vocab-size 300 --read-ahead 0 in.txt
	expect_status 2
	expect_output_has "--read-ahead: '0' is not a size"
	[ ! -e t.json ]
}

@test "every command's --help synopsis is the man page's" {
	man=$BATS_TEST_DIRNAME/../man/man1/titan-tok.1
	for cmd in encode decode info train; do
		run titan-tok $cmd --help
		expect_status 0
		line=$(printf '%s\n' "$output" | sed -n 's/^usage: //p')
		grep -qxF ".B $line" "$man" || { echo "synopsis of '$cmd' not in the man page: $line" >&2; return 1; }
	done
}

@test "a missing tokenizer file is a runtime error naming it" {
	run titan-tok encode -t no-such-tokenizer.json
	expect_status 1
	expect_output_has "no-such-tokenizer.json"
}

@test "a WordPiece tokenizer.json is refused with the key and what is supported" {
	cat > wp.json <<'JSON'
{"version":"1.0","added_tokens":[],"normalizer":null,"pre_tokenizer":null,
 "post_processor":null,"decoder":null,
 "model":{"type":"WordPiece","unk_token":"[UNK]","vocab":{"[UNK]":0,"a":1}}}
JSON
	run titan-tok encode -t wp.json
	expect_status 1
	expect_output_has "'wp.json'"
	expect_output_has "model.type"
	expect_output_has "WordPiece"
}

@test "a truncated tokenizer.json is refused with the line and column" {
	need_data tokenizers/gpt2/tokenizer.json
	head -c 5000 "$(tokjson gpt2)" > cut.json
	run titan-tok info -t cut.json
	expect_status 1
	expect_output_has "'cut.json'"
	expect_output_has "line"
}

@test "encode prints Hugging Face's ids for GPT-2, one line per document" {
	need_data tokenizers/gpt2/tokenizer.json
	run sh -c "printf 'Hello world' | titan-tok encode -t '$(tokjson gpt2)'"
	expect_status 0
	expect_eq "15496 995" "$output"
}

@test "encode --lines makes each line a document without its newline" {
	need_data tokenizers/gpt2/tokenizer.json
	printf 'Hello world\n\nHello\n' > in.txt
	run titan-tok encode -t "$(tokjson gpt2)" --lines in.txt
	expect_status 0
	expect_eq "$(printf '15496 995\n\n15496')" "$output"
}

@test "encode --bos --eos wraps each document in Llama 3's BOS and EOS" {
	need_data tokenizers/llama3/tokenizer.json
	printf 'Hello world\nHello world\n' > in.txt
	run titan-tok encode -t "$(tokjson llama3)" --lines --bos --eos in.txt
	expect_status 0
	expect_eq "$(printf '128000 9906 1917 128001\n128000 9906 1917 128001')" "$output"
}

@test "text that spells a special token is that token" {
	need_data tokenizers/llama3/tokenizer.json
	run sh -c "printf 'a<|eot_id|>b' | titan-tok encode -t '$(tokjson llama3)'"
	expect_status 0
	expect_eq "64 128009 65" "$output"
}

@test "encode --format jsonl writes one ids object per document" {
	need_data tokenizers/gpt2/tokenizer.json
	printf 'Hello world\nHello\n' > in.txt
	run titan-tok encode -t "$(tokjson gpt2)" --lines --format jsonl in.txt
	expect_status 0
	expect_eq "$(printf '{"ids":[15496,995]}\n{"ids":[15496]}')" "$output"
}

@test "encode --format u32 writes little-endian ids and a 0xFFFFFFFF after each document" {
	need_data tokenizers/gpt2/tokenizer.json
	printf 'Hello world' | titan-tok encode -t "$(tokjson gpt2)" --format u32 > ids.u32
	run od -An -tx1 ids.u32
	expect_eq "88 3c 00 00 e3 03 00 00 ff ff ff ff" "$(echo $output)"
}

@test "u32 and text ids decode back to the input, byte for byte" {
	need_data tokenizers/llama3/tokenizer.json
	need_data corpus/tinyshakespeare.txt
	t=$(tokjson llama3)
	titan-tok encode -t "$t" --format u32 "$TITAN_DATA/corpus/tinyshakespeare.txt" > ids.u32
	titan-tok decode -t "$t" --format u32 ids.u32 > back.txt
	cmp back.txt "$TITAN_DATA/corpus/tinyshakespeare.txt"
	titan-tok encode -t "$t" --lines "$TITAN_DATA/corpus/tinyshakespeare.txt" | titan-tok decode -t "$t" --lines > back2.txt
	cmp back2.txt "$TITAN_DATA/corpus/tinyshakespeare.txt"
}

@test "random bytes, invalid UTF-8 included, survive encode and decode" {
	need_data tokenizers/o200k_base/tokenizer.json
	head -c 200000 /dev/urandom > rand.bin
	for name in gpt2 llama3 cl100k_base o200k_base; do
		titan-tok encode -t "$(tokjson $name)" rand.bin | titan-tok decode -t "$(tokjson $name)" > back.bin
		cmp rand.bin back.bin
	done
}

@test "the ids do not depend on the thread count" {
	need_data corpus/kjv.txt
	t=$(tokjson cl100k_base)
	titan-tok encode -t "$t" --threads 1 "$TITAN_DATA/corpus/kjv.txt" > one.txt
	titan-tok encode -t "$t" --threads 4 "$TITAN_DATA/corpus/kjv.txt" > four.txt
	cmp one.txt four.txt
	titan-tok encode -t "$t" --threads 1 --lines "$TITAN_DATA/corpus/kjv.txt" > one.txt
	titan-tok encode -t "$t" --threads 3 --lines "$TITAN_DATA/corpus/kjv.txt" > three.txt
	cmp one.txt three.txt
	# Several compressed files, read ahead at once with threads
	split -n l/5 -d "$TITAN_DATA/corpus/kjv.txt" part.
	gzip part.01 part.03
	titan-tok encode -t "$t" --threads 1 --lines part.00 part.01.gz part.02 part.03.gz part.04 > one.txt
	titan-tok encode -t "$t" --threads 4 --lines part.00 part.01.gz part.02 part.03.gz part.04 > four.txt
	cmp one.txt four.txt
	titan-tok encode -t "$t" --threads 4 --read-ahead 4K --lines part.00 part.01.gz part.02 part.03.gz part.04 |
		cmp - four.txt
	titan-tok encode -t "$t" --threads 1 --lines "$TITAN_DATA/corpus/kjv.txt" | cmp - four.txt
}

@test "encode reads JSON lines with --jsonl and a dotted --field" {
	need_data tokenizers/gpt2/tokenizer.json
	printf '{"meta":{"body":"Hello world"}}\n{"meta":{"body":"Hello"}}\n' > in.jsonl
	run titan-tok encode -t "$(tokjson gpt2)" --jsonl --field meta.body in.jsonl
	expect_status 0
	expect_eq "$(printf '15496 995\n15496')" "$output"
}

@test "an invalid JSON line stops encode with file:line, unless --skip-bad" {
	need_data tokenizers/gpt2/tokenizer.json
	printf '{"text":"Hello"}\n{"text": oops}\n{"text":"world"}\n' > in.jsonl
	run titan-tok encode -t "$(tokjson gpt2)" --jsonl in.jsonl
	expect_status 1
	expect_output_has "in.jsonl:2: invalid JSON"
	run titan-tok encode -t "$(tokjson gpt2)" --jsonl --skip-bad in.jsonl
	expect_status 0
	expect_output_has "15496"
	expect_output_has "skipped 1 invalid JSON line"
}

@test "encode reads archives: one document per member of a tar.zst" {
	need_data corpus/archive_sample.tar.zst
	run titan-tok encode -t "$(tokjson gpt2)" "$TITAN_DATA/corpus/archive_sample.tar.zst"
	expect_status 0
	expect_eq 6 "$(printf '%s\n' "$output" | wc -l)"
}

@test "a missing input is a runtime error naming it, and -o leaves no file behind" {
	need_data tokenizers/gpt2/tokenizer.json
	run titan-tok encode -t "$(tokjson gpt2)" -o out.txt missing.txt
	expect_status 1
	expect_output_has "'missing.txt'"
	[ ! -e out.txt ]
	[ -z "$(ls)" ]
}

@test "encode -o writes the output atomically, leaving no temporary file" {
	need_data tokenizers/gpt2/tokenizer.json
	printf 'Hello world' > in.txt
	run titan-tok encode -t "$(tokjson gpt2)" -o out.txt in.txt
	expect_status 0
	expect_eq "15496 995" "$(cat out.txt)"
	expect_eq "in.txt out.txt" "$(echo $(ls))"
}

@test "decode refuses a word that is not an id, naming file and line" {
	need_data tokenizers/gpt2/tokenizer.json
	printf '15496 995\n15496 abc\n' > ids.txt
	run titan-tok decode -t "$(tokjson gpt2)" ids.txt
	expect_status 1
	expect_output_has "'ids.txt':2: expected a token id, got 'abc'"
}

@test "decode refuses an id past the vocabulary" {
	need_data tokenizers/gpt2/tokenizer.json
	run sh -c "echo 15496 99999999 | titan-tok decode -t '$(tokjson gpt2)'"
	expect_status 1
	expect_output_has "99999999"
}

@test "decode refuses u32 input that is not a whole number of ids" {
	need_data tokenizers/gpt2/tokenizer.json
	printf '\001\000\000\000ab' > bad.u32
	run titan-tok decode -t "$(tokjson gpt2)" --format u32 bad.u32
	expect_status 1
	expect_output_has "trailing byte"
}

@test "info shows vocabulary, pattern kind, BOS and EOS" {
	need_data tokenizers/llama3/tokenizer.json
	run titan-tok info -t "$(tokjson llama3)"
	expect_status 0
	expect_output_has "vocab size     128256"
	expect_output_has "cl100k"
	expect_output_has "bos            128000 <|begin_of_text|>"
	expect_output_has "eos            128001 <|end_of_text|>"
}

@test "info --json is valid JSON with the same facts" {
	need_data tokenizers/o200k_base/tokenizer.json
	run titan-tok info -t "$(tokjson o200k_base)" --json
	expect_status 0
	printf '%s' "$output" > info.json
	run python3 -c 'import json,sys; d=json.load(open("info.json")); print(d["vocab_size"], d["pattern_kind"], d["eos"]["id"])'
	expect_eq "200019 o200k 199999" "$output"
}

@test "a tiktoken rank file loads with its pattern and specials beside it" {
	need_data tokenizers/cl100k_base/cl100k_base.tiktoken
	d=$TITAN_DATA/tokenizers/cl100k_base
	printf 'Hello world<|endoftext|>' > in.txt
	run titan-tok encode -t "$d/cl100k_base.tiktoken" in.txt
	expect_status 0
	expect_eq "9906 1917 100257" "$output"
}

@test "a tiktoken rank file without a pattern asks for --pattern" {
	need_data tokenizers/cl100k_base/cl100k_base.tiktoken
	cp "$TITAN_DATA/tokenizers/cl100k_base/cl100k_base.tiktoken" ranks.tiktoken
	run titan-tok encode -t ranks.tiktoken
	expect_status 2
	expect_output_has "--pattern"
	printf 'Hello world' > in.txt
	run titan-tok encode -t ranks.tiktoken --pattern cl100k --special '<|endoftext|>=100257' in.txt
	expect_status 0
	expect_eq "9906 1917" "$output"
}

@test "train writes a tokenizer that round-trips, whatever the thread count" {
	need_data corpus/tinyshakespeare.txt
	run titan-tok train -q -o a.json --vocab-size 1000 --special '<|endoftext|>' --threads 1 \
		"$TITAN_DATA/corpus/tinyshakespeare.txt"
	expect_status 0
	titan-tok train -q -o b.json --vocab-size 1000 --special '<|endoftext|>' --threads 2 \
		"$TITAN_DATA/corpus/tinyshakespeare.txt"
	cmp a.json b.json
	run titan-tok info -t a.json
	expect_output_has "vocab size     1000"
	expect_output_has "999  <|endoftext|>"
	titan-tok encode -t a.json "$TITAN_DATA/corpus/tinyshakespeare.txt" | titan-tok decode -t a.json > back.txt
	cmp back.txt "$TITAN_DATA/corpus/tinyshakespeare.txt"
}

@test "train refuses a vocabulary too small for the bytes and specials" {
	printf 'some text to train on\n' > in.txt
	run titan-tok train -o t.json --vocab-size 256 --special '<|endoftext|>' in.txt
	expect_status 2
	expect_output_has "too small"
	[ ! -e t.json ]
}

@test "train without -o, or without input, is a usage error" {
	run titan-tok train --vocab-size 300 in.txt
	expect_status 2
	expect_output_has "-o OUT"
	run titan-tok train -o t.json --vocab-size 300
	expect_status 2
	expect_output_has "no input"
}

@test "train on empty input fails and writes nothing" {
	: > empty.txt
	run titan-tok train -o t.json --vocab-size 300 empty.txt
	expect_status 1
	[ ! -e t.json ]
}

@test "--version prints the version on stdout" {
	run titan-tok --version
	expect_status 0
	expect_eq "titan-tok 0.1.0" "$output"
}
