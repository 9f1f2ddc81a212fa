#!/usr/bin/env bats
# titan-train learns: debugmodel on Tiny Shakespeare, with a tokenizer
# titan-tok trains, brings the validation loss well below the unigram
# entropy of the tokens (what a model that ignores context can reach).

load helpers

@test "debugmodel on tinyshakespeare: validation loss falls well below the unigram entropy" {
	need_data corpus/tinyshakespeare.txt
	corpus=$TITAN_DATA/corpus/tinyshakespeare.txt
	titan-tok train -q -o tok.json --vocab-size 2048 \
		--special '<|begin_of_text|>' --special '<|end_of_text|>' "$corpus"
	titan-pack -q -t tok.json -o shk --lines --val-fraction 0.01 "$corpus"
	# the entropy of the train split's token frequencies, in nats
	unigram=$(titan-pack cat shk | tr ' ' '\n' |
		awk 'NF { c[$1]++; n++ } END { for (k in c) { p = c[k] / n; h -= p * log(p) }; print h }')
	titan-train --model.flavor=debugmodel --data.dataset=shk --data.mask=causal \
		--training.local_batch_size=8 --training.seq_len=128 --training.steps=150 \
		--optimizer.lr=3e-3 --lr_scheduler.warmup_steps=10 --training.threads=2 \
		--metrics.peak_flops=1e11 --metrics.log_freq=50 --metrics.jsonl=m.jsonl \
		--validation.freq=50 --validation.steps=-1 -q
	val=$(jq -s 'map(select(.val_loss != null)) | last | .val_loss' m.jsonl)
	first=$(jq -s 'map(select(.val_loss != null)) | first | .val_loss' m.jsonl)
	echo "unigram entropy $unigram nats; validation loss $first at step 50, $val at step 150"
	awk -v v="$val" -v f="$first" -v u="$unigram" 'BEGIN { exit !(v < u - 0.75 && v < f) }' ||
		{ echo "validation loss $val is not well below the unigram entropy $unigram" >&2; return 1; }
}
