/* rand.h - the unit tests' random inputs: a 64-bit linear congruential
 * generator (Knuth's MMIX constants) whose state a test seeds, so that a
 * case's inputs depend on nothing but its seed, on every machine.
 *
 *   rng_state = 7;
 *   float x = rnd();        uniform in [-1, 1)
 *   int i = rnd_int(10);    uniform in [0, 10) */
#ifndef TITAN_TESTS_RAND_H
#define TITAN_TESTS_RAND_H
#include <stdint.h>

static uint64_t rng_state;

static inline float rnd(void)
{
	rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (float)((double)(rng_state >> 40) / (double)(1 << 24) * 2 - 1);
}

static inline int rnd_int(int n)
{
	int r = (int)((rnd() + 1) * 0.5f * (float)n);

	return r < n ? r : n - 1;
}

#endif
