#!/usr/bin/env bash
# Training on the GPU, the checks a lent GPU is for:
#   parity  200 steps of debugmodel on --device cuda against the same run
#           on the CPU with fp32 GEMMs, and 100 with bf16 GEMM operands
#           (attention's included): the GPU must track the CPU's loss curve (relative
#           difference per step under 1e-2, bf16's tolerance; the figure is
#           printed)
#   ops     each op alone at llama3_1b's shapes, titan's and PyTorch's
#           (tests/bench/bench_ops.c, tests/bench/torch_ops.py)
#   bench   tokens/s, TFLOP/s and MFU of titan-train on the GPU, fp32 and
#           bf16 GEMMs, for debugmodel, llama3_1b and 4 layers of
#           llama3_8b, next to PyTorch (eager fp32, bf16 autocast with its
#           fused attention, and torch.compile of that for llama3_1b) on
#           the same shapes when a PyTorch with CUDA is installed
# The corpus is the repository's own documentation, so the script needs
# nothing outside the tree.  Exits non-zero when parity fails or a run
# fails.
#
#   TITAN_BIN=build/bin TITAN_BUILD=build tests/gpu/train_check.sh
#
# Environment: TITAN_GPU_STEPS (parity steps, default 200; bf16:
# TITAN_GPU_BF16_STEPS, default 100),
# TITAN_GPU_DEVICE (default cuda; cpu-fenced checks the script itself on a
# machine without a GPU), TITAN_GPU_BENCH (default 1; 0 skips the bench),
# TITAN_GPU_CPU_ONLY=DIR (only the CPU's parity runs, their metrics saved
# in DIR as cpu-DTYPE-STEPS.jsonl: tests/gpu/bundle.sh makes them ahead),
# TITAN_GPU_1B_BATCH (llama3_1b's batch in the bench, default 2: what its
# fp32 run fits in 80 GB beside PyTorch's),
# TITAN_GPU_CPU_LOSSES=DIR (take the CPU's runs from there when they are,
# rather than training on the CPU: a CPU run's losses do not depend on
# the machine or its thread count).
set -u -o pipefail
cd "$(dirname "$0")/../.." || exit 1
bin=${TITAN_BIN:-build/bin}
work=${TITAN_BUILD:-build}/gpucheck
PYTHON=${PYTHON:-python3}
steps=${TITAN_GPU_STEPS:-200}
bf16_steps=${TITAN_GPU_BF16_STEPS:-100}
device=${TITAN_GPU_DEVICE:-cuda}
mkdir -p "$work"
status=0

# shellcheck source=tests/gpu/dataset.sh
. tests/gpu/dataset.sh
if ! doc_dataset "$bin" "$work"; then
	echo "train_check: cannot make the dataset" >&2
	exit 1
fi

# train JSONL DEVICE ARGS...: titan-train on the dataset, metrics to JSONL.
train() {
	local jsonl=$1 device=$2
	shift 2
	rm -f "$jsonl"
	"$bin/titan-train" --data.dataset="$work/data" --device "$device" \
		--metrics.jsonl="$jsonl" --metrics.log_freq=1 -q "$@"
}

# parity DTYPE STEPS: debugmodel on the device against the CPU, both with
# fp32 or bf16 GEMM operands (training.matmul_dtype; bf16 is attention's
# too, the same rounding on both): every step's loss within 1e-2 of the
# CPU's.
parity() {
	local dtype=$1 steps=$2 flags=
	[ "$dtype" = bf16 ] && flags=--training.matmul_dtype=bfloat16
	if [ -n "${TITAN_GPU_CPU_ONLY:-}" ]; then
		echo "== parity: debugmodel, $steps steps, the CPU's side only, $dtype GEMMs"
	else
		echo "== parity: debugmodel, $steps steps, $device against cpu, $dtype GEMMs"
	fi
	common="--model.flavor=debugmodel --training.steps=$steps --training.seq_len=256
		--training.local_batch_size=8 --lr_scheduler.warmup_steps=20 $flags"
	local saved=${TITAN_GPU_CPU_LOSSES:-/nonexistent}/cpu-$dtype-$steps.jsonl
	if [ -n "${TITAN_GPU_CPU_ONLY:-}" ]; then
		# shellcheck disable=SC2086
		train "$TITAN_GPU_CPU_ONLY/cpu-$dtype-$steps.jsonl" cpu $common || status=1
		return
	fi
	local cpu_ok=true
	if [ -s "$saved" ]; then
		echo "(the CPU's run from $saved)"
		cp "$saved" "$work/cpu.jsonl" || cpu_ok=false
	else
		# shellcheck disable=SC2086
		train "$work/cpu.jsonl" cpu $common || cpu_ok=false
	fi
	# shellcheck disable=SC2086
	if $cpu_ok && train "$work/cuda.jsonl" "$device" $common; then
		jq -rn --slurpfile a "$work/cpu.jsonl" --slurpfile b "$work/cuda.jsonl" --arg t "$dtype" '
			def losses: map(select(.loss != null) | {key: (.step | tostring), value: .loss}) | from_entries;
			($a | losses) as $x | ($b | losses) as $y
			| [$x | keys[] | (($x[.] - $y[.]) / $x[.] | fabs)] as $d
			| "steps \($d | length), max relative loss difference \($d | max), last loss cpu \($x[($x | keys | map(tonumber) | max | tostring)]) device \($y[($y | keys | map(tonumber) | max | tostring)])",
			  (if ($d | length) == 0 or ($d | max) >= 1e-2 then "parity \($t): FAILED" else "parity \($t): ok" end)' |
			tee "$work/parity.txt"
		grep -q '^parity [a-z0-9]*: ok' "$work/parity.txt" || status=1
	else
		echo "parity $dtype: FAILED (a run failed)"
		status=1
	fi
}

parity fp32 "$steps"
# a bf16 step is some six times slower than an fp32 one on the CPU (its
# attention is the tile schedule over host memory): fewer steps keep
# bench-cuda short
parity bf16 "$bf16_steps"
[ -n "${TITAN_GPU_CPU_ONLY:-}" ] && exit $status

# The GPU's datasheet peaks (dense, FLOP/s) as "bf16 fp32", for MFU as
# papers quote it; unknown GPUs get none and only the measured figure.
datasheet_peaks() {
	local name
	name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
	case $name in
	*H100*PCIe*) echo "756e12 51.2e12" ;;
	*H100* | *H200*) echo "989.4e12 66.9e12" ;;
	*A100*) echo "312e12 19.5e12" ;;
	esac
}

# bench NAME DTYPE ARGS...: titan-train's mean tokens/s and MFU over the
# steps after the first two, on the GPU.  DTYPE fp32 or bf16 (the GEMMs'
# operands, training.matmul_dtype); MFU is against the same GEMM's measured
# peak, and against the datasheet's when the GPU is known.
bench() {
	local name=$1 dtype=$2 peak=
	shift 2
	# causal, as PyTorch's reference: the corpus's documents are lines,
	# and block-causal masks over them would leave attention nearly free
	local flags=(--training.steps=8 --data.mask=causal)
	[ "$dtype" = bf16 ] && flags+=(--training.matmul_dtype=bfloat16)
	if [ -n "$peaks" ]; then
		if [ "$dtype" = bf16 ]; then peak=${peaks% *}; else peak=${peaks#* }; fi
	fi
	if ! train "$work/bench.jsonl" "$device" "${flags[@]}" "$@"; then
		echo "$name: titan $dtype: FAILED"
		status=1
		return
	fi
	jq -rs --arg n "$name" --arg d "$device" --arg t "$dtype" --arg p "$peak" '
		map(select(.loss != null and .step > 2)) as $r
		| ($r | map(.tflops) | add / length) as $tf
		| "\($n): titan \($d) \($t)  tokens/s \($r | map(.tps) | add / length | floor)  TFLOP/s \($tf * 100 | floor / 100)  MFU \($r | map(.mfu) | add / length * 10 | floor / 10)% of the measured \($t) matmul peak"
		  + (if $p != "" then ", \($tf * 1e12 / ($p | tonumber) * 1000 | floor / 10)% of the datasheet" else "" end)
		  + "  mem \($r[-1].mem_peak_gib * 100 | floor / 100) GiB"' \
		"$work/bench.jsonl"
}

# torch_ref NAME MODES ARGS...: PyTorch on the GPU, when it can, in each of
# MODES (comma-separated: fp32, bf16 = autocast with the fused causal
# attention, bf16c = the same under torch.compile).
torch_ref() {
	local name=$1 modes=$2 mode flags
	shift 2
	for mode in ${modes//,/ }; do
		case $mode in
		fp32) flags= ;;
		bf16) flags="--bf16 --sdpa" ;;
		bf16c) flags="--bf16 --sdpa --compile" ;;
		esac
		# shellcheck disable=SC2086
		"$PYTHON" tests/bench/torch_train.py --device cuda $flags --steps 5 --warmup 2 "$@" \
			2>"$work/torch.err" | jq -r --arg n "$name" '"\($n): PyTorch \(.device)  tokens/s \(.tps | floor)"' ||
			{ echo "$name: PyTorch $mode: failed:"; tail -n 3 "$work/torch.err"; }
	done
}

[ "${TITAN_GPU_BENCH:-1}" = 0 ] && exit $status
have_torch=false
"$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null &&
	have_torch=true

# Each op alone at llama3_1b's shapes, titan's then PyTorch's: where a
# step's time goes (tiny shapes when checking the script without a GPU).
echo "== ops: one step's ops alone"
small=
[ "$device" = cuda ] || small=--small
# shellcheck disable=SC2086
"${TITAN_BUILD:-build}/bench/bench_ops" --device "$device" $small || status=1
# shellcheck disable=SC2086
$have_torch && "$PYTHON" tests/bench/torch_ops.py --device cuda $small

echo "== bench: one GPU"
peaks=$(datasheet_peaks)
for dtype in fp32 bf16; do
	bench debugmodel $dtype --model.flavor=debugmodel --training.seq_len=2048 \
		--training.local_batch_size=8
done
$have_torch && torch_ref debugmodel fp32,bf16 --dim 256 --n-layers 6 --n-heads 16 \
	--n-kv-heads 16 --vocab 2048 --multiple-of 256 --batch 8 --seq 2048
b1=${TITAN_GPU_1B_BATCH:-2}
for dtype in fp32 bf16; do
	bench "llama3_1b (batch $b1)" $dtype --model.flavor=llama3_1b --training.seq_len=2048 \
		--training.local_batch_size="$b1"
done
$have_torch && torch_ref "llama3_1b (batch $b1)" fp32,bf16,bf16c --dim 2048 --n-layers 16 \
	--n-heads 32 --n-kv-heads 8 --vocab 128256 --multiple-of 256 --ffn-dim-multiplier 1.5 \
	--batch "$b1" --seq 2048
# llama3_8b's layers, 4 of its 32: what one GPU holds with fp32 weights,
# gradients and AdamW moments
bench llama3_8b_4l bf16 --model.flavor=llama3_8b --model.n_layers=4 \
	--training.seq_len=2048 --training.local_batch_size=1
$have_torch && torch_ref llama3_8b_4l bf16 --dim 4096 --n-layers 4 --n-heads 32 \
	--n-kv-heads 8 --vocab 128256 --multiple-of 1024 --ffn-dim-multiplier 1.3 --batch 1 --seq 2048
$have_torch || echo "(no PyTorch with CUDA here: no reference figures)"
exit $status
