#!/usr/bin/env bash
# Packing throughput: titan-pack against titan-tok's raw encoding of the same
# input, one thread and all cores.  The goal is packing (ingest, tokenize,
# split, compress, checksum, write, sync) within 15% of encoding alone.
#
#   TITAN_BIN=build/bin TITAN_DATA=... TITAN_BUILD=build tests/bench/pack_bench.sh
#
# Environment: TITAN_BENCH_RUNS (default 3; each figure is the best of that
# many runs), TITAN_BENCH_PACK_TOKENIZERS (default "gpt2 llama3").  Both
# tools' figures exclude loading the tokenizer: titan-tok's seconds come from
# its --stats line (encoding only), titan-pack's from its summary line (from
# the first read to the rename of the finished dataset).  MB/s is the input
# file's size over those seconds for both, so the figures compare.  The last
# columns time both whole commands (tokenizer load, reading, and writing:
# titan-tok's u32 ids to /dev/null, titan-pack's dataset), as a user sees them.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
TITAN_BIN=${TITAN_BIN:-$root/build/bin}
TITAN_BUILD=${TITAN_BUILD:-$root/build}
TITAN_DATA=${TITAN_DATA:-$root/../shared/data}
runs=${TITAN_BENCH_RUNS:-3}
tokenizers=${TITAN_BENCH_PACK_TOKENIZERS:-gpt2 llama3}
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
cat "$TITAN_DATA/corpus/kjv.txt" "$TITAN_DATA/corpus/tinyshakespeare.txt" >"$english.tmp" &&
	mv "$english.tmp" "$english" || die "cannot write '$english'"
jsonl=$TITAN_DATA/corpus/tinyshakespeare.jsonl

best_min() {
	sort -g | head -n 1
}

# tok_seconds TOK FILE THREADS [FLAGS]: the best encoding seconds of titan-tok.
tok_seconds() {
	local i line
	for (( i = 0; i < runs; i++ )); do
		line=$("$tok" encode -t "$1" --threads "$3" ${4:-} --stats "$2" 2>&1 >/dev/null |
			grep '^titan-tok: encoded') || { echo -; return; }
		echo "$line" | sed -n 's/.* tokens in \([0-9.]*\) s .*/\1/p'
	done | best_min
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

# wall_seconds CMD...: the best wall-clock seconds of a whole command.
wall_seconds() {
	local i t0 t1
	for (( i = 0; i < runs; i++ )); do
		t0=$(date +%s.%N)
		"$@" >/dev/null 2>&1 || { echo -; return; }
		t1=$(date +%s.%N)
		awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", b - a }'
	done | best_min
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
echo "titan-pack throughput against titan-tok encode, MB/s of input file"
echo "(tokenizer load excluded), best of $runs run(s); overhead = pack time / encode time - 1;"
echo "wall: whole commands, load and output included"
echo "machine: ${cpu:-unknown cpu}, $cores cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "english: kjv.txt + tinyshakespeare.txt, $(stat -c %s "$english") bytes, one document"
echo "lines:   the same with --lines, 74669 documents"
echo "jsonl:   tinyshakespeare.jsonl, $(stat -c %s "$jsonl") bytes, 7222 documents"
echo
fmt="%-10s %-8s %7s %9s %9s %9s %9s %9s %9s\n"
# shellcheck disable=SC2059  # fmt is this script's own format
printf "$fmt" tokenizer text threads "tok MB/s" "pack MB/s" overhead "tok wall" "pack wall" overhead
for name in $tokenizers; do
	json=$TITAN_DATA/tokenizers/$name/tokenizer.json
	[ -r "$json" ] || { echo "'$json' not found, $name skipped" >&2; continue; }
	for text in english lines jsonl; do
		file=$english
		flags=
		[ "$text" = lines ] && flags=--lines
		[ "$text" = jsonl ] && file=$jsonl
		size=$(stat -c %s "$file")
		for threads in 1 0; do
			ts=$(tok_seconds "$json" "$file" "$threads" "$flags")
			ps=$(pack_seconds "$json" "$file" "$threads" "$flags")
			# shellcheck disable=SC2086  # flags is one word or none
			tw=$(wall_seconds "$tok" encode -t "$json" --threads "$threads" $flags \
				--format u32 "$file")
			# shellcheck disable=SC2086
			pw=$(wall_seconds "$pack" -q -t "$json" --threads "$threads" $flags \
				-o "$work/ds" --force "$file")
			rm -rf "$work/ds"
			label=$threads
			[ "$threads" = 0 ] && label="$cores"
			# shellcheck disable=SC2059
			printf "$fmt" "$name" "$text" "$label" "$(mbps "$size" "$ts")" \
				"$(mbps "$size" "$ps")" "$(overhead "$ps" "$ts")" "${tw}s" "${pw}s" \
				"$(overhead "$pw" "$tw")"
		done
	done
done
