#!/bin/sh
# demo.sh - the titan pipeline on the King James Bible (Debian's
# bible-kjv-text, read with its `bible` program), driven by the example
# Makefile (share/titan/examples/Makefile): train a tokenizer, pack the
# text into a dataset, train debugmodel for a few minutes on the CPU and
# save a checkpoint.  Then check the tokenizer's round trip and the
# dataset's checksums, show the loss falling, and print a sample of the
# model's text.
# Run through `make demo`, which installs missing packages and builds first.
set -eu
bin=$(cd "${TITAN_BIN:-build/bin}" && pwd)
work=${TITAN_BUILD:-build}/demo
share=$(cd "$(dirname "$0")" && pwd)
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

echo "== make -f share/titan/examples/Makefile: tokenizer <- corpus; dataset <- tokenizer + corpus; checkpoint <- dataset + train.json"
make --no-print-directory -f "$share/examples/Makefile" CORPUS="$corpus" OUT="$work/run" \
	TITAN_BIN="$bin" STEPS="${DEMO_STEPS:-200}"
run=$work/run

echo "== the tokenizer's round trip, byte for byte"
"$bin/titan-tok" encode -t "$run/tokenizer.json" --format u32 -o "$work/kjv.u32" "$corpus"
"$bin/titan-tok" decode -t "$run/tokenizer.json" --format u32 -o "$work/kjv.decoded" "$work/kjv.u32"
if cmp -s "$corpus" "$work/kjv.decoded"; then
	echo "decode(encode(kjv.txt)) == kjv.txt"
else
	echo "round trip: MISMATCH" >&2
	exit 1
fi

echo "== the dataset"
"$bin/titan-pack" info "$run/data"
"$bin/titan-pack" verify "$run/data"

echo "== the loss (train, and validation on held-out verses)"
awk -F'[:,}]' '
	/"val_loss"/ { for (i = 1; i < NF; i++) { if ($i ~ /"step"/) s = $(i + 1); if ($i ~ /"val_loss"/) v = $(i + 1) }
		printf "step %5d  val_loss %.4f\n", s, v; next }
	/"loss"/ { for (i = 1; i < NF; i++) { if ($i ~ /"step"/) s = $(i + 1); if ($i ~ /"loss"/) l = $(i + 1) }
		if (!first) first = l; last = l; n = s }
	END { printf "train loss: %.4f at step 1 -> %.4f at step %d\n", first, last, n }' "$run/metrics.jsonl"
echo "checkpoint: $(ls -d "$run"/checkpoint/step-* | tail -1)"

echo "== a sample from the model (titan-gen, the example Makefile's sample step)"
make --no-print-directory -s -f "$share/examples/Makefile" CORPUS="$corpus" OUT="$work/run" \
	TITAN_BIN="$bin" STEPS="${DEMO_STEPS:-200}" PROMPT="And God said" sample
echo "== outputs in $work"
