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
 * ByteLevel. */
#ifndef TITAN_TOK_TRAIN_H
#define TITAN_TOK_TRAIN_H
#include "core/base.h"
#include "core/log.h"
#include "core/pool.h"
#include "data/ingest.h"

typedef struct tok_train_opts {
	uint32_t vocab_size;            /* total: 256 bytes + merges + specials */
	const char *pattern;            /* name (gpt2, cl100k, llama3, o200k) or regex */
	const char *const *specials;    /* special token strings, ids after the merges */
	size_t nspecials;
	uint64_t min_frequency;         /* a pair seen fewer times is never merged (default 2) */
	titan_pool *pool;               /* workers for counting; NULL: one thread */
	titan_log *log;                 /* progress and summary; may be NULL */
} tok_train_opts;

/* Read every document of in, learn merges, write out_path atomically. */
int tok_train(const tok_train_opts *o, ingest *in, const char *out_path);

#endif
