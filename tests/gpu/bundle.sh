#!/usr/bin/env bash
# Make build/gpu-bundle.tar.xz: what a lent GPU machine needs to run
# tests/gpu/run.sh without building anything, for a machine that has a GPU,
# its driver, CUDA's libraries and PyTorch but none of titan's build
# dependencies and no package registry.  Run here, on the machine that
# builds; carry build/gpu-bundle.tar.xz with the working tree (xz: the
# libraries take some 90 MB unpacked, what a lent machine takes with the
# tree is 64 MiB), and run.sh unpacks it into build/gpu-bundle.
#
#   tests/gpu/bundle.sh         # from the repository root; make gpu-bundle
#
# It holds:
#   bin/ tests/ bench/          the CUDA build's programs, debug info
#                               stripped, each in .real/ behind a script that
#                               gives it lib/ (and nothing else on the
#                               machine: its python3, PyTorch and tools keep
#                               their own libraries); BUILD=build/gpu-bundle
#   lib/                        the shared libraries they (and jq) load,
#                               but the C library's, the compiler's runtime
#                               and CUDA's own (cudart, cuBLAS, NCCL: the GPU
#                               machine's, which match its driver)
#   tools/                      bats and jq, which tests/gpu/run.sh uses
#   losses/                     the CPU's side of the parity runs, made here
#                               (deterministic at any thread count, so the
#                               GPU machine's time goes to the GPU)
#   data/                       two tokenizers and the corpora of
#                               tests/bench/pack_bench.sh, for its last step
#   env.sh                      sourced by run.sh: PATH, and where the
#                               programs' scripts find CUDA's libraries
#   stamp                       the commit (and local changes) it was made from
# Environment: TITAN_GPU_STEPS, TITAN_GPU_BF16_STEPS as train_check.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

die() {
	echo "tests/gpu/bundle.sh: $*" >&2
	exit 1
}

command -v nvcc >/dev/null || die "nvcc not found: the bundle is the CUDA build"
command -v bats >/dev/null || die "bats not found (make test-deps)"
command -v jq >/dev/null || die "jq not found (make test-deps)"
make -j"$(nproc)" CUDA=1 all
dest=build/gpu-bundle
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"/{bin,tests/tools,bench,lib,tools,losses}

progs=()
for f in build/bin/* build/tests/test_* build/tests/tools/* build/bench/*; do
	if [ ! -f "$f" ] || [ ! -x "$f" ]; then
		continue
	fi
	to=$dest.tmp/${f#build/}
	cp "$f" "$to"
	strip --strip-debug "$to"
	progs+=("$to")
done
jq_bin=$(command -v jq)
cp "$jq_bin" "$dest.tmp/tools/jq"
progs+=("$dest.tmp/tools/jq")

# Shared libraries, found as the dynamic linker finds them here.  Left out:
# the C library's (the GPU machine's is as new or newer), the compiler's
# C++ and unwinding runtimes (the same), and CUDA's, which must match the
# driver there.
skip='^(libc|libm|libdl|libpthread|librt|libresolv|ld-linux-x86-64|libstdc\+\+|libgcc_s|libcudart|libcublas|libcublasLt|libnccl|libcuda)\.so'
for p in "${progs[@]}"; do
	ldd "$p" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' || true
done | sort -u | while read -r name path; do
	if [[ ! $name =~ $skip ]]; then
		cp -L "$path" "$dest.tmp/lib/$name"
	fi
done

# bats keeps its parts beside it: ROOT/bin, ROOT/libexec/bats-core,
# ROOT/lib/bats-core
bats_root=$(dirname "$(dirname "$(readlink -f "$(command -v bats)")")")
mkdir -p "$dest.tmp/tools/bats/bin" "$dest.tmp/tools/bats/libexec" "$dest.tmp/tools/bats/lib"
cp "$bats_root/bin/bats" "$dest.tmp/tools/bats/bin/"
cp -r "$bats_root/libexec/bats-core" "$dest.tmp/tools/bats/libexec/"
cp -r "$bats_root/lib/bats-core" "$dest.tmp/tools/bats/lib/"

# Each program behind a script that gives it the bundle's libraries
# alone, TITAN_BUNDLE_LIBS (env.sh)
for p in "${progs[@]}"; do
	dir=$(dirname "$p") name=$(basename "$p")
	mkdir -p "$dir/.real"
	mv "$p" "$dir/.real/$name"
	cat >"$p" <<'WRAP'
#!/bin/sh
LD_LIBRARY_PATH="$TITAN_BUNDLE_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$(dirname "$0")/.real/$(basename "$0")" "$@"
WRAP
	chmod +x "$p"
done

cat >"$dest.tmp/env.sh" <<'ENV'
# Sourced by tests/gpu/run.sh on the GPU machine: the bundle's tools on
# PATH, and for its programs' scripts the bundle's libraries, then CUDA's
# where that machine keeps them (its toolkit, or the NVIDIA Python
# packages beside its PyTorch).
bundle=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PATH="$bundle/tools/bats/bin:$bundle/tools:$PATH"
cuda_libs=
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
	[ -d "$d" ] && cuda_libs="$cuda_libs:$d"
done
for pkg in nccl cublas cuda_runtime; do
	d=$(python3 -c "import nvidia.$pkg as m; print(list(m.__path__)[0])" 2>/dev/null) &&
		[ -d "$d/lib" ] && cuda_libs="$cuda_libs:$d/lib"
done
export TITAN_BUNDLE_LIBS="$bundle/lib$cuda_libs"
unset bundle cuda_libs d pkg
ENV
{ git rev-parse HEAD 2>/dev/null || echo unknown; git diff HEAD 2>/dev/null | sha256sum | cut -c1-16; } \
	>"$dest.tmp/stamp"

# The pack bench's inputs, so that run.sh measures titan-pack against
# titan-tok on the lent machine's many cores as well (a few MB once
# compressed); left out without the test data.
data=${TITAN_DATA:-../shared/data}
if [ -r "$data/corpus/kjv.txt" ]; then
	for f in tokenizers/gpt2/tokenizer.json tokenizers/llama3/tokenizer.json \
		corpus/kjv.txt corpus/tinyshakespeare.txt corpus/tinyshakespeare.jsonl; do
		mkdir -p "$dest.tmp/data/$(dirname "$f")"
		cp "$data/$f" "$dest.tmp/data/$f"
	done
fi

# The CPU's half of the parity runs, with the programs that go.
TITAN_BIN=build/bin TITAN_BUILD=build TITAN_GPU_CPU_ONLY="$dest.tmp/losses" \
	tests/gpu/train_check.sh

rm -rf "$dest"
mv "$dest.tmp" "$dest"
tar -C build -cJf "$dest.tar.xz.tmp" gpu-bundle
mv "$dest.tar.xz.tmp" "$dest.tar.xz"
# run.sh unpacks the archive afresh: a folder left here would only go stale
rm -rf "$dest"
size=$(du -k "$dest.tar.xz" | cut -f1)
if [ "$size" -gt $((56 * 1024)) ]; then
	echo "tests/gpu/bundle.sh: warning: $dest.tar.xz is $size KiB; a lent machine takes 64 MiB with the tree" >&2
fi
echo "made $dest.tar.xz ($size KiB): carry it, and run tests/gpu/run.sh there"
