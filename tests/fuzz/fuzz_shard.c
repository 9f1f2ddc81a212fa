/* fuzz_shard.c - libFuzzer target: arbitrary bytes as a shard file.
 *
 * The bytes become an in-memory file (memfd) that shard_open reads by its
 * /proc/self/fd path; when it opens, every block is read and checked, the
 * document table walked and a few ranges read through the block cache, so
 * the sanitizers see any offset or size from the file used unchecked.
 *
 * The first byte picks a mode: odd, the rest is taken as it is; even, the
 * header and index checksums are recomputed first, so that mutated fields
 * get past the checksums and exercise the structural checks behind them. */
#include "core/base.h"

#include "memfile.h"
#include <unistd.h>

#include "core/hash.h"
#include "data/shard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t le(const uint8_t *p, int n)
{
	uint64_t x = 0;
	for (int i = n - 1; i >= 0; i--)
		x = x << 8 | p[i];
	return x;
}

static void put_le64(uint8_t *p, uint64_t x)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(x >> (8 * i));
}

/* Make the header and index checksums match whatever the bytes say. */
static void fix_checksums(uint8_t *p, size_t size)
{
	put_le64(p + 56, hash64(p, 56, 0));
	uint64_t nblocks = le(p + 20, 4), index_off = le(p + 40, 8);
	uint64_t n = nblocks * 24;
	if (index_off <= size && n <= size - index_off && 8 <= size - index_off - n)
		put_le64(p + index_off + n, hash64(p + index_off, (size_t)n, 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bool fix;
	uint8_t *copy = fuzz_take(data, &size, &fix);
	if (!copy)
		return 0;
	if (fix && size >= 64)
		fix_checksums(copy, size);
	const char *path = fuzz_memfile(copy, size);
	free(copy);

	shard_reader *r;
	if (shard_open(&r, path))
		return 0;
	uint64_t tokens = shard_tokens(r), docs = shard_docs(r);
	const uint64_t *starts = shard_doc_starts(r);
	for (uint64_t i = 0; i < docs; i++)
		if (starts[i] > tokens || (i && starts[i] < starts[i - 1]))
			abort();
	uint32_t *out = malloc((size_t)shard_block_tokens(r) * sizeof *out);
	if (!out)
		abort();
	for (uint32_t b = 0; b < shard_nblocks(r); b++) {
		size_t n;
		if (shard_read_block(r, b, out, &n) == 0 && n > shard_block_tokens(r))
			abort();
	}
	/* Ranges that cross block boundaries, through the cache. */
	size_t cap = shard_block_tokens(r);
	for (uint64_t pos = 0; pos < tokens; pos += cap / 2 + 1) {
		size_t n = (size_t)TITAN_MIN((uint64_t)cap, tokens - pos);
		if (shard_read(r, pos, n, out))
			break;
	}
	free(out);
	shard_close(r);
	shard_verify(path);
	return 0;
}
