#!/bin/sh
# Install the reference tokenizers (Hugging Face tokenizers, OpenAI tiktoken)
# that titan-tok is checked and benchmarked against, into
# $TITAN_BUILD/ref/node_modules.  Does nothing when the pinned versions are
# already there.  Never fails: without npm or the registry it says why on
# stderr and exits 0, and the tests that need the packages skip.
set -u

here=$(cd "$(dirname "$0")" && pwd)
build=${TITAN_BUILD:-$here/../../build}
dest=$build/ref

note() {
	echo "tests/ref/setup.sh: $*" >&2
}

# Prints nothing and succeeds when both packages are installed at the
# versions package.json pins and load in this node.
installed() {
	[ -d "$dest/node_modules" ] || return 1
	cmp -s "$here/package.json" "$dest/package.json" || return 1
	(cd "$dest" && node -e '
		const want = require("./package.json").dependencies;
		const fs = require("fs");
		for (const [name, version] of Object.entries(want)) {
			const meta = "node_modules/" + name + "/package.json";
			if (JSON.parse(fs.readFileSync(meta)).version !== version)
				process.exit(1);
		}
		require("tokenizers");
		require("tiktoken/lite");
	') >/dev/null 2>&1
}

if ! command -v node >/dev/null 2>&1; then
	note "node not found; reference tokenizer checks will be skipped"
	exit 0
fi
installed && exit 0
if ! command -v npm >/dev/null 2>&1; then
	note "npm not found; reference tokenizer checks will be skipped"
	exit 0
fi

mkdir -p "$dest" || exit 0
cp "$here/package.json" "$dest/package.json" || exit 0
note "installing tokenizers and tiktoken into $dest"
if ! (cd "$dest" && npm install --no-audit --no-fund --silent) >&2; then
	note "npm install failed; reference tokenizer checks will be skipped"
	exit 0
fi
if ! installed; then
	note "installed packages do not load; reference tokenizer checks will be skipped"
	exit 0
fi
exit 0
