/* buf.c - growable vectors (see buf.h). */
#include "core/base.h"
#include "core/buf.h"

/* Grow *v (element size esz, capacity *cap) to hold need elements. */
static int grow(void **v, size_t *cap, size_t need, size_t esz)
{
	if (need <= *cap)
		return 0;
	size_t ncap = *cap ? *cap : 64;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2 / esz)
			return titan_err_nomem();
		ncap *= 2;
	}
	void *p = realloc(*v, ncap * esz);
	if (!p)
		return titan_err_nomem();
	*v = p;
	*cap = ncap;
	return 0;
}

int bytes_reserve(titan_bytes *b, size_t extra)
{
	if (extra > SIZE_MAX - b->n)
		return titan_err_nomem();
	return grow((void **)&b->v, &b->cap, b->n + extra, 1);
}

int bytes_append(titan_bytes *b, const void *p, size_t n)
{
	int rc = bytes_reserve(b, n);
	if (rc)
		return rc;
	if (n)
		memcpy(b->v + b->n, p, n);
	b->n += n;
	return 0;
}

void bytes_free(titan_bytes *b)
{
	free(b->v);
	*b = (titan_bytes){0};
}

int u32s_reserve(titan_u32s *a, size_t extra)
{
	if (extra > SIZE_MAX / 8 - a->n)
		return titan_err_nomem();
	return grow((void **)&a->v, &a->cap, a->n + extra, sizeof(uint32_t));
}

int u32s_append(titan_u32s *a, const uint32_t *p, size_t n)
{
	int rc = u32s_reserve(a, n);
	if (rc)
		return rc;
	if (n)
		memcpy(a->v + a->n, p, n * sizeof *p);
	a->n += n;
	return 0;
}

void u32s_free(titan_u32s *a)
{
	free(a->v);
	*a = (titan_u32s){0};
}
