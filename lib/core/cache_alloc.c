/* cache_alloc.c - a caching allocator over a device's own allocator (see
 * cache_alloc.h).
 *
 * Two tables.  The live blocks, those handed out, sit in an open-addressing
 * hash table keyed by pointer, so a put finds the block's size and knows a
 * pointer it never handed out.  The cached blocks sit in one free list per
 * size class, the classes in an array sorted by size: a training run uses
 * a few dozen classes, so a binary search is all the lookup it needs. */
#include "core/base.h"
#include "core/cache_alloc.h"
#include "core/hash.h"

#define SMALL_STEP ((size_t)512)
#define SMALL_MAX ((size_t)1 << 20)
#define LARGE_STEP ((size_t)2 << 20)

struct live {
	void *p;      /* NULL: an empty slot */
	size_t size;  /* the block's size class */
};

struct size_class {
	size_t size;
	void **free;  /* blocks of this class nobody uses */
	size_t n, cap;
};

struct cache_alloc {
	cache_device_alloc dev_alloc;
	cache_device_free dev_free;
	void *ctx;
	struct live *live;  /* live_cap slots, a power of two, at most half full */
	size_t nlive, live_cap;
	struct size_class *classes;  /* sorted by size */
	size_t nclasses, classes_cap;
	cache_alloc_stats st;
};

size_t cache_alloc_round(size_t bytes)
{
	if (bytes == 0)
		return SMALL_STEP;
	if (bytes <= SMALL_MAX)
		return (bytes + SMALL_STEP - 1) / SMALL_STEP * SMALL_STEP;
	if (bytes > SIZE_MAX - LARGE_STEP)
		return 0;  /* no class: the caller reports the size */
	return (bytes + LARGE_STEP - 1) / LARGE_STEP * LARGE_STEP;
}

int cache_alloc_new(cache_alloc **out, cache_device_alloc alloc, cache_device_free free_fn,
		    void *ctx)
{
	cache_alloc *c = calloc(1, sizeof *c);

	*out = NULL;
	if (!c)
		return titan_err_nomem();
	c->dev_alloc = alloc;
	c->dev_free = free_fn;
	c->ctx = ctx;
	*out = c;
	return 0;
}

static void give_back(cache_alloc *c, void *p, size_t size)
{
	c->dev_free(c->ctx, p, size);
	c->st.reserved -= size;
	c->st.device_frees++;
}

void cache_alloc_trim(cache_alloc *c)
{
	for (size_t i = 0; i < c->nclasses; i++) {
		struct size_class *k = &c->classes[i];

		while (k->n)
			give_back(c, k->free[--k->n], k->size);
	}
}

void cache_alloc_destroy(cache_alloc *c)
{
	if (!c)
		return;
	cache_alloc_trim(c);
	for (size_t i = 0; i < c->live_cap; i++)
		if (c->live[i].p)
			give_back(c, c->live[i].p, c->live[i].size);
	for (size_t i = 0; i < c->nclasses; i++)
		free(c->classes[i].free);
	free(c->classes);
	free(c->live);
	free(c);
}

static size_t slot_of(const cache_alloc *c, const void *p)
{
	return hash_mix64((uint64_t)(uintptr_t)p) & (c->live_cap - 1);
}

/* The slot holding p, or the empty slot where it would go. */
static size_t live_find(const cache_alloc *c, const void *p)
{
	size_t i = slot_of(c, p);

	while (c->live[i].p && c->live[i].p != p)
		i = (i + 1) & (c->live_cap - 1);
	return i;
}

/* Room for one more live block, made before a block is taken so that a
 * failure here leaves nothing to undo. */
static int live_reserve(cache_alloc *c)
{
	struct live *old = c->live;
	size_t old_cap = c->live_cap, cap = old_cap ? old_cap * 2 : 64;

	if ((c->nlive + 1) * 2 <= old_cap)
		return 0;
	c->live = calloc(cap, sizeof *c->live);
	if (!c->live) {
		c->live = old;
		return titan_err_nomem();
	}
	c->live_cap = cap;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i].p)
			c->live[live_find(c, old[i].p)] = old[i];
	free(old);
	return 0;
}

/* Empty slot i, moving back the entries of its probe run that a gap at i
 * would hide from live_find (deletion without tombstones). */
static void live_remove(cache_alloc *c, size_t i)
{
	size_t mask = c->live_cap - 1;

	for (size_t j = (i + 1) & mask; c->live[j].p; j = (j + 1) & mask) {
		size_t home = slot_of(c, c->live[j].p);

		/* j's entry may move to i when its home is not in (i, j] */
		if (((j - home) & mask) >= ((j - i) & mask)) {
			c->live[i] = c->live[j];
			i = j;
		}
	}
	c->live[i].p = NULL;
	c->nlive--;
}

/* The class of size, added when absent with add (NULL when absent, or
 * when there is no memory to add it). */
static struct size_class *class_of(cache_alloc *c, size_t size, bool add)
{
	size_t lo = 0, hi = c->nclasses;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (c->classes[mid].size < size)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < c->nclasses && c->classes[lo].size == size)
		return &c->classes[lo];
	if (!add)
		return NULL;
	if (c->nclasses == c->classes_cap) {
		size_t cap = c->classes_cap ? c->classes_cap * 2 : 16;
		struct size_class *k = realloc(c->classes, cap * sizeof *k);

		if (!k)
			return NULL;
		c->classes = k;
		c->classes_cap = cap;
	}
	memmove(&c->classes[lo + 1], &c->classes[lo], (c->nclasses - lo) * sizeof *c->classes);
	c->classes[lo] = (struct size_class){ .size = size };
	c->nclasses++;
	return &c->classes[lo];
}

int cache_alloc_get(cache_alloc *c, void **p, size_t bytes)
{
	size_t size = cache_alloc_round(bytes);
	struct size_class *k;
	void *b = NULL;
	int rc;

	*p = NULL;
	if (!size)
		return titan_err(TITAN_ENOMEM, "cannot allocate %zu bytes of device memory", bytes);
	if ((rc = live_reserve(c)))
		return rc;
	k = class_of(c, size, false);
	if (k && k->n) {
		b = k->free[--k->n];
		c->st.hits++;
	} else {
		c->st.misses++;
		if (c->dev_alloc(c->ctx, &b, size)) {
			/* what the cache holds may be enough in another class */
			cache_alloc_trim(c);
			if (c->dev_alloc(c->ctx, &b, size))
				return titan_err(TITAN_ENOMEM, "out of device memory allocating %zu bytes "
						 "(%zu reserved, %zu in use)", bytes,
						 c->st.reserved, c->st.in_use);
		}
		c->st.device_allocs++;
		c->st.reserved += size;
		c->st.reserved_peak = TITAN_MAX(c->st.reserved_peak, c->st.reserved);
	}
	c->live[live_find(c, b)] = (struct live){ b, size };
	c->nlive++;
	c->st.in_use += size;
	c->st.in_use_peak = TITAN_MAX(c->st.in_use_peak, c->st.in_use);
	*p = b;
	return 0;
}

int cache_alloc_put(cache_alloc *c, void *p)
{
	struct size_class *k;
	size_t i, size;

	if (!p)
		return 0;
	i = c->live_cap ? live_find(c, p) : 0;
	if (!c->live_cap || !c->live[i].p)
		return titan_err(TITAN_EINTERNAL, "cache_alloc: block %p was not handed out, "
				 "or was given back already", p);
	size = c->live[i].size;
	live_remove(c, i);
	c->st.in_use -= size;
	k = class_of(c, size, true);
	if (k && k->n == k->cap) {
		size_t cap = k->cap ? k->cap * 2 : 8;
		void **f = realloc(k->free, cap * sizeof *f);

		if (f) {
			k->free = f;
			k->cap = cap;
		}
	}
	/* without host memory to remember it, the block goes to the device */
	if (k && k->n < k->cap)
		k->free[k->n++] = p;
	else
		give_back(c, p, size);
	return 0;
}

void cache_alloc_get_stats(const cache_alloc *c, cache_alloc_stats *s)
{
	*s = c->st;
}
