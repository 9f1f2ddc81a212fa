/* hash.h - non-cryptographic hashing (64-bit, seedless, stable across
 * platforms and releases: hashes are stored in files). */
#ifndef TITAN_CORE_HASH_H
#define TITAN_CORE_HASH_H
#include "core/base.h"

/* A fast 64-bit hash of n bytes (same value on every machine). */
uint64_t hash64(const void *p, size_t n, uint64_t seed);
/* Mix a 64-bit integer (for integer-keyed hash tables). */
static inline uint64_t hash_mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}
/* SHA-256 of n bytes into out[32] (content identity: tokenizer hashes). */
void sha256(const void *p, size_t n, uint8_t out[32]);
/* Lowercase hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void hex_encode(const uint8_t *p, size_t n, char *out);

#endif
