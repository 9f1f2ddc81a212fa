/* test_cache_alloc.c - lib/core/cache_alloc over a fake device: malloc with
 * a byte budget that counts its calls, so every test can tell a cache hit
 * from a device call and run the device out of memory. */
#include "core/base.h"
#include "core/cache_alloc.h"
#include "check.h"

#define MIB ((size_t)1 << 20)

struct fake_device {
	size_t budget, used;
	long allocs, frees;
};

static int fake_alloc(void *ctx, void **p, size_t bytes)
{
	struct fake_device *d = ctx;

	if (bytes > d->budget - d->used)
		return -1;
	*p = aligned_alloc(64, bytes);
	if (!*p)
		return -1;
	d->used += bytes;
	d->allocs++;
	return 0;
}

static void fake_free(void *ctx, void *p, size_t bytes)
{
	struct fake_device *d = ctx;

	free(p);
	d->used -= bytes;
	d->frees++;
}

static cache_alloc *make(struct fake_device *d, size_t budget)
{
	cache_alloc *c = NULL;

	*d = (struct fake_device){ .budget = budget };
	if (cache_alloc_new(&c, fake_alloc, fake_free, d))
		printf("# cache_alloc_new: %s\n", titan_errmsg());
	return c;
}

static cache_alloc_stats stats(const cache_alloc *c)
{
	cache_alloc_stats s;

	cache_alloc_get_stats(c, &s);
	return s;
}

static void test_round(void)
{
	static const struct { size_t in, out; } cases[] = {
		{ 0, 512 }, { 1, 512 }, { 512, 512 }, { 513, 1024 }, { 1000, 1024 },
		{ MIB - 1, MIB }, { MIB, MIB }, { MIB + 1, 2 * MIB }, { 2 * MIB, 2 * MIB },
		{ 3 * MIB, 4 * MIB }, { 4 * MIB + 1, 6 * MIB }, { SIZE_MAX, 0 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		CHECK(cache_alloc_round(cases[i].in) == cases[i].out, "round(%zu) = %zu, want %zu",
		      cases[i].in, cache_alloc_round(cases[i].in), cases[i].out);
}

static void test_reuse_same_class(void)
{
	struct fake_device d;
	cache_alloc *c = make(&d, 64 * MIB);
	void *a, *b;

	REQUIRE(c, "no cache");
	REQUIRE(cache_alloc_get(c, &a, 1000) == 0, "%s", titan_errmsg());
	CHECK((uintptr_t)a % 64 == 0, "block %p not 64-byte aligned", a);
	memset(a, 0x5a, 1000);  /* the block holds its rounded size */
	REQUIRE(cache_alloc_put(c, a) == 0, "%s", titan_errmsg());
	/* 700 bytes is the same class (1024): the cached block, no device call */
	REQUIRE(cache_alloc_get(c, &b, 700) == 0, "%s", titan_errmsg());
	CHECK(b == a, "got %p, want the cached %p", b, a);
	CHECK(d.allocs == 1, "%ld device allocs", d.allocs);
	CHECK(stats(c).hits == 1 && stats(c).misses == 1, "hits %ld misses %ld",
	      stats(c).hits, stats(c).misses);
	CHECK(cache_alloc_put(c, b) == 0, "%s", titan_errmsg());
	cache_alloc_destroy(c);
	CHECK(d.used == 0 && d.frees == 1, "used %zu frees %ld", d.used, d.frees);
}

static void test_classes_do_not_share(void)
{
	struct fake_device d;
	cache_alloc *c = make(&d, 64 * MIB);
	void *a, *b, *e;

	REQUIRE(c, "no cache");
	REQUIRE(cache_alloc_get(c, &a, 512) == 0, "%s", titan_errmsg());
	REQUIRE(cache_alloc_put(c, a) == 0, "%s", titan_errmsg());
	/* a larger request does not take a smaller cached block, nor a
	 * smaller one a larger block */
	REQUIRE(cache_alloc_get(c, &b, 1024) == 0, "%s", titan_errmsg());
	CHECK(b != a && d.allocs == 2, "b %p a %p, %ld device allocs", b, a, d.allocs);
	REQUIRE(cache_alloc_put(c, b) == 0, "%s", titan_errmsg());
	REQUIRE(cache_alloc_get(c, &e, 3 * MIB) == 0, "%s", titan_errmsg());
	CHECK(e != a && e != b && d.allocs == 3, "%ld device allocs", d.allocs);
	CHECK(stats(c).hits == 0 && stats(c).misses == 3, "hits %ld misses %ld",
	      stats(c).hits, stats(c).misses);
	cache_alloc_destroy(c);
	CHECK(d.used == 0 && d.frees == 3, "used %zu frees %ld", d.used, d.frees);
}

static void test_stats(void)
{
	struct fake_device d;
	cache_alloc *c = make(&d, 64 * MIB);
	cache_alloc_stats s;
	void *a, *b;

	REQUIRE(c, "no cache");
	s = stats(c);
	CHECK(!s.in_use && !s.reserved && !s.device_allocs, "a new cache holds something");
	REQUIRE(cache_alloc_get(c, &a, 1000) == 0, "%s", titan_errmsg());
	REQUIRE(cache_alloc_get(c, &b, 3 * MIB) == 0, "%s", titan_errmsg());
	s = stats(c);
	CHECK(s.in_use == 1024 + 4 * MIB && s.in_use_peak == s.in_use, "in_use %zu peak %zu",
	      s.in_use, s.in_use_peak);
	CHECK(s.reserved == s.in_use && s.reserved_peak == s.reserved, "reserved %zu peak %zu",
	      s.reserved, s.reserved_peak);
	CHECK(s.device_allocs == 2 && s.device_frees == 0, "allocs %ld frees %ld",
	      s.device_allocs, s.device_frees);

	REQUIRE(cache_alloc_put(c, b) == 0, "%s", titan_errmsg());
	s = stats(c);
	CHECK(s.in_use == 1024 && s.in_use_peak == 1024 + 4 * MIB, "in_use %zu peak %zu",
	      s.in_use, s.in_use_peak);
	CHECK(s.reserved == 1024 + 4 * MIB, "a cached block is still reserved: %zu", s.reserved);

	cache_alloc_trim(c);
	s = stats(c);
	CHECK(s.reserved == 1024 && s.reserved_peak == 1024 + 4 * MIB, "reserved %zu peak %zu",
	      s.reserved, s.reserved_peak);
	CHECK(s.device_frees == 1 && d.used == 1024, "frees %ld, device holds %zu",
	      s.device_frees, d.used);
	/* trim leaves live blocks alone */
	memset(a, 1, 1024);
	REQUIRE(cache_alloc_put(c, a) == 0, "%s", titan_errmsg());
	CHECK(stats(c).in_use == 0, "in_use %zu", stats(c).in_use);
	cache_alloc_destroy(c);
	CHECK(d.used == 0, "device still holds %zu bytes", d.used);
}

static void test_bad_put_changes_nothing(void)
{
	struct fake_device d;
	cache_alloc *c = make(&d, 64 * MIB);
	cache_alloc_stats before, after;
	void *a, *b, *e;
	int local;

	REQUIRE(c, "no cache");
	/* a put before any get: nothing was handed out */
	CHECK(cache_alloc_put(c, &local) == TITAN_EINTERNAL, "foreign pointer on a new cache");
	CHECK(cache_alloc_put(c, NULL) == 0, "NULL is fine");
	REQUIRE(cache_alloc_get(c, &a, 4096) == 0, "%s", titan_errmsg());
	REQUIRE(cache_alloc_put(c, a) == 0, "%s", titan_errmsg());

	before = stats(c);
	CHECK(cache_alloc_put(c, a) == TITAN_EINTERNAL, "a double put succeeded");
	CHECK(strstr(titan_errmsg(), "not handed out"), "message: %s", titan_errmsg());
	CHECK(cache_alloc_put(c, &local) == TITAN_EINTERNAL, "a foreign pointer was taken");
	CHECK(cache_alloc_put(c, (char *)a + 64) == TITAN_EINTERNAL, "an inner pointer was taken");
	after = stats(c);
	CHECK(!memcmp(&before, &after, sizeof before), "a bad put changed the stats");

	/* the block is cached once: the second get of its class is a miss */
	REQUIRE(cache_alloc_get(c, &b, 4096) == 0, "%s", titan_errmsg());
	REQUIRE(cache_alloc_get(c, &e, 4096) == 0, "%s", titan_errmsg());
	CHECK(b == a && e != a && d.allocs == 2, "b %p e %p a %p, %ld device allocs", b, e, a,
	      d.allocs);
	cache_alloc_destroy(c);
	CHECK(d.used == 0, "device still holds %zu bytes", d.used);
}

static void test_device_failure_trims_and_retries(void)
{
	struct fake_device d;
	cache_alloc *c = make(&d, 2 * MIB);
	cache_alloc_stats s;
	void *a, *b, *e, *f = &f;
	char want[128];

	REQUIRE(c, "no cache");
	REQUIRE(cache_alloc_get(c, &a, MIB) == 0, "%s", titan_errmsg());
	REQUIRE(cache_alloc_get(c, &b, MIB) == 0, "%s", titan_errmsg());
	REQUIRE(cache_alloc_put(c, a) == 0, "%s", titan_errmsg());
	REQUIRE(cache_alloc_put(c, b) == 0, "%s", titan_errmsg());
	/* the device is full of cached 1 MiB blocks; a 2 MiB block needs them back */
	REQUIRE(cache_alloc_get(c, &e, MIB + 1) == 0, "no trim and retry: %s", titan_errmsg());
	s = stats(c);
	CHECK(s.device_frees == 2 && s.device_allocs == 3, "frees %ld allocs %ld",
	      s.device_frees, s.device_allocs);
	CHECK(s.reserved == 2 * MIB && d.used == 2 * MIB, "reserved %zu used %zu", s.reserved,
	      d.used);

	/* nothing cached to give back: out of memory, with the numbers */
	CHECK(cache_alloc_get(c, &f, 100) == TITAN_ENOMEM, "allocated past the budget");
	CHECK(f == NULL, "*p not cleared on failure");
	snprintf(want, sizeof want, "out of device memory allocating 100 bytes (%zu reserved, "
		 "%zu in use)", 2 * MIB, 2 * MIB);
	CHECK(!strcmp(titan_errmsg(), want), "message: %s", titan_errmsg());
	s = stats(c);
	CHECK(s.in_use == 2 * MIB && s.reserved == 2 * MIB, "a failed get changed the stats");

	REQUIRE(cache_alloc_put(c, e) == 0, "%s", titan_errmsg());
	REQUIRE(cache_alloc_get(c, &f, 100) == 0, "after a put: %s", titan_errmsg());
	cache_alloc_destroy(c);
	CHECK(d.used == 0, "device still holds %zu bytes", d.used);
}

static void test_destroy_frees_everything(void)
{
	struct fake_device d;
	cache_alloc *c = make(&d, SIZE_MAX);
	void *p[300];

	REQUIRE(c, "no cache");
	/* enough live blocks to grow the live table a few times */
	for (size_t i = 0; i < ARRAY_SIZE(p); i++)
		REQUIRE(cache_alloc_get(c, &p[i], 512 * (i % 7 + 1)) == 0, "%s", titan_errmsg());
	for (size_t i = 0; i < ARRAY_SIZE(p); i += 3)
		REQUIRE(cache_alloc_put(c, p[i]) == 0, "%s", titan_errmsg());
	cache_alloc_destroy(c);
	CHECK(d.used == 0 && d.frees == d.allocs, "used %zu, %ld allocs, %ld frees", d.used,
	      d.allocs, d.frees);
}

/* Many blocks put back in a scrambled order: every put finds its block
 * (deletion from the live table keeps the others reachable). */
static void test_scrambled_puts(void)
{
	struct fake_device d;
	cache_alloc *c = make(&d, SIZE_MAX);
	enum { N = 2000 };
	static void *p[N];

	REQUIRE(c, "no cache");
	for (int i = 0; i < N; i++)
		REQUIRE(cache_alloc_get(c, &p[i], 512 + (size_t)(i % 13) * 700) == 0, "%s",
			titan_errmsg());
	for (int i = 0; i < N; i++) {
		int j = (int)(((unsigned)i * 7919u) % N);  /* a permutation: 7919 is prime */

		CHECK(cache_alloc_put(c, p[j]) == 0, "put %d: %s", j, titan_errmsg());
	}
	CHECK(stats(c).in_use == 0, "in_use %zu", stats(c).in_use);
	cache_alloc_destroy(c);
	CHECK(d.used == 0, "device still holds %zu bytes", d.used);
}

/* A training step's pattern: the same sizes every step, so after the
 * first step the device is never called. */
static void test_steady_state(void)
{
	static const size_t sizes[] = {
		4, 100, 512, 4096, 4096, 70000, MIB - 3, MIB, 3 * MIB, 3 * MIB, 17 * MIB, 64,
	};
	struct fake_device d;
	cache_alloc *c = make(&d, SIZE_MAX);
	void *p[ARRAY_SIZE(sizes)];
	long first_allocs = 0;

	REQUIRE(c, "no cache");
	for (int step = 0; step < 1000; step++) {
		for (size_t i = 0; i < ARRAY_SIZE(sizes); i++)
			REQUIRE(cache_alloc_get(c, &p[i], sizes[i]) == 0, "%s", titan_errmsg());
		/* freed in another order each step */
		for (size_t i = 0; i < ARRAY_SIZE(sizes); i++)
			REQUIRE(cache_alloc_put(c, p[(i + (size_t)step) % ARRAY_SIZE(sizes)]) == 0,
				"%s", titan_errmsg());
		if (step == 0)
			first_allocs = d.allocs;
	}
	CHECK(d.allocs == first_allocs && d.frees == 0, "%ld device allocs after the first step "
	      "(%ld), %ld frees", d.allocs, first_allocs, d.frees);
	CHECK(stats(c).hits == 999 * (long)ARRAY_SIZE(sizes), "hits %ld", stats(c).hits);
	cache_alloc_destroy(c);
	CHECK(d.used == 0, "device still holds %zu bytes", d.used);
}

int main(void)
{
	RUN(test_round);
	RUN(test_reuse_same_class);
	RUN(test_classes_do_not_share);
	RUN(test_stats);
	RUN(test_bad_put_changes_nothing);
	RUN(test_device_failure_trims_and_retries);
	RUN(test_destroy_frees_everything);
	RUN(test_scrambled_puts);
	RUN(test_steady_state);
	return check_done();
}
