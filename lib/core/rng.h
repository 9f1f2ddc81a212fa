/* rng.h - the random numbers titan draws (weight init, sampling):
 * xoshiro256** seeded through splitmix64 from (seed, stream), so that each
 * tensor or each prompt has a stream of its own and results depend on
 * neither thread count nor order.  The same seed gives the same numbers on
 * every machine. */
#ifndef TITAN_CORE_RNG_H
#define TITAN_CORE_RNG_H
#include "core/base.h"

typedef struct titan_rng {
	uint64_t s[4];
} titan_rng;

static inline uint64_t rng_splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t rng_rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static inline void rng_seed(titan_rng *r, uint64_t seed, uint64_t stream)
{
	uint64_t x = seed, y = stream ^ 0x5851f42d4c957f2dull;

	x ^= rng_splitmix64(&y);
	for (int i = 0; i < 4; i++)
		r->s[i] = rng_splitmix64(&x);
}

static inline uint64_t rng_next(titan_rng *r)
{
	uint64_t *s = r->s, out = rng_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rng_rotl(s[3], 45);
	return out;
}

/* Uniform in [0, 1), 53 bits. */
static inline double rng_unit(titan_rng *r)
{
	return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

#endif
