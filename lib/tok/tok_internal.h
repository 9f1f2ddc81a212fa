/* tok_internal.h - the titan_tok layout shared by the two loaders, the BPE
 * engine (bpe.c) and the added-token matcher (added.c).  Not for cmd/.
 *
 * A loader fills a titan_tok in three steps: tok_set_vocab() with every
 * token's bytes, tok_pairs_init() and tok_pair_add() for every merge in
 * rank order, then tok_finish() with the pre-tokenizer pattern, which
 * builds the added-token matchers and the content hash. */
#ifndef TITAN_TOK_INTERNAL_H
#define TITAN_TOK_INTERNAL_H
#include "core/base.h"
#include "core/buf.h"
#include "tok/tok.h"
#include "tok/pretok.h"

/* Ids at or past this are refused: no real vocabulary is that large, and a
 * hostile file must not make us allocate gigabytes. */
#define TOK_MAX_ID (1u << 24)
#define TOK_NONE UINT32_MAX

/* One merge: the pair (key >> 32, key & 0xffffffff) becomes id at rank. */
struct tok_pair {
	uint64_t key;   /* UINT64_MAX: empty slot */
	uint32_t rank;
	uint32_t id;
};

struct tok_added {
	char *content;  /* owned, NUL-terminated */
	size_t len;
	uint32_t id;
	bool special;
	bool normalized;
	bool lstrip, rstrip;  /* also take the whitespace before / after it */
};

/* Leftmost-longest matcher over a subset of the added tokens: candidates
 * are grouped by first byte, longest first, so the first hit at the
 * leftmost position is the longest. */
struct tok_matcher {
	uint8_t first[32];   /* bitmap of first bytes */
	int only;            /* the single first byte (memchr), or -1 */
	uint32_t start[257]; /* order[start[b]..start[b+1]): candidates for b */
	uint32_t *order;     /* indexes into titan_tok.added */
	size_t n;
};

struct titan_tok {
	uint32_t nids;          /* largest id + 1 */
	uint8_t *blob;          /* all token bytes */
	uint32_t *off;          /* nids + 1 offsets into blob */
	uint8_t *used;          /* nids flags */
	uint32_t *vtab;         /* bytes -> id for model tokens, TOK_NONE empty */
	size_t vmask;
	struct tok_pair *pairs; /* (left, right) -> (rank, merged) */
	size_t pmask, npairs;
	titan_u32s mlist;       /* merges in rank order, for the hash only */
	uint32_t byte_id[256];  /* id of each single byte, TOK_NONE if none */
	struct tok_added *added;/* sorted by id */
	size_t nadded;
	struct tok_matcher match[2]; /* [0]: normalized=false, [1]: true */
	bool cut_unsafe;        /* an added token contains '\n' or has lstrip */
	pretok *pt;
	bool ignore_merges;
	const char *format;     /* "tokenizer.json" or "tiktoken" */
	int64_t bos, eos;
	char hash[65];
};

/* bpe.c: building */
int tok_alloc(titan_tok **out, const char *format);
/* toks holds (id, offset into blob, length) triples; added tokens take
 * their content as bytes and may share an id with a model token.  where
 * names the place for messages ("$.model.vocab").  Takes ownership of
 * added (and its contents) even on failure. */
int tok_set_vocab(titan_tok *t, const char *file, const char *where,
		  const uint8_t *blob, const uint32_t *toks, size_t ntoks,
		  struct tok_added *added, size_t nadded);
int tok_pairs_init(titan_tok *t, size_t n);
/* A later duplicate of a pair replaces the earlier one, as in Hugging Face
 * tokenizers (its merges become a hash map). */
int tok_pair_add(titan_tok *t, uint32_t left, uint32_t right, uint32_t rank,
		 uint32_t merged);
int tok_finish(titan_tok *t, const char *pattern, const char *file);
/* Model-vocabulary lookup (added-only tokens excluded): id or TOK_NONE. */
uint32_t tok_vocab_find(const titan_tok *t, const void *p, size_t n);
/* Resolve BOS/EOS names by the rules in tok.h's loaders: id or -1. */
int64_t tok_find_named(const titan_tok *t, const char *name);
void tok_default_bos_eos(titan_tok *t);

/* added.c */
int tok_matchers_build(titan_tok *t);
void tok_matchers_free(titan_tok *t);
/* Leftmost-longest match of m in s[0..n): its start (n when none), with
 * *len and *which (index into t->added) set. */
size_t tok_match_find(const titan_tok *t, const struct tok_matcher *m,
		      const uint8_t *s, size_t n, size_t *len, size_t *which);
/* Where the run of whitespace ending at s[end] starts; the length of the
 * run starting at s[0]. */
size_t tok_space_before(const uint8_t *s, size_t end);
size_t tok_space_after(const uint8_t *s, size_t n);

/* load_json.c / load_tiktoken.c */
int tok_load_json(titan_tok **out, const char *path);
/* The text of a tokenizer.json in memory; file names it in messages. */
int tok_load_json_buf(titan_tok **out, const char *file, const void *buf, size_t n);
bool tok_is_tiktoken(const char *path);
int tok_load_tiktoken(titan_tok **out, const char *path, const tok_load_opts *opts);

#endif
