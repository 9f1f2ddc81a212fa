/* train.h - byte-level BPE training, written out as a Hugging Face
 * tokenizer.json.
 *
 * The result is the same for the same input whatever the thread count: piece
 * counts are exact sums, and each merge picks the most frequent pair with
 * ties broken by the pair's bytes.  The output loads in Hugging Face
 * tokenizers and encodes as titan does: BPE with ignore_merges=false, the
 * 256 single bytes first (ids 0..255 in byte order), merges in the order
 * learned, then the special tokens (added_tokens, special=true); pre_tokenizer
 * Sequence[Split(pattern, Isolated), ByteLevel(use_regex=false)]; decoder
 * ByteLevel.
 *
 * Special tokens are not cut out of the training text: text that spells one
 * is pre-tokenized and counted like any other text.  The specials are only
 * added to the vocabulary, after the last learned token, both in
 * added_tokens and in model.vocab (Hugging Face keeps an added token's id only
 * when model.vocab holds it).  No learned token is allowed to spell a
 * special in model.vocab's byte-to-unicode form.
 *
 * When two different pairs make the same bytes, the second merge is recorded
 * with the existing token's id and adds no vocabulary entry (Hugging Face's
 * trainer does the same). */
#ifndef TITAN_TOK_TRAIN_H
#define TITAN_TOK_TRAIN_H
#include "core/base.h"
#include "core/log.h"
#include "core/pool.h"
#include "data/ingest.h"

typedef struct tok_train_opts {
	/* Total: 256 bytes + learned tokens + specials.  Fewer tokens come out
	 * when the pairs run out (or fall below min_frequency) first; the
	 * specials then follow the last learned token. */
	uint32_t vocab_size;
	const char *pattern;            /* name (gpt2, cl100k, llama3, o200k) or regex; NULL: llama3 */
	const char *const *specials;    /* non-empty, distinct, UTF-8; ids after the merges */
	size_t nspecials;
	uint64_t min_frequency;         /* a pair seen fewer times is never merged (0: default 2) */
	titan_pool *pool;               /* workers for counting; NULL: one thread */
	titan_log *log;                 /* progress and summary; may be NULL */
} tok_train_opts;

/* Read every document of in, learn merges, write out_path atomically.
 * Errors: TITAN_EUSAGE for a vocab_size below 256 + nspecials or a bad
 * special (empty, repeated, not UTF-8, or a single byte's token);
 * TITAN_EFORMAT "no text to train on" when the documents hold no bytes;
 * whatever ingest_next and the pre-tokenizer report. */
int tok_train(const tok_train_opts *o, ingest *in, const char *out_path);

#endif
