/* attention_ranges.c - the table of attention_ranges.h. */
#include "attention_ranges.h"

#include <stdlib.h>
#include <string.h>

void attention_ranges_set(attention_range_table *t, const int32_t *lo, const int32_t *hi,
			  const int32_t *host_lo, const int32_t *host_hi, size_t n)
{
	struct attention_range_region *r = NULL;

	for (int i = 0; i < ATTENTION_RANGE_REGIONS && !r; i++)
		if (t->r[i].lo == lo)
			r = &t->r[i];
	for (int i = 0; i < ATTENTION_RANGE_REGIONS && !r && n; i++)
		if (!t->r[i].lo)
			r = &t->r[i];
	if (!r)
		return;
	free(r->host);
	memset(r, 0, sizeof *r);
	if (!n || !lo || !hi || !(r->host = malloc(2 * n * sizeof *r->host)))
		return;
	memcpy(r->host, host_lo, n * sizeof *r->host);
	memcpy(r->host + n, host_hi, n * sizeof *r->host);
	r->lo = lo;
	r->hi = hi;
	r->n = n;
}

const int32_t *attention_ranges_find(const attention_range_table *t, const int32_t *lo,
				     const int32_t *hi, size_t n, size_t *stride)
{
	for (int i = 0; i < ATTENTION_RANGE_REGIONS; i++) {
		const struct attention_range_region *r = &t->r[i];

		/* compared as addresses: lo need not point into this region */
		uintptr_t at = (uintptr_t)lo, base = (uintptr_t)r->lo;

		if (!r->lo || at < base || (at - base) % sizeof *lo)
			continue;
		size_t off = (at - base) / sizeof *lo;

		if (off < r->n && n <= r->n - off && (uintptr_t)hi == (uintptr_t)(r->hi + off)) {
			*stride = r->n;
			return r->host + off;
		}
	}
	return NULL;
}

void attention_ranges_clear(attention_range_table *t)
{
	for (int i = 0; i < ATTENTION_RANGE_REGIONS; i++)
		free(t->r[i].host);
	memset(t, 0, sizeof *t);
}
