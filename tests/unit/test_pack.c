/* test_pack.c - ordered batch encoding (lib/tok/batch.c) and the packer
 * (lib/data/pack.c): ids equal sequential encoding for any thread count,
 * documents come back from the dataset as they went in. */
#include "core/base.h"
#include "core/buf.h"
#include "core/file.h"
#include "core/pool.h"
#include "data/dataset.h"
#include "data/pack.h"
#include "tok/batch.h"
#include "check.h"

#include <unistd.h>

static titan_tok *load_tok(const char *name)
{
	char rel[256], path[4096];
	snprintf(rel, sizeof rel, "tokenizers/%s/tokenizer.json", name);
	const char *dir = check_data_dir();
	if (!dir)
		return NULL;
	snprintf(path, sizeof path, "%s/%s", dir, rel);
	titan_tok *t = NULL;
	return access(path, R_OK) || tok_load(&t, path, NULL) ? NULL : t;
}

/* Documents of varied sizes, a few large enough to take the parallel path. */
static char *make_doc(size_t i, size_t *n)
{
	size_t len = i % 97 == 0 ? (1u << 20) + 1000 * (i % 7) : (i * 7919) % 3000;
	char *p = malloc(len + 1);
	static const char words[] = "the quick brown fox jumps over 12 lazy dogs, \xc3\xa9t\xc3\xa9!\n ";
	for (size_t k = 0; k < len; k++)
		p[k] = words[(k * 31 + i) % (sizeof words - 1)];
	*n = len;
	return p;
}

typedef struct collected {
	titan_u32s ids;
	titan_u32s ends;
	int fail_at;   /* return an error at this document, -1 never */
	size_t calls;
} collected;

static int collect(void *arg, const uint32_t *ids, size_t n, bool doc_end)
{
	collected *c = arg;
	c->calls++;
	if ((int)c->ends.n == c->fail_at)
		return titan_err(TITAN_EIO, "document %zu: refused", c->ends.n);
	int rc = u32s_append(&c->ids, ids, n);
	return rc || !doc_end ? rc : u32s_push(&c->ends, (uint32_t)c->ids.n);
}

/* kjv.txt without the blanks and numbers that start its verses: in the file a '\n' is
 * followed by a letter only at the books' titles, so it could hardly be cut
 * (tok_next_cut); this way it can be at every verse. */
static bool read_kjv(titan_bytes *text)
{
	const char *dir = check_data_dir();
	char path[4096];
	if (!dir)
		return false;
	snprintf(path, sizeof path, "%s/corpus/kjv.txt", dir);
	if (access(path, R_OK) || file_read_all(path, text))
		return false;
	text->n = check_unnumber_verses(text->v, text->n);
	return true;
}

enum { NDOCS = 3000 };

/* Queue the NDOCS test documents, then flush: the first failure. */
static int feed_docs(tok_batch *b, const void *arg)
{
	(void)arg;
	int rc = 0;
	for (size_t i = 0; i < NDOCS && !rc; i++) {
		size_t n;
		char *d = make_doc(i, &n);
		rc = tok_batch_add(b, (const uint8_t *)d, n);
		free(d);
	}
	return rc ? rc : tok_batch_flush(b);
}

/* Feed the documents feed queues through a batch of 1, 2 and 3 threads:
 * the ids and the document ends must be want's and want_ends's, and fn
 * must have been called more than min_calls times. */
static void check_batch(const char *what, const titan_tok *t,
			int (*feed)(tok_batch *, const void *), const void *arg,
			const titan_u32s *want, const titan_u32s *want_ends, size_t min_calls)
{
	for (int threads = 1; threads <= 3; threads++) {
		titan_pool *pool;
		tok_batch *b;
		collected c = {.fail_at = -1};
		REQUIRE(pool_new(&pool, threads) == 0, "%s", titan_errmsg());
		REQUIRE(tok_batch_new(&b, t, pool, collect, &c) == 0, "%s", titan_errmsg());
		int rc = feed(b, arg);
		CHECK(rc == 0, "%s, %d threads: %s", what, threads, titan_errmsg());
		CHECK(c.ids.n == want->n && !memcmp(c.ids.v, want->v, want->n * 4),
		      "%s, %d threads: ids differ (%zu vs %zu)", what, threads, c.ids.n, want->n);
		CHECK(c.ends.n == want_ends->n &&
		      !memcmp(c.ends.v, want_ends->v, want_ends->n * 4),
		      "%s, %d threads: document ends differ (%zu documents)", what, threads,
		      c.ends.n);
		CHECK(c.calls > min_calls, "%s, %d threads: %zu calls, more than %zu wanted", what,
		      threads, c.calls, min_calls);
		tok_batch_free(b);
		pool_free(pool);
		u32s_free(&c.ids);
		u32s_free(&c.ends);
	}
}

static void test_batch_matches_sequential(void)
{
	titan_tok *t = load_tok("gpt2");
	if (!t)
		SKIP("TITAN_DATA unset or gpt2 tokenizer missing");
	tok_encoder *e;
	REQUIRE(tok_encoder_new(&e, t) == 0, "%s", titan_errmsg());
	titan_u32s want = {0}, want_ends = {0};
	for (size_t i = 0; i < NDOCS; i++) {
		size_t n;
		char *d = make_doc(i, &n);
		tok_encode(e, (const uint8_t *)d, n, &want);
		u32s_push(&want_ends, (uint32_t)want.n);
		free(d);
	}
	check_batch("gpt2", t, feed_docs, NULL, &want, &want_ends, NDOCS - 1);
	u32s_free(&want);
	u32s_free(&want_ends);
	tok_encoder_free(e);
	tok_free(t);
}

static const char long_head[] = "First document.", long_tail[] = "Last one.\n";

/* A short document, text as one long document in parts of odd sizes, the
 * end of it as an empty part, another short document. */
static int feed_long(tok_batch *b, const void *arg)
{
	const titan_bytes *text = arg;
	static const size_t sizes[] = { 1, 5000, 300000, (1u << 20) + 7, 77 };
	int rc = tok_batch_add(b, (const uint8_t *)long_head, strlen(long_head));
	size_t at = 0;
	for (size_t k = 0; !rc && at < text->n; k++) {
		size_t len = TITAN_MIN(sizes[k % ARRAY_SIZE(sizes)], text->n - at);
		rc = tok_batch_add_part(b, text->v + at, len, false);
		at += len;
	}
	if (!rc)
		rc = tok_batch_add_part(b, (const uint8_t *)"", 0, true);
	if (!rc)
		rc = tok_batch_add(b, (const uint8_t *)long_tail, strlen(long_tail));
	return rc ? rc : tok_batch_flush(b);
}

/* A long document in parts: its ids are those of the whole, for any thread
 * count, and it reaches fn in pieces (it was cut). */
static void test_batch_streams_long_document(void)
{
	static const char *const toks[] = { "gpt2", "llama3" };
	titan_bytes kjv = {0};
	if (!read_kjv(&kjv))
		SKIP("TITAN_DATA unset or corpus/kjv.txt missing");
	for (size_t ti = 0; ti < ARRAY_SIZE(toks); ti++) {
		titan_tok *t = load_tok(toks[ti]);
		if (!t) {
			printf("# %s tokenizer missing, skipped\n", toks[ti]);
			continue;
		}
		tok_encoder *e;
		REQUIRE(tok_encoder_new(&e, t) == 0, "%s", titan_errmsg());
		titan_u32s want = {0}, want_ends = {0};
		tok_encode(e, (const uint8_t *)long_head, strlen(long_head), &want);
		u32s_push(&want_ends, (uint32_t)want.n);
		tok_encode(e, kjv.v, kjv.n, &want);
		u32s_push(&want_ends, (uint32_t)want.n);
		tok_encode(e, (const uint8_t *)long_tail, strlen(long_tail), &want);
		u32s_push(&want_ends, (uint32_t)want.n);
		check_batch(toks[ti], t, feed_long, &kjv, &want, &want_ends,
			    3 + kjv.n / (128u << 10));
		u32s_free(&want);
		u32s_free(&want_ends);
		tok_encoder_free(e);
		tok_free(t);
	}
	bytes_free(&kjv);
}

static void test_batch_failure_is_carried(void)
{
	titan_tok *t = load_tok("gpt2");
	if (!t)
		SKIP("TITAN_DATA unset or gpt2 tokenizer missing");
	titan_pool *pool;
	tok_batch *b;
	collected c = {.fail_at = 1234};
	REQUIRE(pool_new(&pool, 2) == 0, "%s", titan_errmsg());
	REQUIRE(tok_batch_new(&b, t, pool, collect, &c) == 0, "%s", titan_errmsg());
	int rc = feed_docs(b, NULL);
	CHECK(rc == TITAN_EIO, "rc %d", rc);
	CHECK(strstr(titan_errmsg(), "document 1234: refused"), "message: %s", titan_errmsg());
	CHECK(c.ends.n == 1234, "%zu documents handed over", c.ends.n);
	tok_batch_free(b);
	pool_free(pool);
	u32s_free(&c.ids);
	u32s_free(&c.ends);
	tok_free(t);
}

/* A scratch directory (tmpl: mkdtemp's template) holding in.txt, text[0..n);
 * in and out get the paths of in.txt and of a dataset "ds" beside it. */
static void scratch_input(char *tmpl, char in[4200], char out[4200], const void *text, size_t n)
{
	REQUIRE(mkdtemp(tmpl), "mkdtemp");
	snprintf(in, 4200, "%s/in.txt", tmpl);
	snprintf(out, 4200, "%s/ds", tmpl);
	FILE *fp = fopen(in, "wb");
	REQUIRE(fp && fwrite(text, 1, n, fp) == n && fclose(fp) == 0, "cannot write %s", in);
}

static void test_pack_round_trip(void)
{
	titan_tok *t = load_tok("gpt2");
	if (!t)
		SKIP("TITAN_DATA unset or gpt2 tokenizer missing");
	char tmpl[] = "/tmp/test_pack.XXXXXX", in[4200], out[4200];
	static const char text[] = "Hello world\n\nsecond line\n";
	scratch_input(tmpl, in, out, text, strlen(text));

	titan_pool *pool;
	REQUIRE(pool_new(&pool, 2) == 0, "%s", titan_errmsg());
	pack_opts o = {
		.outdir = out, .tok = t, .tok_source = "gpt2",
		.ingest = {.format = INGEST_TEXT, .lines = true},
		.pool = pool,
	};
	int64_t bos, eos;
	pack_specials(&o, &bos, &eos);
	CHECK(bos == -1 && eos == 50256, "gpt2: bos %lld eos %lld", (long long)bos, (long long)eos);
	const char *inputs[] = {in};
	pack_stats st;
	int rc = pack_run(&o, inputs, 1, &st);
	REQUIRE(rc == 0, "%s", titan_errmsg());
	CHECK(st.docs[SPLIT_TRAIN] == 3 && st.docs[SPLIT_VAL] == 0, "docs %llu/%llu",
	      (unsigned long long)st.docs[SPLIT_TRAIN], (unsigned long long)st.docs[SPLIT_VAL]);
	CHECK(st.tokens[SPLIT_TRAIN] == 3 + 1 + 3, "tokens %llu",
	      (unsigned long long)st.tokens[SPLIT_TRAIN]);

	dataset *d;
	REQUIRE(dataset_open(&d, out) == 0, "%s", titan_errmsg());
	uint32_t ids[8];
	const uint32_t want[] = {15496, 995, 50256, 50256, 12227, 1627, 50256};
	CHECK(dataset_tokens(d, SPLIT_TRAIN) == 7, "tokens");
	CHECK(dataset_read(d, SPLIT_TRAIN, 0, 7, ids) == 0 && !memcmp(ids, want, sizeof want),
	      "ids %u %u %u %u %u %u %u", ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6]);
	CHECK(dataset_tok(d)->eos_added && !dataset_tok(d)->bos_added, "bos/eos flags");
	dataset_close(d);

	/* The same output directory again is a usage error and changes nothing. */
	rc = pack_run(&o, inputs, 1, &st);
	CHECK(rc == TITAN_EUSAGE, "rc %d: %s", rc, titan_errmsg());

	check_rmtree(tmpl);
	pool_free(pool);
	tok_free(t);
}

/* A text file of 4 MB is one document, read, encoded and written in pieces:
 * the dataset holds its ids as one encoding of the whole. */
static void test_pack_long_document(void)
{
	titan_tok *t = load_tok("gpt2");
	titan_bytes kjv = {0};
	if (!t || !read_kjv(&kjv)) {
		tok_free(t);
		SKIP("TITAN_DATA unset or gpt2 tokenizer or corpus/kjv.txt missing");
	}
	char tmpl[] = "/tmp/test_pack.XXXXXX", in[4200], out[4200];
	scratch_input(tmpl, in, out, kjv.v, kjv.n);
	tok_encoder *e;
	REQUIRE(tok_encoder_new(&e, t) == 0, "%s", titan_errmsg());
	titan_u32s want = {0};
	REQUIRE(tok_encode(e, kjv.v, kjv.n, &want) == 0 && u32s_push(&want, 50256) == 0, "%s",
		titan_errmsg());
	titan_pool *pool;
	REQUIRE(pool_new(&pool, 2) == 0, "%s", titan_errmsg());
	pack_opts o = {.outdir = out, .tok = t, .tok_source = "gpt2", .pool = pool};
	const char *inputs[] = {in};
	pack_stats st;
	REQUIRE(pack_run(&o, inputs, 1, &st) == 0, "%s", titan_errmsg());
	CHECK(st.docs[SPLIT_TRAIN] + st.docs[SPLIT_VAL] == 1, "one document");
	dataset *d;
	REQUIRE(dataset_open(&d, out) == 0, "%s", titan_errmsg());
	int split = st.docs[SPLIT_TRAIN] ? SPLIT_TRAIN : SPLIT_VAL;
	uint64_t n = dataset_tokens(d, split);
	uint32_t *ids = malloc((n + 1) * sizeof *ids);
	REQUIRE(ids, "malloc");
	CHECK(n == want.n && dataset_read(d, split, 0, n, ids) == 0 &&
	      !memcmp(ids, want.v, n * sizeof *ids), "%llu tokens, %zu wanted",
	      (unsigned long long)n, want.n);
	free(ids);
	dataset_close(d);
	check_rmtree(tmpl);
	pool_free(pool);
	u32s_free(&want);
	tok_encoder_free(e);
	bytes_free(&kjv);
	tok_free(t);
}

int main(void)
{
	RUN(test_batch_matches_sequential);
	RUN(test_batch_failure_is_carried);
	RUN(test_batch_streams_long_document);
	RUN(test_pack_round_trip);
	RUN(test_pack_long_document);
	return check_done();
}
