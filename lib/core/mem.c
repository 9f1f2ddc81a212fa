/* mem.c - counted allocations (mem.h). */
#include "core/base.h"
#include "core/mem.h"

/* What a buffer of bytes takes: 64-byte multiples, never 0. */
static size_t mem_rounded(size_t bytes)
{
	size_t r = (bytes + 63) & ~(size_t)63;

	return r ? r : 64;
}

int mem_host_alloc(void **p, size_t bytes)
{
	size_t rounded = mem_rounded(bytes);

	*p = NULL;
	if (rounded < bytes || posix_memalign(p, 64, rounded)) {
		*p = NULL;
		return titan_err(TITAN_ENOMEM, "out of memory (%zu bytes)", bytes);
	}
	memset(*p, 0, rounded);
	return 0;
}

void mem_host_free(void *p, size_t bytes)
{
	(void)bytes;
	free(p);
}

void *mem_alloc(mem_tracker *t, size_t bytes, const char *what)
{
	int (*alloc)(void **, size_t) = t->dev_alloc ? t->dev_alloc : mem_host_alloc;
	size_t rounded = mem_rounded(bytes);
	void *p = NULL;
	int rc;

	rc = rounded < bytes ? titan_err(TITAN_ENOMEM, "out of memory") : alloc(&p, rounded);
	if (rc) {
		titan_err_prefix(rc, "allocating %s (%zu bytes) on %s", what ? what : "a buffer",
				 bytes, t->device ? t->device : "cpu");
		return NULL;
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
	(t->dev_free ? t->dev_free : mem_host_free)(p, mem_rounded(bytes));
	t->cur -= bytes;
	t->nalloc--;
}

void mem_reset_peak(mem_tracker *t)
{
	t->peak = t->cur;
}
