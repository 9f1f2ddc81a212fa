#!/bin/sh
# deps.sh - install what titan needs and is missing.
#   deps.sh build   headers and libraries to build the tools
#   deps.sh test    the build set plus the test tools (bats, MPI, PyTorch, Node.js)
#   deps.sh demo    the build set plus the demo corpus (the King James Bible)
#   deps.sh fuzz    the build set plus clang's libFuzzer runtime
# Libraries are probed by compiling and linking a small program, not by asking
# dpkg.  As root the missing Debian packages are installed with apt-get;
# otherwise the one apt-get line to run is printed and the script fails.
set -u
what=${1:-build}
cc=${CC:-cc}
missing=""

probe_lib() { # header "compiler and linker flags" package
	tmp=$(mktemp -d)
	# pcre2.h wants its code unit width before it is included
	printf '#define PCRE2_CODE_UNIT_WIDTH 8\n#include <%s>\nint main(void){return 0;}\n' "$1" >"$tmp/p.c"
	# shellcheck disable=SC2086 # $2 is a list of flags
	if ! $cc "$tmp/p.c" -o "$tmp/p" $2 >/dev/null 2>&1; then
		missing="$missing $3"
	fi
	rm -rf "$tmp"
}
probe_cmd() { # command package
	command -v "$1" >/dev/null 2>&1 || missing="$missing $2"
}

command -v "$cc" >/dev/null 2>&1 || missing="$missing gcc make"
probe_lib jansson.h -ljansson libjansson-dev
probe_lib zstd.h -lzstd libzstd-dev
probe_lib archive.h -larchive libarchive-dev
probe_lib pcre2.h -lpcre2-8 libpcre2-dev
# the OpenMP build of OpenBLAS: BLAS and titan's loops share one thread pool
probe_lib cblas.h -lopenblas libopenblas-openmp-dev
# OpenMPI keeps mpi.h in its own directory: its flags as the Makefile gets them
mpi_flags=$(pkg-config --cflags --libs ompi-c 2>/dev/null ||
	echo "$(mpicc --showme:compile 2>/dev/null) $(mpicc --showme:link 2>/dev/null)")
probe_lib mpi.h "$mpi_flags -lmpi" libopenmpi-dev
case $what in
test)
	probe_cmd bats bats
	probe_cmd mpirun openmpi-bin
	probe_cmd zstd zstd
	probe_cmd jq jq
	probe_cmd node nodejs
	probe_cmd npm npm
	probe_cmd python3 python3
	# the golden files' reference; Debian's python, whatever python3 is first on PATH
	/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1 || missing="$missing python3-torch python3-numpy"
	;;
demo)
	probe_cmd bible "bible-kjv bible-kjv-text"
	;;
fuzz)
	tmp=$(mktemp -d)
	printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n){(void)d;(void)n;return 0;}\n' >"$tmp/f.c"
	clang -fsanitize=fuzzer "$tmp/f.c" -o "$tmp/f" >/dev/null 2>&1 || missing="$missing clang libclang-rt-14-dev"
	rm -rf "$tmp"
	;;
esac

[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "titan: installing:$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2 && apt-get install -y -qq $missing >&2 && exit 0
	echo "titan: apt-get failed; install by hand:$missing" >&2
	exit 1
fi
echo "titan: missing packages; run:" >&2
echo "  sudo apt-get install -y$missing" >&2
exit 1
