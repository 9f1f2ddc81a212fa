#!/bin/sh
# demo.sh - the titan pipeline on the King James Bible (Debian's
# bible-kjv-text, read with its `bible` program): train a tokenizer, encode
# the text, decode it back and check the round trip byte for byte, then pack
# it into a dataset (one document per verse line) and verify the shards.
# Run through `make demo`, which installs missing packages and builds first.
set -eu
bin=${TITAN_BIN:-build/bin}
work=${TITAN_BUILD:-build}/demo
mkdir -p "$work"
corpus=$work/kjv.txt
if [ ! -s "$corpus" ]; then
	if ! command -v bible >/dev/null 2>&1; then
		echo "demo: the 'bible' program is missing: apt-get install bible-kjv bible-kjv-text" >&2
		exit 1
	fi
	bible -l 100000 Genesis1:1-Revelation22:21 >"$corpus.tmp"
	mv "$corpus.tmp" "$corpus"
fi
echo "== corpus: $(wc -c <"$corpus") bytes of the King James Bible"

echo "== titan-tok train: a 4096-token byte-level BPE (Llama 3 split pattern)"
"$bin/titan-tok" train -o "$work/tokenizer.json" --vocab-size 4096 \
	--special '<|begin_of_text|>' --special '<|end_of_text|>' "$corpus"
"$bin/titan-tok" info -t "$work/tokenizer.json" | sed -n '1,8p'

echo "== titan-tok encode (all cores)"
"$bin/titan-tok" encode -t "$work/tokenizer.json" --format u32 --stats -o "$work/kjv.u32" "$corpus"

echo "== titan-tok decode, and the round trip"
"$bin/titan-tok" decode -t "$work/tokenizer.json" --format u32 -o "$work/kjv.decoded" "$work/kjv.u32"
if cmp -s "$corpus" "$work/kjv.decoded"; then
	echo "round trip: decode(encode(kjv.txt)) == kjv.txt, byte for byte"
else
	echo "round trip: MISMATCH" >&2
	exit 1
fi
printf 'first verse as ids: '
sed -n 4p "$corpus" | "$bin/titan-tok" encode -t "$work/tokenizer.json"

echo "== titan-pack: one document per line, 1% held out for validation"
"$bin/titan-pack" -t "$work/tokenizer.json" -o "$work/kjv.data" --force --lines \
	--val-fraction 0.01 "$corpus"
"$bin/titan-pack" info "$work/kjv.data"
"$bin/titan-pack" verify "$work/kjv.data"
printf 'a validation document: '
"$bin/titan-pack" cat "$work/kjv.data" --split val --doc 3 --decode -t "$work/tokenizer.json" --strip
echo
echo "== outputs in $work"
