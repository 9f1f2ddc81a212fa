#!/usr/bin/env bash
# Tokenizer throughput: titan-tok against OpenAI tiktoken and Hugging Face
# tokenizers, on English prose and on C source, one thread and all cores.
#
#   TITAN_BIN=build/bin TITAN_DATA=... TITAN_BUILD=build tests/bench/run.sh
#
# Environment: TITAN_BENCH_RUNS (default 3; each figure is the best of that
# many runs), TITAN_BENCH_TOKENIZERS (default "gpt2 llama3 cl100k_base
# o200k_base").  Every figure times encoding only: titan-tok's comes from its
# --stats line, the references' from tok_bench.js, which starts the clock
# after loading the tokenizer and reading the text, as titan-tok does.
set -u

# shellcheck source=tests/bench/paths.sh
. "$(dirname "$0")/paths.sh"
runs=${TITAN_BENCH_RUNS:-3}
tokenizers=${TITAN_BENCH_TOKENIZERS:-gpt2 llama3 cl100k_base o200k_base}
tok=$TITAN_BIN/titan-tok
work=$TITAN_BUILD/tokbench
command_line="TITAN_BIN=$TITAN_BIN TITAN_DATA=$TITAN_DATA TITAN_BUILD=$TITAN_BUILD"
command_line+=" TITAN_BENCH_RUNS=$runs TITAN_BENCH_TOKENIZERS='$tokenizers' tests/bench/run.sh"

die() {
	echo "tests/bench/run.sh: $*" >&2
	exit 1
}

[ -x "$tok" ] || die "'$tok' not found: run make first"
for f in kjv.txt tinyshakespeare.txt; do
	[ -r "$TITAN_DATA/corpus/$f" ] || die "'$TITAN_DATA/corpus/$f' not found: set TITAN_DATA"
done
mkdir -p "$work" || die "cannot create '$work'"

# The English text: the Bible then Shakespeare, 5,413,633 bytes.
english=$work/english.txt
if ! cat "$TITAN_DATA/corpus/kjv.txt" "$TITAN_DATA/corpus/tinyshakespeare.txt" >"$english.tmp" ||
	! mv "$english.tmp" "$english"; then
	die "cannot write '$english'"
fi

# The code text: the C headers under /usr/include in path order, whole files
# until 5 MB is reached.  Files that are not valid UTF-8 are left out, so
# that every implementation reads the same bytes.
code=$work/code.txt
: >"$code.tmp" || die "cannot write '$code.tmp'"
total=0
while IFS= read -r -d '' f; do
	LC_ALL=C.UTF-8 grep -qaxv '.*' "$f" && continue
	cat "$f" >>"$code.tmp" || die "cannot write '$code.tmp'"
	total=$(( total + $(stat -c %s "$f") ))
	[ "$total" -ge 5000000 ] && break
done < <(find /usr/include -type f -name '*.h' -print0 2>/dev/null | LC_ALL=C sort -z)
mv "$code.tmp" "$code"
[ "$total" -gt 0 ] || die "no C headers under /usr/include (install libc6-dev)"

# The tiktoken files of tokenizer NAME: rank file, pattern, specials.
tiktoken_files() {
	local d=$TITAN_DATA/tokenizers/$1
	case $1 in
	gpt2)	echo "$d/r50k_base.tiktoken $d/r50k_base.pattern.txt $d/r50k_base.special_tokens.json" ;;
	llama3)	echo "$d/tokenizer.model $d/pattern.txt $d/special_tokens.json" ;;
	*)	echo "$d/$1.tiktoken $d/$1.pattern.txt $d/$1.special_tokens.json" ;;
	esac
}

# The reference packages; without them titan-tok's figures are printed alone.
"$root/tests/ref/setup.sh"
refs=
why_no_refs=
if ! command -v node >/dev/null; then
	why_no_refs="node is not installed"
elif [ ! -d "$TITAN_BUILD/ref/node_modules/tokenizers" ] ||
	[ ! -d "$TITAN_BUILD/ref/node_modules/tiktoken" ]; then
	why_no_refs="tests/ref/setup.sh could not install the reference packages"
else
	refs=1
	export NODE_PATH=$TITAN_BUILD/ref/node_modules
fi

best() {
	sort -g | tail -n 1
}

# titan_mbps TOKENIZER FILE THREADS: sets mbps to the best MB/s of the runs
# ("-" when titan-tok fails) and titan_tokens to its token count.
titan_mbps() {
	local i line out=()
	mbps=-
	for (( i = 0; i < runs; i++ )); do
		line=$("$tok" encode -t "$1" --threads "$3" --stats "$2" 2>&1 >/dev/null |
			grep '^titan-tok: encoded') || {
			echo "tests/bench/run.sh: titan-tok failed on '$2' with '$1'" >&2
			return
		}
		out+=("$(echo "$line" | sed -n 's/.*(\([0-9.]*\) MB\/s.*/\1/p')")
		titan_tokens=$(echo "$line" | sed -n 's/.* into \([0-9]*\) tokens.*/\1/p')
	done
	mbps=$(printf '%s\n' "${out[@]}" | best)
}

# ref_bench IMPL THREADS NAME FILE: MB/s and token count from tok_bench.js.
ref_bench() {
	local args
	if [ "$1" = hf ]; then
		args=(--hf "$TITAN_DATA/tokenizers/$3/tokenizer.json")
	else
		local ranks pattern specials
		read -r ranks pattern specials <<<"$(tiktoken_files "$3")"
		args=(--tiktoken "$ranks" --pattern-file "$pattern" --specials-file "$specials")
	fi
	node "$here/tok_bench.js" --impl "$1" --threads "$2" --runs "$runs" "${args[@]}" "$4" ||
		echo "- - -"
}

ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else printf "-"
	}'
}

# row CELL...: one line of the table in the format set below.
row() {
	# shellcheck disable=SC2059  # fmt is this script's own format
	printf "$fmt" "$@"
}

cores=$(nproc)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "titan-tok encoding throughput, MB/s (10^6 bytes of input per second of"
echo "encoding, tokenizer load and file reading excluded), best of $runs run(s)"
echo "machine: ${cpu:-unknown cpu}, $cores cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "english: kjv.txt + tinyshakespeare.txt, $(stat -c %s "$english") bytes"
echo "code:    C headers under /usr/include, $(stat -c %s "$code") bytes"
if [ -n "$refs" ]; then
	echo "references: tiktoken $(node -p 'require(process.argv[1]).version' \
		"$NODE_PATH/tiktoken/package.json") (wasm), tokenizers $(node -p \
		'require(process.argv[1]).version' "$NODE_PATH/tokenizers/package.json") (native)"
	echo "  titan 1 / all: one document, --threads 1 / --threads 0 ($cores)"
	echo "  tiktoken 1 / all: one encode() / $cores worker_threads on shares of the lines"
	echo "  hf 1 / all: encodeBatch() of paragraphs, TOKENIZERS_PARALLELISM=false / default"
	echo "  titan/tiktoken, titan/hf: titan 1 over tiktoken 1, over hf 1"
	echo "  ids: titan-tok's token count equals tiktoken's on the whole text"
else
	echo "references: none ($why_no_refs); titan-tok's figures only"
fi
echo

if [ -n "$refs" ]; then
	fmt="%-12s %-8s %8s %8s %11s %11s %7s %7s %15s %9s %5s\n"
	row tokenizer text "titan 1" "titan $cores" "tiktoken 1" "tiktoken $cores" \
		"hf 1" "hf $cores" "titan/tiktoken" "titan/hf" ids
else
	fmt="%-12s %-8s %8s %8s\n"
	row tokenizer text "titan 1" "titan $cores"
fi
for name in $tokenizers; do
	json=$TITAN_DATA/tokenizers/$name/tokenizer.json
	if [ ! -r "$json" ]; then
		echo "tests/bench/run.sh: '$json' not found, $name skipped" >&2
		continue
	fi
	for text in english code; do
		file=$work/$text.txt
		titan_tokens=
		titan_mbps "$json" "$file" 1
		t1=$mbps
		titan_mbps "$json" "$file" 0
		tn=$mbps
		if [ -z "$refs" ]; then
			row "$name" "$text" "$t1" "$tn"
			continue
		fi
		read -r k1 _ ktokens <<<"$(ref_bench tiktoken 1 "$name" "$file")"
		read -r kn _ _ <<<"$(ref_bench tiktoken 0 "$name" "$file")"
		read -r h1 _ _ <<<"$(ref_bench hf 1 "$name" "$file")"
		read -r hn _ _ <<<"$(ref_bench hf 0 "$name" "$file")"
		ids=-
		if [ -n "$titan_tokens" ] && [ "$ktokens" != - ]; then
			ids=DIFF
			[ "$titan_tokens" = "$ktokens" ] && ids=same
		fi
		row "$name" "$text" "$t1" "$tn" "$k1" "$kn" "$h1" "$hn" \
			"$(ratio "$t1" "$k1")" "$(ratio "$t1" "$h1")" "$ids"
	done
done
echo
if [ -n "${MAKELEVEL:-}" ]; then
	echo "command: make bench, which ran:"
	echo "  $command_line"
else
	echo "command: $command_line"
fi
