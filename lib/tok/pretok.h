/* pretok.h - pre-tokenization: cutting text into the pieces BPE merges within.
 *
 * A pretok is built from the regex source a tokenizer names.  The patterns of
 * GPT-2 (r50k), cl100k_base (= Llama 3) and o200k_base are recognised by their
 * exact source text and run by hand-written matchers that give the same pieces
 * as the regex engines (Rust regex / fancy-regex in tiktoken, Oniguruma in
 * Hugging Face tokenizers); any other pattern runs through PCRE2.  Pieces are
 * "Isolated" in Hugging Face terms: every match is a piece and so is every
 * gap between matches, so the pieces always tile the input.
 *
 * A pretok is immutable after pretok_new and may be shared by threads; each
 * thread iterates with its own pretok_iter. */
#ifndef TITAN_TOK_PRETOK_H
#define TITAN_TOK_PRETOK_H
#include "core/base.h"

typedef struct pretok pretok;

/* Known pattern names: "gpt2" (= r50k), "cl100k", "llama3" (= cl100k), "o200k".
 * Returns the regex source or NULL for an unknown name. */
const char *pretok_named_pattern(const char *name);

/* Compile regex (UTF-8 source).  An invalid regex is TITAN_EFORMAT with the
 * offset and PCRE2's reason in the message. */
int pretok_new(pretok **out, const char *regex);
void pretok_free(pretok *p);

const char *pretok_pattern(const pretok *p);
/* "gpt2", "cl100k", "o200k" for the fast paths, "regex" otherwise. */
const char *pretok_kind(const pretok *p);
/* True when every boundary between a '\n' and a following ASCII letter is a
 * piece boundary and cutting the text there leaves the pieces on both sides
 * unchanged, so long text may be cut there and encoded in parallel (true for
 * cl100k and o200k; false for GPT-2, whose \s+(?!\S) looks past the '\n':
 * use pretok_can_cut, which works for all three). */
bool pretok_splittable(const pretok *p);

/* True when the pieces of s[0..pos) followed by those of s[pos..n) are the
 * pieces of s[0..n): for the fast paths, at some boundaries after a '\n'.
 * All three cut before an ASCII letter (GPT-2 only where the byte before
 * the '\n' is an ASCII non-space); cl100k and o200k also before blanks
 * (spaces, tabs) that lead to a printable ASCII byte, as in indented text
 * and code.  False for regex pretoks. */
bool pretok_can_cut(const pretok *p, const uint8_t *s, size_t n, size_t pos);

typedef struct pretok_iter {
	const pretok *p;
	const uint8_t *s;
	size_t n, pos;
	size_t gap_end;   /* regex path: start of a pending match after a gap,
			   * or where to search next after an empty match */
	size_t match_end; /* regex path: end of the pending match */
	void *md;         /* regex path: PCRE2 match data (owned) */
} pretok_iter;

int pretok_iter_init(pretok_iter *it, const pretok *p, const uint8_t *s, size_t n);
/* Next piece [*start, *end): returns 1, or 0 at the end, or < 0 on error. */
int pretok_iter_next(pretok_iter *it, size_t *start, size_t *end);
void pretok_iter_fini(pretok_iter *it);

#endif
