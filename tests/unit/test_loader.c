/* test_loader.c - the loader's guarantees: every window once per epoch over
 * all ranks, exact resume, re-striping over another dp_size, inputs and
 * labels against the dataset, prefetch on and off alike, document starts. */
#include "core/base.h"
#include "core/buf.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "check.h"

#include <dirent.h>
#include <unistd.h>


/* rm -r PATH (the scratch tree holds only directories and plain files) */
/* The token at stream position p of a split: unique, so that any window
 * read from the wrong place shows. */
static uint32_t token_at(uint64_t p, int split)
{
	return (uint32_t)(p * 3 + 1 + (uint64_t)split * 500000);
}

/* Write a dataset NAME under the scratch dir whose splits hold documents of
 * the given lengths, in small shards and blocks so that windows straddle
 * both; its path goes to path. */
static int make_dataset(char *path, size_t size, const char *name,
			const uint32_t *train_docs, size_t ntrain,
			const uint32_t *val_docs, size_t nval)
{
	dataset_writer_opts o = {0};
	dataset_writer *w;
	titan_u32s ids = {0};
	const uint32_t *docs[SPLIT_COUNT] = { train_docs, val_docs };
	size_t ndocs[SPLIT_COUNT] = { ntrain, nval };

	snprintf(path, size, "%s/%s", check_scratch, name);
	memset(o.tok.sha256, '0', 64);
	o.tok.vocab_size = 1u << 22;
	o.tok.bos = o.tok.eos = -1;
	o.outdir = path;
	o.shard_tokens = 1000;
	o.block_tokens = 64;
	int rc = dataset_writer_open(&w, &o);
	if (rc)
		return rc;
	for (int s = 0; s < SPLIT_COUNT; s++) {
		uint64_t p = 0;
		for (size_t k = 0; k < ndocs[s]; k++) {
			ids.n = 0;
			for (uint32_t j = 0; j < docs[s][k]; j++)
				if ((rc = u32s_push(&ids, token_at(p++, s))))
					goto fail;
			if ((rc = dataset_writer_add(w, s, ids.v, ids.n)))
				goto fail;
		}
	}
	u32s_free(&ids);
	return dataset_writer_commit(w, NULL);
fail:
	u32s_free(&ids);
	dataset_writer_abort(w);
	return rc;
}

/* Documents of pseudo-random lengths 1..40 adding up to about total tokens. */
static size_t doc_lengths(uint32_t *lens, size_t max, uint64_t total, uint32_t salt)
{
	uint64_t sum = 0, x = salt;
	size_t n = 0;
	while (sum < total && n < max) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		lens[n] = 1 + (uint32_t)((x >> 33) % 40);
		sum += lens[n++];
	}
	return n;
}

static char ds_main[512];     /* train: 2,000+ tokens, val: 120+ */
static uint64_t ds_main_train;

/* What a run delivers, by global position relative to its start cursor:
 * window ids, and each window's first input token and last label. */
struct run {
	uint64_t *ids;
	uint32_t *first, *last;
	size_t n;
	loader_cursor end;
};

static void run_free(struct run *r)
{
	free(r->ids);
	free(r->first);
	free(r->last);
	*r = (struct run){0};
}

/* Run dp loaders (every rank of a dp_size group) for steps steps from start;
 * 0 or the first failure. */
static int collect(struct run *r, const loader_opts *base, int dp, uint32_t batch,
		   loader_cursor start, int steps)
{
	loader *ls[8] = {0};
	int rc = 0;
	size_t per_step = (size_t)dp * batch;

	r->n = per_step * (size_t)steps;
	r->ids = calloc(r->n, sizeof *r->ids);
	r->first = calloc(r->n, sizeof *r->first);
	r->last = calloc(r->n, sizeof *r->last);
	if (!r->ids || !r->first || !r->last)
		return titan_err_nomem();
	for (int k = 0; k < dp; k++) {
		loader_opts o = *base;
		o.dp_rank = k;
		o.dp_size = dp;
		o.batch = batch;
		if ((rc = loader_open(&ls[k], &o, start)))
			goto out;
	}
	for (int s = 0; s < steps; s++) {
		for (int k = 0; k < dp; k++) {
			loader_batch *b;
			if ((rc = loader_next(ls[k], &b)))
				goto out;
			uint32_t seq = b->seq_len;
			for (uint32_t i = 0; i < batch; i++) {
				size_t g = (size_t)s * per_step + (size_t)i * dp + k;
				r->ids[g] = b->windows[i];
				r->first[g] = b->inputs[(size_t)i * seq];
				r->last[g] = b->labels[(size_t)i * seq + seq - 1];
			}
		}
	}
	r->end = loader_state(ls[0]);
	for (int k = 1; k < dp; k++) {
		loader_cursor c = loader_state(ls[k]);
		if (c.epoch != r->end.epoch || c.pos != r->end.pos)
			rc = titan_err(TITAN_EINTERNAL, "rank %d's cursor differs from rank 0's", k);
	}
out:
	for (int k = 0; k < dp; k++)
		loader_close(ls[k]);
	return rc;
}

static loader_opts main_opts(uint32_t seq_len)
{
	return (loader_opts){ .dir = ds_main, .split = SPLIT_TRAIN, .seq_len = seq_len,
			      .batch = 1, .dp_size = 1, .seed = 1234, .shuffle = true };
}

static void test_make_dataset(void)
{
	uint32_t train[400], val[20];
	size_t nt = doc_lengths(train, ARRAY_SIZE(train), 2000, 1);
	size_t nv = doc_lengths(val, ARRAY_SIZE(val), 120, 2);
	uint64_t sum = 0;
	for (size_t k = 0; k < nt; k++)
		sum += train[k];
	int rc = make_dataset(ds_main, sizeof ds_main, "main", train, nt, val, nv);
	REQUIRE(rc == 0, "dataset_writer: %s", titan_errmsg());
	ds_main_train = sum;
}

/* (1) Over all ranks, each epoch visits every window exactly once, also when
 * steps cross epoch ends; the cursor counts windows of all ranks. */
static void test_epoch_coverage(void)
{
	static const struct { int dp; uint32_t batch; } cases[] = {
		{ 1, 1 }, { 1, 7 }, { 2, 5 }, { 3, 4 }, { 3, 11 }, { 2, 64 },
	};
	uint32_t seq = 16;
	for (size_t c = 0; c < ARRAY_SIZE(cases); c++) {
		loader_opts o = main_opts(seq);
		uint64_t nwin = (ds_main_train - 1) / seq;
		uint64_t per_step = (uint64_t)cases[c].dp * cases[c].batch;
		int steps = (int)((3 * nwin + per_step - 1) / per_step);
		struct run r = {0};
		int rc = collect(&r, &o, cases[c].dp, cases[c].batch, (loader_cursor){0}, steps);
		CHECK(rc == 0, "dp %d batch %u: %s", cases[c].dp, cases[c].batch, titan_errmsg());
		if (rc) {
			run_free(&r);
			continue;
		}
		uint8_t *seen = calloc(nwin, 1);
		for (uint64_t e = 0; e < 3; e++) {
			memset(seen, 0, nwin);
			uint64_t bad = 0;
			for (uint64_t k = 0; k < nwin; k++) {
				uint64_t id = r.ids[e * nwin + k];
				if (id / nwin != e || seen[id % nwin]++)
					bad++;
			}
			CHECK(bad == 0, "dp %d batch %u epoch %llu: %llu windows repeated or foreign",
			      cases[c].dp, cases[c].batch, (unsigned long long)e, (unsigned long long)bad);
		}
		uint64_t total = (uint64_t)steps * per_step;
		CHECK(r.end.epoch == total / nwin && r.end.pos == total % nwin,
		      "dp %d batch %u: cursor %llu/%llu after %llu windows of %llu per epoch",
		      cases[c].dp, cases[c].batch, (unsigned long long)r.end.epoch,
		      (unsigned long long)r.end.pos, (unsigned long long)total,
		      (unsigned long long)nwin);
		free(seen);
		run_free(&r);
	}
}

/* (2) Resuming at a saved cursor gives the batches of an uninterrupted run. */
static void test_resume(void)
{
	loader_opts o = main_opts(8);
	struct run whole = {0}, head = {0}, tail = {0};
	int k = 37, more = 60;

	o.doc_starts = true;
	int rc = collect(&whole, &o, 2, 3, (loader_cursor){0}, k + more);
	REQUIRE(rc == 0, "%s", titan_errmsg());
	rc = collect(&head, &o, 2, 3, (loader_cursor){0}, k);
	REQUIRE(rc == 0, "%s", titan_errmsg());
	o.prefetch = true;
	rc = collect(&tail, &o, 2, 3, head.end, more);
	REQUIRE(rc == 0, "%s", titan_errmsg());
	size_t off = head.n, diff = 0;
	for (size_t g = 0; g < tail.n; g++)
		diff += whole.ids[off + g] != tail.ids[g] || whole.first[off + g] != tail.first[g] ||
			whole.last[off + g] != tail.last[g];
	CHECK(diff == 0, "%zu of %zu windows differ after resuming at %llu/%llu", diff, tail.n,
	      (unsigned long long)head.end.epoch, (unsigned long long)head.end.pos);
	CHECK(tail.end.epoch == whole.end.epoch && tail.end.pos == whole.end.pos,
	      "cursor after resume %llu/%llu, uninterrupted %llu/%llu",
	      (unsigned long long)tail.end.epoch, (unsigned long long)tail.end.pos,
	      (unsigned long long)whole.end.epoch, (unsigned long long)whole.end.pos);
	run_free(&whole);
	run_free(&head);
	run_free(&tail);
}

/* A cursor in the middle of a later epoch, opened directly. */
static void test_resume_later_epoch(void)
{
	loader_opts o = main_opts(16);
	struct run whole = {0}, tail = {0};
	int rc = collect(&whole, &o, 1, 10, (loader_cursor){0}, 80);
	REQUIRE(rc == 0, "%s", titan_errmsg());
	uint64_t nwin = (ds_main_train - 1) / 16;
	uint64_t at = 2 * nwin + 17;
	REQUIRE(at + 100 <= whole.n, "dataset too large for this test");
	rc = collect(&tail, &o, 1, 10, (loader_cursor){ .epoch = 2, .pos = 17 }, 10);
	REQUIRE(rc == 0, "%s", titan_errmsg());
	size_t diff = 0;
	for (size_t g = 0; g < tail.n; g++)
		diff += whole.ids[at + g] != tail.ids[g] || whole.first[at + g] != tail.first[g];
	CHECK(diff == 0, "%zu windows differ from epoch 2 pos 17 on", diff);
	run_free(&whole);
	run_free(&tail);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* (3) dp 2 x batch 4 for k steps, then dp 4 x batch 2 or dp 1 x batch 8:
 * each step's windows are the uninterrupted run's, in the same global order. */
static void test_restripe(void)
{
	static const struct { int dp; uint32_t batch; } after[] = { { 4, 2 }, { 1, 8 }, { 8, 1 } };
	loader_opts o = main_opts(16);
	struct run whole = {0}, head = {0};
	int k = 13, more = 40;

	int rc = collect(&whole, &o, 2, 4, (loader_cursor){0}, k + more);
	REQUIRE(rc == 0, "%s", titan_errmsg());
	rc = collect(&head, &o, 2, 4, (loader_cursor){0}, k);
	REQUIRE(rc == 0, "%s", titan_errmsg());
	for (size_t c = 0; c < ARRAY_SIZE(after); c++) {
		struct run tail = {0};
		o.prefetch = c % 2;
		rc = collect(&tail, &o, after[c].dp, after[c].batch, head.end, more);
		CHECK(rc == 0, "dp %d: %s", after[c].dp, titan_errmsg());
		if (rc) {
			run_free(&tail);
			continue;
		}
		size_t order_diff = 0, step_diff = 0;
		for (size_t g = 0; g < tail.n; g++)
			order_diff += whole.ids[head.n + g] != tail.ids[g] ||
				      whole.first[head.n + g] != tail.first[g];
		for (int s = 0; s < more; s++) {
			uint64_t a[8], b[8];
			memcpy(a, whole.ids + head.n + (size_t)s * 8, sizeof a);
			memcpy(b, tail.ids + (size_t)s * 8, sizeof b);
			qsort(a, 8, sizeof *a, cmp_u64);
			qsort(b, 8, sizeof *b, cmp_u64);
			step_diff += memcmp(a, b, sizeof a) != 0;
		}
		CHECK(order_diff == 0, "dp %d x %u: %zu positions differ from the dp 2 run",
		      after[c].dp, after[c].batch, order_diff);
		CHECK(step_diff == 0, "dp %d x %u: %zu steps hold other windows than the dp 2 run",
		      after[c].dp, after[c].batch, step_diff);
		run_free(&tail);
	}
	run_free(&whole);
	run_free(&head);
}

/* (4) Inputs and labels are the window's tokens, shifted by one, as the
 * dataset reads them. */
static void test_content(void)
{
	loader_opts o = main_opts(24);
	loader *l;
	dataset *d;
	o.batch = 5;
	o.dp_size = 3;
	o.dp_rank = 2;
	int rc = loader_open(&l, &o, (loader_cursor){0});
	REQUIRE(rc == 0, "%s", titan_errmsg());
	rc = dataset_open(&d, ds_main);
	if (rc) {
		loader_close(l);
		REQUIRE(rc == 0, "%s", titan_errmsg());
	}
	uint64_t nwin = loader_windows_per_epoch(l);
	CHECK(nwin == (ds_main_train - 1) / 24, "windows per epoch %llu",
	      (unsigned long long)nwin);
	uint32_t want[25];
	size_t bad = 0;
	for (int s = 0; s < 30; s++) {
		loader_batch *b;
		rc = loader_next(l, &b);
		CHECK(rc == 0, "%s", titan_errmsg());
		if (rc)
			break;
		CHECK(b->batch == 5 && b->seq_len == 24, "batch %u seq_len %u", b->batch, b->seq_len);
		for (uint32_t i = 0; i < 5; i++) {
			uint64_t w = b->windows[i] % nwin;
			rc = dataset_read(d, SPLIT_TRAIN, w * 24, 25, want);
			CHECK(rc == 0, "%s", titan_errmsg());
			for (uint32_t j = 0; j < 24; j++) {
				bad += b->inputs[i * 24 + j] != want[j] ||
				       b->labels[i * 24 + j] != want[j + 1] ||
				       want[j] != token_at(w * 24 + j, SPLIT_TRAIN);
			}
		}
	}
	CHECK(bad == 0, "%zu tokens differ from the dataset", bad);
	dataset_close(d);
	loader_close(l);
}

/* The last window ends on the last token, or one short of a full seq_len. */
static void test_last_window(void)
{
	loader_opts o = main_opts(5);
	loader *l;
	uint32_t docs[] = { 10, 6 };          /* 16 tokens: windows 0..2 */
	char path[512];
	int rc = make_dataset(path, sizeof path, "last", docs, 2, docs, 1);
	REQUIRE(rc == 0, "%s", titan_errmsg());
	o.dir = path;
	o.shuffle = false;
	o.batch = 3;
	rc = loader_open(&l, &o, (loader_cursor){0});
	REQUIRE(rc == 0, "%s", titan_errmsg());
	CHECK(loader_windows_per_epoch(l) == 3, "%llu windows",
	      (unsigned long long)loader_windows_per_epoch(l));
	loader_batch *b;
	rc = loader_next(l, &b);
	CHECK(rc == 0, "%s", titan_errmsg());
	if (!rc) {
		for (uint32_t i = 0; i < 3; i++)
			CHECK(b->windows[i] == i, "stream order: row %u is window %llu", i,
			      (unsigned long long)b->windows[i]);
		CHECK(b->labels[2 * 5 + 4] == token_at(15, SPLIT_TRAIN), "last label %u",
		      b->labels[14]);
	}
	loader_cursor c = loader_state(l);
	CHECK(c.epoch == 1 && c.pos == 0, "cursor %llu/%llu", (unsigned long long)c.epoch,
	      (unsigned long long)c.pos);
	loader_close(l);

	/* 15 tokens: window 2 would need token 15, one past the end */
	uint32_t exact[] = { 10, 5 };
	rc = make_dataset(path, sizeof path, "exact", exact, 2, exact, 1);
	REQUIRE(rc == 0, "%s", titan_errmsg());
	o.batch = 2;
	rc = loader_open(&l, &o, (loader_cursor){0});
	REQUIRE(rc == 0, "%s", titan_errmsg());
	CHECK(loader_windows_per_epoch(l) == 2, "15 tokens, seq_len 5: %llu windows",
	      (unsigned long long)loader_windows_per_epoch(l));
	rc = loader_next(l, &b);
	CHECK(rc == 0, "%s", titan_errmsg());
	if (!rc)
		CHECK(b->labels[2 * 5 - 1] == token_at(10, SPLIT_TRAIN), "last label %u",
		      b->labels[9]);
	loader_close(l);
}

/* (5) Prefetch changes nothing in what is delivered, document starts
 * included. */
static void test_prefetch_same(void)
{
	loader_opts o = main_opts(12);
	loader *a, *b;
	o.batch = 7;
	o.dp_size = 2;
	o.dp_rank = 1;
	o.doc_starts = true;
	int rc = loader_open(&a, &o, (loader_cursor){ .epoch = 1, .pos = 3 });
	REQUIRE(rc == 0, "%s", titan_errmsg());
	o.prefetch = true;
	rc = loader_open(&b, &o, (loader_cursor){ .epoch = 1, .pos = 3 });
	if (rc) {
		loader_close(a);
		REQUIRE(rc == 0, "%s", titan_errmsg());
	}
	size_t diff = 0;
	for (int s = 0; s < 200 && !rc; s++) {
		loader_batch *x, *y;
		rc = loader_next(a, &x);
		if (!rc)
			rc = loader_next(b, &y);
		CHECK(rc == 0, "step %d: %s", s, titan_errmsg());
		if (rc)
			break;
		size_t cells = (size_t)x->batch * x->seq_len;
		diff += memcmp(x->inputs, y->inputs, cells * 4) != 0 ||
			memcmp(x->labels, y->labels, cells * 4) != 0 ||
			memcmp(x->windows, y->windows, x->batch * 8) != 0;
		for (uint32_t i = 0; i < x->batch; i++)
			diff += x->doc_starts[i].n != y->doc_starts[i].n ||
				(x->doc_starts[i].n && memcmp(x->doc_starts[i].v, y->doc_starts[i].v,
							      x->doc_starts[i].n * 4));
		loader_cursor ca = loader_state(a), cb = loader_state(b);
		diff += ca.epoch != cb.epoch || ca.pos != cb.pos;
	}
	CHECK(diff == 0, "%zu differences between prefetch on and off", diff);
	loader_close(a);
	loader_close(b);
}

/* Closing a prefetching loader at any point, before the first batch too. */
static void test_close_midstream(void)
{
	loader_opts o = main_opts(16);
	o.prefetch = true;
	o.batch = 9;
	for (int k = 0; k < 20; k++) {
		loader *l;
		int rc = loader_open(&l, &o, (loader_cursor){0});
		REQUIRE(rc == 0, "%s", titan_errmsg());
		for (int s = 0; s < k % 4; s++) {
			loader_batch *b;
			rc = loader_next(l, &b);
			CHECK(rc == 0, "%s", titan_errmsg());
		}
		loader_close(l);
	}
}

static void window_order(uint64_t *ids, uint64_t n, uint64_t seed, bool shuffle, uint64_t epoch)
{
	loader_opts o = main_opts(16);
	struct run r = {0};
	o.seed = seed;
	o.shuffle = shuffle;
	if (collect(&r, &o, 1, (uint32_t)n, (loader_cursor){ .epoch = epoch }, 1) == 0)
		for (uint64_t k = 0; k < n; k++)
			ids[k] = r.ids[k] - epoch * n;
	else
		memset(ids, 0xff, n * sizeof *ids);
	run_free(&r);
}

/* (6) The order is a function of (seed, epoch): another seed or epoch gives
 * another order, the same seed the same; shuffle off gives stream order. */
static void test_seeds(void)
{
	uint64_t n = (ds_main_train - 1) / 16;
	uint64_t *a = calloc(n, 8), *b = calloc(n, 8), *c = calloc(n, 8), *e1 = calloc(n, 8),
		 *plain = calloc(n, 8);
	REQUIRE(a && b && c && e1 && plain, "out of memory");
	window_order(a, n, 7, true, 0);
	window_order(b, n, 7, true, 0);
	window_order(c, n, 8, true, 0);
	window_order(e1, n, 7, true, 1);
	window_order(plain, n, 7, false, 3);
	CHECK(a[0] != UINT64_MAX && memcmp(a, b, n * 8) == 0, "same seed, other order");
	CHECK(memcmp(a, c, n * 8) != 0, "seeds 7 and 8 give the same order");
	CHECK(memcmp(a, e1, n * 8) != 0, "epochs 0 and 1 give the same order");
	size_t same = 0, fixed = 0;
	for (uint64_t k = 0; k < n; k++) {
		same += a[k] == c[k];
		fixed += a[k] == k;
		CHECK(plain[k] == k, "shuffle off: position %llu holds window %llu",
		      (unsigned long long)k, (unsigned long long)plain[k]);
		if (plain[k] != k)
			break;
	}
	/* a fair shuffle leaves about one window in place */
	CHECK(same < n / 10 && fixed < n / 10, "%zu windows agree across seeds, %zu fixed of %llu",
	      same, fixed, (unsigned long long)n);
	free(a);
	free(b);
	free(c);
	free(e1);
	free(plain);
}

/* (7) Document starts of every row against a hand-built dataset. */
static void test_doc_starts(void)
{
	uint32_t docs[] = { 3, 1, 7, 2, 10, 4, 1, 1, 9, 5, 12, 2, 6 };   /* 63 tokens */
	uint8_t is_start[63] = {0};
	char path[512];
	uint64_t p = 0;
	for (size_t k = 0; k < ARRAY_SIZE(docs); k++) {
		is_start[p] = 1;
		p += docs[k];
	}
	int rc = make_dataset(path, sizeof path, "docs", docs, ARRAY_SIZE(docs), docs, 2);
	REQUIRE(rc == 0, "%s", titan_errmsg());

	for (int pf = 0; pf < 2; pf++) {
		loader_opts o = main_opts(5);   /* 12 windows */
		loader *l;
		o.dir = path;
		o.batch = 4;
		o.doc_starts = true;
		o.prefetch = pf;
		rc = loader_open(&l, &o, (loader_cursor){0});
		REQUIRE(rc == 0, "%s", titan_errmsg());
		size_t bad = 0, rows = 0;
		for (int s = 0; s < 6; s++) {
			loader_batch *b;
			rc = loader_next(l, &b);
			CHECK(rc == 0, "%s", titan_errmsg());
			if (rc)
				break;
			for (uint32_t i = 0; i < 4; i++, rows++) {
				uint64_t start = b->windows[i] % 12 * 5;
				titan_u32s *got = &b->doc_starts[i];
				size_t k = 0;
				for (uint32_t j = 0; j < 5; j++) {
					if (!is_start[start + j])
						continue;
					bad += k >= got->n || got->v[k] != j;
					k++;
				}
				bad += k != got->n;
			}
		}
		CHECK(bad == 0 && rows == 24, "prefetch %d: %zu rows of %zu with wrong document starts",
		      pf, bad, rows);
		loader_close(l);
	}
}

/* (8) A split too short for one window names its size. */
static void test_too_short(void)
{
	uint32_t train[] = { 50 }, val[] = { 3, 2 };
	char path[512];
	loader *l = NULL;
	int rc = make_dataset(path, sizeof path, "short", train, 1, val, 2);
	REQUIRE(rc == 0, "%s", titan_errmsg());
	loader_opts o = main_opts(5);
	o.dir = path;
	o.split = SPLIT_VAL;
	rc = loader_open(&l, &o, (loader_cursor){0});
	CHECK(rc == TITAN_EUSAGE && !l, "rc %d", rc);
	CHECK(strstr(titan_errmsg(), "split 'val' has 5 tokens: too few for one window of "
				    "seq_len + 1 = 6") != NULL, "message: %s", titan_errmsg());
	o.seq_len = 4;
	rc = loader_open(&l, &o, (loader_cursor){0});
	CHECK(rc == 0, "5 tokens make one window of 4 + 1: %s", titan_errmsg());
	if (!rc) {
		CHECK(loader_windows_per_epoch(l) == 1, "%llu windows",
		      (unsigned long long)loader_windows_per_epoch(l));
		loader_close(l);
	}
	o.dp_rank = 2;
	o.dp_size = 2;
	rc = loader_open(&l, &o, (loader_cursor){0});
	CHECK(rc == TITAN_EUSAGE, "rank 2 of 2 accepted");
}

/* Damage found by the prefetch thread comes out of loader_next, message
 * and all, and keeps coming. */
static void test_prefetch_error(void)
{
	uint32_t docs[40];
	char path[512], shard[1200];
	for (size_t k = 0; k < ARRAY_SIZE(docs); k++)
		docs[k] = 20;
	int rc = make_dataset(path, sizeof path, "broken", docs, ARRAY_SIZE(docs), docs, 1);
	REQUIRE(rc == 0, "%s", titan_errmsg());
	dataset *d;
	rc = dataset_open(&d, path);
	REQUIRE(rc == 0, "%s", titan_errmsg());
	/* the path is inside the dataset dir, maybe relative to it */
	const char *sp = dataset_shard_path(d, SPLIT_TRAIN, 0);
	if (sp[0] == '/' || !strncmp(sp, path, strlen(path)))
		snprintf(shard, sizeof shard, "%s", sp);
	else
		snprintf(shard, sizeof shard, "%s/%s", path, sp);
	dataset_close(d);
	/* flip a byte inside the block area of the first shard, past the
	 * 64-byte header */
	FILE *f = fopen(shard, "r+b");
	REQUIRE(f, "cannot open '%s'", shard);
	fseek(f, 80, SEEK_SET);
	int ch = fgetc(f);
	fseek(f, 80, SEEK_SET);
	fputc(ch ^ 0x5a, f);
	fclose(f);

	loader_opts o = main_opts(10);
	loader *l;
	o.dir = path;
	o.batch = 4;
	o.prefetch = true;
	o.shuffle = false;
	rc = loader_open(&l, &o, (loader_cursor){0});
	if (rc) {
		CHECK(*titan_errmsg(), "open failed without a message");
		return;
	}
	loader_batch *b;
	for (int s = 0; s < 30 && !rc; s++)
		rc = loader_next(l, &b);
	CHECK(rc < 0, "damaged first block read without error");
	CHECK(*titan_errmsg(), "no message");
	printf("# damage reported as: %s\n", titan_errmsg());
	rc = loader_next(l, &b);
	CHECK(rc < 0 && *titan_errmsg(), "the error did not stay");
	loader_close(l);
}

int main(void)
{
	if (check_scratch_open("test_loader"))
		return 1;
	RUN(test_make_dataset);
	if (ds_main_train) {
		RUN(test_epoch_coverage);
		RUN(test_resume);
		RUN(test_resume_later_epoch);
		RUN(test_restripe);
		RUN(test_content);
		RUN(test_prefetch_same);
		RUN(test_close_midstream);
		RUN(test_seeds);
	}
	RUN(test_last_window);
	RUN(test_doc_starts);
	RUN(test_too_short);
	RUN(test_prefetch_error);
	check_rmtree(check_scratch);
	return check_done();
}
