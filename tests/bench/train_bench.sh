#!/usr/bin/env bash
# Training throughput: titan-train against eager fp32 PyTorch
# (tests/bench/torch_train.py, the model of tests/golden/reference.py) on the
# same model shapes, batch shapes and thread count, on the CPU.
#
#   TITAN_BIN=build/bin TITAN_BUILD=build TITAN_DATA=... tests/bench/train_bench.sh
#
# Environment: PYTHON (default /usr/bin/python3, which must have torch),
# TITAN_BENCH_STEPS (timed steps, default 5), TITAN_BENCH_WARMUP (untimed
# steps first, default 2), TITAN_BENCH_THREADS (default 2), TITAN_BENCH_RUNS
# (default 1; each figure is the best of that many runs, titan's and
# PyTorch's taking turns, which evens out a shared machine).  titan-train
# trains on tinyshakespeare packed with a byte-level BPE tokenizer that
# titan-tok trains to each model's vocabulary size; its tokens/s is the mean
# of the per-step figures after the warm-up steps.
set -u

# shellcheck source=tests/bench/paths.sh
. "$(dirname "$0")/paths.sh"
PYTHON=${PYTHON:-/usr/bin/python3}
steps=${TITAN_BENCH_STEPS:-5}
warmup=${TITAN_BENCH_WARMUP:-2}
threads=${TITAN_BENCH_THREADS:-2}
runs=${TITAN_BENCH_RUNS:-1}
work=$TITAN_BUILD/trainbench
corpus=$TITAN_DATA/corpus/tinyshakespeare.txt

die() {
	echo "tests/bench/train_bench.sh: $*" >&2
	exit 1
}

mkdir -p "$work" || die "cannot create '$work'"

# name dim n_layers n_heads n_kv_heads vocab multiple_of batch seq
configs=(
	"debugmodel 256 6 16 16 2048 256 8 256"
	"35M 512 8 8 4 8192 256 4 512"
)

# Which halves can run.
have_torch=
why_no_torch=
if "$PYTHON" -c 'import torch' 2>/dev/null; then
	have_torch=1
else
	why_no_torch="'$PYTHON' cannot import torch (install python3-torch or set PYTHON)"
fi
have_titan=
why_no_titan=
if [ ! -x "$TITAN_BIN/titan-train" ]; then
	why_no_titan="'$TITAN_BIN/titan-train' not found (not built yet?)"
elif [ ! -x "$TITAN_BIN/titan-tok" ] || [ ! -x "$TITAN_BIN/titan-pack" ]; then
	why_no_titan="titan-tok or titan-pack not found in '$TITAN_BIN'"
elif [ ! -r "$corpus" ]; then
	why_no_titan="'$corpus' not found: set TITAN_DATA"
else
	have_titan=1
fi

# dataset VOCAB: prints the directory of tinyshakespeare packed with a
# tokenizer of VOCAB entries, building it once.
dataset() {
	local tok=$work/tok$1.json ds=$work/shakespeare$1
	if [ ! -f "$ds/manifest.json" ]; then
		"$TITAN_BIN/titan-tok" train -o "$tok" --vocab-size "$1" \
			--special '<|endoftext|>' "$corpus" >/dev/null 2>&1 &&
			"$TITAN_BIN/titan-pack" -q -t "$tok" -o "$ds" --force \
				--val-fraction 0 "$corpus" >/dev/null 2>&1 ||
			return 1
	fi
	echo "$ds"
}

# titan_run NAME DIM L H KV V MULT B T: sets t_tps, t_gflops, t_mfu ("-"
# when unavailable).
titan_run() {
	local ds log=$work/$1.jsonl err=$work/$1.stderr
	t_tps=- t_gflops=- t_mfu=-
	[ -n "$have_titan" ] || return
	ds=$(dataset "$6") || {
		echo "tests/bench/train_bench.sh: cannot build the vocab-$6 dataset in '$work'" >&2
		return
	}
	rm -f "$log"
	if ! "$TITAN_BIN/titan-train" --model.flavor=debugmodel --model.dim="$2" \
		--model.n_layers="$3" --model.n_heads="$4" --model.n_kv_heads="$5" \
		--model.vocab_size="$6" --model.multiple_of="$7" \
		--training.local_batch_size="$8" --training.seq_len="$9" \
		--training.steps=$((warmup + steps)) --training.threads="$threads" \
		--data.dataset="$ds" --data.mask=causal --metrics.log_freq=1 \
		--metrics.peak_flops="$peak" --metrics.jsonl="$log" 2>"$err" >/dev/null; then
		echo "tests/bench/train_bench.sh: titan-train failed on $1 (see '$err'):" >&2
		tail -n 3 "$err" >&2
		return
	fi
	read -r t_tps t_gflops t_mfu < <("$PYTHON" - "$log" "$warmup" <<-'EOF'
	import json, sys
	rows = [json.loads(l) for l in open(sys.argv[1]) if '"tps"' in l]
	rows = [r for r in rows if r["step"] > int(sys.argv[2])] or rows
	mean = lambda k: sum(r[k] for r in rows) / len(rows)
	tps, tflops, mfu = mean("tps"), mean("tflops"), mean("mfu")
	print("%.0f %.1f %.1f%%" % (tps, tflops * 1e3, mfu))
	EOF
	) || t_tps=-
}

# torch_run NAME DIM L H KV V MULT B T: sets p_tps, p_gflops.
torch_run() {
	local out
	p_tps=- p_gflops=-
	[ -n "$have_torch" ] || return
	out=$("$PYTHON" "$here/torch_train.py" --dim "$2" --n-layers "$3" --n-heads "$4" \
		--n-kv-heads "$5" --vocab "$6" --multiple-of "$7" --batch "$8" --seq "$9" \
		--steps "$steps" --warmup "$warmup" --threads "$threads") || {
		echo "tests/bench/train_bench.sh: torch_train.py failed on $1" >&2
		return
	}
	read -r p_tps p_gflops < <("$PYTHON" -c '
import json, sys
r = json.loads(sys.argv[1])
print("%.0f %.1f" % (r["tps"], r["tps"] * r["flops_per_token"] / 1e9))' "$out")
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
# The MFU denominator, measured once for the whole table: titan-train gets
# it as --metrics.peak_flops rather than measuring at each start, when a
# neighbour's burst would skew one run's figure.
peak=$(OMP_NUM_THREADS=$threads "$TITAN_BUILD/bench/bench_sgemm" 2>/dev/null) || peak=0
peak_gf=$(awk -v p="$peak" 'BEGIN { printf "%.1f", p / 1e9 }')
mfu() {
	awk -v g="$1" -v p="$peak_gf" 'BEGIN {
		if (g + 0 > 0 && p + 0 > 0) printf "%.1f%%", 100 * g / p; else printf "-"
	}'
}
echo "training throughput, fp32 on the CPU, $threads threads: tokens/s over $steps steps"
echo "after $warmup warm-up steps (titan: the mean of its per-step figures), best of $runs run(s)"
echo "machine: ${cpu:-unknown cpu}, $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
[ -n "$have_torch" ] &&
	echo "reference: PyTorch $("$PYTHON" -c 'import torch; print(torch.__version__)') eager," \
		"tests/bench/torch_train.py"
[ -n "$have_torch" ] || echo "reference: none ($why_no_torch)"
[ -n "$have_titan" ] || echo "titan: none ($why_no_titan)"
echo "GFLOP/s counts torchtitan's 6 * (params - embedding) + 12 * L * H * D * T per token;"
echo "MFU: against the OpenBLAS sgemm peak on $threads threads, $peak_gf GFLOP/s (build/bench/bench_sgemm)"
echo
fmt="%-11s %-7s %10s %10s %7s %9s %9s %9s %9s\n"
# shellcheck disable=SC2059  # fmt is this script's own format
printf "$fmt" config shape "titan tok/s" "torch tok/s" ratio "titan GF/s" "torch GF/s" \
	"titan MFU" "torch MFU"
for c in "${configs[@]}"; do
	# shellcheck disable=SC2086  # the fields are words
	set -- $c
	best_t=(- - -) best_p=(- -)
	for (( i = 0; i < runs; i++ )); do
		titan_run "$@"
		torch_run "$@"
		faster "$t_tps" "${best_t[0]}" && best_t=("$t_tps" "$t_gflops" "$t_mfu")
		faster "$p_tps" "${best_p[0]}" && best_p=("$p_tps" "$p_gflops")
	done
	read -r t_tps t_gflops t_mfu <<<"${best_t[*]}"
	read -r p_tps p_gflops <<<"${best_p[*]}"
	# shellcheck disable=SC2059
	printf "$fmt" "$1" "$8x$9" "$t_tps" "$p_tps" "$(ratio "$t_tps" "$p_tps")" \
		"$t_gflops" "$p_gflops" "$t_mfu" "$(mfu "$p_gflops")"
done
echo
echo "command: TITAN_BIN=$TITAN_BIN TITAN_BUILD=$TITAN_BUILD TITAN_DATA=$TITAN_DATA" \
	"PYTHON=$PYTHON TITAN_BENCH_STEPS=$steps TITAN_BENCH_WARMUP=$warmup" \
	"TITAN_BENCH_THREADS=$threads TITAN_BENCH_RUNS=$runs tests/bench/train_bench.sh"
