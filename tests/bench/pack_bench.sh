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
# The same JSON lines as four .jsonl.gz files, as C4 comes: gzip inflates
# at a few hundred MB/s on one core, so with one file at a time the reading
# thread, not the tokenizer, would set the pace on many cores.
rm -f "$work"/part.*
split -n l/4 -d --additional-suffix=.jsonl "$jsonl" "$work/part." ||
	die "cannot write '$work/part.*.jsonl'"
gzip -f "$work"/part.0[0-3].jsonl || die "cannot write '$work/part.*.jsonl.gz'"
gz_parts=("$work"/part.0[0-3].jsonl.gz)

# measure TOK THREADS TFLAGS PFLAGS FILE...: "ENC JOB PACK JOBCPU PACKCPU ZCPU",
# the best seconds of each over the runs.  ENC is titan-tok's encoding alone
# (its --stats line), JOB its whole job from the first read to the last
# write of the ids, PACK titan-pack's packing seconds (its summary line),
# JOBCPU and PACKCPU the CPU seconds of all threads over JOB and PACK, ZCPU
# the part of PACKCPU compression took; the tokenizer load is excluded from
# all six.  Each run does the titan-tok job and then titan-pack, so that a
# machine whose speed drifts (a neighbour waking up) slows both alike rather
# than one of them.  The outputs of the run before are removed first, so that
# neither tool's time includes deleting them.
measure() {
	local i line enc job pk jc pc zc
	local best_enc=- best_job=- best_pack=- best_jc=- best_pc=- best_zc=-
	local json=$1 threads=$2 tflags=$3 pflags=$4
	shift 4
	for (( i = 0; i < runs; i++ )); do
		rm -rf "$work/ids.u32" "$work/ds"
		# shellcheck disable=SC2086  # the flags are one word or none
		line=$("$tok" encode -t "$json" --threads "$threads" $tflags --format u32 --stats \
			-o "$work/ids.u32" "$@" 2>&1 | grep '^titan-tok: encoded')
		enc=$(echo "$line" | sed -n 's/.* tokens in \([0-9.]*\) s .*/\1/p')
		job=$(echo "$line" | sed -n 's/.*; \([0-9.]*\) s from first read.*/\1/p')
		jc=$(echo "$line" | sed -n 's/.* \([0-9.]*\) s of CPU.*/\1/p')
		rm -rf "$work/ds"
		# shellcheck disable=SC2086
		line=$("$pack" -t "$json" --threads "$threads" $pflags -o "$work/ds" "$@" 2>&1 |
			grep '^titan-pack: packed')
		pk=$(echo "$line" | sed -n 's/.* MB in \([0-9.]*\) s .*/\1/p')
		pc=$(echo "$line" | sed -n 's/.* \([0-9.]*\) s of CPU.*/\1/p')
		zc=$(echo "$line" | sed -n 's/.* \([0-9.]*\) s of it compressing.*/\1/p')
		best_enc=$(best_of "$best_enc" "$enc")
		best_job=$(best_of "$best_job" "$job")
		best_pack=$(best_of "$best_pack" "$pk")
		best_jc=$(best_of "$best_jc" "$jc")
		best_pc=$(best_of "$best_pc" "$pc")
		best_zc=$(best_of "$best_zc" "$zc")
	done
	rm -rf "$work/ids.u32" "$work/ds"
	echo "$best_enc $best_job $best_pack $best_jc $best_pc $best_zc"
}

# best_of A B: the smaller of two seconds, "-" standing for none.
best_of() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (b == "" || b == "-") print a; else if (a == "-" || b + 0 < a + 0) print b; else print a
	}'
}

mbps() {
	awk -v b="$1" -v s="$2" 'BEGIN { if (s + 0 > 0) printf "%.1f", b / s / 1e6; else printf "-" }'
}

# share PART WHOLE: PART as a percentage of WHOLE.
share() {
	awk -v p="$1" -v w="$2" 'BEGIN {
		if (p != "" && p != "-" && w + 0 > 0) printf "%.0f%%", 100 * p / w; else printf "-"
	}'
}

overhead() {
	awk -v p="$1" -v t="$2" 'BEGIN {
		if (p + 0 > 0 && t + 0 > 0) printf "%+.0f%%", 100 * (p / t - 1); else printf "-"
	}'
}

cores=$(nproc)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "titan-pack against titan-tok encode on the same input, MB/s of input, best of $runs run(s),"
echo "each run the titan-tok job and then titan-pack, so that drift slows both alike"
echo "  enc:  titan-tok's encoding alone (--stats), the raw tokenizer speed"
echo "  job:  titan-tok encode --format u32 -o FILE from the first read to the last write"
echo "  pack: titan-pack from the first read to the rename of the finished dataset"
echo "  (the tokenizer load is excluded everywhere); cost = pack time / job time - 1,"
echo "  cpu cost = pack CPU time / job CPU time - 1 (all threads; on busy cores extra CPU becomes extra time),"
echo "  zstd = the CPU time titan-pack spent compressing, as a share of the job's CPU time: the part"
echo "  of the cpu cost that --zstd-level sets"
echo "machine: ${cpu:-unknown cpu}, $cores cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "english: (kjv.txt + tinyshakespeare.txt) x $copies, $(stat -c %s "$english") bytes, one document"
echo "lines:   the same with --lines, $docs_lines documents"
echo "jsonl:   tinyshakespeare.jsonl x $jsonl_copies, $(stat -c %s "$jsonl") bytes, $docs_jsonl documents"
echo "gz:      the same JSON lines as ${#gz_parts[@]} .jsonl.gz files (MB/s of the JSON lines)"
echo
fmt="%-10s %-8s %7s %9s %9s %9s %9s %9s %6s %9s\n"
# shellcheck disable=SC2059  # fmt is this script's own format
printf "$fmt" tokenizer text threads "enc MB/s" "job MB/s" "pack MB/s" "cost" "cpu cost" "zstd" "vs enc"
for name in $tokenizers; do
	json=$TITAN_DATA/tokenizers/$name/tokenizer.json
	[ -r "$json" ] || { echo "'$json' not found, $name skipped" >&2; continue; }
	for text in english lines jsonl gz; do
		files=("$english")
		tflags=
		pflags=
		[ "$text" = lines ] && tflags=--lines pflags=--lines
		[ "$text" = jsonl ] && files=("$jsonl") tflags=--jsonl
		[ "$text" = gz ] && files=("${gz_parts[@]}") tflags=--jsonl
		size=$(stat -c %s "$english")
		[ "$text" = jsonl ] || [ "$text" = gz ] && size=$(stat -c %s "$jsonl")
		for threads in 1 0; do
			read -r es js ps jc pc zc < <(measure "$json" "$threads" "$tflags" "$pflags" "${files[@]}")
			label=$threads
			[ "$threads" = 0 ] && label="$cores"
			# shellcheck disable=SC2059
			printf "$fmt" "$name" "$text" "$label" "$(mbps "$size" "$es")" \
				"$(mbps "$size" "$js")" "$(mbps "$size" "$ps")" \
				"$(overhead "$ps" "$js")" "$(overhead "$pc" "$jc")" "$(share "$zc" "$jc")" \
				"$(overhead "$ps" "$es")"
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
