/* mem.c - counted allocations (mem.h). */
#include "core/base.h"
#include "core/mem.h"

/* What a buffer of bytes takes: 64-byte multiples, never 0. */
static size_t mem_rounded(size_t bytes)
{
	size_t r = (bytes + 63) & ~(size_t)63;

	return r ? r : 64;
}

void *mem_alloc(mem_tracker *t, size_t bytes, const char *what)
{
	size_t rounded = mem_rounded(bytes);
	void *p = NULL;

	if (rounded < bytes) {
		titan_err(TITAN_ENOMEM, "out of memory allocating %s (%zu bytes)",
			  what ? what : "a buffer", bytes);
		return NULL;
	}
	if (t->dev_alloc) {
		int rc = t->dev_alloc(&p, rounded);
		if (rc) {
			titan_err_prefix(rc, "allocating %s (%zu bytes) on %s",
					 what ? what : "a buffer", bytes, t->device);
			return NULL;
		}
	} else {
		if (posix_memalign(&p, 64, rounded)) {
			titan_err(TITAN_ENOMEM, "out of memory allocating %s (%zu bytes)",
				  what ? what : "a buffer", bytes);
			return NULL;
		}
		memset(p, 0, rounded);
	}
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
	if (t->dev_free)
		t->dev_free(p, mem_rounded(bytes));
	else
		free(p);
	t->cur -= bytes;
	t->nalloc--;
}

void mem_reset_peak(mem_tracker *t)
{
	t->peak = t->cur;
}
