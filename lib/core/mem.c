/* mem.c - counted allocations (mem.h). */
#include "core/base.h"
#include "core/mem.h"

void *mem_alloc(mem_tracker *t, size_t bytes, const char *what)
{
	size_t rounded = (bytes + 63) & ~(size_t)63;
	void *p = NULL;

	if (rounded < bytes || posix_memalign(&p, 64, rounded ? rounded : 64)) {
		titan_err(TITAN_ENOMEM, "out of memory allocating %s (%zu bytes)",
			  what ? what : "a buffer", bytes);
		return NULL;
	}
	memset(p, 0, rounded);
	t->cur += bytes;
	t->nalloc++;
	if (t->cur > t->peak)
		t->peak = t->cur;
	return p;
}

void mem_free(mem_tracker *t, void *p, size_t bytes)
{
	if (!p)
		return;
	free(p);
	t->cur -= bytes;
	t->nalloc--;
}

void mem_reset_peak(mem_tracker *t)
{
	t->peak = t->cur;
}
