#!/usr/bin/env bash
# Parallel training on the CPU: how titan-train's tokens/s scales from one
# rank to two (DDP, FSDP, tensor and context parallel, the same global
# batch), the pipeline's bubble against its theory, the share of each
# step spent communicating, and the memory each rank holds under FSDP on
# 1, 2 and 4 ranks beside titan-mem's prediction.
#
#   TITAN_BIN=build/bin TITAN_BUILD=build TITAN_DATA=... tests/bench/dist_bench.sh
#
# Every rank runs one thread (OMP_NUM_THREADS=1, --training.threads=1), so
# two ranks use the cores one rank leaves idle.  Efficiency is the two-rank
# run's global tokens/s over twice the one-rank run's; each tokens/s and
# communication share is the mean of the per-step JSONL figures after the
# warm-up steps (the first step allocates and faults in its buffers).  The
# runs take the same global batch from the same data, so their last losses
# must agree: when they differ by more than 1e-4 relative the bench fails,
# since that is a wrong gradient, not a slow one.
#
# Environment: TITAN_BENCH_STEPS (timed steps, default 14), TITAN_BENCH_WARMUP
# (untimed steps first, default 3), TITAN_BENCH_RUNS (default 2; each
# throughput is the best of that many runs, the layouts taking turns, which
# evens out a shared machine).  The data is tinyshakespeare under
# $TITAN_DATA/corpus, else titan's own documentation, packed with a
# 2048-token tokenizer that titan-tok trains.  Skipped (exit 0) without
# mpirun.
set -u

# shellcheck source=tests/bench/paths.sh
. "$(dirname "$0")/paths.sh"
steps=${TITAN_BENCH_STEPS:-14}
warmup=${TITAN_BENCH_WARMUP:-3}
runs=${TITAN_BENCH_RUNS:-2}
work=$TITAN_BUILD/distbench
me=tests/bench/dist_bench.sh

die() {
	echo "$me: $*" >&2
	exit 1
}

if ! command -v mpirun >/dev/null; then
	echo "$me: skipped: mpirun not found (OpenMPI, Debian package openmpi-bin)"
	exit 0
fi
command -v jq >/dev/null || die "jq not found"
for t in titan-train titan-mem titan-tok titan-pack; do
	[ -x "$TITAN_BIN/$t" ] || die "'$TITAN_BIN/$t' not found (not built yet?)"
done
mkdir -p "$work" || die "cannot create '$work'"

corpus=$TITAN_DATA/corpus/tinyshakespeare.txt
corpus_name=tinyshakespeare
if [ ! -r "$corpus" ]; then
	corpus=$work/corpus.txt
	corpus_name="titan's man pages and README ('$TITAN_DATA' has no tinyshakespeare)"
	cat "$root"/man/man*/*.[1-9] "$root/README.md" >"$corpus" ||
		die "cannot write '$corpus'"
fi
ds=$work/data
tok_cmd=("$TITAN_BIN/titan-tok" train -q -o "$work/tok.json" --vocab-size 2048
	--special '<|endoftext|>' "$corpus")
pack_cmd=("$TITAN_BIN/titan-pack" -q -t "$work/tok.json" -o "$ds" --force
	--val-fraction 0 "$corpus")
"${tok_cmd[@]}" || die "titan-tok failed on '$corpus'"
"${pack_cmd[@]}" || die "titan-pack failed on '$corpus'"

# words ARG...: the arguments as one line a shell reads back as the same.
words() {
	local s
	s=$(printf '%q ' "$@")
	printf '%s' "${s% }"
}

# train NAME NP ARG...: titan-train on NP ranks, one thread each, one JSONL
# row a step into $work/NAME.jsonl and its log into $work/NAME.stderr; the
# command line goes into cmd[NAME].
declare -A cmd
train() {
	local name=$1 np=$2
	shift 2
	local argv=(mpirun --allow-run-as-root --oversubscribe -np "$np" -x OMP_NUM_THREADS
		"$TITAN_BIN/titan-train" "$@" --data.dataset="$ds" --training.threads=1
		--metrics.log_freq=1 --metrics.peak_flops=1e11
		--metrics.jsonl="$work/$name.jsonl")
	cmd[$name]="OMP_NUM_THREADS=1 $(words "${argv[@]}")"
	# the JSONL is appended to, and a stale row would pass for this run's
	rm -f "$work/$name.jsonl"
	OMP_NUM_THREADS=1 "${argv[@]}" >/dev/null 2>"$work/$name.stderr" || {
		tail -n 5 "$work/$name.stderr" >&2
		die "titan-train failed on $np rank(s) (log: '$work/$name.stderr'): ${cmd[$name]}"
	}
	# a titan-train that does not see its ranks would train NP copies alone
	[ "$np" = 1 ] || [ "$(jq -s 'map(.ranks // 1) | min' "$work/$name.jsonl")" = "$np" ] ||
		die "titan-train on $np ranks did not train as $np ranks: ${cmd[$name]}"
}

# steady NAME: the mean global tokens/s and communication share over the
# steps after the warm-up, and the last step's loss.
steady() {
	jq -rs --argjson w "$warmup" '
		map(select(.tps != null)) as $all
		| ($all | map(select(.step > $w))) as $s
		| (if ($s | length) > 0 then $s else $all end) as $s
		| ($s | map(.tps_global // .tps) | add / length) as $tps
		| ($s | map(.comm_share // 0) | add / length) as $comm
		| "\($tps) \($comm) \($all[-1].loss)"' "$work/$1.jsonl"
}

# Scaling: the same global batch of 8 x 256 on 1 rank, on 2 DDP replicas,
# on 2 FSDP shards, on 2 tensor-parallel ranks and on 2 context-parallel
# ranks (each the whole batch, TP its heads, CP half of every sequence); a
# step takes about 0.65 s on one rank (one AMD EPYC core).
model=(--model.flavor=debugmodel --model.dim=256 --model.n_layers=4 --model.n_heads=8
	--model.n_kv_heads=8 --model.vocab_size=2048 --training.seq_len=256
	--training.steps=$((warmup + steps)))
layouts=(one ddp fsdp tp cp)
declare -A np=([one]=1 [ddp]=2 [fsdp]=2 [tp]=2 [cp]=2)
declare -A layout_args=(
	[one]="--training.local_batch_size=8"
	[ddp]="--training.local_batch_size=4 --parallelism.data_parallel_replicate_degree=2 --parallelism.data_parallel_shard_degree=1"
	[fsdp]="--training.local_batch_size=4 --parallelism.data_parallel_shard_degree=2"
	[tp]="--training.local_batch_size=8 --parallelism.tensor_parallel_degree=2"
	[cp]="--training.local_batch_size=8 --parallelism.context_parallel_degree=2"
)
declare -A label=([one]="1 rank" [ddp]=DDP [fsdp]=FSDP [tp]="TP+SP" [cp]="CP ring")
declare -A batch=([one]=8 [ddp]=4 [fsdp]=4 [tp]=8 [cp]=8)
declare -A tps comm loss best_run
for l in "${layouts[@]}"; do
	tps[$l]=0
done
for (( i = 1; i <= runs; i++ )); do
	for l in "${layouts[@]}"; do
		# shellcheck disable=SC2086  # the arguments are words
		train "$l$i" "${np[$l]}" "${model[@]}" ${layout_args[$l]}
		read -r t c s < <(steady "$l$i") || die "cannot read '$work/$l$i.jsonl'"
		# every run's loss is checked, the best run's throughput kept
		loss[$l$i]=$s
		if awk -v a="$t" -v b="${tps[$l]}" 'BEGIN { exit !(a > b) }'; then
			tps[$l]=$t comm[$l]=$c best_run[$l]=$i
		fi
	done
done

# Memory: a model whose states (weights, gradients, AdamW's two moments)
# dominate the activations of a 1 x 64 batch, under FSDP on 1, 2 and 4 ranks.
mem_model=(--model.flavor=debugmodel --model.dim=512 --model.n_layers=4 --model.n_heads=8
	--model.n_kv_heads=8 --model.vocab_size=4096 --training.seq_len=64
	--training.local_batch_size=1)
mem_ranks=(1 2 4)
declare -A states peak pred_states pred_tracked pred_total mem_cmd
for n in "${mem_ranks[@]}"; do
	train "mem$n" "$n" "${mem_model[@]}" --parallelism.data_parallel_shard_degree="$n" \
		--training.steps=2
	# "memory: parameters X MiB, gradients Y MiB, AdamW Z MiB, ..." (rank 0's)
	states[$n]=$(sed -n 's/.*memory: parameters \([0-9.]*\) MiB, gradients \([0-9.]*\) MiB, AdamW \([0-9.]*\) MiB.*/\1 \2 \3/p' \
		"$work/mem$n.stderr" | awk 'NR == 1 { printf "%.1f", $1 + $2 + $3 }')
	[ -n "${states[$n]}" ] || die "no 'memory: parameters' line in '$work/mem$n.stderr'"
	peak[$n]=$(jq -rs 'map(select(.mem_peak_gib != null)) | .[-1].mem_peak_gib * 1024' \
		"$work/mem$n.jsonl")
	argv=("$TITAN_BIN/titan-mem" --json "${mem_model[@]}"
		--parallelism.data_parallel_shard_degree="$n" --training.threads=1 --world-size "$n")
	mem_cmd[$n]=$(words "${argv[@]}")
	json=$("${argv[@]}") || die "titan-mem failed: ${mem_cmd[$n]}"
	read -r "pred_states[$n]" "pred_tracked[$n]" "pred_total[$n]" < <(printf '%s\n' "$json" |
		jq -r '.breakdown as $b
			| [$b.params + $b.master_weights + $b.grads + $b.optimizer,
			   .tracked_bytes, .total_bytes] | map(. / 1048576) | @tsv') ||
		die "cannot read titan-mem's JSON: ${mem_cmd[$n]}"
done

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "parallel training, fp32 on the CPU, one thread a rank: global tokens/s, the mean"
echo "of steps $((warmup + 1))..$((warmup + steps)) (the first $warmup warm up), best of $runs run(s)"
echo "machine: ${cpu:-unknown cpu}, $(nproc) cores, $(mpirun --version 2>/dev/null | head -n 1);" \
	"$(date -u '+%Y-%m-%d %H:%M UTC')"
echo "data: $corpus_name, a 2048-token titan-tok BPE:"
echo "  $(words "${tok_cmd[@]}") &&"
echo "  $(words "${pack_cmd[@]}")"
echo "model: dim 256, 4 layers, 8 heads, vocab 2048; global batch 8 x 256"
echo "efficiency: global tokens/s over twice the 1-rank figure; comm: the share of a step"
echo "spent in communication (JSONL comm_share); loss: the last step's, which must agree"
echo
fmt="%-4s %-7s %5s %6s %12s %9s %10s %7s  %s\n"
# shellcheck disable=SC2059  # fmt is this script's own format
printf "$fmt" "" layout ranks batch "global tok/s" "tok/s/rk" efficiency comm "last loss"
declare -A eff
n=0
for l in "${layouts[@]}"; do
	n=$((n + 1))
	e=- c=-
	if [ "$l" != one ]; then
		eff[$l]=$(awk -v a="${tps[$l]}" -v b="${tps[one]}" -v r="${np[$l]}" \
			'BEGIN { printf "%.1f", 100 * a / (r * b) }')
		e=${eff[$l]}% c=$(awk -v c="${comm[$l]}" 'BEGIN { printf "%.1f%%", 100 * c }')
	fi
	# shellcheck disable=SC2059
	printf "$fmt" "[$n]" "${label[$l]}" "${np[$l]}" "${batch[$l]}x256" \
		"$(printf '%.0f' "${tps[$l]}")" \
		"$(awk -v a="${tps[$l]}" -v r="${np[$l]}" 'BEGIN { printf "%.0f", a / r }')" \
		"$e" "$c" "${loss[$l${best_run[$l]}]}"
done
echo
n=0
for l in "${layouts[@]}"; do
	n=$((n + 1))
	echo "[$n] ${cmd[$l${best_run[$l]}]}"
done

echo
echo "memory a rank holds under FSDP, MiB: dim 512, 4 layers, vocab 4096, batch 1 x 64, 2 steps;"
echo "states: parameters + gradients + AdamW (titan-train's log, rank 0); peak: the largest"
echo "rank's tracked peak (JSONL mem_peak_gib); titan-mem: its --json breakdown, tracked_bytes"
echo "and total_bytes (tracked plus what the tracker does not see)"
echo
fmt="%-4s %5s %9s %9s %9s %9s %9s %7s %9s\n"
# shellcheck disable=SC2059
printf "$fmt" "" ranks states "x ranks" predicted peak predicted "vs peak" "mem total"
i=0
for n in "${mem_ranks[@]}"; do
	i=$((i + 1))
	awk -v tag="[m$i]" -v n="$n" -v s="${states[$n]}" -v ps="${pred_states[$n]}" \
		-v p="${peak[$n]}" -v pt="${pred_tracked[$n]}" -v tot="${pred_total[$n]}" \
		-v fmt="$fmt" 'BEGIN {
		printf fmt, tag, n, sprintf("%.1f", s), sprintf("%.1f", s * n),
			sprintf("%.1f", ps), sprintf("%.1f", p), sprintf("%.1f", pt),
			sprintf("%+.1f%%", 100 * (pt - p) / p), sprintf("%.1f", tot) }'
done
echo
i=0
for n in "${mem_ranks[@]}"; do
	i=$((i + 1))
	echo "[m$i] ${cmd[mem$n]}"
	echo "     ${mem_cmd[$n]}"
done

# Pipeline bubble: 2 ranks, the same batch of 8 x 256 in m micro-batches;
# a rank idles (waiting for its neighbour) about (p - 1) / (m + p - 1) of
# a step, (p - 1) / (v m + p - 1) when it runs v stages (Interleaved1F1B:
# 2 stages of 1 layer each, m a multiple of p).  The measured figure is rank 0's share of the step spent in the
# pipeline's sends and receives (JSONL comm_share), transfers included.
echo
echo "pipeline bubble, 2 ranks, dim 256, 4 layers, batch 8 x 256: rank 0's share of the step"
echo "waiting on the pipeline (JSONL comm_share) against (p - 1) / (v m + p - 1), v stages a rank"
echo
fmt="%-5s %-15s %4s %10s %12s  %s\n"
# shellcheck disable=SC2059
printf "$fmt" "" schedule m measured theoretical "last loss"
i=0
for sched in GPipe 1F1B Interleaved1F1B; do
	v=1
	[ "$sched" = Interleaved1F1B ] && v=2
	for m in 1 2 4 8; do
		[ $((m % 2)) -ne 0 ] && [ "$v" -gt 1 ] && continue
		i=$((i + 1))
		name=pp-$sched-$m
		# shellcheck disable=SC2086
		train "$name" 2 "${model[@]}" --training.local_batch_size=8 \
			--parallelism.pipeline_parallel_degree=2 \
			--parallelism.pipeline_parallel_schedule=$sched \
			--parallelism.pipeline_parallel_microbatch_size=$((8 / m))
		read -r t c l < <(steady "$name") || die "cannot read '$work/$name.jsonl'"
		awk -v a="${loss[one1]}" -v b="$l" 'BEGIN { d = a - b; if (d < 0) d = -d
			m = a < 0 ? -a : a; exit !(d <= 1e-4 * m) }' ||
			die "pipeline $sched m=$m: last loss $l against 1 rank's ${loss[one1]}"
		# shellcheck disable=SC2059
		printf "$fmt" "[p$i]" "$sched" "$m" "$(awk -v c="$c" 'BEGIN { printf "%.1f%%", 100 * c }')" \
			"$(awk -v m="$m" -v v="$v" 'BEGIN { printf "%.1f%%", 100 / (v * m + 1) }')" "$l"
	done
done
echo
i=0
for sched in GPipe 1F1B Interleaved1F1B; do
	for m in 1 2 4 8; do
		[ -n "${cmd[pp-$sched-$m]:-}" ] || continue
		i=$((i + 1))
		echo "[p$i] ${cmd[pp-$sched-$m]}"
	done
done

echo
echo "command: TITAN_BIN=$TITAN_BIN TITAN_BUILD=$TITAN_BUILD TITAN_DATA=$TITAN_DATA" \
	"TITAN_BENCH_STEPS=$steps TITAN_BENCH_WARMUP=$warmup TITAN_BENCH_RUNS=$runs $me"
awk -v d="${eff[ddp]}" -v f="${eff[fsdp]}" -v t="${eff[tp]}" -v cd="${comm[ddp]}" \
	-v cf="${comm[fsdp]}" -v ct="${comm[tp]}" -v p="${eff[cp]}" -v cp="${comm[cp]}" 'BEGIN {
	printf "dp scaling 1->2 ranks: DDP %.0f%% FSDP %.0f%% efficiency; comm share DDP %.0f%% FSDP %.0f%%\n",
		d, f, 100 * cd, 100 * cf
	printf "tp scaling 1->2 ranks: TP+SP %.0f%% efficiency; comm share %.0f%%\n", t, 100 * ct
	printf "cp scaling 1->2 ranks: CP %.0f%% efficiency; comm share %.0f%%\n", p, 100 * cp }'

# The losses last: a table first shows what disagreed.
bad=
for (( i = 1; i <= runs; i++ )); do
	for l in ddp fsdp tp cp; do
		awk -v a="${loss[one1]}" -v b="${loss[$l$i]}" 'BEGIN {
			d = a - b; if (d < 0) d = -d
			m = a < 0 ? -a : a
			exit !(d <= 1e-4 * m) }' ||
			bad+="  ${label[$l]} run $i: ${loss[$l$i]} against 1 rank's ${loss[one1]}"$'\n'
	done
done
[ -z "$bad" ] || die "the last losses differ by more than 1e-4 relative:"$'\n'"$bad"
