/* tok.h - a byte-level BPE tokenizer: load, encode, decode.
 *
 * A titan_tok is loaded from a Hugging Face tokenizer.json (or a directory
 * holding one) or from a tiktoken rank file plus a pattern.  It is immutable
 * after loading and may be shared by any number of threads; each thread
 * encodes through its own tok_encoder, which holds a cache of frequent
 * pieces.
 *
 * Ids match Hugging Face tokenizers with add_special_tokens=false (and
 * tiktoken with allowed_special="all"): text that spells an added token is
 * that token.  BOS/EOS are never added here; callers add tok_bos()/tok_eos()
 * where they want them. */
#ifndef TITAN_TOK_TOK_H
#define TITAN_TOK_TOK_H
#include "core/base.h"
#include "core/buf.h"
#include "tok/pretok.h"

typedef struct titan_tok titan_tok;

typedef struct tok_load_opts {
	/* For tiktoken rank files: a pattern name (gpt2, cl100k, llama3, o200k)
	 * or a regex.  NULL: read NAME.pattern.txt beside the file. */
	const char *pattern;
	/* For tiktoken rank files: "TOKEN=ID" strings.  None given: read
	 * NAME.special_tokens.json beside the file, if present. */
	const char *const *specials;
	size_t nspecials;
} tok_load_opts;

/* Load PATH: a tokenizer.json, a directory holding one, or a *.tiktoken
 * rank file.  opts may be NULL.  Unsupported models or components
 * (WordPiece, Unigram, a normalizer, BPE dropout, ...) are TITAN_EFORMAT
 * naming the file, the JSON path and what is supported. */
int tok_load(titan_tok **out, const char *path, const tok_load_opts *opts);
void tok_free(titan_tok *t);

/* Largest id + 1 (ids below may be unused, as in cl100k_base). */
uint32_t tok_vocab_size(const titan_tok *t);
/* BOS/EOS ids, or -1 when the tokenizer has none. */
int64_t tok_bos(const titan_tok *t);
int64_t tok_eos(const titan_tok *t);
const pretok *tok_pretok(const titan_tok *t);
/* "tokenizer.json" or "tiktoken". */
const char *tok_source_format(const titan_tok *t);
bool tok_ignore_merges(const titan_tok *t);
/* SHA-256 (hex, 64 chars + NUL) over the tokenizer's content: vocab bytes,
 * merge order, added tokens and pattern.  The same tokenizer read from
 * tokenizer.json or from a tiktoken file with equivalent merges may differ. */
const char *tok_hash(const titan_tok *t);

/* Added tokens (specials and others), in id order. */
size_t tok_added_count(const titan_tok *t);
/* i-th added token: its text (NUL-terminated), id and whether special. */
const char *tok_added(const titan_tok *t, size_t i, uint32_t *id, bool *special);

/* Bytes of token id, or NULL when id is unused or out of range. */
const uint8_t *tok_token_bytes(const titan_tok *t, uint32_t id, size_t *len);
/* Id of the token whose bytes are exactly p[0..n), or -1. */
int64_t tok_token_id(const titan_tok *t, const void *p, size_t n);

typedef struct tok_encoder tok_encoder;

int tok_encoder_new(tok_encoder **out, const titan_tok *t);
void tok_encoder_free(tok_encoder *e);
/* Append the ids of text[0..n) to out. */
int tok_encode(tok_encoder *e, const uint8_t *text, size_t n, titan_u32s *out);

/* The first place at or after from where text[0..n) may be cut so that the
 * ids of the two sides, encoded apart, are the ids of the whole: just after
 * a '\n' that the pre-tokenizer always ends a piece at (pretok_can_cut)
 * and that no added token may span.  n when there is none: a place needs a
 * byte after it, so text may be the head of a longer stream, and a regex
 * pre-tokenizer, or an added token with a '\n' or lstrip, never cuts. */
size_t tok_next_cut(const titan_tok *t, const uint8_t *text, size_t n, size_t from);

/* Append the bytes of ids to out; an id past the vocabulary or unused is
 * TITAN_ERANGE naming it and its index. */
int tok_decode(const titan_tok *t, const uint32_t *ids, size_t n, titan_bytes *out);

#endif
