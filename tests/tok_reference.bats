#!/usr/bin/env bats
# titan-tok against the reference tokenizers: Hugging Face tokenizers on each
# tokenizer.json and OpenAI tiktoken on each rank file, on the two English
# corpora as whole documents and line by line; decode(encode(x)) == x; and
# tokenizers that titan-tok trains load and encode the same in Hugging Face.
#
# Needs TITAN_DATA (shared data), TITAN_BIN (titan-tok) and the reference
# packages that tests/ref/setup.sh installs under $TITAN_BUILD/ref; skips
# without them.  Reference outputs are cached in $TITAN_BUILD/ref/cache,
# keyed by the sha256 of the input and of the tokenizer files, so only the
# first run pays for the (slow) reference encoders.

setup() {
	[ -n "${TITAN_DATA:-}" ] || skip "TITAN_DATA is not set"
	[ -d "$TITAN_DATA/tokenizers" ] || skip "no tokenizers in TITAN_DATA ($TITAN_DATA)"
	[ -n "${TITAN_BIN:-}" ] || skip "TITAN_BIN is not set"
	TOK=$TITAN_BIN/titan-tok
	[ -x "$TOK" ] || skip "titan-tok is not built ($TOK)"
	REF=${TITAN_BUILD:-$BATS_TEST_DIRNAME/../build}/ref
	ENCODE_JS=$BATS_TEST_DIRNAME/ref/encode.js
	CACHE=$REF/cache
	cd "$BATS_TEST_TMPDIR" || return 1
}

need_reference() {
	command -v node >/dev/null || skip "node is not installed"
	if [ ! -d "$REF/node_modules/tokenizers" ] || [ ! -d "$REF/node_modules/tiktoken" ]; then
		skip "reference packages absent: run tests/ref/setup.sh"
	fi
	export NODE_PATH=$REF/node_modules
	mkdir -p "$CACHE"
}

need_file() {
	local f
	for f; do
		[ -r "$f" ] || skip "test data absent: $f"
	done
}

# The tiktoken side of tokenizer NAME: sets tk_files to its rank file,
# pattern file and specials file.
tiktoken_files() {
	local d=$TITAN_DATA/tokenizers/$1
	case $1 in
	gpt2)	tk_files=("$d/r50k_base.tiktoken" "$d/r50k_base.pattern.txt"
			"$d/r50k_base.special_tokens.json") ;;
	llama3)	tk_files=("$d/tokenizer.model" "$d/pattern.txt" "$d/special_tokens.json") ;;
	*)	tk_files=("$d/$1.tiktoken" "$d/$1.pattern.txt" "$d/$1.special_tokens.json") ;;
	esac
}

sha() {
	sha256sum "$@" | cut -c1-64 | sha256sum | cut -c1-16
}

# ref_ids hf|tiktoken lines|whole INPUT TOKENIZER_FILE... : print the path of
# the reference ids for INPUT, computing them the first time.
ref_ids() {
	local impl=$1 mode=$2 input=$3; shift 3
	local key out args=()
	key=$(sha "$input" "$@")
	out=$CACHE/$impl-$mode-$(basename "$input")-$key.ids
	if [ ! -s "$out" ]; then
		case $impl in
		hf)	args=(--hf "$1") ;;
		tiktoken) args=(--tiktoken "$1" --pattern-file "$2" --specials-file "$3") ;;
		esac
		[ "$mode" = lines ] && args+=(--lines)
		node "$ENCODE_JS" "${args[@]}" "$input" >"$out.tmp.$$" || {
			rm -f "$out.tmp.$$"
			echo "# reference encoder ($impl) failed on $input" >&3
			return 1
		}
		mv "$out.tmp.$$" "$out"
	fi
	echo "$out"
}

# same_ids EXPECTED ACTUAL: equal files, or say where they first differ.
same_ids() {
	cmp -s "$1" "$2" && return 0
	local n
	n=$(cmp "$1" "$2" 2>&1 | sed -n 's/.* line \([0-9]*\).*/\1/p')
	echo "ids differ from the reference: $(wc -l <"$1") vs $(wc -l <"$2") lines"
	if [ -n "$n" ]; then
		echo "first difference on line $n (document $n):"
		echo "  reference: $(sed -n "${n}p" "$1" | cut -c1-300)"
		echo "  titan-tok: $(sed -n "${n}p" "$2" | cut -c1-300)"
	fi
	return 1
}

# Sets flags to titan-tok's options for MODE (lines or whole).
mode_flags() {
	flags=()
	if [ "$1" = lines ]; then
		flags=(--lines)
	fi
}

# matches_hf NAME FILE MODE: titan-tok on tokenizer.json == Hugging Face.
matches_hf() {
	local input json expect flags
	input=$TITAN_DATA/corpus/$2
	json=$TITAN_DATA/tokenizers/$1/tokenizer.json
	need_file "$input" "$json"
	need_reference
	expect=$(ref_ids hf "$3" "$input" "$json")
	mode_flags "$3"
	"$TOK" encode -t "$json" "${flags[@]}" "$input" >titan.ids
	same_ids "$expect" titan.ids
}

# titan-tok's options for reading tokenizer NAME from its rank file.  Three of
# them keep NAME.pattern.txt and NAME.special_tokens.json beside the rank
# file, which titan-tok finds by itself; llama3's are named otherwise.
rank_opts() {
	local tk_files
	tiktoken_files "$1"
	echo "${tk_files[0]}"
	if [ "$1" = llama3 ]; then
		echo --pattern
		cat "${tk_files[1]}"; echo
		node -e 'for (const [t, id] of Object.entries(require(process.argv[1])))
			console.log("--special\n" + t + "=" + id)' "${tk_files[2]}"
	fi
}

# matches_tiktoken NAME FILE MODE: titan-tok on the rank file == tiktoken.
matches_tiktoken() {
	local input expect tk_files flags opts=()
	input=$TITAN_DATA/corpus/$2
	tiktoken_files "$1"
	need_file "$input" "${tk_files[@]}"
	need_reference
	expect=$(ref_ids tiktoken "$3" "$input" "${tk_files[@]}")
	mapfile -t opts < <(rank_opts "$1")
	mode_flags "$3"
	"$TOK" encode -t "${opts[@]}" "${flags[@]}" "$input" >titan.ids
	same_ids "$expect" titan.ids
}

# round_trips NAME FILE MODE: decode(encode(FILE)) is FILE byte for byte.
round_trips() {
	local input json flags
	input=$TITAN_DATA/corpus/$2
	json=$TITAN_DATA/tokenizers/$1/tokenizer.json
	need_file "$input" "$json"
	mode_flags "$3"
	"$TOK" encode -t "$json" "${flags[@]}" "$input" >ids
	"$TOK" decode -t "$json" "${flags[@]}" ids >decoded
	cmp "$input" decoded
}

# trained_matches_hf PATTERN: a tokenizer trained by titan-tok on
# tinyshakespeare loads in Hugging Face and encodes kjv.txt (per line) and
# an unseen-specials line the same as titan-tok; decode inverts encode.
trained_matches_hf() {
	local train kjv expect
	train=$TITAN_DATA/corpus/tinyshakespeare.txt
	kjv=$TITAN_DATA/corpus/kjv.txt
	need_file "$train" "$kjv"
	need_reference
	"$TOK" train -o trained.json --vocab-size 2000 --pattern "$1" \
		--special '<|endoftext|>' "$train"
	[ -s trained.json ]
	expect=$(ref_ids hf lines "$kjv" trained.json)
	"$TOK" encode -t trained.json --lines "$kjv" >titan.ids
	same_ids "$expect" titan.ids

	printf 'a<|endoftext|>b  12345 \xc3\xa9t\xc3\xa9\n' >special.txt
	expect=$(ref_ids hf lines special.txt trained.json)
	"$TOK" encode -t trained.json --lines special.txt >titan.ids
	same_ids "$expect" titan.ids

	"$TOK" decode -t trained.json --lines titan.ids >decoded
	cmp special.txt decoded
}

@test "titan-tok matches Hugging Face on kjv.txt with gpt2" { matches_hf gpt2 kjv.txt whole; }
@test "titan-tok matches Hugging Face on kjv.txt with llama3" { matches_hf llama3 kjv.txt whole; }
@test "titan-tok matches Hugging Face on kjv.txt with cl100k_base" { matches_hf cl100k_base kjv.txt whole; }
@test "titan-tok matches Hugging Face on kjv.txt with o200k_base" { matches_hf o200k_base kjv.txt whole; }
@test "titan-tok matches Hugging Face on tinyshakespeare.txt with gpt2" { matches_hf gpt2 tinyshakespeare.txt whole; }
@test "titan-tok matches Hugging Face on tinyshakespeare.txt with llama3" { matches_hf llama3 tinyshakespeare.txt whole; }
@test "titan-tok matches Hugging Face on tinyshakespeare.txt with cl100k_base" { matches_hf cl100k_base tinyshakespeare.txt whole; }
@test "titan-tok matches Hugging Face on tinyshakespeare.txt with o200k_base" { matches_hf o200k_base tinyshakespeare.txt whole; }

@test "titan-tok matches Hugging Face on each line of kjv.txt with gpt2" { matches_hf gpt2 kjv.txt lines; }
@test "titan-tok matches Hugging Face on each line of kjv.txt with llama3" { matches_hf llama3 kjv.txt lines; }
@test "titan-tok matches Hugging Face on each line of kjv.txt with cl100k_base" { matches_hf cl100k_base kjv.txt lines; }
@test "titan-tok matches Hugging Face on each line of kjv.txt with o200k_base" { matches_hf o200k_base kjv.txt lines; }
@test "titan-tok matches Hugging Face on each line of tinyshakespeare.txt with gpt2" { matches_hf gpt2 tinyshakespeare.txt lines; }
@test "titan-tok matches Hugging Face on each line of tinyshakespeare.txt with llama3" { matches_hf llama3 tinyshakespeare.txt lines; }
@test "titan-tok matches Hugging Face on each line of tinyshakespeare.txt with cl100k_base" { matches_hf cl100k_base tinyshakespeare.txt lines; }
@test "titan-tok matches Hugging Face on each line of tinyshakespeare.txt with o200k_base" { matches_hf o200k_base tinyshakespeare.txt lines; }

@test "titan-tok matches tiktoken on kjv.txt with the gpt2 rank file" { matches_tiktoken gpt2 kjv.txt whole; }
@test "titan-tok matches tiktoken on kjv.txt with the llama3 rank file" { matches_tiktoken llama3 kjv.txt whole; }
@test "titan-tok matches tiktoken on kjv.txt with the cl100k_base rank file" { matches_tiktoken cl100k_base kjv.txt whole; }
@test "titan-tok matches tiktoken on kjv.txt with the o200k_base rank file" { matches_tiktoken o200k_base kjv.txt whole; }
@test "titan-tok matches tiktoken on tinyshakespeare.txt with the gpt2 rank file" { matches_tiktoken gpt2 tinyshakespeare.txt whole; }
@test "titan-tok matches tiktoken on tinyshakespeare.txt with the llama3 rank file" { matches_tiktoken llama3 tinyshakespeare.txt whole; }
@test "titan-tok matches tiktoken on tinyshakespeare.txt with the cl100k_base rank file" { matches_tiktoken cl100k_base tinyshakespeare.txt whole; }
@test "titan-tok matches tiktoken on tinyshakespeare.txt with the o200k_base rank file" { matches_tiktoken o200k_base tinyshakespeare.txt whole; }

@test "titan-tok matches tiktoken on each line of kjv.txt with the gpt2 rank file" { matches_tiktoken gpt2 kjv.txt lines; }
@test "titan-tok matches tiktoken on each line of kjv.txt with the llama3 rank file" { matches_tiktoken llama3 kjv.txt lines; }
@test "titan-tok matches tiktoken on each line of kjv.txt with the cl100k_base rank file" { matches_tiktoken cl100k_base kjv.txt lines; }
@test "titan-tok matches tiktoken on each line of kjv.txt with the o200k_base rank file" { matches_tiktoken o200k_base kjv.txt lines; }
@test "titan-tok matches tiktoken on each line of tinyshakespeare.txt with the gpt2 rank file" { matches_tiktoken gpt2 tinyshakespeare.txt lines; }
@test "titan-tok matches tiktoken on each line of tinyshakespeare.txt with the llama3 rank file" { matches_tiktoken llama3 tinyshakespeare.txt lines; }
@test "titan-tok matches tiktoken on each line of tinyshakespeare.txt with the cl100k_base rank file" { matches_tiktoken cl100k_base tinyshakespeare.txt lines; }
@test "titan-tok matches tiktoken on each line of tinyshakespeare.txt with the o200k_base rank file" { matches_tiktoken o200k_base tinyshakespeare.txt lines; }

@test "titan-tok decodes its encoding of kjv.txt back to the same bytes with gpt2" { round_trips gpt2 kjv.txt whole; }
@test "titan-tok decodes its encoding of kjv.txt back to the same bytes with llama3" { round_trips llama3 kjv.txt whole; }
@test "titan-tok decodes its encoding of kjv.txt back to the same bytes with cl100k_base" { round_trips cl100k_base kjv.txt whole; }
@test "titan-tok decodes its encoding of kjv.txt back to the same bytes with o200k_base" { round_trips o200k_base kjv.txt whole; }
@test "titan-tok decodes its encoding of each line of tinyshakespeare.txt back to the same bytes with gpt2" { round_trips gpt2 tinyshakespeare.txt lines; }
@test "titan-tok decodes its encoding of each line of tinyshakespeare.txt back to the same bytes with llama3" { round_trips llama3 tinyshakespeare.txt lines; }
@test "titan-tok decodes its encoding of each line of tinyshakespeare.txt back to the same bytes with cl100k_base" { round_trips cl100k_base tinyshakespeare.txt lines; }
@test "titan-tok decodes its encoding of each line of tinyshakespeare.txt back to the same bytes with o200k_base" { round_trips o200k_base tinyshakespeare.txt lines; }

@test "a tokenizer titan-tok trains with the cl100k pattern encodes kjv.txt the same in Hugging Face" { trained_matches_hf cl100k; }
@test "a tokenizer titan-tok trains with the gpt2 pattern encodes kjv.txt the same in Hugging Face" { trained_matches_hf gpt2; }
@test "a tokenizer titan-tok trains with the o200k pattern encodes kjv.txt the same in Hugging Face" { trained_matches_hf o200k; }
