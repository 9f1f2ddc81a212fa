#!/usr/bin/env bash
# Where a training step's GPU time goes, kernel by kernel: Nsight Compute
# (ncu) times a window of kernels of llama3_1b's training (bf16 GEMMs,
# batch 2 x 2048, causal masks, as the bench runs it) after the start-up
# and the first step, and the kernels are listed by their total time in
# the window, with calls and share.  The window is about one step; the
# number of AdamW launches in it says how many steps it caught.
#
#   TITAN_BIN=build/bin TITAN_BUILD=build tests/gpu/profile.sh [titan-train options...]
#
# Options go to titan-train after the defaults (another flavor, batch or
# precision).  Environment: TITAN_GPU_PROFILE_SKIP and _COUNT (kernels
# skipped, then timed; default 1500 and 1200).  ncu times each kernel alone
# and with cold caches, so short memory-bound kernels read slower than they
# run in the stream: the ranking is what this is for.  Without ncu or
# python3 it says so and exits 0.
set -u -o pipefail
cd "$(dirname "$0")/../.." || exit 1
bin=${TITAN_BIN:-build/bin}
work=${TITAN_BUILD:-build}/gpuprofile
skip=${TITAN_GPU_PROFILE_SKIP:-1500}
count=${TITAN_GPU_PROFILE_COUNT:-1200}

for tool in ncu python3; do
	if ! command -v "$tool" >/dev/null; then
		echo "profile: skipped: no $tool here"
		exit 0
	fi
done
mkdir -p "$work" || exit 1
# shellcheck source=tests/gpu/dataset.sh
. tests/gpu/dataset.sh
if ! doc_dataset "$bin" "$work"; then
	echo "profile: cannot make the dataset" >&2
	exit 1
fi
ncu --metrics gpu__time_duration.sum --launch-skip "$skip" --launch-count "$count" \
	--print-summary per-kernel --csv \
	"$bin/titan-train" --data.dataset="$work/data" --device cuda -q \
	--model.flavor=llama3_1b --training.seq_len=2048 --training.local_batch_size=2 \
	--training.matmul_dtype=bfloat16 --data.mask=causal --training.steps=3 "$@" \
	>"$work/ncu.csv" 2>"$work/ncu.err" || {
	echo "profile: ncu failed:" >&2
	tail -5 "$work/ncu.err" >&2
	exit 1
}
python3 - "$work/ncu.csv" <<'EOF'
import csv, sys

unit = {"ns": 1e-6, "nsecond": 1e-6, "us": 1e-3, "usecond": 1e-3, "ms": 1.0, "msecond": 1.0}
rows, head = [], None
for r in csv.reader(open(sys.argv[1])):
    if "Kernel Name" in r:
        head = r
    elif head and len(r) == len(head):
        d = dict(zip(head, r))
        if d.get("Metric Name") != "gpu__time_duration.sum":
            continue
        n = int(d["Invocations"].replace(",", ""))
        ms = n * float(d["Average"].replace(",", "")) * unit.get(d["Metric Unit"], 1.0)
        name = d["Kernel Name"].split("(")[0].replace("void ", "")
        rows.append((ms, n, name))
merged = {}   # one line a kernel, whatever its launch shapes
for ms, n, name in rows:
    t, c = merged.get(name, (0.0, 0))
    merged[name] = (t + ms, c + n)
rows = [(t, c, name) for name, (t, c) in merged.items()]
total = sum(r[0] for r in rows)
steps = sum(r[1] for r in rows if r[2].startswith("adamw"))
print(f"profile: {sum(r[1] for r in rows)} kernels timed, {total:.1f} ms "
      f"({steps} AdamW launch(es) among them)")
for ms, n, name in sorted(rows, reverse=True)[:25]:
    print(f"{ms:9.2f} ms {100 * ms / total:5.1f}% {n:5d}x  {name[:90]}")
EOF
