/* gen.h - the text side of generation: the bytes of new tokens go into a
 * gen_stream, which says what may be shown now.
 *
 * A byte-level BPE token may end inside a UTF-8 character, so the stream
 * holds back an incomplete sequence at the end until the token that
 * completes it arrives.  With stop strings it also holds back any ending
 * that could still grow into one, and when a stop string appears the text
 * ends before it: what was shown is then exactly the completion, without
 * the stop string. */
#ifndef TITAN_GEN_GEN_H
#define TITAN_GEN_GEN_H
#include "core/base.h"
#include "core/buf.h"

typedef struct gen_stream {
	titan_bytes text;       /* the completion so far (cut at a stop string) */
	size_t shown;           /* bytes of text handed out */
	const char *const *stops;  /* borrowed; empty strings are ignored */
	size_t nstops;
	bool stopped;           /* a stop string was found */
} gen_stream;

/* stops (may be NULL) must outlive the stream. */
void gen_stream_init(gen_stream *s, const char *const *stops, size_t nstops);
void gen_stream_free(gen_stream *s);
/* Append a token's bytes.  *out, *n: the bytes that may be shown now (they
 * stay valid until the next call).  Returns 1 when a stop string ended the
 * text (then nothing more is appended), 0 otherwise, or a negative error. */
int gen_stream_push(gen_stream *s, const void *p, size_t len, const char **out, size_t *n);
/* The end of the text: whatever was held back (an incomplete UTF-8
 * sequence is shown as it is). */
void gen_stream_finish(gen_stream *s, const char **out, size_t *n);

/* Bytes at the end of p[0..n) that start a UTF-8 sequence not yet complete
 * (0..3). */
size_t gen_utf8_incomplete(const uint8_t *p, size_t n);
/* Append p[0..n) to out with each maximal invalid UTF-8 subsequence
 * replaced by U+FFFD (as Python's errors="replace" does), so that it can be
 * a JSON string. */
int gen_utf8_sanitize(const void *p, size_t n, titan_bytes *out);

#endif
