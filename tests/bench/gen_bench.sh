#!/usr/bin/env bash
# Inference speed: titan-gen's prefill and decode tokens/s against eager
# fp32 PyTorch with a KV cache (tests/bench/torch_gen.py, the model of
# tests/golden/reference.py) on the same shapes, batch 1, greedy, on the
# CPU; and decode against the memory-bandwidth bound: bytes of weights one
# token reads over the bandwidth a streaming read loop measures here.
#
#   TITAN_BIN=build/bin TITAN_BUILD=build TITAN_DATA=... tests/bench/gen_bench.sh
#
# Environment: PYTHON (default /usr/bin/python3, which must have torch),
# TITAN_BENCH_THREADS (default 2), TITAN_BENCH_RUNS (default 3; each figure
# is the best of that many runs), TITAN_BENCH_PROMPT (prompt tokens, default
# 256), TITAN_BENCH_NEW (tokens decoded, default 128).  titan-gen runs a
# checkpoint titan-train saves after one step on tinyshakespeare (the
# weights do not change the speed); PyTorch runs random weights.
# llama.cpp is not in the table: it is not packaged in Debian 12 and this
# machine cannot download it.
set -u

# shellcheck source=tests/bench/paths.sh
. "$(dirname "$0")/paths.sh"
PYTHON=${PYTHON:-/usr/bin/python3}
threads=${TITAN_BENCH_THREADS:-2}
runs=${TITAN_BENCH_RUNS:-3}
prompt=${TITAN_BENCH_PROMPT:-256}
new=${TITAN_BENCH_NEW:-128}
work=$TITAN_BUILD/genbench
corpus=$TITAN_DATA/corpus/tinyshakespeare.txt

die() {
	echo "tests/bench/gen_bench.sh: $*" >&2
	exit 1
}

mkdir -p "$work" || die "cannot create '$work'"

# name dim n_layers n_heads n_kv_heads vocab multiple_of
configs=(
	"debugmodel 256 6 16 16 2048 256"
	"35M 512 8 8 4 8192 256"
)

have_torch=
"$PYTHON" -c 'import torch' 2>/dev/null && have_torch=1
have_titan=
why_no_titan=
if [ ! -x "$TITAN_BIN/titan-gen" ] || [ ! -x "$TITAN_BIN/titan-train" ]; then
	why_no_titan="titan-gen or titan-train not found in '$TITAN_BIN' (not built yet?)"
elif [ ! -r "$corpus" ]; then
	why_no_titan="'$corpus' not found: set TITAN_DATA"
else
	have_titan=1
fi

# The streaming-read bandwidth: a sum over 512 MiB on every thread, best
# of 5 passes, in GB/s.
bandwidth() {
	local src=$work/stream.c bin=$work/stream
	cat >"$src" <<-'EOF'
	#include <omp.h>
	#include <stdio.h>
	#include <stdlib.h>
	int main(void)
	{
		size_t n = (size_t)128 << 20;
		float *a = malloc(n * sizeof *a), sink = 0;
		double best = 0;
		if (!a)
			return 1;
	#pragma omp parallel for
		for (size_t i = 0; i < n; i++)
			a[i] = (float)(i & 7);
		for (int r = 0; r < 5; r++) {
			double t = omp_get_wtime();
			float s = 0;
	#pragma omp parallel for simd reduction(+ : s)
			for (size_t i = 0; i < n; i++)
				s += a[i];
			t = omp_get_wtime() - t;
			sink += s;
			if (n * sizeof *a / t > best)
				best = n * sizeof *a / t;
		}
		printf("%.2f\n", best / 1e9);
		free(a);
		return sink == -1;
	}
	EOF
	cc -O2 -march=native -fopenmp "$src" -o "$bin" 2>/dev/null &&
		OMP_NUM_THREADS=$threads "$bin"
}

# checkpoint NAME DIM L H KV V MULT: prints the checkpoint folder of one
# training step on tinyshakespeare, building it once.
checkpoint() {
	local tok=$work/tok$6.json ds=$work/shakespeare$6 ck=$work/ckpt-$1
	if [ ! -f "$ds/manifest.json" ]; then
		"$TITAN_BIN/titan-tok" train -o "$tok" --vocab-size "$6" \
			--special '<|endoftext|>' "$corpus" >/dev/null 2>&1 &&
			"$TITAN_BIN/titan-pack" -q -t "$tok" -o "$ds" --force \
				--val-fraction 0 "$corpus" >/dev/null 2>&1 ||
			return 1
	fi
	if [ ! -d "$ck" ]; then
		"$TITAN_BIN/titan-train" -q --model.flavor=debugmodel --model.dim="$2" \
			--model.n_layers="$3" --model.n_heads="$4" --model.n_kv_heads="$5" \
			--model.vocab_size="$6" --model.multiple_of="$7" \
			--training.local_batch_size=1 --training.seq_len=64 --training.steps=1 \
			--training.threads="$threads" --data.dataset="$ds" \
			--metrics.peak_flops=1e11 --checkpoint.enable \
			--checkpoint.folder="$ck" >/dev/null 2>&1 || return 1
	fi
	echo "$ck"
}

# titan_run NAME DIM L H KV V MULT: sets t_pre, t_dec (best of runs) and
# t_params ("-" when unavailable).
titan_run() {
	local ck err=$work/$1.stderr pre dec
	t_pre=- t_dec=- t_params=-
	[ -n "$have_titan" ] || return
	ck=$(checkpoint "$@") || {
		echo "tests/bench/gen_bench.sh: cannot build the $1 checkpoint in '$work'" >&2
		return
	}
	awk -v n="$prompt" -v v="$6" 'BEGIN { srand(1); for (i = 0; i < n; i++) printf "%d ", int(rand() * v); print "" }' \
		>"$work/prompt$6.txt"
	for (( i = 0; i < runs; i++ )); do
		if ! OMP_NUM_THREADS=$threads "$TITAN_BIN/titan-gen" -v -m "$ck" \
			--ids "$work/prompt$6.txt" --temperature 0 --ignore-eos -n "$new" \
			>/dev/null 2>"$err"; then
			echo "tests/bench/gen_bench.sh: titan-gen failed on $1 (see '$err')" >&2
			return
		fi
		pre=$(sed -n 's/.*prefill: .*, \([0-9.]*\) tokens\/s/\1/p' "$err")
		dec=$(sed -n 's/.*decode: .*, \([0-9.]*\) tokens\/s/\1/p' "$err")
		faster "$pre" "$t_pre" && t_pre=$pre
		faster "$dec" "$t_dec" && t_dec=$dec
	done
	t_params=$(sed -n 's/.*model: .*, \([0-9]*\) parameters.*/\1/p' "$err")
}

# torch_run NAME DIM L H KV V MULT: sets p_pre, p_dec.
torch_run() {
	local out
	p_pre=- p_dec=-
	[ -n "$have_torch" ] || return
	out=$("$PYTHON" "$here/torch_gen.py" --dim "$2" --n-layers "$3" --n-heads "$4" \
		--n-kv-heads "$5" --vocab "$6" --multiple-of "$7" --prompt "$prompt" \
		--new "$new" --runs "$runs" --threads "$threads") || {
		echo "tests/bench/gen_bench.sh: torch_gen.py failed on $1" >&2
		return
	}
	read -r p_pre p_dec < <("$PYTHON" -c '
import json, sys
r = json.loads(sys.argv[1])
print("%.1f %.1f" % (r["prefill_tps"], r["decode_tps"]))' "$out")
}

ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else printf "-"
	}'
}

# faster A B: A is a figure above B ("-" counts as none).
faster() {
	awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 > b + 0) }'
}

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
l3=$(lscpu 2>/dev/null | sed -n 's/^L3 cache:[[:space:]]*//p')
bw=$(bandwidth) || bw=0
echo "inference speed, fp32 on the CPU, $threads threads, batch 1, greedy: a $prompt-token"
echo "prompt prefilled, then $new tokens decoded with a KV cache; best of $runs run(s)"
echo "machine: ${cpu:-unknown cpu}, $(nproc) cores, L3 ${l3:-unknown}; $(date -u '+%Y-%m-%d %H:%M UTC')"
[ -n "$have_torch" ] &&
	echo "reference: PyTorch $("$PYTHON" -c 'import torch; print(torch.__version__)') eager" \
		"with a KV cache, tests/bench/torch_gen.py"
[ -n "$have_torch" ] || echo "reference: none ('$PYTHON' cannot import torch)"
[ -n "$have_titan" ] || echo "titan: none ($why_no_titan)"
echo "llama.cpp: not measured (not packaged in Debian 12, and no network to fetch it)"
echo "bandwidth: $bw GB/s (streaming read of 512 MiB, $threads threads); bound = bandwidth /"
echo "bytes of weights a decode step reads (all but the embedding table)"
echo
fmt="%-11s %9s %9s %6s %9s %9s %6s %8s %8s %7s\n"
# shellcheck disable=SC2059  # fmt is this script's own format
printf "$fmt" config "prefill" "torch" ratio "decode" "torch" ratio "MB/tok" "bound" "%bound"
for c in "${configs[@]}"; do
	# shellcheck disable=SC2086  # the fields are words
	set -- $c
	titan_run "$@"
	torch_run "$@"
	mb=- bound=- pct=-
	if [ "$t_params" != - ]; then
		mb=$(awk -v p="$t_params" -v v="$6" -v d="$2" 'BEGIN { printf "%.1f", (p - v * d) * 4 / 1e6 }')
		bound=$(awk -v m="$mb" -v b="$bw" 'BEGIN { if (b > 0) printf "%.0f", b * 1e3 / m; else printf "-" }')
		pct=$(awk -v t="$t_dec" -v b="$bound" 'BEGIN {
			if (t + 0 > 0 && b + 0 > 0) printf "%.0f%%", 100 * t / b; else printf "-" }')
	fi
	# shellcheck disable=SC2059
	printf "$fmt" "$1" "$t_pre" "$p_pre" "$(ratio "$t_pre" "$p_pre")" "$t_dec" "$p_dec" \
		"$(ratio "$t_dec" "$p_dec")" "$mb" "$bound" "$pct"
done
echo
echo "tokens/s; ratio: titan over PyTorch; MB/tok: weights one decode step reads"
echo "command: TITAN_BIN=$TITAN_BIN TITAN_BUILD=$TITAN_BUILD TITAN_DATA=$TITAN_DATA" \
	"PYTHON=$PYTHON TITAN_BENCH_THREADS=$threads TITAN_BENCH_RUNS=$runs" \
	"TITAN_BENCH_PROMPT=$prompt TITAN_BENCH_NEW=$new tests/bench/gen_bench.sh"
