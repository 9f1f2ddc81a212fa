/* bench_loader.c - tokens/s the loader delivers from a dataset.
 *
 *   bench_loader [DIR [SEQ_LEN [BATCH]]]
 *
 * Reads shuffled windows of the train split as one rank, prefetch on and
 * off, for about two seconds each, and prints the inputs' tokens per second
 * (the last line, "# loader: N tokens/s", is the prefetched figure), and
 * how long loader_next keeps a caller waiting that is away twice the time a
 * batch takes to build between calls (prefetch on and off).  With no
 * DIR it packs about 50M synthetic tokens into a scratch directory first and
 * removes it afterwards. */
#include "core/base.h"
#include "core/buf.h"
#include "data/dataset.h"
#include "data/loader.h"

#include <dirent.h>
#include <time.h>
#include <unistd.h>

#define SYNTH_TOKENS 50000000ull
#define SYNTH_VOCAB 50257u

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void remove_tree(const char *path)
{
	DIR *dir = opendir(path);
	struct dirent *e;

	if (!dir) {
		remove(path);
		return;
	}
	while ((e = readdir(dir))) {
		char sub[4096];
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
		remove_tree(sub);
	}
	closedir(dir);
	rmdir(path);
}

/* Documents of 50..2000 tokens with a skewed id distribution (small ids
 * common, as in text), so that the blocks compress about as real ones do. */
static int make_synthetic(const char *outdir)
{
	dataset_writer_opts o = {0};
	dataset_writer *w;
	titan_u32s doc = {0};
	uint64_t x = 88172645463325252ull, total = 0;

	memset(o.tok.sha256, '0', 64);
	o.tok.vocab_size = SYNTH_VOCAB;
	o.tok.bos = o.tok.eos = -1;
	o.outdir = outdir;
	int rc = dataset_writer_open(&w, &o);
	if (rc)
		return rc;
	while (total < SYNTH_TOKENS) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint32_t len = 50 + (uint32_t)(x % 1951);
		doc.n = 0;
		for (uint32_t j = 0; j < len; j++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			uint64_t a = (x & 0xffff) % SYNTH_VOCAB, b = ((x >> 16) & 0xffff) % SYNTH_VOCAB;
			if ((rc = u32s_push(&doc, (uint32_t)(a * b / SYNTH_VOCAB))))
				goto fail;
		}
		if ((rc = dataset_writer_add(w, SPLIT_TRAIN, doc.v, doc.n)))
			goto fail;
		total += len;
	}
	u32s_free(&doc);
	return dataset_writer_commit(w, NULL);
fail:
	u32s_free(&doc);
	dataset_writer_abort(w);
	return rc;
}

/* Tokens/s of inputs over about two seconds (or two epochs). */
static int measure(const char *dir, uint32_t seq_len, uint32_t batch, bool prefetch,
		   double *tps, uint64_t *nwin)
{
	loader_opts o = { .dir = dir, .split = SPLIT_TRAIN, .seq_len = seq_len, .batch = batch,
			  .dp_size = 1, .seed = 42, .shuffle = true, .prefetch = prefetch };
	loader *l;
	loader_batch *b;
	uint64_t tokens = 0, windows = 0;

	int rc = loader_open(&l, &o, (loader_cursor){0});
	if (rc)
		return rc;
	*nwin = loader_windows_per_epoch(l);
	double t0 = now(), t = t0;
	while (t - t0 < 2.0 && windows < 2 * *nwin) {
		if ((rc = loader_next(l, &b)))
			break;
		tokens += (uint64_t)batch * seq_len;
		windows += batch;
		t = now();
	}
	loader_close(l);
	*tps = t > t0 ? tokens / (t - t0) : 0;
	return rc;
}

/* Mean seconds spent in loader_next per batch when the caller is away for
 * busy seconds between batches (asleep, as a trainer waiting on the GPU, so
 * that the figure does not depend on a free core): with prefetch, about 0
 * while busy exceeds the time to build a batch. */
static int measure_wait(const char *dir, uint32_t seq_len, uint32_t batch, bool prefetch,
			double busy, double *wait)
{
	loader_opts o = { .dir = dir, .split = SPLIT_TRAIN, .seq_len = seq_len, .batch = batch,
			  .dp_size = 1, .seed = 42, .shuffle = true, .prefetch = prefetch };
	loader *l;
	loader_batch *b;
	int steps = 0, rc = loader_open(&l, &o, (loader_cursor){0});
	double waited = 0, t0 = now();

	if (rc)
		return rc;
	/* the first batch is built with nobody working meanwhile */
	if ((rc = loader_next(l, &b)))
		goto out;
	while (now() - t0 < 1.0 || steps < 20) {
		struct timespec away = { .tv_sec = (time_t)busy,
					 .tv_nsec = (long)((busy - (double)(time_t)busy) * 1e9) };
		nanosleep(&away, NULL);
		double t = now();
		if ((rc = loader_next(l, &b)))
			break;
		waited += now() - t;
		steps++;
	}
	*wait = waited / steps;
out:
	loader_close(l);
	return rc;
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : NULL;
	uint32_t seq_len = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 1024;
	uint32_t batch = argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 10) : 8;
	char scratch[512] = "", synth[600];
	int rc = 0;

	if (argc > 4 || !seq_len || !batch) {
		fprintf(stderr, "usage: bench_loader [DIR [SEQ_LEN [BATCH]]]\n");
		return 2;
	}
	if (!dir) {
		const char *tmp = getenv("TMPDIR");
		snprintf(scratch, sizeof scratch, "%s/bench_loader.XXXXXX",
			 tmp && *tmp ? tmp : "/tmp");
		if (!mkdtemp(scratch)) {
			fprintf(stderr, "bench_loader: cannot create '%s': %s\n", scratch, strerror(errno));
			return 1;
		}
		snprintf(synth, sizeof synth, "%s/ds", scratch);
		double t0 = now();
		if ((rc = make_synthetic(synth)))
			goto out;
		printf("# packed %llu synthetic tokens in %.1f s\n", SYNTH_TOKENS, now() - t0);
		dir = synth;
	}

	double on = 0, off = 0;
	uint64_t nwin = 0;
	if ((rc = measure(dir, seq_len, batch, false, &off, &nwin)))
		goto out;
	if ((rc = measure(dir, seq_len, batch, true, &on, &nwin)))
		goto out;
	double busy = 2.0 * batch * seq_len / off, wait_on = 0, wait_off = 0;
	if ((rc = measure_wait(dir, seq_len, batch, false, busy, &wait_off)))
		goto out;
	if ((rc = measure_wait(dir, seq_len, batch, true, busy, &wait_on)))
		goto out;
	printf("# loader: %s, train split, %llu windows of %u + 1, batch %u, shuffled, 1 rank\n",
	       argc > 1 ? dir : "50M synthetic tokens", (unsigned long long)nwin, seq_len, batch);
	printf("# loader without prefetch: %.0f tokens/s\n", off);
	printf("# loader wait per batch, caller away %.0f us per batch: %.1f us with prefetch, "
	       "%.1f us without\n", busy * 1e6, wait_on * 1e6, wait_off * 1e6);
	printf("# loader: %.0f tokens/s\n", on);
out:
	if (rc)
		fprintf(stderr, "bench_loader: %s\n", titan_errmsg());
	if (scratch[0])
		remove_tree(scratch);
	return rc ? 1 : 0;
}
