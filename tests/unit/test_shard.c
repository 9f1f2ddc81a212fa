/* test_shard.c - one shard file: round trips, block access, damage. */
#include "core/base.h"
#include "core/hash.h"
#include "core/log.h"
#include "data/shard.h"
#include "check.h"

#include <zstd.h>

#include <sys/stat.h>
#include <unistd.h>


static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void path_in(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", check_scratch, name);
}

/* Documents of random lengths (some empty) as one flat stream. */
typedef struct docs {
	titan_u32s ids;
	titan_u32s lens;
} docs;

static void make_docs(docs *d, size_t ndocs, size_t maxlen, uint32_t vocab)
{
	memset(d, 0, sizeof *d);
	for (size_t i = 0; i < ndocs; i++) {
		size_t len = rnd() % 5 == 0 ? 0 : (size_t)(rnd() % (maxlen + 1));
		u32s_push(&d->lens, (uint32_t)len);
		for (size_t k = 0; k < len; k++)
			u32s_push(&d->ids, (uint32_t)(rnd() % vocab));
	}
}

static void free_docs(docs *d)
{
	u32s_free(&d->ids);
	u32s_free(&d->lens);
}

static int write_shard_threads(const char *path, const docs *d, int token_bytes,
				uint32_t block, int threads, shard_summary *sum)
{
	shard_writer *w;
	int rc = shard_writer_open(&w, path, token_bytes, block, 0, threads);
	if (rc)
		return rc;
	size_t off = 0;
	for (size_t i = 0; i < d->lens.n; i++) {
		rc = shard_writer_add_doc(w, -1, d->ids.v + off, d->lens.v[i], -1);
		if (rc) {
			shard_writer_abort(w);
			return rc;
		}
		off += d->lens.v[i];
	}
	return shard_writer_close(w, sum);
}

static int write_shard(const char *path, const docs *d, int token_bytes, uint32_t block,
		       shard_summary *sum)
{
	return write_shard_threads(path, d, token_bytes, block, 0, sum);
}

static void roundtrip(int token_bytes, uint32_t block, size_t ndocs, uint32_t vocab)
{
	char path[600];
	path_in(path, sizeof path, "rt.shard");
	docs d;
	make_docs(&d, ndocs, 40, vocab);
	shard_summary sum;
	int rc = write_shard(path, &d, token_bytes, block, &sum);
	REQUIRE(rc == 0, "write: %s", titan_errmsg());
	CHECK(sum.tokens == d.ids.n, "%llu vs %zu", (unsigned long long)sum.tokens, d.ids.n);
	CHECK(sum.docs == ndocs, "docs %llu", (unsigned long long)sum.docs);
	struct stat st;
	CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == sum.bytes, "size");
	uint64_t h;
	CHECK(shard_file_xxh64(path, &h) == 0 && h == sum.xxh64, "file hash");

	shard_reader *r;
	rc = shard_open(&r, path);
	REQUIRE(rc == 0, "open: %s", titan_errmsg());
	CHECK(shard_tokens(r) == d.ids.n, "tokens");
	CHECK(shard_docs(r) == ndocs, "docs");
	CHECK(shard_token_bytes(r) == token_bytes, "token bytes");
	CHECK(shard_block_tokens(r) == block, "block tokens");
	CHECK(shard_nblocks(r) == (d.ids.n + block - 1) / block, "nblocks %u", shard_nblocks(r));
	const uint64_t *starts = shard_doc_starts(r);
	uint64_t at = 0;
	for (size_t i = 0; i < ndocs; i++) {
		CHECK(starts[i] == at, "doc %zu starts at %llu, want %llu", i,
		      (unsigned long long)starts[i], (unsigned long long)at);
		at += d.lens.v[i];
	}
	/* Whole stream, then random ranges through the block cache. */
	uint32_t *got = malloc((d.ids.n + 1) * sizeof *got);
	rc = shard_read(r, 0, d.ids.n, got);
	CHECK(rc == 0 && !memcmp(got, d.ids.v, d.ids.n * sizeof *got), "whole read");
	for (int t = 0; t < 500 && d.ids.n; t++) {
		uint64_t pos = rnd() % d.ids.n;
		size_t n = (size_t)(rnd() % (d.ids.n - pos + 1));
		rc = shard_read(r, pos, n, got);
		CHECK(rc == 0 && !memcmp(got, d.ids.v + pos, n * sizeof *got),
		      "range %llu +%zu", (unsigned long long)pos, n);
	}
	CHECK(shard_read(r, d.ids.n, 1, got) == TITAN_ERANGE, "read past the end");
	size_t n;
	CHECK(shard_read_block(r, shard_nblocks(r), got, &n) == TITAN_ERANGE, "block past end");
	free(got);
	shard_close(r);
	CHECK(shard_verify(path) == 0, "verify: %s", titan_errmsg());
	unlink(path);
	free_docs(&d);
}

static void test_roundtrip_u16(void)
{
	roundtrip(2, 7, 300, 65536);
}

static void test_roundtrip_u32(void)
{
	roundtrip(4, 7, 300, 1u << 31);
}

static void test_roundtrip_u24(void)
{
	roundtrip(3, 7, 300, 1u << 24);
	roundtrip(3, 4096, 2000, 128256);
}

static void test_roundtrip_big_blocks(void)
{
	roundtrip(2, 4096, 2000, 50000);
	roundtrip(4, 1, 50, 100);
}

/* The bytes do not depend on how many threads compress. */
static void test_threads_same_bytes(void)
{
	char path[600];
	path_in(path, sizeof path, "threads.shard");
	docs d;
	make_docs(&d, 3000, 50, 128256);
	shard_summary one, many;
	REQUIRE(write_shard_threads(path, &d, 3, 64, 1, &one) == 0, "%s", titan_errmsg());
	REQUIRE(write_shard_threads(path, &d, 3, 64, 5, &many) == 0, "%s", titan_errmsg());
	CHECK(one.xxh64 == many.xxh64 && one.bytes == many.bytes, "1 and 5 threads differ");
	unlink(path);
	free_docs(&d);
}

static void test_empty_docs_only(void)
{
	char path[600];
	path_in(path, sizeof path, "empty.shard");
	shard_writer *w;
	REQUIRE(shard_writer_open(&w, path, 2, 8, 0, 0) == 0, "%s", titan_errmsg());
	for (int i = 0; i < 3; i++)
		REQUIRE(shard_writer_add_doc(w, -1, NULL, 0, -1) == 0, "%s", titan_errmsg());
	shard_summary sum;
	REQUIRE(shard_writer_close(w, &sum) == 0, "%s", titan_errmsg());
	CHECK(sum.tokens == 0 && sum.docs == 3, "counts");
	shard_reader *r;
	REQUIRE(shard_open(&r, path) == 0, "%s", titan_errmsg());
	CHECK(shard_nblocks(r) == 0 && shard_docs(r) == 3, "empty shard");
	shard_close(r);
	CHECK(shard_verify(path) == 0, "%s", titan_errmsg());
	unlink(path);
}

static void test_u16_range(void)
{
	char path[600], tmp[700];
	path_in(path, sizeof path, "range.shard");
	shard_writer *w;
	REQUIRE(shard_writer_open(&w, path, 2, 8, 0, 0) == 0, "%s", titan_errmsg());
	uint32_t ok[] = { 1, 65535 }, bad[] = { 3, 65536 };
	CHECK(shard_writer_add_doc(w, -1, ok, 2, -1) == 0, "%s", titan_errmsg());
	CHECK(shard_writer_add_doc(w, -1, bad, 2, -1) == TITAN_ERANGE, "65536 in u16");
	CHECK(strstr(titan_errmsg(), "65536") != NULL, "message: %s", titan_errmsg());
	shard_writer_abort(w);
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	CHECK(access(tmp, F_OK) != 0 && access(path, F_OK) != 0, "abort left a file");
}

static void test_u24_range(void)
{
	char path[600];
	path_in(path, sizeof path, "range24.shard");
	shard_writer *w;
	REQUIRE(shard_writer_open(&w, path, 3, 8, 0, 0) == 0, "%s", titan_errmsg());
	uint32_t ok[] = { 1, 0xffffff }, bad[] = { 3, 1u << 24 };
	CHECK(shard_writer_add_doc(w, -1, ok, 2, -1) == 0, "%s", titan_errmsg());
	CHECK(shard_writer_add_doc(w, -1, bad, 2, -1) == TITAN_ERANGE, "2^24 in 3 bytes");
	CHECK(strstr(titan_errmsg(), "16777216") != NULL, "message: %s", titan_errmsg());
	CHECK(shard_writer_start_doc(w) == 0, "%s", titan_errmsg());
	CHECK(shard_writer_append(w, bad + 1, 1) == TITAN_ERANGE, "2^24 appended");
	shard_writer_abort(w);
	CHECK(shard_writer_open(&w, path, 5, 8, 0, 0) == TITAN_EUSAGE, "token size 5");
}

/* A document appended in pieces is stored exactly as one added whole. */
static void test_pieces_match_whole(void)
{
	char whole[600], pieces[600];
	path_in(whole, sizeof whole, "whole.shard");
	path_in(pieces, sizeof pieces, "pieces.shard");
	docs d;
	make_docs(&d, 400, 60, 65536);
	shard_summary a, b;
	REQUIRE(write_shard(whole, &d, 2, 16, &a) == 0, "%s", titan_errmsg());
	shard_writer *w;
	REQUIRE(shard_writer_open(&w, pieces, 2, 16, 0, 0) == 0, "%s", titan_errmsg());
	size_t off = 0;
	int rc = 0;
	for (size_t i = 0; i < d.lens.n && !rc; i++) {
		size_t left = d.lens.v[i];
		rc = shard_writer_start_doc(w);
		while (!rc) {
			size_t take = left ? (size_t)(rnd() % (left + 1)) : 0;
			rc = shard_writer_append(w, d.ids.v + off, take);
			off += take;
			left -= take;
			if (!left)
				break;
		}
	}
	REQUIRE(rc == 0, "%s", titan_errmsg());
	REQUIRE(shard_writer_close(w, &b) == 0, "%s", titan_errmsg());
	CHECK(a.xxh64 == b.xxh64 && a.bytes == b.bytes && a.docs == b.docs,
	      "pieces differ from whole documents");
	uint32_t bad[] = { 65536 };
	REQUIRE(shard_writer_open(&w, pieces, 2, 16, 0, 0) == 0, "%s", titan_errmsg());
	CHECK(shard_writer_start_doc(w) == 0, "%s", titan_errmsg());
	CHECK(shard_writer_append(w, bad, 1) == TITAN_ERANGE, "65536 in u16, appended");
	shard_writer_abort(w);
	unlink(whole);
	unlink(pieces);
	free_docs(&d);
}

/* BOS and EOS given to add_doc land as if appended around the ids; one that
 * does not fit refuses the document and adds nothing. */
static void test_wrapped_match_pieces(void)
{
	char wrapped[600], pieces[600];
	path_in(wrapped, sizeof wrapped, "wrapped.shard");
	path_in(pieces, sizeof pieces, "wrapped-pieces.shard");
	docs d;
	make_docs(&d, 300, 40, 65530);
	uint32_t bos = 65531, eos = 65532;
	double cpu0 = titan_cpu_now();
	shard_writer *a, *b;
	REQUIRE(shard_writer_open(&a, wrapped, 2, 16, 0, 0) == 0, "%s", titan_errmsg());
	REQUIRE(shard_writer_open(&b, pieces, 2, 16, 0, 0) == 0, "%s", titan_errmsg());
	size_t off = 0;
	int rc = 0;
	for (size_t i = 0; i < d.lens.n && !rc; i++) {
		const uint32_t *ids = d.ids.v + off;
		size_t n = d.lens.v[i];
		rc = shard_writer_add_doc(a, bos, ids, n, i % 3 ? (int64_t)eos : -1);
		if (!rc && i % 5 == 0)
			CHECK(shard_writer_add_doc(a, 65536, ids, n, eos) == TITAN_ERANGE &&
			      shard_writer_add_doc(a, bos, ids, n, 1 << 20) == TITAN_ERANGE,
			      "a BOS or EOS past u16 was taken");
		if (!rc)
			rc = shard_writer_start_doc(b);
		if (!rc)
			rc = shard_writer_append(b, &bos, 1);
		if (!rc)
			rc = shard_writer_append(b, ids, n);
		if (!rc && i % 3)
			rc = shard_writer_append(b, &eos, 1);
		off += n;
	}
	REQUIRE(rc == 0, "%s", titan_errmsg());
	shard_summary sa, sb;
	REQUIRE(shard_writer_close(a, &sa) == 0, "%s", titan_errmsg());
	REQUIRE(shard_writer_close(b, &sb) == 0, "%s", titan_errmsg());
	CHECK(sa.xxh64 == sb.xxh64 && sa.docs == d.lens.n && sb.docs == d.lens.n,
	      "wrapped documents differ from the same appended in pieces");
	/* The writers' own CPU time: some, and no more than the process's. */
	double cpu = titan_cpu_now() - cpu0;
	CHECK(sa.compress_cpu > 0 && sb.compress_cpu > 0 && sa.compress_cpu + sb.compress_cpu <= cpu,
	      "compress_cpu %g + %g of %g s", sa.compress_cpu, sb.compress_cpu, cpu);
	unlink(wrapped);
	unlink(pieces);
	free_docs(&d);
}

/* Abort with blocks still queued for compression: nothing is left. */
static void test_abort_with_blocks_queued(void)
{
	char path[600], tmp[700];
	path_in(path, sizeof path, "queued.shard");
	docs d;
	make_docs(&d, 2000, 100, 1u << 20);
	shard_writer *w;
	REQUIRE(shard_writer_open(&w, path, 4, 3, 0, 0) == 0, "%s", titan_errmsg());
	CHECK(shard_writer_add_doc(w, -1, d.ids.v, d.ids.n, -1) == 0, "%s", titan_errmsg());
	shard_writer_abort(w);
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	CHECK(access(tmp, F_OK) != 0 && access(path, F_OK) != 0, "abort left a file");
	free_docs(&d);
}

static int read_file(const char *path, titan_bytes *b)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -1;
	uint8_t buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, f)) > 0)
		bytes_append(b, buf, n);
	fclose(f);
	return 0;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	fwrite(p, 1, n, f);
	fclose(f);
}

static uint64_t le64_at(const uint8_t *p)
{
	uint64_t x = 0;
	for (int i = 7; i >= 0; i--)
		x = x << 8 | p[i];
	return x;
}

/* Flip one byte at off; verify must fail with a message naming the file
 * and containing want. */
static void expect_damage(const char *path, const titan_bytes *good, size_t off,
			  const char *want)
{
	titan_bytes b = { 0 };
	bytes_append(&b, good->v, good->n);
	b.v[off] ^= 0x5a;
	write_bytes(path, b.v, b.n);
	int rc = shard_verify(path);
	CHECK(rc == TITAN_EFORMAT, "flip at %zu: rc %d", off, rc);
	CHECK(strstr(titan_errmsg(), path) != NULL, "flip at %zu: %s", off, titan_errmsg());
	CHECK(!want || strstr(titan_errmsg(), want) != NULL, "flip at %zu: want '%s': %s",
	      off, want, titan_errmsg());
	bytes_free(&b);
}

static void test_damage(void)
{
	char path[600];
	path_in(path, sizeof path, "damage.shard");
	docs d;
	make_docs(&d, 200, 60, 1000);
	shard_summary sum;
	REQUIRE(write_shard(path, &d, 2, 64, &sum) == 0, "%s", titan_errmsg());
	titan_bytes good = { 0 };
	REQUIRE(read_file(path, &good) == 0 && good.n == sum.bytes, "read back");
	uint64_t index_off = le64_at(good.v + 40), docs_off = le64_at(good.v + 48);
	uint32_t nblocks = (uint32_t)le64_at(good.v + 20);
	REQUIRE(nblocks > 4, "blocks %u", nblocks);

	/* Header bytes, each block's middle, index entries, document table,
	 * footer: every one is caught. */
	for (size_t off = 0; off < 64; off += 5)
		expect_damage(path, &good, off, NULL);
	for (uint32_t b = 0; b < nblocks; b++) {
		const uint8_t *e = good.v + index_off + 24 * b;
		uint64_t boff = le64_at(e);
		uint32_t csize = (uint32_t)(le64_at(e + 8) & 0xffffffffu);
		char want[32];
		snprintf(want, sizeof want, "block %u", b);
		expect_damage(path, &good, (size_t)(boff + csize / 2), want);
		expect_damage(path, &good, (size_t)(boff + csize - 1), want);
	}
	for (size_t off = index_off; off < docs_off; off += 7)
		expect_damage(path, &good, off, NULL);
	for (size_t off = docs_off; off < good.n; off++)
		expect_damage(path, &good, off, NULL);

	/* Truncation anywhere is an error, never a crash. */
	for (size_t n = 0; n < good.n; n += good.n / 50 + 1) {
		write_bytes(path, good.v, n);
		CHECK(shard_verify(path) != 0, "truncated to %zu", n);
	}
	unlink(path);
	bytes_free(&good);
	free_docs(&d);
}

/* The stored form of 3-byte tokens, as titan-dataset(5) gives it: the low
 * two bytes of every token, then the high byte of every token; the index's
 * checksum is of those bytes. */
static void test_u24_layout(void)
{
	char path[600];
	path_in(path, sizeof path, "layout.shard");
	docs d = { 0 };
	uint32_t ids[] = { 0x123456, 0x000102, 0xabcdef, 7, 0x10000, 0xffffff };
	u32s_append(&d.ids, ids, 6);
	u32s_push(&d.lens, 6);
	shard_summary sum;
	REQUIRE(write_shard(path, &d, 3, 4, &sum) == 0, "%s", titan_errmsg());
	titan_bytes f = { 0 };
	REQUIRE(read_file(path, &f) == 0 && f.n == sum.bytes, "read back");
	CHECK((uint32_t)le64_at(f.v + 8) == 2, "version");
	CHECK((uint32_t)le64_at(f.v + 12) == 3, "token size");
	uint64_t index_off = le64_at(f.v + 40);
	static const uint8_t want[2][12] = {
		{ 0x56, 0x34, 0x02, 0x01, 0xef, 0xcd, 0x07, 0x00, 0x12, 0x00, 0xab, 0x00 },
		{ 0x00, 0x00, 0xff, 0xff, 0x01, 0xff },
	};
	const size_t want_n[2] = { 12, 6 };
	for (int b = 0; b < 2; b++) {
		const uint8_t *e = f.v + index_off + 24 * b;
		uint64_t off = le64_at(e);
		size_t csize = (size_t)(le64_at(e + 8) & 0xffffffffu);
		uint8_t raw[16];
		size_t got = ZSTD_decompress(raw, sizeof raw, f.v + off, csize);
		CHECK(!ZSTD_isError(got) && got == want_n[b], "block %d: %zu bytes", b, got);
		CHECK(got == want_n[b] && !memcmp(raw, want[b], got), "block %d: stored bytes", b);
		CHECK(le64_at(e + 16) == hash64(raw, want_n[b], 0), "block %d: checksum", b);
	}
	bytes_free(&f);
	unlink(path);
	free_docs(&d);
}

/* Rewrite the header's version and its checksum. */
static void set_version(titan_bytes *f, uint32_t version)
{
	for (int i = 0; i < 4; i++)
		f->v[8 + i] = (uint8_t)(version >> (8 * i));
	uint64_t h = hash64(f->v, 56, 0);
	for (int i = 0; i < 8; i++)
		f->v[56 + i] = (uint8_t)(h >> (8 * i));
}

/* Version 1 shards (2- and 4-byte tokens) still read; a version 1 header
 * with 3-byte tokens, or a version from the future, is refused. */
static void test_versions(void)
{
	char path[600];
	path_in(path, sizeof path, "v1.shard");
	docs d;
	make_docs(&d, 50, 30, 60000);
	for (int tb = 2; tb <= 4; tb++) {
		shard_summary sum;
		REQUIRE(write_shard(path, &d, tb, 16, &sum) == 0, "%s", titan_errmsg());
		titan_bytes f = { 0 };
		REQUIRE(read_file(path, &f) == 0, "read back");
		set_version(&f, 1);
		write_bytes(path, f.v, f.n);
		int rc = shard_verify(path);
		if (tb == 3)
			CHECK(rc == TITAN_EFORMAT && strstr(titan_errmsg(), "version 1"),
			      "3-byte tokens in version 1: %s", titan_errmsg());
		else
			CHECK(rc == 0, "version 1, %d-byte tokens: %s", tb, titan_errmsg());
		set_version(&f, 3);
		write_bytes(path, f.v, f.n);
		CHECK(shard_verify(path) == TITAN_EFORMAT &&
		      strstr(titan_errmsg(), "unsupported version 3"), "version 3: %s",
		      titan_errmsg());
		bytes_free(&f);
	}
	unlink(path);
	free_docs(&d);
}

static void test_not_a_shard(void)
{
	char path[600];
	path_in(path, sizeof path, "nope.shard");
	shard_reader *r;
	CHECK(shard_open(&r, path) == TITAN_EIO, "missing file");
	write_bytes(path, "hello", 5);
	CHECK(shard_open(&r, path) == TITAN_EFORMAT, "tiny file");
	unlink(path);
}

int main(void)
{
	if (check_scratch_open("test_shard"))
		return 1;
	RUN(test_roundtrip_u16);
	RUN(test_roundtrip_u32);
	RUN(test_roundtrip_u24);
	RUN(test_roundtrip_big_blocks);
	RUN(test_threads_same_bytes);
	RUN(test_u24_range);
	RUN(test_u24_layout);
	RUN(test_versions);
	RUN(test_empty_docs_only);
	RUN(test_u16_range);
	RUN(test_damage);
	RUN(test_not_a_shard);
	/* Last, so the tests above see the random data they always saw. */
	RUN(test_pieces_match_whole);
	RUN(test_wrapped_match_pieces);
	RUN(test_abort_with_blocks_queued);
	check_rmtree(check_scratch);
	return check_done();
}
