/* buf.h - growable byte and u32 vectors, the two containers every tool uses.
 * A zero-initialised struct is an empty vector; the struct owns .v and
 * *_free() releases it. */
#ifndef TITAN_CORE_BUF_H
#define TITAN_CORE_BUF_H
#include "core/base.h"

typedef struct {
	uint8_t *v;
	size_t n, cap;
} titan_bytes;

typedef struct {
	uint32_t *v;
	size_t n, cap;
} titan_u32s;

int bytes_reserve(titan_bytes *b, size_t extra);
int bytes_append(titan_bytes *b, const void *p, size_t n);
void bytes_free(titan_bytes *b);

int u32s_reserve(titan_u32s *a, size_t extra);
int u32s_append(titan_u32s *a, const uint32_t *p, size_t n);

/* Inline: the tokenizer pushes every id it makes, and a call per id was a
 * measurable share of encoding. */
static inline int u32s_push(titan_u32s *a, uint32_t x)
{
	if (a->n == a->cap) {
		int rc = u32s_reserve(a, 1);
		if (rc)
			return rc;
	}
	a->v[a->n++] = x;
	return 0;
}
void u32s_free(titan_u32s *a);

#endif
