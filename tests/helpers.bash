# helpers.bash - shared setup for the CLI tests (load it with `load helpers`).
# Each test runs in its own scratch directory; binaries come from $TITAN_BIN
# and the shared test data from $TITAN_DATA.

: "${TITAN_BIN:=$BATS_TEST_DIRNAME/../build/bin}"
export PATH="$TITAN_BIN:$PATH"

setup() {
	cd "$BATS_TEST_TMPDIR" || return 1
}

# Skip the test unless the shared data has PATH (relative to $TITAN_DATA).
need_data() {
	if [ -z "${TITAN_DATA:-}" ] || [ ! -e "$TITAN_DATA/$1" ]; then
		skip "test data '$1' not found (set TITAN_DATA to the shared data directory)"
	fi
}

# Tokenizer file of a shared tokenizer: tokjson NAME
tokjson() {
	echo "$TITAN_DATA/tokenizers/$1/tokenizer.json"
}

# Fail with both texts shown unless they are equal: expect_eq WANT GOT
expect_eq() {
	if [ "$1" != "$2" ]; then
		printf 'expected: %s\n     got: %s\n' "$1" "$2" >&2
		return 1
	fi
}

# Fail unless $output contains the text: expect_output_has TEXT
expect_output_has() {
	case $output in
	*"$1"*) return 0 ;;
	esac
	printf 'output lacks: %s\noutput was: %s\n' "$1" "$output" >&2
	return 1
}

# Fail unless the last `run` exited with the status: expect_status N
expect_status() {
	if [ "$status" -ne "$1" ]; then
		printf 'expected exit %s, got %s; output: %s\n' "$1" "$status" "$output" >&2
		return 1
	fi
}

# doc_dataset DIR: a 512-token tokenizer trained on titan's own documentation
# (always there, no data needed) as DIR/tok.json, and the documentation
# packed with it, a line a document, as DIR/data.
doc_dataset() {
	cat "$BATS_TEST_DIRNAME"/../man/man*/*.[1-9] "$BATS_TEST_DIRNAME"/../README.md >"$1/corpus.txt"
	"$TITAN_BIN/titan-tok" train -q -o "$1/tok.json" --vocab-size 512 \
		--special '<|begin_of_text|>' --special '<|end_of_text|>' "$1/corpus.txt"
	"$TITAN_BIN/titan-pack" -q -t "$1/tok.json" -o "$1/data" --lines --val-fraction 0.1 "$1/corpus.txt"
}

# expect_synopsis_in_man TOOL: every synopsis line TOOL --help prints is a
# .B line of its man page.
expect_synopsis_in_man() {
	local man=$BATS_TEST_DIRNAME/../man/man1/$1.1 out
	out=$("$1" --help) || return 1
	printf '%s\n' "$out" | sed -n "s/^usage: //p; s/^       $1/$1/p" | while read -r line; do
		grep -qxF ".B $line" "$man" || { echo "synopsis not in the man page: $line" >&2; return 1; }
	done
}

# Skip the test unless OpenMPI's launcher is here: need_mpirun
need_mpirun() {
	command -v mpirun >/dev/null 2>&1 ||
		skip "mpirun not found (Debian packages openmpi-bin libopenmpi-dev)"
}

# ranks N COMMAND...: COMMAND on N ranks of one thread each, more ranks
# than cores allowed, as root too.  The outer timeout only keeps a broken
# build from hanging the test run.
ranks() {
	local n=$1
	shift
	OMP_NUM_THREADS=1 timeout 600 mpirun --allow-run-as-root --oversubscribe \
		-x OMP_NUM_THREADS -np "$n" "$@"
}
