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
