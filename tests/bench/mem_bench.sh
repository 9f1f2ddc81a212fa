#!/usr/bin/env bash
# Memory model against the process: titan-mem's total (every row, tracked or
# not) next to titan-train's measured tracker peak and the peak resident set
# size /usr/bin/time reports, for configs above 500 MB.  The bar: within 10%
# of the resident peak.  Prints one table; exits non-zero when a config
# misses the bar.
#
#   TITAN_BIN=build/bin TITAN_BUILD=build tests/bench/mem_bench.sh
#
# The "process" column is titan-mem's total (the trainer reports what
# activation checkpointing saves from the same model, without allocating
# the plan it does not use).
#
# Environment: TITAN_BENCH_THREADS (default 2).  The dataset is titan's own
# documentation, packed with a 512-token tokenizer (the models' larger
# vocabularies leave the rest of the embedding unused, but it is allocated
# and trained all the same).
set -u

# shellcheck source=tests/bench/paths.sh
. "$(dirname "$0")/paths.sh"
threads=${TITAN_BENCH_THREADS:-2}
work=$TITAN_BUILD/membench

die() {
	echo "tests/bench/mem_bench.sh: $*" >&2
	exit 1
}

[ -x /usr/bin/time ] || die "/usr/bin/time not found (Debian package 'time')"
command -v jq >/dev/null || die "jq not found"
for t in titan-mem titan-train titan-tok titan-pack; do
	[ -x "$TITAN_BIN/$t" ] || die "'$TITAN_BIN/$t' not found (not built yet?)"
done
mkdir -p "$work" || die "cannot create '$work'"
cat "$root"/man/man*/*.[1-9] "$root/README.md" >"$work/corpus.txt"
"$TITAN_BIN/titan-tok" train -q -o "$work/tok.json" --vocab-size 512 \
	--special '<|begin_of_text|>' --special '<|end_of_text|>' "$work/corpus.txt" ||
	die "titan-tok failed"
rm -rf "$work/data"
"$TITAN_BIN/titan-pack" -q -t "$work/tok.json" -o "$work/data" --lines \
	--val-fraction 0.1 "$work/corpus.txt" || die "titan-pack failed"

configs=(
	"--training.seq_len=1024 --training.local_batch_size=8"
	"--training.seq_len=2048 --training.local_batch_size=8 --activation_checkpoint.mode=full"
	"--training.seq_len=2048 --training.local_batch_size=8 --activation_checkpoint.mode=selective"
	"--model.dim=512 --model.n_layers=8 --model.n_heads=8 --model.n_kv_heads=4 --model.vocab_size=8192 --training.seq_len=512 --training.local_batch_size=4"
	"--model.dim=512 --model.n_layers=8 --model.n_heads=8 --model.n_kv_heads=4 --model.vocab_size=8192 --training.seq_len=1024 --training.local_batch_size=4 --activation_checkpoint.mode=full"
	"--model.dim=1024 --model.n_layers=8 --model.n_heads=16 --model.n_kv_heads=8 --model.vocab_size=16384 --training.seq_len=256 --training.local_batch_size=4 --model.max_seq_len=2048"
)

fail=0
printf '%10s %10s %10s %10s %10s %8s %8s  %s\n' "total MiB" "process" "RSS MiB" \
	"tracked" "peak MiB" "vs RSS" "vs peak" config
for c in "${configs[@]}"; do
	# shellcheck disable=SC2086
	json=$("$TITAN_BIN/titan-mem" --json $c --training.threads="$threads") ||
		die "titan-mem failed on: $c"
	total=$(printf '%s\n' "$json" | jq .total_bytes)
	tracked=$(printf '%s\n' "$json" | jq .tracked_bytes)
	process=$total
	rm -f "$work/m.jsonl"
	# shellcheck disable=SC2086
	/usr/bin/time -v -o "$work/time.txt" "$TITAN_BIN/titan-train" -q $c \
		--data.dataset="$work/data" --training.steps=2 --training.threads="$threads" \
		--metrics.peak_flops=1e11 --metrics.jsonl="$work/m.jsonl" ||
		die "titan-train failed on: $c"
	rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time.txt")
	peak=$(jq -r 'select(.mem_peak_gib != null) | .mem_peak_gib * 1073741824 | floor' \
		"$work/m.jsonl" | tail -n 1)
	awk -v t="$total" -v q="$process" -v k="$tracked" -v r="$rss_kb" -v p="$peak" -v c="$c" 'BEGIN {
		rss = r * 1024
		d = 100 * (q - rss) / rss
		e = 100 * (k - p) / p
		printf "%10.1f %10.1f %10.1f %10.1f %10.1f %7.2f%% %7.2f%%  %s\n", t / 1048576,
			q / 1048576, rss / 1048576, k / 1048576, p / 1048576, d, e, c
		exit !(q > 500e6 && d < 10 && d > -10 && e < 5 && e > -5) }' || fail=1
done
[ "$fail" = 0 ] || die "a config missed the bar (10% of the resident peak, 5% of the tracker's)"
