# Sourced by the GPU scripts: the dataset they train on, the repository's
# own documentation, so that they need nothing outside the tree.
#
# doc_dataset BIN DIR: a 2048-token BPE trained on it (DIR/tok.json) and
# the text packed with each line a document (DIR/data); BIN holds
# titan-tok and titan-pack.  Non-zero when either fails.
doc_dataset() {
	local bin=$1 dir=$2

	cat man/man*/*.[1-9] README.md >"$dir/corpus.txt" &&
		"$bin/titan-tok" train -q -o "$dir/tok.json" --vocab-size 2048 \
			--special '<|begin_of_text|>' --special '<|end_of_text|>' "$dir/corpus.txt" &&
		"$bin/titan-pack" -q -t "$dir/tok.json" -o "$dir/data" --force --lines \
			"$dir/corpus.txt"
}
