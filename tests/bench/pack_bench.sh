#!/usr/bin/env bash
# Packing throughput: titan-pack against titan-tok on the same input, one
# thread and all cores.  The goal is that packing (ingest, tokenize, split,
# compress, checksum, write, sync) costs less than 15% over the raw
# tokenization job, titan-tok encode --format u32 -o FILE.
#
#   TITAN_BIN=build/bin TITAN_DATA=... TITAN_BUILD=build tests/bench/pack_bench.sh
#
# Environment: TITAN_BENCH_RUNS (default 3; each figure is the best of that
# many runs), TITAN_BENCH_PACK_TOKENIZERS (default "gpt2 llama3"),
# TITAN_BENCH_PACK_COPIES (default 4: the english text is repeated so that a
# run lasts long enough for the fixed costs, thread start-up and fsync, not to
# decide the figure; the JSON lines are repeated up to the same size).  The
# seconds come from the tools' own lines (titan-tok --stats, titan-pack's
# summary), which exclude loading the tokenizer; MB/s is the input file's
# size over those seconds.
set -u

# shellcheck source=tests/bench/paths.sh
. "$(dirname "$0")/paths.sh"
runs=${TITAN_BENCH_RUNS:-3}
tokenizers=${TITAN_BENCH_PACK_TOKENIZERS:-gpt2 llama3}
copies=${TITAN_BENCH_PACK_COPIES:-4}
tok=$TITAN_BIN/titan-tok
pack=$TITAN_BIN/titan-pack
work=$TITAN_BUILD/packbench

die() {
	echo "tests/bench/pack_bench.sh: $*" >&2
	exit 1
}

[ -x "$tok" ] || die "'$tok' not found: run make first"
[ -x "$pack" ] || die "'$pack' not found: run make first"
for f in kjv.txt tinyshakespeare.txt tinyshakespeare.jsonl; do
	[ -r "$TITAN_DATA/corpus/$f" ] || die "'$TITAN_DATA/corpus/$f' not found: set TITAN_DATA"
done
mkdir -p "$work" || die "cannot create '$work'"
english=$work/english.txt
jsonl=$work/english.jsonl
for (( i = 0; i < copies; i++ )); do
	cat "$TITAN_DATA/corpus/kjv.txt" "$TITAN_DATA/corpus/tinyshakespeare.txt"
done >"$english.tmp" && mv "$english.tmp" "$english" || die "cannot write '$english'"
# The JSON lines are repeated up to the english text's size, so that both
# runs last about as long and the fixed costs weigh the same in each.
jsonl_copies=0
: >"$jsonl.tmp" || die "cannot write '$jsonl.tmp'"
while [ "$(stat -c %s "$jsonl.tmp")" -lt "$(stat -c %s "$english")" ]; do
	cat "$TITAN_DATA/corpus/tinyshakespeare.jsonl" >>"$jsonl.tmp" || die "cannot write '$jsonl.tmp'"
	jsonl_copies=$((jsonl_copies + 1))
done
mv "$jsonl.tmp" "$jsonl" || die "cannot write '$jsonl'"
docs_lines=$(wc -l <"$english")
docs_jsonl=$(wc -l <"$jsonl")

best_min() {
	sort -g | head -n 1
}

# tok_seconds TOK FILE THREADS FIELD [FLAGS]: titan-tok's best seconds from
# its --stats line: FIELD enc is the encoding alone, job the whole job from
# the first read to the last write of the ids (the tokenizer load excluded).
tok_seconds() {
	local i line
	for (( i = 0; i < runs; i++ )); do
		# shellcheck disable=SC2086  # flags is one word or none
		line=$("$tok" encode -t "$1" --threads "$3" ${5:-} --format u32 --stats \
			-o "$work/ids.u32" "$2" 2>&1 | grep '^titan-tok: encoded') || { echo -; return; }
		if [ "$4" = enc ]; then
			echo "$line" | sed -n 's/.* tokens in \([0-9.]*\) s .*/\1/p'
		else
			echo "$line" | sed -n 's/.*; \([0-9.]*\) s from first read.*/\1/p'
		fi
	done | best_min
	rm -f "$work/ids.u32"
}

# pack_seconds TOK FILE THREADS [FLAGS]: the best packing seconds of titan-pack.
pack_seconds() {
	local i line
	for (( i = 0; i < runs; i++ )); do
		line=$("$pack" -t "$1" --threads "$3" ${4:-} -o "$work/ds" --force "$2" 2>&1 |
			grep '^titan-pack: packed') || { echo -; return; }
		echo "$line" | sed -n 's/.* MB in \([0-9.]*\) s .*/\1/p'
	done | best_min
	rm -rf "$work/ds"
}

mbps() {
	awk -v b="$1" -v s="$2" 'BEGIN { if (s + 0 > 0) printf "%.1f", b / s / 1e6; else printf "-" }'
}

overhead() {
	awk -v p="$1" -v t="$2" 'BEGIN {
		if (p + 0 > 0 && t + 0 > 0) printf "%+.0f%%", 100 * (p / t - 1); else printf "-"
	}'
}

cores=$(nproc)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "titan-pack against titan-tok encode on the same input, MB/s of input, best of $runs run(s)"
echo "  enc:  titan-tok's encoding alone (--stats), the raw tokenizer speed"
echo "  job:  titan-tok encode --format u32 -o FILE from the first read to the last write"
echo "  pack: titan-pack from the first read to the rename of the finished dataset"
echo "  (the tokenizer load is excluded everywhere); cost = pack time / job time - 1"
echo "machine: ${cpu:-unknown cpu}, $cores cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "english: (kjv.txt + tinyshakespeare.txt) x $copies, $(stat -c %s "$english") bytes, one document"
echo "lines:   the same with --lines, $docs_lines documents"
echo "jsonl:   tinyshakespeare.jsonl x $jsonl_copies, $(stat -c %s "$jsonl") bytes, $docs_jsonl documents"
echo
fmt="%-10s %-8s %7s %9s %9s %9s %9s %9s\n"
# shellcheck disable=SC2059  # fmt is this script's own format
printf "$fmt" tokenizer text threads "enc MB/s" "job MB/s" "pack MB/s" "cost" "vs enc"
for name in $tokenizers; do
	json=$TITAN_DATA/tokenizers/$name/tokenizer.json
	[ -r "$json" ] || { echo "'$json' not found, $name skipped" >&2; continue; }
	for text in english lines jsonl; do
		file=$english
		tflags=
		pflags=
		[ "$text" = lines ] && tflags=--lines pflags=--lines
		[ "$text" = jsonl ] && file=$jsonl tflags=--jsonl
		size=$(stat -c %s "$file")
		for threads in 1 0; do
			es=$(tok_seconds "$json" "$file" "$threads" enc "$tflags")
			js=$(tok_seconds "$json" "$file" "$threads" job "$tflags")
			ps=$(pack_seconds "$json" "$file" "$threads" "$pflags")
			label=$threads
			[ "$threads" = 0 ] && label="$cores"
			# shellcheck disable=SC2059
			printf "$fmt" "$name" "$text" "$label" "$(mbps "$size" "$es")" \
				"$(mbps "$size" "$js")" "$(mbps "$size" "$ps")" \
				"$(overhead "$ps" "$js")" "$(overhead "$ps" "$es")"
		done
	done
done
echo
if [ -n "${MAKELEVEL:-}" ]; then
	echo "command: make bench, which ran:"
	echo "  TITAN_BIN=$TITAN_BIN TITAN_DATA=$TITAN_DATA TITAN_BUILD=$TITAN_BUILD TITAN_BENCH_RUNS=$runs TITAN_BENCH_PACK_COPIES=$copies tests/bench/pack_bench.sh"
else
	echo "command: TITAN_BENCH_RUNS=$runs TITAN_BENCH_PACK_COPIES=$copies $0"
fi
